//! A producer: a published track, with what the router keeps for each of its RTP streams
//! (one, or one per simulcast layer): NACK history, receive statistics, the publisher's clock,
//! keyframe requests, the layer's frame height and bitrate.

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
    pub mid: String,
    pub mid_ext: Option<u8>,
    /// The rtp-stream-id extension, with simulcast.
    pub rid_ext: Option<u8>,
    /// The publisher takes PLI / FIR / REMB from us.
    pub pli: bool,
    pub fir: bool,
    pub remb: bool,
    /// The channel's cap in bits per second (`ProducerSpec::max_bitrate`).
    pub max_bitrate: Option<u64>,
    /// Its RTP streams: one, or one per simulcast layer, lowest first.
    pub layers: Vec<Layer>,
    /// Keys of its consumers in the router.
    pub consumers: Vec<usize>,
    /// Simulcast: the layers last told wanted (a bitmask from the lowest), and since when
    /// fewer have been.
    pub wanted: u8,
    pub fewer_wanted_since: Option<Instant>,
    /// Audio with the level extension (RFC 6464): its id, and what the levels say.
    pub audio_level_ext: Option<u8>,
    pub activity: Activity,
    /// VP9 or AV1 with the dependency descriptor, one stream: its consumers drop layers
    /// (`super::svc`).
    pub svc: Option<Box<super::svc::ProducerSvc>>,
    /// Audio: the publisher's RED payload type (RFC 2198), for Opus sent with redundancy.
    pub red: Option<u8>,
    /// The shard links its packets are copied to (`super::mirror`).
    pub mirrors: Vec<super::mirror::MirrorOut>,
    /// A copy at a shard link's far end: what the lane lost is asked for again (NACK).
    pub linked: bool,
}

/// One RTP stream of a producer: the whole track, or one simulcast layer.
pub(super) struct Layer {
    /// The layer's rid (simulcast only).
    pub rid: Option<String>,
    /// The one place the stream's SSRC is kept: from the SDP, or learned from the first
    /// packet (rid or MID extension, or payload type; see `Router::producer_for`).
    pub ssrc: Option<Ssrc>,
    /// Video only: what NACKs are answered from.
    pub history: Option<History>,
    pub receive: ReceiveStats,
    /// NTP time, RTP timestamp and arrival of the publisher's last sender report for this
    /// stream, to place our sender reports to subscribers on the same clock.
    pub last_sr: Option<(u64, u32, Instant)>,
    pub keyframe: KeyframeRequests,
    /// The frame height of its last keyframe, where the codec says it (VP8), for
    /// subscribers' `maxHeight`.
    pub height: Option<u16>,
    /// When its last packet arrived: a layer the publisher stopped sending is not chosen.
    pub last_packet: Option<Instant>,
    /// Its bitrate, measured over windows of `RATE_WINDOW`.
    pub rate: Rate,
    /// Its frame rate (video), for consumers whose `max_frame_rate` drops temporal layers.
    pub frame_rate: FrameRate,
    /// VP8: the highest temporal layer (TID) seen in its payload descriptors; `None` for
    /// streams without temporal layers (and other codecs: SVC has its own, `super::svc`).
    pub top_tid: Option<u8>,
    /// Video: the frame being held for its fan-out (see `super::fanout`).
    pub held: Option<super::fanout::Held>,
}

/// A layer that sent nothing for this long is taken as stopped by its publisher.
pub const LAYER_TIMEOUT: Duration = Duration::from_millis(1500);

impl Layer {
    fn new(spec: &ProducerSpec, rid: Option<String>, ssrc: Option<Ssrc>) -> Layer {
        Layer {
            rid,
            ssrc,
            history: (spec.kind == MediaKind::Video).then(History::new),
            receive: ReceiveStats::new(spec.clock_rate),
            last_sr: None,
            keyframe: KeyframeRequests::default(),
            height: None,
            last_packet: None,
            rate: Rate::default(),
            frame_rate: FrameRate::default(),
            top_tid: None,
            held: None,
        }
    }

    /// Whether packets arrive on it.
    pub fn active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_TIMEOUT)
    }

    /// The stream's RTP time now, extrapolated from its last sender report.
    pub fn rtp_time_at(&self, now: Instant, clock_rate: u32) -> Option<(u64, u32)> {
        let (ntp, rtp_ts, at) = self.last_sr?;
        let elapsed = now.saturating_duration_since(at);
        let ticks = (elapsed.as_micros() as u64 * u64::from(clock_rate) / 1_000_000) as u32;
        let ntp_elapsed =
            (elapsed.as_secs() << 32) | ((u64::from(elapsed.subsec_nanos()) << 32) / 1_000_000_000);
        Some((ntp.wrapping_add(ntp_elapsed), rtp_ts.wrapping_add(ticks)))
    }

    /// When a keyframe request for this stream is due: a pending one once the rate limit
    /// allows, else a repeat while a consumer still `waiting` for a keyframe of it.
    pub fn keyframe_due(&self, now: Instant, waiting: bool, can_ask: bool) -> Option<Instant> {
        let k = &self.keyframe;
        if k.pending {
            Some(k.last_sent.map_or(now, |t| t + KEYFRAME_REQUEST_INTERVAL))
        } else if waiting && can_ask {
            Some(k.last_sent.map_or(now, |t| t + KEYFRAME_RETRY))
        } else {
            None
        }
    }
}

impl Producer {
    pub fn new(member: usize, spec: &ProducerSpec) -> Producer {
        let layers = if spec.rids.is_empty() {
            vec![Layer::new(spec, None, spec.ssrc)]
        } else {
            spec.rids
                .iter()
                .map(|rid| Layer::new(spec, Some(rid.clone()), None))
                .collect()
        };
        Producer {
            id: spec.id,
            member,
            kind: spec.kind,
            codec: spec.codec,
            payload_type: spec.payload_type,
            clock_rate: spec.clock_rate,
            mid: spec.mid.clone(),
            mid_ext: spec.mid_ext,
            rid_ext: spec.rid_ext,
            pli: spec.pli,
            fir: spec.fir,
            remb: spec.remb,
            max_bitrate: spec.max_bitrate,
            wanted: u8::MAX >> (8 - layers.len().clamp(1, 8)),
            fewer_wanted_since: None,
            layers,
            consumers: Vec::new(),
            audio_level_ext: spec
                .audio_level_ext
                .filter(|_| spec.kind == MediaKind::Audio),
            activity: Activity::default(),
            svc: super::svc::ProducerSvc::for_spec(spec),
            red: spec.red.filter(|_| spec.kind == MediaKind::Audio),
            mirrors: Vec::new(),
            linked: false,
        }
    }

    /// The layer whose SSRC is `ssrc`.
    pub fn layer_of(&self, ssrc: Ssrc) -> Option<usize> {
        self.layers.iter().position(|l| l.ssrc == Some(ssrc))
    }

    pub fn can_ask_keyframe(&self) -> bool {
        self.pli || self.fir
    }
}

/// Bitrate over fixed windows: cheap enough for every packet (an add and a compare). It rises
/// at once with a window's rate and falls by an eighth per window, so a layer is judged by its
/// recent peaks (keyframes) rather than by a quiet half second: a subscriber is not moved to a
/// layer its link carries only between keyframes.
#[derive(Debug, Default, Clone)]
pub(super) struct Rate {
    window_start: Option<Instant>,
    bytes: u64,
    /// Bits per second: the last full window's, or more while a higher one decays.
    pub bps: u64,
}

/// The window of [`Rate`].
const RATE_WINDOW: Duration = Duration::from_millis(500);

impl Rate {
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let window = self.bytes * 8 * 1000 / (elapsed.as_millis() as u64).max(1);
            self.bps = window.max(self.bps - self.bps / 8);
            self.bytes = 0;
            self.window_start = Some(now);
        }
        self.bytes += bytes as u64;
    }
}

/// Frames per second, counted as the RTP timestamps that move forward (a frame's packets, and
/// the spatial layers of an SVC temporal unit, share one) over windows of
/// `FRAME_RATE_WINDOW`: a compare and an add per packet. Late packets (reordered, or resent)
/// are not counted again; a window much longer than planned (the publisher paused) is not
/// counted at all, so a gap does not read as a low rate.
#[derive(Debug, Default, Clone)]
pub(super) struct FrameRate {
    window_start: Option<Instant>,
    newest: Option<u32>,
    frames: u32,
    /// The last full window's rate, rounded; 0 until one has passed.
    pub fps: u32,
}

/// The window of [`FrameRate`]: a second holds 30 frames, enough to tell 30 from 15.
const FRAME_RATE_WINDOW: Duration = Duration::from_secs(1);

/// A step back in RTP timestamps larger than this (about three minutes at 90 kHz) is taken for
/// a restart of the publisher's clock, not a late packet.
const TIMESTAMP_RESTART: u32 = 1 << 24;

impl FrameRate {
    /// Counts a packet with RTP `timestamp`; true when a window closed with a new rate.
    pub fn add(&mut self, now: Instant, timestamp: u32) -> bool {
        if let Some(newest) = self.newest {
            let behind = newest.wrapping_sub(timestamp);
            if behind < TIMESTAMP_RESTART {
                // The same frame, or an older one.
                return false;
            }
        }
        self.newest = Some(timestamp);
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed < FRAME_RATE_WINDOW {
            self.frames += 1;
            return false;
        }
        let before = self.fps;
        if elapsed < 2 * FRAME_RATE_WINDOW {
            let ms = elapsed.as_millis() as u64;
            self.fps = ((u64::from(self.frames) * 1000 + ms / 2) / ms) as u32;
        }
        self.frames = 1;
        self.window_start = Some(now);
        self.fps != before
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
            rid_ext: None,
            rids: Vec::new(),
            nack: true,
            pli: true,
            fir: false,
            remb: false,
            audio_level_ext: None,
            twcc_ext: None,
            dd_ext: None,
            red: None,
            max_bitrate: None,
        }
    }

    #[test]
    fn rtp_time_is_extrapolated_from_the_last_sender_report() {
        let mut p = Producer::new(0, &spec());
        let t = Instant::now();
        let l = &mut p.layers[0];
        assert_eq!(l.rtp_time_at(t, 90_000), None);
        l.last_sr = Some((10 << 32, 1000, t));
        let (ntp, rtp) = l
            .rtp_time_at(t + Duration::from_millis(7500), 90_000)
            .unwrap();
        assert_eq!(ntp, (17 << 32) | (1 << 31));
        assert_eq!(rtp, 1000 + 675_000);
    }

    #[test]
    fn frame_rate_counts_timestamps_that_move_forward() {
        let start = Instant::now();
        let mut r = FrameRate::default();
        let mut changes = 0;
        // 30 frames a second for 3 s, three packets each, the second of each frame late (after
        // the next frame's first): each frame counts once.
        for frame in 0..90u32 {
            let at = start + Duration::from_micros(u64::from(frame) * 33_333);
            let ts = 3000 * frame;
            for t in [ts, ts.wrapping_sub(3000), ts] {
                if frame > 0 || t == ts {
                    changes += usize::from(r.add(at, t));
                }
            }
        }
        assert_eq!(r.fps, 30);
        assert_eq!(changes, 1, "told once, when first measured");
        // Every other frame from now on: 15.
        for frame in (90..150u32).step_by(2) {
            let at = start + Duration::from_micros(u64::from(frame) * 33_333);
            r.add(at, 3000 * frame);
        }
        assert_eq!(r.fps, 15);
        // A pause of 5 s is not a low rate; the rate after it is measured afresh.
        let later = start + Duration::from_secs(10);
        assert!(!r.add(later, 0x4000_0000));
        assert_eq!(r.fps, 15);
        for frame in 1..=31u32 {
            r.add(
                later + Duration::from_micros(u64::from(frame) * 33_333),
                0x4000_0000 + 3000 * frame,
            );
        }
        assert_eq!(r.fps, 30);
        // The clock restarted far behind: counted, not taken for a late packet.
        let r0 = r.frames;
        r.add(later + Duration::from_millis(1100), 5);
        assert_eq!(r.frames, r0 + 1);
    }

    #[test]
    fn keyframe_requests_are_rate_limited_and_repeated_while_consumers_wait() {
        let now = Instant::now();
        let mut p = Producer::new(0, &spec());
        let l = &mut p.layers[0];
        assert_eq!(l.keyframe_due(now, false, true), None);
        l.keyframe.pending = true;
        assert_eq!(l.keyframe_due(now, false, true), Some(now));
        l.keyframe.last_sent = Some(now);
        assert_eq!(
            l.keyframe_due(now + Duration::from_millis(100), false, true),
            Some(now + KEYFRAME_REQUEST_INTERVAL)
        );
        l.keyframe.pending = false;
        assert_eq!(l.keyframe_due(now, false, true), None);
        assert_eq!(l.keyframe_due(now, true, true), Some(now + KEYFRAME_RETRY));
        assert_eq!(l.keyframe_due(now, true, false), None);
    }
}
