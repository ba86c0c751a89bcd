//! The browser SDK and the demo page, compiled into the binary so one file is a whole server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::channels::Channels;
use crate::error::Error;
use crate::token::{self, ChannelClaim, Claims};

const INDEX: &str = include_str!("../../../web/index.html");
const DEMO: &str = include_str!("../../../web/demo.js");
const SDK: &str = include_str!("../../../web/switchyard.js");
/// The SDK's peer-to-peer connections, which `switchyard.js` imports.
const PEER: &str = include_str!("../../../web/peer.js");
const STYLE: &str = include_str!("../../../web/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn demo() -> Response {
    asset("text/javascript; charset=utf-8", DEMO)
}

pub async fn sdk() -> Response {
    asset("text/javascript; charset=utf-8", SDK)
}

pub async fn peer() -> Response {
    asset("text/javascript; charset=utf-8", PEER)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[derive(Debug, Deserialize)]
pub struct DevTokenQuery {
    channel: String,
    #[serde(default)]
    user: Option<String>,
}

/// A publish+subscribe token for the dev application, so the demo works with no setup.
/// Served by `all-in-one` and `gateway` with their generated dev application unless disabled.
/// Refusals are text: the demo page shows them as they are.
pub async fn dev_token<C: Channels>(
    State(state): State<Arc<C>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Query(q): Query<DevTokenQuery>,
) -> Response {
    if let Err(e) = state.sync_limits().check_source(from.ip()) {
        return crate::sync_limits::refused(&*state, from, "/api/dev-token", e);
    }
    match issue_dev_token(&*state, q) {
        Ok(t) => ([(header::CONTENT_TYPE, "text/plain")], t).into_response(),
        Err(e) => e.into_text_response(),
    }
}

fn issue_dev_token<C: Channels>(state: &C, q: DevTokenQuery) -> Result<String, Error> {
    let Some((app, secret)) = state.dev_tokens() else {
        return Err(Error::NotFound(
            "dev tokens are disabled on this server".into(),
        ));
    };
    if q.channel.is_empty() || q.channel.len() > 200 {
        return Err(Error::BadRequest(
            "channel must be 1 to 200 characters".into(),
        ));
    }
    let user = q
        .user
        .unwrap_or_else(|| format!("guest-{:04x}", rand::random::<u16>()));
    let claim = ChannelClaim {
        id: q.channel,
        publish: true,
        subscribe: true,
        // Never: anyone who can reach the server gets these, and calls out cost money.
        dial: false,
    };
    let claims = Claims::new(app, &user, claim, Duration::from_secs(3600));
    Ok(token::issue(&claims, secret)?)
}
