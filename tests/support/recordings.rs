//! What the recording tests share: the admin API call that turns recording on, waiting for a
//! channel's finished files and for its muxed session, and ffmpeg/ffprobe (oracles only) on the
//! files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::http;
use crate::server::Server;

/// `method` on the all-in-one's admin API at `/admin/api/v1{path}`, with its key.
pub fn admin(server: &Server, method: &str, path: &str, body: &str) -> http::Response {
    let key = std::fs::read_to_string(server.data_dir.join("admin-api-key"))
        .expect("the data directory's admin-api-key");
    let headers = [
        ("X-API-Key", key.trim()),
        ("Content-Type", "application/json"),
    ];
    let path = format!("/admin/api/v1{path}");
    http::request(9090, method, &path, &headers, body).expect("admin API request")
}

/// The media files in `dir` (the JSON logs left out), sorted.
pub fn media_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.retain(|f| f.extension().is_none_or(|e| e != "json"));
    files.sort();
    files
}

/// The finished recordings in `dir` (no `.rec` left) once there are `count`, or what is there
/// after `wait`.
pub fn finished(dir: &Path, count: usize, wait: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + wait;
    loop {
        let files = media_files(dir);
        let active = files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "rec"));
        if (files.len() >= count && !active) || Instant::now() > deadline {
            return files;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The JSON log lines of every publication in `dir` (`<publication>.json`, one entry a line).
pub fn log_entries(dir: &Path) -> Vec<serde_json::Value> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).expect("recording directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a log");
        for line in text.lines() {
            entries.push(serde_json::from_str(line).expect("a log line is JSON"));
        }
    }
    entries
}

/// The muxed session of `channel` under `recordings` once its JSON is there (the monitor
/// waits 5 s after a session's end, then muxes it): the JSON and the muxed file.
pub fn muxed_session(
    recordings: &Path,
    channel: &str,
    wait: Duration,
) -> (serde_json::Value, PathBuf) {
    let dir = recordings.join("sessions");
    let deadline = Instant::now() + wait;
    loop {
        let json = std::fs::read_dir(&dir).ok().and_then(|d| {
            d.filter_map(|e| Some(e.ok()?.path())).find(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                name.is_some_and(|n| n.starts_with(&format!("{channel}-")) && n.ends_with(".json"))
            })
        });
        if let Some(json) = json {
            let text = std::fs::read_to_string(&json).expect("read the session JSON");
            let v: serde_json::Value = serde_json::from_str(&text).expect("session JSON");
            return (v, json.with_extension("mkv"));
        }
        assert!(
            Instant::now() < deadline,
            "no muxed session of {channel} in {wait:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A file's (first audio stream's) sound as 48 kHz mono samples, decoded by ffmpeg and laid
/// on the file's timestamps: sample `n` is at `n / 48000` s, a gap between packets (Chromium's
/// audio may skip ahead) is silence, as the muxer makes it, rather than closed up.
pub fn sound(path: &Path) -> Vec<i16> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:a:0",
            "-af",
            "aresample=async=1:min_hard_comp=0.001:first_pts=0",
        ])
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("run ffmpeg");
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// ffmpeg's errors decoding the whole file (`ffmpeg -v error -i F -f null -`), and ffprobe's
/// last packet time (seconds).
pub fn decode(path: &Path) -> (String, f64) {
    let decoded = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let packets = Command::new("ffprobe")
        .args([
            "-v",
            "quiet",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let last = String::from_utf8_lossy(&packets.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .fold(0.0, f64::max);
    (String::from_utf8_lossy(&decoded.stderr).into_owned(), last)
}

/// ffprobe's codec names of a file's streams, in order, and its duration (seconds; 0 when it
/// has none).
pub fn probe(path: &Path) -> (Vec<String>, f64) {
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
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let codecs = v["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["codec_name"].as_str())
        .map(str::to_string)
        .collect();
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (codecs, duration)
}
