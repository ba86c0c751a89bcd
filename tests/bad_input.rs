//! Bad input against a running server while a healthy aiortc publisher and player stream
//! through it: every kind of bad packet or request is dropped and counted, or answered with a
//! clear error, and the healthy pair never stops getting frames.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use switchyard_dataplane::dtls::Identity;
use switchyard_tests::peer::Peer;
use switchyard_tests::server::Server;
use switchyard_tests::{http, netns, python, repo};
use tokio_tungstenite::tungstenite::Message;

/// Video frames the healthy player has decoded so far, per second of its run.
#[derive(Default)]
struct Progress {
    frames: Vec<u64>,
    result: Option<serde_json::Value>,
}

fn frames(p: &Arc<Mutex<Progress>>) -> u64 {
    p.lock().unwrap().frames.last().copied().unwrap_or(0)
}

/// Waits until `metric` (a drop reason) exceeds `before`.
fn rises(server: &Server, reason: &str, before: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = server.drops(reason);
        if now > before {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "drop counter {reason} did not rise above {before}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bad_input_is_dropped_and_counted_while_healthy_sessions_continue() {
    netns::enter();
    let mut server = Server::start(&[]);
    let base = format!("http://127.0.0.1:{}", server.port);

    // The healthy pair.
    let publish = server.token("live", "encoder", &[]);
    let play = server.token("live", "viewer", &[]);
    let mut healthy = Command::new(python())
        .arg(repo().join("tests/aiortc/whip_whep.py"))
        .args([&base, "live", &publish, &play, "--seconds", "22"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start aiortc");
    let progress = Arc::new(Mutex::new(Progress::default()));
    let reader = {
        let progress = progress.clone();
        let stdout = healthy.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let mut p = progress.lock().unwrap();
                if let Some(f) = v.get("video_frames").and_then(|f| f.as_u64())
                    && v.get("t").is_some()
                {
                    p.frames.push(f);
                }
                if v.get("ok").is_some() {
                    p.result = Some(v);
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while frames(&progress) < 30 {
        assert!(Instant::now() < deadline, "the healthy pair never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let frames_at_attack = frames(&progress);

    // 1. Random and truncated datagrams at every media port.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let malformed = server.drops("malformed");
    let unknown = server.drops("unknown_source");
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 1400) as usize;
        let mut d: Vec<u8> = (0..len).map(|j| (seed >> (j % 56)) as u8).collect();
        if i % 3 == 0 && !d.is_empty() {
            d[0] = 0x80; // RTP-looking
        }
        let _ = junk.send_to(&d, ("127.0.0.1", 49152 + (i % 2) as u16));
    }
    rises(&server, "malformed", malformed);
    rises(&server, "unknown_source", unknown);

    // 2. STUN with a wrong MESSAGE-INTEGRITY for a real ufrag.
    let identity = Identity::generate().unwrap();
    let attacker_token = server.token("attack", "mallory", &[]);
    let peer =
        Peer::whip(server.port, "attack", &attacker_token, &identity, None).expect("WHIP publish");
    let before = server.drops("stun_bad_integrity");
    peer.send(&peer.bad_integrity_check());
    rises(&server, "stun_bad_integrity", before);

    // 3. SRTP before the DTLS handshake, from an address that passed ICE.
    let mut early =
        Peer::whip(server.port, "attack", &attacker_token, &identity, None).expect("WHIP publish");
    assert!(early.ice_check(), "ICE check answered");
    let before = server.drops("srtp_before_dtls");
    early.send(&Peer::plain_rtp(1, b"too early"));
    rises(&server, "srtp_before_dtls", before);

    // 4. A DTLS peer whose certificate does not match the fingerprint in its offer.
    let other = Identity::generate().unwrap();
    let mut impostor = Peer::whip(
        server.port,
        "attack",
        &attacker_token,
        &identity,
        Some(other.fingerprint()),
    )
    .expect("WHIP");
    let before = server.drops("dtls_failed");
    assert!(
        !impostor.connect(Duration::from_secs(3)),
        "a mismatched certificate must not connect"
    );
    rises(&server, "dtls_failed", before);

    // 5. Replayed SRTP.
    let mut honest =
        Peer::whip(server.port, "attack", &attacker_token, &identity, None).expect("WHIP");
    assert!(
        honest.connect(Duration::from_secs(5)),
        "an honest peer connects"
    );
    let packet = honest.srtp(100, &[0x10, 0x00, 0x9d, 0x01, 0x2a]);
    honest.send(&packet);
    let before = server.drops("srtp_replay");
    for _ in 0..5 {
        honest.send(&packet);
    }
    rises(&server, "srtp_replay", before);

    // 6. Malformed signalling JSON after a valid join: an error, and the socket stays usable.
    // 7. A forged token at join: closed with the reason.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = server.port;
    let ws_token = server.token("attack", "ws", &[]);
    runtime.block_on(async move {
        let url = format!("ws://127.0.0.1:{port}/sync");
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        ws.send(Message::text(format!(r#"{{"type":"join","token":"{ws_token}"}}"#))).await.unwrap();
        let joined = next_json(&mut ws).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        ws.send(Message::text("{this is not json")).await.unwrap();
        let e = next_json(&mut ws).await;
        assert_eq!(e["type"], "error");
        assert!(e["reason"].as_str().unwrap().contains("malformed message"), "{e}");
        ws.send(Message::text(r#"{"type":"publish","id":5,"offer":"garbage"}"#)).await.unwrap();
        let e = next_json(&mut ws).await;
        assert_eq!((e["type"].as_str(), e["id"].as_i64()), (Some("error"), Some(5)), "{e}");
        assert!(e["reason"].as_str().unwrap().contains("bad offer"), "{e}");
        ws.send(Message::text(r#"{"type":"unpublish","publication":"nope"}"#)).await.unwrap();
        let e = next_json(&mut ws).await;
        assert!(e["reason"].as_str().unwrap().contains("no publication nope"), "the socket still works: {e}");

        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        let forged = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJhcHBsaWNhdGlvbl9pZCI6ImRldiIsInVzZXJfaWQiOiJ4IiwiY2hhbm5lbHMiOltdLCJpYXQiOjAsImV4cCI6NDEwMjQ0NDgwMH0.AAAA";
        ws.send(Message::text(format!(r#"{{"type":"join","token":"{forged}"}}"#))).await.unwrap();
        let e = next_json(&mut ws).await;
        assert_eq!(e["type"], "error");
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 4001);
                assert!(frame.reason.contains("signature"), "{}", frame.reason);
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    });

    // 8. Forged tokens at WHIP and WHEP.
    for path in ["/whip/live", "/whep/live"] {
        let r = http::request(
            server.port,
            "POST",
            path,
            &[
                ("Content-Type", "application/sdp"),
                ("Authorization", "Bearer not.a.token"),
            ],
            "v=0",
        )
        .unwrap();
        assert_eq!(r.status, 401);
        assert!(r.body.contains("malformed token"), "{}", r.body);
    }

    // The healthy pair kept decoding through all of it, every second.
    healthy.wait().expect("aiortc finished");
    reader.join().unwrap();
    let p = progress.lock().unwrap();
    let result = p.result.clone().expect("aiortc result");
    assert_eq!(result["ok"], true, "{result:#}");
    let during: Vec<u64> = p
        .frames
        .iter()
        .copied()
        .filter(|f| *f >= frames_at_attack)
        .collect();
    assert!(
        during.windows(2).all(|w| w[1] > w[0]),
        "frames stalled during the attack: {:?}",
        p.frames
    );
    assert!(
        result["video_frames"].as_u64().unwrap() > frames_at_attack + 300,
        "{result:#} {:?}",
        p.frames
    );
    assert!(server.is_running());
    assert_eq!(http::get(server.port, "/health").unwrap().status, 200);
}

async fn next_json<S>(ws: &mut S) -> serde_json::Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time");
        match m {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}
