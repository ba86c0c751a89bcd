//! Media shaped like a browser's: 720p VP8 at ~1.5 Mbps and 30 fps with a keyframe burst every
//! 3 s, and Opus-like audio at 50 packets/s. Pure: `Source` says which packets are due and
//! writes them; the net thread sends them.
//!
//! Every packet ends with a stamp (send time and a magic number) so a receiver that decrypts it
//! can measure one-way latency. The stamp sits at the end of the payload, where the SFU's header
//! rewriting cannot move it.

use std::time::{Duration, Instant};

use switchyard_dataplane::rtp::{self, HeaderFields};

/// Video payload bytes per packet (the brief's "~1100-byte packets").
const VIDEO_PAYLOAD: usize = 1100;
/// Frames per second.
const FPS: u32 = 30;
/// A keyframe every this many frames (3 s).
const KEYFRAME_INTERVAL: u64 = 3 * FPS as u64;
/// 1.5 Mbps: with a 28-packet keyframe every 90 frames, delta frames get 6 packets.
const KEYFRAME_PACKETS: usize = 28;
const DELTA_PACKETS: usize = 6;
/// A keyframe asked for by PLI/FIR is sent at most this often.
const MIN_KEYFRAME_GAP: Duration = Duration::from_secs(1);
/// Opus at 20 ms frames.
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const AUDIO_PAYLOAD: usize = 100;

const STAMP_MAGIC: u32 = 0x5357_4c54; // "SWLT"
const STAMP_LEN: usize = 12;

/// Packets per second one publisher of `kinds` sends, for reports and ramp sizing.
pub fn packets_per_second(video: bool, audio: bool) -> f64 {
    let frames = KEYFRAME_INTERVAL as f64;
    let per_frame = (KEYFRAME_PACKETS as f64 + (frames - 1.0) * DELTA_PACKETS as f64) / frames;
    let v = if video {
        per_frame * f64::from(FPS)
    } else {
        0.0
    };
    let a = if audio { 50.0 } else { 0.0 };
    v + a
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

/// One outgoing RTP stream.
struct Stream {
    ssrc: u32,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
}

impl Stream {
    fn new(ssrc: u32, payload_type: u8) -> Stream {
        Stream {
            ssrc,
            payload_type,
            sequence: rand::random(),
            timestamp: rand::random(),
        }
    }

    fn header(&mut self, out: &mut [u8], marker: bool) -> Option<usize> {
        let fields = HeaderFields {
            marker,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        };
        self.sequence = self.sequence.wrapping_add(1);
        rtp::write_header(out, &fields, &[]).ok()
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

/// A publisher's media: which packets are due when, and their bytes.
pub struct Source {
    video: Option<Stream>,
    audio: Option<Stream>,
    epoch: Instant,
    frame_index: u64,
    next_frame: Instant,
    frame: Option<Frame>,
    next_audio: Instant,
    keyframe_wanted: bool,
    last_keyframe: Option<Instant>,
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
    /// `video`/`audio`: (SSRC, payload type) of each stream sent. `epoch` is the generator's
    /// time zero for stamps.
    pub fn new(
        video: Option<(u32, u8)>,
        audio: Option<(u32, u8)>,
        epoch: Instant,
        now: Instant,
    ) -> Source {
        Source {
            video: video.map(|(s, pt)| Stream::new(s, pt)),
            audio: audio.map(|(s, pt)| Stream::new(s, pt)),
            epoch,
            frame_index: 0,
            next_frame: now,
            frame: None,
            next_audio: now,
            keyframe_wanted: true,
            last_keyframe: None,
            max_lag: Duration::ZERO,
        }
    }

    /// The receiver asked for a keyframe (PLI or FIR): the next frame is one, unless one went
    /// out less than a second ago.
    pub fn request_keyframe(&mut self, now: Instant) {
        if self
            .last_keyframe
            .is_none_or(|t| now.duration_since(t) >= MIN_KEYFRAME_GAP)
        {
            self.keyframe_wanted = true;
        }
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Instant {
        let mut due = if self.audio.is_some() {
            self.next_audio
        } else {
            self.next_frame + Duration::from_secs(3600)
        };
        if self.video.is_some() {
            let video = match &self.frame {
                Some(f) => f.started + frame_spacing(f.packets) * f.sent as u32,
                None => self.next_frame,
            };
            due = due.min(video);
        }
        due
    }

    /// Writes the next due packet into `out` (plain RTP), or returns None if nothing is due.
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<(Kind, usize)> {
        if self.audio.is_some() && now >= self.next_audio {
            self.max_lag = self.max_lag.max(now - self.next_audio);
            self.next_audio += AUDIO_INTERVAL;
            let stream = self.audio.as_mut()?;
            stream.timestamp = stream.timestamp.wrapping_add(960);
            let h = stream.header(out, false)?;
            let payload = out.get_mut(h..h + AUDIO_PAYLOAD)?;
            payload[..AUDIO_PAYLOAD - STAMP_LEN].fill(0xf8);
            stamp(payload, self.sent_ns(now));
            return Some((Kind::Audio, h + AUDIO_PAYLOAD));
        }
        self.video.as_ref()?;
        if self.frame.is_none() && now >= self.next_frame {
            self.max_lag = self.max_lag.max(now - self.next_frame);
            let keyframe =
                self.keyframe_wanted || self.frame_index.is_multiple_of(KEYFRAME_INTERVAL);
            if keyframe {
                self.keyframe_wanted = false;
                self.last_keyframe = Some(now);
            }
            self.frame = Some(Frame {
                keyframe,
                packets: if keyframe {
                    KEYFRAME_PACKETS
                } else {
                    DELTA_PACKETS
                },
                sent: 0,
                started: self.next_frame,
            });
            self.frame_index += 1;
            self.next_frame += Duration::from_secs(1) / FPS;
            if let Some(v) = self.video.as_mut() {
                v.timestamp = v.timestamp.wrapping_add(90_000 / FPS);
            }
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
        let sent_ns = self.sent_ns(now);
        let stream = self.video.as_mut()?;
        let h = stream.header(out, last)?;
        let payload = out.get_mut(h..h + VIDEO_PAYLOAD)?;
        vp8_payload(payload, first, keyframe);
        stamp(payload, sent_ns);
        Some((Kind::Video, h + VIDEO_PAYLOAD))
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
/// frame header, so that the SFU's keyframe detection sees real keyframes.
fn vp8_payload(payload: &mut [u8], first: bool, keyframe: bool) {
    payload.fill(0);
    if first {
        // S=1, PID=0; frame tag P bit (bit 0) clear for a keyframe; keyframes carry the start
        // code 9d 01 2a and the 1280x720 dimensions.
        payload[0] = 0x10;
        if keyframe {
            payload[1..10].copy_from_slice(&[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0]);
            payload[10] = 0x02;
        } else {
            payload[1] = 0x51;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_dataplane::media::Codec;

    /// The longest packet a source writes.
    const MAX_PACKET: usize = 12 + VIDEO_PAYLOAD;

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

    #[test]
    fn rates_match_720p_and_opus() {
        let t0 = Instant::now();
        let mut s = Source::new(Some((1, 96)), Some((2, 111)), t0, t0);
        let packets = run(&mut s, t0, Duration::from_secs(6));
        let video: Vec<_> = packets.iter().filter(|p| p.0 == Kind::Video).collect();
        let audio = packets.len() - video.len();
        assert_eq!(audio, 300);
        // Two keyframes (frames 0 and 90) and 178 delta frames.
        assert_eq!(video.len(), 2 * KEYFRAME_PACKETS + 178 * DELTA_PACKETS);
        let bits: usize = video.iter().map(|p| (p.1.len() - 12) * 8).sum();
        let mbps = bits as f64 / 6.0 / 1e6;
        assert!((1.4..1.7).contains(&mbps), "{mbps} Mbps");
        let expected = packets_per_second(true, true) * 6.0;
        assert!((expected - packets.len() as f64).abs() < 2.0, "{expected}");
    }

    #[test]
    fn keyframes_are_detected_by_the_sfu_and_stamps_read_back() {
        let t0 = Instant::now();
        let mut s = Source::new(Some((1, 96)), None, t0, t0);
        let packets = run(&mut s, t0, Duration::from_millis(100));
        let first = &packets[0].1;
        let h = rtp::Header::parse(first).unwrap();
        let payload = &first[h.payload_offset..];
        assert!(rtp::is_keyframe(Codec::Vp8, payload));
        assert!(read_stamp(payload).is_some());
        // The next frame starts with a delta frame.
        let delta = &packets[KEYFRAME_PACKETS].1;
        assert!(!rtp::is_keyframe(Codec::Vp8, &delta[h.payload_offset..]));
        assert_eq!(read_stamp(&[0u8; 40]), None);
    }

    #[test]
    fn keyframe_on_request_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut s = Source::new(Some((1, 96)), None, t0, t0);
        let _ = run(&mut s, t0, Duration::from_millis(200));
        let t1 = t0 + Duration::from_millis(200);
        s.request_keyframe(t1);
        assert!(
            !s.keyframe_wanted,
            "less than a second after the first keyframe"
        );
        let t2 = t0 + Duration::from_millis(1100);
        s.request_keyframe(t2);
        assert!(s.keyframe_wanted);
    }
}
