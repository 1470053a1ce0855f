#!/usr/bin/env bash
# Quickstart on a local kind cluster: Istio (default profile) + its Prometheus addon + the flagger.app CRDs +
# the pipeline's RBAC + the GitOps manifests, then the code location image loaded into the cluster.
# Needs: docker, kind, kubectl, istioctl (with the Istio release directory for the Prometheus addon).
#
#   ISTIO_DIR=~/istio-1.27.1 bash deploy/kind/quickstart.sh
#   bash deploy/kind/release.sh prod/backend ghcr.io/stefanprodan/podinfo:6.7.1
#
# Idempotent: re-running it re-applies everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER="${CLUSTER:-gitops-playground}"
IMAGE="${IMAGE:-gitops-playground:0.1.0}"
ISTIO_DIR="${ISTIO_DIR:?set ISTIO_DIR to an unpacked Istio release (curl -L https://istio.io/downloadIstio | sh -)}"
export PATH="$ISTIO_DIR/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

step "kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
kubectl config use-context "kind-$CLUSTER"

step "Istio (profile default: istiod + ingress gateway)"
istioctl install --set profile=default -y
kubectl -n istio-system rollout status deploy/istiod --timeout=300s

step "Prometheus addon (prometheus.istio-system:9090, scrapes the sidecars' istio_* metrics)"
kubectl apply -f "$ISTIO_DIR/samples/addons/prometheus.yaml"
kubectl -n istio-system rollout status deploy/prometheus --timeout=300s

step "flagger.app CRDs (Canary, MetricTemplate, AlertProvider)"
kubectl apply --server-side -f deploy/crds/flagger.app.yaml
kubectl wait --for condition=established --timeout=60s crd/canaries.flagger.app crd/metrictemplates.flagger.app \
  crd/alertproviders.flagger.app

step "namespaces, the pipeline's service account and RBAC"
kubectl create namespace dagster --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f manifests/prod/namespace.yaml
kubectl apply -f deploy/rbac/serviceaccount.yaml -f deploy/rbac/release-role.yaml -f deploy/rbac/cluster-read.yaml

step "GitOps manifests (Istio itself was installed by istioctl; Flux image automation is not installed)"
kubectl apply -f manifests/istio/gateway.yaml -f manifests/metrics/ -f manifests/prod/alerts.yaml \
  -f manifests/prod/loadtester.yaml
for app in backend frontend; do
  kubectl apply -f "manifests/prod/$app/deployment.yaml" -f "manifests/prod/$app/hpa.yaml" \
    -f "manifests/prod/$app/canary.yaml"
done
kubectl -n prod create secret generic on-call-slack --from-literal=address="${SLACK_URL:-http://flagger-loadtester.prod/}" \
  --dry-run=client -o yaml | kubectl apply -f -

step "code location image $IMAGE"
docker build -f deploy/Dockerfile -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo
echo "ready: bootstrap the canaries with"
echo "  bash deploy/kind/release.sh prod/backend"
echo "then release a new image with"
echo "  bash deploy/kind/release.sh prod/backend ghcr.io/stefanprodan/podinfo:6.7.1"
