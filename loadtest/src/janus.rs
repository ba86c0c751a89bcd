//! A client for Janus's HTTP API (Janus 1.1, videoroom and AudioBridge plugins), so the load
//! generator can drive Janus with the same emulated WebRTC clients it uses against Switchyard.
//!
//! Janus answers most plugin requests asynchronously: the HTTP POST returns `{"janus":"ack"}`
//! and the result (with the JSEP offer or answer) arrives later on the session's long poll
//! (`GET /janus/{session}`). A [`Session`] runs one poller task that hands each event to the
//! request waiting for its transaction, and keeps the rest (`webrtcup`, `media`, `hangup`,
//! plugin notifications) for [`Handle::wait_event`]. Another task sends a keepalive every
//! [`KEEPALIVE_INTERVAL`], well inside Janus's 60 s session timeout.
//!
//! The emulated clients stay DTLS clients and are their own ICE agents:
//! - publishing, we offer with `a=setup:active` (`client::offer_with(.., Setup::Active)`), since
//!   Janus answers an `actpass` offer with `a=setup:active`; it answers ours with `passive`.
//!   Our client is ICE-controlling (the offerer) and nominates.
//! - subscribing, Janus offers (`a=setup:actpass`, ICE-controlling); we answer with
//!   `client::answer` (`a=setup:active`) and run the client as `IceRole::Controlled`.
//!
//! Janus half-trickles by default: its own candidates are in its SDP (with
//! `a=end-of-candidates`), and `remote::parse` reads them. Our SDPs carry no candidates:
//! Janus (libnice, full ICE) learns our address from our checks as a peer-reflexive candidate,
//! and our clients must answer its checks (`Client::handle_datagram_from`).
//!
//! On loopback (scripts/janus.sh: Janus's only interface is a veth with 127.0.0.2/32) the
//! clients' UDP sockets must be bound to 127.0.0.2, not 127.0.0.1: libnice's sockets on the
//! veth cannot send to 127.0.0.1 (EINVAL), so ICE would fail.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// Keepalives go out this often (Janus drops a session after 60 s without a request).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(25);
/// How long a request waits for its answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Janus holds a long poll for 30 s when it has nothing to say.
const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(45);
/// Events nobody waited for are kept up to this many (oldest dropped first).
const MAX_UNCLAIMED_EVENTS: usize = 256;
/// The poller gives up (and fails every waiting request) after this many failed polls in a row.
const MAX_POLL_FAILURES: u32 = 20;

pub const VIDEOROOM: &str = "janus.plugin.videoroom";
/// The audio mixer plugin: every participant sends one Opus stream and receives the room's
/// mix of everyone else on the same PeerConnection (the MCU comparison).
pub const AUDIOBRIDGE: &str = "janus.plugin.audiobridge";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("HTTP request to Janus failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("Janus answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("Janus error {code}: {reason}")]
    Janus { code: i64, reason: String },
    #[error("plugin error {code}: {reason}")]
    Plugin { code: i64, reason: String },
    #[error("unexpected answer from Janus ({what}): {message}")]
    Unexpected { what: &'static str, message: String },
    #[error("no answer from Janus within {0:?} ({1})")]
    Timeout(Duration, &'static str),
    #[error("the session's event poller stopped (Janus gone or session expired)")]
    Closed,
}

fn unexpected(what: &'static str, message: &Value) -> Error {
    let mut message = message.to_string();
    message.truncate(600);
    Error::Unexpected { what, message }
}

/// State shared by a session, its handles and its poller.
struct Inner {
    http: reqwest::Client,
    /// e.g. http://127.0.0.1:8088/janus
    base: String,
    session: u64,
    timeout: Duration,
    next_transaction: AtomicU64,
    /// Requests waiting for their asynchronous answer, by transaction.
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// Events no request waited for.
    unclaimed: Mutex<VecDeque<Value>>,
    arrived: Notify,
}

impl Inner {
    fn transaction(&self) -> String {
        format!(
            "sy{}",
            self.next_transaction.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn session_url(&self) -> String {
        format!("{}/{}", self.base, self.session)
    }

    /// POSTs `body` (a transaction is added) and returns Janus's immediate answer, which is
    /// `success` or `ack`; `error` becomes `Error::Janus`.
    async fn post(&self, url: &str, mut body: Value, transaction: &str) -> Result<Value, Error> {
        body["transaction"] = json!(transaction);
        post_json(&self.http, url, &body, self.timeout).await
    }

    /// A request that Janus answers synchronously with `success`.
    async fn request(&self, url: &str, body: Value) -> Result<Value, Error> {
        let transaction = self.transaction();
        let reply = self.post(url, body, &transaction).await?;
        match reply["janus"].as_str() {
            Some("success") | Some("ack") => Ok(reply),
            _ => Err(unexpected("expected success", &reply)),
        }
    }

    /// Hands an event to the request waiting for its transaction, or keeps it.
    fn dispatch(&self, event: Value) {
        let sender = event["transaction"]
            .as_str()
            .and_then(|t| self.waiting.lock().ok()?.remove(t));
        // Janus also answers keepalives on the poll; they carry nothing.
        if event["janus"] == "keepalive" {
            return;
        }
        let event = match sender {
            Some(tx) => match tx.send(event) {
                Ok(()) => return,
                // The request gave up (timed out); keep the event like any other.
                Err(event) => event,
            },
            None => event,
        };
        if let Ok(mut q) = self.unclaimed.lock() {
            if q.len() == MAX_UNCLAIMED_EVENTS {
                q.pop_front();
            }
            q.push_back(event);
        }
        self.arrived.notify_waiters();
    }

    fn fail_waiting(&self) {
        if let Ok(mut w) = self.waiting.lock() {
            w.clear();
        }
        self.arrived.notify_waiters();
    }
}

async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    timeout: Duration,
) -> Result<Value, Error> {
    let reply = read_json(http.post(url).json(body).timeout(timeout).send().await?).await?;
    janus_error(&reply)?;
    Ok(reply)
}

/// A successful response's JSON body; other statuses become `Error::Status`.
async fn read_json(response: reqwest::Response) -> Result<Value, Error> {
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        return Err(Error::Status {
            status: status.as_u16(),
            body: text,
        });
    }
    serde_json::from_str(&text).map_err(|e| Error::Unexpected {
        what: "not JSON",
        message: format!("{e}: {text}"),
    })
}

/// `{"janus":"error","error":{"code":..,"reason":..}}` as `Error::Janus`.
fn janus_error(reply: &Value) -> Result<(), Error> {
    if reply["janus"] == "error" {
        return Err(Error::Janus {
            code: reply["error"]["code"].as_i64().unwrap_or(0),
            reason: reply["error"]["reason"]
                .as_str()
                .unwrap_or("(no reason)")
                .to_string(),
        });
    }
    Ok(())
}

/// `GET /janus/info`: Janus's version and settings; an easy liveness check.
pub async fn server_info(base_url: &str) -> Result<Value, Error> {
    let http = reqwest::Client::new();
    let url = format!("{}/info", base_url.trim_end_matches('/'));
    let info = read_json(http.get(url).timeout(DEFAULT_TIMEOUT).send().await?).await?;
    janus_error(&info)?;
    if info["janus"] != "server_info" {
        return Err(unexpected("expected server_info", &info));
    }
    Ok(info)
}

/// A Janus session: its long-poll and keepalive tasks run until it is destroyed or dropped.
pub struct Session {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Session {
    /// Creates a session on the Janus at `base_url` (e.g. `http://127.0.0.1:8088/janus`).
    /// Requests wait up to `DEFAULT_TIMEOUT` for their answer.
    pub async fn connect(base_url: &str) -> Result<Session, Error> {
        let timeout = DEFAULT_TIMEOUT;
        let http = reqwest::Client::builder().build()?;
        let base = base_url.trim_end_matches('/').to_string();
        let reply = post_json(
            &http,
            &base,
            &json!({"janus": "create", "transaction": "create"}),
            timeout,
        )
        .await?;
        let session = reply["data"]["id"]
            .as_u64()
            .ok_or_else(|| unexpected("create: no data.id", &reply))?;
        let inner = Arc::new(Inner {
            http,
            base,
            session,
            timeout,
            next_transaction: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            unclaimed: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
        });
        let tasks = vec![
            tokio::spawn(poll(inner.clone())),
            tokio::spawn(keepalive(inner.clone())),
        ];
        Ok(Session { inner, tasks })
    }

    pub fn id(&self) -> u64 {
        self.inner.session
    }

    /// One keepalive now (the session also sends them on its own).
    pub async fn keepalive(&self) -> Result<(), Error> {
        self.inner
            .request(&self.inner.session_url(), json!({"janus": "keepalive"}))
            .await
            .map(drop)
    }

    /// Attaches a handle to `plugin` (e.g. [`VIDEOROOM`]).
    pub async fn attach(&self, plugin: &str) -> Result<Handle, Error> {
        let reply = self
            .inner
            .request(
                &self.inner.session_url(),
                json!({"janus": "attach", "plugin": plugin}),
            )
            .await?;
        let id = reply["data"]["id"]
            .as_u64()
            .ok_or_else(|| unexpected("attach: no data.id", &reply))?;
        Ok(Handle {
            inner: self.inner.clone(),
            id,
        })
    }

    /// Attaches a videoroom handle.
    pub async fn attach_videoroom(&self) -> Result<Handle, Error> {
        self.attach(VIDEOROOM).await
    }

    /// Destroys the session on Janus (and with it its handles and PeerConnections).
    pub async fn destroy(mut self) -> Result<(), Error> {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.inner
            .request(&self.inner.session_url(), json!({"janus": "destroy"}))
            .await
            .map(drop)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The long poll: every event goes through `Inner::dispatch`.
async fn poll(inner: Arc<Inner>) {
    let url = format!("{}?maxev=10", inner.session_url());
    let mut failures = 0;
    loop {
        let result = async {
            let response = inner
                .http
                .get(&url)
                .timeout(LONG_POLL_TIMEOUT)
                .send()
                .await?;
            read_json(response).await
        }
        .await;
        match result {
            Ok(Value::Array(events)) => {
                failures = 0;
                events.into_iter().for_each(|e| inner.dispatch(e));
            }
            // "No such session": the session is gone for good.
            Ok(event) if event["janus"] == "error" => {
                tracing::warn!(session = inner.session, %event, "Janus long poll failed");
                break;
            }
            Ok(event) => {
                failures = 0;
                inner.dispatch(event);
            }
            Err(e) => {
                failures += 1;
                tracing::debug!(session = inner.session, error = %e, "Janus long poll failed");
                if failures >= MAX_POLL_FAILURES {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(10)))).await;
            }
        }
    }
    inner.fail_waiting();
}

async fn keepalive(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(KEEPALIVE_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = inner
            .request(&inner.session_url(), json!({"janus": "keepalive"}))
            .await
        {
            tracing::debug!(session = inner.session, error = %e, "Janus keepalive failed");
        }
    }
}

/// What a plugin request returned: the plugin's `data` and the JSEP, if any.
#[derive(Debug, Clone)]
pub struct PluginReply {
    pub data: Value,
    pub jsep: Option<Jsep>,
}

/// A JSEP offer or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jsep {
    /// "offer" or "answer".
    pub kind: String,
    pub sdp: String,
}

/// A publisher's feed and Janus's answer to its offer.
#[derive(Debug, Clone)]
pub struct Published {
    /// The publisher's id in the room, which subscribers subscribe to.
    pub feed: u64,
    pub answer: String,
}

/// A plugin handle (one PeerConnection on Janus's side).
pub struct Handle {
    inner: Arc<Inner>,
    id: u64,
}

impl Handle {
    pub fn id(&self) -> u64 {
        self.id
    }

    fn url(&self) -> String {
        format!("{}/{}", self.inner.session_url(), self.id)
    }

    /// Sends a plugin message (with an optional JSEP) and waits for the plugin's answer,
    /// synchronous (`success`) or asynchronous (`ack`, then an `event` on the long poll).
    /// A videoroom `error_code` in the answer becomes `Error::Plugin`.
    pub async fn message(&self, body: Value, jsep: Option<&Jsep>) -> Result<PluginReply, Error> {
        let transaction = self.inner.transaction();
        let (tx, rx) = oneshot::channel();
        // Registered before the POST: the event can beat the HTTP answer.
        self.inner
            .waiting
            .lock()
            .map_err(|_| Error::Closed)?
            .insert(transaction.clone(), tx);
        let mut request = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            request["jsep"] = json!({"type": jsep.kind, "sdp": jsep.sdp});
        }
        let forget = || {
            if let Ok(mut w) = self.inner.waiting.lock() {
                w.remove(&transaction);
            }
        };
        let reply = match self.inner.post(&self.url(), request, &transaction).await {
            Ok(reply) => reply,
            Err(e) => {
                forget();
                return Err(e);
            }
        };
        let reply = match reply["janus"].as_str() {
            Some("success") => {
                forget();
                reply
            }
            Some("ack") => match tokio::time::timeout(self.inner.timeout, rx).await {
                Ok(Ok(event)) => event,
                Ok(Err(_)) => return Err(Error::Closed),
                Err(_) => {
                    forget();
                    return Err(Error::Timeout(self.inner.timeout, "plugin event"));
                }
            },
            _ => {
                forget();
                return Err(unexpected("expected success or ack", &reply));
            }
        };
        janus_error(&reply)?;
        plugin_reply(&reply)
    }

    /// Creates a videoroom room (not permanent) for `publishers` publishers with no bitrate
    /// cap, Opus and VP8; `room` None lets Janus pick the id. Returns the room id.
    pub async fn create_room(&self, room: Option<u64>, publishers: u32) -> Result<u64, Error> {
        let mut body = json!({
            "request": "create",
            "permanent": false,
            "publishers": publishers,
            "bitrate": 0,
            "audiocodec": "opus",
            "videocodec": "vp8,h264",
            "description": "switchyard load test",
        });
        if let Some(room) = room {
            body["room"] = json!(room);
        }
        let reply = self.message(body, None).await?;
        reply.data["room"]
            .as_u64()
            .ok_or_else(|| unexpected("create room: no room", &reply.data))
    }

    /// Joins `room` as a publisher with our JSEP `offer` (`a=setup:active`, see the module
    /// docs); returns the feed id and Janus's answer.
    pub async fn publish(&self, room: u64, display: &str, offer: &str) -> Result<Published, Error> {
        let jsep = Jsep {
            kind: "offer".into(),
            sdp: offer.into(),
        };
        let reply = self
            .message(
                json!({
                    "request": "joinandconfigure",
                    "ptype": "publisher",
                    "room": room,
                    "display": display,
                }),
                Some(&jsep),
            )
            .await?;
        let feed = reply.data["id"]
            .as_u64()
            .ok_or_else(|| unexpected("publish: no feed id", &reply.data))?;
        let answer = match reply.jsep {
            Some(j) if j.kind == "answer" => j.sdp,
            _ => return Err(unexpected("publish: no JSEP answer", &reply.data)),
        };
        Ok(Published { feed, answer })
    }

    /// Creates an AudioBridge room mixing at 48 kHz (as Switchyard's mixer does), not kept
    /// across restarts; returns its id.
    pub async fn create_audiobridge_room(&self) -> Result<u64, Error> {
        let body = json!({
            "request": "create",
            "permanent": false,
            "sampling_rate": 48000,
            "record": false,
            "description": "switchyard load test",
        });
        let reply = self.message(body, None).await?;
        reply.data["room"]
            .as_u64()
            .ok_or_else(|| unexpected("create audiobridge room: no room", &reply.data))
    }

    /// Joins AudioBridge `room` with `offer` (one sendrecv Opus m-line); returns Janus's
    /// answer. The offer rides on the `join` itself; a Janus that answers the join without
    /// one gets it again in a `configure`, as janus.js sends it.
    pub async fn join_audiobridge(
        &self,
        room: u64,
        display: &str,
        offer: &str,
    ) -> Result<String, Error> {
        let jsep = Jsep {
            kind: "offer".into(),
            sdp: offer.into(),
        };
        let join = json!({"request": "join", "room": room, "display": display, "muted": false});
        let mut reply = self.message(join, Some(&jsep)).await?;
        if reply.jsep.is_none() {
            reply = self
                .message(json!({"request": "configure", "muted": false}), Some(&jsep))
                .await?;
        }
        match reply.jsep {
            Some(j) if j.kind == "answer" => Ok(j.sdp),
            _ => Err(unexpected("audiobridge join: no JSEP answer", &reply.data)),
        }
    }

    /// Joins `room` as a subscriber to `feed`; returns Janus's JSEP offer. The publisher's
    /// PeerConnection must be up (else Janus says "No such feed").
    pub async fn subscribe(&self, room: u64, feed: u64) -> Result<String, Error> {
        let reply = self
            .message(
                json!({
                    "request": "join",
                    "ptype": "subscriber",
                    "room": room,
                    "streams": [{"feed": feed}],
                }),
                None,
            )
            .await?;
        match reply.jsep {
            Some(j) if j.kind == "offer" => Ok(j.sdp),
            _ => Err(unexpected("subscribe: no JSEP offer", &reply.data)),
        }
    }

    /// Completes a subscription with our JSEP `answer` (`client::answer`).
    pub async fn start(&self, answer: &str) -> Result<(), Error> {
        let jsep = Jsep {
            kind: "answer".into(),
            sdp: answer.into(),
        };
        let reply = self
            .message(json!({"request": "start"}), Some(&jsep))
            .await?;
        if reply.data["started"] != "ok" {
            return Err(unexpected("start: not started", &reply.data));
        }
        Ok(())
    }

    /// Leaves the room (publisher or subscriber); the PeerConnection is closed.
    pub async fn leave(&self) -> Result<(), Error> {
        self.message(json!({"request": "leave"}), None)
            .await
            .map(drop)
    }

    /// Waits for an event for this handle whose `janus` field is `kind` (`webrtcup`, `media`,
    /// `hangup`, `slowlink`, or `event` for unsolicited plugin events), up to `timeout`.
    pub async fn wait_event(&self, kind: &str, timeout: Duration) -> Result<Value, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.arrived.notified();
            tokio::pin!(notified);
            // Registers interest before looking, so no event slips in between.
            notified.as_mut().enable();
            {
                let mut q = self.inner.unclaimed.lock().map_err(|_| Error::Closed)?;
                if let Some(i) = q
                    .iter()
                    .position(|e| e["sender"].as_u64() == Some(self.id) && e["janus"] == kind)
                {
                    return q.remove(i).ok_or(Error::Closed);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::Timeout(timeout, "event"));
            }
        }
    }
}

fn plugin_reply(reply: &Value) -> Result<PluginReply, Error> {
    let data = reply["plugindata"]["data"].clone();
    if data.is_null() {
        return Err(unexpected("no plugindata", reply));
    }
    if let Some(code) = data["error_code"].as_i64() {
        return Err(Error::Plugin {
            code,
            reason: data["error"].as_str().unwrap_or("(no reason)").to_string(),
        });
    }
    let jsep = match &reply["jsep"] {
        Value::Null => None,
        j => Some(Jsep {
            kind: j["type"]
                .as_str()
                .ok_or_else(|| unexpected("jsep without type", reply))?
                .to_string(),
            sdp: j["sdp"]
                .as_str()
                .ok_or_else(|| unexpected("jsep without sdp", reply))?
                .to_string(),
        }),
    };
    Ok(PluginReply { data, jsep })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_errors_and_jsep_are_read() {
        let err = json!({"janus": "event", "plugindata": {"plugin": VIDEOROOM,
            "data": {"videoroom": "event", "error_code": 428, "error": "No such feed (1)"}}});
        match plugin_reply(&err) {
            Err(Error::Plugin { code: 428, reason }) => assert!(reason.contains("No such feed")),
            other => panic!("{other:?}"),
        }
        let ok = json!({"janus": "event", "plugindata": {"plugin": VIDEOROOM,
            "data": {"videoroom": "joined", "id": 7}}, "jsep": {"type": "answer", "sdp": "v=0"}});
        let r = plugin_reply(&ok).unwrap();
        assert_eq!(r.data["id"], 7);
        assert_eq!(
            r.jsep,
            Some(Jsep {
                kind: "answer".into(),
                sdp: "v=0".into()
            })
        );
        assert!(plugin_reply(&json!({"janus": "event"})).is_err());
        assert!(matches!(
            janus_error(
                &json!({"janus": "error", "error": {"code": 458, "reason": "No such session"}})
            ),
            Err(Error::Janus { code: 458, .. })
        ));
    }
}
