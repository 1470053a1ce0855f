#!/usr/bin/env bash
# Run `playground release TARGET --backend kubernetes` inside the cluster, as the pipeline's service account,
# so webhooks (flagger-loadtester.prod) and Prometheus (prometheus.istio-system:9090) resolve as in production.
#
#   bash deploy/kind/release.sh prod/backend                                        # bootstrap / resume
#   bash deploy/kind/release.sh prod/backend ghcr.io/stefanprodan/podinfo:6.7.1     # roll out a new image
#
# With an image, the target Deployment is updated first (kubectl set image, as a GitOps sync would apply it).
# The exit status is the release's: 0 promoted, 1 rolled back (see `playground release --help`).
set -euo pipefail
TARGET="${1:?usage: release.sh NAMESPACE/NAME [IMAGE]}"
NEW_IMAGE="${2:-}"
IMAGE="${IMAGE:-gitops-playground:0.1.0}"
INTERVAL="${INTERVAL:-}"
NS="${TARGET%%/*}"
NAME="${TARGET#*/}"
if [ -n "$NEW_IMAGE" ]; then
  DEPLOY="$(kubectl -n "$NS" get canary "$NAME" -o jsonpath='{.spec.targetRef.name}')"
  kubectl -n "$NS" set image "deployment/$DEPLOY" "$DEPLOY=$NEW_IMAGE"
fi
POD="release-${NS}-${NAME}-$(date +%s)"
exec kubectl -n dagster run "$POD" --rm -i --restart=Never --image="$IMAGE" --image-pull-policy=IfNotPresent \
  --overrides='{"spec":{"serviceAccountName":"gitops-playground"}}' \
  -- playground release "$TARGET" --backend kubernetes ${INTERVAL:+--interval "$INTERVAL"}
