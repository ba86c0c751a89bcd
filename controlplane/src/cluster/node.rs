//! The media server role: media workers behind the internal control API that gateways call
//! (`/cluster/v1/publish`, ...), a heartbeat to the gateways through `SERVICEBASEURL`, reports of
//! publications the data plane ended, and draining.
//!
//! A gateway names the participants; this server keeps them only as owners of transports (no
//! outbox: the gateway talks to the client). Everything else, the channel state, SDP answers and
//! transports, is the all-in-one code in [`AppState`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{Notify, mpsc, watch};

use super::api::{
    self, EndRequest, Ended, ErrorReply, HeartbeatReply, PipeAddress, PipeAddressRequest,
    PipeInReply, PipeInRequest, PipeOutReply, PipeOutRequest, PublishReply, PublishRequest,
    SubscribeReply, SubscribeRequest,
};
use super::stopped;
use crate::allowlist::AllowList;
use crate::registry::MediaServerRecord;
use crate::session::{AppState, Error, Rules};

/// How often a media server heartbeats; the gateway's TTL is a few of these.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// A media server in the cluster.
pub struct Node {
    pub state: Arc<AppState>,
    /// The record as registered, less the live load (filled in by [`Node::record`]).
    base: MediaServerRecord,
    /// Transports before the server calls itself over capacity.
    capacity: usize,
    draining: AtomicBool,
    /// Wakes the heartbeat early when the load changed, so placement sees it soon.
    changed: Notify,
    /// Who may call the internal API.
    internal: AllowList,
}

impl Node {
    pub fn new(
        state: Arc<AppState>,
        base: MediaServerRecord,
        capacity: usize,
        internal: AllowList,
    ) -> Node {
        Node {
            state,
            base,
            capacity: capacity.max(1),
            draining: AtomicBool::new(false),
            changed: Notify::new(),
            internal,
        }
    }

    pub fn id(&self) -> &str {
        &self.base.id
    }

    /// The record with the load as it is now.
    pub fn record(&self) -> MediaServerRecord {
        let transports = self.state.transport_count();
        let mut r = self.base.clone();
        r.active = transports > 0;
        r.used_capacity = transports as f64 / self.capacity as f64;
        r.over_capacity = transports >= self.capacity;
        r.draining = self.draining.load(Ordering::Relaxed);
        r
    }

    /// No new publications or subscriptions from now on; existing ones go on.
    pub fn drain(&self) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            tracing::info!(
                transports = self.state.transport_count(),
                "draining: no new sessions; existing ones continue"
            );
            self.changed.notify_one();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The internal API, served on the cluster port.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(&format!("{}/publish", api::PREFIX), post(publish))
        .route(&format!("{}/subscribe", api::PREFIX), post(subscribe))
        .route(&format!("{}/unpublish", api::PREFIX), post(unpublish))
        .route(&format!("{}/unsubscribe", api::PREFIX), post(unsubscribe))
        .route(&format!("{}/leave", api::PREFIX), post(leave))
        .route(&format!("{}/status", api::PREFIX), get(status))
        .route(&format!("{}/pipe/address", api::PREFIX), post(pipe_address))
        .route(&format!("{}/pipe/out", api::PREFIX), post(pipe_out))
        .route(&format!("{}/pipe/in", api::PREFIX), post(pipe_in))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(node)
}

fn error(e: Error) -> Response {
    (
        e.status(),
        Json(ErrorReply {
            error: e.to_string(),
        }),
    )
        .into_response()
}

fn refuse(node: &Node, from: SocketAddr) -> Option<Response> {
    if node.internal.allows(from.ip()) {
        return None;
    }
    tracing::warn!(%from, "internal API call from outside INTERNAL:IPADDRESSES refused");
    Some(
        (
            StatusCode::FORBIDDEN,
            Json(ErrorReply {
                error: format!("{} may not use the cluster API", from.ip()),
            }),
        )
            .into_response(),
    )
}

fn refuse_new(node: &Node) -> Option<Response> {
    node.is_draining().then(|| {
        error(Error::Unavailable(format!(
            "media server {} is draining",
            node.id()
        )))
    })
}

async fn publish(
    State(node): State<Arc<Node>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(r): Json<PublishRequest>,
) -> Response {
    if let Some(refused) = refuse(&node, from).or_else(|| refuse_new(&node)) {
        return refused;
    }
    node.state.join_as(&r.channel, &r.participant, &r.user);
    let rules = Rules::from_names(&r.codecs);
    let result = node
        .state
        .publish(&r.channel, &r.participant, &r.offer, &rules)
        .await
        .map(|(publication, answer)| PublishReply {
            tracks: node.state.publication_tracks(&r.channel, &publication),
            publication,
            answer,
        });
    settle(&node, &r.channel, &r.participant, result)
}

async fn subscribe(
    State(node): State<Arc<Node>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(r): Json<SubscribeRequest>,
) -> Response {
    if let Some(refused) = refuse(&node, from).or_else(|| refuse_new(&node)) {
        return refused;
    }
    node.state.join_as(&r.channel, &r.participant, &r.user);
    let result = node
        .state
        .subscribe(&r.channel, &r.participant, Some(&r.publication), &r.offer)
        .await
        .map(|(subscription, answer)| SubscribeReply {
            subscription,
            answer,
        });
    settle(&node, &r.channel, &r.participant, result)
}

async fn unpublish(
    State(node): State<Arc<Node>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(r): Json<EndRequest>,
) -> Response {
    end(&node, from, r, |s, c, p, id| s.unpublish(c, p, id))
}

async fn unsubscribe(
    State(node): State<Arc<Node>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(r): Json<EndRequest>,
) -> Response {
    end(&node, from, r, |s, c, p, id| s.unsubscribe(c, p, id))
}

fn end(
    node: &Node,
    from: SocketAddr,
    r: EndRequest,
    f: impl FnOnce(&AppState, &str, &str, &str) -> Result<(), Error>,
) -> Response {
    if let Some(refused) = refuse(node, from) {
        return refused;
    }
    let Some(id) = r.id.as_deref() else {
        return error(Error::BadRequest("say which id to end".into()));
    };
    let result = f(&node.state, &r.channel, &r.participant, id);
    node.state.leave_if_idle(&r.channel, &r.participant);
    node.changed.notify_one();
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e),
    }
}

async fn leave(
    State(node): State<Arc<Node>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(r): Json<EndRequest>,
) -> Response {
    if let Some(refused) = refuse(&node, from) {
        return refused;
    }
    node.state.leave(&r.channel, &r.participant);
    node.changed.notify_one();
    StatusCode::NO_CONTENT.into_response()
}

/// Where a pipe reaches `channel` here: its worker's port on the IP of the registered cluster
/// address (the one other servers reach this one on).
fn pipe_address_of(node: &Node, channel: &str) -> Result<SocketAddr, Error> {
    node.base
        .cluster_address
        .parse::<SocketAddr>()
        .ok()
        .and_then(|a| node.state.pipe_address(channel, a.ip()))
        .ok_or_else(|| Error::Unavailable("no media address for the pipe".into()))
}

/// Answers a request that may have changed this server's load: 201 with the reply, or the
/// error, after forgetting a participant the failure left with nothing here.
fn settle<T: serde::Serialize>(
    node: &Node,
    channel: &str,
    participant: &str,
    result: Result<T, Error>,
) -> Response {
    node.changed.notify_one();
    match result {
        Ok(reply) => (StatusCode::CREATED, Json(reply)).into_response(),
        Err(e) => {
            node.state.leave_if_idle(channel, participant);
            error(e)
        }
    }
}

async fn pipe_address(
    State(node): State<Arc<Node>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(r): Json<PipeAddressRequest>,
) -> Response {
    if let Some(refused) = refuse(&node, from) {
        return refused;
    }
    match pipe_address_of(&node, &r.channel) {
        Ok(a) => Json(PipeAddress {
            address: a.to_string(),
        })
        .into_response(),
        Err(e) => error(e),
    }
}

async fn pipe_out(
    State(node): State<Arc<Node>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(r): Json<PipeOutRequest>,
) -> Response {
    if let Some(refused) = refuse(&node, from) {
        return refused;
    }
    let (spec, address) = match r
        .pipe
        .spec()
        .and_then(|s| Ok((s, pipe_address_of(&node, &r.channel)?)))
    {
        Ok(x) => x,
        Err(e) => return error(e),
    };
    let result = node
        .state
        .pipe_out(&r.channel, &r.participant, &r.publication, spec)
        .await
        .map(|(subscription, tracks)| PipeOutReply {
            subscription,
            address: address.to_string(),
            tracks,
        });
    settle(&node, &r.channel, &r.participant, result)
}

async fn pipe_in(
    State(node): State<Arc<Node>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(r): Json<PipeInRequest>,
) -> Response {
    if let Some(refused) = refuse(&node, from) {
        return refused;
    }
    let spec = match r.pipe.spec() {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    let result = node
        .state
        .pipe_in(&r.channel, &r.participant, &r.tracks, spec)
        .await
        .map(|publication| PipeInReply { publication });
    settle(&node, &r.channel, &r.participant, result)
}

async fn status(State(node): State<Arc<Node>>) -> Json<MediaServerRecord> {
    Json(node.record())
}

/// Heartbeats to `base` (SERVICEBASEURL) until `stop` turns true, then removes the record.
/// Returns after the removal (or its failure, logged).
pub async fn heartbeat(
    node: Arc<Node>,
    http: reqwest::Client,
    base: String,
    mut stop: watch::Receiver<bool>,
) {
    let url = format!(
        "{}{}/media-servers",
        base.trim_end_matches('/'),
        api::PREFIX
    );
    let mut registered = false;
    let mut failing = false;
    loop {
        let result = async {
            let reply = http
                .put(&url)
                .json(&node.record())
                .send()
                .await?
                .error_for_status()?;
            reply.json::<HeartbeatReply>().await
        };
        match result.await {
            Ok(reply) => {
                if !registered {
                    tracing::info!(id = node.id(), gateway = %base, ttl_ms = reply.ttl_ms, "registered with the gateway");
                } else if failing {
                    tracing::info!(gateway = %base, "heartbeats reach the gateway again");
                }
                registered = true;
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(gateway = %base, "heartbeat failed: {e}; retrying every {HEARTBEAT_EVERY:?}");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = node.changed.notified() => {
                // Coalesce a burst of changes into one early heartbeat.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = stopped(&mut stop) => break,
        }
    }
    let remove = format!("{url}/remove");
    let body = serde_json::json!({ "id": node.id() });
    match http.post(&remove).json(&body).send().await {
        Ok(r) if r.status().is_success() => tracing::info!("unregistered from the gateway"),
        Ok(r) => tracing::warn!("unregistering: the gateway answered {}", r.status()),
        Err(e) => tracing::warn!("unregistering: {e} (the record expires by itself)"),
    }
}

/// Passes publications the data plane ended to the gateways.
pub async fn report_ended(
    node: Arc<Node>,
    http: reqwest::Client,
    base: String,
    mut ended: mpsc::UnboundedReceiver<(String, String, String)>,
) {
    let url = format!("{}{}/ended", base.trim_end_matches('/'), api::PREFIX);
    while let Some((channel, participant, publication)) = ended.recv().await {
        let report = Ended {
            server: node.id().to_string(),
            channel,
            participant,
            publication,
        };
        if let Err(e) = http.post(&url).json(&report).send().await {
            tracing::warn!(publication = %report.publication, "could not report an ended publication: {e}");
        }
        node.changed.notify_one();
    }
}

/// Waits, while draining, until no transport is left or `limit` has passed.
pub async fn drained(node: &Node, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = usize::MAX;
    loop {
        let n = node.state.transport_count();
        if n == 0 {
            tracing::info!("drained: no sessions left");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                transports = n,
                "drain time limit reached; closing what is left"
            );
            return;
        }
        if n != last {
            tracing::info!(transports = n, "draining: waiting for sessions to end");
            last = n;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
