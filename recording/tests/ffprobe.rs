//! Files the Matroska writer makes from real VP8 and Opus (the codec crate's encoders), read by
//! ffprobe and decoded by ffmpeg (Debian's; `scripts/test.sh` installs it): the codec as sent,
//! the duration, and a copy cut mid-cluster (what `kill -9` leaves) that still decodes.

// ok: test code; every unwrap()/expect() is on what the test made
use std::path::{Path, PathBuf};
use std::process::Command;

use switchyard_codec::audio::OpusEncoder;
use switchyard_codec::video::{self, EncoderConfig, VideoCodec};
use switchyard_codec::{I420, Yuv};
use switchyard_recording::h264;
use switchyard_recording::mkv::{Codec, Ending, Track, Writer};

/// A fresh directory for one test's files, removed when it is dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("sy-rec-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a file the way a recorder does: header and clusters as they come, then the end.
/// Returns the whole file and what had been written before the end (a crash's leftovers).
fn write(path: &Path, track: &Track, frames: &[(u64, bool, Vec<u8>)]) -> Vec<u8> {
    let mut w = Writer::new(track);
    let mut bytes = w.take();
    for (at, key, data) in frames {
        w.frame(*at, *key, data).unwrap();
        bytes.extend(w.take());
    }
    let cut = bytes.clone();
    let Ending { append, overwrite } = w.finish();
    bytes.extend(append);
    for (at, patch) in overwrite {
        let at = at as usize;
        bytes[at..at + patch.len()].copy_from_slice(&patch);
    }
    std::fs::write(path, &bytes).unwrap();
    cut
}

/// ffprobe's codec name and duration (seconds) of the file's one stream.
fn probe(path: &Path) -> (String, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name:format=duration",
        ])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe (scripts/test.sh installs ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codec = v["streams"][0]["codec_name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (codec, duration)
}

/// Decodes the whole file with ffmpeg: its errors, and the seconds of media decoded.
fn decode(path: &Path) -> (String, f64) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .fold(0.0, f64::max);
    (errors, last)
}

/// 6 s of 320x180 video at 30 fps (a moving bar), a keyframe every 2 s, as a browser's RTP
/// timestamps would give them (starting far from 0). H264 comes out in Annex B form.
fn frames(codec: VideoCodec) -> Vec<(u64, bool, Vec<u8>)> {
    let config = EncoderConfig {
        codec,
        width: 320,
        height: 180,
        bitrate_bps: 300_000,
        fps: 30,
    };
    let mut encoder = video::encoder(&config).unwrap();
    let mut frames = Vec::new();
    for i in 0..180u32 {
        let mut picture = I420::new(320, 180).unwrap();
        picture.fill_rect(0, 0, 320, 180, Yuv::from_rgb(0, 0, 160));
        picture.fill_rect((i * 4) % 300, 60, 20, 60, Yuv::from_rgb(255, 255, 0));
        if i % 60 == 0 {
            encoder.force_keyframe();
        }
        let mut out = Vec::new();
        if let Some(e) = encoder.encode(&picture, i * 3000, &mut out).unwrap() {
            frames.push((90_000 + u64::from(i) * 100 / 3, e.keyframe, out));
        }
    }
    frames
}

#[test]
fn vp8_reads_back_whole_and_cut() {
    let dir = Dir::new("vp8");
    let path = dir.join("video.mkv");
    let track = Track {
        codec: Codec::Vp8,
        width: 320,
        height: 180,
    };
    let cut = write(&path, &track, &frames(VideoCodec::Vp8));
    let (codec, duration) = probe(&path);
    assert_eq!(codec, "vp8");
    assert!((5.8..=6.1).contains(&duration), "{duration}");
    let (errors, decoded) = decode(&path);
    assert!(errors.is_empty(), "{errors}");
    assert!(decoded > 5.8, "{decoded}");

    // A crash: what was written before the end, cut again mid-way through its last cluster.
    let crashed = dir.join("video.mkv.rec");
    std::fs::write(&crashed, &cut[..cut.len() - 700]).unwrap();
    let (errors, decoded) = decode(&crashed);
    assert!(
        !errors.contains("Invalid data") && !errors.contains("corrupt"),
        "{errors}"
    );
    assert!(decoded >= 4.0, "{decoded}");
}

#[test]
fn opus_reads_back() {
    let dir = Dir::new("opus");
    let path = dir.join("audio.mka");
    let mut encoder = OpusEncoder::new(32_000, 0).unwrap();
    let mut frames = Vec::new();
    for i in 0..250u64 {
        let pcm: Vec<i16> = (0..960)
            .map(|n| {
                let t = (i * 960 + n) as f64 / 48_000.0;
                (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect();
        let mut out = [0u8; 1500];
        let len = encoder.encode(&pcm, &mut out).unwrap();
        frames.push((7_000 + i * 20, true, out[..len].to_vec()));
    }
    let track = Track {
        codec: Codec::Opus { channels: 1 },
        width: 0,
        height: 0,
    };
    write(&path, &track, &frames);
    let (codec, duration) = probe(&path);
    assert_eq!(codec, "opus");
    assert!((4.9..=5.1).contains(&duration), "{duration}");
    let (errors, _) = decode(&path);
    assert!(errors.is_empty(), "{errors}");
}

/// H264 as AVCC with the first keyframe's SPS and PPS as its `avcC`.
#[test]
fn h264_reads_back() {
    let dir = Dir::new("h264");
    let path = dir.join("h264.mkv");
    let mut avcc = None;
    let frames: Vec<(u64, bool, Vec<u8>)> = frames(VideoCodec::H264)
        .into_iter()
        .map(|(at, key, annex_b)| {
            let mut out = Vec::new();
            if let (Some(sps), Some(pps)) = h264::to_avcc(&annex_b, &mut out)
                && avcc.is_none()
            {
                avcc = h264::avcc_record(sps, pps);
            }
            (at, key, out)
        })
        .collect();
    let track = Track {
        codec: Codec::H264 {
            avcc: avcc.expect("a keyframe with SPS and PPS"),
        },
        width: 320,
        height: 180,
    };
    write(&path, &track, &frames);
    let (codec, duration) = probe(&path);
    assert_eq!(codec, "h264");
    assert!((5.8..=6.1).contains(&duration), "{duration}");
    let (errors, decoded) = decode(&path);
    assert!(errors.is_empty(), "{errors}");
    assert!(decoded > 5.8, "{decoded}");
}
