"""A corrected copy of gitops-istio (tests/data/gitops-istio) that the local playground can run.

Corrections, each the fix `playground validate` gives for the original tree, or what gitops-istio takes from
its other paths:
- both HPAs: ``autoscaling/v2beta1`` (removed in Kubernetes 1.25) -> ``autoscaling/v2``, with the v2 metric
  form (``target: {type: Utilization, averageUtilization: 99}``); the Canaries' ``autoscalerRef`` likewise;
- the loadtester, the public gateway, the istio-system namespace and the metric templates (gitops-istio gets
  them from its istio/ and apps/loadtest paths, with its own Prometheus address) are the playground's own
  (manifests/istio, manifests/metrics, manifests/prod/loadtester.yaml).
The kustomizations, the JSON 6902 patch and the Deployments are gitops-istio's, unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORIGINAL = ROOT / "tests" / "data" / "gitops-istio"


def corrected_gitops_istio(dst: Path) -> Path:
    """Write the corrected tree into ``dst`` (created) and return it."""
    shutil.copytree(ORIGINAL / "apps", dst / "apps")
    for app in ("backend", "frontend"):
        hpa = dst / "apps" / app / "hpa.yaml"
        text = hpa.read_text().replace("autoscaling/v2beta1", "autoscaling/v2")
        text = text.replace(
            "targetAverageUtilization: 99", "target:\n        type: Utilization\n        averageUtilization: 99"
        )
        hpa.write_text(text)
        canary = dst / "apps" / app / "canary.yaml"
        canary.write_text(canary.read_text().replace("autoscaling/v2beta1", "autoscaling/v2").replace(
            "autoscaling/v2beta2", "autoscaling/v2"))  # fmt: skip
    shutil.copytree(ROOT / "manifests" / "istio", dst / "istio")
    shutil.copytree(ROOT / "manifests" / "metrics", dst / "metrics")
    (dst / "loadtest").mkdir()
    shutil.copy(ROOT / "manifests" / "prod" / "loadtester.yaml", dst / "loadtest" / "loadtester.yaml")
    return dst
