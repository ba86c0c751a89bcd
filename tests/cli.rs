//! The command line: the token contract, configuration from the environment, errors, shutdown,
//! and the admin API an all-in-one serves with the key it generates.

use std::process::Command;

use switchyard_dataplane::client::{self, OfferTrack};
use switchyard_dataplane::dtls::Identity;
use switchyard_dataplane::ice::Credentials;
use switchyard_dataplane::media::Codec;
use switchyard_tests::server::{Server, temp_dir};
use switchyard_tests::{binary, http, netns};

fn whip(port: u16, channel: &str, token: &str, sdp: &str) -> http::Response {
    let auth = format!("Bearer {token}");
    http::request(
        port,
        "POST",
        &format!("/whip/{channel}"),
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        sdp,
    )
    .expect("POST /whip")
}

fn offer() -> String {
    let id = Identity::generate().unwrap();
    client::offer(
        &Credentials::random(),
        id.fingerprint(),
        &[OfferTrack::Send {
            codec: Codec::Vp8,
            payload_type: 96,
            ssrc: 7,
        }],
        1,
    )
}

/// `switchyard token --channel C` in the working directory of a default all-in-one prints one
/// line the server accepts for C, with publish and subscribe rights.
#[test]
fn token_from_the_same_directory_is_accepted() {
    netns::enter();
    let dir = temp_dir();
    let server = Server::start_in(&dir, &[], &[]);
    let out = Command::new(binary())
        .current_dir(&dir)
        .args(["token", "--channel", "C"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    let token = stdout.trim();
    // Publish right: WHIP accepts it (and publishes).
    let r = whip(server.port, "C", token, &offer());
    assert_eq!(r.status, 201, "{}", r.body);
    // Another channel is refused, with the reason.
    let r = whip(server.port, "D", token, &offer());
    assert_eq!(r.status, 401);
    assert!(r.body.contains("does not grant channel"), "{}", r.body);
    // Subscribe right: WHEP accepts it.
    let auth = format!("Bearer {token}");
    let sub = client::offer(
        &Credentials::random(),
        Identity::generate().unwrap().fingerprint(),
        &[OfferTrack::Receive {
            codec: Codec::Vp8,
            payload_type: 96,
        }],
        1,
    );
    let r = http::request(
        server.port,
        "POST",
        "/whep/C",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        &sub,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    // A token without publish rights cannot publish.
    let viewer = server.token("C", "viewer", &["--no-publish"]);
    let r = whip(server.port, "C", &viewer, &offer());
    assert_eq!(r.status, 401);
    assert!(r.body.contains("publishing"), "{}", r.body);
}

/// EXTERNAL:PUBLICIPADDRESS (as EXTERNAL__PUBLICIPADDRESS) overrides the announced address.
#[test]
fn public_ip_setting_is_announced() {
    netns::enter();
    let dir = temp_dir();
    let server = Server::start_in(&dir, &[], &[("EXTERNAL__PUBLICIPADDRESS", "203.0.113.9")]);
    let token = server.token("room", "u", &[]);
    let r = whip(server.port, "room", &token, &offer());
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        r.body.contains("a=candidate:1 1 udp") && r.body.contains(" 203.0.113.9 4915"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("127.0.0.1 4915"), "{}", r.body);
}

/// With only loopback, the server announces 127.0.0.1.
#[test]
fn loopback_only_announces_localhost() {
    netns::enter();
    let server = Server::start(&[]);
    let token = server.token("room", "u", &[]);
    let r = whip(server.port, "room", &token, &offer());
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.contains(" 127.0.0.1 4915"), "{}", r.body);
}

#[test]
fn bad_settings_fail_fast_with_the_setting_named() {
    netns::enter();
    let out = Command::new(binary())
        .current_dir(temp_dir())
        .args(["all-in-one"])
        .env("EXTERNAL__PUBLICIPADDRESS", "not-an-ip")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("EXTERNAL:PUBLICIPADDRESS") && err.contains("not-an-ip"),
        "{err}"
    );
    let out = Command::new(binary())
        .args(["all-in-one", "--media-ports", "9-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--media-ports"));
    let out = Command::new(binary())
        .args(["all-in-one", "--io-backend", "epoll"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected uring or mmsg"));
}

/// `config print`: the file, the environment over it, where each value came from, secrets
/// masked; a bad file or value stops `all-in-one` before it binds a port.
#[test]
fn config_print_and_bad_configuration() {
    netns::enter();
    let dir = temp_dir();
    let file = dir.join("switchyard.toml");
    std::fs::write(
        &file,
        "region = \"eu-west\"\n[connectionstrings]\ndefault = \"postgres://sy:hunter2@db:5432/sy\"\n\
         [admin]\nipaddresses = [\"10.0.0.0/8\", \"127.0.0.1\"]\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["config", "print", "--config"])
        .arg(&file)
        .env("REGION", "us-east")
        .env("CONNECTIONSTRINGS__CACHE", "redis://:pw@cache:6379")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("REGION") && text.contains("us-east  (environment REGION)"),
        "{text}"
    );
    assert!(text.contains("postgres://sy:****@db:5432/sy"), "{text}");
    assert!(text.contains("redis://:****@cache:6379"), "{text}");
    assert!(text.contains("10.0.0.0/8,127.0.0.1"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains(":pw@"),
        "{text}"
    );

    std::fs::write(&file, "[admin]\nipaddresses = \"10.0.0.0/99\"\n").unwrap();
    let out = Command::new(binary())
        .current_dir(&dir)
        .args(["all-in-one", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ADMIN:IPADDRESSES") && err.contains("10.0.0.0/99"),
        "{err}"
    );
    assert!(
        !err.contains("media worker started"),
        "it must fail before binding: {err}"
    );
    assert!(
        !dir.join("switchyard-data").exists(),
        "nothing written before the check"
    );
}

/// `switchyard cert` writes a PEM pair for the names given, the key private, and never
/// overwrites.
#[test]
fn cert_writes_a_self_signed_pair() {
    let dir = temp_dir();
    let run = || {
        Command::new(binary())
            .current_dir(&dir)
            .args(["cert", "--name", "media.test", "--name", "127.0.0.1"])
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = std::fs::read_to_string(dir.join("switchyard-cert.pem")).unwrap();
    let key = std::fs::read_to_string(dir.join("switchyard-key.pem")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("switchyard-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // OpenSSL reads it and sees both names.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.join("switchyard-cert.pem"))
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("DNS:media.test") && text.contains("IP Address:127.0.0.1"),
        "{text}"
    );
    let again = run();
    assert!(!again.status.success(), "must not overwrite");
    assert!(String::from_utf8_lossy(&again.stderr).contains("switchyard-key.pem"));
}

#[test]
fn help_and_shutdown() {
    let out = Command::new(binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("all-in-one") && help.contains("token"),
        "{help}"
    );
    netns::enter();
    let mut server = Server::start(&[]);
    let status = server.stop();
    assert!(status.success(), "SIGTERM should stop cleanly: {status}");
    assert!(server.log_tail().contains("stopped"));
}

/// `curl` from `from` to the admin API on 9090 with `headers` and an optional JSON body:
/// (status, JSON body, or the text as a JSON string when it is not JSON).
fn admin_curl(
    from: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--interface", from])
        .args(["-X", method])
        .arg(format!("http://127.0.0.1:9090/admin/api/v1{path}"));
    for h in headers {
        c.args(["-H", h]);
    }
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "--data", b]);
    }
    let out = c.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let json = serde_json::from_str(body).unwrap_or_else(|_| body.into());
    (code.trim().parse().unwrap_or(0), json)
}

/// A default all-in-one serves the admin API on 9090 with the key it generated into its data
/// directory, from ADMIN:IPADDRESSES only: itself as the one media server (which refuses to
/// drain), an application created there whose tokens it then accepts, its channels with their
/// clients, a kick that closes the client's socket with 4003, and the audit log.
#[test]
fn all_in_one_admin_api_with_its_generated_key() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    netns::enter();
    let server = Server::start_with_env(&[], &[("ADMIN__IPADDRESSES", "127.0.0.1/32")]);
    let key = std::fs::read_to_string(server.data_dir.join("admin-api-key")).unwrap();
    let key = format!("X-API-Key: {}", key.trim());
    assert!(
        server.log_tail().contains("admin-api-key"),
        "the log says where the key is: {}",
        server.log_tail()
    );
    let admin = |method: &str, path: &str, body: Option<&str>| {
        admin_curl("127.0.0.1", method, path, &[&key], body)
    };

    // Refusals: no key, a wrong key, a caller outside ADMIN:IPADDRESSES.
    let (status, body) = admin_curl("127.0.0.1", "GET", "/applications", &[], None);
    assert_eq!(status, 401, "{body}");
    let wrong = ["X-API-Key: wrong-key-wrong-key-wrong"];
    let (status, body) = admin_curl("127.0.0.1", "GET", "/applications", &wrong, None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = admin_curl("127.0.0.2", "GET", "/applications", &[&key], None);
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("ADMIN:IPADDRESSES"), "{body}");

    // Itself as the one media server, which cannot drain.
    let (status, servers) = admin("GET", "/media-servers", None);
    assert_eq!(status, 200, "{servers}");
    assert_eq!(servers.as_array().map(Vec::len), Some(1), "{servers}");
    assert_eq!(servers[0]["id"], "all-in-one");
    let (status, body) = admin("POST", "/media-servers/all-in-one/drain", None);
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("SIGTERM"), "{body}");
    assert_eq!(admin("DELETE", "/media-servers/all-in-one", None).0, 409);
    assert_eq!(admin("GET", "/media-servers/nope", None).0, 404);

    // An application made here: its tokens are accepted once the store is read again.
    let secret = "acme-secret-0123456789";
    let token = server.token("C", "alice", &["--application", "acme", "--secret", secret]);
    assert_eq!(whip(server.port, "C", &token, &offer()).status, 401);
    let body = format!(r#"{{"secrets":["{secret}"]}}"#);
    let (status, app) = admin("PUT", "/applications/acme", Some(&body));
    assert_eq!((status, &app["id"]), (200, &"acme".into()), "{app}");
    let (status, apps) = admin("GET", "/applications", None);
    assert_eq!(status, 200);
    assert!(
        apps.as_array()
            .is_some_and(|a| a.iter().any(|x| x["id"] == "acme")),
        "{apps}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = whip(server.port, "C", &token, &offer());
        if r.status == 201 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new application's token is still refused: {} {}",
            r.status,
            r.body
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    // Its channels with their clients; a kick closes the client's socket.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async("ws://127.0.0.1:8080/sync")
            .await
            .unwrap();
        let join = serde_json::json!({ "type": "join", "token": token, "channel": "C" });
        ws.send(Message::text(join.to_string())).await.unwrap();
        let participant = loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["type"], "joined", "{v}");
                break v["participant"].as_str().unwrap().to_string();
            }
        };
        let (status, channels) = admin("GET", "/channels", None);
        assert_eq!(status, 200, "{channels}");
        assert_eq!(channels[0]["id"], "C", "{channels}");
        let clients = channels[0]["clients"].as_array().unwrap();
        assert_eq!(
            clients.len(),
            2,
            "the WHIP publisher and the socket: {channels}"
        );
        assert!(
            clients
                .iter()
                .any(|c| c["connections"][0]["kind"] == "publication"),
            "{channels}"
        );
        let (status, channel) = admin("GET", "/channels/C", None);
        assert_eq!(status, 200);
        assert!(
            channel["clients"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == participant.as_str() && c["user"] == "alice"),
            "{channel}"
        );
        assert_eq!(admin("GET", "/channels/D", None).0, 404);
        assert_eq!(admin("DELETE", "/channels/C/clients/nobody", None).0, 404);
        let path = format!("/channels/C/clients/{participant}");
        assert_eq!(admin("DELETE", &path, None).0, 204);
        let mut kicked = false;
        let mut closed = None;
        while let Ok(Some(Ok(m))) =
            tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await
        {
            match m {
                Message::Text(t) => kicked |= t.contains("kicked"),
                Message::Close(frame) => {
                    closed = frame.map(|f| u16::from(f.code));
                    break;
                }
                _ => {}
            }
        }
        assert!(kicked, "the client is told it was kicked");
        assert_eq!(closed, Some(4003));
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, channel) = admin("GET", "/channels/C", None);
        let left = channel["clients"].as_array().map_or(0, Vec::len);
        if left == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the kicked client is still listed: {channel}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // The audit log has the change and the kick.
    let (status, audit) = admin("GET", "/audit", None);
    assert_eq!(status, 200);
    let audit = audit.to_string();
    assert!(
        audit.contains("client.kick") && audit.contains("acme"),
        "{audit}"
    );
}

/// `LOG__FORMAT=json` (or `--log-format json`): one JSON object per log line, the message and
/// its fields as keys, so a shipper indexes a publication's channel and participant directly.
#[test]
fn json_logs_carry_the_fields() {
    netns::enter();
    let dir = temp_dir();
    let server = Server::start_in(&dir, &[], &[("LOG__FORMAT", "json")]);
    let token = server.token("room", "u", &[]);
    let r = whip(server.port, "room", &token, &offer());
    assert_eq!(r.status, 201, "{}", r.body);
    // The log is written by a background thread: the line may come just after the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (text, lines) = loop {
        let text = std::fs::read_to_string(dir.join("server.log")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.iter().any(|l| l["message"] == "published") || std::time::Instant::now() > deadline
        {
            break (text, lines);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Every whole line is JSON with a level and a time (the last may be half-written).
    let whole = text.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines.len() + 1 >= whole, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let published = lines
        .iter()
        .find(|l| l["message"] == "published")
        .unwrap_or_else(|| panic!("no published line in {text}"));
    assert_eq!(published["channel"], "room", "{published}");
    assert!(published["publication"].is_string(), "{published}");
}
