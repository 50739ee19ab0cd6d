//! `/readyz`, `/healthz` and `/metrics`. Ready means the node's conflist is
//! written for the ranges the agent last saw and its routes were synced
//! with the node list: until then the runtime has no network for pods here,
//! or they cannot reach other nodes, and a rolling update should wait.
//! Ready stays set while the API server is unreachable: the conflist and
//! routes are kept as they were (fail static), and pods keep working.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, OnceLock,
};

use axum::{extract::State, http::StatusCode, routing::get, Router};
use tokio::net::TcpListener;

use crate::metrics::{self, Metrics};

/// Shared by the watch loop, which sets it, and the server, which reports it.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Parts>);

#[derive(Debug, Default)]
struct Parts {
    conflist: AtomicBool,
    routes: AtomicBool,
    /// What the kernel lacks, found once at start (it cannot change while
    /// the agent runs): every pod ADD would fail with the same message.
    kernel: OnceLock<Vec<String>>,
}

impl Readiness {
    pub fn set_kernel_missing(&self, missing: Vec<String>) {
        let _ = self.0.kernel.set(missing);
    }

    pub fn set_conflist(&self, written: bool) {
        self.0.conflist.store(written, Ordering::Relaxed);
    }

    pub fn set_routes(&self, synced: bool) {
        self.0.routes.store(synced, Ordering::Relaxed);
    }

    /// Whether ready, and what to say about it.
    fn report(&self) -> (bool, String) {
        let parts = [
            (self.0.conflist.load(Ordering::Relaxed), "conflist written"),
            (
                self.0.routes.load(Ordering::Relaxed),
                "routes synced with the node list",
            ),
        ];
        let missing: Vec<&str> = parts.iter().filter(|(ok, _)| !ok).map(|p| p.1).collect();
        if let Some(kernel) = self.0.kernel.get().filter(|k| !k.is_empty()) {
            let lines: String = kernel.iter().map(|k| format!("kernel: {k}\n")).collect();
            return (false, lines);
        }
        if missing.is_empty() {
            (true, "ok: conflist written, routes synced\n".into())
        } else {
            (false, format!("not yet: {}\n", missing.join(", ")))
        }
    }
}

pub fn router(readiness: Readiness, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/readyz", get(readyz).with_state(readiness))
        // Alive while it answers: the watch loop never blocks the runtime.
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::serve).with_state(metrics))
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, String) {
    match readiness.report() {
        (true, text) => (StatusCode::OK, text),
        (false, text) => (StatusCode::SERVICE_UNAVAILABLE, text),
    }
}

/// Serves until the process ends; the agent has nothing in flight to drain.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    axum::serve(listener, router(readiness, metrics)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_both_and_says_what_is_missing() {
        let r = Readiness::default();
        assert_eq!(
            r.report(),
            (
                false,
                "not yet: conflist written, routes synced with the node list\n".into()
            )
        );
        r.set_conflist(true);
        assert_eq!(
            r.report(),
            (false, "not yet: routes synced with the node list\n".into())
        );
        r.set_routes(true);
        assert!(r.report().0);
        r.set_kernel_missing(vec!["Linux 5.15 lacks bpf_loop".into()]);
        assert_eq!(
            r.report(),
            (false, "kernel: Linux 5.15 lacks bpf_loop\n".into())
        );
    }
}
