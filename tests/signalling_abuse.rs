//! Signalling under abuse, against a running server with small limits: hundreds of sockets that
//! never join are closed at the join deadline, a flood of malformed requests on one socket is
//! cut off with its close code after a burst of replies, one address past its socket limit is
//! refused, and all of it is counted in `/metrics`, while a healthy aiortc publisher and player
//! and a Chromium page in the same channel keep decoding every second and two joined signalling
//! clients in it keep exchanging channel messages. And resuming a participant after a dropped
//! socket, which a forged key cannot do.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use switchyard_tests::server::Server;
use switchyard_tests::{browser_dir, netns, python, repo};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const IDLE_SOCKETS: usize = 300;
const PER_ADDRESS: usize = 20;
const BURST: usize = 40;
const FLOOD: usize = 20_000;

/// A `/sync` socket from source address `from` (any of 127.0.0.0/8 in the namespace).
async fn connect(port: u16, from: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stream = socket.connect(server).await.unwrap();
    let url = format!("ws://127.0.0.1:{port}/sync");
    tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .map(|(ws, _)| ws)
}

/// Reads until a close frame; returns it with the number of `error` replies before it.
async fn close_after(ws: &mut Ws, within: Duration) -> (Option<(u16, String)>, usize) {
    let mut errors = 0;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    errors,
                );
            }
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"error\"") => errors += 1,
            Ok(Some(Ok(_))) => {}
            other => {
                eprintln!("ended without a close frame: {other:?}");
                return (None, errors);
            }
        }
    }
}

async fn join(ws: &mut Ws, token: &str) -> serde_json::Value {
    join_with(ws, serde_json::json!({"type": "join", "token": token})).await
}

/// Sends `join` (as given) and waits for `joined`.
async fn join_with(ws: &mut Ws, join: serde_json::Value) -> serde_json::Value {
    ws.send(Message::text(join.to_string())).await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("joined in time");
        if let Some(Ok(Message::Text(t))) = m {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "joined" {
                return v;
            }
        } else {
            panic!("socket ended before joining: {m:?}");
        }
    }
}

/// Video frame counts a healthy client prints as JSON lines (`field` of each line with `t`), and
/// its last line (the one with `ok`), read from its stdout as they come.
struct Frames {
    counts: Arc<Mutex<Vec<u64>>>,
    result: Arc<Mutex<Option<serde_json::Value>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Frames {
    fn follow(child: &mut std::process::Child, field: &'static str) -> Frames {
        let counts = Arc::new(Mutex::new(Vec::new()));
        let result = Arc::new(Mutex::new(None));
        let stdout = child.stdout.take().expect("stdout");
        let reader = {
            let (counts, result) = (counts.clone(), result.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                        continue;
                    };
                    if let Some(f) = v.get(field).and_then(|f| f.as_u64())
                        && v.get("t").is_some()
                    {
                        counts.lock().unwrap().push(f);
                    }
                    if v.get("ok").is_some() {
                        *result.lock().unwrap() = Some(v);
                    }
                }
            })
        };
        Frames {
            counts,
            result,
            reader,
        }
    }

    fn last(&self) -> u64 {
        self.counts.lock().unwrap().last().copied().unwrap_or(0)
    }

    /// Waits until `at_least` frames were decoded.
    fn wait_for(&self, at_least: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.last() < at_least {
            assert!(Instant::now() < deadline, "{what} never started decoding");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Once the client ended: its last line; its counts from `from` (at the attacks' start) to
    /// the first at or past `to` (at their end) must each be higher than the one before (no
    /// stall).
    fn finish(self, from: u64, to: u64, what: &str) -> serde_json::Value {
        self.reader.join().unwrap();
        let result = self.result.lock().unwrap().clone();
        let result = result.unwrap_or_else(|| panic!("{what}: no result"));
        assert_eq!(result["ok"], true, "{what}: {result:#}");
        let counts = self.counts.lock().unwrap().clone();
        let start = counts.iter().position(|f| *f >= from).unwrap_or(0);
        let end = counts.iter().position(|f| *f >= to).unwrap_or(counts.len());
        let during = &counts[start..(end + 1).min(counts.len())];
        assert!(
            during.len() >= 2 && during.windows(2).all(|w| w[1] > w[0]),
            "{what}: frames stalled during the attacks: {counts:?}"
        );
        result
    }
}

fn counter(server: &Server, reason: &str) -> f64 {
    server
        .metrics()
        .get(&format!(
            "switchyard_signalling_sockets_closed_total{{reason=\"{reason}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
}

#[test]
fn idle_flooding_and_crowding_sockets_are_closed_while_healthy_clients_continue() {
    netns::enter();
    let mut server = Server::start_with_env(
        &[],
        &[
            ("SYNC__JOINTIMEOUT", "1"),
            ("SYNC__MESSAGERATE", "20"),
            ("SYNC__MESSAGEBURST", &BURST.to_string()),
            ("SYNC__MAXCONNECTIONSPERADDRESS", &PER_ADDRESS.to_string()),
        ],
    );
    let port = server.port;

    // The healthy media pair, decoding every second.
    let publish = server.token("live", "encoder", &[]);
    let play = server.token("live", "viewer", &[]);
    let mut healthy = Command::new(python())
        .arg(repo().join("tests/aiortc/whip_whep.py"))
        .args([
            &format!("http://127.0.0.1:{port}"),
            "live",
            &publish,
            &play,
            "--seconds",
            "16",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start aiortc");
    let pair = Frames::follow(&mut healthy, "video_frames");
    // A Chromium page in the channel too, receiving the aiortc publisher.
    let watcher = server.token("live", "watcher", &[]);
    let mut page = Command::new("node")
        .current_dir(browser_dir())
        .arg("watch_page.mjs")
        .args([&format!("http://127.0.0.1:{port}"), "live", &watcher, "14"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the Chromium page");
    let page_frames = Frames::follow(&mut page, "frames");
    pair.wait_for(30, "the aiortc pair");
    page_frames.wait_for(10, "the Chromium page");
    let frames_at_attack = pair.last();
    let page_at_attack = page_frames.last();
    let rss_before = server.rss_kib();

    let talker = server.token("live", "talker", &[]);
    let listener = server.token("live", "listener", &[]);
    let flooder = server.token("live", "flooder", &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async move {
        // Two healthy signalling clients in the channel: one sends a channel message every
        // 50 ms, the other counts what arrives, all through the attacks below.
        let mut a = connect(port, "127.0.0.1").await.unwrap();
        let mut b = connect(port, "127.0.0.1").await.unwrap();
        join(&mut a, &talker).await;
        join(&mut b, &listener).await;
        let received = Arc::new(AtomicU64::new(0));
        let counting = {
            let received = received.clone();
            tokio::spawn(async move {
                while let Some(m) = b.next().await {
                    match m {
                        Ok(Message::Text(t)) => {
                            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                            if v["type"] == "message" {
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Message::Close(frame)) => return Some(frame),
                        Ok(_) => {}
                        Err(_) => return None,
                    }
                }
                None
            })
        };
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let talking = tokio::spawn(async move {
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stop_rx => return (sent, a),
                }
                a.send(Message::text(format!(
                    r#"{{"type":"message","data":{{"n":{sent}}}}}"#
                )))
                .await
                .expect("the healthy client can send");
                sent += 1;
            }
        });

        // 1. Idle sockets, 20 from each of 15 addresses, never joining.
        let opened = Instant::now();
        let mut idle = Vec::new();
        for i in 0..IDLE_SOCKETS {
            let from = format!("127.0.1.{}", 1 + i / PER_ADDRESS);
            idle.push(connect(port, &from).await.expect("an idle socket opens"));
        }
        let closes = futures_util::future::join_all(
            idle.iter_mut()
                .map(|ws| close_after(ws, Duration::from_secs(5))),
        )
        .await;
        let idle_closed_after = opened.elapsed();
        for (close, _) in &closes {
            let (code, reason) = close.clone().expect("an idle socket is closed");
            assert_eq!((code, reason.as_str()), (4008, "join timeout"));
        }

        // 2. A joined socket floods malformed requests without reading.
        let mut flood = connect(port, "127.0.0.5").await.unwrap();
        join(&mut flood, &flooder).await;
        let flood_started = Instant::now();
        for _ in 0..FLOOD {
            if flood
                .feed(Message::text("{this is not json"))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = flood.flush().await;
        let (close, replies) = close_after(&mut flood, Duration::from_secs(5)).await;
        let flood_cut_after = flood_started.elapsed();
        let (code, reason) = close.expect("the flood is closed");
        assert_eq!((code, reason.as_str()), (4029, "message rate exceeded"));
        assert!(
            (1..=BURST + 10).contains(&replies),
            "{replies} error replies before the close"
        );

        // 3. One address past its limit: the next upgrade is refused with 429, and one closed
        //    socket makes room again.
        let mut crowd = Vec::new();
        for _ in 0..PER_ADDRESS {
            crowd.push(connect(port, "127.0.0.6").await.expect("within the limit"));
        }
        match connect(port, "127.0.0.6").await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
            other => panic!("expected 429, got {:?}", other.map(|_| ())),
        }
        let mut one = crowd.pop().unwrap();
        one.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await
        .unwrap();
        while one.next().await.is_some() {}
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = connect(port, "127.0.0.6").await;
        assert!(again.is_ok(), "a closed socket frees its place");

        // The healthy clients went on through all of it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stop_tx.send(());
        let (sent, mut a) = talking.await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = received.load(Ordering::Relaxed);
        assert!(
            !counting.is_finished(),
            "the healthy listener was closed: {:?}",
            counting.await
        );
        assert_eq!(got, sent, "every channel message arrived");
        a.close(None).await.unwrap();
        serde_json::json!({
            "idle_sockets": IDLE_SOCKETS,
            "idle_closed_after_ms": idle_closed_after.as_millis() as u64,
            "flood_frames": FLOOD,
            "flood_error_replies": replies,
            "flood_cut_after_ms": flood_cut_after.as_millis() as u64,
            "healthy_messages": sent,
        })
    });

    let rss_after = server.rss_kib();
    let (pair_after, page_after) = (pair.last(), page_frames.last());
    // Counted by reason. The crowd's sockets (never joining) time out too.
    assert!(counter(&server, "join_timeout") >= IDLE_SOCKETS as f64);
    assert_eq!(counter(&server, "rate"), 1.0);
    assert_eq!(counter(&server, "per_address"), 1.0);

    // The healthy pair and the page kept decoding through all of it, every sample.
    healthy.wait().expect("aiortc finished");
    page.wait().expect("the page finished");
    let result = pair.finish(frames_at_attack, pair_after, "the aiortc pair");
    assert!(
        result["video_frames"].as_u64().unwrap() > frames_at_attack + 100,
        "{result:#}"
    );
    page_frames.finish(page_at_attack, page_after, "the Chromium page");
    assert!(server.is_running());
    let mut report = report;
    report["rss_kib_before"] = rss_before.into();
    report["rss_kib_after"] = rss_after.into();
    println!("{report}");
}

/// A client whose socket dropped resumes its participant with the key of its `joined`: the same
/// id, the others hear it leave and come back; an old socket still open is told `replaced` and
/// closed with 4009; a forged key, or another user's token, gets a new id instead.
#[test]
fn a_dropped_client_resumes_its_participant_and_a_forged_key_does_not() {
    netns::enter();
    let server = Server::start_with_env(&[], &[]);
    let port = server.port;
    let alice = server.token("room", "alice", &[]);
    let bob = server.token("room", "bob", &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut watcher = connect(port, "127.0.0.1").await.unwrap();
        join(&mut watcher, &bob).await;
        let mut first = connect(port, "127.0.0.1").await.unwrap();
        let joined = join(&mut first, &alice).await;
        let (id, key) = (&joined["participant"], &joined["resumeKey"]);
        assert!(key.as_str().is_some_and(|k| !k.is_empty()), "{joined}");

        // Resumed while the first socket is still open: it is replaced.
        let mut second = connect(port, "127.0.0.1").await.unwrap();
        let resumed = join_with(
            &mut second,
            serde_json::json!({"type": "join", "token": alice, "resume": {"participant": id, "key": key}}),
        )
        .await;
        assert_eq!(&resumed["participant"], id);
        let mut replaced = false;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), first.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => replaced |= t.contains(r#""type":"replaced""#),
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    assert_eq!(u16::from(frame.code), 4009);
                    break;
                }
                other => panic!("the old socket did not close with 4009: {other:?}"),
            }
        }
        assert!(replaced, "the old socket heard no 'replaced'");

        // Bob heard Alice leave and come back under the same id.
        let mut heard = Vec::new();
        while heard.len() < 3 {
            match tokio::time::timeout(Duration::from_secs(5), watcher.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["participant"] == *id {
                        heard.push(v["type"].as_str().unwrap_or_default().to_string());
                    }
                }
                other => panic!("bob's socket: {other:?} after {heard:?}"),
            }
        }
        assert_eq!(heard, ["participant-joined", "participant-left", "participant-joined"]);

        // The socket drops; a new one resumes with the key of the last joined.
        drop(second);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut third = connect(port, "127.0.0.1").await.unwrap();
        let again = join_with(
            &mut third,
            serde_json::json!({"type": "join", "token": alice, "resume": {"participant": id, "key": resumed["resumeKey"]}}),
        )
        .await;
        assert_eq!(&again["participant"], id);

        // A forged key, and Bob's token with Alice's key, join as someone new.
        for (token, key) in [(&alice, serde_json::json!("Zm9yZ2Vk")), (&bob, again["resumeKey"].clone())] {
            let mut other = connect(port, "127.0.0.1").await.unwrap();
            let joined = join_with(
                &mut other,
                serde_json::json!({"type": "join", "token": token, "resume": {"participant": id, "key": key}}),
            )
            .await;
            assert_ne!(&joined["participant"], id);
        }
    });
}
