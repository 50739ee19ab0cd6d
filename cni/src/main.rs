//! `podmeter`: a CNI plugin that wires pods onto a bridge and meters them
//! with eBPF. Its stdout is the CNI result; logs go to stderr only.

mod cmd;
mod cni_args;
mod config;
mod error;
mod ipam;
mod masq;
mod net;

use rscni_plugin::cni::Plugin;
use tracing_subscriber::EnvFilter;

fn main() {
    // The runtime captures stderr; stdout must carry nothing but the result.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("PODMETER_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    // No about text: with one, rscni (like the Go skel) answers a missing
    // CNI_COMMAND with help and success; a runtime's mistake should be the
    // spec's error 4 instead.
    if Plugin::default().run(&cmd::Podmeter).is_err() {
        // The error result is already on stdout.
        std::process::exit(1);
    }
}
