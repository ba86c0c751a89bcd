//! `switchyard doctor` against the seed's two failures, rebuilt in network namespaces:
//!
//! ```text
//!  srv (this test)        nat (router)                       out (the internet)
//!  10.0.0.2 ---- 10.0.0.1 | 198.51.100.1 -------- 198.51.100.10, .11: coturn (TURN + STUN x2)
//!                inbound:  203.0.113.20 -> 10.0.0.2 (DNAT)
//!                outbound: 10.0.0.2 -> SNAT address (203.0.113.20, or .30 for failure 1)
//! ```
//!
//! Failure 1: the server goes out through another address than it is reached on, so STUN
//! finds the wrong public IP. Failure 2: 3478 is closed at the NAT, so clients relying on
//! TURN time out. Doctor must name the fix for each, and pass once it is applied.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_dataplane::stun::{self, Class, Writer};
use switchyard_tests::nat::{Namespace, veth};
use switchyard_tests::netns;
use switchyard_tests::server::{Server, temp_dir};

const SECRET: &str = "doctor-probe-secret-0123";
const INBOUND: &str = "203.0.113.20";
const OTHER_OUTBOUND: &str = "203.0.113.30";
const HOSTNAME: &str = "media.example.test";

struct World {
    srv: Namespace,
    nat: Namespace,
    _out: Namespace,
    dir: PathBuf,
}

/// Builds the picture above with outbound traffic leaving as `snat_to`, starts coturn and
/// waits until it answers STUN through the NAT.
fn world(snat_to: &str) -> World {
    netns::enter();
    let dir = temp_dir();
    let srv = Namespace::current("srv");
    let nat = Namespace::new("nat");
    let mut out = Namespace::new("out");
    veth(&srv, "s0", "10.0.0.2/24", &nat, "n1", "10.0.0.1/24");
    veth(
        &nat,
        "n0",
        "198.51.100.1/24",
        &out,
        "o0",
        "198.51.100.10/24",
    );
    out.address("o0", "198.51.100.11/24");
    out.route("203.0.113.0/24", "198.51.100.1");
    srv.default_route("10.0.0.1");
    nat.forward();
    iptables(
        &nat,
        &format!("-t nat -A PREROUTING -d {INBOUND} -j DNAT --to-destination 10.0.0.2"),
    );
    iptables(
        &nat,
        &format!("-t nat -A POSTROUTING -s 10.0.0.2 -o n0 -j SNAT --to-source {snat_to}"),
    );
    let log = std::fs::File::create(dir.join("coturn.log")).expect("log");
    let mut coturn = out.command("turnserver");
    coturn
        .args(["-n", "--listening-port=3478", "--relay-ip=198.51.100.10"])
        .args([
            "--listening-ip=198.51.100.10",
            "--listening-ip=198.51.100.11",
        ])
        .args([
            "--min-port=50000",
            "--max-port=50999",
            "--realm=doctor.test",
        ])
        .args([
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
        ])
        .args([
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--log-file=stdout",
            "--simple-log",
        ])
        .arg(format!(
            "--pidfile={}",
            dir.join("turnserver.pid").display()
        ))
        .arg(format!("--userdb={}", dir.join("turndb").display()))
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log));
    out.spawn(coturn);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stun_answers("198.51.100.11:3478") {
        assert!(
            Instant::now() < deadline,
            "coturn did not answer STUN in 10 s:\n{}",
            std::fs::read_to_string(dir.join("coturn.log")).unwrap_or_default()
        );
    }
    std::fs::write(
        dir.join("hosts"),
        format!("127.0.0.1 localhost\n{INBOUND} {HOSTNAME} other.example.test\n"),
    )
    .expect("hosts");
    World {
        srv,
        nat,
        _out: out,
        dir,
    }
}

/// `iptables RULE` in `ns`, the rule written as one line (it has no quoted words).
fn iptables(ns: &Namespace, rule: &str) {
    ns.iptables(&rule.split_whitespace().collect::<Vec<_>>());
}

/// Whether a STUN Binding request to `to` gets an answer within 300 ms.
fn stun_answers(to: &str) -> bool {
    let Ok(socket) = UdpSocket::bind("0.0.0.0:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(300)));
    let mut buf = [0u8; 64];
    let mut w = Writer::new(&mut buf, stun::method::BINDING, Class::Request, &[1; 12]).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    socket.send_to(&buf[..n], to).is_ok() && socket.recv_from(&mut [0u8; 512]).is_ok()
}

/// What doctor printed and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }

    fn check(&self, id: &str) -> Value {
        self.json()["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["id"] == id).cloned())
            .unwrap_or_else(|| panic!("no check {id}:\n{}", self.stdout))
    }
}

/// Runs doctor in the server namespace as the media server would be run, with the two STUN
/// addresses and the outside probe, `env` settings and `extra` flags.
fn doctor(w: &World, env: &[(&str, &str)], extra: &[&str]) -> Run {
    let mut cmd = w
        .srv
        .with_hosts(&w.dir.join("hosts"), &switchyard_tests::binary());
    cmd.current_dir(&w.dir)
        .args(["doctor", "--workers", "2", "--media-ports", "49152-49200"])
        .args(["--stun-server", "198.51.100.10:3478"])
        .args(["--stun-server", "198.51.100.11:3478"])
        .args(["--probe-turn", "turn:198.51.100.10:3478"])
        .args(["--probe-secret", SECRET])
        .args(extra)
        .envs(env.iter().copied());
    let out = cmd.output().expect("run switchyard doctor");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // In the test's output, for whoever reads a failure.
    eprintln!(
        "--- doctor {env:?} {extra:?} -> {:?}\n{}{}",
        run.code, run.stdout, run.stderr
    );
    run
}

fn fix_value(check: &Value) -> Option<&str> {
    check["fix"]["value"].as_str()
}

/// Failure 1: inbound 203.0.113.20, outbound 203.0.113.30. STUN sees .30; only the outside
/// probe shows that .30 reaches nothing and .20 (what the public hostname resolves to) does.
#[test]
fn outbound_address_differs_from_inbound() {
    let w = world(OTHER_OUTBOUND);

    let run = doctor(&w, &[("EXTERNAL__PUBLICHOSTNAME", HOSTNAME)], &["--json"]);
    assert_eq!(run.code, Some(1));
    let stun = run.check("stun");
    assert_eq!(stun["status"], "pass", "both STUN servers agree on .30");
    assert!(stun["message"].as_str().unwrap().contains(OTHER_OUTBOUND));
    let public = run.check("public_ip");
    assert_eq!(public["status"], "fail");
    assert_eq!(public["fix"]["setting"], "EXTERNAL:PUBLICIPADDRESS");
    assert_eq!(fix_value(&public), Some(INBOUND));
    // Every unreachable port at .30 blames the address, not the firewall.
    for id in [
        "reach_media_203.0.113.30",
        "reach_media_tcp_203.0.113.30",
        "reach_turn_udp_203.0.113.30",
        "reach_turn_tcp_203.0.113.30",
    ] {
        let c = run.check(id);
        assert_eq!(c["status"], "fail", "{id}");
        assert_eq!(fix_value(&c), Some(INBOUND), "{id}");
    }

    // The same, for a person.
    let human = doctor(&w, &[("EXTERNAL__PUBLICHOSTNAME", HOSTNAME)], &[]);
    assert_eq!(human.code, Some(1));
    assert!(
        human
            .stdout
            .contains("fix: set EXTERNAL:PUBLICIPADDRESS=203.0.113.20"),
        "{}",
        human.stdout
    );
    assert!(
        human
            .stdout
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("FAILED")
    );

    // With nothing that names the inbound address, doctor says the announced one is
    // unreachable but does not make one up.
    let run = doctor(&w, &[], &["--json"]);
    assert_eq!(run.code, Some(1));
    let public = run.check("public_ip");
    assert_eq!(public["status"], "fail");
    assert_eq!(fix_value(&public), None);

    // Set right, it passes, and explains why the setting must stay.
    let run = doctor(
        &w,
        &[
            ("EXTERNAL__PUBLICHOSTNAME", HOSTNAME),
            ("EXTERNAL__PUBLICIPADDRESS", INBOUND),
        ],
        &["--json"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let public = run.check("public_ip");
    assert_eq!(public["status"], "pass");
    assert!(public["message"].as_str().unwrap().contains(OTHER_OUTBOUND));
    for id in [
        "reach_media_203.0.113.20",
        "reach_media_tcp_203.0.113.20",
        "reach_turn_udp_203.0.113.20",
        "reach_turn_tcp_203.0.113.20",
    ] {
        assert_eq!(run.check(id)["status"], "pass", "{id}");
    }
}

const CLOSE_3478: [&str; 2] = [
    "FORWARD -d 10.0.0.2 -p udp --dport 3478 -j DROP",
    "FORWARD -d 10.0.0.2 -p tcp --dport 3478 -j DROP",
];

/// Failure 2: a correct 1:1 NAT, but 3478 (UDP and TCP) dropped in front of the server.
/// TURN over TLS (5349, with a certificate for the public hostname) stays open throughout.
#[test]
fn turn_port_closed_at_the_nat() {
    let w = world(INBOUND);
    let (cert, key) = (w.dir.join("cert.pem"), w.dir.join("key.pem"));
    let made = std::process::Command::new(switchyard_tests::binary())
        .args(["cert", "--name", HOSTNAME, "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .expect("switchyard cert");
    assert!(made.status.success());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let env = [
        ("EXTERNAL__PUBLICHOSTNAME", HOSTNAME),
        ("TURN__CERTIFICATEPATH", cert.as_str()),
        ("TURN__PRIVATEKEYPATH", key.as_str()),
    ];
    for rule in CLOSE_3478 {
        iptables(&w.nat, &format!("-A {rule}"));
    }
    let run = doctor(&w, &env, &["--json"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.check("public_ip")["status"], "pass", "STUN finds .20");
    assert_eq!(run.check("reach_media_203.0.113.20")["status"], "pass");
    let udp = run.check("reach_turn_udp_203.0.113.20");
    assert_eq!(udp["status"], "fail");
    assert!(
        udp["message"]
            .as_str()
            .unwrap()
            .contains("203.0.113.20:3478/udp unreachable from outside")
    );
    assert_eq!(
        udp["fix"]["text"],
        "open UDP 3478 to this host in the firewall/NAT (TURN:PORT)"
    );
    let tcp = run.check("reach_turn_tcp_203.0.113.20");
    assert_eq!(tcp["status"], "fail");
    assert_eq!(
        tcp["fix"]["text"],
        "open TCP 3478 to this host in the firewall/NAT (TURN:PORT)"
    );
    assert_eq!(run.check("reach_turn_tls_203.0.113.20")["status"], "pass");
    assert_eq!(run.check("certificate")["status"], "pass");
    assert_eq!(run.check("certificate_names")["status"], "pass");
    assert_eq!(run.check("certificate_key")["status"], "pass");

    for rule in CLOSE_3478 {
        iptables(&w.nat, &format!("-D {rule}"));
    }
    let run = doctor(&w, &env, &["--json"]);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(run.json()["summary"]["failed"], 0);
    assert_eq!(run.json()["summary"]["warnings"], 0, "{}", run.stdout);

    // A certificate for another name fails, naming the setting it must cover.
    let env = [
        ("EXTERNAL__PUBLICHOSTNAME", "other.example.test"),
        ("TURN__CERTIFICATEPATH", cert.as_str()),
        ("TURN__PRIVATEKEYPATH", key.as_str()),
    ];
    let run = doctor(&w, &env, &["--json"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.check("certificate_names")["status"], "fail");
    assert_eq!(run.json()["summary"]["failed"], 1, "{}", run.stdout);
}

const CLOSE_MEDIA_TCP: &str = "FORWARD -d 10.0.0.2 -p tcp --dport 49152:49200 -j DROP";

/// ICE-TCP: doctor holds the workers' TCP listeners too, and the probe's TCP relay connects to
/// each. Reachable, it passes; with TCP to the media ports dropped at the NAT it fails, naming
/// the ports to open or --no-ice-tcp; with --no-ice-tcp TCP is neither bound nor probed.
#[test]
fn media_tcp_ports_reachable_or_dropped() {
    let w = world(INBOUND);
    let run = doctor(&w, &[], &["--json"]);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let ports = run.check("media_ports");
    assert!(
        ports["message"]
            .as_str()
            .unwrap()
            .starts_with("UDP and TCP 49152-49153"),
        "{ports}"
    );
    let tcp = run.check("reach_media_tcp_203.0.113.20");
    assert_eq!(tcp["status"], "pass");
    assert_eq!(
        tcp["message"],
        "203.0.113.20 TCP 49152-49153 accept connections from outside"
    );

    iptables(&w.nat, &format!("-A {CLOSE_MEDIA_TCP}"));
    let run = doctor(&w, &[], &["--json"]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(run.check("reach_media_203.0.113.20")["status"], "pass");
    let tcp = run.check("reach_media_tcp_203.0.113.20");
    assert_eq!(tcp["status"], "fail");
    assert_eq!(
        tcp["message"],
        "203.0.113.20 TCP 49152-49153 unreachable from outside"
    );
    let fix = tcp["fix"]["text"].as_str().unwrap();
    assert!(fix.starts_with("open TCP 49152-49200"), "{fix}");
    assert!(fix.contains("--no-ice-tcp"), "{fix}");
    assert_eq!(run.json()["summary"]["failed"], 1, "{}", run.stdout);

    // The fix applied the other way: without ICE-TCP nothing is wrong.
    let run = doctor(&w, &[], &["--json", "--no-ice-tcp"]);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.json()["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "reach_media_tcp_203.0.113.20")
    );
    iptables(&w.nat, &format!("-D {CLOSE_MEDIA_TCP}"));

    // Every media port's TCP taken here: the listeners check fails before anything is probed,
    // and the fix offers another range or --no-ice-tcp.
    let taken: Vec<std::net::TcpListener> = (49152..=49200)
        .map(|p| std::net::TcpListener::bind(("0.0.0.0", p)).expect("take a TCP port"))
        .collect();
    let run = doctor(&w, &[], &["--json"]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let ports = run.check("media_ports");
    assert_eq!(ports["status"], "fail");
    let fix = ports["fix"]["text"].as_str().unwrap();
    assert!(
        fix.contains("--media-ports") && fix.contains("--no-ice-tcp"),
        "{fix}"
    );
    let run = doctor(&w, &[], &["--json", "--no-ice-tcp"]);
    assert_eq!(run.check("media_ports")["status"], "pass");
    drop(taken);
}

/// With a server running, its ports are taken: doctor reads /api/listeners instead, and the
/// TURN port the server itself runs answers the probe.
#[test]
fn running_server_is_read_not_bound() {
    let w = world(INBOUND);
    let server = Server::start(&["--public-ip", INBOUND, "--workers", "1"]);
    let run = doctor(&w, &[], &["--json", "--server", "http://127.0.0.1:8080"]);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(run.check("server")["status"], "pass");
    assert_eq!(run.check("reach_turn_udp_203.0.113.20")["status"], "pass");
    let tcp = run.check("reach_turn_tcp_203.0.113.20");
    assert_eq!(tcp["status"], "pass");
    assert!(tcp["message"].as_str().unwrap().contains("answered STUN"));
    // Its media sockets answer only ICE checks of its own sessions: said, not guessed. The
    // same for its ICE-TCP listeners on the same ports.
    assert_eq!(run.check("reach_media_203.0.113.20")["status"], "warn");
    assert!(
        run.check("server")["message"]
            .as_str()
            .unwrap()
            .contains("media UDP and TCP")
    );
    assert_eq!(run.check("reach_media_tcp_203.0.113.20")["status"], "warn");

    // Without --server, the taken TURN port fails and the fix points at --server.
    let run = doctor(&w, &[], &["--json"]);
    assert_eq!(run.code, Some(1));
    let listeners = run.check("turn_listeners");
    assert_eq!(listeners["status"], "fail");
    assert!(
        listeners["fix"]["text"]
            .as_str()
            .unwrap()
            .contains("--server")
    );
    drop(server);
}
