//! The HTTP/1 server: request and connection limits, optional TLS, and a
//! graceful stop on SIGTERM/SIGINT.

use std::{future::Future, io, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    signal::unix::{signal, SignalKind},
};
use tracing::{debug, error, info, warn};

use crate::web::{
    limit::{self, Connections},
    tls,
};

/// Largest request head (request line and headers) read; hyper answers 431
/// beyond it. Its default, ~400 KiB, is far more than any scraper sends.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// A client must send its request head within this time (and, with TLS,
/// complete its handshake within it first). hyper restarts
/// this timer whenever a connection waits for a request head, also between
/// requests on a keep-alive connection: it is the idle timeout as well, so
/// an idle connection holds its slot for at most this long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection beyond the cap has this long to send the request its 503
/// answers (and as long again for a TLS handshake): it must not hold a
/// file descriptor for long.
const OVER_CAPACITY_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `app` on at most `max_connections` connections at a time (0: no
/// limit; one more gets a 503 and is closed), over TLS if `tls` is given,
/// until `shutdown` completes, then lets open requests finish for at most
/// `shutdown_timeout` (idle keep-alive connections close at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tls::Acceptor>,
    shutdown: impl Future<Output = ()>,
    max_connections: usize,
    shutdown_timeout: Duration,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD);
    let mut over_capacity = builder.clone();
    over_capacity
        .header_read_timeout(OVER_CAPACITY_HEADER_READ_TIMEOUT)
        .keep_alive(false);
    let over_capacity_app = limit::over_capacity();
    let connections = Connections::new(max_connections);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Taken here, in accept order, and given back when the connection ends.
                    let slot = connections.try_open();
                    let (builder, app, timeout) = if slot.is_some() {
                        (builder.clone(), app.clone(), HEADER_READ_TIMEOUT)
                    } else {
                        debug!(%peer, max_connections, "connection limit reached, answering 503");
                        (over_capacity.clone(), over_capacity_app.clone(), OVER_CAPACITY_HEADER_READ_TIMEOUT)
                    };
                    // Taken here, not in the task: a connection whose TLS handshake is
                    // still running when the shutdown starts is waited for too.
                    let watcher = graceful.watcher();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let result = match tls {
                            None => serve_connection(builder, stream, app, watcher).await,
                            Some(tls) => match tokio::time::timeout(timeout, tls.handshake(stream)).await {
                                Ok(Ok(stream)) => serve_connection(builder, stream, app, watcher).await,
                                Ok(Err(tls::HandshakeError::Reload(e))) => {
                                    error!(%peer, error = %e, "TLS handshake refused: the web config file is not valid");
                                    Ok(())
                                }
                                Ok(Err(e)) => {
                                    debug!(%peer, error = %e, "TLS handshake failed");
                                    Ok(())
                                }
                                Err(_) => {
                                    debug!(%peer, ?timeout, "TLS handshake timed out");
                                    Ok(())
                                }
                            },
                        };
                        if let Err(e) = result {
                            debug!(%peer, error = %e, "connection failed");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off, keep serving.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(timeout = %humantime::format_duration(shutdown_timeout), "requests still running at the shutdown timeout; dropping them");
    }
}

async fn serve_connection(
    builder: http1::Builder,
    // Plain TCP or TLS.
    stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
    app: Router,
    watcher: Watcher,
) -> hyper::Result<()> {
    let service = TowerToHyperService::new(app);
    watcher
        .watch(builder.serve_connection(TokioIo::new(stream), service))
        .await
}

/// Completes on the first SIGTERM or SIGINT. The handlers are installed
/// here, before the caller announces it is listening.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down");
    })
}
