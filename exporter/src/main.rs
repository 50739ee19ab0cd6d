//! podmeter-exporter: serves the per-pod counters pinned by the podmeter CNI
//! plugin as Prometheus metrics, reading the pins on every scrape.

mod absent;
mod bpf_stats;
mod cli;
mod collector;
mod format;
mod http;
mod limit;
mod pods;
mod server;

use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use podmeter_ebpf::PinLayout;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::cli::{Args, LogFormat};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "starting the async runtime failed");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &Args) {
    let level = tracing::Level::from(args.log_level);
    match args.log_format {
        LogFormat::Logfmt => tracing_logfmt::builder()
            .subscriber_builder()
            .with_writer(std::io::stderr)
            .with_max_level(level)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_max_level(level)
            .init(),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let registry = Arc::new(collector::registry(PinLayout::new(&args.pin_path)));
    let app = http::router(registry, &args.telemetry_path, args.max_requests);
    let listener = TcpListener::bind(args.listen_address)
        .await
        .with_context(|| format!("listening on {}", args.listen_address))?;
    let address = listener.local_addr().context("reading the bound address")?;
    let shutdown = server::shutdown_signal().context("installing the signal handlers")?;
    info!(
        %address,
        telemetry_path = %args.telemetry_path,
        pin_path = %args.pin_path.display(),
        max_requests = args.max_requests,
        max_connections = args.max_connections,
        "listening"
    );
    server::serve(
        listener,
        app,
        shutdown,
        args.max_connections,
        args.shutdown_timeout,
    )
    .await;
    info!("stopped");
    Ok(())
}
