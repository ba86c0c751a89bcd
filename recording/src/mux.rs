//! The muxer: a session's recorded files (one track each, as the media server wrote them)
//! composed into one file with a video and an audio track.
//!
//! - **Time**: each file's date is its time 0 on the wall clock; the earliest is the session's
//!   start, and every file's frames are placed at their date's offset from it plus their own
//!   time. A participant who joined late starts late; one who left ends early.
//! - **Video**: every video file is decoded as the output clock reaches its frames; at each
//!   output frame the files that are present (started, and not past their last frame) are
//!   composed with the MCU's compositor in the configured layout, in the order they started:
//!   `grid` changes its tiles as people come and go. The canvas is encoded to VP8, with a
//!   keyframe every two seconds so that a player can seek.
//! - **Audio**: every Opus file is decoded and laid on the session's sample clock at its frames'
//!   times; a stretch without frames (muted with DTX, a loss, not there yet) is silence, so the
//!   mix keeps the session's full length. The mix is encoded to mono Opus in 20 ms frames,
//!   fed [`ENCODER_LOOKAHEAD`] ahead of each frame's time, so that the sound keeps its time
//!   against the video (the file says no pre-skip).
//!
//! The output is written as a recording is (`<name>.rec`, renamed when complete), so a muxer
//! killed midway leaves no file that looks finished.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use switchyard_codec::audio::mixer::{mix_into, saturate};
use switchyard_codec::audio::opus_codec::{MAX_ENCODED, MAX_PACKET_SAMPLES};
use switchyard_codec::audio::{OpusDecoder, OpusEncoder};
use switchyard_codec::video::{self, EncoderConfig, VideoCodec, VideoDecoder, VideoEncoder};
use switchyard_codec::{Compositor, FramePool, I420, Layout};

use crate::file::{self, Recording};
use crate::h264;
use crate::mkv::{Codec, Track};
use crate::read::{self, Reader};

/// Output audio frames: 20 ms at 48 kHz.
const AUDIO_FRAME_MS: u64 = 20;
const SAMPLES_PER_MS: u64 = 48;
const AUDIO_FRAME: usize = (AUDIO_FRAME_MS * SAMPLES_PER_MS) as usize;
/// The samples libopus's encoder holds back (`OPUS_GET_LOOKAHEAD` at 48 kHz for the VoIP
/// application: 2.5 ms plus 4 ms of analysis). The muxed file declares no pre-skip, so a
/// player would play the session's sound that much late against its video: each output frame
/// is mixed from this far past its time instead, and decodes at the time it belongs to.
const ENCODER_LOOKAHEAD: u64 = 312;
/// A keyframe this often in the output, so that players seek.
const KEYFRAME_EVERY_MS: u64 = 2_000;
/// A video file's tile stays this long after its last frame (a late last frame, a frame rate
/// below the output's), then leaves the layout.
const VIDEO_HOLD_MS: u64 = 500;

/// How a session is composed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub layout: Layout,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_bitrate: u32,
    pub audio_bitrate: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            layout: Layout::Grid,
            width: 1280,
            height: 720,
            fps: 30,
            video_bitrate: 2_000_000,
            audio_bitrate: 64_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: read::Error },
    #[error("no audio or video file the muxer can read")]
    NoMedia,
    #[error("codec: {0}")]
    Codec(String),
    #[error(transparent)]
    File(#[from] file::Error),
}

/// What a session became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Muxed {
    pub path: PathBuf,
    /// The session's start on the wall clock, in ms since the Unix epoch.
    pub start_timestamp: u64,
    pub duration_ms: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    pub inputs: Vec<Input>,
}

/// One file of the session, as the muxer used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    pub file: PathBuf,
    /// `audio`, `video`, or `skipped` (a codec the muxer does not decode).
    pub kind: &'static str,
    /// Where it starts in the session.
    pub offset_ms: u64,
    pub frames: u64,
    /// Frames its decoder refused.
    pub undecodable: u64,
}

/// Composes `files` into `out` (see the module's documentation). Files the muxer cannot read
/// are errors; a codec it cannot decode (AV1) is left out and marked `skipped`.
pub fn mux(files: &[PathBuf], out: &Path, config: &Config) -> Result<Muxed, Error> {
    mux_with(files, &HashMap::new(), out, config)
}

/// [`mux`], with some files' time 0 given (ms since the Unix epoch) instead of their dates:
/// the monitor's lip-sync correction of a participant's video against its audio.
pub fn mux_with(
    files: &[PathBuf],
    origins: &HashMap<PathBuf, u64>,
    out: &Path,
    config: &Config,
) -> Result<Muxed, Error> {
    let mut opened = Vec::with_capacity(files.len());
    for path in files {
        let reader = Reader::open(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        opened.push((path.clone(), reader));
    }
    let origin = |path: &PathBuf, r: &Reader<_>| {
        origins.get(path).copied().or_else(|| r.origin.map(unix_ms))
    };
    let start = opened
        .iter()
        .filter_map(|(p, r)| origin(p, r))
        .min()
        .unwrap_or(0);
    // In the order they started: the order of the tiles.
    opened.sort_by_key(|(p, r)| origin(p, r).unwrap_or(0));

    let mut videos = Vec::new();
    let mut audios = Vec::new();
    let mut skipped = Vec::new();
    for (path, first) in opened {
        let offset = origin(&path, &first).unwrap_or(0).saturating_sub(start);
        // Ours hold one track; a file with more (another muxer's) is read once per track.
        let tracks = first.tracks.clone();
        let mut first = Some(first);
        for track in tracks {
            let reader = match first.take() {
                Some(r) => r,
                None => Reader::open(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?,
            };
            let (number, path) = (track.number, path.clone());
            let codec_id = track.codec.as_ref().map_or("unknown", Codec::id);
            let video = match track.codec {
                Some(Codec::Opus { .. }) => {
                    audios.push(AudioIn::new(path, reader, number, offset)?);
                    continue;
                }
                Some(Codec::Vp8) => Some((VideoCodec::Vp8, Vec::new())),
                // A picture's spatial layers are one superframe, which libvpx decodes whole.
                Some(Codec::Vp9) => Some((VideoCodec::Vp9, Vec::new())),
                Some(Codec::H264 { avcc }) => {
                    let mut parameter_sets = Vec::new();
                    h264::record_to_annex_b(&avcc, &mut parameter_sets);
                    Some((VideoCodec::H264, parameter_sets))
                }
                _ => None,
            };
            match video {
                Some((codec, sets)) => {
                    videos.push(VideoIn::new(path, reader, number, offset, codec, sets)?);
                }
                None => {
                    // There is no AV1 decoder (libvpx is VP8 and VP9 only): the session
                    // goes on without this participant's video (its audio stays).
                    tracing::warn!(file = %path.display(), codec = codec_id, "video input left out of the muxed session: the muxer decodes VP8, VP9 and H264 only");
                    skipped.push(Input {
                        file: path,
                        kind: "skipped",
                        offset_ms: offset,
                        frames: 0,
                        undecodable: 0,
                    })
                }
            }
        }
    }
    if videos.is_empty() && audios.is_empty() {
        return Err(Error::NoMedia);
    }

    let mut tracks = Vec::new();
    let video_track = (!videos.is_empty()).then(|| {
        tracks.push(Track {
            codec: Codec::Vp8,
            width: config.width,
            height: config.height,
        });
        tracks.len() - 1
    });
    let audio_track = (!audios.is_empty()).then(|| {
        tracks.push(Track {
            codec: Codec::Opus { channels: 1 },
            width: 0,
            height: 0,
        });
        tracks.len() - 1
    });
    let origin_time = UNIX_EPOCH + Duration::from_millis(start);
    let mut file = Recording::create(out, &tracks, Some(origin_time))?;
    let mut canvas = match video_track {
        Some(track) => Some(Canvas::new(config, track)?),
        None => None,
    };
    let mut sound = match audio_track {
        Some(track) => Some(Sound::new(config, track)?),
        None => None,
    };

    let fps = u64::from(config.fps.max(1));
    let (mut video_tick, mut audio_tick) = (0u64, 0u64);
    loop {
        let video_at = canvas.as_ref().map(|_| video_tick * 1000 / fps);
        let audio_at = sound.as_ref().map(|_| audio_tick * AUDIO_FRAME_MS);
        let (Some(at), is_video) = (match (video_at, audio_at) {
            (Some(v), Some(a)) if v < a => (Some(v), true),
            (_, Some(a)) => (Some(a), false),
            (v, None) => (v, true),
        }) else {
            break;
        };
        let ended = videos.iter().all(VideoIn::ended) && audios.iter().all(AudioIn::ended);
        let end = videos
            .iter()
            .map(|v| v.last_ms + VIDEO_HOLD_MS.min(1000 / fps))
            .chain(audios.iter().map(|a| a.end_ms()))
            .max()
            .unwrap_or(0);
        if ended && at >= end {
            break;
        }
        if is_video {
            if let Some(c) = canvas.as_mut() {
                c.frame(at, &mut videos, &mut file)?;
            }
            video_tick += 1;
        } else {
            if let Some(s) = sound.as_mut() {
                s.frame(at, &mut audios, &mut file)?;
            }
            audio_tick += 1;
        }
    }

    let duration_ms = file.duration_ms();
    let path = file.finish()?;
    let inputs = videos
        .iter()
        .map(VideoIn::summary)
        .chain(audios.iter().map(AudioIn::summary))
        .chain(skipped)
        .collect();
    Ok(Muxed {
        path,
        start_timestamp: start,
        duration_ms,
        video_frames: canvas.map_or(0, |c| c.frames),
        audio_frames: sound.map_or(0, |s| s.frames),
        inputs,
    })
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

type FileReader = Reader<BufReader<File>>;

/// The next frame of `track` in `reader`, skipping other tracks' frames.
fn next_of(reader: &mut FileReader, track: u64) -> Option<read::Frame> {
    std::iter::from_fn(|| reader.next_frame()).find(|f| f.track == track)
}

/// A video file being decoded as the session's clock reaches its frames.
struct VideoIn {
    path: PathBuf,
    reader: FileReader,
    track: u64,
    offset_ms: u64,
    decoder: Box<dyn VideoDecoder>,
    /// H264's SPS and PPS from the track's record, in Annex B form, given before keyframes.
    parameter_sets: Vec<u8>,
    annex_b: Vec<u8>,
    next: Option<read::Frame>,
    picture: Option<I420>,
    /// Session time of the last frame read.
    last_ms: u64,
    frames: u64,
    undecodable: u64,
}

impl VideoIn {
    fn new(
        path: PathBuf,
        mut reader: FileReader,
        track: u64,
        offset_ms: u64,
        codec: VideoCodec,
        parameter_sets: Vec<u8>,
    ) -> Result<VideoIn, Error> {
        let decoder = video::decoder(codec).map_err(|e| Error::Codec(e.to_string()))?;
        let next = next_of(&mut reader, track);
        Ok(VideoIn {
            path,
            reader,
            track,
            offset_ms,
            decoder,
            parameter_sets,
            annex_b: Vec::new(),
            next,
            picture: None,
            last_ms: offset_ms,
            frames: 0,
            undecodable: 0,
        })
    }

    fn ended(&self) -> bool {
        self.next.is_none()
    }

    /// Decodes the frames up to session time `at`.
    fn advance(&mut self, at: u64, pool: &mut FramePool) {
        while let Some(frame) = self.next.take_if(|f| self.offset_ms + f.at_ms <= at) {
            self.last_ms = self.offset_ms + frame.at_ms;
            self.frames += 1;
            let data = if self.parameter_sets.is_empty() {
                &frame.data
            } else {
                self.annex_b.clear();
                if frame.keyframe {
                    self.annex_b.extend_from_slice(&self.parameter_sets);
                }
                h264::to_annex_b(&frame.data, &mut self.annex_b);
                &self.annex_b
            };
            match self.decoder.decode(data, pool) {
                Ok(Some(picture)) => {
                    if let Some(old) = self.picture.replace(picture) {
                        pool.put(old);
                    }
                }
                Ok(None) => {}
                Err(_) => self.undecodable += 1,
            }
            self.next = next_of(&mut self.reader, self.track);
        }
    }

    /// Whether its tile is on the canvas at session time `at`.
    fn present(&self, at: u64) -> bool {
        self.picture.is_some()
            && at >= self.offset_ms
            && (!self.ended() || at <= self.last_ms + VIDEO_HOLD_MS)
    }

    fn summary(&self) -> Input {
        Input {
            file: self.path.clone(),
            kind: "video",
            offset_ms: self.offset_ms,
            frames: self.frames,
            undecodable: self.undecodable,
        }
    }
}

/// The output video: the compositor and the encoder.
struct Canvas {
    track: usize,
    compositor: Compositor,
    encoder: Box<dyn VideoEncoder>,
    pool: FramePool,
    encoded: Vec<u8>,
    last_keyframe: Option<u64>,
    frames: u64,
}

impl Canvas {
    fn new(config: &Config, track: usize) -> Result<Canvas, Error> {
        let codec = |e: switchyard_codec::CodecError| Error::Codec(e.to_string());
        let compositor = Compositor::new(config.width, config.height, config.layout)
            .map_err(|e| Error::Codec(e.to_string()))?;
        let encoder = video::encoder(&EncoderConfig {
            codec: VideoCodec::Vp8,
            width: config.width,
            height: config.height,
            bitrate_bps: config.video_bitrate,
            fps: config.fps.max(1),
        })
        .map_err(codec)?;
        Ok(Canvas {
            track,
            compositor,
            encoder,
            pool: FramePool::default(),
            encoded: Vec::new(),
            last_keyframe: None,
            frames: 0,
        })
    }

    /// Composes and writes the output frame at session time `at`.
    fn frame(
        &mut self,
        at: u64,
        inputs: &mut [VideoIn],
        file: &mut Recording,
    ) -> Result<(), Error> {
        for input in inputs.iter_mut() {
            input.advance(at, &mut self.pool);
        }
        let sources: Vec<Option<&I420>> = inputs
            .iter()
            .filter(|i| i.present(at))
            .map(|i| i.picture.as_ref())
            .collect();
        let picture = self.compositor.compose(&sources, None);
        if self
            .last_keyframe
            .is_none_or(|k| at.saturating_sub(k) >= KEYFRAME_EVERY_MS)
        {
            self.encoder.force_keyframe();
        }
        // The 90 kHz timestamp only orders frames for the encoder's rate control; it wraps
        // after 13 hours, which libvpx takes as any other timestamp.
        let ts = (at * 90) as u32;
        match self.encoder.encode(picture, ts, &mut self.encoded) {
            Ok(Some(encoded)) => {
                if encoded.keyframe {
                    self.last_keyframe = Some(at);
                }
                file.frame(self.track, at, encoded.keyframe, &self.encoded)?;
                self.frames += 1;
            }
            Ok(None) => {}
            Err(e) => return Err(Error::Codec(e.to_string())),
        }
        Ok(())
    }
}

/// An Opus file decoded onto the session's sample clock.
struct AudioIn {
    path: PathBuf,
    reader: FileReader,
    track: u64,
    offset_ms: u64,
    decoder: OpusDecoder,
    next: Option<read::Frame>,
    /// Decoded samples, the first at session sample `start`.
    pcm: VecDeque<i16>,
    start: u64,
    decoded: Vec<i16>,
    frames: u64,
    undecodable: u64,
}

impl AudioIn {
    fn new(
        path: PathBuf,
        mut reader: FileReader,
        track: u64,
        offset_ms: u64,
    ) -> Result<AudioIn, Error> {
        let decoder = OpusDecoder::new().map_err(|e| Error::Codec(e.to_string()))?;
        let next = next_of(&mut reader, track);
        Ok(AudioIn {
            path,
            reader,
            track,
            offset_ms,
            decoder,
            next,
            pcm: VecDeque::new(),
            start: offset_ms * SAMPLES_PER_MS,
            decoded: vec![0; MAX_PACKET_SAMPLES],
            frames: 0,
            undecodable: 0,
        })
    }

    fn ended(&self) -> bool {
        self.next.is_none()
    }

    /// Session time where its decoded sound ends.
    fn end_ms(&self) -> u64 {
        (self.start + self.pcm.len() as u64) / SAMPLES_PER_MS
    }

    /// Decodes frames until its samples reach session sample `until` (or it ends).
    fn fill(&mut self, until: u64) {
        while self.start + (self.pcm.len() as u64) < until {
            let Some(frame) = self.next.take() else {
                return;
            };
            self.frames += 1;
            let at = (self.offset_ms + frame.at_ms) * SAMPLES_PER_MS;
            let end = self.start + self.pcm.len() as u64;
            // A gap before the frame (DTX while muted, a loss) is silence.
            if at > end {
                let gap = usize::try_from(at - end).unwrap_or(usize::MAX).min(1 << 26);
                self.pcm.extend(std::iter::repeat_n(0, gap));
            }
            match self.decoder.decode(&frame.data, &mut self.decoded) {
                Ok(n) => {
                    // A frame overlapping what is there (timestamps that stepped back) keeps
                    // only its new part.
                    let overlap = usize::try_from(end.saturating_sub(at)).unwrap_or(usize::MAX);
                    let fresh = self.decoded.get(overlap.min(n)..n).unwrap_or(&[]);
                    self.pcm.extend(fresh);
                }
                Err(_) => self.undecodable += 1,
            }
            self.next = next_of(&mut self.reader, self.track);
        }
    }

    /// Adds its samples for the frame starting at session sample `at` into `mix` (nothing
    /// where it has none), and drops them.
    fn mix_into(&mut self, at: u64, mix: &mut [i32]) {
        self.fill(at + mix.len() as u64);
        // Samples before `at` were mixed already (or belong before the output's start).
        let stale = usize::try_from(at.saturating_sub(self.start)).unwrap_or(usize::MAX);
        let stale = stale.min(self.pcm.len());
        self.pcm.drain(..stale);
        self.start += stale as u64;
        let skip = usize::try_from(self.start.saturating_sub(at)).unwrap_or(usize::MAX);
        let Some(room) = mix.get_mut(skip..) else {
            return;
        };
        let n = room.len().min(self.pcm.len());
        let (front, back) = self.pcm.as_slices();
        let from_front = n.min(front.len());
        mix_into(&mut room[..from_front], &front[..from_front]);
        mix_into(&mut room[from_front..n], &back[..n - from_front]);
        self.pcm.drain(..n);
        self.start += n as u64;
    }

    fn summary(&self) -> Input {
        Input {
            file: self.path.clone(),
            kind: "audio",
            offset_ms: self.offset_ms,
            frames: self.frames,
            undecodable: self.undecodable,
        }
    }
}

/// The output audio: the mix and its encoder.
struct Sound {
    track: usize,
    encoder: OpusEncoder,
    mix: Vec<i32>,
    pcm: Vec<i16>,
    packet: Vec<u8>,
    frames: u64,
}

impl Sound {
    fn new(config: &Config, track: usize) -> Result<Sound, Error> {
        let encoder =
            OpusEncoder::new(config.audio_bitrate, 0).map_err(|e| Error::Codec(e.to_string()))?;
        Ok(Sound {
            track,
            encoder,
            mix: vec![0; AUDIO_FRAME],
            pcm: vec![0; AUDIO_FRAME],
            packet: vec![0; MAX_ENCODED],
            frames: 0,
        })
    }

    /// Mixes, encodes and writes the 20 ms frame at session time `at`.
    fn frame(
        &mut self,
        at: u64,
        inputs: &mut [AudioIn],
        file: &mut Recording,
    ) -> Result<(), Error> {
        self.mix.fill(0);
        for input in inputs.iter_mut() {
            input.mix_into(at * SAMPLES_PER_MS + ENCODER_LOOKAHEAD, &mut self.mix);
        }
        saturate(&self.mix, &mut self.pcm);
        let n = self
            .encoder
            .encode(&self.pcm, &mut self.packet)
            .map_err(|e| Error::Codec(e.to_string()))?;
        file.frame(self.track, at, true, &self.packet[..n])?;
        self.frames += 1;
        Ok(())
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    /// The first sample louder than a quarter of full scale in an Opus file's sound, decoded
    /// as a player that ignores pre-skip would.
    fn onset(path: &Path) -> Option<usize> {
        let mut reader = Reader::open(path).unwrap();
        let mut decoder = OpusDecoder::new().unwrap();
        let mut pcm = vec![0; MAX_PACKET_SAMPLES];
        let mut sound = Vec::new();
        while let Some(frame) = reader.next_frame() {
            let n = decoder.decode(&frame.data, &mut pcm).unwrap();
            sound.extend_from_slice(&pcm[..n]);
        }
        sound.iter().position(|s| s.unsigned_abs() > 8_000)
    }

    /// The muxer adds no delay to the sound: a beep decodes at the same sample of the muxed
    /// file as of its input (whose own encoder's lookahead both keep). Without the muxer's
    /// lookahead fed ahead, it came 312 samples (6.5 ms) late, against the video.
    #[test]
    fn sound_keeps_its_time() {
        let dir = std::env::temp_dir().join(format!("sy-mux-time-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let track = Track {
            codec: Codec::Opus { channels: 1 },
            width: 0,
            height: 0,
        };
        let mut file =
            Recording::create(&dir.join("a.mka"), &[track], Some(SystemTime::now())).unwrap();
        let mut encoder = OpusEncoder::new(64_000, 0).unwrap();
        let mut packet = vec![0; MAX_ENCODED];
        // One second, silent but for a 1 kHz beep from 500 ms to 600 ms.
        for frame in 0..50u64 {
            let pcm: Vec<i16> = (0..AUDIO_FRAME as u64)
                .map(|i| {
                    let n = frame * AUDIO_FRAME as u64 + i;
                    let beep = (24_000..28_800).contains(&n);
                    let t = n as f64 / 48_000.0;
                    if beep {
                        ((t * 1000.0 * std::f64::consts::TAU).sin() * 20_000.0) as i16
                    } else {
                        0
                    }
                })
                .collect();
            let n = encoder.encode(&pcm, &mut packet).unwrap();
            file.frame(0, frame * AUDIO_FRAME_MS, true, &packet[..n])
                .unwrap();
        }
        let input = file.finish().unwrap();
        let muxed = mux(
            std::slice::from_ref(&input),
            &dir.join("m.mkv"),
            &Config::default(),
        )
        .unwrap();
        let (sent, muxed) = (onset(&input).unwrap(), onset(&muxed.path).unwrap());
        assert!(
            sent.abs_diff(muxed) <= 24,
            "the beep starts at sample {sent} of the input, {muxed} of the muxed file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
