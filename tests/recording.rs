//! Recording through the all-in-one's admin API: an aiortc publisher (colour and tone, over
//! WHIP) in a recorded channel leaves one `.mkv` and one `.mka` per publication under
//! `<data-dir>/recordings/<channel>/`, with the codecs it sent (no transcoding) and its length,
//! checked by ffprobe and decoded without error by ffmpeg.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_tests::server::Server;
use switchyard_tests::{http, mix, netns};

/// The finished recordings in `dir` (no `.rec` left), once there are `count`.
fn finished(dir: &Path, count: usize) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        let active = files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "rec"));
        if (files.len() >= count && !active) || Instant::now() > deadline {
            let mut files = files;
            files.sort();
            return files;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// ffprobe's codec and duration (seconds) of a file's one stream.
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
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
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

#[test]
fn a_recorded_channel_leaves_a_file_per_track() {
    netns::enter();
    let server = Server::start_with_env(&[], &[("ADMIN__IPADDRESSES", "127.0.0.1/32")]);
    let key = std::fs::read_to_string(server.data_dir.join("admin-api-key")).unwrap();
    let admin = |method: &str| {
        let headers = [
            ("X-API-Key", key.trim()),
            ("Content-Type", "application/json"),
        ];
        let path = "/admin/api/v1/channels/rec/recording";
        http::request(9090, method, path, &headers, "").unwrap()
    };
    let on = admin("POST");
    assert_eq!(on.status, 200, "{}", on.body);

    let base = format!("http://127.0.0.1:{}", server.port);
    for codec in ["VP8", "H264"] {
        let token = server.token("rec", &format!("publisher-{codec}"), &[]);
        let result = mix::run(&base, "rec", &[token], "", 1, codec, 6);
        assert_eq!(result["ok"], true, "{result:#}");
    }
    let dir = server.data_dir.join("recordings").join("rec");
    let files = finished(&dir, 4);
    let probed: Vec<(String, f64)> = files.iter().map(|f| probe(f)).collect();
    println!("{files:?} {probed:?}");
    // Each file's extension and codec, in a fixed order.
    let mut kinds: Vec<(String, String)> = files
        .iter()
        .zip(&probed)
        .map(|(f, (codec, _))| {
            let extension = f.extension().and_then(|e| e.to_str()).unwrap_or("");
            (extension.to_string(), codec.clone())
        })
        .collect();
    kinds.sort();
    let expected = [
        ("mka", "opus"),
        ("mka", "opus"),
        ("mkv", "h264"),
        ("mkv", "vp8"),
    ]
    .map(|(e, c)| (e.to_string(), c.to_string()));
    assert_eq!(kinds, expected, "{files:?}\n{}", server.log_tail());
    for ((_, duration), file) in probed.iter().zip(&files) {
        // The publisher sends for 6 s (less the time its connection takes to start).
        assert!((4.0..=7.0).contains(duration), "{file:?}: {duration} s");
        let decoded = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(file)
            .args(["-f", "null", "-"])
            .output()
            .expect("run ffmpeg");
        let errors = String::from_utf8_lossy(&decoded.stderr);
        assert!(errors.trim().is_empty(), "{file:?}: {errors}");
    }

    let off = admin("DELETE");
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(admin("DELETE").status, 404, "not recorded any more");
}
