//! Routes: the landing page, the metrics, and 404/405 for anything else.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{
        header::{ACCEPT, CONTENT_ENCODING, CONTENT_TYPE, VARY},
        HeaderMap, HeaderValue, StatusCode,
    },
    response::{Html, IntoResponse, Response},
    routing::get,
    Router,
};
use tracing::error;

use crate::{
    metrics::{collector::Scraper, format::Format},
    web::{gzip, limit},
};

/// `telemetry_path` must be absolute and not `/` (the flag parser checks);
/// at most `max_requests` scrapes run at a time (0: no limit).
pub fn router(scraper: Arc<Scraper>, telemetry_path: &str, max_requests: usize) -> Router {
    let page = Html(landing_page(telemetry_path));
    Router::new()
        .route("/", get(move || std::future::ready(page.clone())))
        .route(
            telemetry_path,
            limit::concurrent_requests(get(metrics), max_requests),
        )
        // A fallback of this router's own, so that a layer over it (basic
        // auth) still covers unknown paths once another router (`/readyz`)
        // is merged in: theirs would be a new, unlayered one.
        .fallback(|| std::future::ready(StatusCode::NOT_FOUND))
        .with_state(scraper)
}

/// Scrapes, which reads the pins: blocking syscalls, so off the async
/// workers, and gzips there too if asked. Errors are never compressed.
async fn metrics(State(scraper): State<Arc<Scraper>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let format = Format::negotiate(Some(&accept));
    let gzip = gzip::accepted(&headers);
    let scrape = move || {
        let body = scraper.render(format)?;
        Ok(if gzip {
            gzip::compress(body.as_bytes())
        } else {
            body.into_bytes()
        })
    };
    match tokio::task::spawn_blocking(scrape).await {
        Ok(Ok(body)) => {
            let mut response = (
                [
                    (CONTENT_TYPE, format.content_type()),
                    (VARY, "Accept, Accept-Encoding"),
                ],
                body,
            )
                .into_response();
            if gzip {
                response
                    .headers_mut()
                    .insert(CONTENT_ENCODING, HeaderValue::from_static(gzip::GZIP));
            }
            response
        }
        Ok(Err(std::fmt::Error)) => {
            error!("encoding the metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(e) => {
            error!(error = %e, "the scrape task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn landing_page(telemetry_path: &str) -> String {
    let path = escape_html(telemetry_path);
    format!(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>podmeter exporter</title></head>\n\
         <body>\n<h1>podmeter exporter</h1>\n\
         <p>Per-pod network counters from podmeter's eBPF programs, version {}.</p>\n\
         <p><a href=\"{path}\">Metrics</a></p>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn escape_html(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landing_page_links_the_escaped_metrics_path() {
        let page = landing_page("/m?a=1&b=\"2\"");
        assert!(page.contains("<a href=\"/m?a=1&amp;b=&quot;2&quot;\">Metrics</a>"));
    }
}
