//! web-config.yml's `basic_auth_users`: user name → bcrypt hash.
//!
//! bcrypt is slow on purpose (tens of ms at the usual cost), and Prometheus
//! sends the same credentials every scrape, so a pair that verified once is
//! remembered by its SHA-256 (never the password itself) and costs a hash
//! afterwards. Verifications run one at a time on the blocking pool: a
//! client guessing passwords can keep one core busy at most, and never the
//! async workers that serve scrapes and launchers.
use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
};

use axum::http::HeaderValue;
use base64::Engine as _;
use tokio::sync::Semaphore;

use super::config::ConfigError;

/// Verified pairs remembered at most (cleared when full: a site has a few
/// scrapers, not hundreds).
const REMEMBERED_PAIRS: usize = 64;

/// Verified against when the user is unknown, so that an unknown user
/// takes as long as a wrong password (no user-name probing by timing).
/// The hash of a random string (made with `htpasswd -nBC 10`), at cost 10.
const DECOY_HASH: &str = "$2y$10$s53/4J0wlWSkTzmqD1v8sOaTBUmZJkXCs9AfHhr3BSsy/64kI93.m";

pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
    one_at_a_time: Semaphore,
}

impl BasicAuth {
    /// No user: every request is admitted.
    pub fn none() -> Self {
        Self {
            users: BTreeMap::new(),
            verified: Mutex::new(HashSet::new()),
            one_at_a_time: Semaphore::new(1),
        }
    }

    /// Checks every hash is a bcrypt hash, naming the user whose is not.
    pub fn new(path: &Path, users: Option<&BTreeMap<String, String>>) -> Result<Self, ConfigError> {
        let users = users.cloned().unwrap_or_default();
        for (user, hash) in &users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    key: format!("basic_auth_users.{user}"),
                    reason: "not a bcrypt hash (make one with `htpasswd -nBC 10 USER`)".into(),
                });
            }
            if user.contains(':') {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    key: format!("basic_auth_users.{user}"),
                    reason: "a user name cannot contain ':' in basic auth".into(),
                });
            }
        }
        Ok(Self {
            users,
            ..Self::none()
        })
    }

    pub fn is_on(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether the request's `Authorization` header names a user with the
    /// right password (always true when no user is configured).
    pub async fn admits(self: &Arc<Self>, authorization: Option<&HeaderValue>) -> bool {
        if !self.is_on() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (DECOY_HASH.to_owned(), false),
        };
        let key = pair_key(&user, &hash, &password);
        if known && self.remembered(&key) {
            return true;
        }
        let Ok(_turn) = self.one_at_a_time.acquire().await else {
            return false;
        };
        let verified = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let admitted = verified && known;
        if admitted {
            self.remember(key);
        }
        admitted
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .is_ok_and(|verified| verified.contains(key))
    }

    fn remember(&self, key: [u8; 32]) {
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= REMEMBERED_PAIRS {
                verified.clear();
            }
            verified.insert(key);
        }
    }
}

/// `Basic base64(user:password)`.
fn credentials(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// SHA-256 over the three parts, each length-prefixed so that no two
/// different triples hash the same bytes.
fn pair_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        context.update(&(part.len() as u64).to_le_bytes());
        context.update(part.as_bytes());
    }
    let mut key = [0; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(users: &[(&str, &str)]) -> Arc<BasicAuth> {
        let users: BTreeMap<_, _> = users
            .iter()
            .map(|(user, password)| (user.to_string(), bcrypt::hash(password, 4).unwrap()))
            .collect();
        Arc::new(BasicAuth::new(Path::new("web.yml"), Some(&users)).unwrap())
    }

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    #[tokio::test]
    async fn right_password_admits_and_is_remembered() {
        let auth = auth(&[("prometheus", "s3cret")]);
        assert!(auth.admits(Some(&header("prometheus", "s3cret"))).await);
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert!(auth.admits(Some(&header("prometheus", "s3cret"))).await);
    }

    #[tokio::test]
    async fn wrong_password_unknown_user_and_no_header_are_refused() {
        let auth = auth(&[("prometheus", "s3cret")]);
        assert!(!auth.admits(Some(&header("prometheus", "guess"))).await);
        assert!(!auth.admits(Some(&header("root", "s3cret"))).await);
        assert!(!auth.admits(None).await);
        assert!(
            !auth
                .admits(Some(&HeaderValue::from_static("Bearer abc")))
                .await
        );
        assert!(auth.verified.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn no_users_means_open() {
        let auth = Arc::new(BasicAuth::none());
        assert!(auth.admits(None).await);
    }

    #[test]
    fn a_bad_hash_is_named() {
        let users = BTreeMap::from([("alice".to_string(), "plaintext".to_string())]);
        let error = BasicAuth::new(Path::new("web.yml"), Some(&users))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("basic_auth_users.alice"), "{error}");
    }

    #[test]
    fn the_decoy_hash_is_a_bcrypt_hash() {
        assert!(DECOY_HASH.parse::<bcrypt::HashParts>().is_ok());
    }
}
