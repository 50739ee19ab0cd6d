#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this). Root only:
# the integration tests make network namespaces and load eBPF programs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The integration tests drive the real binaries, which `cargo test` does not
# build for another package.
cargo build --workspace --bins --locked
# The image the manifests name (localhost/podmeter:dev), made by the script
# kind-config/up.sh uses, from the same Containerfile into the same archive,
# with a static debug build: a cold release build takes twice as long
# (~5.5 min here). tests/tests/image.rs runs it as the DaemonSet does.
bash scripts/image.sh --debug
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Root-only tests skip themselves for other users (see testkit/); here a
# skip would hide them, so it fails instead.
export PODMETER_REQUIRE_ROOT=1
cargo test --workspace --locked 2>&1 | tee "$log"
# Prometheus configs, rules and their unit tests, the dashboard, the manifests.
bash scripts/check-assets.sh

# Test hygiene: every test removes what it made, also when it fails.
leftovers=$( { ip netns list | grep -E '^pm(t|test|bench)-' || true
               ls -d /sys/fs/bpf/pmtest* 2>/dev/null || true; } )
if [ -n "$leftovers" ]; then
  echo "test.sh: tests left these behind:" >&2
  echo "$leftovers" >&2
  exit 1
fi

# One closing line for the whole suite (the last cargo block is doc tests,
# which has none).
total() { grep -E '^test result:' "$log" | grep -Eo "[0-9]+ $1" | awk '{n += $1} END {print n + 0}'; }
echo "podmeter: $(total passed) passed, $(total failed) failed"
