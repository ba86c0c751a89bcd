//! The embedded TURN server against coturn's own test client (`turnutils_uclient`) over UDP,
//! TCP and TLS, and against hand-built requests for what that client cannot show: refusals,
//! quotas and bad input while a relayed session keeps flowing.

// ok: every unwrap()/expect() below is in this test-only file, on values the tests built
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchyard_dataplane::stun::{self, Class, Message};
use switchyard_dataplane::turn::client::{self, Credentials, Request};
use switchyard_dataplane::turn::{attr, auth, method};
use switchyard_tests::netns;
use switchyard_tests::server::Server;

const SECRET: &str = "turn-test-secret-0123456789";
const TURN: &str = "127.0.0.1:3478";

/// `turnutils_peer`, the echoing peer coturn's client sends to.
struct Peer(Child);

impl Peer {
    fn start() -> Peer {
        let child = Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", "3480"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer (Debian package coturn; scripts/test.sh installs it)");
        std::thread::sleep(Duration::from_millis(200));
        Peer(child)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `turnutils_uclient` with `extra` flags (transport, port) as `user`: 5 sessions of
/// `messages` 170-byte messages through channels (`-g` sets DONT-FRAGMENT; `-c` skips the
/// RTCP allocations of reserved port pairs, which WebRTC never uses and we do not offer).
fn uclient(extra: &[&str], secret: &str, user: &str, messages: u32) -> (bool, String) {
    let n = messages.to_string();
    let out = Command::new("timeout")
        .args(["60", "turnutils_uclient"])
        .args(extra)
        .args([
            "-n",
            &n,
            "-m",
            "5",
            "-l",
            "170",
            "-e",
            "127.0.0.1",
            "-r",
            "3480",
        ])
        .args(["-X", "-g", "-c", "-W", secret, "-u", user, "127.0.0.1"])
        .output()
        .expect("turnutils_uclient (Debian package coturn)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn metric(server: &Server, name: &str) -> f64 {
    server.metrics().get(name).copied().unwrap_or(0.0)
}

/// Waits until the TURN threads have published (every 250 ms).
fn settle() {
    std::thread::sleep(Duration::from_millis(400));
}

fn cert(dir: &std::path::Path) -> (String, String) {
    let cert = dir.join("turn-cert.pem").display().to_string();
    let key = dir.join("turn-key.pem").display().to_string();
    let out = Command::new(switchyard_tests::binary())
        .args([
            "cert",
            "--name",
            "127.0.0.1",
            "--cert",
            &cert,
            "--key",
            &key,
        ])
        .output()
        .expect("switchyard cert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[test]
fn coturn_client_relays_over_udp_tcp_and_tls_without_loss() {
    netns::enter();
    let dir = switchyard_tests::server::temp_dir();
    let (cert, key) = cert(&dir);
    let server = Server::start_with_env(
        &["--workers", "2"],
        &[
            ("TURN__SECRET", SECRET),
            // turnutils_peer listens on 127.0.0.1, which is refused by default.
            ("TURN__ALLOWLOOPBACKPEERS", "true"),
            ("TURN__CERTIFICATEPATH", &cert),
            ("TURN__PRIVATEKEYPATH", &key),
        ],
    );
    let _peer = Peer::start();
    for (name, flags) in [
        ("udp", &["-p", "3478"][..]),
        ("tcp", &["-t", "-p", "3478"]),
        ("tls", &["-t", "-S", "-p", "5349"]),
    ] {
        let (ok, out) = uclient(flags, SECRET, &format!("user-{name}"), 60);
        assert!(ok, "{name}: uclient failed:\n{out}\n{}", server.log_tail());
        assert!(
            out.contains("tot_send_msgs=300, tot_recv_msgs=300")
                && out.contains("Total lost packets 0 (0.000000%)"),
            "{name}: loss:\n{out}"
        );
    }
    for name in [
        "switchyard_turn_relayed_to_peer_packets_total",
        "switchyard_turn_relayed_to_client_packets_total",
    ] {
        let got = metric_reaches(&server, name, 900.0);
        assert!(got >= 900.0, "{name} = {got}");
    }
}

/// `name` once it reaches `at_least`, or its value after 5 s: the TURN threads publish every
/// 250 ms, later on a busy machine.
fn metric_reaches(server: &Server, name: &str, at_least: f64) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = metric(server, name);
        if v >= at_least || std::time::Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn refusals_wrong_secret_loopback_peers_and_quota() {
    netns::enter();
    let server = Server::start_with_env(
        &["--workers", "1"],
        &[("TURN__SECRET", SECRET), ("TURN__USERQUOTA", "2")],
    );
    let _peer = Peer::start();
    // A wrong secret: every Allocate is challenged and refused.
    let (ok, out) = uclient(&["-p", "3478"], "not-the-secret-at-all", "mallory", 10);
    assert!(!ok, "{out}");
    settle();
    assert!(metric(&server, "switchyard_turn_refused_total{code=\"401\"}") >= 2.0);
    assert_eq!(metric(&server, "switchyard_turn_allocations_total"), 0.0);
    // The right secret, but the peer is on loopback: 403 by default.
    let (ok, out) = uclient(&["-p", "3478"], SECRET, "alice", 10);
    assert!(!ok && out.contains("403"), "{out}");

    // Hand-built requests for the rest.
    let mut c = TurnClient::new("bob", 60);
    c.allocate().expect("allocate");
    for peer in [
        "127.0.0.1:9",
        "10.1.2.3:5432",
        "0.0.0.0:6379",
        "169.254.169.254:80",
    ] {
        assert_eq!(c.permission(peer.parse().unwrap()), 403, "{peer}");
    }
    // The SFU's own media socket is always allowed; another port on its address is not.
    assert_eq!(c.permission("127.0.0.1:49152".parse().unwrap()), 0);
    assert_eq!(c.permission("127.0.0.1:8080".parse().unwrap()), 403);
    // Expired credentials get 401.
    let mut expired = TurnClient::new("bob", 0);
    expired.username = format!("{}:bob", unix() - 10);
    assert_eq!(expired.allocate(), Err(401));
    // The quota: bob holds one; a second is fine, a third is refused.
    let mut second = TurnClient::new("bob", 60);
    second.allocate().expect("second allocation");
    let mut third = TurnClient::new("bob", 60);
    assert_eq!(third.allocate(), Err(486));
    settle();
    assert!(metric(&server, "switchyard_turn_refused_total{code=\"486\"}") >= 1.0);
    assert!(metric(&server, "switchyard_turn_refused_total{code=\"403\"}") >= 5.0);
}

#[test]
fn bad_input_is_dropped_while_a_relayed_session_flows() {
    netns::enter();
    let server = Server::start_with_env(
        &["--workers", "1"],
        &[
            ("TURN__SECRET", SECRET),
            ("TURN__ALLOWLOOPBACKPEERS", "true"),
        ],
    );
    // An echoing peer on loopback.
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let mut c = TurnClient::new("carol", 60);
    c.allocate().expect("allocate");
    assert_eq!(c.channel_bind(0x4000, echo_addr), 0);
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut garbage = vec![
        vec![],
        vec![0x40],
        vec![0x40, 0x00, 0x00, 0x10, 1, 2, 3],
        vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3],
        vec![0xFF; 1200],
        vec![0x00; 60_000],
    ];
    // ChannelData for a channel nobody bound, from the client's own address and another.
    let mut cd = [0u8; 64];
    let n = client::channel_data(&mut cd, 0x4999, b"nobody").unwrap();
    garbage.push(cd[..n].to_vec());
    // A request with an unknown comprehension-required attribute (answered 420).
    let mut buf = [0u8; 256];
    let n = Request::new(&mut buf, stun::method::BINDING, &[5; 12])
        .and_then(|r| r.attribute(0x7ABC, b"?"))
        .and_then(|r| r.finish(None))
        .unwrap();
    garbage.push(buf[..n].to_vec());

    let mut echoed = 0;
    for round in 0..200u32 {
        let payload = round.to_be_bytes();
        for g in &garbage {
            let _ = attacker.send_to(g, TURN);
            let _ = c.socket.send_to(g, TURN);
        }
        let n = client::channel_data(&mut cd, 0x4000, &payload).unwrap();
        c.socket.send_to(&cd[..n], TURN).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let mut got = [0u8; 2048];
            let Ok(len) = c.socket.recv(&mut got) else {
                break;
            };
            if got[..len] == cd[..n] {
                echoed += 1;
                break;
            }
        }
    }
    assert_eq!(
        echoed,
        200,
        "the relayed session lost packets:\n{}",
        server.log_tail()
    );
    settle();
    assert!(
        metric(
            &server,
            "switchyard_turn_dropped_total{reason=\"malformed\"}"
        ) >= 1000.0
    );
    assert!(
        metric(
            &server,
            "switchyard_turn_dropped_total{reason=\"unbound_channel\"}"
        ) >= 200.0
    );
    assert!(metric(&server, "switchyard_turn_refused_total{code=\"420\"}") >= 200.0);
    assert_eq!(metric(&server, "switchyard_turn_allocations"), 1.0);
}

fn unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A minimal TURN client over UDP built from the data plane's request builders.
struct TurnClient {
    socket: UdpSocket,
    username: String,
    creds: Option<Credentials>,
    next: u8,
}

impl TurnClient {
    fn new(user: &str, ttl: u64) -> TurnClient {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        TurnClient {
            socket,
            username: format!("{}:{user}", unix() + ttl),
            creds: None,
            next: 0,
        }
    }

    /// Sends a request and returns the response's class and error code (0 on success).
    fn transact(
        &mut self,
        build: impl FnOnce(&mut [u8], &[u8; 12]) -> Result<usize, stun::Error>,
    ) -> (Class, u16, Vec<u8>) {
        self.next += 1;
        let id = [self.next; 12];
        let mut buf = [0u8; 1500];
        let n = build(&mut buf, &id).unwrap();
        self.socket.send_to(&buf[..n], TURN).unwrap();
        loop {
            let mut got = [0u8; 1500];
            let len = self.socket.recv(&mut got).expect("a TURN answer");
            let Ok(m) = Message::parse(&got[..len]) else {
                continue;
            };
            if m.transaction_id() == &id {
                let code = m.error_code().map_or(0, |(c, _)| c);
                return (m.class(), code, got[..len].to_vec());
            }
        }
    }

    /// Allocate with the 401 dance; Err(code) on refusal.
    fn allocate(&mut self) -> Result<(), u16> {
        let (_, code, answer) = self.transact(|b, id| Request::allocate(b, id)?.finish(None));
        assert_eq!(code, 401);
        let m = Message::parse(&answer).unwrap();
        let realm = std::str::from_utf8(m.attribute(attr::REALM).unwrap())
            .unwrap()
            .to_string();
        let nonce = m.attribute(attr::NONCE).unwrap().to_vec();
        let password = auth::rest_password(SECRET.as_bytes(), &self.username);
        let creds = Credentials::new(&self.username, &password, &realm, &nonce);
        let (class, code, _) =
            self.transact(|b, id| Request::allocate(b, id)?.finish(Some(&creds)));
        self.creds = Some(creds);
        if class == Class::Success {
            Ok(())
        } else {
            Err(code)
        }
    }

    fn permission(&mut self, peer: SocketAddr) -> u16 {
        let creds = self.creds.clone().unwrap();
        self.transact(|b, id| {
            Request::new(b, method::CREATE_PERMISSION, id)?
                .peer(peer)?
                .finish(Some(&creds))
        })
        .1
    }

    fn channel_bind(&mut self, number: u16, peer: SocketAddr) -> u16 {
        let creds = self.creds.clone().unwrap();
        self.transact(|b, id| {
            Request::new(b, method::CHANNEL_BIND, id)?
                .channel(number)?
                .peer(peer)?
                .finish(Some(&creds))
        })
        .1
    }
}
