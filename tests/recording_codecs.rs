//! Recording VP9 and AV1 without transcoding: headless Chromium publishes its fake camera in
//! a channel recorded through the all-in-one's admin API, with VP9 or AV1 (the SDK asks for
//! `L3T3_KEY` and `L1T3`; at 240 lines Chromium sends VP9 as `L1T3` too, at 540 as three
//! spatial layers, which the recorder joins into superframes); ffprobe finds a `.mkv` of that
//! codec at the size the browser sent, as long as it sent video (within 1 s), and ffmpeg
//! decodes it without an error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use switchyard_tests::recordings::{admin, finished};
use switchyard_tests::server::Server;
use switchyard_tests::{netns, run_pages};

/// How long the browser publishes.
const SECONDS: u64 = 6;

/// ffprobe's codec and duration (seconds) of a file's one stream, and the size of its last
/// decoded picture (a browser starts small and adds spatial layers as its estimate grows, so
/// the first keyframe, and the track's size, can be a lower layer's).
fn probe(path: &Path) -> (String, u64, u64, f64) {
    let frames = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "frame=width,height"])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe (scripts/test.sh installs ffmpeg)");
    let frames = String::from_utf8_lossy(&frames.stdout).into_owned();
    let last: Vec<u64> = frames
        .lines()
        .last()
        .unwrap_or_default()
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries"])
        .arg("stream=codec_name:format=duration")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe (scripts/test.sh installs ffmpeg)");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (
        v["streams"][0]["codec_name"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        last.first().copied().unwrap_or(0),
        last.get(1).copied().unwrap_or(0),
        duration,
    )
}

/// ffmpeg's errors decoding the whole file. The null output keeps the file's millisecond
/// timestamps (`-enc_time_base -1`): by default it takes 1/frame rate, and the fake camera's
/// capture times (20 fps, but two frames sometimes 40 ms apart) would land two frames in one
/// tick, which the null muxer reports as an error although every frame decoded.
fn decode_errors(path: &Path, decoder: &[&str]) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error"])
        .args(decoder)
        .arg("-i")
        .arg(path)
        .args(["-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Publishes `codec` from Chromium's `height`-line camera in a recorded channel and checks
/// the video file, decoded by ffmpeg with `decoder` (its options before `-i`); returns the
/// scalability mode Chromium sent.
fn records(codec: &str, probed_as: &str, height: u32, decoder: &[&str]) -> String {
    netns::enter();
    let server = Server::start_with_env(&[], &[("ADMIN__IPADDRESSES", "127.0.0.1/32")]);
    let on = admin(&server, "POST", "/channels/rec/recording", "");
    assert_eq!(on.status, 200, "{}", on.body);

    let args = [
        format!("http://127.0.0.1:{}", server.port),
        "rec".to_string(),
        server.token("rec", "publisher", &[]),
        codec.to_string(),
        SECONDS.to_string(),
        height.to_string(),
    ];
    let (result, stderr) = run_pages("codec_pages.mjs", &args, &[]);
    println!("{result}");
    assert_eq!(result["ok"], true, "{result:#}\n{stderr}");
    let sent = result["codec"].as_str().unwrap_or_default();
    assert!(
        sent.eq_ignore_ascii_case(&format!("video/{codec}")),
        "{result}"
    );

    let dir = server.data_dir.join("recordings").join("rec");
    let files = finished(&dir, 2, Duration::from_secs(10));
    let video: Vec<&PathBuf> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "mkv"))
        .collect();
    assert_eq!(video.len(), 1, "one video file: {files:?}");
    let (name, width, probed_height, duration) = probe(video[0]);
    println!(
        "{}: {name} {width}x{height} {duration} s",
        video[0].display()
    );
    assert_eq!(name, probed_as, "{files:?}");
    let sent_size = (result["width"].as_u64(), result["height"].as_u64());
    assert_eq!(
        (Some(width), Some(probed_height)),
        sent_size,
        "the top layer's size"
    );
    let published = result["published_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    assert!(
        (duration - published).abs() <= 1.0,
        "{duration} s recorded of {published} s published"
    );
    let errors = decode_errors(video[0], decoder);
    assert!(errors.is_empty(), "{errors}");
    result["scalability"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn vp9_is_recorded_as_vp9() {
    records("VP9", "vp9", 240, &[]);
}

/// Three spatial layers (270x135 to 960x540): each picture's layer frames become one
/// superframe, so the decoded pictures reach the top layer's size. Decoded by libvpx, which
/// shows one picture per superframe: Chromium marks the lower layers of its key pictures as
/// shown too, and ffmpeg's own VP9 decoder then outputs each of them at the picture's time,
/// which its null muxer reports as repeated timestamps (the frames still decode).
#[test]
fn vp9_spatial_layers_are_recorded_as_superframes() {
    let mode = records("VP9", "vp9", 540, &["-c:v", "libvpx-vp9"]);
    assert!(mode.starts_with("L3"), "Chromium sent {mode}");
}

#[test]
fn av1_is_recorded_as_av1() {
    records("AV1", "av1", 240, &[]);
}
