//! `podmeter`: a CNI plugin that wires pods onto a bridge and meters them
//! with eBPF. Its stdout is the CNI result; logs go to stderr only.

#[cfg(test)]
mod agent_conflist_tests;
mod child;
mod cmd;
mod cni_args;
mod config;
mod error;
mod ipam;
mod masq;
mod net;
mod reply_version;
/// The agent's table of special-purpose space, shared file-wise: the
/// plugin links no agent code (kube, tokio's multi-thread runtime).
#[path = "../../agent/src/special.rs"]
mod special;
mod timing;

use std::panic::{catch_unwind, AssertUnwindSafe};

use rscni_plugin::{cni::Plugin, version::PluginInfo};
use tracing_subscriber::{filter::Targets, prelude::*};

fn main() {
    // The runtime captures stderr; stdout must carry nothing but the result.
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(log_filter())
        .init();
    timing::start();
    // No about text: with one, rscni (like the Go skel) answers a missing
    // CNI_COMMAND with help and success; a runtime's mistake should be the
    // spec's error 4 instead.
    let version = reply_version::config_version();
    let plugin = match version {
        Some(v) => Plugin::new(v, PluginInfo::default().supported_versions().to_vec()),
        None => Plugin::default(),
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| plugin.run(&cmd::Podmeter)));
    timing::finish();
    match outcome {
        Ok(Ok(())) => {}
        // The error result is already on stdout.
        Ok(Err(_)) => std::process::exit(1),
        // A bug must still answer as the spec says; ADD's rollback has run
        // while the panic unwound.
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let version = version.unwrap_or(PluginInfo::default().cni_version());
            println!("{}", error::internal_error(&version.to_string(), &msg));
            std::process::exit(1);
        }
    }
}

/// `PODMETER_LOG`: `warn` unless it says otherwise, in `EnvFilter`'s
/// `target=level,…` syntax. `Targets`, not `EnvFilter`: the latter links
/// regex and its Unicode tables, whose relocations alone made every start
/// of this short-lived process ~0.3 ms slower.
fn log_filter() -> Targets {
    let default = Targets::new().with_default(tracing::Level::WARN);
    match std::env::var("PODMETER_LOG") {
        Err(_) => default,
        Ok(spec) => spec.parse().unwrap_or_else(|e| {
            eprintln!("podmeter: ignoring PODMETER_LOG={spec:?}: {e}");
            default
        }),
    }
}
