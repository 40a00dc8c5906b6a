#!/usr/bin/env bash
# A local cluster with the whole flow running: kind + Falco + Falcosidekick (from the
# falcosecurity charts) posting to Falco Triage's receiver, installed from this repository.
#
#   hack/kind-up.sh          create (or reuse) the cluster and install everything
#   hack/kind-up.sh demo     also start a pod and do something Falco flags in it
#   hack/kind-up.sh down     delete the cluster
#
# Needs: docker, kind, kubectl, helm. Settings (environment):
#   CLUSTER_NAME        kind cluster name                  (default falco-triage)
#   NAMESPACE           Falco Triage's namespace           (default falco-triage)
#   FALCO_NAMESPACE     Falco and Falcosidekick namespace  (default falco)
#   IMAGE               image built from ./Dockerfile      (default falco-triage:dev)
#   FALCO_CHART_VERSION falcosecurity/falco chart version  (default: the newest)
#   FALCO_DRIVER        Falco driver kind                  (default modern_ebpf)
set -euo pipefail

CLUSTER_NAME="${CLUSTER_NAME:-falco-triage}"
NAMESPACE="${NAMESPACE:-falco-triage}"
FALCO_NAMESPACE="${FALCO_NAMESPACE:-falco}"
IMAGE="${IMAGE:-falco-triage:dev}"
FALCO_CHART_VERSION="${FALCO_CHART_VERSION:-}"
FALCO_DRIVER="${FALCO_DRIVER:-modern_ebpf}"
RELEASE=falco-triage

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONTEXT="kind-${CLUSTER_NAME}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'kind-up: %s\n' "$*" >&2; exit 1; }

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not on PATH (needed: docker, kind, kubectl, helm)"
  done
}

k() { kubectl --context "$CONTEXT" "$@"; }
h() { helm --kube-context "$CONTEXT" "$@"; }

cluster_up() {
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
    log "reusing kind cluster $CLUSTER_NAME"
  else
    log "creating kind cluster $CLUSTER_NAME"
    kind create cluster --name "$CLUSTER_NAME" --wait 120s
  fi
}

image_up() {
  log "building $IMAGE from $ROOT/Dockerfile"
  docker build -t "$IMAGE" "$ROOT"
  log "loading $IMAGE into the cluster's nodes"
  kind load docker-image "$IMAGE" --name "$CLUSTER_NAME"
}

falco_triage_up() {
  local repo="${IMAGE%:*}" tag="${IMAGE##*:}"
  log "installing Falco Triage (chart charts/falco-triage) into $NAMESPACE"
  # NB: helm installs crds/ only on first install; apply them every time so that re-running
  # this script after a model change upgrades them.
  k apply --server-side -f "$ROOT/charts/falco-triage/crds/"
  h upgrade --install "$RELEASE" "$ROOT/charts/falco-triage" \
    --namespace "$NAMESPACE" --create-namespace \
    --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=Never \
    --set receiver.networkPolicy.enabled=true \
    --set receiver.networkPolicy.namespaceSelector.matchLabels."kubernetes\.io/metadata\.name"="$FALCO_NAMESPACE" \
    --set examplePolicies.enabled=true \
    --wait --timeout 5m
}

falco_up() {
  local token url version_args=()
  token="$(k -n "$NAMESPACE" get secret "$RELEASE-receiver-token" -o jsonpath='{.data.token}' | base64 -d)"
  url="http://$RELEASE-receiver.$NAMESPACE.svc.cluster.local:8080/v1/events"
  [[ -n "$FALCO_CHART_VERSION" ]] && version_args=(--version "$FALCO_CHART_VERSION")
  log "installing Falco and Falcosidekick (falcosecurity/falco) into $FALCO_NAMESPACE, posting to $url"
  helm repo add falcosecurity https://falcosecurity.github.io/charts --force-update >/dev/null
  helm repo update falcosecurity >/dev/null
  # Falco -> Falcosidekick (wired by the falco chart) -> our receiver, with the bearer token.
  # The Kubernetes metadata collector fills k8s.ns.name / k8s.pod.name, which decide the
  # namespace each FalcoAlert lands in.
  h upgrade --install falco falcosecurity/falco ${version_args[@]+"${version_args[@]}"} \
    --namespace "$FALCO_NAMESPACE" --create-namespace \
    --set driver.kind="$FALCO_DRIVER" \
    --set tty=true \
    --set collectors.kubernetes.enabled=true \
    --set falco.json_output=true \
    --set falco.json_include_output_property=true \
    --set falco.json_include_tags_property=true \
    --set falcosidekick.enabled=true \
    --set falcosidekick.fullfqdn=true \
    --set falcosidekick.config.webhook.address="$url" \
    --set-string falcosidekick.config.webhook.customHeaders="Authorization: Bearer $token" \
    --wait --timeout 10m
}

demo() {
  log "starting a pod and reading /etc/shadow in it (Falco: 'Read sensitive file untrusted')"
  k create namespace demo --dry-run=client -o yaml | k apply -f -
  k -n demo run shell-demo --image=busybox:1.37 --restart=Never --dry-run=client -o yaml \
    --command -- sleep 3600 | k apply -f -
  k -n demo wait --for=condition=Ready pod/shell-demo --timeout=120s
  k -n demo exec shell-demo -- cat /etc/shadow >/dev/null
  log "waiting for the FalcoAlert"
  local i
  for i in $(seq 1 60); do
    if [[ -n "$(k get falcoalerts -n demo -o name 2>/dev/null)" ]]; then
      k get falcoalerts -A
      echo
      echo "Read the report:  kubectl --context $CONTEXT -n demo describe falcoalerts"
      return 0
    fi
    sleep 2
  done
  die "no FalcoAlert in namespace demo after 120 s; check: kubectl --context $CONTEXT -n $FALCO_NAMESPACE logs deploy/falco-falcosidekick"
}

main() {
  case "${1:-up}" in
    up|demo)
      need docker kind kubectl helm
      cluster_up
      image_up
      falco_triage_up
      falco_up
      log "ready: kubectl --context $CONTEXT get falcoalerts -A"
      if [[ "${1:-up}" == demo ]]; then demo; fi
      ;;
    down)
      need kind
      kind delete cluster --name "$CLUSTER_NAME"
      ;;
    -h|--help|help)
      sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      ;;
    *)
      die "unknown command '$1' (up, demo, down, help)"
      ;;
  esac
}

main "$@"
