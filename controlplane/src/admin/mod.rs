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

use crate::allowlist::AllowList;
use crate::cluster::gateway::Gateway;
use crate::cluster::presence::ParticipantEntry;
use crate::registry::MediaServerRegistry;
use crate::store::CachedStore;

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

/// A JSON error body.
#[derive(Serialize)]
struct Problem {
    error: String,
}

fn problem(status: StatusCode, error: impl Into<String>) -> Response {
    (
        status,
        Json(Problem {
            error: error.into(),
        }),
    )
        .into_response()
}

async fn guard(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !admin.allow.allows(from.ip()) {
        tracing::warn!(%from, path = %request.uri().path(), "admin API call from outside ADMIN:IPADDRESSES refused");
        return problem(
            StatusCode::FORBIDDEN,
            format!("{} is not in ADMIN:IPADDRESSES", from.ip()),
        );
    }
    if !admin.key_ok(request.headers()) {
        admin.gateway.metrics.auth_failure();
        tracing::warn!(%from, path = %request.uri().path(), "admin API call without a valid X-API-Key refused");
        let why = if request.headers().contains_key("x-api-key") {
            "the X-API-Key is not valid"
        } else {
            "the X-API-Key header is missing"
        };
        return problem(StatusCode::UNAUTHORIZED, why);
    }
    next.run(request).await
}

pub fn router(admin: Arc<Admin>) -> Router {
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
        .route_layer(middleware::from_fn_with_state(admin.clone(), guard))
        .with_state(admin);
    Router::new().nest(PREFIX, api)
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

async fn media_servers(State(admin): State<Arc<Admin>>) -> Response {
    match admin.gateway.registry.list().await {
        Ok(mut servers) => {
            servers.sort_by(|a, b| a.id.cmp(&b.id));
            Json(servers).into_response()
        }
        Err(e) => unavailable(e),
    }
}

async fn media_server(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    match admin.gateway.registry.get(&id).await {
        Ok(Some(s)) => Json(s).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no media server {id}")),
        Err(e) => unavailable(e),
    }
}

async fn set_drain(admin: &Admin, id: &str, draining: bool) -> Response {
    match admin.gateway.registry.get(id).await {
        Ok(None) => return problem(StatusCode::NOT_FOUND, format!("no media server {id}")),
        Err(e) => return unavailable(e),
        Ok(Some(_)) => {}
    }
    match admin.gateway.registry.set_draining(id, draining).await {
        Ok(()) => {
            tracing::info!(id, draining, "media server drain set by the admin API");
            match admin.gateway.registry.get(id).await {
                Ok(Some(s)) => Json(s).into_response(),
                Ok(None) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => unavailable(e),
            }
        }
        Err(e) => unavailable(e),
    }
}

async fn drain(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    let r = set_drain(&admin, &id, true).await;
    if r.status().is_success() {
        admin
            .audit(from, "mediaServer.drain", &id, serde_json::Value::Null)
            .await;
    }
    r
}

async fn undrain(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    let r = set_drain(&admin, &id, false).await;
    if r.status().is_success() {
        admin
            .audit(from, "mediaServer.undrain", &id, serde_json::Value::Null)
            .await;
    }
    r
}

/// Removes a record at once (a server known to be gone); a live server registers again with
/// its next heartbeat.
async fn forget_media_server(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    match admin.gateway.registry.get(&id).await {
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no media server {id}")),
        Err(e) => unavailable(e),
        Ok(Some(_)) => match admin.gateway.registry.remove(&id).await {
            Ok(()) => {
                admin
                    .audit(from, "mediaServer.forget", &id, serde_json::Value::Null)
                    .await;
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => unavailable(e),
        },
    }
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
        tracks: Vec<crate::protocol::TrackInfo>,
    },
    Subscription {
        id: String,
        publication: String,
        server: String,
    },
}

async fn channel_view(admin: &Admin, id: &str) -> Result<ChannelView, Response> {
    let presence = &admin.gateway.presence;
    let participants = presence.participants(id).await.map_err(unavailable)?;
    let publications = presence.publications(id).await.map_err(unavailable)?;
    let subscriptions = presence.subscriptions(id).await.map_err(unavailable)?;
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

async fn channels(State(admin): State<Arc<Admin>>) -> Response {
    let names = match admin.gateway.presence.channels().await {
        Ok(n) => n,
        Err(e) => return unavailable(e),
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match channel_view(&admin, &name).await {
            Ok(v) if !v.clients.is_empty() => out.push(v),
            Ok(_) => {}
            Err(r) => return r,
        }
    }
    Json(out).into_response()
}

async fn channel(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    match channel_view(&admin, &id).await {
        Ok(v) if v.clients.is_empty() => {
            problem(StatusCode::NOT_FOUND, format!("no active channel {id}"))
        }
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn kick(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path((channel, participant)): Path<(String, String)>,
) -> Response {
    match admin
        .gateway
        .kick(&channel, &participant, "removed by an administrator")
        .await
    {
        Ok(true) => {
            let detail = serde_json::json!({ "channel": channel });
            admin.audit(from, "client.kick", &participant, detail).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => problem(
            StatusCode::NOT_FOUND,
            format!("no client {participant} in channel {channel}"),
        ),
        Err(e) => problem(e.status(), e.to_string()),
    }
}
