//! Headless Chromium pages in one channel through the SDK and the demo page: three that each
//! publish the fake camera and microphone and must decode the other two, with VP8 and with H264
//! forced, on both I/O backends; a simulcast or SVC publisher whose subscriber steers its layers
//! (by height, and for SVC by frame rate); two
//! that connect peer to peer, with no media server in the media path; and two whose fake
//! microphones play a tone and silence, for the active speaker; a subscriber under 5% loss whose
//! NACKs are answered with RTX.

use serde_json::Value;
use switchyard_tests::nat::{Namespace, veth};
use switchyard_tests::netns;
use switchyard_tests::server::{Server, temp_dir};

/// Runs a Playwright script in tests/browser; its JSON result and its stderr.
fn run_pages(script: &str, args: &[String]) -> (Value, String) {
    switchyard_tests::run_pages(script, args, &[])
}

fn assert_no_uncaught_exceptions(result: &Value) {
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
}

fn three_pages(codec: &str, backend: &str) {
    netns::enter();
    let server = Server::start(&["--io-backend", backend]);
    let mut args = vec![
        format!("http://127.0.0.1:{}", server.port),
        "room".to_string(),
        codec.to_string(),
    ];
    args.extend((0..3).map(|i| server.token("room", &format!("user{i}"), &[])));
    let (result, stderr) = run_pages("three_pages.mjs", &args);
    assert_eq!(
        result["ok"], true,
        "not every page decoded every other page ({codec}, {backend}):\n{result:#}\n{stderr}"
    );
    assert_no_uncaught_exceptions(&result);
    // Chromium offers AES-GCM first and the server takes the client's order: the profile
    // that costs the least per forwarded packet (docs/benchmarks.md, SRTP).
    assert_eq!(
        result["srtp_ciphers"],
        serde_json::json!(["SRTP_AEAD_AES_256_GCM"]),
        "{result:#}"
    );
    let m = server.metrics();
    assert!(m["switchyard_rtp_forwarded_total"] > 100.0, "{m:?}");
    // Video went a frame at a time, each subscriber's frame as one GSO train (loopback takes
    // them), on both backends.
    assert!(m["switchyard_frames_fanned_total"] > 0.0, "{m:?}");
    assert!(m["switchyard_gso_trains_total"] > 0.0, "{m:?}");
    // The pages are gone: everything they had is cleaned up.
    server.assert_cleaned_up();
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

/// A 720p camera published as three simulcast layers (180, 360, 720 lines): the subscriber
/// gets the top layer, then the middle one while it asks for `maxHeight: 360`, then the top
/// again; each switch within a few seconds, with no stall of decoding over 500 ms.
#[test]
fn simulcast_follows_the_subscribers_max_height() {
    layers_follow_max_height("VP8");
}

/// The same with H264 simulcast: the layers' heights come from the SPS of their keyframes.
#[test]
fn simulcast_h264_follows_the_subscribers_max_height() {
    layers_follow_max_height("H264");
}

/// The same with VP9 SVC (one stream, L3T3_KEY): the server drops the top spatial layer for
/// the subscriber from the dependency descriptor alone, and brings it back at a keyframe.
#[test]
fn svc_vp9_follows_the_subscribers_max_height() {
    layers_follow_max_height("VP9");
}

/// The same with AV1 SVC (L3T3_KEY). Ignored: Chromium 156 decodes no AV1 stream with more
/// than one spatial layer (0 frames with the descriptor, a handful without, even when the
/// server forwards every packet), so the SDK publishes AV1 as L1T3 for now.
#[test]
#[ignore = "Chromium 156 does not decode multi-spatial-layer AV1 (see the doc comment)"]
fn svc_av1_follows_the_subscribers_max_height() {
    layers_follow_max_height_with("AV1", Some("L3T3_KEY"));
}

/// AV1 published as L1T3 (temporal layers at 30, 15 and 7.5 fps): the subscriber asks for
/// `maxFrameRate: 15` and gets about half the frames (the server drops the top temporal layer
/// from the dependency descriptor alone), decoding on without a stall, then all of them again
/// once it lifts the cap.
#[test]
fn svc_av1_follows_the_subscribers_max_frame_rate() {
    follow_preferences("AV1", Some("L1T3"), "framerate");
}

/// VP8 simulcast (each layer L1T3, Chromium's default): `maxFrameRate: 15` drops the top
/// temporal layer of the forwarded stream (TID in the VP8 payload descriptor), the sequence
/// numbers and picture ids closing up behind it, and lifting it brings every frame back.
#[test]
fn simulcast_vp8_follows_the_subscribers_max_frame_rate() {
    follow_preferences("VP8", None, "framerate");
}

fn layers_follow_max_height(codec: &str) {
    layers_follow_max_height_with(codec, None);
}

fn layers_follow_max_height_with(codec: &str, svc: Option<&str>) {
    follow_preferences(codec, svc, "height");
}

/// Runs simulcast_pages.mjs in `mode` (`height` or `framerate`: the preference the subscriber
/// steers with) and checks each switch was quick and decoding never stalled.
fn follow_preferences(codec: &str, svc: Option<&str>, mode: &str) {
    netns::enter();
    let server = Server::start(&[]);
    let mut args = vec![
        format!("http://127.0.0.1:{}", server.port),
        "room".to_string(),
        server.token("room", "user0", &[]),
        server.token("room", "user1", &[]),
        codec.to_string(),
    ];
    // No scalability mode: an empty argument (the SDK's default).
    args.push(svc.unwrap_or_default().to_string());
    args.push(mode.to_string());
    let (result, stderr) = run_pages("simulcast_pages.mjs", &args);
    eprintln!("{result}");
    assert_eq!(
        result["ok"], true,
        "the subscriber did not get the layers it asked for:\n{result:#}\n{stderr}"
    );
    assert_no_uncaught_exceptions(&result);
    let decoded = result["codec"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_uppercase();
    assert!(decoded.ends_with(codec), "decoded {decoded}, not {codec}");
    if matches!(codec, "VP8" | "H264") && mode == "height" {
        // Capped at 360 lines, nobody watched the 720-line layer: its publisher stopped it
        // (and started it again for the uncapped phase, which reached 720).
        let top = result["capped_layers_kbps"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["rid"] == "f"))
            .and_then(|l| l["kbps"].as_f64());
        assert!(
            top.is_some_and(|v| v < 20.0),
            "the unwatched top layer went on: {result}"
        );
    }
    for phase in ["capped", "uncapped"] {
        let p = &result["phases"][phase];
        assert!(
            p["switch_ms"].as_f64().is_some_and(|v| v < 5_000.0),
            "{phase}: {p}"
        );
        assert!(
            p["max_stall_ms"].as_f64().is_some_and(|v| v < 500.0),
            "{phase} froze: {p}"
        );
    }
    server.assert_cleaned_up();
}

/// The subscriber of a 720p three-layer simulcast publication sits behind a link that `tc`
/// limits to 300 kbit/s mid-call: the estimate from its transport-cc feedback drops it to the
/// 180-line layer within a few seconds, and once the limit is lifted probes bring it back to
/// 720. The publisher's own estimate (from our transport-cc feedback) is not capped at the
/// 3 Mbps that REMB used to tell it.
#[test]
fn simulcast_follows_a_limited_link() {
    netns::enter();
    let test = Namespace::current("server");
    let sub = Namespace::new("subscriber");
    veth(&test, "tosub", "10.9.0.1/24", &sub, "eth0", "10.9.0.2/24");
    let dir = temp_dir();
    // The server announces its only non-loopback address, 10.9.0.1.
    let server = Server::start_in(&dir, &[], &[]);
    let args = vec![
        format!("http://10.9.0.1:{}", server.port),
        "room".to_string(),
        server.token("room", "user0", &[]),
        server.token("room", "user1", &[]),
    ];
    let env = [
        ("LIMIT_DEV", "tosub".to_string()),
        ("SUB_NETNS", sub.path().display().to_string()),
    ];
    let (result, stderr) = switchyard_tests::run_pages("simulcast_pages.mjs", &args, &env);
    eprintln!("{result}");
    assert_eq!(
        result["ok"], true,
        "the subscriber's layer did not follow its link:\n{result:#}\n{stderr}"
    );
    assert_no_uncaught_exceptions(&result);
    let phase = |name: &str, ms: &str| result["phases"][name][ms].as_f64().unwrap_or(f64::MAX);
    assert!(phase("limited", "switch_ms") < 2_000.0, "{result}");
    assert!(phase("lifted", "switch_ms") < 10_000.0, "{result}");
    // Decoding does not stall once on a layer (measured 0.13-0.46 s at most, against a goal
    // of 0.5 s; asked here with room for a busy machine); the moment the link drops, frames in
    // flight are lost until the low layer's keyframe (0.24-0.82 s, see docs/benchmarks.md).
    assert!(phase("limited_hold", "max_stall_ms") < 800.0, "{result}");
    assert!(phase("lifted", "max_stall_ms") < 800.0, "{result}");
    assert!(phase("limited", "max_stall_ms") < 1_500.0, "{result}");
    // The publisher's estimate, from our transport-cc feedback, follows a 1 Mbit/s limit on
    // its own link. Unlimited it is not held at a REMB value: it went past REMB's old 3 Mbit/s
    // in 7 of 11 runs here, but Chromium raises it past what it sends only when it probes, so
    // the test asks for 2 Mbit/s (the publisher sends about 1.2).
    assert!(result["publisher_max_bps"].as_f64() > Some(2e6), "{result}");
    let limited_publisher = &result["publisher_limited"];
    assert!(
        limited_publisher["outgoing_bps"]
            .as_f64()
            .is_some_and(|v| v < 1.2e6),
        "{result}"
    );
    server.assert_cleaned_up();
}

/// Under 5% random loss on the server's datagrams to a subscriber (iptables, set by the page
/// script once it knows the subscription's ports), the subscriber's NACKs are answered with RTX
/// (it negotiated RTX in its subscribe offer): retransmissions arrive, video keeps decoding, and
/// few frames are dropped. Its audio is RED (RFC 2198) end to end.
#[test]
fn rtx_answers_nacks_under_loss() {
    netns::enter();
    let server = Server::start(&[]);
    let args = vec![
        format!("http://127.0.0.1:{}", server.port),
        "room".to_string(),
        server.token("room", "user0", &[]),
        server.token("room", "user1", &[]),
    ];
    let (result, stderr) = run_pages("rtx_pages.mjs", &args);
    eprintln!("{result}");
    assert_eq!(
        result["ok"], true,
        "the subscriber's video did not start:\n{result:#}\n{stderr}"
    );
    assert_no_uncaught_exceptions(&result);
    let loss = &result["loss"];
    let n = |k: &str| loss[k].as_f64().unwrap_or(0.0);
    assert!(n("packets_lost") > 0.0, "no loss was applied: {loss}");
    assert!(n("nacks") > 0.0, "the subscriber sent no NACKs: {loss}");
    assert!(
        n("retransmitted") > 0.0,
        "no retransmission arrived: {loss}"
    );
    assert!(n("frames_decoded") > 50.0, "video stalled: {loss}");
    // Without loss this machine's two Chromiums drop 0 to 4% of frames already (CPU); losses
    // left unrepaired would drop many more.
    assert!(
        n("frames_dropped") <= 0.1 * n("frames_decoded"),
        "too many frames dropped: {loss}"
    );
    // Audio: the publisher sends RED (our answer lists it first) and the subscriber, which
    // offered RED too, gets it through.
    let audio = &result["audio"];
    assert_eq!(audio["send_codecs"][0], "audio/red", "{audio}");
    assert!(audio["packets_received"].as_f64() > Some(100.0), "{audio}");
    let m = server.metrics();
    assert!(
        m["switchyard_rtx_retransmits_total"] > 0.0,
        "the server sent no RTX: {m:?}"
    );
    server.assert_cleaned_up();
}

/// Two pages join one channel, connect peer to peer through `signal` (host candidates on
/// loopback) and decode each other's video and receive each other's audio, while the media
/// server sees none of it: no datagram reaches a media port and nothing is forwarded.
#[test]
fn p2p_two_pages() {
    netns::enter();
    let server = Server::start(&[]);
    let mut args = vec![
        format!("http://127.0.0.1:{}", server.port),
        "room".to_string(),
    ];
    args.extend((0..2).map(|i| server.token("room", &format!("user{i}"), &[])));
    let (result, stderr) = run_pages("p2p_pages.mjs", &args);
    assert_eq!(
        result["ok"], true,
        "the pages did not decode each other peer to peer:\n{result:#}\n{stderr}"
    );
    assert_no_uncaught_exceptions(&result);
    for page in result["pages"].as_array().expect("pages") {
        for peer in page["peers"].as_array().expect("peers") {
            assert_eq!(peer["localCandidate"], "host", "{peer}");
        }
    }
    let m = server.metrics();
    for counter in [
        "switchyard_packets_received_total",
        "switchyard_packets_sent_total",
        "switchyard_rtp_forwarded_total",
    ] {
        assert_eq!(
            m[counter], 0.0,
            "{counter}: the media server carried media: {m:?}"
        );
    }
    // At least an offer, an answer and a candidate each way went through the relay, and
    // nothing was refused.
    assert!(m["switchyard_signals_relayed_total"] >= 4.0, "{m:?}");
    let refused: Vec<_> = m
        .iter()
        .filter(|(k, _)| k.starts_with("switchyard_signals_refused_total"))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    server.assert_cleaned_up();
}

/// Two pages publish audio and video; one's fake microphone plays tone bursts then silence, the
/// other's only silence. The channel hears `speaking: true` for the first (and names it the
/// dominant speaker), then `speaking: false` when it falls silent, and never hears of the
/// silent page.
#[test]
fn speaking_two_pages() {
    netns::enter();
    let server = Server::start(&[]);
    let mut args = vec![
        format!("http://127.0.0.1:{}", server.port),
        "room".to_string(),
    ];
    args.extend(["silent", "speaker"].map(|u| server.token("room", u, &[])));
    let (result, stderr) = run_pages("speaking_pages.mjs", &args);
    assert_eq!(
        result["ok"], true,
        "speaking was not announced as expected:\n{result:#}\n{stderr}"
    );
    assert_no_uncaught_exceptions(&result);
    server.assert_cleaned_up();
}

/// Three pages publish data channels through the SDK (page 0 with its camera on the same
/// connection, the others data channels only): ordered reliable messages arrive
/// complete and in order, a 256 KiB message arrives whole, an unordered `maxRetransmits: 0`
/// channel delivers most messages while 10% of the server's datagrams are lost, and signalling
/// `message`s reach everyone or one participant (tests/browser/data_pages.mjs).
#[test]
fn data_channels_three_pages() {
    netns::enter();
    let server = Server::start(&["--workers", "1", "--media-ports", "40000-40100"]);
    let mut args = vec![
        format!("http://127.0.0.1:{}", server.port),
        "room".to_string(),
        "40000".to_string(),
    ];
    args.extend((0..3).map(|i| server.token("room", &format!("user{i}"), &[])));
    let (result, stderr) = run_pages("data_pages.mjs", &args);
    assert_eq!(
        result["ok"], true,
        "data channels or channel messages failed:\n{result:#}\n{stderr}"
    );
    // What each page received (the lossy count shows the loss was real), for the log.
    for page in result["pages"].as_array().expect("pages") {
        eprintln!(
            "page {}: lossy {} of 300, big {}",
            page["page"], page["lossy"], page["big"]
        );
    }
    assert_no_uncaught_exceptions(&result);
    let m = server.metrics();
    // Each page's 200 chat messages to two subscribers, the big one to two, the lossy ones.
    assert!(
        m["switchyard_data_messages_forwarded_total"] >= 3.0 * 200.0 * 2.0 + 2.0,
        "{m:?}"
    );
    assert!(
        m["switchyard_data_bytes_forwarded_total"] >= 2.0 * 256.0 * 1024.0,
        "{m:?}"
    );
    assert!(
        m["switchyard_rtp_forwarded_total"] > 0.0,
        "page 0's video: {m:?}"
    );
    server.assert_cleaned_up();
}
