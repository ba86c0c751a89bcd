//! A Matroska writer, sans-IO: fed frames as they arrive, it makes the bytes to append to the
//! file, and at the end the bytes to append and the few to overwrite. A recorded connection's
//! file has one track; a muxed session's has a video and an audio track.
//!
//! Crash-safe by construction. The segment and every cluster have an unknown size, and a
//! cluster is handed out (and the driver flushes it) as soon as it closes: at most about a
//! second of media. A file cut anywhere (`kill -9`, power loss) is a valid Matroska file up to
//! its last whole cluster, which players and `ffmpeg` read without repair.
//!
//! What only the end knows is written then:
//! - the cues, appended after the last cluster;
//! - the duration, overwritten in the info, which reserved it at the start;
//! - a seek head pointing at the info, tracks and cues, overwritten into a void element
//!   reserved after the segment's start.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::ebml;

/// Timestamps are in milliseconds (`TimestampScale`, in nanoseconds).
const TIMESTAMP_SCALE_NS: u64 = 1_000_000;
/// A cluster closes at the first frame this long after it started; a video keyframe always
/// starts a new one, so that it begins a cluster (a cue, where playback can start). Waiting
/// for keyframes alone would not do: browsers send them only when asked, so a cluster, and
/// what a crash loses, could be minutes long.
const CLUSTER_MS: u64 = 1_000;
/// Bytes reserved after the segment's start for the seek head written at the end.
const SEEK_HEAD_SPACE: usize = 96;
/// Matroska dates count from 2001-01-01T00:00:00 UTC, this many seconds after the Unix epoch.
const MATROSKA_EPOCH_S: u64 = 978_307_200;
/// Track numbers are written as one-byte vints in blocks.
pub const MAX_TRACKS: usize = 126;

/// What a track holds; the codec's id and private data in the track entry follow from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// Opus at 48 kHz, `channels` (1 or 2) as negotiated.
    Opus {
        channels: u8,
    },
    Vp8,
    /// VP9 pictures, a superframe where a picture has several spatial layers; Matroska's
    /// VP9 needs no private data (the keyframes carry what a decoder needs).
    Vp9,
    /// AV1 temporal units in low-overhead form (every OBU with its size, no temporal
    /// delimiters), with the `av1C` record and the sequence header OBU as the private data.
    Av1 {
        config: Vec<u8>,
    },
    /// H264 frames in AVCC form (4-byte lengths), with the decoder configuration record
    /// (`avcC`: profile, level, SPS and PPS) as the track's private data.
    H264 {
        avcc: Vec<u8>,
    },
}

impl Codec {
    /// Matroska's codec id (`CodecID`).
    pub fn id(&self) -> &'static str {
        match self {
            Codec::Opus { .. } => "A_OPUS",
            Codec::Vp8 => "V_VP8",
            Codec::Vp9 => "V_VP9",
            Codec::Av1 { .. } => "V_AV1",
            Codec::H264 { .. } => "V_MPEG4/ISO/AVC",
        }
    }

    pub fn is_video(&self) -> bool {
        !matches!(self, Codec::Opus { .. })
    }
}

/// A track of a file: its codec, and the picture size for video (from the first keyframe of a
/// recording; 0 for audio).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub codec: Codec,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("frame at {at} ms is before {before} ms")]
    Backwards { at: u64, before: u64 },
    #[error("no track {0}")]
    NoTrack(usize),
}

/// The end of a file: bytes to append, then bytes to overwrite at offsets from its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub append: Vec<u8>,
    pub overwrite: Vec<(u64, Vec<u8>)>,
}

/// An open cluster: where it starts in time, and its bytes so far (a cluster is handed out
/// whole, so that what the driver writes ends on a cluster boundary).
struct Cluster {
    start_ms: u64,
    bytes: Vec<u8>,
}

/// Writes frames as a Matroska file (see the module's documentation).
pub struct Writer {
    /// Per track, whether it is video (its keyframes start clusters).
    video: Vec<bool>,
    /// The track whose cluster-starting frames are cues: the first video track, else the
    /// first.
    cue_track: usize,
    /// Bytes made and not yet taken, and the file offset of the first of them.
    out: Vec<u8>,
    taken: u64,
    /// File offsets: the segment's data, the info, the tracks, the duration's 8 bytes.
    segment_data: u64,
    info: u64,
    tracks: u64,
    duration: u64,
    cluster: Option<Cluster>,
    /// (time, cluster offset in the segment) of clusters that start with a keyframe of the
    /// cue track (every one for audio alone).
    cues: Vec<(u64, u64)>,
    first_ms: Option<u64>,
    last_ms: u64,
}

impl Writer {
    /// Starts a file with `tracks` (at most [`MAX_TRACKS`]; more are left out): the EBML
    /// header, the segment, its info and tracks. `origin` is the wall-clock time of time 0,
    /// written as the segment's date, so that a file alone (one a crash left without its log)
    /// still says when its media was: the muxer lines recordings up by it.
    pub fn new(tracks: &[Track], origin: Option<SystemTime>) -> Writer {
        let tracks = &tracks[..tracks.len().min(MAX_TRACKS)];
        let mut out = Vec::with_capacity(1024);
        let h264 = tracks.iter().any(|t| matches!(t.codec, Codec::H264 { .. }));
        let doc_type = if h264 { "matroska" } else { "webm" };
        ebml::master(&mut out, ebml::EBML, |h| {
            ebml::uint(h, ebml::EBML_VERSION, 1);
            ebml::uint(h, ebml::EBML_READ_VERSION, 1);
            ebml::uint(h, ebml::EBML_MAX_ID_LENGTH, 4);
            ebml::uint(h, ebml::EBML_MAX_SIZE_LENGTH, 8);
            ebml::string(h, ebml::DOC_TYPE, doc_type);
            ebml::uint(h, ebml::DOC_TYPE_VERSION, 4);
            ebml::uint(h, ebml::DOC_TYPE_READ_VERSION, 2);
        });
        ebml::id(&mut out, ebml::SEGMENT);
        ebml::unknown_size(&mut out);
        let segment_data = out.len() as u64;
        ebml::void(&mut out, SEEK_HEAD_SPACE);

        let info = out.len() as u64;
        ebml::master(&mut out, ebml::INFO, |i| {
            ebml::uint(i, ebml::TIMESTAMP_SCALE, TIMESTAMP_SCALE_NS);
            ebml::string(i, ebml::MUXING_APP, "switchyard");
            let app = concat!("switchyard ", env!("CARGO_PKG_VERSION"));
            ebml::string(i, ebml::WRITING_APP, app);
            if let Some(ns) = origin.and_then(matroska_date) {
                ebml::binary(i, ebml::DATE_UTC, &ns.to_be_bytes());
            }
            // Last, so that its 8 bytes end the info: overwritten at the end (0 until then).
            ebml::float(i, ebml::DURATION, 0.0);
        });
        let duration = out.len() as u64 - 8;

        let tracks_at = out.len() as u64;
        ebml::master(&mut out, ebml::TRACKS, |t| {
            for (number, track) in (1..).zip(tracks) {
                ebml::master(t, ebml::TRACK_ENTRY, |e| track_entry(e, number, track));
            }
        });
        let video: Vec<bool> = tracks.iter().map(|t| t.codec.is_video()).collect();
        Writer {
            cue_track: video.iter().position(|&v| v).unwrap_or(0),
            video,
            out,
            taken: 0,
            segment_data,
            info,
            tracks: tracks_at,
            duration,
            cluster: None,
            cues: Vec::new(),
            first_ms: None,
            last_ms: 0,
        }
    }

    /// The file offset the next byte made will have.
    fn position(&self) -> u64 {
        self.taken + self.out.len() as u64
    }

    /// Adds a frame of track `track` (an index into the tracks given to [`Writer::new`])
    /// `at` milliseconds (any origin; the first frame is time 0). Frames must come in time
    /// order, across tracks too; one before its cluster's start (or the first frame) is
    /// refused.
    pub fn frame(
        &mut self,
        track: usize,
        at: u64,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), Error> {
        let video = *self.video.get(track).ok_or(Error::NoTrack(track))?;
        let first = *self.first_ms.get_or_insert(at);
        let t = at
            .checked_sub(first)
            .ok_or(Error::Backwards { at, before: first })?;
        let close = self.cluster.as_ref().is_some_and(|c| {
            let age = t.saturating_sub(c.start_ms);
            age >= CLUSTER_MS || video && keyframe && age > 0
        });
        if close {
            self.close_cluster();
        }
        let cue = track == self.cue_track && (keyframe || !video);
        let (segment_data, position) = (self.segment_data, self.position());
        let c = self.cluster.get_or_insert_with(|| {
            let mut bytes = Vec::with_capacity(64 * 1024);
            ebml::id(&mut bytes, ebml::CLUSTER);
            ebml::unknown_size(&mut bytes);
            ebml::uint(&mut bytes, ebml::TIMESTAMP, t);
            Cluster { start_ms: t, bytes }
        });
        if c.start_ms == t && c.bytes.len() < 32 && cue {
            self.cues.push((t, position - segment_data));
        }
        // A cluster is at most CLUSTER_MS long, so its frames' offsets fit an i16.
        let relative = t
            .checked_sub(c.start_ms)
            .and_then(|r| i16::try_from(r).ok())
            .ok_or(Error::Backwards {
                at: t,
                before: c.start_ms,
            })?;
        // SimpleBlock: the track number (a size-like vint), the time from the cluster's, and
        // flags (keyframe; no lacing).
        ebml::id(&mut c.bytes, ebml::SIMPLE_BLOCK);
        ebml::size(&mut c.bytes, 4 + data.len() as u64);
        // `track` < MAX_TRACKS (126), so its number fits a one-byte vint.
        c.bytes.push(0x81 + track as u8);
        c.bytes.extend_from_slice(&relative.to_be_bytes());
        c.bytes.push(if keyframe { 0x80 } else { 0x00 });
        c.bytes.extend_from_slice(data);
        self.last_ms = self.last_ms.max(t);
        Ok(())
    }

    fn close_cluster(&mut self) {
        if let Some(c) = self.cluster.take() {
            self.out.extend_from_slice(&c.bytes);
        }
    }

    /// The bytes made since the last call, to append to the file: the header at first, then
    /// whole clusters (the open one stays until it closes). Flushing after each non-empty
    /// take keeps what a crash loses to the open cluster.
    pub fn take(&mut self) -> Vec<u8> {
        self.taken += self.out.len() as u64;
        std::mem::take(&mut self.out)
    }

    /// How long the file's media is so far, in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.last_ms
    }

    /// Ends the file: the open cluster and the cues to append, and the duration and seek head
    /// to overwrite.
    pub fn finish(mut self) -> Ending {
        self.close_cluster();
        let cues_at = self.position();
        let cue_track = self.cue_track as u64 + 1;
        if !self.cues.is_empty() {
            let cues = std::mem::take(&mut self.cues);
            ebml::master(&mut self.out, ebml::CUES, |c| {
                for &(time, cluster) in &cues {
                    ebml::master(c, ebml::CUE_POINT, |p| {
                        ebml::uint(p, ebml::CUE_TIME, time);
                        ebml::master(p, ebml::CUE_TRACK_POSITIONS, |t| {
                            ebml::uint(t, ebml::CUE_TRACK, cue_track);
                            ebml::uint(t, ebml::CUE_CLUSTER_POSITION, cluster);
                        });
                    });
                }
            });
        }
        let appended_cues = self.position() > cues_at;
        let mut seeks = vec![(ebml::INFO, self.info), (ebml::TRACKS, self.tracks)];
        if appended_cues {
            seeks.push((ebml::CUES, cues_at));
        }
        let mut seek_head = Vec::with_capacity(SEEK_HEAD_SPACE);
        ebml::master(&mut seek_head, ebml::SEEK_HEAD, |h| {
            for (element, at) in seeks {
                ebml::master(h, ebml::SEEK, |s| {
                    ebml::binary(s, ebml::SEEK_ID, &element.to_be_bytes());
                    ebml::uint(s, ebml::SEEK_POSITION, at - self.segment_data);
                });
            }
        });
        let rest = SEEK_HEAD_SPACE.saturating_sub(seek_head.len());
        ebml::void(&mut seek_head, rest);
        // Matroska's duration is a float of timestamp-scale units; the last frame's time
        // stands for the end (the last frame's own length is not known).
        let duration = (self.last_ms as f64).to_be_bytes().to_vec();
        let mut overwrite = vec![(self.duration, duration)];
        // The seek head fits its space (3 seeks take about 60 bytes); were it ever not to,
        // the file is as valid without one.
        if seek_head.len() == SEEK_HEAD_SPACE {
            overwrite.push((self.segment_data, seek_head));
        }
        Ending {
            append: self.take(),
            overwrite,
        }
    }
}

/// Nanoseconds from Matroska's epoch to `at`; `None` before it (a clock far off).
fn matroska_date(at: SystemTime) -> Option<i64> {
    let since_unix = at.duration_since(UNIX_EPOCH).ok()?;
    let since = since_unix.checked_sub(std::time::Duration::from_secs(MATROSKA_EPOCH_S))?;
    i64::try_from(since.as_nanos()).ok()
}

/// The wall-clock time a Matroska date (nanoseconds from 2001) stands for.
pub fn date_to_system_time(ns: i64) -> SystemTime {
    let epoch = UNIX_EPOCH + std::time::Duration::from_secs(MATROSKA_EPOCH_S);
    let offset = std::time::Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        epoch + offset
    } else {
        epoch - offset
    }
}

/// A track entry's children: its number, type and codec, and the picture or sound.
fn track_entry(e: &mut Vec<u8>, number: u64, track: &Track) {
    ebml::uint(e, ebml::TRACK_NUMBER, number);
    ebml::uint(e, ebml::TRACK_UID, number);
    ebml::uint(
        e,
        ebml::TRACK_TYPE,
        if track.codec.is_video() { 1 } else { 2 },
    );
    ebml::uint(e, ebml::FLAG_LACING, 0);
    ebml::string(e, ebml::CODEC_ID, track.codec.id());
    match &track.codec {
        Codec::Opus { channels } => {
            ebml::binary(e, ebml::CODEC_PRIVATE, &opus_head(*channels));
            // RFC 7845's 80 ms: what a decoder needs before a seek target to converge.
            ebml::uint(e, ebml::SEEK_PRE_ROLL, 80_000_000);
            ebml::master(e, ebml::AUDIO, |a| {
                ebml::float(a, ebml::SAMPLING_FREQUENCY, 48_000.0);
                ebml::uint(a, ebml::CHANNELS, u64::from(*channels));
            });
        }
        codec => {
            if let Codec::H264 { avcc: private } | Codec::Av1 { config: private } = codec {
                ebml::binary(e, ebml::CODEC_PRIVATE, private);
            }
            ebml::master(e, ebml::VIDEO, |v| {
                ebml::uint(v, ebml::PIXEL_WIDTH, u64::from(track.width));
                ebml::uint(v, ebml::PIXEL_HEIGHT, u64::from(track.height));
            });
        }
    }
}

/// Opus's identification header (RFC 7845 §5.1), Matroska's `CodecPrivate` for Opus: no
/// pre-skip (WebRTC's Opus has none to skip), 48 kHz, no gain, mapping family 0.
fn opus_head(channels: u8) -> Vec<u8> {
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(b"OpusHead");
    head.push(1);
    head.push(channels);
    head.extend_from_slice(&0u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use webm_iterable::WebmIterator;
    use webm_iterable::matroska_spec::MatroskaSpec;

    /// Writes `frames` (time in ms, keyframe) of `track` as a whole file.
    fn file(track: Track, frames: &[(u64, bool)]) -> (Vec<u8>, Vec<u8>) {
        let mut w = Writer::new(&[track], None);
        let mut bytes = w.take();
        for &(at, key) in frames {
            w.frame(0, at, key, &[0xAB; 100]).unwrap();
            bytes.extend(w.take());
        }
        let cut = bytes.clone();
        let end = w.finish();
        bytes.extend(end.append);
        for (at, patch) in end.overwrite {
            let at = at as usize;
            bytes[at..at + patch.len()].copy_from_slice(&patch);
        }
        (bytes, cut)
    }

    fn tags(bytes: &[u8]) -> Vec<MatroskaSpec> {
        WebmIterator::new(bytes, &[])
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn vp8() -> Track {
        Track {
            codec: Codec::Vp8,
            width: 320,
            height: 180,
        }
    }

    /// 30 fps for 3.5 s with a keyframe every 2 s: clusters start every second and at the
    /// keyframes, the cues name the keyframe clusters, the duration is patched in.
    #[test]
    fn clusters_cues_and_duration() {
        let frames: Vec<(u64, bool)> = (0..105)
            .map(|i| (1_000 + i * 100 / 3, i % 60 == 0))
            .collect();
        let (bytes, _) = file(vp8(), &frames);
        let tags = tags(&bytes);
        let clusters: Vec<u64> = tags
            .iter()
            .filter_map(|t| match t {
                MatroskaSpec::Timestamp(t) => Some(*t),
                _ => None,
            })
            .collect();
        assert_eq!(clusters, [0, 1000, 2000, 3000]);
        let cues: Vec<u64> = tags
            .iter()
            .filter_map(|t| match t {
                MatroskaSpec::CueTime(t) => Some(*t),
                _ => None,
            })
            .collect();
        assert_eq!(cues, [0, 2000]);
        let duration = tags.iter().find_map(|t| match t {
            MatroskaSpec::Duration(d) => Some(*d),
            _ => None,
        });
        assert_eq!(duration, Some(3466.0));
        let blocks = tags
            .iter()
            .filter(|t| matches!(t, MatroskaSpec::SimpleBlock(_)))
            .count();
        assert_eq!(blocks, 105);
        assert!(
            tags.iter()
                .any(|t| matches!(t, MatroskaSpec::SeekPosition(_))),
            "a seek head"
        );
    }

    /// What a crash leaves (the bytes taken so far, without the end) reads as far as its last
    /// whole cluster.
    #[test]
    fn a_cut_file_reads_to_its_last_cluster() {
        let frames: Vec<(u64, bool)> = (0..90).map(|i| (i * 33, i == 0)).collect();
        let (_, cut) = file(vp8(), &frames);
        let blocks = tags(&cut)
            .iter()
            .filter(|t| matches!(t, MatroskaSpec::SimpleBlock(_)))
            .count();
        // The clusters at 0 and 1023 ms (31 frames each) are out; the open one is not.
        assert_eq!(blocks, 62);
    }

    /// Audio clusters close every second, each a cue; the track is Opus with its head.
    #[test]
    fn audio() {
        let track = Track {
            codec: Codec::Opus { channels: 2 },
            width: 0,
            height: 0,
        };
        let frames: Vec<(u64, bool)> = (0..150).map(|i| (i * 20, true)).collect();
        let (bytes, _) = file(track, &frames);
        let tags = tags(&bytes);
        assert!(tags.contains(&MatroskaSpec::CodecID("A_OPUS".into())));
        assert!(tags.contains(&MatroskaSpec::CodecPrivate(opus_head(2))));
        let cues = tags
            .iter()
            .filter(|t| matches!(t, MatroskaSpec::CueTime(_)))
            .count();
        assert_eq!(cues, 3);
    }

    #[test]
    fn a_frame_before_its_cluster_is_refused() {
        let mut w = Writer::new(&[vp8()], None);
        w.frame(0, 5_000, true, &[1]).unwrap();
        w.frame(0, 5_500, false, &[1]).unwrap();
        assert!(matches!(
            w.frame(0, 4_000, false, &[1]),
            Err(Error::Backwards { .. })
        ));
        assert!(matches!(
            w.frame(1, 6_000, false, &[1]),
            Err(Error::NoTrack(1))
        ));
    }

    /// A video and an audio track in one file: blocks name their track, video keyframes start
    /// clusters and are the cues, and the origin is the segment's date.
    #[test]
    fn two_tracks_and_a_date() {
        let audio = Track {
            codec: Codec::Opus { channels: 1 },
            width: 0,
            height: 0,
        };
        let origin = UNIX_EPOCH + std::time::Duration::from_millis(1_800_000_000_123);
        let mut w = Writer::new(&[vp8(), audio], Some(origin));
        let mut bytes = w.take();
        for i in 0..150u64 {
            w.frame(1, i * 20, true, &[2; 10]).unwrap();
            if i % 3 == 0 {
                w.frame(0, i * 20, i % 75 == 0, &[1; 10]).unwrap();
            }
        }
        let end = w.finish();
        bytes.extend(end.append);
        for (at, patch) in end.overwrite {
            let at = at as usize;
            bytes[at..at + patch.len()].copy_from_slice(&patch);
        }
        let tags = tags(&bytes);
        let date = tags.iter().find_map(|t| match t {
            MatroskaSpec::DateUTC(d) => Some(*d),
            _ => None,
        });
        assert_eq!(date.map(date_to_system_time), Some(origin));
        let mut per_track = [0; 2];
        for t in &tags {
            if let Ok(b) = webm_iterable::matroska_spec::SimpleBlock::try_from(t) {
                per_track[b.track as usize - 1] += 1;
            }
        }
        assert_eq!(per_track, [50, 150]);
        let cue_tracks: Vec<u64> = tags
            .iter()
            .filter_map(|t| match t {
                MatroskaSpec::CueTrack(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(cue_tracks, [1, 1], "the keyframes at 0 and 1.5 s");
    }
}
