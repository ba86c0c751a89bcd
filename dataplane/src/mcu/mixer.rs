//! One channel's mixer, sans-IO: fed the RTP of its input streams and time, it writes the
//! RTP of its output streams (and RTCP: keyframe requests to inputs, sender reports on
//! outputs). The MCU thread (`mcu::thread`) drives it; tests drive it directly.
//!
//! - **Audio**: every input is a source of a [`codec::audio::AudioMixer`] (a jitter buffer,
//!   Opus decode with PLC/FEC, mix-minus); each listener has one output stream, fed every
//!   20 ms with its private mix (a talker) or the shared one (everyone else).
//! - **Video**: each input is depacketized and decoded on arrival, and only its latest
//!   picture is kept; on the canvas clock the compositor lays the pictures out and each
//!   output (one per codec, shared by all its viewers) encodes the canvas once and
//!   packetizes it. A loss or an undecodable frame sends the input a PLI (rate-limited); a
//!   viewer's PLI, a new tile or a new viewer makes the next encode a keyframe.
//! - **Lower rung** (`MixerConfig::lower_rung`): each video output also encodes the canvas at
//!   half its size, as a second simulcast layer of the output (rid `half`, the full one
//!   `full`, in extension [`MIX_RID_EXT`]); the router gives it to viewers whose bandwidth
//!   does not take the full one, as it does with a browser's simulcast.
//!
//! Output timestamps come from one clock (the mixer's creation, mapped to NTP then) so the
//! sender reports of audio and video agree and browsers keep them in sync.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use switchyard_codec::audio::opus_codec::Band;
use switchyard_codec::audio::{AudioMixer, MixerConfig as AudioConfig, SourceId, TalkerConfig};
use switchyard_codec::compose::Compositor;
use switchyard_codec::h264::{H264Depacketizer, H264Packetizer};
use switchyard_codec::layout::Layout;
use switchyard_codec::layout::Rect;
use switchyard_codec::scale::Scaler;
use switchyard_codec::video::{self, EncoderConfig, VideoCodec, VideoDecoder, VideoEncoder};
use switchyard_codec::vp8::{Vp8Depacketizer, Vp8Packetizer};
use switchyard_codec::{FramePool, I420, Packetizer, Payloads};

use crate::demux::{self, PacketKind};
use crate::io::MAX_DATAGRAM;
use crate::spec::TransportId;
use crate::{rtcp, rtp};

/// The audio frame length: Opus at 20 ms, what browsers send.
const AUDIO_TICK: Duration = Duration::from_millis(20);
/// The longest RTP payload a mixer writes (a datagram less headers and SRTP's tag).
const MTU: usize = 1100;
/// An input is sent a PLI at most this often while it owes a keyframe.
const PLI_INTERVAL: Duration = Duration::from_millis(300);
/// An output encodes a forced keyframe at most this often.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// Sender reports on each output this often.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// The SSRC our RTCP (PLIs) is sent as; the router reads only the media SSRC.
const RTCP_SSRC: u32 = 1;

/// The extension id under which the router's consumers for the mixer's audio inputs carry the
/// sender's RFC 6464 level (`ConsumerSpec::audio_level_ext`): the mixer picks talkers from it
/// and leaves quiet sources undecoded.
pub const AUDIO_LEVEL_EXT: u8 = 1;

/// The extension id of the rid (RFC 8852) on a video output's packets when it has a lower
/// rung: the router learns each rung's SSRC from it, as from a browser's simulcast.
pub const MIX_RID_EXT: u8 = 2;
/// The rids of a video output's rungs, lowest first, as its producer lists them.
pub const RUNG_RIDS: [&str; 2] = ["half", "full"];

/// How a channel's canvas looks; from the channel's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixerConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub layout: Layout,
    /// The canvas encoders' target bitrate.
    pub video_bitrate_bps: u32,
    /// Every listener's Opus bitrate (mono). Above the 32 kbit/s browsers send for one voice:
    /// a mix carries several at once, and it is encoded a second time.
    pub audio_bitrate_bps: u32,
    /// Also encode each composite at half the canvas size (a third of the bitrate), for
    /// viewers whose bandwidth does not take the full one; it costs about a third more
    /// encoding (`MCU:LOWERRUNG`).
    pub lower_rung: bool,
}

impl Default for MixerConfig {
    fn default() -> MixerConfig {
        MixerConfig {
            width: 640,
            height: 360,
            fps: 30,
            layout: Layout::Grid,
            video_bitrate_bps: 1_000_000,
            audio_bitrate_bps: 48_000,
            lower_rung: false,
        }
    }
}

/// What one of the mixer's streams (a `Mixer` transport of the router) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSpec {
    /// A source's Opus: the router's consumer of it.
    AudioIn { source: SourceId },
    /// A source's video; `ssrc` is the consumer's, which our PLIs name. `source` is the
    /// audio source of the same participant, so its tile can be the speaker's.
    VideoIn {
        source: SourceId,
        codec: VideoCodec,
        ssrc: u32,
    },
    /// What `listener` hears: everyone but itself; the producer's SSRC and payload type.
    /// `band`: the most the listener plays (a phone call's), when less than Opus's full band.
    AudioOut {
        listener: SourceId,
        ssrc: u32,
        payload_type: u8,
        band: Option<Band>,
    },
    /// The composite in `codec`, for every viewer taking that codec.
    VideoOut {
        codec: VideoCodec,
        ssrc: u32,
        payload_type: u8,
    },
}

/// What a mixer has done, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixerStats {
    pub audio_packets_in: u64,
    /// Opus frames of sources not mixed that went undecoded: their levels said quiet.
    pub audio_decodes_skipped: u64,
    pub video_packets_in: u64,
    pub frames_decoded: u64,
    /// Luma samples of the frames decoded: over `frames_decoded`, the size of the pictures
    /// the inputs send (the simulcast layer each takes).
    pub pixels_decoded: u64,
    /// Frames a decoder refused, and pictures dropped for an unusable size.
    pub decode_errors: u64,
    pub canvases: u64,
    pub frames_encoded: u64,
    pub keyframes_encoded: u64,
    pub encode_errors: u64,
    pub plis_sent: u64,
    pub packets_out: u64,
    /// Packets for streams the mixer does not know (closed meanwhile) or unreadable ones.
    pub dropped: u64,
}

impl MixerStats {
    /// Adds `other` into `self` (totals over mixers and threads).
    pub fn add(&mut self, other: &MixerStats) {
        self.audio_packets_in += other.audio_packets_in;
        self.audio_decodes_skipped += other.audio_decodes_skipped;
        self.video_packets_in += other.video_packets_in;
        self.frames_decoded += other.frames_decoded;
        self.pixels_decoded += other.pixels_decoded;
        self.decode_errors += other.decode_errors;
        self.canvases += other.canvases;
        self.frames_encoded += other.frames_encoded;
        self.keyframes_encoded += other.keyframes_encoded;
        self.encode_errors += other.encode_errors;
        self.plis_sent += other.plis_sent;
        self.packets_out += other.packets_out;
        self.dropped += other.dropped;
    }
}

enum Depacketizer {
    Vp8(Vp8Depacketizer),
    H264(H264Depacketizer),
}

impl Depacketizer {
    /// `None` for VP9: the codec crate decodes it for the recording muxer only, and the MCU
    /// negotiates VP8 and H264 alone.
    fn new(codec: VideoCodec) -> Option<Depacketizer> {
        match codec {
            VideoCodec::Vp8 => Some(Depacketizer::Vp8(Vp8Depacketizer::default())),
            VideoCodec::H264 => Some(Depacketizer::H264(H264Depacketizer::default())),
            VideoCodec::Vp9 => None,
        }
    }
}

struct VideoInput {
    transport: TransportId,
    source: SourceId,
    ssrc: u32,
    depacketizer: Depacketizer,
    decoder: Option<Box<dyn VideoDecoder>>,
    latest: Option<I420>,
    last_pli: Option<Instant>,
}

/// A video output: the composite in one codec, for every viewer taking that codec.
struct VideoOutput {
    transport: TransportId,
    payload_type: u8,
    /// The full canvas first, then the half one when there is a lower rung.
    rungs: Vec<Rung>,
}

/// One encoding of the composite: its own RTP stream of the output.
struct Rung {
    /// Its rid, with a lower rung (see [`RUNG_RIDS`]).
    rid: Option<&'static str>,
    /// Encodes the half-size canvas.
    half: bool,
    ssrc: u32,
    encoder: Box<dyn VideoEncoder>,
    packetizer: CanvasPacketizer,
    sequence: u16,
    keyframe_wanted: bool,
    last_keyframe: Option<Instant>,
    packets: u32,
    octets: u32,
}

/// The two video packetizers behind one name (`Packetizer` is the trait).
enum CanvasPacketizer {
    Vp8(Vp8Packetizer),
    H264(H264Packetizer),
}

struct AudioOutput {
    transport: TransportId,
    ssrc: u32,
    payload_type: u8,
    /// The last packet's RTP timestamp and when it was made, for sender reports.
    last: Option<(u32, Instant)>,
    packets: u32,
    octets: u32,
}

/// A channel's mixer.
pub struct Mixer {
    config: MixerConfig,
    streams: HashMap<TransportId, StreamSpec>,
    audio: AudioMixer,
    /// Sources in the audio mixer, and whether each listens.
    audio_sources: HashMap<SourceId, bool>,
    audio_out: HashMap<SourceId, AudioOutput>,
    /// In tile order: the order they came.
    video_in: Vec<VideoInput>,
    video_out: Vec<VideoOutput>,
    compositor: Compositor,
    /// The canvas at half size, for lower rungs; and what scales it.
    half: Option<I420>,
    scaler: Scaler,
    pool: FramePool,
    /// The clock output timestamps count from, and its NTP time.
    epoch: Instant,
    epoch_ntp: u64,
    next_audio: Instant,
    next_canvas: Instant,
    next_report: Instant,
    encoded: Vec<u8>,
    payloads: Payloads,
    scratch: Box<[u8]>,
    stats: MixerStats,
}

/// Where a mixer's packets go: to stream `transport` (RTP on an output, RTCP on an input).
pub trait Output {
    fn send(&mut self, transport: TransportId, packet: &[u8]);
}

impl<F: FnMut(TransportId, &[u8])> Output for F {
    fn send(&mut self, transport: TransportId, packet: &[u8]) {
        self(transport, packet)
    }
}

impl Mixer {
    /// A mixer whose clock starts at `now`, which is NTP time `ntp` (from `rtcp::ntp_now`).
    pub fn new(config: MixerConfig, now: Instant, ntp: u64) -> Result<Mixer, String> {
        let compositor = Compositor::new(config.width, config.height, config.layout)
            .map_err(|e| format!("canvas: {e}"))?;
        Ok(Mixer {
            config,
            streams: HashMap::new(),
            audio: AudioMixer::new(AudioConfig {
                // Four at once: a meeting where four people talk over each other still
                // hears all four (the codec crate's default, three, drops the quietest).
                talkers: TalkerConfig {
                    max_talkers: 4,
                    ..TalkerConfig::default()
                },
                bitrate: config.audio_bitrate_bps,
                ..AudioConfig::default()
            })
            .map_err(|e| format!("audio mixer: {e}"))?,
            audio_sources: HashMap::new(),
            audio_out: HashMap::new(),
            video_in: Vec::new(),
            video_out: Vec::new(),
            compositor,
            half: None,
            scaler: Scaler::default(),
            pool: FramePool::default(),
            epoch: now,
            epoch_ntp: ntp,
            next_audio: now + AUDIO_TICK,
            next_canvas: now + canvas_interval(config.fps),
            next_report: now + REPORT_INTERVAL,
            encoded: Vec::new(),
            payloads: Payloads::new(),
            scratch: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            stats: MixerStats::default(),
        })
    }

    pub fn stats(&self) -> MixerStats {
        MixerStats {
            audio_decodes_skipped: self.audio.stats().skipped_decodes,
            ..self.stats
        }
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Adds stream `transport`. A video output whose encoder cannot start is refused.
    pub fn add_stream(&mut self, transport: TransportId, spec: StreamSpec) -> Result<(), String> {
        if self.streams.contains_key(&transport) {
            return Err(format!("stream {transport} exists"));
        }
        match spec {
            StreamSpec::AudioIn { source } => {
                if !self.audio_sources.contains_key(&source) {
                    self.audio
                        .add_source(source, false)
                        .map_err(|e| format!("audio source: {e}"))?;
                    self.audio_sources.insert(source, false);
                }
            }
            StreamSpec::AudioOut {
                listener,
                ssrc,
                payload_type,
                band,
            } => {
                // Adding a known source again only makes it listen.
                self.audio
                    .add_source(listener, true)
                    .and_then(|()| self.audio.set_listener_band(listener, band))
                    .map_err(|e| format!("audio listener: {e}"))?;
                self.audio_sources.insert(listener, true);
                self.audio_out.insert(
                    listener,
                    AudioOutput {
                        transport,
                        ssrc,
                        payload_type,
                        last: None,
                        packets: 0,
                        octets: 0,
                    },
                );
            }
            StreamSpec::VideoIn {
                source,
                codec,
                ssrc,
            } => {
                let depacketizer =
                    Depacketizer::new(codec).ok_or_else(|| format!("no {codec:?} input"))?;
                let decoder = match video::decoder(codec) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(%transport, "no {codec:?} decoder: {e}");
                        None
                    }
                };
                self.video_in.push(VideoInput {
                    transport,
                    source,
                    ssrc,
                    depacketizer,
                    decoder,
                    latest: None,
                    last_pli: None,
                });
                self.want_keyframes();
            }
            StreamSpec::VideoOut {
                codec,
                ssrc,
                payload_type,
            } => {
                let mut full = self.rung(codec, ssrc, false)?;
                let rungs = if self.config.lower_rung {
                    full.rid = Some(RUNG_RIDS[1]);
                    vec![full, self.rung(codec, rand::random::<u32>() | 1, true)?]
                } else {
                    vec![full]
                };
                self.video_out.push(VideoOutput {
                    transport,
                    payload_type,
                    rungs,
                });
            }
        }
        self.streams.insert(transport, spec);
        Ok(())
    }

    /// A rung of a video output in `codec`: the full canvas, or (`half`) the half one at a
    /// third of the bitrate. Its encoder must start.
    fn rung(&mut self, codec: VideoCodec, ssrc: u32, half: bool) -> Result<Rung, String> {
        let (mut width, mut height, mut bitrate_bps) = (
            self.config.width,
            self.config.height,
            self.config.video_bitrate_bps,
        );
        if half {
            // Even sizes: I420's chroma is subsampled 2x2.
            width = (width / 2).max(2) & !1;
            height = (height / 2).max(2) & !1;
            bitrate_bps /= 3;
            if self.half.is_none() {
                self.half =
                    Some(I420::new(width, height).map_err(|e| format!("half canvas: {e}"))?);
            }
        }
        let encoder = video::encoder(&EncoderConfig {
            codec,
            width,
            height,
            bitrate_bps,
            fps: self.config.fps,
        })
        .map_err(|e| format!("{codec:?} encoder: {e}"))?;
        let packetizer = match codec {
            VideoCodec::Vp8 => CanvasPacketizer::Vp8(Vp8Packetizer::new(rand::random())),
            VideoCodec::H264 => CanvasPacketizer::H264(H264Packetizer),
            // The encoder above already refused it; the MCU sends VP8 and H264 only.
            VideoCodec::Vp9 => return Err("no VP9 output".into()),
        };
        Ok(Rung {
            rid: half.then_some(RUNG_RIDS[0]),
            half,
            ssrc,
            encoder,
            packetizer,
            sequence: rand::random(),
            keyframe_wanted: true,
            last_keyframe: None,
            packets: 0,
            octets: 0,
        })
    }

    /// Removes stream `transport` (unknown ones are ignored).
    pub fn remove_stream(&mut self, transport: TransportId) {
        let Some(spec) = self.streams.remove(&transport) else {
            return;
        };
        match spec {
            StreamSpec::AudioIn { source } => self.forget_audio_source(source),
            StreamSpec::AudioOut { listener, .. } => {
                self.audio_out.remove(&listener);
                self.forget_audio_source(listener);
            }
            StreamSpec::VideoIn { .. } => {
                if let Some(i) = self.video_in.iter().position(|v| v.transport == transport) {
                    let input = self.video_in.remove(i);
                    if let Some(p) = input.latest {
                        self.pool.put(p);
                    }
                    self.want_keyframes();
                }
            }
            StreamSpec::VideoOut { .. } => self.video_out.retain(|o| o.transport != transport),
        }
    }

    /// Drops an audio source once neither its input nor its output is left.
    fn forget_audio_source(&mut self, source: SourceId) {
        let still_used = self.streams.values().any(|s| {
            matches!(*s, StreamSpec::AudioIn { source: s } if s == source)
                || matches!(*s, StreamSpec::AudioOut { listener, .. } if listener == source)
        });
        if still_used {
            // Its output went but its input stays: it no longer listens (which cannot fail).
            if !self.audio_out.contains_key(&source)
                && self.audio_sources.get(&source) == Some(&true)
            {
                let _ = self.audio.add_source(source, false);
                self.audio_sources.insert(source, false);
            }
            return;
        }
        self.audio.remove_source(source);
        self.audio_sources.remove(&source);
    }

    fn want_keyframes(&mut self) {
        for r in self.video_out.iter_mut().flat_map(|o| &mut o.rungs) {
            r.keyframe_wanted = true;
        }
    }

    /// When [`Mixer::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_audio.min(self.next_canvas).min(self.next_report)
    }

    /// A packet from the router on stream `transport`: RTP on an input, RTCP on an output.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        transport: TransportId,
        data: &[u8],
        out: &mut impl Output,
    ) {
        let Some(spec) = self.streams.get(&transport).copied() else {
            self.stats.dropped += 1;
            return;
        };
        let input = matches!(
            spec,
            StreamSpec::AudioIn { .. } | StreamSpec::VideoIn { .. }
        );
        if input && demux::classify(data) == PacketKind::Rtcp {
            // The router's sender reports for what it forwards: an input's timing comes
            // from its RTP alone.
            return;
        }
        match spec {
            StreamSpec::AudioIn { source } => {
                let Some((h, payload)) = rtp_payload(data) else {
                    self.stats.dropped += 1;
                    return;
                };
                self.stats.audio_packets_in += 1;
                let level = h
                    .extension_value(data, AUDIO_LEVEL_EXT)
                    .and_then(crate::speaker::parse_level)
                    .map(|(_, level)| level);
                self.audio
                    .push(source, h.sequence, h.timestamp, payload, level, now);
            }
            StreamSpec::VideoIn { .. } => self.on_video(now, transport, data, out),
            StreamSpec::VideoOut { .. } => {
                let Some(o) = self.video_out.iter_mut().find(|o| o.transport == transport) else {
                    return;
                };
                // A PLI names the rung it wants a keyframe of; a FIR, any (all of them).
                let single = o.rungs.len() == 1;
                for p in rtcp::packets(data).flatten() {
                    let ssrc = match p {
                        rtcp::Packet::Pli { media_ssrc, .. } => Some(media_ssrc),
                        rtcp::Packet::Fir { .. } => None,
                        _ => continue,
                    };
                    for r in &mut o.rungs {
                        if ssrc.is_none_or(|s| single || s == r.ssrc) {
                            r.keyframe_wanted = true;
                        }
                    }
                }
            }
            // Receiver reports and REMB on audio outputs say nothing the mixer acts on.
            StreamSpec::AudioOut { .. } => {}
        }
    }

    fn on_video(
        &mut self,
        now: Instant,
        transport: TransportId,
        data: &[u8],
        out: &mut impl Output,
    ) {
        let Some(input) = self.video_in.iter_mut().find(|v| v.transport == transport) else {
            return;
        };
        let Some((h, payload)) = rtp_payload(data) else {
            self.stats.dropped += 1;
            return;
        };
        self.stats.video_packets_in += 1;
        let frame = match &mut input.depacketizer {
            Depacketizer::Vp8(d) => d.push(h.sequence, h.timestamp, h.marker, payload),
            Depacketizer::H264(d) => d.push(h.sequence, h.timestamp, h.marker, payload),
        };
        let mut broken = false;
        if let (Ok(Some(frame)), Some(decoder)) = (frame, input.decoder.as_mut()) {
            match decoder.decode(frame.data, &mut self.pool) {
                Ok(Some(picture)) => {
                    self.stats.frames_decoded += 1;
                    self.stats.pixels_decoded +=
                        u64::from(picture.width()) * u64::from(picture.height());
                    if let Some(old) = input.latest.replace(picture) {
                        self.pool.put(old);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(%transport, "undecodable frame: {e}");
                    self.stats.decode_errors += 1;
                    broken = true;
                }
            }
        }
        let wanted = broken
            || match &input.depacketizer {
                Depacketizer::Vp8(d) => d.keyframe_wanted(),
                Depacketizer::H264(d) => d.keyframe_wanted(),
            };
        let due = input
            .last_pli
            .is_none_or(|at| now.saturating_duration_since(at) >= PLI_INTERVAL);
        if wanted && due {
            input.last_pli = Some(now);
            if let Ok(n) = rtcp::write_pli(&mut self.scratch, RTCP_SSRC, input.ssrc) {
                self.stats.plis_sent += 1;
                out.send(transport, &self.scratch[..n]);
            }
        }
    }

    /// Runs what is due at `now`: the audio tick, the canvas, sender reports.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl Output) {
        // A thread that fell behind catches up one frame at a time, then skips ahead.
        if now >= self.next_audio {
            self.mix_audio(now, out);
            self.next_audio += AUDIO_TICK;
            if now >= self.next_audio + AUDIO_TICK * 5 {
                self.next_audio = now + AUDIO_TICK;
            }
        }
        if now >= self.next_canvas {
            self.compose(now, out);
            let interval = canvas_interval(self.config.fps);
            self.next_canvas += interval;
            if now >= self.next_canvas {
                self.next_canvas = now + interval;
            }
        }
        if now >= self.next_report {
            self.report(now, out);
            self.next_report = now + REPORT_INTERVAL;
        }
    }

    fn mix_audio(&mut self, now: Instant, out: &mut impl Output) {
        let (audio_out, scratch, stats) = (&mut self.audio_out, &mut self.scratch, &mut self.stats);
        self.audio
            .tick(now, &mut |p: switchyard_codec::audio::MixedPacket<'_>| {
                let Some(o) = audio_out.get_mut(&p.listener) else {
                    return;
                };
                let fields = rtp::HeaderFields {
                    marker: p.marker,
                    payload_type: o.payload_type,
                    sequence: p.sequence,
                    timestamp: p.timestamp,
                    ssrc: o.ssrc,
                };
                let Some(n) = write_rtp(scratch, &fields, &[], p.payload) else {
                    stats.dropped += 1;
                    return;
                };
                o.last = Some((p.timestamp, now));
                o.packets = o.packets.wrapping_add(1);
                o.octets = o.octets.wrapping_add(p.payload.len() as u32);
                stats.packets_out += 1;
                out.send(o.transport, &scratch[..n]);
            });
    }

    fn compose(&mut self, now: Instant, out: &mut impl Output) {
        if self.video_out.is_empty() {
            return;
        }
        // The first tile whose source talks is the speaker (the `speaker` layout's big tile).
        let speaker = self
            .video_in
            .iter()
            .position(|v| self.audio.is_talker(v.source));
        let pictures: Vec<Option<&I420>> =
            self.video_in.iter().map(|v| v.latest.as_ref()).collect();
        let timestamp = self.video_timestamp(now);
        let canvas = self.compositor.compose(&pictures, speaker);
        self.stats.canvases += 1;
        if let Some(half) = self.half.as_mut() {
            let whole = Rect {
                x: 0,
                y: 0,
                width: half.width(),
                height: half.height(),
            };
            self.scaler.scale_into(canvas, half, whole);
        }
        let mut sink = Sink {
            encoded: &mut self.encoded,
            payloads: &mut self.payloads,
            scratch: &mut self.scratch,
            stats: &mut self.stats,
        };
        for o in &mut self.video_out {
            for r in &mut o.rungs {
                let picture = match (r.half, self.half.as_ref()) {
                    (true, Some(half)) => half,
                    _ => canvas,
                };
                r.send(
                    now,
                    picture,
                    timestamp,
                    o.transport,
                    o.payload_type,
                    &mut sink,
                    out,
                );
            }
        }
    }

    /// The 90 kHz timestamp of `now` on the mixer's clock.
    fn video_timestamp(&self, now: Instant) -> u32 {
        let since = now.saturating_duration_since(self.epoch);
        (since.as_micros() * 90 / 1000) as u32
    }

    /// NTP time of `now` on the mixer's clock.
    fn ntp(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch);
        let frac = (u128::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        self.epoch_ntp
            .wrapping_add(since.as_secs() << 32)
            .wrapping_add(frac as u64)
    }

    /// A sender report on every output that has sent, all on the mixer's one clock.
    fn report(&mut self, now: Instant, out: &mut impl Output) {
        let ntp = self.ntp(now);
        for o in self.audio_out.values() {
            let Some((ts, at)) = o.last else { continue };
            let since = now.saturating_duration_since(at);
            let rtp_ts = ts.wrapping_add((since.as_micros() * 48 / 1000) as u32);
            if let Ok(n) = rtcp::write_sender_report(
                &mut self.scratch,
                o.ssrc,
                ntp,
                rtp_ts,
                o.packets,
                o.octets,
                &[],
            ) {
                out.send(o.transport, &self.scratch[..n]);
            }
        }
        let video_ts = self.video_timestamp(now);
        for o in &self.video_out {
            for r in o.rungs.iter().filter(|r| r.packets > 0) {
                if let Ok(n) = rtcp::write_sender_report(
                    &mut self.scratch,
                    r.ssrc,
                    ntp,
                    video_ts,
                    r.packets,
                    r.octets,
                    &[],
                ) {
                    out.send(o.transport, &self.scratch[..n]);
                }
            }
        }
    }
}

/// The mixer's buffers and counters a rung writes its packets through.
struct Sink<'a> {
    encoded: &'a mut Vec<u8>,
    payloads: &'a mut Payloads,
    scratch: &'a mut [u8],
    stats: &'a mut MixerStats,
}

impl Rung {
    /// Encodes `picture` (a keyframe if one is wanted and the last is old enough),
    /// packetizes it and sends the packets on `transport`.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        now: Instant,
        picture: &I420,
        timestamp: u32,
        transport: TransportId,
        payload_type: u8,
        sink: &mut Sink<'_>,
        out: &mut impl Output,
    ) {
        let force = self.keyframe_wanted
            && self
                .last_keyframe
                .is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_INTERVAL);
        if force {
            self.encoder.force_keyframe();
        }
        let encoded = match self.encoder.encode(picture, timestamp, sink.encoded) {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(%transport, "encode failed: {e}");
                sink.stats.encode_errors += 1;
                return;
            }
        };
        sink.stats.frames_encoded += 1;
        if encoded.keyframe {
            sink.stats.keyframes_encoded += 1;
            self.keyframe_wanted = false;
            self.last_keyframe = Some(now);
        }
        let packetized = match &mut self.packetizer {
            CanvasPacketizer::Vp8(p) => p.packetize(sink.encoded, MTU, sink.payloads),
            CanvasPacketizer::H264(p) => p.packetize(sink.encoded, MTU, sink.payloads),
        };
        if packetized.is_err() {
            sink.stats.encode_errors += 1;
            return;
        }
        let rid = self.rid.map(|rid| (MIX_RID_EXT, rid.as_bytes()));
        let last = sink.payloads.len().saturating_sub(1);
        for (i, payload) in sink.payloads.iter().enumerate() {
            let fields = rtp::HeaderFields {
                marker: i == last,
                payload_type,
                sequence: self.sequence,
                timestamp,
                ssrc: self.ssrc,
            };
            self.sequence = self.sequence.wrapping_add(1);
            let Some(n) = write_rtp(sink.scratch, &fields, rid.as_slice(), payload) else {
                sink.stats.dropped += 1;
                continue;
            };
            self.packets = self.packets.wrapping_add(1);
            self.octets = self.octets.wrapping_add(payload.len() as u32);
            sink.stats.packets_out += 1;
            out.send(transport, &sink.scratch[..n]);
        }
    }
}

fn canvas_interval(fps: u32) -> Duration {
    Duration::from_micros(1_000_000 / u64::from(fps.clamp(1, 60)))
}

/// An RTP packet's header and payload; `None` for what does not parse.
fn rtp_payload(data: &[u8]) -> Option<(rtp::Header, &[u8])> {
    let h = rtp::Header::parse(data).ok()?;
    let payload = data.get(h.payload_offset..h.payload_end)?;
    Some((h, payload))
}

/// Writes an RTP packet (header with `extensions`, then payload) into `out`; its length.
fn write_rtp(
    out: &mut [u8],
    fields: &rtp::HeaderFields,
    extensions: &[(u8, &[u8])],
    payload: &[u8],
) -> Option<usize> {
    let h = rtp::write_header(out, fields, extensions).ok()?;
    let end = h + payload.len();
    out.get_mut(h..end)?.copy_from_slice(payload);
    Some(end)
}
