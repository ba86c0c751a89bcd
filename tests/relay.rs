//! Media through the embedded TURN server: Chromium pages with iceTransportPolicy 'relay'
//! publishing and subscribing through the media server over TURN/UDP, TURN/TCP and TURN/TLS,
//! each transport forced by a firewall that drops the ones before it; aiortc over WHIP and WHEP,
//! relay only, over TURN/UDP and TURN/TCP; two pages in two homes behind NAT routers that
//! cannot reach each other, connecting peer to peer through the TURN server while the media
//! server carries nothing; and two pages whose UDP is dropped entirely reaching the media
//! server over ICE-TCP.

use std::process::Command;

use serde_json::Value;
use switchyard_tests::nat::{Home, Namespace, veth};
use switchyard_tests::server::{Server, temp_dir};
use switchyard_tests::{browser_dir, last_json, netns, python, repo, script_result};

/// The servers' TURN:SECRET (the aiortc script could mint its own credential with it; the tests
/// make it learn the TURN servers from OPTIONS instead).
const SECRET: &str = "relay-tests-turn-secret-0123456789";
/// The name the TURN server's certificate is for (turns: URLs carry it).
const TURN_HOST: &str = "turn.switchyard.test";

/// Runs relay_pages.mjs for `tokens` against `base` with extra environment; its JSON result.
fn run_pages(base: &str, tokens: &[String], env: &[(&str, String)]) -> Value {
    let out = Command::new("node")
        .current_dir(browser_dir())
        .arg("relay_pages.mjs")
        .arg(base)
        .arg("room")
        .args(tokens)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run node (Node.js is needed for the browser tests)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result = last_json(&stdout)
        .unwrap_or_else(|| panic!("no JSON result from relay_pages.mjs:\n{stdout}\n{stderr}"));
    assert_eq!(
        result["ok"], true,
        "the pages did not decode each other:\n{result:#}\n{stderr}"
    );
    for page in result["pages"].as_array().expect("pages") {
        let errors = page["errors"].as_array().expect("errors");
        assert!(
            !errors
                .iter()
                .any(|e| e.as_str().is_some_and(|e| e.starts_with("pageerror"))),
            "uncaught exception in a page: {errors:?}"
        );
    }
    result
}

/// Every RTCPeerConnection of every page, with the page it belongs to.
fn connections(result: &Value) -> Vec<(u64, &Value)> {
    result["pages"]
        .as_array()
        .expect("pages")
        .iter()
        .flat_map(|p| {
            let page = p["page"].as_u64().unwrap_or(u64::MAX);
            p["connections"]
                .as_array()
                .expect("connections")
                .iter()
                .map(move |c| (page, c))
        })
        .collect()
}

fn tokens(server: &Server, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| server.token("room", &format!("user{i}"), &[]))
        .collect()
}

/// The TURN transport a test forces, by dropping what a client would use before it.
#[derive(Clone, Copy, PartialEq)]
enum Turn {
    Udp,
    Tcp,
    Tls,
}

impl Turn {
    /// `relayProtocol` of the local relay candidate in WebRTC stats.
    fn protocol(self) -> &'static str {
        match self {
            Turn::Udp => "udp",
            Turn::Tcp => "tcp",
            Turn::Tls => "tls",
        }
    }

    /// The ICE server URL the relay candidate must come from.
    fn url(self) -> String {
        match self {
            Turn::Udp => "turn:127.0.0.1:3478?transport=udp".into(),
            Turn::Tcp => "turn:127.0.0.1:3478?transport=tcp".into(),
            Turn::Tls => format!("turns:{TURN_HOST}:5349?transport=tcp"),
        }
    }

    /// Firewall rules (OUTPUT) that leave this transport the only one that works: with UDP to
    /// 3478 dropped a client can only fall back to TCP; with 3478 dropped entirely, to TLS on
    /// 5349. Each rule's counter later shows the client did try what was dropped.
    fn block(self, ns: &Namespace) -> usize {
        let rules: &[&str] = match self {
            Turn::Udp => &[],
            Turn::Tcp => &["udp"],
            Turn::Tls => &["udp", "tcp"],
        };
        for proto in rules {
            ns.iptables(&["-A", "OUTPUT", "-p", proto, "--dport", "3478", "-j", "DROP"]);
        }
        rules.len()
    }
}

/// A certificate for TURN_HOST from `switchyard cert`, and the base64 SHA-256 of its public
/// key (SubjectPublicKeyInfo), which is what Chromium's --ignore-certificate-errors-spki-list
/// takes.
fn certificate(dir: &std::path::Path) -> (String, String, String) {
    use base64::Engine as _;
    use rcgen::PublicKeyData as _;
    let (cert, key) = switchyard_tests::certificate(dir, TURN_HOST);
    let pem = std::fs::read_to_string(&key).expect("read the key");
    let spki = rcgen::KeyPair::from_pem(&pem)
        .expect("parse the key")
        .subject_public_key_info();
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki);
    (
        cert.display().to_string(),
        key.display().to_string(),
        base64::engine::general_purpose::STANDARD.encode(hash.as_ref()),
    )
}

/// Two pages, relay only, publish and subscribe through the media server, with TURN over
/// `turn` the only way that works; every connection's selected pair must be our relay
/// candidate over that transport to the media server's host candidate.
fn chromium_through_the_sfu(turn: Turn) {
    netns::enter();
    let test = Namespace::current("test");
    let dropped = turn.block(&test);
    let dir = temp_dir();
    let mut env: Vec<(&str, String)> = Vec::new();
    let mut page_env = vec![("RELAY", "1".to_string())];
    if turn == Turn::Tls {
        // turns: URLs name the host; the browser resolves it through its own /etc/hosts and
        // checks the certificate against it. Chromium checks a TURN server's certificate like
        // a web server's: without the SPKI pin no TLS relay candidate is gathered at all.
        netns::hosts(&[(TURN_HOST, "127.0.0.1")]);
        let (cert, key, spki) = certificate(&dir);
        env.push(("TURN__CERTIFICATEPATH", cert));
        env.push(("TURN__PRIVATEKEYPATH", key));
        env.push(("EXTERNAL__PUBLICHOSTNAME", TURN_HOST.to_string()));
        page_env.push((
            "CHROMIUM_ARGS",
            format!("--ignore-certificate-errors-spki-list={spki}"),
        ));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_in(&dir, &[], &env);
    let base = format!("http://127.0.0.1:{}", server.port);
    let result = run_pages(&base, &tokens(&server, 2), &page_env);

    let all = connections(&result);
    // Each page: its publication and a subscription to the other's.
    assert_eq!(all.len(), 4, "{result:#}");
    for (page, c) in &all {
        let ctx = format!("page {page} {}: {c:#}", c["kind"]);
        assert_eq!(c["state"], "connected", "{ctx}");
        assert_eq!(c["policy"], "relay", "{ctx}");
        assert_eq!(c["local"]["type"], "relay", "{ctx}");
        assert_eq!(c["local"]["relayProtocol"], turn.protocol(), "{ctx}");
        assert_eq!(c["local"]["url"], turn.url().as_str(), "{ctx}");
        // The relayed address is on the TURN server, and the peer is the media server.
        assert_eq!(c["local"]["address"], "127.0.0.1", "{ctx}");
        assert_eq!(c["remote"]["type"], "host", "{ctx}");
        // Only our relay candidates were gathered: nothing else could have been used.
        for g in c["gathered"].as_array().expect("gathered") {
            assert_eq!(g["type"], "relay", "{ctx}");
        }
    }
    for kind in ["publish", "subscribe"] {
        assert_eq!(
            all.iter().filter(|(_, c)| c["kind"] == kind).count(),
            2,
            "{result:#}"
        );
    }
    // The browser did try the transports the firewall dropped before falling back.
    let packets = test.rule_packets("OUTPUT");
    assert_eq!(packets.len(), dropped);
    assert!(packets.iter().all(|p| *p > 0), "dropped: {packets:?}");

    let m = server.metrics();
    for counter in [
        "switchyard_turn_relayed_to_peer_packets_total",
        "switchyard_turn_relayed_to_client_packets_total",
        "switchyard_rtp_forwarded_total",
        // The relays' peer is the SFU of the same process: every packet crossed in-process.
        "switchyard_turn_sfu_in_process_packets_total{direction=\"to_sfu\"}",
        "switchyard_turn_sfu_in_process_packets_total{direction=\"from_sfu\"}",
    ] {
        assert!(m[counter] > 100.0, "{counter}: {m:?}");
    }
    assert_eq!(
        m["switchyard_turn_relayed_to_peer_packets_total"],
        m["switchyard_turn_sfu_in_process_packets_total{direction=\"to_sfu\"}"],
        "{m:?}"
    );
    server.assert_cleaned_up();
}

#[test]
fn chromium_sfu_turn_udp() {
    chromium_through_the_sfu(Turn::Udp);
}

#[test]
fn chromium_sfu_turn_tcp() {
    chromium_through_the_sfu(Turn::Tcp);
}

#[test]
fn chromium_sfu_turn_tls() {
    chromium_through_the_sfu(Turn::Tls);
}

/// aiortc publishes over WHIP and another aiortc plays over WHEP, both relay only through
/// TURN over `turn` (aiortc uses one TURN URL, the one of that transport). With TCP, UDP to
/// 3478 is dropped as well, so nothing could have gone over UDP.
fn aiortc_relayed(turn: Turn) {
    netns::enter();
    let test = Namespace::current("test");
    turn.block(&test);
    let dir = temp_dir();
    let server = Server::start_in(&dir, &[], &[("TURN__SECRET", SECRET)]);
    let publish = server.token("live", "encoder", &[]);
    let play = server.token("live", "viewer", &["--no-publish"]);
    let out = Command::new(python())
        .arg(repo().join("tests/aiortc/whip_whep.py"))
        .arg(format!("http://127.0.0.1:{}", server.port))
        .args(["live", &publish, &play, "--seconds", "6"])
        // No --turn-secret: the script must learn the TURN servers from OPTIONS.
        .args(["--relay", turn.protocol()])
        .output()
        .expect("run the aiortc script");
    let result = script_result(&out, "aiortc");
    assert_eq!(result["ok"], true, "{result:#}");
    // Both sides learned the TURN servers from OPTIONS, before their offers.
    assert_eq!(
        result["ice_servers_from"],
        serde_json::json!(["OPTIONS 204", "OPTIONS 204"]),
        "{result:#}"
    );
    assert!(
        result["video_frames"].as_u64().unwrap_or(0) >= 45,
        "too few frames decoded: {result:#}"
    );
    assert!(
        result["audio_frames"].as_u64().unwrap_or(0) >= 75,
        "too little audio: {result:#}"
    );
    for side in ["publisher_pairs", "player_pairs"] {
        let pairs = result[side].as_array().expect("pairs");
        assert!(!pairs.is_empty(), "{side}: {result:#}");
        for pair in pairs {
            assert_eq!(pair["local"]["type"], "relay", "{side}: {result:#}");
            assert_eq!(
                pair["turn_transport"],
                turn.protocol(),
                "{side}: {result:#}"
            );
            assert_eq!(pair["remote"]["type"], "host", "{side}: {result:#}");
        }
    }
    // The answers name the TURN server as RFC 9725 says, with a credential for the token's
    // user.
    for (links, user) in [("whip_links", "encoder"), ("whep_links", "viewer")] {
        let servers = result[links].as_array().expect("links");
        let urls: Vec<&str> = servers
            .iter()
            .filter_map(|s| s["urls"][0].as_str())
            .collect();
        assert_eq!(
            urls,
            [Turn::Udp.url(), Turn::Tcp.url()],
            "{links}: {result:#}"
        );
        for s in servers {
            let username = s["username"].as_str().unwrap_or_default();
            assert!(username.ends_with(&format!(":{user}")), "{links}: {s}");
        }
    }
    assert_eq!(result["whep_delete"], 200, "{result:#}");
    assert_eq!(result["whip_delete"], 200, "{result:#}");
    let m = server.metrics();
    for counter in [
        "switchyard_turn_relayed_to_peer_packets_total",
        "switchyard_turn_relayed_to_client_packets_total",
    ] {
        assert!(m[counter] > 100.0, "{counter}: {m:?}");
    }
}

#[test]
fn aiortc_whip_whep_turn_udp() {
    aiortc_relayed(Turn::Udp);
}

#[test]
fn aiortc_whip_whep_turn_tcp() {
    aiortc_relayed(Turn::Tcp);
}

/// The internet of the NAT tests: the server on 203.0.113.10, alone on its link (a single
/// address, so UDP replies leave from the address clients sent to), and two homes behind
/// NAT routers on 198.51.100.2 and 198.51.100.6; the internet drops everything between the
/// two homes, so peers can reach each other only through the TURN server. Documentation
/// addresses (RFC 5737) look public to the TURN server's peer policy, as real ones would,
/// so it runs with its default policy.
struct Internet {
    internet: Namespace,
    homes: [Home; 2],
}

impl Internet {
    fn build() -> Internet {
        netns::enter();
        let test = Namespace::current("server");
        let internet = Namespace::new("internet");
        veth(
            &internet,
            "srv",
            "203.0.113.1/24",
            &test,
            "eth0",
            "203.0.113.10/24",
        );
        test.default_route("203.0.113.1");
        internet.forward();
        let home = |n: u8| {
            let isp = 4 * (n - 1);
            Home::behind_nat(
                &format!("home{n}"),
                &internet,
                &format!("isp{n}"),
                &format!("198.51.100.{}/30", isp + 1),
                &format!("198.51.100.{}/30", isp + 2),
                &format!("10.{n}.0.1/24"),
                &format!("10.{n}.0.2/24"),
            )
        };
        let homes = [home(1), home(2)];
        internet.iptables(&["-A", "FORWARD", "-i", "isp1", "-o", "isp2", "-j", "DROP"]);
        internet.iptables(&["-A", "FORWARD", "-i", "isp2", "-o", "isp1", "-j", "DROP"]);
        Internet { internet, homes }
    }
}

/// Two pages, one in each home, join a channel and connect peer to peer; with `relay_policy`
/// they may use only relay candidates, else any (and ICE finds the direct paths blocked).
fn p2p_across_nats(relay_policy: bool) {
    let net = Internet::build();
    let dir = temp_dir();
    // The server announces its only non-loopback address, 203.0.113.10, on its own.
    let server = Server::start_in(&dir, &[], &[]);
    let namespaces: Vec<String> = net
        .homes
        .iter()
        .map(|h| h.home.path().display().to_string())
        .collect();
    let mut env = vec![("MODE", "p2p".to_string()), ("NETNS", namespaces.join(","))];
    if relay_policy {
        env.push(("RELAY", "1".into()));
    }
    let result = run_pages(
        &format!("http://203.0.113.10:{}", server.port),
        &tokens(&server, 2),
        &env,
    );

    let all = connections(&result);
    assert_eq!(all.len(), 2, "{result:#}");
    let relayed = |c: &Value| c["type"] == "relay" && c["address"] == "203.0.113.10";
    for (page, c) in &all {
        let ctx = format!("page {page}: {c:#}");
        assert_eq!(c["kind"], "peer", "{ctx}");
        assert_eq!(c["state"], "connected", "{ctx}");
        if relay_policy {
            assert_eq!(c["policy"], "relay", "{ctx}");
            assert!(relayed(&c["local"]) && relayed(&c["remote"]), "{ctx}");
        } else {
            // One relayed end is enough to cross both NATs: the other side reaches that
            // relayed address from its own (reflexive or host) candidate.
            assert_eq!(c["policy"], "all", "{ctx}");
            assert!(relayed(&c["local"]) || relayed(&c["remote"]), "{ctx}");
        }
    }
    if !relay_policy {
        // ICE tried the homes' reflexive addresses directly, and the internet dropped that.
        let packets = net.internet.rule_packets("FORWARD");
        assert!(packets.iter().all(|p| *p > 0), "dropped: {packets:?}");
    }

    let m = server.metrics();
    for counter in [
        "switchyard_packets_received_total",
        "switchyard_packets_sent_total",
        "switchyard_rtp_forwarded_total",
    ] {
        assert_eq!(m[counter], 0.0, "{counter}: the media server carried media");
    }
    for counter in [
        "switchyard_turn_relayed_to_peer_packets_total",
        "switchyard_turn_relayed_to_client_packets_total",
    ] {
        assert!(m[counter] > 100.0, "{counter}: {m:?}");
    }
    if !relay_policy {
        // Permissions for the other home's private host address were refused (403): the
        // relay does not reach into private networks.
        assert!(
            m["switchyard_turn_refused_total{code=\"403\"}"] > 0.0,
            "{m:?}"
        );
    }
    server.assert_cleaned_up();
}

#[test]
fn p2p_across_nats_relay_only() {
    p2p_across_nats(true);
}

#[test]
fn p2p_across_nats_direct_blocked() {
    p2p_across_nats(false);
}

/// Two pages with policy `all` where the firewall drops every UDP packet and TURN's port:
/// they gather their TCP host candidates and reach the media server's passive ICE-TCP
/// candidates (RFC 6544), with media framed by RFC 4571 on the worker's TCP port, under the
/// I/O backend `backend`.
fn chromium_ice_tcp(backend: &str) {
    netns::enter();
    let test = Namespace::current("test");
    test.iptables(&["-A", "OUTPUT", "-p", "udp", "-j", "DROP"]);
    test.iptables(&["-A", "OUTPUT", "-p", "tcp", "--dport", "3478", "-j", "DROP"]);
    let dir = temp_dir();
    let server = Server::start_in(&dir, &["--io-backend", backend], &[]);
    let base = format!("http://127.0.0.1:{}", server.port);
    let result = run_pages(&base, &tokens(&server, 2), &[]);

    let all = connections(&result);
    assert_eq!(all.len(), 4, "{result:#}");
    for (page, c) in &all {
        let ctx = format!("page {page} {}: {c:#}", c["kind"]);
        assert_eq!(c["state"], "connected", "{ctx}");
        assert_eq!(c["policy"], "all", "{ctx}");
        // An active TCP candidate is announced with port 9; the port the connection really
        // has comes back in our check response, which makes the pair's local end peer-reflexive.
        assert_eq!(c["local"]["type"], "prflx", "{ctx}");
        assert_eq!(c["local"]["protocol"], "tcp", "{ctx}");
        assert_eq!(c["remote"]["type"], "host", "{ctx}");
        assert_eq!(c["remote"]["protocol"], "tcp", "{ctx}");
        let port = c["remote"]["port"].as_u64().unwrap_or_default();
        assert!((49152..49160).contains(&port), "{ctx}");
    }
    // The pages tried UDP (host candidates, TURN) before ICE settled on TCP.
    let packets = test.rule_packets("OUTPUT");
    assert!(packets.iter().all(|p| *p > 0), "dropped: {packets:?}");

    let m = server.metrics();
    assert!(m["switchyard_rtp_forwarded_total"] > 100.0, "{m:?}");
    assert_eq!(
        m["switchyard_turn_relayed_to_peer_packets_total"], 0.0,
        "{m:?}"
    );
    server.assert_cleaned_up();
}

#[test]
fn chromium_ice_tcp_mmsg() {
    chromium_ice_tcp("mmsg");
}

#[test]
fn chromium_ice_tcp_uring() {
    chromium_ice_tcp("uring");
}
