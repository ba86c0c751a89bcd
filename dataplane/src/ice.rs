//! ICE-lite (RFC 8445 §2.5) for the server side of a transport, with consent freshness (RFC 7675).
//!
//! A lite agent never sends checks: it answers the peer's binding requests, reports a request
//! carrying USE-CANDIDATE as a nomination (the transport then takes its source as the selected
//! address), and treats the peer's periodic checks as consent. A transport with no valid check
//! for [`CONSENT_TIMEOUT`] is closed. [`answer_check`], the validation and response, is shared
//! with the client (`crate::client`), which answers a full ICE agent's checks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::stun;

/// RFC 7675: consent is lost after 30 seconds without a successful check.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// An ICE username fragment and password pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub ufrag: String,
    pub pwd: String,
}

impl Credentials {
    /// Fresh random credentials from the ice-char alphabet (8-char ufrag, 24-char password).
    pub fn random() -> Credentials {
        Credentials {
            ufrag: random_ice_chars(8),
            pwd: random_ice_chars(24),
        }
    }
}

/// Why a binding request was dropped (counted by the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not a binding request")]
    NotBindingRequest,
    #[error("USERNAME missing or not ours")]
    WrongUsername,
    #[error("MESSAGE-INTEGRITY missing or wrong")]
    BadIntegrity,
    #[error("FINGERPRINT wrong")]
    BadFingerprint,
    #[error("peer claims ICE-CONTROLLED too")]
    RoleConflict,
    #[error(transparent)]
    Stun(#[from] stun::Error),
}

/// The local ufrag of a binding request's USERNAME (`"local:remote"`), used to find the transport
/// a request belongs to before its integrity can be checked.
pub fn local_ufrag(username: &[u8]) -> Option<&[u8]> {
    let colon = username.iter().position(|&b| b == b':')?;
    username.get(..colon).filter(|u| !u.is_empty())
}

/// RFC 8445 ice-chars: ALPHA / DIGIT / "+" / "/".
fn random_ice_chars(n: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..n)
        .map(|_| char::from(ALPHABET[usize::from(rand::random::<u8>() & 63)]))
        .collect()
}

/// Which side of ICE an agent plays (RFC 8445 §6.1.1). A lite agent is always controlled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Nominates pairs: its checks carry ICE-CONTROLLING (and USE-CANDIDATE to nominate).
    Controlling,
    /// Waits for the peer's nomination: its checks carry ICE-CONTROLLED.
    Controlled,
}

/// What a valid check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// Length of the binding success response written into the output buffer.
    pub response_len: usize,
    /// The request carried USE-CANDIDATE: the peer nominated the pair it came over, so its
    /// source address becomes the selected one (the caller keeps it).
    pub nominated: bool,
}

/// Validates a peer's binding request and writes the success response into `out`; shared by
/// the server's ICE-lite agent and the client.
///
/// A valid request (RFC 8445 §7.3, RFC 8489 §9.1.3) is a binding request whose USERNAME is
/// `local:remote` (the receiver's ufrag first, RFC 8445 §7.2.2), whose MESSAGE-INTEGRITY is
/// keyed with the local password and whose FINGERPRINT, if present, is right. A peer claiming
/// the role we play (`role`) is refused as a conflict rather than resolved with the
/// tie-breakers (RFC 8445 §7.3.1.1): here the roles are fixed by who offered, and a lite agent
/// is always controlled. The response carries XOR-MAPPED-ADDRESS (`src`, the address the
/// request came from), MESSAGE-INTEGRITY with the local password, and FINGERPRINT.
pub fn answer_check(
    local: &Credentials,
    remote: &Credentials,
    role: Role,
    src: SocketAddr,
    msg: &stun::Message<'_>,
    out: &mut [u8],
) -> Result<Check, Error> {
    if msg.class() != stun::Class::Request || msg.method() != stun::method::BINDING {
        return Err(Error::NotBindingRequest);
    }
    let username = msg.username().ok_or(Error::WrongUsername)?;
    if !username_matches(username, local, remote) {
        return Err(Error::WrongUsername);
    }
    if !msg.integrity_ok(local.pwd.as_bytes()) {
        return Err(Error::BadIntegrity);
    }
    if msg.fingerprint_ok() == Some(false) {
        return Err(Error::BadFingerprint);
    }
    let same_role = match role {
        Role::Controlling => msg.ice_controlling().is_some(),
        Role::Controlled => msg.ice_controlled().is_some(),
    };
    if same_role {
        return Err(Error::RoleConflict);
    }
    let mut w = stun::Writer::new(
        out,
        stun::method::BINDING,
        stun::Class::Success,
        msg.transaction_id(),
    )?;
    w.xor_mapped_address(src)?;
    w.message_integrity(local.pwd.as_bytes())?;
    w.fingerprint()?;
    Ok(Check {
        response_len: w.finish(),
        nominated: msg.use_candidate(),
    })
}

/// Whether USERNAME is exactly `<local ufrag>:<remote ufrag>`.
fn username_matches(username: &[u8], local: &Credentials, remote: &Credentials) -> bool {
    let (l, r) = (local.ufrag.as_bytes(), remote.ufrag.as_bytes());
    username.len() == l.len() + 1 + r.len()
        && username.starts_with(l)
        && username.get(l.len()) == Some(&b':')
        && username.ends_with(r)
}

/// The ICE-lite agent of one transport. It keeps consent; the transport keeps the selected
/// address, from the checks that come back nominated.
#[derive(Debug)]
pub struct IceLite {
    local: Credentials,
    remote: Credentials,
    last_valid: Instant,
}

impl IceLite {
    pub fn new(local: Credentials, remote: Credentials, now: Instant) -> IceLite {
        IceLite {
            local,
            remote,
            last_valid: now,
        }
    }

    pub fn local(&self) -> &Credentials {
        &self.local
    }

    pub fn remote(&self) -> &Credentials {
        &self.remote
    }

    /// Answers a binding request (see [`answer_check`]; a lite agent is the controlled one).
    /// A valid request refreshes consent.
    pub fn handle_request(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg: &stun::Message<'_>,
        out: &mut [u8],
    ) -> Result<Check, Error> {
        let check = answer_check(&self.local, &self.remote, Role::Controlled, src, msg, out)?;
        self.last_valid = now;
        Ok(check)
    }

    /// When consent runs out unless another valid check arrives.
    pub fn consent_deadline(&self) -> Instant {
        self.last_valid + CONSENT_TIMEOUT
    }

    pub fn consent_expired(&self, now: Instant) -> bool {
        now >= self.consent_deadline()
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            ufrag: u.into(),
            pwd: p.into(),
        }
    }

    struct Req<'a> {
        username: &'a str,
        pwd: &'a str,
        use_candidate: bool,
        controlled: bool,
        integrity: bool,
        break_fingerprint: bool,
    }

    impl Default for Req<'_> {
        fn default() -> Self {
            Req {
                username: "srv:cli",
                pwd: "serverpassword",
                use_candidate: true,
                controlled: false,
                integrity: true,
                break_fingerprint: false,
            }
        }
    }

    fn request(r: Req<'_>) -> Vec<u8> {
        let mut out = [0u8; 256];
        let mut w = stun::Writer::new(
            &mut out,
            stun::method::BINDING,
            stun::Class::Request,
            &[3; 12],
        )
        .unwrap();
        w.attribute(stun::attr::USERNAME, r.username.as_bytes())
            .unwrap();
        w.attribute(stun::attr::PRIORITY, &1u32.to_be_bytes())
            .unwrap();
        let role = if r.controlled {
            stun::attr::ICE_CONTROLLED
        } else {
            stun::attr::ICE_CONTROLLING
        };
        w.attribute(role, &9u64.to_be_bytes()).unwrap();
        if r.use_candidate {
            w.attribute(stun::attr::USE_CANDIDATE, &[]).unwrap();
        }
        if r.integrity {
            w.message_integrity(r.pwd.as_bytes()).unwrap();
        }
        w.fingerprint().unwrap();
        let n = w.finish();
        let mut v = out[..n].to_vec();
        if r.break_fingerprint {
            let last = v.len() - 1;
            v[last] ^= 1;
        }
        v
    }

    fn agent(now: Instant) -> IceLite {
        IceLite::new(
            creds("srv", "serverpassword"),
            creds("cli", "clientpassword"),
            now,
        )
    }

    #[test]
    fn browser_check_is_answered_and_nominates() {
        let now = Instant::now();
        let mut a = agent(now);
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let req = request(Req::default());
        let msg = stun::Message::parse(&req).unwrap();
        let mut out = [0u8; 256];
        let check = a.handle_request(now, src, &msg, &mut out).unwrap();
        assert!(check.nominated);
        let resp = stun::Message::parse(&out[..check.response_len]).unwrap();
        assert_eq!(resp.class(), stun::Class::Success);
        assert_eq!(resp.transaction_id(), &[3; 12]);
        assert_eq!(resp.xor_mapped_address(), Some(src));
        assert!(resp.integrity_ok(b"serverpassword"));
        assert_eq!(resp.fingerprint_ok(), Some(true));
    }

    #[test]
    fn bad_checks_are_refused_without_effect() {
        let now = Instant::now();
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let cases = [
            (
                Req {
                    pwd: "wrong",
                    ..Default::default()
                },
                Error::BadIntegrity,
            ),
            (
                Req {
                    username: "srv:other",
                    ..Default::default()
                },
                Error::WrongUsername,
            ),
            (
                Req {
                    username: "srvx:cli",
                    ..Default::default()
                },
                Error::WrongUsername,
            ),
            (
                Req {
                    integrity: false,
                    ..Default::default()
                },
                Error::BadIntegrity,
            ),
            (
                Req {
                    break_fingerprint: true,
                    ..Default::default()
                },
                Error::BadFingerprint,
            ),
            (
                Req {
                    controlled: true,
                    ..Default::default()
                },
                Error::RoleConflict,
            ),
        ];
        for (req, expected) in cases {
            let mut a = agent(now);
            let bytes = request(req);
            let msg = stun::Message::parse(&bytes).unwrap();
            let mut out = [0u8; 256];
            let later = now + Duration::from_secs(20);
            assert_eq!(a.handle_request(later, src, &msg, &mut out), Err(expected));
            assert_eq!(a.consent_deadline(), now + CONSENT_TIMEOUT);
        }
    }

    #[test]
    fn consent_expires_without_checks_and_is_refreshed_by_them() {
        let now = Instant::now();
        let mut a = agent(now);
        assert!(!a.consent_expired(now + Duration::from_secs(29)));
        assert!(a.consent_expired(now + CONSENT_TIMEOUT));
        let req = request(Req {
            use_candidate: false,
            ..Default::default()
        });
        let msg = stun::Message::parse(&req).unwrap();
        let mut out = [0u8; 256];
        let t = now + Duration::from_secs(25);
        let check = a
            .handle_request(t, "127.0.0.1:1".parse().unwrap(), &msg, &mut out)
            .unwrap();
        assert!(!check.nominated);
        assert!(!a.consent_expired(now + Duration::from_secs(50)));
        assert!(a.consent_expired(t + CONSENT_TIMEOUT));
    }

    #[test]
    fn renomination_moves_the_selected_address() {
        let now = Instant::now();
        let mut a = agent(now);
        let req = request(Req::default());
        let msg = stun::Message::parse(&req).unwrap();
        let mut out = [0u8; 256];
        // Each nominating check names its source as the selected address; the transport
        // (which keeps it) moves to the latest.
        for src in ["127.0.0.1:1", "127.0.0.1:2"] {
            let src: SocketAddr = src.parse().unwrap();
            let check = a.handle_request(now, src, &msg, &mut out).unwrap();
            assert!(check.nominated);
            let resp = stun::Message::parse(&out[..check.response_len]).unwrap();
            assert_eq!(resp.xor_mapped_address(), Some(src));
        }
    }

    #[test]
    fn answer_check_refuses_the_role_we_play() {
        let local = creds("srv", "serverpassword");
        let remote = creds("cli", "clientpassword");
        let src: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let mut out = [0u8; 256];
        // `request` sends ICE-CONTROLLING unless `controlled`.
        for (role, controlled, expected) in [
            (Role::Controlled, false, Ok(())),
            (Role::Controlled, true, Err(Error::RoleConflict)),
            (Role::Controlling, true, Ok(())),
            (Role::Controlling, false, Err(Error::RoleConflict)),
        ] {
            let bytes = request(Req {
                controlled,
                ..Default::default()
            });
            let msg = stun::Message::parse(&bytes).unwrap();
            let result = answer_check(&local, &remote, role, src, &msg, &mut out);
            assert_eq!(
                result.map(|_| ()),
                expected,
                "{role:?}, controlled: {controlled}"
            );
        }
    }

    #[test]
    fn answer_check_writes_the_response() {
        let local = creds("srv", "serverpassword");
        let remote = creds("cli", "clientpassword");
        let src: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let bytes = request(Req {
            use_candidate: false,
            ..Default::default()
        });
        let msg = stun::Message::parse(&bytes).unwrap();
        let mut out = [0u8; 256];
        let check = answer_check(&local, &remote, Role::Controlled, src, &msg, &mut out).unwrap();
        assert!(!check.nominated);
        let resp = stun::Message::parse(&out[..check.response_len]).unwrap();
        assert_eq!(
            (resp.class(), resp.method()),
            (stun::Class::Success, stun::method::BINDING)
        );
        assert_eq!(resp.transaction_id(), &[3; 12]);
        assert_eq!(resp.xor_mapped_address(), Some(src));
        assert!(resp.integrity_ok(b"serverpassword"));
        assert_eq!(resp.fingerprint_ok(), Some(true));
        // A buffer too small for the response is an error, not a truncated answer.
        let mut small = [0u8; 40];
        assert_eq!(
            answer_check(&local, &remote, Role::Controlled, src, &msg, &mut small),
            Err(Error::Stun(stun::Error::BufferTooSmall))
        );
    }

    #[test]
    fn answer_check_wants_a_binding_request_with_a_username() {
        let local = creds("srv", "serverpassword");
        let remote = creds("cli", "clientpassword");
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut out = [0u8; 256];
        // The response to a check is not a check.
        let bytes = request(Req::default());
        let msg = stun::Message::parse(&bytes).unwrap();
        let n = answer_check(&local, &remote, Role::Controlled, src, &msg, &mut out)
            .unwrap()
            .response_len;
        let response = out[..n].to_vec();
        let msg = stun::Message::parse(&response).unwrap();
        assert_eq!(
            answer_check(&local, &remote, Role::Controlled, src, &msg, &mut out),
            Err(Error::NotBindingRequest)
        );
        // No USERNAME at all.
        let mut buf = [0u8; 128];
        let mut w = stun::Writer::new(
            &mut buf,
            stun::method::BINDING,
            stun::Class::Request,
            &[1; 12],
        )
        .unwrap();
        w.message_integrity(b"serverpassword").unwrap();
        let n = w.finish();
        let msg = stun::Message::parse(&buf[..n]).unwrap();
        assert_eq!(
            answer_check(&local, &remote, Role::Controlled, src, &msg, &mut out),
            Err(Error::WrongUsername)
        );
    }

    #[test]
    fn ufrag_of_username() {
        assert_eq!(local_ufrag(b"abc:def"), Some(&b"abc"[..]));
        assert_eq!(local_ufrag(b":def"), None);
        assert_eq!(local_ufrag(b"abcdef"), None);
    }

    #[test]
    fn random_credentials_use_ice_chars() {
        let c = Credentials::random();
        assert_eq!(c.ufrag.len(), 8);
        assert_eq!(c.pwd.len(), 24);
        assert!(
            c.pwd
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        );
        assert_ne!(Credentials::random(), c);
    }
}
