//! WHIP (RFC 9725) ingest at `/whip/{channel}` and WHEP egress at `/whep/{channel}`: one HTTP
//! POST of an SDP offer, answered with `201 Created`, the answer and a resource URL to DELETE.
//!
//! Each session is a participant of its own in the channel, so SDK clients see a WHIP publisher
//! like any other. The server is ICE-lite and puts its candidates in the answer, so trickle ICE
//! (PATCH) is not needed and answered 405.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::session::{AppState, Error, Rules};
use crate::token::{Claims, TokenError};

pub async fn whip(
    State(state): State<Arc<AppState>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    post(&state, "whip", &channel, &headers, &offer).await
}

pub async fn whep(
    State(state): State<Arc<AppState>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    post(&state, "whep", &channel, &headers, &offer).await
}

async fn post(
    state: &AppState,
    kind: &str,
    channel: &str,
    headers: &HeaderMap,
    offer: &str,
) -> Response {
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
        });
    if !is_sdp {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/sdp",
        );
    }
    let claims = match authorize(state, headers, channel) {
        Ok(c) => c,
        Err(e) => return unauthorized(state, &e),
    };
    let allowed = if kind == "whip" {
        claims.may_publish(channel)
    } else {
        claims.may_subscribe(channel)
    };
    if let Err(e) = allowed {
        return unauthorized(state, &e);
    }
    let (participant, _) = state.join(channel, &claims.user_id, None);
    let result = if kind == "whip" {
        let config = state
            .store
            .as_ref()
            .and_then(|c| c.channel_config(&claims.application_id, channel));
        match Rules::of(config.as_ref()) {
            Ok(rules) => state.publish(channel, &participant, offer, &rules).await,
            Err(e) => Err(e),
        }
    } else {
        state.subscribe(channel, &participant, None, offer).await
    };
    match result {
        Ok((_, answer)) => {
            let location = format!("/{kind}/{channel}/{participant}");
            let mut response = (StatusCode::CREATED, answer).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            response
        }
        Err(e) => {
            state.leave(channel, &participant);
            failure(state, &e)
        }
    }
}

/// `DELETE` on a session's resource URL ends it (with the same token that made it).
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path((channel, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&state, &headers, &channel) {
        return unauthorized(&state, &e);
    }
    if state.leave(&channel, &resource) {
        text(StatusCode::OK, "session ended")
    } else {
        text(StatusCode::NOT_FOUND, "no such session")
    }
}

/// Trickle ICE and ICE restarts are not supported: the answer already has every candidate.
pub async fn patch() -> Response {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not supported; all candidates are in the answer",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE"));
    r
}

fn authorize(state: &AppState, headers: &HeaderMap, channel: &str) -> Result<Claims, TokenError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| TokenError::Malformed("missing Authorization: Bearer <token>".into()))?;
    let claims = state.applications.validate(token.trim())?;
    claims.channel(channel)?;
    Ok(claims)
}

fn unauthorized(state: &AppState, e: &TokenError) -> Response {
    state.metrics.auth_failure();
    let mut r = text(StatusCode::UNAUTHORIZED, &e.to_string());
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn failure(state: &AppState, e: &Error) -> Response {
    state.metrics.signalling_error(e.metric());
    tracing::info!("WHIP/WHEP request refused: {e}");
    text(e.status(), &e.to_string())
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{body}\n"),
    )
        .into_response()
}
