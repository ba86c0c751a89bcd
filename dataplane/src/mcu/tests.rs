//! The mixer in memory: sources that send a colour and a tone as real VP8 and Opus RTP, and
//! listeners whose outputs are decoded and checked, with a simulated clock.

// ok: this file is compiled for tests only (`#[cfg(test)]` on its `mod` line); every unwrap()/expect() in it is on values the tests built (encoders' output, RTP they wrote), never on network input
use std::collections::HashMap;
use std::time::{Duration, Instant};

use switchyard_codec::audio::{OpusDecoder, OpusEncoder};
use switchyard_codec::h264::H264Packetizer;
use switchyard_codec::layout::{self, Layout};
use switchyard_codec::video::{self, EncoderConfig, VideoCodec, VideoDecoder, VideoEncoder};
use switchyard_codec::vp8::{Vp8Depacketizer, Vp8Packetizer};
use switchyard_codec::{FramePool, I420, Packetizer, Payloads, Yuv};

use super::mixer::{MIX_RID_EXT, Mixer, MixerConfig, StreamSpec};
use crate::rtcp;
use crate::rtp::{self, HeaderFields};
use crate::spec::TransportId;

const RATE: f64 = 48_000.0;
const TONES: [f64; 3] = [440.0, 620.0, 810.0];
const COLOURS: [(u8, u8, u8); 3] = [(255, 0, 0), (0, 200, 0), (0, 0, 255)];
const CANVAS: MixerConfig = MixerConfig {
    width: 320,
    height: 180,
    fps: 15,
    layout: Layout::Grid,
    video_bitrate_bps: 600_000,
    audio_bitrate_bps: 48_000,
    lower_rung: false,
};
/// The composite's stream.
const VIDEO_OUT: TransportId = TransportId(100);
const VIDEO_OUT_SSRC: u32 = 0xC0FFEE;

fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    rtp_packet_with(pt, seq, ts, ssrc, marker, payload, &[])
}

fn rtp_packet_with(
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
    payload: &[u8],
    extensions: &[(u8, &[u8])],
) -> Vec<u8> {
    let mut out = vec![0u8; 24 + payload.len()];
    let fields = HeaderFields {
        marker,
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc,
    };
    let n = rtp::write_header(&mut out, &fields, extensions).unwrap();
    out.truncate(n + payload.len());
    out[n..].copy_from_slice(payload);
    out
}

/// A participant: its audio input, video input and audio output streams, and encoders that
/// make its tone and colour.
struct Source {
    index: usize,
    encoder: Box<dyn VideoEncoder>,
    packetizer: Box<dyn Packetizer>,
    /// The payload type its video goes out with (VP8's, until it switches).
    video_pt: u8,
    payloads: Payloads,
    opus: OpusEncoder,
    picture: I420,
    sample: u64,
    audio_seq: u16,
    video_seq: u16,
    /// The RFC 6464 level its audio packets claim, if any.
    level: Option<u8>,
}

impl Source {
    fn new(index: usize) -> Source {
        let (r, g, b) = COLOURS[index];
        let mut picture = I420::new(160, 96).unwrap();
        picture.fill(Yuv::from_rgb(r, g, b));
        Source {
            index,
            encoder: video::encoder(&EncoderConfig {
                codec: VideoCodec::Vp8,
                width: 160,
                height: 96,
                bitrate_bps: 300_000,
                fps: 15,
            })
            .unwrap(),
            packetizer: Box::new(Vp8Packetizer::new(1)),
            video_pt: 96,
            payloads: Payloads::new(),
            opus: OpusEncoder::new(32_000, 0).unwrap(),
            picture,
            sample: 0,
            audio_seq: 0,
            video_seq: 0,
            level: None,
        }
    }

    fn audio_in(&self) -> TransportId {
        TransportId(10 + self.index as u64)
    }
    fn video_in(&self) -> TransportId {
        TransportId(20 + self.index as u64)
    }
    fn audio_out(&self) -> TransportId {
        TransportId(30 + self.index as u64)
    }
    fn source(&self) -> u64 {
        1000 + self.index as u64
    }

    fn add_to(&self, mixer: &mut Mixer) {
        let source = self.source();
        mixer
            .add_stream(self.audio_in(), StreamSpec::AudioIn { source })
            .unwrap();
        let video = StreamSpec::VideoIn {
            source,
            codec: VideoCodec::Vp8,
            ssrc: 500 + self.index as u32,
        };
        mixer.add_stream(self.video_in(), video).unwrap();
        let out = StreamSpec::AudioOut {
            listener: source,
            ssrc: 600 + self.index as u32,
            payload_type: 111,
            band: None,
        };
        mixer.add_stream(self.audio_out(), out).unwrap();
    }

    /// 20 ms of its tone as an RTP packet.
    fn audio_packet(&mut self) -> Vec<u8> {
        let pcm: Vec<i16> = (0..960)
            .map(|i| {
                let t = (self.sample + i) as f64 / RATE;
                (8000.0 * (2.0 * std::f64::consts::PI * TONES[self.index] * t).sin()) as i16
            })
            .collect();
        let mut out = [0u8; 1500];
        let n = self.opus.encode(&pcm, &mut out).unwrap();
        let ts = self.sample as u32;
        self.sample += 960;
        self.audio_seq = self.audio_seq.wrapping_add(1);
        let level = self.level.map(|l| [l]);
        let extensions: Vec<(u8, &[u8])> = level
            .iter()
            .map(|l| (super::mixer::AUDIO_LEVEL_EXT, &l[..]))
            .collect();
        rtp_packet_with(111, self.audio_seq, ts, 0, false, &out[..n], &extensions)
    }

    /// From now on its video is H264 (on the same stream, which the mixer takes as VP8): a
    /// sender that switched codecs without a new offer.
    fn switch_to_h264(&mut self) {
        self.encoder = video::encoder(&EncoderConfig {
            codec: VideoCodec::H264,
            width: 160,
            height: 96,
            bitrate_bps: 300_000,
            fps: 15,
        })
        .unwrap();
        self.packetizer = Box::new(H264Packetizer);
        self.video_pt = 102;
    }

    /// One frame of its colour as RTP packets.
    fn video_packets(&mut self, ts: u32) -> Vec<Vec<u8>> {
        let mut frame = Vec::new();
        if self
            .encoder
            .encode(&self.picture, ts, &mut frame)
            .unwrap()
            .is_none()
        {
            return Vec::new();
        }
        self.packetizer
            .packetize(&frame, 1000, &mut self.payloads)
            .unwrap();
        let last = self.payloads.len() - 1;
        let mut packets = Vec::new();
        for (i, p) in self.payloads.iter().enumerate() {
            self.video_seq = self.video_seq.wrapping_add(1);
            packets.push(rtp_packet(
                self.video_pt,
                self.video_seq,
                ts,
                0,
                i == last,
                p,
            ));
        }
        packets
    }
}

/// What a viewer of the composite and each listener received, decoded.
struct Received {
    decoder: Box<dyn VideoDecoder>,
    depacketizer: Vp8Depacketizer,
    pool: FramePool,
    picture: Option<I420>,
    keyframes: usize,
    frames: usize,
    audio: HashMap<TransportId, (OpusDecoder, Vec<i16>, Vec<u16>)>,
    /// The rid on the composite's packets (with a lower rung), and the other streams of the
    /// composite's output (a lower rung) by SSRC.
    full_rid: Option<Vec<u8>>,
    rungs: HashMap<u32, Rung>,
    /// PLIs the mixer sent, by input stream.
    plis: HashMap<TransportId, usize>,
}

impl Received {
    fn new() -> Received {
        Received {
            decoder: video::decoder(VideoCodec::Vp8).unwrap(),
            depacketizer: Vp8Depacketizer::default(),
            pool: FramePool::default(),
            picture: None,
            keyframes: 0,
            frames: 0,
            audio: HashMap::new(),
            full_rid: None,
            rungs: HashMap::new(),
            plis: HashMap::new(),
        }
    }

    fn take(&mut self, transport: TransportId, packet: &[u8]) {
        if !rtcp_like(packet)
            && let Ok(h) = rtp::Header::parse(packet)
        {
            let payload = &packet[h.payload_offset..h.payload_end];
            let rid = h.extension_value(packet, MIX_RID_EXT).map(<[u8]>::to_vec);
            if transport == VIDEO_OUT && h.ssrc != VIDEO_OUT_SSRC {
                let rung = self.rungs.entry(h.ssrc).or_insert_with(Rung::new);
                rung.rid = rid;
                rung.take(&h, payload);
                return;
            }
            if transport == VIDEO_OUT {
                self.full_rid = rid;
                if let Ok(Some(frame)) =
                    self.depacketizer
                        .push(h.sequence, h.timestamp, h.marker, payload)
                {
                    self.frames += 1;
                    self.keyframes += usize::from(frame.keyframe);
                    if let Ok(Some(p)) = self.decoder.decode(frame.data, &mut self.pool) {
                        self.picture = Some(p);
                    }
                }
                return;
            }
            let (decoder, pcm, seqs) = self
                .audio
                .entry(transport)
                .or_insert_with(|| (OpusDecoder::new().unwrap(), Vec::new(), Vec::new()));
            let mut out = [0i16; 5760];
            let n = decoder.decode(payload, &mut out).unwrap();
            pcm.extend_from_slice(&out[..n]);
            seqs.push(h.sequence);
            return;
        }
        for p in rtcp::packets(packet).flatten() {
            if let rtcp::Packet::Pli { .. } = p {
                *self.plis.entry(transport).or_default() += 1;
            }
        }
    }
}

/// Another stream of the composite's output (a lower rung), decoded.
struct Rung {
    rid: Option<Vec<u8>>,
    decoder: Box<dyn VideoDecoder>,
    depacketizer: Vp8Depacketizer,
    pool: FramePool,
    picture: Option<I420>,
    keyframes: usize,
}

impl Rung {
    fn new() -> Rung {
        Rung {
            rid: None,
            decoder: video::decoder(VideoCodec::Vp8).unwrap(),
            depacketizer: Vp8Depacketizer::default(),
            pool: FramePool::default(),
            picture: None,
            keyframes: 0,
        }
    }

    fn take(&mut self, h: &rtp::Header, payload: &[u8]) {
        if let Ok(Some(frame)) = self
            .depacketizer
            .push(h.sequence, h.timestamp, h.marker, payload)
        {
            self.keyframes += usize::from(frame.keyframe);
            if let Ok(Some(p)) = self.decoder.decode(frame.data, &mut self.pool) {
                self.picture = Some(p);
            }
        }
    }
}

/// RTCP packet types (SR 200 .. PSFB 206) sit where RTP's marker and payload type do.
fn rtcp_like(packet: &[u8]) -> bool {
    packet.get(1).is_some_and(|b| (200..=206).contains(b))
}

/// The power of `freq` in `x`, in dB, through a Hann window (so neighbouring tones do not
/// leak into the bin).
fn goertzel_db(x: &[i16], freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / RATE).cos();
    let n = x.len() as f64;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for (i, &v) in x.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos();
        let s0 = f64::from(v) * hann + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    10.0 * (s1 * s1 + s2 * s2 - k * s1 * s2).max(1e-9).log10()
}

/// Runs `mixer` for `duration` of simulated time with `sources` sending; `garbage` sends
/// undecodable video and Opus on the listed inputs instead.
fn run(
    mixer: &mut Mixer,
    sources: &mut [Source],
    start: Instant,
    duration: Duration,
    received: &mut Received,
    garbage: &[TransportId],
) -> Instant {
    let mut now = start;
    let mut next_video = start;
    let mut video_ts = 0u32;
    let mut junk_seq = 0u16;
    while now < start + duration {
        let mut out = |t: TransportId, p: &[u8]| received.take(t, p);
        for s in sources.iter_mut() {
            let packet = s.audio_packet();
            mixer.handle_packet(now, s.audio_in(), &packet, &mut out);
        }
        for &t in garbage {
            junk_seq = junk_seq.wrapping_add(1);
            let junk = rtp_packet(
                96,
                junk_seq,
                u32::from(junk_seq) * 3000,
                0,
                true,
                &[0x10, 0x00, 0xFF, 0x13, 0x37, 0x42],
            );
            mixer.handle_packet(now, t, &junk, &mut out);
        }
        if now >= next_video {
            for s in sources.iter_mut() {
                for packet in s.video_packets(video_ts) {
                    mixer.handle_packet(now, s.video_in(), &packet, &mut out);
                }
            }
            video_ts = video_ts.wrapping_add(6000);
            next_video += Duration::from_millis(66);
        }
        while mixer.poll_timeout() <= now {
            mixer.handle_timeout(now, &mut out);
        }
        now += Duration::from_millis(20);
    }
    now
}

/// Tiles `which` of a `count`-tile grid on the picture show their sources' colours (source i in
/// tile i), measured in each tile's centre, clear of letterbox bars and the encoder's edges.
fn assert_tiles(picture: &I420, count: usize, which: impl IntoIterator<Item = usize>) {
    let (width, height) = (picture.width(), picture.height());
    let tiles = layout::tiles(Layout::Grid, width, height, count, None);
    for i in which {
        let (tile, (r, g, b)) = (tiles[i], COLOURS[i]);
        let got = picture.mean(
            tile.x + tile.width / 4,
            tile.y + tile.height / 4,
            tile.width / 2,
            tile.height / 2,
        );
        let expected = Yuv::from_rgb(r, g, b);
        assert!(
            got.distance(expected) <= 12,
            "tile {i}: {got:?}, expected {expected:?}"
        );
    }
}

fn mixer_with(sources: &[Source], start: Instant) -> Mixer {
    mixer_on(CANVAS, sources, start)
}

/// A mixer of `config` with `sources` and the VP8 composite's output.
fn mixer_on(config: MixerConfig, sources: &[Source], start: Instant) -> Mixer {
    let mut mixer = Mixer::new(config, start, rtcp::ntp_now()).unwrap();
    for s in sources {
        s.add_to(&mut mixer);
    }
    let out = StreamSpec::VideoOut {
        codec: VideoCodec::Vp8,
        ssrc: VIDEO_OUT_SSRC,
        payload_type: 96,
    };
    mixer.add_stream(VIDEO_OUT, out).unwrap();
    mixer
}

#[test]
fn everyone_hears_the_others_and_sees_everyone() {
    let start = Instant::now();
    let mut sources: Vec<Source> = (0..3).map(Source::new).collect();
    let mut mixer = mixer_with(&sources, start);
    let mut received = Received::new();
    run(
        &mut mixer,
        &mut sources,
        start,
        Duration::from_millis(1500),
        &mut received,
        &[],
    );

    let picture = received.picture.as_ref().expect("a composite decoded");
    assert_eq!((picture.width(), picture.height()), (320, 180));
    assert_tiles(picture, 3, 0..3);
    assert!(received.keyframes >= 1, "the first composite is a keyframe");

    for s in &sources {
        let (_, pcm, seqs) = &received.audio[&s.audio_out()];
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "continuous sequence numbers"
        );
        let last = &pcm[pcm.len() - 48_000 / 2..];
        let own = goertzel_db(last, TONES[s.index]);
        for (j, &tone) in TONES.iter().enumerate() {
            if j != s.index {
                let other = goertzel_db(last, tone);
                // What is left at its own frequency is the coding noise of two Opus passes
                // over the others' tones (the codec crate's own mix-minus test, at a higher
                // bitrate, finds it 60 dB down).
                assert!(
                    other - own >= 30.0,
                    "listener {} hears its own tone: {own:.1} dB against {other:.1}",
                    s.index
                );
            }
        }
    }
    let stats = mixer.stats();
    assert_eq!(stats.decode_errors, 0);
    assert!(stats.frames_encoded >= 15, "{stats:?}");
}

/// An input whose levels say silence is neither decoded nor mixed (whatever its packets hold);
/// inputs whose levels say voice are.
#[test]
fn levels_say_who_is_decoded() {
    let start = Instant::now();
    let mut sources: Vec<Source> = (0..3).map(Source::new).collect();
    sources[0].level = Some(15);
    sources[1].level = Some(15);
    sources[2].level = Some(127);
    let mut mixer = mixer_with(&sources, start);
    let mut received = Received::new();
    run(
        &mut mixer,
        &mut sources,
        start,
        Duration::from_millis(1000),
        &mut received,
        &[],
    );
    let (_, pcm, _) = &received.audio[&sources[0].audio_out()];
    let last = &pcm[pcm.len() - 48_000 / 2..];
    let heard = goertzel_db(last, TONES[1]);
    let quiet = goertzel_db(last, TONES[2]);
    assert!(
        heard - quiet >= 30.0,
        "the quiet input was mixed: {quiet:.1} dB against {heard:.1}"
    );
    let stats = mixer.stats();
    // 50 ticks, the first buffering.
    assert!(stats.audio_decodes_skipped >= 45, "{stats:?}");
}

#[test]
fn a_viewers_keyframe_request_and_a_new_tile_make_keyframes() {
    let start = Instant::now();
    let mut sources: Vec<Source> = (0..2).map(Source::new).collect();
    let mut mixer = mixer_with(&sources, start);
    let mut received = Received::new();
    let now = run(
        &mut mixer,
        &mut sources,
        start,
        Duration::from_secs(1),
        &mut received,
        &[],
    );
    let before = mixer.stats().keyframes_encoded;

    let mut pli = [0u8; 16];
    let n = rtcp::write_pli(&mut pli, 9, VIDEO_OUT_SSRC).unwrap();
    mixer.handle_packet(
        now,
        VIDEO_OUT,
        &pli[..n],
        &mut |_: TransportId, _: &[u8]| {},
    );
    let now = run(
        &mut mixer,
        &mut sources,
        now,
        Duration::from_millis(200),
        &mut received,
        &[],
    );
    assert_eq!(
        mixer.stats().keyframes_encoded,
        before + 1,
        "the PLI gave one keyframe"
    );

    // A third participant's tile.
    let third = Source::new(2);
    third.add_to(&mut mixer);
    sources.push(third);
    run(
        &mut mixer,
        &mut sources,
        now + Duration::from_millis(600),
        Duration::from_millis(200),
        &mut received,
        &[],
    );
    assert_eq!(
        mixer.stats().keyframes_encoded,
        before + 2,
        "the new tile gave one keyframe"
    );
}

/// With a lower rung the composite goes out twice on its output, told apart by rid: the full
/// canvas (`full`, on the output's SSRC) and the canvas at half its size (`half`), both showing
/// every tile; a PLI naming the half rung makes a keyframe of it alone.
#[test]
fn a_lower_rung_sends_the_canvas_at_half_size() {
    let start = Instant::now();
    let mut sources: Vec<Source> = (0..2).map(Source::new).collect();
    let config = MixerConfig {
        lower_rung: true,
        ..CANVAS
    };
    let mut mixer = mixer_on(config, &sources, start);
    let mut received = Received::new();
    let now = run(
        &mut mixer,
        &mut sources,
        start,
        Duration::from_secs(2),
        &mut received,
        &[],
    );
    assert_eq!(received.full_rid.as_deref(), Some(&b"full"[..]));
    assert_tiles(received.picture.as_ref().unwrap(), 2, 0..2);
    assert_eq!(received.rungs.len(), 1, "one more stream");
    let (&half_ssrc, half) = received.rungs.iter().next().unwrap();
    assert_eq!(half.rid.as_deref(), Some(&b"half"[..]));
    let picture = half.picture.as_ref().unwrap();
    assert_eq!((picture.width(), picture.height()), (160, 90));
    assert_tiles(picture, 2, 0..2);

    let (full_keyframes, half_keyframes) = (received.keyframes, half.keyframes);
    let mut pli = [0u8; 16];
    let n = rtcp::write_pli(&mut pli, 9, half_ssrc).unwrap();
    mixer.handle_packet(
        now,
        VIDEO_OUT,
        &pli[..n],
        &mut |_: TransportId, _: &[u8]| {},
    );
    run(
        &mut mixer,
        &mut sources,
        now,
        Duration::from_millis(200),
        &mut received,
        &[],
    );
    assert_eq!(received.rungs[&half_ssrc].keyframes, half_keyframes + 1);
    assert_eq!(received.keyframes, full_keyframes, "the full rung goes on");
}

/// The router's sender reports on an input stream are not taken for RTP (their SSRC would read
/// as a timestamp): nothing is decoded, dropped or asked for because of them.
#[test]
fn sender_reports_on_inputs_are_not_media() {
    let start = Instant::now();
    let sources: Vec<Source> = (0..2).map(Source::new).collect();
    let mut mixer = mixer_with(&sources, start);
    let before = mixer.stats();
    let mut sr = [0u8; 64];
    let n =
        rtcp::write_sender_report(&mut sr, 0xDEAD_BEEF, 1 << 40, 90_000, 10, 1000, &[]).unwrap();
    let mut sent = 0;
    for s in &sources {
        for t in [s.audio_in(), s.video_in()] {
            mixer.handle_packet(start, t, &sr[..n], &mut |_: TransportId, _: &[u8]| {
                sent += 1
            });
        }
    }
    assert_eq!(mixer.stats(), before);
    assert_eq!(sent, 0, "no PLI for a sender report");
}

#[test]
fn bad_input_leaves_the_others_mixing() {
    let start = Instant::now();
    let mut sources: Vec<Source> = (0..2).map(Source::new).collect();
    let mut mixer = mixer_with(&sources, start);
    // A third participant that sends garbage video and never a keyframe, and garbage Opus.
    let bad_video = TransportId(29);
    let bad_audio = TransportId(19);
    mixer
        .add_stream(bad_audio, StreamSpec::AudioIn { source: 9 })
        .unwrap();
    let spec = StreamSpec::VideoIn {
        source: 9,
        codec: VideoCodec::Vp8,
        ssrc: 999,
    };
    mixer.add_stream(bad_video, spec).unwrap();
    let mut received = Received::new();
    run(
        &mut mixer,
        &mut sources,
        start,
        Duration::from_millis(1500),
        &mut received,
        &[bad_video, bad_audio],
    );

    assert!(
        received.plis.get(&bad_video).copied().unwrap_or(0) >= 2,
        "keyframe requests to the bad input"
    );
    assert!(
        received.plis.get(&bad_video).copied().unwrap_or(0) <= 6,
        "rate-limited"
    );
    let picture = received.picture.as_ref().expect("the composite goes on");
    assert_tiles(picture, 3, [1]);
    for s in &sources {
        let (_, pcm, _) = &received.audio[&s.audio_out()];
        assert!(pcm.len() >= 48_000, "listener {} kept hearing", s.index);
    }
    // Unknown streams are counted, not fatal.
    let before = mixer.stats().dropped;
    mixer.handle_packet(
        start,
        TransportId(777),
        &[0x80, 0, 0, 1],
        &mut |_: TransportId, _: &[u8]| {},
    );
    assert_eq!(mixer.stats().dropped, before + 1);
}

/// A participant whose video switches from VP8 to H264 mid-stream on its VP8 input: its frames
/// no longer decode (counted, a keyframe asked for, rate-limited), and everyone else's tiles,
/// the composite and the audio go on.
#[test]
fn a_codec_switch_mid_stream_leaves_the_others_mixing() {
    let start = Instant::now();
    let mut sources: Vec<Source> = (0..3).map(Source::new).collect();
    let mut mixer = mixer_with(&sources, start);
    let mut received = Received::new();
    let now = run(
        &mut mixer,
        &mut sources,
        start,
        Duration::from_millis(600),
        &mut received,
        &[],
    );
    let before = mixer.stats();
    let frames_before = received.frames;
    let plis_before = received
        .plis
        .get(&sources[2].video_in())
        .copied()
        .unwrap_or(0);
    sources[2].switch_to_h264();
    run(
        &mut mixer,
        &mut sources,
        now,
        Duration::from_millis(1500),
        &mut received,
        &[],
    );

    let after = mixer.stats();
    assert!(after.decode_errors > before.decode_errors, "{after:?}");
    let plis = received
        .plis
        .get(&sources[2].video_in())
        .copied()
        .unwrap_or(0)
        - plis_before;
    assert!(
        (1..=6).contains(&plis),
        "{plis} keyframe requests, rate-limited"
    );
    // 1.5 s at 15 fps: the canvas went on.
    assert!(received.frames - frames_before >= 18, "{}", received.frames);
    let picture = received.picture.as_ref().expect("a composite decoded");
    assert_tiles(picture, 3, 0..2);
    for s in &sources {
        let (_, pcm, _) = &received.audio[&s.audio_out()];
        assert!(
            pcm.len() >= 48_000 * 2 - 4800,
            "listener {} kept hearing",
            s.index
        );
    }
}

/// VP9 (which the codec crate decodes for the recording muxer) is refused as an input and as
/// an output, and the mixer goes on without it.
#[test]
fn vp9_streams_are_refused() {
    let start = Instant::now();
    let mut mixer = mixer_with(&[], start);
    let input = StreamSpec::VideoIn {
        source: 9,
        codec: VideoCodec::Vp9,
        ssrc: 999,
    };
    assert!(mixer.add_stream(TransportId(29), input).is_err());
    let output = StreamSpec::VideoOut {
        codec: VideoCodec::Vp9,
        ssrc: 998,
        payload_type: 98,
    };
    assert!(mixer.add_stream(TransportId(28), output).is_err());
    assert!(!mixer.is_empty(), "the VP8 output stays");
}
