//! What serves the metrics: the HTTP server and its routes, its limits,
//! TLS, basic auth and the web config file that sets them, and the
//! readiness probe.

pub mod auth;
pub mod gzip;
pub mod http;
pub mod limit;
pub mod ready;
pub mod server;
pub mod tls;
pub mod web_config;
