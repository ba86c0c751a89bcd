//! [`AudioMixer`]: every tick, one frame from each input, mixed, and one Opus packet out to each
//! listener, of everyone but itself (mix-minus).
//!
//! Only the *talkers* are mixed: the at most [`TalkerConfig::max_talkers`] loudest active
//! sources (see [`super::talkers`]). Everyone else's audio is decoded (to keep their decoders
//! and voice activity current) but not mixed: they are quiet, and summing a room's worth of
//! background noise would only raise the noise floor. That gives two kinds of listener:
//!
//! - a **talker** gets a private encode of the mix minus its own frame (the others' voices);
//! - every **other listener** gets the same packet: ONE encode of the mix of the talkers, which
//!   is already everyone but itself since it is not in the mix. With three talkers the mixer
//!   encodes at most four times per tick however many listen.
//!
//! Each listener has its own RTP sequence number and timestamp. The timestamp is a per-listener
//! offset plus the mixer's clock (960 per 20 ms tick), and the sequence number counts the
//! listener's packets, so a listener moving between its private encode and the shared one sees
//! one continuous stream. Its private encoder is created when it is added and reset when it
//! starts being used again after a spell on the shared stream, since state from back then
//! predicts nothing about now. The receiver's decoder still sees another encoder's packets
//! after a move, a small discontinuity that Opus copes with like a lost packet.
//!
//! Mixing is in `i32` at 48 kHz mono, saturated to `i16` on the way to the encoder: an overload
//! clips, it never wraps around into a loud crack. The steady path allocates nothing: decoded
//! PCM, the mix and every encoded packet live in buffers made when the mixer or the source is.

use std::time::Instant;

use super::jitter::{JitterBuffer, JitterStats, Pop};
use super::opus_codec::{Band, MAX_PACKET_SAMPLES, OpusDecoder, OpusEncoder, packet_samples};
use super::talkers::{Activity, TalkerConfig, TalkerSelector, level_of};
use super::{AudioError, SAMPLE_RATE};

/// An input or listener, as the mixer core names it (e.g. a participant's producer id).
pub type SourceId = u64;

/// The mixer's frame duration, and so its tick interval and output packet duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ptime {
    Ms10,
    /// What WebRTC endpoints use by default.
    #[default]
    Ms20,
    Ms40,
    Ms60,
}

impl Ptime {
    pub fn ms(self) -> u32 {
        match self {
            Self::Ms10 => 10,
            Self::Ms20 => 20,
            Self::Ms40 => 40,
            Self::Ms60 => 60,
        }
    }

    /// Samples per frame at 48 kHz (960 for 20 ms): also the RTP timestamp step.
    pub fn samples(self) -> usize {
        (SAMPLE_RATE * self.ms() / 1000) as usize
    }
}

/// How the mixer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixerConfig {
    pub ptime: Ptime,
    /// Every output stream's Opus bitrate, bits per second.
    pub bitrate: u32,
    /// The packet loss the encoders expect, percent: sets how much in-band FEC they add.
    pub loss_percent: u8,
    /// The encoders' libopus complexity (0-10). The encoders are most of the mixer's cost;
    /// 5 costs about half of libopus's default 9 for a voice mix that sounds the same to a
    /// listener (Janus's AudioBridge uses 4).
    pub complexity: u8,
    pub talkers: TalkerConfig,
}

impl Default for MixerConfig {
    fn default() -> Self {
        Self {
            ptime: Ptime::Ms20,
            bitrate: 32_000,
            loss_percent: 10,
            complexity: 5,
            talkers: TalkerConfig::default(),
        }
    }
}

/// The most talkers mixed; it also bounds the `i32` sum far below overflow.
const MAX_TALKERS: usize = 64;
/// Room for one encoded packet: three 20 ms Opus frames' worth, enough for a 60 ms ptime.
const PACKET_BYTES: usize = 4000;

/// One packet for one listener. `payload` borrows the mixer until the callback returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixedPacket<'a> {
    pub listener: SourceId,
    pub payload: &'a [u8],
    pub timestamp: u32,
    pub sequence: u16,
    /// Set on a listener's first packet: the start of its talkspurt (RFC 3551), since the
    /// mixer then sends without a break.
    pub marker: bool,
}

/// Counters over the mixer's life (inputs removed included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixerStats {
    pub sources: usize,
    pub listeners: usize,
    /// Sources mixed in the last tick.
    pub talkers: usize,
    pub ticks: u64,
    /// All inputs' jitter buffers, summed.
    pub jitter: JitterStats,
    /// Packets libopus could not decode (garbage), concealed instead.
    pub decode_errors: u64,
    /// Frames concealed (loss, underrun, or a decode error), or recovered from FEC.
    pub concealed: u64,
    pub fec_decoded: u64,
    /// Frames of sources not mixed that were not decoded either, because their RFC 6464 level
    /// said they were quiet: a meeting's many silent participants cost almost nothing.
    pub skipped_decodes: u64,
    /// Encodes that failed; that listener gets no packet that tick (its sequence numbers stay
    /// continuous).
    pub encode_errors: u64,
    /// Packets pushed for a source the mixer does not have.
    pub unknown_source: u64,
    pub shared_encodes: u64,
    pub private_encodes: u64,
}

/// A listener's output stream.
struct Listener {
    /// Its mix-minus encoder, used while it is a talker.
    encoder: OpusEncoder,
    /// Whether the last tick used `encoder` (so the next private one needs no reset).
    private: bool,
    packet: Box<[u8]>,
    /// Length of this tick's private packet; `None` when not encoded (or failed).
    len: Option<usize>,
    sequence: u16,
    timestamp_offset: u32,
    started: bool,
}

impl Listener {
    fn new(id: SourceId, config: &MixerConfig) -> Result<Self, AudioError> {
        // Random-looking but reproducible starting points (RFC 3550 wants them unpredictable;
        // the transport that writes the SSRC may rewrite both anyway).
        let seed = splitmix64(id);
        Ok(Self {
            encoder: encoder(config)?,
            private: false,
            packet: vec![0; PACKET_BYTES].into_boxed_slice(),
            len: None,
            sequence: seed as u16,
            timestamp_offset: (seed >> 32) as u32,
            started: false,
        })
    }
}

/// An encoder with the mixer's settings.
fn encoder(config: &MixerConfig) -> Result<OpusEncoder, AudioError> {
    let mut encoder = OpusEncoder::new(config.bitrate, config.loss_percent)?;
    encoder.set_complexity(config.complexity)?;
    Ok(encoder)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One input.
struct Source {
    id: SourceId,
    jitter: JitterBuffer,
    decoder: OpusDecoder,
    /// Decoded samples not yet mixed: a frame, plus room for one whole packet more, since an
    /// input's packets need not be as long as the mixer's frames.
    pcm: Box<[i16]>,
    pcm_len: usize,
    /// The loudest RFC 6464 level among this tick's packets.
    level: Option<u8>,
    /// Packets were skipped (not decoded) since the decoder last ran: it starts afresh.
    stale: bool,
    listener: Option<Listener>,
}

/// Counters `Source::fill` updates.
#[derive(Default)]
struct DecodeStats {
    decode_errors: u64,
    concealed: u64,
    fec_decoded: u64,
    skipped: u64,
}

impl Source {
    /// Decodes until a frame of `frame` samples is ready at the start of `pcm`.
    ///
    /// `quiet`: set for a source that is not mixed now, to that many -dBov. Its packets whose
    /// RFC 6464 level is quieter are not decoded, and its losses not concealed: silence stands
    /// in, since nobody hears a source that is not mixed and the level alone keeps its voice
    /// activity going. A packet at or above it is decoded (it may make the source a talker),
    /// as is every packet without a level.
    fn fill(&mut self, frame: usize, stats: &mut DecodeStats, quiet: Option<u8>) {
        // Each pass adds at least 120 samples unless it errs twice over; the bound only keeps a
        // decoder that returns nothing from spinning.
        for _ in 0..(frame / 120 + 2) {
            if self.pcm_len >= frame {
                return;
            }
            let out = &mut self.pcm[self.pcm_len..];
            let room = out.len();
            let added = match self.jitter.pop() {
                Pop::Packet {
                    payload,
                    audio_level,
                } => {
                    if let Some(level) = audio_level {
                        self.level = Some(self.level.map_or(level, |l| l.min(level)));
                    }
                    if quiet.zip(audio_level).is_some_and(|(q, l)| l > q) {
                        stats.skipped += 1;
                        let samples = packet_samples(payload).unwrap_or(frame);
                        skip(&mut out[..samples.min(room)], &mut self.stale)
                    } else {
                        if std::mem::take(&mut self.stale) {
                            // A decoder that cannot reset conceals the packet below instead.
                            let _ = self.decoder.reset();
                        }
                        match self.decoder.decode(payload, out) {
                            Ok(n) if n > 0 => n,
                            _ => {
                                stats.decode_errors += 1;
                                stats.concealed += 1;
                                conceal(&mut self.decoder, &mut out[..frame.min(room)])
                            }
                        }
                    }
                }
                Pop::Fec { samples, .. } | Pop::Lost { samples } if quiet.is_some() => {
                    skip(&mut out[..samples.min(room)], &mut self.stale)
                }
                Pop::Fec { next, samples } => {
                    let out = &mut out[..samples.min(room)];
                    stats.concealed += 1;
                    match self.decoder.decode_fec(next, out) {
                        Ok(n) if n > 0 => {
                            stats.fec_decoded += 1;
                            n
                        }
                        _ => conceal(&mut self.decoder, out),
                    }
                }
                Pop::Lost { samples } => {
                    stats.concealed += 1;
                    conceal(&mut self.decoder, &mut out[..samples.min(room)])
                }
                Pop::Empty => 0,
            };
            if added == 0 {
                break;
            }
            self.pcm_len += added;
        }
        // Not playing (or a decoder that gave nothing): silence for the rest of the frame.
        if self.pcm_len < frame {
            self.pcm[self.pcm_len..frame].fill(0);
            self.pcm_len = frame;
        }
    }

    /// Drops the frame just mixed, keeping what was decoded beyond it.
    fn consume(&mut self, frame: usize) {
        self.pcm.copy_within(frame..self.pcm_len, 0);
        self.pcm_len -= frame;
    }
}

/// Silence for a packet not decoded; the decoder resets before it next decodes (`stale`).
fn skip(out: &mut [i16], stale: &mut bool) -> usize {
    out.fill(0);
    *stale = true;
    out.len()
}

/// Conceals `out.len()` samples; silence if even that fails.
fn conceal(decoder: &mut OpusDecoder, out: &mut [i16]) -> usize {
    match decoder.conceal(out) {
        Ok(n) if n > 0 => n,
        _ => {
            out.fill(0);
            out.len()
        }
    }
}

/// Adds `pcm` into the `i32` mix.
pub fn mix_into(mix: &mut [i32], pcm: &[i16]) {
    for (m, &s) in mix.iter_mut().zip(pcm) {
        *m += i32::from(s);
    }
}

/// Converts the mix to 16 bits, saturating: an overload clips instead of wrapping.
pub fn saturate(mix: &[i32], out: &mut [i16]) {
    for (o, &m) in out.iter_mut().zip(mix) {
        *o = m.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
    }
}

/// The mix without `own` (a talker's mix-minus), saturated to 16 bits.
pub fn mix_minus(mix: &[i32], own: &[i16], out: &mut [i16]) {
    for ((o, &m), &s) in out.iter_mut().zip(mix).zip(own) {
        *o = (m - i32::from(s)).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
    }
}

/// The audio mixer. See the module doc.
pub struct AudioMixer {
    config: MixerConfig,
    frame: usize,
    sources: Vec<Source>,
    /// Indexed like `sources`: each one's voice activity, and whether it is mixed.
    activity: Vec<Activity>,
    talker: Vec<bool>,
    selector: TalkerSelector,
    mix: Box<[i32]>,
    /// The 16-bit signal being encoded.
    scratch: Box<[i16]>,
    shared: OpusEncoder,
    shared_packet: Box<[u8]>,
    /// The mixer's clock: the RTP timestamp (before each listener's offset) of the next tick.
    clock: u32,
    stats: MixerStats,
    /// Jitter stats of removed sources, so the totals never go backwards.
    retired: JitterStats,
}

impl AudioMixer {
    /// Fails only when libopus cannot create an encoder (out of memory).
    pub fn new(mut config: MixerConfig) -> Result<Self, AudioError> {
        config.talkers.max_talkers = config.talkers.max_talkers.min(MAX_TALKERS);
        let frame = config.ptime.samples();
        Ok(Self {
            config,
            frame,
            sources: Vec::new(),
            activity: Vec::new(),
            talker: Vec::new(),
            selector: TalkerSelector::default(),
            mix: vec![0; frame].into_boxed_slice(),
            scratch: vec![0; frame].into_boxed_slice(),
            shared: encoder(&config)?,
            shared_packet: vec![0; PACKET_BYTES].into_boxed_slice(),
            clock: 0,
            stats: MixerStats::default(),
            retired: JitterStats::default(),
        })
    }

    pub fn config(&self) -> &MixerConfig {
        &self.config
    }

    fn index(&self, id: SourceId) -> Option<usize> {
        // A linear scan: a conference's few dozen sources fit in a cache line or two of ids,
        // and it keeps sources, activity and talker flags in plain parallel vectors.
        self.sources.iter().position(|s| s.id == id)
    }

    /// Adds an input. `listens`: whether it also gets the mix (a SIP caller or an MCU
    /// participant) or only sends (an SFU publication fed into the mix). Adding an id that is
    /// already there only changes whether it listens. Fails only when libopus cannot create a
    /// decoder or encoder (out of memory); the mixer is unchanged then.
    pub fn add_source(&mut self, id: SourceId, listens: bool) -> Result<(), AudioError> {
        if let Some(index) = self.index(id) {
            let source = &mut self.sources[index];
            match (listens, source.listener.is_some()) {
                (true, false) => source.listener = Some(Listener::new(id, &self.config)?),
                (false, true) => source.listener = None,
                _ => {}
            }
            return Ok(());
        }
        let listener = if listens {
            Some(Listener::new(id, &self.config)?)
        } else {
            None
        };
        self.sources.push(Source {
            id,
            jitter: JitterBuffer::new(),
            decoder: OpusDecoder::new()?,
            pcm: vec![0; self.frame + MAX_PACKET_SAMPLES].into_boxed_slice(),
            pcm_len: 0,
            level: None,
            stale: false,
            listener,
        });
        self.activity.push(Activity::default());
        self.talker.push(false);
        Ok(())
    }

    /// Caps the band of `id`'s private mix-minus (`None`: Opus's full band), for a listener
    /// that plays no more (a phone call: RFC 7587's `maxplaybackrate`). Narrow band costs the
    /// encoder less. An id that does not listen is left alone; the shared mix stays full band.
    pub fn set_listener_band(
        &mut self,
        id: SourceId,
        band: Option<Band>,
    ) -> Result<(), AudioError> {
        let listener = self
            .index(id)
            .and_then(|index| self.sources[index].listener.as_mut());
        match listener {
            Some(listener) => listener.encoder.set_max_band(band),
            None => Ok(()),
        }
    }

    pub fn remove_source(&mut self, id: SourceId) {
        if let Some(index) = self.index(id) {
            let source = self.sources.swap_remove(index);
            self.retired.add(&source.jitter.stats());
            self.activity.swap_remove(index);
            self.talker.swap_remove(index);
        }
    }

    /// Sets every output stream's bitrate (clamped to Opus's 6-510 kbit/s).
    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<(), AudioError> {
        self.config.bitrate = bitrate;
        self.shared.set_bitrate(bitrate)?;
        for listener in self.sources.iter_mut().filter_map(|s| s.listener.as_mut()) {
            listener.encoder.set_bitrate(bitrate)?;
        }
        Ok(())
    }

    /// Whether `id` was mixed in the last tick.
    pub fn is_talker(&self, id: SourceId) -> bool {
        self.index(id).is_some_and(|i| self.talker[i])
    }

    /// Takes one RTP packet of source `id` (its payload is one Opus packet). `audio_level` is the
    /// RFC 6464 level (-dBov, 0..=127) when the packet carried one. Nothing here fails: bad
    /// packets are counted (in [`MixerStats`]) and dropped or concealed.
    pub fn push(
        &mut self,
        id: SourceId,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
        audio_level: Option<u8>,
        now: Instant,
    ) {
        match self.index(id) {
            Some(index) => {
                // Refusals are counted in the jitter buffer's stats.
                let _ = self.sources[index]
                    .jitter
                    .push(seq, timestamp, payload, audio_level, now);
            }
            None => self.stats.unknown_source += 1,
        }
    }

    /// Called every ptime (20 ms) by the mixer core's clock: pulls one frame from each jitter
    /// buffer, decodes (but not the quiet packets of sources not mixed), picks the talkers, mixes them in `i32` at 48 kHz, encodes the shared mix
    /// and each talker's mix-minus, and hands `out` exactly one packet per listener (unless an
    /// encode failed, which is counted). `now` is not read yet: the output clock is the tick
    /// count, and the jitter buffers take their time from `push`.
    pub fn tick(&mut self, _now: Instant, out: &mut impl FnMut(MixedPacket<'_>)) {
        let frame = self.frame;
        let frame_ms = self.config.ptime.ms();
        let mut decode = DecodeStats::default();
        let sources = self.sources.iter_mut().zip(self.activity.iter_mut());
        for ((source, activity), talker) in sources.zip(&self.talker) {
            // The last tick's talkers: a source that is to join them shows it by a loud level.
            let quiet = (!talker).then_some(self.config.talkers.threshold);
            source.fill(frame, &mut decode, quiet);
            let level = source
                .level
                .take()
                .unwrap_or_else(|| level_of(&source.pcm[..frame]));
            activity.update(level, frame_ms, &self.config.talkers);
        }
        self.stats.decode_errors += decode.decode_errors;
        self.stats.concealed += decode.concealed;
        self.stats.fec_decoded += decode.fec_decoded;
        self.stats.skipped_decodes += decode.skipped;

        self.selector.select(
            &self.activity,
            &mut self.talker,
            self.config.talkers.max_talkers,
        );
        self.mix.fill(0);
        for (source, _) in self.sources.iter().zip(&self.talker).filter(|(_, t)| **t) {
            mix_into(&mut self.mix, &source.pcm[..frame]);
        }

        // The shared encode, when someone not talking listens.
        let mut shared_len = None;
        let shared_wanted = self
            .sources
            .iter()
            .zip(&self.talker)
            .any(|(s, t)| s.listener.is_some() && !t);
        if shared_wanted {
            saturate(&self.mix, &mut self.scratch);
            match self.shared.encode(&self.scratch, &mut self.shared_packet) {
                Ok(len) => {
                    shared_len = Some(len);
                    self.stats.shared_encodes += 1;
                }
                Err(_) => self.stats.encode_errors += 1,
            }
        }

        // The talkers' private encodes.
        for (source, talker) in self.sources.iter_mut().zip(&self.talker) {
            let Some(listener) = source.listener.as_mut() else {
                continue;
            };
            listener.len = None;
            if !talker {
                listener.private = false;
                continue;
            }
            if !listener.private && listener.encoder.reset().is_err() {
                self.stats.encode_errors += 1;
            }
            listener.private = true;
            mix_minus(&self.mix, &source.pcm[..frame], &mut self.scratch);
            match listener.encoder.encode(&self.scratch, &mut listener.packet) {
                Ok(len) => {
                    listener.len = Some(len);
                    self.stats.private_encodes += 1;
                }
                Err(_) => self.stats.encode_errors += 1,
            }
        }

        // One packet per listener.
        for (source, talker) in self.sources.iter_mut().zip(&self.talker) {
            let Some(listener) = source.listener.as_mut() else {
                continue;
            };
            let payload = match (talker, listener.len, shared_len) {
                (true, Some(len), _) => &listener.packet[..len],
                (false, _, Some(len)) => &self.shared_packet[..len],
                _ => continue,
            };
            out(MixedPacket {
                listener: source.id,
                payload,
                timestamp: listener.timestamp_offset.wrapping_add(self.clock),
                sequence: listener.sequence,
                marker: !listener.started,
            });
            listener.sequence = listener.sequence.wrapping_add(1);
            listener.started = true;
        }

        for source in &mut self.sources {
            source.consume(frame);
        }
        self.clock = self.clock.wrapping_add(frame as u32);
        self.stats.ticks += 1;
        self.stats.talkers = self.talker.iter().filter(|t| **t).count();
    }

    pub fn stats(&self) -> MixerStats {
        let mut stats = self.stats;
        stats.sources = self.sources.len();
        stats.listeners = self.sources.iter().filter(|s| s.listener.is_some()).count();
        stats.jitter = self.retired;
        for source in &self.sources {
            stats.jitter.add(&source.jitter.stats());
        }
        stats
    }
}

// ok: test code
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::audio::opus_codec::MAX_ENCODED;

    const FREQS: [f64; 4] = [440.0, 620.0, 810.0, 1070.0];

    fn tone(freq: f64, start: usize, amplitude: f64, out: &mut [i16]) {
        for (i, s) in out.iter_mut().enumerate() {
            let t = (start + i) as f64 / f64::from(SAMPLE_RATE);
            *s = (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
        }
    }

    fn encode(encoder: &mut OpusEncoder, pcm: &[i16]) -> Vec<u8> {
        let mut out = [0u8; MAX_ENCODED];
        let len = encoder.encode(pcm, &mut out).unwrap();
        out[..len].to_vec()
    }

    /// Power (dB) at `freq` of `x`, Hann-windowed: one DFT bin, Goertzel's recurrence.
    fn goertzel_db(x: &[i16], freq: f64) -> f64 {
        let n = x.len() as f64;
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(SAMPLE_RATE);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for (i, &sample) in x.iter().enumerate() {
            let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos();
            let s0 = f64::from(sample) * hann + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        10.0 * power.max(1e-9).log10()
    }

    /// A listener that plays 8 kHz at most (a phone call) gets its private mix-minus in the
    /// narrow band; the others stay full band. The TOC byte says each packet's band.
    #[test]
    fn a_narrow_listener_gets_narrow_band_packets() {
        let mut mixer = AudioMixer::new(MixerConfig::default()).unwrap();
        let mut senders: Vec<OpusEncoder> = (0..2)
            .map(|_| OpusEncoder::new(64_000, 0).unwrap())
            .collect();
        for id in 0..2 {
            mixer.add_source(id, true).unwrap();
        }
        mixer.set_listener_band(0, Some(Band::Narrow)).unwrap();
        // Not a listener: nothing to cap, no error.
        mixer.set_listener_band(7, Some(Band::Wide)).unwrap();
        let start = Instant::now();
        let mut bands: HashMap<SourceId, Vec<opus::Bandwidth>> = HashMap::new();
        let mut pcm = [0i16; 960];
        for n in 0..50usize {
            let now = start + Duration::from_millis(20 * n as u64);
            for (id, sender) in senders.iter_mut().enumerate() {
                // Voice-like: a low tone and one at 6 kHz, above the narrow band.
                tone(FREQS[id], n * 960, 5000.0, &mut pcm);
                let mut high = [0i16; 960];
                tone(6000.0, n * 960, 3000.0, &mut high);
                for (p, h) in pcm.iter_mut().zip(high) {
                    *p = p.saturating_add(h);
                }
                let payload = encode(sender, &pcm);
                mixer.push(id as u64, n as u16, (n * 960) as u32, &payload, None, now);
            }
            mixer.tick(now, &mut |p| {
                if let Ok(band) = opus::packet::get_bandwidth(p.payload) {
                    bands.entry(p.listener).or_default().push(band);
                }
            });
        }
        let late = |id: SourceId| bands[&id][25..].to_vec();
        assert!(
            late(0).iter().all(|b| *b == opus::Bandwidth::Narrowband),
            "{:?}",
            late(0)
        );
        assert!(
            late(1).iter().all(|b| *b != opus::Bandwidth::Narrowband),
            "{:?}",
            late(1)
        );
    }

    /// Four tones, four listeners: each hears the other three and not its own. Its own tone is
    /// not in its mix at all, so what is left at its frequency is Opus's coding noise, twice
    /// over (the sender's and the mixer's encode). 128 kbit/s keeps that noise at 65 dB or more
    /// below the tones; at 64 kbit/s it came to 57-64 dB (measured over 0.4 s).
    #[test]
    fn mix_minus_leaves_out_only_your_own_voice() {
        let config = MixerConfig {
            bitrate: 128_000,
            talkers: TalkerConfig {
                max_talkers: 4,
                ..TalkerConfig::default()
            },
            ..MixerConfig::default()
        };
        let mut mixer = AudioMixer::new(config).unwrap();
        let mut senders: Vec<OpusEncoder> = (0..4)
            .map(|_| OpusEncoder::new(128_000, 0).unwrap())
            .collect();
        for id in 0..4 {
            mixer.add_source(id, true).unwrap();
        }
        let start = Instant::now();
        let mut received: HashMap<SourceId, Vec<Vec<u8>>> = HashMap::new();
        let mut pcm = [0i16; 960];
        for n in 0..100usize {
            let now = start + Duration::from_millis(20 * n as u64);
            for (id, sender) in senders.iter_mut().enumerate() {
                tone(FREQS[id], n * 960, 6000.0, &mut pcm);
                let payload = encode(sender, &pcm);
                mixer.push(id as u64, n as u16, (n * 960) as u32, &payload, None, now);
            }
            mixer.tick(now, &mut |p| {
                received
                    .entry(p.listener)
                    .or_default()
                    .push(p.payload.to_vec())
            });
        }
        for id in 0..4u64 {
            assert!(mixer.is_talker(id));
            let mut decoder = OpusDecoder::new().unwrap();
            let mut signal = Vec::new();
            let mut out = [0i16; 960];
            for packet in &received[&id] {
                assert_eq!(decoder.decode(packet, &mut out).unwrap(), 960);
                signal.extend_from_slice(&out);
            }
            // The last 1.6 s (whole cycles of every tone, long after the start-up): a long
            // window measures the tones, not the broadband coding noise around them, which
            // falls 3 dB per doubling of the window against a tone.
            let tail = &signal[signal.len() - 76_800..];
            let powers: Vec<f64> = FREQS.iter().map(|&f| goertzel_db(tail, f)).collect();
            let own = powers[id as usize];
            let others: Vec<f64> = (0..4)
                .filter(|&i| i != id as usize)
                .map(|i| powers[i])
                .collect();
            let weakest = others.iter().copied().fold(f64::INFINITY, f64::min);
            let loudest = others.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            eprintln!(
                "listener {id}: own {:.1} dB below the weakest other tone",
                weakest - own
            );
            assert!(
                weakest - own >= 60.0,
                "listener {id} hears itself: {powers:?}"
            );
            assert!(
                loudest - weakest < 6.0,
                "listener {id}: a tone is missing: {powers:?}"
            );
        }
        let stats = mixer.stats();
        assert_eq!(stats.talkers, 4);
        assert_eq!(stats.decode_errors, 0);
        // Ticks 0 (buffering) and 1 (one loud frame each) had listeners that were not talking.
        assert_eq!(stats.shared_encodes, 2);
        assert_eq!(stats.private_encodes, 4 * 98);
    }

    #[test]
    fn clipping_saturates() {
        let mut mix = [0i32; 4];
        mix_into(&mut mix, &[30_000, -30_000, 20_000, 5]);
        mix_into(&mut mix, &[30_000, -30_000, 20_000, 5]);
        mix_into(&mut mix, &[i16::MAX, i16::MIN, -1000, 5]);
        assert_eq!(mix, [92_767, -92_768, 39_000, 15]);
        let mut out = [0i16; 4];
        saturate(&mix, &mut out);
        assert_eq!(out, [i16::MAX, i16::MIN, i16::MAX, 15]);
        // Leaving out one loud source brings the rest back in range, exactly.
        mix_minus(&mix, &[i16::MAX, i16::MIN, 20_000, 5], &mut out);
        assert_eq!(out, [i16::MAX, i16::MIN, 19_000, 10]);
        mix_minus(&[40_000, 0, 0, 0], &[10_000, 0, 0, 0], &mut out);
        assert_eq!(out[0], 30_000);
    }

    /// A loud and a silent 20 ms packet.
    fn packets() -> (Vec<u8>, Vec<u8>) {
        let mut encoder = OpusEncoder::new(32_000, 0).unwrap();
        let mut pcm = [0i16; 960];
        tone(500.0, 0, 8000.0, &mut pcm);
        let loud = encode(&mut encoder, &pcm);
        // Not the first silent one: the encoder's look-ahead puts the tone's tail in that.
        let mut quiet = Vec::new();
        for _ in 0..5 {
            quiet = encode(&mut encoder, &[0; 960]);
        }
        (loud, quiet)
    }

    #[test]
    fn garbage_and_unknown_sources_break_nothing() {
        let (loud, _) = packets();
        let mut mixer = AudioMixer::new(MixerConfig::default()).unwrap();
        for id in 0..3 {
            mixer.add_source(id, true).unwrap();
        }
        let start = Instant::now();
        let mut garbage = [0u8; 200];
        for n in 0..40u16 {
            let now = start + Duration::from_millis(20 * u64::from(n));
            mixer.push(0, n, u32::from(n) * 960, &loud, None, now);
            mixer.push(1, n, u32::from(n) * 960, &loud, None, now);
            // A code-3 packet claiming 48 frames of 120 ms... then junk; and an empty one.
            garbage.fill(n as u8);
            garbage[0] = 0xFF;
            garbage[1] = 0xBF;
            // Without a level it is decoded (and fails); its level then comes from the
            // concealment.
            mixer.push(2, n, u32::from(n) * 960, &garbage, None, now);
            mixer.push(2, n.wrapping_add(1000), 0, &[], None, now);
            mixer.push(99, n, 0, &loud, None, now);
            let mut count = 0;
            mixer.tick(now, &mut |p| {
                count += 1;
                assert!(!p.payload.is_empty());
            });
            assert_eq!(count, 3);
        }
        assert!(mixer.is_talker(0) && mixer.is_talker(1) && !mixer.is_talker(2));
        let stats = mixer.stats();
        assert!(stats.decode_errors >= 30, "{stats:?}");
        assert_eq!(stats.unknown_source, 40);
        assert_eq!(stats.jitter.malformed, 40);
        assert_eq!(stats.talkers, 2);
        mixer.remove_source(2);
        mixer.remove_source(2);
        assert_eq!(
            mixer.stats().jitter.malformed,
            40,
            "removed sources still count"
        );
        assert_eq!(mixer.stats().sources, 2);
    }

    /// Sources that are not mixed and whose levels say silence are not decoded; one that
    /// starts to speak is decoded again and joins the talkers, and the others hear it.
    #[test]
    fn quiet_sources_are_not_decoded_until_they_speak() {
        let mut loud_encoder = OpusEncoder::new(32_000, 0).unwrap();
        let mut mixer = AudioMixer::new(MixerConfig::default()).unwrap();
        for id in 0..3 {
            mixer.add_source(id, true).unwrap();
        }
        let (_, quiet) = packets();
        let start = Instant::now();
        let mut pcm = [0i16; 960];
        let mut heard_by_2 = Vec::new();
        for n in 0..60u16 {
            let now = start + Duration::from_millis(20 * u64::from(n));
            tone(700.0, usize::from(n) * 960, 8000.0, &mut pcm);
            let loud = encode(&mut loud_encoder, &pcm);
            let ts = u32::from(n) * 960;
            mixer.push(0, n, ts, &loud, Some(15), now);
            if n < 30 {
                mixer.push(1, n, ts, &quiet, Some(127), now);
            } else {
                mixer.push(1, n, ts, &loud, Some(15), now);
            }
            mixer.push(2, n, ts, &quiet, Some(127), now);
            mixer.tick(now, &mut |p| {
                if p.listener == 2 && n >= 50 {
                    heard_by_2.push(p.payload.to_vec());
                }
            });
            if n == 29 {
                let stats = mixer.stats();
                assert!(!mixer.is_talker(1) && !mixer.is_talker(2));
                // Sources 1 and 2, every tick but the first (buffering).
                assert!(stats.skipped_decodes >= 2 * 27, "{stats:?}");
            }
        }
        assert!(mixer.is_talker(0) && mixer.is_talker(1) && !mixer.is_talker(2));
        let stats = mixer.stats();
        assert_eq!(stats.decode_errors, 0);
        // Listener 2 hears both talkers' tone at full strength: source 1's decoder started
        // cleanly after its skipped packets.
        let mut decoder = OpusDecoder::new().unwrap();
        let mut signal = Vec::new();
        let mut out = [0i16; 960];
        for packet in &heard_by_2 {
            decoder.decode(packet, &mut out).unwrap();
            signal.extend_from_slice(&out);
        }
        let rms = (signal.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / signal.len() as f64)
            .sqrt();
        // Two 8000-peak tones in phase: about 11300 RMS; one alone would be about 5700.
        assert!(rms > 9000.0, "rms {rms}");
    }

    #[test]
    fn send_only_sources_are_mixed_but_get_nothing() {
        let (loud, quiet) = packets();
        let mut mixer = AudioMixer::new(MixerConfig::default()).unwrap();
        mixer.add_source(1, false).unwrap();
        mixer.add_source(2, true).unwrap();
        let start = Instant::now();
        let mut last = Vec::new();
        for n in 0..20u16 {
            let now = start + Duration::from_millis(20 * u64::from(n));
            mixer.push(1, n, u32::from(n) * 960, &loud, None, now);
            mixer.push(2, n, u32::from(n) * 960, &quiet, None, now);
            let mut got = Vec::new();
            mixer.tick(now, &mut |p| {
                got.push((p.listener, p.payload.len(), p.marker))
            });
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].0, 2);
            assert_eq!(got[0].2, n == 0);
            last = got;
        }
        assert!(mixer.is_talker(1));
        // Listener 2 hears 1's tone: far more than silence's few bytes.
        assert!(last[0].1 > 20, "{last:?}");
        // And turning listening on and off works on an existing source.
        mixer.add_source(1, true).unwrap();
        assert_eq!(mixer.stats().listeners, 2);
        mixer.add_source(2, false).unwrap();
        assert_eq!(mixer.stats().listeners, 1);
        mixer.set_bitrate(24_000).unwrap();
    }

    #[test]
    fn a_listener_moves_between_encoders_without_a_seam() {
        let (loud, quiet) = packets();
        let mut mixer = AudioMixer::new(MixerConfig::default()).unwrap();
        for id in 0..3 {
            mixer.add_source(id, true).unwrap();
        }
        let start = Instant::now();
        let mut talking = Vec::new();
        let mut last: Option<(u16, u32)> = None;
        for n in 0..100u16 {
            let now = start + Duration::from_millis(20 * u64::from(n));
            // Source 0 talks, pauses for a second, talks again; 1 talks throughout.
            let zero = if (20..70).contains(&n) { &quiet } else { &loud };
            mixer.push(0, n, u32::from(n) * 960, zero, None, now);
            mixer.push(1, n, u32::from(n) * 960, &loud, None, now);
            mixer.push(2, n, u32::from(n) * 960, &quiet, None, now);
            mixer.tick(now, &mut |p| {
                if p.listener == 0 {
                    if let Some((seq, ts)) = last {
                        assert_eq!(p.sequence, seq.wrapping_add(1));
                        assert_eq!(p.timestamp, ts.wrapping_add(960));
                        assert!(!p.marker);
                    } else {
                        assert!(p.marker);
                    }
                    last = Some((p.sequence, p.timestamp));
                }
            });
            talking.push(mixer.is_talker(0));
        }
        // On after two loud frames (behind the two-packet jitter buffer), off 500 ms after the
        // last one, on again.
        let changes: Vec<usize> = (1..100).filter(|&n| talking[n] != talking[n - 1]).collect();
        assert_eq!(changes, [2, 46, 72]);
        let stats = mixer.stats();
        assert_eq!(stats.ticks, 100);
        assert!(mixer.is_talker(1) && !mixer.is_talker(2));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Random talk patterns: every listener gets one packet per tick, talkers a private one,
        /// everyone else the same shared bytes, and each listener's sequence numbers and
        /// timestamps run on by exactly 1 and 960 whatever encoder it moves between.
        #[test]
        fn encoder_grouping(
            listens in proptest::collection::vec(any::<bool>(), 6),
            ticks in proptest::collection::vec(
                proptest::collection::vec(0u8..4, 6), 10..60),
        ) {
            let (loud, quiet) = packets();
            let mut mixer = AudioMixer::new(MixerConfig::default()).unwrap();
            for (id, &l) in listens.iter().enumerate() {
                mixer.add_source(id as u64, l).unwrap();
            }
            let listeners: Vec<u64> =
                (0..6u64).filter(|&i| listens[i as usize]).collect();
            let start = Instant::now();
            let mut last: HashMap<u64, (u16, u32)> = HashMap::new();
            for (n, talk) in ticks.iter().enumerate() {
                let now = start + Duration::from_millis(20 * n as u64);
                for (id, &t) in talk.iter().enumerate() {
                    // Mostly quiet, one in four loud, with the header level saying so.
                    let (payload, level) = if t == 0 { (&loud, 10) } else { (&quiet, 127) };
                    mixer.push(id as u64, n as u16, (n * 960) as u32, payload, Some(level), now);
                }
                let mut got: Vec<(u64, Vec<u8>, *const u8, u32, u16)> = Vec::new();
                mixer.tick(now, &mut |p| got.push(
                    (p.listener, p.payload.to_vec(), p.payload.as_ptr(), p.timestamp, p.sequence)));
                let mut ids: Vec<u64> = got.iter().map(|g| g.0).collect();
                ids.sort_unstable();
                prop_assert_eq!(&ids, &listeners);
                prop_assert!(mixer.stats().talkers <= 3);
                let shared: Vec<_> = got.iter().filter(|g| !mixer.is_talker(g.0)).collect();
                for g in &shared {
                    prop_assert_eq!(g.2, shared[0].2);
                    prop_assert_eq!(&g.1, &shared[0].1);
                }
                for g in got.iter().filter(|g| mixer.is_talker(g.0)) {
                    prop_assert!(shared.iter().all(|s| s.2 != g.2), "a talker got the shared mix");
                    prop_assert_eq!(got.iter().filter(|o| o.2 == g.2).count(), 1);
                }
                for g in &got {
                    if let Some(&(seq, ts)) = last.get(&g.0) {
                        prop_assert_eq!(g.4, seq.wrapping_add(1));
                        prop_assert_eq!(g.3, ts.wrapping_add(960));
                    }
                    last.insert(g.0, (g.4, g.3));
                }
            }
        }
    }
}
