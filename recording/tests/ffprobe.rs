//! Files the Matroska writer makes from real VP8 and Opus (the codec crate's encoders), read by
//! ffprobe and decoded by ffmpeg (Debian's; `scripts/test.sh` installs it): the codec as sent,
//! the duration, and a copy cut mid-cluster (what `kill -9` leaves) that still decodes.

// ok: test code; every unwrap()/expect() is on what the test made
use std::path::Path;

use switchyard_codec::audio::OpusEncoder;
use switchyard_codec::h264::H264Packetizer;
use switchyard_codec::opus::OpusPacketizer;
use switchyard_codec::video::{self, EncoderConfig, VideoCodec};
use switchyard_codec::vp8::Vp8Packetizer;
use switchyard_codec::{I420, Packetizer, Payloads, Yuv};
use switchyard_recording::h264;
use switchyard_recording::mkv::{Codec, Ending, Track, Writer};
use switchyard_recording::track::{Media, TrackRecorder};

mod common;
use common::{Dir, decode, ffprobe};

/// Writes a file the way a recorder does: header and clusters as they come, then the end.
/// Returns the whole file and what had been written before the end (a crash's leftovers).
fn write(path: &Path, track: &Track, frames: &[(u64, bool, Vec<u8>)]) -> Vec<u8> {
    let mut w = Writer::new(std::slice::from_ref(track), None);
    let mut bytes = w.take();
    for (at, key, data) in frames {
        w.frame(0, *at, *key, data).unwrap();
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
    let v = ffprobe(path);
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

/// ffprobe's picture size of the file's one stream.
fn size(path: &Path) -> (u64, u64) {
    let v = ffprobe(path);
    let s = &v["streams"][0];
    (
        s["width"].as_u64().unwrap_or(0),
        s["height"].as_u64().unwrap_or(0),
    )
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

/// RTP of `frames` (RTP timestamp, frame) through `packetizer`, sequence numbers from 65000
/// (so they wrap), less the packets of the frames in `lost`, into a track recorder.
fn record(
    media: Media,
    path: &Path,
    frames: &[(u32, Vec<u8>)],
    packetizer: &mut dyn Packetizer,
    lost: &[usize],
) -> (TrackRecorder, Vec<bool>) {
    let mut recorder = TrackRecorder::new(media, path);
    let mut payloads = Payloads::new();
    let mut seq = 65_000u16;
    let mut wanted = Vec::new();
    for (i, (ts, frame)) in frames.iter().enumerate() {
        packetizer.packetize(frame, 1100, &mut payloads).unwrap();
        let last = payloads.len() - 1;
        for (j, payload) in payloads.iter().enumerate() {
            seq = seq.wrapping_add(1);
            if !lost.contains(&i) {
                recorder.push(seq, *ts, j == last, payload).unwrap();
            }
        }
        wanted.push(recorder.keyframe_wanted());
    }
    (recorder, wanted)
}

/// VP8 and H264 RTP become files of the codec as sent, at the camera's size and length; a
/// lost frame has the recorder ask for a keyframe and drop what cannot decode until it comes,
/// so the file decodes without an error.
#[test]
fn rtp_of_each_codec_becomes_its_file() {
    let dir = Dir::new("rtp");
    for (codec, media, name) in [
        (VideoCodec::Vp8, Media::Vp8, "vp8"),
        (VideoCodec::H264, Media::H264, "h264"),
    ] {
        let frames: Vec<(u32, Vec<u8>)> = frames(codec)
            .into_iter()
            .map(|(at, _, data)| (((at - 90_000) * 90) as u32, data))
            .collect();
        let mut packetizer: Box<dyn Packetizer> = match media {
            Media::Vp8 => Box::new(Vp8Packetizer::new(7)),
            _ => Box::new(H264Packetizer),
        };
        let path = dir.join(&format!("{name}.mkv"));
        let (recorder, wanted) = record(media, &path, &frames, packetizer.as_mut(), &[70]);
        assert!(!wanted[0], "{name}: started on the first keyframe");
        assert!(wanted[71] && !wanted[120], "{name}: {wanted:?}");
        let summary = recorder.finish().unwrap();
        assert_eq!(summary.path.as_deref(), Some(path.as_path()));
        // Frames 71-119 wait for the keyframe at 120 (a sender answers the PLI the caller
        // sends for `keyframe_wanted` sooner).
        assert_eq!(summary.frames, 130, "{summary:?}");
        let (probed, duration) = probe(&path);
        assert_eq!(probed, name);
        assert_eq!(size(&path), (320, 180));
        assert!((5.8..=6.1).contains(&duration), "{name}: {duration}");
        let (errors, _) = decode(&path);
        assert!(errors.is_empty(), "{name}: {errors}");
    }

    // Opus: every packet a frame, 20 ms apart on the 48 kHz clock.
    let mut encoder = OpusEncoder::new(32_000, 0).unwrap();
    let frames: Vec<(u32, Vec<u8>)> = (0..100u32)
        .map(|i| {
            let mut out = [0u8; 1500];
            let len = encoder.encode(&[0i16; 960], &mut out).unwrap();
            (
                (u32::MAX - 20_000).wrapping_add(i * 960),
                out[..len].to_vec(),
            )
        })
        .collect();
    let path = dir.join("opus.mka");
    let media = Media::Opus { channels: 2 };
    let (recorder, _) = record(media, &path, &frames, &mut OpusPacketizer, &[]);
    let summary = recorder.finish().unwrap();
    assert_eq!(summary.frames, 100);
    let (probed, duration) = probe(&path);
    assert_eq!(probed, "opus");
    assert!((1.9..=2.1).contains(&duration), "{duration}");
}

/// A track that never sends a frame it can start on leaves no file.
#[test]
fn no_keyframe_no_file() {
    let dir = Dir::new("nokey");
    let path = dir.join("none.mkv");
    let mut recorder = TrackRecorder::new(Media::Vp8, &path);
    // A VP8 inter frame (P bit set) in one packet.
    recorder
        .push(1, 3000, true, &[0x10, 0x01, 0x02, 0x03])
        .unwrap();
    assert!(recorder.keyframe_wanted());
    let summary = recorder.finish().unwrap();
    assert_eq!(summary.path, None);
    assert!(!path.exists() && !dir.join("none.mkv.rec").exists());
}
