//! The admin API's configuration endpoints: applications (with secret rotation), their channel
//! configurations, deployments, and the audit log. Every change is written with its audit row
//! in one transaction by the store; the running servers pick it up on their next refresh.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{Admin, problem};
use crate::store::{Application, ChannelConfig, Deployment, StoreError};

pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/applications", get(applications))
        .route(
            "/applications/{id}",
            get(application)
                .put(put_application)
                .delete(delete_application),
        )
        .route("/applications/{id}/secrets", post(rotate_secret))
        .route("/applications/{id}/secrets/retire", post(retire_secret))
        .route(
            "/applications/{id}/channel-configs",
            get(channel_configs)
                .put(put_channel_config)
                .delete(delete_channel_config),
        )
        .route("/deployments", get(deployments))
        .route(
            "/deployments/{id}",
            get(deployment)
                .put(put_deployment)
                .delete(delete_deployment),
        )
        .route("/audit", get(audit))
}

/// Who made a change, as the audit log records it.
fn actor(from: SocketAddr) -> String {
    format!("admin-api@{}", from.ip())
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Invalid(e) => problem(StatusCode::BAD_REQUEST, e.to_string()),
        StoreError::NotFound { .. } => problem(StatusCode::NOT_FOUND, e.to_string()),
        e => problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The value as JSON, or the store's error.
fn json<T: serde::Serialize>(r: Result<T, StoreError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

fn found<T: serde::Serialize>(what: &str, id: &str, r: Result<Option<T>, StoreError>) -> Response {
    match r {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no {what} {id:?}")),
        Err(e) => store_error(e),
    }
}

fn deleted(what: &str, id: &str, r: Result<bool, StoreError>) -> Response {
    match r {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => problem(StatusCode::NOT_FOUND, format!("no {what} {id:?}")),
        Err(e) => store_error(e),
    }
}

async fn applications(State(a): State<Arc<Admin>>) -> Response {
    json(a.store.store().applications().await)
}

async fn application(State(a): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    found("application", &id, a.store.store().application(&id).await)
}

#[derive(Deserialize)]
struct ApplicationBody {
    secrets: Vec<String>,
}

async fn put_application(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Json(body): Json<ApplicationBody>,
) -> Response {
    let store = a.store.store();
    let created_at = match store.application(&id).await {
        Ok(existing) => existing.map_or_else(now_ms, |e| e.created_at),
        Err(e) => return store_error(e),
    };
    let app = Application {
        id: id.clone(),
        secrets: body.secrets,
        created_at,
    };
    match store.put_application(&actor(from), &app).await {
        Ok(()) => found("application", &id, store.application(&id).await),
        Err(e) => store_error(e),
    }
}

async fn delete_application(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    deleted(
        "application",
        &id,
        a.store.store().delete_application(&actor(from), &id).await,
    )
}

#[derive(Deserialize)]
struct SecretBody {
    secret: String,
}

async fn rotate_secret(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Json(body): Json<SecretBody>,
) -> Response {
    json(
        a.store
            .store()
            .rotate_secret(&actor(from), &id, &body.secret)
            .await,
    )
}

async fn retire_secret(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Json(body): Json<SecretBody>,
) -> Response {
    json(
        a.store
            .store()
            .retire_secret(&actor(from), &id, &body.secret)
            .await,
    )
}

async fn channel_configs(State(a): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    json(a.store.store().channel_configs_of(&id).await)
}

async fn put_channel_config(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Json(mut config): Json<ChannelConfig>,
) -> Response {
    config.application_id = id;
    json(
        a.store
            .store()
            .put_channel_config(&actor(from), &config)
            .await,
    )
}

#[derive(Deserialize)]
struct PatternQuery {
    pattern: String,
}

async fn delete_channel_config(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Query<PatternQuery>,
) -> Response {
    let r = a
        .store
        .store()
        .delete_channel_config(&actor(from), &id, &q.pattern)
        .await;
    deleted("channel configuration", &q.pattern, r)
}

async fn deployments(State(a): State<Arc<Admin>>) -> Response {
    json(a.store.store().deployments().await)
}

async fn deployment(State(a): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    found("deployment", &id, a.store.store().deployment(&id).await)
}

async fn put_deployment(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Json(mut d): Json<Deployment>,
) -> Response {
    d.id = id.clone();
    let store = a.store.store();
    match store.put_deployment(&actor(from), &d).await {
        Ok(_) => found("deployment", &id, store.deployment(&id).await),
        Err(e) => store_error(e),
    }
}

async fn delete_deployment(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    deleted(
        "deployment",
        &id,
        a.store.store().delete_deployment(&actor(from), &id).await,
    )
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

async fn audit(State(a): State<Arc<Admin>>, Query(q): Query<AuditQuery>) -> Response {
    json(a.store.store().audit_log(q.limit.min(1000)).await)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
