//! An independent WebRTC stack: aiortc publishes over WHIP and another aiortc client plays
//! over WHEP; and the HTTP errors WHIP/WHEP clients get.

use std::process::Command;

use switchyard_tests::server::Server;
use switchyard_tests::{http, netns, python, repo, script_result};

fn aiortc(server: &Server, codec: &str, seconds: u32) -> serde_json::Value {
    let publish = server.token("live", "encoder", &[]);
    let play = server.token("live", "viewer", &["--no-publish"]);
    let out = Command::new(python())
        .arg(repo().join("tests/aiortc/whip_whep.py"))
        .arg(format!("http://127.0.0.1:{}", server.port))
        .args([
            "live",
            &publish,
            &play,
            "--seconds",
            &seconds.to_string(),
            "--codec",
            codec,
        ])
        .output()
        .expect("run the aiortc script");
    script_result(&out, "aiortc")
}

fn check(result: &serde_json::Value) {
    assert_eq!(result["ok"], true, "{result:#}");
    assert!(
        result["video_frames"].as_u64().unwrap_or(0) >= 60,
        "too few frames decoded: {result:#}"
    );
    assert!(
        result["audio_frames"].as_u64().unwrap_or(0) >= 100,
        "too little audio: {result:#}"
    );
    assert_eq!(result["whep_delete"], 200, "{result:#}");
    assert_eq!(result["whip_delete"], 200, "{result:#}");
}

#[test]
fn aiortc_vp8_over_whip_and_whep() {
    netns::enter();
    let server = Server::start(&[]);
    check(&aiortc(&server, "VP8", 8));
    assert_eq!(
        server.metrics()["switchyard_participants"],
        0.0,
        "DELETE left participants behind"
    );
}

#[test]
fn aiortc_h264_over_whip_and_whep() {
    netns::enter();
    let server = Server::start(&["--io-backend", "mmsg"]);
    check(&aiortc(&server, "H264", 8));
}

fn post(
    port: u16,
    path: &str,
    auth: Option<&str>,
    content_type: &str,
    body: &str,
) -> http::Response {
    let auth = auth.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", content_type)];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    http::request(port, "POST", path, &headers, body).expect("POST")
}

#[test]
fn whip_and_whep_errors_say_why() {
    netns::enter();
    let server = Server::start(&[]);
    let token = server.token("live", "u", &[]);
    let sdp = "application/sdp";

    let r = post(server.port, "/whip/live", None, sdp, "v=0");
    assert_eq!(
        (r.status, r.header("WWW-Authenticate")),
        (401, Some("Bearer"))
    );
    assert!(r.body.contains("Authorization"), "{}", r.body);

    // Signed with another secret.
    let forged = Command::new(switchyard_tests::binary())
        .args([
            "token",
            "--channel",
            "live",
            "--application",
            "dev",
            "--secret",
            "guessed",
        ])
        .output()
        .unwrap();
    let forged = String::from_utf8(forged.stdout).unwrap();
    let r = post(server.port, "/whip/live", Some(forged.trim()), sdp, "v=0");
    assert_eq!(r.status, 401);
    assert!(r.body.contains("bad token signature"), "{}", r.body);

    let expired = server.token("live", "u", &["--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(7500));
    let r = post(server.port, "/whip/live", Some(&expired), sdp, "v=0");
    assert_eq!(r.status, 401);
    assert!(r.body.contains("expired"), "{}", r.body);

    let r = post(server.port, "/whip/live", Some(&token), "text/plain", "v=0");
    assert_eq!(r.status, 415);

    for garbage in [
        "hello",
        "v=0\r\nm=video\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
    ] {
        let r = post(server.port, "/whip/live", Some(&token), sdp, garbage);
        assert_eq!(r.status, 400, "{garbage:?}: {}", r.body);
        assert!(r.body.starts_with("bad offer:"), "{}", r.body);
    }

    let identity = switchyard_dataplane::dtls::Identity::generate().unwrap();
    let receive = switchyard_dataplane::client::offer(
        &switchyard_dataplane::ice::Credentials::random(),
        identity.fingerprint(),
        &[switchyard_dataplane::client::OfferTrack::Receive {
            codec: switchyard_dataplane::media::Codec::Vp8,
            payload_type: 96,
        }],
        1,
    );
    let r = post(
        server.port,
        "/whep/empty",
        Some(&server.token("empty", "u", &[])),
        sdp,
        &receive,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(
        r.body.contains("nothing is published in channel empty"),
        "{}",
        r.body
    );

    let r = http::request(
        server.port,
        "DELETE",
        "/whip/live/p999-0000",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    let r = http::request(server.port, "PATCH", "/whip/live/p999-0000", &[], "").unwrap();
    assert_eq!(r.status, 405);
    let r = http::request(
        server.port,
        "OPTIONS",
        "/whip/live",
        &[
            ("Origin", "https://example.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    )
    .unwrap();
    assert!(
        r.status == 200 || r.status == 204,
        "CORS preflight: {}",
        r.status
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(server.metrics()["switchyard_http_auth_failures_total"] >= 3.0);
}
