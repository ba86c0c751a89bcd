//! The cluster as separate processes on loopback, in the test's own network namespace with its
//! own `redis-server`: two gateways, media servers in regions `a` and `b`, clients on different
//! gateways (headless Chromium, and the load generator's emulated clients).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use switchyard_tests::capture::{Capture, json_strings};
use switchyard_tests::cluster::{
    Postgres, Process, Redis, SECRET, media_servers, signed, wait_for,
};
use switchyard_tests::mix;
use switchyard_tests::server::temp_dir;
use switchyard_tests::{
    binary, browser_dir, http, last_json, loadtest_report, netns, python, repo, script_result,
};

const GATEWAY_A: u16 = 8080;
const GATEWAY_B: u16 = 8081;

fn gateway(dir: &Path, name: &str, port: u16, redis: &Redis, env: &[(&str, &str)]) -> Process {
    let data = dir.join("data");
    let http = format!("127.0.0.1:{port}");
    // 8080 → admin 9090, 8081 → 9091.
    let admin = format!("127.0.0.1:{}", port + 1010);
    let url = redis.url();
    let mut all = vec![("CONNECTIONSTRINGS__CACHE", url.as_str())];
    all.extend_from_slice(env);
    let p = Process::start(
        name,
        dir,
        &[
            "gateway",
            "--http",
            &http,
            "--admin",
            &admin,
            "--id",
            name,
            "--data-dir",
            &data.display().to_string(),
        ],
        &all,
    );
    wait_for(
        &format!("{name} to answer /health"),
        Duration::from_secs(20),
        || http::get(port, "/health").is_ok_and(|r| r.status == 200),
    );
    p
}

/// `switchyard media-server --id ID --workers 1 --media-ports PORTS ARGS` with SERVICEBASEURL
/// the gateway on `gateway_port` and `env`; waits until the gateway lists it.
fn registered_media_server(
    dir: &Path,
    id: &str,
    gateway_port: u16,
    ports: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Process {
    let base = format!("http://127.0.0.1:{gateway_port}");
    let mut all_args = vec![
        "media-server",
        "--id",
        id,
        "--workers",
        "1",
        "--media-ports",
        ports,
    ];
    all_args.extend_from_slice(args);
    let mut all_env = vec![("SERVICEBASEURL", base.as_str())];
    all_env.extend_from_slice(env);
    let p = Process::start(id, dir, &all_args, &all_env);
    wait_for(
        &format!("{id} to register"),
        Duration::from_secs(20),
        || media_servers(gateway_port).iter().any(|s| s["id"] == id),
    );
    p
}

/// A media server in `region` announcing 127.0.0.1, registered with the gateway on
/// `gateway_port`.
fn media_server(
    dir: &Path,
    id: &str,
    region: &str,
    gateway_port: u16,
    ports: &str,
    extra: &[&str],
) -> Process {
    let mut args = vec!["--public-ip", "127.0.0.1", "--drain-timeout", "30"];
    args.extend_from_slice(extra);
    registered_media_server(dir, id, gateway_port, ports, &args, &[("REGION", region)])
}

/// Media server m1 in region a, registered with gateway a, with an MCU thread and the small
/// canvas of tests/mcu.rs (320x180 at 15 fps, which two cores encode for a few participants).
fn mixing_media_server(dir: &Path) -> Process {
    registered_media_server(
        dir,
        "m1",
        GATEWAY_A,
        "40000-40100",
        &["--public-ip", "127.0.0.1", "--mcu-workers", "1"],
        &[
            ("REGION", "a"),
            ("MCU__CANVASWIDTH", "320"),
            ("MCU__CANVASHEIGHT", "180"),
            ("MCU__FRAMERATE", "15"),
        ],
    )
}

fn token(dir: &Path, channel: &str, user: &str) -> String {
    let out = Command::new(binary())
        .args(["token", "--channel", channel, "--user", user, "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .expect("run switchyard token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// publication id → (participant, media server id), from Redis.
fn publications(redis: &Redis, channel: &str) -> Vec<(String, String, String)> {
    let out = redis.cli(&[
        "HGETALL",
        &format!("switchyard:default:channel:{channel}:publications"),
    ]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter_map(|kv| {
            let v: Value = serde_json::from_str(kv.get(1)?).ok()?;
            Some((
                kv[0].to_string(),
                v["participant"].as_str()?.to_string(),
                v["server"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Chromium pages on two gateways decode each other; a region claim lands on its region; a
/// server over capacity sends the channel's next publisher to the other server; a media server
/// killed with SIGKILL is recovered by the SDKs publishing again on the live one.
#[test]
fn browsers_across_gateways_regions_capacity_and_kill() {
    let postgres = Postgres::create();
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    // One Redis and one PostgreSQL for both gateways, as in production.
    let database = postgres.url();
    let shared = [("CONNECTIONSTRINGS__DEFAULT", database.as_str())];
    let _ga = gateway(&dir, "ga", GATEWAY_A, &redis, &shared);
    let _gb = gateway(&dir, "gb", GATEWAY_B, &redis, &shared);
    // ms-a takes 8445 and holds one transport before it is over capacity; ms-b finds 8445
    // taken and falls back to 8446.
    let ms_a = media_server(
        &dir,
        "ms-a",
        "a",
        GATEWAY_A,
        "40000-40100",
        &["--capacity", "1"],
    );
    let _ms_b = media_server(&dir, "ms-b", "b", GATEWAY_B, "41000-41100", &[]);
    let servers = media_servers(GATEWAY_A);
    let address = |id: &str| {
        servers
            .iter()
            .find(|s| s["id"] == id)
            .and_then(|s| s["clusterAddress"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(address("ms-a"), "127.0.0.1:8445", "{servers:?}");
    assert_eq!(
        address("ms-b"),
        "127.0.0.1:8446",
        "port fallback: {servers:?}"
    );

    let tokens: Vec<String> = (0..3)
        .map(|i| token(&dir, "room", &format!("user{i}")))
        .collect();
    let (result, stderr) = three_pages(
        &tokens,
        &[
            // page 0 on gateway a (no claim: the channel goes to ms-a, which is then full),
            // page 1 on gateway b asking for region b, page 2 on gateway b with no claim.
            (
                "BASES",
                &format!(
                    "http://127.0.0.1:{GATEWAY_A},http://127.0.0.1:{GATEWAY_B},http://127.0.0.1:{GATEWAY_B}"
                ),
            ),
            ("REGIONS", ",b,"),
            ("KILL_PID", &ms_a.pid().to_string()),
        ],
    );
    let before = &result["before"];
    assert!(
        before.is_array(),
        "the first phase failed:\n{result:#}\n{stderr}"
    );
    assert_eq!(
        result["ok"], true,
        "not every page decoded every other:\n{result:#}\n{stderr}"
    );
    let recovery = result["recovery_ms"].as_u64().expect("recovery_ms");
    eprintln!("everyone decoded everyone again {recovery} ms after the SIGKILL");
    assert!(recovery <= 15_000, "recovery took {recovery} ms");

    // Where each page published, from the gateways' logs: first placement, then the last one.
    let participants: Vec<&Value> = (0..3).map(|i| &before[i]["participant"]).collect();
    let logs = std::fs::read_to_string(dir.join("ga.log")).unwrap_or_default()
        + &std::fs::read_to_string(dir.join("gb.log")).unwrap_or_default();
    let placements = |participant: &Value| -> Vec<String> {
        let p = participant.as_str().unwrap_or("?");
        logs.lines()
            .filter(|l| l.contains(" published") && l.contains(p))
            .filter_map(|l| l.split("server=").nth(1))
            .map(|s| {
                s.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        placements(participants[0]),
        ["ms-a", "ms-b"],
        "first in the channel, then republished after the kill"
    );
    assert_eq!(placements(participants[1]), ["ms-b"], "region b claimed");
    assert_eq!(
        placements(participants[2]),
        ["ms-b"],
        "ms-a was over capacity"
    );
    // Cascading: each page received the others on its own server; the publications on the
    // other server were relayed through pipes in both directions (two of them, ms-b to ms-a,
    // sharing one pair of worker sockets), never falling back to the publication's server.
    let relays = |from: &str, to: &str| {
        logs.lines()
            .filter(|l| l.contains("relaying") && l.contains(&format!("from={from} to={to}")))
            .count()
    };
    assert!(relays("ms-a", "ms-b") >= 1, "ms-a to ms-b not relayed");
    assert!(relays("ms-b", "ms-a") >= 2, "ms-b to ms-a not relayed");
    assert!(!logs.contains("cannot relay"), "a relay failed:\n{logs}");
    // The pages have left: nothing of them is left in Redis.
    wait_for("presence to empty", Duration::from_secs(5), || {
        publications(&redis, "room").is_empty()
            && ["participants", "subscriptions", "relays"]
                .iter()
                .all(|what| {
                    let key = format!("switchyard:default:channel:room:{what}");
                    redis.cli(&["HLEN", &key]).trim() == "0"
                })
    });
    wait_for(
        "ms-a to leave the registry",
        Duration::from_secs(10),
        || !media_servers(GATEWAY_A).iter().any(|s| s["id"] == "ms-a"),
    );
}

/// Runs tests/browser/three_pages.mjs (VP8, channel `room`, one page per token) with `env`;
/// its JSON result and its stderr.
fn three_pages(tokens: &[String], env: &[(&str, &str)]) -> (Value, String) {
    let out = Command::new("node")
        .current_dir(browser_dir())
        .arg("three_pages.mjs")
        .arg(format!("http://127.0.0.1:{GATEWAY_A}"))
        .args(["room", "VP8"])
        .args(tokens)
        .envs(env.iter().copied())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let result = last_json(&stdout)
        .unwrap_or_else(|| panic!("no JSON result from the browser script:\n{stdout}\n{stderr}"));
    (result, stderr)
}

/// Chromium pages on two gateways; one gateway is killed; its page reconnects to the other by
/// itself (no reload), resumes its participant id, publishes and subscribes again, and everyone
/// decodes everyone again within 15 s.
#[test]
fn browsers_reconnect_to_another_gateway() {
    let postgres = Postgres::create();
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let database = postgres.url();
    let shared = [("CONNECTIONSTRINGS__DEFAULT", database.as_str())];
    let ga = gateway(&dir, "ga", GATEWAY_A, &redis, &shared);
    let _gb = gateway(&dir, "gb", GATEWAY_B, &redis, &shared);
    // Registered with the gateway that lives (in production: through a load balancer).
    let _ms = media_server(&dir, "ms-1", "a", GATEWAY_B, "40000-40100", &[]);
    let tokens: Vec<String> = (0..2)
        .map(|i| token(&dir, "room", &format!("user{i}")))
        .collect();
    let (result, stderr) = three_pages(
        &tokens,
        &[
            (
                "BASES",
                &format!("http://127.0.0.1:{GATEWAY_A},http://127.0.0.1:{GATEWAY_B}"),
            ),
            ("FAILOVER", "1"),
            ("KILL_PID", &ga.pid().to_string()),
        ],
    );
    assert_eq!(
        result["ok"], true,
        "not every page decoded every other again:\n{result:#}\n{stderr}"
    );
    let recovery = result["recovery_ms"].as_u64().expect("recovery_ms");
    eprintln!("everyone decoded everyone again {recovery} ms after the gateway's SIGKILL");
    assert!(recovery <= 15_000, "recovery took {recovery} ms");
    let ids = |phase: &str| -> Vec<Value> {
        (0..2)
            .map(|i| result[phase][i]["participant"].clone())
            .collect()
    };
    assert_eq!(ids("before"), ids("after"), "participant ids kept");
    let logs = std::fs::read_to_string(dir.join("gb.log")).unwrap_or_default();
    assert!(logs.contains("resuming"), "gb resumed nobody:\n{logs}");
    wait_for("presence to empty", Duration::from_secs(10), || {
        publications(&redis, "room").is_empty()
    });
}

/// `switchyard loadtest run` against a gateway; its JSON report. The generator's emulated
/// clients do real ICE, DTLS and SRTP and count every packet.
fn loadtest(dir: &Path, gateway_port: u16, channel: &str, args: &[&str]) -> Value {
    let out = Command::new(binary())
        .args(["loadtest", "run", "--json", "--url"])
        .arg(format!("http://127.0.0.1:{gateway_port}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--channel", channel])
        .args(args)
        .output()
        .expect("run switchyard loadtest");
    loadtest_report(&out)
}

fn assert_clean(r: &Value, transports: u64) {
    assert_eq!(r["connected"], transports, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["loss"], 0.0, "{r}");
    assert!(r["packets_in_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
}

/// The media servers a gateway placed a channel's publications on, from its log.
fn placed(dir: &Path, gateway: &str, channel: &str) -> Vec<String> {
    let log = std::fs::read_to_string(dir.join(format!("{gateway}.log"))).unwrap_or_default();
    let mut servers: Vec<String> = log
        .lines()
        .filter(|l| l.contains(" published") && l.contains(&format!("channel=\"{channel}\"")))
        .filter_map(|l| l.split("server=").nth(1))
        .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    servers.sort();
    servers.dedup();
    servers
}

/// A meeting spread over two media servers by their capacity still delivers every stream, and a
/// capture of the loopback shows its pipes' SRTP keys only sealed with the cluster secret; a
/// media server told to stop (SIGTERM) drains: it takes no new sessions, its running session
/// goes on without loss, and it exits once that session ends.
#[test]
fn meeting_across_servers_and_drain() {
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let _ga = gateway(
        &dir,
        "ga",
        GATEWAY_A,
        &redis,
        &[("ADMIN__APIKEY", ADMIN_KEY)],
    );
    // Each takes two transports before it is over capacity, so a meeting's four publishers
    // (each with three subscriptions on its own server) cannot all fit on one.
    let mut m1 = media_server(
        &dir,
        "m1",
        "a",
        GATEWAY_A,
        "40000-40100",
        &["--capacity", "2"],
    );
    let _m2 = media_server(
        &dir,
        "m2",
        "a",
        GATEWAY_A,
        "41000-41100",
        &["--capacity", "2"],
    );

    // Everything on the wires of the namespace while the meeting is relayed between servers.
    let capture = Capture::start();
    let r = loadtest(
        &dir,
        GATEWAY_A,
        "meeting",
        &[
            "--scenario",
            "meeting",
            "--participants",
            "4",
            "--duration",
            "3",
            "--ramp",
            "2",
        ],
    );
    let wire = capture.stop();
    assert_clean(&r, 16);
    // The pipes' SRTP keys crossed the loopback sealed with the cluster secret, never in clear
    // (hex of the key's length).
    let keys: Vec<String> = ["sendKey", "receiveKey"]
        .iter()
        .flat_map(|f| json_strings(&wire, f))
        .collect();
    assert!(keys.len() >= 4, "no pipe was set up: {keys:?}");
    for key in &keys {
        let clear = key.len() == 2 * switchyard_dataplane::spec::PIPE_KEY_LEN
            && key.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(!clear, "a pipe key crossed the wire in clear: {key}");
    }
    assert_eq!(
        placed(&dir, "ga", "meeting"),
        ["m1", "m2"],
        "publishers on both servers"
    );

    // A long session on m1 (the channel's first placement goes to the smallest id on a tie).
    let long = {
        let data = dir.join("data");
        Command::new(binary())
            .args([
                "loadtest",
                "run",
                "--json",
                "--url",
                &format!("http://127.0.0.1:{GATEWAY_A}"),
            ])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--channel",
                "long",
                "--scenario",
                "livestream",
                "--subscribers",
                "1",
                "--duration",
                "8",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run switchyard loadtest")
    };
    wait_for(
        "the long session's publication",
        Duration::from_secs(20),
        || placed(&dir, "ga", "long") == ["m1"],
    );
    // The admin API shows the session's connections: the publication and the subscription to
    // it, both on m1.
    wait_for(
        "the admin API to list both connections",
        Duration::from_secs(10),
        || {
            let (status, ch) = admin("GET", "/channels/long");
            let connections: Vec<(String, String)> = ch["clients"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["connections"].as_array().cloned().unwrap_or_default())
                .map(|c| {
                    (
                        c["kind"].as_str().unwrap_or("").to_string(),
                        c["server"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            status == 200
                && connections.contains(&("publication".into(), "m1".into()))
                && connections.contains(&("subscription".into(), "m1".into()))
        },
    );
    m1.terminate();
    wait_for("m1 to report draining", Duration::from_secs(5), || {
        media_servers(GATEWAY_A)
            .iter()
            .any(|s| s["id"] == "m1" && s["draining"] == true)
    });
    assert_eq!(
        http::get(GATEWAY_A, "/ready").map(|r| r.status).ok(),
        Some(200),
        "m2 still takes sessions"
    );
    let r = loadtest(
        &dir,
        GATEWAY_A,
        "later",
        &[
            "--scenario",
            "livestream",
            "--subscribers",
            "1",
            "--duration",
            "2",
        ],
    );
    assert_clean(&r, 2);
    assert_eq!(
        placed(&dir, "ga", "later"),
        ["m2"],
        "nothing new on the draining server"
    );
    let out = long.wait_with_output().expect("the long session");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = last_json(&stdout).unwrap_or_else(|| panic!("no report: {stdout}"));
    assert_clean(&report, 2);
    let status = m1
        .wait(Duration::from_secs(15))
        .expect("m1 exits once drained");
    assert!(status.success(), "{status}");
    assert!(
        m1.log_text().contains("drained: no sessions left"),
        "{}",
        m1.log_tail()
    );
    wait_for("m1 to leave the registry", Duration::from_secs(5), || {
        !media_servers(GATEWAY_A).iter().any(|s| s["id"] == "m1")
    });
}

/// aiortc publishes over WHIP to gateway A and plays over WHEP from gateway B: the publication
/// is placed like an SDK client's (the operator drained m1, which would have been chosen, so it
/// lands on m2), media flows, and a `DELETE` through the other gateway than the one that made a
/// session ends it, after which neither gateway knows the resource.
#[test]
fn whip_and_whep_across_gateways() {
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let ga = gateway(
        &dir,
        "ga",
        GATEWAY_A,
        &redis,
        &[("ADMIN__APIKEY", ADMIN_KEY)],
    );
    let gb = gateway(&dir, "gb", GATEWAY_B, &redis, &[]);
    let _m1 = media_server(&dir, "m1", "a", GATEWAY_A, "40000-40100", &[]);
    let _m2 = media_server(&dir, "m2", "a", GATEWAY_B, "41000-41100", &[]);
    let (status, _) = admin("POST", "/media-servers/m1/drain");
    assert_eq!(status, 200, "drain m1");

    let publish = token(&dir, "live", "encoder");
    let play = token(&dir, "live", "viewer");
    let aiortc = Command::new(python())
        .arg(repo().join("tests/aiortc/whip_whep.py"))
        .arg(format!("http://127.0.0.1:{GATEWAY_A}"))
        .args(["live", &publish, &play, "--seconds", "4"])
        .arg("--play-base")
        .arg(format!("http://127.0.0.1:{GATEWAY_B}"))
        .arg("--delete-crossed")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the aiortc script");

    // Both sessions are in the channel, each with its connection on m2, for any gateway to see.
    let connections = || {
        let (_, ch) = admin("GET", "/channels/live");
        let mut found: Vec<(String, String, String)> = ch["clients"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| {
                let gateway = c["gateway"].as_str().unwrap_or("").to_string();
                c["connections"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |x| {
                        (
                            gateway.clone(),
                            x["kind"].as_str().unwrap_or("").to_string(),
                            x["server"].as_str().unwrap_or("").to_string(),
                        )
                    })
            })
            .collect();
        found.sort();
        found
    };
    let expected: Vec<(String, String, String)> =
        [("ga", "publication", "m2"), ("gb", "subscription", "m2")]
            .iter()
            .map(|(g, k, s)| (g.to_string(), k.to_string(), s.to_string()))
            .collect();
    wait_for(
        "the WHIP publication on ga and the WHEP subscription on gb, both on m2",
        Duration::from_secs(20),
        || connections() == expected,
    );
    let placed = publications(&redis, "live");
    assert_eq!(placed.len(), 1, "{placed:?}");
    assert_eq!(placed[0].2, "m2", "placed on the undrained server");

    let out = aiortc.wait_with_output().expect("the aiortc script");
    let result = script_result(&out, "aiortc");
    assert_eq!(result["ok"], true, "{result:#}");
    eprintln!(
        "played across gateways: {} video and {} audio frames",
        result["video_frames"], result["audio_frames"]
    );
    assert!(
        result["video_frames"].as_u64().unwrap_or(0) >= 30,
        "too few frames decoded: {result:#}"
    );
    assert!(
        result["audio_frames"].as_u64().unwrap_or(0) >= 50,
        "too little audio: {result:#}"
    );
    // Each ended through the gateway that did not make it.
    assert_eq!(result["whip_delete"], 200, "{result:#}");
    assert_eq!(result["whep_delete"], 200, "{result:#}");
    assert!(
        ga.log_text().contains("WHIP/WHEP session ended: kicked"),
        "the WHIP session's own gateway ended it: {}",
        ga.log_tail()
    );
    assert!(
        gb.log_text().contains("WHIP/WHEP session ended: kicked"),
        "the WHEP session's own gateway ended it: {}",
        gb.log_tail()
    );
    for (location, token) in [
        (&result["whip_location"], &publish),
        (&result["whep_location"], &play),
    ] {
        let location = location.as_str().unwrap_or_default();
        assert!(location.starts_with("/wh"), "{result:#}");
        for port in [GATEWAY_A, GATEWAY_B] {
            let auth = format!("Bearer {token}");
            let r = http::request(port, "DELETE", location, &[("Authorization", &auth)], "")
                .expect("DELETE");
            assert_eq!(r.status, 404, "{location} on {port}: {}", r.body);
        }
    }
    assert_eq!(
        redis
            .cli(&["HLEN", "switchyard:default:channel:live:participants"])
            .trim(),
        "0",
        "no one is left in the channel"
    );
    assert!(publications(&redis, "live").is_empty());
}

/// MCU through a gateway: one WHIP publisher and two MCU participants (`POST /mix/{channel}`,
/// aiortc) in one channel, and a viewer of the mix (`POST /whep/{channel}/mix`), placed on the
/// media server that holds the channel's mixer: each MCU participant's composite shows all
/// three colours and it hears the others' tones but not its own; its connection is a mixed
/// publication in presence; every `DELETE` through the gateway ends its session.
#[test]
fn mcu_through_a_gateway() {
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let _ga = gateway(&dir, "ga", GATEWAY_A, &redis, &[]);
    let _m1 = mixing_media_server(&dir);
    let tokens: Vec<String> = (0..3)
        .map(|i| token(&dir, "mixed", &format!("mixer{i}")))
        .collect();
    let viewer = token(&dir, "mixed", "viewer");
    let base = format!("http://127.0.0.1:{GATEWAY_A}");
    let aiortc =
        std::thread::spawn(move || mix::run(&base, "mixed", &tokens, &viewer, 1, "VP8", 6));

    let mixed = || {
        redis
            .cli(&["HGETALL", "switchyard:default:channel:mixed:publications"])
            .lines()
            .filter(|l| l.contains(r#""mixed":true"#) && l.contains(r#""server":"m1""#))
            .count()
    };
    wait_for(
        "both MCU connections as mixed publications on m1",
        Duration::from_secs(30),
        || mixed() == 2,
    );
    let result = aiortc.join().expect("the aiortc script");
    mix::check(&result, 3);
    println!("{result}");
    assert_eq!(
        redis
            .cli(&["HLEN", "switchyard:default:channel:mixed:participants"])
            .trim(),
        "0",
        "no one is left in the channel"
    );
    assert!(publications(&redis, "mixed").is_empty());
}

/// One mixer shows the whole channel. An SFU publisher (WHIP) lands on m2, the only media
/// server then, which is full after it (`--capacity 1`); m1 starts, and an MCU participant and
/// a viewer of the mix join: the mixer starts on m1, and the gateway relays the publication
/// there, where it joins the running mix. The composite shows both colours and the MCU
/// participant hears the publisher's tone.
#[test]
fn mcu_mixes_publications_of_other_media_servers() {
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let _ga = gateway(&dir, "ga", GATEWAY_A, &redis, &[]);
    let _m2 = media_server(
        &dir,
        "m2",
        "a",
        GATEWAY_A,
        "41000-41100",
        &["--capacity", "1"],
    );
    let tokens = [
        token(&dir, "spread", "publisher"),
        token(&dir, "spread", "mixer"),
    ];
    let viewer = token(&dir, "spread", "viewer");
    let base = format!("http://127.0.0.1:{GATEWAY_A}");
    let aiortc = std::thread::spawn(move || {
        let extra = ["--stagger", "6"];
        mix::run_with(&base, "spread", &tokens, &viewer, 1, "VP8", 8, &extra)
    });
    wait_for("the publication on m2", Duration::from_secs(20), || {
        publications(&redis, "spread")
            .iter()
            .any(|(_, _, server)| server == "m2")
    });
    let _m1 = mixing_media_server(&dir);
    let result = aiortc.join().expect("the aiortc script");
    mix::check(&result, 2);
    println!("{result}");
    let log = std::fs::read_to_string(dir.join("m1.log")).unwrap_or_default();
    assert!(
        log.contains("pipe in") && log.contains("mixed connection"),
        "m1 mixes no relayed publication:\n{log}"
    );
}

/// A channel configuration's MCU canvas reaches the media server that mixes: the gateway reads
/// it for the token's application and sends it with the MCU connection, and the composite is
/// the channel's 192x108 rather than the media server's 320x180.
#[test]
fn mcu_canvas_through_a_gateway() {
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let admin_env = [
        ("ADMIN__APIKEY", ADMIN_KEY),
        ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
    ];
    let _ga = gateway(&dir, "ga", GATEWAY_A, &redis, &admin_env);
    let _m1 = mixing_media_server(&dir);
    let secret = "canvas-secret-0123456789";
    let body = format!(r#"{{"secrets":["{secret}"]}}"#);
    assert_eq!(admin_with("PUT", "/applications/acme", &body).0, 200);
    let config = r#"{"pattern":"small-*","position":0,"allowedCodecs":[],"sfuAllowed":true,"mcuAllowed":true,"mcuCanvasWidth":192,"mcuCanvasHeight":108}"#;
    let (status, c) = admin_with("PUT", "/applications/acme/channel-configs", config);
    assert_eq!(status, 200, "{c}");
    let token = app_token("acme", secret, "small-1");
    // Until the gateway reads the store again acme is unknown (401); then this offer is just
    // malformed (400), and the configuration is known too.
    let bearer = format!("Bearer {token}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/sdp"),
    ];
    wait_for("acme's token accepted", Duration::from_secs(10), || {
        http::request(GATEWAY_A, "POST", "/mix/small-1", &headers, "v=0\r\n")
            .is_ok_and(|r| r.status != 401)
    });
    let out = Command::new(python())
        .arg(repo().join("tests/aiortc/mix.py"))
        .arg(format!("http://127.0.0.1:{GATEWAY_A}"))
        .args(["small-1", &token, "--seconds", "3", "--codec", "VP8"])
        .output()
        .expect("run the aiortc script");
    let result = script_result(&out, "aiortc mix");
    assert_eq!(result["ok"], true, "{result:#}");
    assert_eq!(
        result["participants"][0]["size"],
        serde_json::json!([192, 108]),
        "{result:#}"
    );
}

/// An HTTP request with curl from the source address `from`: (status, body).
fn curl(
    from: &str,
    method: &str,
    url: &str,
    headers: &[&str],
    body: Option<&str>,
) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--interface",
        from,
        "-X",
        method,
        url,
    ]);
    for h in headers {
        c.args(["-H", h]);
    }
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "--data", b]);
    }
    let out = c.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The cluster API answers only INTERNAL:IPADDRESSES; a refused caller learns why. (Without
/// a cluster secret, so that curl's unsigned requests reach the handlers.)
#[test]
fn cluster_api_only_from_internal_addresses() {
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let _ga = gateway(
        &dir,
        "ga",
        GATEWAY_A,
        &redis,
        &[
            ("INTERNAL__IPADDRESSES", "127.0.0.1/32"),
            ("CLUSTER__SECRET", ""),
        ],
    );
    let curl = |from: &str, url: &str, body: Option<&str>| -> (u16, String) {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--interface",
            from,
            url,
        ]);
        if let Some(b) = body {
            c.args([
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "--data",
                b,
            ]);
        }
        let out = c.output().expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    };
    let list = format!("http://127.0.0.1:{GATEWAY_A}/cluster/v1/media-servers");
    assert_eq!(curl("127.0.0.1", &list, None).0, 200);
    let (status, body) = curl("127.0.0.2", &list, None);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("127.0.0.2 may not use the cluster API"),
        "{body}"
    );
    let ended = format!("http://127.0.0.1:{GATEWAY_A}/cluster/v1/ended");
    let report = r#"{"server":"x","channel":"c","participant":"p","publication":"q"}"#;
    assert_eq!(curl("127.0.0.2", &ended, Some(report)).0, 403);
    assert_eq!(curl("127.0.0.1", &ended, Some(report)).0, 204);
    // Relayed messages: only `speaking`, `dominant-speaker` and `layers` pass; one naming a
    // publication that server does not carry is accepted and told to nobody.
    let relay = format!("http://127.0.0.1:{GATEWAY_A}/cluster/v1/relay");
    let report = r#"{"server":"x","channel":"c","message":{"type":"speaking","participant":"p","publication":"q","speaking":true}}"#;
    assert_eq!(curl("127.0.0.2", &relay, Some(report)).0, 403);
    assert_eq!(curl("127.0.0.1", &relay, Some(report)).0, 204);
    let layers = r#"{"server":"x","channel":"c","message":{"type":"layers","publication":"q","active":[true,false]}}"#;
    assert_eq!(curl("127.0.0.1", &relay, Some(layers)).0, 204);
    let other = r#"{"server":"x","channel":"c","message":{"type":"kicked","reason":"no"}}"#;
    assert_eq!(curl("127.0.0.1", &relay, Some(other)).0, 400);

    // A media server's own API, likewise.
    let _ms = registered_media_server(
        &dir,
        "ms",
        GATEWAY_A,
        "40000-40100",
        &[],
        &[
            ("INTERNAL__IPADDRESSES", "127.0.0.1"),
            ("CLUSTER__SECRET", ""),
        ],
    );
    let leave = "http://127.0.0.1:8445/cluster/v1/leave";
    let body = r#"{"channel":"c","participant":"p"}"#;
    assert_eq!(curl("127.0.0.2", leave, Some(body)).0, 403);
    assert_eq!(curl("127.0.0.1", leave, Some(body)).0, 204);
    let (status, body) = curl(
        "127.0.0.1",
        "http://127.0.0.1:8445/cluster/v1/publish",
        Some(r#"{"channel":"c"}"#),
    );
    assert_eq!(status, 422, "a malformed request is refused: {body}");
}

/// With CLUSTER:SECRET (every other cluster test runs with one), the cluster API takes only
/// requests signed with it, each once and within 30 s of its time: unsigned, replayed, stale
/// and wrongly signed requests get 401 and are counted, and a media server with another secret
/// never registers.
#[test]
fn cluster_api_needs_the_secret() {
    use switchyard_cluster::signing::ClusterSecret;
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let _ga = gateway(&dir, "ga", GATEWAY_A, &redis, &[]);
    let _ms = registered_media_server(&dir, "ms", GATEWAY_A, "40000-40100", &[], &[]);
    let ended = "/cluster/v1/ended";
    let report = r#"{"server":"x","channel":"c","participant":"p","publication":"q"}"#;
    let post = |headers: &[(&str, String)]| {
        let mut all: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.push(("content-type", "application/json"));
        http::request(GATEWAY_A, "POST", ended, &all, report)
            .expect("POST")
            .status
    };
    assert_eq!(post(&[]), 401, "unsigned");
    let secret = ClusterSecret::new(SECRET).unwrap();
    let headers = secret.headers("POST", ended, report.as_bytes());
    assert_eq!(post(&headers), 204, "signed");
    assert_eq!(post(&headers), 401, "the same request again");
    let stale = secret.headers_at("POST", ended, report.as_bytes(), 1_000_000_000);
    assert_eq!(post(&stale), 401, "stale");
    let other = ClusterSecret::new("not-the-clusters-secret-at-all").unwrap();
    assert_eq!(post(&other.headers("POST", ended, report.as_bytes())), 401);
    let tampered = secret.headers("POST", ended, b"{}");
    assert_eq!(post(&tampered), 401, "signed for another body");
    // A media server with another secret: its heartbeats are refused.
    let base = format!("http://127.0.0.1:{GATEWAY_A}");
    let args = [
        "media-server",
        "--id",
        "intruder",
        "--workers",
        "1",
        "--media-ports",
    ];
    let mut intruder = Process::start(
        "intruder",
        &dir,
        &[&args[..], &["40200-40300", "--cluster-port", "8447"]].concat(),
        &[
            ("SERVICEBASEURL", base.as_str()),
            ("CLUSTER__SECRET", "not-the-clusters-secret-at-all"),
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    let ids: Vec<Value> = media_servers(GATEWAY_A)
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, [Value::from("ms")], "{}", intruder.log_tail());
    assert!(
        intruder.log_text().contains("401"),
        "{}",
        intruder.log_tail()
    );
    let m = http::metrics(GATEWAY_A);
    assert!(m["switchyard_http_auth_failures_total"] >= 6.0, "{m:?}");
    let _ = intruder.exited();
}

/// Bad settings stop a role before it binds anything, naming the setting.
#[test]
fn roles_refuse_bad_configuration() {
    netns::enter();
    let dir = temp_dir();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(binary())
            .current_dir(&dir)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run switchyard");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ms = ["media-server", "--workers", "1"];
    let (code, err) = run(&ms, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("SERVICEBASEURL is not set"), "{err}");
    let (code, err) = run(&ms, &[("SERVICEBASEURL", "ftp://x")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("SERVICEBASEURL"), "{err}");
    let (code, err) = run(
        &ms,
        &[
            ("SERVICEBASEURL", "http://127.0.0.1:8080"),
            ("REGION", "no spaces allowed"),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("REGION"), "{err}");
    let (code, err) = run(
        &ms,
        &[
            ("SERVICEBASEURL", "http://127.0.0.1:8080"),
            ("INTERNAL__IPADDRESSES", "10.0.0.0/40"),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("INTERNAL:IPADDRESSES"), "{err}");
    // Nothing bound 8445 meanwhile.
    assert!(std::net::TcpListener::bind("127.0.0.1:8445").is_ok());
    // A gateway whose Redis does not answer says which setting points there.
    let (code, err) = run(
        &["gateway", "--http", "127.0.0.1:8080"],
        &[("CONNECTIONSTRINGS__CACHE", "redis://127.0.0.1:1")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("CONNECTIONSTRINGS:CACHE"), "{err}");
    assert!(std::net::TcpListener::bind("127.0.0.1:8080").is_ok());
}

const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// `curl` to the admin API on 9090 from 127.0.0.1 with the key: (status, JSON body).
fn admin(method: &str, path: &str) -> (u16, Value) {
    let (status, body) = curl(
        "127.0.0.1",
        method,
        &format!("http://127.0.0.1:9090/admin/api/v1{path}"),
        &[&format!("X-API-Key: {ADMIN_KEY}")],
        None,
    );
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Joins `channel` on the gateway over /sync: the socket and the participant id, or the
/// server's refusal.
async fn join(port: u16, token: &str, channel: &str) -> Result<(Socket, String), String> {
    let (ws, joined) = join_message(port, token, channel).await?;
    let id = joined["participant"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((ws, id))
}

/// Joins `channel` on the gateway over /sync: the socket and the whole `joined` message, or
/// the server's refusal.
async fn join_message(port: u16, token: &str, channel: &str) -> Result<(Socket, Value), String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/sync"))
        .await
        .map_err(|e| format!("connect /sync: {e}"))?;
    let join = serde_json::json!({ "type": "join", "token": token, "channel": channel });
    ws.send(Message::text(join.to_string()))
        .await
        .map_err(|e| format!("send join: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if v["type"] == "joined" {
                    return Ok((ws, v));
                }
                return Err(v.to_string());
            }
            Some(Ok(_)) => continue,
            other => return Err(format!("no reply to join: {other:?}")),
        }
    }
}

/// Tries to join until `want` (accepted or refused) holds, for up to `limit`.
async fn join_until(port: u16, token: &str, channel: &str, want: bool, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let r = join(port, token, channel).await;
        if r.is_ok() == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "join was {} after {limit:?}: {:?}",
            if want {
                "still refused"
            } else {
                "still accepted"
            },
            r.err()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A token for `application` signed with `secret`.
fn app_token(application: &str, secret: &str, channel: &str) -> String {
    let out = Command::new(binary())
        .args([
            "token",
            "--channel",
            channel,
            "--user",
            "bob",
            "--application",
            application,
        ])
        .args(["--secret", secret])
        .output()
        .expect("run switchyard token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `curl` to the admin API with the key and a JSON body: (status, JSON body).
fn admin_with(method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = curl(
        "127.0.0.1",
        method,
        &format!("http://127.0.0.1:9090/admin/api/v1{path}"),
        &[&format!("X-API-Key: {ADMIN_KEY}")],
        Some(body),
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The admin API refuses callers outside ADMIN:IPADDRESSES and calls without the right key,
/// and serves every endpoint: media servers (list, get, drain, undrain, forget), channels
/// (list, get), kicking a client, applications with secret rotation, channel configurations,
/// deployments, the audit log, and its OpenAPI document. The configuration is in PostgreSQL;
/// with the database gone, clients still join with what was read before and /ready says
/// degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let postgres = Postgres::create();
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let database = postgres.url();
    let _ga = gateway(
        &dir,
        "ga",
        GATEWAY_A,
        &redis,
        &[
            ("ADMIN__APIKEY", ADMIN_KEY),
            ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
            ("CONNECTIONSTRINGS__DEFAULT", &database),
        ],
    );
    let _ms = media_server(&dir, "ms", "a", GATEWAY_A, "40000-40100", &[]);

    // Refusals, before anything is looked at (the document too).
    let url = "http://127.0.0.1:9090/admin/api/v1/media-servers";
    let key = format!("X-API-Key: {ADMIN_KEY}");
    let (status, body) = curl("127.0.0.1", "GET", url, &[], None);
    assert_eq!((status, body.contains("missing")), (401, true), "{body}");
    let (status, body) = curl(
        "127.0.0.1",
        "GET",
        url,
        &["X-API-Key: wrong-key-wrong-key"],
        None,
    );
    assert_eq!((status, body.contains("not valid")), (401, true), "{body}");
    let (status, body) = curl("127.0.0.2", "GET", url, &[&key], None);
    assert_eq!(
        (status, body.contains("ADMIN:IPADDRESSES")),
        (403, true),
        "{body}"
    );
    let doc = "http://127.0.0.1:9090/admin/api/v1/openapi.json";
    assert_eq!(curl("127.0.0.1", "GET", doc, &[], None).0, 401);

    let (status, doc) = admin("GET", "/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["paths"]["/media-servers/{id}/drain"]["post"].is_object(),
        "{doc}"
    );
    for path in [
        "/applications/{id}/secrets",
        "/applications/{id}/channel-configs",
        "/deployments/{id}",
        "/audit",
        "/channels/{channel}/clients/{client}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }

    // Media servers.
    let (status, list) = admin("GET", "/media-servers");
    assert_eq!(status, 200);
    assert_eq!(list[0]["id"], "ms", "{list}");
    assert_eq!(list[0]["region"], "a");
    assert_eq!(admin("GET", "/media-servers/ms").1["id"], "ms");
    assert_eq!(admin("GET", "/media-servers/nope").0, 404);
    let (status, s) = admin("POST", "/media-servers/ms/drain");
    assert_eq!((status, &s["draining"]), (200, &Value::Bool(true)), "{s}");
    // An operator's drain survives the server's heartbeats.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(admin("GET", "/media-servers/ms").1["draining"], true);
    assert_eq!(
        http::get(GATEWAY_A, "/ready").map(|r| r.status).ok(),
        Some(503)
    );
    let (status, s) = admin("DELETE", "/media-servers/ms/drain");
    assert_eq!((status, &s["draining"]), (200, &Value::Bool(false)), "{s}");
    assert_eq!(
        http::get(GATEWAY_A, "/ready").map(|r| r.status).ok(),
        Some(200)
    );
    assert_eq!(admin("POST", "/media-servers/nope/drain").0, 404);

    // Channels and kicking a client.
    let token = token(&dir, "lobby", "alice");
    let (mut ws, participant) = join(GATEWAY_A, &token, "lobby").await.expect("join");
    let (status, channels) = admin("GET", "/channels");
    assert_eq!(status, 200);
    assert_eq!(channels[0]["id"], "lobby", "{channels}");
    assert_eq!(channels[0]["clients"][0]["id"], participant.as_str());
    assert_eq!(channels[0]["clients"][0]["user"], "alice");
    assert_eq!(channels[0]["clients"][0]["gateway"], "ga");
    assert_eq!(
        admin("GET", "/channels/lobby").1["clients"][0]["id"],
        participant.as_str()
    );
    assert_eq!(admin("GET", "/channels/empty").0, 404);
    assert_eq!(admin("DELETE", "/channels/lobby/clients/nobody").0, 404);
    let (status, _) = admin("DELETE", &format!("/channels/lobby/clients/{participant}"));
    assert_eq!(status, 204);
    let mut kicked = false;
    let mut closed = None;
    while let Some(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the socket closes after a kick")
    {
        match m {
            Message::Text(t) => kicked |= t.contains("\"kicked\""),
            Message::Close(frame) => {
                closed = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    assert!(kicked, "the client was told");
    assert_eq!(closed, Some(4003));
    wait_for("the kicked client to leave", Duration::from_secs(5), || {
        admin("GET", "/channels")
            .1
            .as_array()
            .is_some_and(|a| a.is_empty())
    });

    // Forgetting a server: gone from the list until its next heartbeat.
    assert_eq!(admin("DELETE", "/media-servers/ms").0, 204);
    assert_eq!(admin("DELETE", "/media-servers/nope").0, 404);
    wait_for("ms to register again", Duration::from_secs(5), || {
        admin("GET", "/media-servers/ms").0 == 200
    });

    // Applications, and rotating a secret with no moment where tokens are refused.
    let one = "secret-one-0123456789";
    let two = "secret-two-0123456789";
    let (status, app) = admin_with(
        "PUT",
        "/applications/acme",
        &format!(r#"{{"secrets":["{one}"]}}"#),
    );
    assert_eq!(status, 200, "{app}");
    assert_eq!(app["id"], "acme");
    assert_eq!(
        admin_with("PUT", "/applications/bad", r#"{"secrets":[]}"#).0,
        400
    );
    assert_eq!(
        admin("GET", "/applications").1.as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(admin("GET", "/applications/nope").0, 404);
    let old = app_token("acme", one, "team-a");
    join_until(GATEWAY_A, &old, "team-a", true, Duration::from_secs(10)).await;
    let (status, app) = admin_with(
        "POST",
        "/applications/acme/secrets",
        &format!(r#"{{"secret":"{two}"}}"#),
    );
    assert_eq!(
        (status, app["secrets"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{app}"
    );
    let new = app_token("acme", two, "team-a");
    join_until(GATEWAY_A, &new, "team-a", true, Duration::from_secs(10)).await;
    if let Err(e) = join(GATEWAY_A, &old, "team-a").await {
        panic!("both secrets are valid during a rotation, but: {e}");
    }
    let (status, app) = admin_with(
        "POST",
        "/applications/acme/secrets/retire",
        &format!(r#"{{"secret":"{one}"}}"#),
    );
    assert_eq!(
        (status, app["secrets"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{app}"
    );
    join_until(GATEWAY_A, &old, "team-a", false, Duration::from_secs(10)).await;
    assert!(join(GATEWAY_A, &new, "team-a").await.is_ok());

    // Channel configurations, in order with the catch-all last.
    let config = r#"{"pattern":"team-*","position":0,"allowedCodecs":["opus","vp8"],"maxBitrateKbps":2000,"sfuAllowed":true,"mcuAllowed":false}"#;
    let (status, c) = admin_with("PUT", "/applications/acme/channel-configs", config);
    assert_eq!(
        (status, &c["allowedCodecs"][1]),
        (200, &Value::from("VP8")),
        "{c}"
    );
    let catch_all_first =
        r#"{"pattern":"*","position":0,"allowedCodecs":[],"sfuAllowed":true,"mcuAllowed":true}"#;
    let (status, c) = admin_with("PUT", "/applications/acme/channel-configs", catch_all_first);
    assert_eq!(status, 400, "the catch-all must come last: {c}");
    let bad_codec = r#"{"pattern":"x","position":5,"allowedCodecs":["mp3"],"sfuAllowed":true,"mcuAllowed":true}"#;
    assert_eq!(
        admin_with("PUT", "/applications/acme/channel-configs", bad_codec).0,
        400
    );
    let listed = admin("GET", "/applications/acme/channel-configs").1;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    // A channel configuration that forbids SFU publishing refuses a publisher of acme's.
    let no_sfu = r#"{"pattern":"locked-*","position":1,"allowedCodecs":[],"sfuAllowed":false,"mcuAllowed":true}"#;
    assert_eq!(
        admin_with("PUT", "/applications/acme/channel-configs", no_sfu).0,
        200
    );
    std::thread::sleep(Duration::from_millis(2500)); // the gateway's next read of the store
    let out = Command::new(binary())
        .args([
            "loadtest",
            "run",
            "--json",
            "--url",
            &format!("http://127.0.0.1:{GATEWAY_A}"),
        ])
        .args([
            "--application",
            "acme",
            "--secret",
            two,
            "--channel",
            "locked-1",
        ])
        .args([
            "--scenario",
            "livestream",
            "--subscribers",
            "0",
            "--duration",
            "1",
        ])
        .output()
        .expect("run switchyard loadtest");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("does not allow SFU publishing"), "{text}");
    let locked = "/applications/acme/channel-configs?pattern=locked-*";
    assert_eq!(admin("DELETE", locked).0, 204);
    assert_eq!(
        admin(
            "DELETE",
            "/applications/acme/channel-configs?pattern=team-*"
        )
        .0,
        204
    );
    assert_eq!(
        admin(
            "DELETE",
            "/applications/acme/channel-configs?pattern=team-*"
        )
        .0,
        404
    );

    // Deployments.
    let deployment = r#"{"stunServers":["stun:127.0.0.1:3478"],"sfuConnectionsPerCpuSafe":100,"sfuConnectionsPerCpuUnsafe":250,"mcuConnectionsPerCpuSafe":5,"mcuConnectionsPerCpuUnsafe":10,"clusteringStrategy":"region"}"#;
    let (status, d) = admin_with("PUT", "/deployments/default", deployment);
    assert_eq!((status, &d["id"]), (200, &Value::from("default")), "{d}");
    assert_eq!(
        admin("GET", "/deployments").1.as_array().map(Vec::len),
        Some(1)
    );
    let unsafe_below_safe = deployment.replace("250", "50");
    assert_eq!(
        admin_with("PUT", "/deployments/default", &unsafe_below_safe).0,
        400
    );
    assert_eq!(admin("DELETE", "/deployments/default").0, 204);
    assert_eq!(admin("GET", "/deployments/default").0, 404);

    // Every change above is in the audit log, with who made it.
    let (status, log) = admin("GET", "/audit?limit=100");
    assert_eq!(status, 200);
    let actions: Vec<&str> = log
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "mediaServer.drain",
        "mediaServer.undrain",
        "mediaServer.forget",
        "client.kick",
        "application.put",
        "application.rotateSecret",
        "application.retireSecret",
        "channelConfig.put",
        "channelConfig.delete",
        "deployment.put",
        "deployment.delete",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(
        log[0]["actor"]
            .as_str()
            .is_some_and(|a| a.contains("127.0.0.1")),
        "{log}"
    );
    assert!(
        !log.to_string().contains(two),
        "the audit log never holds a secret"
    );

    // PostgreSQL goes away: clients still join with the configuration read before, and
    // /ready says the gateway is degraded.
    assert_eq!(
        http::get(GATEWAY_A, "/ready").map(|r| r.status).ok(),
        Some(200)
    );
    postgres.drop_now();
    wait_for("/ready to report degraded", Duration::from_secs(15), || {
        http::get(GATEWAY_A, "/ready").is_ok_and(|r| r.status == 503 && r.body.contains("degraded"))
    });
    assert!(
        join(GATEWAY_A, &new, "team-a").await.is_ok(),
        "cached applications still admit clients"
    );
}

/// coturn as a STUN server only, on 127.0.0.1:`port`.
fn stun_server(dir: &Path, port: u16) -> std::process::Child {
    Command::new("turnserver")
        .args(["--stun-only", "--listening-ip", "127.0.0.1"])
        .args(["--listening-port", &port.to_string()])
        .args([
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "-n",
            "--log-file",
            "stdout",
        ])
        .args(["--userdb"])
        .arg(dir.join(format!("turndb-{port}")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start coturn's turnserver (scripts/test.sh installs coturn)")
}

/// A media server learns its public address from the deployment's STUN servers (a real coturn
/// here) when EXTERNAL:PUBLICIPADDRESS is not set, and registers it.
#[test]
fn public_ip_from_stun() {
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let mut coturn = stun_server(&dir, 3478);
    std::thread::sleep(Duration::from_millis(500));
    let _ga = gateway(
        &dir,
        "ga",
        GATEWAY_A,
        &redis,
        &[("ADMIN__APIKEY", ADMIN_KEY)],
    );
    // ms2 has no STUN setting of its own: it takes the deployment's from the gateway, and its
    // capacity from the deployment's thresholds (per worker, and per MCU thread).
    let deployment = r#"{"stunServers":["stun:127.0.0.1:3478"],"sfuConnectionsPerCpuSafe":10,"sfuConnectionsPerCpuUnsafe":20,"mcuConnectionsPerCpuSafe":1,"mcuConnectionsPerCpuUnsafe":2,"clusteringStrategy":"region"}"#;
    assert_eq!(admin_with("PUT", "/deployments/default", deployment).0, 200);
    std::thread::sleep(Duration::from_millis(2500)); // the gateway's next read of the store
    let _ms2 = registered_media_server(&dir, "ms2", GATEWAY_A, "41000-41100", &[], &[]);
    let _ms = registered_media_server(
        &dir,
        "ms",
        GATEWAY_A,
        "40000-40100",
        &[],
        &[("DEPLOYMENTS__0__STUNSERVERS", "stun:127.0.0.1:3478")],
    );
    let _ = coturn.kill();
    let _ = coturn.wait();
    let record = media_servers(GATEWAY_A)
        .into_iter()
        .find(|s| s["id"] == "ms")
        .expect("ms");
    assert_eq!(record["publicIPAddress"], "127.0.0.1", "{record}");
    let log = std::fs::read_to_string(dir.join("ms.log")).unwrap_or_default();
    assert!(log.contains("public address 127.0.0.1 (STUN)"), "{log}");
    let record = media_servers(GATEWAY_A)
        .into_iter()
        .find(|s| s["id"] == "ms2")
        .expect("ms2");
    assert_eq!(record["publicIPAddress"], "127.0.0.1", "{record}");
    let log = std::fs::read_to_string(dir.join("ms2.log")).unwrap_or_default();
    assert!(
        log.contains("capacity 20 transports and 2 MCU connections"),
        "{log}"
    );
}

/// HTTPS on 8443 (signalling and pages) and 9443 (admin API and console) with a certificate from
/// `switchyard cert`, for a gateway and for all-in-one; a bad certificate stops the process at
/// start.
#[test]
fn https_for_signalling_and_admin() {
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new(binary())
        .args(["cert", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .status()
        .expect("run switchyard cert");
    assert!(made.success());
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let tls = [
        ("SWITCHYARD_TLS_CERT", cert_s.as_str()),
        ("SWITCHYARD_TLS_KEY", key_s.as_str()),
        ("SWITCHYARD_HTTPS", "127.0.0.1:8443"),
        ("SWITCHYARD_ADMIN_HTTPS", "127.0.0.1:9443"),
        ("ADMIN__APIKEY", ADMIN_KEY),
    ];
    let https = |url: &str, headers: &[&str]| {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--cacert",
            &cert_s,
            url,
        ]);
        for h in headers {
            c.args(["-H", h]);
        }
        let out = c.output().expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse::<u16>().unwrap_or(0), body.to_string())
    };
    {
        let _ga = gateway(&dir, "ga", GATEWAY_A, &redis, &tls);
        wait_for("HTTPS on 8443", Duration::from_secs(10), || {
            https("https://127.0.0.1:8443/health", &[]).0 == 200
        });
        let (status, page) = https("https://127.0.0.1:8443/", &[]);
        assert_eq!(status, 200);
        assert!(page.contains("Switchyard demo"), "{page}");
        let admin_url = "https://127.0.0.1:9443/admin/api/v1/media-servers";
        assert_eq!(https(admin_url, &[]).0, 401);
        assert_eq!(
            https(admin_url, &[&format!("X-API-Key: {ADMIN_KEY}")]).0,
            200
        );
    }
    // all-in-one serves its pages, signalling, admin API and console over HTTPS too.
    {
        let _aio = Process::start(
            "aio",
            &dir,
            &[
                "all-in-one",
                "--workers",
                "1",
                "--data-dir",
                &dir.join("aio").display().to_string(),
            ],
            &tls,
        );
        wait_for("all-in-one HTTPS on 8443", Duration::from_secs(20), || {
            https("https://127.0.0.1:8443/switchyard.js", &[]).0 == 200
        });
        let admin_url = "https://127.0.0.1:9443/admin/api/v1/media-servers";
        assert_eq!(https(admin_url, &[]).0, 401);
        let (status, servers) = https(admin_url, &[&format!("X-API-Key: {ADMIN_KEY}")]);
        assert_eq!(status, 200, "{servers}");
        assert!(servers.contains("all-in-one"), "{servers}");
        let (status, console) = https("https://127.0.0.1:9443/admin", &[]);
        assert_eq!(status, 200, "{console}");
        assert!(console.contains("Switchyard console"), "{console}");
    }
    // A certificate that is not one stops the gateway before it serves anything.
    std::fs::write(dir.join("bad.pem"), "not a certificate").expect("write");
    let bad = dir.join("bad.pem").display().to_string();
    let out = Command::new(binary())
        .current_dir(&dir)
        .args([
            "gateway",
            "--http",
            "127.0.0.1:8080",
            "--tls-cert",
            &bad,
            "--tls-key",
            &key_s,
        ])
        .env("CONNECTIONSTRINGS__CACHE", redis.url())
        .output()
        .expect("run switchyard");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("TLS certificate"), "{err}");
}

/// Redis restarts empty: media servers register again with their next heartbeat, gateways
/// reconnect and subscribe to events again, and new sessions work, with no restart of ours.
#[test]
fn redis_restart_needs_no_restart() {
    netns::enter();
    let mut redis = Redis::start(6379);
    let dir = temp_dir();
    let _ga = gateway(&dir, "ga", GATEWAY_A, &redis, &[]);
    let _ms = media_server(&dir, "ms", "a", GATEWAY_A, "40000-40100", &[]);
    let r = loadtest(
        &dir,
        GATEWAY_A,
        "before",
        &[
            "--scenario",
            "livestream",
            "--subscribers",
            "2",
            "--duration",
            "2",
        ],
    );
    assert_clean(&r, 3);
    redis.restart();
    wait_for("ms to register again", Duration::from_secs(10), || {
        media_servers(GATEWAY_A).iter().any(|s| s["id"] == "ms")
    });
    let r = loadtest(
        &dir,
        GATEWAY_A,
        "after",
        &[
            "--scenario",
            "meeting",
            "--participants",
            "3",
            "--duration",
            "2",
        ],
    );
    assert_clean(&r, 9);
    let log = std::fs::read_to_string(dir.join("ga.log")).unwrap_or_default();
    assert!(log.contains("subscribed to Redis again"), "{log}");
}

/// A gateway killed with SIGKILL leaves no ghosts: within its liveness TTL the other gateway
/// removes its clients from presence and tells the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_gateway_leaves_no_ghosts() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let _ga = gateway(&dir, "ga", GATEWAY_A, &redis, &[]);
    let mut gb = gateway(&dir, "gb", GATEWAY_B, &redis, &[]);
    let (mut alice, _) = join(GATEWAY_A, &token(&dir, "room", "alice"), "room")
        .await
        .expect("alice joins through ga");
    let (_bob, bob) = join(GATEWAY_B, &token(&dir, "room", "bob"), "room")
        .await
        .expect("bob joins through gb");
    let key = "switchyard:default:channel:room:participants";
    assert_eq!(redis.cli(&["HLEN", key]).trim(), "2");
    gb.kill9();
    let started = std::time::Instant::now();
    let mut left = false;
    while !left {
        let m = tokio::time::timeout(Duration::from_secs(15), alice.next())
            .await
            .expect("alice hears that bob left within 15 s");
        if let Some(Ok(Message::Text(t))) = m {
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            left = v["type"] == "participant-left" && v["participant"] == bob.as_str();
        }
    }
    eprintln!(
        "bob's ghost removed {} ms after gb died",
        started.elapsed().as_millis()
    );
    assert_eq!(redis.cli(&["HLEN", key]).trim(), "1");
}

/// The next message on `ws` of type `wanted`, skipping others; panics after 10 s.
async fn next_of_type(ws: &mut Socket, wanted: &str) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {wanted} message within 10 s"));
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON from the gateway");
                if v["type"] == wanted {
                    return v;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("the socket ended while waiting for {wanted}: {other:?}"),
        }
    }
}

async fn send_json(ws: &mut Socket, v: Value) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// Peer-to-peer signals between clients of two gateways (plain WebSocket clients, no media
/// server needed): relayed through Redis to the participant named and to no one else; refused,
/// with the request's id, for another channel's participant or an unknown one, for data over
/// 64 KiB, and past the rate limit, without closing the socket; counted in each gateway's
/// /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_across_gateways() {
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    // The socket's own message rate (SYNC:MESSAGERATE) off: the flood below is for the
    // signals' limit, which answers each refused signal instead of closing the socket.
    let unlimited = [("SYNC__MESSAGERATE", "0")];
    let _ga = gateway(&dir, "ga", GATEWAY_A, &redis, &unlimited);
    let _gb = gateway(&dir, "gb", GATEWAY_B, &redis, &unlimited);
    let (mut alice, a) = join(GATEWAY_A, &token(&dir, "room", "alice"), "room")
        .await
        .expect("alice joins through ga");
    let (mut bob, b) = join(GATEWAY_B, &token(&dir, "room", "bob"), "room")
        .await
        .expect("bob joins through gb");
    let (mut carol, c) = join(GATEWAY_B, &token(&dir, "other", "carol"), "other")
        .await
        .expect("carol joins another channel through gb");

    // Across gateways, both ways, the data as it was sent.
    let offer = serde_json::json!({"p2p": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"});
    send_json(
        &mut alice,
        serde_json::json!({"type": "signal", "id": 1, "to": b, "data": offer}),
    )
    .await;
    let got = next_of_type(&mut bob, "signal").await;
    assert_eq!(
        got,
        serde_json::json!({"type": "signal", "from": a, "data": offer})
    );
    let answer = serde_json::json!({"p2p": "answer", "sdp": "v=0\r\n", "n": [1.5, null, true]});
    send_json(
        &mut bob,
        serde_json::json!({"type": "signal", "to": a, "data": answer}),
    )
    .await;
    let got = next_of_type(&mut alice, "signal").await;
    assert_eq!(
        got,
        serde_json::json!({"type": "signal", "from": b, "data": answer})
    );

    // Refusals carry the request's id; the socket stays open.
    for (id, to) in [("other-channel", c.as_str()), ("unknown", "p-gz-00000000")] {
        send_json(
            &mut alice,
            serde_json::json!({"type": "signal", "id": id, "to": to, "data": {}}),
        )
        .await;
        let e = next_of_type(&mut alice, "error").await;
        assert_eq!(e["id"], id, "{e}");
        assert_eq!(
            e["reason"],
            format!("no participant {to} in channel room"),
            "{e}"
        );
    }
    let big = "x".repeat(70 * 1024);
    send_json(
        &mut alice,
        serde_json::json!({"type": "signal", "id": "big", "to": b, "data": big}),
    )
    .await;
    let e = next_of_type(&mut alice, "error").await;
    assert_eq!(e["id"], "big", "{e}");
    assert!(
        e["reason"].as_str().unwrap_or("").contains("at most 65536"),
        "{e}"
    );

    // A flood: the first ones pass (the burst, less the 4 used above, plus what refills while
    // they are handled), the rest are refused as rate limited. The last request marks the end:
    // it is refused either way (an unknown target, or the rate), and replies come in order.
    let flood = 400;
    for n in 0..flood {
        send_json(
            &mut alice,
            serde_json::json!({"type": "signal", "id": n, "to": b, "data": {"n": n}}),
        )
        .await;
    }
    send_json(
        &mut alice,
        serde_json::json!({"type": "signal", "id": "end", "to": "nobody", "data": {}}),
    )
    .await;
    let mut limited = 0;
    let end_limited = loop {
        let e = next_of_type(&mut alice, "error").await;
        if e["id"] == "end" {
            break usize::from(e["reason"] == "rate limited");
        }
        assert_eq!(e["reason"], "rate limited", "{e}");
        limited += 1;
    };
    let passed = flood - limited;
    // 400 at 50/s with a burst of 100 would need over 6 s to pass whole.
    assert!(
        limited >= 1 && passed >= 96,
        "{passed} passed, {limited} limited"
    );
    // Bob gets exactly those that passed, in order.
    let mut last = -1;
    for _ in 0..passed {
        let s = next_of_type(&mut bob, "signal").await;
        let n = s["data"]["n"].as_i64().expect("a flood signal");
        assert!(n > last, "out of order: {n} after {last}");
        last = n;
    }
    // The bucket refills: after a quiet second, signals pass again on the same socket.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    send_json(
        &mut alice,
        serde_json::json!({"type": "signal", "to": b, "data": "again"}),
    )
    .await;
    let s = next_of_type(&mut bob, "signal").await;
    assert_eq!(s["data"], "again", "{s}");

    // Carol, in another channel on bob's gateway, heard none of it.
    send_json(
        &mut carol,
        serde_json::json!({"type": "signal", "id": "mark", "to": "nobody", "data": {}}),
    )
    .await;
    loop {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let m = tokio::time::timeout(Duration::from_secs(10), carol.next())
            .await
            .expect("carol's reply within 10 s");
        let Some(Ok(Message::Text(t))) = m else {
            panic!("carol's socket ended: {m:?}");
        };
        let v: Value = serde_json::from_str(&t).expect("JSON from the gateway");
        assert_ne!(
            v["type"], "signal",
            "carol heard another channel's signal: {v}"
        );
        if v["id"] == "mark" {
            break;
        }
    }

    let ma = http::metrics(GATEWAY_A);
    let refused = |reason: &str| {
        ma.get(&format!(
            "switchyard_signals_refused_total{{reason=\"{reason}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    assert_eq!(
        ma["switchyard_signals_relayed_total"],
        (1 + passed + 1) as f64,
        "{ma:?}"
    );
    assert_eq!(
        refused("rate_limited"),
        (limited + end_limited) as f64,
        "{ma:?}"
    );
    assert_eq!(refused("too_large"), 1.0, "{ma:?}");
    // Two wrong targets, and `end` if it got past the rate limit.
    assert_eq!(refused("not_found"), (2 + 1 - end_limited) as f64, "{ma:?}");
    let mb = http::metrics(GATEWAY_B);
    assert_eq!(mb["switchyard_signals_relayed_total"], 1.0, "{mb:?}");
}

/// A gateway sharing TURN:SECRET with its media servers hands clients their TURN URLs in
/// `joined`, with a credential of the REST scheme that the media server's TURN accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_carries_the_media_servers_turn() {
    netns::enter();
    let secret = "cluster-turn-secret-0123456789";
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let _ga = gateway(&dir, "ga", GATEWAY_A, &redis, &[("TURN__SECRET", secret)]);
    let _ms = registered_media_server(
        &dir,
        "ms1",
        GATEWAY_A,
        "50000-50010",
        &["--public-ip", "127.0.0.1"],
        &[("TURN__SECRET", secret)],
    );
    let (_ws, joined) = join_message(GATEWAY_A, &token(&dir, "room", "alice"), "room")
        .await
        .expect("join");
    assert_eq!(joined["type"], "joined", "{joined}");
    let server = &joined["iceServers"][0];
    let urls: Vec<&str> = server["urls"]
        .as_array()
        .expect("urls")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        urls,
        [
            "turn:127.0.0.1:3478?transport=tcp",
            "turn:127.0.0.1:3478?transport=udp"
        ],
        "{joined}"
    );
    let username = server["username"].as_str().expect("username");
    assert!(username.ends_with(":alice"), "{username}");
    assert_eq!(
        server["credential"],
        switchyard_dataplane::turn::auth::rest_password(secret.as_bytes(), username)
    );
}

/// Without TURN:SECRET anywhere, the gateway and the media server take the TURN secret from
/// the deployment in the configuration store (PostgreSQL): the admin API shows it masked (and keeps it
/// when the masked value is written back), the cluster API hands it to the media server in
/// full, and the credential in `joined` is signed with it and allocates on the media server's
/// TURN, as does one signed with the previous secret; one signed with another is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_secret_from_the_deployment() {
    use switchyard_dataplane::turn::auth::rest_password;
    let postgres = Postgres::create();
    netns::enter();
    let (secret, previous) = (
        "deployment-turn-secret-0123",
        "deployment-turn-previous-0123",
    );
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let database = postgres.url();
    let admin_env = [
        ("ADMIN__APIKEY", ADMIN_KEY),
        ("CONNECTIONSTRINGS__DEFAULT", database.as_str()),
    ];
    let ga = gateway(&dir, "ga", GATEWAY_A, &redis, &admin_env);
    let body = format!(
        r#"{{"stunServers":[],"sfuConnectionsPerCpuSafe":10,"sfuConnectionsPerCpuUnsafe":20,"mcuConnectionsPerCpuSafe":1,"mcuConnectionsPerCpuUnsafe":2,"clusteringStrategy":"region","turnSecret":"{secret}","turnPreviousSecret":"{previous}"}}"#
    );
    let (status, shown) = admin_with("PUT", "/deployments/default", &body);
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        (&shown["turnSecret"], &shown["turnPreviousSecret"]),
        (&Value::from("****"), &Value::from("****")),
        "{shown}"
    );
    // Read, changed and written back masked: the secrets stay.
    let mut changed = admin("GET", "/deployments/default").1;
    changed["sfuConnectionsPerCpuUnsafe"] = Value::from(30);
    assert_eq!(
        admin_with("PUT", "/deployments/default", &changed.to_string()).0,
        200
    );
    let log = admin("GET", "/audit").1.to_string();
    assert!(!log.contains(secret) && !log.contains(previous), "{log}");
    // The gateway reads its secret at start, as media servers do.
    drop(ga);
    let ga = gateway(&dir, "ga-again", GATEWAY_A, &redis, &admin_env);
    let cluster =
        signed(GATEWAY_A, "GET", "/cluster/v1/deployments/default", "").expect("deployment");
    let full: Value = serde_json::from_str(&cluster.body).expect("json");
    assert_eq!(
        (&full["turnSecret"], &full["turnPreviousSecret"]),
        (&Value::from(secret), &Value::from(previous)),
        "{full}"
    );
    assert_eq!(full["sfuConnectionsPerCpuUnsafe"], 30, "{full}");
    let ms = registered_media_server(
        &dir,
        "ms1",
        GATEWAY_A,
        "50000-50010",
        &["--public-ip", "127.0.0.1"],
        &[],
    );
    let from_deployment = "TURN secret from deployment \"default\" in the configuration store";
    for p in [&ga, &ms] {
        assert!(p.log_text().contains(from_deployment), "{}", p.log_tail());
    }

    let (_ws, joined) = join_message(GATEWAY_A, &token(&dir, "room", "alice"), "room")
        .await
        .expect("join");
    let server = &joined["iceServers"][0];
    let username = server["username"].as_str().expect("username");
    let credential = server["credential"].as_str().expect("credential");
    assert_eq!(
        credential,
        rest_password(secret.as_bytes(), username),
        "{joined}"
    );
    let turn = "127.0.0.1:3478".parse().expect("address");
    let allocate = |s: &str| {
        switchyard_tests::turn::allocate(turn, username, &rest_password(s.as_bytes(), username))
    };
    assert_eq!(
        switchyard_tests::turn::allocate(turn, username, credential),
        0
    );
    assert_eq!(allocate(previous), 0, "the previous secret is accepted");
    assert_eq!(allocate("some-other-secret-0123456"), 401);
}

/// A media server checks itself at start: with EXTERNAL:PUBLICIPADDRESS set to an address the
/// STUN servers (two coturns) do not see, the public IP check fails, naming the address to
/// set, in its log, its registry record, the admin API and its `/metrics`; the checks that
/// passed are there too.
#[test]
fn host_checks_reach_the_registry_admin_api_and_metrics() {
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let mut stun: Vec<_> = [3478, 3479].map(|p| stun_server(&dir, p)).into();
    std::thread::sleep(Duration::from_millis(500));
    let _ga = gateway(
        &dir,
        "ga",
        GATEWAY_A,
        &redis,
        &[("ADMIN__APIKEY", ADMIN_KEY)],
    );
    let ms = registered_media_server(
        &dir,
        "ms",
        GATEWAY_A,
        "40000-40100",
        &["--cluster-port", "8445"],
        &[
            ("TURN__SECRET", "host-checks-turn-secret-0123"),
            ("TURN__PORT", "3490"),
            ("EXTERNAL__PUBLICIPADDRESS", "203.0.113.9"),
            (
                "DEPLOYMENTS__0__STUNSERVERS",
                "stun:127.0.0.1:3478,stun:127.0.0.1:3479",
            ),
        ],
    );
    let check = |checks: &Value, name: &str| -> Value {
        checks
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    // The STUN checks finish in the background and reach the record with a heartbeat.
    let mut record = Value::Null;
    wait_for(
        "the public IP check in the record",
        Duration::from_secs(15),
        || {
            record = media_servers(GATEWAY_A)
                .into_iter()
                .find(|s| s["id"] == "ms")
                .unwrap_or(Value::Null);
            !check(&record["checks"], "public_ip").is_null()
        },
    );
    for p in &mut stun {
        let _ = p.kill();
        let _ = p.wait();
    }
    let public_ip = check(&record["checks"], "public_ip");
    assert_eq!(public_ip["status"], "fail", "{record}");
    assert!(
        public_ip["detail"]
            .as_str()
            .is_some_and(|d| d.contains("203.0.113.9") && d.contains("127.0.0.1")),
        "{public_ip}"
    );
    assert!(
        public_ip["fix"]
            .as_str()
            .is_some_and(|f| f.contains("set EXTERNAL:PUBLICIPADDRESS=127.0.0.1")),
        "{public_ip}"
    );
    for passed in ["server", "turn_advertised_ports"] {
        assert_eq!(
            check(&record["checks"], passed)["status"],
            "pass",
            "{record}"
        );
    }
    // The admin API shows the same record.
    let (status, shown) = admin("GET", "/media-servers/ms");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        check(&shown["checks"], "public_ip")["status"],
        "fail",
        "{shown}"
    );
    // The media server's /metrics, on its cluster port.
    let metrics = http::metrics(8445);
    let series = |status: &str| {
        metrics
            .get(&format!(
                "switchyard_check{{check=\"public_ip\",status=\"{status}\"}}"
            ))
            .copied()
    };
    assert_eq!(
        (series("fail"), series("pass")),
        (Some(1.0), Some(0.0)),
        "{metrics:?}"
    );
    assert!(
        ms.log_text().contains("check public IP FAILED"),
        "{}",
        ms.log_tail()
    );
}

/// Speaking in a cluster: the speaker's page is on gateway a, whose media server reports the
/// changes there; the silent page, on gateway b, hears `speaking` true then false for it
/// through the gateways' shared events, and nobody hears of the silent page.
#[test]
fn speaking_across_gateways() {
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let _ga = gateway(&dir, "ga", GATEWAY_A, &redis, &[]);
    let _gb = gateway(&dir, "gb", GATEWAY_B, &redis, &[]);
    let _ms = media_server(&dir, "ms", "a", GATEWAY_A, "40000-40100", &[]);
    let tokens = ["silent", "speaker"].map(|u| token(&dir, "room", u));
    let out = Command::new("node")
        .current_dir(browser_dir())
        .arg("speaking_pages.mjs")
        .arg(format!("http://127.0.0.1:{GATEWAY_B}"))
        .arg("room")
        .args(&tokens)
        .env(
            "BASES",
            format!("http://127.0.0.1:{GATEWAY_B},http://127.0.0.1:{GATEWAY_A}"),
        )
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result = last_json(&stdout)
        .unwrap_or_else(|| panic!("no JSON result from the browser script:\n{stdout}\n{stderr}"));
    assert_eq!(
        result["ok"], true,
        "speaking was not announced across gateways:\n{result:#}\n{stderr}"
    );
}

/// The operator's console at /admin, in headless Chromium against a gateway with two media
/// servers that have public IPs and a client in a channel: a wrong key is refused; with the
/// right one the console lists both servers with their public IPs, drains one, kicks the
/// client (whose socket closes with 4003), rotates an application's secret, shows the API's
/// refusal of a bad channel configuration and saves a good one, and lists all of it in the
/// audit log. The page itself needs no key, but the admin addresses. Screenshots of each step
/// are kept in target/artefacts/console/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    netns::enter();
    let redis = Redis::start(6379);
    let dir = temp_dir();
    let _ga = gateway(
        &dir,
        "ga",
        GATEWAY_A,
        &redis,
        &[
            ("ADMIN__APIKEY", ADMIN_KEY),
            ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
        ],
    );
    let servers = [
        ("ms-a", "a", "40000-40100", "203.0.113.10"),
        ("ms-b", "b", "41000-41100", "203.0.113.11"),
    ];
    let _servers = servers.map(|(id, region, ports, public)| {
        registered_media_server(
            &dir,
            id,
            GATEWAY_A,
            ports,
            &[],
            &[("REGION", region), ("EXTERNAL__PUBLICIPADDRESS", public)],
        )
    });

    // The page is served without the key (it holds no data), but only to ADMIN:IPADDRESSES.
    let page = "http://127.0.0.1:9090/admin";
    let (status, html) = curl("127.0.0.1", "GET", page, &[], None);
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("/admin/console.js"), "{html}");
    assert_eq!(curl("127.0.0.2", "GET", page, &[], None).0, 403);

    let secret = "console-secret-one-0123456789";
    let body = format!(r#"{{"secrets":["{secret}"]}}"#);
    assert_eq!(admin_with("PUT", "/applications/acme", &body).0, 200);
    let config = r#"{"pattern":"team-*","position":0,"allowedCodecs":[],"sfuAllowed":true,"mcuAllowed":true}"#;
    assert_eq!(
        admin_with("PUT", "/applications/acme/channel-configs", config).0,
        200
    );
    let (mut ws, client) = join(GATEWAY_A, &token(&dir, "lobby", "alice"), "lobby")
        .await
        .expect("join");
    // The client reads its socket as a real one would, until it is closed.
    let closed = tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(frame) = m {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    });

    let artefacts = switchyard_tests::artefacts("console");
    let out = tokio::process::Command::new("node")
        .current_dir(browser_dir())
        .arg("console_page.mjs")
        .arg(page)
        .arg(ADMIN_KEY)
        .arg(&artefacts)
        .env(
            "SERVERS",
            servers.map(|(id, _, _, ip)| format!("{id}={ip}")).join(","),
        )
        .env("DRAIN", "ms-b")
        .env("CHANNEL", "lobby")
        .env("CLIENT", &client)
        .env("APPLICATION", "acme")
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("console screenshots: {}", artefacts.display());
    let result = last_json(&stdout)
        .unwrap_or_else(|| panic!("no JSON result from the browser script:\n{stdout}\n{stderr}"));
    eprintln!("console steps (ms): {}", result["steps"]);
    assert_eq!(result["ok"], true, "{result:#}\n{stderr}");
    let shots = std::fs::read_dir(&artefacts).map_or(0, Iterator::count);
    assert!(shots >= 8, "{shots} screenshots in {}", artefacts.display());

    // What the console did, as the admin API and the client saw it.
    let drained = |id: &str| admin("GET", &format!("/media-servers/{id}")).1["draining"] == true;
    assert!(drained("ms-b") && !drained("ms-a"));
    let closed = tokio::time::timeout(Duration::from_secs(5), closed).await;
    assert_eq!(
        closed.ok().and_then(Result::ok).flatten(),
        Some(4003),
        "the kicked client's socket"
    );
    let new_secret = result["newSecret"].as_str().unwrap_or_default();
    assert_eq!(
        admin("GET", "/applications/acme").1["secrets"],
        serde_json::json!([secret, new_secret])
    );
    assert!(
        result["validationError"]
            .as_str()
            .is_some_and(|e| e.contains("\"mp3\"")),
        "the API's own message: {result}"
    );
    let configs = admin("GET", "/applications/acme/channel-configs").1;
    assert_eq!(configs[0]["allowedCodecs"], serde_json::json!(["opus"]));
    assert_eq!(configs[0]["maxBitrateKbps"], 1500);
    assert_eq!(
        (&configs[0]["mcuLayout"], &configs[0]["mcuCanvasWidth"]),
        (&"speaker".into(), &320.into()),
        "{configs}"
    );
    assert_eq!(configs[0]["mcuFrameRate"], Value::Null, "{configs}");
}
