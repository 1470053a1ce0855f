"""Validation: :func:`validate` / :func:`validate_set` return every :class:`~playground.manifests.findings.Finding`
of a manifest tree: load problems, canary semantics (durations, weights, strategy vs provider, metric
thresholds, webhooks, duplicate names), references (MetricTemplates, AlertProviders, target Deployments, HPAs,
Gateways, image policies) and policy (alert addresses never live in git, readiness probes). The grammars are
the runtime's own (durations, semver ranges, template variables). Pure apart from reading the tree.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from playground import support, yamlload
from playground.checks import default_threshold_rule
from playground.durations import PROMETHEUS_DURATION_HINT, parse_duration, parse_prometheus_duration
from playground.hooks import hook_timeout
from playground.manifests.findings import ERROR, WARNING, FieldPath, Finding
from playground.manifests.loading import load_tree
from playground.manifests.objects import ManifestObject, ManifestSet
from playground.metrics import template_problems, template_variables
from playground.models import (
    AlertProvider,
    Canary,
    Deployment,
    HorizontalPodAutoscaler,
    MetricTemplate,
)
from playground.versions import SemverRange

#: Metrics Flagger computes without a MetricTemplate (success rate in %, p99 in ms; the queries depend on the
#: provider: playground.metrics.builtin_query).
BUILTIN_METRICS = ("request-success-rate", "request-duration")


#: Values of ``spec.provider`` accepted by Flagger v1.44's Canary CRD.
PROVIDERS = support.ALL_PROVIDERS


#: Providers that can route by HTTP headers and cookies (Flagger docs, deployment strategies, v1.44).
AB_TESTING_PROVIDERS = (
    "istio",
    "appmesh",
    "appmesh:v1beta2",
    "nginx",
    "contour",
    "gloo",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
)


#: Providers that can mirror traffic ("Traffic shadowing, compatible with Istio only").
MIRROR_PROVIDERS = ("istio",)


#: Provider assumed when a Canary has no ``spec.provider``: this playground's mesh.
DEFAULT_PROVIDER = support.DEFAULT_PROVIDER


#: Namespaces every cluster has: objects may live there without a Namespace manifest.
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


_IMAGEPOLICY_MARKER = re.compile(r"""#\s*\{\s*"\$imagepolicy"\s*:\s*"([^"]*)"\s*\}""")


_SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")  # Flagger's default -selector-labels


def validate(path: str | os.PathLike[str]) -> list[Finding]:
    """Load the manifests under ``path`` and return every problem found, errors and warnings, sorted by file
    and line. Raises ``FileNotFoundError`` if ``path`` does not exist."""
    return validate_set(load_tree(path))


def validate_set(mset: ManifestSet) -> list[Finding]:
    """All findings for an already loaded :class:`ManifestSet` (load problems included)."""
    out = list(mset.problems)
    out.extend(_check_duplicates(mset))
    checks = {
        "Canary": _check_canary,
        "MetricTemplate": _check_template,
        "AlertProvider": _check_alert_provider,
        "HorizontalPodAutoscaler": _check_hpa,
        "ImagePolicy": _check_image_policy,
        "Secret": _check_secret,
    }
    canary_targets: dict[tuple[str | None, str], ManifestObject] = {}
    undefined_ns: set[str] = set()
    for obj in mset.objects:
        check = checks.get(obj.kind)
        if check is not None:
            try:
                out.extend(check(obj, mset))
            except Exception as e:  # a rule that did not expect this content: one finding, never a traceback
                out.append(
                    obj.finding(
                        (),
                        f"cannot check this object ({type(e).__name__}: {e})",
                        "look for a field of an unexpected type here, and report this as a bug of playground",
                    )
                )
        if obj.kind == "Canary" and obj.group == "flagger.app" and obj.name:
            out.extend(_check_support(obj))
        if obj.kind == "Canary" and isinstance(obj.model, Canary):
            tkey = (obj.namespace, obj.model.spec.targetRef.name)
            if tkey in canary_targets:
                other = canary_targets[tkey]
                out.append(
                    obj.finding(
                        ("spec", "targetRef", "name"),
                        f"Deployment {tkey[0]}/{tkey[1]} is already the target of Canary "
                        f"{other.qualified_name} ({other.location})",
                        "one Canary per Deployment: remove one of them",
                    )
                )
            canary_targets.setdefault(tkey, obj)
        ns = obj.namespace
        if ns and ns not in BUILTIN_NAMESPACES and ns not in undefined_ns and mset.get("Namespace", None, ns) is None:
            undefined_ns.add(ns)  # reported once, on its first object
            out.append(
                obj.finding(
                    ("metadata", "namespace"),
                    f"namespace {obj.namespace} is not defined in the manifests",
                    f"add a Namespace manifest named {obj.namespace}",
                    WARNING,
                )
            )
    out.extend(_check_image_markers(mset))
    out.sort(key=Finding.sort_key)
    return list(dict.fromkeys(out))  # a finding repeated (same place, same words) is reported once


def _check_support(obj: ManifestObject) -> list[Finding]:
    """Fields Flagger's CRD requires that are missing, and every field the playground does not implement
    (:mod:`playground.support`), each by name with what to do."""
    return [
        obj.finding(g.path, g.message, g.fix, WARNING if g.severity == "warning" else ERROR)
        for g in support.required_gaps(obj.raw) + support.unsupported(obj.raw)
    ]


def _check_duplicates(mset: ManifestSet) -> list[Finding]:
    first: dict[tuple, ManifestObject] = {}
    out = []
    for obj in mset.objects:
        if not obj.kind or not obj.name:
            continue
        if obj.key in first:
            other = first[obj.key]
            out.append(
                obj.finding(
                    ("metadata", "name"),
                    f"duplicate object: {obj.kind} {obj.qualified_name} is already defined at {other.location}",
                    "rename or remove one of them",
                )
            )
        else:
            first[obj.key] = obj
    return out


def _check_duration(obj: ManifestObject, path: FieldPath, value: str | None, out: list[Finding]) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        out.append(obj.finding(path, f"invalid duration {value!r}", "use a number with a unit, like 30s, 1m or 1m30s"))
        return None


def _check_metric_interval(obj: ManifestObject, path: FieldPath, value: str | None, out: list[Finding]) -> None:
    """A metric's ``interval`` is substituted into PromQL (``[{{ interval }}]``): Prometheus's duration grammar,
    the parser the runtime uses (``metrics.resolve_query``), not Go's (``1.5m`` is a Go duration only)."""
    if value is None:
        return
    try:
        parse_prometheus_duration(value)
    except ValueError as e:
        out.append(obj.finding(path, str(e), PROMETHEUS_DURATION_HINT))


def _suggest(wanted: str, available: Iterable[str], what: str) -> str:
    """Fix text naming the closest available choices (or all of them when none is close)."""
    avail = sorted(set(available))
    if not avail:
        return f"add the {what} {wanted} to the manifests"
    close = difflib.get_close_matches(wanted, avail, n=5, cutoff=0.6)
    return "use one of " + ", ".join(close or avail)


def _duplicate_names(obj: ManifestObject, items: list[Any], base: FieldPath, what: str) -> list[Finding]:
    counts = Counter(i.name for i in items)
    out, seen = [], set()
    for i, item in enumerate(items):
        if counts[item.name] > 1:
            if item.name in seen:
                out.append(
                    obj.finding(
                        base + (i, "name"), f"duplicate {what} name {item.name!r}", f"give each {what} a unique name"
                    )
                )
            seen.add(item.name)
    return out


def _check_canary(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    c = obj.model
    if not isinstance(c, Canary):
        return []
    out: list[Finding] = []
    spec, a = c.spec, c.spec.analysis
    A: FieldPath = ("spec", "analysis")
    provider = spec.provider or DEFAULT_PROVIDER
    if spec.provider is not None and spec.provider not in PROVIDERS:
        out.append(
            obj.finding(
                ("spec", "provider"),
                f"unknown provider {spec.provider!r}",
                _suggest(spec.provider, PROVIDERS, "provider"),
            )
        )

    # -- durations and ranges
    _check_duration(obj, A + ("interval",), a.interval, out)
    _check_duration(obj, ("spec", "service", "timeout"), spec.service.timeout, out)
    if spec.progressDeadlineSeconds <= 0:
        out.append(
            obj.finding(
                ("spec", "progressDeadlineSeconds"),
                "must be a positive number of seconds",
                "set it to how long a new version may take to become ready, like 60",
            )
        )
    for fname in ("maxWeight", "stepWeight", "stepWeightPromotion", "mirrorWeight"):
        v = getattr(a, fname)
        if not 0 <= v <= 100:
            out.append(obj.finding(A + (fname,), f"{v} is outside 0..100", f"set {fname} to a percentage (1..100)"))
    for fname in ("primaryReadyThreshold", "canaryReadyThreshold"):
        v = getattr(a, fname)
        if v is not None and not 0 < v <= 100:
            out.append(obj.finding(A + (fname,), f"{v} is outside 1..100", f"set {fname} to a percentage (1..100)"))
    if a.iterations < 0:
        out.append(obj.finding(A + ("iterations",), "must not be negative", "set iterations to 1 or more"))
    if a.threshold < 0:
        out.append(
            obj.finding(
                A + ("threshold",),
                "must not be negative",
                "set threshold to the number of failed checks that triggers a rollback, like 5",
            )
        )

    # -- strategy
    if a.match and a.iterations > 0:
        strategy = "A/B testing"
        if provider not in AB_TESTING_PROVIDERS:
            out.append(
                obj.finding(
                    A + ("match",),
                    f"provider {provider} cannot route by HTTP headers or cookies, "
                    "so A/B testing (match with iterations) is not possible",
                    "use a provider that supports HTTP matching ("
                    f"{', '.join(p for p in AB_TESTING_PROVIDERS if p in support.SUPPORTED_PROVIDERS)} here), "
                    "or remove match for a blue/green deployment",
                )
            )
    elif a.iterations > 0:
        strategy = "blue/green"
    else:
        strategy = "canary"
        if a.match:
            out.append(
                obj.finding(
                    A + ("match",),
                    "match has no effect without iterations",
                    "set analysis.iterations for A/B testing, or remove match",
                    WARNING,
                )
            )
        if provider == "kubernetes":
            out.append(
                obj.finding(
                    A,
                    "the kubernetes provider cannot shift traffic gradually: it only supports blue/green",
                    "set analysis.iterations (and no stepWeight/stepWeights), or use a mesh provider such as istio",
                )
            )
        elif a.stepWeight == 0 and not a.stepWeights:
            out.append(
                obj.finding(
                    A,
                    "a weighted canary needs stepWeight or stepWeights (both are empty and iterations is not set)",
                    "set stepWeight (e.g. 10) and maxWeight (e.g. 50), or stepWeights, or iterations for blue/green",
                )
            )
    if strategy != "canary" and (a.stepWeight or a.stepWeights or a.maxWeight):
        which = [n for n in ("stepWeight", "stepWeights", "maxWeight") if getattr(a, n)]
        out.append(
            obj.finding(
                A + (which[0],),
                f"{', '.join(which)} ignored: with iterations this canary is {strategy}",
                f"remove {', '.join(which)}, or remove iterations for a weighted canary",
                WARNING,
            )
        )
    if a.stepWeights:
        prev = 0
        for i, w in enumerate(a.stepWeights):
            if not 1 <= w <= 100:
                out.append(
                    obj.finding(
                        A + ("stepWeights", i),
                        f"step weight {w} is outside 1..100",
                        "use percentages between 1 and 100",
                    )
                )
            elif w <= prev:
                out.append(
                    obj.finding(
                        A + ("stepWeights", i),
                        f"step weights must increase: {w} follows {prev}",
                        "list the weights in increasing order, like [5, 10, 20, 50]",
                    )
                )
            prev = max(prev, w)
        if a.stepWeight and strategy == "canary":
            out.append(
                obj.finding(
                    A + ("stepWeight",), "stepWeight is ignored when stepWeights is set", "remove stepWeight", WARNING
                )
            )
    if a.mirror and provider not in MIRROR_PROVIDERS and provider not in support.GATEWAYAPI_PROVIDERS:
        out.append(
            obj.finding(
                A + ("mirror",),
                f"provider {provider} cannot mirror traffic",
                "use the istio provider or set mirror: false",
            )
        )
    if a.mirror and strategy == "A/B testing":
        out.append(
            obj.finding(
                A + ("mirror",),
                "mirroring is not supported with A/B testing",
                "remove mirror, or remove match for blue/green with mirroring",
            )
        )

    # -- metrics
    out.extend(_duplicate_names(obj, a.metrics, A + ("metrics",), "metric"))
    tkeys = {f"{ns}/{n}" for ns, n in _all_named(mset, "MetricTemplate")}
    for i, m in enumerate(a.metrics):
        M = A + ("metrics", i)
        _check_metric_interval(obj, M + ("interval",), m.interval, out)
        r = m.thresholdRange
        if r is not None and r.min is not None and r.max is not None and r.min > r.max:
            out.append(
                obj.finding(
                    M + ("thresholdRange",),
                    f"min {r.min:g} is greater than max {r.max:g}: every value fails",
                    "swap min and max",
                )
            )
        if m.templateRef is not None:
            ns = m.templateRef.namespace or c.namespace
            key = f"{ns}/{m.templateRef.name}"
            if key not in tkeys:
                out.append(
                    obj.finding(
                        M + ("templateRef",), f"MetricTemplate {key} not found", _suggest(key, tkeys, "MetricTemplate")
                    )
                )
            else:
                t = mset.template(ns, m.templateRef.name)
                if t is not None:
                    missing = sorted(v for v in template_variables(t.spec.query) if v not in m.templateVariables)
                    if missing:
                        out.append(
                            obj.finding(
                                M + ("templateVariables",),
                                f"MetricTemplate {key} uses "
                                f"{', '.join('variables.' + v for v in missing)}, not set here",
                                f"add templateVariables: {{{', '.join(f'{v}: ...' for v in missing)}}}",
                            )
                        )
        elif m.query:
            pass  # inline PromQL query: Flagger's legacy form
        elif m.name not in BUILTIN_METRICS:
            same = [k for k in tkeys if k.endswith("/" + m.name)]
            fix = (
                f"add templateRef: {{name: {m.name}, namespace: {same[0].split('/')[0]}}}"
                if same
                else f"use a built-in metric ({', '.join(BUILTIN_METRICS)}), or add a templateRef or a query"
            )
            out.append(
                obj.finding(M, f"metric {m.name!r} has no templateRef or query and is not a built-in metric", fix)
            )
        if r is None and m.threshold is None:
            out.append(
                obj.finding(
                    M,
                    f"no thresholdRange: {default_threshold_rule(m)}",
                    "add thresholdRange with min and/or max to set the bounds this metric must stay within",
                    WARNING,
                )
            )

    # -- webhooks
    out.extend(_duplicate_names(obj, a.webhooks, A + ("webhooks",), "webhook"))
    for i, h in enumerate(a.webhooks):
        W = A + ("webhooks", i)
        if _check_duration(obj, W + ("timeout",), h.timeout, out) is not None:
            try:
                hook_timeout(h)  # the runtime's rule on top of the duration grammar: greater than zero
            except ValueError as e:
                out.append(obj.finding(W + ("timeout",), str(e), "set a timeout greater than zero, like 10s"))
        if not re.match(r"^https?://[^/\s]+", h.url):
            out.append(
                obj.finding(
                    W + ("url",),
                    f"invalid URL {h.url!r}",
                    "use an http:// or https:// URL, like http://flagger-loadtester.prod/",
                )
            )
        else:
            absent = _missing_service(h.url, mset)
            if absent:
                out.append(
                    obj.finding(
                        W + ("url",),
                        f"Service {absent} is not in the manifests",
                        "check the host name, or add the Service",
                        WARNING,
                    )
                )
        if h.retries < 0:
            out.append(obj.finding(W + ("retries",), "must not be negative", "set retries to 0 or more"))

    # -- alerts
    out.extend(_duplicate_names(obj, a.alerts, A + ("alerts",), "alert"))
    pkeys = {f"{ns}/{n}" for ns, n in _all_named(mset, "AlertProvider")}
    for i, al in enumerate(a.alerts):
        key = f"{al.providerRef.namespace or c.namespace}/{al.providerRef.name}"
        if key not in pkeys:
            out.append(
                obj.finding(
                    A + ("alerts", i, "providerRef"),
                    f"AlertProvider {key} not found",
                    _suggest(key, pkeys, "AlertProvider"),
                )
            )

    # -- target, autoscaler, gateways
    out.extend(_check_target(obj, c, mset))
    if spec.autoscalerRef is not None:
        ref = spec.autoscalerRef
        hobj = mset.get("HorizontalPodAutoscaler", c.namespace, ref.name)
        if ref.kind not in (None, "HorizontalPodAutoscaler"):
            pass  # reported by _check_support
        elif hobj is None:
            names = [f"{o.namespace}/{o.name}" for o in mset.of_kind("HorizontalPodAutoscaler", c.namespace)]
            out.append(
                obj.finding(
                    ("spec", "autoscalerRef"),
                    f"HorizontalPodAutoscaler {c.namespace}/{ref.name} not found",
                    _suggest(f"{c.namespace}/{ref.name}", names, "HorizontalPodAutoscaler")
                    if names
                    else "add the HPA to the manifests or remove autoscalerRef",
                )
            )
        elif (
            isinstance(hobj.model, HorizontalPodAutoscaler)
            and hobj.model.spec.scaleTargetRef.name != spec.targetRef.name
        ):
            out.append(
                obj.finding(
                    ("spec", "autoscalerRef"),
                    f"HorizontalPodAutoscaler {hobj.qualified_name} scales "
                    f"{hobj.model.spec.scaleTargetRef.name}, not the canary target "
                    f"{spec.targetRef.name}",
                    f"set the HPA's scaleTargetRef.name to {spec.targetRef.name}",
                )
            )
    for i, gw in enumerate(spec.service.gateways):
        if gw == "mesh":
            continue
        gname, gns = _gateway_ref(gw, c.namespace)
        if mset.get("Gateway", gns, gname) is None:
            gws = [o.qualified_name for o in mset.of_kind("Gateway")]
            out.append(
                obj.finding(
                    ("spec", "service", "gateways", i),
                    f"Gateway {gns}/{gname} is not in the manifests",
                    _suggest(f"{gns}/{gname}", gws, "Gateway")
                    if gws
                    else "add the Gateway to the manifests, or check the name",
                    WARNING,
                )
            )
    if spec.provider in support.GATEWAYAPI_PROVIDERS:
        for i, gref in enumerate(spec.service.gatewayRefs):
            if not isinstance(gref, dict) or not gref.get("name"):
                continue
            gns, gname = str(gref.get("namespace") or c.namespace), str(gref["name"])
            found = mset.get("Gateway", gns, gname)
            if found is None or found.group != "gateway.networking.k8s.io":
                gws = [o.qualified_name for o in mset.of_kind("Gateway") if o.group == "gateway.networking.k8s.io"]
                out.append(
                    obj.finding(
                        ("spec", "service", "gatewayRefs", i),
                        f"Gateway {gns}/{gname} (gateway.networking.k8s.io) is not in the manifests: the HTTPRoute "
                        "would attach to nothing, and the local playground refuses the release",
                        _suggest(f"{gns}/{gname}", gws, "Gateway")
                        if gws
                        else "add the Gateway (gateway.networking.k8s.io/v1, an HTTP listener) to the manifests, "
                        "or check the name",
                        WARNING,
                    )
                )
    return out


def _all_named(mset: ManifestSet, kind: str) -> set[tuple[str, str]]:
    """(namespace, name) of every object of ``kind``, valid or not (so a schema error is not reported twice
    as a dangling reference too)."""
    return {(o.namespace or "default", o.name) for o in mset.of_kind(kind) if o.name}


def _missing_service(url: str, mset: ManifestSet) -> str | None:
    """``ns/name`` if ``url`` addresses an in-cluster Service (``name.ns[.svc.cluster.local]``) of a namespace
    defined in the manifests, but neither the manifests nor a Canary (``name``, ``name-primary``,
    ``name-canary``) provide that Service; else ``None``."""
    host = re.sub(r"^https?://", "", url).split("/")[0].split(":")[0]
    parts = host.split(".")
    if len(parts) == 2 or (len(parts) == 5 and parts[2:] == ["svc", "cluster", "local"]):
        name, ns = parts[0], parts[1]
    else:
        return None
    if mset.get("Namespace", None, ns) is None or mset.get("Service", ns, name) is not None:
        return None
    for c in mset.canaries():
        base = c.spec.service.name or c.spec.targetRef.name
        if c.namespace == ns and name in (base, f"{base}-primary", f"{base}-canary"):
            return None
    return f"{ns}/{name}"


def _gateway_ref(ref: str, default_ns: str) -> tuple[str, str]:
    """Istio gateway reference (``name``, ``ns/name`` or ``name.ns.svc.cluster.local``) -> (name, namespace)."""
    if "/" in ref:
        ns, _, name = ref.partition("/")
        return name, ns
    parts = ref.split(".")
    if len(parts) >= 2:
        return parts[0], parts[1]
    return ref, default_ns


def _check_target(obj: ManifestObject, c: Canary, mset: ManifestSet) -> list[Finding]:
    out: list[Finding] = []
    ref = c.spec.targetRef
    if ref.kind not in (None, "Deployment"):
        return []  # reported by _check_support
    dobj = mset.get("Deployment", c.namespace, ref.name)
    if dobj is None:
        names = [o.qualified_name for o in mset.of_kind("Deployment", c.namespace)]
        return [
            obj.finding(
                ("spec", "targetRef", "name"),
                f"Deployment {c.namespace}/{ref.name} not found",
                _suggest(f"{c.namespace}/{ref.name}", names, "Deployment")
                if names
                else f"add the Deployment {ref.name} in namespace {c.namespace} to the manifests",
            )
        ]
    d = dobj.model
    if not isinstance(d, Deployment):
        return out  # its schema errors are already reported
    labels = (d.spec.selector or {}).get("matchLabels") or {}
    if not any(k in labels for k in _SELECTOR_LABELS):
        out.append(
            dobj.finding(
                ("spec", "selector"),
                f"the target of Canary {c.key} needs a selector label "
                f"{', '.join(_SELECTOR_LABELS[:-1])} or {_SELECTOR_LABELS[-1]}",
                f"add spec.selector.matchLabels.app: {ref.name} (and the same pod label)",
            )
        )
    containers = d.spec.template.spec.containers
    if containers and not any(ct.readinessProbe for ct in containers):
        C = ("spec", "template", "spec", "containers", 0)
        out.append(
            dobj.finding(
                C,
                f"no readinessProbe on the target of Canary {c.key}: a new version counts as "
                "ready as soon as it starts",
                "add a readinessProbe (podinfo: httpGet path /readyz on its http port)",
                WARNING,
            )
        )
    ports = {p.get("containerPort") for ct in containers for p in ct.ports} | {
        p.get("name") for ct in containers for p in ct.ports
    }
    tp = c.spec.service.targetPort if c.spec.service.targetPort is not None else c.spec.service.port
    if any(ct.ports for ct in containers) and tp not in ports:
        field_ = "targetPort" if c.spec.service.targetPort is not None else "port"
        out.append(
            obj.finding(
                ("spec", "service", field_),
                f"port {tp} is not a container port of Deployment {dobj.qualified_name}",
                "set service.targetPort to the container port the app listens on",
                WARNING,
            )
        )
    return out


def _check_template(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    t = obj.model
    if not isinstance(t, MetricTemplate):
        return []
    out = []
    if t.spec.provider.type != "prometheus":
        out.append(
            obj.finding(
                ("spec", "provider", "type"),
                f"provider type {t.spec.provider.type!r} is not supported by the playground",
                "use type: prometheus",
            )
        )
    addr = t.spec.provider.address
    if addr is not None and not re.match(r"^https?://[^/\s]+", addr):
        out.append(
            obj.finding(
                ("spec", "provider", "address"),
                f"invalid address {addr!r}",
                "use an http:// or https:// URL, like http://prometheus.istio-system:9090",
            )
        )
    if not t.spec.query.strip():
        out.append(obj.finding(("spec", "query"), "empty query", "write the PromQL query of this metric"))
    # the runtime's renderer decides (playground.metrics): what it would refuse is reported, nothing else
    for problem in template_problems(t.spec.query):
        out.append(obj.finding(("spec", "query"), problem.problem, problem.fix))
    return out


def _check_alert_provider(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    p = obj.model
    if not isinstance(p, AlertProvider):
        return []
    s = p.spec
    if s.address:
        return [
            obj.finding(
                ("spec", "address"),
                "inline alert address: webhook URLs are credentials and must not be stored in git",
                "remove address; put the URL in a Secret (key address) referenced "
                "by secretRef, or name an environment variable holding it with addressFromEnv",
            )
        ]
    if s.secretRef is None and not s.addressFromEnv:
        return [
            obj.finding(
                ("spec",),
                "no address: set secretRef or addressFromEnv",
                "add secretRef (a Secret with key address) or addressFromEnv (an environment variable)",
            )
        ]
    if s.addressFromEnv and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", s.addressFromEnv):
        return [
            obj.finding(
                ("spec", "addressFromEnv"),
                f"invalid environment variable name {s.addressFromEnv!r}",
                "use letters, digits and '_', like PLAYGROUND_ALERT_WEBHOOK_URL",
            )
        ]
    return []


def _check_secret(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    """Secrets never live in git: a Secret's data is only base64-encoded, readable by anyone with the repository
    (a webhook URL in it lets anyone post to the on-call channel)."""
    if obj.group != "":
        return []  # another API group's Secret kind (an external or sealed secret is encrypted or a reference)
    keys: list[tuple[str, str, str]] = []  # (field, key, value)
    for fname in ("data", "stringData"):
        values = obj.raw.get(fname)
        if isinstance(values, dict):
            for key, value in values.items():
                text = str(value)
                if fname == "data":
                    try:
                        text = base64.b64decode(text, validate=True).decode("utf-8", "replace")
                    except (binascii.Error, ValueError):
                        pass
                keys.append((fname, str(key), text))
    if not keys:
        return []
    urls = [(f, k) for f, k, v in keys if re.match(r"^\s*https?://", v)]
    fname, key = urls[0] if urls else keys[0][:2]
    what = f"key {key!r} holds a URL (a webhook address is a credential)" if urls else f"key {key!r} holds a secret"
    return [
        obj.finding(
            (fname, key),
            f"Secret committed to git: {what}, and a Secret's data is only base64-encoded, readable by anyone "
            "with the repository",
            "remove it from the manifests and create it in the cluster (kubectl create secret generic "
            f"{obj.name} --from-literal={key}=...) or use an external/sealed secret; an AlertProvider can also "
            "read its address from the environment with addressFromEnv",
        )
    ]


def _check_hpa(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    h = obj.model
    if not isinstance(h, HorizontalPodAutoscaler):
        return []
    out = []
    ref = h.spec.scaleTargetRef
    if ref.kind in (None, "Deployment") and mset.get("Deployment", obj.namespace, ref.name) is None:
        names = [o.qualified_name for o in mset.of_kind("Deployment", obj.namespace)]
        out.append(
            obj.finding(
                ("spec", "scaleTargetRef", "name"),
                f"Deployment {obj.namespace}/{ref.name} not found",
                _suggest(f"{obj.namespace}/{ref.name}", names, "Deployment"),
            )
        )
    if h.spec.minReplicas > h.spec.maxReplicas:
        out.append(
            obj.finding(
                ("spec", "minReplicas"),
                f"minReplicas {h.spec.minReplicas} is greater than maxReplicas {h.spec.maxReplicas}",
                "make minReplicas <= maxReplicas",
            )
        )
    elif h.spec.minReplicas < 1:
        out.append(obj.finding(("spec", "minReplicas"), "must be at least 1", "set minReplicas to 1 or more"))
    return out


def _check_image_policy(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    """Flux ImagePolicy (raw): it must name an ImageRepository of the manifests and have a policy."""
    spec = obj.raw.get("spec")
    if not isinstance(spec, dict):
        return [obj.finding(("spec",), "missing spec", "add spec.imageRepositoryRef and spec.policy")]
    out = []
    ref = spec.get("imageRepositoryRef")
    rname = ref.get("name") if isinstance(ref, dict) else None
    if not rname:
        out.append(
            obj.finding(
                ("spec", "imageRepositoryRef"),
                "missing imageRepositoryRef.name",
                "name the ImageRepository that scans this image",
            )
        )
    else:
        assert isinstance(ref, dict)  # rname came from it
        rns = ref.get("namespace") or obj.namespace
        if mset.get("ImageRepository", rns, rname) is None:
            names = [o.qualified_name for o in mset.of_kind("ImageRepository")]
            out.append(
                obj.finding(
                    ("spec", "imageRepositoryRef"),
                    f"ImageRepository {rns}/{rname} not found",
                    _suggest(f"{rns}/{rname}", names, "ImageRepository"),
                )
            )
    policy = spec.get("policy")
    if not isinstance(policy, dict) or not policy:
        out.append(obj.finding(("spec", "policy"), "missing policy", 'add policy.semver.range, like ">=6.0.0 <7.0.0"'))
    elif "semver" in policy:
        rng = (policy.get("semver") or {}).get("range") if isinstance(policy.get("semver"), dict) else None
        if not rng or not _valid_semver_range(str(rng)):
            out.append(
                obj.finding(
                    ("spec", "policy", "semver", "range"),
                    f"invalid semver range {rng!r}",
                    'use comparisons like ">=6.0.0 <7.0.0", "~6.1" or "6.x"',
                )
            )
    return out


def _valid_semver_range(rng: str) -> bool:
    """Whether the image automation accepts the range (the same Masterminds parser, playground.versions)."""
    try:
        SemverRange(rng)
    except ValueError:
        return False
    return True


def _check_image_markers(mset: ManifestSet) -> list[Finding]:
    """Every ``# {"$imagepolicy": "ns:name"}`` marker must name an ImagePolicy of the manifests."""
    out = []
    root = Path(mset.root)
    policies = {(o.namespace, o.name) for o in mset.of_kind("ImagePolicy")}
    by_file: dict[str, list[ManifestObject]] = {}
    for o in mset.objects:
        by_file.setdefault(o.file, []).append(o)
    for rel, objs in by_file.items():
        full = root if not root.is_dir() else root / rel
        try:
            text = yamlload.read_text(full, root=root if root.is_dir() else None)
        except yamlload.Refused:
            continue
        if "$imagepolicy" not in text:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            m = _IMAGEPOLICY_MARKER.search(line)
            if not m:
                continue
            owner = max((o for o in objs if o.line <= lineno), key=lambda o: o.line, default=objs[0])
            parts = m.group(1).split(":")
            if len(parts) not in (2, 3) or not all(parts[:2]):
                out.append(
                    Finding(
                        owner.path,
                        lineno,
                        f"invalid image policy marker {m.group(1)!r}",
                        'write it as # {"$imagepolicy": "NAMESPACE:NAME"}',
                        owner.kind,
                        owner.qualified_name,
                        document=owner.document,
                    )
                )
            elif (parts[0], parts[1]) not in policies:
                names = [f"{ns}:{n}" for ns, n in policies]
                fix = (
                    _suggest(m.group(1), names, "ImagePolicy")
                    if names
                    else f"add an ImagePolicy named "
                    f"{parts[1]} in namespace {parts[0]} (image.toolkit.fluxcd.io/v1beta2), or remove the marker"
                )
                out.append(
                    Finding(
                        owner.path,
                        lineno,
                        f"image policy marker names ImagePolicy {parts[0]}/{parts[1]}, which is not in the manifests",
                        fix,
                        owner.kind,
                        owner.qualified_name,
                        document=owner.document,
                    )
                )
    return out
