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

use crate::error::Error;
use crate::ice_servers::{IceServer, link_headers};
use crate::rules::Rules;
use crate::session::AppState;
use crate::token::{Claims, TokenError};

pub async fn whip(
    State(state): State<Arc<AppState>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    respond(
        &state,
        post(&state, "whip", &channel, &headers, &offer).await,
    )
}

pub async fn whep(
    State(state): State<Arc<AppState>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    respond(
        &state,
        post(&state, "whep", &channel, &headers, &offer).await,
    )
}

/// A WHIP/WHEP session's answer: the SDP, the resource path, and the ICE servers for `Link`.
struct Answer {
    sdp: String,
    location: String,
    ice_servers: Vec<IceServer>,
}

/// `OPTIONS` on a WHIP or WHEP endpoint (not a CORS preflight, which the CORS layer answers):
/// `204` with `Accept-Post`, and, for a token valid for the channel, the ICE servers as `Link`
/// headers, so a client that must relay (a relay-only policy) knows its TURN servers before it
/// makes the offer; the `201` carries them too, for clients that read them there. Without a
/// valid token: no ICE servers, and no error. Every other request passes through.
pub async fn options(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let channel = path
        .strip_prefix("/whip/")
        .or_else(|| path.strip_prefix("/whep/"))
        .filter(|c| !c.is_empty() && !c.contains('/'));
    let preflight = request
        .headers()
        .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let (Some(channel), true, false) = (
        channel,
        request.method() == axum::http::Method::OPTIONS,
        preflight,
    ) else {
        return next.run(request).await;
    };
    let channel = channel.to_string();
    let headers = request.headers().clone();
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(
        header::HeaderName::from_static("accept-post"),
        HeaderValue::from_static("application/sdp"),
    );
    let servers = match (&state.turn, authorize(&state, &headers, &channel)) {
        (Some(turn), Ok(claims)) => turn.ice_servers(&claims.user_id),
        _ => Vec::new(),
    };
    for link in link_headers(&servers) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    response
}

/// Joins a participant of its own for the session and answers its offer.
async fn post(
    state: &AppState,
    kind: &str,
    channel: &str,
    headers: &HeaderMap,
    offer: &str,
) -> Result<Answer, Error> {
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
        });
    if !is_sdp {
        return Err(Error::UnsupportedMediaType(
            "expected Content-Type: application/sdp",
        ));
    }
    let claims = authorize(state, headers, channel)?;
    if kind == "whip" {
        claims.may_publish(channel)?;
    } else {
        claims.may_subscribe(channel)?;
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
        Ok((_, answer)) => Ok(Answer {
            sdp: answer,
            location: format!("/{kind}/{channel}/{participant}"),
            ice_servers: state
                .turn
                .as_ref()
                .map(|t| t.ice_servers(&claims.user_id))
                .unwrap_or_default(),
        }),
        Err(e) => {
            state.leave(channel, &participant);
            Err(e)
        }
    }
}

/// `201 Created` with the answer, the resource URL and the ICE servers as `Link` headers
/// (RFC 9725 section 4.6), or the refusal as text, counted.
fn respond(state: &AppState, result: Result<Answer, Error>) -> Response {
    match result {
        Ok(Answer {
            sdp,
            location,
            ice_servers,
        }) => {
            let mut response = (StatusCode::CREATED, sdp).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            for link in link_headers(&ice_servers) {
                if let Ok(v) = HeaderValue::from_str(&link) {
                    h.append(header::LINK, v);
                }
            }
            response
        }
        Err(e) => refuse(state, e),
    }
}

/// The refusal as text (see [`Error::into_text_response`]): a bad token counts as an
/// authentication failure, anything after it as a signalling error.
fn refuse(state: &AppState, e: Error) -> Response {
    match &e {
        Error::Unauthorized(_) => state.metrics.auth_failure(),
        Error::UnsupportedMediaType(_) => {}
        e => {
            state.metrics.signalling_error(e.metric());
            tracing::info!("WHIP/WHEP request refused: {e}");
        }
    }
    e.into_text_response()
}

/// `DELETE` on a session's resource URL ends it (with the same token that made it).
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path((channel, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&state, &headers, &channel) {
        return refuse(&state, e.into());
    }
    if state.leave(&channel, &resource) {
        text(StatusCode::OK, "session ended")
    } else {
        Error::NotFound("no such session".into()).into_text_response()
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

/// A plain answer that is not an error.
fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{body}\n"),
    )
        .into_response()
}
