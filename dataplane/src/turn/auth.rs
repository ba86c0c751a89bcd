//! TURN REST credentials (the scheme of coturn's `use-auth-secret`, which `turnutils_uclient
//! -W` and every WebRTC deployment guide speak) and the stateless nonces of long-term
//! authentication.
//!
//! The username is `expiry:user` (expiry in Unix seconds) and the password is
//! base64(HMAC-SHA1(secret, username)): whoever knows the secret (the gateway) mints
//! short-lived credentials, and the TURN server needs no user database.

use std::net::IpAddr;

use aws_lc_rs::hmac;
use base64::Engine as _;
use md5::{Digest, Md5};

/// How long a nonce is accepted before the client must retry with a fresh one (438).
pub const NONCE_LIFETIME_SECS: u64 = 600;
/// A nonce: 8 hex digits of expiry and 16 of MAC.
const NONCE_LEN: usize = 24;

/// The secrets accepted at once: the current one and, during a rotation, the previous one.
#[derive(Clone)]
pub struct Secrets {
    keys: Vec<Box<[u8]>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} configured)", self.keys.len())
    }
}

impl Secrets {
    /// At most two secrets are kept (the first two given): enough for a rotation, and each
    /// costs an HMAC on a failed authentication.
    pub fn new<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Secrets {
        let keys = secrets
            .into_iter()
            .filter(|s| !s.as_ref().is_empty())
            .take(2)
            .map(|s| s.as_ref().into())
            .collect();
        Secrets { keys }
    }

    /// The long-term keys this username may have, one per secret.
    pub fn keys_for<'a>(
        &'a self,
        username: &'a str,
        realm: &'a str,
    ) -> impl Iterator<Item = [u8; 16]> + 'a {
        self.keys
            .iter()
            .map(move |s| long_term_key(username, realm, &rest_password(s, username)))
    }

    /// Mints a credential for `user` valid for `ttl_secs` from `now_unix`, with the current
    /// secret; `None` when no secret is configured.
    pub fn credential(&self, user: &str, now_unix: u64, ttl_secs: u64) -> Option<(String, String)> {
        let secret = self.keys.first()?;
        let username = format!("{}:{user}", now_unix.saturating_add(ttl_secs));
        let password = rest_password(secret, &username);
        Some((username, password))
    }
}

/// base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// The expiry (Unix seconds) and user of a REST username `expiry:user` (or a bare expiry).
pub fn parse_username(username: &str) -> Option<(u64, &str)> {
    let (expiry, user) = username.split_once(':').unwrap_or((username, ""));
    Some((expiry.parse().ok()?, user))
}

/// The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 section 9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

/// What a nonce check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours but expired: the client gets 438 and retries with the new nonce.
    Stale,
    /// Not one we minted (or for another client address).
    Invalid,
}

/// Stateless nonces: the expiry and a MAC over it and the client's IP, so no per-client state
/// is kept before a client authenticates (an unauthenticated flood costs no memory).
pub struct Nonces {
    key: hmac::Key,
}

impl Nonces {
    pub fn new(seed: &[u8]) -> Nonces {
        Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, seed),
        }
    }

    fn mac(&self, expiry: u32, ip: IpAddr) -> [u8; 8] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&expiry.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => ctx.update(&v4.octets()),
            IpAddr::V6(v6) => ctx.update(&v6.octets()),
        }
        let tag = ctx.sign();
        let mut out = [0u8; 8];
        out.copy_from_slice(&tag.as_ref()[..8]);
        out
    }

    pub fn mint(&self, now_unix: u64, ip: IpAddr) -> [u8; NONCE_LEN] {
        // Unix seconds fit 32 bits until 2106.
        let expiry = now_unix.saturating_add(NONCE_LIFETIME_SECS) as u32;
        let mut out = [0u8; NONCE_LEN];
        hex(&expiry.to_be_bytes(), &mut out[..8]);
        hex(&self.mac(expiry, ip), &mut out[8..]);
        out
    }

    pub fn check(&self, nonce: &[u8], now_unix: u64, ip: IpAddr) -> NonceCheck {
        let (Some(expiry), Some(mac)) = (
            nonce.get(..8).and_then(unhex::<4>),
            nonce.get(8..).and_then(unhex::<8>),
        ) else {
            return NonceCheck::Invalid;
        };
        if nonce.len() != NONCE_LEN {
            return NonceCheck::Invalid;
        }
        let expiry = u32::from_be_bytes(expiry);
        let expected = self.mac(expiry, ip);
        if aws_lc_rs::constant_time::verify_slices_are_equal(&expected, &mac).is_err() {
            return NonceCheck::Invalid;
        }
        if u64::from(expiry) < now_unix {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_the_published_scheme() {
        // base64(HMAC-SHA1("north", "1700000000:alice")), computed independently with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac north -binary | base64`.
        assert_eq!(
            rest_password(b"north", "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
    }

    #[test]
    fn usernames() {
        assert_eq!(
            parse_username("1700000000:alice"),
            Some((1_700_000_000, "alice"))
        );
        assert_eq!(parse_username("1700000000"), Some((1_700_000_000, "")));
        assert_eq!(parse_username("alice:1700000000"), None);
        assert_eq!(parse_username(""), None);
    }

    #[test]
    fn long_term_key_is_md5_of_the_triple() {
        // Checked with `printf %s user:realm:pass | md5sum`.
        let key = long_term_key("user", "realm", "pass");
        assert_eq!(
            key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "8493fbc53ba582fb4c044c456bdc40eb"
        );
    }

    #[test]
    fn credentials_round_trip() {
        let s = Secrets::new(["new", "old"]);
        let (u, p) = s.credential("bob", 1000, 60).unwrap();
        assert_eq!(u, "1060:bob");
        assert_eq!(p, rest_password(b"new", &u));
        let keys: Vec<_> = s.keys_for(&u, "r").collect();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], long_term_key(&u, "r", &p));
        let old = rest_password(b"old", &u);
        assert_eq!(keys[1], long_term_key(&u, "r", &old));
        assert!(
            Secrets::new(Vec::<String>::new())
                .credential("x", 0, 1)
                .is_none()
        );
    }

    #[test]
    fn nonces() {
        let n = Nonces::new(b"seed");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let nonce = n.mint(1000, ip);
        assert_eq!(n.check(&nonce, 1000, ip), NonceCheck::Valid);
        assert_eq!(
            n.check(&nonce, 1000 + NONCE_LIFETIME_SECS + 1, ip),
            NonceCheck::Stale
        );
        assert_eq!(
            n.check(&nonce, 1000, "192.0.2.2".parse().unwrap()),
            NonceCheck::Invalid
        );
        let mut bad = nonce;
        bad[20] ^= 1;
        assert_eq!(n.check(&bad, 1000, ip), NonceCheck::Invalid);
        assert_eq!(n.check(b"short", 1000, ip), NonceCheck::Invalid);
        assert_eq!(n.check(&[0xff; 24], 1000, ip), NonceCheck::Invalid);
    }
}
