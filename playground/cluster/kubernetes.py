"""The Kubernetes backend: a real cluster through the official ``kubernetes`` Python client.

Objects are plain dicts in the Kubernetes/Istio JSON schema (as everywhere behind ``Cluster``). Built-in
kinds go through the typed APIs (``CoreV1Api``, ``AppsV1Api``, ``AutoscalingV2Api``, ... picked from the
object's apiVersion); Istio (``networking.istio.io``) and Flagger (``flagger.app``) objects through
``CustomObjectsApi``. Every call is made with ``_preload_content=False`` and the JSON is decoded here, so
objects round-trip exactly as the API server stores them (no lossy conversion through generated models).

Authentication
    ``KubernetesCluster(kubeconfig=..., context=...)`` loads a kubeconfig file (default: ``$KUBECONFIG``,
    else ``~/.kube/config``) and an optional context in it, exactly as ``kubectl`` would.
    ``KubernetesCluster(in_cluster=True)`` uses the pod's service account (token and CA mounted under
    ``/var/run/secrets/kubernetes.io/serviceaccount``, API address from ``KUBERNETES_SERVICE_HOST``); it is
    also chosen automatically when no kubeconfig file exists and ``KUBERNETES_SERVICE_HOST`` is set (the
    pipeline runs in a pod). ``api_client=`` takes a ready ``kubernetes.client.ApiClient`` (tests point one
    at a fake API server).

RBAC the pipeline's service account needs (in every namespace holding canaries)
    - ``get, list, create, update, delete`` on ``deployments`` (apps), ``services``, ``configmaps``,
      ``secrets`` (core), ``horizontalpodautoscalers`` (autoscaling), ``virtualservices`` and
      ``destinationrules`` (networking.istio.io), ``httproutes`` (gateway.networking.k8s.io, for gatewayapi
      canaries);
    - ``patch`` on ``deployments/scale`` (apps) to scale the canary;
    - ``get, list`` on ``canaries``, ``metrictemplates``, ``alertproviders`` (flagger.app; ``create, update``
      too when the GitOps sync applies them), ``get, update`` on ``canaries/status``;
    - ``update`` on ``canaries/finalizers``: the generated objects carry an ownerReference to their Canary
      with ``blockOwnerDeletion: true``, which the OwnerReferencesPermissionEnforcement admission plugin
      only allows to users who may update the owner's finalizers.
    A 403 names the verb and resource that is missing (see ``ClusterError`` messages).

Semantics
    ``apply`` is create-or-replace: POST; on ``409 AlreadyExists`` GET the stored object and PUT the desired
    one with the stored ``resourceVersion``, re-reading and retrying on ``409 Conflict`` (someone wrote in
    between). A replace keeps what the cluster owns: a Service's allocated ``clusterIP(s)``, and a
    Deployment's ``spec.replicas`` when the desired object does not set it (the HPA or the canary scaler owns
    it then). ownerReferences without a ``uid`` (``playground.routing`` cannot know it) get the uid of the
    owner as stored in the cluster; when the owner is not in the cluster, the reference is dropped.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from playground.cluster.base import Cluster, ClusterError, Conflict, NotFound, WorkloadStatus
from playground.models import CanaryStatus

__all__ = ["KubernetesCluster", "DeploymentStatus", "Resource"]

FLAGGER_GROUP, FLAGGER_VERSION = "flagger.app", "v1beta1"
MERGE_PATCH = "application/merge-patch+json"

# (group, kind) -> (plural, namespaced) for kinds that are not built into Kubernetes. Anything else is looked
# up in the API server's discovery document (GET /apis/<group>/<version>).
KNOWN_CUSTOM_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("networking.istio.io", "VirtualService"): ("virtualservices", True),
    ("networking.istio.io", "DestinationRule"): ("destinationrules", True),
    ("networking.istio.io", "Gateway"): ("gateways", True),
    ("networking.istio.io", "ServiceEntry"): ("serviceentries", True),
    ("install.istio.io", "IstioOperator"): ("istiooperators", True),
    ("gateway.networking.k8s.io", "HTTPRoute"): ("httproutes", True),
    ("gateway.networking.k8s.io", "Gateway"): ("gateways", True),
    ("flagger.app", "Canary"): ("canaries", True),
    ("flagger.app", "MetricTemplate"): ("metrictemplates", True),
    ("flagger.app", "AlertProvider"): ("alertproviders", True),
    ("image.toolkit.fluxcd.io", "ImageRepository"): ("imagerepositories", True),
    ("image.toolkit.fluxcd.io", "ImagePolicy"): ("imagepolicies", True),
}

# Verbs as RBAC names them, per client operation (used in 403 messages).
_RBAC_VERB = {
    "create": "create",
    "read": "get",
    "replace": "update",
    "delete": "delete",
    "list": "list",
    "patch": "patch",
}


def _snake(kind: str) -> str:
    """``HorizontalPodAutoscaler`` -> ``horizontal_pod_autoscaler`` (the typed API method suffix)."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", kind)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def _plural(kind: str) -> str:
    """The REST resource name of a built-in kind, by Kubernetes' own pluralization rule."""
    low = kind.lower()
    if low == "endpoints":
        return low
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return low + "es"
    if low.endswith("y") and low[-2:-1] not in "aeiou":
        return low[:-1] + "ies"
    return low + "s"


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _builtin_group(group: str) -> bool:
    """Groups served by kube-apiserver itself (typed client APIs exist for them)."""
    return group == "" or "." not in group or group.endswith(".k8s.io")


@dataclass(frozen=True)
class Resource:
    """How to reach one kind: its REST resource name and the client API that serves it."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool
    typed_api: Any = None  # an instance of e.g. AppsV1Api, or None for CustomObjectsApi
    snake: str = ""

    @property
    def group(self) -> str:
        return _split_api_version(self.api_version)[0]

    @property
    def version(self) -> str:
        return _split_api_version(self.api_version)[1]

    @property
    def resource_name(self) -> str:
        """``deployments.apps`` / ``services``: how Kubernetes names the resource in messages and RBAC."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


@dataclass(frozen=True)
class DeploymentStatus(WorkloadStatus):
    """``WorkloadStatus`` plus Flagger's rollout checks that plain replica counts cannot express.

    ``rollout_pending`` is True while the Deployment controller has not observed the latest generation or
    old replicas are still terminating; such a workload is never ready, whatever the counts say.
    """

    rollout_pending: bool = False

    def is_ready(self, threshold_percent: int = 100) -> bool:
        return not self.rollout_pending and not self.deadline_exceeded and super().is_ready(threshold_percent)


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _describe(kind: str, namespace: str | None, name: str | None) -> str:
    where = f"{namespace}/{name}" if namespace else (name or "")
    return f"{kind} {where}".strip()


class KubernetesCluster(Cluster):
    """A ``Cluster`` backed by a Kubernetes API server (see the module docstring for auth and RBAC)."""

    name = "kubernetes"

    def __init__(
        self,
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool = False,
        api_client: k8s.ApiClient | None = None,
        *,
        conflict_retries: int = 5,
        request_timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._owns_client = api_client is None
        self.api_client = api_client if api_client is not None else self._load_client(kubeconfig, context, in_cluster)
        self.conflict_retries = max(1, conflict_retries)
        self.request_timeout = request_timeout
        self._sleep = sleep
        self.core = k8s.CoreV1Api(self.api_client)
        self.apps = k8s.AppsV1Api(self.api_client)
        self.custom = k8s.CustomObjectsApi(self.api_client)
        self._resources: dict[tuple[str, str], Resource] = {}
        # uid of objects seen in the cluster, keyed (apiVersion, kind, namespace, name). Used to fill in
        # ownerReferences; refreshed whenever the owner is read (the controller reads its Canary every tick).
        self._uids: dict[tuple[str, str, str | None, str], str] = {}

    # ------------------------------------------------------------------------------------ config
    @staticmethod
    def _load_client(kubeconfig: str | None, context: str | None, in_cluster: bool) -> k8s.ApiClient:
        cfg = k8s.Configuration()
        path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        first = os.path.expanduser(path.split(os.pathsep)[0])
        if (
            not in_cluster
            and kubeconfig is None
            and not os.path.exists(first)
            and os.environ.get("KUBERNETES_SERVICE_HOST")
        ):
            in_cluster = True  # running in a pod without a kubeconfig: use the service account
        try:
            if in_cluster:
                k8s_config.load_incluster_config(client_configuration=cfg)
            else:
                k8s_config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
        except (k8s_config.ConfigException, OSError, ValueError) as exc:
            if in_cluster:
                raise ClusterError(
                    f"cannot load the in-cluster Kubernetes configuration: {exc}; run inside a pod with a "
                    "service account token mounted, or pass a kubeconfig instead"
                ) from exc
            ctx = f" (context {context!r})" if context else ""
            raise ClusterError(
                f"cannot load kubeconfig {path}{ctx}: {exc}; point --kubeconfig/KUBECONFIG at a valid file, "
                "pick an existing context, or use in-cluster configuration inside a pod"
            ) from exc
        return k8s.ApiClient(cfg)

    def close(self) -> None:
        if self._owns_client:
            self.api_client.close()

    # ------------------------------------------------------------------------------------ resources
    def resource(self, api_version: str, kind: str) -> Resource:
        """The REST resource serving ``apiVersion``/``kind`` (typed API for built-ins, discovery otherwise)."""
        key = (api_version, kind)
        if key in self._resources:
            return self._resources[key]
        group, version = _split_api_version(api_version)
        res: Resource | None = None
        if _builtin_group(group):
            res = self._typed_resource(api_version, kind, group, version)
        if res is None:
            plural_ns = KNOWN_CUSTOM_KINDS.get((group, kind)) or self._discover(api_version, kind)
            res = Resource(api_version, kind, plural_ns[0], plural_ns[1])
        self._resources[key] = res
        return res

    def _typed_resource(self, api_version: str, kind: str, group: str, version: str) -> Resource | None:
        if group == "":
            cls_name = f"Core{version.capitalize()}Api"
        else:
            words = group.removesuffix(".k8s.io").split(".")
            cls_name = "".join(w.capitalize() for w in words) + version.capitalize() + "Api"
        cls = getattr(k8s, cls_name, None)
        if cls is None:
            return None
        snake = _snake(kind)
        api = cls(self.api_client)
        if hasattr(api, f"create_namespaced_{snake}"):
            namespaced = True
        elif hasattr(api, f"create_{snake}"):
            namespaced = False
        else:
            return None
        plural = _plural(kind)
        return Resource(api_version, kind, plural, namespaced, api, snake)

    def _discover(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) of a custom kind from the API server's discovery document."""
        group, version = _split_api_version(api_version)
        try:
            if group:
                raw = self.custom.get_api_resources(
                    group, version, _preload_content=False, _request_timeout=self.request_timeout
                )
            else:
                raw = self.core.get_api_resources(_preload_content=False, _request_timeout=self.request_timeout)
            doc = json.loads(raw.data)
        except ApiException as exc:
            if exc.status == 404:
                raise ClusterError(
                    f"the cluster does not serve {api_version} (needed for {kind}): install the CRDs that "
                    f"provide it (Istio for networking.istio.io, Flagger for flagger.app) and retry"
                ) from exc
            raise self._api_error(exc, "list", Resource(api_version, kind, "", True), None, None) from exc
        except Exception as exc:  # connection refused, TLS, ...
            raise self._unreachable(exc) from exc
        for r in doc.get("resources") or []:
            if r.get("kind") == kind and "/" not in r.get("name", ""):
                return r["name"], bool(r.get("namespaced"))
        raise ClusterError(
            f"the cluster serves {api_version} but not the kind {kind}: check the manifest's apiVersion/kind, "
            f"or install a version of the CRD that has {kind}"
        )

    # ------------------------------------------------------------------------------------ low level
    def _call(
        self,
        op: str,
        res: Resource,
        namespace: str | None,
        name: str | None = None,
        body: dict[str, Any] | None = None,
        subresource: str = "",
    ) -> dict[str, Any]:
        """One API call; returns the decoded JSON body. Raises ApiException for HTTP errors."""
        kw: dict[str, Any] = {"_preload_content": False, "_request_timeout": self.request_timeout}
        args: list[Any]
        if res.typed_api is not None:
            if subresource:
                raise ValueError(f"subresource {subresource} of {res.kind} through the typed API")  # not used
            scope = "namespaced_" if res.namespaced else ""
            if op == "list" and res.namespaced and namespace is None:
                fn = getattr(res.typed_api, f"list_{res.snake}_for_all_namespaces")
                args = []
            else:
                fn = getattr(res.typed_api, f"{op}_{scope}{res.snake}")
                args = [] if op in ("create", "list") else [name]
                if res.namespaced:
                    args.append(namespace)
            if body is not None:
                args.append(body)
        else:
            g, v, p = res.group, res.version, res.plural
            suffix = f"_{subresource}" if subresource else ""
            op_name = "get" if op == "read" else op  # CustomObjectsApi says get_..., the typed APIs read_...
            if res.namespaced and namespace is not None:
                fn = getattr(self.custom, f"{op_name}_namespaced_custom_object{suffix}")
                args = [g, v, namespace, p]
            elif op == "list" and res.namespaced:
                fn = self.custom.list_custom_object_for_all_namespaces
                args = [g, v, p]
            else:
                fn = getattr(self.custom, f"{op_name}_cluster_custom_object{suffix}")
                args = [g, v, p]
            if op not in ("create", "list"):
                args.append(name)
            if body is not None:
                args.append(body)
        try:
            resp = fn(*args, **kw)
        except ApiException:
            raise  # callers turn it into a ClusterError that names the object
        except Exception as exc:  # urllib3 MaxRetryError, SSL errors, ...
            raise self._unreachable(exc) from exc
        data = resp.data
        return json.loads(data) if data else {}

    def _unreachable(self, exc: Exception) -> ClusterError:
        host = getattr(self.api_client.configuration, "host", "?")
        return ClusterError(
            f"cannot reach the Kubernetes API server at {host}: {exc}; check that the cluster is up and that "
            "the kubeconfig context (or in-cluster configuration) points at it"
        )

    def _api_error(
        self, exc: ApiException, op: str, res: Resource, namespace: str | None, name: str | None, subresource: str = ""
    ) -> ClusterError:
        """A ClusterError naming the object, the HTTP status, the API's message and what to do."""
        try:
            status = json.loads(exc.body or "{}")
        except ValueError:
            status = {}
        if not isinstance(status, dict):
            status = {}
        message = status.get("message") or exc.reason or "no message"
        reason = status.get("reason") or exc.reason or ""
        code = exc.status
        what = _describe(res.kind, namespace if res.namespaced else None, name)
        verb = _RBAC_VERB.get(op, op)
        resource = res.resource_name + (f"/{subresource}" if subresource else "")
        head = f"{verb} {what} failed: HTTP {code} {reason}: {message}"
        if code == 403:
            where = f" in namespace {namespace}" if res.namespaced and namespace else ""
            return ClusterError(
                f"{head}; grant the pipeline's service account {verb} on {resource}{where} "
                f'(a Role rule with apiGroups: ["{res.group}"], resources: ["{res.plural}'
                f'{"/" + subresource if subresource else ""}"], verbs: ["{verb}"])'
            )
        if code == 401:
            return ClusterError(
                f"{head}; the credentials were rejected: refresh the kubeconfig token or "
                "check the service account token"
            )
        if code == 404:
            details = status.get("details") or {}
            if not details:  # "the server could not find the requested resource"
                hint = (
                    f"the cluster does not serve {res.api_version} {res.plural}: install its CRD, or check the "
                    "object's apiVersion"
                )
            elif details.get("kind") == "namespaces" and details.get("name") != name:
                hint = f"the namespace {details.get('name')} does not exist: create it first (sync the namespaces)"
            else:
                hint = "it does not exist"
            return NotFound(f"{head}; {hint}")
        if code == 409:
            return Conflict(f"{head}; the object changed while it was being written; retry")
        if code in (400, 422):
            causes = "; ".join(
                f"{c.get('field', '?')}: {c.get('message', '')}"
                for c in (status.get("details") or {}).get("causes") or []
            )
            extra = f" (causes: {causes})" if causes and causes not in message else ""
            return ClusterError(
                f"{head}{extra}; the API server rejected the object as invalid: fix it in the "
                "manifest (or the Canary it was generated from) and sync again"
            )
        if code == 415:
            return ClusterError(f"{head}; the client sent an unsupported content type (a bug in this backend)")
        return ClusterError(f"{head}; the API server failed: check its health and retry")

    def _remember(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if meta.get("uid") and meta.get("name"):
            key = (obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace"), meta["name"])
            self._uids[key] = meta["uid"]

    # ------------------------------------------------------------------------------------ generic
    def _identity(self, obj: dict[str, Any]) -> tuple[Resource, str | None, str]:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not api_version or not kind or not name:
            raise ClusterError(
                f"cannot apply an object without apiVersion, kind and metadata.name (got apiVersion={api_version!r}, "
                f"kind={kind!r}, name={name!r}); fix the manifest"
            )
        res = self.resource(api_version, kind)
        namespace = (meta.get("namespace") or "default") if res.namespaced else None
        return res, namespace, name

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        res, namespace, name = self._identity(obj)
        desired = copy.deepcopy(obj)
        desired.pop("status", None)
        meta = desired.setdefault("metadata", {})
        for volatile in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            meta.pop(volatile, None)
        if res.namespaced:
            meta["namespace"] = namespace
        self._fill_owner_uids(desired, namespace)
        what = _describe(res.kind, namespace, name)

        try:
            stored = self._call("create", res, namespace, body=desired)
            self._remember(stored)
            return stored
        except ApiException as exc:
            if exc.status != 409:
                raise self._api_error(exc, "create", res, namespace, name) from exc
        # It exists: replace it with the stored resourceVersion; re-read on a conflict.
        last: ApiException | None = None
        for attempt in range(self.conflict_retries):
            if attempt:
                self._sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
            try:
                current = self._call("read", res, namespace, name)
            except ApiException as exc:
                if exc.status == 404:  # deleted in between: create it again
                    try:
                        stored = self._call("create", res, namespace, body=desired)
                        self._remember(stored)
                        return stored
                    except ApiException as exc2:
                        if exc2.status == 409:
                            last = exc2
                            continue
                        raise self._api_error(exc2, "create", res, namespace, name) from exc2
                raise self._api_error(exc, "read", res, namespace, name) from exc
            body = self._replacement(desired, current)
            try:
                stored = self._call("replace", res, namespace, name, body=body)
                self._remember(stored)
                return stored
            except ApiException as exc:
                if exc.status in (404, 409):
                    last = exc
                    continue
                raise self._api_error(exc, "replace", res, namespace, name) from exc
        assert last is not None
        err = self._api_error(last, "replace", res, namespace, name)
        raise Conflict(
            f"{err} (gave up on {what} after {self.conflict_retries} attempts: another client keeps "
            "modifying it; find it with `kubectl get` and stop the other writer)"
        )

    @staticmethod
    def _replacement(desired: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
        """The PUT body: ``desired`` with the stored resourceVersion and the fields the cluster owns."""
        body = copy.deepcopy(desired)
        cur_meta = current.get("metadata") or {}
        body["metadata"]["resourceVersion"] = cur_meta.get("resourceVersion")
        if "finalizers" not in body["metadata"] and cur_meta.get("finalizers"):
            # A PUT without finalizers would remove them (Flagger's finalizer.flagger.app on a Canary): keep them
            # unless the object sets its own (an explicit empty list removes them).
            body["metadata"]["finalizers"] = list(cur_meta["finalizers"])
        kind = desired.get("kind")
        spec, cur_spec = body.get("spec"), current.get("spec") or {}
        if kind == "Service" and isinstance(spec, dict):
            # Allocated by the API server; immutable once set (older servers reject an empty value).
            for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort"):
                if field not in spec and field in cur_spec:
                    spec[field] = copy.deepcopy(cur_spec[field])
            cur_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in cur_spec.get("ports") or []}
            for port in spec.get("ports") or []:
                old = cur_ports.get((port.get("port"), port.get("protocol", "TCP")))
                exposed = spec.get("type") in ("NodePort", "LoadBalancer")
                if exposed and old and "nodePort" in old and "nodePort" not in port:
                    port["nodePort"] = old["nodePort"]
        if kind in ("Deployment", "StatefulSet") and isinstance(spec, dict):
            # Without replicas in the manifest, the HPA / canary scaler owns the count: keep it.
            if "replicas" not in spec and "replicas" in cur_spec:
                spec["replicas"] = cur_spec["replicas"]
        return body

    def _fill_owner_uids(self, obj: dict[str, Any], namespace: str | None) -> None:
        meta = obj.get("metadata") or {}
        refs = meta.get("ownerReferences")
        if not refs:
            return
        kept = []
        for ref in refs:
            if ref.get("uid"):
                kept.append(ref)
                continue
            uid = self._owner_uid(ref, namespace)
            if uid:
                kept.append({**ref, "uid": uid})
        if kept:
            meta["ownerReferences"] = kept
        else:
            meta.pop("ownerReferences", None)

    def _owner_uid(self, ref: dict[str, Any], namespace: str | None) -> str | None:
        api_version, kind, name = ref.get("apiVersion", ""), ref.get("kind", ""), ref.get("name", "")
        res = self.resource(api_version, kind)
        ns = namespace if res.namespaced else None
        key = (api_version, kind, ns, name)
        if key not in self._uids:
            owner = self.get(api_version, kind, ns, name)  # remembers the uid
            if owner is None:
                return None
        return self._uids.get(key)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        res = self.resource(api_version, kind)
        ns = (namespace or "default") if res.namespaced else None
        try:
            obj = self._call("read", res, ns, name)
        except ApiException as exc:
            if exc.status == 404:
                details = self._status_details(exc)
                if details is not None and not details.get("name"):
                    # "the server could not find the requested resource": the kind itself is not served.
                    raise ClusterError(
                        f"get {_describe(kind, ns, name)} failed: the cluster does not serve {api_version} "
                        f"{res.plural}; install its CRD"
                    ) from exc
                self._uids.pop((api_version, kind, ns, name), None)
                return None
            raise self._api_error(exc, "read", res, ns, name) from exc
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        self._remember(obj)
        return obj

    @staticmethod
    def _status_details(exc: ApiException) -> dict[str, Any] | None:
        try:
            status = json.loads(exc.body or "")
        except ValueError:
            return None
        if not isinstance(status, dict) or status.get("kind") != "Status":
            return None
        return status.get("details") or {}

    def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        res = self.resource(api_version, kind)
        ns = namespace if res.namespaced else None
        try:
            doc = self._call("list", res, ns)
        except ApiException as exc:
            if exc.status == 404 and res.typed_api is None:
                return []  # the CRD is not installed: there are no such objects
            raise self._api_error(exc, "list", res, ns, None) from exc
        items = []
        for item in doc.get("items") or []:
            # List items of built-in kinds come without apiVersion/kind.
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
            self._remember(item)
            items.append(item)
        return items

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        res = self.resource(api_version, kind)
        ns = (namespace or "default") if res.namespaced else None
        try:
            self._call("delete", res, ns, name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise self._api_error(exc, "delete", res, ns, name) from exc
        self._uids.pop((api_version, kind, ns, name), None)
        return True

    # ------------------------------------------------------------------------------------ workloads
    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Merge-patch the Deployment's scale subresource (RBAC: patch deployments/scale)."""
        res = self.resource("apps/v1", "Deployment")
        try:
            self.apps.patch_namespaced_deployment_scale(
                name,
                namespace,
                {"spec": {"replicas": int(replicas)}},
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self.request_timeout,
            )
        except ApiException as exc:
            raise self._api_error(exc, "patch", res, namespace, name, subresource="scale") from exc
        except Exception as exc:
            raise self._unreachable(exc) from exc

    def workload_status(self, namespace: str, name: str) -> DeploymentStatus:
        """Readiness of a Deployment by Flagger's rules (``isDeploymentReady``).

        Not ready while the controller has not observed the latest generation, while fewer replicas than
        desired are updated, or while old replicas are terminating. A ``Progressing`` condition with reason
        ``ProgressDeadlineExceeded`` sets ``deadline_exceeded`` (with the condition's message); an
        ``Available=False/MinimumReplicasUnavailable`` condition gives ``unavailable_since`` (its
        lastUpdateTime), which the controller compares with the Canary's progressDeadlineSeconds.
        """
        dep = self.get("apps/v1", "Deployment", namespace, name)
        if dep is None:
            raise NotFound(
                f"Deployment {namespace}/{name} not found; check the Canary's targetRef and that the "
                "Deployment was applied"
            )
        spec, st = dep.get("spec") or {}, dep.get("status") or {}
        desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        replicas = int(st.get("replicas") or 0)
        updated = int(st.get("updatedReplicas") or 0)
        ready = int(st.get("readyReplicas") or 0)
        available = int(st.get("availableReplicas") or 0)
        conditions = {c.get("type"): c for c in st.get("conditions") or []}
        generation = int((dep.get("metadata") or {}).get("generation") or 0)
        observed = int(st.get("observedGeneration") or 0)

        if generation > observed:
            return DeploymentStatus(
                desired,
                updated,
                ready,
                available,
                rollout_pending=True,
                message=(
                    f"{name}: waiting for rollout to finish: observed deployment generation less than desired generation"
                ),
            )
        progress = conditions.get("Progressing")
        unavailable_since = None
        if progress is not None:
            avail = conditions.get("Available")
            if avail and avail.get("status") == "False" and avail.get("reason") == "MinimumReplicasUnavailable":
                unavailable_since = _parse_time(avail.get("lastUpdateTime") or avail.get("lastTransitionTime"))
        if progress is not None and progress.get("reason") == "ProgressDeadlineExceeded":
            detail = progress.get("message")
            return DeploymentStatus(
                desired,
                updated,
                ready,
                available,
                deadline_exceeded=True,
                unavailable_since=unavailable_since,
                message=f"{name}: deployment exceeded its progress deadline" + (f": {detail}" if detail else ""),
            )
        pending, message, waiting = False, "", f"{name}: waiting for rollout to finish"
        if updated < desired:
            pending = True
            message = f"{waiting}: {updated} out of {desired} new replicas have been updated"
        elif replicas > updated:
            pending = True
            message = f"{waiting}: {replicas - updated} old replicas are pending termination"
        elif available < updated:
            message = f"{waiting}: {available} of {updated} updated replicas are available"
        return DeploymentStatus(
            desired,
            updated,
            ready,
            available,
            message=message,
            rollout_pending=pending,
            unavailable_since=unavailable_since,
        )

    # ------------------------------------------------------------------------------------ canary status
    def _canary_resource(self) -> Resource:
        return self.resource(f"{FLAGGER_GROUP}/{FLAGGER_VERSION}", "Canary")

    def _read_canary(self, namespace: str, name: str) -> dict[str, Any] | None:
        res = self._canary_resource()
        try:
            obj = self._call("read", res, namespace, name, subresource="status")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._api_error(exc, "read", res, namespace, name, subresource="status") from exc
        self._remember(obj)
        return obj

    def get_canary_status(self, namespace: str, name: str) -> CanaryStatus | None:
        obj = self._read_canary(namespace, name)
        if obj is None:
            return None
        return self._status_of(namespace, name, obj)

    @staticmethod
    def _status_of(namespace: str, name: str, obj: dict[str, Any]) -> CanaryStatus | None:
        status = obj.get("status")
        if not status:
            return None
        status = {k: v for k, v in status.items() if not (k == "phase" and v == "")}
        try:
            return CanaryStatus.model_validate(status)
        except ValidationError as exc:
            raise ClusterError(
                f"Canary {namespace}/{name} has a status this engine cannot read ({exc.errors()[0].get('msg')}); "
                "clear it with `kubectl edit canary --subresource=status` or delete and re-apply the Canary"
            ) from exc

    def set_canary_status(self, namespace: str, name: str, status: CanaryStatus) -> None:
        """Replace the Canary's status subresource; on a stale resourceVersion re-read and retry."""
        self.update_canary_status(namespace, name, lambda _current: status)

    def update_canary_status(
        self, namespace: str, name: str, mutate: Callable[[CanaryStatus | None], CanaryStatus]
    ) -> CanaryStatus:
        """Read the Canary, ``mutate`` its status and replace the status subresource with the resourceVersion that
        was read: a concurrent writer makes the API server answer 409, and the read-mutate-replace is retried."""
        res = self._canary_resource()
        last: ApiException | None = None
        for attempt in range(self.conflict_retries):
            if attempt:
                self._sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
            current = self._read_canary(namespace, name)
            if current is None:
                raise NotFound(
                    f"update Canary {namespace}/{name} status failed: the Canary is not in the cluster; "
                    "sync the GitOps repository (or apply the Canary) first"
                )
            new = mutate(self._status_of(namespace, name, current))
            body = dict(current)
            body["status"] = new.model_dump(mode="json", exclude_none=True)
            try:
                stored = self._call("replace", res, namespace, name, body=body, subresource="status")
                self._remember(stored)
                return new
            except ApiException as exc:
                if exc.status == 409:
                    last = exc
                    continue
                raise self._api_error(exc, "replace", res, namespace, name, subresource="status") from exc
        assert last is not None
        raise Conflict(
            f"{self._api_error(last, 'replace', res, namespace, name, subresource='status')} "
            f"(gave up after {self.conflict_retries} attempts)"
        )

    # ------------------------------------------------------------------------------------ addressing
    def resolve_url(self, url: str) -> str:
        """In-cluster DNS names resolve as they are (the pipeline runs in, or routes into, the cluster)."""
        return url
