//! Counters kept by each worker without locks and published for the control plane.
//!
//! A worker bumps plain `u64` fields on the per-packet path and copies them into atomics a few
//! times a second (`publish`), so the control plane can read them at any time without ever
//! touching the worker's own state.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a datagram was dropped. The names appear in `/metrics` as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Drop {
    /// Not STUN, DTLS, RTP or RTCP (RFC 7983).
    Malformed,
    /// DTLS/RTP/RTCP from an address no transport has seen a valid check from.
    UnknownSource,
    StunMalformed,
    StunUnknownUfrag,
    StunBadIntegrity,
    StunBadFingerprint,
    /// Any other refused STUN message (not a binding request, role conflict, wrong username).
    StunRejected,
    /// RTP/RTCP before the DTLS handshake produced SRTP keys.
    SrtpBeforeDtls,
    SrtpAuthFailed,
    SrtpReplay,
    RtpMalformed,
    RtpUnknownSsrc,
    RtcpMalformed,
    /// A DTLS record that failed the handshake (the transport is closed).
    DtlsFailed,
    /// Every send buffer was in use.
    TxFull,
}

impl Drop {
    pub const ALL: [Drop; 15] = [
        Drop::Malformed,
        Drop::UnknownSource,
        Drop::StunMalformed,
        Drop::StunUnknownUfrag,
        Drop::StunBadIntegrity,
        Drop::StunBadFingerprint,
        Drop::StunRejected,
        Drop::SrtpBeforeDtls,
        Drop::SrtpAuthFailed,
        Drop::SrtpReplay,
        Drop::RtpMalformed,
        Drop::RtpUnknownSsrc,
        Drop::RtcpMalformed,
        Drop::DtlsFailed,
        Drop::TxFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::UnknownSource => "unknown_source",
            Drop::StunMalformed => "stun_malformed",
            Drop::StunUnknownUfrag => "stun_unknown_ufrag",
            Drop::StunBadIntegrity => "stun_bad_integrity",
            Drop::StunBadFingerprint => "stun_bad_fingerprint",
            Drop::StunRejected => "stun_rejected",
            Drop::SrtpBeforeDtls => "srtp_before_dtls",
            Drop::SrtpAuthFailed => "srtp_auth_failed",
            Drop::SrtpReplay => "srtp_replay",
            Drop::RtpMalformed => "rtp_malformed",
            Drop::RtpUnknownSsrc => "rtp_unknown_ssrc",
            Drop::RtcpMalformed => "rtcp_malformed",
            Drop::DtlsFailed => "dtls_failed",
            Drop::TxFull => "tx_full",
        }
    }
}

const DROPS: usize = Drop::ALL.len();

/// A worker's own counters; only its thread writes them.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub rtp_forwarded: u64,
    pub nack_retransmits: u64,
    pub keyframe_requests: u64,
    pub transports: u64,
    pub drops: [u64; DROPS],
}

impl Counters {
    pub fn drop(&mut self, reason: Drop) {
        self.drops[reason as usize] += 1;
    }

    pub fn sent(&mut self, bytes: usize) {
        self.packets_out += 1;
        self.bytes_out += bytes as u64;
    }
}

/// The published copy of a worker's counters.
#[derive(Debug, Default)]
pub struct Shared {
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    packets_out: AtomicU64,
    bytes_out: AtomicU64,
    rtp_forwarded: AtomicU64,
    nack_retransmits: AtomicU64,
    keyframe_requests: AtomicU64,
    transports: AtomicU64,
    drops: [AtomicU64; DROPS],
}

impl Shared {
    pub fn publish(&self, c: &Counters) {
        let store = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        store(&self.packets_in, c.packets_in);
        store(&self.bytes_in, c.bytes_in);
        store(&self.packets_out, c.packets_out);
        store(&self.bytes_out, c.bytes_out);
        store(&self.rtp_forwarded, c.rtp_forwarded);
        store(&self.nack_retransmits, c.nack_retransmits);
        store(&self.keyframe_requests, c.keyframe_requests);
        store(&self.transports, c.transports);
        for (a, v) in self.drops.iter().zip(c.drops) {
            store(a, v);
        }
    }

    pub fn snapshot(&self) -> Counters {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut drops = [0; DROPS];
        for (d, a) in drops.iter_mut().zip(&self.drops) {
            *d = load(a);
        }
        Counters {
            packets_in: load(&self.packets_in),
            bytes_in: load(&self.bytes_in),
            packets_out: load(&self.packets_out),
            bytes_out: load(&self.bytes_out),
            rtp_forwarded: load(&self.rtp_forwarded),
            nack_retransmits: load(&self.nack_retransmits),
            keyframe_requests: load(&self.keyframe_requests),
            transports: load(&self.transports),
            drops,
        }
    }
}
