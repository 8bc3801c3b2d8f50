#!/usr/bin/env python3
"""Self-test of tests/moto/launcher.py: starts it on free loopback ports and checks, through
boto3 (the real AWS wire protocols) and the control API, that moto plus the harness patches
look like ECS/EC2 to a client. Prints PASS/FAIL lines and exits non-zero on any failure.

    .venv/bin/python tests/moto/selftest.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

HERE = Path(__file__).resolve().parent
REGION = "us-east-1"
RESULTS: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: Any = "") -> bool:
    RESULTS.append((name, bool(ok), str(detail)))
    print(f"{'PASS' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"), flush=True)
    return bool(ok)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Control:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = self.call(method, path, body)
        if status != 200:
            raise RuntimeError(f"{method} {path} -> {status} {payload}")
        return payload


def start_launcher() -> tuple[subprocess.Popen, int, int]:
    port, cport = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "launcher.py"), "--port", str(port), "--control-port",
         str(cport), "--region", REGION, "--watch-stdin"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY") or time.monotonic() > deadline:
        proc.kill()
        raise RuntimeError(f"launcher did not become ready: {line!r}")
    return proc, port, cport


def main() -> int:
    t0 = time.monotonic()
    proc, port, cport = start_launcher()
    check("launcher prints READY", True)
    ctl = Control(cport)
    app_pids: list[int] = []
    try:
        run(port, ctl)
        app_pids = run_apps(port, ctl)
    except Exception as exc:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        check("selftest ran to the end", False, exc)
    finally:
        proc.terminate()
        try:
            rc = proc.wait(timeout=10)
            check("launcher exits cleanly on SIGTERM", rc == 0, f"rc={rc}")
        except subprocess.TimeoutExpired:
            proc.kill()
            check("launcher exits cleanly on SIGTERM", False, "timeout")
        if app_pids:
            alive = [p for p in app_pids if pid_alive(p)]
            check("launcher exit reaps every task app", not alive, alive)
    failed = sum(1 for _, ok, _ in RESULTS if not ok)
    passed = len(RESULTS) - failed
    print(f"{passed} passed, {failed} failed  ({time.monotonic() - t0:.1f}s)")
    return 1 if failed else 0


def run(port: int, ctl: Control) -> None:
    endpoint = f"http://127.0.0.1:{port}"
    cfg = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"})
    kw = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
              aws_secret_access_key="testing", config=cfg)
    ecs = boto3.client("ecs", **kw)
    ec2 = boto3.client("ec2", **kw)

    # --- setup through the AWS API -------------------------------------------------------
    cluster_arn = ecs.create_cluster(clusterName="c")["cluster"]["clusterArn"]
    again = ecs.create_cluster(clusterName="c")["cluster"]["clusterArn"]
    check("CreateCluster is idempotent", cluster_arn == again, (cluster_arn, again))
    td_vpc = ecs.register_task_definition(
        family="web", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256",
        memory="512",
        containerDefinitions=[{
            "name": "app", "image": "nginx", "essential": True,
            "portMappings": [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp", "name": "http"}],
            "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 2},
        }],
    )["taskDefinition"]
    td_bridge = ecs.register_task_definition(
        family="web-bridge", networkMode="bridge", requiresCompatibilities=["EC2"],
        containerDefinitions=[{
            "name": "app", "image": "nginx", "memory": 128, "essential": True,
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp", "name": "http"}],
        }],
    )["taskDefinition"]
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    ecs.create_service(
        cluster="c", serviceName="svc", taskDefinition="web:1", desiredCount=2,
        launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": []}},
    )
    ecs.create_service(cluster="c", serviceName="other", taskDefinition="web:1", desiredCount=0,
                       launchType="FARGATE",
                       networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet]}})

    # --- tasks via the control API ---------------------------------------------------------
    made = ctl.ok("POST", "/tasks", {
        "cluster": "c", "service": "svc", "task_definition": "web:1", "count": 2,
        "ips": ["127.0.0.2", "127.0.0.3"], "availability_zone": "us-east-1b",
        "health_status": "HEALTHY",
    })["task_arns"]
    check("POST /tasks returns 2 arns", len(made) == 2, made)
    ci = ctl.ok("POST", "/container-instances", {"cluster": "c", "private_ip": "127.0.0.5"})
    bridge = ctl.ok("POST", "/tasks", {
        "cluster": "c", "service": None, "task_definition": td_bridge["taskDefinitionArn"],
        "count": 1, "network_mode": "bridge", "launch_type": "EC2", "host_ports": [32801],
        "container_instance": ci["container_instance_arn"],
    })["task_arns"]
    family_task = ctl.ok("POST", "/tasks", {
        "cluster": "c", "task_definition": "web", "count": 1, "ips": ["127.0.0.4"],
    })["task_arns"]

    # bad requests
    status, err = ctl.call("POST", "/tasks", {"cluster": "c", "task_definition": "web:1", "count": 1,
                                              "ips": ["10.0.0.1"]})
    check("non-loopback IP rejected with 400", status == 400 and "loopback" in err.get("error", ""), (status, err))
    status, err = ctl.call("POST", "/tasks", {"cluster": "nope", "task_definition": "web:1"})
    check("unknown cluster is 404", status == 404, (status, err))
    status, err = ctl.call("POST", "/faults", {"operation": "ListTasks", "kind": "bogus"})
    check("bad fault kind is 400", status == 400, (status, err))
    req = urllib.request.Request(ctl.base + "/tasks", data=b"{not json", method="POST")
    try:
        urllib.request.urlopen(req, timeout=5)
        check("malformed JSON is 400", False, "200")
    except urllib.error.HTTPError as e:
        check("malformed JSON is 400", e.code == 400, e.code)

    # --- ListTasks ------------------------------------------------------------------------------
    all_arns = ecs.list_tasks(cluster="c")["taskArns"]
    check("ListTasks cluster-wide has all 4", set(all_arns) == set(made + bridge + family_task), all_arns)
    svc_arns = ecs.list_tasks(cluster="c", serviceName="svc")["taskArns"]
    check("ListTasks serviceName filter", sorted(svc_arns) == sorted(made), svc_arns)
    check("ListTasks serviceName other is empty", ecs.list_tasks(cluster="c", serviceName="other")["taskArns"] == [])
    running = ecs.list_tasks(cluster="c", serviceName="svc", desiredStatus="RUNNING")["taskArns"]
    check("ListTasks desiredStatus RUNNING", sorted(running) == sorted(made), running)
    try:
        ecs.list_tasks(cluster="c", serviceName="ghost")
        check("ListTasks unknown service errors", False, "no error")
    except botocore.exceptions.ClientError as e:
        check("ListTasks unknown service errors", e.response["Error"]["Code"] == "ServiceNotFoundException", e)
    page1 = ecs.list_tasks(cluster="c", maxResults=3)
    page2 = ecs.list_tasks(cluster="c", maxResults=3, nextToken=page1["nextToken"])
    check("ListTasks paginates", len(page1["taskArns"]) == 3 and len(page2["taskArns"]) == 1
          and "nextToken" not in page2, (page1, page2))
    pager = ecs.get_paginator("list_tasks").paginate(cluster="c", PaginationConfig={"PageSize": 1})
    check("ListTasks paginator sees all", sum(len(p["taskArns"]) for p in pager) == 4)

    # --- DescribeTasks ---------------------------------------------------------------------------
    desc = ecs.describe_tasks(cluster="c", tasks=made + bridge + ["arn:aws:ecs:us-east-1:123456789012:task/c/missing"])
    by_arn = {t["taskArn"]: t for t in desc["tasks"]}
    t0 = by_arn[made[0]]
    ips = sorted(
        d["value"] for a in (by_arn[a]["attachments"] for a in made) for x in a
        for d in x["details"] if d["name"] == "privateIPv4Address"
    )
    check("DescribeTasks awsvpc privateIPv4Address", ips == ["127.0.0.2", "127.0.0.3"], ips)
    att = t0["attachments"][0]
    check("attachment type/status", att["type"] == "ElasticNetworkInterface" and att["status"] == "ATTACHED", att)
    check("attachment has subnetId and networkInterfaceId",
          {"subnetId", "networkInterfaceId"} <= {d["name"] for d in att["details"]}, att)
    check("task fields", t0["lastStatus"] == "RUNNING" and t0["desiredStatus"] == "RUNNING"
          and t0["group"] == "service:svc" and t0["launchType"] == "FARGATE"
          and t0["availabilityZone"] == "us-east-1b" and t0["healthStatus"] == "HEALTHY"
          and t0["clusterArn"] == cluster_arn
          and t0["taskDefinitionArn"] == td_vpc["taskDefinitionArn"], t0)
    c0 = t0["containers"][0]
    check("container fields", c0["name"] == "app" and c0["lastStatus"] == "RUNNING"
          and c0["healthStatus"] == "HEALTHY" and c0["taskArn"] == t0["taskArn"]
          and c0["networkInterfaces"][0]["privateIpv4Address"] in ("127.0.0.2", "127.0.0.3"), c0)
    check("startedBy is the deployment id", t0.get("startedBy", "").startswith("ecs-svc/"), t0.get("startedBy"))
    tb = by_arn[bridge[0]]
    nb = tb["containers"][0]["networkBindings"]
    check("bridge networkBindings hostPort", nb == [{"bindIP": "0.0.0.0", "containerPort": 8080,
                                                     "hostPort": 32801, "protocol": "tcp"}], nb)
    check("bridge task AZ from its instance", tb["availabilityZone"].startswith("us-east-1"), tb["availabilityZone"])
    check("bridge containerInstanceArn", tb.get("containerInstanceArn") == ci["container_instance_arn"], tb)
    check("bridge task group/launchType/health", tb["group"] == "family:web-bridge"
          and tb["launchType"] == "EC2" and tb["healthStatus"] == "UNKNOWN", tb)
    check("DescribeTasks reports missing", [f["reason"] for f in desc["failures"]] == ["MISSING"], desc["failures"])
    again = ecs.describe_tasks(cluster="c", tasks=made)["tasks"]
    check("tasks stay RUNNING when described repeatedly", all(t["lastStatus"] == "RUNNING" for t in again))

    tdd = ecs.describe_task_definition(taskDefinition="web:1")["taskDefinition"]
    pm = tdd["containerDefinitions"][0]["portMappings"][0]
    check("DescribeTaskDefinition", tdd["networkMode"] == "awsvpc" and pm["containerPort"] == 8080
          and pm.get("name") == "http", tdd)

    # --- container instances + EC2 -------------------------------------------------------------
    cis = ecs.describe_container_instances(cluster="c", containerInstances=[ci["container_instance_arn"]])
    inst_id = cis["containerInstances"][0]["ec2InstanceId"]
    check("DescribeContainerInstances ec2InstanceId", inst_id == ci["ec2_instance_id"], cis)
    res = ec2.describe_instances(InstanceIds=[inst_id])["Reservations"][0]["Instances"][0]
    check("EC2 DescribeInstances PrivateIpAddress", res["PrivateIpAddress"] == "127.0.0.5", res.get("PrivateIpAddress"))

    # --- faults and call counts ------------------------------------------------------------
    ctl.ok("DELETE", "/calls")
    ctl.ok("POST", "/faults", {"operation": "ListTasks", "kind": "throttle", "count": 1})
    try:
        ecs.list_tasks(cluster="c")
        check("ListTasks throttled", False, "no error")
    except botocore.exceptions.ClientError as e:
        check("ListTasks throttled", e.response["Error"]["Code"] == "ThrottlingException"
              and e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response)
    check("ListTasks succeeds after the throttle", len(ecs.list_tasks(cluster="c")["taskArns"]) == 4)
    ctl.ok("POST", "/faults", {"operation": "DescribeTasks", "kind": "error500", "count": 1})
    try:
        ecs.describe_tasks(cluster="c", tasks=made)
        check("DescribeTasks 500", False, "no error")
    except botocore.exceptions.ClientError as e:
        check("DescribeTasks 500", e.response["ResponseMetadata"]["HTTPStatusCode"] == 500, e.response)
    ctl.ok("POST", "/faults", {"operation": "DescribeInstances", "kind": "throttle", "count": 1})
    try:
        ec2.describe_instances(InstanceIds=[inst_id])
        check("EC2 throttled", False, "no error")
    except botocore.exceptions.ClientError as e:
        check("EC2 throttled", e.response["Error"]["Code"] == "RequestLimitExceeded"
              and e.response["ResponseMetadata"]["HTTPStatusCode"] == 503, e.response)
    ctl.ok("POST", "/faults", {"operation": "ListTasks", "kind": "delay", "count": 1, "delay_ms": 300})
    s = time.monotonic()
    ecs.list_tasks(cluster="c")
    check("delay fault", time.monotonic() - s >= 0.3, time.monotonic() - s)
    ctl.ok("POST", "/faults", {"operation": "ListTasks", "kind": "throttle", "count": 5})
    ctl.ok("DELETE", "/faults")
    check("DELETE /faults clears", len(ecs.list_tasks(cluster="c")["taskArns"]) == 4)
    calls = ctl.ok("GET", "/calls")
    check("GET /calls counts", calls.get("ListTasks") == 4 and calls.get("DescribeTasks") == 1
          and calls.get("DescribeInstances") == 1, calls)

    # --- update / stop ----------------------------------------------------------------------
    ctl.ok("POST", "/tasks/update", {"cluster": "c", "task_arn": made[0], "health_status": "UNHEALTHY"})
    t = ecs.describe_tasks(cluster="c", tasks=[made[0]])["tasks"][0]
    check("update health", t["healthStatus"] == "UNHEALTHY" and t["containers"][0]["healthStatus"] == "UNHEALTHY", t)
    ctl.ok("POST", "/tasks/stop", {"cluster": "c", "task_arn": made[0]})
    left = ecs.list_tasks(cluster="c", serviceName="svc")["taskArns"]
    check("stopped task leaves the RUNNING list", left == [made[1]], left)
    stopped = ecs.list_tasks(cluster="c", desiredStatus="STOPPED")["taskArns"]
    check("stopped task in the STOPPED list", stopped == [made[0]], stopped)
    t = ecs.describe_tasks(cluster="c", tasks=[made[0]])["tasks"][0]
    check("stopped task described STOPPED", t["lastStatus"] == "STOPPED" and t["desiredStatus"] == "STOPPED"
          and "stoppedAt" in t, t)

    # --- reconcile -------------------------------------------------------------------------
    pool = [f"127.0.0.{i}" for i in range(10, 20)]
    r = ctl.ok("POST", "/services/reconcile", {"cluster": "c", "service": "svc", "ip_pool": pool})
    svc_tasks = ecs.list_tasks(cluster="c", serviceName="svc")["taskArns"]
    check("reconcile tops up to desiredCount", len(r["created"]) == 1 and len(svc_tasks) == 2, (r, svc_tasks))
    d = ecs.describe_services(cluster="c", services=["svc"])["services"][0]
    check("DescribeServices runningCount", d["runningCount"] == 2 and d["desiredCount"] == 2, d)
    ecs.update_service(cluster="c", service="svc", desiredCount=5)
    r = ctl.ok("POST", "/services/reconcile", {"cluster": "c", "service": "svc", "ip_pool": pool})
    check("reconcile scales out", len(r["created"]) == 3 and r["running_count"] == 5, r)
    ecs.update_service(cluster="c", service="svc", desiredCount=1)
    r = ctl.ok("POST", "/services/reconcile", {"cluster": "c", "service": "svc", "ip_pool": pool})
    check("reconcile scales in", len(r["stopped"]) == 4
          and len(ecs.list_tasks(cluster="c", serviceName="svc")["taskArns"]) == 1, r)

    ctl.ok("POST", "/services/autoreconcile", {"cluster": "c", "service": "svc", "ip_pool": pool, "interval_ms": 50})
    ecs.update_service(cluster="c", service="svc", desiredCount=3)
    deadline = time.monotonic() + 5
    n = 0
    while time.monotonic() < deadline:
        n = len(ecs.list_tasks(cluster="c", serviceName="svc")["taskArns"])
        if n == 3:
            break
        time.sleep(0.05)
    check("autoreconcile follows UpdateService", n == 3, n)
    ctl.ok("DELETE", "/services/autoreconcile", {})

    # --- setup endpoints (no SDK) ------------------------------------------------------------
    ctl.ok("POST", "/setup/cluster", {"name": "c2"})
    tdr = ctl.ok("POST", "/setup/task-definition", {
        "family": "api", "network_mode": "awsvpc",
        "containers": [{"name": "app", "port": 9000, "port_name": "http", "health_check": True}],
    })
    ctl.ok("POST", "/setup/service", {"cluster": "c2", "name": "api", "task_definition": tdr["task_definition_arn"],
                                       "desired_count": 2})
    r = ctl.ok("POST", "/services/reconcile", {"cluster": "c2", "service": "api", "ip_pool": ["127.0.0.30", "127.0.0.31"]})
    d = ecs.describe_services(cluster="c2", services=["api"])["services"][0]
    tdd = ecs.describe_task_definition(taskDefinition="api")["taskDefinition"]
    tasks = ecs.describe_tasks(cluster="c2", tasks=ecs.list_tasks(cluster="c2", serviceName="api")["taskArns"])["tasks"]
    check("setup endpoints work through the AWS API",
          d["desiredCount"] == 2 and d["runningCount"] == 2 and tdd["networkMode"] == "awsvpc"
          and tdd["containerDefinitions"][0]["portMappings"][0]["name"] == "http"
          and len(tasks) == 2 and all(t["healthStatus"] == "HEALTHY" for t in tasks), (d, tdd, tasks))
    st = ctl.ok("GET", "/services?cluster=c2&service=api")
    check("GET /services", st["desired_count"] == 2 and st["running_count"] == 2, st)
    gt = ctl.ok("GET", "/tasks?cluster=c2")
    check("GET /tasks", sorted(t["private_ip"] for t in gt["tasks"]) == ["127.0.0.30", "127.0.0.31"], gt)

    # moto's own RunTask keeps working (and its tasks no longer drift towards STOPPED)
    ecs.create_cluster(clusterName="c3")
    ctl.ok("POST", "/container-instances", {"cluster": "c3", "private_ip": "127.0.0.6"})
    rt = ecs.run_task(cluster="c3", taskDefinition="web-bridge", count=1, launchType="EC2")["tasks"]
    for _ in range(3):
        st = ecs.describe_tasks(cluster="c3", tasks=[rt[0]["taskArn"]])["tasks"][0]["lastStatus"]
    check("moto RunTask tasks stay RUNNING", st == "RUNNING", st)

    ctl.ok("POST", "/reset")
    check("POST /reset empties ECS", ecs.list_clusters()["clusterArns"] == [])


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] not in ("Z", "X")
    except OSError:
        return False


def task_app_binary() -> str | None:
    env = os.environ.get("BERTH_TASK_APP_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR") or str(HERE.parent.parent / "target")
    path = Path(target) / "release" / "task-app"
    return str(path) if path.is_file() else None


def http_call(ip: str, port: int, method: str = "GET", path: str = "/", body: bytes | None = None,
              timeout: float = 5.0) -> tuple[int, dict[str, str], str]:
    import http.client

    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def wait_cond(fn: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.02)


def run_apps(port: int, ctl: Control) -> list[int]:
    """Task apps: started on the task's address, RUNNING once they accept, SIGTERM when ECS stops
    the task (STOPPING while they live), rolling replacement and scale-in, reaped on exit."""
    import threading

    binary = task_app_binary()
    if not check("task-app binary built", binary is not None,
                 "target/release/task-app missing: cargo build --release -p berth-tests --bin task-app"):
        return []
    endpoint = f"http://127.0.0.1:{port}"
    cfg = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"})
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                       aws_secret_access_key="testing", config=cfg)
    ctl.ok("POST", "/setup/cluster", {"name": "apps"})
    tport = 18090
    td1 = ctl.ok("POST", "/setup/task-definition", {
        "family": "appsvc", "network_mode": "awsvpc",
        "containers": [{"name": "app", "port": tport, "port_name": "http", "health_check": True}],
    })["task_definition_arn"]
    graceful = {"binary": binary, "mode": "graceful", "grace_ms": 3000, "stop_timeout_ms": 5000}
    ctl.ok("POST", "/setup/service", {"cluster": "apps", "name": "svc", "task_definition": td1,
                                       "desired_count": 2, "app": graceful})
    pool = [f"127.0.0.{i}" for i in range(40, 60)]
    r = ctl.ok("POST", "/services/reconcile", {"cluster": "apps", "service": "svc", "ip_pool": pool})
    check("app tasks created", len(r["created"]) == 2, r)

    def tasks() -> list[dict[str, Any]]:
        return ctl.ok("GET", "/tasks?cluster=apps")["tasks"]

    def by_arn(arn: str) -> dict[str, Any]:
        return next(t for t in tasks() if t["task_arn"] == arn)

    running = wait_cond(lambda: all(by_arn(a)["last_status"] == "RUNNING" for a in r["created"]), 10)
    check("app tasks RUNNING once the app accepts", running, tasks())
    t0 = by_arn(r["created"][0])
    check("running app task is HEALTHY with a container health check",
          t0["health_status"] == "HEALTHY" and t0["app"]["alive"], t0)
    ip = t0["private_ip"]
    st, hd, body = http_call(ip, tport)
    check("task app answers with its task id", st == 200 and hd.get("x-task") == t0["task_arn"].split("/")[-1], (st, hd, body))
    st, hd, body = http_call(ip, tport, "POST", "/x", b"a" * 10240)
    check("task app reads a POST body", st == 200 and "received=10240" in body, (st, body))

    # Graceful stop through the ECS API: SIGTERM at once, in-flight request finishes.
    result: dict[str, Any] = {}

    def slow() -> None:
        try:
            result["r"] = http_call(ip, tport, "GET", "/?delay_ms=800")
        except Exception as exc:  # noqa: BLE001
            result["r"] = exc

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.2)
    ecs.stop_task(cluster="apps", task=t0["task_arn"], reason="selftest")
    d = ecs.describe_tasks(cluster="apps", tasks=[t0["task_arn"]])["tasks"][0]
    check("ECS StopTask: desiredStatus STOPPED, lastStatus STOPPING while the app lives",
          d["desiredStatus"] == "STOPPED" and d["lastStatus"] == "STOPPING", (d["desiredStatus"], d["lastStatus"]))
    refused = False
    try:
        s = socket.create_connection((ip, tport), timeout=1)
        s.close()
    except OSError:
        refused = True
    check("graceful app stops accepting at once", refused)
    th.join(5)
    res = result.get("r")
    check("graceful app finishes the request in flight", isinstance(res, tuple) and res[0] == 200, res)
    stopped = wait_cond(lambda: by_arn(t0["task_arn"])["last_status"] == "STOPPED", 5)
    check("task STOPPED once its app exited", stopped and not by_arn(t0["task_arn"])["app"]["alive"], by_arn(t0["task_arn"]))

    # Abrupt: exits at once, the request in flight fails.
    ctl.ok("POST", "/services/app", {"cluster": "apps", "service": "svc",
                                     "app": dict(graceful, mode="abrupt")})
    r = ctl.ok("POST", "/services/reconcile", {"cluster": "apps", "service": "svc", "ip_pool": pool})
    check("reconcile replaces the stopped task on a fresh address",
          len(r["created"]) == 1 and by_arn(r["created"][0])["private_ip"] != ip, r)
    arn = r["created"][0]
    wait_cond(lambda: by_arn(arn)["last_status"] == "RUNNING", 10)
    ip2 = by_arn(arn)["private_ip"]
    result.clear()
    th = threading.Thread(target=lambda: result.__setitem__("r", _try(lambda: http_call(ip2, tport, "GET", "/?delay_ms=2000"))))
    th.start()
    time.sleep(0.2)
    ctl.ok("POST", "/tasks/stop", {"cluster": "apps", "task_arn": arn})
    th.join(5)
    check("abrupt app drops the request in flight", isinstance(result.get("r"), Exception), result.get("r"))
    check("abrupt app's task STOPPED at once",
          wait_cond(lambda: by_arn(arn)["last_status"] == "STOPPED", 2), by_arn(arn))

    # Rolling replacement, one at a time: 4 tasks, max 125 %, min 100 %.
    ctl.ok("POST", "/services/app", {"cluster": "apps", "service": "svc", "app": graceful})
    ecs.update_service(cluster="apps", service="svc", desiredCount=4)
    ctl.ok("POST", "/services/autoreconcile", {"cluster": "apps", "service": "svc", "ip_pool": pool,
                                               "interval_ms": 50})
    svc_live = lambda: [t for t in tasks() if t["group"] == "service:svc" and t["desired_status"] == "RUNNING"]  # noqa: E731
    wait_cond(lambda: len([t for t in svc_live() if t["last_status"] == "RUNNING"]) == 4, 10)
    td2 = ctl.ok("POST", "/setup/task-definition", {
        "family": "appsvc", "network_mode": "awsvpc",
        "containers": [{"name": "app", "port": tport, "port_name": "http", "health_check": True}],
    })["task_definition_arn"]
    ecs.update_service(cluster="apps", service="svc", taskDefinition=td2,
                       deploymentConfiguration={"maximumPercent": 125, "minimumHealthyPercent": 100})
    max_live, min_running = 0, 99
    deadline = time.monotonic() + 20
    done = False
    while time.monotonic() < deadline:
        live = svc_live()
        max_live = max(max_live, len(live))
        min_running = min(min_running, len([t for t in live if t["last_status"] == "RUNNING"]))
        if len(live) == 4 and all(t["task_definition"] == td2 and t["last_status"] == "RUNNING" for t in live):
            done = True
            break
        time.sleep(0.02)
    check("rolling update replaces every task with the new revision", done, svc_live())
    check("rolling 125/100: at most 5 tasks, never fewer than 4 RUNNING",
          max_live <= 5 and min_running >= 4, (max_live, min_running))
    old_left = wait_cond(lambda: not [t for t in tasks() if t["task_definition"] == td1 and t["last_status"] != "STOPPED"], 10)
    check("replaced tasks' apps exited, tasks STOPPED", old_left,
          [(t["task_arn"], t["last_status"]) for t in tasks() if t["task_definition"] == td1])

    # All at once: max 200 %.
    td3 = ctl.ok("POST", "/setup/task-definition", {
        "family": "appsvc", "network_mode": "awsvpc",
        "containers": [{"name": "app", "port": tport, "port_name": "http"}],
    })["task_definition_arn"]
    ecs.update_service(cluster="apps", service="svc", taskDefinition=td3,
                       deploymentConfiguration={"maximumPercent": 200, "minimumHealthyPercent": 100})
    max_live = 0
    deadline = time.monotonic() + 20
    done = False
    while time.monotonic() < deadline:
        live = svc_live()
        max_live = max(max_live, len(live))
        if len(live) == 4 and all(t["task_definition"] == td3 and t["last_status"] == "RUNNING" for t in live):
            done = True
            break
        time.sleep(0.02)
    check("rolling 200/100 starts 4 new tasks before stopping the old ones", done and max_live == 8, (done, max_live))

    # Scale-in 4 -> 1: three apps get SIGTERM and exit.
    ecs.update_service(cluster="apps", service="svc", desiredCount=1)
    ok = wait_cond(lambda: len(svc_live()) == 1 and len(
        [t for t in tasks() if t["app"] and t["app"]["alive"]]) == 1, 10)
    check("scale-in 4 -> 1 stops three tasks and their apps", ok,
          [(t["last_status"], t["app"]) for t in tasks()])
    ctl.ok("DELETE", "/services/autoreconcile", {})
    return [t["app"]["pid"] for t in tasks() if t["app"]]


def _try(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return exc


if __name__ == "__main__":
    os.environ.pop("AWS_ENDPOINT_URL", None)
    sys.exit(main())
