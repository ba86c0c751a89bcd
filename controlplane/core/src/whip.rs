//! WHIP (RFC 9725) ingest at `/whip/{channel}` and WHEP egress at `/whep/{channel}`: one HTTP
//! POST of an SDP offer, answered with `201 Created`, the answer and a resource URL to DELETE.
//!
//! Each session is a participant of its own in the channel, so SDK clients see a WHIP publisher
//! like any other. The server is ICE-lite and puts its candidates in the answer, so trickle ICE
//! (PATCH) is not needed and answered 405.
//!
//! One code path for all-in-one and cluster gateways, over [`Channels`]: on a gateway the
//! publication is placed on a media server like an SDK client's, and the session belongs to
//! the gateway that took the POST. Its outbox is read by [`watch`], which ends the session
//! when it is kicked (an operator, or a `DELETE` that reached another gateway: see
//! [`Channels::end_session`]) or when its media is gone and cannot come back without a new
//! offer. The resource URL names only the channel and the participant, so it works on any
//! gateway.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchyard_dataplane::media::MediaKind;
use switchyard_dataplane::sdp::Offer;
use tokio::sync::mpsc;
use tower_http::cors::{Any, CorsLayer};

use crate::channels::{Channels, MIX_VIEW};
use crate::error::Error;
use crate::ice_servers::{IceServer, link_headers};
use crate::protocol::{ParticipantInfo, ServerMessage};
use crate::rules::Rules;
use crate::server::stopped;
use crate::token::{Claims, TokenError};

/// The WHIP and WHEP endpoints with their CORS and `OPTIONS` handling, as all-in-one and a
/// gateway serve them.
pub fn routes<C: Channels>(state: Arc<C>) -> Router {
    // WHIP/WHEP clients on other origins (players, encoders in a browser) need CORS and to
    // read the Location header.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION, header::LINK]);
    Router::new()
        .route("/whip/{channel}", axum::routing::post(whip::<C>))
        .route("/whep/{channel}", axum::routing::post(whep::<C>))
        .route("/mix/{channel}", axum::routing::post(mix::<C>))
        .route(
            "/mix/{channel}/{resource}",
            axum::routing::delete(delete::<C>).patch(patch),
        )
        .route(
            "/whip/{channel}/{resource}",
            axum::routing::delete(delete::<C>).patch(patch),
        )
        .route(
            "/whep/{channel}/{resource}",
            axum::routing::delete(delete::<C>)
                .patch(patch)
                .post(whep_mix::<C>),
        )
        .layer(cors)
        // Outside the CORS layer, which answers every OPTIONS itself: a plain OPTIONS (not a
        // preflight) gets the ICE servers.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            options::<C>,
        ))
        // Outermost: an address outside SYNC:IPADDRESSES gets nothing, not even the ICE
        // servers of a plain OPTIONS.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::sync_limits::guard::<C>,
        ))
        .with_state(state)
}

async fn whip<C: Channels>(
    State(state): State<Arc<C>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    let result = post(&state, Kind::Whip, &channel, &headers, &offer).await;
    respond(&*state, result)
}

async fn whep<C: Channels>(
    State(state): State<Arc<C>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    let result = post(&state, Kind::Whep, &channel, &headers, &offer).await;
    respond(&*state, result)
}

/// `POST /mix/{channel}`: an MCU connection by WHIP's rules (see [`crate::mix`]): the offer
/// is sendrecv, and the answer sends back the channel's mix.
async fn mix<C: Channels>(
    State(state): State<Arc<C>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    let result = post(&state, Kind::Mix, &channel, &headers, &offer).await;
    respond(&*state, result)
}

/// `POST /whep/{channel}/mix`: plays the channel's mix (the composite and everyone's audio),
/// for livestreams; WHEP's rules otherwise.
async fn whep_mix<C: Channels>(
    State(state): State<Arc<C>>,
    Path((channel, resource)): Path<(String, String)>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    if resource != crate::rooms::MIX_VIEW {
        return Error::NotFound(format!(
            "POST /whep/{channel}/mix plays the mix; a session's resource takes DELETE"
        ))
        .into_text_response();
    }
    let result = post(&state, Kind::WhepMix, &channel, &headers, &offer).await;
    respond(&*state, result)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Whip,
    Whep,
    Mix,
    WhepMix,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep | Kind::WhepMix => "whep",
            Kind::Mix => "mix",
        }
    }
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
async fn options<C: Channels>(
    State(state): State<Arc<C>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let channel = path
        .strip_prefix("/whip/")
        .or_else(|| path.strip_prefix("/whep/"))
        .or_else(|| path.strip_prefix("/mix/"))
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
    let servers = match authorize(&*state, &headers, &channel) {
        Ok(claims) => state.ice_servers(&claims.user_id).await,
        Err(_) => Vec::new(),
    };
    for link in link_headers(&servers) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    response
}

/// Joins a participant of its own for the session, answers its offer and starts its watcher.
async fn post<C: Channels>(
    state: &Arc<C>,
    kind: Kind,
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
    let claims = authorize(&**state, headers, channel)?;
    let offered = match kind {
        Kind::Whip | Kind::Mix => {
            claims.may_publish(channel)?;
            Vec::new()
        }
        Kind::WhepMix => {
            claims.may_subscribe(channel)?;
            Vec::new()
        }
        Kind::Whep => {
            claims.may_subscribe(channel)?;
            let offer =
                Offer::parse(offer).map_err(|e| Error::BadRequest(format!("bad offer: {e}")))?;
            offer.media.iter().filter_map(|m| m.kind).collect()
        }
    };
    let (outbox, heard) = mpsc::unbounded_channel();
    let (participant, others) = state
        .join_session(
            channel,
            &claims.application_id,
            &claims.user_id,
            claims.region.as_deref(),
            outbox,
        )
        .await?;
    let result = match kind {
        Kind::Whip => {
            let config = state.channel_config(&claims.application_id, channel);
            match Rules::of(config.as_ref()) {
                Ok(rules) => state.publish(channel, &participant, offer, &rules).await,
                Err(e) => Err(e),
            }
        }
        Kind::Mix | Kind::WhepMix => {
            let config = state.channel_config(&claims.application_id, channel);
            match Rules::for_mix(config.as_ref()) {
                Ok(rules) if kind == Kind::Mix => {
                    state.mix(channel, &participant, offer, &rules).await
                }
                // What it plays is the mix, whose media server going away ends it
                // (`Resubscribe`).
                Ok(rules) => state
                    .view_mix(channel, &participant, offer, &rules)
                    .await
                    .map(|(_, answer)| (MIX_VIEW.to_string(), answer)),
                Err(e) => Err(e),
            }
        }
        Kind::Whep => match pick(&others, &offered) {
            Some(publication) => state
                .subscribe(channel, &participant, publication, offer)
                .await
                .map(|(_, answer)| (publication.to_string(), answer)),
            None => Err(Error::NotFound(format!(
                "nothing is published in channel {channel}"
            ))),
        },
    };
    // For WHIP the publication made (for a mix, its connection); for WHEP the one played
    // (for the mix, [`MIX_VIEW`]).
    let (media, sdp) = match result {
        Ok(r) => r,
        Err(e) => {
            state.leave(channel, &participant).await;
            return Err(e);
        }
    };
    tokio::spawn(watch(
        state.clone(),
        channel.to_string(),
        participant.clone(),
        media,
        heard,
    ));
    Ok(Answer {
        sdp,
        location: format!("/{}/{channel}/{participant}", kind.path()),
        ice_servers: state.ice_servers(&claims.user_id).await,
    })
}

/// What a WHEP offer plays: the first publication (in the order `join` lists them) with a
/// track of every kind offered.
fn pick<'a>(others: &'a [ParticipantInfo], offered: &[MediaKind]) -> Option<&'a str> {
    others
        .iter()
        .flat_map(|p| &p.publications)
        .find(|p| {
            offered
                .iter()
                .all(|k| p.tracks.iter().any(|t| t.kind == k.as_str()))
        })
        .map(|p| p.publication.as_str())
}

/// Reads a session's outbox until it closes (the session left, or its channels never send to
/// it), and ends the session on what [`ends`] says ends it, or when the process shuts down (as
/// signalling sockets close then).
async fn watch<C: Channels>(
    state: Arc<C>,
    channel: String,
    participant: String,
    media: String,
    mut heard: mpsc::UnboundedReceiver<ServerMessage>,
) {
    let mut shutdown = state.shutdown();
    let why = loop {
        tokio::select! {
            message = heard.recv() => match message {
                Some(m) => if let Some(why) = ends(&m, &media) {
                    break why;
                },
                None => return,
            },
            () = stopped(&mut shutdown) => break "the server is shutting down",
        }
    };
    tracing::info!(channel, participant, "WHIP/WHEP session ended: {why}");
    state.leave(&channel, &participant).await;
}

/// Why `message`, heard by a session whose media is the publication `media` (the one it made,
/// or the one it plays), ends it; `None` for what it ignores (others joining, publishing).
fn ends(message: &ServerMessage, media: &str) -> Option<&'static str> {
    match message {
        ServerMessage::Kicked { .. } => Some("kicked"),
        // A publisher hears of its own publication only when it was lost (its media server
        // went away); a WHEP player hears that what it plays ended. Either needs a new offer.
        ServerMessage::Unpublished { publication, .. } if publication == media => {
            Some("its publication ended")
        }
        // Its subscription's media server is gone; making it again needs a new offer.
        ServerMessage::Resubscribe { publication } if publication == media => {
            Some("its media server is gone")
        }
        _ => None,
    }
}

/// `201 Created` with the answer, the resource URL and the ICE servers as `Link` headers
/// (RFC 9725 section 4.6), or the refusal as text, counted.
fn respond<C: Channels>(state: &C, result: Result<Answer, Error>) -> Response {
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
fn refuse<C: Channels>(state: &C, e: Error) -> Response {
    match &e {
        Error::Unauthorized(_) => state.metrics().auth_failure(),
        Error::UnsupportedMediaType(_) => {}
        e => {
            state.metrics().signalling_error(e.metric());
            tracing::info!("WHIP/WHEP request refused: {e}");
        }
    }
    e.into_text_response()
}

/// `DELETE` on a session's resource URL ends it (with a token for its channel), on whichever
/// gateway it was made.
async fn delete<C: Channels>(
    State(state): State<Arc<C>>,
    Path((channel, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&*state, &headers, &channel) {
        return refuse(&*state, e.into());
    }
    match state.end_session(&channel, &resource).await {
        Ok(true) => text(StatusCode::OK, "session ended"),
        Ok(false) => Error::NotFound("no such session".into()).into_text_response(),
        Err(e) => refuse(&*state, e),
    }
}

/// Trickle ICE and ICE restarts are not supported: the answer already has every candidate.
async fn patch() -> Response {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not supported; all candidates are in the answer",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE"));
    r
}

fn authorize<C: Channels>(
    state: &C,
    headers: &HeaderMap,
    channel: &str,
) -> Result<Claims, TokenError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| TokenError::Malformed("missing Authorization: Bearer <token>".into()))?;
    let claims = state.applications().validate(token.trim())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PublicationInfo, TrackInfo};

    fn participant(id: &str, publications: &[(&str, &[&str])]) -> ParticipantInfo {
        ParticipantInfo {
            participant: id.into(),
            user: "u".into(),
            publications: publications
                .iter()
                .map(|(publication, kinds)| PublicationInfo {
                    publication: (*publication).into(),
                    tracks: kinds
                        .iter()
                        .map(|k| TrackInfo {
                            kind: (*k).into(),
                            codec: "x".into(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn whep_plays_the_first_publication_with_every_kind_offered() {
        let others = [
            participant("p1", &[]),
            participant("p2", &[("audio-only", &["audio"])]),
            participant(
                "p3",
                &[("both", &["video", "audio"]), ("later", &["video"])],
            ),
        ];
        let (audio, video) = (MediaKind::Audio, MediaKind::Video);
        assert_eq!(pick(&others, &[video, audio]), Some("both"));
        assert_eq!(pick(&others, &[video]), Some("both"));
        assert_eq!(pick(&others, &[audio]), Some("audio-only"));
        assert_eq!(pick(&others[..2], &[video]), None);
        assert_eq!(pick(&[], &[audio]), None, "nothing is published");
    }

    #[test]
    fn a_session_ends_on_a_kick_or_when_its_media_is_gone() {
        let kicked = ServerMessage::Kicked {
            reason: "bye".into(),
        };
        assert_eq!(ends(&kicked, "pub1"), Some("kicked"));
        let unpublished = |publication: &str| ServerMessage::Unpublished {
            participant: "p".into(),
            publication: publication.into(),
        };
        assert!(ends(&unpublished("pub1"), "pub1").is_some());
        assert_eq!(ends(&unpublished("pub2"), "pub1"), None, "another's");
        let resubscribe = |publication: &str| ServerMessage::Resubscribe {
            publication: publication.into(),
        };
        assert!(ends(&resubscribe("pub1"), "pub1").is_some());
        assert_eq!(ends(&resubscribe("pub2"), "pub1"), None);
        // A view of the mix: its media server went away.
        assert!(ends(&resubscribe(MIX_VIEW), MIX_VIEW).is_some());
        let joined = ServerMessage::ParticipantJoined {
            participant: "p2".into(),
            user: "u".into(),
        };
        assert_eq!(ends(&joined, "pub1"), None);
    }
}
