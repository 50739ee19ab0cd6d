//! Basic auth and response headers from the web config file, read again
//! for every request as the toolkit does, so users added or removed apply
//! without a restart.
//!
//! Under a flood of wrong passwords: a credential verified before is
//! answered from the cache and never waits for bcrypt; one bcrypt run at a
//! time, and an unverified request that finds it busy is answered 429 at
//! once (closing its connection) rather than queueing with a connection
//! slot held; an unknown user costs what the costliest known one does.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Request, State},
    http::{
        header::{AUTHORIZATION, CONNECTION, RETRY_AFTER, WWW_AUTHENTICATE},
        HeaderMap, HeaderValue, StatusCode,
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use tracing::{debug, error};

use crate::web::web_config::WebConfig;

/// Salt and digest of a bcrypt hash whose password is random and was
/// thrown away. Verified for unknown users, at the highest cost among the
/// configured users ([`decoy_hash`]), so that a wrong user costs as much as
/// a wrong password and does not show which users exist.
const DECOY_SALT_AND_DIGEST: &str = "tM7IUzYGpoI1Y9vvzE53SOsbC83QJyByhMZsJDQL5gsh.XJ775eve";

/// Remembered verifications, as the toolkit keeps (100): bcrypt is slow on
/// purpose and Prometheus sends the same credentials every scrape.
const CACHE_SIZE: usize = 100;

/// Every route of `app` behind the web config file at `path`.
pub fn layer(app: Router, path: &Path) -> Router {
    let guard = Arc::new(Guard {
        path: path.into(),
        cache: Mutex::new(HashMap::new()),
        bcrypt: Semaphore::new(1),
    });
    app.layer(middleware::from_fn_with_state(guard, check))
}

struct Guard {
    path: Arc<Path>,
    /// Keyed by a digest of user, hash and password: the cache holds no
    /// password, and a changed hash in the file is a new key.
    cache: Mutex<HashMap<[u8; 32], bool>>,
    /// One bcrypt run at a time (as the toolkit): a flood of wrong
    /// passwords costs one core, not all. Never waited for (see `Verdict::Busy`).
    bcrypt: Semaphore,
}

/// What a request's credentials come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Denied,
    /// Not verified before, and bcrypt is busy with another request: no
    /// queue, whose waiters would hold connection slots for as long as the
    /// hashes ahead of them take (10 s each at cost 17).
    Busy,
}

async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let path = guard.path.clone();
    let config = match tokio::task::spawn_blocking(move || WebConfig::load(&path)).await {
        Ok(Ok(config)) => config,
        Ok(Err(e)) => {
            error!(error = %e, "web config file no longer valid; answering 500");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Err(e) => {
            error!(error = %e, "reading the web config file failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let verdict = if config.users.is_empty() {
        Verdict::Allowed
    } else {
        guard.authorized(&config, req.headers()).await
    };
    let mut response = match verdict {
        Verdict::Allowed => next.run(req).await,
        Verdict::Denied => (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"))],
            "Unauthorized\n",
        )
            .into_response(),
        Verdict::Busy => (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (RETRY_AFTER, HeaderValue::from_static("1")),
                (CONNECTION, HeaderValue::from_static("close")),
            ],
            "Too many unverified credentials at once, try again later.\n",
        )
            .into_response(),
    };
    // On every answer, 401 included, as the toolkit does.
    for (name, value) in config.headers {
        response.headers_mut().insert(name, value);
    }
    response
}

impl Guard {
    async fn authorized(&self, config: &WebConfig, headers: &HeaderMap) -> Verdict {
        let Some((user, password)) = credentials(headers) else {
            debug!("no basic auth credentials");
            return Verdict::Denied;
        };
        let (hash, known) = match config.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (decoy_hash(config.users.values()), false),
        };
        let key = cache_key(&user, &hash, &password);
        let cached = self.cache.lock().expect("not poisoned").get(&key).copied();
        let valid = match cached {
            Some(valid) => valid,
            None => {
                let Ok(_one) = self.bcrypt.try_acquire() else {
                    debug!(user, "bcrypt busy: answering 429");
                    return Verdict::Busy;
                };
                let valid = tokio::task::spawn_blocking(move || {
                    bcrypt::verify(&password, &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                remember(&mut self.cache.lock().expect("not poisoned"), key, valid);
                valid
            }
        };
        if valid && known {
            Verdict::Allowed
        } else {
            debug!(user, "wrong basic auth credentials");
            Verdict::Denied
        }
    }
}

/// The decoy at the highest cost of `hashes` (each already checked to be a
/// bcrypt hash when the file was read).
fn decoy_hash<'a>(hashes: impl Iterator<Item = &'a String>) -> String {
    let cost = hashes
        .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
        .map(|p| p.get_cost())
        .max()
        .unwrap_or(bcrypt::DEFAULT_COST);
    format!("$2b${cost:02}${DECOY_SALT_AND_DIGEST}")
}

/// User and password of an `Authorization: Basic` header (scheme in any case).
fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

fn cache_key(user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in [user.as_bytes(), hash.as_bytes(), password] {
        // Length-prefixed, so that no two triples share an encoding.
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    digest.finalize().into()
}

/// Inserts, first dropping a tenth of the entries if full (which ones does
/// not matter: a dropped entry costs one more bcrypt run).
fn remember(cache: &mut HashMap<[u8; 32], bool>, key: [u8; 32], valid: bool) {
    if cache.len() >= CACHE_SIZE {
        let drop: Vec<_> = cache.keys().take(CACHE_SIZE / 10).copied().collect();
        for k in drop {
            cache.remove(&k);
        }
    }
    cache.insert(key, valid);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn credentials_are_parsed_as_go_does() {
        // "prometheus:s3cr:et"
        let h = basic("Basic cHJvbWV0aGV1czpzM2NyOmV0");
        assert_eq!(
            credentials(&h),
            Some(("prometheus".into(), b"s3cr:et".to_vec()))
        );
        assert!(credentials(&basic("bAsIc cHJvbWV0aGV1czpzM2NyOmV0")).is_some());
        // No colon, not base64, another scheme, nothing.
        assert_eq!(credentials(&basic("Basic cHJvbWV0aGV1cw==")), None);
        assert_eq!(credentials(&basic("Basic !!!")), None);
        assert_eq!(credentials(&basic("Bearer cHJvbWV0aGV1czpz")), None);
        assert_eq!(credentials(&HeaderMap::new()), None);
    }

    #[test]
    fn the_decoy_costs_what_the_costliest_user_does() {
        let cost = |hashes: &[&str]| {
            let hashes: Vec<String> = hashes.iter().map(|h| h.to_string()).collect();
            let decoy: bcrypt::HashParts = decoy_hash(hashes.iter()).parse().unwrap();
            decoy.get_cost()
        };
        let four = "$2b$04$abcdefghijklmnopqrstuu5Z4Tk8GfRkUE7M3u0yDbSSeVTeRR8u6";
        let seventeen = "$2b$17$J7LfNaCD0JfT1EvpGTmc7OMKdCMYVCz51d35nBE.mAm4LVeUIrMdu";
        assert_eq!(cost(&[four]), 4);
        assert_eq!(cost(&[four, seventeen]), 17);
        assert_eq!(cost(&[]), bcrypt::DEFAULT_COST);
    }

    /// Structural, not timed: with the bcrypt permit held (a verification
    /// in progress), a cached credential is answered, an unverified one
    /// is told to come back, and neither waits for the permit.
    #[tokio::test]
    async fn cached_credentials_never_wait_for_bcrypt() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let config = WebConfig {
            tls: None,
            users: [("prometheus".to_owned(), hash)].into(),
            headers: Vec::new(),
        };
        let guard = Guard {
            path: Path::new("/unused").into(),
            cache: Mutex::new(HashMap::new()),
            bcrypt: Semaphore::new(1),
        };
        // "prometheus:right", "prometheus:wrong", "nobody:right"
        let right = basic("Basic cHJvbWV0aGV1czpyaWdodA==");
        let wrong = basic("Basic cHJvbWV0aGV1czp3cm9uZw==");
        let nobody = basic("Basic bm9ib2R5OnJpZ2h0");
        assert_eq!(guard.authorized(&config, &right).await, Verdict::Allowed);
        assert_eq!(guard.authorized(&config, &wrong).await, Verdict::Denied);

        let _held = guard.bcrypt.try_acquire().unwrap();
        assert_eq!(guard.authorized(&config, &right).await, Verdict::Allowed);
        assert_eq!(guard.authorized(&config, &wrong).await, Verdict::Denied);
        assert_eq!(guard.authorized(&config, &nobody).await, Verdict::Busy);
    }

    #[test]
    fn cache_keys_separate_their_parts_and_the_cache_stays_bounded() {
        assert_ne!(cache_key("ab", "c", b""), cache_key("a", "bc", b""));
        assert_ne!(cache_key("a", "h", b"p"), cache_key("a", "h2", b"p"));
        let mut cache = HashMap::new();
        for i in 0..(3 * CACHE_SIZE) {
            remember(&mut cache, cache_key(&i.to_string(), "h", b"p"), true);
            assert!(cache.len() <= CACHE_SIZE);
        }
        // The newest is always kept.
        assert!(cache.contains_key(&cache_key(&(3 * CACHE_SIZE - 1).to_string(), "h", b"p")));
    }
}
