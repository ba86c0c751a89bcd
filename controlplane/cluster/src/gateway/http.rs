//! What a gateway serves on its HTTP port besides signalling and WHIP/WHEP: `/ready` for load
//! balancers, `/metrics`, and the cluster API media servers call (heartbeats, their removal,
//! publications they ended, their deployment's settings, the list of servers), which answers
//! only `INTERNAL:IPADDRESSES`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use switchyard_controlplane::allowlist::{Guarded, guard};
use switchyard_controlplane::error::Error;
use switchyard_controlplane::metrics::metric;
use switchyard_controlplane::protocol::ServerMessage;
use switchyard_controlplane::server::signalling_routes;
use switchyard_controlplane::whip;
use switchyard_store::{Deployment, Health};

use super::{Gateway, SERVER_TTL};
use crate::api::{self, Ended, HeartbeatReply, Relayed};
use crate::registry::{MediaServerRecord, MediaServerRegistry};
use crate::signing;
use crate::sip_connectors::api::PhoneDigit;
use crate::sip_connectors::{ConnectorRecord, summed};
use switchyard_controlplane::phones::DTMF_DIGITS;

/// Everything a gateway serves on its HTTP port: signalling, WHIP and WHEP, the demo page,
/// `/ready`, `/metrics`, and the cluster API for media servers.
pub fn router(gateway: Arc<Gateway>) -> Router {
    signalling_routes::<Gateway>()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(gateway.clone())
        .merge(whip::routes(gateway.clone()))
        .merge(cluster_router(gateway))
}

/// The cluster API media servers call.
fn cluster_router(gateway: Arc<Gateway>) -> Router {
    let internal = Arc::new(Guarded {
        api: "the cluster API",
        setting: "INTERNAL:IPADDRESSES",
        allow: gateway.internal.clone(),
    });
    let signed = Arc::new(signing::Signed {
        secret: gateway.secret.clone(),
        refused: {
            let g = gateway.clone();
            Box::new(move || g.metrics.auth_failure())
        },
    });
    let path = |p: &str| format!("{}{p}", api::PREFIX);
    Router::new()
        .route(&path("/media-servers"), put(heartbeat).get(list))
        .route(&path("/media-servers/remove"), post(remove))
        .route(&path("/ended"), post(ended))
        .route(&path("/relay"), post(relay))
        .route(&path("/deployments/{id}"), get(deployment))
        .route(
            &path("/sip-connectors"),
            put(connector_heartbeat).get(connectors),
        )
        .route(&path("/sip-connectors/remove"), post(remove_connector))
        .route(&path("/sip-connectors/digit"), post(phone_digit))
        .route_layer(middleware::from_fn_with_state(signed, signing::guard))
        .route_layer(middleware::from_fn_with_state(internal, guard))
        .with_state(gateway)
}

async fn heartbeat(
    State(g): State<Arc<Gateway>>,
    Json(record): Json<MediaServerRecord>,
) -> Result<Json<HeartbeatReply>, Error> {
    let known = matches!(g.registry.get(&record.id).await, Ok(Some(_)));
    g.registry.heartbeat(&record, SERVER_TTL).await?;
    if !known {
        tracing::info!(id = %record.id, region = %record.region, cluster = %record.cluster_address, public = ?record.public_ip_address, "media server registered");
    }
    Ok(Json(HeartbeatReply {
        ttl_ms: u64::try_from(SERVER_TTL.as_millis()).unwrap_or(u64::MAX),
    }))
}

async fn connector_heartbeat(
    State(g): State<Arc<Gateway>>,
    Json(record): Json<ConnectorRecord>,
) -> Result<Json<HeartbeatReply>, Error> {
    let known = g
        .registry
        .connectors()
        .await
        .is_ok_and(|all| all.iter().any(|c| c.id == record.id));
    g.registry.connector_heartbeat(&record, SERVER_TTL).await?;
    if !known {
        tracing::info!(id = %record.id, api = %record.api_url, sip = %record.sip_address, "SIP connector registered");
    }
    Ok(Json(HeartbeatReply {
        ttl_ms: u64::try_from(SERVER_TTL.as_millis()).unwrap_or(u64::MAX),
    }))
}

async fn connectors(State(g): State<Arc<Gateway>>) -> Result<Json<Vec<ConnectorRecord>>, Error> {
    let mut connectors = g.registry.connectors().await?;
    connectors.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(connectors))
}

async fn remove_connector(
    State(g): State<Arc<Gateway>>,
    Json(r): Json<RemoveRequest>,
) -> Result<StatusCode, Error> {
    g.registry.remove_connector(&r.id).await?;
    tracing::info!(id = %r.id, "SIP connector unregistered");
    Ok(StatusCode::NO_CONTENT)
}

/// A caller's key press, from a connector: every participant of the channel hears it as a
/// `dtmf` event. Only a digit of RFC 4733's sixteen passes.
async fn phone_digit(State(g): State<Arc<Gateway>>, Json(d): Json<PhoneDigit>) -> StatusCode {
    if !DTMF_DIGITS.contains(d.digit) {
        return StatusCode::BAD_REQUEST;
    }
    let message = ServerMessage::Dtmf {
        from: d.from,
        digit: d.digit.to_string(),
    };
    g.announce(&d.channel, None, message).await;
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct RemoveRequest {
    id: String,
}

async fn remove(
    State(g): State<Arc<Gateway>>,
    Json(r): Json<RemoveRequest>,
) -> Result<StatusCode, Error> {
    g.registry.remove(&r.id).await?;
    tracing::info!(id = %r.id, "media server unregistered");
    Ok(StatusCode::NO_CONTENT)
}

async fn ended(State(g): State<Arc<Gateway>>, Json(r): Json<Ended>) -> StatusCode {
    let current = g.presence.publication(&r.channel, &r.publication).await;
    if let Ok(Some(entry)) = current
        && entry.server == r.server
        && g.end_publication(&r.channel, &r.participant, &r.publication, true)
            .await
    {
        tracing::info!(channel = %r.channel, publication = %r.publication, server = %r.server, "the media server ended a publication");
    }
    StatusCode::NO_CONTENT
}

/// A media server's message for participants, passed on only where it names a publication
/// that server carries: a speaking change to the channel (or with no publication: the dominant
/// speaker left), `layers` to the publication's publisher. Nothing else passes.
async fn relay(State(g): State<Arc<Gateway>>, Json(r): Json<Relayed>) -> StatusCode {
    let (publication, to_publisher) = match &r.message {
        ServerMessage::Speaking { publication, .. } => (Some(publication), false),
        ServerMessage::DominantSpeaker { publication, .. } => (publication.as_ref(), false),
        ServerMessage::Layers { publication, .. } => (Some(publication), true),
        _ => return StatusCode::BAD_REQUEST,
    };
    let mut publisher = None;
    if let Some(publication) = publication {
        match g.presence.publication(&r.channel, publication).await {
            Ok(Some(entry)) if entry.server == r.server => publisher = Some(entry.participant),
            _ => return StatusCode::NO_CONTENT,
        }
    }
    match publisher {
        Some(to) if to_publisher => {
            if let Err(e) = g.send_to(&r.channel, &to, r.message).await {
                tracing::debug!(channel = %r.channel, participant = %to, "layers not told: {e}");
            }
        }
        _ => g.announce(&r.channel, None, r.message).await,
    }
    StatusCode::NO_CONTENT
}

/// A deployment's settings for a starting media server (STUN servers, capacity thresholds,
/// the TURN secrets in full: the media server's TURN checks credentials with them), from the
/// configuration as last read.
async fn deployment(
    State(g): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, Error> {
    g.store
        .deployment(&id)
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("no deployment {id:?} is configured")))
}

async fn list(State(g): State<Arc<Gateway>>) -> Result<Json<Vec<MediaServerRecord>>, Error> {
    let mut servers = g.registry.list().await?;
    servers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(servers))
}

/// 200 when the gateway can place media (the registry answers and lists a server) with current
/// configuration, else 503 with what is wrong; load balancers take a gateway out of rotation on
/// 503. With the configuration database down, sessions still work from the cached
/// configuration, and this says `degraded`. A probe's answer, not an error: plain text.
async fn ready(State(g): State<Arc<Gateway>>) -> Response {
    if let Health::Degraded(reason) = g.store.health() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "degraded: configuration store: {reason} (serving the configuration read before)\n"
            ),
        )
            .into_response();
    }
    match g.registry.list().await {
        Ok(servers) if servers.iter().any(|s| s.available && !s.draining) => {
            (StatusCode::OK, "ready\n").into_response()
        }
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded: no media server is registered and accepting sessions\n",
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: media server registry: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(g): State<Arc<Gateway>>) -> Response {
    let mut out = String::new();
    g.metrics.render(&mut out);
    metric(
        &mut out,
        "switchyard_gateway_clients",
        "gauge",
        "Signalling clients connected to this gateway.",
        g.client_count() as u64,
    );
    let servers = g.registry.list().await.map(|s| s.len()).unwrap_or(0);
    metric(
        &mut out,
        "switchyard_media_servers",
        "gauge",
        "Media servers in the registry.",
        servers as u64,
    );
    let connectors = g.sip_connectors().await;
    metric(
        &mut out,
        "switchyard_sip_connectors",
        "gauge",
        "SIP connectors in the registry.",
        connectors.len() as u64,
    );
    // The connectors' own counters as of their last heartbeats, summed.
    for c in summed(&connectors) {
        let kind = if c.name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        metric(
            &mut out,
            &format!("switchyard_sip_{}", c.name),
            kind,
            &c.help,
            c.value,
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::tests::{gateway, server};
    use crate::testing::call;

    #[tokio::test]
    async fn media_servers_register_from_inside_only() {
        let g = gateway("g1").await;
        let router = router(g.clone());
        let record = serde_json::to_string(&server("ms1", "a")).unwrap();
        let (status, body) = call(
            &router,
            "10.9.9.9:1",
            "PUT",
            "/cluster/v1/media-servers",
            Some(record.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            body.contains("10.9.9.9 may not use the cluster API"),
            "{body}"
        );

        let (status, body) = call(
            &router,
            "127.0.0.1:1",
            "PUT",
            "/cluster/v1/media-servers",
            Some(record),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, r#"{"ttlMs":6000}"#)
        );
        let (status, body) = call(
            &router,
            "127.0.0.1:1",
            "GET",
            "/cluster/v1/media-servers",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#""id":"ms1""#), "{body}");
        assert_eq!(
            call(&router, "127.0.0.1:1", "GET", "/ready", None).await,
            (StatusCode::OK, "ready\n".into())
        );

        let (status, _) = call(
            &router,
            "127.0.0.1:1",
            "POST",
            "/cluster/v1/media-servers/remove",
            Some(r#"{"id":"ms1"}"#.into()),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(g.registry.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn sip_connectors_register_expire_and_pass_key_presses_on() {
        use crate::sip_connectors::tests::connector;
        use switchyard_controlplane::channels::Channels;
        use tokio::sync::mpsc;
        let g = gateway("g1").await;
        let router = router(g.clone());
        let record = serde_json::to_string(&connector("sip1", 2)).unwrap();
        let (status, _) = call(
            &router,
            "10.9.9.9:1",
            "PUT",
            "/cluster/v1/sip-connectors",
            Some(record.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = call(
            &router,
            "127.0.0.1:1",
            "PUT",
            "/cluster/v1/sip-connectors",
            Some(record),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, r#"{"ttlMs":6000}"#)
        );
        let (_, body) = call(
            &router,
            "127.0.0.1:1",
            "GET",
            "/cluster/v1/sip-connectors",
            None,
        )
        .await;
        assert!(body.contains(r#""id":"sip1""#), "{body}");
        let (_, metrics) = call(&router, "127.0.0.1:1", "GET", "/metrics", None).await;
        assert!(
            metrics.contains("switchyard_sip_connectors 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("switchyard_sip_calls_in_total 2\n"),
            "{metrics}"
        );

        // A key press reaches the channel's participants; a non-digit is refused.
        let (tx, mut rx) = mpsc::unbounded_channel();
        g.join("line", "app", "alice", None, tx, None)
            .await
            .unwrap();
        let digit = r##"{"channel":"line","from":"sip:100","digit":"#"}"##.to_string();
        let (status, _) = call(
            &router,
            "127.0.0.1:1",
            "POST",
            "/cluster/v1/sip-connectors/digit",
            Some(digit),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            rx.recv().await,
            Some(ServerMessage::Dtmf {
                from: "sip:100".into(),
                digit: "#".into()
            })
        );
        let bad = r#"{"channel":"line","from":"sip:100","digit":"x"}"#.to_string();
        let (status, _) = call(
            &router,
            "127.0.0.1:1",
            "POST",
            "/cluster/v1/sip-connectors/digit",
            Some(bad),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Its API is not reachable: digits find no call, dial-out and hang-up are unavailable.
        let e = g.send_digits("line", None, "1").await.unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        let body = crate::sip_connectors::api::DialBody {
            channel: "line".into(),
            number: "100".into(),
            trunk: None,
            caller_id: None,
            application: None,
        };
        let e = g.dial(&body).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        // A hang-up the connector could not be asked about is its error, not "no such call".
        let e = g.hang_up("line", "0123456789abcdef").await.unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e}");

        let (status, _) = call(
            &router,
            "127.0.0.1:1",
            "POST",
            "/cluster/v1/sip-connectors/remove",
            Some(r#"{"id":"sip1"}"#.into()),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let e = g.dial(&body).await.unwrap_err();
        assert_eq!(e.to_string(), "no SIP connector is registered");
        // With none registered, no connector has the call.
        assert!(!g.hang_up("line", "0123456789abcdef").await.unwrap());
    }

    #[tokio::test]
    async fn errors_are_json_with_the_status_of_their_kind() {
        let g = gateway("g1").await;
        let router = router(g);
        let (status, body) = call(
            &router,
            "127.0.0.1:1",
            "GET",
            "/cluster/v1/deployments/nowhere",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            r#"{"error":"no deployment \"nowhere\" is configured"}"#
        );
        // The health probe is not an API: it answers anyone, in text.
        let (status, body) = call(&router, "10.9.9.9:1", "GET", "/ready", None).await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "degraded: no media server is registered and accepting sessions\n"
            )
        );
    }
}
