//! A transport: one peer connection's ICE-lite agent, DTLS session and SRTP contexts, and the
//! tracks it publishes and receives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dtls::Dtls;
use crate::ice::IceLite;
use crate::rtp;
use crate::srtp;
use crate::stats::Drop;
use crate::worker::{ProducerId, RouterId, TransportId};

/// Addresses with a valid check kept per transport (the peer may check from several).
const MAX_ADDRS: usize = 4;
/// Reports go to each connected peer this often.
pub const RTCP_INTERVAL: Duration = Duration::from_secs(1);
/// A transport that has not finished DTLS this long after creation is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The SRTP contexts a finished DTLS handshake produced.
pub struct Srtp {
    pub inbound: srtp::Context,
    pub outbound: srtp::Context,
}

/// How an incoming SSRC maps to a producer on this transport.
#[derive(Debug, Clone)]
pub struct Publishing {
    pub producer: ProducerId,
    pub ssrc: Option<u32>,
    pub payload_type: u8,
    pub mid: String,
    pub mid_ext: Option<u8>,
}

pub struct Transport {
    pub id: TransportId,
    pub router: RouterId,
    pub ice: IceLite,
    pub dtls: Dtls,
    pub srtp: Option<Srtp>,
    /// Where we send: the nominated address, else the latest address with a valid check.
    pub remote: Option<SocketAddr>,
    nominated: bool,
    /// Addresses with valid checks, oldest first (each is in the engine's address map).
    pub addrs: Vec<SocketAddr>,
    pub publishing: Vec<Publishing>,
    /// (consumer SSRC, producer) for each track this transport receives.
    pub consuming: Vec<(u32, ProducerId)>,
    /// Our SSRC as the sender of receiver reports, PLI and REMB.
    pub rtcp_ssrc: u32,
    pub created: Instant,
    pub dtls_deadline: Option<Instant>,
    pub next_report: Instant,
    /// A pipe to another media server: keyed by the control plane, no ICE consent to expire.
    pub pipe: Option<PipeIds>,
}

/// The RTCP sender SSRCs of a pipe's two ends, chosen by the control plane so that RTCP from
/// the other server can be matched to its pipe before it is decrypted.
#[derive(Debug, Clone, Copy)]
pub struct PipeIds {
    pub local_rtcp_ssrc: u32,
    pub remote_rtcp_ssrc: u32,
}

impl Transport {
    pub fn new(
        id: TransportId,
        router: RouterId,
        ice: IceLite,
        dtls: Dtls,
        now: Instant,
    ) -> Transport {
        Transport {
            id,
            router,
            ice,
            dtls,
            srtp: None,
            remote: None,
            nominated: false,
            addrs: Vec::with_capacity(MAX_ADDRS),
            publishing: Vec::new(),
            consuming: Vec::new(),
            rtcp_ssrc: rand::random(),
            created: now,
            dtls_deadline: None,
            next_report: now + RTCP_INTERVAL,
            pipe: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// Decrypts an SRTP (or, with `rtcp`, SRTCP) packet from the peer in place; the error is
    /// the reason to count the drop under.
    pub fn unprotect(&mut self, data: &mut [u8], rtcp: bool) -> Result<usize, Drop> {
        let srtp = self.srtp.as_mut().ok_or(Drop::SrtpBeforeDtls)?;
        let result = if rtcp {
            srtp.inbound.unprotect_rtcp(data)
        } else {
            srtp.inbound.unprotect_rtp(data)
        };
        result.map_err(|e| match e {
            srtp::Error::Replay | srtp::Error::TooOld => Drop::SrtpReplay,
            _ => Drop::SrtpAuthFailed,
        })
    }

    /// Records a valid check from `src`. Returns the address that fell out of the list (to
    /// remove from the engine's map) and whether `src` is new.
    pub fn checked(&mut self, src: SocketAddr, nominated: bool) -> (Option<SocketAddr>, bool) {
        if nominated || !self.nominated {
            self.remote = Some(src);
            self.nominated |= nominated;
        }
        if self.addrs.contains(&src) {
            return (None, false);
        }
        let evicted = if self.addrs.len() >= MAX_ADDRS {
            let i = self
                .addrs
                .iter()
                .position(|a| Some(*a) != self.remote)
                .unwrap_or(0);
            Some(self.addrs.remove(i))
        } else {
            None
        };
        self.addrs.push(src);
        (evicted, true)
    }

    /// The producer an incoming RTP packet belongs to: by SSRC, else by binding an unsignalled
    /// SSRC through the MID header extension or, failing that, a unique payload type.
    pub fn producer_for(
        &mut self,
        header: &rtp::Header,
        packet: &[u8],
    ) -> Option<(ProducerId, bool)> {
        if let Some(p) = self.publishing.iter().find(|p| p.ssrc == Some(header.ssrc)) {
            return Some((p.producer, false));
        }
        let by_mid = self.publishing.iter().position(|p| {
            p.ssrc.is_none()
                && p.mid_ext
                    .and_then(|id| header.extension_value(packet, id))
                    .is_some_and(|v| v == p.mid.as_bytes())
        });
        let index = by_mid.or_else(|| {
            let mut candidates = self
                .publishing
                .iter()
                .enumerate()
                .filter(|(_, p)| p.ssrc.is_none() && p.payload_type == header.payload_type);
            match (candidates.next(), candidates.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        })?;
        let p = self.publishing.get_mut(index)?;
        p.ssrc = Some(header.ssrc);
        Some((p.producer, true))
    }

    /// The producer publishing `ssrc` on this transport.
    pub fn producer_by_ssrc(&self, ssrc: u32) -> Option<ProducerId> {
        self.publishing
            .iter()
            .find(|p| p.ssrc == Some(ssrc))
            .map(|p| p.producer)
    }

    /// The producer behind the consumer this transport receives as `ssrc`.
    pub fn consumed_producer(&self, ssrc: u32) -> Option<ProducerId> {
        self.consuming
            .iter()
            .find(|(s, _)| *s == ssrc)
            .map(|&(_, p)| p)
    }
}
