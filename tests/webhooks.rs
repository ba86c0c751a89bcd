//! Webhooks through all-in-one: an application registers a URL in the admin API, a receiver
//! the test runs on 127.0.0.1 checks every body's `X-ApplicationSignature` (Base64 HMAC-SHA256
//! under the application's secret), and an aiortc publisher over WHIP in a recorded channel
//! makes the channel, client, connection and recording events, up to the mixed recording's
//! `recording.mixed`. A receiver that is down for a while still gets every event, in order,
//! once it is up: deliveries are retried with backoff. The admin API's delivery log shows how
//! each went.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use switchyard_tests::server::Server;
use switchyard_tests::{http, mix, netns};

const SECRET: &str = "webhook-secret-0123456789";

/// An event as the receiver got it, and whether its signature was right.
#[derive(Debug, Clone)]
struct Received {
    signed: bool,
    event: Value,
}

/// Answers webhook posts on `listener` with 200, checking each signature with `secret`.
fn receive(listener: TcpListener, secret: &str) -> Arc<Mutex<Vec<Received>>> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let into = received.clone();
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Some((signature, body)) = read_post(stream) {
                let expected = BASE64.encode(hmac::sign(&key, &body).as_ref());
                let event = serde_json::from_slice(&body).unwrap_or(Value::Null);
                into.lock().unwrap().push(Received {
                    signed: signature.as_deref() == Some(expected.as_str()),
                    event,
                });
            }
        }
    });
    received
}

/// Reads one request's signature header and body, and answers 200.
fn read_post(mut s: TcpStream) -> Option<(Option<String>, Vec<u8>)> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let length: usize = header("content-length")?.parse().ok()?;
        if raw.len() < end + 4 + length {
            continue;
        }
        assert!(head.starts_with("POST /hooks "), "{head}");
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/json"),
            "{head}"
        );
        let body = raw[end + 4..end + 4 + length].to_vec();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .ok()?;
        return Some((header("x-applicationsignature"), body));
    }
}

/// Waits until an event of type `kind` has arrived; returns all so far.
fn wait_for(received: &Mutex<Vec<Received>>, kind: &str, within: Duration) -> Vec<Received> {
    let deadline = Instant::now() + within;
    loop {
        let now = received.lock().unwrap().clone();
        if now.iter().any(|r| r.event["type"] == kind) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} within {within:?}; received: {:#?}",
            now.iter().map(|r| &r.event).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The admin API on 9090 with the server's key: (status, JSON body).
fn admin(server: &Server, method: &str, path: &str, body: &str) -> (u16, Value) {
    let key = std::fs::read_to_string(server.data_dir.join("admin-api-key")).unwrap();
    let headers = [
        ("X-API-Key", key.trim()),
        ("Content-Type", "application/json"),
    ];
    let path = format!("/admin/api/v1{path}");
    let r = http::request(9090, method, &path, &headers, body).unwrap();
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

/// Starts all-in-one with an application `acme` whose webhook posts to 127.0.0.1:`port`, and
/// waits for the server to read it (it reads its store every 2 s).
fn server_with_webhook(port: u16, recorded: bool) -> Server {
    let env = [
        ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
        // Small muxed canvases, so that muxing takes little of the test's time.
        ("RECORDING__WIDTH", "320"),
        ("RECORDING__HEIGHT", "180"),
        ("RECORDING__FRAMERATE", "15"),
    ];
    let server = Server::start_with_env(&[], &env);
    let app = format!(r#"{{"secrets":["{SECRET}"]}}"#);
    let (status, body) = admin(&server, "PUT", "/applications/acme", &app);
    assert_eq!(status, 200, "{body}");
    if recorded {
        let config = r#"{"pattern":"hooked-*","position":0,"allowedCodecs":[],"sfuAllowed":true,"mcuAllowed":true,"recording":true}"#;
        let (status, body) = admin(&server, "PUT", "/applications/acme/channel-configs", config);
        assert_eq!(status, 200, "{body}");
    }
    let hook = format!(r#"{{"name":"main","url":"http://127.0.0.1:{port}/hooks"}}"#);
    let (status, body) = admin(&server, "PUT", "/applications/acme/webhooks", &hook);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], serde_json::json!([]), "all events: {body}");
    std::thread::sleep(Duration::from_secs(3));
    server
}

/// One publisher over WHIP in `channel` for `seconds`.
fn publish(server: &Server, channel: &str, seconds: u32) {
    let token = server.token(
        channel,
        "alice",
        &["--application", "acme", "--secret", SECRET],
    );
    let base = format!("http://127.0.0.1:{}", server.port);
    let result = mix::run(&base, channel, &[token], "", 1, "VP8", seconds);
    assert_eq!(result["ok"], true, "{result:#}");
}

/// The position of the first event of type `kind`.
fn position(events: &[Value], kind: &str) -> usize {
    events
        .iter()
        .position(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {events:#?}"))
}

/// Every event was signed right, is acme's in `channel`, and came once.
fn check_all(received: &[Received], channel: &str) -> Vec<Value> {
    let events: Vec<Value> = received.iter().map(|r| r.event.clone()).collect();
    for r in received {
        assert!(r.signed, "bad signature: {:#}", r.event);
        assert_eq!(r.event["applicationId"], "acme", "{:#}", r.event);
        assert_eq!(r.event["channelId"], channel, "{:#}", r.event);
        assert!(r.event["timestamp"].as_u64() > Some(1_700_000_000_000));
    }
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "each event once: {events:#?}");
    events
}

#[test]
fn every_event_arrives_signed() {
    netns::enter();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = receive(listener, SECRET);
    let server = server_with_webhook(port, true);

    // The admin API: listed, documented, and bad bodies refused with a clear 400.
    let (status, list) = admin(&server, "GET", "/applications/acme/webhooks", "");
    assert_eq!(
        (status, list[0]["name"].as_str()),
        (200, Some("main")),
        "{list}"
    );
    for bad in [
        "{not json",
        r#"{"name":"x"}"#,
        r#"{"url":"ftp://127.0.0.1/"}"#,
        r#"{"url":"http://127.0.0.1/","events":["nope"]}"#,
    ] {
        let (status, body) = admin(&server, "PUT", "/applications/acme/webhooks", bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    let (status, _) = admin(
        &server,
        "PUT",
        "/applications/nobody/webhooks",
        r#"{"url":"http://127.0.0.1/"}"#,
    );
    assert_eq!(status, 404);
    let (_, doc) = admin(&server, "GET", "/openapi.json", "");
    for path in [
        "/applications/{id}/webhooks",
        "/applications/{id}/webhook-deliveries",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }

    publish(&server, "hooked-1", 3);
    // The session is muxed some seconds after it ended (see the recording monitor).
    let all = wait_for(&received, "recording.mixed", Duration::from_secs(60));
    let events = check_all(&all, "hooked-1");
    let order = [
        "channel.activated",
        "client.joined",
        "recording.started",
        "connection.connected",
        "connection.closed",
        "recording.stopped",
        "client.left",
        "channel.deactivated",
        "recording.mixed",
    ];
    let at: Vec<usize> = order.iter().map(|k| position(&events, k)).collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "{order:?} at {at:?}: {events:#?}"
    );
    let joined = &events[at[1]];
    assert_eq!(joined["userId"], "alice");
    let client = joined["clientId"].as_str().unwrap();
    let connected = &events[at[3]];
    assert_eq!(connected["clientId"], client);
    assert_eq!(connected["connectionType"], "sfu");
    assert_eq!(connected["direction"], "upstream");
    assert_eq!(events[at[4]]["connectionId"], connected["connectionId"]);
    let files = events[at[2]]["recording"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "a file per track: {:#}", events[at[2]]);
    let mixed = &events[at[8]]["recording"];
    let url = mixed["url"].as_str().unwrap();
    let path = url.strip_prefix("file://").unwrap();
    assert!(std::path::Path::new(path).is_file(), "{url}");
    assert!(mixed["durationMs"].as_u64() > Some(1000), "{mixed}");
    assert_eq!(mixed["clientIds"], serde_json::json!([client]), "{mixed}");

    // The delivery log: each delivered at the first attempt, newest first.
    let (status, log) = admin(&server, "GET", "/applications/acme/webhook-deliveries", "");
    assert_eq!(status, 200, "{log}");
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), events.len(), "{log:#?}");
    assert_eq!(log[0]["eventType"], "recording.mixed");
    for d in log {
        assert_eq!(
            (&d["state"], &d["attempts"]),
            (&Value::from("delivered"), &Value::from(1)),
            "{d}"
        );
        assert_eq!(d["lastStatus"], 200);
    }
    let metrics = server.metrics();
    assert_eq!(
        metrics.get("switchyard_webhook_deliveries_total{result=\"delivered\"}"),
        Some(&(events.len() as f64))
    );
}

#[test]
fn a_receiver_down_for_a_while_still_gets_every_event() {
    netns::enter();
    // A port with nothing on it yet: posts are refused until the receiver starts.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = server_with_webhook(port, false);
    let first_post = Instant::now();
    publish(&server, "hooked-2", 2);
    // Down a few seconds more after the last event.
    std::thread::sleep(Duration::from_secs(3));
    let down = first_post.elapsed();
    let received = receive(TcpListener::bind(("127.0.0.1", port)).unwrap(), SECRET);
    // The backoff doubles to 30 s: the first retry after the receiver is up comes within
    // about as long as it was down.
    let all = wait_for(
        &received,
        "channel.deactivated",
        down * 2 + Duration::from_secs(10),
    );
    let events = check_all(&all, "hooked-2");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    // In the order they happened: one URL's deliveries wait for each other.
    assert_eq!(
        kinds,
        [
            "channel.activated",
            "client.joined",
            "connection.connected",
            "connection.closed",
            "client.left",
            "channel.deactivated"
        ],
        "{events:#?}"
    );
    let (status, log) = admin(&server, "GET", "/applications/acme/webhook-deliveries", "");
    assert_eq!(status, 200, "{log}");
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), kinds.len(), "{log:#?}");
    for d in log {
        assert_eq!(d["state"], "delivered", "{d}");
    }
    // The oldest was refused the longest.
    let first = &log[log.len() - 1];
    assert_eq!(first["eventType"], "channel.activated");
    assert!(first["attempts"].as_u64() > Some(2), "{first}");
    let metrics = server.metrics();
    assert!(
        metrics
            .get("switchyard_webhook_attempts_failed_total")
            .is_some_and(|n| *n >= 3.0),
        "{metrics:?}"
    );
}
