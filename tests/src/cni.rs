//! Driving the plugin the way a runtime does: env vars, config on stdin,
//! result or error JSON on stdout.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use serde_json::Value;

/// Every spec version the plugin must answer, oldest first.
pub const SPEC_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Debug)]
pub struct CniOutput {
    pub success: bool,
    /// Parsed stdout (`Value::Null` when empty).
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl CniOutput {
    /// The error code of a failed call; panics if it succeeded.
    pub fn code(&self) -> u64 {
        assert!(!self.success, "expected a failure, got {}", self.stdout);
        self.json["code"].as_u64().unwrap_or_else(|| {
            panic!(
                "no error code in {:?} (stderr {})",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics with the plugin's output unless the call succeeded.
    pub fn ok(self) -> Self {
        assert!(
            self.success,
            "plugin failed: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `cmd` with `env` (in addition to PATH) and `stdin`.
pub fn invoke(mut cmd: Command, env: &[(&str, String)], stdin: &[u8]) -> CniOutput {
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn plugin");
    // A plugin that fails before reading its config (no CNI_COMMAND, say)
    // closes stdin early: that is its answer, not the test's failure.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing the config: {e}"
        );
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"))
    };
    CniOutput {
        success: out.status.success(),
        json,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
