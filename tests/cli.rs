//! The command line: the token contract, configuration from the environment, errors, shutdown.

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
