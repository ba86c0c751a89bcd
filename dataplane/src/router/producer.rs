//! A producer: a published track, with what the router keeps for it (NACK history, receive
//! statistics, the publisher's clock, keyframe requests).

use std::time::{Duration, Instant};

use super::history::History;
use crate::media::{Codec, MediaKind};
use crate::rtcp::ReceiveStats;
use crate::speaker::Activity;
use crate::spec::{ProducerId, ProducerSpec, Ssrc};

/// Keyframe requests to one producer are at least this far apart.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// While a consumer still waits for its first keyframe, the request is repeated this often.
pub const KEYFRAME_RETRY: Duration = Duration::from_secs(1);

/// A published track.
pub(super) struct Producer {
    pub id: ProducerId,
    /// Its publisher's member entry in the router.
    pub member: usize,
    pub kind: MediaKind,
    pub codec: Codec,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// The one place the producer's SSRC is kept: from the SDP, or learned from the first
    /// packet (MID extension or payload type; see `Router::producer_for`).
    pub ssrc: Option<Ssrc>,
    pub mid: String,
    pub mid_ext: Option<u8>,
    /// The publisher takes PLI / FIR / REMB from us.
    pub pli: bool,
    pub fir: bool,
    pub remb: bool,
    /// Video only: what NACKs are answered from.
    pub history: Option<History>,
    /// Keys of its consumers in the router.
    pub consumers: Vec<usize>,
    pub receive: ReceiveStats,
    /// NTP time, RTP timestamp and arrival of the publisher's last sender report, to place our
    /// sender reports to subscribers on the same clock.
    pub last_sr: Option<(u64, u32, Instant)>,
    pub keyframe: KeyframeRequests,
    /// Audio with the level extension (RFC 6464): its id, and what the levels say.
    pub audio_level_ext: Option<u8>,
    pub activity: Activity,
}

impl Producer {
    pub fn new(member: usize, spec: &ProducerSpec) -> Producer {
        Producer {
            id: spec.id,
            member,
            kind: spec.kind,
            codec: spec.codec,
            payload_type: spec.payload_type,
            clock_rate: spec.clock_rate,
            ssrc: spec.ssrc,
            mid: spec.mid.clone(),
            mid_ext: spec.mid_ext,
            pli: spec.pli,
            fir: spec.fir,
            remb: spec.remb,
            history: (spec.kind == MediaKind::Video).then(History::new),
            consumers: Vec::new(),
            receive: ReceiveStats::new(spec.clock_rate),
            last_sr: None,
            keyframe: KeyframeRequests::default(),
            audio_level_ext: spec
                .audio_level_ext
                .filter(|_| spec.kind == MediaKind::Audio),
            activity: Activity::default(),
        }
    }

    /// The producer's RTP time now, extrapolated from its last sender report.
    pub fn rtp_time_at(&self, now: Instant) -> Option<(u64, u32)> {
        let (ntp, rtp_ts, at) = self.last_sr?;
        let elapsed = now.saturating_duration_since(at);
        let ticks = (elapsed.as_micros() as u64 * u64::from(self.clock_rate) / 1_000_000) as u32;
        let ntp_elapsed =
            (elapsed.as_secs() << 32) | ((u64::from(elapsed.subsec_nanos()) << 32) / 1_000_000_000);
        Some((ntp.wrapping_add(ntp_elapsed), rtp_ts.wrapping_add(ticks)))
    }

    /// When a keyframe request to this producer is due: a pending one once the rate limit
    /// allows, else a repeat while a consumer still `waiting` for its first keyframe.
    pub fn keyframe_due(&self, now: Instant, waiting: bool) -> Option<Instant> {
        let k = &self.keyframe;
        if k.pending {
            Some(k.last_sent.map_or(now, |t| t + KEYFRAME_REQUEST_INTERVAL))
        } else if waiting && (self.pli || self.fir) {
            Some(k.last_sent.map_or(now, |t| t + KEYFRAME_RETRY))
        } else {
            None
        }
    }
}

/// Keyframe (PLI/FIR) requests to a producer, rate-limited.
#[derive(Debug, Default)]
pub(super) struct KeyframeRequests {
    /// A request is wanted and not yet sent.
    pub pending: bool,
    /// When the last one went out (or would have, had the publisher been connected).
    pub last_sent: Option<Instant>,
    /// FIR command sequence number (RFC 5104 §4.3.1.1).
    pub fir_seq: u8,
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProducerSpec {
        ProducerSpec {
            id: ProducerId(1),
            kind: MediaKind::Video,
            codec: Codec::Vp8,
            payload_type: 96,
            clock_rate: 90_000,
            ssrc: Some(Ssrc(1)),
            mid: "0".into(),
            mid_ext: None,
            nack: true,
            pli: true,
            fir: false,
            remb: false,
            audio_level_ext: None,
        }
    }

    #[test]
    fn rtp_time_is_extrapolated_from_the_last_sender_report() {
        let mut p = Producer::new(0, &spec());
        let t = Instant::now();
        assert_eq!(p.rtp_time_at(t), None);
        p.last_sr = Some((10 << 32, 1000, t));
        let (ntp, rtp) = p.rtp_time_at(t + Duration::from_millis(7500)).unwrap();
        assert_eq!(ntp, (17 << 32) | (1 << 31));
        assert_eq!(rtp, 1000 + 675_000);
    }

    #[test]
    fn keyframe_requests_are_rate_limited_and_repeated_while_consumers_wait() {
        let now = Instant::now();
        let mut p = Producer::new(0, &spec());
        assert_eq!(p.keyframe_due(now, false), None);
        p.keyframe.pending = true;
        assert_eq!(p.keyframe_due(now, false), Some(now));
        p.keyframe.last_sent = Some(now);
        assert_eq!(
            p.keyframe_due(now + Duration::from_millis(100), false),
            Some(now + KEYFRAME_REQUEST_INTERVAL)
        );
        p.keyframe.pending = false;
        assert_eq!(p.keyframe_due(now, false), None);
        assert_eq!(p.keyframe_due(now, true), Some(now + KEYFRAME_RETRY));
    }
}
