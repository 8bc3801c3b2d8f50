#!/usr/bin/env python3
"""berth test harness: the real moto server as an ECS + EC2 emulator, extended.

Usage:
    python launcher.py --port P --control-port C [--region us-east-1] [--watch-stdin] [--verbose]

Starts two loopback-only HTTP servers in one process:

* 127.0.0.1:P  -- moto's own server (moto[server] 5.2.5), behind a WSGI middleware that counts
  calls per operation and injects faults (throttling, HTTP 500, delay). Point
  AWS_ENDPOINT_URL at http://127.0.0.1:P.
* 127.0.0.1:C  -- a JSON control API that manipulates moto's in-memory backends directly
  (tasks with loopback IPs, container instances, service reconciliation, faults, call counts,
  and cluster / task definition / service setup without an AWS SDK). See README.md.

Prints "READY <P> <C>" on stdout once both accept connections. Exits 0 on SIGTERM/SIGINT, and
on end of standard input when --watch-stdin is given (so it dies with its parent).

moto behaviour patched here (see README.md for why):
* ECS tasks no longer drift RUNNING -> DEACTIVATING -> ... -> STOPPED each time they are described.
* ListTasks: desiredStatus defaults to RUNNING, serviceName filters on the task group
  "service:<name>" (moto ignores it), an unknown service is ServiceNotFoundException, results are
  paginated (maxResults <= 100, nextToken) as in ECS.
* DescribeTasks: only the named cluster is searched, unknown tasks come back as failures
  (reason MISSING), more than 100 tasks is InvalidParameterException, as in ECS.
* CreateCluster on an existing name returns the existing cluster (moto replaced it).
* CreateService accepts an awsvpcConfiguration without securityGroups (moto: HTTP 500).
* StopTask on a harness task stops it the harness's way; UpdateService with another task
  definition starts a new deployment, which the reconcilers roll out within the service's
  deploymentConfiguration.

Task apps: a service's tasks (or a POST /tasks call) can run tests/src/bin/task-app.rs on their
address and container port ("app" setting): RUNNING once it accepts, SIGTERM at the moment the
task is stopped (lastStatus STOPPING while it lives, STOPPED when it exits, SIGKILL after the
stop timeout), all of them SIGKILLed and reaped when the launcher exits. See README.md.
* CloudWatch over Smithy RPC v2 CBOR (what the Rust SDK speaks; moto only parses the query and
  JSON protocols): PutMetricData and GetMetricData are decoded with cbor2, run against moto's
  CloudWatch backend, and answered in CBOR. GET /cloudwatch/metrics lists what was stored.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import io
import ipaddress
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

# moto reads its settings at import time; keep it from reaching anything but loopback.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import cbor2  # noqa: E402
import gzip  # noqa: E402
import re  # noqa: E402

from moto.cloudwatch.models import cloudwatch_backends  # noqa: E402
from moto.ec2.models import ec2_backends  # noqa: E402
from moto.ecs import models as ecs_models  # noqa: E402
from moto.ecs import responses as ecs_responses  # noqa: E402
from moto.ecs.exceptions import (  # noqa: E402
    InvalidParameterException,
    ServiceNotFoundException,
)
from moto.ecs.models import ecs_backends  # noqa: E402
from moto.moto_api import state_manager  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.core.responses import ActionResult  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

ACCOUNT = "123456789012"
ECS_TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

# One lock around every touch of moto's backends: moto is not thread-safe, and the control API
# and the auto-reconcilers mutate the same dicts moto's request threads iterate.
BACKEND_LOCK = threading.RLock()

log = logging.getLogger("berth-moto")


class BadRequest(Exception):
    """A control request that cannot be honoured; answered with HTTP 400."""


class NotFound(Exception):
    """A control request naming something that does not exist; answered with HTTP 404."""


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


# ---------------------------------------------------------------------------------------------
# moto patches
# ---------------------------------------------------------------------------------------------

# Tasks started through moto's own RunTask stay RUNNING until stopped (moto's default moves them
# one state towards STOPPED on every DescribeTasks).
state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**12})


class HarnessContainer:
    """A container of a harness task, with the attribute names moto's serializer looks up
    (snake_case of the ECS API's Container shape members)."""

    def __init__(self, task_arn: str, definition: dict[str, Any], health_status: str):
        self.container_arn = f"{task_arn.replace(':task/', ':container/')}/{uuid.uuid4()}"
        self.task_arn = task_arn
        self.name = definition.get("name")
        self.image = definition.get("image")
        self.runtime_id = uuid.uuid4().hex
        self.last_status = "RUNNING"
        self.network_bindings: list[dict[str, Any]] = []
        self.network_interfaces: list[dict[str, Any]] = []
        self.health_status = health_status
        self.cpu = str(definition.get("cpu", 0))
        memory = definition.get("memory")
        self.memory = str(memory) if memory is not None else None
        self.has_health_check = bool(definition.get("healthCheck"))
        self.exit_code: int | None = None


class HarnessTask(ecs_models.Task):
    """An ECS task created by the control API. Built without moto's Task.__init__ (which draws a
    random 10.x address and needs a subnet); serialises with the ECS API's field names."""

    # moto's model metaclass files every model under the service named by its module path.
    __module__ = "berth_harness.ecs"

    def __init__(self, **kw: Any) -> None:  # noqa: D401 - see create_tasks
        ecs_models.ManagedState.__init__(
            self, model_name="berth::task", transitions=[("RUNNING", "RUNNING")]
        )
        backend = kw["backend"]
        cluster = kw["cluster"]
        td = kw["task_definition"]
        self.id = str(uuid.uuid4())
        self._backend = backend
        self._account_id = backend.account_id
        self.region_name = cluster.region_name
        self.cluster_name = cluster.name
        self.cluster_arn = cluster.arn
        self.task_definition_arn = td.arn
        self.container_instance_arn = kw.get("container_instance_arn")
        self._last_status = kw.get("last_status") or "RUNNING"
        self.desired_status = "RUNNING"
        self.group = kw["group"]
        self.started_by = kw.get("started_by") or None
        self.launch_type = kw["launch_type"]
        self.capacity_provider_name = None
        self.platform_version = "1.4.0" if self.launch_type == "FARGATE" else None
        self.platform_family = "Linux" if self.launch_type == "FARGATE" else None
        self.availability_zone = kw["availability_zone"]
        self.health_status = kw["health_status"]
        self.connectivity = "CONNECTED"
        now = utcnow()
        self.created_at = now
        self.connectivity_at = now
        self.pull_started_at = now
        self.pull_stopped_at = now
        self.started_at = now if self._last_status == "RUNNING" else None
        self.stopping_at = None
        self.stopped_at = None
        self.execution_stopped_at = None
        self.stop_code = None
        self.stopped_reason = None
        self.cpu = td.cpu
        self.memory = td.memory
        self.version = 1
        self.enable_execute_command = False
        self.tags: list[dict[str, str]] = []
        self.attributes = None
        self.attachments: list[dict[str, Any]] = []
        self.overrides = {
            "containerOverrides": [{"name": c.get("name")} for c in td.container_definitions],
            "inferenceAcceleratorOverrides": [],
        }
        self.resource_requirements = {
            "CPU": sum(int(c.get("cpu", 0) or 0) for c in td.container_definitions),
            "MEMORY": sum(
                int(c.get("memory", c.get("memoryReservation", 0)) or 0)
                for c in td.container_definitions
            ),
            "PORTS": [],
            "PORTS_UDP": [],
        }
        self.network_mode = kw["network_mode"]
        self.private_ip = kw.get("private_ip")
        self.eni_id: str | None = None
        self.containers = [
            HarnessContainer(
                self.task_arn,
                cd,
                self.health_status if cd.get("healthCheck") else "UNKNOWN",
            )
            for cd in td.container_definitions
        ]

    # moto's Task derives lastStatus from its ManagedState; ours is a plain value.
    @property
    def last_status(self) -> str:  # type: ignore[override]
        return self._last_status

    @last_status.setter
    def last_status(self, value: str) -> None:
        self._last_status = value
        for c in self.containers:
            c.last_status = value
        if value == "STOPPED":
            now = utcnow()
            self.stopping_at = self.stopping_at or now
            self.stopped_at = now
            self.execution_stopped_at = now
            self.desired_status = "STOPPED"
            self.stop_code = self.stop_code or "UserInitiated"
            for c in self.containers:
                c.exit_code = 0 if c.exit_code is None else c.exit_code
            for a in self.attachments:
                a["status"] = "DELETED"
        elif value == "RUNNING" and self.started_at is None:
            self.started_at = utcnow()

    def advance(self) -> None:  # never drift
        pass

    def set_health(self, status: str) -> None:
        self.health_status = status
        for c in self.containers:
            if c.has_health_check:
                c.health_status = status
        self.version += 1


_orig_list_tasks = ecs_models.EC2ContainerServiceBackend.list_tasks


def _list_tasks(
    self: Any,
    cluster_str: str | None = None,
    container_instance: str | None = None,
    family: str | None = None,
    started_by: str | None = None,
    service_name: str | None = None,
    desiredStatus: str | None = None,
) -> list[Any]:
    """ECS semantics: desiredStatus defaults to RUNNING; serviceName filters on group."""
    group = None
    if service_name:
        service = self._get_service(cluster_str or "default", service_name)
        group = f"service:{service.name}"
    tasks = _orig_list_tasks(
        self,
        cluster_str,
        container_instance,
        family,
        started_by,
        None,
        desiredStatus or "RUNNING",
    )
    if cluster_str:
        name = cluster_str.split("/")[-1]
        tasks = [t for t in tasks if t.cluster_name == name]
    if group is not None:
        tasks = [t for t in tasks if t.group == group]
    return tasks


ecs_models.EC2ContainerServiceBackend.list_tasks = _list_tasks  # type: ignore[method-assign]


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_token(token: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except Exception as exc:  # noqa: BLE001
        raise InvalidParameterException("Invalid nextToken") from exc


def _resp_list_tasks(self: Any) -> ActionResult:
    cluster_str = self._get_param("cluster", "default")
    tasks = self.ecs_backend.list_tasks(
        cluster_str,
        self._get_param("containerInstance"),
        self._get_param("family"),
        self._get_param("startedBy"),
        self._get_param("serviceName"),
        self._get_param("desiredStatus"),
    )
    max_results = self._get_param("maxResults")
    max_results = 100 if max_results is None else int(max_results)
    if not 1 <= max_results <= 100:
        raise InvalidParameterException("maxResults must be between 1 and 100")
    token = self._get_param("nextToken")
    start = _decode_token(token) if token else 0
    arns = [t.task_arn for t in tasks]
    page = arns[start : start + max_results]
    result: dict[str, Any] = {"taskArns": page}
    if start + max_results < len(arns):
        result["nextToken"] = _encode_token(start + max_results)
    return ActionResult(result)


def _resp_describe_tasks(self: Any) -> ActionResult:
    cluster_str = self._get_param("cluster", "default")
    wanted = self._get_param("tasks", []) or []
    if not wanted:
        raise InvalidParameterException("Tasks cannot be empty.")
    if len(wanted) > 100:
        raise InvalidParameterException("Too many tasks were provided. Maximum is 100.")
    cluster = self.ecs_backend._get_cluster(cluster_str)
    cluster_tasks = self.ecs_backend.tasks.get(cluster.name, {})
    found, failures = [], []
    for ref in wanted:
        task_id = ref.split("/")[-1]
        match = next(
            (t for arn, t in cluster_tasks.items() if arn == ref or t.id == task_id), None
        )
        if match is None:
            failures.append({"arn": ref, "reason": "MISSING"})
        else:
            match.advance()
            found.append(match)
    if "TAGS" in (self._get_param("include", []) or []):
        self._include_in_response(ecs_responses.DESCRIBE_TASKS_TAGS)
    else:
        self._exclude_from_response(ecs_responses.DESCRIBE_TASKS_TAGS)
    return ActionResult({"tasks": found, "failures": failures})


ecs_responses.EC2ContainerServiceResponse.list_tasks = _resp_list_tasks  # type: ignore[method-assign]
ecs_responses.EC2ContainerServiceResponse.describe_tasks = _resp_describe_tasks  # type: ignore[method-assign]

_orig_validate_network = ecs_models.Service._validate_network


def _validate_network(self: Any, nc: dict[str, Any]) -> dict[str, Any]:
    """securityGroups is optional in ECS (the VPC's default group); moto raised KeyError."""
    awsvpc = dict(nc.get("awsvpcConfiguration") or {})
    awsvpc.setdefault("subnets", [])
    awsvpc.setdefault("securityGroups", [])
    _orig_validate_network(self, {**nc, "awsvpcConfiguration": awsvpc})
    return nc


ecs_models.Service._validate_network = _validate_network  # type: ignore[method-assign]

_orig_create_cluster = ecs_models.EC2ContainerServiceBackend.create_cluster


def _create_cluster(self: Any, cluster_name: str, *args: Any, **kwargs: Any) -> Any:
    existing = self.clusters.get(cluster_name)
    if existing is not None and existing.status == "ACTIVE":
        return existing
    return _orig_create_cluster(self, cluster_name, *args, **kwargs)


ecs_models.EC2ContainerServiceBackend.create_cluster = _create_cluster  # type: ignore[method-assign]

# The running Harness, so that moto's own StopTask stops harness tasks the harness's way (their
# task apps get SIGTERM; lastStatus STOPPING until the app exits).
_HARNESS: dict[str, Any] = {}

_orig_stop_task = ecs_models.EC2ContainerServiceBackend.stop_task


def _stop_task(self: Any, cluster_str: str, task_str: str, reason: str) -> Any:
    harness = _HARNESS.get("h")
    cluster = self._get_cluster(cluster_str)
    task_id = (task_str or "").split("/")[-1]
    for arn, task in self.tasks.get(cluster.name, {}).items():
        if isinstance(task, HarnessTask) and harness is not None and (
            arn == task_str or task.id == task_id
        ):
            harness._stop(cluster, task, reason or "Task stopped by user")
            harness._refresh_service_of(cluster, task)
            return task
    return _orig_stop_task(self, cluster_str, task_str, reason)


ecs_models.EC2ContainerServiceBackend.stop_task = _stop_task  # type: ignore[method-assign]

_orig_update_service = ecs_models.EC2ContainerServiceBackend.update_service


def _update_service(self: Any, service_properties: dict[str, Any]) -> Any:
    """A new task definition starts a new PRIMARY deployment (new id), as in ECS: the
    reconcilers then replace the old deployment's tasks (see Harness.reconcile)."""
    cluster_str = service_properties.get("cluster", "default")
    name = str(service_properties.get("service", "")).split("/")[-1]
    before = None
    try:
        before = self._get_service(cluster_str, name).task_definition
        before = self.describe_task_definition(before).arn if before else None
    except Exception:  # noqa: BLE001 - the original raises the proper error below
        pass
    service = _orig_update_service(self, service_properties)
    after = self.describe_task_definition(service.task_definition).arn if service.task_definition else None
    service.task_definition = after
    if service.deployments:
        d = service.deployments[0]
        if after != before:
            d["id"] = f"ecs-svc/{uuid.uuid4().int % 32**12}"
            d["createdAt"] = d["updatedAt"] = utcnow()
        d["taskDefinition"] = after
    return service


ecs_models.EC2ContainerServiceBackend.update_service = _update_service  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------
# Call counting and fault injection in front of moto
# ---------------------------------------------------------------------------------------------


class Faults:
    """Per-operation queues of pending faults, plus per-operation call counts."""

    KINDS = ("throttle", "error500", "delay")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, list[dict[str, Any]]] = {}
        self._calls: dict[str, int] = {}

    def add(self, operation: str, kind: str, count: int, delay_ms: int) -> None:
        with self._lock:
            self._queues.setdefault(operation, []).append(
                {"kind": kind, "remaining": count, "delay_ms": delay_ms}
            )

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()

    def pending(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {k: [dict(f) for f in v] for k, v in self._queues.items() if v}

    def record(self, operation: str) -> dict[str, Any] | None:
        """Counts one call and pops the fault it must suffer, if any ("*" matches any)."""
        with self._lock:
            self._calls[operation] = self._calls.get(operation, 0) + 1
            for key in (operation, "*"):
                queue = self._queues.get(key)
                if queue:
                    fault = queue[0]
                    fault["remaining"] -= 1
                    if fault["remaining"] <= 0:
                        queue.pop(0)
                    return dict(fault)
            return None

    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()


FAULTS = Faults()


def _operation(environ: dict[str, Any]) -> tuple[str, str | None]:
    """(protocol, operation) of a request; reads and restores a form body when needed."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return "json", target.split(".", 1)[-1]
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in qs:
        return "query", qs["Action"][0]
    ctype = environ.get("CONTENT_TYPE", "")
    if environ.get("REQUEST_METHOD") == "POST" and "x-www-form-urlencoded" in ctype:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        form = parse_qs(body.decode("utf-8", "replace"))
        if "Action" in form:
            return "query", form["Action"][0]
    return "other", None


def _fault_response(protocol: str, kind: str, start_response: Any) -> list[bytes]:
    request_id = str(uuid.uuid4())
    if protocol == "json":
        if kind == "throttle":
            status, etype, msg = "400 Bad Request", "ThrottlingException", "Rate exceeded"
        else:
            status, etype, msg = (
                "500 Internal Server Error",
                "ServerException",
                "Service unavailable (injected by berth test harness)",
            )
        body = json.dumps({"__type": etype, "message": msg}).encode()
        headers = [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("x-amzn-ErrorType", etype),
            ("x-amzn-RequestId", request_id),
        ]
    else:
        if kind == "throttle":
            status, code, msg = "503 Service Unavailable", "RequestLimitExceeded", (
                "Request limit exceeded."
            )
        else:
            status, code, msg = "500 Internal Server Error", "InternalError", (
                "An internal error has occurred (injected by berth test harness)"
            )
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{msg}</Message></Error>"
            f"</Errors><RequestID>{request_id}</RequestID></Response>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
    headers.append(("Content-Length", str(len(body))))
    start_response(status, headers)
    return [body]


# ---------------------------------------------------------------------------------------------
# CloudWatch over Smithy RPC v2 CBOR
# ---------------------------------------------------------------------------------------------

CBOR_PATH = re.compile(r"^/service/GraniteServiceVersion20100801/operation/([A-Za-z]+)$")
CBOR_OPERATIONS = ("PutMetricData", "GetMetricData")
_REGION = {"name": "us-east-1"}


def _cbor_operation(environ: dict[str, Any]) -> str | None:
    """The operation of a CloudWatch RPC v2 CBOR request, or None for anything else."""
    if environ.get("HTTP_SMITHY_PROTOCOL", "") != "rpc-v2-cbor":
        return None
    m = CBOR_PATH.match(environ.get("PATH_INFO", ""))
    return m.group(1) if m else None


def _cbor_reply(start_response: Any, status: str, payload: Any, extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = cbor2.dumps(payload, datetime_as_timestamp=True, timezone=_dt.timezone.utc)
    headers = [
        ("smithy-protocol", "rpc-v2-cbor"),
        ("Content-Type", "application/cbor"),
        ("x-amzn-RequestId", str(uuid.uuid4())),
        ("Content-Length", str(len(body))),
    ] + (extra or [])
    start_response(status, headers)
    return [body]


def _cbor_error(start_response: Any, status: str, code: str, message: str, fault: str = "Sender") -> list[bytes]:
    return _cbor_reply(
        start_response,
        status,
        {"__type": f"com.amazonaws.cloudwatch#{code}", "message": message},
        [("x-amzn-query-error", f"{code};{fault}")],
    )


def _naive_utc(v: Any) -> Any:
    """cbor2 decodes epoch timestamps (tag 1) to aware datetimes; moto compares naive UTC."""
    if isinstance(v, _dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return v
    if isinstance(v, (int, float)):
        return _dt.datetime.fromtimestamp(float(v), _dt.timezone.utc).replace(tzinfo=None)
    return v


def _aware_utc(v: Any) -> Any:
    if isinstance(v, _dt.datetime) and v.tzinfo is None:
        return v.replace(tzinfo=_dt.timezone.utc)
    return v


def cbor_cloudwatch(op: str, environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Runs one CBOR CloudWatch call against moto's backend (caller holds BACKEND_LOCK)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    if "gzip" in environ.get("HTTP_CONTENT_ENCODING", ""):
        raw = gzip.decompress(raw)
    try:
        req = cbor2.loads(raw) if raw else {}
    except Exception as exc:  # noqa: BLE001
        return _cbor_error(start_response, "400 Bad Request", "SerializationException", f"bad CBOR: {exc}")
    if not isinstance(req, dict):
        return _cbor_error(start_response, "400 Bad Request", "SerializationException", "body is not a map")
    backend = cloudwatch_backends[ACCOUNT][_REGION["name"]]
    try:
        if op == "PutMetricData":
            data = []
            for d in req.get("MetricData") or []:
                d = dict(d)
                if "Timestamp" in d:
                    d["Timestamp"] = _naive_utc(d["Timestamp"])
                data.append(d)
            backend.put_metric_data(req.get("Namespace"), data)
            log.debug("cbor PutMetricData: %d datapoints to %s", len(data), req.get("Namespace"))
            return _cbor_reply(start_response, "200 OK", {})
        if op == "GetMetricData":
            results = backend.get_metric_data(
                queries=req.get("MetricDataQueries") or [],
                start_time=_naive_utc(req.get("StartTime")),
                end_time=_naive_utc(req.get("EndTime")),
                scan_by=req.get("ScanBy") or "TimestampDescending",
            )
            out = [
                {
                    "Id": r["id"],
                    "Label": r["label"],
                    "Timestamps": [_aware_utc(t) for t in r["timestamps"]],
                    "Values": [float(v) for v in r["values"]],
                    "StatusCode": r.get("status_code", "Complete"),
                }
                for r in results
            ]
            return _cbor_reply(start_response, "200 OK", {"MetricDataResults": out, "Messages": []})
    except Exception as exc:  # noqa: BLE001
        log.debug("cbor %s failed: %s", op, traceback.format_exc())
        code = getattr(exc, "error_type", None) or "InvalidParameterValue"
        return _cbor_error(start_response, "400 Bad Request", str(code), str(exc))
    return _cbor_error(
        start_response, "400 Bad Request", "UnknownOperationException",
        f"{op} is not translated by the berth test harness (only {', '.join(CBOR_OPERATIONS)})",
    )


def _cbor_fault(kind: str, start_response: Any) -> list[bytes]:
    if kind == "throttle":
        return _cbor_error(start_response, "400 Bad Request", "Throttling", "Rate exceeded")
    return _cbor_error(
        start_response, "500 Internal Server Error", "InternalServiceFault",
        "Internal error (injected by berth test harness)", "Receiver",
    )


def stored_metrics(q: dict[str, list[str]]) -> dict[str, Any]:
    """The datapoints moto's CloudWatch holds, optionally filtered by namespace and name."""
    ns = (q.get("namespace") or [None])[0]
    name = (q.get("name") or [None])[0]
    backend = cloudwatch_backends[ACCOUNT][_REGION["name"]]
    out = []
    for md in backend.metric_data:
        if ns and md.namespace != ns:
            continue
        if name and md.name != name:
            continue
        out.append(
            {
                "namespace": md.namespace,
                "name": md.name,
                "dimensions": {d.name: d.value for d in md.dimensions},
                "value": float(getattr(md, "value", 0.0)),
                "unit": md.unit,
                "timestamp": _aware_utc(md.timestamp).isoformat(),
            }
        )
    return {"datapoints": out}


class HarnessMiddleware:
    """WSGI middleware: count, maybe fault, then hand to moto under the backend lock."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        cbor_op = _cbor_operation(environ)
        if cbor_op is not None:
            fault = FAULTS.record(cbor_op)
            if fault is not None:
                if fault["kind"] == "delay":
                    time.sleep(fault["delay_ms"] / 1000.0)
                else:
                    return _cbor_fault(fault["kind"], start_response)
            with BACKEND_LOCK:
                return cbor_cloudwatch(cbor_op, environ, start_response)
        protocol, op = _operation(environ)
        if op is not None:
            fault = FAULTS.record(op)
            if fault is not None:
                if fault["kind"] == "delay":
                    time.sleep(fault["delay_ms"] / 1000.0)
                else:
                    return _fault_response(protocol, fault["kind"], start_response)
        with BACKEND_LOCK:
            # Materialise the body inside the lock: moto serialises lazily from the models.
            return list(self.app(environ, start_response))


# ---------------------------------------------------------------------------------------------
# Control API: backend manipulation
# ---------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """preexec_fn of task apps: SIGKILL when the launcher dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; main() reaps on a normal exit
        pass


class _Spawner:
    """Starts task apps from one long-lived thread: PR_SET_PDEATHSIG fires when the thread that
    forked the child exits, and control API request threads are short-lived."""

    def __init__(self) -> None:
        import queue

        self._q: Any = queue.Queue()
        threading.Thread(target=self._loop, name="app-spawner", daemon=True).start()

    def _loop(self) -> None:
        while True:
            cmd, done, out = self._q.get()
            try:
                out["proc"] = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=None,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                out["error"] = exc
            done.set()

    def spawn(self, cmd: list[str]) -> subprocess.Popen:
        done, out = threading.Event(), {}
        self._q.put((cmd, done, out))
        if not done.wait(10):
            raise OSError("the spawner thread did not answer within 10 s")
        if "error" in out:
            raise out["error"]
        return out["proc"]


SPAWNER: _Spawner | None = None


class AppProcess:
    """The task app (tests/src/bin/task-app.rs) of one harness task."""

    def __init__(self, proc: subprocess.Popen, settings: dict[str, Any], addr: tuple[str, int]):
        self.proc = proc
        self.settings = settings
        self.addr = addr
        self.killer: threading.Timer | None = None
        self.term_sent_at: float | None = None
        self.exited_at: float | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """What ECS does on StopTask: SIGTERM now, SIGKILL after the stop timeout."""
        if not self.alive() or self.term_sent_at is not None:
            return
        self.term_sent_at = time.monotonic()
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return
        self.killer = threading.Timer(self.settings["stop_timeout_ms"] / 1000.0, self.kill)
        self.killer.daemon = True
        self.killer.start()

    def kill(self) -> None:
        if self.alive():
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    def describe(self) -> dict[str, Any]:
        return {
            "pid": self.proc.pid,
            "alive": self.alive(),
            "mode": self.settings["mode"],
            "exit_code": self.proc.poll(),
        }


class Harness:
    def __init__(self, region: str) -> None:
        self.region = region
        self.host_ports = itertools.count(32768)
        self.az_cycle = itertools.count()
        self.auto: dict[tuple[str, str], tuple[threading.Thread, threading.Event]] = {}
        self.auto_errors: dict[str, str] = {}
        # Task apps: settings per (cluster, service), the process of each task that has one.
        self.apps: dict[tuple[str, str], dict[str, Any]] = {}
        self.procs: dict[str, AppProcess] = {}
        # When each address was last given to a task: reconcile hands out the least recently
        # used one, so a replacement never takes the address of a task that just stopped.
        self.ip_last_used: dict[str, float] = {}
        _HARNESS["h"] = self

    @property
    def ecs(self) -> Any:
        return ecs_backends[ACCOUNT][self.region]

    @property
    def ec2(self) -> Any:
        return ec2_backends[ACCOUNT][self.region]

    # -- helpers --------------------------------------------------------------------------

    def _cluster(self, name: Any) -> Any:
        if not isinstance(name, str) or not name:
            raise BadRequest("'cluster' must be a non-empty string")
        cluster = self.ecs.clusters.get(name.split("/")[-1])
        if cluster is None:
            raise NotFound(f"cluster {name!r} not found")
        return cluster

    def _service(self, cluster: Any, name: Any) -> Any:
        if not isinstance(name, str) or not name:
            raise BadRequest("'service' must be a non-empty string")
        try:
            return self.ecs._get_service(cluster.name, name)
        except ServiceNotFoundException:
            raise NotFound(f"service {name!r} not found in cluster {cluster.name!r}") from None

    def _task_definition(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref:
            raise BadRequest("'task_definition' must be a non-empty string")
        try:
            return self.ecs.describe_task_definition(ref)
        except Exception:  # noqa: BLE001 - moto raises several kinds
            raise NotFound(f"task definition {ref!r} not found") from None

    def _task(self, cluster: Any, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref:
            raise BadRequest("'task_arn' must be a non-empty string")
        task_id = ref.split("/")[-1]
        for arn, task in self.ecs.tasks.get(cluster.name, {}).items():
            if arn == ref or task.id == task_id:
                return task
        raise NotFound(f"task {ref!r} not found in cluster {cluster.name!r}")

    def _container_instance(self, cluster: Any, ref: str) -> Any:
        cis = self.ecs.container_instances.get(cluster.name, {})
        ci = cis.get(ref.split("/")[-1])
        if ci is None:
            raise NotFound(f"container instance {ref!r} not found in cluster {cluster.name!r}")
        return ci

    def _default_subnet(self, az: str) -> Any:
        try:
            subnets = self.ec2.get_default_subnets()
            return subnets.get(az) or next(iter(subnets.values()))
        except Exception:  # noqa: BLE001
            return None

    def _ips_in_use(self) -> set[str]:
        used = set()
        for tasks in self.ecs.tasks.values():
            for t in tasks.values():
                if not isinstance(t, HarnessTask) or not t.private_ip:
                    continue
                # A stopping task's app may still listen on its address.
                if t.desired_status == "RUNNING" or (
                    t.task_arn in self.procs and t.last_status != "STOPPED"
                ):
                    used.add(t.private_ip)
        return used

    @staticmethod
    def _loopback(ip: Any, what: str) -> str:
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            raise BadRequest(f"{what}: {ip!r} is not an IP address") from None
        if addr.version != 4 or addr not in LOOPBACK:
            raise BadRequest(f"{what}: {ip} is not a loopback address (127.0.0.0/8)")
        return str(addr)

    def _update_service_counts(self, cluster: Any, service: Any) -> int:
        running = [
            t
            for t in self.ecs.tasks.get(cluster.name, {}).values()
            if t.group == f"service:{service.name}"
            and t.desired_status == "RUNNING"
            and t.last_status == "RUNNING"
        ]
        pending = [
            t
            for t in self.ecs.tasks.get(cluster.name, {}).values()
            if t.group == f"service:{service.name}"
            and t.desired_status == "RUNNING"
            and t.last_status != "RUNNING"
        ]
        service.running_count = len(running)
        service.pending_count = len(pending)
        for d in getattr(service, "deployments", []) or []:
            if d.get("status") == "PRIMARY":
                d["runningCount"] = len(running)
                d["pendingCount"] = len(pending)
                d["desiredCount"] = service.desired_count
                d["rolloutState"] = (
                    "COMPLETED" if len(running) == service.desired_count else "IN_PROGRESS"
                )
        return len(running)

    # -- tasks ----------------------------------------------------------------------------

    def create_tasks(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(body.get("cluster"))
        td = self._task_definition(body.get("task_definition"))
        count = body.get("count", 1)
        if not isinstance(count, int) or count < 1 or count > 1000:
            raise BadRequest("'count' must be an integer in 1..1000")
        network_mode = body.get("network_mode") or td.network_mode or "bridge"
        if network_mode not in ("awsvpc", "bridge", "host"):
            raise BadRequest("'network_mode' must be awsvpc, bridge or host")
        launch_type = body.get("launch_type") or ("FARGATE" if network_mode == "awsvpc" else "EC2")
        if launch_type not in ("FARGATE", "EC2", "EXTERNAL"):
            raise BadRequest("'launch_type' must be FARGATE, EC2 or EXTERNAL")
        if launch_type == "FARGATE" and network_mode != "awsvpc":
            raise BadRequest("FARGATE tasks need network_mode awsvpc")
        health = body.get("health_status")
        has_check = any(cd.get("healthCheck") for cd in td.container_definitions)
        if health is None:
            health = "HEALTHY" if has_check else "UNKNOWN"
        if health not in ("HEALTHY", "UNHEALTHY", "UNKNOWN"):
            raise BadRequest("'health_status' must be HEALTHY, UNHEALTHY or UNKNOWN")
        last_status = body.get("last_status") or "RUNNING"
        if last_status not in ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING"):
            raise BadRequest("'last_status' must be PROVISIONING, PENDING, ACTIVATING or RUNNING")
        app: dict[str, Any] | None = None
        if body.get("app") is not None:
            app = self._app_settings(body["app"])
        elif body.get("service") is not None:
            app = self.apps.get((cluster.name, str(body["service"]).split("/")[-1]))
        ready_health = health
        if app is not None:
            if network_mode != "awsvpc":
                raise BadRequest("task apps run on awsvpc tasks only (one loopback address each)")
            if not self._app_port(td):
                raise BadRequest("task apps need a container port in the task definition")
            # PENDING until the app accepts connections; the container health check (if any)
            # passes then.
            last_status = "PENDING"
            health = "UNKNOWN"

        service = None
        service_name = body.get("service")
        if service_name is not None:
            service = self._service(cluster, service_name)
            group = f"service:{service.name}"
            deployments = getattr(service, "deployments", None) or []
            started_by = deployments[0]["id"] if deployments else "ecs-svc/0"
        else:
            group = body.get("group") or f"family:{td.family}"
            started_by = body.get("started_by")

        ips: list[str | None] = [None] * count
        ci = None
        host_ports: list[int] = []
        if network_mode == "awsvpc":
            raw = body.get("ips")
            if not isinstance(raw, list) or len(raw) != count:
                raise BadRequest(f"awsvpc tasks need 'ips': a list of {count} loopback addresses")
            ips = [self._loopback(ip, "ips") for ip in raw]
            if len(set(ips)) != len(ips):
                raise BadRequest("'ips' has duplicates")
        else:
            ref = body.get("container_instance")
            cis = self.ecs.container_instances.get(cluster.name, {})
            if ref:
                ci = self._container_instance(cluster, ref)
            elif cis:
                ci = next(iter(cis.values()))
            elif launch_type == "EC2":
                raise BadRequest(
                    f"{network_mode} tasks need a container instance: POST /container-instances first"
                )
            raw_ports = body.get("host_ports")
            if raw_ports is None:
                host_ports = [next(self.host_ports) for _ in range(count)]
            else:
                if not isinstance(raw_ports, list) or len(raw_ports) != count:
                    raise BadRequest(f"'host_ports' must be a list of {count} ports")
                for p in raw_ports:
                    if not isinstance(p, int) or not 1 <= p <= 65535:
                        raise BadRequest(f"'host_ports': {p!r} is not a port")
                host_ports = list(raw_ports)

        az = body.get("availability_zone")
        ci_az = None
        if ci is not None:
            try:
                ci_az = self.ec2.get_instance(ci.ec2_instance_id).availability_zone
            except Exception:  # noqa: BLE001
                ci_az = None
        tasks = []
        for i in range(count):
            task_az = az or ci_az or f"{self.region}{'abc'[next(self.az_cycle) % 3]}"
            task = HarnessTask(
                backend=self.ecs,
                cluster=cluster,
                task_definition=td,
                group=group,
                started_by=started_by,
                launch_type=launch_type,
                availability_zone=task_az,
                health_status=health,
                last_status=last_status,
                network_mode=network_mode,
                private_ip=ips[i],
                container_instance_arn=ci.container_instance_arn if ci is not None else None,
            )
            if network_mode == "awsvpc":
                self._attach_eni(task, ips[i], task_az)
                if ips[i]:
                    self.ip_last_used[ips[i]] = time.monotonic()
            else:
                self._bind_ports(task, td, host_ports[i], network_mode)
                if ci is not None:
                    self.ecs.update_container_instance_resources(ci, task.resource_requirements)
                    ci.running_tasks_count += 1
            self.ecs.tasks.setdefault(cluster.name, {})[task.task_arn] = task
            self.ecs.update_cluster_resources(cluster, 1)
            tasks.append(task)
        if app is not None:
            for task in tasks:
                self._start_app(cluster.name, task, td, app, ready_health)
        if service is not None:
            self._update_service_counts(cluster, service)
        return {"task_arns": [t.task_arn for t in tasks]}

    def _attach_eni(self, task: HarnessTask, ip: str | None, az: str) -> None:
        subnet = self._default_subnet(az)
        subnet_id = subnet.id if subnet is not None else f"subnet-{uuid.uuid4().hex[:17]}"
        eni_id = f"eni-{uuid.uuid4().hex[:17]}"
        mac = "02:00:00:%02x:%02x:%02x" % tuple(os.urandom(3))
        try:
            eni = self.ec2.create_network_interface(
                subnet=subnet_id, private_ip_address=ip, group_ids=[], description="moto ECS"
            )
            eni.status = "in-use"
            eni.device_index = 0
            eni_id = eni.id
            mac = getattr(eni, "mac_address", mac)
        except Exception as exc:  # noqa: BLE001 - the ENI is cosmetic
            log.debug("ENI for %s not created in EC2: %s", ip, exc)
        task.eni_id = eni_id
        attachment_id = str(uuid.uuid4())
        dns = f"ip-{(ip or '').replace('.', '-')}.ec2.internal"
        task.attachments.append(
            {
                "id": attachment_id,
                "type": "ElasticNetworkInterface",
                "status": "ATTACHED",
                "details": [
                    {"name": "subnetId", "value": subnet_id},
                    {"name": "networkInterfaceId", "value": eni_id},
                    {"name": "macAddress", "value": mac},
                    {"name": "privateDnsName", "value": dns},
                    {"name": "privateIPv4Address", "value": ip},
                ],
            }
        )
        for c in task.containers:
            c.network_interfaces = [{"attachmentId": attachment_id, "privateIpv4Address": ip}]

    def _bind_ports(self, task: HarnessTask, td: Any, host_port: int, network_mode: str) -> None:
        first = True
        for c, cd in zip(task.containers, td.container_definitions):
            for pm in cd.get("portMappings") or []:
                cport = pm.get("containerPort")
                if cport is None:
                    continue
                hport = pm.get("hostPort") or 0
                if network_mode == "host":
                    hport = hport or cport
                elif not hport:
                    hport = host_port if first else next(self.host_ports)
                first = False
                c.network_bindings.append(
                    {
                        "bindIP": "0.0.0.0",
                        "containerPort": cport,
                        "hostPort": hport,
                        "protocol": pm.get("protocol") or "tcp",
                    }
                )

    # -- task apps -------------------------------------------------------------------------

    APP_MODES = ("graceful", "abrupt")

    def _app_settings(self, raw: Any) -> dict[str, Any]:
        """Validates an "app" object: {"binary", "mode", "grace_ms", "stop_timeout_ms",
        "ready_delay_ms"}."""
        if not isinstance(raw, dict):
            raise BadRequest("'app' must be an object")
        binary = raw.get("binary")
        if not isinstance(binary, str) or not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            raise BadRequest(
                f"app.binary: {binary!r} is not an executable file "
                "(build it: cargo build --release -p berth-tests --bin task-app)"
            )
        mode = raw.get("mode", "graceful")
        if mode not in self.APP_MODES:
            raise BadRequest(f"app.mode must be one of {', '.join(self.APP_MODES)}")
        out: dict[str, Any] = {"binary": binary, "mode": mode}
        for key, default in (("grace_ms", 3000), ("stop_timeout_ms", 30000), ("ready_delay_ms", 0)):
            v = raw.get(key, default)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise BadRequest(f"app.{key} must be a non-negative integer (milliseconds)")
            out[key] = v
        return out

    @staticmethod
    def _app_port(td: Any) -> int | None:
        for cd in td.container_definitions:
            for pm in cd.get("portMappings") or []:
                if pm.get("containerPort"):
                    return int(pm["containerPort"])
        return None

    def set_app(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(body.get("cluster"))
        service = self._service(cluster, body.get("service"))
        if body.get("app") is None:
            self.apps.pop((cluster.name, service.name), None)
            return {"app": None}
        app = self._app_settings(body["app"])
        self.apps[(cluster.name, service.name)] = app
        return {"app": app}

    def _start_app(self, cluster_name: str, task: HarnessTask, td: Any, app: dict[str, Any],
                   ready_health: str | None) -> None:
        """Spawns the task's app on its address and container port; a thread marks the task
        RUNNING once the app accepts, and STOPPED once it exits (caller holds BACKEND_LOCK)."""
        port = self._app_port(td)
        addr = (task.private_ip or "", int(port or 0))
        cmd = [app["binary"], "--listen", f"{addr[0]}:{addr[1]}", "--mode", app["mode"],
               "--grace-ms", str(app["grace_ms"]), "--name", task.id]
        global SPAWNER
        if SPAWNER is None:
            SPAWNER = _Spawner()
        try:
            proc = SPAWNER.spawn(cmd)
        except OSError as exc:
            raise BadRequest(f"cannot start task app {cmd}: {exc}") from None
        ap = AppProcess(proc, app, addr)
        self.procs[task.task_arn] = ap
        has_check = any(c.has_health_check for c in task.containers)
        health = ready_health or ("HEALTHY" if has_check else "UNKNOWN")
        threading.Thread(
            target=self._app_lifecycle, args=(cluster_name, task, ap, health),
            name=f"app-{task.id[:8]}", daemon=True,
        ).start()

    def _app_lifecycle(self, cluster_name: str, task: HarnessTask, ap: AppProcess,
                       health: str) -> None:
        deadline = time.monotonic() + 20
        accepting = False
        while ap.alive() and time.monotonic() < deadline and task.desired_status == "RUNNING":
            try:
                with socket.create_connection(ap.addr, timeout=0.5):
                    accepting = True
                    break
            except OSError:
                time.sleep(0.005)
        with BACKEND_LOCK:
            if accepting and task.desired_status == "RUNNING" and task.last_status != "STOPPED":
                task.last_status = "RUNNING"
                if health != "UNKNOWN":
                    task.set_health(health)
                task.version += 1
                self._refresh_by_name(cluster_name, task)
            elif not accepting:
                log.warning("task app %s on %s:%d never accepted", task.id, *ap.addr)
                ap.kill()
        ap.proc.wait()
        ap.exited_at = time.monotonic()
        if ap.killer is not None:
            ap.killer.cancel()
        with BACKEND_LOCK:
            cluster = self.ecs.clusters.get(cluster_name)
            if cluster is None or task.last_status == "STOPPED":
                return
            if task.desired_status != "STOPPED":
                task.stopping_at = utcnow()
                task.desired_status = "STOPPED"
                task.stopped_reason = "Essential container in task exited"
                task.stop_code = "EssentialContainerExited"
            for c in task.containers:
                c.exit_code = ap.proc.returncode if ap.proc.returncode is not None else 137
            self._release(cluster, task)
            task.last_status = "STOPPED"
            task.version += 1
            self._refresh_by_name(cluster_name, task)

    def _refresh_by_name(self, cluster_name: str, task: Any) -> None:
        cluster = self.ecs.clusters.get(cluster_name)
        if cluster is not None:
            self._refresh_service_of(cluster, task)

    def kill_apps(self) -> int:
        """SIGKILLs every task app still running and reaps it."""
        n = 0
        for ap in list(self.procs.values()):
            if ap.alive():
                ap.kill()
                n += 1
            try:
                ap.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        return n

    def update_task(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(body.get("cluster"))
        task = self._task(cluster, body.get("task_arn"))
        valid_last = ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING",
                      "STOPPING", "DEPROVISIONING", "STOPPED")
        ls, ds, hs = body.get("last_status"), body.get("desired_status"), body.get("health_status")
        if ls is not None and ls not in valid_last:
            raise BadRequest(f"'last_status' must be one of {', '.join(valid_last)}")
        if ds is not None and ds not in ("RUNNING", "PENDING", "STOPPED"):
            raise BadRequest("'desired_status' must be RUNNING, PENDING or STOPPED")
        if hs is not None and hs not in ("HEALTHY", "UNHEALTHY", "UNKNOWN"):
            raise BadRequest("'health_status' must be HEALTHY, UNHEALTHY or UNKNOWN")
        if ds is not None:
            if ds == "STOPPED" and task.desired_status != "STOPPED":
                task.stopping_at = utcnow()
            task.desired_status = ds
        if ls is not None:
            if ls == "STOPPED":
                self._release(cluster, task)
            task.last_status = ls
        if hs is not None:
            task.set_health(hs) if isinstance(task, HarnessTask) else setattr(
                task, "health_status", hs
            )
        if isinstance(task, HarnessTask):
            task.version += 1
        self._refresh_service_of(cluster, task)
        return {"task_arn": task.task_arn, "last_status": task.last_status,
                "desired_status": task.desired_status,
                "health_status": getattr(task, "health_status", None)}

    def _release(self, cluster: Any, task: Any) -> None:
        """Frees what a stopping task held (once)."""
        if getattr(task, "_released", False) or task.last_status == "STOPPED":
            return
        task._released = True
        self.ecs.update_cluster_resources(cluster, -1)
        if task.container_instance_arn and isinstance(task, HarnessTask):
            try:
                ci = self._container_instance(cluster, task.container_instance_arn)
                self.ecs.update_container_instance_resources(
                    ci, task.resource_requirements, removing=True
                )
                ci.running_tasks_count = max(0, ci.running_tasks_count - 1)
            except NotFound:
                pass
        eni_id = getattr(task, "eni_id", None)
        if eni_id:
            try:
                self.ec2.delete_network_interface(eni_id)
            except Exception:  # noqa: BLE001
                pass

    def _refresh_service_of(self, cluster: Any, task: Any) -> None:
        group = getattr(task, "group", "") or ""
        if group.startswith("service:"):
            try:
                service = self.ecs._get_service(cluster.name, group[len("service:"):])
            except ServiceNotFoundException:
                return
            self._update_service_counts(cluster, service)

    def stop_task(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(body.get("cluster"))
        task = self._task(cluster, body.get("task_arn"))
        self._stop(cluster, task, body.get("reason") or "Task stopped by berth test harness")
        self._refresh_service_of(cluster, task)
        return {"task_arn": task.task_arn, "last_status": task.last_status,
                "desired_status": task.desired_status}

    def _stop(self, cluster: Any, task: Any, reason: str) -> None:
        if task.desired_status != "STOPPED":
            task.stopping_at = utcnow()
            task.stopped_reason = reason
            if isinstance(task, HarnessTask):
                task.stop_code = "ServiceSchedulerInitiated" if "Scaling" in reason or "deployment" in reason else "UserInitiated"
        task.desired_status = "STOPPED"
        ap = self.procs.get(getattr(task, "task_arn", ""))
        if ap is not None and ap.alive() and task.last_status != "STOPPED":
            # As ECS: SIGTERM to the app now; the task stays STOPPING while the app lives (its
            # lifecycle thread marks it STOPPED on exit, SIGKILL after the stop timeout).
            task.last_status = "STOPPING"
            task.version += 1
            ap.terminate()
            return
        self._release(cluster, task)
        task.last_status = "STOPPED"

    def list_tasks(self, query: dict[str, list[str]]) -> dict[str, Any]:
        cluster = self._cluster((query.get("cluster") or [""])[0])
        out = []
        for t in self.ecs.tasks.get(cluster.name, {}).values():
            out.append(
                {
                    "task_arn": t.task_arn,
                    "group": t.group,
                    "last_status": t.last_status,
                    "desired_status": t.desired_status,
                    "health_status": getattr(t, "health_status", None),
                    "private_ip": getattr(t, "private_ip", None),
                    "host_ports": [
                        b["hostPort"]
                        for c in getattr(t, "containers", [])
                        for b in (getattr(c, "network_bindings", None) or [])
                    ],
                    "container_instance_arn": t.container_instance_arn,
                    "availability_zone": getattr(t, "availability_zone", None),
                    "task_definition": t.task_definition_arn,
                    "started_by": getattr(t, "started_by", None),
                    "app": self.procs[t.task_arn].describe() if t.task_arn in self.procs else None,
                }
            )
        return {"tasks": out}

    # -- container instances --------------------------------------------------------------

    def add_container_instance(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(body.get("cluster"))
        ip = self._loopback(body.get("private_ip"), "private_ip")
        az = body.get("availability_zone")
        instance_type = body.get("instance_type") or "t3.medium"
        # The same keyword set moto's RunInstances handler passes to its backend.
        kwargs: dict[str, Any] = {
            "instance_type": instance_type,
            "is_instance_type_default": False,
            "placement": az,
            "placement_hostid": None,
            "region_name": self.region,
            "subnet_id": None,
            "key_name": None,
            "security_group_ids": [],
            "nics": [],
            "private_ip": None,
            "associate_public_ip": None,
            "tags": {"instance": {"Name": f"ecs-{cluster.name}-{ip}"}},
            "ebs_optimized": False,
            "disable_api_stop": False,
            "instance_market_options": {},
            "instance_initiated_shutdown_behavior": None,
            "launch_template": {},
            "hibernation_options": {},
            "iam_instance_profile_name": None,
            "iam_instance_profile_arn": None,
            "monitoring_state": "disabled",
            "ipv6_address_count": None,
            "metadata_options": {},
            "client_token": str(uuid.uuid4()),
        }
        image_id = self._any_ami()
        reservation = self.ec2.run_instances(image_id, 1, None, [], **kwargs)
        instance = reservation.instances[0]
        self._force_private_ip(instance, ip)
        ci = self.ecs.register_container_instance(cluster.name, instance.id)
        return {
            "container_instance_arn": ci.container_instance_arn,
            "ec2_instance_id": instance.id,
        }

    def _any_ami(self) -> str:
        try:
            amis = self.ec2.amis
            for ami_id, ami in amis.items():
                if "ecs" in (getattr(ami, "name", "") or "").lower():
                    return ami_id
            return next(iter(amis))
        except Exception:  # noqa: BLE001
            return "ami-12c6146b"

    def _force_private_ip(self, instance: Any, ip: str) -> None:
        """DescribeInstances reads the primary NIC; make every view of it say `ip`."""
        nic = instance.nics[0]
        old = nic.private_ip_address
        nic.private_ip_address = ip
        try:
            nic.private_ip_addresses = [{"Primary": True, "PrivateIpAddress": ip}]
        except Exception:  # noqa: BLE001
            pass
        if hasattr(nic, "private_dns_name"):
            try:
                nic.private_dns_name = f"ip-{ip.replace('.', '-')}.ec2.internal"
            except Exception:  # noqa: BLE001
                pass
        try:
            instance._private_ips.discard(old)
            instance._private_ips.add(ip)
        except Exception:  # noqa: BLE001
            pass
        # moto builds the instance's own DNS names from private_ip on read; nothing else to do.

    # -- services -------------------------------------------------------------------------

    @staticmethod
    def _deployment_configuration(raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise BadRequest("'deployment_configuration' must be an object")
        out = {}
        for key, default in (("maximumPercent", 200), ("minimumHealthyPercent", 100)):
            v = raw.get(key, default)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise BadRequest(f"deployment_configuration.{key} must be a non-negative integer")
            out[key] = v
        return out

    def _task_ready(self, task: Any, ready_delay_ms: int, now: _dt.datetime) -> bool:
        """A new deployment's task counts as healthy: RUNNING, HEALTHY if its containers have a
        health check, and running for at least the ready delay."""
        if task.last_status != "RUNNING" or task.desired_status != "RUNNING":
            return False
        containers = getattr(task, "containers", []) or []
        if any(getattr(c, "has_health_check", False) for c in containers):
            if getattr(task, "health_status", None) != "HEALTHY":
                return False
        started = getattr(task, "started_at", None)
        if ready_delay_ms and started is not None:
            return (now - started).total_seconds() * 1000 >= ready_delay_ms
        return True

    def reconcile(self, body: dict[str, Any]) -> dict[str, Any]:
        """What the ECS service scheduler does for a service without a load balancer: tops up to
        desiredCount, stops the newest tasks on scale-in, and replaces the tasks of an older
        deployment (another task definition, or before a forced new deployment) within
        deploymentConfiguration's maximumPercent / minimumHealthyPercent."""
        cluster = self._cluster(body.get("cluster"))
        service = self._service(cluster, body.get("service"))
        pool_raw = body.get("ip_pool") or []
        if not isinstance(pool_raw, list):
            raise BadRequest("'ip_pool' must be a list of loopback addresses")
        pool = [self._loopback(ip, "ip_pool") for ip in pool_raw]
        if not service.task_definition:
            raise BadRequest(f"service {service.name} has no task definition")
        if body.get("app") is not None:
            self.apps[(cluster.name, service.name)] = self._app_settings(body["app"])
        td = self._task_definition(service.task_definition)
        app = self.apps.get((cluster.name, service.name))
        ready_delay_ms = body.get("ready_delay_ms")
        if ready_delay_ms is None:
            ready_delay_ms = app["ready_delay_ms"] if app else 0
        if not isinstance(ready_delay_ms, int) or ready_delay_ms < 0:
            raise BadRequest("'ready_delay_ms' must be a non-negative integer")
        cfg = getattr(service, "deployment_configuration", None) or {}
        if not isinstance(cfg, dict):
            cfg = {}
        max_pct = int(cfg.get("maximumPercent", 200) or 200)
        min_pct = int(cfg.get("minimumHealthyPercent", 100) if cfg.get("minimumHealthyPercent") is not None else 100)
        deployments = getattr(service, "deployments", None) or []
        deployment_id = deployments[0]["id"] if deployments else None
        group = f"service:{service.name}"
        live = [
            t
            for t in self.ecs.tasks.get(cluster.name, {}).values()
            if t.group == group and t.desired_status == "RUNNING"
        ]

        def current(t: Any) -> bool:
            return t.task_definition_arn == td.arn and (
                deployment_id is None or getattr(t, "started_by", None) in (None, deployment_id)
            )

        old = [t for t in live if not current(t)]
        new = [t for t in live if current(t)]
        want = int(service.desired_count or 0)
        created: list[str] = []
        stopped: list[str] = []
        missing = 0
        to_start = want - len(live)
        if old:
            # Rolling update: start new tasks up to maximumPercent, stop old ones while the
            # healthy count stays at or above minimumHealthyPercent.
            max_total = want * max_pct // 100
            min_healthy = -(-want * min_pct // 100)
            to_start = min(want - len(new), max_total - len(live))
            now = utcnow()
            ready = [t for t in new if self._task_ready(t, ready_delay_ms, now)]
            old_running = [t for t in old if t.last_status == "RUNNING"]
            spare = len(ready) + len(old_running) - min_healthy
            # Old tasks not yet RUNNING go first (they serve nothing), then the oldest.
            victims = sorted(
                old, key=lambda t: (t.last_status == "RUNNING", getattr(t, "created_at", now))
            )
            pending_old = [t for t in victims if t.last_status != "RUNNING"]
            n_stop = len(pending_old) + max(0, min(len(old_running), spare))
            for t in victims[:n_stop]:
                self._stop(cluster, t, f"Task stopped by ECS deployment {deployment_id}: replaced")
                stopped.append(t.task_arn)
        if to_start > 0:
            need = to_start
            network_mode = td.network_mode or "bridge"
            if network_mode == "awsvpc":
                used = self._ips_in_use()
                free = [ip for ip in pool if ip not in used]
                # Least recently used first: no new task on the address of one just stopped.
                free.sort(key=lambda ip: self.ip_last_used.get(ip, -1.0))
                n = min(need, len(free))
                missing = need - n
                if n:
                    created = self.create_tasks(
                        {
                            "cluster": cluster.name,
                            "service": service.name,
                            "task_definition": td.arn,
                            "count": n,
                            "ips": free[:n],
                            "launch_type": service.launch_type
                            if service.launch_type in ("FARGATE", "EC2")
                            else "FARGATE",
                            "health_status": body.get("health_status"),
                        }
                    )["task_arns"]
            else:
                cis = list(self.ecs.container_instances.get(cluster.name, {}).values())
                if not cis:
                    raise BadRequest(
                        f"service {service.name} uses {network_mode} networking: "
                        "register a container instance first"
                    )
                for i in range(need):
                    created += self.create_tasks(
                        {
                            "cluster": cluster.name,
                            "service": service.name,
                            "task_definition": td.arn,
                            "count": 1,
                            "launch_type": "EC2",
                            "container_instance": cis[(len(live) + i) % len(cis)].container_instance_arn,
                            "health_status": body.get("health_status"),
                        }
                    )["task_arns"]
        elif not old and len(live) > want:
            # Newest first, as a scale-in that keeps the longest-running tasks.
            extra = sorted(live, key=lambda t: getattr(t, "created_at", utcnow()), reverse=True)
            for t in extra[: len(live) - want]:
                self._stop(cluster, t, "Scaling activity initiated by (deployment ecs-svc)")
                stopped.append(t.task_arn)
        running = self._update_service_counts(cluster, service)
        return {
            "created": created,
            "stopped": stopped,
            "desired_count": want,
            "running_count": running,
            "missing_ips": missing,
        }

    def auto_reconcile(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(body.get("cluster"))
        service = self._service(cluster, body.get("service"))
        interval_ms = body.get("interval_ms", 200)
        if not isinstance(interval_ms, int) or interval_ms < 10:
            raise BadRequest("'interval_ms' must be an integer >= 10")
        # Validate once, synchronously, so a bad pool is a 400 and not a silent thread error.
        result = self.reconcile(body)
        key = (cluster.name, service.name)
        self.stop_auto(key)
        stop = threading.Event()
        spec = dict(body, cluster=cluster.name, service=service.name)

        def loop() -> None:
            while not stop.wait(interval_ms / 1000.0):
                try:
                    with BACKEND_LOCK:
                        self.reconcile(spec)
                    self.auto_errors.pop(f"{key[0]}/{key[1]}", None)
                except Exception as exc:  # noqa: BLE001
                    self.auto_errors[f"{key[0]}/{key[1]}"] = str(exc)
                    log.warning("auto-reconcile %s/%s: %s", key[0], key[1], exc)

        thread = threading.Thread(target=loop, name=f"reconcile-{key[0]}-{key[1]}", daemon=True)
        self.auto[key] = (thread, stop)
        thread.start()
        return dict(result, auto=True, interval_ms=interval_ms)

    def stop_auto(self, key: tuple[str, str] | None = None) -> int:
        keys = [key] if key is not None else list(self.auto)
        n = 0
        for k in keys:
            entry = self.auto.pop(k, None)
            if entry is not None:
                entry[1].set()
                n += 1
        return n

    def service_state(self, query: dict[str, list[str]]) -> dict[str, Any]:
        cluster = self._cluster((query.get("cluster") or [""])[0])
        service = self._service(cluster, (query.get("service") or [""])[0])
        self._update_service_counts(cluster, service)
        return {
            "service_arn": service.arn,
            "status": service.status,
            "desired_count": service.desired_count,
            "running_count": service.running_count,
            "pending_count": service.pending_count,
            "task_definition": service.task_definition,
            "launch_type": service.launch_type,
            "auto_reconcile": (cluster.name, service.name) in self.auto,
            "auto_reconcile_error": self.auto_errors.get(f"{cluster.name}/{service.name}"),
        }

    # -- setup through the backend (no AWS SDK needed) -------------------------------------

    def setup_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not name or "/" in name:
            raise BadRequest("'name' must be a cluster name")
        cluster = self.ecs.create_cluster(name)
        return {"cluster_arn": cluster.arn, "name": cluster.name}

    def setup_task_definition(self, body: dict[str, Any]) -> dict[str, Any]:
        family = body.get("family")
        if not isinstance(family, str) or not family:
            raise BadRequest("'family' must be a non-empty string")
        network_mode = body.get("network_mode") or "awsvpc"
        if network_mode not in ("awsvpc", "bridge", "host"):
            raise BadRequest("'network_mode' must be awsvpc, bridge or host")
        containers = body.get("containers")
        if not isinstance(containers, list) or not containers:
            raise BadRequest("'containers' must be a non-empty list")
        compat = body.get("requires_compatibilities") or (
            ["FARGATE"] if network_mode == "awsvpc" else ["EC2"]
        )
        defs = []
        for i, c in enumerate(containers):
            if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                raise BadRequest(f"containers[{i}] needs a 'name'")
            ports = list(c.get("ports") or [])
            if c.get("port") is not None:
                ports.insert(
                    0,
                    {
                        "container_port": c["port"],
                        "name": c.get("port_name"),
                        "host_port": c.get("host_port"),
                        "protocol": c.get("protocol"),
                        "app_protocol": c.get("app_protocol"),
                    },
                )
            mappings = []
            for p in ports:
                cport = p.get("container_port")
                if not isinstance(cport, int) or not 1 <= cport <= 65535:
                    raise BadRequest(f"containers[{i}]: container_port {cport!r} is not a port")
                m: dict[str, Any] = {"containerPort": cport, "protocol": p.get("protocol") or "tcp"}
                if network_mode == "awsvpc":
                    m["hostPort"] = cport
                elif p.get("host_port") is not None:
                    m["hostPort"] = int(p["host_port"])
                elif network_mode == "bridge":
                    m["hostPort"] = 0
                if p.get("name"):
                    m["name"] = p["name"]
                if p.get("app_protocol"):
                    m["appProtocol"] = p["app_protocol"]
                mappings.append(m)
            d: dict[str, Any] = {
                "name": c["name"],
                "image": c.get("image") or "public.ecr.aws/docker/library/nginx:latest",
                "essential": c.get("essential", True),
                "portMappings": mappings,
                "memory": int(c.get("memory") or 128),
                "cpu": int(c.get("cpu") or 0),
            }
            hc = c.get("health_check")
            if hc:
                if hc is True:
                    hc = {}
                if not isinstance(hc, dict):
                    raise BadRequest(f"containers[{i}]: 'health_check' must be an object or true")
                d["healthCheck"] = {
                    "command": hc.get("command")
                    or ["CMD-SHELL", f"curl -f http://localhost:{mappings[0]['containerPort'] if mappings else 80}/ || exit 1"],
                    "interval": int(hc.get("interval", 30)),
                    "timeout": int(hc.get("timeout", 5)),
                    "retries": int(hc.get("retries", 3)),
                    "startPeriod": int(hc.get("start_period", 0)),
                }
            defs.append(d)
        td = self.ecs.register_task_definition(
            family=family,
            container_definitions=defs,
            network_mode=network_mode,
            requires_compatibilities=compat,
            cpu=str(body.get("cpu") or "256"),
            memory=str(body.get("memory") or "512"),
        )
        return {"task_definition_arn": td.arn, "family": td.family, "revision": td.revision}

    def setup_service(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(body.get("cluster"))
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("'name' must be a non-empty string")
        td = self._task_definition(body.get("task_definition"))
        desired = body.get("desired_count", 0)
        if not isinstance(desired, int) or desired < 0:
            raise BadRequest("'desired_count' must be a non-negative integer")
        launch_type = body.get("launch_type") or ("FARGATE" if td.network_mode == "awsvpc" else "EC2")
        net = None
        if td.network_mode == "awsvpc":
            subnet = self._default_subnet(f"{self.region}a")
            net = {
                "awsvpcConfiguration": {
                    "subnets": [subnet.id] if subnet is not None else [],
                    "securityGroups": [],
                    "assignPublicIp": "DISABLED",
                }
            }
        try:
            existing = self.ecs._get_service(cluster.name, name)
        except ServiceNotFoundException:
            existing = None
        if existing is not None and existing.status == "ACTIVE":
            raise BadRequest(f"service {name} already exists in cluster {cluster.name}")
        service = self.ecs.create_service(
            cluster.name,
            name,
            desired,
            task_definition_str=td.arn,
            launch_type=launch_type,
            network_configuration=net,
        )
        service.running_count = 0
        service.pending_count = 0
        if body.get("app") is not None:
            self.apps[(cluster.name, service.name)] = self._app_settings(body["app"])
        if body.get("deployment_configuration") is not None:
            service.deployment_configuration = self._deployment_configuration(
                body["deployment_configuration"]
            )
        self._update_service_counts(cluster, service)
        return {"service_arn": service.arn, "name": service.name}

    def reset(self) -> dict[str, Any]:
        self.stop_auto()
        self.kill_apps()
        self.procs.clear()
        self.apps.clear()
        FAULTS.clear()
        FAULTS.reset_calls()
        self.ecs.reset()
        self.ec2.reset()
        cloudwatch_backends[ACCOUNT][self.region].reset()
        return {"reset": True}


# ---------------------------------------------------------------------------------------------
# Control HTTP server
# ---------------------------------------------------------------------------------------------


def make_control_handler(h: Harness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "berth-moto-control/1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("control: " + fmt, *args)

        def _send(self, status: int, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> dict[str, Any]:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise BadRequest("bad Content-Length") from None
            raw = self.rfile.read(length) if length > 0 else b""
            if not raw.strip():
                return {}
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise BadRequest(f"body is not JSON: {exc}") from None
            if not isinstance(body, dict):
                raise BadRequest("body must be a JSON object")
            return body

        def _dispatch(self, method: str) -> None:
            url = urlparse(self.path)
            path = url.path.rstrip("/") or "/"
            query = parse_qs(url.query)
            try:
                body = self._body() if method in ("POST", "PUT", "DELETE") else {}
                route = ROUTES.get((method, path))
                if route is None:
                    known = sorted({p for (_, p) in ROUTES})
                    if any(p == path for (_, p) in ROUTES):
                        self._send(405, {"error": f"{method} not allowed on {path}"})
                    else:
                        self._send(404, {"error": f"no such endpoint {path}", "endpoints": known})
                    return
                with BACKEND_LOCK:
                    result = route(body, query)
                self._send(200, result)
            except BadRequest as exc:
                self._send(400, {"error": str(exc)})
            except NotFound as exc:
                self._send(404, {"error": str(exc)})
            except Exception as exc:  # noqa: BLE001
                # moto's own validation errors (bad task definition, ...) are the caller's fault.
                log.debug("control error: %s", traceback.format_exc())
                status = 400 if type(exc).__module__.startswith("moto.") else 500
                self._send(status, {"error": f"{type(exc).__name__}: {exc}"})

        def do_GET(self) -> None:  # noqa: N802
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

        def do_DELETE(self) -> None:  # noqa: N802
            self._dispatch("DELETE")

    def post_faults(body: dict[str, Any], _q: Any) -> dict[str, Any]:
        op = body.get("operation")
        kind = body.get("kind")
        count = body.get("count", 1)
        delay_ms = body.get("delay_ms", 0)
        if not isinstance(op, str) or not op:
            raise BadRequest("'operation' must be an operation name such as ListTasks, or '*'")
        if kind not in Faults.KINDS:
            raise BadRequest(f"'kind' must be one of {', '.join(Faults.KINDS)}")
        if not isinstance(count, int) or count < 1:
            raise BadRequest("'count' must be a positive integer")
        if not isinstance(delay_ms, int) or delay_ms < 0 or (kind == "delay" and delay_ms == 0):
            raise BadRequest("'delay_ms' must be a positive integer for kind 'delay'")
        FAULTS.add(op, kind, count, delay_ms)
        return {"pending": FAULTS.pending()}

    def delete_faults(_b: Any, _q: Any) -> dict[str, Any]:
        FAULTS.clear()
        return {"pending": {}}

    def delete_calls(_b: Any, _q: Any) -> dict[str, Any]:
        FAULTS.reset_calls()
        return {}

    def delete_auto(body: dict[str, Any], _q: Any) -> dict[str, Any]:
        if body.get("cluster") and body.get("service"):
            cluster = h._cluster(body["cluster"])
            return {"stopped": h.stop_auto((cluster.name, body["service"].split("/")[-1]))}
        return {"stopped": h.stop_auto()}

    ROUTES: dict[tuple[str, str], Any] = {
        ("GET", "/health"): lambda b, q: {"ok": True},
        ("POST", "/tasks"): lambda b, q: h.create_tasks(b),
        ("GET", "/tasks"): lambda b, q: h.list_tasks(q),
        ("POST", "/tasks/update"): lambda b, q: h.update_task(b),
        ("POST", "/tasks/stop"): lambda b, q: h.stop_task(b),
        ("POST", "/container-instances"): lambda b, q: h.add_container_instance(b),
        ("POST", "/services/reconcile"): lambda b, q: h.reconcile(b),
        ("POST", "/services/app"): lambda b, q: h.set_app(b),
        ("POST", "/services/autoreconcile"): lambda b, q: h.auto_reconcile(b),
        ("DELETE", "/services/autoreconcile"): delete_auto,
        ("GET", "/services"): lambda b, q: h.service_state(q),
        ("POST", "/faults"): post_faults,
        ("GET", "/faults"): lambda b, q: {"pending": FAULTS.pending()},
        ("DELETE", "/faults"): delete_faults,
        ("GET", "/calls"): lambda b, q: FAULTS.calls(),
        ("DELETE", "/calls"): delete_calls,
        ("POST", "/setup/cluster"): lambda b, q: h.setup_cluster(b),
        ("POST", "/setup/task-definition"): lambda b, q: h.setup_task_definition(b),
        ("POST", "/setup/service"): lambda b, q: h.setup_service(b),
        ("POST", "/reset"): lambda b, q: h.reset(),
        ("GET", "/cloudwatch/metrics"): lambda b, q: stored_metrics(q),
    }
    return Handler


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _wait_accepting(port: int, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True, help="moto (AWS API) port on 127.0.0.1")
    ap.add_argument("--control-port", type=int, required=True, help="control API port on 127.0.0.1")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--watch-stdin", action="store_true", help="exit when stdin reaches EOF")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s berth-moto %(levelname)s %(message)s",
    )
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    os.environ["AWS_DEFAULT_REGION"] = args.region
    _REGION["name"] = args.region

    harness = Harness(args.region)
    app = HarnessMiddleware(DomainDispatcherApplication(create_backend_app))
    moto_server = make_server(
        "127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    control = ControlServer(("127.0.0.1", args.control_port), make_control_handler(harness))
    threads = [
        threading.Thread(target=moto_server.serve_forever, name="moto", daemon=True),
        threading.Thread(target=control.serve_forever, name="control", daemon=True),
    ]
    for t in threads:
        t.start()

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.watch_stdin:
        def watch() -> None:
            try:
                # os.read, not sys.stdin: a buffered reader blocked at exit aborts the interpreter.
                while os.read(0, 4096):
                    pass
            except Exception:  # noqa: BLE001
                pass
            log.info("stdin closed: shutting down")
            stop.set()

        threading.Thread(target=watch, name="stdin-watch", daemon=True).start()

    deadline = time.monotonic() + 30
    _wait_accepting(args.port, deadline)
    _wait_accepting(args.control_port, deadline)
    # Build the default VPC and subnets now, not on the first (timed) API call.
    with BACKEND_LOCK:
        _ = harness.ec2, harness.ecs
    print(f"READY {args.port} {args.control_port}", flush=True)

    while not stop.wait(0.5):
        pass
    harness.stop_auto()
    killed = harness.kill_apps()
    if killed:
        log.info("killed %d task apps", killed)
    control.shutdown()
    moto_server.shutdown()
    control.server_close()
    moto_server.server_close()
    log.info("stopped")
    sys.stdout.flush()
    sys.stderr.flush()
    # Daemon threads (request handlers, stdin watcher) may still be blocked; skip their teardown.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
