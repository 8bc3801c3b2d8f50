//! Trace ids end to end: `X-Amzn-Trace-Id` as the target receives it (new, kept with `Self`
//! appended, replaced, off), W3C `traceparent` untouched, and a WebSocket upgrade's access log
//! line carrying the id its target received.

use std::time::Duration;

use berth_tests::access_log::{is_id, is_root, start_web, web_config, AccessLogFile};
use berth_tests::config::Listener;
use berth_tests::net::listen_addr;
use berth_tests::websocket::{connect, EchoTarget};
use berth_tests::{bounded, Berth, Http};

const LIMIT: Duration = Duration::from_secs(120);
const LINES: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_ids_new_kept_replaced_and_off() {
    bounded(LIMIT, async {
        let (a, web, berth, _out) = start_web("").await;
        let http = Http::new();
        let echo = |headers: Vec<(&'static str, String)>| {
            let http = http.clone();
            async move {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                http.get_with(&format!("http://{web}/echo-headers"), &h)
                    .await
                    .expect("echo")
                    .json()
            }
        };
        let seen = echo(vec![]).await;
        assert!(
            is_root(seen["x-amzn-trace-id"].as_str().unwrap_or("")),
            "{seen}"
        );
        let root = "Root=1-5759e988-bd862e3fe1be46a994272793";
        let incoming = format!(
            "{root};Parent=53995c3f42cd8ad8;Sampled=1;Self=1-00000000-000000000000000000000000"
        );
        let seen = echo(vec![("x-amzn-trace-id", incoming)]).await;
        let v = seen["x-amzn-trace-id"].as_str().unwrap_or("");
        let kept = format!("{root};Parent=53995c3f42cd8ad8;Sampled=1;Self=");
        assert!(v.strip_prefix(&kept).is_some_and(is_id), "{v}");
        let seen = echo(vec![("x-amzn-trace-id", "Root=bogus".into())]).await;
        assert!(
            is_root(seen["x-amzn-trace-id"].as_str().unwrap_or("")),
            "{seen}"
        );
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let seen = echo(vec![
            ("traceparent", tp.into()),
            ("tracestate", "congo=t61rcWkgMzE".into()),
        ])
        .await;
        assert_eq!(seen["traceparent"], tp);
        assert_eq!(seen["tracestate"], "congo=t61rcWkgMzE");

        let off = web_config(web, &a, "[proxy]\ntrace_id = false");
        berth.write_config(&off);
        berth.reload();
        berth_tests::wait::wait_until(LINES, "trace ids off after the reload", || async move {
            echo(vec![]).await.get("x-amzn-trace-id").is_none()
        })
        .await;
        let seen = echo(vec![("x-amzn-trace-id", root.into())]).await;
        assert_eq!(
            seen["x-amzn-trace-id"], root,
            "passed through untouched when off"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_gets_a_trace_id_and_a_ws_line() {
    bounded(LIMIT, async {
        let target = EchoTarget::spawn().await;
        let web = listen_addr();
        let cfg = "[access_log]\nenabled = true\n".to_string()
            + &Listener::web(web, "ws").to_string()
            + &format!(
                "[[target_groups]]\nname = \"ws\"\n[target_groups.health_check]\nenabled = false\n[target_groups.source]\nkind = \"static\"\ntargets = {}\n",
                target.targets_toml()
            );
        let out = AccessLogFile::new();
        let _berth = Berth::start_with_stdout(&cfg, &[], out.stdio()).await;
        let (ws, resp) = connect(web, "/chat").await.expect("upgrade");
        assert_eq!(resp.status(), 101);
        let seen = target.last_upgrade_headers().expect("the target saw the upgrade");
        let id = seen
            .get("x-amzn-trace-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(is_root(&id), "{id}");
        let lines = out.wait_json(1, LINES).await;
        println!("sample ws line: {}", serde_json::to_string(&lines[0]).unwrap_or_default());
        let l = &lines[0];
        assert_eq!(l["type"], "ws");
        assert_eq!(l["elb_status_code"], 101);
        assert_eq!(l["target_status_code"], 101);
        assert_eq!(l["target:port"], target.addr().to_string());
        assert_eq!(l["trace_id"], id.as_str(), "the id the target received");
        drop(ws);
    })
    .await;
}
