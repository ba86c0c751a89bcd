//! DTLS 1.2 with the use_srtp extension (RFC 5764) for one transport, on `dimpl`.
//!
//! `dimpl` is a sans-IO DTLS state machine (used by str0m) with an aws-lc-rs backend, so it fits
//! our engine directly: datagrams and time in, records and events out, no sockets, no unsafe, no
//! system OpenSSL. This module adds what WebRTC needs on top: the process-wide certificate and
//! its SDP fingerprint, the check of the peer's certificate against the SDP `a=fingerprint`,
//! and the SRTP keying material mapped to our `srtp::Profile`.
//!
//! We speak DTLS 1.2 only (`dimpl::Dtls::new_12`): every WebRTC peer in use (Chrome, Firefox,
//! Safari, aiortc, libwebrtc-based SDKs) offers 1.2, including those that also offer 1.3, and
//! 1.2 is the version those stacks have exercised against servers for a decade.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::digest;
use dimpl::{Config, DtlsCertificate, SrtpProfile};

use crate::srtp;

/// Largest handshake datagram we produce (a safe size on any path, below 1280 for IPv6).
const MTU: usize = 1200;

/// Why DTLS could not start or failed. Failures inside dimpl keep its error as the source; its
/// text is in the message too, since the engine closes a transport with this message alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("certificate generation failed: {0}")]
    Certificate(#[source] dimpl::certificate::CertificateError),
    #[error("DTLS configuration rejected: {0}")]
    Config(#[source] dimpl::Error),
    #[error("peer certificate does not match the SDP fingerprint")]
    FingerprintMismatch,
    #[error("peer sent no certificate")]
    NoPeerCertificate,
    #[error("no SRTP profile negotiated")]
    NoSrtpProfile,
    #[error("bad fingerprint in SDP: {0}")]
    BadFingerprint(String),
    /// dimpl refused a datagram or a timer failed (e.g. a bad record, retransmissions ran out).
    #[error("DTLS handshake failed: {0}")]
    Protocol(#[from] dimpl::Error),
    /// The exported keying material made no SRTP context.
    #[error("SRTP keys from the handshake: {0}")]
    SrtpKeys(#[source] srtp::Error),
    /// A failure we detect around dimpl (the peer closed, a record too large for our buffer).
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
        digest::digest(self.algorithm.digest(), cert_der).as_ref() == self.digest.as_slice()
    }

    /// The SHA-256 fingerprint of a DER certificate.
    pub fn sha256(cert_der: &[u8]) -> Fingerprint {
        let digest = digest::digest(&digest::SHA256, cert_der).as_ref().to_vec();
        Fingerprint {
            algorithm: HashAlgorithm::Sha256,
            digest,
        }
    }
}

impl HashAlgorithm {
    fn digest(self) -> &'static digest::Algorithm {
        match self {
            HashAlgorithm::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlgorithm::Sha256 => &digest::SHA256,
            HashAlgorithm::Sha384 => &digest::SHA384,
            HashAlgorithm::Sha512 => &digest::SHA512,
        }
    }

    fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "sha-1",
            HashAlgorithm::Sha256 => "sha-256",
            HashAlgorithm::Sha384 => "sha-384",
            HashAlgorithm::Sha512 => "sha-512",
        }
    }
}

impl FromStr for Fingerprint {
    type Err = Error;
    /// Parses the value of `a=fingerprint:` (`sha-256 AB:CD:..`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::BadFingerprint(format!(
                "{why}: {:?}",
                s.chars().take(120).collect::<String>()
            ))
        };
        let (name, hex) = s
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("expected '<hash> <hex>'"))?;
        let algorithm = [
            HashAlgorithm::Sha1,
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
        ]
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| bad("unsupported hash"))?;
        let digest = hex
            .trim()
            .split(':')
            .map(|pair| match pair.len() {
                2 => u8::from_str_radix(pair, 16).ok(),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| bad("expected hex pairs separated by ':'"))?;
        if digest.len() != algorithm.digest().output_len() {
            return Err(bad("wrong digest length for the hash"));
        }
        Ok(Fingerprint { algorithm, digest })
    }
}

impl fmt::Display for Fingerprint {
    /// Writes `sha-256 AB:CD:...` (upper-case hex), as SDP carries it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.algorithm.name())?;
        for (i, b) in self.digest.iter().enumerate() {
            write!(f, "{}{b:02X}", if i == 0 { ' ' } else { ':' })?;
        }
        Ok(())
    }
}

/// This process's DTLS certificate (self-signed ECDSA P-256), made once at start and shared by
/// every transport on every worker.
pub struct Identity {
    certificate: DtlsCertificate,
    config: Arc<Config>,
    fingerprint: Fingerprint,
}

impl Identity {
    pub fn generate() -> Result<Arc<Identity>, Error> {
        let certificate =
            dimpl::certificate::generate_self_signed_certificate().map_err(Error::Certificate)?;
        Identity::from_certificate(certificate)
    }

    fn from_certificate(certificate: DtlsCertificate) -> Result<Arc<Identity>, Error> {
        let config = Config::builder()
            .mtu(MTU)
            .require_client_certificate(true)
            .build()
            .map_err(Error::Config)?;
        let fingerprint = Fingerprint::sha256(&certificate.certificate);
        Ok(Arc::new(Identity {
            certificate,
            config: Arc::new(config),
            fingerprint,
        }))
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

/// The size of the buffer `Dtls::poll_output` needs. dimpl copies the peer's certificate into
/// it and asserts (panics) if it does not fit, so it must hold the largest certificate a peer
/// can get through: dimpl reassembles a handshake message from at most 30 queued datagrams,
/// and we never accept a datagram over `io::MAX_DATAGRAM` (2048) bytes, so 64 KiB is enough.
pub const POLL_BUFFER: usize = 64 * 1024;

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
    /// The plaintext of an application-data record from the peer: an SCTP packet of its data
    /// channels (RFC 8261). Only after `Connected`.
    ApplicationData(&'a [u8]),
}

/// One DTLS session.
pub struct Dtls {
    inner: dimpl::Dtls,
    is_server: bool,
    expected: Fingerprint,
    peer_verified: bool,
    keying: Option<SrtpKeying>,
    connected: bool,
    /// `Output::Connected` was returned.
    reported: bool,
    /// Set once the session failed; every later call reports it again.
    failed: Option<Error>,
}

impl Dtls {
    /// A DTLS server (we answer `a=setup:passive`) expecting a peer certificate with `remote`
    /// as its fingerprint.
    pub fn server(identity: &Identity, remote: Fingerprint, now: Instant) -> Dtls {
        Dtls::new(identity, remote, now, false)
    }

    /// A DTLS client (used by the load generator and tests).
    pub fn client(identity: &Identity, remote: Fingerprint, now: Instant) -> Dtls {
        Dtls::new(identity, remote, now, true)
    }

    fn new(identity: &Identity, remote: Fingerprint, now: Instant, active: bool) -> Dtls {
        let mut inner =
            dimpl::Dtls::new_12(identity.config.clone(), identity.certificate.clone(), now);
        inner.set_active(active);
        let mut dtls = Dtls {
            inner,
            is_server: !active,
            expected: remote,
            peer_verified: false,
            keying: None,
            connected: false,
            reported: false,
            failed: None,
        };
        // dimpl needs a first timeout before it handles packets (a server panics otherwise);
        // a client also sends its ClientHello from here.
        if let Err(e) = dtls.inner.handle_timeout(now) {
            dtls.failed = Some(e.into());
        }
        dtls
    }

    fn check(&self) -> Result<(), Error> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(e.clone());
        e
    }

    /// Feeds one received DTLS datagram. An error is fatal: the transport is closed.
    pub fn handle_datagram(&mut self, data: &[u8]) -> Result<(), Error> {
        self.check()?;
        self.inner
            .handle_packet(data)
            .map_err(|e| self.fail(e.into()))
    }

    /// Drives retransmission timers. An error is fatal.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.check()?;
        self.inner
            .handle_timeout(now)
            .map_err(|e| self.fail(e.into()))
    }

    /// Drains pending work; call until it returns `Timeout` or `Idle`. `buf` receives records to
    /// transmit and must hold [`POLL_BUFFER`] bytes. A fingerprint mismatch surfaces here as an
    /// error.
    pub fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> Result<Output<'b>, Error> {
        self.check()?;
        loop {
            let event = match self.inner.poll_output(buf) {
                dimpl::Output::Packet(p) => Some(p.len()),
                dimpl::Output::Timeout(t) => {
                    if self.connected && !self.reported {
                        // The handshake finished without use_srtp: no profile in common.
                        return Err(self.fail(Error::NoSrtpProfile));
                    }
                    return Ok(Output::Timeout(t));
                }
                dimpl::Output::PeerCert(der) => {
                    if !self.expected.matches(der) {
                        return Err(self.fail(Error::FingerprintMismatch));
                    }
                    self.peer_verified = true;
                    None
                }
                dimpl::Output::KeyingMaterial(km, profile) => {
                    let profile = match profile {
                        SrtpProfile::AES128_CM_SHA1_80 => srtp::Profile::Aes128CmHmacSha1_80,
                        SrtpProfile::AEAD_AES_128_GCM => srtp::Profile::AeadAes128Gcm,
                        SrtpProfile::AEAD_AES_256_GCM => srtp::Profile::AeadAes256Gcm,
                        _ => return Err(self.fail(Error::NoSrtpProfile)),
                    };
                    self.keying = Some(SrtpKeying {
                        profile,
                        material: km.to_vec(),
                        is_server: self.is_server,
                    });
                    None
                }
                dimpl::Output::Connected => {
                    self.connected = true;
                    None
                }
                dimpl::Output::BufferTooSmall { needed } => {
                    return Err(self.fail(Error::Handshake(format!(
                        "record of {needed} bytes exceeds our buffer"
                    ))));
                }
                dimpl::Output::CloseNotify => {
                    return Err(self.fail(Error::Handshake("peer closed".into())));
                }
                dimpl::Output::ApplicationData(data) => {
                    if !self.reported {
                        continue; // before the fingerprint was checked: never trusted
                    }
                    let len = data.len();
                    return Ok(Output::ApplicationData(&buf[..len]));
                }
                _ => None,
            };
            if let Some(len) = event {
                return Ok(Output::Transmit(&buf[..len]));
            }
            if self.connected && self.keying.is_some() {
                if !self.peer_verified {
                    return Err(self.fail(Error::NoPeerCertificate));
                }
                if let Some(keying) = self.keying.take() {
                    self.reported = true;
                    return Ok(Output::Connected(keying));
                }
            }
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected && self.failed.is_none()
    }

    /// Encrypts `data` (an SCTP packet, RFC 8261) as one application-data record; the record
    /// comes out of the next [`poll_output`](Self::poll_output) as `Transmit`. Only once
    /// connected; an error is not fatal to the session (the packet is lost, as on the wire).
    pub fn send_application_data(&mut self, data: &[u8]) -> Result<(), Error> {
        self.check()?;
        if !self.reported {
            return Err(Error::Handshake(
                "application data before the handshake".into(),
            ));
        }
        self.inner.send_application_data(data)?;
        Ok(())
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs a handshake between a client and a server in memory; `drop_first_server_flight`
    /// loses the server's first flight to exercise retransmission.
    fn handshake(
        client: &mut Dtls,
        server: &mut Dtls,
        drop_first_server_flight: bool,
    ) -> Result<(SrtpKeying, SrtpKeying), Error> {
        let mut now = Instant::now();
        let mut buf = vec![0u8; POLL_BUFFER];
        let (mut ck, mut sk) = (None, None);
        let mut dropped = !drop_first_server_flight;
        for _ in 0..200 {
            let mut to_server = Vec::new();
            let mut client_deadline = None;
            loop {
                match client.poll_output(&mut buf)? {
                    Output::Transmit(p) => to_server.push(p.to_vec()),
                    Output::Connected(k) => ck = Some(k),
                    Output::Timeout(t) => {
                        client_deadline = Some(t);
                        break;
                    }
                    Output::Idle => break,
                    Output::ApplicationData(_) => {}
                }
            }
            for p in &to_server {
                server.handle_datagram(p)?;
            }
            let mut to_client = Vec::new();
            loop {
                match server.poll_output(&mut buf)? {
                    Output::Transmit(p) => to_client.push(p.to_vec()),
                    Output::Connected(k) => sk = Some(k),
                    Output::Timeout(_) | Output::Idle => break,
                    Output::ApplicationData(_) => {}
                }
            }
            if !dropped && !to_client.is_empty() {
                dropped = true;
                to_client.clear();
            }
            for p in &to_client {
                client.handle_datagram(p)?;
            }
            if let (Some(c), Some(s)) = (&ck, &sk) {
                return Ok((c.clone(), s.clone()));
            }
            if to_server.is_empty() && to_client.is_empty() {
                now = client_deadline
                    .unwrap_or(now + Duration::from_millis(100))
                    .max(now + Duration::from_millis(1));
                client.handle_timeout(now)?;
                server.handle_timeout(now)?;
            }
        }
        Err(Error::Handshake("did not finish".into()))
    }

    #[test]
    fn client_and_server_agree_on_keys() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let now = Instant::now();
        let mut client = Dtls::client(&a, b.fingerprint().clone(), now);
        let mut server = Dtls::server(&b, a.fingerprint().clone(), now);
        let started = std::time::Instant::now();
        let (c, s) = handshake(&mut client, &mut server, false).unwrap();
        eprintln!("in-memory DTLS handshake took {:?}", started.elapsed());
        assert_eq!(c.material, s.material);
        assert_eq!(c.profile, s.profile);
        assert_eq!(c.profile, srtp::Profile::AeadAes256Gcm);
        assert_eq!(
            c.material.len(),
            2 * (c.profile.key_len() + c.profile.salt_len())
        );
        assert!(s.is_server && !c.is_server);
        assert!(client.is_connected() && server.is_connected());
        // The keys work for SRTP in both directions.
        let (mut s_in, mut s_out) =
            srtp::session_from_keying(s.profile, &s.material, true).unwrap();
        let (mut c_in, mut c_out) =
            srtp::session_from_keying(c.profile, &c.material, false).unwrap();
        let mut p = [0u8; 64];
        p[..12].copy_from_slice(&[0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9]);
        let n = c_out.protect_rtp(&mut p, 20).unwrap();
        assert!(s_in.unprotect_rtp(&mut p[..n]).is_ok());
        let n = s_out.protect_rtp(&mut p, 20).unwrap();
        assert!(c_in.unprotect_rtp(&mut p[..n]).is_ok());
    }

    /// Application data (SCTP for data channels, RFC 8261) goes both ways once connected, and
    /// is refused before.
    #[test]
    fn application_data_after_the_handshake() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let now = Instant::now();
        let mut client = Dtls::client(&a, b.fingerprint().clone(), now);
        let mut server = Dtls::server(&b, a.fingerprint().clone(), now);
        assert!(server.send_application_data(b"early").is_err());
        handshake(&mut client, &mut server, false).unwrap();
        let mut buf = vec![0u8; POLL_BUFFER];
        let mut carry = |from: &mut Dtls, to: &mut Dtls, data: &[u8]| -> Vec<Vec<u8>> {
            from.send_application_data(data).unwrap();
            let mut records = Vec::new();
            while let Output::Transmit(r) = from.poll_output(&mut buf).unwrap() {
                records.push(r.to_vec());
            }
            let mut got = Vec::new();
            for r in records {
                to.handle_datagram(&r).unwrap();
                loop {
                    match to.poll_output(&mut buf).unwrap() {
                        Output::ApplicationData(d) => got.push(d.to_vec()),
                        Output::Timeout(_) | Output::Idle => break,
                        _ => {}
                    }
                }
            }
            got
        };
        let packet = vec![0x13u8; 1150];
        assert_eq!(
            carry(&mut client, &mut server, &packet),
            vec![packet.clone()]
        );
        assert_eq!(
            carry(&mut server, &mut client, b"back"),
            vec![b"back".to_vec()]
        );
    }

    #[test]
    fn wrong_fingerprint_fails() {
        let (a, b, other) = (
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
        );
        let now = Instant::now();
        let mut client = Dtls::client(&a, b.fingerprint().clone(), now);
        let mut server = Dtls::server(&b, other.fingerprint().clone(), now);
        assert_eq!(
            handshake(&mut client, &mut server, false).unwrap_err(),
            Error::FingerprintMismatch
        );
        assert!(!server.is_connected());
        assert_eq!(
            server.handle_datagram(&[22; 30]).unwrap_err(),
            Error::FingerprintMismatch
        );
    }

    #[test]
    fn lost_flight_is_retransmitted() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let now = Instant::now();
        let mut client = Dtls::client(&a, b.fingerprint().clone(), now);
        let mut server = Dtls::server(&b, a.fingerprint().clone(), now);
        let (c, s) = handshake(&mut client, &mut server, true).unwrap();
        assert_eq!(c.material, s.material);
    }

    /// A client whose server never answers runs out of retransmissions: dimpl's error comes
    /// through typed, as the source, and readable in the message the engine closes with.
    #[test]
    fn dimpl_errors_keep_their_source() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let mut now = Instant::now();
        let mut client = Dtls::client(&a, b.fingerprint().clone(), now);
        let mut buf = vec![0u8; POLL_BUFFER];
        let err = (0..100)
            .find_map(|_| {
                let deadline = loop {
                    match client.poll_output(&mut buf) {
                        Ok(Output::Transmit(_)) => continue,
                        Ok(Output::Timeout(t)) => break t,
                        Ok(other) => panic!("{other:?}"),
                        Err(e) => return Some(e),
                    }
                };
                now = deadline.max(now + Duration::from_millis(1));
                client.handle_timeout(now).err()
            })
            .expect("the handshake times out");
        let Error::Protocol(inner) = &err else {
            panic!("{err:?}")
        };
        assert!(matches!(inner, dimpl::Error::Timeout(_)), "{inner:?}");
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.downcast_ref::<dimpl::Error>(), Some(inner));
        assert_eq!(err.to_string(), format!("DTLS handshake failed: {inner}"));
        assert!(
            err.to_string()
                .starts_with("DTLS handshake failed: timeout")
        );
        // The failure sticks.
        assert_eq!(client.handle_timeout(now).unwrap_err(), err);
    }

    #[test]
    fn garbage_before_the_handshake_does_not_panic() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let now = Instant::now();
        let mut server = Dtls::server(&b, a.fingerprint().clone(), now);
        for len in [0usize, 1, 13, 25, 100] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 22) as u8).collect();
            let _ = server.handle_datagram(&junk);
        }
        let mut buf = vec![0u8; POLL_BUFFER];
        let _ = server.poll_output(&mut buf);
    }

    /// A self-signed certificate padded with subject alternative names to about `size` bytes.
    fn large_identity(size: usize) -> Arc<Identity> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let names: Vec<String> = (0..size / 40)
            .map(|i| format!("peer-{i:05}.padding.switchyard.test"))
            .collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let certificate = DtlsCertificate {
            certificate: cert.der().to_vec(),
            private_key: key.serialize_der(),
        };
        assert!(certificate.certificate.len() > size * 3 / 4);
        Identity::from_certificate(certificate).unwrap()
    }

    /// dimpl asserts that the peer certificate fits the poll buffer; a peer with a large one
    /// (several datagrams) must complete the handshake, not panic the worker.
    #[test]
    fn large_peer_certificate_completes() {
        let (a, b) = (large_identity(12_000), Identity::generate().unwrap());
        let now = Instant::now();
        let mut client = Dtls::client(&a, b.fingerprint().clone(), now);
        let mut server = Dtls::server(&b, a.fingerprint().clone(), now);
        let (c, s) = handshake(&mut client, &mut server, false).unwrap();
        assert_eq!(c.material, s.material);
    }

    #[test]
    fn fingerprint_text() {
        let id = Identity::generate().unwrap();
        let text = id.fingerprint().to_string();
        assert!(text.starts_with("sha-256 "));
        assert_eq!(text.len(), "sha-256 ".len() + 32 * 3 - 1);
        let parsed: Fingerprint = text.parse().unwrap();
        assert_eq!(&parsed, id.fingerprint());
        let lower: Fingerprint = text
            .to_lowercase()
            .replace("sha-256", "SHA-256")
            .parse()
            .unwrap();
        assert_eq!(&lower, id.fingerprint());
        assert!(parsed.matches(&id.certificate.certificate));
        for bad in [
            "",
            "sha-256",
            "md5 AA:BB",
            "sha-256 AA:BB",
            "sha-256 ZZ",
            "sha-1 AA:BB:CC",
        ] {
            assert!(
                matches!(bad.parse::<Fingerprint>(), Err(Error::BadFingerprint(_))),
                "{bad}"
            );
        }
        let sha1: Fingerprint = format!("sha-1 {}", vec!["0A"; 20].join(":"))
            .parse()
            .unwrap();
        assert_eq!(sha1.algorithm, HashAlgorithm::Sha1);
    }
}
