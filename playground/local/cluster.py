"""``LocalCluster``: the embedded backend of the Cluster interface, over the SQLite store in ``$PLAYGROUND_HOME``.

How the pieces connect::

    LocalCluster.apply ──► store (state.db) ◄── node agent (playground.local.agent) runs the Deployments'
          │                    │                replicas as processes, writes workload status rows
          │                    ▼
          └──────────► render_envoy(): objects + ready endpoints ──► envoy.render ──► $HOME/envoy/ (watched)

The Envoy configuration is rendered from the whole store under an exclusive file lock, read inside it, so
whoever writes last writes the newest state: ``LocalCluster.apply`` of a Service, VirtualService,
DestinationRule, Gateway or HTTPRoute renders the store with the object in place (the check that Envoy can
serve it), stores it and writes that render (a route change reaches Envoy without waiting for a poll);
``render_envoy`` renders the store as it is (the node agent calls it when the ready endpoints change or the
store holds objects the files were not rendered from: ``rendered_counter``).

Storing a Canary rewrites the loadtester's allowlist (``$HOME/loadtester-allowlist.json``), so the loadtester
runs exactly the webhook commands of the synced Canaries.

Objects produced for Canaries (primary Deployment, Services, routes) come from :mod:`playground.routing`; this
module only stores them and reports readiness.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from playground import routing
from playground.cluster.base import Cluster, ClusterError, Conflict, NotFound, WorkloadStatus
from playground.fsutil import atomic_write
from playground.local.store import Home, Store, default_home
from playground.models import CanaryStatus

if TYPE_CHECKING:
    from playground.local.envoy import EnvoyConfig

__all__ = [
    "LocalCluster",
    "render_envoy",
    "service_endpoints",
    "pod_revision",
    "write_allowlist",
    "ROUTING_KINDS",
    "DEFAULT_PROGRESS_DEADLINE",
]

#: Kinds whose change re-renders the Envoy configuration.
ROUTING_KINDS = ("Service", "VirtualService", "DestinationRule", "Gateway", "HTTPRoute")
DEFAULT_PROGRESS_DEADLINE = 600
CANARY_API = "flagger.app/v1beta1"
_CLUSTER_SUFFIXES = (".svc.cluster.local", ".svc")


# ------------------------------------------------------------------------------------------ pod revision


def configs_index(store: Store) -> dict[tuple[str, str, str], dict[str, Any]]:
    """ConfigMaps and Secrets by (kind, namespace, name)."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for obj in store.list_kinds(("ConfigMap", "Secret")):
        m = obj.get("metadata") or {}
        out[(obj["kind"], m.get("namespace") or "default", m.get("name") or "")] = obj
    return out


def pod_revision(deployment: dict[str, Any], configs: dict[tuple[str, str, str], dict[str, Any]]) -> str:
    """The revision of a Deployment's pods: hash of the pod template and of the data of every ConfigMap/Secret
    it references (so that, unlike Kubernetes but like a redeploy, a config change restarts the replicas)."""
    ns = (deployment.get("metadata") or {}).get("namespace") or "default"
    template = (deployment.get("spec") or {}).get("template") or {}
    refs = routing.referenced_configs(template.get("spec") or {})
    data = {}
    for kind, name in sorted(refs):
        obj = configs.get((kind, ns, name))
        data[f"{kind}/{name}"] = None if obj is None else routing.config_checksum(obj)
    doc = {"template": template, "configs": data}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def desired_replicas(deployment: dict[str, Any]) -> int:
    r = (deployment.get("spec") or {}).get("replicas")
    return 1 if r is None else max(0, int(r))


def progress_deadline(deployment: dict[str, Any]) -> int:
    d = (deployment.get("spec") or {}).get("progressDeadlineSeconds")
    return DEFAULT_PROGRESS_DEADLINE if d is None else int(d)


# ------------------------------------------------------------------------------------------- endpoints


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == str(v) for k, v in selector.items())


def service_endpoints(store: Store) -> dict[tuple[str, str], Any]:
    """Ready endpoints of every Service: ``{(namespace, service): envoy.ServiceEndpoints}``.

    A Service selects the Deployments (same namespace) whose pod template labels contain its selector; its
    addresses are the ready replicas (``("127.0.0.1", port)``) of those Deployments, in all revisions (as
    Kubernetes endpoints do during a rolling update). ``workload`` is the selected Deployment's name (the first
    by name when several match) and ``port`` the Service's first port.
    """
    from playground.local.envoy import ServiceEndpoints  # the renderer's type (helper module)

    rows = {(r.namespace, r.name): r for r in store.list_workload_status()}
    # Deployments (in the store's order) by one of their pod template labels: a selector's candidates are those
    # carrying its first label, checked against the whole selector (not every Deployment for every Service)
    by_label: dict[tuple[str, str, str], list[tuple[str, dict[str, Any]]]] = {}
    for dep in store.list("apps/v1", "Deployment"):
        dmeta = dep.get("metadata") or {}
        dns = dmeta.get("namespace") or "default"
        labels = (((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        for k, v in labels.items():
            by_label.setdefault((dns, k, v), []).append((dmeta["name"], labels))
    out: dict[tuple[str, str], Any] = {}
    for svc in store.list("v1", "Service"):
        meta = svc.get("metadata") or {}
        ns, name = meta.get("namespace") or "default", meta["name"]
        spec = svc.get("spec") or {}
        selector = spec.get("selector") or {}
        ports = spec.get("ports") or []
        port = int(ports[0].get("port", 80)) if ports else 80
        workload = ""
        addresses: list[tuple[str, int]] = []
        first = next(iter(selector.items()), None)
        candidates = by_label.get((ns, first[0], str(first[1])), []) if first is not None else []
        for dep_name, labels in candidates:
            if not _labels_match(selector, labels):
                continue
            workload = workload or dep_name
            row = rows.get((ns, dep_name))
            if row is not None:
                addresses.extend(("127.0.0.1", r.port) for r in row.replicas if r.ready)
        out[(ns, name)] = ServiceEndpoints(workload=workload, port=port, addresses=sorted(addresses))
    return out


# ---------------------------------------------------------------------------------------------- envoy


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


_CHECK_PORTS = {"gateway": 1, "mesh": 2, "envoy_admin": 3, "prometheus": 4}


def _tcp_key(namespace: str, service: str, port: int) -> str:
    return f"tcp_port:{namespace}/{service}:{port}"


def tcp_addresses(store: Store, keys: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], int]:
    """The local port of each TCP Service port (the stand-in for its ClusterIP:port): assigned once (a free
    port), kept in the store so that it never changes while the Service exists."""
    import socket

    out = {}
    for ns, svc, port in keys:
        local = store.get_meta(_tcp_key(ns, svc, port))
        if local is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                local = int(s.getsockname()[1])
            store.set_meta(_tcp_key(ns, svc, port), local)
        out[(ns, svc, port)] = local
    return out


def _render(home: Home, store: Store, ports: dict[str, int], replace: dict[str, Any] | None = None) -> EnvoyConfig:
    from playground.local import envoy

    objects = store.list_kinds(ROUTING_KINDS)
    if replace is not None:
        # in place (the store lists objects in a fixed order): a render of the store once ``replace`` is stored
        key = _identity(replace)
        at = next((i for i, o in enumerate(objects) if _identity(o) == key), None)
        if at is None:
            objects.append(replace)
        else:
            objects[at] = replace
    return envoy.render(
        objects,
        service_endpoints(store),
        gateway_port=int(ports["gateway"]),
        mesh_port=int(ports["mesh"]),
        admin_port=int(ports["envoy_admin"]),
        extra_upstreams={"prometheus.istio-system:9090": ("127.0.0.1", int(ports["prometheus"]))},
        access_log_path=str(home.logs / "envoy-access.log"),
        tcp_addresses=tcp_addresses(store, envoy.tcp_service_ports(objects)),
    )


def _identity(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    from playground.local.store import object_key

    meta = obj.get("metadata") or {}
    return object_key(obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace"), meta.get("name", ""))


@contextmanager
def routing_lock(home: Home) -> Iterator[None]:
    """The exclusive lock under which the Envoy configuration is rendered and written."""
    with _file_lock(home.envoy_lock):
        yield


def render_envoy(home: Home, store: Store, ports: dict[str, int] | None = None, *, locked: bool = False) -> bool:
    """Render the Envoy configuration from the whole store and write it (atomically) to ``$HOME/envoy/``.

    Runs under an exclusive lock on ``$HOME/envoy.lock`` (``locked=True``: the caller holds it) and reads the
    store inside it, so concurrent writers (CLI, runs, agent) cannot leave an older state on disk. Returns
    whether the files changed. Does nothing (False) when no environment was set up yet (no ports in
    ``env.json``) and ``ports`` is not given. Raises ``envoy.RenderError`` if the stored objects cannot be
    rendered.
    """
    ports = ports or home.ports()
    if not ports:
        return False

    if not locked:
        with routing_lock(home):
            return render_envoy(home, store, ports, locked=True)
    counter = store.change_counter()  # read first: the objects rendered are at least this new
    return _write_rendered(home, _render(home, store, ports), counter)


def _write_rendered(home: Home, cfg: EnvoyConfig, counter: int) -> bool:
    """Write ``cfg`` (the store's routing objects at change ``counter``) as Envoy's files and record that counter
    (``rendered_counter``); whether the files changed. Under the routing lock."""
    from playground.local import envoy

    changed = bool(envoy.write_config(cfg, home.envoy_dir))
    atomic_write(home.envoy_rendered, f"{counter}\n")
    return changed


def rendered_counter(home: Home) -> int | None:
    """The store's change counter the Envoy configuration on disk reflects every object of (the endpoints aside:
    the node agent renders when they change): whoever stores a routing object renders it under the routing lock,
    so the node agent need not render the same store again (see ``render_envoy``)."""
    try:
        return int(home.envoy_rendered.read_text())
    except (OSError, ValueError):
        return None


def check_renderable(home: Home, store: Store, obj: dict[str, Any]) -> EnvoyConfig | None:
    """Raise ClusterError if the stored routing objects with ``obj`` replacing its stored version cannot be
    rendered into Envoy configuration (an unsupported VirtualService field...).

    Returns the rendered configuration when it is what :func:`render_envoy` would write once ``obj`` is stored
    (``obj`` replaces a stored object, whose place in the store's order it keeps, and the environment's ports
    are known; the renderer reads only the namespace and name of an object's metadata, which storing does not
    change), else None. Under the routing lock the caller can then store ``obj`` and write this configuration
    without rendering the whole mesh a second time."""
    from playground.local import envoy

    ports = home.ports()
    meta = obj.get("metadata") or {}
    stored = store.get(obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace"), meta.get("name", ""))
    try:
        cfg = _render(home, store, ports or _CHECK_PORTS, replace=obj)
    except envoy.RenderError as exc:
        raise ClusterError(
            f"{obj.get('kind')} {meta.get('namespace') or 'default'}/{meta.get('name')} not applied: {exc}"
        ) from None
    return cfg if ports and stored is not None else None


# ------------------------------------------------------------------------------------ loadtester allowlist


def write_allowlist(home: Home, store: Store) -> list[str]:
    """Rewrite ``$HOME/loadtester-allowlist.json`` = ``{"commands": [every webhook metadata.cmd]}``."""
    commands: set[str] = set()
    for canary in store.list(CANARY_API, "Canary"):
        for hook in ((canary.get("spec") or {}).get("analysis") or {}).get("webhooks") or []:
            cmd = (hook.get("metadata") or {}).get("cmd")
            if cmd:
                commands.add(str(cmd))
    listed = sorted(commands)
    atomic_write(home.allowlist, json.dumps({"commands": listed}, indent=2) + "\n")
    return listed


# ------------------------------------------------------------------------------------------- cluster


#: The node agent writes its heartbeat (epoch milliseconds) into the store's meta table at least this often.
HEARTBEAT_KEY = "agent_heartbeat_ms"
HEARTBEAT_PERIOD = 1.0
HEARTBEAT_STALE = 5.0


def agent_alive(store: Store) -> bool:
    """Whether a node agent wrote its heartbeat within the last few seconds."""
    beat = store.get_meta(HEARTBEAT_KEY)
    return beat is not None and time.time() - beat / 1000 < HEARTBEAT_STALE


class LocalCluster(Cluster):
    """The local playground as a :class:`~playground.cluster.base.Cluster`.

    ``home`` defaults to ``$PLAYGROUND_HOME`` (or ``./.playground``). Works whether or not the environment
    processes run: objects are stored either way; replicas start once the node agent runs (``playground up``).
    """

    name = "local"

    def __init__(self, home: str | os.PathLike[str] | None = None):
        self.home = Home.of(home) if home is not None else Home(default_home())
        self.home.root.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.home.db)

    def close(self) -> None:
        self.store.close()

    # -- generic objects -------------------------------------------------------------------------------
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace ``obj``. ``status`` is ignored (Deployment status comes from the node agent, a Canary's
        from :meth:`set_canary_status`). A ``metadata.resourceVersion`` in ``obj`` makes the write conditional
        (:class:`Conflict` when the object changed since). A Deployment applied without ``spec.replicas`` keeps
        the stored replica count (as ``kubectl apply`` does, so a canary target scaled to zero stays at zero)."""
        if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
            raise ClusterError(f"cannot apply an object without apiVersion and kind: {obj!r:.200}")
        if not (obj.get("metadata") or {}).get("name"):
            raise ClusterError(f"cannot apply {obj['kind']} without metadata.name")
        body = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
        meta = body["metadata"]
        expected = meta.pop("resourceVersion", None)
        for k in ("generation", "uid", "creationTimestamp"):
            meta.pop(k, None)
        stored_meta = (self.store.get(body["apiVersion"], body["kind"], meta.get("namespace"), meta["name"]) or {}).get(
            "metadata"
        ) or {}
        # As the API server: finalizers are kept unless the object sets them; deletionTimestamp is the server's.
        meta.pop("deletionTimestamp", None)
        if "finalizers" not in meta and stored_meta.get("finalizers"):
            meta["finalizers"] = list(stored_meta["finalizers"])
        if stored_meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = stored_meta["deletionTimestamp"]
            if not meta.get("finalizers"):  # the last finalizer removed: the object goes
                self._remove(body["apiVersion"], body["kind"], meta.get("namespace"), meta["name"])
                return body
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if body["kind"] == "Deployment" and "replicas" not in (body.get("spec") or {}):
            current = self.store.get(body["apiVersion"], "Deployment", meta.get("namespace"), meta["name"])
            if current is not None and (current.get("spec") or {}).get("replicas") is not None:
                body.setdefault("spec", {})["replicas"] = current["spec"]["replicas"]
        if body["kind"] in ROUTING_KINDS:
            # Check, store and render under the routing lock: an object Envoy cannot serve is rejected before
            # it is stored, and the last writer renders the newest state.
            with routing_lock(self.home):
                before = self.store.change_counter()
                cfg = check_renderable(self.home, self.store, body)
                stored = self.store.put(body, expected_version=expected)
                if cfg is None:
                    render_envoy(self.home, self.store, locked=True)
                else:  # the check rendered the store as it is now: written, not rendered again
                    rv = int(stored["metadata"]["resourceVersion"])
                    # no other object was stored between the check's read and this one: the files are the store
                    # at ``rv``; else mark what the check read (older: the node agent renders the newer store)
                    _write_rendered(self.home, cfg, rv if rv == before + 1 else before)
        else:
            stored = self.store.put(body, expected_version=expected)
            if stored["kind"] == "Canary":
                write_allowlist(self.home, self.store)
        return self._with_status(stored)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.store.get(api_version, kind, namespace, name)
        return None if obj is None else self._with_status(obj)

    def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [self._with_status(o) for o in self.store.list(api_version, kind, namespace)]

    def tcp_address(self, namespace: str, service: str, port: int) -> tuple[str, int] | None:
        """Where the local mesh serves TCP Service port ``namespace/service:port`` (``appProtocol: tcp`` or a
        ``tcp``/``tcp-*`` port name): a TCP listener on 127.0.0.1, or None when it has none."""
        local = self.store.get_meta(_tcp_key(namespace, service, port))
        return None if local is None else ("127.0.0.1", local)

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete; an object with finalizers is only marked (``metadata.deletionTimestamp``), as the API server
        does, and goes when its last finalizer is removed."""
        current = self.store.get(api_version, kind, namespace, name)
        cmeta = (current or {}).get("metadata") or {}
        if current is not None and cmeta.get("finalizers") and not cmeta.get("deletionTimestamp"):
            marked = copy.deepcopy(current)
            marked["metadata"]["deletionTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.store.put(marked)
            return True
        if current is not None and cmeta.get("finalizers"):
            return True  # already marked: the finalizers decide
        return self._remove(api_version, kind, namespace, name)

    def _remove(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        deleted = self.store.delete(api_version, kind, namespace, name)
        if deleted:
            if kind == "Canary":
                self.store.delete_canary_status(namespace or "default", name)
            self._after_change(kind)
        return deleted

    def _after_change(self, kind: str) -> None:
        if kind in ROUTING_KINDS:
            render_envoy(self.home, self.store)
        elif kind == "Canary":
            write_allowlist(self.home, self.store)

    def _with_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = obj.get("kind")
        meta = obj.get("metadata") or {}
        if kind == "Canary":
            st = self.store.get_canary_status(meta.get("namespace") or "default", meta["name"])
            if st is not None:
                obj["status"] = st[0]
        elif kind == "Deployment":
            ws = self._status(obj)
            row = self.store.get_workload_status(meta.get("namespace") or "default", meta["name"])
            obj["status"] = {
                "observedGeneration": row.generation if row else 0,
                "replicas": row.total if row else 0,
                "updatedReplicas": ws.updated,
                "readyReplicas": ws.ready,
                "availableReplicas": ws.available,
            }
            if ws.message:
                obj["status"]["message"] = ws.message
        return obj

    # -- workloads -----------------------------------------------------------------------------------------
    def scale(self, namespace: str, name: str, replicas: int) -> None:
        if replicas < 0:
            raise ClusterError(f"Deployment {namespace}/{name}: cannot scale to {replicas} replicas")

        def set_replicas(obj: dict[str, Any]) -> None:
            obj.setdefault("spec", {})["replicas"] = int(replicas)

        self.store.update("apps/v1", "Deployment", namespace, name, set_replicas)

    def workload_status(self, namespace: str, name: str) -> WorkloadStatus:
        dep = self.store.get("apps/v1", "Deployment", namespace, name)
        if dep is None:
            raise NotFound(f"Deployment {namespace}/{name} not found in the local playground")
        return self._status(dep)

    def _status(self, dep: dict[str, Any]) -> WorkloadStatus:
        """Counts of the current pod revision from the agent's row, with the Deployment's progress deadline."""
        meta = dep["metadata"]
        ns, name = meta.get("namespace") or "default", meta["name"]
        desired = desired_replicas(dep)
        deadline = progress_deadline(dep)
        revision = pod_revision(dep, configs_index(self.store))
        row = self.store.get_workload_status(ns, name)
        now = time.time()
        written = self.store.updated_at("apps/v1", "Deployment", ns, name) or now
        if row is None or row.revision != revision:
            # The agent has not acted on this revision yet.
            updated = ready = available = 0
            since = written
            message = "" if self._agent_alive() else "the node agent is not running: start it with `playground up`"
            if row is not None and row.revision == "" and row.message:
                message = row.message
            unavailable_since = since if desired > 0 else None
            progress = since
            error = bool(message)
        else:
            updated, ready, available = row.updated, row.ready, row.available
            message, error = row.message, row.error
            if not self._agent_alive():
                message = "the node agent is not running: start it with `playground up`"
                error = True
            if row.desired != desired:  # a scale the agent has not seen yet
                progress = written
                unavailable_since = written if desired > 0 and available < desired else None
            else:
                progress = row.last_progress or written
                unavailable_since = row.unavailable_since if desired > 0 else None
        complete = desired == 0 or (updated >= desired and available >= desired)
        exceeded = (not complete) and now - progress > deadline
        if exceeded:
            detail = message or f"{available}/{desired} replicas of the current revision available"
            message = f"Deployment {ns}/{name} exceeded its progress deadline ({deadline}s without progress): {detail}"
        elif not complete and not error and not message:
            message = f"{available}/{desired} replicas of the current revision available"
        return WorkloadStatus(
            desired=desired,
            updated=updated,
            ready=ready,
            available=available,
            deadline_exceeded=exceeded,
            message=message,
            unavailable_since=None if complete else unavailable_since,
        )

    def _agent_alive(self) -> bool:
        return agent_alive(self.store)

    # -- canary status -------------------------------------------------------------------------------------
    def get_canary_status(self, namespace: str, name: str) -> CanaryStatus | None:
        st = self.store.get_canary_status(namespace, name)
        return None if st is None else CanaryStatus.model_validate(st[0])

    def set_canary_status(self, namespace: str, name: str, status: CanaryStatus) -> None:
        """Persist the status in one transaction (readers see the old or the new status, never a mix)."""
        self.store.put_canary_status(namespace, name, status.model_dump(mode="json"))

    def update_canary_status(
        self, namespace: str, name: str, mutate: Callable[[CanaryStatus | None], CanaryStatus]
    ) -> CanaryStatus:
        """Compare-and-set on the status version; retried while another writer gets in between."""
        for _ in range(50):
            st = self.store.get_canary_status(namespace, name)
            current, version = (None, 0) if st is None else (CanaryStatus.model_validate(st[0]), st[1])
            new = mutate(current)
            try:
                self.store.put_canary_status(namespace, name, new.model_dump(mode="json"), expected_version=version)
                return new
            except Conflict:
                time.sleep(0.01)
        raise Conflict(f"status of Canary {namespace}/{name} kept changing: gave up after 50 attempts; try again")

    # -- addressing ----------------------------------------------------------------------------------------
    def _ports(self) -> dict[str, int]:
        ports = self.home.ports()
        if not ports:
            raise ClusterError(f"the local playground in {self.home.root} is not set up: run `playground up`")
        return ports

    def http_proxy(self) -> str:
        """URL of the mesh proxy (Envoy): use it as HTTP proxy to reach Services by their Kubernetes names
        (``http://backend-canary.prod:9898/``) with the traffic measured as with a sidecar."""
        return f"http://127.0.0.1:{self._ports()['mesh']}"

    def gateway_url(self) -> str:
        """URL of the public gateway (what the Istio ingress gateway serves on a cluster)."""
        return f"http://127.0.0.1:{self._ports()['gateway']}"

    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self._ports()['prometheus']}"

    def resolve_url(self, url: str) -> str:
        """Map an in-cluster URL to a direct local address, without the proxy.

        ``prometheus.istio-system[:9090]`` goes to the local Prometheus; ``<service>.<namespace>[.svc[.cluster.local]]``
        to a ready replica of that Service (the URL's port, default 80, picks the Service port). Anything else,
        or a Service without a ready replica, is returned unchanged (use :meth:`http_proxy` for measured traffic).
        """
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        for suffix in _CLUSTER_SUFFIXES:
            if host.endswith(suffix):
                host = host[: -len(suffix)]
        labels = host.split(".")
        if len(labels) != 2:
            return url
        svc_name, ns = labels
        port = parts.port or (443 if parts.scheme == "https" else 80)
        ports = self.home.ports() or {}
        if (svc_name, ns) == ("prometheus", "istio-system") and ports.get("prometheus"):
            return urlunsplit(parts._replace(netloc=f"127.0.0.1:{ports['prometheus']}"))
        svc = self.store.get("v1", "Service", ns, svc_name)
        if svc is None:
            return url
        if port not in [int(p.get("port", 0)) for p in (svc.get("spec") or {}).get("ports") or []]:
            return url
        try:
            eps = service_endpoints(self.store).get((ns, svc_name))
        except ImportError:  # pragma: no cover - renderer not installed
            return url
        if eps is None or not eps.addresses:
            return url
        h, p = eps.addresses[0]
        return urlunsplit(parts._replace(netloc=f"{h}:{p}"))
