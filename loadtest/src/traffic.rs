//! Media shaped like a browser's: 720p VP8 at ~1.5 Mbps and 30 fps with a keyframe burst every
//! 3 s, and Opus-like audio at 50 packets/s. With simulcast, three VP8 streams as Chromium
//! sends them (`sendEncodings` with rids q, h, f): 180p, 360p and 720p at about 150 kbit/s,
//! 500 kbit/s and 1.5 Mbit/s, each with an SSRC of its own and its rid in every packet. Pure:
//! `Source` says which packets are due and writes them; the net thread sends them.
//!
//! Every packet ends with a stamp (send time and a magic number) so a receiver that decrypts it
//! can measure one-way latency. The stamp sits at the end of the payload, where the SFU's header
//! rewriting cannot move it.

use std::time::{Duration, Instant};

use switchyard_dataplane::rtp::{self, HeaderFields};

/// Frames per second (every layer).
const FPS: u32 = 30;
/// A keyframe every this many frames (3 s).
const KEYFRAME_INTERVAL: u64 = 3 * FPS as u64;
/// A keyframe asked for by PLI/FIR is sent at most this often (per stream).
const MIN_KEYFRAME_GAP: Duration = Duration::from_secs(1);
/// Opus at 20 ms frames.
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const AUDIO_PAYLOAD: usize = 100;

const STAMP_MAGIC: u32 = 0x5357_4c54; // "SWLT"
const STAMP_LEN: usize = 12;

/// The header extension id the publisher's offer gives the rtp-stream-id (rid) extension; the
/// MID extension has 1 (`client::offer`).
pub const RID_EXTENSION_ID: u8 = 2;
/// The id MCU participants' offers give the audio level extension (RFC 6464).
pub const AUDIO_LEVEL_EXTENSION_ID: u8 = 3;

/// One VP8 stream's shape: the frame size its keyframes declare, and its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub width: u16,
    pub height: u16,
    /// Payload bytes per packet.
    payload: usize,
    keyframe_packets: usize,
    delta_packets: usize,
}

impl Shape {
    /// Packets per second: a keyframe every `KEYFRAME_INTERVAL` frames, delta frames between.
    pub fn packets_per_second(&self) -> f64 {
        let frames = KEYFRAME_INTERVAL as f64;
        let per_frame =
            (self.keyframe_packets as f64 + (frames - 1.0) * self.delta_packets as f64) / frames;
        per_frame * f64::from(FPS)
    }
}

/// 720p at ~1.5 Mbps (the brief's "~1100-byte packets"): with a 28-packet keyframe every 90
/// frames, delta frames get 6 packets.
pub const HD: Shape = Shape {
    width: 1280,
    height: 720,
    payload: 1100,
    keyframe_packets: 28,
    delta_packets: 6,
};

/// Simulcast layers, lowest first, as `a=simulcast` lists them: (rid, shape). Smaller layers
/// have smaller frames, so fewer and shorter packets: q ~31 packets/s at ~150 kbit/s, h ~63 at
/// ~500 kbit/s, f is `HD`.
pub const SIMULCAST: [(&str, Shape); 3] = [
    (
        "q",
        Shape {
            width: 320,
            height: 180,
            payload: 600,
            keyframe_packets: 5,
            delta_packets: 1,
        },
    ),
    (
        "h",
        Shape {
            width: 640,
            height: 360,
            payload: 1000,
            keyframe_packets: 10,
            delta_packets: 2,
        },
    ),
    ("f", HD),
];

/// The `maxHeight` a subscriber sends to be forwarded `SIMULCAST[layer]`: that layer's height,
/// none for the top layer.
pub fn max_height(layer: usize) -> Option<u16> {
    SIMULCAST
        .get(layer)
        .filter(|_| layer + 1 < SIMULCAST.len())
        .map(|(_, shape)| shape.height)
}

/// Packets per second of Opus-like audio.
const AUDIO_PACKETS_PER_SECOND: f64 = 50.0;

/// What video a publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Video {
    /// One 720p stream, its SSRC in the SDP.
    Single { ssrc: u32, payload_type: u8 },
    /// The three `SIMULCAST` layers, lowest first, an SSRC each (not in the SDP: the server
    /// learns them from the rid extension).
    Simulcast { ssrcs: [u32; 3], payload_type: u8 },
}

/// Packets per second one publisher sends: 720p video (its three simulcast layers with
/// `simulcast`) if `video`, and audio if `audio`; for reports and ramp sizing.
pub fn packets_per_second(video: bool, simulcast: bool, audio: bool) -> f64 {
    let v = match (video, simulcast) {
        (false, _) => 0.0,
        (true, false) => HD.packets_per_second(),
        (true, true) => SIMULCAST.iter().map(|(_, s)| s.packets_per_second()).sum(),
    };
    v + if audio { AUDIO_PACKETS_PER_SECOND } else { 0.0 }
}

/// Writes the stamp into the last bytes of `payload` (which must be at least `STAMP_LEN`).
fn stamp(payload: &mut [u8], sent_ns: u64) {
    let n = payload.len();
    if n >= STAMP_LEN {
        payload[n - STAMP_LEN..n - 4].copy_from_slice(&sent_ns.to_be_bytes());
        payload[n - 4..].copy_from_slice(&STAMP_MAGIC.to_be_bytes());
    }
}

/// The send time (ns since the generator's epoch) from a decrypted payload, if it carries one.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    let n = payload.len();
    let tail = payload.get(n.checked_sub(STAMP_LEN)?..)?;
    let (time, magic) = tail.split_at(8);
    if u32::from_be_bytes(magic.try_into().ok()?) != STAMP_MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(time.try_into().ok()?))
}

/// One outgoing RTP stream (also the real-media clip's, `clip`).
pub(crate) struct Stream {
    ssrc: u32,
    payload_type: u8,
    sequence: u16,
    pub(crate) timestamp: u32,
}

impl Stream {
    pub(crate) fn new(ssrc: u32, payload_type: u8) -> Stream {
        Stream {
            ssrc,
            payload_type,
            sequence: rand::random(),
            timestamp: rand::random(),
        }
    }

    pub(crate) fn header(
        &mut self,
        out: &mut [u8],
        marker: bool,
        rid: Option<&str>,
    ) -> Option<usize> {
        match rid {
            Some(rid) => self.header_with(out, marker, &[(RID_EXTENSION_ID, rid.as_bytes())]),
            None => self.header_with(out, marker, &[]),
        }
    }

    /// `header` with these header extensions (id, value).
    pub(crate) fn header_with(
        &mut self,
        out: &mut [u8],
        marker: bool,
        extensions: &[(u8, &[u8])],
    ) -> Option<usize> {
        let fields = HeaderFields {
            marker,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        };
        self.sequence = self.sequence.wrapping_add(1);
        rtp::write_header(out, &fields, extensions).ok()
    }
}

/// The frame being paced out: its packets spread over half a frame interval, as a browser's
/// pacer spreads a keyframe instead of bursting it into the network at once.
struct Frame {
    keyframe: bool,
    packets: usize,
    sent: usize,
    started: Instant,
}

/// One VP8 stream: the whole video, or one simulcast layer (an encoder of its own).
struct VideoStream {
    stream: Stream,
    shape: Shape,
    /// Its rid, sent in every packet (simulcast only).
    rid: Option<&'static str>,
    frame_index: u64,
    next_frame: Instant,
    frame: Option<Frame>,
    keyframe_wanted: bool,
    last_keyframe: Option<Instant>,
}

impl VideoStream {
    fn new(
        ssrc: u32,
        payload_type: u8,
        shape: Shape,
        rid: Option<&'static str>,
        now: Instant,
    ) -> VideoStream {
        VideoStream {
            stream: Stream::new(ssrc, payload_type),
            shape,
            rid,
            frame_index: 0,
            next_frame: now,
            frame: None,
            keyframe_wanted: true,
            last_keyframe: None,
        }
    }

    fn next_due(&self) -> Instant {
        match &self.frame {
            Some(f) => f.started + frame_spacing(f.packets) * f.sent as u32,
            None => self.next_frame,
        }
    }

    fn request_keyframe(&mut self, now: Instant) {
        if self
            .last_keyframe
            .is_none_or(|t| now.duration_since(t) >= MIN_KEYFRAME_GAP)
        {
            self.keyframe_wanted = true;
        }
    }

    /// Writes this stream's next packet if one is due: returns its length and how late its
    /// frame started (zero but for a frame's first packet).
    fn poll(&mut self, now: Instant, sent_ns: u64, out: &mut [u8]) -> Option<(usize, Duration)> {
        let mut lag = Duration::ZERO;
        if self.frame.is_none() && now >= self.next_frame {
            lag = now - self.next_frame;
            let keyframe =
                self.keyframe_wanted || self.frame_index.is_multiple_of(KEYFRAME_INTERVAL);
            if keyframe {
                self.keyframe_wanted = false;
                self.last_keyframe = Some(now);
            }
            self.frame = Some(Frame {
                keyframe,
                packets: if keyframe {
                    self.shape.keyframe_packets
                } else {
                    self.shape.delta_packets
                },
                sent: 0,
                started: self.next_frame,
            });
            self.frame_index += 1;
            self.next_frame += Duration::from_secs(1) / FPS;
            self.stream.timestamp = self.stream.timestamp.wrapping_add(90_000 / FPS);
        }
        let frame = self.frame.as_mut()?;
        let due = frame.started + frame_spacing(frame.packets) * frame.sent as u32;
        if now < due {
            return None;
        }
        let first = frame.sent == 0;
        frame.sent += 1;
        let last = frame.sent == frame.packets;
        let keyframe = frame.keyframe;
        if last {
            self.frame = None;
        }
        let h = self.stream.header(out, last, self.rid)?;
        let size = self.shape.payload;
        let payload = out.get_mut(h..h + size)?;
        vp8_payload(payload, first, keyframe.then_some(&self.shape));
        stamp(payload, sent_ns);
        Some((h + size, lag))
    }
}

/// A publisher's media: which packets are due when, and their bytes.
pub struct Source {
    /// One stream, or the simulcast layers lowest first.
    video: Vec<VideoStream>,
    audio: Option<Stream>,
    epoch: Instant,
    next_audio: Instant,
    /// How late the most overdue packet was sent (the generator's own lag).
    pub max_lag: Duration,
}

/// Which stream a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Audio,
    Video,
}

impl Source {
    /// `video`: what video to send; `audio`: (SSRC, payload type) of the audio. `epoch` is the
    /// generator's time zero for stamps.
    pub fn new(
        video: Option<Video>,
        audio: Option<(u32, u8)>,
        epoch: Instant,
        now: Instant,
    ) -> Source {
        let video = match video {
            None => Vec::new(),
            Some(Video::Single { ssrc, payload_type }) => {
                vec![VideoStream::new(ssrc, payload_type, HD, None, now)]
            }
            Some(Video::Simulcast {
                ssrcs,
                payload_type,
            }) => ssrcs
                .iter()
                .zip(SIMULCAST)
                .map(|(&ssrc, (rid, shape))| {
                    VideoStream::new(ssrc, payload_type, shape, Some(rid), now)
                })
                .collect(),
        };
        Source {
            video,
            audio: audio.map(|(s, pt)| Stream::new(s, pt)),
            epoch,
            next_audio: now,
            max_lag: Duration::ZERO,
        }
    }

    /// The receiver asked for a keyframe of `ssrc` (PLI or FIR): that stream's next frame is
    /// one, unless it sent one less than a second ago. An SSRC it does not send asks every
    /// stream.
    pub fn request_keyframe(&mut self, now: Instant, ssrc: u32) {
        let known = self.video.iter().any(|v| v.stream.ssrc == ssrc);
        for v in &mut self.video {
            if !known || v.stream.ssrc == ssrc {
                v.request_keyframe(now);
            }
        }
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Instant {
        let audio = self.audio.as_ref().map(|_| self.next_audio);
        let video = self.video.iter().map(VideoStream::next_due);
        audio
            .into_iter()
            .chain(video)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// Writes the next due packet into `out` (plain RTP), or returns None if nothing is due.
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<(Kind, usize)> {
        let sent_ns = self.sent_ns(now);
        if self.audio.is_some() && now >= self.next_audio {
            self.max_lag = self.max_lag.max(now - self.next_audio);
            self.next_audio += AUDIO_INTERVAL;
            let stream = self.audio.as_mut()?;
            stream.timestamp = stream.timestamp.wrapping_add(960);
            let h = stream.header(out, false, None)?;
            let payload = out.get_mut(h..h + AUDIO_PAYLOAD)?;
            payload[..AUDIO_PAYLOAD - STAMP_LEN].fill(0xf8);
            stamp(payload, sent_ns);
            return Some((Kind::Audio, h + AUDIO_PAYLOAD));
        }
        for v in &mut self.video {
            if let Some((len, lag)) = v.poll(now, sent_ns, out) {
                self.max_lag = self.max_lag.max(lag);
                return Some((Kind::Video, len));
            }
        }
        None
    }

    fn sent_ns(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Time between the packets of a frame of `packets` packets: spread over half a frame.
fn frame_spacing(packets: usize) -> Duration {
    Duration::from_secs(1) / FPS / 2 / packets.max(1) as u32
}

/// A VP8 payload descriptor (RFC 7741) and, on a frame's first packet, the start of a VP8
/// frame header, so that the SFU's keyframe detection sees real keyframes and reads their size
/// (a keyframe's `shape`).
fn vp8_payload(payload: &mut [u8], first: bool, keyframe: Option<&Shape>) {
    payload.fill(0);
    if first {
        // S=1, PID=0; frame tag P bit (bit 0) clear for a keyframe; keyframes carry the start
        // code 9d 01 2a and the 14-bit little-endian width and height (RFC 6386 §9.1).
        payload[0] = 0x10;
        match keyframe {
            Some(shape) => {
                payload[1..7].copy_from_slice(&[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a]);
                payload[7..9].copy_from_slice(&shape.width.to_le_bytes());
                payload[9..11].copy_from_slice(&shape.height.to_le_bytes());
            }
            None => payload[1] = 0x51,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_dataplane::media::Codec;

    /// The largest packet a source writes: header, the rid extension (its 4-byte header and
    /// one word of one-byte elements), the largest payload.
    const MAX_PACKET: usize = 12 + 8 + HD.payload;

    fn run(source: &mut Source, from: Instant, for_: Duration) -> Vec<(Kind, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_PACKET];
        let mut now = from;
        while now < from + for_ {
            while let Some((kind, n)) = source.poll(now, &mut buf) {
                out.push((kind, buf[..n].to_vec()));
            }
            now += Duration::from_micros(250);
        }
        out
    }

    fn single(ssrc: u32) -> Option<Video> {
        Some(Video::Single {
            ssrc,
            payload_type: 96,
        })
    }

    #[test]
    fn rates_match_720p_and_opus() {
        let t0 = Instant::now();
        let mut s = Source::new(single(1), Some((2, 111)), t0, t0);
        let packets = run(&mut s, t0, Duration::from_secs(6));
        let video: Vec<_> = packets.iter().filter(|p| p.0 == Kind::Video).collect();
        let audio = packets.len() - video.len();
        assert_eq!(audio, 300);
        // Two keyframes (frames 0 and 90) and 178 delta frames.
        assert_eq!(
            video.len(),
            2 * HD.keyframe_packets + 178 * HD.delta_packets
        );
        let bits: usize = video.iter().map(|p| (p.1.len() - 12) * 8).sum();
        let mbps = bits as f64 / 6.0 / 1e6;
        assert!((1.4..1.7).contains(&mbps), "{mbps} Mbps");
        let expected = packets_per_second(true, false, true) * 6.0;
        assert!((expected - packets.len() as f64).abs() < 2.0, "{expected}");
    }

    #[test]
    fn keyframes_are_detected_by_the_sfu_and_stamps_read_back() {
        let t0 = Instant::now();
        let mut s = Source::new(single(1), None, t0, t0);
        let packets = run(&mut s, t0, Duration::from_millis(100));
        let first = &packets[0].1;
        let h = rtp::Header::parse(first).unwrap();
        let payload = &first[h.payload_offset..];
        assert!(rtp::is_keyframe(Codec::Vp8, payload));
        assert_eq!(rtp::vp8_keyframe_size(payload), Some((1280, 720)));
        assert!(read_stamp(payload).is_some());
        assert_eq!(h.extension_value(first, RID_EXTENSION_ID), None);
        // The next frame starts with a delta frame.
        let delta = &packets[HD.keyframe_packets].1;
        assert!(!rtp::is_keyframe(Codec::Vp8, &delta[h.payload_offset..]));
        assert_eq!(read_stamp(&[0u8; 40]), None);
    }

    #[test]
    fn keyframe_on_request_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut s = Source::new(single(1), None, t0, t0);
        let _ = run(&mut s, t0, Duration::from_millis(200));
        let t1 = t0 + Duration::from_millis(200);
        s.request_keyframe(t1, 1);
        assert!(
            !s.video[0].keyframe_wanted,
            "less than a second after the first keyframe"
        );
        let t2 = t0 + Duration::from_millis(1100);
        s.request_keyframe(t2, 1);
        assert!(s.video[0].keyframe_wanted);
    }

    /// Three layers, each on its own SSRC with its rid in every packet, keyframes declaring
    /// 320x180, 640x360 and 1280x720, at about 150 kbit/s, 500 kbit/s and 1.5 Mbit/s.
    #[test]
    fn simulcast_layers_carry_their_rid_size_and_rate() {
        let t0 = Instant::now();
        let video = Video::Simulcast {
            ssrcs: [10, 11, 12],
            payload_type: 96,
        };
        let mut s = Source::new(Some(video), Some((2, 111)), t0, t0);
        let packets = run(&mut s, t0, Duration::from_secs(6));
        let expected = packets_per_second(true, true, true) * 6.0;
        assert!((expected - packets.len() as f64).abs() < 3.0, "{expected}");
        let wanted = [("q", 180, 0.15), ("h", 360, 0.5), ("f", 720, 1.6)];
        for (ssrc, (rid, height, mbps)) in (10..).zip(wanted) {
            let layer: Vec<_> = packets
                .iter()
                .map(|(_, p)| (rtp::Header::parse(p).unwrap(), p))
                .filter(|(h, _)| h.ssrc == ssrc)
                .collect();
            assert!(
                layer
                    .iter()
                    .all(|(h, p)| h.extension_value(p, RID_EXTENSION_ID) == Some(rid.as_bytes())),
                "{rid}"
            );
            let (h, first) = layer[0];
            let size = rtp::vp8_keyframe_size(&first[h.payload_offset..]);
            assert_eq!(size.map(|s| s.1), Some(height), "{rid}");
            let bits: usize = layer
                .iter()
                .map(|(h, _)| (h.payload_end - h.payload_offset) * 8)
                .sum();
            let got = bits as f64 / 6.0 / 1e6;
            assert!((got / mbps - 1.0).abs() < 0.1, "{rid}: {got} Mbps");
        }
        // A keyframe request names its layer; an SSRC the source does not send asks all.
        let t1 = t0 + Duration::from_secs(7);
        s.request_keyframe(t1, 11);
        let wanted: Vec<bool> = s.video.iter().map(|v| v.keyframe_wanted).collect();
        assert_eq!(wanted, [false, true, false]);
        s.request_keyframe(t1, 0);
        assert!(s.video.iter().all(|v| v.keyframe_wanted));
    }
}
