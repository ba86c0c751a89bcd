//! The MCU end to end: aiortc participants join a channel's mix over `POST /mix/{channel}`,
//! each sending a solid colour and a sine of its own, and check what the mixer sends back:
//! every colour in the composite, the others' tones in the audio, their own tone absent.

use std::process::Command;

use switchyard_tests::server::Server;
use switchyard_tests::{netns, python, repo, run_pages, script_result};

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
    let out = Command::new(python())
        .arg(repo().join("tests/aiortc/mix.py"))
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg(channel)
        .args(&tokens)
        .args(["--seconds", "8", "--codec", codec])
        .args(["--publishers", &publishers.to_string()])
        .args(["--viewer", &viewer])
        .output()
        .expect("run the aiortc script");
    script_result(&out, "aiortc mix")
}

fn check(result: &serde_json::Value, participants: usize) {
    assert_eq!(result["ok"], true, "{result:#}");
    let people = result["participants"].as_array().expect("participants");
    for (i, p) in people.iter().enumerate() {
        if p["publisher"] == true {
            continue;
        }
        assert!(
            p["frames"].as_u64().unwrap_or(0) >= 30,
            "participant {i} got too few composites: {result:#}"
        );
        assert_eq!(
            p["size"],
            serde_json::json!([320, 180]),
            "participant {i}: {result:#}"
        );
        let colours = p["colours"].as_array().expect("colours");
        for (j, seen) in colours.iter().enumerate().take(participants) {
            assert_eq!(
                seen, true,
                "participant {i} does not see {j}'s colour: {result:#}"
            );
        }
        let tones: Vec<f64> = p["tones_db"]
            .as_array()
            .expect("tones")
            .iter()
            .map(|t| t.as_f64().unwrap_or(f64::NAN))
            .collect();
        // The viewer (POST /whep/{channel}/mix) sends nothing and hears everyone.
        let own = (p["viewer"] != true).then_some(i);
        let others = tones.iter().enumerate().filter(|&(j, _)| Some(j) != own);
        let weakest = others
            .clone()
            .map(|(_, &db)| db)
            .fold(f64::INFINITY, f64::min);
        for (j, &db) in others {
            assert!(
                db >= 20.0,
                "participant {i} hears {j}'s tone only {db} dB above the floor: {result:#}"
            );
        }
        // Absent: far under the others. What is left there is the coding noise of two Opus
        // passes over the other tones (and, on a loaded machine, the aiortc client's own
        // glitches), which lies above the median floor.
        if let Some(own) = own.and_then(|i| tones.get(i)) {
            assert!(
                *own <= weakest - 12.0,
                "participant {i} hears its own tone ({own} dB, the others from {weakest}): {result:#}"
            );
        }
    }
    assert!(
        result["deletes"]
            .as_array()
            .is_some_and(|d| d.iter().all(|s| s == 200)),
        "{result:#}"
    );
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
