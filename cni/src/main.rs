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
    let plugin = Plugin::default().msg(concat!("podmeter ", env!("CARGO_PKG_VERSION")));
    if plugin.run(&cmd::Podmeter).is_err() {
        // The error result is already on stdout.
        std::process::exit(1);
    }
}
