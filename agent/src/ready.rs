//! `/readyz` and `/healthz` for the kubelet's probes. Ready means the node's
//! conflist is written for the ranges the agent last saw: until then the
//! runtime has no network for pods here, and a rolling update should wait.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use axum::{extract::State, http::StatusCode, routing::get, Router};
use tokio::net::TcpListener;

/// Shared by the watch loop, which sets it, and the server, which reports it.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        // Alive while it answers: the watch loop never blocks the runtime.
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.get() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "conflist not written yet\n",
        )
    }
}

/// Serves until the process ends; the agent has nothing in flight to drain.
pub async fn serve(listener: TcpListener, readiness: Readiness) -> std::io::Result<()> {
    axum::serve(listener, router(readiness)).await
}
