//! The MCU end to end: aiortc participants join a channel's mix over `POST /mix/{channel}`,
//! each sending a solid colour and a sine of its own, and check what the mixer sends back:
//! every colour in the composite, the others' tones in the audio, their own tone absent.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use switchyard_tests::mix::check;
use switchyard_tests::nat::{Namespace, veth};
use switchyard_tests::server::{Server, temp_dir};
use switchyard_tests::{http, netns, python, repo, run_pages, script_result};

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

/// The mixer sizes its inputs to their tiles (two inputs on the 320x180 canvas: tiles under 180
/// lines): a Chromium SFU publisher's 720p simulcast is told to stop its two upper layers, and a
/// Chromium MCU participant's uplink estimate falls to the tile's bitrate, which the server's
/// REMB asks for (the SFU page's subscription to it is paused, so it has no say). The pictures
/// the mixer decodes are smaller than the cameras'.
#[test]
fn the_mixer_asks_its_inputs_for_what_their_tiles_show() {
    netns::enter();
    let server = Server::start_with_env(&[], &CANVAS);
    let args = vec![
        format!("http://127.0.0.1:{}", server.port),
        "fitted".to_string(),
        server.token("fitted", "publisher", &[]),
        server.token("fitted", "mixer", &[]),
        // The floor a tile is asked for (150 kbit/s), and room for REMB's rounding.
        "165000".to_string(),
    ];
    let (result, stderr) = run_pages("mix_fit_pages.mjs", &args, &[]);
    assert_eq!(
        result["ok"],
        true,
        "{result:#}\n{stderr}\n{}",
        server.log_tail()
    );
    let m = server.metrics();
    let per_frame =
        m["switchyard_mcu_pixels_decoded_total"] / m["switchyard_mcu_frames_decoded_total"];
    assert!(per_frame < 640.0 * 360.0, "{per_frame} {m:?}");
    println!("{result} pixels per decoded frame: {per_frame:.0}");
}

/// With `MCU:LOWERRUNG` every composite is encoded twice, the second time at half size as a
/// second simulcast layer of the mixer's output: participants on unlimited links still get
/// the full 320x180 composite (the router gives the half one to viewers whose bandwidth
/// estimate does not take the full one).
#[test]
fn a_lower_rung_leaves_viewers_on_good_links_the_full_composite() {
    netns::enter();
    let env = [&CANVAS[..], &[("MCU__LOWERRUNG", "true")]].concat();
    let server = Server::start_with_env(&[], &env);
    let result = mix(&server, "rungs", 2, 0, "VP8");
    check(&result, 2);
    let m = server.metrics();
    let (encoded, canvases) = (
        m["switchyard_mcu_frames_encoded_total"],
        m["switchyard_mcu_canvases_total"],
    );
    assert!(encoded >= 1.8 * canvases, "{encoded} {canvases}");
}

/// The lower rung reaches a viewer on a weak link: an MCU participant's Chromium sits in a
/// namespace behind a link that `tc` limits to 250 kbit/s mid-call; its composite drops from
/// the 640x360 canvas to the 320x180 rung, and comes back once the limit is lifted.
#[test]
fn a_viewer_on_a_weak_link_gets_the_lower_rung() {
    netns::enter();
    let test = Namespace::current("server");
    let sub = Namespace::new("viewer");
    veth(&test, "toview", "10.9.0.1/24", &sub, "eth0", "10.9.0.2/24");
    let dir = temp_dir();
    let env = [
        ("MCU__CANVASWIDTH", "640"),
        ("MCU__CANVASHEIGHT", "360"),
        ("MCU__FRAMERATE", "15"),
        ("MCU__LOWERRUNG", "true"),
    ];
    // The server announces its only non-loopback address, 10.9.0.1.
    let server = Server::start_in(&dir, &[], &env);
    let args = vec![
        format!("http://10.9.0.1:{}", server.port),
        "weak".to_string(),
        server.token("weak", "publisher", &[]),
        server.token("weak", "mixer", &[]),
        "360".to_string(),
    ];
    let env = [
        ("LIMIT_DEV", "toview".to_string()),
        ("SUB_NETNS", sub.path().display().to_string()),
    ];
    let (result, stderr) = run_pages("mix_rung_pages.mjs", &args, &env);
    assert_eq!(
        result["ok"],
        true,
        "{result:#}\n{stderr}\n{}",
        server.log_tail()
    );
    println!("{result}");
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

/// Runs tests/aiortc/mix.py on `channel` with one participant per token and `args`; its
/// output, whose progress lines the caller reads as well as its result.
fn aiortc(server: &Server, channel: &str, tokens: &[String], args: &[&str]) -> Output {
    Command::new(python())
        .arg(repo().join("tests/aiortc/mix.py"))
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg(channel)
        .args(tokens)
        .args(args)
        .output()
        .expect("run the aiortc script")
}

/// A channel configuration's own canvas, set through the all-in-one's admin API, is what its
/// mixer draws (192x108 at 5 fps, speaker layout, where the deployment's is 320x180 at 15);
/// a canvas the mixer cannot draw is refused with 400, and `mcuAllowed: false` refuses playing
/// the mix as well as mixing.
#[test]
fn a_channel_configuration_sets_its_mixers_canvas() {
    netns::enter();
    let server = Server::start_with_env(
        &[],
        &[&CANVAS[..], &[("ADMIN__IPADDRESSES", "127.0.0.1/32")]].concat(),
    );
    let key = std::fs::read_to_string(server.data_dir.join("admin-api-key")).unwrap();
    let admin = |method: &str, path: &str, body: &str| {
        let headers = [
            ("X-API-Key", key.trim()),
            ("Content-Type", "application/json"),
        ];
        let path = format!("/admin/api/v1{path}");
        http::request(9090, method, &path, &headers, body).unwrap()
    };
    let secret = "acme-secret-0123456789";
    let r = admin(
        "PUT",
        "/applications/acme",
        &format!(r#"{{"secrets":["{secret}"]}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let config = |pattern: &str, position: u32, rest: &str| {
        format!(
            r#"{{"pattern":"{pattern}","position":{position},"allowedCodecs":[],"sfuAllowed":true,{rest}}}"#
        )
    };
    let odd = config("small-*", 0, r#""mcuAllowed":true,"mcuCanvasWidth":191"#);
    let r = admin("PUT", "/applications/acme/channel-configs", &odd);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .contains("mcuCanvasWidth must be an even number from 64 to 1920"),
        "{}",
        r.body
    );
    let small = config(
        "small-*",
        0,
        r#""mcuAllowed":true,"mcuLayout":"speaker","mcuCanvasWidth":192,"mcuCanvasHeight":108,"mcuFrameRate":5"#,
    );
    let r = admin("PUT", "/applications/acme/channel-configs", &small);
    assert_eq!(r.status, 200, "{}", r.body);
    let stored: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (
            &stored["mcuLayout"],
            &stored["mcuCanvasWidth"],
            &stored["mcuFrameRate"]
        ),
        (&"speaker".into(), &192.into(), &5.into()),
        "{stored}"
    );
    let locked = config("locked-*", 1, r#""mcuAllowed":false"#);
    let r = admin("PUT", "/applications/acme/channel-configs", &locked);
    assert_eq!(r.status, 200, "{}", r.body);

    let acme = ["--application", "acme", "--secret", secret];
    let token = server.token("small-1", "mixer0", &acme);
    // The server reads the store again every few seconds: until then acme is unknown (401);
    // once known, its configurations are too, and this offer is just malformed (400).
    let post = |path: &str, token: &str| {
        let bearer = format!("Bearer {token}");
        let headers = [
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/sdp"),
        ];
        http::request(server.port, "POST", path, &headers, "v=0\r\n").unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while post("/mix/small-1", &token).status == 401 {
        assert!(Instant::now() < deadline, "acme's token is still refused");
        std::thread::sleep(Duration::from_millis(250));
    }
    let viewer = server.token("locked-1", "viewer", &acme);
    let r = post("/whep/locked-1/mix", &viewer);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("does not allow MCU"), "{}", r.body);

    let seconds = 4;
    let out = aiortc(
        &server,
        "small-1",
        &[token],
        &["--seconds", &seconds.to_string(), "--codec", "VP8"],
    );
    let result = script_result(&out, "aiortc mix");
    assert_eq!(result["ok"], true, "{result:#}");
    let p = &result["participants"][0];
    assert_eq!(p["size"], serde_json::json!([192, 108]), "{result:#}");
    // The composites of the last two seconds, from the script's progress lines: about 10 at
    // 5 fps, where the deployment's 15 fps would give about 30.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let frames_at = |t: u64| {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["t"] == t)
            .and_then(|v| v["frames"][0].as_u64())
            .unwrap_or_else(|| panic!("no progress line for second {t}:\n{stdout}"))
    };
    let recent = frames_at(seconds) - frames_at(seconds - 2);
    println!("{recent} composites in the last 2 s; {result}");
    assert!(
        (4..=16).contains(&recent),
        "{recent} composites in 2 s at 5 fps:\n{stdout}"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    let started = log
        .lines()
        .find(|l| l.contains("mixer started"))
        .unwrap_or_else(|| panic!("no mixer started:\n{}", server.log_tail()));
    assert!(
        started.contains("layout: Speaker") && started.contains("fps: 5"),
        "{started}"
    );
}
