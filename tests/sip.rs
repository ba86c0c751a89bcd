//! The SIP connector end to end: SIPp and baresip call into all-in-one's channels (routed by
//! the dev fallback, `sip:NAME@host` to channel NAME), Chromium participants mix with them,
//! and what each side hears is checked (FFTs in the pages, captures of the phones' RTP). A
//! standalone connector registered with a cluster gateway is checked too.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_tests::recordings::admin;
use switchyard_tests::server::{Server, temp_dir};
use switchyard_tests::sip::{self, BareUa};
use switchyard_tests::{netns, run_pages};

/// The phones' and pages' tones, inside G.711's band, chosen so that no harmonic and no
/// third-order product of any two or three (2a-b, a+b-c) comes within 120 Hz of another: the
/// mix is nonlinear (G.711, Opus), and such a product would pass for a tone that should be
/// absent.
const PHONE_A: u32 = 1000;
const PHONE_B: u32 = 1400;
const PAGE_0: u32 = 880;
const PAGE_1: u32 = 1640;

/// Two phones (PCMU and PCMA), a third that presses the twelve keys, and two Chromium pages
/// in one channel: every page hears both phones and the other page and not itself, every
/// phone hears the pages and the other phone and not itself, the pages receive the twelve
/// digits in order, and the digits a page presses reach both phones as telephone-events.
#[test]
fn phones_and_browsers_hear_each_other_and_exchange_digits() {
    netns::enter();
    let server = Server::start(&[]);
    let dir = temp_dir();
    let tone_a = sip::tone_pcap(&dir, "pcmu", PHONE_A, 40);
    let tone_b = sip::tone_pcap(&dir, "pcma", PHONE_B, 40);
    let base = format!("http://127.0.0.1:{}", server.port);
    let specs = vec![
        format!("{}:{PAGE_0}:159#", server.token("meeting", "page0", &[])),
        format!("{}:{PAGE_1}", server.token("meeting", "page1", &[])),
    ];
    let mut args = vec![
        base,
        "meeting".to_string(),
        "12".to_string(),
        format!("{PHONE_A},{PHONE_B}"),
    ];
    args.extend(specs);
    let pages = std::thread::spawn(move || run_pages("sip_pages.mjs", &args, &[]));
    // The phones call once both pages are in (Chromium starts slowly on a busy machine), and
    // the keys are pressed while the pages listen.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(server.log_tail().contains(r#"user="page0""#)
        && server.log_tail().contains(r#"user="page1""#))
    {
        assert!(Instant::now() < deadline, "the pages never joined");
        std::thread::sleep(Duration::from_millis(200));
    }
    let freqs = [PHONE_A, PHONE_B, PAGE_0, PAGE_1];
    let capture_a = sip::capture_all(6000, 25, &freqs);
    let capture_b = sip::capture_all(6100, 25, &freqs);
    let call = |scenario: &str, sip_port: u16, media: u16, extra: &[&str]| {
        sip::sipp(&dir, scenario, "meeting", sip_port, media, extra)
    };
    let a = call(
        "uac_tone.xml",
        5070,
        6000,
        &["-key", "pcap", &tone_a.display().to_string(), "-d", "30000"],
    );
    let b = call(
        "uac_tone.xml",
        5071,
        6100,
        &["-key", "pcap", &tone_b.display().to_string(), "-d", "30000"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let keys = call("uac_dtmf.xml", 5072, 6200, &[]);
    let (result, stderr) = pages.join().expect("pages");
    sip::passed(keys, &dir, "the DTMF phone");
    sip::passed(a, &dir, "phone A");
    sip::passed(b, &dir, "phone B");
    let heard_a = sip::captured(capture_a);
    let heard_b = sip::captured(capture_b);
    println!("pages: {result}\nphone A: {heard_a}\nphone B: {heard_b}");
    assert_eq!(
        result["ok"],
        true,
        "{result:#}\n{stderr}\n{}",
        server.log_tail()
    );
    for page in result["pages"].as_array().expect("pages") {
        assert_eq!(page["digits"], "0123456789*#", "{result:#}");
    }
    // Each phone hears the others; its own tone is at least 25 dB under the weakest of them
    // (as the pages judge theirs). Something 35-40 dB under the others does show at its
    // frequency: fifth-order products of the others' tones through G.711's quantizer land
    // there (2 x 880 + 1640 - 2 x 1000 = 1400), at about G.711's noise level.
    for (report, own, other) in [(&heard_a, PHONE_A, PHONE_B), (&heard_b, PHONE_B, PHONE_A)] {
        let others = [PAGE_0, PAGE_1, other].map(|f| sip::tone_db(report, f));
        let weakest = others.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(weakest >= 30.0, "a tone is missing: {report:#}");
        let own_db = sip::tone_db(report, own);
        assert!(own_db <= weakest - 25.0, "own {own} Hz heard: {report:#}");
        assert_eq!(report["dtmf"], "159#", "{report:#}");
        assert_eq!(report["streams"][0]["lost"], 0, "{report:#}");
    }
    let m = server.metrics();
    assert_eq!(m["switchyard_sip_calls_in_total"], 3.0, "{m:?}");
    assert_eq!(m["switchyard_sip_dtmf_digits_in_total"], 12.0, "{m:?}");
}

/// SIP's own behaviour, without media checks: the 200 is retransmitted on RFC 3261's timers
/// until the ACK; a caller that goes silent without a BYE is hung up after SIP:RTPTIMEOUT; an
/// offer of no codec we have is a 488; hold and resume re-INVITEs are answered the other way
/// round (SIPp checks the answers); TCP works.
#[test]
fn retransmissions_timeouts_hold_and_tcp() {
    netns::enter();
    let server = Server::start_with_env(&[], &[("SIP__RTPTIMEOUT", "3")]);
    let dir = temp_dir();

    // No codec in common: 488.
    let g729 = BareUa::new(5090);
    g729.invite("room", "18", "a=rtpmap:18 G729/8000\r\n", 7000);
    let got = g729.receive(Duration::from_secs(2));
    assert!(
        got.iter().any(|(_, m)| m.starts_with("SIP/2.0 488")),
        "no 488: {got:?}"
    );

    // A 200 not ACKed comes again (T1 = 500 ms, doubling); after the ACK the caller sends no
    // RTP, so the call is hung up (a BYE to us) after the 3 s timeout.
    let quiet = BareUa::new(5091);
    quiet.invite("room", "0", "", 7100);
    let got = quiet.receive(Duration::from_millis(2500));
    let oks: Vec<&(Instant, String)> = got
        .iter()
        .filter(|(_, m)| m.starts_with("SIP/2.0 200"))
        .collect();
    assert!(oks.len() >= 2, "the 200 was not retransmitted: {got:?}");
    let gap = oks[1].0.duration_since(oks[0].0);
    assert!(
        gap >= Duration::from_millis(350) && gap <= Duration::from_millis(1200),
        "retransmitted after {gap:?}"
    );
    let tag = sip::to_tag(&oks[0].1).expect("a To tag in the 200");
    quiet.ack("room", &tag);
    let acked = Instant::now();
    // A key press as SIP INFO is taken (200); a body of another kind is not (415).
    quiet.info(
        "room",
        &tag,
        2,
        "application/dtmf-relay",
        "Signal=5\r\nDuration=160\r\n",
    );
    quiet.info("room", &tag, 3, "text/plain", "hello");
    let got = quiet.receive(Duration::from_secs(8));
    for (cseq, status) in [("2 INFO", "SIP/2.0 200"), ("3 INFO", "SIP/2.0 415")] {
        assert!(
            got.iter()
                .any(|(_, m)| m.starts_with(status) && m.contains(&format!("CSeq: {cseq}"))),
            "no {status} to the INFO with CSeq {cseq}: {got:?}"
        );
    }
    let bye = got
        .iter()
        .find(|(_, m)| m.starts_with("BYE "))
        .unwrap_or_else(|| panic!("no BYE after the RTP timeout: {got:?}"));
    quiet.ok(&bye.1);
    let after = bye.0.duration_since(acked);
    assert!(
        after >= Duration::from_millis(2500) && after <= Duration::from_secs(6),
        "hung up after {after:?}"
    );

    // Hold and resume (the scenario fails on a wrong answer), then a call over TCP.
    let tone = sip::tone_pcap(&dir, "pcmu", PHONE_A, 6);
    let tone2 = dir.join("resume.pcap");
    let status = Command::new("python3")
        .arg(sip::tool("rtp_tone.py"))
        .args([
            "--codec",
            "pcmu",
            "--freq",
            "1000",
            "--seconds",
            "4",
            "--after",
        ])
        .arg(&tone)
        .arg("-o")
        .arg(&tone2)
        .status()
        .expect("rtp_tone.py");
    assert!(status.success());
    let hold = sip::sipp(
        &dir,
        "uac_hold.xml",
        "room",
        5070,
        6000,
        &[
            "-key",
            "pcap",
            &tone.display().to_string(),
            "-key",
            "pcap2",
            &tone2.display().to_string(),
            "-d",
            "2000",
        ],
    );
    sip::passed(hold, &dir, "hold and resume");
    let tcp = sip::sipp(
        &dir,
        "uac_tone.xml",
        "room",
        5071,
        6100,
        &[
            "-t",
            "t1",
            "-key",
            "pcap",
            &tone.display().to_string(),
            "-d",
            "3000",
        ],
    );
    sip::passed(tcp, &dir, "a call over TCP");

    let m = server.metrics();
    assert_eq!(m["switchyard_sip_rtp_timeouts_total"], 1.0, "{m:?}");
    assert_eq!(m["switchyard_sip_refused_sdp_total"], 1.0, "{m:?}");
    assert_eq!(m["switchyard_sip_dtmf_digits_in_total"], 1.0, "{m:?}");
    assert_eq!(m["switchyard_sip_calls_active"], 0.0, "{m:?}");
}

/// baresip calls once with each codec while a SIPp phone plays a tone into the same channel:
/// the answer names baresip's codec, baresip hears SIPp's tone, and SIPp hears baresip's.
#[test]
fn baresip_calls_with_each_codec() {
    netns::enter();
    let server = Server::start(&[]);
    let dir = temp_dir();
    let tone = sip::tone_pcap(&dir, "pcmu", PHONE_A, 55);
    let capture = sip::capture_all(6000, 45, &[440, 523, 659, 784]);
    let sipp = sip::sipp(
        &dir,
        "uac_tone.xml",
        "codecs",
        5070,
        6000,
        &["-key", "pcap", &tone.display().to_string(), "-d", "48000"],
    );
    std::thread::sleep(Duration::from_secs(2));
    // A tone of its own for each codec's call, so the capture tells them apart.
    for (codec, freq, rtpmap) in [
        ("pcmu", 440, "PCMU/8000"),
        ("pcma", 523, "PCMA/8000"),
        ("g722", 659, "G722/8000"),
        ("opus", 784, "opus/48000/2"),
    ] {
        let wav = dir.join(format!("{codec}.wav"));
        let out = Command::new(sip::tool("baresip_call.sh"))
            .args([codec, "sip:codecs@127.0.0.1:5060", "6"])
            .env("BARESIP_WAV", &wav)
            .env("BARESIP_FREQ", freq.to_string())
            .output()
            .expect("run baresip_call.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{codec}: {stderr}\n{}",
            server.log_tail()
        );
        let answered = stderr
            .lines()
            .any(|l| l.starts_with("sdp 200") && l.contains(rtpmap));
        assert!(answered, "{codec}: the answer is not {rtpmap}: {stderr}");
        let heard = wav_tone(&wav, PHONE_A);
        assert!(
            heard >= 30.0,
            "{codec}: baresip heard SIPp at {heard} dB: {stderr}"
        );
    }
    sip::passed(sipp, &dir, "the SIPp phone");
    let report = sip::captured(capture);
    println!("{report}");
    for freq in [440, 523, 659, 784] {
        assert!(sip::tone_db(&report, freq) >= 30.0, "{freq} Hz: {report:#}");
    }
}

/// `freq`'s level above the floor in a WAV file, after its first second.
fn wav_tone(wav: &Path, freq: u32) -> f64 {
    let out = Command::new("python3")
        .arg(sip::tool("wav_tone.py"))
        .arg(wav)
        .args(["--freqs", &freq.to_string(), "--skip", "1"])
        .output()
        .expect("wav_tone.py");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    report["tones"][freq.to_string()]["above_floor_db"]
        .as_f64()
        .unwrap_or(f64::NEG_INFINITY)
}

/// Without dev tokens nothing routes a call until an application's SIP mapping does: a 404,
/// then, once the mapping is in the store, the same number is answered and joins the mapped
/// channel (`{match}` is the dialled number).
#[test]
fn mappings_route_calls_and_unmapped_ones_get_404() {
    netns::enter();
    let server = Server::start_with_env(
        &["--no-dev-tokens"],
        &[("ADMIN__IPADDRESSES", "127.0.0.1/32")],
    );
    let unmapped = BareUa::new(5090);
    unmapped.invite("4000", "0", "", 7000);
    let got = unmapped.receive(Duration::from_secs(2));
    assert!(
        got.iter().any(|(_, m)| m.starts_with("SIP/2.0 404")),
        "no 404: {got:?}"
    );

    let app = r#"{"secrets":["sip-test-secret-0123456789"]}"#;
    assert_eq!(admin(&server, "PUT", "/applications/acme", app).status, 200);
    let mapping = r#"{"name":"desk","kind":"number","pattern":"40??","channelId":"desk-{match}"}"#;
    let r = admin(&server, "PUT", "/applications/acme/sip-mappings", mapping);
    assert_eq!(r.status, 200, "{}", r.body);
    // The store is read again every few seconds: call until the mapping answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut attempt = 0;
    let answered = loop {
        attempt += 1;
        let ua = BareUa::new(5090 + attempt);
        ua.invite("4000", "0", "", 7000 + 2 * attempt);
        let got = ua.receive(Duration::from_secs(2));
        if let Some((_, ok)) = got.iter().find(|(_, m)| m.starts_with("SIP/2.0 200")) {
            break (ua, ok.clone());
        }
        assert!(
            Instant::now() < deadline,
            "the mapping never routed: {got:?}"
        );
    };
    let (ua, ok) = answered;
    ua.ack("4000", &sip::to_tag(&ok).expect("To tag"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server
        .log_tail()
        .contains(r#"joined channel "desk-4000" of "acme""#)
    {
        assert!(Instant::now() < deadline, "{}", server.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = server.metrics();
    assert!(m["switchyard_sip_refused_no_route_total"] >= 1.0, "{m:?}");
}

/// `switchyard sip-connector` on its own, beside a server whose connector is off: it reads the
/// applications and their mappings from the same store and joins calls through the server's
/// `POST /mix`.
#[test]
fn a_connector_of_its_own_joins_calls_through_the_gateway() {
    netns::enter();
    let server = Server::start_with_env(
        &["--no-dev-tokens"],
        &[
            ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
            ("SIP__ENABLED", "false"),
        ],
    );
    let app = r#"{"secrets":["sip-test-secret-0123456789"]}"#;
    assert_eq!(admin(&server, "PUT", "/applications/acme", app).status, 200);
    let mapping = r#"{"name":"all","kind":"number","pattern":"*","channelId":"line-{match}"}"#;
    let r = admin(&server, "PUT", "/applications/acme/sip-mappings", mapping);
    assert_eq!(r.status, 200, "{}", r.body);
    let log = server.data_dir.join("connector.log");
    let mut connector = Command::new(switchyard_tests::binary())
        .args([
            "sip-connector",
            "--gateway",
            "http://127.0.0.1:8080",
            "--data-dir",
        ])
        .arg(&server.data_dir)
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(log.with_extension("err")).expect("log"))
        .spawn()
        .expect("start the connector");
    let read = || {
        std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read().contains("calls join channels through") {
        assert!(
            Instant::now() < deadline,
            "the connector did not start:\n{}",
            read()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // all-in-one reads the store again every few seconds: until then acme is unknown to it
    // (the connector's join is refused, a 503); call until it answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempt = 0;
    let (ua, ok) = loop {
        let ua = BareUa::new(5090 + attempt);
        ua.invite("7", "8", "", 7000 + 2 * attempt);
        attempt += 1;
        let got = ua.receive(Duration::from_secs(3));
        if let Some((_, ok)) = got.iter().find(|(_, m)| m.starts_with("SIP/2.0 200")) {
            let ok = ok.clone();
            break (ua, ok);
        }
        assert!(Instant::now() < deadline, "no 200: {got:?}\n{}", read());
    };
    ua.ack("7", &sip::to_tag(&ok).expect("To tag"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log_tail().contains(r#"user="sip:bare""#) {
        assert!(
            Instant::now() < deadline,
            "{}\n{}",
            server.log_tail(),
            read()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    while !read().contains(r#"joined channel "line-7" of "acme""#) {
        assert!(Instant::now() < deadline, "{}", read());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = connector.kill();
    let _ = connector.wait();
}

/// The admin key of the gateway in [`a_registered_connector_exchanges_digits_and_dials_out`].
const GATEWAY_ADMIN_KEY: &str = "sip-test-admin-key-0123456789";

/// The gateway's admin API on 127.0.0.1:9090.
fn gateway_admin(method: &str, path: &str, body: &str) -> switchyard_tests::http::Response {
    let path = format!("/admin/api/v1{path}");
    let headers = [
        ("X-API-Key", GATEWAY_ADMIN_KEY),
        ("content-type", "application/json"),
    ];
    switchyard_tests::http::request(9090, method, &path, &headers, body).expect("admin API")
}

/// Reads the participant's socket for up to `within`: the `dtmf` digits it heard, and the
/// refusal of the request `id` if one came.
async fn read_socket(
    ws: &mut ParticipantSocket,
    within: Duration,
    id: Option<&str>,
) -> (String, Option<serde_json::Value>) {
    use futures_util::StreamExt;
    let mut digits = String::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(m.to_text().unwrap_or_default())
        else {
            continue;
        };
        if v["type"] == "dtmf" {
            assert_eq!(v["from"], "sip:sipp", "{v}");
            digits.push_str(v["digit"].as_str().unwrap_or_default());
        } else if id.is_some() && v["id"].as_str() == id {
            return (digits, Some(v));
        }
    }
    (digits, None)
}

type ParticipantSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A cluster's SIP connector on its own: `switchyard sip-connector` beside a gateway (registry
/// in Redis) and a mixing media server registers with the gateway through SERVICEBASEURL.
/// Through it, a signalling participant's `dtmf` reaches a SIPp caller as telephone-events,
/// a second caller's twelve RFC 4733 key presses reach the participant as `dtmf` events, the
/// gateway's admin API dials a SIPp callee out through the connector and hangs it up, and the
/// gateway's /metrics shows the connector's counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_connector_exchanges_digits_and_dials_out() {
    use futures_util::SinkExt;
    use switchyard_tests::cluster::{Process, signed, wait_for};
    use tokio_tungstenite::tungstenite::Message;
    netns::enter();
    let dir = temp_dir();
    let data = dir.join("data").display().to_string();
    // The gateway keeps its registry in Redis, as a cluster's gateways do.
    let redis = switchyard_tests::cluster::Redis::start(6379);
    let cache = redis.url();
    let admin_env = [
        ("ADMIN__APIKEY", GATEWAY_ADMIN_KEY),
        ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
        ("CONNECTIONSTRINGS__CACHE", cache.as_str()),
    ];
    let _gateway = Process::start(
        "gateway",
        &dir,
        &[
            "gateway",
            "--http",
            "127.0.0.1:8080",
            "--admin",
            "127.0.0.1:9090",
            "--data-dir",
            &data,
        ],
        &admin_env,
    );
    let base = "http://127.0.0.1:8080";
    let _media = Process::start(
        "m1",
        &dir,
        &[
            "media-server",
            "--id",
            "m1",
            "--workers",
            "1",
            "--media-ports",
            "40000-40100",
            "--public-ip",
            "127.0.0.1",
            "--mcu-workers",
            "1",
        ],
        &[
            ("SERVICEBASEURL", base),
            ("MCU__CANVASWIDTH", "320"),
            ("MCU__CANVASHEIGHT", "180"),
            ("MCU__FRAMERATE", "15"),
        ],
    );
    wait_for("m1 to register", Duration::from_secs(30), || {
        switchyard_tests::cluster::media_servers(8080).len() == 1
    });
    let secret = "sip-test-secret-0123456789";
    let app = format!(r#"{{"secrets":["{secret}"]}}"#);
    assert_eq!(gateway_admin("PUT", "/applications/acme", &app).status, 200);
    let mapping = r#"{"name":"all","kind":"number","pattern":"*","channelId":"line-{match}"}"#;
    let r = gateway_admin("PUT", "/applications/acme/sip-mappings", mapping);
    assert_eq!(r.status, 200, "{}", r.body);
    let trunk = r#"{"domain":"127.0.0.1:5080","canTerminate":true}"#;
    let r = gateway_admin("PUT", "/sip/trunks/main", trunk);
    assert_eq!(r.status, 200, "{}", r.body);
    // No connector yet: dial-out is unavailable.
    let dial = r#"{"number":"1234","application":"acme"}"#;
    let r = gateway_admin("POST", "/channels/line-7/dial", dial);
    assert_eq!(r.status, 503, "{}", r.body);

    let connector = Process::start(
        "connector",
        &dir,
        &[
            "sip-connector",
            "--data-dir",
            &data,
            "--cluster-address",
            "127.0.0.1",
        ],
        &[("SERVICEBASEURL", base), ("SIP__RTPTIMEOUT", "3")],
    );
    wait_for("the connector to register", Duration::from_secs(20), || {
        signed(8080, "GET", "/cluster/v1/sip-connectors", "")
            .is_ok_and(|r| r.body.contains(r#""apiUrl":"http://127.0.0.1:8446""#))
    });
    let keys = redis.cli(&["KEYS", "*sipconnector:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");

    // A participant of line-7 (the gateway reads acme from the store within a few seconds).
    let token = std::process::Command::new(switchyard_tests::binary())
        .args([
            "token",
            "--channel",
            "line-7",
            "--user",
            "bob",
            "--application",
            "acme",
        ])
        .args(["--secret", secret])
        .output()
        .expect("switchyard token");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let join = serde_json::json!({ "type": "join", "token": token, "channel": "line-7" });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ws = loop {
        let (mut ws, _) = tokio_tungstenite::connect_async("ws://127.0.0.1:8080/sync")
            .await
            .expect("connect /sync");
        ws.send(Message::text(join.to_string()))
            .await
            .expect("join");
        let reply = futures_util::StreamExt::next(&mut ws).await;
        let text = match reply {
            Some(Ok(m)) => m.to_text().unwrap_or_default().to_string(),
            other => format!("{other:?}"),
        };
        if text.contains(r#""type":"joined""#) {
            break ws;
        }
        assert!(Instant::now() < deadline, "cannot join: {text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // A phone calls line-7 and listens; the participant presses 159# until a call takes it.
    let tone = sip::tone_pcap(&dir, "pcmu", PHONE_A, 12);
    let phone_hears = sip::capture_all(6000, 12, &[PHONE_A]);
    let phone = sip::sipp(
        &dir,
        "uac_tone.xml",
        "7",
        5070,
        6000,
        &["-key", "pcap", &tone.display().to_string(), "-d", "12000"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dtmf = serde_json::json!({ "type": "dtmf", "id": "k", "digits": "159#" });
        ws.send(Message::text(dtmf.to_string()))
            .await
            .expect("dtmf");
        match read_socket(&mut ws, Duration::from_millis(500), Some("k")).await {
            (_, None) => break,
            (_, Some(refusal)) => {
                assert!(
                    Instant::now() < deadline,
                    "dtmf refused: {refusal}\n{}",
                    connector.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }

    // A second phone presses twelve keys; the participant hears them in order.
    let keys = sip::sipp(&dir, "uac_dtmf.xml", "7", 5072, 6200, &[]);
    let mut heard = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while heard.len() < 12 && Instant::now() < deadline {
        heard += &read_socket(&mut ws, Duration::from_millis(500), None)
            .await
            .0;
    }
    assert_eq!(heard, "0123456789*#", "{}", connector.log_tail());
    sip::passed(keys, &dir, "the DTMF phone");

    // The gateway's admin API dials a callee through the connector (once the connector has
    // read the trunk: a 404 until then), and hangs it up through the connector: the BYE the
    // callee's scenario waits for.
    let callee_tone = sip::tone_pcap(&dir, "pcmu", PHONE_B, 3);
    let callee = sip::sipp_uas(
        &dir,
        "uas_answer.xml",
        5080,
        6300,
        &["-key", "pcap", &callee_tone.display().to_string()],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = gateway_admin("POST", "/channels/line-7/dial", dial);
        if r.status != 404 || Instant::now() >= deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(r.status, 202, "{}", r.body);
    let call = call_id(&r);
    let r = gateway_admin("DELETE", "/channels/line-7/dial/0123456789abcdef", "");
    assert_eq!(r.status, 404, "{}", r.body);
    // Answered by then (SIPp answers at once): a BYE, not a CANCEL.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = gateway_admin("DELETE", &format!("/channels/line-7/dial/{call}"), "");
    assert_eq!(r.status, 204, "{}\n{}", r.body, connector.log_tail());
    sip::passed(callee, &dir, "the callee");
    sip::passed(phone, &dir, "the phone");
    let report = sip::captured(phone_hears);
    assert_eq!(
        report["dtmf"],
        "159#",
        "{report:#}\n{}",
        connector.log_tail()
    );

    // The gateway shows the connector's counters (as of its last heartbeat).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = switchyard_tests::http::metrics(8080);
    assert_eq!(m["switchyard_sip_connectors"], 1.0, "{m:?}");
    assert_eq!(m["switchyard_sip_calls_in_total"], 2.0, "{m:?}");
    assert_eq!(m["switchyard_sip_calls_out_total"], 1.0, "{m:?}");
    assert_eq!(m["switchyard_sip_dtmf_digits_in_total"], 12.0, "{m:?}");
}

/// SIP over TLS on 5061 with a certificate: an INVITE sent over it is answered over it (a 404
/// for a number nothing routes, with dev tokens off), and the TCP and UDP listeners stay.
#[test]
fn tls_carries_sip() {
    netns::enter();
    let dir = temp_dir();
    let (cert, key) = switchyard_tests::certificate(&dir, "localhost");
    let server = Server::start_with_env(
        &["--no-dev-tokens"],
        &[
            ("SIP__CERTIFICATEPATH", cert.to_str().expect("path")),
            ("SIP__PRIVATEKEYPATH", key.to_str().expect("path")),
        ],
    );
    // Python's ssl, certificate not checked (self-signed): what a phone with TLS does.
    let script = r#"
import re, socket, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", 5061), timeout=5) as raw, ctx.wrap_socket(raw) as s:
    local = "%s:%d" % s.getsockname()
    s.sendall(("INVITE sip:nobody@127.0.0.1:5061;transport=tls SIP/2.0\r\n"
               "Via: SIP/2.0/TLS %s;branch=z9hG4bK-tls-1\r\nFrom: <sip:tls@127.0.0.1>;tag=a1\r\n"
               "To: <sip:nobody@127.0.0.1>\r\nCall-ID: tls-1\r\nCSeq: 1 INVITE\r\n"
               "Contact: <sip:tls@%s;transport=tls>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
               % (local, local)).encode())
    data = b""
    # Responses until a final one (not 1xx).
    while not re.search(rb"SIP/2\.0 [2-6]\d\d", data):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    final = re.search(rb"SIP/2\.0 [2-6]\d\d[^\r]*", data)
    print(final.group(0).decode() if final else data.decode(errors="replace"))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("SIP/2.0 404"),
        "over TLS: {line}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
}

/// The admin API's `POST /channels/{channel}/dial`, retried while the trunk just written has
/// not reached all-in-one's cached store yet (a 404): the final response.
fn dial(server: &Server, channel: &str, body: &str) -> switchyard_tests::http::Response {
    let path = format!("/channels/{channel}/dial");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = admin(server, "POST", &path, body);
        if r.status != 404 || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Dial-out: a phone calls into channel `room` playing a tone; the admin API dials 1234
/// through trunk `main` (a SIPp callee on 5080), which answers with a tone of its own. The
/// callee hears the phone, the phone hears the callee; once the callee's tone ends, the RTP
/// timeout hangs the dialled call up with a BYE, which the callee's scenario waits for.
#[test]
fn dial_out_reaches_a_sipp_callee() {
    netns::enter();
    let server = Server::start_with_env(
        &[],
        &[
            ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
            ("SIP__RTPTIMEOUT", "3"),
        ],
    );
    let dir = temp_dir();
    let phone_tone = sip::tone_pcap(&dir, "pcmu", PHONE_A, 20);
    let callee_tone = sip::tone_pcap(&dir, "pcmu", PHONE_B, 8);
    put_trunk(&server);

    // Refusals first: a bad number, a trunk that does not exist, a bad body.
    let r = admin(
        &server,
        "POST",
        "/channels/room/dial",
        r#"{"number":"12 34"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = admin(&server, "POST", "/channels/room/dial", r#"{"numbr":"1"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = admin(
        &server,
        "POST",
        "/channels/room/dial",
        r#"{"number":"1","trunk":"nope"}"#,
    );
    assert_eq!(r.status, 404, "{}", r.body);

    let freqs = [PHONE_A, PHONE_B];
    let callee_hears = sip::capture_all(6200, 5, &freqs);
    let callee = sip::sipp_uas(
        &dir,
        "uas_answer.xml",
        5080,
        6200,
        &["-key", "pcap", &callee_tone.display().to_string()],
    );
    let phone = phone_in_room(&server, &dir, &phone_tone, 15_000);
    let phone_hears = sip::capture_all(6000, 4, &freqs);
    let r = dial(&server, "room", r#"{"number":"1234"}"#);
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.body.contains(r#""call""#), "{}", r.body);
    sip::passed(callee, &dir, "the callee");
    sip::passed(phone, &dir, "the phone");
    let callee_report = sip::captured(callee_hears);
    let phone_report = sip::captured(phone_hears);
    println!("callee: {callee_report}\nphone: {phone_report}");
    assert!(
        sip::tone_db(&callee_report, PHONE_A) >= 30.0,
        "the callee did not hear the phone: {callee_report:#}\n{}",
        server.log_tail()
    );
    assert!(
        sip::tone_db(&phone_report, PHONE_B) >= 30.0,
        "the phone did not hear the callee: {phone_report:#}"
    );
    // Mix-minus: neither hears itself.
    assert!(
        sip::tone_db(&callee_report, PHONE_B) <= 20.0,
        "{callee_report:#}"
    );
    assert!(
        sip::tone_db(&phone_report, PHONE_A) <= 20.0,
        "{phone_report:#}"
    );
    let m = server.metrics();
    assert_eq!(m["switchyard_sip_calls_out_total"], 1.0, "{m:?}");
    assert_eq!(m["switchyard_sip_calls_out_failed_total"], 0.0, "{m:?}");
}

/// Dial-out through a trunk that wants digest authentication: the callee (SIPp's
/// verifyauth) takes the re-sent INVITE only with the trunk's user name and password.
#[test]
fn dial_out_authenticates_with_digest() {
    netns::enter();
    let server = Server::start_with_env(
        &[],
        &[
            ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
            ("SIP__RTPTIMEOUT", "3"),
        ],
    );
    let dir = temp_dir();
    let callee_tone = sip::tone_pcap(&dir, "pcmu", PHONE_B, 4);
    let trunk =
        r#"{"domain":"127.0.0.1:5080","canTerminate":true,"username":"alice","password":"secret"}"#;
    let r = admin(&server, "PUT", "/sip/trunks/pbx", trunk);
    assert_eq!(r.status, 200, "{}", r.body);
    let callee = sip::sipp_uas(
        &dir,
        "uas_auth.xml",
        5080,
        6200,
        &[
            "-key",
            "user",
            "alice",
            "-key",
            "password",
            "secret",
            "-key",
            "pcap",
            &callee_tone.display().to_string(),
        ],
    );
    let r = dial(
        &server,
        "room",
        r#"{"number":"+4930123","trunk":"pbx","callerId":"+4930999"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    sip::passed(callee, &dir, "the callee");
    let m = server.metrics();
    assert_eq!(m["switchyard_sip_calls_out_total"], 1.0, "{m:?}");
    assert_eq!(
        m["switchyard_sip_calls_out_failed_total"],
        0.0,
        "{m:?}\n{}",
        server.log_tail()
    );
}

/// A trunk with `register` set: the connector REGISTERs with the provider through the trunk's
/// outbound proxy (SIPp, which grants 10 s; the domain itself resolves nowhere) and refreshes
/// the binding before SIPp gives up after 30 s.
#[test]
fn a_trunk_registers_and_refreshes() {
    netns::enter();
    let server = Server::start_with_env(&[], &[("ADMIN__IPADDRESSES", "127.0.0.1/32")]);
    let dir = temp_dir();
    let registrar = sip::sipp_uas(&dir, "uas_register.xml", 5090, 6300, &["-trace_msg"]);
    let trunk = r#"{"domain":"provider.invalid","outboundProxy":"127.0.0.1:5090",
        "register":true,"username":"alice"}"#;
    let r = admin(&server, "PUT", "/sip/trunks/provider", trunk);
    assert_eq!(r.status, 200, "{}", r.body);
    sip::passed(registrar, &dir, "the registrar");
    let log = sipp_messages(&dir, 5090);
    assert!(
        log.contains("REGISTER sip:provider.invalid SIP/2.0"),
        "{log}"
    );
    assert!(log.contains("To: <sip:alice@provider.invalid>"), "{log}");
    let m = server.metrics();
    assert!(
        m["switchyard_sip_registrations_total"] >= 1.0,
        "{m:?}\n{}",
        server.log_tail()
    );
}

/// What the SIPp run on `port` in `dir` logged of its messages (run with `-trace_msg`).
fn sipp_messages(dir: &std::path::Path, port: u16) -> String {
    std::fs::read_dir(dir.join(format!("sipp-{port}")))
        .expect("sipp dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// A process that runs no SIP connector cannot dial: 503, once the body is good.
#[test]
fn dial_out_without_a_connector_is_503() {
    netns::enter();
    let server = Server::start_with_env(
        &[],
        &[
            ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
            ("SIP__ENABLED", "false"),
        ],
    );
    put_trunk(&server);
    let r = admin(
        &server,
        "POST",
        "/channels/room/dial",
        r#"{"number":"1234"}"#,
    );
    assert_eq!(r.status, 503, "{}", r.body);
    let r = admin(&server, "POST", "/channels/room/dial", r#"{"number":""}"#);
    assert_eq!(r.status, 400, "{}", r.body);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `/sync` socket joined with `token`.
async fn join_sync(port: u16, token: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{port}/sync");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    send_json(&mut ws, serde_json::json!({"type": "join", "token": token})).await;
    let joined = next_json(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    ws
}

async fn send_json(ws: &mut Ws, message: serde_json::Value) {
    use futures_util::SinkExt;
    let text = tokio_tungstenite::tungstenite::Message::text(message.to_string());
    ws.send(text).await.expect("send");
}

/// The next text message, within 10 s.
async fn next_json(ws: &mut Ws) -> serde_json::Value {
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time");
        match m {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                return serde_json::from_str(&t).expect("JSON");
            }
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// Dial-out from signalling: a page whose token has `dial` calls 1234 through trunk `main` (a
/// SIPp callee on 5080) as +15550100 with the SDK's `client.dial`, which resolves with the
/// call's id, and sees the callee join its channel as `sip:1234`; the callee's INVITE carries
/// both numbers. A bad number is refused to the page, and a token without the right (a raw
/// socket) gets an `error` that says so. The callee's tone is short: once it ends, the RTP
/// timeout hangs up with the BYE its scenario waits for.
#[test]
fn a_participant_allowed_to_dial_calls_a_sipp_callee_into_its_channel() {
    netns::enter();
    let server = Server::start_with_env(
        &[],
        &[
            ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
            ("SIP__RTPTIMEOUT", "3"),
        ],
    );
    let dir = temp_dir();
    let callee_tone = sip::tone_pcap(&dir, "pcmu", PHONE_B, 2);
    put_trunk(&server);
    let operator = server.token("room", "operator", &["--dial"]);
    let guest = server.token("room", "guest", &[]);
    let port = server.port;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let mut guest = join_sync(port, &guest).await;
        let dial = serde_json::json!({"type": "dial", "id": 1, "number": "1234"});
        send_json(&mut guest, dial).await;
        let e = next_json(&mut guest).await;
        assert_eq!(
            (e["type"].as_str(), e["id"].as_i64()),
            (Some("error"), Some(1)),
            "{e}"
        );
        assert!(
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("does not allow dialling")),
            "{e}"
        );
    });

    let callee = sip::sipp_uas(
        &dir,
        "uas_answer.xml",
        5080,
        6200,
        &[
            "-key",
            "pcap",
            &callee_tone.display().to_string(),
            "-trace_msg",
        ],
    );
    let args = [
        format!("http://127.0.0.1:{port}"),
        "room".to_string(),
        operator,
        "1234".to_string(),
        "+15550100".to_string(),
    ];
    let (page, stderr) = run_pages("dial_page.mjs", &args, &[]);
    assert_eq!(page["ok"], true, "{page}\n{stderr}\n{}", server.log_tail());
    assert!(
        page["refused"]
            .as_str()
            .is_some_and(|r| r.contains("not a number to dial")),
        "{page}"
    );
    let call = page["call"].as_str().expect("call id");
    sip::passed(callee, &dir, "the callee");
    let messages = sipp_messages(&dir, 5080);
    assert!(
        messages.contains("INVITE sip:1234@127.0.0.1:5080"),
        "{messages}"
    );
    assert!(messages.contains("sip:+15550100@"), "{messages}");
    // The id is the one the server's log gives the call.
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("dialling out for a participant") && l.contains(call)),
        "{call}: {}",
        server.log_tail()
    );
    let m = server.metrics();
    assert_eq!(m["switchyard_sip_calls_out_total"], 1.0, "{m:?}");
    assert_eq!(m["switchyard_sip_calls_out_failed_total"], 0.0, "{m:?}");
    assert_eq!(
        m["switchyard_signalling_errors_total{reason=\"unauthorized\"}"], 1.0,
        "{m:?}"
    );
}

/// The digest response (RFC 2617 without qop) to uas_proxy_auth.xml's challenge: computed by
/// Python's hashlib, as the tests have no MD5 of their own.
fn digest_response(user: &str, password: &str, uri: &str) -> String {
    let script = "import hashlib, sys\n\
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()\n\
        u, p, uri = sys.argv[1:]\n\
        print(md5(md5(f'{u}:switchyard.test:{p}') + ':switchyard407:' + md5('INVITE:' + uri)))";
    let out = Command::new("python3")
        .args(["-c", script, user, password, uri])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Dial-out through a provider whose proxy challenges with 407 Proxy Authentication Required:
/// the INVITE is sent again with a Proxy-Authorization the callee checks.
#[test]
fn dial_out_answers_a_proxy_challenge() {
    netns::enter();
    let server = Server::start_with_env(
        &[],
        &[
            ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
            ("SIP__RTPTIMEOUT", "3"),
        ],
    );
    let dir = temp_dir();
    let callee_tone = sip::tone_pcap(&dir, "pcmu", PHONE_B, 2);
    let response = digest_response("alice", "secret", "sip:+4930123@127.0.0.1:5080");
    let scenario = std::fs::read_to_string(sip::tool("uas_proxy_auth.xml"))
        .expect("uas_proxy_auth.xml")
        .replace("[response]", &response);
    let scenario_path = dir.join("uas_proxy_auth.xml");
    std::fs::write(&scenario_path, scenario).expect("write the scenario");
    let trunk =
        r#"{"domain":"127.0.0.1:5080","canTerminate":true,"username":"alice","password":"secret"}"#;
    let r = admin(&server, "PUT", "/sip/trunks/provider", trunk);
    assert_eq!(r.status, 200, "{}", r.body);
    let callee = sip::sipp_uas(
        &dir,
        &scenario_path.display().to_string(),
        5080,
        6200,
        &["-key", "pcap", &callee_tone.display().to_string()],
    );
    let r = dial(&server, "room", r#"{"number":"+4930123"}"#);
    assert_eq!(r.status, 202, "{}", r.body);
    sip::passed(callee, &dir, "the callee");
    let m = server.metrics();
    assert_eq!(
        m["switchyard_sip_calls_out_failed_total"],
        0.0,
        "{m:?}\n{}",
        server.log_tail()
    );
}

/// Early media: the provider answers 183 with SDP and plays a tone, and answers 200 only after
/// the tone has ended; a phone in the channel hears the tone, so it was bridged before the
/// answer. The call then goes on as answered (the RTP timeout ends it with a BYE).
#[test]
fn dial_out_bridges_early_media() {
    netns::enter();
    let server = Server::start_with_env(
        &[],
        &[
            ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
            ("SIP__RTPTIMEOUT", "3"),
        ],
    );
    let dir = temp_dir();
    let phone_tone = sip::tone_pcap(&dir, "pcmu", PHONE_A, 20);
    let announcement = sip::tone_pcap(&dir, "pcmu", PHONE_B, 2);
    put_trunk(&server);
    let provider = sip::sipp_uas(
        &dir,
        "uas_early.xml",
        5080,
        6200,
        &["-key", "pcap", &announcement.display().to_string()],
    );
    let phone = phone_in_room(&server, &dir, &phone_tone, 12_000);
    let phone_hears = sip::capture_all(6000, 5, &[PHONE_B]);
    let r = dial(&server, "room", r#"{"number":"1234"}"#);
    assert_eq!(r.status, 202, "{}", r.body);
    let report = sip::captured(phone_hears);
    sip::passed(provider, &dir, "the provider");
    sip::passed(phone, &dir, "the phone");
    assert!(
        sip::tone_db(&report, PHONE_B) >= 30.0,
        "the channel did not hear the early media: {report:#}\n{}",
        server.log_tail()
    );
    assert!(
        server.log_tail().contains("early media (SIP/2.0 183"),
        "{}",
        server.log_tail()
    );
    let m = server.metrics();
    assert_eq!(m["switchyard_sip_calls_out_failed_total"], 0.0, "{m:?}");
}

/// `DELETE /channels/{channel}/dial/{call}` on `server`'s admin API.
fn hang_up(server: &Server, channel: &str, call: &str) -> switchyard_tests::http::Response {
    admin(
        server,
        "DELETE",
        &format!("/channels/{channel}/dial/{call}"),
        "",
    )
}

/// The call id in a `POST .../dial` answer.
fn call_id(r: &switchyard_tests::http::Response) -> String {
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("dial's JSON");
    body["call"].as_str().expect("a call id").to_string()
}

/// `DELETE /channels/{channel}/dial/{call}` hangs a call out up: one that rings is cancelled
/// (the callee sees the CANCEL and ends the INVITE with 487), one that is answered gets a BYE
/// at once (not at the RTP timeout, 20 s here). Unknown calls, and calls asked for under
/// another channel, are 404. A callee's key presses sent as INFO are taken.
#[test]
fn calls_out_are_hung_up_ringing_or_answered() {
    netns::enter();
    let server = Server::start_with_env(
        &[],
        &[
            ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
            ("SIP__RTPTIMEOUT", "20"),
        ],
    );
    let dir = temp_dir();
    let callee_tone = sip::tone_pcap(&dir, "pcmu", PHONE_B, 20);
    for (name, port) in [("ringing", 5080), ("answering", 5082)] {
        let trunk = format!(r#"{{"domain":"127.0.0.1:{port}","canTerminate":true}}"#);
        let r = admin(&server, "PUT", &format!("/sip/trunks/{name}"), &trunk);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = hang_up(&server, "room", "0123456789abcdef");
    assert_eq!(r.status, 404, "{}", r.body);
    let r = admin(&server, "GET", "/openapi.json", "");
    assert!(
        r.body.contains("/channels/{channel}/dial/{call}"),
        "{}",
        r.body
    );

    // Ringing: CANCEL.
    let ringing = sip::sipp_uas(&dir, "uas_ring.xml", 5080, 6200, &[]);
    let r = dial(&server, "room", r#"{"number":"1234","trunk":"ringing"}"#);
    assert_eq!(r.status, 202, "{}", r.body);
    let call = call_id(&r);
    // Ringing by then (a CANCEL may only follow a provisional response).
    std::thread::sleep(Duration::from_millis(1500));
    let r = hang_up(&server, "hall", &call);
    assert_eq!(r.status, 404, "another channel's call: {}", r.body);
    let r = hang_up(&server, "room", &call);
    assert_eq!(r.status, 204, "{}", r.body);
    sip::passed(ringing, &dir, "the ringing callee");

    // Answered: BYE.
    let answering = sip::sipp_uas(
        &dir,
        "uas_answer.xml",
        5082,
        6202,
        &["-key", "pcap", &callee_tone.display().to_string()],
    );
    let r = dial(&server, "room", r#"{"number":"5678","trunk":"answering"}"#);
    assert_eq!(r.status, 202, "{}", r.body);
    let call = call_id(&r);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metrics()["switchyard_sip_calls_active"] < 1.0 {
        assert!(
            Instant::now() < deadline,
            "never answered:\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let asked = Instant::now();
    let r = hang_up(&server, "room", &call);
    assert_eq!(r.status, 204, "{}", r.body);
    sip::passed(answering, &dir, "the answering callee");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the BYE took {:?}",
        asked.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while hang_up(&server, "room", &call).status != 404 {
        assert!(Instant::now() < deadline, "the call never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = server.metrics();
    assert_eq!(m["switchyard_sip_calls_out_total"], 2.0, "{m:?}");
    assert_eq!(m["switchyard_sip_calls_out_failed_total"], 0.0, "{m:?}");

    // Answered by a phone that presses a key as SIP INFO: the INVITE's Call-ID finds the call
    // (200, the digit counted); a body of another kind gets 415.
    let bare = sip::BareUa::new(5084);
    let r = admin(
        &server,
        "PUT",
        "/sip/trunks/bare",
        r#"{"domain":"127.0.0.1:5084","canTerminate":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = dial(&server, "room", r#"{"number":"4321","trunk":"bare"}"#);
    assert_eq!(r.status, 202, "{}", r.body);
    let call = call_id(&r);
    let invite = bare.wait_for("INVITE ", Duration::from_secs(5));
    bare.answer(&invite, 6204);
    bare.wait_for("ACK ", Duration::from_secs(5));
    bare.info_back(
        &invite,
        1,
        "application/dtmf-relay",
        "Signal=7\r\nDuration=160\r\n",
    );
    let ok = bare.wait_for("SIP/2.0 ", Duration::from_secs(5));
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}\n{}", server.log_tail());
    bare.info_back(&invite, 2, "text/plain", "hello");
    let refused = bare.wait_for("SIP/2.0 ", Duration::from_secs(5));
    assert!(refused.starts_with("SIP/2.0 415"), "{refused}");
    assert_eq!(server.metrics()["switchyard_sip_dtmf_digits_in_total"], 1.0);
    let r = hang_up(&server, "room", &call);
    assert_eq!(r.status, 204, "{}", r.body);
    let bye = bare.wait_for("BYE ", Duration::from_secs(5));
    bare.ok(&bye);
}

/// Requests the SIP stack cannot parse (garbage, an INVITE cut short in its head or its body,
/// a header line without a colon, one without a CSeq) get no answer but a 400, and take
/// nothing down: a call right after them is answered. (ezk drops them unanswered and offers no
/// place to answer them 400 from: see docs/architecture.md, "Bad input".)
#[test]
fn malformed_requests_break_nothing() {
    netns::enter();
    let server = Server::start(&[]);
    let ua = BareUa::new(5090);
    let head = "INVITE sip:room@127.0.0.1:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-bad;rport\r\n\
        From: <sip:bad@127.0.0.1:5090>;tag=b1\r\nTo: <sip:room@127.0.0.1>\r\n\
        Call-ID: malformed-1\r\nMax-Forwards: 70\r\n";
    ua.socket
        .send_to(b"\x00\x01garbage\xff\xfe\r\n\r\n", "127.0.0.1:5060")
        .expect("send");
    for request in [
        format!("{head}CSeq: 1 INVITE\r\nContent-Length: 300\r\n\r\nv=0\r\n"),
        format!("{head}CSeq: 1 INVITE\r\nContact: <sip:bad@127.0"),
        format!("{head}CSeq: 1 INVITE\r\nno colon here\r\nContent-Length: 0\r\n\r\n"),
        format!("{head}Content-Length: 0\r\n\r\n"),
    ] {
        ua.send(&request);
    }
    let got = ua.receive(Duration::from_millis(1500));
    assert!(
        got.iter().all(|(_, m)| m.starts_with("SIP/2.0 400")),
        "answered other than 400: {got:?}"
    );

    let caller = BareUa::new(5091);
    caller.invite("room", "0", "", 7000);
    let got = caller.receive(Duration::from_secs(2));
    let (_, ok) = got
        .iter()
        .find(|(_, m)| m.starts_with("SIP/2.0 200"))
        .unwrap_or_else(|| panic!("the call after the malformed requests: {got:?}"));
    caller.ack("room", &sip::to_tag(ok).expect("a To tag in the 200"));
    assert_eq!(server.metrics()["switchyard_sip_calls_in_total"], 1.0);
}

/// A SIPp phone (5070, RTP 6000) calling channel "room", playing `tone` for `hold_ms`; returns
/// once it has joined the channel.
fn phone_in_room(server: &Server, dir: &Path, tone: &Path, hold_ms: u32) -> std::process::Child {
    let phone = sip::sipp(
        dir,
        "uac_tone.xml",
        "room",
        5070,
        6000,
        &[
            "-key",
            "pcap",
            &tone.display().to_string(),
            "-d",
            &hold_ms.to_string(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log_tail().contains(r#"user="sip:sipp""#) {
        assert!(
            Instant::now() < deadline,
            "the phone never joined:\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    phone
}

/// Trunk "main": the SIPp callee on 5080, for calls out.
fn put_trunk(server: &Server) {
    let trunk = r#"{"domain":"127.0.0.1:5080","canTerminate":true}"#;
    let r = admin(server, "PUT", "/sip/trunks/main", trunk);
    assert_eq!(r.status, 200, "{}", r.body);
}
