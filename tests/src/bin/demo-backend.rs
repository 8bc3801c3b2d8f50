//! `demo-backend --bind 127.0.0.1:9001 --name a`: a tiny HTTP target for the README demo.
//! Answers its name on every path, `/health` 200, `/echo-headers`, `/slow?ms=N`, `/status/N`.

use std::net::SocketAddr;

use berth_tests::Backend;

fn usage() -> ! {
    eprintln!("usage: demo-backend --bind IP:PORT [--name NAME]");
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut bind: Option<SocketAddr> = None;
    let mut name: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bind" => bind = args.next().and_then(|v| v.parse().ok()).or_else(|| usage()),
            "--name" => name = Some(args.next().unwrap_or_else(|| usage())),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let bind = bind.unwrap_or_else(|| usage());
    let name = name.unwrap_or_else(|| bind.to_string());
    let backend = match Backend::try_start_on(&name, bind).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("demo-backend: cannot bind {bind}: {e}");
            std::process::exit(1);
        }
    };
    println!("demo-backend {name} listening on http://{}", backend.addr());
    let _ = tokio::signal::ctrl_c().await;
    drop(backend);
}
