//! Gzip for scrape bodies, as node_exporter (client_golang's promhttp)
//! answers them: compressed only when the request's `Accept-Encoding`
//! offers gzip, uncompressed otherwise. A full node's body is tens of MB of
//! highly repetitive text; Prometheus always asks for gzip.

use std::io::Write;

use axum::http::{header::ACCEPT_ENCODING, HeaderMap};
use flate2::{write::GzEncoder, Compression};

/// The coding name in `Content-Encoding`.
pub const GZIP: &str = "gzip";

/// The level scrapes are compressed at: the fastest. `BENCHMARKS.md` §5
/// measures it against level 6 (client_golang's default): at 8,192 pods
/// level 1 sends 13x fewer bytes than no compression for ~1/4 of level 6's
/// added time, whose body is only 0.69x level 1's.
const LEVEL: u32 = 1;

/// Whether the client accepts gzip: an `Accept-Encoding` element (any of
/// the header's lines) names `gzip` with a non-zero q-value. A `*` alone
/// gets identity, as client_golang, whose first offer is identity, answers.
pub fn accepted(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|element| {
            let mut parts = element.split(';').map(str::trim);
            parts.next().is_some_and(|c| c.eq_ignore_ascii_case(GZIP))
                && parts.all(|p| !is_zero_q(p))
        })
}

/// `q=0`, `q=0.0`, `q=0.000`: "not acceptable" (RFC 9110 §12.4.2).
fn is_zero_q(param: &str) -> bool {
    param
        .split_once('=')
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
        .is_some_and(|(_, v)| v.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
}

/// `body`, gzipped in one go (it is already whole in memory).
pub fn compress(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 8), Compression::new(LEVEL));
    // Writing into a Vec cannot fail.
    encoder.write_all(body).expect("gzip into a Vec");
    encoder.finish().expect("gzip into a Vec")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use axum::http::HeaderValue;
    use flate2::read::GzDecoder;

    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepted(&headers)
    }

    #[test]
    fn gzip_is_taken_only_when_offered_with_a_non_zero_q() {
        // Prometheus' own header.
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["deflate, GZip;q=0.5, br"]));
        assert!(accepts(&["identity", "gzip"]));
        assert!(accepts(&["gzip;q=1.0"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&["identity"]));
        assert!(!accepts(&["*"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip; Q=0.000"]));
        assert!(!accepts(&["x-gzip, gzipped"]));
    }

    #[test]
    fn compressed_bodies_decompress_to_the_same_bytes() {
        let body = "podmeter_pods 8192\n".repeat(1000);
        let gz = compress(body.as_bytes());
        assert!(gz.len() < body.len() / 10, "{}", gz.len());
        let mut out = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, body.as_bytes());
    }
}
