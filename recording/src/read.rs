//! Reading recorded files back, frame by frame, for the muxer and for closing orphans: the
//! tracks, the date (the file's time 0 on the wall clock) and each block's frame.
//!
//! The EBML parsing is webm-iterable's; this module keeps only what our files hold
//! (SimpleBlocks without lacing, in clusters) and reads a file cut by a crash as far as its
//! last whole element.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::SystemTime;

use webm_iterable::WebmIterator;
use webm_iterable::matroska_spec::{Master, MatroskaSpec, SimpleBlock};

use crate::mkv::{self, Codec};

/// No element of ours is near this large; a corrupt size above it ends the file instead of
/// allocating.
const MAX_ELEMENT: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a Matroska file with tracks: {0}")]
    Format(String),
}

/// A track as the file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub number: u64,
    /// `None` for a codec the muxer does not take.
    pub codec: Option<Codec>,
    pub width: u32,
    pub height: u32,
}

/// One frame: its track's number, its time in milliseconds from the file's time 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub track: u64,
    pub at_ms: u64,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// A Matroska file opened for reading: its header read, its frames to come.
pub struct Reader<R: Read> {
    tags: WebmIterator<R>,
    pub tracks: Vec<TrackInfo>,
    /// The segment's date: the wall-clock time of the file's time 0.
    pub origin: Option<SystemTime>,
    /// The duration the end of the file gives, in ms; `None` for a file never finished.
    pub duration_ms: Option<u64>,
    /// Nanoseconds per timestamp unit.
    scale_ns: u64,
    cluster: u64,
    /// The file ended before its end (a crash's cut, or garbage): frames up to there were read.
    pub truncated: bool,
}

impl Reader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, Error> {
        Reader::new(BufReader::with_capacity(256 * 1024, File::open(path)?))
    }
}

impl<R: Read> Reader<R> {
    /// Reads the header, up to the first cluster.
    pub fn new(source: R) -> Result<Self, Error> {
        let mut tags = WebmIterator::new(source, &[]);
        tags.set_max_allowable_tag_size(Some(MAX_ELEMENT));
        let mut reader = Reader {
            tags,
            tracks: Vec::new(),
            origin: None,
            duration_ms: None,
            scale_ns: 1_000_000,
            cluster: 0,
            truncated: false,
        };
        let mut duration = None;
        let mut track: Option<Header> = None;
        loop {
            let tag = match reader.tags.next() {
                Some(Ok(tag)) => tag,
                Some(Err(e)) => return Err(Error::Format(e.to_string())),
                None => break,
            };
            match tag {
                MatroskaSpec::TimestampScale(n) if n > 0 => reader.scale_ns = n,
                MatroskaSpec::Duration(d) if d.is_finite() && d > 0.0 => duration = Some(d),
                MatroskaSpec::DateUTC(ns) => reader.origin = Some(mkv::date_to_system_time(ns)),
                MatroskaSpec::TrackEntry(Master::Start) => track = Some(Header::default()),
                MatroskaSpec::TrackEntry(Master::End) => {
                    if let Some(t) = track.take() {
                        reader.tracks.push(t.into_info());
                    }
                }
                MatroskaSpec::TrackNumber(n) => with(&mut track, |t| t.number = n),
                MatroskaSpec::CodecID(id) => with(&mut track, |t| t.codec_id = id),
                MatroskaSpec::CodecPrivate(data) => with(&mut track, |t| t.private = data),
                MatroskaSpec::PixelWidth(n) => with(&mut track, |t| t.width = n),
                MatroskaSpec::PixelHeight(n) => with(&mut track, |t| t.height = n),
                MatroskaSpec::Channels(n) => with(&mut track, |t| t.channels = n),
                MatroskaSpec::Cluster(Master::Start) => break,
                _ => {}
            }
        }
        if reader.tracks.is_empty() {
            return Err(Error::Format("no tracks".into()));
        }
        // Timestamps in scale units (1 ms in ours); the float is far below u64's range.
        reader.duration_ms = duration.map(|d| (d * reader.scale_ns as f64 / 1e6) as u64);
        Ok(reader)
    }

    /// The next frame; `None` at the end of the file, or where it stops making sense (see
    /// [`Reader::truncated`]).
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let tag = match self.tags.next()? {
                Ok(tag) => tag,
                Err(_) => {
                    self.truncated = true;
                    return None;
                }
            };
            match tag {
                MatroskaSpec::Timestamp(t) => self.cluster = t,
                MatroskaSpec::SimpleBlock(mut bytes) => {
                    let Ok(block) = SimpleBlock::try_from(bytes.as_slice()) else {
                        continue;
                    };
                    let (track, timestamp, keyframe) =
                        (block.track, block.timestamp, block.keyframe);
                    // The frame is the block after its header: moved to the front of its own
                    // buffer rather than copied into a new one.
                    let header = bytes.len() - block.raw_frame_data().len();
                    bytes.drain(..header);
                    let units = self.cluster.saturating_add_signed(i64::from(timestamp));
                    return Some(Frame {
                        track,
                        at_ms: units.saturating_mul(self.scale_ns) / 1_000_000,
                        keyframe,
                        data: bytes,
                    });
                }
                _ => {}
            }
        }
    }
}

fn with(track: &mut Option<Header>, f: impl FnOnce(&mut Header)) {
    if let Some(t) = track {
        f(t);
    }
}

/// A track entry's fields as they are read.
#[derive(Default)]
struct Header {
    number: u64,
    codec_id: String,
    private: Vec<u8>,
    width: u64,
    height: u64,
    channels: u64,
}

impl Header {
    fn into_info(self) -> TrackInfo {
        let codec = match self.codec_id.as_str() {
            "A_OPUS" => Some(Codec::Opus {
                channels: u8::try_from(self.channels.clamp(1, 2)).unwrap_or(1),
            }),
            "V_VP8" => Some(Codec::Vp8),
            "V_VP9" => Some(Codec::Vp9),
            "V_AV1" => Some(Codec::Av1 {
                config: self.private,
            }),
            "V_MPEG4/ISO/AVC" => Some(Codec::H264 { avcc: self.private }),
            _ => None,
        };
        TrackInfo {
            number: self.number,
            codec,
            width: u32::try_from(self.width).unwrap_or(0),
            height: u32::try_from(self.height).unwrap_or(0),
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use crate::mkv::{Track, Writer};
    use std::time::{Duration, UNIX_EPOCH};

    fn written(finish: bool) -> Vec<u8> {
        let tracks = [
            Track {
                codec: Codec::Vp8,
                width: 640,
                height: 360,
            },
            Track {
                codec: Codec::Opus { channels: 2 },
                width: 0,
                height: 0,
            },
        ];
        let origin = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let mut w = Writer::new(&tracks, Some(origin));
        let mut bytes = w.take();
        for i in 0..100u64 {
            w.frame(1, i * 20, true, &[i as u8; 3]).unwrap();
            if i % 2 == 0 {
                w.frame(0, i * 20, i % 50 == 0, &[0xEE, i as u8]).unwrap();
            }
            bytes.extend(w.take());
        }
        if finish {
            let end = w.finish();
            bytes.extend(end.append);
            for (at, patch) in end.overwrite {
                let at = at as usize;
                bytes[at..at + patch.len()].copy_from_slice(&patch);
            }
        }
        bytes
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let bytes = written(true);
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert_eq!(r.tracks.len(), 2);
        assert_eq!(r.tracks[0].codec, Some(Codec::Vp8));
        assert_eq!((r.tracks[0].width, r.tracks[0].height), (640, 360));
        assert_eq!(r.tracks[1].codec, Some(Codec::Opus { channels: 2 }));
        assert_eq!(
            r.origin,
            Some(UNIX_EPOCH + Duration::from_millis(1_800_000_000_000))
        );
        assert_eq!(r.duration_ms, Some(1980));
        let mut frames = Vec::new();
        while let Some(f) = r.next_frame() {
            frames.push(f);
        }
        assert!(!r.truncated);
        assert_eq!(frames.len(), 150);
        let video: Vec<&Frame> = frames.iter().filter(|f| f.track == 1).collect();
        assert_eq!(video[25].at_ms, 1000);
        assert!(video[25].keyframe && !video[24].keyframe);
        assert_eq!(video[25].data, [0xEE, 50]);
        let audio: Vec<u64> = frames
            .iter()
            .filter(|f| f.track == 2)
            .map(|f| f.at_ms)
            .collect();
        assert_eq!(audio, (0..100).map(|i| i * 20).collect::<Vec<_>>());
    }

    /// A file a crash cut: no duration, and the frames of its whole clusters; cut again in the
    /// middle of a cluster, the frames before the cut.
    #[test]
    fn reads_a_cut_file_to_the_cut() {
        let cut = written(false);
        let mut r = Reader::new(&cut[..]).unwrap();
        assert_eq!(r.duration_ms, None);
        let mut n = 0;
        while r.next_frame().is_some() {
            n += 1;
        }
        assert_eq!(
            n, 75,
            "the clusters at 0 and 1 s; the open one never written"
        );
        let mut r = Reader::new(&cut[..cut.len() - 100]).unwrap();
        let mut n = 0;
        while r.next_frame().is_some() {
            n += 1;
        }
        assert!((60..75).contains(&n), "{n}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Reader::new(&b"not a matroska file"[..]).is_err());
        assert!(Reader::new(&[][..]).is_err());
        let mut bytes = written(true);
        for b in bytes.iter_mut().skip(300).step_by(7) {
            *b ^= 0x5A;
        }
        if let Ok(mut r) = Reader::new(&bytes[..]) {
            while r.next_frame().is_some() {}
        }
    }
}
