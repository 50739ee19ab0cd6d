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
cargo test --workspace --locked
# Prometheus configs, rules and their unit tests, the dashboard, the manifests.
bash scripts/check-assets.sh
