"""Renders deploy/prometheus for a local run: the shipped scrape config and rules with the
berth addresses and timings replaced, nothing else.

    python deploy/tools/render_prometheus.py --out DIR --berth 127.1.1.5:20001 \
        [--scaler 127.1.1.6:20002] [--interval 1s] [--alert-for 2s]

- jobs `berth` / `berth-scaler`: their dns_sd_configs become static_configs on the given
  address (no `--scaler`: that job is dropped);
- job `ecs-tasks`: the http_sd_configs URL keeps its path, with the host:port of `--berth`;
- global scrape/evaluation intervals, rule group intervals and http_sd refresh become
  `--interval`; with `--alert-for`, every alert's `for` becomes that (expressions unchanged);
- rule files are copied under DIR/rules/. Writes DIR/prometheus.yml.
Used by tests/tests/deploy_prometheus.rs.
"""
import argparse
import os
import urllib.parse

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "prometheus")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--berth", required=True)
    ap.add_argument("--scaler")
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--alert-for")
    a = ap.parse_args()

    with open(os.path.join(SRC, "prometheus.yml")) as f:
        cfg = yaml.safe_load(f)
    g = cfg.setdefault("global", {})
    g["scrape_interval"] = a.interval
    g["evaluation_interval"] = a.interval
    g["scrape_timeout"] = a.interval

    jobs = []
    for job in cfg["scrape_configs"]:
        name = job["job_name"]
        if name in ("berth", "berth-scaler"):
            addr = a.berth if name == "berth" else a.scaler
            if addr is None:
                continue
            assert "dns_sd_configs" in job, f"job {name}: expected dns_sd_configs in the shipped config"
            del job["dns_sd_configs"]
            job["static_configs"] = [{"targets": [addr]}]
        elif name == "ecs-tasks":
            for sd in job["http_sd_configs"]:
                u = urllib.parse.urlsplit(sd["url"])
                sd["url"] = urllib.parse.urlunsplit((u.scheme, a.berth, u.path, u.query, u.fragment))
                sd["refresh_interval"] = a.interval
        jobs.append(job)
    cfg["scrape_configs"] = jobs

    os.makedirs(os.path.join(a.out, "rules"), exist_ok=True)
    rule_files = []
    for rel in cfg.get("rule_files", []):
        with open(os.path.join(SRC, rel)) as f:
            rules = yaml.safe_load(f)
        for group in rules["groups"]:
            group["interval"] = a.interval
            for r in group["rules"]:
                if "alert" in r and a.alert_for:
                    r["for"] = a.alert_for
        dst = os.path.join(a.out, "rules", os.path.basename(rel))
        with open(dst, "w") as f:
            yaml.safe_dump(rules, f, sort_keys=False)
        rule_files.append(dst)
    cfg["rule_files"] = rule_files

    with open(os.path.join(a.out, "prometheus.yml"), "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


if __name__ == "__main__":
    main()
