//! The media server role: media workers behind the internal control API that gateways call
//! (`/cluster/v1/publish`, ...), a heartbeat to the gateways through `SERVICEBASEURL`, reports of
//! publications the data plane ended and of who speaks, and draining.
//!
//! A gateway names the participants; this server keeps them only as owners of transports (no
//! outbox: the gateway talks to the client). Everything else, the channel state, SDP answers and
//! transports, is the all-in-one code in [`AppState`].

use reqwest::Method;

use crate::signing::{self, ClusterSecret};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use switchyard_controlplane::allowlist::{AllowList, Guarded, guard};
use switchyard_controlplane::error::Error;
use switchyard_controlplane::protocol::ServerMessage;
use switchyard_controlplane::rules::Rules;
use switchyard_controlplane::server::stopped;
use switchyard_controlplane::session::AppState;
use tokio::sync::{Notify, mpsc, watch};

use crate::api::{
    self, EndRequest, Ended, HeartbeatReply, MixReply, MixRequest, PipeAddress, PipeAddressRequest,
    PipeInReply, PipeInRequest, PipeOutReply, PipeOutRequest, PreferencesRequest, PublishReply,
    PublishRequest, RecordedFileInfo, RecordingReply, RecordingRequest, Relayed, SubscribeReply,
    SubscribeRequest, ViewMixReply, ViewMixRequest,
};
use crate::capacity::Capacity;
use crate::registry::MediaServerRecord;

/// How often a media server heartbeats; the gateway's TTL is a few of these.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// A media server in the cluster.
pub struct Node {
    pub state: Arc<AppState>,
    /// The record as registered, less the live load (filled in by [`Node::record`]).
    base: MediaServerRecord,
    /// Transports and MCU connections before the server calls itself over capacity.
    capacity: Capacity,
    draining: AtomicBool,
    /// Wakes the heartbeat early when the load changed, so placement sees it soon.
    changed: Notify,
    /// Who may call the internal API.
    internal: AllowList,
    /// The cluster secret: requests to and from gateways are signed with it, pipe keys sealed.
    secret: Option<ClusterSecret>,
}

impl Node {
    pub fn new(
        state: Arc<AppState>,
        base: MediaServerRecord,
        capacity: Capacity,
        internal: AllowList,
    ) -> Node {
        Node {
            state,
            base,
            capacity,
            draining: AtomicBool::new(false),
            changed: Notify::new(),
            internal,
            secret: None,
        }
    }

    /// Signs this media server's cluster requests and requires signed ones (`CLUSTER:SECRET`).
    pub fn with_secret(mut self, secret: Option<ClusterSecret>) -> Node {
        self.secret = secret;
        self
    }

    /// The cluster secret, for the media server's own calls to the gateway.
    pub fn secret(&self) -> Option<&ClusterSecret> {
        self.secret.as_ref()
    }

    pub fn id(&self) -> &str {
        &self.base.id
    }

    /// The record with the load as it is now: its SFU transports and MCU connections against
    /// their capacities (an MCU connection's own transport counts as MCU only).
    pub fn record(&self) -> MediaServerRecord {
        let transports = self.state.transport_count();
        let mcu = self.state.mcu_connection_count();
        let sfu = transports.saturating_sub(mcu);
        let mut r = self.base.clone();
        r.active = transports > 0;
        r.used_capacity = self.capacity.used(sfu, mcu);
        r.over_capacity = self.capacity.is_over(sfu, mcu);
        r.draining = self.draining.load(Ordering::Relaxed);
        r.checks = self.state.metrics.checks.list();
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

/// The internal API, served on the cluster port, with `/api/listeners` and `/metrics`.
/// Everything but `/status` and `/health` answers only `INTERNAL:IPADDRESSES`.
pub fn router(node: Arc<Node>) -> Router {
    let internal = Arc::new(Guarded {
        api: "the cluster API",
        setting: "INTERNAL:IPADDRESSES",
        allow: node.internal.clone(),
    });
    let signed = Arc::new(signing::Signed {
        secret: node.secret.clone(),
        refused: {
            let state = node.state.clone();
            Box::new(move || state.metrics.auth_failure())
        },
    });
    let path = |p: &str| format!("{}{p}", api::PREFIX);
    Router::new()
        .route(&path("/publish"), post(publish))
        .route(&path("/subscribe"), post(subscribe))
        .route(&path("/mix"), post(mix))
        .route(&path("/view-mix"), post(view_mix))
        .route(&path("/unpublish"), post(unpublish))
        .route(&path("/unsubscribe"), post(unsubscribe))
        .route(&path("/preferences"), post(preferences))
        .route(&path("/leave"), post(leave))
        .route(&path("/recording"), post(recording))
        .route(&path("/pipe/address"), post(pipe_address))
        .route(&path("/pipe/out"), post(pipe_out))
        .route(&path("/pipe/in"), post(pipe_in))
        .route_layer(middleware::from_fn_with_state(signed, signing::guard))
        // For `switchyard doctor --server http://127.0.0.1:8445` on the media server's host.
        .route(
            "/api/listeners",
            get(|State(node): State<Arc<Node>>| async move {
                Json(switchyard_controlplane::listeners::Listeners::of(
                    &node.state,
                ))
            }),
        )
        // The host checks and counters, for Prometheus inside the cluster's network.
        .route(
            "/metrics",
            get(|State(node): State<Arc<Node>>| async move {
                switchyard_controlplane::server::metrics_response(&node.state)
            }),
        )
        .route_layer(middleware::from_fn_with_state(internal, guard))
        .route(&path("/status"), get(status))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(node)
}

/// A draining server takes no new publications or subscriptions.
fn refuse_new(node: &Node) -> Result<(), Error> {
    if node.is_draining() {
        return Err(Error::Unavailable(format!(
            "media server {} is draining",
            node.id()
        )));
    }
    Ok(())
}

async fn publish(
    State(node): State<Arc<Node>>,
    Json(r): Json<PublishRequest>,
) -> Result<(StatusCode, Json<PublishReply>), Error> {
    refuse_new(&node)?;
    node.state.join_as(&r.channel, &r.participant, &r.user);
    let rules = Rules {
        record: r.record,
        ..Rules::from_link(&r.codecs, r.max_bitrate_kbps)
    };
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
    Json(r): Json<SubscribeRequest>,
) -> Result<(StatusCode, Json<SubscribeReply>), Error> {
    refuse_new(&node)?;
    node.state.join_as(&r.channel, &r.participant, &r.user);
    let result = node
        .state
        .subscribe(&r.channel, &r.participant, &r.publication, &r.offer)
        .await
        .map(|(subscription, answer)| SubscribeReply {
            subscription,
            answer,
        });
    settle(&node, &r.channel, &r.participant, result)
}

/// An MCU connection on this server's mixer of the channel (started if it has none). It is a
/// publication of the participant's here, so `unpublish` and `leave` end it.
async fn mix(
    State(node): State<Arc<Node>>,
    Json(r): Json<MixRequest>,
) -> Result<(StatusCode, Json<MixReply>), Error> {
    refuse_new(&node)?;
    node.state.join_as(&r.channel, &r.participant, &r.user);
    let rules = Rules {
        canvas: r.canvas,
        record: r.record,
        ..Rules::from_link(&r.codecs, r.max_bitrate_kbps)
    };
    let result = node
        .state
        .mix(&r.channel, &r.participant, &r.offer, &rules)
        .await
        .map(|(publication, answer)| MixReply {
            tracks: node.state.publication_tracks(&r.channel, &publication),
            publication,
            answer,
        });
    settle(&node, &r.channel, &r.participant, result)
}

/// A receive-only view of the channel's mix here; a subscription of the participant's, so
/// `unsubscribe` and `leave` end it.
async fn view_mix(
    State(node): State<Arc<Node>>,
    Json(r): Json<ViewMixRequest>,
) -> Result<(StatusCode, Json<ViewMixReply>), Error> {
    refuse_new(&node)?;
    node.state.join_as(&r.channel, &r.participant, &r.user);
    let rules = Rules {
        canvas: r.canvas,
        ..Rules::from_link(&[], None)
    };
    let result = node
        .state
        .view_mix(&r.channel, &r.participant, &r.offer, &rules)
        .await
        .map(|(subscription, answer)| ViewMixReply {
            subscription,
            answer,
        });
    settle(&node, &r.channel, &r.participant, result)
}

async fn unpublish(
    State(node): State<Arc<Node>>,
    Json(r): Json<EndRequest>,
) -> Result<StatusCode, Error> {
    end(&node, r, |s, c, p, id| s.unpublish(c, p, id))
}

async fn unsubscribe(
    State(node): State<Arc<Node>>,
    Json(r): Json<EndRequest>,
) -> Result<StatusCode, Error> {
    end(&node, r, |s, c, p, id| s.unsubscribe(c, p, id))
}

async fn preferences(
    State(node): State<Arc<Node>>,
    Json(r): Json<PreferencesRequest>,
) -> Result<StatusCode, Error> {
    node.state
        .set_preferences(&r.channel, &r.participant, &r.subscription, r.preferences)
        .map(|()| StatusCode::NO_CONTENT)
}

fn end(
    node: &Node,
    r: EndRequest,
    f: impl FnOnce(&AppState, &str, &str, &str) -> Result<(), Error>,
) -> Result<StatusCode, Error> {
    let id =
        r.id.as_deref()
            .ok_or_else(|| Error::BadRequest("say which id to end".into()))?;
    let result = f(&node.state, &r.channel, &r.participant, id);
    node.state.leave_if_idle(&r.channel, &r.participant);
    node.changed.notify_one();
    result.map(|()| StatusCode::NO_CONTENT)
}

/// Records the channel's publications here (those there now, and those to come) or stops,
/// finishing the files.
async fn recording(
    State(node): State<Arc<Node>>,
    Json(r): Json<RecordingRequest>,
) -> Result<Json<RecordingReply>, Error> {
    if r.on {
        let tracks = match &r.publication {
            Some(p) => {
                node.state
                    .start_recording_publication(&r.channel, p)
                    .await?
            }
            None => node.state.start_recording(&r.channel).await?,
        };
        return Ok(Json(RecordingReply {
            tracks,
            files: Vec::new(),
        }));
    }
    let summaries = match &r.publication {
        Some(p) => node
            .state
            .stop_recording_publication(&r.channel, p)
            .await
            .ok_or_else(|| Error::NotFound(format!("publication {p} is not recorded")))?,
        None => node.state.stop_recording(&r.channel).await,
    };
    Ok(Json(RecordingReply {
        tracks: 0,
        files: RecordedFileInfo::of(summaries),
    }))
}

async fn leave(State(node): State<Arc<Node>>, Json(r): Json<EndRequest>) -> StatusCode {
    node.state.leave(&r.channel, &r.participant);
    node.changed.notify_one();
    StatusCode::NO_CONTENT
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
fn settle<T>(
    node: &Node,
    channel: &str,
    participant: &str,
    result: Result<T, Error>,
) -> Result<(StatusCode, Json<T>), Error> {
    node.changed.notify_one();
    match result {
        Ok(reply) => Ok((StatusCode::CREATED, Json(reply))),
        Err(e) => {
            node.state.leave_if_idle(channel, participant);
            Err(e)
        }
    }
}

async fn pipe_address(
    State(node): State<Arc<Node>>,
    Json(r): Json<PipeAddressRequest>,
) -> Result<Json<PipeAddress>, Error> {
    let address = pipe_address_of(&node, &r.channel)?;
    Ok(Json(PipeAddress {
        address: address.to_string(),
    }))
}

async fn pipe_out(
    State(node): State<Arc<Node>>,
    Json(r): Json<PipeOutRequest>,
) -> Result<(StatusCode, Json<PipeOutReply>), Error> {
    let spec = r.pipe.spec(node.secret())?;
    let address = pipe_address_of(&node, &r.channel)?;
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
    Json(r): Json<PipeInRequest>,
) -> Result<(StatusCode, Json<PipeInReply>), Error> {
    let spec = r.pipe.spec(node.secret())?;
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
            let record = node.record();
            let reply = signing::request(&http, node.secret(), Method::PUT, &url, Some(&record))
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
    let request = signing::request(&http, node.secret(), Method::POST, &remove, Some(&body));
    match request.send().await {
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
        let request = signing::request(&http, node.secret(), Method::POST, &url, Some(&report));
        if let Err(e) = request.send().await {
            tracing::warn!(publication = %report.publication, "could not report an ended publication: {e}");
        }
        node.changed.notify_one();
    }
}

/// Passes messages for participants whose sockets are on gateways (speaking changes, already
/// rate-limited by the data plane; `layers` for publishers) to the gateways.
pub async fn relay(
    node: Arc<Node>,
    http: reqwest::Client,
    base: String,
    mut messages: mpsc::UnboundedReceiver<(String, ServerMessage)>,
) {
    let url = format!("{}{}/relay", base.trim_end_matches('/'), api::PREFIX);
    while let Some((channel, message)) = messages.recv().await {
        let report = Relayed {
            server: node.id().to_string(),
            channel,
            message,
        };
        let request = signing::request(&http, node.secret(), Method::POST, &url, Some(&report));
        if let Err(e) = request.send().await {
            tracing::debug!(channel = %report.channel, "could not relay a message to the gateways: {e}");
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::call;
    use switchyard_controlplane::token::Applications;
    use switchyard_dataplane::io::Backend;
    use switchyard_dataplane::worker::{MediaConfig, MediaServer};

    /// A media server with one unpinned worker on loopback.
    fn node() -> Arc<Node> {
        let config = MediaConfig {
            workers: 1,
            io_backend: Some(Backend::Mmsg),
            bind_ip: "127.0.0.1".parse().unwrap(),
            port_min: 42000,
            port_max: 42999,
            pin: false,
            first_core: 0,
            ice_tcp: false,
            handoff: None,
            mcu_workers: 0,
            io: Default::default(),
        };
        let (media, _events) = MediaServer::start(config).unwrap();
        let state = AppState::new(media, Applications::default(), vec![]);
        let record = MediaServerRecord {
            id: "ms1".into(),
            region: "a".into(),
            available: true,
            active: false,
            over_capacity: false,
            used_capacity: 0.0,
            draining: false,
            ip_addresses: vec![],
            public_ip_address: None,
            version: "test".into(),
            core_count: 1,
            cluster_address: "127.0.0.1:8445".into(),
            turn_urls: Vec::new(),
            checks: Vec::new(),
        };
        let allow = AllowList::parse("127.0.0.1").unwrap();
        let capacity = Capacity {
            transports: 10,
            mcu_connections: 2,
        };
        Arc::new(Node::new(Arc::new(state), record, capacity, allow))
    }

    /// A JSON POST to the internal API from `from`.
    async fn post(router: &Router, from: &str, path: &str, body: &str) -> (StatusCode, String) {
        call(router, from, "POST", path, Some(body.to_string())).await
    }

    #[tokio::test]
    async fn the_internal_api_refuses_strangers_and_says_what_is_wrong() {
        let node = node();
        let router = router(node.clone());
        let leave = r#"{"channel":"c","participant":"p"}"#;
        let (status, body) = post(&router, "10.1.1.1:1000", "/cluster/v1/leave", leave).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            body.contains("10.1.1.1 may not use the cluster API"),
            "{body}"
        );
        let (status, _) = post(&router, "127.0.0.1:1000", "/cluster/v1/leave", leave).await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        assert_eq!(
            post(&router, "127.0.0.1:1000", "/cluster/v1/unpublish", leave).await,
            (
                StatusCode::BAD_REQUEST,
                r#"{"error":"say which id to end"}"#.into()
            )
        );
        let end = r#"{"channel":"c","participant":"p","id":"pub9"}"#;
        assert_eq!(
            post(&router, "127.0.0.1:1000", "/cluster/v1/unsubscribe", end).await,
            (
                StatusCode::NOT_FOUND,
                r#"{"error":"no subscription pub9 of yours"}"#.into()
            )
        );

        let publish = r#"{"channel":"c","participant":"p","user":"u","offer":"nonsense"}"#;
        let (status, body) = post(&router, "127.0.0.1:1000", "/cluster/v1/publish", publish).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.starts_with(r#"{"error":"bad offer: "#), "{body}");
        assert!(
            !node.state.has_participant("c", "p"),
            "a failed publish leaves nothing behind"
        );

        node.drain();
        let (status, body) = post(&router, "127.0.0.1:1000", "/cluster/v1/publish", publish).await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"media server ms1 is draining"}"#
            )
        );
        assert!(node.record().draining);
        node.state.media.stop();
    }

    /// A refused MCU connection or view of the mix says why and leaves nothing behind.
    #[tokio::test]
    async fn a_refused_mix_says_why_and_leaves_nothing() {
        let node = node();
        let router = router(node.clone());
        let request = |offer: &str| {
            serde_json::json!({"channel": "c", "participant": "p", "user": "u", "offer": offer})
                .to_string()
        };
        for path in ["/cluster/v1/mix", "/cluster/v1/view-mix"] {
            let (status, body) = post(&router, "127.0.0.1:1000", path, &request("nonsense")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
            assert!(body.starts_with(r#"{"error":"bad offer: "#), "{body}");
            assert!(!node.state.has_participant("c", "p"), "{path}");
        }
        // This server has no MCU thread.
        let offer = crate::testing::mix_offer(false);
        let (status, body) = post(
            &router,
            "127.0.0.1:1000",
            "/cluster/v1/mix",
            &request(&offer),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::BAD_REQUEST,
                r#"{"error":"this server runs no MCU (MCU:WORKERS is 0)"}"#
            )
        );
        assert!(!node.state.has_participant("c", "p"));
        node.drain();
        let (status, _) = post(
            &router,
            "127.0.0.1:1000",
            "/cluster/v1/view-mix",
            &request(&offer),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        node.state.media.stop();
    }
}
