//! ICE-lite (RFC 8445 §2.5) for the server side of a transport, with consent freshness (RFC 7675).
//!
//! A lite agent never sends checks: it answers the peer's binding requests, takes the address of
//! a request carrying USE-CANDIDATE as the selected pair, and treats the peer's periodic checks as
//! consent. A transport with no valid check for [`CONSENT_TIMEOUT`] is closed.
//!
//! CONTRACT (skeleton): signatures used by the engine; implement the bodies.

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
        todo!()
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
    let _ = username;
    todo!()
}

/// What a valid check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// Length of the binding success response written into the output buffer.
    pub response_len: usize,
    /// The request carried USE-CANDIDATE and `src` is now the selected address.
    pub nominated: bool,
}

/// The ICE-lite agent of one transport.
#[derive(Debug)]
pub struct IceLite {
    local: Credentials,
    remote: Credentials,
    selected: Option<SocketAddr>,
    last_valid: Instant,
}

impl IceLite {
    pub fn new(local: Credentials, remote: Credentials, now: Instant) -> IceLite {
        IceLite {
            local,
            remote,
            selected: None,
            last_valid: now,
        }
    }

    pub fn local(&self) -> &Credentials {
        &self.local
    }

    pub fn remote(&self) -> &Credentials {
        &self.remote
    }

    /// Validates a binding request (USERNAME `local:remote`, MESSAGE-INTEGRITY with the local
    /// password, FINGERPRINT) and writes the success response (XOR-MAPPED-ADDRESS = `src`,
    /// MESSAGE-INTEGRITY, FINGERPRINT) into `out`. A valid request refreshes consent.
    pub fn handle_request(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg: &stun::Message<'_>,
        out: &mut [u8],
    ) -> Result<Check, Error> {
        let _ = (now, src, msg, out);
        todo!()
    }

    /// The address of the nominated pair, once the peer nominated one.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// When consent runs out unless another valid check arrives.
    pub fn consent_deadline(&self) -> Instant {
        self.last_valid + CONSENT_TIMEOUT
    }

    pub fn consent_expired(&self, now: Instant) -> bool {
        now >= self.consent_deadline()
    }
}
