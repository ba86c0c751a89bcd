//! DTLS 1.2 with the use_srtp extension (RFC 5764) for one transport, on `dimpl`.
//!
//! `dimpl` is a sans-IO DTLS state machine (used by str0m) with an aws-lc-rs backend, so it fits
//! our engine directly: datagrams and time in, records and events out, no sockets, no unsafe, no
//! system OpenSSL. This module adds what WebRTC needs on top: the process-wide certificate and
//! its SDP fingerprint, the check of the peer's certificate against the SDP `a=fingerprint`,
//! and the SRTP keying material mapped to our `srtp::Profile`.
//!
//! CONTRACT (skeleton): signatures used by the engine and the control plane; implement them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use crate::srtp;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("certificate generation failed: {0}")]
    Certificate(String),
    #[error("peer certificate does not match the SDP fingerprint")]
    FingerprintMismatch,
    #[error("peer sent no certificate")]
    NoPeerCertificate,
    #[error("no SRTP profile negotiated")]
    NoSrtpProfile,
    #[error("bad fingerprint in SDP: {0}")]
    BadFingerprint(String),
    #[error("DTLS handshake failed: {0}")]
    Handshake(String),
}

/// Hash function named in an SDP `a=fingerprint` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

/// A certificate fingerprint as carried in SDP: `sha-256 AB:CD:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub algorithm: HashAlgorithm,
    pub digest: Vec<u8>,
}

impl Fingerprint {
    /// Whether `cert_der` hashes to this fingerprint.
    pub fn matches(&self, cert_der: &[u8]) -> bool {
        let _ = cert_der;
        todo!()
    }
}

impl FromStr for Fingerprint {
    type Err = Error;
    /// Parses the value of `a=fingerprint:` (`sha-256 AB:CD:..`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Error> {
        let _ = s;
        todo!()
    }
}

impl fmt::Display for Fingerprint {
    /// Writes `sha-256 AB:CD:...` (upper-case hex), as SDP carries it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}

/// This process's DTLS certificate (self-signed ECDSA P-256), made once at start and shared by
/// every transport on every worker.
pub struct Identity {
    fingerprint: Fingerprint,
}

impl Identity {
    pub fn generate() -> Result<Arc<Identity>, Error> {
        todo!()
    }

    /// The SHA-256 fingerprint to put in SDP answers.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }
}

/// SRTP keys exported after the handshake: the profile and the RFC 5764 §4.2 key block
/// (client key | server key | client salt | server salt).
#[derive(Clone)]
pub struct SrtpKeying {
    pub profile: srtp::Profile,
    pub material: Vec<u8>,
    /// Whether we were the DTLS server (decides which half of the key block is ours).
    pub is_server: bool,
}

impl fmt::Debug for SrtpKeying {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeying")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// What the DTLS session wants done next.
#[derive(Debug)]
pub enum Output<'a> {
    /// Send this record on the transport's selected address.
    Transmit(&'a [u8]),
    /// The handshake finished and the peer's certificate matched the SDP fingerprint.
    Connected(SrtpKeying),
    /// Nothing more to do until this time (call `handle_timeout`) or the next datagram.
    Timeout(Instant),
    /// Nothing more to do until the next datagram.
    Idle,
}

/// One DTLS session.
pub struct Dtls {
    _priv: (),
}

impl Dtls {
    /// A DTLS server (we answer `a=setup:passive`) expecting a peer certificate with `remote`
    /// as its fingerprint.
    pub fn server(identity: &Identity, remote: Fingerprint, now: Instant) -> Dtls {
        let _ = (identity, remote, now);
        todo!()
    }

    /// A DTLS client (used by the load generator).
    pub fn client(identity: &Identity, remote: Fingerprint, now: Instant) -> Dtls {
        let _ = (identity, remote, now);
        todo!()
    }

    /// Feeds one received DTLS datagram. An error is fatal: the transport is closed.
    pub fn handle_datagram(&mut self, data: &[u8]) -> Result<(), Error> {
        let _ = data;
        todo!()
    }

    /// Drives retransmission timers. An error is fatal.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        let _ = now;
        todo!()
    }

    /// Drains pending work; call until it returns `Timeout` or `Idle`. `buf` receives records to
    /// transmit (1500 bytes suffice). A fingerprint mismatch surfaces here as an error.
    pub fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> Result<Output<'b>, Error> {
        let _ = buf;
        todo!()
    }

    pub fn is_connected(&self) -> bool {
        todo!()
    }
}
