//! Counters kept by each engine without locks and published for the control plane.
//!
//! An engine bumps plain `u64` fields on the per-packet path; its worker copies them into
//! atomics a few times a second ([`Shared::publish`]), so the control plane can read them at
//! any time without ever touching the worker's own state. The counters are named once, in the
//! `counters!` invocation below, which declares the plain struct, its atomic mirror and the
//! copies between them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a datagram was dropped. The names appear in `/metrics` as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
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
    /// An ICE-TCP frame longer than any datagram we handle.
    TcpOversize,
    /// An ICE-TCP connection had too much waiting to be written (the client stopped reading).
    TcpBacklog,
    /// A data channel input refused: an SCTP packet that fits no association, a bad DCEP
    /// message, data on a stream with no channel, application data without data channels.
    SctpMalformed,
    /// A transport's pacer already held as many packets as it may (the receiver NACKs them).
    PacerFull,
    /// A router had so many frames waiting for their fan-out that the oldest went unsent (the
    /// worker is far behind; receivers NACK them).
    FanoutBacklog,
}

impl DropReason {
    pub const ALL: [DropReason; 20] = [
        DropReason::Malformed,
        DropReason::UnknownSource,
        DropReason::StunMalformed,
        DropReason::StunUnknownUfrag,
        DropReason::StunBadIntegrity,
        DropReason::StunBadFingerprint,
        DropReason::StunRejected,
        DropReason::SrtpBeforeDtls,
        DropReason::SrtpAuthFailed,
        DropReason::SrtpReplay,
        DropReason::RtpMalformed,
        DropReason::RtpUnknownSsrc,
        DropReason::RtcpMalformed,
        DropReason::DtlsFailed,
        DropReason::TxFull,
        DropReason::TcpOversize,
        DropReason::TcpBacklog,
        DropReason::SctpMalformed,
        DropReason::PacerFull,
        DropReason::FanoutBacklog,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownSource => "unknown_source",
            DropReason::StunMalformed => "stun_malformed",
            DropReason::StunUnknownUfrag => "stun_unknown_ufrag",
            DropReason::StunBadIntegrity => "stun_bad_integrity",
            DropReason::StunBadFingerprint => "stun_bad_fingerprint",
            DropReason::StunRejected => "stun_rejected",
            DropReason::SrtpBeforeDtls => "srtp_before_dtls",
            DropReason::SrtpAuthFailed => "srtp_auth_failed",
            DropReason::SrtpReplay => "srtp_replay",
            DropReason::RtpMalformed => "rtp_malformed",
            DropReason::RtpUnknownSsrc => "rtp_unknown_ssrc",
            DropReason::RtcpMalformed => "rtcp_malformed",
            DropReason::DtlsFailed => "dtls_failed",
            DropReason::TxFull => "tx_full",
            DropReason::TcpOversize => "tcp_oversize",
            DropReason::TcpBacklog => "tcp_backlog",
            DropReason::SctpMalformed => "sctp_malformed",
            DropReason::PacerFull => "pacer_full",
            DropReason::FanoutBacklog => "fanout_backlog",
        }
    }
}

const DROPS: usize = DropReason::ALL.len();

/// Declares [`Counters`] (plain fields, written by one engine), [`Shared`] (the same fields as
/// atomics) and the loops between them, from one list of names.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// An engine's counters; only its thread writes them. Summed over workers with
        /// [`Counters::add`].
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$doc])* pub $name: u64,)*
            /// By [`DropReason`].
            pub drops: [u64; DROPS],
        }

        /// The published copy of an engine's counters.
        #[derive(Debug, Default)]
        pub struct Shared {
            $($name: AtomicU64,)*
            drops: [AtomicU64; DROPS],
        }

        impl Counters {
            /// Adds `other` into `self` (totals over workers).
            pub fn add(&mut self, other: &Counters) {
                $(self.$name += other.$name;)*
                for (sum, n) in self.drops.iter_mut().zip(other.drops) {
                    *sum += n;
                }
            }
        }

        impl Shared {
            pub fn publish(&self, c: &Counters) {
                $(self.$name.store(c.$name, Ordering::Relaxed);)*
                for (a, v) in self.drops.iter().zip(c.drops) {
                    a.store(v, Ordering::Relaxed);
                }
            }

            pub fn snapshot(&self) -> Counters {
                let mut drops = [0; DROPS];
                for (d, a) in drops.iter_mut().zip(&self.drops) {
                    *d = a.load(Ordering::Relaxed);
                }
                Counters {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    drops,
                }
            }
        }
    };
}

counters! {
    packets_in,
    bytes_in,
    packets_out,
    bytes_out,
    /// RTP packets written to consumers.
    rtp_forwarded,
    nack_retransmits,
    keyframe_requests,
    /// Live transports (a gauge, not a running total).
    transports,
    /// Open ICE-TCP connections (a gauge).
    ice_tcp_connections,
    /// ICE-TCP connections closed at once: too many, or a second one from the same address.
    ice_tcp_refused,
    /// Data channel messages received from publishers, and their bytes.
    data_messages_received,
    data_bytes_received,
    /// Data channel messages written to subscribers' channels, and their bytes.
    data_messages_forwarded,
    data_bytes_forwarded,
    /// Data channel messages a subscriber did not get: its queue was full (a slow reader),
    /// its association was not up, or the message exceeded its size limit.
    data_messages_dropped,
    /// Of `nack_retransmits`, those sent on a consumer's RTX stream (RFC 4588).
    rtx_retransmits,
    /// GSO trains sent (two or more datagrams to one destination in one send), the datagrams
    /// in them, and sockets that turned trains off when the kernel refused one.
    gso_trains,
    gso_segments,
    gso_fallbacks,
    /// Of `gso_trains`, those sent zero-copy (io_uring `SENDMSG_ZC`), those of them the kernel
    /// copied after all (loopback, veth: no gain there), and zero-copy ways the kernel refused
    /// (registered buffers before Linux 6.15, zero-copy itself), each stepping down once.
    zero_copy_trains,
    zero_copy_copied,
    zero_copy_fallbacks,
    /// Video frames fanned out whole (several packets held, then written consumer by
    /// consumer), times fan-out waited for send buffers (going on over one or more turns of
    /// the loop), and the bytes of RTP padding that made a frame's packets one size.
    frames_fanned,
    fanout_deferred,
    padding_bytes,
    /// Packets that came over shard links from another worker: a channel's publications
    /// to its shards, their feedback back.
    shard_packets,
}

impl Counters {
    pub fn drop(&mut self, reason: DropReason) {
        self.drop_many(reason, 1);
    }

    /// `n` drops at once (what another thread counted for us).
    pub fn drop_many(&mut self, reason: DropReason, n: u64) {
        self.drops[reason as usize] += n;
    }

    pub fn sent(&mut self, bytes: usize) {
        self.packets_out += 1;
        self.bytes_out += bytes as u64;
    }

    /// (reason name, count) for every drop reason, in [`DropReason::ALL`] order.
    pub fn drop_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .zip(self.drops)
            .map(|(d, n)| (d.name(), n))
    }

    /// How many datagrams were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_counters_read_back_and_add_up() {
        let mut c = Counters {
            packets_in: 3,
            ..Default::default()
        };
        c.sent(100);
        c.drop(DropReason::TxFull);
        c.drop(DropReason::TxFull);
        let shared = Shared::default();
        shared.publish(&c);
        let read = shared.snapshot();
        assert_eq!(read, c);
        let mut total = Counters::default();
        total.add(&read);
        total.add(&read);
        assert_eq!(
            (total.packets_in, total.bytes_out, total.packets_out),
            (6, 200, 2)
        );
        assert_eq!(total.dropped(DropReason::TxFull), 4);
        assert_eq!(
            total.drop_counts().find(|(n, _)| *n == "tx_full"),
            Some(("tx_full", 4))
        );
    }
}
