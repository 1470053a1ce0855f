"""N light canary targets for scale tests and bench/scale.py, and one commit that releases them all.

``write_manifests(dir, n, interval)`` writes a GitOps tree: the project's ``manifests/istio`` and
``manifests/metrics``, a ``scale`` namespace with two MetricTemplates, and N targets ``scale/app-XX``: podinfo,
1 replica, a weighted canary of 5 steps (stepWeight 10 up to 50) checking two Prometheus metrics every tick
(the canary replica is scraped; its scrape duration), no webhooks and no load test, so that what is measured
is the orchestration, not traffic. ``commit_new_image`` changes the image of all of them in ONE commit.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PODINFO = "ghcr.io/stefanprodan/podinfo"
OLD, NEW = "6.7.0", "6.7.1"
NS = "scale"

NAMESPACE = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {NS}
  labels:
    istio-injection: enabled
"""

METRICS = f"""\
# The canary replica is scraped by Prometheus (1 when it is up).
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: scraped
  namespace: {NS}
spec:
  provider:
    type: prometheus
    address: http://prometheus.istio-system:9090
  query: sum(up{{namespace="{{{{ namespace }}}}", workload="{{{{ target }}}}"}})
---
# How long Prometheus takes to scrape the canary (milliseconds).
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: scrape-ms
  namespace: {NS}
spec:
  provider:
    type: prometheus
    address: http://prometheus.istio-system:9090
  query: 1000 * max(scrape_duration_seconds{{namespace="{{{{ namespace }}}}", workload="{{{{ target }}}}"}})
"""


def deployment(name: str) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {NS}
  labels:
    app: {name}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "9898"
      labels:
        app: {name}
    spec:
      containers:
        - name: {name}
          image: {PODINFO}:{OLD}
          ports:
            - name: http
              containerPort: 9898
          command: ["./podinfo", "--port=9898", "--level=warn"]
          readinessProbe:
            httpGet:
              path: /readyz
              port: 9898
            periodSeconds: 2
"""


def canary(name: str, interval: str) -> str:
    return f"""\
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: {name}
  namespace: {NS}
spec:
  provider: istio
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {name}
  progressDeadlineSeconds: 120
  service:
    port: 9898
    targetPort: 9898
  analysis:
    interval: {interval}
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
      - name: scraped
        templateRef:
          name: scraped
          namespace: {NS}
        thresholdRange:
          min: 1
      - name: scrape-ms
        templateRef:
          name: scrape-ms
          namespace: {NS}
        thresholdRange:
          max: 1000
"""


def write_manifests(root: Path, n: int, interval: str) -> list[str]:
    """Write the tree into ``root`` (created); return the targets' keys."""
    for sub in ("istio", "metrics"):
        shutil.copytree(REPO / "manifests" / sub, root / sub)
    d = root / NS
    d.mkdir()
    (d / "namespace.yaml").write_text(NAMESPACE)
    (d / "metrics.yaml").write_text(METRICS)
    names = [f"app-{i:02d}" for i in range(n)]
    for name in names:
        (d / name).mkdir()
        (d / name / "deployment.yaml").write_text(deployment(name))
        (d / name / "canary.yaml").write_text(canary(name, interval))
    return [f"{NS}/{name}" for name in names]


def commit_new_image(home: Path, targets: list[str], work: Path) -> str:
    """One commit to the playground's origin moving every target from podinfo OLD to NEW; return its sha."""
    origin = Path(home) / "git" / "gitops.git"
    clone = Path(work) / "clone"
    git = ["git", "-c", "user.name=scale", "-c", "user.email=scale@localhost"]
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    for t in targets:
        ns, name = t.split("/")
        p = clone / ns / name / "deployment.yaml"
        p.write_text(p.read_text().replace(f"{PODINFO}:{OLD}", f"{PODINFO}:{NEW}"))
    subprocess.run([*git, "-C", str(clone), "commit", "-qam", f"release {NEW} to {len(targets)} targets"], check=True)
    subprocess.run([*git, "-C", str(clone), "push", "-q", "origin", "HEAD:main"], check=True)
    sha = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    shutil.rmtree(clone, ignore_errors=True)
    return sha.stdout.strip()
