//! Helpers for podmeter's integration tests: a "node" network namespace with
//! its own pin path and IPAM data dir, pods as further namespaces, and the
//! real `podmeter` binary driven through the CNI protocol inside the node.
//!
//! Everything a test makes is owned by a guard whose `Drop` removes it, also
//! when the test panics. Nothing touches the machine's root namespace.

pub mod agent;
pub mod agent_conflist;
pub mod cni;
pub mod conflist;
pub mod containerd;
pub mod cri;
pub mod daemon;
pub mod daemonset;
pub mod exporter;
pub mod fake_apiserver;
pub mod frames;
pub mod image;
pub mod isolation;
pub mod leftovers;
pub mod netns;
pub mod nfqueue;
pub mod nft;
pub mod node;
pub mod packet;
pub mod podman;
pub mod prometheus;
pub mod services;
pub mod sim_cluster;
pub mod strace;
pub mod sysctl;
pub mod tcp;
pub mod traffic;

/// Plain HTTP for the exporter's and Prometheus' APIs (shared with the
/// exporter's unit tests, hence in the testkit).
pub use podmeter_testkit::http;

pub use cni::{CniOutput, SPEC_VERSIONS};
pub use netns::NetNs;
pub use node::{LinkStats, Node, Pod, TwoPods};

use std::path::PathBuf;

/// A binary of this workspace. `cargo test` does not build other packages'
/// binaries, so the test command builds them first (see `scripts/test.sh`).
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("PODMETER_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Sends `signal` to our own child `pid`; panics if it is gone.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("kill {pid} {signal}: {e}"));
}

/// A name unique to this process and call, for namespaces, pins and dirs.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
