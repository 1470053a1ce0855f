"""A protocol-level fake Kubernetes API server for tests (no Kubernetes can run on our machines).

The real ``kubernetes`` client talks to it over HTTP on 127.0.0.1, so tests exercise the same paths, verbs,
content types, JSON bodies and error semantics the backend meets on a real cluster:

    with FakeKube() as kube:
        api = kube.api_client()                       # kubernetes.client.ApiClient pointed at the fake
        cluster = KubernetesCluster(api_client=api)
        cluster.apply({...})
        kube.requests                                 # every request: method, path, content type, body, status
        kube.fail("/apis/apps/v1/namespaces/prod/deployments/x", 409, method="PUT")   # inject failures
        kube.set_deployment_status("prod", "x", ready=1)                           # play the controller

What it serves
    - ``/api/v1/namespaces/{ns}/{services|configmaps|secrets|serviceaccounts}[/{name}]``, ``/api/v1/namespaces``
    - ``/apis/apps/v1/namespaces/{ns}/deployments[/{name}[/scale|/status]]``
    - ``/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers[/{name}[/status]]``
    - ``/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}[/status]]`` for the Istio
      (virtualservices, destinationrules, gateways) and Flagger (canaries, metrictemplates, alertproviders)
      CRDs, and the all-namespaces lists ``/api/v1/{plural}``, ``/apis/{group}/{version}/{plural}``
    - discovery: ``/api``, ``/api/v1``, ``/apis``, ``/apis/{group}/{version}``, ``/version``

Semantics (as kube-apiserver)
    GET item / list (``<Kind>List``; items of built-in kinds carry no apiVersion/kind; ``labelSelector``
    equality terms), POST (409 AlreadyExists; sets uid, resourceVersion, generation, creationTimestamp; a
    Service gets a clusterIP), PUT (404 when missing, 409 Conflict on a stale resourceVersion, status kept
    from the stored object, generation bumped when anything but metadata/status changes), PATCH
    (``application/merge-patch+json``; ``application/strategic-merge-patch+json`` treated as a merge patch for
    built-in kinds and refused with 415 for custom resources, as the real server does;
    ``application/json-patch+json``), DELETE (owned objects are garbage-collected at once; an object with
    ``metadata.finalizers`` is only marked with ``deletionTimestamp`` and goes, with what it owns, when an update
    removes its last finalizer; a marked object accepts no new finalizer (422)), the ``/status``
    subresource (only status changes) and the Deployment ``/scale`` subresource (an autoscaling/v1 Scale).
    Bodies must be JSON (``application/json``, or no Content-Type, which kube-apiserver reads as JSON; YAML
    is accepted too; 415 otherwise; a PATCH needs one of the patch types) and are validated minimally:
    apiVersion/kind must match the path (400), the body namespace the URL's (400), metadata.name is required and must be a
    DNS-1123 subdomain (DNS-1035 label for Services) (422 Invalid), Deployments need a selector matching
    their template labels and at least one container, Services at least one port, HPAs a maxReplicas ≥ 1.
    Errors are ``Status`` objects shaped exactly like Kubernetes' own.

Test hooks: ``requests`` / ``clear_requests()``, ``fail()`` (next N matching requests answer an error),
``after()`` (run a callback after a matching request, e.g. a concurrent writer), ``seed()`` / ``object()`` /
``objects()`` (direct store access), ``touch()`` (bump a resourceVersion), ``set_deployment_status()`` (what
the Deployment controller would write), ``auto_rollout=True`` (Deployments roll out instantly),
``uninstall()`` (a CRD that is not installed).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from tests.support.http_server import QuietHTTPServer

__all__ = ["FakeKube", "Request", "ResourceType", "RESOURCE_TYPES", "status_body"]


# ------------------------------------------------------------------------------------------ resources


@dataclass(frozen=True)
class ResourceType:
    group: str
    versions: tuple[str, ...]
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    builtin: bool = True  # served by kube-apiserver itself (not a CRD)
    has_generation: bool = True

    @property
    def resource_name(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


_ISTIO_VERSIONS = ("v1beta1", "v1", "v1alpha3")
RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", ("v1",), "services", "Service", subresources=("status",), has_generation=False),
    ResourceType("", ("v1",), "configmaps", "ConfigMap", has_generation=False),
    ResourceType("", ("v1",), "secrets", "Secret", has_generation=False),
    ResourceType("", ("v1",), "serviceaccounts", "ServiceAccount", has_generation=False),
    ResourceType(
        "", ("v1",), "namespaces", "Namespace", namespaced=False, subresources=("status",), has_generation=False
    ),
    ResourceType("apps", ("v1",), "deployments", "Deployment", subresources=("status", "scale")),
    ResourceType(
        "autoscaling",
        ("v2",),
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        subresources=("status",),
        has_generation=False,
    ),
    ResourceType(
        "networking.istio.io",
        _ISTIO_VERSIONS,
        "virtualservices",
        "VirtualService",
        subresources=("status",),
        builtin=False,
    ),
    ResourceType(
        "networking.istio.io",
        _ISTIO_VERSIONS,
        "destinationrules",
        "DestinationRule",
        subresources=("status",),
        builtin=False,
    ),
    ResourceType(
        "networking.istio.io", _ISTIO_VERSIONS, "gateways", "Gateway", subresources=("status",), builtin=False
    ),
    ResourceType(
        "gateway.networking.k8s.io",
        ("v1", "v1beta1"),
        "httproutes",
        "HTTPRoute",
        subresources=("status",),
        builtin=False,
    ),
    ResourceType(
        "gateway.networking.k8s.io", ("v1", "v1beta1"), "gateways", "Gateway", subresources=("status",), builtin=False
    ),
    ResourceType("flagger.app", ("v1beta1",), "canaries", "Canary", subresources=("status",), builtin=False),
    ResourceType(
        "flagger.app", ("v1beta1",), "metrictemplates", "MetricTemplate", subresources=("status",), builtin=False
    ),
    ResourceType(
        "flagger.app", ("v1beta1",), "alertproviders", "AlertProvider", subresources=("status",), builtin=False
    ),
)

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
_UNKNOWN_FORMAT = "the body of the request was in an unknown format - accepted media types include: {}"


def status_body(code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None) -> dict:
    """A ``Status`` failure object exactly as kube-apiserver sends it."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, ""),
        "details": details if details is not None else {},
        "code": code,
    }


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.body = status_body(code, message, reason, details)


# ------------------------------------------------------------------------------------------ patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(doc)

    def parent(parts: list[str]) -> tuple[Any, str]:
        node = doc
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        return node, parts[-1]

    def get(parts: list[str]) -> Any:
        node = doc
        for p in parts:
            node = node[int(p)] if isinstance(node, list) else node[p]
        return node

    def remove(parts: list[str]) -> Any:
        node, last = parent(parts)
        return node.pop(int(last)) if isinstance(node, list) else node.pop(last)

    def add(parts: list[str], value: Any) -> None:
        nonlocal doc
        if not parts:
            doc = value
            return
        node, last = parent(parts)
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), value)
        else:
            node[last] = value

    for op in ops:
        kind, path = op.get("op"), _pointer(op.get("path", ""))
        try:
            if kind == "add":
                add(path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                get(path)
                remove(path) if path else None
                add(path, copy.deepcopy(op["value"]))
            elif kind == "move":
                value = remove(_pointer(op["from"]))
                add(path, value)
            elif kind == "copy":
                add(path, copy.deepcopy(get(_pointer(op["from"]))))
            elif kind == "test":
                if get(path) != op.get("value"):
                    raise ValueError(f"testing value {op.get('path')} failed")
            else:
                raise ValueError(f"unexpected kind of operation {kind!r}")
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(
                f"jsonpatch {kind} operation does not apply: doc is missing path: {op.get('path')}"
            ) from exc
    return doc


# ------------------------------------------------------------------------------------------ recording


@dataclass
class Request:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any  # decoded JSON, or the raw text when it was not JSON, or None
    status: int = 0

    def __repr__(self) -> str:  # short form for assertion messages
        return f"<{self.method} {self.path} -> {self.status}>"


@dataclass
class _Fault:
    path: str
    status: int
    method: str | None
    times: int
    message: str | None
    reason: str | None


@dataclass
class _Hook:
    path: str
    method: str | None
    fn: Callable[[FakeKube], None]
    times: int


@dataclass
class _Route:
    rt: ResourceType | None
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None
    discovery: dict | None = None

    @property
    def api_version(self) -> str:
        assert self.rt is not None
        return self.rt.api_version(self.version)


# ------------------------------------------------------------------------------------------ the server


class FakeKube:
    """The fake API server. Start with ``with FakeKube() as kube:`` (or ``start()`` / ``stop()``)."""

    def __init__(
        self,
        *,
        auto_rollout: bool = False,
        clock: Callable[[], float] = time.time,
        user: str = "system:serviceaccount:ci:pipeline",
    ) -> None:
        self.auto_rollout = auto_rollout
        self.clock = clock
        self.user = user
        self.requests: list[Request] = []
        self._store: dict[tuple[str, str, str, str], dict[str, Any]] = {}  # (group, plural, ns, name)
        self._types: dict[tuple[str, str], ResourceType] = {(t.group, t.plural): t for t in RESOURCE_TYPES}
        self._faults: list[_Fault] = []
        self._hooks: list[_Hook] = []
        self._lock = threading.RLock()
        self._rv = 1000
        self._uid = 0
        self._ip = 10
        self._server: QuietHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self) -> FakeKube:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms delayed ACKs

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, payload = owner._dispatch(self.command, self.path, self.headers.get("Content-Type") or "", raw)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kube", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeKube not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configuration(self) -> Any:
        """A ``kubernetes.client.Configuration`` for this server."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.retries = 0  # never mask a failure with urllib3 retries
        return cfg

    def api_client(self) -> Any:
        from kubernetes import client

        return client.ApiClient(self.configuration())

    # ---------------------------------------------------------------------------------- test hooks
    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def requests_for(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """Recorded requests, filtered by method and path prefix."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path.startswith(path))
            ]

    def fail(
        self,
        path: str,
        status: int,
        *,
        method: str | None = None,
        times: int = 1,
        message: str | None = None,
        reason: str | None = None,
    ) -> None:
        """The next ``times`` requests to exactly ``path`` (and ``method``, if given) answer ``status``."""
        with self._lock:
            self._faults.append(_Fault(path, status, method, times, message, reason))

    def after(self, path: str, fn: Callable[[FakeKube], None], *, method: str | None = None, times: int = 1) -> None:
        """Call ``fn(fake)`` after the next ``times`` matching requests were answered (a concurrent writer)."""
        with self._lock:
            self._hooks.append(_Hook(path, method, fn, times))

    def uninstall(self, group: str, plural: str) -> None:
        """Stop serving a resource, as when its CRD is not installed."""
        with self._lock:
            self._types.pop((group, plural), None)

    def _type_of(self, api_version: str, kind: str) -> tuple[ResourceType, str]:
        group, _, version = api_version.rpartition("/")
        for t in self._types.values():
            if t.group == group and t.kind == kind and version in t.versions:
                return t, version
        raise KeyError(f"the fake does not serve {api_version} {kind}")

    def seed(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object directly (as if created earlier); returns the stored copy."""
        with self._lock:
            rt, version = self._type_of(obj["apiVersion"], obj["kind"])
            new = copy.deepcopy(obj)
            ns = (new["metadata"].get("namespace") or "default") if rt.namespaced else ""
            if rt.namespaced:
                new["metadata"]["namespace"] = ns
            self._initialize(rt, new)
            self._store[(rt.group, rt.plural, ns, new["metadata"]["name"])] = new
            return copy.deepcopy(new)

    def object(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            rt, version = self._type_of(api_version, kind)
            obj = self._store.get((rt.group, rt.plural, (namespace or "") if rt.namespaced else "", name))
            return self._present(rt, version, obj) if obj else None

    def objects(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """All stored objects (of a namespace), sorted by apiVersion, kind, namespace, name."""
        with self._lock:
            out = [copy.deepcopy(o) for (g, p, ns, _), o in self._store.items() if namespace in (None, ns)]
        return sorted(
            out, key=lambda o: (o["apiVersion"], o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    def touch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        mutate: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Write the object as another client would: bumps its resourceVersion (after ``mutate``)."""
        with self._lock:
            rt, _ = self._type_of(api_version, kind)
            obj = self._store[(rt.group, rt.plural, (namespace or "") if rt.namespaced else "", name)]
            if mutate:
                mutate(obj)
            obj["metadata"]["resourceVersion"] = self._next_rv()

    def set_deployment_status(
        self,
        namespace: str,
        name: str,
        *,
        replicas: int | None = None,
        updated: int | None = None,
        ready: int | None = None,
        available: int | None = None,
        observed: bool = True,
        deadline_exceeded: bool = False,
        unavailable_since: str | None = None,
    ) -> dict[str, Any]:
        """Write a Deployment's status as the Deployment controller would.

        Counts default to a finished rollout of ``spec.replicas``. ``observed=False`` leaves observedGeneration
        one behind; ``deadline_exceeded`` sets Progressing=False/ProgressDeadlineExceeded; fewer available than
        desired sets Available=False/MinimumReplicasUnavailable with lastUpdateTime ``unavailable_since``.
        """
        with self._lock:
            dep = self._store[("apps", "deployments", namespace, name)]
            desired = dep["spec"].get("replicas", 1)
            updated = desired if updated is None else updated
            available = updated if available is None else available
            ready = available if ready is None else ready
            replicas = max(updated, desired) if replicas is None else replicas
            now = _timestamp(self.clock())
            rs = f'ReplicaSet "{name}-{dep["metadata"].get("generation", 1):08x}"'
            if deadline_exceeded:
                progressing = {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": f"{rs} has timed out progressing.",
                }
            elif updated >= desired and available >= desired and replicas == updated:
                progressing = {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": f"{rs} has successfully progressed.",
                }
            else:
                progressing = {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "ReplicaSetUpdated",
                    "message": f"{rs} is progressing.",
                }
            progressing.update(lastUpdateTime=now, lastTransitionTime=now)
            if available >= desired:
                avail = {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                }
            else:
                avail = {
                    "type": "Available",
                    "status": "False",
                    "reason": "MinimumReplicasUnavailable",
                    "message": "Deployment does not have minimum availability.",
                }
            since = unavailable_since or now
            avail.update(lastUpdateTime=since, lastTransitionTime=since)
            generation = dep["metadata"].get("generation", 1)
            status = {
                "observedGeneration": generation if observed else generation - 1,
                "replicas": replicas,
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": available,
                "conditions": [avail, progressing],
            }
            if replicas - available > 0:
                status["unavailableReplicas"] = replicas - available
            dep["status"] = status
            dep["metadata"]["resourceVersion"] = self._next_rv()
            return copy.deepcopy(dep)

    # ---------------------------------------------------------------------------------- internals
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _next_uid(self) -> str:
        self._uid += 1
        n = self._uid
        return f"{n:08x}-0000-4000-8000-{n:012x}"  # deterministic, so golden files stay stable

    def _initialize(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        """Server-set fields of a new object."""
        meta = obj["metadata"]
        _prune_metadata(meta)
        meta["uid"] = self._next_uid()
        meta["resourceVersion"] = self._next_rv()
        meta["creationTimestamp"] = _timestamp(self.clock())
        if rt.has_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if rt.kind == "Service":
            spec = obj.setdefault("spec", {})
            if spec.get("type") != "ExternalName" and spec.get("clusterIP") in (None, ""):
                self._ip += 1
                spec["clusterIP"] = f"10.96.{self._ip // 256}.{self._ip % 256}"
                spec["clusterIPs"] = [spec["clusterIP"]]
        if rt.kind == "Deployment":
            obj.setdefault("spec", {}).setdefault("replicas", 1)

    def _present(self, rt: ResourceType, version: str, obj: dict[str, Any], in_list: bool = False) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        if in_list and rt.builtin:
            out.pop("apiVersion", None)
            out.pop("kind", None)
            return out
        out["apiVersion"] = rt.api_version(version)
        out["kind"] = rt.kind
        return out

    def _fault_for(self, method: str, path: str) -> _Fault | None:
        for f in self._faults:
            if f.times > 0 and f.path == path and f.method in (None, method):
                f.times -= 1
                return f
        return None

    def _dispatch(self, method: str, raw_path: str, content_type: str, raw: bytes) -> tuple[int, dict]:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query = dict(parse_qsl(parts.query))
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        req = Request(method, path, query, content_type.split(";")[0].strip(), body)
        with self._lock:
            self.requests.append(req)
            try:
                route = self._route(path)
                fault = self._fault_for(method, path)
                if fault is not None:
                    raise self._injected(fault, method, route)
                if route.discovery is not None:
                    if method != "GET":
                        raise ApiError(405, "the server does not allow this method on the requested resource")
                    code, payload = 200, route.discovery
                else:
                    code, payload = self._serve(method, route, req, query)
            except ApiError as err:
                code, payload = err.code, err.body
            req.status = code
            hooks = [h for h in self._hooks if h.times > 0 and h.path == path and h.method in (None, method)]
            for h in hooks:
                h.times -= 1
                h.fn(self)
        return code, payload

    def _injected(self, fault: _Fault, method: str, route: _Route | None) -> ApiError:
        rt = route.rt if route else None
        name = route.name if route else None
        details: dict[str, Any] = {}
        if rt is not None:
            details = {"group": rt.group, "kind": rt.plural}
            if name:
                details["name"] = name
        reason = fault.reason or _REASONS.get(fault.status, "")
        message = fault.message
        if message is None and rt is not None:
            what = f'{rt.resource_name} "{name}"' if name else rt.resource_name
            if fault.status == 403:
                verb = _VERBS.get(method) or ("get" if name else "list")
                sub = f"/{route.subresource}" if route.subresource else ""
                scope = f' in the namespace "{route.namespace}"' if route.namespace else " at the cluster scope"
                message = (
                    f'{what} is forbidden: User "{self.user}" cannot {verb} resource "{rt.plural}{sub}" in '
                    f'API group "{rt.group}"{scope}'
                )
            elif fault.status == 409 and reason == "AlreadyExists":
                message = f"{what} already exists"
            elif fault.status == 409:
                message = (
                    f"Operation cannot be fulfilled on {what}: the object has been modified; please apply "
                    "your changes to the latest version and try again"
                )
            elif fault.status == 404:
                message = f"{what} not found"
        return ApiError(fault.status, message or f"injected failure {fault.status}", reason, details)

    # ---------------------------------------------------------------------------------- routing
    def _route(self, path: str) -> _Route:
        segs = [s for s in path.split("/") if s]
        not_found = ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if path == "/version":
            return _Route(
                None,
                "",
                None,
                None,
                None,
                {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake", "platform": "linux/amd64"},
            )
        if segs == ["api"]:
            return _Route(None, "", None, None, None, {"kind": "APIVersions", "versions": ["v1"]})
        if segs == ["apis"]:
            return _Route(None, "", None, None, None, self._group_list())
        if segs[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise not_found
        types = [t for t in self._types.values() if t.group == group and version in t.versions]
        if not types:
            raise not_found
        if not rest:
            return _Route(None, version, None, None, None, self._resource_list(group, version, types))
        plurals = {t.plural: t for t in types}
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in plurals:
            namespace, rest = rest[1], rest[2:]
        rt = plurals.get(rest[0])
        if rt is None or len(rest) > 3:
            raise not_found
        if rt.namespaced is False and namespace is not None:
            raise not_found
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and sub not in rt.subresources:
            raise not_found
        return _Route(rt, version, namespace, name, sub)

    def _group_list(self) -> dict:
        groups: dict[str, list[str]] = {}
        for t in self._types.values():
            if t.group:
                for v in t.versions:
                    if v not in groups.setdefault(t.group, []):
                        groups[t.group].append(v)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                }
                for g, vs in groups.items()
            ],
        }

    @staticmethod
    def _resource_list(group: str, version: str, types: list[ResourceType]) -> dict:
        resources = []
        for t in types:
            resources.append(
                {
                    "name": t.plural,
                    "singularName": t.kind.lower(),
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update"],
                }
            )
            for sub in t.subresources:
                resources.append(
                    {
                        "name": f"{t.plural}/{sub}",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": "Scale" if sub == "scale" else t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # ---------------------------------------------------------------------------------- verbs
    def _serve(self, method: str, route: _Route, req: Request, query: dict[str, str]) -> tuple[int, dict]:
        rt = route.rt
        assert rt is not None
        if rt.namespaced and route.namespace is None and (route.name is not None or method != "GET"):
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        dry_run = query.get("dryRun") == "All"
        if method == "GET":
            if route.name is None:
                return 200, self._list(route, query)
            obj = self._get(route)
            if route.subresource == "scale":
                return 200, self._scale_of(obj)
            return 200, self._present(rt, route.version, obj)
        if method == "POST":
            if route.name is not None:
                raise ApiError(
                    405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {}
                )
            body = self._json_body(req)
            return 201, self._create(route, body, dry_run)
        if method == "PUT":
            if route.name is None:
                raise ApiError(
                    405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {}
                )
            body = self._json_body(req)
            return 200, self._update(route, body, dry_run)
        if method == "PATCH":
            if route.name is None:
                raise ApiError(
                    405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {}
                )
            return 200, self._patch(route, req, dry_run)
        if method == "DELETE":
            if route.name is None:
                raise ApiError(
                    405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {}
                )
            return 200, self._delete(route, dry_run)
        raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {})

    def _key(self, route: _Route, name: str | None = None) -> tuple[str, str, str, str]:
        rt = route.rt
        assert rt is not None
        return rt.group, rt.plural, (route.namespace or "") if rt.namespaced else "", name or route.name or ""

    def _not_found(self, route: _Route) -> ApiError:
        rt = route.rt
        assert rt is not None
        return ApiError(
            404,
            f'{rt.resource_name} "{route.name}" not found',
            "NotFound",
            {"name": route.name, "group": rt.group, "kind": rt.plural},
        )

    def _get(self, route: _Route) -> dict[str, Any]:
        obj = self._store.get(self._key(route))
        if obj is None:
            raise self._not_found(route)
        return obj

    def _list(self, route: _Route, query: dict[str, str]) -> dict:
        rt = route.rt
        assert rt is not None
        selector = [term.split("=", 1) for term in query.get("labelSelector", "").split(",") if "=" in term]
        items = []
        for (g, p, ns, _), obj in sorted(self._store.items()):
            if (g, p) != (rt.group, rt.plural) or (route.namespace is not None and ns != route.namespace):
                continue
            labels = obj["metadata"].get("labels") or {}
            if all(labels.get(k.rstrip("=")) == v for k, v in selector):
                items.append(self._present(rt, route.version, obj, in_list=True))
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": route.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    @staticmethod
    def _json_body(req: Request) -> Any:
        """The decoded body of a POST/PUT. Like kube-apiserver, a missing Content-Type means JSON (the
        generated client sends none for custom objects); YAML is accepted; anything else is 415."""
        if req.content_type not in ("", "application/json", "application/yaml"):
            raise ApiError(
                415,
                _UNKNOWN_FORMAT.format("application/json, application/yaml, application/vnd.kubernetes.protobuf"),
                "UnsupportedMediaType",
                {},
            )
        body = req.body
        if req.content_type == "application/yaml" and isinstance(body, str):
            try:
                body = yaml.safe_load(body)
            except yaml.YAMLError as exc:
                raise ApiError(400, f"error converting YAML to JSON: {exc}", "BadRequest", {}) from exc
        if isinstance(body, str) or body is None:
            raise ApiError(
                400, "the request body is not valid JSON" if body else "the request body is empty", "BadRequest", {}
            )
        return body

    def _validate(self, route: _Route, obj: Any, *, creating: bool) -> dict[str, Any]:
        """Decoding and (minimal) validation as kube-apiserver does before storing."""
        rt = route.rt
        assert rt is not None
        if not isinstance(obj, dict):
            raise ApiError(400, f"the object provided is unrecognized (must be of type {rt.kind})", "BadRequest", {})
        obj = copy.deepcopy(obj)
        api_version = obj.setdefault("apiVersion", route.api_version)
        if api_version != route.api_version:
            raise ApiError(
                400,
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({route.api_version})",
                "BadRequest",
                {},
            )
        kind = obj.setdefault("kind", rt.kind)
        if kind != rt.kind:
            raise ApiError(
                400,
                f"the object provided is unrecognized (must be of type {rt.kind}): kind {kind!r} "
                f"does not match the requested resource {rt.resource_name}",
                "BadRequest",
                {},
            )
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object", "BadRequest", {})
        if rt.namespaced:
            ns = meta.get("namespace")
            if ns and ns != route.namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace sent on the request",
                    "BadRequest",
                    {},
                )
            meta["namespace"] = route.namespace
        else:
            meta.pop("namespace", None)
        name = meta.get("name") or ""
        if not creating and route.subresource is None and name and name != route.name:
            raise ApiError(
                400,
                f"the name of the object ({name}) does not match the name on the URL ({route.name})",
                "BadRequest",
                {},
            )
        if not creating and not name:
            meta["name"] = name = route.name or ""
        causes: list[dict[str, str]] = []
        if not name:
            causes.append(
                _cause("FieldValueRequired", "metadata.name", "Required value: name or generateName is required")
            )
        elif rt.kind == "Service" and (not _DNS1035_LABEL.match(name) or len(name) > 63):
            causes.append(_cause("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {_LABEL1035_MSG}'))
        elif not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
            causes.append(_cause("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {_SUBDOMAIN_MSG}'))
        causes.extend(_kind_causes(rt.kind, obj))
        if causes:
            first = causes if len(causes) > 1 else causes[0]
            summary = (
                f"[{', '.join(c['field'] + ': ' + c['message'] for c in causes)}]"
                if len(causes) > 1
                else f"{first['field']}: {first['message']}"
            )  # type: ignore[index]
            raise ApiError(
                422,
                f'{rt.qualified_kind} "{name}" is invalid: {summary}',
                "Invalid",
                {"name": name, "group": rt.group, "kind": rt.kind, "causes": causes},
            )
        return obj

    def _create(self, route: _Route, body: Any, dry_run: bool) -> dict:
        rt = route.rt
        assert rt is not None
        if route.subresource:
            raise ApiError(
                405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {}
            )
        obj = self._validate(route, body, creating=True)
        name = obj["metadata"]["name"]
        key = self._key(route, name)
        if key in self._store:
            raise ApiError(
                409,
                f'{rt.resource_name} "{name}" already exists',
                "AlreadyExists",
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        for field_ in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
            obj["metadata"].pop(field_, None)
        if "status" in rt.subresources:
            obj.pop("status", None)  # status is written through /status only
        self._initialize(rt, obj)
        if not dry_run:
            self._store[key] = obj
            self._rolled_out(rt, obj)
        return self._present(rt, route.version, obj)

    def _check_version(self, route: _Route, body: dict, current: dict) -> None:
        rt = route.rt
        assert rt is not None
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {rt.resource_name} "{route.name}": the object '
                "has been modified; please apply your changes to the latest version and try again",
                "Conflict",
                {"name": route.name, "group": rt.group, "kind": rt.plural},
            )

    def _update(self, route: _Route, body: Any, dry_run: bool) -> dict:
        rt = route.rt
        assert rt is not None
        current = self._get(route)
        if route.subresource == "scale":
            if not isinstance(body, dict):
                raise ApiError(400, "the object provided is unrecognized (must be of type Scale)", "BadRequest", {})
            self._check_version(route, body, current)
            return self._write_scale(route, current, body, dry_run)
        obj = self._validate(route, body, creating=False)
        self._check_version(route, obj, current)
        return self._store_update(route, current, obj, dry_run)

    def _store_update(self, route: _Route, current: dict, obj: dict, dry_run: bool) -> dict:
        """Merge the server-owned fields of ``current`` into ``obj`` and store it."""
        rt = route.rt
        assert rt is not None
        cur_meta, meta = current["metadata"], obj["metadata"]
        if route.subresource == "status":
            new = copy.deepcopy(current)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        else:
            new = obj
            for field_ in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if field_ in cur_meta:
                    meta[field_] = cur_meta[field_]
                elif field_.startswith("deletion"):
                    meta.pop(field_, None)  # only a DELETE sets them
            if cur_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(cur_meta.get("finalizers") or [])
                if added:
                    raise ApiError(
                        422,
                        f'{rt.kind} "{route.name}" is invalid: metadata.finalizers: Forbidden: no new finalizers '
                        "can be added if the object is being deleted",
                        "Invalid",
                        {"name": route.name, "group": rt.group, "kind": rt.kind},
                    )
                if not meta.get("finalizers") and not dry_run:
                    # the last finalizer removed: the object is deleted now, with what it owns
                    del self._store[self._key(route)]
                    self._collect_garbage(cur_meta["uid"])
                    _prune_metadata(meta)
                    return self._present(rt, route.version, new)
            meta.pop("managedFields", None)
            if "status" in rt.subresources:
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
            if rt.kind == "Service":
                self._keep_cluster_ip(rt, current, new)
            if rt.kind == "Deployment":
                new.setdefault("spec", {}).setdefault("replicas", 1)
            strip = ("metadata", "status")
            if rt.has_generation and {k: v for k, v in new.items() if k not in strip} != {
                k: v for k, v in current.items() if k not in strip
            }:
                meta["generation"] = int(cur_meta.get("generation", 1)) + 1
        _prune_metadata(new["metadata"])
        new["metadata"]["resourceVersion"] = self._next_rv() if not dry_run else cur_meta["resourceVersion"]
        if not dry_run:
            self._store[self._key(route)] = new
            self._rolled_out(rt, new)
        return self._present(rt, route.version, new)

    def _keep_cluster_ip(self, rt: ResourceType, current: dict, new: dict) -> None:
        cur_spec, spec = current.get("spec") or {}, new.setdefault("spec", {})
        for field_ in ("clusterIP", "clusterIPs"):
            if spec.get(field_) in (None, "", []) and field_ in cur_spec:
                spec[field_] = copy.deepcopy(cur_spec[field_])
            elif field_ in cur_spec and spec.get(field_) != cur_spec[field_]:
                name = new["metadata"]["name"]
                msg = f"Invalid value: {json.dumps(spec.get(field_))}: field is immutable"
                raise ApiError(
                    422,
                    f'{rt.qualified_kind} "{name}" is invalid: spec.{field_}: {msg}',
                    "Invalid",
                    {
                        "name": name,
                        "group": rt.group,
                        "kind": rt.kind,
                        "causes": [_cause("FieldValueInvalid", f"spec.{field_}", msg)],
                    },
                )

    def _patch(self, route: _Route, req: Request, dry_run: bool) -> dict:
        rt = route.rt
        assert rt is not None
        accepted = ("application/json-patch+json", "application/merge-patch+json")
        if rt.builtin:
            accepted += ("application/strategic-merge-patch+json",)
        if req.content_type not in accepted:
            raise ApiError(
                415,
                _UNKNOWN_FORMAT.format(", ".join(accepted + ("application/apply-patch+yaml",))),
                "UnsupportedMediaType",
                {},
            )
        current = self._get(route)
        if isinstance(req.body, str) or req.body is None:
            raise ApiError(400, "the request body is not valid JSON", "BadRequest", {})
        doc = self._scale_of(current) if route.subresource == "scale" else self._present(rt, route.version, current)
        try:
            if req.content_type == "application/json-patch+json":
                if not isinstance(req.body, list):
                    raise ValueError("a JSON patch must be a list of operations")
                patched = json_patch(doc, req.body)
            else:
                if not isinstance(req.body, dict):
                    raise ValueError("a merge patch must be a JSON object")
                patched = merge_patch(doc, req.body)
        except ValueError as exc:
            raise ApiError(422, str(exc), "Invalid", {"name": route.name, "group": rt.group, "kind": rt.kind}) from exc
        # A resourceVersion in the patch is a precondition.
        patch_rv = (req.body.get("metadata") or {}).get("resourceVersion") if isinstance(req.body, dict) else None
        if patch_rv:
            self._check_version(route, {"metadata": {"resourceVersion": patch_rv}}, current)
        if route.subresource == "scale":
            return self._write_scale(route, current, patched, dry_run)
        patched.get("metadata", {}).pop("resourceVersion", None)
        obj = self._validate(route, patched, creating=False)
        return self._store_update(route, current, obj, dry_run)

    def _scale_of(self, obj: dict) -> dict:
        meta = obj["metadata"]
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in labels.items()),
            },
        }

    def _write_scale(self, route: _Route, current: dict, scale: dict, dry_run: bool) -> dict:
        rt = route.rt
        assert rt is not None
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            msg = f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0"
            raise ApiError(
                422,
                f'Scale.autoscaling "{route.name}" is invalid: spec.replicas: {msg}',
                "Invalid",
                {
                    "name": route.name,
                    "group": "autoscaling",
                    "kind": "Scale",
                    "causes": [_cause("FieldValueInvalid", "spec.replicas", msg)],
                },
            )
        new = copy.deepcopy(current)
        if new["spec"].get("replicas") != replicas:
            new["spec"]["replicas"] = replicas
            new["metadata"]["generation"] = int(new["metadata"].get("generation", 1)) + 1
        if not dry_run:
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._store[self._key(route)] = new
            self._rolled_out(rt, new)
        return self._scale_of(new)

    def _delete(self, route: _Route, dry_run: bool) -> dict:
        rt = route.rt
        assert rt is not None
        obj = self._get(route)
        if obj["metadata"].get("finalizers"):
            if not dry_run and not obj["metadata"].get("deletionTimestamp"):
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = _timestamp(time.time())
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self._store[self._key(route)] = obj
            return self._present(rt, route.version, obj) if not rt.builtin else {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": route.name, "group": rt.group, "kind": rt.plural, "uid": obj["metadata"]["uid"]},
            }  # fmt: skip
        if not dry_run:
            del self._store[self._key(route)]
            self._collect_garbage(obj["metadata"]["uid"])
        if not rt.builtin:
            return self._present(rt, route.version, obj)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": route.name, "group": rt.group, "kind": rt.plural, "uid": obj["metadata"]["uid"]},
        }

    def _collect_garbage(self, uid: str) -> None:
        """Delete every object owned by ``uid`` (and, recursively, what they own)."""
        for key, obj in list(self._store.items()):
            if key in self._store and any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                del self._store[key]
                self._collect_garbage(obj["metadata"]["uid"])

    def _rolled_out(self, rt: ResourceType, obj: dict) -> None:
        """With ``auto_rollout``, a Deployment write is immediately followed by a finished rollout."""
        if self.auto_rollout and rt.kind == "Deployment":
            self.set_deployment_status(obj["metadata"]["namespace"], obj["metadata"]["name"])


def _timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _prune_metadata(meta: dict[str, Any]) -> None:
    """Empty maps and lists in ObjectMeta are not stored (Go's ``omitempty``)."""
    for key in ("labels", "annotations", "ownerReferences", "finalizers"):
        if key in meta and not meta[key]:
            del meta[key]


def _cause(reason: str, field_: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field_}


def _kind_causes(kind: str, obj: dict[str, Any]) -> list[dict[str, str]]:
    """The few per-kind validation rules the fake enforces."""
    spec = obj.get("spec")
    causes: list[dict[str, str]] = []
    if kind == "Deployment":
        spec = spec if isinstance(spec, dict) else {}
        selector = (spec.get("selector") or {}).get("matchLabels")
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not selector:
            causes.append(_cause("FieldValueRequired", "spec.selector", "Required value"))
        elif any(labels.get(k) != v for k, v in selector.items()):
            shown = "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items())) + "}"
            causes.append(
                _cause(
                    "FieldValueInvalid",
                    "spec.template.metadata.labels",
                    f"Invalid value: {shown}: `selector` does not match template `labels`",
                )
            )
        if not ((template.get("spec") or {}).get("containers")):
            causes.append(_cause("FieldValueRequired", "spec.template.spec.containers", "Required value"))
        replicas = spec.get("replicas")
        if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
            causes.append(
                _cause(
                    "FieldValueInvalid",
                    "spec.replicas",
                    f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0",
                )
            )
    elif kind == "Service":
        spec = spec if isinstance(spec, dict) else {}
        if spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None" and not spec.get("ports"):
            causes.append(_cause("FieldValueRequired", "spec.ports", "Required value"))
    elif kind == "HorizontalPodAutoscaler":
        spec = spec if isinstance(spec, dict) else {}
        if not (spec.get("scaleTargetRef") or {}).get("name"):
            causes.append(_cause("FieldValueRequired", "spec.scaleTargetRef.name", "Required value"))
        if not isinstance(spec.get("maxReplicas"), int) or spec["maxReplicas"] < 1:
            causes.append(
                _cause(
                    "FieldValueInvalid",
                    "spec.maxReplicas",
                    f"Invalid value: {json.dumps(spec.get('maxReplicas'))}: must be greater than or equal to 1",
                )
            )
    return causes
