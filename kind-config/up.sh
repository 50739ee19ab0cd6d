#!/usr/bin/env bash
# A kind cluster networked and metered by podmeter, from this checkout:
#
#   kind-config/up.sh
#
# 1. checks kind, kubectl and docker;
# 2. builds the image localhost/podmeter:dev: with podman as root,
#    scripts/image.sh (OCI archive, no Docker involved); otherwise
#    `docker build` of kind-config/image/Containerfile.build
#    (PODMETER_IMAGE_BUILD=podman|docker forces one);
# 3. creates the cluster from kind-config/kind-cluster.yaml, or reuses it;
# 4. loads the image into every node (kind load image-archive / docker-image);
# 5. applies kind-config/manifests/ (namespace first) and
#    kind-config/monitoring/ (Prometheus + Grafana, configured from
#    prometheus/ and dashboards/), restarting what runs an older image or
#    configuration on a rerun;
# 6. waits for the nodes, the DaemonSet(s), the demo pods and monitoring;
# 7. checks that pods on the two workers reach each other with their own
#    addresses (IPv4 and IPv6), then prints how to reach /metrics,
#    Prometheus and the dashboard.
# Idempotent: run it again after a change to rebuild, reload and restart.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CLUSTER=podmeter                       # name: in kind-cluster.yaml
CONTEXT=kind-$CLUSTER                  # every kubectl call names it: never the current context
IMAGE=localhost/podmeter:dev           # what the manifests reference
NAMESPACE=podmeter                     # the DaemonSet's (manifests/namespace.yaml)
MONITORING=podmeter-monitoring         # monitoring/monitoring.yaml
TIMEOUT=${PODMETER_UP_TIMEOUT:-300s}   # per wait; image pulls dominate

say() { echo "up: $*" >&2; }
die() { echo "up: $*" >&2; exit 1; }
k() { kubectl --context "$CONTEXT" "$@"; }

# --- 1. Preflight: everything below needs, before minutes of building ----------
build=${PODMETER_IMAGE_BUILD:-}
if [ -z "$build" ]; then
  if [ "$(id -u)" = 0 ] && command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1; then
    build=podman
  else
    build=docker
  fi
fi
case $build in podman | docker) ;; *) die "PODMETER_IMAGE_BUILD=$build: podman or docker" ;; esac
# shellcheck source=kind-config/preflight.sh
. kind-config/preflight.sh
preflight "$build" || exit 1

# An existing cluster must be one this script made: podmeter as its only CNI
# (a kindnet conflist left in /etc/cni/net.d would be loaded instead: lower
# file name) and kind-cluster.yaml's pod subnet (the DaemonSet's
# --cluster-cidr).
reconcile_existing() {
  local want have node conf others
  want=$(awk -F'"' '/^ *podSubnet:/ {print $2}' kind-config/kind-cluster.yaml)
  have=$(k -n kube-system get configmap kubeadm-config -o jsonpath='{.data.ClusterConfiguration}' |
    awk '/podSubnet:/ {print $2}')
  [ "$have" = "$want" ] ||
    die "the existing cluster $CLUSTER has pod subnet '$have', not kind-cluster.yaml's '$want': kind delete cluster --name $CLUSTER, then run this again"
  for node in $(kind get nodes --name "$CLUSTER"); do
    conf=$("$ENGINE" exec "$node" ls /etc/cni/net.d)
    others=$(grep -v -e '^10-podmeter.conflist$' -e '^$' <<<"$conf" || true)
    [ -z "$others" ] ||
      die "node $node has another CNI's config in /etc/cni/net.d ($(tr '\n' ' ' <<<"$others")): the cluster was made with kindnet or another CNI; kind delete cluster --name $CLUSTER, then run this again"
  done
}

# --- 2. Image ------------------------------------------------------------------
case $build in
  podman)
    say "building $IMAGE with scripts/image.sh (static release build: minutes the first time)"
    archive=${PODMETER_IMAGE_ARCHIVE:-$ROOT/target/image/podmeter.oci.tar}
    PODMETER_IMAGE="$IMAGE" PODMETER_IMAGE_ARCHIVE="$archive" bash scripts/image.sh
    [ -f "$archive" ] || die "scripts/image.sh made no $archive"
    ;;
  docker)
    say "building $IMAGE with docker build -f kind-config/image/Containerfile.build (from source: minutes the first time)"
    DOCKER_BUILDKIT=1 docker build -f kind-config/image/Containerfile.build -t "$IMAGE" .
    ;;
esac

# --- 3. Cluster ----------------------------------------------------------------
# Captured, not piped: under pipefail, grep -q closing the pipe early can
# fail `kind get clusters` and take the create branch. Its errors show.
clusters=$(kind get clusters)
if grep -qx "$CLUSTER" <<<"$clusters"; then
  say "reusing the kind cluster $CLUSTER (after a change to kind-cluster.yaml: kind delete cluster --name $CLUSTER)"
  kind export kubeconfig --name "$CLUSTER"
  reconcile_existing
  fresh=0
else
  say "creating the kind cluster $CLUSTER (1 control plane, 2 workers, no default CNI)"
  # No --wait: nodes stay NotReady until podmeter's agent writes their conflist.
  kind create cluster --config kind-config/kind-cluster.yaml
  fresh=1
fi
trap on_exit EXIT

# --- 4. Image into every node --------------------------------------------------
say "loading $IMAGE into the nodes"
if [ "$build" = podman ]; then
  kind load image-archive "$archive" --name "$CLUSTER"
else
  kind load docker-image "$IMAGE" --name "$CLUSTER"
fi

# --- 4b. The exporter's TLS and basic auth ---------------------------------------
# The exporter listens on each node's address, which every pod reaches: it
# serves TLS with basic auth only. A CA, a certificate for the name
# Prometheus checks (podmeter-exporter), a password and its bcrypt hash are
# kept in target/kind-secrets/ (never committed) and reused on the next run;
# if any file is missing, all are made again together (a new password with
# an old hash would leave Prometheus with 401s). The hash comes from the
# exporter just built (podmeter-exporter hash-password): no other tool.
SECRETS=target/kind-secrets
SECRET_FILES=(ca.crt ca.key tls.crt tls.key password web-config.yml)
hash_password() { # stdin: the password
  if [ "$build" = podman ]; then
    "target/$(uname -m)-unknown-linux-gnu/release/podmeter-exporter" hash-password
  else
    docker run --rm -i --entrypoint /usr/local/bin/podmeter-exporter "$IMAGE" hash-password
  fi
}
make_secrets() {
  local f missing=0 tmp
  for f in "${SECRET_FILES[@]}"; do [ -f "$SECRETS/$f" ] || missing=1; done
  [ "$missing" = 1 ] || return 0
  say "making the exporter's CA, certificate and password ($SECRETS/)"
  mkdir -p target
  tmp=$(mktemp -d target/kind-secrets.XXXXXX)
  # Output kept and shown on failure: openssl's errors are the diagnosis.
  if ! (
    set -e
    cd "$tmp"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj /CN=podmeter-kind-ca -keyout ca.key -out ca.crt
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj /CN=podmeter-exporter -keyout tls.key -out tls.csr
    printf 'subjectAltName=DNS:podmeter-exporter\n' >san.ext
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out tls.crt
    rm -f tls.csr san.ext ca.srl
    openssl rand -hex 24 | tr -d '\n' >password
    hash=$(cd "$ROOT" && hash_password <"$tmp/password")
    [ -n "$hash" ]
    printf 'tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  min_version: TLS12\nbasic_auth_users:\n  prometheus: %s\n' \
      "$hash" >web-config.yml
  ) >"$tmp.log" 2>&1; then
    cat "$tmp.log" >&2
    rm -rf "$tmp" "$tmp.log"
    die "making the exporter's secrets failed (output above)"
  fi
  rm -f "$tmp.log"
  chmod 0700 "$tmp"
  rm -rf "$SECRETS"
  mv "$tmp" "$SECRETS"
}
make_secrets
apply_secret() { # NAMESPACE NAME --from-file=...
  local ns=$1 name=$2; shift 2
  k get namespace "$ns" >/dev/null 2>&1 || k create namespace "$ns"
  k -n "$ns" create secret generic "$name" "$@" --dry-run=client -o yaml | k apply -f -
}
apply_secret "$NAMESPACE" podmeter-exporter-web \
  --from-file="$SECRETS/web-config.yml" --from-file="$SECRETS/tls.crt" --from-file="$SECRETS/tls.key"
apply_secret "$MONITORING" podmeter-scrape --from-file="$SECRETS/ca.crt" --from-file="$SECRETS/password"

# --- 5. Manifests --------------------------------------------------------------
# Pods started before this load keep the old image (same tag): restart them.
had_ds=$(k -n "$NAMESPACE" get ds -o name 2>/dev/null || true)
[ -f kind-config/manifests/namespace.yaml ] && k apply -f kind-config/manifests/namespace.yaml
k apply -f kind-config/manifests/
if [ "$fresh" = 0 ] && [ -n "$had_ds" ]; then
  say "restarting the DaemonSet(s) onto the image just loaded"
  for ds in $had_ds; do k -n "$NAMESPACE" rollout restart "$ds"; done
fi

k apply -f kind-config/monitoring/monitoring.yaml
# The monitoring configuration is the repository's own files, not a copy.
changed=0
apply_configmap() { # NAME --from-file=...: create or update; note a change
  local name=$1 out; shift
  out=$(k -n "$MONITORING" create configmap "$name" "$@" --dry-run=client -o yaml | k apply -f -)
  echo "$out" >&2
  if grep -q configured <<<"$out"; then changed=1; fi
}
apply_configmap prometheus-config --from-file=prometheus.yml=prometheus/prometheus-kubernetes.yml
apply_configmap prometheus-rules --from-file=prometheus/rules/
apply_configmap grafana-dashboards --from-file=dashboards/
if [ "$changed" = 1 ]; then
  # subPath mounts do not follow ConfigMap updates.
  k -n "$MONITORING" rollout restart deploy/monitoring
fi

# --- 6. Wait -------------------------------------------------------------------
say "waiting for the podmeter DaemonSet(s) (timeout $TIMEOUT each)"
for ds in $(k -n "$NAMESPACE" get ds -o name); do
  k -n "$NAMESPACE" rollout status "$ds" --timeout="$TIMEOUT"
done
say "waiting for the nodes to be Ready (their conflist is written)"
k wait --for=condition=Ready nodes --all --timeout="$TIMEOUT"
demo="kind-config/manifests/demo-pods.yaml"
if [ -f "$demo" ]; then
  say "waiting for the demo pods"
  k get -f "$demo" --no-headers -o custom-columns=KIND:.kind,NS:.metadata.namespace,NAME:.metadata.name |
    while read -r kind ns name; do
      [ "$kind" = Pod ] || continue
      k -n "${ns/<none>/default}" wait --for=condition=Ready "pod/$name" --timeout="$TIMEOUT"
    done
fi
say "waiting for Prometheus and Grafana"
k -n "$MONITORING" rollout status deploy/monitoring --timeout="$TIMEOUT"

# --- 7. Pods on different nodes ----------------------------------------------------
# One busybox pod per worker serves, by CGI, the address it sees a request
# come from; each fetches from the other over every address family. The
# agents' routes carry it, and no masquerade: the answer is the client pod's
# own address.
CHECK_IMAGE=busybox:1.36
# shellcheck disable=SC2016 # $REMOTE_ADDR is for the CGI script, not here
SERVE='mkdir -p /www/cgi-bin && printf "#!/bin/sh\necho Content-Type: text/plain\necho\necho \$REMOTE_ADDR\n" >/www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && exec httpd -f -p 8080 -h /www'
read -r -a workers <<<"$(k get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[*].metadata.name}')"
[ "${#workers[@]}" -ge 2 ] || die "cross-node check: need two workers, found ${#workers[@]}"
check_pods=(podmeter-check-a podmeter-check-b)
family() { if [[ $1 == *:* ]]; then echo 6; else echo 4; fi; }
k -n default delete pod "${check_pods[@]}" --ignore-not-found --wait=true >/dev/null
for i in 0 1; do
  k -n default run "${check_pods[$i]}" --image="$CHECK_IMAGE" --restart=Never \
    --overrides="{\"apiVersion\":\"v1\",\"spec\":{\"nodeName\":\"${workers[$i]}\"}}" \
    --command -- sh -c "$SERVE" >/dev/null
done
k -n default wait --for=condition=Ready "pod/${check_pods[0]}" "pod/${check_pods[1]}" --timeout="$TIMEOUT" >/dev/null
say "pods on different nodes:"
check_failed=0
for i in 0 1; do
  from=${check_pods[$i]} to=${check_pods[$((1 - i))]}
  read -r -a from_ips <<<"$(k -n default get pod "$from" -o jsonpath='{.status.podIPs[*].ip}')"
  read -r -a to_ips <<<"$(k -n default get pod "$to" -o jsonpath='{.status.podIPs[*].ip}')"
  for ip in "${to_ips[@]}"; do
    url="http://$ip:8080/cgi-bin/peer" own=
    [[ $ip == *:* ]] && url="http://[$ip]:8080/cgi-bin/peer"
    for a in "${from_ips[@]}"; do  # the client's address of the same family
      if [ "$(family "$a")" = "$(family "$ip")" ]; then own=$a; fi
    done
    if seen=$(k -n default exec "$from" -- wget -q -T 5 -O - "$url" 2>&1); then
      seen=$(tr -d '[]\r\n' <<<"$seen")
      if [ -n "$own" ] && [[ $seen == *"$own" ]]; then
        echo "  ok: $from ($own) -> $to ($ip): seen from $seen"
      else
        echo "  FAILED: $from -> $to ($ip) answered, but saw the request come from $seen, not $own (masqueraded?)"
        check_failed=1
      fi
    else
      echo "  FAILED: $from -> $to ($ip): $seen"
      check_failed=1
    fi
  done
done
k -n default delete pod "${check_pods[@]}" --wait=false >/dev/null
[ "$check_failed" = 0 ] || die "pods on different nodes do not reach each other with their own addresses: see kubectl --context $CONTEXT -n $NAMESPACE logs ds/podmeter -c agent (routes), and ip route on the nodes (docker exec podmeter-worker ip route show proto 152)"

# --- Where things are ----------------------------------------------------------
trap - EXIT
echo
echo "podmeter is up on kind cluster '$CLUSTER' (kubectl --context $CONTEXT)."
echo
k get pods -A -o wide --field-selector=metadata.namespace!=kube-system
echo
port=$(k -n "$NAMESPACE" get ds -o jsonpath='{.items[0].spec.template.metadata.annotations.prometheus\.io/port}' 2>/dev/null || true)
port=${port:-9977}
cat <<TXT
Metrics (one exporter per node, hostNetwork, port $port, TLS + basic auth;
the CA and the password are in $SECRETS/):
  kubectl --context $CONTEXT -n $NAMESPACE get pods -o wide      # pick a node's pod
  kubectl --context $CONTEXT -n $NAMESPACE port-forward pod/<pod> $port &
  curl -s --cacert $SECRETS/ca.crt --resolve podmeter-exporter:$port:127.0.0.1 \\
    -u prometheus:\$(cat $SECRETS/password) https://podmeter-exporter:$port/metrics | grep podmeter_pod_

Prometheus and the Grafana dashboard (dashboards/podmeter.json, provisioned):
  kubectl --context $CONTEXT -n $MONITORING port-forward deploy/monitoring 9090 3000
  open http://localhost:3000 (dashboard "podmeter", anonymous view; admin/admin to edit)
  and  http://localhost:9090 (targets: Status > Targets, job podmeter, scraped as podmeter-https)

Pods on different nodes reach each other: each node's agent routes the
other nodes' podCIDRs via their InternalIPs (all on kind's one Docker
network; no overlay), and what leaves the cluster's pod ranges is
masqueraded. The agent's own state: its /readyz and /metrics on
127.0.0.1:9978 on each node (routes owned, nodes seen, last sync, errors).
TXT
