//! One published track recorded as it arrived, sans transcoding: fed its RTP (after the
//! router, so one stream even across simulcast layer switches), it reassembles frames with the
//! codec crate's depacketizers and writes them to a Matroska file (`file::Recording`).
//!
//! - **Time**: a frame's time is its RTP timestamp, unwrapped past 2^32 and turned into
//!   milliseconds at the codec's clock rate, so the file keeps the sender's timing (gaps and
//!   all) rather than arrival's jitter. The first frame's RTP timestamp is kept for the log, to
//!   map file time to wall-clock time through the sender's reports.
//! - **Video** starts at a keyframe: the picture size for the track comes from it (VP8's frame
//!   header, VP9's frame headers or scalability structure, AV1's sequence header, H264's SPS),
//!   and nothing before it decodes. Until then, and after a loss breaks a
//!   frame, [`TrackRecorder::keyframe_wanted`] says the caller should ask for one (a PLI).
//! - **The file** is created at the first frame it can take, so a track that never sends one
//!   leaves no empty file. Its date is the wall-clock time that frame arrived: time 0 of the
//!   file, by which the muxer lines up a session's files.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use switchyard_codec::av1::{self, Av1Depacketizer};
use switchyard_codec::depacketize::Frame;
use switchyard_codec::h264::H264Depacketizer;
use switchyard_codec::opus::OpusDepacketizer;
use switchyard_codec::sps;
use switchyard_codec::vp8::Vp8Depacketizer;
use switchyard_codec::vp9::{self, Vp9Depacketizer};

use crate::file::{self, Recording};
use crate::h264;
use crate::mkv::{Codec, Track};

/// What a recorded track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// Opus at 48 kHz with `channels` (as negotiated: WebRTC's `opus/48000/2`).
    Opus { channels: u8 },
    /// VP8 at 90 kHz.
    Vp8,
    /// VP9 at 90 kHz, every spatial layer the router forwards (one superframe per picture).
    Vp9,
    /// AV1 at 90 kHz (one temporal unit per frame).
    Av1,
    /// H264 (packetization-mode 1) at 90 kHz.
    H264,
}

impl Media {
    fn clock_rate(self) -> u64 {
        match self {
            Media::Opus { .. } => 48_000,
            Media::Vp8 | Media::Vp9 | Media::Av1 | Media::H264 => 90_000,
        }
    }
}

enum Depacketizer {
    Opus(OpusDepacketizer),
    Vp8(Vp8Depacketizer),
    Vp9(Vp9Depacketizer),
    Av1(Av1Depacketizer),
    H264(H264Depacketizer),
}

/// What a recorded track ended as, for its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The file, under its final name; `None` when no frame was ever written.
    pub path: Option<PathBuf>,
    /// When the first frame written arrived: the file's time 0.
    pub origin: Option<SystemTime>,
    /// When the first frame was sent, on the sender's clock (from its sender reports), in ms
    /// since the Unix epoch: one sender's tracks line up by it (lip sync), though its clock may
    /// be off the server's.
    pub sender_origin_ms: Option<u64>,
    /// RTP timestamps of the first and last frames written.
    pub first_rtp: Option<u32>,
    pub last_rtp: Option<u32>,
    pub duration_ms: u64,
    pub frames: u64,
    /// Packets the depacketizer refused (malformed, late), and frames dropped waiting for a
    /// keyframe.
    pub dropped: u64,
}

/// Records one track to `path` (see the module's documentation).
pub struct TrackRecorder {
    depacketizer: Depacketizer,
    /// Apart from the depacketizer, whose frames borrow its buffer while they are written.
    out: Writing,
}

/// What writes a track's frames to its file.
struct Writing {
    media: Media,
    path: PathBuf,
    file: Option<Recording>,
    origin: Option<SystemTime>,
    /// The unwrapped RTP timestamp of the last frame, and of the first one.
    last_ticks: Option<u64>,
    first_rtp: Option<u32>,
    last_rtp: Option<u32>,
    frames: u64,
    dropped: u64,
    /// A frame's AVCC form (H264): a buffer kept between frames.
    avcc: Vec<u8>,
    /// The first sender report's NTP time and RTP timestamp.
    sender_report: Option<(u64, u32)>,
    /// VP9: the top layer's size from the last scalability structure, for a first keyframe
    /// whose frame headers do not state it.
    vp9_structure: Option<(u16, u16)>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    File(#[from] file::Error),
}

impl TrackRecorder {
    /// A recorder for `media` writing to `path` (as `<path>.rec` until it finishes).
    pub fn new(media: Media, path: &Path) -> TrackRecorder {
        let depacketizer = match media {
            Media::Opus { .. } => Depacketizer::Opus(OpusDepacketizer::default()),
            Media::Vp8 => Depacketizer::Vp8(Vp8Depacketizer::default()),
            Media::Vp9 => Depacketizer::Vp9(Vp9Depacketizer::default()),
            Media::Av1 => Depacketizer::Av1(Av1Depacketizer::default()),
            Media::H264 => Depacketizer::H264(H264Depacketizer::default()),
        };
        TrackRecorder {
            depacketizer,
            out: Writing {
                media,
                path: path.to_path_buf(),
                file: None,
                origin: None,
                last_ticks: None,
                first_rtp: None,
                last_rtp: None,
                frames: 0,
                dropped: 0,
                avcc: Vec::new(),
                sender_report: None,
                vp9_structure: None,
            },
        }
    }

    /// Whether the caller should ask the sender for a keyframe: video not started yet, or a
    /// loss broke a frame.
    pub fn keyframe_wanted(&self) -> bool {
        match &self.depacketizer {
            Depacketizer::Opus(_) => false,
            Depacketizer::Vp8(d) => d.keyframe_wanted(),
            Depacketizer::Vp9(d) => d.keyframe_wanted(),
            Depacketizer::Av1(d) => d.keyframe_wanted(),
            Depacketizer::H264(d) => d.keyframe_wanted(),
        }
    }

    /// Takes one RTP packet's fields and payload. A frame it completes is written; what cannot
    /// be written (a malformed payload, a frame before the first keyframe) is counted, and only
    /// the file's I/O errors are returned.
    pub fn push(
        &mut self,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), Error> {
        let frame = match &mut self.depacketizer {
            Depacketizer::Opus(d) => d.push(sequence, timestamp, marker, payload),
            Depacketizer::Vp8(d) => d.push(sequence, timestamp, marker, payload),
            Depacketizer::Vp9(d) => {
                // Read before the push, whose frame borrows the depacketizer: a keyframe's
                // structure rides its first packet, so it is here by its last.
                if let Some(size) = d.format().structure_size() {
                    self.out.vp9_structure = Some(size);
                }
                d.push(sequence, timestamp, marker, payload)
            }
            Depacketizer::Av1(d) => d.push(sequence, timestamp, marker, payload),
            Depacketizer::H264(d) => d.push(sequence, timestamp, marker, payload),
        };
        match frame {
            Ok(Some(Frame {
                data,
                timestamp,
                keyframe,
            })) => {
                let keyframe = keyframe || matches!(self.out.media, Media::Opus { .. });
                self.out.write(timestamp, keyframe, data)
            }
            Ok(None) => Ok(()),
            Err(_) => {
                self.out.dropped += 1;
                Ok(())
            }
        }
    }

    /// Takes a sender report of the stream (its NTP time and the RTP timestamp that goes with
    /// it); the first one places the first frame on the sender's clock.
    pub fn sender_report(&mut self, ntp: u64, rtp_timestamp: u32) {
        self.out.sender_report.get_or_insert((ntp, rtp_timestamp));
    }

    /// Ends the file (when one was started) and says what was recorded.
    pub fn finish(self) -> Result<Summary, Error> {
        let mut w = self.out;
        let duration_ms = w.file.as_ref().map_or(0, |f| f.duration_ms());
        let sender_origin_ms = w.sender_origin_ms();
        let path = w.file.take().map(Recording::finish).transpose()?;
        Ok(Summary {
            path,
            origin: w.origin,
            sender_origin_ms,
            first_rtp: w.first_rtp,
            last_rtp: w.last_rtp,
            duration_ms,
            frames: w.frames,
            dropped: w.dropped,
        })
    }
}

/// Seconds from the NTP epoch (1900) to the Unix epoch.
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

impl Writing {
    /// The first frame's time on the sender's clock: the sender report's NTP time moved by the
    /// RTP ticks between the report and the frame (either way, within half the timestamp
    /// space).
    fn sender_origin_ms(&self) -> Option<u64> {
        let (ntp, sr_rtp) = self.sender_report?;
        let first = self.first_rtp?;
        let seconds = (ntp >> 32).checked_sub(NTP_UNIX_OFFSET_S)?;
        let ntp_ms = seconds * 1000 + (((ntp & 0xFFFF_FFFF) * 1000) >> 32);
        // Two's complement: a frame before the report gives a negative difference.
        let ticks = i64::from(first.wrapping_sub(sr_rtp) as i32);
        let rate = self.media.clock_rate() as i64;
        let ms = ntp_ms as i64 + ticks * 1000 / rate;
        u64::try_from(ms).ok()
    }

    fn write(&mut self, rtp: u32, keyframe: bool, data: &[u8]) -> Result<(), Error> {
        if self.file.is_none() {
            let Some(track) = self.track(keyframe, data) else {
                self.dropped += 1;
                return Ok(());
            };
            let origin = SystemTime::now();
            self.file = Some(Recording::create(&self.path, &[track], Some(origin))?);
            self.origin = Some(origin);
        }
        let ticks = unwrap(self.last_ticks, rtp);
        self.last_ticks = Some(ticks);
        self.first_rtp.get_or_insert(rtp);
        self.last_rtp = Some(rtp);
        let at_ms = ticks * 1000 / self.media.clock_rate();
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        if self.media == Media::H264 {
            self.avcc.clear();
            h264::to_avcc(data, &mut self.avcc);
            file.frame(0, at_ms, keyframe, &self.avcc)
        } else {
            file.frame(0, at_ms, keyframe, data)
        }
        .or_else(|e| match e {
            // A frame stamped before the one written last (a sender that restarted its
            // timestamps): dropped, the file stays in order.
            file::Error::Frame(_) => {
                self.dropped += 1;
                Ok(())
            }
            e => Err(e),
        })?;
        self.frames += 1;
        Ok(())
    }

    /// The file's track, from the first frame that can start it: any Opus frame; a VP8
    /// keyframe (its size is in its header); a VP9 keyframe (the size of its top layer, from
    /// its frame headers, else the scalability structure); an AV1 keyframe with its sequence
    /// header (size, `av1C`); an H264 keyframe with its SPS and PPS.
    fn track(&self, keyframe: bool, data: &[u8]) -> Option<Track> {
        let (codec, width, height) = match self.media {
            Media::Opus { channels } => (Codec::Opus { channels }, 0, 0),
            Media::Vp8 => {
                let (w, h) = vp8_size(data).filter(|_| keyframe)?;
                (Codec::Vp8, w, h)
            }
            Media::Vp9 => {
                let structure = self
                    .vp9_structure
                    .map(|(w, h)| (u32::from(w), u32::from(h)));
                let (w, h) = vp9::picture_size(data).or(structure).filter(|_| keyframe)?;
                (Codec::Vp9, w, h)
            }
            Media::Av1 => {
                let (header, obu) = av1::sequence_header(data).filter(|_| keyframe)?;
                let config = header.config_record(obu);
                (Codec::Av1 { config }, header.width, header.height)
            }
            Media::H264 => {
                let mut avcc = Vec::new();
                let (Some(s), Some(p)) = h264::to_avcc(data, &mut avcc) else {
                    return None;
                };
                let (w, h) = sps::sps_size(s)?;
                let record = h264::avcc_record(s, p)?;
                (Codec::H264 { avcc: record }, u32::from(w), u32::from(h))
            }
        };
        Some(Track {
            codec,
            width,
            height,
        })
    }
}

/// RTP timestamp `rtp` unwrapped past 2^32 next to the last one (`None` for the first):
/// the nearer of its candidates, so a frame a little older than the last stays older.
fn unwrap(last: Option<u64>, rtp: u32) -> u64 {
    let Some(last) = last else {
        // Far from 0, so that a slightly older frame does not go below it.
        return (1 << 32) + u64::from(rtp);
    };
    let delta = rtp.wrapping_sub(last as u32) as i32;
    last.saturating_add_signed(i64::from(delta))
}

/// A VP8 keyframe's picture size (RFC 6386 §9.1: a 3-byte tag, the start code, then 14-bit
/// width and height with 2-bit scales, which the size ignores).
fn vp8_size(frame: &[u8]) -> Option<(u32, u32)> {
    let header = frame.get(..10)?;
    if header[0] & 1 != 0 || header[3..6] != [0x9D, 0x01, 0x2A] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([header[6], header[7]]) & 0x3FFF);
    let height = u32::from(u16::from_le_bytes([header[8], header[9]]) & 0x3FFF);
    (width > 0 && height > 0).then_some((width, height))
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_unwrap_past_2_to_the_32() {
        let a = unwrap(None, u32::MAX - 1000);
        let b = unwrap(Some(a), 2000);
        assert_eq!(b - a, 3001);
        let older = unwrap(Some(b), 1000);
        assert_eq!(b - older, 1000);
    }

    /// The first sender report places the first frame on the sender's clock, whether the
    /// report came before or after it in RTP time.
    #[test]
    fn sender_reports_place_the_first_frame_on_the_senders_clock() {
        let dir = std::env::temp_dir().join(format!("sy-track-sr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = TrackRecorder::new(Media::Opus { channels: 2 }, &dir.join("a.mka"));
        r.push(1, 96_000, true, &[0xFC, 0xFF, 0xFE]).unwrap();
        // NTP for 1 800 000 000.5 s after the Unix epoch, at RTP 48 000: a second before the
        // first frame.
        let ntp = ((1_800_000_000 + NTP_UNIX_OFFSET_S) << 32) | (1 << 31);
        r.sender_report(ntp, 48_000);
        r.sender_report(ntp + (5 << 32), 0);
        let summary = r.finish().unwrap();
        assert_eq!(summary.sender_origin_ms, Some(1_800_000_001_500));
        let mut later = TrackRecorder::new(Media::Vp8, &dir.join("b.mkv"));
        later.sender_report(ntp, 90_000);
        assert_eq!(later.finish().unwrap().sender_origin_ms, None, "no frame");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A VP8 keyframe of 320x180 and a delta frame (only their first bytes matter here).
    const KEY: [u8; 12] = [
        0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xB4, 0x00, 0xAA, 0xBB,
    ];
    const DELTA: [u8; 4] = [0x11, 0x02, 0x00, 0xCC];

    /// Padding between frames (a payload-less packet with its own sequence number, as
    /// Chromium's pacer sends when it probes bandwidth) loses no frame and asks for no
    /// keyframe; a real gap still does.
    #[test]
    fn padding_between_frames_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("sy-track-pad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = TrackRecorder::new(Media::Vp8, &dir.join("v.mkv"));
        // VP8 payload descriptor: S bit, partition 0 (one byte: 0x10).
        let packet = |frame: &[u8]| [&[0x10u8][..], frame].concat();
        r.push(65534, 0, true, &packet(&KEY)).unwrap();
        assert!(!r.keyframe_wanted());
        r.push(65535, 0, false, &[]).unwrap();
        r.push(0, 0, false, &[]).unwrap();
        r.push(1, 3000, true, &packet(&DELTA)).unwrap();
        r.push(2, 3000, false, &[]).unwrap();
        r.push(3, 6000, true, &packet(&DELTA)).unwrap();
        assert!(!r.keyframe_wanted(), "padding is no loss");
        // A packet that never came (5) is.
        r.push(6, 9000, true, &packet(&DELTA)).unwrap();
        assert!(r.keyframe_wanted());
        let summary = r.finish().unwrap();
        assert_eq!(summary.frames, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn vp8_sizes_from_keyframes_only() {
        let key = [0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xB4, 0x00];
        assert_eq!(vp8_size(&key), Some((320, 180)));
        let mut inter = key;
        inter[0] |= 1;
        assert_eq!(vp8_size(&inter), None);
        assert_eq!(vp8_size(&key[..5]), None);
    }
}
