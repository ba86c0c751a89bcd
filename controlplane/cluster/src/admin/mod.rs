//! The admin API, `/admin/api/v1` on the gateway's admin listener (9090): media servers (list,
//! drain, forget), active channels with their clients and publications, kicking a client,
//! applications, channel configurations, deployments and the audit log (see `config`), and the
//! OpenAPI document at `/admin/api/v1/openapi.json`.
//!
//! Every request must come from `ADMIN:IPADDRESSES` (403 otherwise) and carry a valid
//! `X-API-Key` (401 otherwise); both are checked before anything else, the document included.

mod config;
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
use switchyard_controlplane::error::Error;
use switchyard_controlplane::protocol::TrackInfo;
use switchyard_store::CachedStore;

use crate::gateway::Gateway;
use crate::presence::ParticipantEntry;
use crate::registry::{MediaServerRecord, MediaServerRegistry};

pub const PREFIX: &str = "/admin/api/v1";

/// The admin API's state: the gateway it administers, the configuration store, and who may.
pub struct Admin {
    pub gateway: Arc<Gateway>,
    store: CachedStore,
    allow: AllowList,
    keys: Vec<String>,
}

impl Admin {
    /// `keys` are the accepted `X-API-Key` values (one, or two while rotating).
    pub fn new(gateway: Arc<Gateway>, allow: AllowList, keys: Vec<String>) -> Admin {
        Admin {
            store: gateway.store.clone(),
            gateway,
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
    admin.gateway.metrics.auth_failure();
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
        .route_layer(middleware::from_fn_with_state(admin.clone(), key_guard))
        .route_layer(middleware::from_fn_with_state(allowed, guard))
        .with_state(admin);
    Router::new().nest(PREFIX, api)
}

async fn media_servers(
    State(admin): State<Arc<Admin>>,
) -> Result<Json<Vec<MediaServerRecord>>, Error> {
    let mut servers = admin.gateway.registry.list().await?;
    servers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(servers))
}

/// The server `id`, or why not.
async fn known(admin: &Admin, id: &str) -> Result<MediaServerRecord, Error> {
    admin
        .gateway
        .registry
        .get(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no media server {id}")))
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
    known(admin, id).await?;
    admin.gateway.registry.set_draining(id, draining).await?;
    tracing::info!(id, draining, "media server drain set by the admin API");
    let now = admin.gateway.registry.get(id).await?;
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
) -> Result<StatusCode, Error> {
    known(&admin, &id).await?;
    admin.gateway.registry.remove(&id).await?;
    admin
        .audit(from, "mediaServer.forget", &id, serde_json::Value::Null)
        .await;
    Ok(StatusCode::NO_CONTENT)
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

async fn channel_view(admin: &Admin, id: &str) -> Result<ChannelView, Error> {
    let presence = &admin.gateway.presence;
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
    let names = admin.gateway.presence.channels().await?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let view = channel_view(&admin, &name).await?;
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
    let view = channel_view(&admin, &id).await?;
    if view.clients.is_empty() {
        return Err(Error::NotFound(format!("no active channel {id}")));
    }
    Ok(Json(view))
}

async fn kick(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path((channel, participant)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let kicked = admin
        .gateway
        .kick(&channel, &participant, "removed by an administrator")
        .await?;
    if !kicked {
        return Err(Error::NotFound(format!(
            "no client {participant} in channel {channel}"
        )));
    }
    let detail = serde_json::json!({ "channel": channel });
    admin.audit(from, "client.kick", &participant, detail).await;
    Ok(StatusCode::NO_CONTENT)
}
