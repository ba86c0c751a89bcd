//! The client side of a transport, as a browser runs it against our ICE-lite server: a
//! controlling ICE agent that nominates with USE-CANDIDATE, a DTLS client, SRTP.
//!
//! Sans-IO like everything else here; the load generator and the tests drive it over real
//! sockets or in memory. It makes the offers a browser would (`offer`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::dtls::{self, Dtls, Fingerprint, Identity};
use crate::ice::Credentials;
use crate::media::{Codec, MediaKind};
use crate::transport::Srtp;
use crate::{demux, srtp, stun};

/// Connectivity checks repeat this often until one is answered.
const CHECK_RETRY: Duration = Duration::from_millis(200);
/// Consent checks once connected (browsers send one every ~5 s).
const CONSENT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("DTLS: {0}")]
    Dtls(#[from] dtls::Error),
    #[error("SRTP: {0}")]
    Srtp(#[from] srtp::Error),
    #[error("not connected yet")]
    NotConnected,
}

/// What a received datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A decrypted RTP packet of this length at the start of the buffer.
    Rtp(usize),
    /// A decrypted compound RTCP packet of this length.
    Rtcp(usize),
    /// Handshake traffic, or nothing for the caller.
    Other,
}

/// One client transport.
pub struct Client {
    local: Credentials,
    remote: Credentials,
    dtls: Dtls,
    srtp: Option<Srtp>,
    ice_connected: bool,
    next_check: Instant,
    transaction: [u8; 12],
    tie_breaker: u64,
    /// Where DTLS records are polled into: `dtls::POLL_BUFFER` bytes during the handshake, a
    /// datagram's worth after it (the load generator keeps thousands of clients).
    scratch: Box<[u8]>,
    /// DTLS records waiting for `poll_transmit`.
    pending: VecDeque<Vec<u8>>,
}

impl Client {
    pub fn new(
        identity: &Identity,
        local: Credentials,
        remote: Credentials,
        remote_fingerprint: Fingerprint,
        now: Instant,
    ) -> Client {
        Client {
            local,
            remote,
            dtls: Dtls::client(identity, remote_fingerprint, now),
            srtp: None,
            ice_connected: false,
            next_check: now,
            transaction: rand::random(),
            tie_breaker: rand::random(),
            scratch: vec![0; dtls::POLL_BUFFER].into_boxed_slice(),
            pending: VecDeque::new(),
        }
    }

    pub fn local(&self) -> &Credentials {
        &self.local
    }

    /// ICE answered and DTLS finished: media may flow.
    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// The next datagram for the server, if any is due: a connectivity or consent check, or a
    /// DTLS record.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Result<Option<usize>, Error> {
        if now >= self.next_check {
            self.next_check = now
                + if self.ice_connected {
                    CONSENT_INTERVAL
                } else {
                    CHECK_RETRY
                };
            self.transaction = rand::random();
            return Ok(self.binding_request(out).ok());
        }
        if !self.ice_connected {
            return Ok(None);
        }
        self.drive_dtls()?;
        let Some(record) = self.pending.pop_front() else {
            return Ok(None);
        };
        let Some(dst) = out.get_mut(..record.len()) else {
            return Ok(None);
        };
        dst.copy_from_slice(&record);
        Ok(Some(record.len()))
    }

    /// Runs DTLS until it waits: records to send are queued, and SRTP starts as soon as the
    /// handshake completes (so media right behind the last handshake record decrypts).
    fn drive_dtls(&mut self) -> Result<(), Error> {
        loop {
            match self.dtls.poll_output(&mut self.scratch)? {
                dtls::Output::Transmit(record) => self.pending.push_back(record.to_vec()),
                dtls::Output::Connected(keying) => {
                    let (inbound, outbound) = srtp::session_from_keying(
                        keying.profile,
                        &keying.material,
                        keying.is_server,
                    )?;
                    self.srtp = Some(Srtp { inbound, outbound });
                    self.scratch = vec![0; crate::io::MAX_DATAGRAM].into_boxed_slice();
                }
                dtls::Output::Timeout(_) | dtls::Output::Idle => return Ok(()),
            }
        }
    }

    fn binding_request(&self, out: &mut [u8]) -> Result<usize, stun::Error> {
        let username = format!("{}:{}", self.remote.ufrag, self.local.ufrag);
        let mut w = stun::Writer::new(
            out,
            stun::method::BINDING,
            stun::Class::Request,
            &self.transaction,
        )?;
        w.attribute(stun::attr::USERNAME, username.as_bytes())?;
        w.attribute(stun::attr::PRIORITY, &0x6e00_1eff_u32.to_be_bytes())?;
        w.attribute(stun::attr::ICE_CONTROLLING, &self.tie_breaker.to_be_bytes())?;
        w.attribute(stun::attr::USE_CANDIDATE, &[])?;
        w.message_integrity(self.remote.pwd.as_bytes())?;
        w.fingerprint()?;
        Ok(w.finish())
    }

    /// When `poll_transmit` or `handle_timeout` next has work.
    pub fn poll_timeout(&self) -> Instant {
        self.next_check
    }

    /// Drives DTLS retransmissions.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        if self.ice_connected {
            self.dtls.handle_timeout(now)?;
        }
        Ok(())
    }

    /// Handles a datagram from the server, decrypting media in place.
    pub fn handle_datagram(&mut self, now: Instant, data: &mut [u8]) -> Result<Received, Error> {
        match demux::classify(data) {
            demux::PacketKind::Stun => {
                let ok = stun::Message::parse(data).is_ok_and(|m| {
                    m.class() == stun::Class::Success
                        && m.transaction_id() == &self.transaction
                        && m.integrity_ok(self.remote.pwd.as_bytes())
                });
                if ok && !self.ice_connected {
                    self.ice_connected = true;
                    self.next_check = now + CONSENT_INTERVAL;
                    self.dtls.handle_timeout(now)?;
                }
                Ok(Received::Other)
            }
            demux::PacketKind::Dtls => {
                self.dtls.handle_datagram(data)?;
                self.drive_dtls()?;
                Ok(Received::Other)
            }
            demux::PacketKind::Rtp => {
                let srtp = self.srtp.as_mut().ok_or(Error::NotConnected)?;
                Ok(Received::Rtp(srtp.inbound.unprotect_rtp(data)?))
            }
            demux::PacketKind::Rtcp => {
                let srtp = self.srtp.as_mut().ok_or(Error::NotConnected)?;
                Ok(Received::Rtcp(srtp.inbound.unprotect_rtcp(data)?))
            }
            demux::PacketKind::Unknown => Ok(Received::Other),
        }
    }

    /// Encrypts an RTP packet in place (see `srtp::Context::protect_rtp`).
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let srtp = self.srtp.as_mut().ok_or(Error::NotConnected)?;
        Ok(srtp.outbound.protect_rtp(buf, len)?)
    }

    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let srtp = self.srtp.as_mut().ok_or(Error::NotConnected)?;
        Ok(srtp.outbound.protect_rtcp(buf, len)?)
    }
}

/// A track in an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferTrack {
    /// We publish `codec` as `ssrc` (sendonly).
    Send {
        codec: Codec,
        payload_type: u8,
        ssrc: u32,
    },
    /// We want to receive a track of this kind (recvonly), accepting `codec`.
    Receive { codec: Codec, payload_type: u8 },
}

/// A browser-like offer: BUNDLE, rtcp-mux, the MID extension, `a=setup:actpass`, NACK/PLI/FIR
/// feedback, one codec per m-line.
pub fn offer(ice: &Credentials, fingerprint: &Fingerprint, tracks: &[OfferTrack]) -> String {
    let mut s = String::new();
    let mids: Vec<String> = (0..tracks.len()).map(|i| i.to_string()).collect();
    // Writing into a String cannot fail.
    let _ = write!(
        s,
        "v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\na=msid-semantic: WMS\r\n",
        rand::random::<u32>(),
        mids.join(" ")
    );
    for (mid, track) in tracks.iter().enumerate() {
        let (codec, pt, direction) = match *track {
            OfferTrack::Send {
                codec,
                payload_type,
                ..
            } => (codec, payload_type, "sendonly"),
            OfferTrack::Receive {
                codec,
                payload_type,
            } => (codec, payload_type, "recvonly"),
        };
        let kind = codec.kind();
        let _ = write!(
            s,
            "m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n\
             a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:{fingerprint}\r\na=setup:actpass\r\n\
             a={direction}\r\na=rtcp-mux\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
            ice.ufrag, ice.pwd
        );
        let channels = if kind == MediaKind::Audio { "/2" } else { "" };
        let _ = write!(
            s,
            "a=rtpmap:{pt} {}/{}{channels}\r\n",
            codec.name(),
            codec.clock_rate()
        );
        match codec {
            Codec::H264 => {
                let _ = write!(
                    s,
                    "a=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
                );
            }
            Codec::Opus => {
                let _ = write!(s, "a=fmtp:{pt} minptime=10;useinbandfec=1\r\n");
            }
            _ => {}
        }
        if kind == MediaKind::Video {
            let _ = write!(
                s,
                "a=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\na=rtcp-fb:{pt} ccm fir\r\na=rtcp-fb:{pt} goog-remb\r\n"
            );
        }
        if let OfferTrack::Send { ssrc, .. } = *track {
            let _ = write!(
                s,
                "a=msid:switchyard track{mid}\r\na=ssrc:{ssrc} cname:switchyard-client\r\na=ssrc:{ssrc} msid:switchyard track{mid}\r\n"
            );
        }
    }
    s
}
