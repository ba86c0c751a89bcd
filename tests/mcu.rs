//! The MCU end to end: aiortc participants join a channel's mix over `POST /mix/{channel}`,
//! each sending a solid colour and a sine of its own, and check what the mixer sends back:
//! every colour in the composite, the others' tones in the audio, their own tone absent.

use switchyard_tests::mix::check;
use switchyard_tests::server::Server;
use switchyard_tests::{netns, run_pages};

/// A small canvas at 15 fps: what two cores encode for several participants in a test.
const CANVAS: [(&str, &str); 3] = [
    ("MCU__CANVASWIDTH", "320"),
    ("MCU__CANVASHEIGHT", "180"),
    ("MCU__FRAMERATE", "15"),
];

/// Runs `participants` aiortc participants, of which the first `publishers` publish over WHIP
/// (SFU publishers) and the others mix.
fn mix(
    server: &Server,
    channel: &str,
    participants: usize,
    publishers: usize,
    codec: &str,
) -> serde_json::Value {
    let tokens: Vec<String> = (0..participants)
        .map(|i| server.token(channel, &format!("mixer{i}"), &[]))
        .collect();
    let viewer = server.token(channel, "viewer", &["--no-publish"]);
    let base = format!("http://127.0.0.1:{}", server.port);
    switchyard_tests::mix::run(&base, channel, &tokens, &viewer, publishers, codec, 8)
}

#[test]
fn aiortc_participants_hear_the_others_and_see_everyone_vp8() {
    netns::enter();
    let server = Server::start_with_env(&[], &CANVAS);
    let result = mix(&server, "mixed", 3, 0, "VP8");
    check(&result, 3);
    println!("{result}");
    let m = server.metrics();
    assert_eq!(
        m["switchyard_participants"], 0.0,
        "DELETE left participants behind"
    );
    assert!(m["switchyard_mcu_frames_encoded_total"] > 0.0, "{m:?}");
    assert!(m["switchyard_mcu_frames_decoded_total"] > 0.0, "{m:?}");
}

/// Four Chromium pages mix (canvas colours, oscillator tones); the last joins late, then leaves,
/// and the first mutes.
fn chromium_pages(codec: &str) {
    netns::enter();
    let server = Server::start_with_env(&[], &CANVAS);
    let mut args = vec![
        format!("http://127.0.0.1:{}", server.port),
        "meeting".to_string(),
        codec.to_string(),
    ];
    args.extend((0..4).map(|i| server.token("meeting", &format!("page{i}"), &[])));
    let (result, stderr) = run_pages("mix_pages.mjs", &args, &[]);
    assert_eq!(
        result["ok"],
        true,
        "{result:#}\n{stderr}\n{}",
        server.log_tail()
    );
    let late = result["pages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["i"] == 3))
        .and_then(|p| p["firstFrameMs"].as_u64())
        .unwrap_or(u64::MAX);
    assert!(
        late <= 2000,
        "the late joiner's first composite took {late} ms: {result:#}"
    );
    println!("{result}");
}

#[test]
fn chromium_pages_mix_vp8() {
    chromium_pages("VP8");
}

#[test]
fn chromium_pages_mix_h264() {
    chromium_pages("H264");
}

/// Two SFU publishers (WHIP) and two MCU participants in one channel: each MCU participant's
/// composite shows all four and it hears the other three.
#[test]
fn sfu_publishers_and_mcu_participants_share_a_channel() {
    netns::enter();
    let server = Server::start_with_env(&[], &CANVAS);
    let result = mix(&server, "shared", 4, 2, "H264");
    check(&result, 4);
    println!("{result}");
}
