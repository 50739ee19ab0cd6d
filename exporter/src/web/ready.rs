//! `/readyz`: whether this exporter can read the node's pins, checked on
//! each probe by opening every pinned map. An open port says nothing about
//! that: on kernels before 6.5 with `kernel.unprivileged_bpf_disabled` set
//! (Debian's and Ubuntu's default) every `bpf()` call fails with EPERM
//! without `CAP_BPF`, and a wrong mount shows no pins.
//!
//! Outside basic auth, for the kubelet's probe: the answer names no pod.
//! A node where nothing is pinned yet (no pod wired since boot) is ready:
//! there is nothing to read, and a scrape says so too.

use axum::{http::StatusCode, routing::get, Router};
use podmeter_ebpf::{maps::PinnedMaps, PinLayout};
use tracing::warn;

use crate::metrics::absent;

pub fn router(layout: PinLayout) -> Router {
    Router::new().route(
        "/readyz",
        get(move || async move {
            match tokio::task::spawn_blocking(move || check(&layout)).await {
                Ok(Ok(text)) => (StatusCode::OK, text),
                Ok(Err(text)) => (StatusCode::SERVICE_UNAVAILABLE, text),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }),
    )
}

fn check(layout: &PinLayout) -> Result<String, String> {
    match PinnedMaps::open(layout) {
        Ok(_) => Ok("ok: the pinned maps are readable\n".into()),
        Err(e) if absent::not_pinned(&e) && matches!(layout.dir().try_exists(), Ok(false)) => {
            Ok("ok: nothing pinned yet (no pod wired on this node)\n".into())
        }
        Err(e) => {
            warn!(error = %e, "not ready: the pinned maps cannot be read");
            Err(format!("the pinned maps cannot be read: {e}\n"))
        }
    }
}
