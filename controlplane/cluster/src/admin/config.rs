//! The admin API's configuration endpoints: applications (with secret rotation), their channel
//! configurations, webhooks and SIP mappings, deployments, SIP trunks, and the audit log. Every
//! change is written with its audit row in one transaction by the store; the running servers
//! pick it up on their next refresh. Beside them, the webhooks' delivery log, which is the
//! sending process's.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use switchyard_controlplane::error::Error;
use switchyard_controlplane::webhooks::{self, Delivery};
use switchyard_store::{
    Application, AuditEntry, ChannelConfig, Deployment, RecordedFile, RecordingSession, SipMapping,
    SipTrunk, Webhook,
};

use super::{Admin, Administered};

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
        .route(
            "/applications/{id}/webhooks",
            get(list_webhooks).put(put_webhook).delete(delete_webhook),
        )
        .route(
            "/applications/{id}/webhook-deliveries",
            get(webhook_deliveries),
        )
        .route(
            "/applications/{id}/sip-mappings",
            get(list_sip_mappings)
                .put(put_sip_mapping)
                .delete(delete_sip_mapping),
        )
        .route("/sip/trunks", get(sip_trunks))
        .route(
            "/sip/trunks/{name}",
            get(sip_trunk).put(put_sip_trunk).delete(delete_sip_trunk),
        )
        .route("/deployments", get(deployments))
        .route(
            "/deployments/{id}",
            get(deployment)
                .put(put_deployment)
                .delete(delete_deployment),
        )
        .route("/audit", get(audit))
        .route("/recordings", get(recordings))
}

/// Who made a change, as the audit log records it.
fn actor(from: SocketAddr) -> String {
    format!("admin-api@{}", from.ip())
}

/// The record found, or a 404 naming it.
fn found<T>(what: &str, id: &str, record: Option<T>) -> Result<Json<T>, Error> {
    record
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("no {what} {id:?}")))
}

/// 204 if something was deleted, else a 404 naming it.
fn deleted(what: &str, id: &str, deleted: bool) -> Result<StatusCode, Error> {
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!("no {what} {id:?}")))
    }
}

async fn applications(State(a): State<Arc<Admin>>) -> Result<Json<Vec<Application>>, Error> {
    Ok(Json(a.store.store().applications().await?))
}

async fn application(
    State(a): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<Application>, Error> {
    found("application", &id, a.store.store().application(&id).await?)
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
) -> Result<Json<Application>, Error> {
    let store = a.store.store();
    let created_at = store
        .application(&id)
        .await?
        .map_or_else(now_ms, |e| e.created_at);
    let app = Application {
        id: id.clone(),
        secrets: body.secrets,
        created_at,
    };
    store.put_application(&actor(from), &app).await?;
    found("application", &id, store.application(&id).await?)
}

async fn delete_application(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let gone = a
        .store
        .store()
        .delete_application(&actor(from), &id)
        .await?;
    deleted("application", &id, gone)
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
) -> Result<Json<Application>, Error> {
    let store = a.store.store();
    Ok(Json(
        store.rotate_secret(&actor(from), &id, &body.secret).await?,
    ))
}

async fn retire_secret(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Json(body): Json<SecretBody>,
) -> Result<Json<Application>, Error> {
    let store = a.store.store();
    Ok(Json(
        store.retire_secret(&actor(from), &id, &body.secret).await?,
    ))
}

async fn channel_configs(
    State(a): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ChannelConfig>>, Error> {
    Ok(Json(a.store.store().channel_configs_of(&id).await?))
}

async fn put_channel_config(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Json(mut config): Json<ChannelConfig>,
) -> Result<Json<ChannelConfig>, Error> {
    config.application_id = id;
    let store = a.store.store();
    Ok(Json(store.put_channel_config(&actor(from), &config).await?))
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
) -> Result<StatusCode, Error> {
    let gone = a
        .store
        .store()
        .delete_channel_config(&actor(from), &id, &q.pattern)
        .await?;
    deleted("channel configuration", &q.pattern, gone)
}

async fn list_webhooks(
    State(a): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Webhook>>, Error> {
    Ok(Json(a.store.store().webhooks_of(&id).await?))
}

/// Creates or replaces the application's webhook named in the body (by its URL when it has
/// no name). A body that is not a webhook's JSON is a 400 saying why.
async fn put_webhook(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    body: Result<Json<Webhook>, JsonRejection>,
) -> Result<Json<Webhook>, Error> {
    let Json(mut webhook) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    webhook.application_id = id;
    let store = a.store.store();
    Ok(Json(store.put_webhook(&actor(from), &webhook).await?))
}

#[derive(Deserialize)]
struct NameQuery {
    name: String,
}

async fn delete_webhook(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Query<NameQuery>,
) -> Result<StatusCode, Error> {
    let gone = a
        .store
        .store()
        .delete_webhook(&actor(from), &id, &q.name)
        .await?;
    deleted("webhook", &q.name, gone)
}

/// The application's latest webhook deliveries, newest first: all-in-one's, which sends them
/// (see `switchyard_controlplane::webhooks`: kept in memory, the last
/// [`webhooks::LOG_LEN`]).
async fn webhook_deliveries(
    State(a): State<Arc<Admin>>,
    Path(id): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<Delivery>>, Error> {
    let limit = usize::try_from(q.limit).map_or(webhooks::LOG_LEN, |l| l.min(webhooks::LOG_LEN));
    match &a.administered {
        Administered::AllInOne(one) => Ok(Json(one.state.webhooks.deliveries(&id, limit))),
        Administered::Cluster(_) => Err(Error::BadRequest(
            "webhooks are sent by all-in-one only so far; a gateway has no delivery log".into(),
        )),
    }
}

async fn list_sip_mappings(
    State(a): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<SipMapping>>, Error> {
    Ok(Json(a.store.store().sip_mappings_of(&id).await?))
}

/// Creates or replaces the application's SIP mapping named in the body. A body that is not a
/// mapping's JSON (an unknown `kind`, say) is a 400 saying why.
async fn put_sip_mapping(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    body: Result<Json<SipMapping>, JsonRejection>,
) -> Result<Json<SipMapping>, Error> {
    let Json(mut mapping) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    mapping.application_id = id;
    let store = a.store.store();
    Ok(Json(store.put_sip_mapping(&actor(from), &mapping).await?))
}

async fn delete_sip_mapping(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Query<NameQuery>,
) -> Result<StatusCode, Error> {
    let gone = a
        .store
        .store()
        .delete_sip_mapping(&actor(from), &id, &q.name)
        .await?;
    deleted("SIP mapping", &q.name, gone)
}

// SIP trunks are shown with their passwords masked, as deployments' TURN secrets are: only the
// SIP connector needs them, and it reads them from the store.

async fn sip_trunks(State(a): State<Arc<Admin>>) -> Result<Json<Vec<SipTrunk>>, Error> {
    let all = a.store.store().sip_trunks().await?;
    Ok(Json(all.iter().map(SipTrunk::masked).collect()))
}

async fn sip_trunk(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> Result<Json<SipTrunk>, Error> {
    let stored = a.store.store().sip_trunk(&name).await?;
    found("SIP trunk", &name, stored.as_ref().map(SipTrunk::masked))
}

/// Creates or replaces a trunk; without a password, or with `"****"`, the stored one stays.
/// A body that is not a trunk's JSON (an unknown `transport`, say) is a 400 saying why.
async fn put_sip_trunk(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    body: Result<Json<SipTrunk>, JsonRejection>,
) -> Result<Json<SipTrunk>, Error> {
    let Json(mut trunk) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    trunk.name = name;
    let stored = a.store.store().put_sip_trunk(&actor(from), &trunk).await?;
    Ok(Json(stored.masked()))
}

async fn delete_sip_trunk(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    let gone = a
        .store
        .store()
        .delete_sip_trunk(&actor(from), &name)
        .await?;
    deleted("SIP trunk", &name, gone)
}

// Deployments are shown with their TURN secrets masked: unlike an application's secrets,
// which token issuers need, nobody but the servers needs a TURN secret, and they get it from
// the cluster API.

async fn deployments(State(a): State<Arc<Admin>>) -> Result<Json<Vec<Deployment>>, Error> {
    let all = a.store.store().deployments().await?;
    Ok(Json(all.iter().map(Deployment::masked).collect()))
}

async fn deployment(
    State(a): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, Error> {
    let stored = a.store.store().deployment(&id).await?;
    found("deployment", &id, stored.as_ref().map(Deployment::masked))
}

/// Creates or replaces a deployment; TURN secrets sent back masked keep their stored values.
async fn put_deployment(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Json(mut d): Json<Deployment>,
) -> Result<Json<Deployment>, Error> {
    d.id = id.clone();
    let store = a.store.store();
    d.unmask(store.deployment(&id).await?.as_ref());
    store.put_deployment(&actor(from), &d).await?;
    let stored = store.deployment(&id).await?;
    found("deployment", &id, stored.as_ref().map(Deployment::masked))
}

async fn delete_deployment(
    State(a): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let gone = a.store.store().delete_deployment(&actor(from), &id).await?;
    deleted("deployment", &id, gone)
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

async fn audit(
    State(a): State<Arc<Admin>>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, Error> {
    Ok(Json(a.store.store().audit_log(q.limit.min(1000)).await?))
}

#[derive(Deserialize)]
struct RecordingsQuery {
    channel: Option<String>,
    #[serde(default = "default_limit")]
    limit: u32,
}

/// A session with its files, as the recording database has them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionView {
    #[serde(flatten)]
    session: RecordingSession,
    files: Vec<RecordedFile>,
}

/// The recording database's sessions, newest first, each with its files (the monitor writes
/// them into this store unless DEPLOYMENTS:0:RECORDINGMANAGEMENT:POSTGRESURI names another).
async fn recordings(
    State(a): State<Arc<Admin>>,
    Query(q): Query<RecordingsQuery>,
) -> Result<Json<Vec<SessionView>>, Error> {
    let store = a.store.store();
    let sessions = store
        .recording_sessions(q.channel.as_deref(), q.limit.min(1000))
        .await?;
    let mut views = Vec::with_capacity(sessions.len());
    for session in sessions {
        let files = store.recorded_files(&session.id).await?;
        views.push(SessionView { session, files });
    }
    Ok(Json(views))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ok: every unwrap() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::{Value, json};
    use switchyard_controlplane::allowlist::AllowList;
    use tower::ServiceExt;

    use super::super::{Admin, Administered, router};
    use super::*;
    use crate::gateway::tests::gateway;

    const KEY: &str = "admin-key-0123456789";

    /// The whole admin API of a gateway on an in-memory store, and that store.
    async fn admin_api() -> (Router, switchyard_store::Store) {
        let g = gateway("g1").await;
        let store = g.store.store().clone();
        let admin = Admin::new(
            Administered::Cluster(g.clone()),
            g.store.clone(),
            AllowList::parse("127.0.0.1/32").unwrap(),
            vec![KEY.into()],
        );
        (router(Arc::new(admin)), store)
    }

    /// `method` on the admin API with the key and a JSON body: the status and the body, as
    /// JSON and as text.
    async fn call(
        api: &Router,
        method: &str,
        path: &str,
        body: &str,
    ) -> (StatusCode, Value, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", super::super::PREFIX))
            .header("x-api-key", KEY)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(from));
        let response = api.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        )
    }

    #[tokio::test]
    async fn sip_trunks_with_their_passwords_masked() {
        let (api, store) = admin_api().await;
        let body = r#"{"domain":"sip.example.com","register":true,"username":"1001",
                       "password":"pw-secret-1","canTerminate":true}"#;
        let (status, trunk, _) = call(&api, "PUT", "/sip/trunks/main", body).await;
        assert_eq!(status, StatusCode::OK, "{trunk}");
        assert_eq!(trunk["name"], "main");
        assert_eq!(trunk["password"], "****");
        assert_eq!(
            (&trunk["transport"], &trunk["enabled"]),
            (&json!("udp"), &json!(true))
        );
        let (status, list, text) = call(&api, "GET", "/sip/trunks", "").await;
        assert_eq!(
            (status, list.as_array().map(Vec::len)),
            (StatusCode::OK, Some(1))
        );
        assert!(!text.contains("pw-secret"), "{text}");
        // Written back as read, with a change: the password stays.
        let mut changed = trunk.clone();
        changed["transport"] = json!("tls");
        let (status, trunk, _) = call(&api, "PUT", "/sip/trunks/main", &changed.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{trunk}");
        assert_eq!(trunk["transport"], "tls");
        let (status, one, text) = call(&api, "GET", "/sip/trunks/main", "").await;
        assert_eq!((status, &one["password"]), (StatusCode::OK, &json!("****")));
        assert!(!text.contains("pw-secret"), "{text}");
        let stored = store.sip_trunk("main").await.unwrap().unwrap();
        assert_eq!(stored.password.unwrap().expose(), "pw-secret-1");

        for (bad, why) in [
            ("{not json", ""),
            (r#"{"domain":"sip.example.com","transport":"sctp"}"#, "sctp"),
            (r#"{"domain":"sip:sip.example.com"}"#, "scheme"),
            (
                r#"{"domain":"sip.example.com","register":true}"#,
                "username",
            ),
            (r#"{"transport":"udp"}"#, "domain"),
        ] {
            let (status, body, _) = call(&api, "PUT", "/sip/trunks/bad", bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
            let error = body["error"].as_str().unwrap();
            assert!(error.contains(why), "{bad}: {error}");
        }
        let (status, ..) = call(&api, "GET", "/sip/trunks/bad", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, log, text) = call(&api, "GET", "/audit", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(log[0]["action"], "sipTrunk.put");
        assert!(!text.contains("pw-secret"), "{text}");

        let (status, ..) = call(&api, "DELETE", "/sip/trunks/main", "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, ..) = call(&api, "DELETE", "/sip/trunks/main", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn sip_mappings_per_application() {
        let (api, _) = admin_api().await;
        let app = r#"{"secrets":["a-long-shared-secret"]}"#;
        let (status, ..) = call(&api, "PUT", "/applications/acme", app).await;
        assert_eq!(status, StatusCode::OK);
        let path = "/applications/acme/sip-mappings";
        let rooms = r#"{"name":"rooms","kind":"header","header":"X-Room","pattern":"*",
                        "channelId":"{match}"}"#;
        let (status, m, _) = call(&api, "PUT", path, rooms).await;
        assert_eq!(status, StatusCode::OK, "{m}");
        assert_eq!(
            (&m["applicationId"], &m["position"]),
            (&json!("acme"), &json!(0))
        );
        let sales = r#"{"name":"sales","position":1,"pattern":"+1555*","channelId":"sales"}"#;
        let (status, m, _) = call(&api, "PUT", path, sales).await;
        assert_eq!((status, &m["kind"]), (StatusCode::OK, &json!("number")));
        let (status, list, _) = call(&api, "GET", path, "").await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["name"].as_str())
            .collect();
        assert_eq!(names, ["rooms", "sales"]);

        for (bad, why) in [
            (
                r#"{"name":"h","kind":"header","pattern":"*","channelId":"c"}"#,
                "header",
            ),
            (
                r#"{"name":"f","kind":"fax","pattern":"*","channelId":"c"}"#,
                "fax",
            ),
            (
                r#"{"name":"r","pattern":"^(","channelId":"c"}"#,
                "regular expression",
            ),
            (r#"{"name":"n","pattern":"*"}"#, "channelId"),
        ] {
            let (status, body, _) = call(&api, "PUT", path, bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
            let error = body["error"].as_str().unwrap();
            assert!(error.contains(why), "{bad}: {error}");
        }
        let (status, ..) = call(&api, "PUT", "/applications/nobody/sip-mappings", sales).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, ..) = call(&api, "DELETE", &format!("{path}?name=rooms"), "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, ..) = call(&api, "DELETE", &format!("{path}?name=rooms"), "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, list, _) = call(&api, "GET", path, "").await;
        assert_eq!(list.as_array().map(Vec::len), Some(1));

        let (_, doc, _) = call(&api, "GET", "/openapi.json", "").await;
        for documented in [
            "/applications/{id}/sip-mappings",
            "/sip/trunks",
            "/sip/trunks/{name}",
        ] {
            assert!(doc["paths"][documented].is_object(), "{documented}");
        }
    }
}
