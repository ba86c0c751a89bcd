//! WebSocket signalling at `/sync`: join a channel with a token, publish and subscribe with
//! SDP offers, and hear about everyone else in the channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::channel_messages;
use crate::channels::Channels;
use crate::dial;
use crate::error::Error;
use crate::metrics::SocketClosed;
use crate::p2p::{self, TokenBucket};
use crate::phones::DialRequest;
use crate::protocol::{ClientMessage, Resume, ServerMessage};
use crate::resume;
use crate::rules::Rules;
use crate::sync_limits::{Admitted, CLOSE_JOIN_TIMEOUT, CLOSE_RATE};
use crate::token::{Claims, TokenError};

/// Close code for a refused join (4000-4999 are for applications).
const CLOSE_UNAUTHORIZED: u16 = 4001;
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code after an operator kicked the client.
const CLOSE_KICKED: u16 = 4003;
/// Close code when the client resumed this participant on another connection.
const CLOSE_REPLACED: u16 = 4009;
/// Signalling messages are SDP-sized; anything far larger is refused by the socket.
const MAX_MESSAGE: usize = 256 * 1024;
/// How long a session's last replies and close frame may take to leave once it has ended: a
/// client that stopped reading (a flood) must not keep the socket open past its close.
const FLUSH: Duration = Duration::from_secs(5);
/// How long frames that follow a rate close are read and dropped. A client still sending has
/// them unread at the server, and closing a TCP socket with unread data resets it, which makes
/// the client's kernel drop the close frame it had not read yet: it would learn nothing of why.
const LINGER: Duration = Duration::from_secs(2);

/// Upgrades to a signalling socket, unless the peer's address holds its limit of them already
/// (`429 Too Many Requests`).
pub async fn sync<C: Channels>(
    ws: WebSocketUpgrade,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    State(state): State<Arc<C>>,
) -> Response {
    if let Err(e) = state.sync_limits().check_source(from.ip()) {
        return crate::sync_limits::refused(&*state, from, "/sync", e);
    }
    let Some(admitted) = state.sync_limits().admit(from.ip()) else {
        state.metrics().socket_closed(SocketClosed::PerAddress);
        tracing::debug!(%from, "signalling socket refused: too many from this address");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many signalling connections from this address\n",
        )
            .into_response();
    };
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(socket, state, admitted))
}

/// What the writer task sends.
enum Out {
    Message(ServerMessage),
    Close(u16, String),
}

/// A joined client: its channel, id and rights.
struct Joined {
    channel: String,
    participant: String,
    claims: Claims,
}

/// Runs one socket; `_admitted` counts it against its address until it ends.
async fn session<C: Channels>(socket: WebSocket, state: Arc<C>, _admitted: Admitted) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
    let mut writer = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            let result = match out {
                Out::Message(m) => match serde_json::to_string(&m) {
                    Ok(text) => sink.send(Message::Text(text.into())).await,
                    Err(_) => continue,
                },
                Out::Close(code, reason) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
            };
            if result.is_err() {
                break;
            }
        }
    });
    // Events for this participant go through the same writer, after the replies before them.
    // They are forwarded only once the `joined` reply is queued, so a client never hears of
    // others before it learns its own id.
    let (events_tx, events_rx) = mpsc::unbounded_channel::<ServerMessage>();
    let mut events_rx = Some(events_rx);
    // Ends the session from our side after a kick, without waiting for the client to answer
    // the close; true when the participant was resumed elsewhere (and so must not be removed).
    let (kicked_tx, mut kicked_rx) = tokio::sync::oneshot::channel::<bool>();
    let mut kicked_tx = Some(kicked_tx);
    let mut forward = None;
    let mut shutdown = state.shutdown();
    let mut joined: Option<Joined> = None;
    // Peer-to-peer signals are limited per connection, the unit a misbehaving client controls.
    let mut signals = TokenBucket::for_signals(Instant::now());
    let mut messages = TokenBucket::for_signals(Instant::now());
    let mut calls = dial::bucket(Instant::now());
    let limits = state.sync_limits();
    // Every frame the client sends takes a token, whatever it holds: past the limit the socket
    // is closed, not answered, so a flood costs at most a burst of replies.
    let mut frames = limits.bucket(Instant::now());
    let join_timeout = limits.join_timeout;
    let join_deadline = tokio::time::sleep(join_timeout.unwrap_or_default());
    tokio::pin!(join_deadline);
    let mut linger = false;
    loop {
        let message = tokio::select! {
            m = stream.next() => m,
            _ = shutdown.changed() => {
                let _ = out_tx.send(Out::Close(CLOSE_GOING_AWAY, "server shutting down".into()));
                break;
            }
            Ok(replaced) = &mut kicked_rx => {
                if replaced {
                    // Its new connection owns the participant now.
                    joined = None;
                }
                break;
            }
            () = &mut join_deadline, if joined.is_none() && join_timeout.is_some() => {
                state.metrics().socket_closed(SocketClosed::JoinTimeout);
                let _ = out_tx.send(Out::Close(CLOSE_JOIN_TIMEOUT, "join timeout".into()));
                break;
            }
        };
        if matches!(&message, Some(Ok(m)) if !matches!(m, Message::Close(_)))
            && frames.as_mut().is_some_and(|b| !b.take(Instant::now()))
        {
            state.metrics().socket_closed(SocketClosed::Rate);
            let _ = out_tx.send(Out::Close(CLOSE_RATE, "message rate exceeded".into()));
            linger = true;
            break;
        }
        let text = match message {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                reply_error(
                    &*state,
                    &out_tx,
                    None,
                    "bad_request",
                    "binary messages are not supported; send JSON text",
                );
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
        };
        let parsed: Result<ClientMessage, _> = serde_json::from_str(&text);
        let message = match parsed {
            Ok(m) => m,
            Err(e) => {
                let id = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("id").cloned());
                reply_error(
                    &*state,
                    &out_tx,
                    id,
                    "malformed_json",
                    &format!("malformed message: {e}"),
                );
                continue;
            }
        };
        match (message, &joined) {
            (
                ClientMessage::Join {
                    token,
                    channel,
                    region,
                    resume,
                },
                None,
            ) => {
                let authorized = authorize(&*state, &token, channel).map_err(Error::from);
                let joining = match authorized {
                    Ok((claims, channel)) => {
                        let resume = resumable(&*state, &claims, &channel, resume);
                        state
                            .join(
                                &channel,
                                &claims.application_id,
                                &claims.user_id,
                                // The client's own claim, else the token's.
                                region.as_deref().or(claims.region.as_deref()),
                                events_tx.clone(),
                                resume.as_deref(),
                            )
                            .await
                            .map(|joined| (claims, channel, joined))
                    }
                    Err(e) => Err(e),
                };
                match joining {
                    Ok((claims, channel, (participant, participants))) => {
                        let reply = ServerMessage::Joined {
                            participant: participant.clone(),
                            channel: channel.clone(),
                            participants,
                            ice_servers: state.ice_servers(&claims.user_id).await,
                            resume_key: resume::key(
                                state.applications(),
                                &claims,
                                &channel,
                                &participant,
                            ),
                        };
                        let _ = out_tx.send(Out::Message(reply));
                        if let (Some(rx), Some(kicked)) = (events_rx.take(), kicked_tx.take()) {
                            forward = Some(forward_events(rx, out_tx.clone(), kicked));
                        }
                        joined = Some(Joined {
                            channel,
                            participant,
                            claims,
                        });
                    }
                    Err(e @ Error::Unauthorized(_)) => {
                        state.metrics().auth_failure();
                        reply_error(&*state, &out_tx, None, "unauthorized", &e.to_string());
                        let _ =
                            out_tx.send(Out::Close(CLOSE_UNAUTHORIZED, truncate(&e.to_string())));
                        break;
                    }
                    Err(e) => reply_error(&*state, &out_tx, None, e.metric(), &e.to_string()),
                }
            }
            (ClientMessage::Join { .. }, Some(_)) => {
                reply_error(
                    &*state,
                    &out_tx,
                    None,
                    "bad_request",
                    "already joined; open another connection for another channel",
                );
            }
            (other, None) => {
                let id = other.id().cloned();
                reply_error(&*state, &out_tx, id, "not_joined", "send join first");
            }
            (ClientMessage::Leave, Some(_)) => break,
            (ClientMessage::Signal { id, to, data }, Some(j)) => {
                relay_signal(&*state, j, &mut signals, id, &to, data, &out_tx).await;
            }
            (ClientMessage::Message { id, to, data }, Some(j)) => {
                let to = to.as_deref();
                relay_message(&*state, j, &mut messages, id, to, data, &out_tx).await;
            }
            (
                ClientMessage::Dial {
                    id,
                    number,
                    trunk,
                    caller_id,
                },
                Some(j),
            ) => {
                let request = DialRequest {
                    channel: &j.channel,
                    number: &number,
                    trunk: trunk.as_deref(),
                    caller_id: caller_id.as_deref(),
                    application: Some(&j.claims.application_id),
                };
                place_call(&*state, j, &mut calls, id, request, &out_tx).await;
            }
            (other, Some(j)) => {
                if let Err((id, e)) = handle(&*state, j, other, &out_tx).await {
                    reply_error(&*state, &out_tx, id, e.metric(), &e.to_string());
                }
            }
        }
    }
    if let Some(j) = joined {
        state.leave(&j.channel, &j.participant).await;
    }
    if let Some(f) = forward {
        f.abort();
    }
    drop(out_tx);
    if tokio::time::timeout(FLUSH, &mut writer).await.is_err() {
        writer.abort();
    }
    if linger {
        let drain = async { while let Some(Ok(_)) = stream.next().await {} };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

/// Passes events to the writer; after a kick, or once the participant was resumed on another
/// connection, closes the socket and tells the session (true: resumed elsewhere).
fn forward_events(
    mut events: mpsc::UnboundedReceiver<ServerMessage>,
    out_tx: mpsc::UnboundedSender<Out>,
    kicked_tx: tokio::sync::oneshot::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(m) = events.recv().await {
            let close = match &m {
                ServerMessage::Kicked { reason } => Some((CLOSE_KICKED, truncate(reason), false)),
                ServerMessage::Replaced => Some((
                    CLOSE_REPLACED,
                    "resumed on another connection".to_string(),
                    true,
                )),
                _ => None,
            };
            if out_tx.send(Out::Message(m)).is_err() {
                break;
            }
            if let Some((code, reason, replaced)) = close {
                let _ = out_tx.send(Out::Close(code, reason));
                let _ = kicked_tx.send(replaced);
                return;
            }
        }
    })
}

/// The participant a `join` may continue as: the one its `resume` names, when the key was
/// made for these claims and channel. A bad or stale key is not an error: the client joins
/// as a new participant, and its SDK publishes and subscribes afresh either way.
fn resumable<C: Channels>(
    state: &C,
    claims: &Claims,
    channel: &str,
    resume: Option<Resume>,
) -> Option<String> {
    let r = resume?;
    if resume::verify(
        state.applications(),
        claims,
        channel,
        &r.participant,
        &r.key,
    ) {
        Some(r.participant)
    } else {
        tracing::info!(channel, participant = %r.participant, "resume key not valid; joining as a new participant");
        None
    }
}

/// Checks the token and picks the channel.
fn authorize<C: Channels>(
    state: &C,
    token: &str,
    channel: Option<String>,
) -> Result<(Claims, String), TokenError> {
    let claims = state.applications().validate(token)?;
    let channel = match channel {
        Some(c) => c,
        None if claims.channels.len() == 1 => claims.channels[0].id.clone(),
        None => {
            return Err(TokenError::Malformed(
                "the token grants several channels; say which to join".into(),
            ));
        }
    };
    claims.channel(&channel)?;
    Ok((claims, channel))
}

async fn handle<C: Channels>(
    state: &C,
    j: &Joined,
    message: ClientMessage,
    out: &mpsc::UnboundedSender<Out>,
) -> Result<(), (Option<Value>, Error)> {
    match message {
        ClientMessage::Publish { id, offer } => {
            j.claims
                .may_publish(&j.channel)
                .map_err(|e| (id.clone(), e.into()))?;
            let config = state.channel_config(&j.claims.application_id, &j.channel);
            let rules = Rules::of(config.as_ref()).map_err(|e| (id.clone(), e))?;
            let (publication, answer) = state
                .publish(&j.channel, &j.participant, &offer, &rules)
                .await
                .map_err(|e| (id.clone(), e))?;
            let _ = out.send(Out::Message(ServerMessage::Answer {
                id,
                publication: Some(publication),
                subscription: None,
                mix: None,
                answer,
            }));
        }
        ClientMessage::Subscribe {
            id,
            publication,
            offer,
        } => {
            j.claims
                .may_subscribe(&j.channel)
                .map_err(|e| (id.clone(), e.into()))?;
            let (subscription, answer) = state
                .subscribe(&j.channel, &j.participant, &publication, &offer)
                .await
                .map_err(|e| (id.clone(), e))?;
            let _ = out.send(Out::Message(ServerMessage::Answer {
                id,
                publication: None,
                subscription: Some(subscription),
                mix: None,
                answer,
            }));
        }
        ClientMessage::Mix { id, offer } => {
            j.claims
                .may_publish(&j.channel)
                .map_err(|e| (id.clone(), e.into()))?;
            let config = state.channel_config(&j.claims.application_id, &j.channel);
            let rules = Rules::for_mix(config.as_ref()).map_err(|e| (id.clone(), e))?;
            let (mix, answer) = state
                .mix(&j.channel, &j.participant, &offer, &rules)
                .await
                .map_err(|e| (id.clone(), e))?;
            let _ = out.send(Out::Message(ServerMessage::Answer {
                id,
                publication: None,
                subscription: None,
                mix: Some(mix),
                answer,
            }));
        }
        // A mixed connection is the participant's publication too.
        ClientMessage::Unmix { mix } => {
            state
                .unpublish(&j.channel, &j.participant, &mix)
                .await
                .map_err(|e| (None, e))?;
        }
        ClientMessage::Unpublish { publication } => {
            state
                .unpublish(&j.channel, &j.participant, &publication)
                .await
                .map_err(|e| (None, e))?;
        }
        ClientMessage::Unsubscribe { subscription } => {
            state
                .unsubscribe(&j.channel, &j.participant, &subscription)
                .await
                .map_err(|e| (None, e))?;
        }
        ClientMessage::Preferences {
            subscription,
            preferences,
        } => {
            state
                .set_preferences(&j.channel, &j.participant, &subscription, preferences)
                .await
                .map_err(|e| (None, e))?;
        }
        ClientMessage::Dtmf { id, to, digits } => {
            if !crate::phones::valid_digits(&digits) {
                return Err((
                    id,
                    Error::BadRequest(format!(
                        "dtmf digits must be 1 to {} of {}",
                        crate::phones::MAX_DIGITS,
                        crate::phones::DTMF_DIGITS
                    )),
                ));
            }
            state
                .send_dtmf(&j.channel, to.as_deref(), &digits)
                .await
                .map_err(|e| (id, e))?;
        }
        ClientMessage::Join { .. }
        | ClientMessage::Leave
        | ClientMessage::Signal { .. }
        | ClientMessage::Message { .. }
        | ClientMessage::Dial { .. } => {}
    }
    Ok(())
}

/// Relays a peer-to-peer signal within the sender's channel, or tells the sender why not. A
/// refusal never closes the socket: the client's other work goes on.
async fn relay_signal<C: Channels>(
    state: &C,
    j: &Joined,
    bucket: &mut TokenBucket,
    id: Option<Value>,
    to: &str,
    data: Value,
    out: &mpsc::UnboundedSender<Out>,
) {
    if let Err(refusal) = p2p::check(&j.participant, to, &data, bucket, Instant::now()) {
        state.metrics().signal_refused(refusal.metric());
        reply_error(state, out, id, refusal.metric(), &refusal.reason());
        return;
    }
    match state.signal(&j.channel, &j.participant, to, data).await {
        Ok(()) => state.metrics().signal_relayed(),
        Err(e) => {
            state.metrics().signal_refused(e.metric());
            reply_error(state, out, id, e.metric(), &e.to_string());
        }
    }
}

/// Sends a channel message to one participant or to everyone else in the sender's channel, or
/// tells the sender why not (see [`channel_messages`]).
async fn relay_message<C: Channels>(
    state: &C,
    j: &Joined,
    bucket: &mut TokenBucket,
    id: Option<Value>,
    to: Option<&str>,
    data: Value,
    out: &mpsc::UnboundedSender<Out>,
) {
    if let Err(refusal) = channel_messages::check(&j.participant, to, &data, bucket, Instant::now())
    {
        reply_error(state, out, id, refusal.metric(), &refusal.reason());
        return;
    }
    if let Err(e) = state.message(&j.channel, &j.participant, to, data).await {
        reply_error(state, out, id, e.metric(), &e.to_string());
    }
}

/// Places a call out whose callee joins the sender's channel (`request` is for it, in the
/// sender's application), and replies `dialing` with its id; or tells the sender why not (see
/// [`dial`]). A call the connector refuses (no trunk, a bad caller id) gives its token back.
async fn place_call<C: Channels>(
    state: &C,
    j: &Joined,
    bucket: &mut TokenBucket,
    id: Option<Value>,
    request: DialRequest<'_>,
    out: &mpsc::UnboundedSender<Out>,
) {
    let checked = dial::check(
        &j.claims,
        &j.channel,
        request.number,
        bucket,
        Instant::now(),
    );
    if let Err(refusal) = checked {
        reply_error(state, out, id, refusal.metric(), &refusal.reason());
        return;
    }
    match state.dial(request).await {
        Ok(call) => {
            let (channel, participant) = (&j.channel, &j.participant);
            tracing::info!(channel, participant, call, "dialling out for a participant");
            let _ = out.send(Out::Message(ServerMessage::Dialing { id, call }));
        }
        Err(e) => {
            // No call was placed: the limit is on calls, not on refusals.
            bucket.give_back();
            reply_error(state, out, id, e.metric(), &e.to_string());
        }
    }
}

fn reply_error<C: Channels>(
    state: &C,
    out: &mpsc::UnboundedSender<Out>,
    id: Option<Value>,
    metric: &'static str,
    reason: &str,
) {
    state.metrics().signalling_error(metric);
    tracing::debug!(metric, reason, "signalling error");
    let _ = out.send(Out::Message(ServerMessage::Error {
        id,
        reason: reason.to_string(),
    }));
}

/// Close reasons must fit in 123 bytes.
fn truncate(s: &str) -> String {
    let mut end = s.len().min(120);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
