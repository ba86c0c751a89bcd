//! The admin API, `/admin/api/v1` on the admin listener (9090) of a gateway or an all-in-one:
//! media servers (list, drain, forget), active channels with their clients and publications,
//! kicking a client, applications, channel configurations, webhooks, deployments, SIP trunks and
//! mappings and the audit log (see `config`), and the OpenAPI document at
//! `/admin/api/v1/openapi.json`; and the operator's console at `/admin`, a page that uses this
//! API (see `console`).
//!
//! Every request must come from `ADMIN:IPADDRESSES` (403 otherwise) and carry a valid
//! `X-API-Key` (401 otherwise); both are checked before anything else, the document included.
//! The console's page and files need only the address: they hold no data.

mod all_in_one;
mod config;
mod console;
mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Serialize;
use switchyard_controlplane::allowlist::{AllowList, Guarded, guard};
use switchyard_controlplane::error::{Error, ErrorBody};
use switchyard_controlplane::metrics::Metrics;
use switchyard_controlplane::phones::{DialRefusal, DialRequest};
use switchyard_controlplane::protocol::TrackInfo;
use switchyard_store::CachedStore;

pub use all_in_one::AllInOne;

use crate::api::RecordedFileInfo;
use crate::gateway::Gateway;
use crate::presence::ParticipantEntry;
use crate::registry::{MediaServerRecord, MediaServerRegistry};

pub const PREFIX: &str = "/admin/api/v1";

/// The live state an admin API looks at and acts on: media servers, channels, kicks. Only this
/// differs between a gateway and an all-in-one; applications, channel configurations,
/// deployments and the audit log are in the configuration store both have, so those endpoints
/// (see `config`) are the same code for both.
pub enum Administered {
    /// A gateway's cluster: the media servers' registry and the presence every gateway shares.
    Cluster(Arc<Gateway>),
    /// One process that is its own only media server, with its channels in memory.
    AllInOne(AllInOne),
}

impl Administered {
    fn metrics(&self) -> &Metrics {
        match self {
            Administered::Cluster(g) => &g.metrics,
            Administered::AllInOne(a) => &a.state.metrics,
        }
    }
}

/// The admin API's state: what it administers, the configuration store, and who may.
pub struct Admin {
    administered: Administered,
    store: CachedStore,
    allow: AllowList,
    keys: Vec<String>,
}

impl Admin {
    /// `keys` are the accepted `X-API-Key` values (one, or two while rotating).
    pub fn new(
        administered: Administered,
        store: CachedStore,
        allow: AllowList,
        keys: Vec<String>,
    ) -> Admin {
        Admin {
            administered,
            store,
            allow,
            keys,
        }
    }

    /// Records an operator's action on live state (the store records its own changes).
    async fn audit(&self, from: SocketAddr, action: &str, target: &str, detail: serde_json::Value) {
        let actor = format!("admin-api@{}", from.ip());
        if let Err(e) = self
            .store
            .store()
            .audit(&actor, action, target, &detail)
            .await
        {
            tracing::warn!(action, target, "cannot write the audit log: {e}");
        }
    }

    fn key_ok(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get("x-api-key").map(|v| v.as_bytes()) else {
            return false;
        };
        // Compared in constant time so the key cannot be guessed byte by byte from timings.
        self.keys.iter().any(|k| {
            let k = k.as_bytes();
            k.len() == given.len()
                && k.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        })
    }
}

/// Refuses a call without a valid `X-API-Key` (after the address check: see [`router`]),
/// counted as an authentication failure.
async fn key_guard(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if admin.key_ok(request.headers()) {
        return next.run(request).await;
    }
    admin.administered.metrics().auth_failure();
    tracing::warn!(%from, path = %request.uri().path(), "admin API call without a valid X-API-Key refused");
    let why = if request.headers().contains_key("x-api-key") {
        "the X-API-Key is not valid"
    } else {
        "the X-API-Key header is missing"
    };
    Error::BadApiKey(why).into_response()
}

pub fn router(admin: Arc<Admin>) -> Router {
    let allowed = Arc::new(Guarded {
        api: "the admin API",
        setting: "ADMIN:IPADDRESSES",
        allow: admin.allow.clone(),
    });
    // The later layer runs first: the address, then the key.
    let api = Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/media-servers", get(media_servers))
        .route(
            "/media-servers/{id}",
            get(media_server).delete(forget_media_server),
        )
        .route("/media-servers/{id}/drain", post(drain).delete(undrain))
        .merge(config::routes())
        .route("/channels", get(channels))
        .route("/channels/{channel}", get(channel))
        .route("/channels/{channel}/clients/{participant}", delete(kick))
        .route(
            "/channels/{channel}/recording",
            post(start_recording).delete(stop_recording),
        )
        .route(
            "/channels/{channel}/connections/{connection}/recording",
            post(start_connection_recording).delete(stop_connection_recording),
        )
        .route("/channels/{channel}/dial", post(dial))
        .route("/channels/{channel}/dial/{call}", delete(hang_up))
        .route_layer(middleware::from_fn_with_state(admin.clone(), key_guard))
        .route_layer(middleware::from_fn_with_state(allowed.clone(), guard))
        .with_state(admin);
    Router::new()
        .nest(PREFIX, api)
        .merge(console::routes(allowed))
}

async fn media_servers(
    State(admin): State<Arc<Admin>>,
) -> Result<Json<Vec<MediaServerRecord>>, Error> {
    let mut servers = match &admin.administered {
        Administered::Cluster(g) => g.registry.list().await?,
        Administered::AllInOne(a) => vec![a.record()],
    };
    servers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(servers))
}

/// The server `id`, or why not.
async fn known(admin: &Admin, id: &str) -> Result<MediaServerRecord, Error> {
    let found = match &admin.administered {
        Administered::Cluster(g) => g.registry.get(id).await?,
        Administered::AllInOne(a) => Some(a.record()).filter(|r| r.id == id),
    };
    found.ok_or_else(|| Error::NotFound(format!("no media server {id}")))
}

/// The gateway whose registry holds `id` (a 404 when none does), or, for an all-in-one's own
/// server, the 409 to answer: it cannot be drained or forgotten, as new sessions would have
/// nowhere else to go.
async fn registered(admin: &Admin, id: &str) -> Result<Result<Arc<Gateway>, Response>, Error> {
    known(admin, id).await?;
    Ok(match &admin.administered {
        Administered::Cluster(g) => Ok(g.clone()),
        Administered::AllInOne(_) => Err((
            StatusCode::CONFLICT,
            Json(ErrorBody {
                error: format!(
                    "{id} is this all-in-one's only media server: it cannot be drained or forgotten; stop the process (SIGTERM) instead"
                ),
            }),
        )
            .into_response()),
    })
}

async fn media_server(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<MediaServerRecord>, Error> {
    known(&admin, &id).await.map(Json)
}

/// Sets an operator's drain and audits it; answers the record as it is now (204 if it left
/// meanwhile).
async fn set_drain(
    admin: &Admin,
    from: SocketAddr,
    id: &str,
    draining: bool,
) -> Result<Response, Error> {
    let g = match registered(admin, id).await? {
        Ok(g) => g,
        Err(refused) => return Ok(refused),
    };
    g.registry.set_draining(id, draining).await?;
    tracing::info!(id, draining, "media server drain set by the admin API");
    let now = g.registry.get(id).await?;
    let action = if draining {
        "mediaServer.drain"
    } else {
        "mediaServer.undrain"
    };
    admin.audit(from, action, id, serde_json::Value::Null).await;
    Ok(match now {
        Some(s) => Json(s).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn drain(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    set_drain(&admin, from, &id, true).await
}

async fn undrain(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    set_drain(&admin, from, &id, false).await
}

/// Removes a record at once (a server known to be gone); a live server registers again with
/// its next heartbeat.
async fn forget_media_server(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let g = match registered(&admin, &id).await? {
        Ok(g) => g,
        Err(refused) => return Ok(refused),
    };
    g.registry.remove(&id).await?;
    admin
        .audit(from, "mediaServer.forget", &id, serde_json::Value::Null)
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChannelView {
    id: String,
    clients: Vec<ClientView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientView {
    id: String,
    #[serde(flatten)]
    entry: ParticipantEntry,
    /// The client's publications (each its own connection) and where they are.
    connections: Vec<ConnectionView>,
}

/// One of a client's connections: a publication (upstream) or a subscription (downstream).
#[derive(Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
enum ConnectionView {
    Publication {
        id: String,
        server: String,
        tracks: Vec<TrackInfo>,
    },
    Subscription {
        id: String,
        publication: String,
        server: String,
    },
}

/// A cluster's channel `id` as presence has it.
async fn channel_view(g: &Gateway, id: &str) -> Result<ChannelView, Error> {
    let presence = &g.presence;
    let participants = presence.participants(id).await?;
    let publications = presence.publications(id).await?;
    let subscriptions = presence.subscriptions(id).await?;
    let mut clients: Vec<ClientView> = participants
        .into_iter()
        .map(|(p, entry)| {
            let mut connections: Vec<ConnectionView> = publications
                .iter()
                .filter(|(_, x)| x.participant == p)
                .map(|(id, x)| ConnectionView::Publication {
                    id: id.clone(),
                    server: x.server.clone(),
                    tracks: x.tracks.clone(),
                })
                .collect();
            connections.extend(
                subscriptions
                    .iter()
                    .filter(|(_, x)| x.participant == p)
                    .map(|(id, x)| ConnectionView::Subscription {
                        id: id.clone(),
                        publication: x.publication.clone(),
                        server: x.server.clone(),
                    }),
            );
            ClientView {
                connections,
                id: p,
                entry,
            }
        })
        .collect();
    clients.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(ChannelView {
        id: id.to_string(),
        clients,
    })
}

async fn channels(State(admin): State<Arc<Admin>>) -> Result<Json<Vec<ChannelView>>, Error> {
    let g = match &admin.administered {
        Administered::Cluster(g) => g,
        Administered::AllInOne(a) => return Ok(Json(a.channels())),
    };
    let names = g.presence.channels().await?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let view = channel_view(g, &name).await?;
        if !view.clients.is_empty() {
            out.push(view);
        }
    }
    Ok(Json(out))
}

async fn channel(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<ChannelView>, Error> {
    let view = match &admin.administered {
        Administered::Cluster(g) => Some(channel_view(g, &id).await?),
        Administered::AllInOne(a) => a.channels().into_iter().find(|c| c.id == id),
    };
    match view {
        Some(v) if !v.clients.is_empty() => Ok(Json(v)),
        _ => Err(Error::NotFound(format!("no active channel {id}"))),
    }
}

/// Starts recording a channel's publications, now and as they come: an all-in-one's own, or
/// through a gateway those of every media server holding one (and of any that gets one later).
/// Answers how many tracks started now.
async fn start_recording(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(channel): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    let tracks = match &admin.administered {
        Administered::AllInOne(a) => a.state.start_recording(&channel).await?,
        Administered::Cluster(g) => g.start_recording(&channel).await?,
    };
    admin
        .audit(
            from,
            "channel.recording.start",
            &channel,
            serde_json::json!({}),
        )
        .await;
    Ok(Json(
        serde_json::json!({ "channel": channel, "recording": true, "tracks": tracks }),
    ))
}

/// Stops recording a channel: every file is finished. Answers the files and their lengths
/// (paths on the media servers that wrote them).
async fn stop_recording(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(channel): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    let files: Option<Vec<RecordedFileInfo>> = match &admin.administered {
        Administered::AllInOne(a) if a.state.is_recorded(&channel) => {
            Some(RecordedFileInfo::of(a.state.stop_recording(&channel).await))
        }
        Administered::AllInOne(_) => None,
        Administered::Cluster(g) => g.stop_recording(&channel).await?,
    };
    let Some(files) = files else {
        return Err(Error::NotFound(format!(
            "channel {channel} is not recorded"
        )));
    };
    admin
        .audit(
            from,
            "channel.recording.stop",
            &channel,
            serde_json::json!({}),
        )
        .await;
    Ok(Json(
        serde_json::json!({ "channel": channel, "recording": false, "files": files }),
    ))
}

/// Records one connection (a publication) of a channel, whether or not the channel is
/// recorded. Answers how many tracks started.
async fn start_connection_recording(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path((channel, connection)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, Error> {
    let tracks = match &admin.administered {
        Administered::AllInOne(a) => {
            a.state
                .start_recording_publication(&channel, &connection)
                .await?
        }
        Administered::Cluster(g) => {
            g.record_publication(&channel, &connection, true)
                .await?
                .ok_or_else(|| {
                    Error::NotFound(format!("no connection {connection} in channel {channel}"))
                })?
                .tracks
        }
    };
    let detail = serde_json::json!({ "connection": connection });
    admin
        .audit(from, "connection.recording.start", &channel, detail)
        .await;
    Ok(Json(serde_json::json!({
        "channel": channel,
        "connection": connection,
        "recording": true,
        "tracks": tracks
    })))
}

/// Stops recording one connection: its files are finished. Answers them.
async fn stop_connection_recording(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path((channel, connection)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, Error> {
    let not_recorded = || Error::NotFound(format!("connection {connection} is not recorded"));
    let files: Vec<RecordedFileInfo> = match &admin.administered {
        Administered::AllInOne(a) => RecordedFileInfo::of(
            a.state
                .stop_recording_publication(&channel, &connection)
                .await
                .ok_or_else(not_recorded)?,
        ),
        Administered::Cluster(g) => {
            g.record_publication(&channel, &connection, false)
                .await?
                .ok_or_else(not_recorded)?
                .files
        }
    };
    let detail = serde_json::json!({ "connection": connection });
    admin
        .audit(from, "connection.recording.stop", &channel, detail)
        .await;
    Ok(Json(serde_json::json!({
        "channel": channel,
        "connection": connection,
        "recording": false,
        "files": files
    })))
}

/// A call out to place ([`dial`]).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DialBody {
    number: String,
    #[serde(default)]
    trunk: Option<String>,
    #[serde(default)]
    caller_id: Option<String>,
    #[serde(default)]
    application: Option<String>,
}

/// Dials a number through a SIP trunk and joins the call to the channel once answered:
/// `202 {"call": id}` at once, as ringing may take a minute (the call's fate is in the log and
/// the `switchyard_sip_calls_out*` metrics). All-in-one dials through its embedded connector;
/// a gateway through the registered standalone connector with the fewest calls. Without a
/// connector: 503.
async fn dial(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(channel): Path<String>,
    body: Result<Json<DialBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), Error> {
    let Json(body) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    if !switchyard_controlplane::phones::valid_number(&body.number) {
        return Err(Error::BadRequest(format!(
            "{:?} is not a number to dial: 1 to 32 of 0-9, +, * and #",
            body.number
        )));
    }
    let call = match &admin.administered {
        Administered::AllInOne(a) => {
            let Some(phones) = a.state.phones.get().cloned() else {
                return Err(Error::Unavailable(
                    "this process runs no SIP connector".into(),
                ));
            };
            let request = DialRequest {
                channel: &channel,
                number: &body.number,
                trunk: body.trunk.as_deref(),
                caller_id: body.caller_id.as_deref(),
                application: body.application.as_deref(),
            };
            phones.dial(request).map_err(|refusal| match refusal {
                DialRefusal::Invalid(why) => Error::BadRequest(why),
                DialRefusal::NoTrunk(why) => Error::NotFound(why),
            })?
        }
        // A gateway passes it to a registered standalone connector.
        Administered::Cluster(g) => {
            let request = crate::sip_connectors::api::DialBody {
                channel: channel.clone(),
                number: body.number.clone(),
                trunk: body.trunk.clone(),
                caller_id: body.caller_id.clone(),
                application: body.application.clone(),
            };
            g.dial(&request).await?
        }
    };
    let detail = serde_json::json!({ "number": body.number, "trunk": body.trunk, "call": call });
    admin.audit(from, "channel.dial", &channel, detail).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "call": call })),
    ))
}

/// Hangs up a call out ([`dial`]'s id): CANCEL while it rings, BYE once answered; 204 once
/// asked (the SIP exchange goes on on its own), 404 when no such call is going on here.
async fn hang_up(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path((channel, call)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let ended = match &admin.administered {
        Administered::AllInOne(a) => a
            .state
            .phones
            .get()
            .is_some_and(|phones| phones.hang_up(&channel, &call)),
        // A gateway asks its registered standalone connectors.
        Administered::Cluster(g) => g.hang_up(&channel, &call).await?,
    };
    if !ended {
        return Err(Error::NotFound(format!(
            "no call out {call:?} is going on in channel {channel:?}"
        )));
    }
    let detail = serde_json::json!({ "call": call });
    admin.audit(from, "channel.hang_up", &channel, detail).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn kick(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path((channel, participant)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let reason = "removed by an administrator";
    let kicked = match &admin.administered {
        Administered::Cluster(g) => g.kick(&channel, &participant, reason).await?,
        Administered::AllInOne(a) => a.state.kick(&channel, &participant, reason),
    };
    if !kicked {
        return Err(Error::NotFound(format!(
            "no client {participant} in channel {channel}"
        )));
    }
    let detail = serde_json::json!({ "channel": channel });
    admin.audit(from, "client.kick", &participant, detail).await;
    Ok(StatusCode::NO_CONTENT)
}
