//! Recording through the all-in-one's admin API: an aiortc publisher (colour and tone, over
//! WHIP) in a recorded channel leaves one `.mkv` and one `.mka` per publication under
//! `<data-dir>/recordings/<channel>/`, with the codecs it sent (no transcoding) and its length,
//! checked by ffprobe and decoded without error by ffmpeg; the monitor muxes the channel's
//! session into `recordings/sessions/` with its JSON. A server killed mid-recording leaves
//! `.rec` files that decode up to about the kill; started again, it closes them and muxes them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_tests::cluster::{Postgres, Process, Redis, wait_for};
use switchyard_tests::rabbitmq::RabbitMq;
use switchyard_tests::recordings::{self, admin, decode, sound};
use switchyard_tests::s3::S3;
use switchyard_tests::server::Server;
use switchyard_tests::{http, mix, netns};

/// Small muxed canvases, so that muxing takes little of the test's time.
const MUX_SETTINGS: [(&str, &str); 3] = [
    ("RECORDING__WIDTH", "320"),
    ("RECORDING__HEIGHT", "180"),
    ("RECORDING__FRAMERATE", "15"),
];

/// The finished recordings in `dir` once there are `count` (waiting up to 10 s).
fn finished(dir: &Path, count: usize) -> Vec<PathBuf> {
    recordings::finished(dir, count, Duration::from_secs(10))
}

/// The muxed session of `channel` under `recordings` (waiting up to 60 s).
fn muxed_session(dir: &Path, channel: &str) -> (serde_json::Value, PathBuf) {
    recordings::muxed_session(dir, channel, Duration::from_secs(60))
}

/// ffprobe's codec and duration (seconds) of a file's one stream.
fn probe(path: &Path) -> (String, f64) {
    let (codecs, duration) = recordings::probe(path);
    (codecs.into_iter().next().unwrap_or_default(), duration)
}

#[test]
fn a_recorded_channel_leaves_a_file_per_track() {
    netns::enter();
    let mut env = vec![("ADMIN__IPADDRESSES", "127.0.0.1/32")];
    env.extend(MUX_SETTINGS);
    let server = Server::start_with_env(&[], &env);
    let recording = |method: &str| admin(&server, method, "/channels/rec/recording", "");
    let on = recording("POST");
    assert_eq!(on.status, 200, "{}", on.body);

    let base = format!("http://127.0.0.1:{}", server.port);
    // The VP8 publisher's microphone is muted for 5 s in the middle of its 8 s.
    for (codec, seconds, mute) in [("VP8", 8, "1.5:6.5"), ("H264", 6, "0:0")] {
        let token = server.token("rec", &format!("publisher-{codec}"), &[]);
        let extra = ["--mute", mute];
        let result = mix::run_with(&base, "rec", &[token], "", 1, codec, seconds, &extra);
        assert_eq!(result["ok"], true, "{result:#}");
    }
    let dir = server.data_dir.join("recordings").join("rec");
    let files = finished(&dir, 4);
    let probed: Vec<(String, f64)> = files.iter().map(|f| probe(f)).collect();
    println!("{files:?} {probed:?}");
    // Each file's extension and codec, in a fixed order.
    let mut kinds: Vec<(String, String)> = files
        .iter()
        .zip(&probed)
        .map(|(f, (codec, _))| {
            let extension = f.extension().and_then(|e| e.to_str()).unwrap_or("");
            (extension.to_string(), codec.clone())
        })
        .collect();
    kinds.sort();
    let expected = [
        ("mka", "opus"),
        ("mka", "opus"),
        ("mkv", "h264"),
        ("mkv", "vp8"),
    ]
    .map(|(e, c)| (e.to_string(), c.to_string()));
    assert_eq!(kinds, expected, "{files:?}\n{}", server.log_tail());
    for ((_, duration), file) in probed.iter().zip(&files) {
        // The publisher sends for 6 s (less the time its connection takes to start).
        assert!((4.0..=9.0).contains(duration), "{file:?}: {duration} s");
        let (errors, _) = decode(file);
        assert!(errors.trim().is_empty(), "{file:?}: {errors}");
    }

    // Each publication's log: a start and a stop entry per file, the stop with its RTP span;
    // the muted one has its audio's mute and unmute between.
    let logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(logs.len(), 2, "{logs:?}");
    let mut mutes = Vec::new();
    for log in &logs {
        let all: Vec<serde_json::Value> = std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (updates, entries): (Vec<serde_json::Value>, Vec<serde_json::Value>) = all
            .into_iter()
            .partition(|e| e["type"] == "updateRecording");
        let states: Vec<(String, String, i64)> = updates
            .iter()
            .map(|u| {
                let d = &u["data"];
                let file = d["file"].as_str().unwrap_or("").to_string();
                let state = d["state"].as_str().unwrap_or("").to_string();
                (file, state, d["sinceTimestamp"].as_i64().unwrap_or(0))
            })
            // A publisher that stops sending at its end is paused before its stop.
            .filter(|(_, state, _)| state != "paused")
            .collect();
        if !states.is_empty() {
            mutes.push((states, entries.clone()));
        }
        let kinds: Vec<&str> = entries.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "startRecording",
                "startRecording",
                "stopRecording",
                "stopRecording"
            ],
            "{log:?}: {entries:?}"
        );
        for e in &entries {
            assert_eq!(e["channelId"], "rec");
            assert_eq!(e["connectionType"], "sfu");
            assert!(
                e["userId"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("publisher-"))
            );
        }
        let stop = &entries[3]["data"];
        assert!(stop["durationMs"].as_u64() > Some(4000), "{stop}");
        assert!(stop["firstRtpTimestamp"].is_u64() && stop["lastRtpTimestamp"].is_u64());
        // Each file's first frame on the publisher's clock (from the sender reports; the
        // muxer's lip sync) and on the server's: aiortc runs on this machine, so the two
        // clocks agree within a second.
        for stop in [&entries[2]["data"], &entries[3]["data"]] {
            let (sent, arrived) = (
                stop["firstFrameSenderTimestamp"].as_i64(),
                stop["firstFrameTimestamp"].as_i64(),
            );
            assert!(
                sent.zip(arrived).is_some_and(|(s, a)| (s - a).abs() < 1000),
                "{stop}"
            );
        }
        assert!(dir.join(stop["file"].as_str().unwrap()).exists(), "{stop}");
    }

    // One publication was muted, from 1.5 s to 6.5 s after its first audio frame.
    assert_eq!(mutes.len(), 1, "{mutes:?}");
    let (states, entries) = &mutes[0];
    let audio = entries
        .iter()
        .filter(|e| e["type"] == "stopRecording")
        .find(|e| {
            e["data"]["file"]
                .as_str()
                .is_some_and(|f| f.ends_with(".mka"))
        })
        .unwrap();
    let first = audio["data"]["firstFrameTimestamp"].as_i64().unwrap();
    let seen: Vec<(&str, i64)> = states
        .iter()
        .map(|(file, state, since)| {
            assert_eq!(Some(file.as_str()), audio["data"]["file"].as_str());
            (state.as_str(), since - first)
        })
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].0, seen[1].0), ("muted", "live"), "{seen:?}");
    assert!((1_200..=1_900).contains(&seen[0].1), "muted at {seen:?}");
    assert!(
        (6_200..=6_900).contains(&seen[1].1),
        "live again at {seen:?}"
    );

    let off = recording("DELETE");
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(recording("DELETE").status, 404, "not recorded any more");

    // The two publications, one after the other, are one session: muxed into one file with
    // VP8 and Opus, as long as both together, decoding cleanly.
    let (session, muxed) = muxed_session(&server.data_dir.join("recordings"), "rec");
    assert_eq!(session["error"], serde_json::Value::Null, "{session:#}");
    assert_eq!(
        session["inputs"].as_array().map(Vec::len),
        Some(4),
        "{session:#}"
    );
    assert_eq!(
        session["participants"].as_array().map(Vec::len),
        Some(2),
        "{session:#}"
    );
    assert_eq!(recordings::probe(&muxed).0, ["vp8", "opus"], "{muxed:?}");
    let (errors, last) = decode(&muxed);
    assert!(errors.trim().is_empty(), "{muxed:?}: {errors}");
    // The mute: silence where it was, the tone around it (the VP8 publication starts the
    // session, its sound within a few tens of milliseconds of the session's start).
    let pcm = sound(&muxed);
    let rms = |from: f64, to: f64| {
        let part = &pcm[(from * 48_000.0) as usize..(to * 48_000.0) as usize];
        (part.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / part.len() as f64).sqrt()
    };
    assert!(rms(0.3, 1.2) > 1000.0, "the tone before the mute");
    assert!(rms(2.0, 6.0) < 100.0, "silence while muted");
    assert!(rms(7.0, 7.6) > 1000.0, "the tone after it");
    let lengths: f64 = probed.iter().map(|(_, d)| d).sum::<f64>() / 2.0;
    assert!(
        last >= lengths - 0.5,
        "{muxed:?}: {last} s of {lengths} s recorded"
    );

    // A channel configuration with `recording` records its channels' publications without an
    // admin call.
    let secret = "recording-secret-0123456789";
    let app = format!(r#"{{"secrets":["{secret}"]}}"#);
    let r = admin(&server, "PUT", "/applications/acme", &app);
    assert_eq!(r.status, 200, "{}", r.body);
    let config = r#"{"pattern":"auto-*","position":0,"allowedCodecs":[],"sfuAllowed":true,"mcuAllowed":true,"recording":true}"#;
    let r = admin(&server, "PUT", "/applications/acme/channel-configs", config);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(r#""recording":true"#), "{}", r.body);
    // The server reads its store again every 2 s.
    std::thread::sleep(Duration::from_secs(3));
    let token = server.token(
        "auto-1",
        "publisher-auto",
        &["--application", "acme", "--secret", secret],
    );
    let result = mix::run(&base, "auto-1", &[token], "", 1, "VP8", 3);
    assert_eq!(result["ok"], true, "{result:#}");
    let auto = finished(&server.data_dir.join("recordings").join("auto-1"), 2);
    assert_eq!(auto.len(), 2, "{auto:?}\n{}", server.log_tail());

    // An MCU participant's own media is recorded too, as an `mcu` connection.
    let token = server.token(
        "auto-2",
        "mixer-auto",
        &["--application", "acme", "--secret", secret],
    );
    let result = mix::run(&base, "auto-2", &[token], "", 0, "VP8", 3);
    assert_eq!(result["ok"], true, "{result:#}");
    let dir = server.data_dir.join("recordings").join("auto-2");
    let mixed = finished(&dir, 2);
    assert_eq!(mixed.len(), 2, "{mixed:?}\n{}", server.log_tail());
    let log = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|f| f.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(r#""connectionType":"mcu""#), "{text}");
}

/// `kill -9` of the server 4 s into a recording: its `.rec` files are valid up to their last
/// whole cluster (at most a second before the kill), decode without a corrupt frame, and hold
/// at least 2.5 s.
#[test]
fn a_killed_server_leaves_rec_files_that_decode() {
    netns::enter();
    let mut env = vec![("ADMIN__IPADDRESSES", "127.0.0.1/32")];
    env.extend(MUX_SETTINGS);
    let mut server = Server::start_with_env(&[], &env);
    let on = admin(&server, "POST", "/channels/crash/recording", "");
    assert_eq!(on.status, 200, "{}", on.body);
    let base = format!("http://127.0.0.1:{}", server.port);
    let token = server.token("crash", "publisher", &[]);
    // The publisher's script fails once the server is gone; what it says does not matter.
    let publisher = std::thread::spawn(move || mix::run(&base, "crash", &[token], "", 1, "VP8", 8));
    let dir = server.data_dir.join("recordings").join("crash");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::read_dir(&dir).map_or(0, |d| d.count()) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(4));
    server.kill();
    let _ = publisher.join();
    let files = finished(&dir, 2);
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        assert!(file.extension().is_some_and(|e| e == "rec"), "{file:?}");
        let (errors, last) = decode(file);
        // The cut is mid-cluster: the demuxer may say the file ended early, nothing worse.
        let worse: Vec<&str> = errors
            .lines()
            .filter(|l| !l.contains("ended prematurely"))
            .collect();
        assert!(worse.is_empty(), "{file:?}: {errors}");
        assert!(last >= 2.5, "{file:?}: decodes to {last} s");
    }

    // Started again, the server's monitor closes them (final names, a stop entry in the log)
    // and muxes them.
    server.restart_with_env(&[], &env);
    let closed = finished(&dir, 2);
    let mut names: Vec<&str> = closed
        .iter()
        .filter_map(|f| f.extension()?.to_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["mka", "mkv"], "{closed:?}\n{}", server.log_tail());
    let log = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|f| f.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let stops = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("stopRecording"))
        .count();
    assert_eq!(stops, 2, "{log:?}");
    let (session, muxed) = muxed_session(&server.data_dir.join("recordings"), "crash");
    assert_eq!(session["error"], serde_json::Value::Null, "{session:#}");
    let (errors, last) = decode(&muxed);
    assert!(errors.trim().is_empty(), "{muxed:?}: {errors}");
    assert!(last >= 2.5, "{muxed:?}: {last} s");
}

/// With RECORDING:STORAGE, a muxed session and its recordings go to S3 (moto here). The storage
/// is down at first: nothing is deleted, and once it answers the mover's retry uploads every
/// file, verifies it, and only then deletes the local media (the JSON stays, marked).
#[test]
fn sessions_move_to_object_storage_once_it_answers() {
    netns::enter();
    let mut env = vec![
        ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
        ("RECORDING__STORAGE", "s3://recordings/archive"),
        ("AWS_ENDPOINT", "http://127.0.0.1:9000"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    env.extend(MUX_SETTINGS);
    let server = Server::start_with_env(&[], &env);
    let on = admin(&server, "POST", "/channels/moved/recording", "");
    assert_eq!(on.status, 200, "{}", on.body);
    let base = format!("http://127.0.0.1:{}", server.port);
    let token = server.token("moved", "publisher", &[]);
    let result = mix::run(&base, "moved", &[token], "", 1, "VP8", 3);
    assert_eq!(result["ok"], true, "{result:#}");
    let recordings = server.data_dir.join("recordings");
    let (session, muxed) = muxed_session(&recordings, "moved");
    assert_eq!(session["error"], serde_json::Value::Null, "{session:#}");
    let json = muxed.with_extension("json");
    let media: Vec<PathBuf> = std::iter::once(muxed.clone())
        .chain(
            session["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| PathBuf::from(i["file"].as_str().unwrap())),
        )
        .collect();
    let sizes: Vec<u64> = media
        .iter()
        .map(|m| std::fs::metadata(m).unwrap().len())
        .collect();

    // The storage does not answer: the files stay.
    std::thread::sleep(Duration::from_secs(3));
    assert!(media.iter().all(|m| m.exists()), "{media:?}");
    let s3 = S3::start(9000);
    s3.create_bucket("recordings");
    let deadline = Instant::now() + Duration::from_secs(60);
    let moved = loop {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        if !v["storage"].is_null() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "not moved in 60 s:\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let objects = s3.list("recordings");
    for (file, size) in media.iter().zip(&sizes) {
        let under = file.strip_prefix(&recordings).unwrap().to_string_lossy();
        let key = format!("archive/{under}");
        assert!(
            objects.contains(&(key.clone(), *size)),
            "{key} ({size} bytes) not in {objects:?}"
        );
        assert!(!file.exists(), "{file:?} deleted after its upload");
    }
    assert!(json.exists(), "the session JSON stays");
    let session_key = format!(
        "archive/sessions/{}",
        json.file_name().unwrap().to_string_lossy()
    );
    assert!(
        objects.iter().any(|(k, _)| *k == session_key),
        "{objects:?}"
    );
    assert!(
        moved["storage"]["muxed"]
            .as_str()
            .is_some_and(|u| u.starts_with("s3://recordings/archive/sessions/")),
        "{moved:#}"
    );
}

/// A `switchyard recording-muxer` process, with extra settings, logging to `log`.
fn muxer(data_dir: &Path, env: &[(&str, &str)], log: &Path) -> std::process::Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(switchyard_tests::binary())
        .arg("recording-muxer")
        .arg("--data-dir")
        .arg(data_dir)
        .envs(env.iter().copied())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start switchyard recording-muxer")
}

/// Files in `dir` whose names start with `prefix` and end with `suffix`.
fn named(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| {
                    let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    n.is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// With RabbitMQ, the monitor queues the session (durable: it survives a broker restart), a
/// muxer killed mid-job never acknowledged it, and a second muxer makes the one muxed file.
#[test]
fn a_queued_session_survives_a_broker_restart_and_a_killed_muxer() {
    netns::enter();
    let mut broker = RabbitMq::start(5672);
    let uri = broker.uri();
    let mut env = vec![
        ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
        ("DEPLOYMENTS__0__RECORDINGMANAGEMENT__AMQPURI", uri.as_str()),
    ];
    env.extend(MUX_SETTINGS);
    let server = Server::start_with_env(&[], &env);
    let on = admin(&server, "POST", "/channels/queued/recording", "");
    assert_eq!(on.status, 200, "{}", on.body);
    let base = format!("http://127.0.0.1:{}", server.port);
    let token = server.token("queued", "publisher", &[]);
    let result = mix::run(&base, "queued", &[token], "", 1, "VP8", 3);
    assert_eq!(result["ok"], true, "{result:#}");
    let sessions = server.data_dir.join("recordings").join("sessions");
    wait_for("the session queued", Duration::from_secs(60), || {
        !named(&sessions, "queued-", ".job").is_empty()
    });
    assert!(
        named(&sessions, "queued-", ".json").is_empty(),
        "not muxed in-process"
    );

    // The broker restarts with the job on disk.
    broker.restart();
    // A slow muxer (a big canvas) takes the job and dies in the middle of it.
    let slow = [
        ("DEPLOYMENTS__0__RECORDINGMANAGEMENT__AMQPURI", uri.as_str()),
        ("RECORDING__WIDTH", "1920"),
        ("RECORDING__HEIGHT", "1080"),
        ("RECORDING__FRAMERATE", "60"),
    ];
    let logs = server.data_dir.parent().unwrap().to_path_buf();
    let mut first = muxer(&server.data_dir, &slow, &logs.join("muxer-1.log"));
    wait_for(
        "the first muxer (muxer-1.log) on the job",
        Duration::from_secs(60),
        || !named(&sessions, "queued-", ".mkv.rec").is_empty(),
    );
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        named(&sessions, "queued-", ".json").is_empty(),
        "killed mid-job"
    );

    let mut fast = vec![("DEPLOYMENTS__0__RECORDINGMANAGEMENT__AMQPURI", uri.as_str())];
    fast.extend(MUX_SETTINGS);
    let mut second = muxer(&server.data_dir, &fast, &logs.join("muxer-2.log"));
    wait_for(
        "the second muxer (muxer-2.log) done",
        Duration::from_secs(60),
        || !named(&sessions, "queued-", ".json").is_empty(),
    );
    second.kill().unwrap();
    second.wait().unwrap();
    let muxed = named(&sessions, "queued-", ".mkv");
    assert_eq!(muxed.len(), 1, "{muxed:?}");
    assert!(named(&sessions, "queued-", ".rec").is_empty());
    let json = named(&sessions, "queued-", ".json");
    let session: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json[0]).unwrap()).unwrap();
    assert_eq!(session["error"], serde_json::Value::Null, "{session:#}");
    let (errors, last) = decode(&muxed[0]);
    assert!(errors.trim().is_empty(), "{errors}");
    assert!(last >= 2.0, "{last} s");
}

/// A cluster shares no disk. A gateway (a channel configuration says `recording` for rec-*;
/// live-1 is recorded for 3 s through its admin API, then its one connection for 1.5 s), a media server that records and moves
/// each recording to object storage (moto) as it finishes, a recording monitor that reads the
/// logs there, keeps the recording database in PostgreSQL (the configuration store) and queues
/// the sessions on RabbitMQ, and a muxer that fetches the files from storage and stores the
/// muxed sessions there: each session is muxed once, in storage with its inputs, the media
/// server keeps no media, and the database (and the admin API) knows the sessions and files.
#[test]
fn a_cluster_records_through_object_storage() {
    let database = Postgres::create();
    netns::enter();
    let redis = Redis::start(6379);
    let broker = RabbitMq::start(5672);
    let s3 = S3::start(9000);
    s3.create_bucket("recordings");
    let dir = switchyard_tests::server::temp_dir();
    let (amqp, pg, cache) = (broker.uri(), database.url(), redis.url());
    let storage = [
        ("RECORDING__STORAGE", "s3://recordings/cluster"),
        ("AWS_ENDPOINT", "http://127.0.0.1:9000"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let key = "cluster-admin-key-0123456789";
    let _gateway = Process::start(
        "gateway",
        &dir,
        &[
            "gateway",
            "--http",
            "127.0.0.1:8080",
            "--admin",
            "127.0.0.1:9090",
        ],
        &[
            ("CONNECTIONSTRINGS__CACHE", cache.as_str()),
            ("CONNECTIONSTRINGS__DEFAULT", pg.as_str()),
            ("ADMIN__APIKEY", key),
            ("ADMIN__IPADDRESSES", "127.0.0.1/32"),
        ],
    );
    wait_for("the gateway", Duration::from_secs(20), || {
        http::get(8080, "/health").is_ok_and(|r| r.status == 200)
    });
    let mut media_env = vec![("SERVICEBASEURL", "http://127.0.0.1:8080")];
    media_env.extend(storage);
    let media_dir = dir.join("m1");
    let media_data = media_dir.display().to_string();
    let _media = Process::start(
        "m1",
        &dir,
        &[
            "media-server",
            "--id",
            "m1",
            "--workers",
            "1",
            "--mcu-workers",
            "1",
            "--media-ports",
            "40000-40100",
            "--public-ip",
            "127.0.0.1",
            "--data-dir",
            &media_data,
        ],
        &media_env,
    );
    wait_for("m1 registered", Duration::from_secs(20), || {
        switchyard_tests::cluster::media_servers(8080)
            .iter()
            .any(|s| s["id"] == "m1")
    });
    let mut roles_env = vec![
        (
            "DEPLOYMENTS__0__RECORDINGMANAGEMENT__AMQPURI",
            amqp.as_str(),
        ),
        // The recording database is the configuration store, which the admin API reads.
        ("CONNECTIONSTRINGS__DEFAULT", pg.as_str()),
    ];
    roles_env.extend(storage);
    roles_env.extend(MUX_SETTINGS);
    let monitor_data = dir.join("monitor").display().to_string();
    let _monitor = Process::start(
        "monitor",
        &dir,
        &["recording-monitor", "--data-dir", &monitor_data],
        &roles_env,
    );
    let muxer_data = dir.join("muxer").display().to_string();
    let _muxer = Process::start(
        "muxer",
        &dir,
        &["recording-muxer", "--data-dir", &muxer_data],
        &roles_env,
    );

    // The application and its recorded channels.
    let secret = "cluster-recording-secret-0123";
    let admin = |method: &str, path: &str, body: &str| {
        let headers = [("X-API-Key", key), ("Content-Type", "application/json")];
        let path = format!("/admin/api/v1{path}");
        http::request(9090, method, &path, &headers, body).unwrap()
    };
    let app = admin(
        "PUT",
        "/applications/acme",
        &format!(r#"{{"secrets":["{secret}"]}}"#),
    );
    assert_eq!(app.status, 200, "{}", app.body);
    let config = r#"{"pattern":"rec-*","position":0,"allowedCodecs":[],"sfuAllowed":true,"mcuAllowed":true,"recording":true}"#;
    let c = admin("PUT", "/applications/acme/channel-configs", config);
    assert_eq!(c.status, 200, "{}", c.body);
    let token = |channel: &str, user: &str| {
        let out = Command::new(switchyard_tests::binary())
            .args(["token", "--channel", channel, "--user", user])
            .args(["--application", "acme", "--secret", secret])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let publisher = token("rec-1", "publisher");
    let bearer = format!("Bearer {publisher}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/sdp"),
    ];
    // Until the gateway reads the store again acme is unknown (401).
    wait_for("acme's token accepted", Duration::from_secs(10), || {
        http::request(8080, "POST", "/whip/rec-1", &headers, "v=0\r\n")
            .is_ok_and(|r| r.status != 401)
    });
    // rec-1 is recorded by its configuration; live-1 through the admin API while its
    // publisher is on.
    let base = "http://127.0.0.1:8080";
    let configured =
        std::thread::spawn(move || mix::run(base, "rec-1", &[publisher], "", 1, "VP8", 4));
    let live = token("live-1", "speaker");
    let asked = std::thread::spawn(move || mix::run(base, "live-1", &[live], "", 1, "VP8", 10));
    wait_for("the live-1 publication", Duration::from_secs(20), || {
        redis
            .cli(&["HLEN", "switchyard:default:channel:live-1:publications"])
            .trim()
            == "1"
    });
    let on = admin("POST", "/channels/live-1/recording", "");
    assert_eq!(on.status, 200, "{}", on.body);
    let on: serde_json::Value = serde_json::from_str(&on.body).unwrap();
    assert_eq!(on["tracks"], 2, "{on}");
    std::thread::sleep(Duration::from_secs(3));
    let off = admin("DELETE", "/channels/live-1/recording", "");
    assert_eq!(off.status, 200, "{}", off.body);
    let off: serde_json::Value = serde_json::from_str(&off.body).unwrap();
    let lengths: Vec<u64> = off["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["durationMs"].as_u64())
        .collect();
    assert_eq!(lengths.len(), 2, "{off}");
    assert!(lengths.iter().all(|l| (1_500..=4_500).contains(l)), "{off}");
    assert_eq!(
        admin("DELETE", "/channels/live-1/recording", "").status,
        404,
        "not recorded any more"
    );
    // Then the one connection alone, for 1.5 s: new files, the first ones kept.
    let publication = redis
        .cli(&["HKEYS", "switchyard:default:channel:live-1:publications"])
        .trim()
        .to_string();
    let connection = format!("/channels/live-1/connections/{publication}/recording");
    let on = admin("POST", &connection, "");
    assert_eq!(on.status, 200, "{}", on.body);
    assert!(on.body.contains(r#""tracks":2"#), "{}", on.body);
    std::thread::sleep(Duration::from_millis(1_500));
    let off = admin("DELETE", &connection, "");
    assert_eq!(off.status, 200, "{}", off.body);
    let off: serde_json::Value = serde_json::from_str(&off.body).unwrap();
    let paths: Vec<&str> = off["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(paths.len(), 2, "{off}");
    assert!(paths.iter().all(|p| p.contains("-2.mk")), "{paths:?}");
    assert_eq!(admin("DELETE", &connection, "").status, 404);
    for publisher in [configured, asked] {
        let result = publisher.join().unwrap();
        assert_eq!(result["ok"], true, "{result:#}");
    }

    // The muxed session and its JSON in storage, once.
    let deadline = Instant::now() + Duration::from_secs(90);
    let objects = loop {
        let objects = s3.list("recordings");
        let stored = objects
            .iter()
            .any(|(k, _)| k.starts_with("cluster/sessions/rec-1-") && k.ends_with(".json"));
        if stored {
            break objects;
        }
        assert!(
            Instant::now() < deadline,
            "no session in storage after 90 s: {objects:?}\nmonitor:\n{}\nmuxer:\n{}\nm1:\n{}",
            _monitor.log_tail(),
            _muxer.log_tail(),
            _media.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let keys: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    let named = |suffix: &str| {
        keys.iter()
            .filter(|k| k.starts_with("cluster/rec-1/") && k.ends_with(suffix))
            .count()
    };
    assert_eq!(
        (named(".mkv"), named(".mka"), named(".json")),
        (1, 1, 1),
        "{keys:?}"
    );
    let muxed: Vec<&&str> = keys
        .iter()
        .filter(|k| k.starts_with("cluster/sessions/rec-1-") && k.ends_with(".mkv"))
        .collect();
    assert_eq!(muxed.len(), 1, "{keys:?}");

    // The muxed file decodes and holds the publication.
    let fetched = dir.join("fetched.mkv");
    s3.download("recordings", muxed[0], &fetched);
    let (errors, last) = decode(&fetched);
    assert!(errors.trim().is_empty(), "{errors}");
    assert!(last >= 2.0, "{last} s");
    // The media server keeps its logs and no media.
    let kept: Vec<PathBuf> = std::fs::read_dir(media_dir.join("recordings/rec-1"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .collect();
    assert!(
        kept.iter()
            .all(|f| f.extension().is_some_and(|e| e == "json")),
        "{kept:?}"
    );

    // The recording database: the session stored, with its two files.
    let query = |sql: &str| {
        let out = Command::new("psql")
            .args([pg.as_str(), "-tAc", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    wait_for(
        "the session stored in the database",
        Duration::from_secs(20),
        || query("SELECT state FROM recording_sessions WHERE channel_id = 'rec-1'") == "stored",
    );
    let url = query("SELECT muxed FROM recording_sessions WHERE channel_id = 'rec-1'");
    assert_eq!(url, format!("s3://recordings/{}", muxed[0]));
    let files = query(
        "SELECT count(*) FROM recordings WHERE channel_id = 'rec-1' AND state = 'finished' \
         AND session_id IS NOT NULL AND user_id = 'publisher'",
    );
    assert_eq!(files, "2");
    // The admin API lists them from the same database; live-1's session is there too.
    let listed = admin("GET", "/recordings?channel=rec-1", "");
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    assert_eq!(listed[0]["state"], "stored", "{listed:#}");
    assert_eq!(
        listed[0]["files"].as_array().map(Vec::len),
        Some(2),
        "{listed:#}"
    );
    // live-1's session: both of its recordings, four files.
    wait_for(
        "live-1's session in the database",
        Duration::from_secs(60),
        || {
            let listed = admin("GET", "/recordings?channel=live-1", "");
            serde_json::from_str::<serde_json::Value>(&listed.body).is_ok_and(|l| {
                l[0]["state"] == "stored" && l[0]["files"].as_array().map(Vec::len) == Some(4)
            })
        },
    );
}
