//! The metrics text checked by Prometheus' own linter, for the exporter's
//! unit tests and the integration tests alike.

use std::{
    io::Write,
    process::{Command, Stdio},
};

/// `promtool check metrics` exits 0 without a finding; fails (not skips)
/// if promtool is missing.
pub fn check_metrics(metrics: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (from Debian's prometheus package) must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics: {}\n{findings}\non:\n{metrics}",
        out.status
    );
}
