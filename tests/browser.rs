//! Three headless Chromium pages in one channel through the SDK and the demo page: each
//! publishes the fake camera and microphone and must decode the other two, with VP8 and with
//! H264 forced, on both I/O backends.

use std::process::Command;

use switchyard_tests::server::Server;
use switchyard_tests::{browser_dir, last_json, netns};

fn three_pages(codec: &str, backend: &str) {
    netns::enter();
    let server = Server::start(&["--io-backend", backend]);
    let tokens: Vec<String> = (0..3)
        .map(|i| server.token("room", &format!("user{i}"), &[]))
        .collect();
    let out = Command::new("node")
        .current_dir(browser_dir())
        .arg("three_pages.mjs")
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg("room")
        .arg(codec)
        .args(&tokens)
        .output()
        .expect("run node (Node.js is needed for the browser tests)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result = last_json(&stdout)
        .unwrap_or_else(|| panic!("no JSON result from the browser script:\n{stdout}\n{stderr}"));
    assert_eq!(
        result["ok"], true,
        "not every page decoded every other page ({codec}, {backend}):\n{result:#}\n{stderr}"
    );
    for page in result["pages"].as_array().expect("pages") {
        let errors: Vec<&str> = page["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str())
            .collect();
        assert!(
            !errors.iter().any(|e| e.starts_with("pageerror")),
            "uncaught exception in a page: {errors:?}"
        );
    }
    let m = server.metrics();
    assert!(m["switchyard_rtp_forwarded_total"] > 100.0, "{m:?}");
    // The pages are gone: everything they had is cleaned up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let m = server.metrics();
        if m["switchyard_transports"] == 0.0 && m["switchyard_participants"] == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "state left behind after the pages closed: {m:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn vp8_uring() {
    three_pages("VP8", "uring");
}

#[test]
fn vp8_mmsg() {
    three_pages("VP8", "mmsg");
}

#[test]
fn h264_uring() {
    three_pages("H264", "uring");
}

#[test]
fn h264_mmsg() {
    three_pages("H264", "mmsg");
}
