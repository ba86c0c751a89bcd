//! VP9 and AV1 RTP (from real encoders: Debian's ffmpeg with libvpx-vp9 and libaom-av1,
//! packetized by the codec crate) through a track recorder: the files probe as the codec sent,
//! at the encoded size and length, and decode without an error, a lost packet included (the
//! recorder asks for a keyframe and drops what cannot decode until it comes).

// ok: test code; every unwrap()/expect() is on what the test made
use std::path::Path;
use std::process::Command;

use switchyard_codec::av1::Av1Packetizer;
use switchyard_codec::vp9::Vp9Packetizer;
use switchyard_codec::{Packetizer, Payloads};
use switchyard_recording::read::Reader;
use switchyard_recording::track::{Media, TrackRecorder};

mod common;
use common::{Dir, decode, ffprobe};

/// Encodes 6 s of ffmpeg's test pattern at 320x240, 30 fps, a keyframe every 2 s, with
/// `encoder` and its `options`, into IVF; returns its frames (one per IVF frame: a VP9 frame
/// or superframe, an AV1 temporal unit) with their 90 kHz RTP timestamps.
fn encode(dir: &Dir, encoder: &str, options: &[&str]) -> Vec<(u32, Vec<u8>)> {
    let ivf = dir.join(&format!("{encoder}.ivf"));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=30:duration=6")
        .args([
            "-c:v",
            encoder,
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-b:v",
            "300k",
        ])
        .args(options)
        .args(["-f", "ivf"])
        .arg(&ivf)
        .status()
        .expect("run ffmpeg (scripts/test.sh installs it)");
    assert!(status.success(), "{encoder}");
    let bytes = std::fs::read(&ivf).unwrap();
    let header = usize::from(u16::from_le_bytes([bytes[6], bytes[7]]));
    let (rate, scale) = (
        u64::from(u32::from_le_bytes(bytes[16..20].try_into().unwrap())),
        u64::from(u32::from_le_bytes(bytes[20..24].try_into().unwrap())),
    );
    let mut frames = Vec::new();
    let mut rest = &bytes[header..];
    while rest.len() >= 12 {
        let size = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let pts = u64::from_le_bytes(rest[4..12].try_into().unwrap());
        let ticks = pts * scale * 90_000 / rate;
        // Far from 0, as a browser's random start would be.
        frames.push((
            0xFFF0_0000u32.wrapping_add(ticks as u32),
            rest[12..12 + size].to_vec(),
        ));
        rest = &rest[12 + size..];
    }
    assert!(frames.len() > 150, "{encoder}: {} frames", frames.len());
    frames
}

/// Packetizes `frames` (MTU 1100, sequence numbers wrapping) into a recorder for `media`,
/// dropping the first packet of frame `lose`; returns the recorder and whether it wanted a
/// keyframe once the next frame's first packet showed the gap.
fn record(
    media: Media,
    path: &Path,
    frames: &[(u32, Vec<u8>)],
    packetizer: &mut dyn Packetizer,
    lose: usize,
) -> (TrackRecorder, bool) {
    let mut recorder = TrackRecorder::new(media, path);
    let mut payloads = Payloads::new();
    let mut seq = 65_000u16;
    let mut wanted_after_loss = false;
    for (i, (ts, frame)) in frames.iter().enumerate() {
        packetizer.packetize(frame, 1100, &mut payloads).unwrap();
        let last = payloads.len() - 1;
        for (j, payload) in payloads.iter().enumerate() {
            seq = seq.wrapping_add(1);
            if i == lose && j == 0 {
                continue;
            }
            recorder.push(seq, *ts, j == last, payload).unwrap();
        }
        if i == lose + 1 {
            wanted_after_loss = recorder.keyframe_wanted();
        }
    }
    (recorder, wanted_after_loss)
}

fn check(media: Media, name: &str, frames: &[(u32, Vec<u8>)], packetizer: &mut dyn Packetizer) {
    let dir = Dir::new(&format!("codec-{name}"));
    let path = dir.join(&format!("{name}.mkv"));
    let (recorder, wanted) = record(media, &path, frames, packetizer, 70);
    assert!(wanted, "{name}: a loss asks for a keyframe");
    let summary = recorder.finish().unwrap();
    assert_eq!(summary.path.as_deref(), Some(path.as_path()));
    // Frames 70-119 wait for the keyframe at 120.
    assert_eq!(
        summary.frames,
        frames.len() as u64 - 50,
        "{name}: {summary:?}"
    );
    let v = ffprobe(&path);
    let stream = &v["streams"][0];
    assert_eq!(stream["codec_name"], name, "{v}");
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(320), Some(240))
    );
    let duration: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((5.8..=6.1).contains(&duration), "{name}: {duration}");
    let (errors, decoded) = decode(&path);
    assert!(errors.is_empty(), "{name}: {errors}");
    assert!(decoded > 5.8, "{name}: {decoded}");
    // Our reader takes it back, the codec and its private data with it.
    let reader = Reader::open(&path).unwrap();
    assert_eq!(reader.tracks.len(), 1);
    assert!(reader.tracks[0].codec.is_some(), "{name}");
}

#[test]
fn vp9_rtp_becomes_a_vp9_file() {
    let dir = Dir::new("vp9-encode");
    // Real-time: one frame per picture.
    let frames = encode(
        &dir,
        "libvpx-vp9",
        &["-deadline", "realtime", "-cpu-used", "8"],
    );
    check(Media::Vp9, "vp9", &frames, &mut Vp9Packetizer::new(3));
}

#[test]
fn av1_rtp_becomes_an_av1_file() {
    let dir = Dir::new("av1-encode");
    let options = [
        "-usage",
        "realtime",
        "-cpu-used",
        "8",
        "-lag-in-frames",
        "0",
    ];
    let frames = encode(&dir, "libaom-av1", &options);
    check(Media::Av1, "av1", &frames, &mut Av1Packetizer::default());
}
