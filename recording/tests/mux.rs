//! The muxer on real VP8 and Opus files (the codec crate's encoders), two participants joining
//! at different times, one muted for a while; ffmpeg decodes the result and samples its
//! pictures and sound.

// ok: test code; every unwrap()/expect() is on what the test made
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use switchyard_codec::audio::OpusEncoder;
use switchyard_codec::video::{self, EncoderConfig, VideoCodec};
use switchyard_codec::{I420, Layout, Yuv};
use switchyard_recording::file::Recording;
use switchyard_recording::mkv::{Codec, Track};
use switchyard_recording::mux::{self, Config};

mod common;
use common::{Dir, decode, ffprobe};

/// A participant's video file: `seconds` of one colour at 15 fps, starting at `origin`.
fn video_file(path: &Path, origin: SystemTime, seconds: u64, rgb: (u8, u8, u8)) {
    let (width, height) = (160, 90);
    let mut encoder = video::encoder(&EncoderConfig {
        codec: VideoCodec::Vp8,
        width,
        height,
        bitrate_bps: 200_000,
        fps: 15,
    })
    .unwrap();
    let track = Track {
        codec: Codec::Vp8,
        width,
        height,
    };
    let mut file = Recording::create(path, &[track], Some(origin)).unwrap();
    let mut picture = I420::new(width, height).unwrap();
    picture.fill(Yuv::from_rgb(rgb.0, rgb.1, rgb.2));
    let mut out = Vec::new();
    for i in 0..seconds * 15 {
        if let Some(e) = encoder
            .encode(&picture, (i * 6000) as u32, &mut out)
            .unwrap()
        {
            file.frame(0, i * 1000 / 15, e.keyframe, &out).unwrap();
        }
    }
    file.finish().unwrap();
}

/// A participant's Opus file: a tone of `hz` from `origin` for `seconds`, with no frames
/// (muted, DTX) from `mute.0` to `mute.1` ms.
fn audio_file(path: &Path, origin: SystemTime, seconds: u64, hz: f64, mute: (u64, u64)) {
    let mut encoder = OpusEncoder::new(32_000, 0).unwrap();
    let track = Track {
        codec: Codec::Opus { channels: 1 },
        width: 0,
        height: 0,
    };
    let mut file = Recording::create(path, &[track], Some(origin)).unwrap();
    let mut packet = vec![0; 1500];
    for frame in 0..seconds * 50 {
        let at = frame * 20;
        let pcm: Vec<i16> = (0..960)
            .map(|i| {
                let t = (frame * 960 + i) as f64 / 48_000.0;
                ((t * hz * std::f64::consts::TAU).sin() * 8000.0) as i16
            })
            .collect();
        let n = encoder.encode(&pcm, &mut packet).unwrap();
        if !(mute.0..mute.1).contains(&at) {
            file.frame(0, at, true, &packet[..n]).unwrap();
        }
    }
    file.finish().unwrap();
}

/// The picture at `seconds` as RGB, `width` x `height`.
fn picture_at(path: &Path, seconds: f64) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &seconds.to_string(), "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn rgb_at(picture: &[u8], width: usize, x: usize, y: usize) -> (u8, u8, u8) {
    let i = (y * width + x) * 3;
    (picture[i], picture[i + 1], picture[i + 2])
}

fn is(colour: (u8, u8, u8), want: (u8, u8, u8)) -> bool {
    let d = |a: u8, b: u8| (i32::from(a) - i32::from(b)).abs();
    d(colour.0, want.0) < 40 && d(colour.1, want.1) < 40 && d(colour.2, want.2) < 40
}

/// The sound, 48 kHz mono s16.
fn sound(path: &Path) -> Vec<i16> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn rms(pcm: &[i16], from_ms: usize, to_ms: usize) -> f64 {
    let part = &pcm[from_ms * 48..to_ms * 48];
    (part.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / part.len() as f64).sqrt()
}

/// Alice is there from 0 to 3 s (red; her sound until 1.5 s), Bob from 1 s (blue; his sound
/// from 1 s, muted from 2.0 to 2.5 s). The session is 3 s long: Alice alone on the whole
/// canvas, then both side by side; sound where someone spoke, silence where Bob was muted.
#[test]
fn two_participants_joining_at_different_times() {
    let dir = Dir::new("mux");
    let t0 = SystemTime::now();
    let t1 = t0 + Duration::from_secs(1);
    let files: Vec<PathBuf> = ["alice.mkv", "alice.mka", "bob.mkv", "bob.mka"]
        .iter()
        .map(|n| dir.join(n))
        .collect();
    video_file(&files[0], t0, 3, (220, 30, 30));
    audio_file(&files[1], t0, 1, 440.0, (0, 0));
    // Alice's sound goes on to 1.5 s: a second file (she unmuted, say) from 1.0 s.
    let more = dir.join("alice-2.mka");
    audio_file(
        &more,
        t0 + Duration::from_millis(1000),
        1,
        440.0,
        (500, 1000),
    );
    video_file(&files[2], t1, 2, (30, 30, 220));
    audio_file(&files[3], t1, 2, 880.0, (1000, 1500));
    let mut inputs = files.clone();
    inputs.push(more);

    let config = Config {
        layout: Layout::Grid,
        width: 320,
        height: 180,
        fps: 15,
        video_bitrate: 300_000,
        audio_bitrate: 32_000,
    };
    let out = dir.join("session.mkv");
    let muxed = mux::mux(&inputs, &out, &config).unwrap();
    assert_eq!(muxed.path, out);
    assert!(!dir.join("session.mkv.rec").exists());
    let offsets: Vec<(String, &str, u64)> = muxed
        .inputs
        .iter()
        .map(|i| {
            let name = i.file.file_name().unwrap().to_string_lossy().into_owned();
            (name, i.kind, i.offset_ms)
        })
        .collect();
    assert!(
        offsets.contains(&("bob.mkv".into(), "video", 1000)),
        "{offsets:?}"
    );
    assert!(
        offsets.contains(&("alice.mka".into(), "audio", 0)),
        "{offsets:?}"
    );
    assert!(muxed.inputs.iter().all(|i| i.undecodable == 0), "{muxed:?}");

    let probe = ffprobe(&out);
    let codecs: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap())
        .collect();
    assert_eq!(codecs, ["vp8", "opus"]);
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((2.9..=3.1).contains(&duration), "duration {duration}");
    let (errors, _) = decode(&out);
    assert!(errors.is_empty(), "{errors}");

    let (red, blue) = ((220, 30, 30), (30, 30, 220));
    let alone = picture_at(&out, 0.5);
    assert!(is(rgb_at(&alone, 320, 40, 90), red));
    assert!(is(rgb_at(&alone, 320, 280, 90), red));
    let both = picture_at(&out, 2.0);
    assert!(
        is(rgb_at(&both, 320, 80, 90), red),
        "{:?}",
        rgb_at(&both, 320, 80, 90)
    );
    assert!(
        is(rgb_at(&both, 320, 240, 90), blue),
        "{:?}",
        rgb_at(&both, 320, 240, 90)
    );

    let pcm = sound(&out);
    let seconds = pcm.len() as f64 / 48_000.0;
    assert!((2.9..=3.1).contains(&seconds), "{seconds} s of sound");
    for (from, to) in [(100, 900), (1100, 1400), (2600, 2900)] {
        assert!(rms(&pcm, from, to) > 1000.0, "sound at {from}-{to} ms");
    }
    // Alice stopped at 1.5 s; Bob muted from 2.0 to 2.5 s.
    assert!(rms(&pcm, 2100, 2400) < 100.0, "silence while muted");
}

/// Four participants joining half a second apart: at each instant the grid has one tile per
/// participant present, in the order they joined, each in its colour.
#[test]
fn four_participants_fill_the_grid_as_they_join() {
    let dir = Dir::new("mux4");
    let t0 = SystemTime::now();
    let colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30)];
    let files: Vec<PathBuf> = colours
        .iter()
        .enumerate()
        .map(|(i, &rgb)| {
            let path = dir.join(&format!("p{i}.mkv"));
            let joined = t0 + Duration::from_millis(500 * i as u64);
            video_file(&path, joined, 3 - i as u64 / 2, rgb);
            path
        })
        .collect();
    let config = Config {
        layout: Layout::Grid,
        width: 320,
        height: 180,
        fps: 15,
        video_bitrate: 300_000,
        audio_bitrate: 32_000,
    };
    let out = dir.join("session.mkv");
    mux::mux(&files, &out, &config).unwrap();
    let (errors, _) = decode(&out);
    assert!(errors.is_empty(), "{errors}");
    // One tile: the whole canvas.
    let one = picture_at(&out, 0.25);
    assert!(is(rgb_at(&one, 320, 160, 90), colours[0]));
    // Two: side by side.
    let two = picture_at(&out, 0.75);
    assert!(is(rgb_at(&two, 320, 80, 90), colours[0]));
    assert!(is(rgb_at(&two, 320, 240, 90), colours[1]));
    // Four: a 2x2 grid, in the order they joined.
    let four = picture_at(&out, 1.75);
    for (i, (x, y)) in [(80, 45), (240, 45), (80, 135), (240, 135)]
        .iter()
        .enumerate()
    {
        let got = rgb_at(&four, 320, *x, *y);
        assert!(is(got, colours[i]), "tile {i}: {got:?}");
    }
}

/// A participant's VP9 file: `seconds` of one colour at 15 fps from Debian's ffmpeg
/// (libvpx-vp9), starting at `origin`. (ffmpeg makes no spatial layers; the codec crate's
/// libvpx tests decode those superframes.)
fn vp9_file(dir: &Dir, path: &Path, origin: SystemTime, seconds: u64, rgb: (u8, u8, u8)) {
    let ivf = dir.join("vp9.ivf");
    let colour = format!(
        "color=c=0x{:02x}{:02x}{:02x}:size=160x90:rate=15:duration={seconds}",
        rgb.0, rgb.1, rgb.2
    );
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &colour])
        .args([
            "-c:v",
            "libvpx-vp9",
            "-b:v",
            "200k",
            "-g",
            "30",
            "-f",
            "ivf",
        ])
        .arg(&ivf)
        .status()
        .expect("run ffmpeg (scripts/test.sh installs it)");
    assert!(status.success());
    let bytes = std::fs::read(&ivf).unwrap();
    let header = usize::from(u16::from_le_bytes([bytes[6], bytes[7]]));
    let track = Track {
        codec: Codec::Vp9,
        width: 160,
        height: 90,
    };
    let mut file = Recording::create(path, &[track], Some(origin)).unwrap();
    let mut rest = &bytes[header..];
    while rest.len() >= 12 {
        let size = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let pts = u64::from_le_bytes(rest[4..12].try_into().unwrap());
        let frame = &rest[12..12 + size];
        // Profile 0: show_existing_frame is bit 3 of the first byte, frame_type (0: key) bit 2.
        let keyframe = frame[0] & 0x0C == 0;
        // The IVF time base is ffmpeg's 1/15 s here.
        file.frame(0, pts * 1000 / 15, keyframe, frame).unwrap();
        rest = &rest[12 + size..];
    }
    file.finish().unwrap();
}

/// A VP9 participant (green, from 0 s) and a VP8 one (red, from 1 s): both are decoded and
/// composed, side by side once both are there.
#[test]
fn vp9_and_vp8_participants_share_the_grid() {
    let dir = Dir::new("mux-vp9");
    let t0 = SystemTime::now();
    let (green, red) = ((30, 200, 30), (220, 30, 30));
    let files = [dir.join("vp9.mkv"), dir.join("vp8.mkv")];
    vp9_file(&dir, &files[0], t0, 3, green);
    video_file(&files[1], t0 + Duration::from_secs(1), 2, red);

    let config = Config {
        layout: Layout::Grid,
        width: 320,
        height: 180,
        fps: 15,
        video_bitrate: 300_000,
        audio_bitrate: 32_000,
    };
    let out = dir.join("session.mkv");
    let muxed = mux::mux(&files, &out, &config).unwrap();
    let kinds: Vec<(&str, u64)> = muxed.inputs.iter().map(|i| (i.kind, i.frames)).collect();
    assert_eq!(kinds, [("video", 45), ("video", 30)], "{muxed:?}");
    assert!(muxed.inputs.iter().all(|i| i.undecodable == 0), "{muxed:?}");
    let (errors, _) = decode(&out);
    assert!(errors.is_empty(), "{errors}");

    let alone = picture_at(&out, 0.5);
    let got = rgb_at(&alone, 320, 160, 90);
    assert!(is(got, green), "VP9 alone: {got:?}");
    let both = picture_at(&out, 2.0);
    let (left, right) = (rgb_at(&both, 320, 80, 90), rgb_at(&both, 320, 240, 90));
    assert!(is(left, green), "VP9 tile: {left:?}");
    assert!(is(right, red), "VP8 tile: {right:?}");
}
