//! The cluster API's authentication with a shared secret (`CLUSTER:SECRET`), on top of the
//! address allow list (`INTERNAL:IPADDRESSES`).
//!
//! Every request between gateways and media servers carries three headers: the sender's Unix
//! time, a random nonce, and an HMAC-SHA256, under a key derived from the secret, of the method,
//! path, time, nonce and a SHA-256 of the body. The receiver refuses (401, counted in
//! `switchyard_http_auth_failures_total`) a request whose signature does not match, whose time
//! is more than [`WINDOW`] away from its own clock, or whose nonce it has seen within the
//! window (a replay). HMAC rather than mutual TLS: every role already has the secret in its
//! settings, there are no certificates to issue, rotate or check for expiry, and a media server
//! that is reached by address inside a private network needs no name for a certificate.
//!
//! Signing does not hide what a request says, and a pipe's SRTP keys travel in the pipe
//! requests: with a secret they are sealed (AES-256-GCM under a second key derived from the
//! secret, [`ClusterSecret::seal`]), so no SRTP key crosses the network in clear.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{digest, hmac};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as BASE64;

/// The request headers: the sender's Unix time (seconds), a random nonce, the signature.
pub const TIME: &str = "x-switchyard-time";
pub const NONCE: &str = "x-switchyard-nonce";
pub const SIGNATURE: &str = "x-switchyard-signature";

/// How far a request's time may be from the receiver's clock, either way; nonces are
/// remembered this long (twice, for both sides of the window).
pub const WINDOW: Duration = Duration::from_secs(30);
/// A secret shorter than this is refused at start: it would be guessable.
pub const MIN_SECRET_LEN: usize = 16;
/// Nonces remembered at most: a flood of validly signed requests (only a holder of the secret
/// can make one) cannot grow memory without bound; past it, requests are refused until old
/// nonces expire.
const MAX_NONCES: usize = 100_000;
/// A sealed pipe key starts with this, so a key sent without a secret is told apart.
const SEALED: &str = "sealed:";

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request is not signed (the cluster API needs CLUSTER:SECRET on every role)")]
    Unsigned,
    #[error("the request's signature does not match (another CLUSTER:SECRET?)")]
    BadSignature,
    #[error("the request's time is {0} s away from ours (clocks apart, or a stale request)")]
    Stale(u64),
    #[error("the request was seen before (a replay)")]
    Replayed,
}

/// The keys derived from the cluster secret and the nonces seen lately.
#[derive(Clone)]
pub struct ClusterSecret {
    mac: hmac::Key,
    seal: Arc<LessSafeKey>,
    seen: Arc<Mutex<HashMap<String, u64>>>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// The keys for `secret`; `None` when it is shorter than [`MIN_SECRET_LEN`].
    pub fn new(secret: &str) -> Option<ClusterSecret> {
        if secret.len() < MIN_SECRET_LEN {
            return None;
        }
        // Two keys from one secret, each for one purpose.
        let derive = |purpose: &[u8]| {
            let root = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            hmac::sign(&root, purpose)
        };
        let mac = hmac::Key::new(
            hmac::HMAC_SHA256,
            derive(b"switchyard cluster api").as_ref(),
        );
        let seal = UnboundKey::new(&AES_256_GCM, derive(b"switchyard pipe keys").as_ref()).ok()?;
        Some(ClusterSecret {
            mac,
            seal: Arc::new(LessSafeKey::new(seal)),
            seen: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The three headers (name, value) for a request of `method` to `path` with `body`.
    pub fn headers(&self, method: &str, path: &str, body: &[u8]) -> [(&'static str, String); 3] {
        self.headers_at(method, path, body, unix_now())
    }

    /// The headers as [`ClusterSecret::headers`] makes them at Unix `time`.
    pub fn headers_at(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        time: u64,
    ) -> [(&'static str, String); 3] {
        let nonce = format!("{:032x}", rand::random::<u128>());
        let signature = self.signature(method, path, time, &nonce, body);
        [
            (TIME, time.to_string()),
            (NONCE, nonce),
            (SIGNATURE, signature),
        ]
    }

    /// Checks a request's headers (`time`, `nonce`, `signature`, as received) against its
    /// method, path and body, at the receiver's `now` (Unix seconds).
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        headers: [Option<&str>; 3],
        body: &[u8],
        now: u64,
    ) -> Result<(), Refusal> {
        let [Some(time), Some(nonce), Some(signature)] = headers else {
            return Err(Refusal::Unsigned);
        };
        let time: u64 = time.parse().map_err(|_| Refusal::Unsigned)?;
        let expected = self.signature(method, path, time, nonce, body);
        // Compared in constant time: the difference must not tell how much matched.
        let given = hex_decode(signature).ok_or(Refusal::BadSignature)?;
        let expected = hex_decode(&expected).ok_or(Refusal::BadSignature)?;
        if aws_lc_rs::constant_time::verify_slices_are_equal(&given, &expected).is_err() {
            return Err(Refusal::BadSignature);
        }
        let apart = now.abs_diff(time);
        if apart > WINDOW.as_secs() {
            return Err(Refusal::Stale(apart));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let forget_before = now.saturating_sub(2 * WINDOW.as_secs());
        if seen.len() >= MAX_NONCES {
            seen.retain(|_, at| *at >= forget_before);
        }
        if seen.len() >= MAX_NONCES || seen.contains_key(nonce) {
            return Err(Refusal::Replayed);
        }
        seen.insert(nonce.to_string(), time);
        Ok(())
    }

    fn signature(&self, method: &str, path: &str, time: u64, nonce: &str, body: &[u8]) -> String {
        let body_hash = digest::digest(&digest::SHA256, body);
        let mut ctx = hmac::Context::with_key(&self.mac);
        for part in [
            method.as_bytes(),
            path.as_bytes(),
            time.to_string().as_bytes(),
            nonce.as_bytes(),
        ] {
            ctx.update(part);
            ctx.update(b"\n");
        }
        ctx.update(body_hash.as_ref());
        hex_encode(ctx.sign().as_ref())
    }

    /// Seals a pipe key (its hex form) for a pipe request.
    pub fn seal(&self, key: &str) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut sealed = key.as_bytes().to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        if self
            .seal
            .seal_in_place_append_tag(nonce, Aad::empty(), &mut sealed)
            .is_err()
        {
            return String::new();
        }
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        format!("{SEALED}{}", BASE64.encode(out))
    }

    /// Opens a sealed pipe key; `None` when it is not one of ours.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let data = BASE64.decode(sealed.strip_prefix(SEALED)?).ok()?;
        let (nonce, ciphertext) = data.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// What the signature guard of a cluster API listener needs: the secret (none: requests pass
/// on their address alone, as before the setting existed) and how to count a refusal.
pub struct Signed {
    pub secret: Option<ClusterSecret>,
    pub refused: Box<dyn Fn() + Send + Sync>,
}

/// Bodies of cluster API requests are small JSON; anything larger is refused unread.
const MAX_BODY: usize = 1 << 20;

/// Axum middleware: passes a request whose signature verifies (or any, without a secret),
/// else answers 401 with the reason.
pub async fn guard(State(signed): State<Arc<Signed>>, request: Request, next: Next) -> Response {
    let Some(secret) = signed.secret.as_ref() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        (signed.refused)();
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let headers = [header(TIME), header(NONCE), header(SIGNATURE)];
    let path = parts.uri.path();
    if let Err(refusal) = secret.verify(parts.method.as_str(), path, headers, &bytes, now()) {
        (signed.refused)();
        tracing::warn!(%path, "cluster API request refused: {refusal}");
        let body = serde_json::json!({ "error": refusal.to_string() });
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A request of `method` to `url` with the JSON `body` (none: empty), signed when there is a
/// secret.
pub fn request(
    http: &reqwest::Client,
    secret: Option<&ClusterSecret>,
    method: reqwest::Method,
    url: &str,
    body: Option<&impl serde::Serialize>,
) -> reqwest::RequestBuilder {
    let bytes = body
        .and_then(|b| serde_json::to_vec(b).ok())
        .unwrap_or_default();
    let path = reqwest::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_default();
    let mut builder = http.request(method.clone(), url);
    if let Some(secret) = secret {
        for (name, value) in secret.headers(method.as_str(), &path, &bytes) {
            builder = builder.header(name, value);
        }
    }
    if body.is_some() {
        builder = builder
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes);
    }
    builder
}

/// Whether a pipe key was sealed (and needs the secret to open).
pub fn is_sealed(key: &str) -> bool {
    key.starts_with(SEALED)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The receiver's clock, for [`ClusterSecret::verify`].
pub fn now() -> u64 {
    unix_now()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef-cluster";

    fn received<'a>(h: &'a [(&'static str, String); 3]) -> [Option<&'a str>; 3] {
        [Some(&h[0].1), Some(&h[1].1), Some(&h[2].1)]
    }

    #[test]
    fn a_signed_request_passes_once_and_nothing_else_does() {
        let s = ClusterSecret::new(SECRET).unwrap();
        let body = br#"{"channel":"c"}"#;
        let h = s.headers("POST", "/cluster/v1/publish", body);
        let now = now();
        assert_eq!(
            s.verify("POST", "/cluster/v1/publish", received(&h), body, now),
            Ok(())
        );
        assert_eq!(
            s.verify("POST", "/cluster/v1/publish", received(&h), body, now),
            Err(Refusal::Replayed)
        );
        let h = s.headers("POST", "/cluster/v1/publish", body);
        for (method, path, body) in [
            ("PUT", "/cluster/v1/publish", &body[..]),
            ("POST", "/cluster/v1/subscribe", &body[..]),
            ("POST", "/cluster/v1/publish", b"{}"),
        ] {
            assert_eq!(
                s.verify(method, path, received(&h), body, now),
                Err(Refusal::BadSignature)
            );
        }
        let other = ClusterSecret::new("another secret, long enough").unwrap();
        assert_eq!(
            other.verify("POST", "/cluster/v1/publish", received(&h), body, now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            s.verify("POST", "/cluster/v1/publish", [None, None, None], body, now),
            Err(Refusal::Unsigned)
        );
        assert_eq!(
            s.verify("POST", "/cluster/v1/publish", received(&h), body, now + 31),
            Err(Refusal::Stale(31))
        );
        assert!(ClusterSecret::new("short").is_none());
    }

    #[test]
    fn pipe_keys_are_sealed_for_holders_of_the_secret_only() {
        let s = ClusterSecret::new(SECRET).unwrap();
        let key = "00112233445566778899aabbccddeeff0011223344556677";
        let sealed = s.seal(key);
        assert!(is_sealed(&sealed) && !sealed.contains(key));
        assert_ne!(sealed, s.seal(key), "a fresh nonce each time");
        assert_eq!(s.open(&sealed).as_deref(), Some(key));
        let other = ClusterSecret::new("another secret, long enough").unwrap();
        assert_eq!(other.open(&sealed), None);
        assert_eq!(s.open(key), None, "not sealed");
        assert_eq!(s.open("sealed:!!"), None);
        assert_eq!(s.open("sealed:AAAA"), None);
    }
}
