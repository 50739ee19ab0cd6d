#!/usr/bin/env bash
# A kind cluster networked and metered by podmeter, from this checkout:
#
#   kind-config/up.sh
#
# 1. preflight (kind-config/preflight.sh), before any build: kind, kubectl,
#    docker (or podman with KIND_EXPERIMENTAL_PROVIDER=podman), BuildKit for
#    the Docker build, openssl, the host kernel (>= 5.17, BTF, br_netfilter),
#    IPv6 on an existing `kind` network, inotify limits; every problem is
#    printed with its fix;
# 2. builds the image localhost/podmeter:dev: with podman as root,
#    scripts/image.sh (OCI archive, no Docker involved); otherwise
#    `docker build` of kind-config/image/Containerfile.build
#    (PODMETER_IMAGE_BUILD=podman|docker forces one);
# 3. creates the cluster from kind-config/kind-cluster.yaml, or reuses it
#    (exporting its kubeconfig; refused if it has another pod subnet or
#    another CNI's conflist);
# 4. loads the image into every node (kind load image-archive / docker-image)
#    and makes the exporter's CA, certificate and password (as a whole; the
#    bcrypt hash by the exporter just built);
# 5. applies kind-config/manifests/ (namespace first) and
#    kind-config/monitoring/ (Prometheus + Grafana, configured from
#    prometheus/ and dashboards/), restarting what runs an older image or
#    configuration on a rerun;
# 6. waits for the nodes, the DaemonSet(s), the demo pods and monitoring;
# 7. a final check, each result by name (kind-config/checks.sh): pods on
#    different nodes by pod IP with their own addresses, a Service's
#    ClusterIPs from the same node, another node and its own endpoint
#    (hairpin), its DNS name through CoreDNS, and one scrape of an exporter
#    through TLS + basic auth from a pod; then prints how to reach /metrics,
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

# An existing cluster is checked before the build, so that one that cannot
# be reused stops the run at once. Captured, not piped: under pipefail,
# grep -q closing the pipe early can fail `kind get clusters` and take the
# create branch; its errors show.
clusters=$(kind get clusters)
fresh=1
if grep -qx "$CLUSTER" <<<"$clusters"; then
  fresh=0
  kind export kubeconfig --name "$CLUSTER"
  reconcile_existing
fi

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
if [ "$fresh" = 0 ]; then
  say "reusing the kind cluster $CLUSTER (after a change to kind-cluster.yaml: kind delete cluster --name $CLUSTER)"
else
  say "creating the kind cluster $CLUSTER (1 control plane, 2 workers, no default CNI)"
  # No --wait: nodes stay NotReady until podmeter's agent writes their conflist.
  kind create cluster --config kind-config/kind-cluster.yaml
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

port=$(k -n "$NAMESPACE" get ds -o jsonpath='{.items[0].spec.template.metadata.annotations.prometheus\.io/port}')
port=${port:-9977}

# --- 7. A final check that would notice -------------------------------------------
# Pods on both workers serve, by busybox httpd CGI, the address they see a
# request come from; a Service selects the first only. Each check is
# reported by name (kind-config/checks.sh):
#  - pods on different nodes by pod IP, seeing each other's own address
#    (the agents' routes, no masquerade), IPv4 and IPv6;
#  - the Service's ClusterIPs from a pod on its endpoint's node (the reply
#    is bridged: kube-proxy must see it), from another node, and from the
#    endpoint itself (hairpin);
#  - the Service's DNS name through CoreDNS (itself a Service);
#  - one scrape of an exporter through TLS + basic auth from a pod, with the
#    CA and password Prometheus uses.
CHECK_IMAGE=busybox:1.36
CURL_IMAGE=curlimages/curl:8.11.1
# shellcheck disable=SC2016 # $REMOTE_ADDR is for the CGI script, not here
SERVE='mkdir -p /www/cgi-bin && printf "#!/bin/sh\necho Content-Type: text/plain\necho\necho \$REMOTE_ADDR\n" >/www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && exec httpd -f -p 8080 -h /www'
read -r -a workers <<<"$(k get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[*].metadata.name}')"
[ "${#workers[@]}" -ge 2 ] || die "final check: need two workers, found ${#workers[@]}"
# a: the Service's endpoint, on worker 0; b: on worker 1; c: a client on worker 0.
check_pods=(podmeter-check-a podmeter-check-b podmeter-check-c)
check_nodes=("${workers[0]}" "${workers[1]}" "${workers[0]}")
SCRAPE_POD=podmeter-check-scrape
family() { if [[ $1 == *:* ]]; then echo 6; else echo 4; fi; }
k -n default delete pod "${check_pods[@]}" --ignore-not-found --wait=true >/dev/null
k -n "$MONITORING" delete pod "$SCRAPE_POD" --ignore-not-found --wait=true >/dev/null
for i in 0 1 2; do
  k -n default run "${check_pods[$i]}" --image="$CHECK_IMAGE" --restart=Never \
    --labels="podmeter-check=${check_pods[$i]}" \
    --overrides="{\"apiVersion\":\"v1\",\"spec\":{\"nodeName\":\"${check_nodes[$i]}\"}}" \
    --command -- sh -c "$SERVE" >/dev/null
done
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: podmeter-check, namespace: default}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {podmeter-check: podmeter-check-a}
  ports: [{port: 80, targetPort: 8080}]
YAML
k -n default wait --for=condition=Ready "${check_pods[@]/#/pod/}" --timeout="$TIMEOUT" >/dev/null
# shellcheck source=kind-config/checks.sh
. kind-config/checks.sh
pod_fetch() { k -n default exec "$1" -- wget -q -T 5 -O - "$2"; }
say "final check:"
# Pods on different nodes keep their own addresses.
for i in 0 1; do
  from=${check_pods[$i]} to=${check_pods[$((1 - i))]}
  read -r -a from_ips <<<"$(k -n default get pod "$from" -o jsonpath='{.status.podIPs[*].ip}')"
  read -r -a to_ips <<<"$(k -n default get pod "$to" -o jsonpath='{.status.podIPs[*].ip}')"
  for ip in "${to_ips[@]}"; do
    own=
    for a in "${from_ips[@]}"; do  # the client's address of the same family
      if [ "$(family "$a")" = "$(family "$ip")" ]; then own=$a; fi
    done
    name="$from -> $to ($ip) on another node, seen from $own"
    if seen=$(pod_fetch "$from" "$(url "$ip" 8080 /cgi-bin/peer)" 2>&1); then
      seen=$(tr -d '[]\r\n' <<<"$seen")
      if [ -n "$own" ] && [[ $seen == *"$own" ]]; then
        echo "  ok: $name"
      else
        echo "  FAILED: $name: the request came from $seen (masqueraded?)"
        CHECKS_FAILED=1
      fi
    else
      echo "  FAILED: $name: $seen"
      CHECKS_FAILED=1
    fi
  done
done
read -r -a cluster_ips <<<"$(k -n default get service podmeter-check -o jsonpath='{.spec.clusterIPs[*]}')"
service_checks podmeter-check-a podmeter-check-c podmeter-check-b 80 /cgi-bin/peer "${cluster_ips[@]}"
check "DNS name podmeter-check.default.svc.cluster.local through CoreDNS" podmeter-check-b \
  http://podmeter-check.default.svc.cluster.local/cgi-bin/peer

# The exporter on worker 0, as Prometheus scrapes it: TLS checked against
# the CA for the name podmeter-exporter, basic auth, from a pod.
node_ip=$(k get node "${workers[0]}" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
node_ip=${node_ip%% *}
[[ $node_ip == *:* ]] && node_ip="[$node_ip]"
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $SCRAPE_POD, namespace: $MONITORING}
spec:
  restartPolicy: Never
  nodeName: ${workers[1]}
  volumes: [{name: scrape, secret: {secretName: podmeter-scrape}}]
  containers:
    - name: curl
      image: $CURL_IMAGE
      volumeMounts: [{name: scrape, mountPath: /scrape, readOnly: true}]
      command: [sh, -c]
      args:
        - curl -sS --fail --max-time 10 --cacert /scrape/ca.crt
          --resolve "podmeter-exporter:$port:$node_ip" -u "prometheus:\$(cat /scrape/password)"
          https://podmeter-exporter:$port/metrics
YAML
scrape_name="one scrape of the exporter on ${workers[0]} through TLS + basic auth, from a pod"
if k -n "$MONITORING" wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$SCRAPE_POD" --timeout="$TIMEOUT" >/dev/null &&
  scraped=$(k -n "$MONITORING" logs "$SCRAPE_POD") && grep -q '^podmeter_pods ' <<<"$scraped"; then
  echo "  ok: $scrape_name"
else
  echo "  FAILED: $scrape_name: $(k -n "$MONITORING" logs "$SCRAPE_POD" 2>&1 | tail -n 3)"
  CHECKS_FAILED=1
fi
k -n default delete pod "${check_pods[@]}" --wait=false >/dev/null
k -n default delete service podmeter-check --wait=false >/dev/null
k -n "$MONITORING" delete pod "$SCRAPE_POD" --wait=false >/dev/null
[ "$CHECKS_FAILED" = 0 ] || die "the final check failed (above): see kubectl --context $CONTEXT -n $NAMESPACE logs ds/podmeter -c agent (routes, /readyz's kernel and br_netfilter messages), ip route on the nodes ($ENGINE exec podmeter-worker ip route show proto 152), and README.md \"Services\""

# --- Where things are ----------------------------------------------------------
trap - EXIT
echo
echo "podmeter is up on kind cluster '$CLUSTER' (kubectl --context $CONTEXT)."
echo
k get pods -A -o wide --field-selector=metadata.namespace!=kube-system
echo
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
