//! `pm-bench-static`: benchmark-only. Serves one file, read once into
//! memory, at every path of 127.0.0.1:0 with axum on hyper's HTTP/1, as
//! `podmeter-exporter` serves a scrape: what fetching a response of that
//! size costs with nothing to compute, the floor of a scrape that size
//! (`scripts/bench/scrape-full.sh`). Logs `address=IP:PORT` to stderr once
//! listening, as the exporter does.

use std::{path::PathBuf, process::ExitCode};

use axum::{body::Bytes, http::header::CONTENT_TYPE, Router};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    /// The body to serve.
    #[arg(long)]
    file: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match serve(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pm-bench-static: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cli: &Cli) -> std::io::Result<()> {
    let body = Bytes::from(std::fs::read(&cli.file)?);
    let app = Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                body,
            )
        }
    });
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        eprintln!("address={}", listener.local_addr()?);
        axum::serve(listener, app).await
    })
}
