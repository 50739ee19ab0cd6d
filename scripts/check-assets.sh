#!/usr/bin/env bash
# Offline checks of the Prometheus and Grafana assets:
#   - promtool check config  prometheus/prometheus.yml, prometheus/prometheus-kubernetes.yml
#   - promtool check rules   prometheus/rules/*.yml
#   - promtool test rules    prometheus/tests/*.yml
#   - kind-config/manifests/*.yaml, kind-config/monitoring/*.yaml: kubernetes-validate --strict
#     (newest; the manifests also 1.33)
#   - kind-config/kind-cluster.yaml: only fields kind's v1alpha4 Cluster has
#   - kind-config/up.sh, scripts/image*.sh: bash -n, and shellcheck when installed
#   - kind-config/up.sh's preflight against stub tools (kind-config/tests/preflight-test.sh)
#   - kind-config/image/: both Containerfiles list the same binaries; hadolint
#   - dashboards/*.json: parses, datasource variable used everywhere, namespace/pod
#     variables, every target has a PromQL expr using only known variables, and
#     every expr parses (checked by promtool as recording rules, after substituting
#     the variables).
# Exits non-zero if any check fails. Needs promtool and jq (scripts/setup.sh).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

for tool in promtool jq awk kubernetes-validate; do
  command -v "$tool" >/dev/null 2>&1 || { echo "check-assets: $tool not found (run scripts/setup.sh)" >&2; exit 2; }
done

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

results=()
notes=()
failed=0
step() { # step NAME CMD...: run CMD, record ok/FAIL, show its output on failure
  local name=$1; shift
  if "$@" >"$TMP/out" 2>&1; then
    results+=("ok    $name")
  else
    results+=("FAIL  $name")
    failed=1
    echo "---- $name" >&2
    cat "$TMP/out" >&2
  fi
}

# --- Prometheus configs --------------------------------------------------------
step "check config prometheus/prometheus.yml" promtool check config prometheus/prometheus.yml

# Debian's promtool/prometheus are built without Kubernetes service discovery
# ("field kubernetes_sd_configs not found"). Upstream promtool only validates
# kubernetes_sd_configs (it never contacts a cluster). With a promtool lacking
# it, check a copy where each kubernetes_sd_configs block is swapped for a
# static_configs block (so everything else, relabel_configs included, is still
# validated by promtool), and check the kubernetes_sd_configs blocks here.
check_k8s_config() {
  local cfg=prometheus/prometheus-kubernetes.yml
  printf 'scrape_configs:\n  - job_name: probe\n    kubernetes_sd_configs:\n      - role: pod\n' >"$TMP/probe.yml"
  if promtool check config "$TMP/probe.yml" >/dev/null 2>&1; then
    promtool check config "$cfg"
    return
  fi
  notes+=("promtool lacks Kubernetes SD (Debian build): prometheus-kubernetes.yml was checked with kubernetes_sd_configs swapped for static_configs, and its kubernetes_sd_configs fields/role checked by this script")
  mkdir -p "$TMP/k8s"
  ln -sfn "$ROOT/prometheus/rules" "$TMP/k8s/rules"
  awk -v blocks="$TMP/k8s/blocks" '
    function indent(s) { match(s, /^ */); return RLENGTH }
    skip && ($0 ~ /^[ \t]*(#.*)?$/ || indent($0) > ind) { print > blocks; next }
    skip { skip = 0; print "--" > blocks }
    /^ *kubernetes_sd_configs: *(#.*)?$/ {
      ind = indent($0); pad = substr($0, 1, ind); n++
      print pad "static_configs:"
      print pad "  - targets: [\"podmeter-exporter.invalid:9977\"]"
      skip = 1; next
    }
    { print }
    END { if (skip) print "--" > blocks; if (!n) exit 1 }
  ' "$cfg" >"$TMP/k8s/prometheus-kubernetes.yml" \
    || { echo "no kubernetes_sd_configs block found in $cfg"; return 1; }
  promtool check config "$TMP/k8s/prometheus-kubernetes.yml" || return 1
  # Each block: a list of KubernetesSDConfig items with known keys and a valid role.
  awk '
    BEGIN {
      split("api_server role kubeconfig_file namespaces selectors attach_metadata basic_auth authorization oauth2 bearer_token bearer_token_file tls_config proxy_url no_proxy proxy_from_environment proxy_connect_header follow_redirects enable_http2", k, " ")
      for (i in k) ok[k[i]] = 1
      split("pod node service endpoints endpointslice ingress", r, " ")
      for (i in r) okrole[r[i]] = 1
      bad = 0
    }
    /^--$/ { if (items == 0) { print "empty kubernetes_sd_configs"; bad = 1 } items = 0; keycol = 0; next }
    /^[ \t]*(#.*)?$/ { next }
    {
      line = $0; match(line, /^ */); col = RLENGTH
      rest = substr(line, col + 1)
      if (rest ~ /^- /) { items++; if (!keycol) keycol = col + 2; col += 2; rest = substr(rest, 3); sub(/^ +/, "", rest) }
      if (col != keycol) next   # nested (selectors, tls_config, ...)
      key = rest; sub(/:.*/, "", key)
      if (!(key in ok)) { print "unknown kubernetes_sd_configs field: " key; bad = 1 }
      if (key == "role") {
        role = rest; sub(/^role: */, "", role); sub(/ *#.*/, "", role); gsub(/["\x27]/, "", role)
        if (!(role in okrole)) { print "invalid kubernetes_sd_configs role: " role; bad = 1 }
      }
    }
    END { exit bad }
  ' "$TMP/k8s/blocks" || return 1
  echo "kubernetes_sd_configs blocks: ok"
}
step "check config prometheus/prometheus-kubernetes.yml" check_k8s_config

# --- Rules and their unit tests ------------------------------------------------
step "check rules prometheus/rules/*.yml" promtool check rules prometheus/rules/*.yml
step "test rules prometheus/tests/*.yml" promtool test rules prometheus/tests/*.yml

# --- Grafana dashboards --------------------------------------------------------
check_dashboard() {
  local f=$1 errs
  jq empty "$f" || { echo "$f: not valid JSON"; return 1; }
  errs=$(jq -r '
    def panels: [.panels[]? | ., (.panels[]? )] | map(select(.type != "row"));
    def dsvar: . == {"type": "prometheus", "uid": "${datasource}"};
    (if has("__inputs") then "has __inputs (use the datasource variable instead)" else empty end),
    (if (.schemaVersion // 0) < 39 then "schemaVersion \(.schemaVersion) < 39" else empty end),
    (.templating.list // []) as $vars
    | ($vars | map(select(.name == "datasource" and .type == "datasource" and .query == "prometheus")) | length) as $n
    | (if $n != 1 then "no datasource variable (type datasource, query prometheus)" else empty end),
    ($vars[] | select(.name == "namespace" or .name == "pod")
      | if (.datasource | dsvar | not) then "variable \(.name): datasource is not ${datasource}" else empty end),
    ($vars | map(.name) | if (index("namespace") == null or index("pod") == null) then "missing namespace/pod variable" else empty end),
    ($vars[] | select(.name == "namespace") | if (.multi and .includeAll) | not then "namespace: must be multi + include all" else empty end),
    ([.. | objects | .id? | numbers] | group_by(.) | map(select(length > 1)) | .[] | "duplicate panel id \(.[0])"),
    (panels[] | . as $p
      | (if (.datasource | dsvar | not) then "panel \(.id) \"\(.title)\": datasource is not ${datasource}" else empty end),
        (if ((.targets // []) | length) == 0 then "panel \(.id) \"\(.title)\": no targets" else empty end),
        (.targets[]? |
          (if ((.expr // "") | test("\\S") | not) then "panel \($p.id) \"\($p.title)\" \(.refId): empty expr" else empty end),
          (if (.datasource | dsvar | not) then "panel \($p.id) \"\($p.title)\" \(.refId): datasource is not ${datasource}" else empty end),
          ((.expr // "") | [scan("\\$\\{?([A-Za-z_][A-Za-z0-9_]*)")[0]] | map(select(IN("namespace", "pod", "__rate_interval", "__interval") | not))
            | .[] | "panel \($p.id) \"\($p.title)\": unexpected variable $\(.) in expr"),
          (if ((.expr // "") | test("\\[[0-9]+[smhdwy]")) then "panel \($p.id) \"\($p.title)\": hard-coded range, use $__rate_interval" else empty end)))
  ' "$f") || { echo "$f: jq failed"; return 1; }
  if [ -n "$errs" ]; then printf '%s: %s\n' "$f" "$errs" | sed "2,\$s|^|$f: |"; return 1; fi

  # PromQL syntax: every expr (variables substituted) as a recording rule.
  { echo "groups:"; echo "  - name: dashboard"; echo "    rules:"
    jq -r '
      [.panels[]? | ., (.panels[]?)] | map(select(.type != "row")) | .[] | .id as $id | .targets[]?
      | "      - record: dashboard:panel_\($id)_\(.refId):expr",
        "        expr: \(.expr
            | gsub("\\$\\{?namespace\\}?"; ".*") | gsub("\\$\\{?pod\\}?"; ".*")
            | gsub("\\$\\{?__rate_interval\\}?"; "1m") | gsub("\\$\\{?__interval\\}?"; "15s")
            | tojson)"' "$f"
  } >"$TMP/dashboard-rules.yml"
  promtool check rules "$TMP/dashboard-rules.yml" || { echo "$f: invalid PromQL (see above)"; return 1; }
  notes+=("$f: $(jq '[.panels[]? | ., (.panels[]?)] | map(select(.type != "row")) | length' "$f") panels, $(jq '[.panels[]? | ., (.panels[]?)] | map(.targets[]?) | length' "$f") PromQL targets checked")
}
shopt -s nullglob
dashboards=(dashboards/*.json)
[ ${#dashboards[@]} -gt 0 ] || { results+=("FAIL  dashboards/*.json: none found"); failed=1; }
for d in "${dashboards[@]}"; do
  step "dashboard $d" check_dashboard "$d"
done

# --- Kubernetes manifests (offline: no API server can run here) --------------
step "kubernetes-validate --strict kind-config/manifests/*.yaml" \
  kubernetes-validate --strict --quiet kind-config/manifests/*.yaml
# Also the oldest version the agent is built for (k8s-openapi feature v1_33):
# what the kind node images we target run.
step "kubernetes-validate --strict -k 1.33.0 kind-config/manifests/*.yaml" \
  kubernetes-validate --strict --quiet --kubernetes-version 1.33.0 kind-config/manifests/*.yaml
step "kubernetes-validate --strict kind-config/monitoring/*.yaml" \
  kubernetes-validate --strict --quiet kind-config/monitoring/*.yaml

# kind's own config: no schema is published, so check its fields against
# kind's v1alpha4 types (pkg/apis/config/v1alpha4/types.go), which kind
# decodes strictly (an unknown field fails `kind create cluster`).
check_kind_config() {
  python3 - "$1" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
errs = []
def only(obj, allowed, where):
    for key in obj or {}:
        if key not in allowed:
            errs.append(f"{where}: unknown field {key}")
only(doc, {"kind", "apiVersion", "name", "nodes", "networking", "featureGates", "runtimeConfig",
           "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902", "containerdConfigPatches",
           "containerdConfigPatchesJSON6902"}, "Cluster")
if doc.get("kind") != "Cluster" or doc.get("apiVersion") != "kind.x-k8s.io/v1alpha4":
    errs.append("not a kind.x-k8s.io/v1alpha4 Cluster")
net = doc.get("networking") or {}
only(net, {"ipFamily", "apiServerPort", "apiServerAddress", "podSubnet", "serviceSubnet",
           "disableDefaultCNI", "kubeProxyMode", "dnsSearch"}, "networking")
if net.get("ipFamily", "ipv4") not in ("ipv4", "ipv6", "dual"):
    errs.append(f"networking.ipFamily: {net['ipFamily']}")
if net.get("kubeProxyMode", "iptables") not in ("iptables", "ipvs", "nftables", "none"):
    errs.append(f"networking.kubeProxyMode: {net['kubeProxyMode']}")
if net.get("disableDefaultCNI") is not True:
    errs.append("networking.disableDefaultCNI must be true: podmeter is the CNI")
if net.get("ipFamily") == "dual" and len(str(net.get("podSubnet", "x,y")).split(",")) != 2:
    errs.append("dual stack needs one pod subnet per family")
roles = []
for i, node in enumerate(doc.get("nodes") or []):
    only(node, {"role", "image", "labels", "extraMounts", "extraPortMappings", "gpus",
                "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902"}, f"nodes[{i}]")
    roles.append(node.get("role", "control-plane"))
if any(r not in ("control-plane", "worker") for r in roles) or "control-plane" not in roles:
    errs.append(f"node roles: {roles}")
print("\n".join(errs) or f"ok: {len(roles)} nodes {roles}, ipFamily {net.get('ipFamily', 'ipv4')}")
sys.exit(1 if errs else 0)
PY
}
step "kind-config/kind-cluster.yaml: kind v1alpha4 fields" check_kind_config kind-config/kind-cluster.yaml

# Scripts that cannot run here (kind, Docker) or only slowly (image build).
check_scripts() {
  local f
  for f in "$@"; do bash -n "$f" || return 1; done
  if command -v shellcheck >/dev/null 2>&1; then
    shellcheck -x "$@"
  else
    notes+=("shellcheck not installed: $* checked with bash -n only")
  fi
}
step "scripts: kind-config/up.sh scripts/image*.sh" \
  check_scripts kind-config/up.sh kind-config/preflight.sh kind-config/tests/preflight-test.sh \
  scripts/image.sh scripts/image-check.sh scripts/image-lib.sh
# up.sh's preflight with stub tools and a fake /proc and /sys: it stops
# before building, naming the fix (kind-config/tests/preflight-test.sh).
step "kind-config/up.sh preflight (stub tools)" bash kind-config/tests/preflight-test.sh

# The Docker path (Containerfile.build) must build what the scratch path does.
check_containerfiles() {
  diff <(sh kind-config/image/binaries.sh kind-config/image/Containerfile) \
       <(sh kind-config/image/binaries.sh kind-config/image/Containerfile.build)
}
step "kind-config/image: Containerfile and Containerfile.build copy the same binaries" check_containerfiles
if command -v hadolint >/dev/null 2>&1; then
  step "hadolint kind-config/image/Containerfile*" hadolint kind-config/image/Containerfile kind-config/image/Containerfile.build
else
  notes+=("hadolint not installed (scripts/setup.sh): the Containerfiles were not linted")
fi

echo "check-assets summary:"
printf '  %s\n' "${results[@]}"
[ ${#notes[@]} -eq 0 ] || printf '  note: %s\n' "${notes[@]}"
if [ "$failed" -ne 0 ]; then echo "check-assets: FAILED" >&2; exit 1; fi
echo "check-assets: all passed"
