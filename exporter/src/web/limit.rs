//! Caps on concurrent scrapes and open connections. Beyond a cap the
//! answer is 503 at once, as node_exporter's `--web.max-requests` does:
//! queueing would only make every waiting scrape time out together.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::MethodRouter,
    Router,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

/// At most `max` requests of `route` at a time (0: no limit).
pub fn concurrent_requests<S>(route: MethodRouter<S>, max: usize) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    if max == 0 {
        return route;
    }
    let slots = Arc::new(RequestSlots {
        free: Semaphore::new(max),
        max,
    });
    route.route_layer(middleware::from_fn_with_state(slots, one_request))
}

struct RequestSlots {
    free: Semaphore,
    max: usize,
}

async fn one_request(State(slots): State<Arc<RequestSlots>>, req: Request, next: Next) -> Response {
    // Held until the response is produced, i.e. for the whole read of the pins.
    let Ok(_slot) = slots.free.try_acquire() else {
        debug!(max = slots.max, "limit of concurrent requests reached");
        let body = format!(
            "Limit of concurrent requests reached ({}), try again later.\n",
            slots.max
        );
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    };
    next.run(req).await
}

/// Slots for open connections.
#[derive(Debug, Clone)]
pub struct Connections(Arc<Semaphore>);

impl Connections {
    /// At most `max` open connections (0: no limit).
    pub fn new(max: usize) -> Self {
        let max = if max == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max
        };
        Self(Arc::new(Semaphore::new(max)))
    }

    /// A slot for a new connection, to hold while it is open; `None` when
    /// all are taken.
    pub fn try_open(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// Answers a connection beyond the cap: 503 to anything, then it closes.
pub fn over_capacity() -> Router {
    Router::new().fallback(|| async {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many open connections, try again later.\n",
        )
    })
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, thread, time::Duration};

    use axum::routing::get;
    use podmeter_testkit::http;
    use tokio::net::TcpListener;

    use super::*;

    /// A route whose requests wait inside the handler until the test lets
    /// them go: requests as slow as the test wants, without timing.
    #[derive(Clone)]
    struct Gate {
        entered: mpsc::SyncSender<()>,
        release: Arc<Semaphore>,
    }

    async fn wait_at_gate(State(gate): State<Gate>) -> &'static str {
        gate.entered.send(()).unwrap();
        gate.release.acquire().await.unwrap().forget();
        "done"
    }

    #[test]
    fn requests_beyond_the_limit_get_503_at_once() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (entered, entered_rx) = mpsc::sync_channel(16);
        let release = Arc::new(Semaphore::new(0));
        let gate = Gate {
            entered,
            release: release.clone(),
        };
        let app = Router::new()
            .route("/slow", concurrent_requests(get(wait_at_gate), 2))
            .route("/", get(|| async { "landing" }))
            .with_state(gate);
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let never = std::future::pending();
        runtime.spawn(crate::web::server::serve(
            listener,
            app,
            None,
            never,
            0,
            Duration::from_secs(1),
        ));

        let slow: Vec<_> = (0..2)
            .map(|_| thread::spawn(move || http::get(addr, "/slow", None).status))
            .collect();
        for _ in 0..2 {
            entered_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a slow request reached its handler");
        }
        let third = http::get(addr, "/slow", None);
        assert_eq!(third.status, 503);
        assert_eq!(
            third.body,
            "Limit of concurrent requests reached (2), try again later.\n"
        );
        // Other routes are not limited.
        assert_eq!(http::get(addr, "/", None).status, 200);

        release.add_permits(2);
        for request in slow {
            assert_eq!(request.join().unwrap(), 200);
        }
        release.add_permits(1);
        assert_eq!(http::get(addr, "/slow", None).status, 200);
    }
}
