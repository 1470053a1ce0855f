"""Desired Kubernetes and Istio objects for a Canary (pure; no I/O).

This is what Flagger's Kubernetes and Istio controllers create, computed once for every backend:

- ``<target>-primary`` Deployment: a copy of the target Deployment with the selector label value (``app``,
  ``name`` or ``app.kubernetes.io/name``) suffixed with ``-primary`` and ConfigMap/Secret references renamed
  to their ``-primary`` copies.
- Services ``<svc>`` (apex, selects the primary pods), ``<svc>-primary`` and ``<svc>-canary``.
- DestinationRules ``<svc>-primary`` and ``<svc>-canary`` (with ``service.trafficPolicy``).
- VirtualService ``<svc>`` carrying the traffic split, A/B match routes and mirroring (provider istio); for
  the gatewayapi provider the HTTPRoute ``<svc>`` of ``playground.routing_gatewayapi`` instead (no
  DestinationRules); ``route_key``/``route_object``/``routes_in`` pick the provider's object.
- ``<hpa>-primary`` HorizontalPodAutoscaler targeting the primary.

Object shapes follow Flagger v1.44 (``pkg/canary/deployment_controller.go``, ``pkg/router/istio.go``) so that
users of Flagger see the same objects, and the local backend renders exactly these into Envoy configuration.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from playground.errors import PlaygroundError
from playground.models import Canary

ISTIO_API = "networking.istio.io/v1beta1"
SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")
CONFIG_TRACKING_ANNOTATION = "flagger.app/config-tracking"
# Annotations Flagger never copies to the primary.
_SKIPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision")


class RoutingError(PlaygroundError, ValueError):
    """The target cannot be managed (e.g. its selector has no supported label)."""


# ------------------------------------------------------------------------------------------ names


def service_names(canary: Canary) -> tuple[str, str, str]:
    """(apex, primary, canary) Service names: ``service.name`` or the target's name."""
    apex = canary.spec.service.name or canary.spec.targetRef.name
    return apex, f"{apex}-primary", f"{apex}-canary"


def primary_name(name: str) -> str:
    return f"{name}-primary"


def selector_label(deployment: dict[str, Any]) -> tuple[str, str]:
    """The (key, value) of the selector label Flagger uses to tell primary and canary pods apart."""
    match = (deployment.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
    for key in SELECTOR_LABELS:
        if key in match:
            return key, str(match[key])
    name = deployment.get("metadata", {}).get("name", "?")
    raise RoutingError(
        f"Deployment {name}: spec.selector.matchLabels has none of the labels {', '.join(SELECTOR_LABELS)}; "
        f"add one of them (e.g. app: {name}) to the selector and the pod template labels"
    )


# ------------------------------------------------------------------------------- configs tracking


def referenced_configs(pod_spec: dict[str, Any]) -> set[tuple[str, str]]:
    """ConfigMaps and Secrets a pod spec references: {("ConfigMap"|"Secret", name)}."""
    refs: set[tuple[str, str]] = set()
    containers = list(pod_spec.get("containers") or []) + list(pod_spec.get("initContainers") or [])
    for c in containers:
        for env in c.get("env") or []:
            src = env.get("valueFrom") or {}
            if "configMapKeyRef" in src:
                refs.add(("ConfigMap", src["configMapKeyRef"]["name"]))
            if "secretKeyRef" in src:
                refs.add(("Secret", src["secretKeyRef"]["name"]))
        for env_from in c.get("envFrom") or []:
            if "configMapRef" in env_from:
                refs.add(("ConfigMap", env_from["configMapRef"]["name"]))
            if "secretRef" in env_from:
                refs.add(("Secret", env_from["secretRef"]["name"]))
    for vol in pod_spec.get("volumes") or []:
        if "configMap" in vol:
            refs.add(("ConfigMap", vol["configMap"]["name"]))
        if "secret" in vol:
            refs.add(("Secret", vol["secret"]["secretName"]))
        for src in (vol.get("projected") or {}).get("sources") or []:
            if "configMap" in src:
                refs.add(("ConfigMap", src["configMap"]["name"]))
            if "secret" in src:
                refs.add(("Secret", src["secret"]["name"]))
    return refs


def _tracked(obj: dict[str, Any]) -> bool:
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    return bool(ann.get(CONFIG_TRACKING_ANNOTATION, "enabled") != "disabled")


def _rename_refs(pod_spec: dict[str, Any], tracked: set[tuple[str, str]]) -> dict[str, Any]:
    """A copy of ``pod_spec`` whose references to tracked configs point at their ``-primary`` copies."""
    spec = copy.deepcopy(pod_spec)

    def ren(kind: str, name: str) -> str:
        return primary_name(name) if (kind, name) in tracked else name

    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        for env in c.get("env") or []:
            src = env.get("valueFrom") or {}
            if "configMapKeyRef" in src:
                src["configMapKeyRef"]["name"] = ren("ConfigMap", src["configMapKeyRef"]["name"])
            if "secretKeyRef" in src:
                src["secretKeyRef"]["name"] = ren("Secret", src["secretKeyRef"]["name"])
        for env_from in c.get("envFrom") or []:
            if "configMapRef" in env_from:
                env_from["configMapRef"]["name"] = ren("ConfigMap", env_from["configMapRef"]["name"])
            if "secretRef" in env_from:
                env_from["secretRef"]["name"] = ren("Secret", env_from["secretRef"]["name"])
    for vol in spec.get("volumes") or []:
        if "configMap" in vol:
            vol["configMap"]["name"] = ren("ConfigMap", vol["configMap"]["name"])
        if "secret" in vol:
            vol["secret"]["secretName"] = ren("Secret", vol["secret"]["secretName"])
        for src in (vol.get("projected") or {}).get("sources") or []:
            if "configMap" in src:
                src["configMap"]["name"] = ren("ConfigMap", src["configMap"]["name"])
            if "secret" in src:
                src["secret"]["name"] = ren("Secret", src["secret"]["name"])
    return spec


def tracked_configs(target: dict[str, Any], configs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ConfigMaps/Secrets (given objects) referenced by the target's pod template and not opted out."""
    refs = referenced_configs(target["spec"]["template"].get("spec") or {})
    out = []
    for obj in configs:
        key = (obj.get("kind"), (obj.get("metadata") or {}).get("name"))
        if key in refs and _tracked(obj):
            out.append(obj)
    return sorted(out, key=lambda o: (o["kind"], o["metadata"]["name"]))


def config_checksum(obj: dict[str, Any]) -> str:
    """Checksum of a ConfigMap/Secret's payload (data, binaryData, stringData)."""
    payload = {k: obj.get(k) for k in ("data", "binaryData", "stringData") if obj.get(k) is not None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def revision(target: dict[str, Any], configs: Iterable[dict[str, Any]] = ()) -> str:
    """The revision of a target: hash of its pod template plus the checksums of tracked configs.

    A change of the image, env, or of the data of a referenced ConfigMap/Secret is a new revision; a change
    of the replica count (HPA scaling) is not.
    """
    tracked = tracked_configs(target, configs)
    doc = {
        "template": target["spec"]["template"],
        "configs": {f"{o['kind']}/{o['metadata']['name']}": config_checksum(o) for o in tracked},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def primary_configs(target: dict[str, Any], configs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``-primary`` copies of the tracked ConfigMaps/Secrets (promotion copies these)."""
    out = []
    for obj in tracked_configs(target, configs):
        meta = obj["metadata"]
        new = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("metadata", "status")}
        new["metadata"] = {
            "name": primary_name(meta["name"]),
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _SKIPPED_ANNOTATIONS},
        }
        out.append(new)
    return out


# ------------------------------------------------------------------------------------- workloads


def _primary_labels(labels: dict[str, str] | None, key: str, value: str) -> dict[str, str]:
    out = dict(labels or {})
    out[key] = value
    return out


def primary_deployment(
    canary: Canary, target: dict[str, Any], configs: Iterable[dict[str, Any]] = (), replicas: int | None = None
) -> dict[str, Any]:
    """The ``<target>-primary`` Deployment as a copy of the target (Flagger's promotion/initialization)."""
    key, value = selector_label(target)
    pvalue = primary_name(value)
    meta = target["metadata"]
    spec = target["spec"]
    template = spec["template"]
    tracked = {(o["kind"], o["metadata"]["name"]) for o in tracked_configs(target, configs)}
    tmeta = template.get("metadata") or {}
    new_spec: dict[str, Any] = {
        "replicas": replicas if replicas is not None else spec.get("replicas", 1),
        "selector": {"matchLabels": {key: pvalue}},
        "template": {
            "metadata": {
                "labels": _primary_labels(tmeta.get("labels"), key, pvalue),
                "annotations": dict(tmeta.get("annotations") or {}),
            },
            "spec": _rename_refs(template.get("spec") or {}, tracked),
        },
    }
    for field in ("progressDeadlineSeconds", "minReadySeconds", "revisionHistoryLimit", "strategy"):
        if field in spec:
            new_spec[field] = copy.deepcopy(spec[field])
    if not new_spec["template"]["metadata"]["annotations"]:
        del new_spec["template"]["metadata"]["annotations"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": primary_name(meta["name"]),
            "namespace": meta.get("namespace") or canary.namespace,
            "labels": _primary_labels(meta.get("labels"), key, pvalue),
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _SKIPPED_ANNOTATIONS},
            "ownerReferences": [owner_reference(canary)],
        },
        "spec": new_spec,
    }


def primary_hpa(canary: Canary, hpa: dict[str, Any]) -> dict[str, Any]:
    """``<hpa>-primary``: the target's HPA pointed at the primary Deployment."""
    new = {k: copy.deepcopy(v) for k, v in hpa.items() if k not in ("metadata", "status")}
    meta = hpa["metadata"]
    new["metadata"] = {
        "name": primary_name(meta["name"]),
        "namespace": meta.get("namespace") or canary.namespace,
        "labels": dict(meta.get("labels") or {}),
        "ownerReferences": [owner_reference(canary)],
    }
    new["spec"]["scaleTargetRef"]["name"] = primary_name(canary.spec.targetRef.name)
    return new


def owner_reference(canary: Canary) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "name": canary.name,
        "controller": True,
        "blockOwnerDeletion": True,
    }


# -------------------------------------------------------------------------------------- services


def _target_port(canary: Canary) -> int | str:
    svc = canary.spec.service
    return svc.targetPort if svc.targetPort is not None else svc.port


def services(canary: Canary, target: dict[str, Any]) -> list[dict[str, Any]]:
    """The apex, primary and canary Services."""
    apex, primary, canary_svc = service_names(canary)
    key, value = selector_label(target)
    svc = canary.spec.service
    port = {
        "name": svc.portName or "http",
        "port": svc.port,
        "targetPort": _target_port(canary),
        "protocol": "TCP",
    }
    if svc.appProtocol:
        port["appProtocol"] = svc.appProtocol

    def make(name: str, selector_value: str, custom: dict[str, Any] | None) -> dict[str, Any]:
        # Flagger's reconcileService: the custom labels, then the selector label set to the Service's name.
        labels, annotations = custom_metadata(custom)
        labels[key] = name
        meta: dict[str, Any] = {"name": name, "namespace": canary.namespace, "labels": labels}
        if annotations:
            meta["annotations"] = annotations
        meta["ownerReferences"] = [owner_reference(canary)]
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "type": "ClusterIP",
                "selector": {key: selector_value},
                "ports": [dict(port)],
                **({"trafficDistribution": svc.trafficDistribution} if svc.trafficDistribution else {}),
            },
        }

    return [
        make(apex, primary_name(value), svc.apex),
        make(primary, primary_name(value), svc.primary),
        make(canary_svc, value, svc.canary),
    ]


def custom_metadata(custom: dict[str, Any] | None) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) of a Flagger CustomMetadata (``service.apex``/``primary``/``canary``), copied."""
    custom = custom or {}
    labels = {str(k): str(v) for k, v in (custom.get("labels") or {}).items()}
    annotations = {str(k): str(v) for k, v in (custom.get("annotations") or {}).items()}
    return labels, annotations


# ----------------------------------------------------------------------------------------- istio


def destination_rules(canary: Canary) -> list[dict[str, Any]]:
    _, primary, canary_svc = service_names(canary)
    out = []
    for host in (primary, canary_svc):
        spec: dict[str, Any] = {"host": host}
        if canary.spec.service.trafficPolicy:
            spec["trafficPolicy"] = copy.deepcopy(canary.spec.service.trafficPolicy)
        out.append(
            {
                "apiVersion": ISTIO_API,
                "kind": "DestinationRule",
                "metadata": {
                    "name": host,
                    "namespace": canary.namespace,
                    "ownerReferences": [owner_reference(canary)],
                },
                "spec": spec,
            }
        )
    return out


def _destination(canary: Canary, host: str, weight: int) -> dict[str, Any]:
    """Flagger's makeDestination: the port is set only with portDiscovery on a gateway-bound service."""
    svc = canary.spec.service
    dest: dict[str, Any] = {"host": host}
    if svc.portDiscovery and ((svc.gateways and svc.gateways[0] != "mesh") or svc.delegation):
        dest["port"] = {"number": svc.port}
    return {"destination": dest, "weight": weight}


def _match_dicts(matches: Iterable[Any]) -> list[dict[str, Any]]:
    return [m.model_dump(exclude_none=True, exclude_defaults=True) for m in matches]


def _merge_matches(
    analysis_matches: list[dict[str, Any]], service_matches: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Flagger's mergeMatchConditions: each analysis match combined with each service match, the analysis
    match's headers and sourceLabels replacing the service match's."""
    if not service_matches:
        return analysis_matches
    return combine_matches(analysis_matches, service_matches, ("headers", "sourceLabels"))


def combine_matches(
    analysis: list[dict[str, Any]], service: list[dict[str, Any]], keys: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The core of Flagger's mergeMatchConditions (Istio and Gateway API routers): each analysis match over each
    service match, the analysis match's ``keys`` replacing the service match's (copies, never the inputs)."""
    merged = []
    for am in analysis:
        for sm in service:
            m = copy.deepcopy(sm)
            for k in keys:
                if am.get(k):
                    m[k] = copy.deepcopy(am[k])
            merged.append(m)
    return merged


def _route_common(canary: Canary) -> dict[str, Any]:
    svc = canary.spec.service
    out: dict[str, Any] = {}
    for field in ("rewrite", "retries", "headers", "corsPolicy"):
        value = getattr(svc, field)
        if value:
            out[field] = copy.deepcopy(value)
    if svc.timeout:
        out["timeout"] = svc.timeout
    return out


STICKY_ROUTE = "session-affinity"


def session_cookie(canary: Canary, revision: str | None) -> str | None:
    """``<cookieName>=<value>`` of a release with ``analysis.sessionAffinity``: one value per revision (Flagger
    draws a random one per run and keeps it in the status; a value derived from the revision is as unique per
    release and survives a restart of the run without being persisted)."""
    sa = canary.spec.analysis.sessionAffinity
    if sa is None or not revision:
        return None
    value = hashlib.sha256(f"{canary.key}/{revision}".encode()).hexdigest()[:20]
    return f"{sa.cookieName}={value}"


def _set_cookie(cookie: str, max_age: int) -> dict[str, Any]:
    return {"response": {"add": {"Set-Cookie": f"{cookie}; Max-Age={max_age}"}}}


def _with_cookie(service_match: list[dict[str, Any]], cookie: str) -> list[dict[str, Any]]:
    """The service matches (or one empty match), each also requiring the cookie (Flagger's cookie match)."""
    out = []
    for m in service_match or [{}]:
        m = copy.deepcopy(m)
        m.setdefault("headers", {})["cookie"] = {"regex": f".*{cookie}.*"}
        out.append(m)
    return out


def virtual_service(
    canary: Canary, primary_weight: int, canary_weight: int, mirror: bool = False, *, revision: str | None = None
) -> dict[str, Any]:
    """The VirtualService for a traffic split.

    Weighted/blue-green: one route primary/canary with the weights (plus ``mirror`` to the canary when
    mirroring). A/B (``analysis.match``): a match route carrying the weights (the state machine sends
    0/100 while testing) followed by a default route to the primary only.
    """
    if primary_weight + canary_weight != 100 or min(primary_weight, canary_weight) < 0:
        raise RoutingError(f"weights must be within 0..100 and sum to 100, got {primary_weight}/{canary_weight}")
    apex, primary, canary_svc = service_names(canary)
    svc = canary.spec.service
    hosts = list(svc.hosts)
    if not any(h in (apex, "*") for h in hosts):
        hosts.append(apex)
    gateways = list(svc.gateways) or ["mesh"]
    service_match = _match_dicts(svc.match)
    common = _route_common(canary)

    http: list[dict[str, Any]] = []
    if is_tcp(canary):
        # Flagger's Istio router for a TCP service: one weighted tcp route, matched on the service.match ports
        # only; the HTTP route fields, A/B matches, mirroring and session affinity do not apply (support.py
        # refuses them by name for a TCP canary).
        tcp_route: dict[str, Any] = {}
        if svc.match:
            tcp_route["match"] = l4_matches(canary)
        tcp_route["route"] = [
            _destination(canary, primary, primary_weight),
            _destination(canary, canary_svc, canary_weight),
        ]
        return _virtual_service_object(canary, {"hosts": hosts, "gateways": gateways, "tcp": [tcp_route]})
    if canary.spec.analysis.match:
        route = {
            "match": _merge_matches(_match_dicts(canary.spec.analysis.match), service_match),
            **common,
            "route": [_destination(canary, primary, primary_weight), _destination(canary, canary_svc, canary_weight)],
        }
        http.append(route)
        # Flagger keeps the primary weight on the default route; a lone destination takes all traffic anyway.
        default = {
            **({"match": service_match} if service_match else {}),
            **common,
            "route": [_destination(canary, primary, primary_weight)],
        }
        http.append(default)
    elif canary.spec.analysis.sessionAffinity is not None and (cookie := session_cookie(canary, revision)):
        # Flagger's canary release with session affinity: while the canary has traffic, a response from it sets
        # the cookie and requests carrying it stay on the canary (primaryCookieName: the same for the primary);
        # once the release is over (weight 0) the primary's responses expire the cookie (Max-Age=-1).
        sa = canary.spec.analysis.sessionAffinity
        primary_dest = _destination(canary, primary, primary_weight)
        canary_dest = _destination(canary, canary_svc, canary_weight)
        if canary_weight > 0:
            http.append({
                "name": STICKY_ROUTE,
                "match": _with_cookie(service_match, cookie),
                **common,
                "route": [_destination(canary, primary, 0), _destination(canary, canary_svc, 100)],
            })  # fmt: skip
            canary_dest["headers"] = _set_cookie(cookie, sa.maxAge)
            if sa.primaryCookieName:
                pcookie = f"{sa.primaryCookieName}={cookie.partition('=')[2]}"
                http.append({
                    "name": f"{STICKY_ROUTE}-primary",
                    "match": _with_cookie(service_match, pcookie),
                    **common,
                    "route": [_destination(canary, primary, 100), _destination(canary, canary_svc, 0)],
                })  # fmt: skip
                primary_dest["headers"] = _set_cookie(pcookie, sa.maxAge)
        else:
            primary_dest["headers"] = _set_cookie(cookie, -1)
        http.append(
            {**({"match": service_match} if service_match else {}), **common, "route": [primary_dest, canary_dest]}
        )
    else:
        route = {
            **({"match": service_match} if service_match else {}),
            **common,
            "route": [_destination(canary, primary, primary_weight), _destination(canary, canary_svc, canary_weight)],
        }
        if mirror:
            route["mirror"] = {"host": canary_svc}
            if canary.spec.analysis.mirrorWeight > 0:
                route["mirrorPercentage"] = {"value": float(canary.spec.analysis.mirrorWeight)}
        http.append(route)

    return _virtual_service_object(canary, {"hosts": hosts, "gateways": gateways, "http": http})


def _virtual_service_object(canary: Canary, spec: dict[str, Any]) -> dict[str, Any]:
    # Flagger's Istio router gives the VirtualService the apex metadata (service.apex).
    vs_labels, vs_annotations = custom_metadata(canary.spec.service.apex)
    vs_meta: dict[str, Any] = {"name": service_names(canary)[0], "namespace": canary.namespace}
    if vs_labels:
        vs_meta["labels"] = vs_labels
    if vs_annotations:
        vs_meta["annotations"] = vs_annotations
    vs_meta["ownerReferences"] = [owner_reference(canary)]
    return {"apiVersion": ISTIO_API, "kind": "VirtualService", "metadata": vs_meta, "spec": spec}


def is_tcp(canary: Canary) -> bool:
    """A TCP service (``service.appProtocol: TCP``, any case): Flagger's Istio router writes ``tcp`` routes."""
    return (canary.spec.service.appProtocol or "").lower() == "tcp"


def l4_matches(canary: Canary) -> list[dict[str, Any]]:
    """Flagger's canaryToL4Match: one L4 match per ``service.match`` entry, keeping only its ``port``."""
    out = []
    for m in canary.spec.service.match:
        port = m.model_dump().get("port")
        out.append({"port": int(port)} if port else {})
    return out


def routes_of(canary: Canary, vs: dict[str, Any]) -> tuple[int, int, bool]:
    """(primary weight, canary weight, mirror) read back from a VirtualService made by ``virtual_service``."""
    _, primary, canary_svc = service_names(canary)
    if is_tcp(canary):
        # Flagger's GetRoutes for a TCP service: the tcp route that has the canary destination; never mirrored.
        for tcp in (vs.get("spec") or {}).get("tcp") or []:
            weights = {d["destination"]["host"]: int(d.get("weight", 0)) for d in tcp.get("route") or []}
            if canary_svc in weights:
                return weights.get(primary, 0), weights[canary_svc], False
        return 100, 0, False
    http = [h for h in (vs.get("spec") or {}).get("http") or [] if not str(h.get("name", "")).startswith(STICKY_ROUTE)]
    if not http:
        return 100, 0, False
    first = http[0]
    weights = {d["destination"]["host"]: int(d.get("weight", 0)) for d in first.get("route") or []}
    return weights.get(primary, 0), weights.get(canary_svc, 0), "mirror" in first


def bootstrap_objects(
    canary: Canary,
    target: dict[str, Any],
    *,
    hpa: dict[str, Any] | None = None,
    configs: Iterable[dict[str, Any]] = (),
    replicas: int | None = None,
) -> list[dict[str, Any]]:
    """Everything Flagger creates when it first sees a Canary, with all traffic on the primary.

    For gatewayapi the HTTPRoute comes first: a backend that refuses it (the local gateway, when no Gateway
    listener takes the route) refuses the canary before anything else is created."""
    configs = list(configs)
    objs: list[dict[str, Any]] = []
    if mesh_routed(canary) and _gatewayapi(canary):
        objs.append(route_object(canary, 100, 0, False))
    objs.extend(primary_configs(target, configs))
    objs.append(primary_deployment(canary, target, configs, replicas=replicas))
    if hpa is not None:
        objs.append(primary_hpa(canary, hpa))
    objs.extend(services(canary, target))
    if mesh_routed(canary) and not _gatewayapi(canary):  # Flagger's Gateway API router writes the HTTPRoute only
        objs.extend(destination_rules(canary))
        objs.append(route_object(canary, 100, 0, False))
    return objs


def _gatewayapi(canary: Canary) -> bool:
    from playground import routing_gatewayapi

    return routing_gatewayapi.is_gatewayapi(canary)


def route_key(canary: Canary) -> tuple[str, str, str, str]:
    """(apiVersion, kind, namespace, name) of the object carrying the canary's traffic split: the VirtualService
    (istio) or the HTTPRoute (gatewayapi:v1 / gatewayapi:v1beta1), both named after the apex Service."""
    apex = service_names(canary)[0]
    if _gatewayapi(canary):
        from playground import routing_gatewayapi

        return routing_gatewayapi.api_version(canary), routing_gatewayapi.KIND, canary.namespace, apex
    return ISTIO_API, "VirtualService", canary.namespace, apex


def route_object(
    canary: Canary, primary_weight: int, canary_weight: int, mirror: bool = False, *, revision: str | None = None
) -> dict[str, Any]:
    """The routing object of the canary's provider for a traffic split (see ``route_key``)."""
    if _gatewayapi(canary):
        from playground import routing_gatewayapi

        return routing_gatewayapi.http_route(canary, primary_weight, canary_weight, revision=revision)
    return virtual_service(canary, primary_weight, canary_weight, mirror, revision=revision)


def routes_in(canary: Canary, obj: dict[str, Any]) -> tuple[int, int, bool]:
    """(primary weight, canary weight, mirror) read back from the object named by ``route_key``."""
    if _gatewayapi(canary):
        from playground import routing_gatewayapi

        return routing_gatewayapi.routes_of(canary, obj)
    return routes_of(canary, obj)


def mesh_routed(canary: Canary) -> bool:
    """Whether traffic is split by mesh routes (istio: DestinationRules and a VirtualService). The kubernetes
    provider has none: as Flagger's KubernetesDefaultRouter, the apex Service always selects the primary pods,
    the new version is reached through ``<svc>-canary`` during a blue/green analysis, and a promotion swaps what
    the primary runs."""
    return (canary.spec.provider or "istio") != "kubernetes"
