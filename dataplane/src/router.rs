//! SFU routing in mediasoup's terms: a [`Router`] is a channel on a worker; it holds the
//! channel's [`Producer`]s (published tracks), and each producer holds its [`Consumer`]s (the
//! subscriptions to it on other transports).
//!
//! Producers and consumers point at transports by their slab key on the same worker, so a
//! forwarded packet never leaves the core it arrived on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::media::{Codec, MediaKind};
use crate::rtcp::ReceiveStats;
use crate::rtp::{self, HeaderFields};
use crate::srtp;
use crate::worker::{ConsumerSpec, ProducerId, ProducerSpec};

/// Packets a video producer keeps for NACKs: ~1.5 s of 720p at 1.5 Mbps.
const HISTORY_PACKETS: usize = 256;
/// The largest packet kept in the history; larger ones are forwarded but not kept.
const HISTORY_SLOT: usize = 1500;
/// Keyframe requests to one producer are at least this far apart.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// A channel on one worker.
#[derive(Default)]
pub struct Router {
    pub producers: HashMap<ProducerId, Producer>,
    /// Live transports in this router; the router goes away with the last one.
    pub transports: usize,
}

/// A published track.
pub struct Producer {
    /// Slab key of the publishing transport.
    pub transport: usize,
    pub spec: ProducerSpec,
    /// From the SDP, or learned from the first packet (MID extension or payload type).
    pub ssrc: Option<u32>,
    pub history: Option<History>,
    pub consumers: Vec<Consumer>,
    pub receive: ReceiveStats,
    /// RTP timestamp and arrival of the publisher's last sender report, to place our sender
    /// reports to subscribers on the same clock.
    pub last_sr: Option<(u64, u32, Instant)>,
    pub keyframe: KeyframeRequests,
}

impl Producer {
    pub fn new(transport: usize, spec: ProducerSpec) -> Producer {
        let history = (spec.kind == MediaKind::Video).then(History::new);
        Producer {
            transport,
            ssrc: spec.ssrc,
            receive: ReceiveStats::new(spec.clock_rate),
            spec,
            history,
            consumers: Vec::new(),
            last_sr: None,
            keyframe: KeyframeRequests::default(),
        }
    }

    pub fn codec(&self) -> Codec {
        self.spec.codec
    }

    /// Whether any video consumer still waits for its first keyframe.
    pub fn consumers_waiting(&self) -> bool {
        self.consumers.iter().any(|c| !c.started)
    }

    /// The producer's RTP time now, extrapolated from its last sender report.
    pub fn rtp_time_at(&self, now: Instant) -> Option<(u64, u32)> {
        let (ntp, rtp_ts, at) = self.last_sr?;
        let elapsed = now.saturating_duration_since(at);
        let ticks =
            (elapsed.as_micros() as u64 * u64::from(self.spec.clock_rate) / 1_000_000) as u32;
        let ntp_elapsed =
            (elapsed.as_secs() << 32) | ((u64::from(elapsed.subsec_nanos()) << 32) / 1_000_000_000);
        Some((ntp.wrapping_add(ntp_elapsed), rtp_ts.wrapping_add(ticks)))
    }
}

/// Keyframe (PLI/FIR) requests to a producer, rate-limited.
#[derive(Debug, Default)]
pub struct KeyframeRequests {
    pub pending: bool,
    pub last_sent: Option<Instant>,
    pub fir_seq: u8,
}

impl KeyframeRequests {
    /// Whether a pending request may go out now.
    pub fn due(&self, now: Instant) -> bool {
        self.pending
            && self
                .last_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_REQUEST_INTERVAL)
    }
}

/// A subscription to a producer on another transport.
pub struct Consumer {
    /// Slab key of the subscribing transport.
    pub transport: usize,
    pub ssrc: u32,
    pub payload_type: u8,
    pub mid: String,
    pub mid_ext: Option<u8>,
    pub nack: bool,
    /// Added to the producer's sequence numbers and timestamps; constant for the consumer's
    /// life, so a NACKed sequence number maps straight back to the producer's.
    pub seq_offset: u16,
    pub ts_offset: u32,
    /// Video consumers start at a keyframe; audio consumers at once.
    pub started: bool,
    pub packets: u32,
    pub octets: u32,
}

impl Consumer {
    pub fn new(transport: usize, spec: &ConsumerSpec, kind: MediaKind) -> Consumer {
        Consumer {
            transport,
            ssrc: spec.ssrc,
            payload_type: spec.payload_type,
            mid: spec.mid.clone(),
            mid_ext: spec.mid_ext,
            nack: spec.nack,
            seq_offset: rand::random(),
            ts_offset: rand::random(),
            started: kind == MediaKind::Audio,
            packets: 0,
            octets: 0,
        }
    }

    /// The producer's sequence number for one of ours (for NACKs).
    pub fn producer_seq(&self, seq: u16) -> u16 {
        seq.wrapping_sub(self.seq_offset)
    }

    /// Writes the decrypted RTP `packet` as this consumer sends it (see [`Consumer::rewrite`]),
    /// encrypted in place with the subscriber's SRTP context.
    pub fn write(
        &self,
        header: &rtp::Header,
        packet: &[u8],
        srtp: &mut srtp::Context,
        out: &mut [u8],
    ) -> Option<usize> {
        let end = self.rewrite(header, packet, out)?;
        srtp.protect_rtp(out, end).ok()
    }

    /// Writes the decrypted RTP `packet` into `out` in the clear as this consumer sends it: its
    /// SSRC, payload type, shifted sequence number and timestamp, only the MID extension. The
    /// payload is copied once, straight into `out`. Returns the length. Separate from `write`
    /// so the rewrite's cost can be measured apart from the encryption's.
    pub fn rewrite(&self, header: &rtp::Header, packet: &[u8], out: &mut [u8]) -> Option<usize> {
        let fields = HeaderFields {
            marker: header.marker,
            payload_type: self.payload_type,
            sequence: header.sequence.wrapping_add(self.seq_offset),
            timestamp: header.timestamp.wrapping_add(self.ts_offset),
            ssrc: self.ssrc,
        };
        let mid = self.mid_ext.map(|id| (id, self.mid.as_bytes()));
        let extensions = mid.as_slice();
        let header_len = rtp::write_header(out, &fields, extensions).ok()?;
        // Payload and padding go through unchanged; the padding bit must then be set again.
        let body = packet.get(header.payload_offset..)?;
        if header.payload_end < packet.len() {
            *out.first_mut()? |= 0x20;
        }
        let end = header_len.checked_add(body.len())?;
        out.get_mut(header_len..end)?.copy_from_slice(body);
        Some(end)
    }
}

impl Router {
    /// Adds a consumer of `spec.producer` on transport `transport`; false if the producer is not
    /// in this router.
    pub fn add_consumer(&mut self, transport: usize, spec: &ConsumerSpec) -> bool {
        let Some(producer) = self.producers.get_mut(&spec.producer) else {
            return false;
        };
        let consumer = Consumer::new(transport, spec, producer.spec.kind);
        producer.consumers.push(consumer);
        true
    }
}

/// Recent decrypted packets of a video producer, indexed by sequence number.
pub struct History {
    seqs: Box<[Option<u16>]>,
    lens: Box<[u16]>,
    data: Box<[u8]>,
}

impl History {
    fn new() -> History {
        History {
            seqs: vec![None; HISTORY_PACKETS].into_boxed_slice(),
            lens: vec![0; HISTORY_PACKETS].into_boxed_slice(),
            data: vec![0; HISTORY_PACKETS * HISTORY_SLOT].into_boxed_slice(),
        }
    }

    fn slot(seq: u16) -> usize {
        usize::from(seq) % HISTORY_PACKETS
    }

    pub fn insert(&mut self, seq: u16, packet: &[u8]) {
        let i = Self::slot(seq);
        let (Some(s), Some(l), Some(d)) = (
            self.seqs.get_mut(i),
            self.lens.get_mut(i),
            self.data.get_mut(i * HISTORY_SLOT..(i + 1) * HISTORY_SLOT),
        ) else {
            return;
        };
        match d.get_mut(..packet.len()) {
            Some(dst) => {
                dst.copy_from_slice(packet);
                *s = Some(seq);
                *l = packet.len() as u16;
            }
            None => *s = None,
        }
    }

    pub fn get(&self, seq: u16) -> Option<&[u8]> {
        let i = Self::slot(seq);
        if *self.seqs.get(i)? != Some(seq) {
            return None;
        }
        let len = usize::from(*self.lens.get(i)?);
        self.data.get(i * HISTORY_SLOT..i * HISTORY_SLOT + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_recent_packets_by_sequence() {
        let mut h = History::new();
        h.insert(10, &[1, 2, 3]);
        h.insert(65535, &[9]);
        assert_eq!(h.get(10), Some(&[1, 2, 3][..]));
        assert_eq!(h.get(65535), Some(&[9][..]));
        assert_eq!(h.get(11), None);
        // A newer packet in the same slot replaces the old one.
        h.insert(10 + HISTORY_PACKETS as u16, &[4]);
        assert_eq!(h.get(10), None);
        // Oversized packets are not kept.
        h.insert(5, &[0; HISTORY_SLOT + 1]);
        assert_eq!(h.get(5), None);
    }

    #[test]
    fn rtp_time_is_extrapolated_from_the_last_sender_report() {
        let spec = ProducerSpec {
            id: 1,
            kind: MediaKind::Video,
            codec: Codec::Vp8,
            payload_type: 96,
            clock_rate: 90_000,
            ssrc: Some(1),
            mid: "0".into(),
            mid_ext: None,
            nack: true,
            pli: true,
            fir: false,
            remb: false,
        };
        let mut p = Producer::new(0, spec);
        let t = Instant::now();
        assert_eq!(p.rtp_time_at(t), None);
        p.last_sr = Some((10 << 32, 1000, t));
        let (ntp, rtp) = p.rtp_time_at(t + Duration::from_millis(7500)).unwrap();
        assert_eq!(ntp, (17 << 32) | (1 << 31));
        assert_eq!(rtp, 1000 + 675_000);
    }

    #[test]
    fn keyframe_requests_are_rate_limited() {
        let now = Instant::now();
        let mut k = KeyframeRequests {
            pending: true,
            ..Default::default()
        };
        assert!(k.due(now));
        k.last_sent = Some(now);
        assert!(!k.due(now + Duration::from_millis(100)));
        assert!(k.due(now + KEYFRAME_REQUEST_INTERVAL));
    }
}
