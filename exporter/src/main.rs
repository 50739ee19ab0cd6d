//! podmeter-exporter: serves the per-pod counters pinned by the podmeter CNI
//! plugin as Prometheus metrics, reading the pins on every scrape.

mod cli;
mod hash_password;
mod metrics;
mod web;

use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use podmeter_ebpf::PinLayout;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    cli::Args,
    metrics::collector,
    web::{
        auth, http, ready, server, tls,
        web_config::{TlsVersion, WebConfig},
    },
};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(cli::Command::HashPassword) = args.command {
        return hash_password::run();
    }
    args.log.init();
    podmeter_daemon::run(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let layout = PinLayout::new(&args.pin_path);
    let scraper = Arc::new(collector::Scraper::new(layout.clone()));
    let app = http::router(scraper, &args.telemetry_path, args.max_requests);
    let (app, tls) = match &args.web_config_file {
        None => (app, None),
        Some(path) => {
            let tls = check_web_config(path)?;
            (auth::layer(app, path), tls)
        }
    };
    // After the auth layer: the kubelet's probe has no credentials.
    let app = app.merge(ready::router(layout));
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
        tls = tls.is_some(),
        "listening"
    );
    server::serve(
        listener,
        app,
        tls,
        shutdown,
        args.max_connections,
        args.shutdown_timeout,
    )
    .await;
    info!("stopped");
    Ok(())
}

/// Refuses to start on a web config file that is not valid now, TLS files
/// included (they are read again for each connection); `Some` for TLS.
fn check_web_config(path: &std::path::Path) -> anyhow::Result<Option<tls::Acceptor>> {
    let config = WebConfig::load(path)?;
    let tls = match &config.tls {
        Some(settings) => {
            tls::server_config(settings)
                .map_err(|e| anyhow::anyhow!("web config file {}: {e}", path.display()))?;
            if settings.versions().0 < TlsVersion::TLS12 {
                warn!("min_version below TLS12: rustls speaks TLS 1.2 and 1.3 only");
            }
            Some(tls::Acceptor::new(path))
        }
        None => None,
    };
    info!(
        web_config_file = %path.display(),
        tls = tls.is_some(),
        basic_auth_users = config.users.len(),
        "web config loaded"
    );
    Ok(tls)
}
