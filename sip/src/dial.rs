//! Calls out: the connector joins a channel, dials a number through a SIP trunk (a provider's
//! account) and bridges the call's audio from the first SDP the callee sends (a 183's early
//! media: ringback, announcements) and on once answered, just as an inbound call runs
//! ([`crate::call::run_up`]): the callee hears the channel and the channel hears the callee.
//! An administrator may hang it up meanwhile: CANCEL while it rings, BYE once answered.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytesstr::BytesStr;
use ezk_sdp_types::SessionDescription;
use ezk_sip_auth::{
    ClientAuthenticator, DigestAuthenticator, DigestCredentials, DigestUser, RequestParts,
    ResponseParts,
};
use ezk_sip_core::transaction::TsxResponse;
use ezk_sip_core::transport::{OutgoingParts, OutgoingRequest};
use ezk_sip_core::{Endpoint, Request};
use ezk_sip_types::header::typed::{CSeq, CallID, Contact, ContentType};
use ezk_sip_types::uri::{NameAddr, SipUri};
use ezk_sip_types::{Method, Name, StatusCode};
use ezk_sip_ua::MediaBackend;
use ezk_sip_ua::invite::create_ack;
use ezk_sip_ua::invite::initiator::{Early, EarlyResponse, InviteInitiator, Response};
use ezk_sip_ua::invite::session::{InviteSession, InviteSessionEvent, ReInviteReceived};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};

use crate::call::{self, PhoneSdp, Up};
use crate::sdp::{Local, NegotiationError};
use crate::{Route, Shared};

/// How long a callee may ring (and the provider may take) before the call is given up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The most characters a number may have.
pub const MAX_NUMBER: usize = 32;

/// How SIP reaches a trunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

/// A SIP provider's account as the connector uses it: the store's trunk, without the store
/// (the crate stays free of it; the binary copies the fields over).
#[derive(Clone, PartialEq, Eq)]
pub struct Trunk {
    pub name: String,
    /// `host` or `host:port` (an IPv6 address in brackets).
    pub domain: String,
    pub transport: Transport,
    /// Whether to REGISTER with the provider ([`crate::register`]).
    pub register: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The digest user name when it differs from `username`.
    pub authorization_id: Option<String>,
    /// `host` or `host:port` REGISTERs are sent to instead of `domain`. Not INVITEs yet: ezk's
    /// INVITE initiator takes its destination from the Request-URI alone (its transport target
    /// is private).
    pub outbound_proxy: Option<String>,
    /// The From user of calls out that give none.
    pub caller_id: Option<String>,
}

/// Without the password, so a trunk may be logged.
impl std::fmt::Debug for Trunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trunk")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("transport", &self.transport)
            .field("register", &self.register)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "****"))
            .field("authorization_id", &self.authorization_id)
            .field("outbound_proxy", &self.outbound_proxy)
            .field("caller_id", &self.caller_id)
            .finish()
    }
}

impl Trunk {
    /// `sip:<user>@<domain>`, with `;transport=tcp` (or TLS's `sips:`) when the trunk says so.
    pub fn uri(&self, user: &str) -> String {
        self.uri_at(&self.domain, user)
    }

    /// The outbound proxy as a URI of the trunk's transport, when there is one.
    pub(crate) fn proxy_uri(&self) -> Option<String> {
        Some(self.uri_at(self.outbound_proxy.as_deref()?, ""))
    }

    /// `user` (none when empty) at `host` in the trunk's scheme and transport.
    fn uri_at(&self, host: &str, user: &str) -> String {
        let scheme = if self.transport == Transport::Tls {
            "sips"
        } else {
            "sip"
        };
        let params = if self.transport == Transport::Tcp {
            ";transport=tcp"
        } else {
            ""
        };
        if user.is_empty() {
            format!("{scheme}:{host}{params}")
        } else {
            format!("{scheme}:{user}@{host}{params}")
        }
    }

    /// The digest credentials for the provider's challenges (none without a password).
    pub(crate) fn authenticator(&self) -> DigestAuthenticator {
        let mut credentials = DigestCredentials::new();
        let user = self
            .authorization_id
            .as_ref()
            .or(self.username.as_ref())
            .cloned();
        if let (Some(user), Some(password)) = (user, &self.password) {
            credentials.set_default(DigestUser::new(user, password.as_bytes()));
        }
        DigestAuthenticator::new(credentials)
    }

    /// The domain's address with SIP's default port, to learn which local address reaches it.
    async fn address(&self) -> Option<SocketAddr> {
        let port = if self.transport == Transport::Tls {
            5061
        } else {
            5060
        };
        let host = self.domain.as_str();
        let with_port = match host.rsplit_once(':') {
            Some((_, p)) if p.parse::<u16>().is_ok() && !host.ends_with(']') => host.to_string(),
            _ => format!("{host}:{port}"),
        };
        tokio::net::lookup_host(with_port).await.ok()?.next()
    }
}

/// A call to place.
#[derive(Debug, Clone)]
pub struct Dial {
    pub channel: String,
    pub application: String,
    /// Digits, `+`, `*` and `#` ([`valid_number`]).
    pub number: String,
    pub trunk: Trunk,
    /// The From user; the trunk's caller id when `None`.
    pub caller_id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DialError {
    #[error("{0:?} is not a number to dial (1 to 32 of 0-9, +, * and #)")]
    BadNumber(String),
    #[error("{0:?} is not a caller id (no spaces, control characters, @ or <>)")]
    BadCallerId(String),
    #[error("trunk {0:?}: {1:?} is not a SIP URI")]
    BadTrunk(String, String),
}

/// Whether `number` may be dialled: 1 to [`MAX_NUMBER`] of digits, `+`, `*` and `#`.
pub fn valid_number(number: &str) -> bool {
    !number.is_empty()
        && number.len() <= MAX_NUMBER
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || "+*#".contains(c))
}

/// Whether `user` may go into a From URI's user part as it is.
fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+*#-_.!~".contains(c))
}

/// Checks `dial` and starts its call in a task of its own; its id (for logs and
/// [`crate::Connector::hang_up`]) at once.
pub(crate) fn start(
    shared: &Arc<Shared>,
    endpoint: &Endpoint,
    dial: Dial,
) -> Result<String, DialError> {
    if !valid_number(&dial.number) {
        return Err(DialError::BadNumber(dial.number));
    }
    let caller = dial
        .caller_id
        .clone()
        .or_else(|| dial.trunk.caller_id.clone())
        .or_else(|| dial.trunk.username.clone())
        .unwrap_or_else(|| "switchyard".to_string());
    if !valid_user(&caller) {
        return Err(DialError::BadCallerId(caller));
    }
    let target_text = dial.trunk.uri(&dial.number);
    let target: SipUri = target_text
        .parse()
        .map_err(|_| DialError::BadTrunk(dial.trunk.name.clone(), target_text.clone()))?;
    let from_text = dial.trunk.uri(&caller);
    let from: SipUri = from_text
        .parse()
        .map_err(|_| DialError::BadTrunk(dial.trunk.name.clone(), from_text.clone()))?;
    let id = format!("{:016x}", rand::random::<u64>());
    shared.stats.calls_out.fetch_add(1, Ordering::Relaxed);
    let stop = Arc::new(Notify::new());
    shared
        .dialled
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), (dial.channel.clone(), stop.clone()));
    let placed = Placed {
        id: id.clone(),
        target,
        from: NameAddr::uri(from),
        dial,
        stop,
    };
    tokio::spawn(run(shared.clone(), endpoint.clone(), placed));
    Ok(id)
}

/// A checked call, ready to place.
struct Placed {
    id: String,
    target: SipUri,
    from: NameAddr,
    dial: Dial,
    /// Notified when an administrator hangs the call up.
    stop: Arc<Notify>,
}

/// The call's entry in [`Shared::dialled`], removed when its task ends however it ends.
struct Dialling {
    shared: Arc<Shared>,
    id: String,
}

impl Drop for Dialling {
    fn drop(&mut self) {
        self.shared
            .dialled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Places the call and, once it is answered, runs it; a failure is logged and counted.
async fn run(shared: Arc<Shared>, endpoint: Endpoint, placed: Placed) {
    let _dialling = Dialling {
        shared: shared.clone(),
        id: placed.id.clone(),
    };
    let peer = format!("call {} to sip:{}", placed.id, placed.dial.number);
    if let Err(e) = place(&shared, endpoint, placed, &peer).await {
        tracing::warn!("{peer}: {e}");
        shared
            .stats
            .calls_out_failed
            .fetch_add(1, Ordering::Relaxed);
    }
}

async fn place(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    placed: Placed,
    peer: &str,
) -> Result<(), String> {
    let Placed {
        target,
        from,
        dial,
        stop,
        ..
    } = placed;
    let address = local_address(shared, &dial.trunk).await;
    let (rtp, rtp_port) = call::bind_rtp(shared).await.ok_or("no free RTP port")?;
    let local = Local {
        address,
        rtp_port,
        session_id: rand::random::<u32>().into(),
    };
    let (media_tx, media_rx) = watch::channel(None);
    let mut sdp = PhoneSdp {
        local,
        version: 0,
        media: media_tx,
    };
    let route = Route {
        application: dial.application,
        channel: dial.channel,
    };
    let display = format!("sip:{}", dial.number);
    // The channel is joined before the INVITE goes out: what the provider plays before the
    // answer (early media) is heard in it, and the callee's first words are not lost to a join.
    // The codec is not known yet, so the leg runs at 48 kHz and the phone codec's samples are
    // resampled to it.
    let leg = call::join_channel(shared, &route, &display, None)
        .await
        .map_err(|e| format!("joining channel {:?}: {e}", route.channel))?;
    let contact = call::contact(address, shared.config.listen.port());
    let mut invite = Invite::new(endpoint, from, contact, target, &dial.trunk);
    // Listed with the INVITE's Call-ID: INFO key presses from the callee find the call.
    let (listed, commands) = call::list(shared, &route, &display, &invite.call_id);
    let up = Up {
        leg,
        phone: rtp,
        media: media_rx,
        route: route.clone(),
        display,
        listed,
        commands,
        peer: peer.to_string(),
    };
    let mut running = call::start_media(shared, up);
    tracing::info!("{peer}: dialling through trunk {:?}", dial.trunk.name);
    let offer = sdp.create_sdp_offer().await.map_err(|e| e.to_string())?;
    let answered = async {
        invite.send(offer.to_string()).await?;
        invite.answer(&sdp, peer).await
    };
    let ended = tokio::select! {
        answered = tokio::time::timeout(ANSWER_TIMEOUT, answered) => match answered {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("not answered within {ANSWER_TIMEOUT:?}")),
        },
        why = running.ended(shared) => Err(why),
        () = stop.notified() => {
            tracing::info!("{peer}: hung up by an administrator while ringing");
            invite.cancel(peer).await;
            running.stop().await;
            return Ok(());
        }
    };
    let (session, answer) = match ended {
        Ok(answered) => answered,
        Err(e) => {
            invite.cancel(peer).await;
            running.stop().await;
            return Err(e);
        }
    };
    let call = match invite.acknowledge(session, &answer, &mut sdp).await {
        Ok(session) => Dialled { session, sdp },
        Err(e) => {
            running.stop().await;
            return Err(e);
        }
    };
    tracing::info!(
        "{peer} answered in channel {:?} of {:?}",
        route.channel,
        route.application
    );
    call::run_up(shared, call, running, stop.notified()).await;
    Ok(())
}

/// How long a CANCEL may take before the call is given up on without its final response.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// The most challenges (401, 407) one INVITE is re-sent for.
pub(crate) const MAX_CHALLENGES: u32 = 3;

/// Takes the credentials a challenge (401, 407) to `request` asks for into `authenticator`,
/// for the request sent again.
pub(crate) fn answer_challenge(
    authenticator: &mut DigestAuthenticator,
    request: &Request,
    response: &TsxResponse,
) -> Result<(), String> {
    authenticator
        .handle_rejection(
            RequestParts {
                line: &request.line,
                headers: &request.headers,
                body: &request.body,
            },
            ResponseParts {
                line: &response.line,
                headers: &response.headers,
                body: &response.body,
            },
        )
        .map_err(|e| format!("{}: {e}", response.line))
}

/// A call's INVITE until its answer, on ezk's initiator. Not ezk's `OutboundCall`: that one
/// re-sends only for a 401 (a provider's proxy asks with 407) and keeps the SDP of provisional
/// responses (early media) to itself.
struct Invite {
    endpoint: Endpoint,
    initiator: InviteInitiator,
    /// The first INVITE, made up front for its Call-ID; later ones (after a challenge) are
    /// made as they are sent.
    first: Option<Request>,
    call_id: String,
    authenticator: DigestAuthenticator,
    /// Our SDP offer, in each INVITE sent.
    offer: String,
    challenges: u32,
    /// The early dialogs the callee (or its forks) opened with provisional responses.
    earlies: Vec<Early>,
}

impl Invite {
    fn new(
        endpoint: Endpoint,
        from: NameAddr,
        contact: Contact,
        target: SipUri,
        trunk: &Trunk,
    ) -> Invite {
        let mut initiator = InviteInitiator::new(endpoint.clone(), from, contact, target);
        // Reliable provisional responses would want PRACKs, which ezk's initiator does not
        // send: without `Supported: 100rel` the provider sends its 183 plainly.
        initiator.support_100rel = false;
        let first = initiator.create_invite();
        let call_id = first
            .headers
            .get_named::<CallID>()
            .map(|id| id.0.to_string())
            .unwrap_or_default();
        Invite {
            endpoint,
            initiator,
            first: Some(first),
            call_id,
            authenticator: trunk.authenticator(),
            offer: String::new(),
            challenges: 0,
            earlies: Vec::new(),
        }
    }

    /// Sends the INVITE with `offer` (again, with credentials, after a challenge).
    async fn send(&mut self, offer: String) -> Result<(), String> {
        self.offer = offer;
        self.resend().await
    }

    async fn resend(&mut self) -> Result<(), String> {
        let mut invite = self
            .first
            .take()
            .unwrap_or_else(|| self.initiator.create_invite());
        invite
            .headers
            .insert_named(&ContentType(BytesStr::from_static("application/sdp")));
        invite.body = self.offer.clone().into();
        self.authenticator.authorize_request(&mut invite.headers);
        self.initiator
            .send_invite(invite)
            .await
            .map_err(|e| e.to_string())
    }

    /// Waits for the callee's answer (its session and 2xx), answering digest challenges and
    /// taking the SDP of provisional responses as the media to bridge meanwhile.
    async fn answer(
        &mut self,
        sdp: &PhoneSdp,
        peer: &str,
    ) -> Result<(InviteSession, TsxResponse), String> {
        loop {
            match self.initiator.receive().await.map_err(|e| e.to_string())? {
                Response::Provisional(_) => {}
                Response::Failure(response) => {
                    let code = response.line.code.into_u16();
                    if !matches!(code, 401 | 407) || self.challenges >= MAX_CHALLENGES {
                        return Err(format!("refused: {}", response.line));
                    }
                    self.challenges += 1;
                    let tsx = self
                        .initiator
                        .transaction()
                        .ok_or("challenged without a transaction")?;
                    answer_challenge(&mut self.authenticator, &tsx.request().msg, &response)?;
                    self.resend().await?;
                }
                Response::Early(early, response, _) => {
                    early_media(sdp, &response, peer);
                    self.earlies.push(early);
                }
                Response::Session(session, response) => return Ok((session, response)),
                // A response in an early dialog, handed to it: read below.
                Response::EarlyEvent => {}
                Response::Finished => return Err("no final response".into()),
            }
            if let Some((i, response)) = self.early_response().await {
                match response.map_err(|e| e.to_string())? {
                    EarlyResponse::Provisional(response, _) => early_media(sdp, &response, peer),
                    EarlyResponse::Success(session, response) => {
                        self.earlies.remove(i);
                        return Ok((session, response));
                    }
                    EarlyResponse::Terminated => {
                        self.earlies.remove(i);
                    }
                }
            }
        }
    }

    /// The response one of the early dialogs was handed, if any (it does not wait).
    async fn early_response(
        &mut self,
    ) -> Option<(usize, Result<EarlyResponse, ezk_sip_core::Error>)> {
        let earlies = &mut self.earlies;
        std::future::poll_fn(|cx| {
            let ready = earlies.iter_mut().enumerate().find_map(|(i, early)| {
                match early.poll_receive(cx) {
                    Poll::Ready(response) => Some((i, response)),
                    Poll::Pending => None,
                }
            });
            Poll::Ready(ready)
        })
        .await
    }

    /// Acknowledges the answer and takes its SDP (the early one stands when it has none); the
    /// other early dialogs are cancelled and later answers from forks hung up.
    async fn acknowledge(
        mut self,
        mut session: InviteSession,
        answer: &TsxResponse,
        sdp: &mut PhoneSdp,
    ) -> Result<InviteSession, String> {
        let answered = match sdp_of(answer) {
            Some(body) => sdp.answered(body).map_err(|e| e.to_string()),
            None if sdp.media.borrow().is_some() => Ok(()),
            None => Err("no SDP in the answer".to_string()),
        };
        let mut ack = create_ack(&session.dialog, answer.base_headers.cseq.cseq)
            .await
            .map_err(|e| e.to_string())?;
        session
            .endpoint
            .send_outgoing_request(&mut ack)
            .await
            .map_err(|e| e.to_string())?;
        self.initiator.set_acknowledge(&session, ack);
        if let Err(e) = answered {
            let _ = session.terminate().await;
            return Err(e);
        }
        // The INVITE transaction lives on a while: the answer's retransmissions get the ACK
        // again, forks that answer too are hung up. Other forks still ringing are left to the
        // proxy that forked them, which cancels them once it passes on a 2xx (§16.7).
        let mut initiator = self.initiator;
        tokio::spawn(async move {
            while let Ok(response) = initiator.receive().await {
                match response {
                    Response::Session(mut fork, _) => {
                        let _ = fork.terminate().await;
                    }
                    Response::Failure(_) | Response::Finished => break,
                    Response::Provisional(_) | Response::Early(..) | Response::EarlyEvent => {}
                }
            }
        });
        Ok(session)
    }

    /// CANCELs the INVITE (RFC 3261 §9.1), re-sent over UDP until the INVITE's final response
    /// (487) comes, for a few seconds at most; a callee that answered meanwhile is hung up.
    /// Not ezk's `InviteInitiator::cancel`: it sends the CANCEL with a Via branch of its own,
    /// which matches no INVITE at the callee (§9.2), so a ringing call would ring on.
    async fn cancel(mut self, peer: &str) {
        let Some(mut cancel) = self.cancel_request() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + CANCEL_TIMEOUT;
        let mut wait = Duration::from_millis(500);
        loop {
            if let Err(e) = self.endpoint.send_outgoing_request(&mut cancel).await {
                tracing::debug!("{peer}: CANCEL: {e}");
                return;
            }
            let until = deadline.min(tokio::time::Instant::now() + wait);
            wait = (wait * 2).min(Duration::from_secs(4));
            loop {
                let response = match tokio::time::timeout_at(until, self.initiator.receive()).await
                {
                    Ok(Ok(response)) => response,
                    Ok(Err(e)) => {
                        tracing::debug!("{peer}: CANCEL: {e}");
                        return;
                    }
                    Err(_) if until >= deadline => {
                        tracing::debug!("{peer}: no final response to the CANCEL");
                        return;
                    }
                    Err(_) => break, // sent again
                };
                let answered = match response {
                    Response::Failure(_) | Response::Finished => return,
                    Response::Session(session, answer) => Some((session, answer)),
                    Response::Early(early, ..) => {
                        self.earlies.push(early);
                        None
                    }
                    Response::EarlyEvent => match self.early_response().await {
                        Some((i, Ok(EarlyResponse::Success(session, answer)))) => {
                            self.earlies.remove(i);
                            Some((session, answer))
                        }
                        _ => None,
                    },
                    Response::Provisional(_) => None,
                };
                if let Some((mut session, answer)) = answered {
                    // Answered before the CANCEL arrived: acknowledged, then hung up.
                    if let Ok(mut ack) =
                        create_ack(&session.dialog, answer.base_headers.cseq.cseq).await
                    {
                        let _ = self.endpoint.send_outgoing_request(&mut ack).await;
                    }
                    let _ = session.terminate().await;
                    return;
                }
            }
        }
    }

    /// The CANCEL for the INVITE in progress: its Request-URI, its top Via (the same branch),
    /// From, To, Call-ID, Route and CSeq number, to the same address.
    fn cancel_request(&self) -> Option<OutgoingRequest> {
        let invite = self.initiator.transaction()?.request();
        let mut cancel = Request::new(Method::CANCEL, invite.msg.line.uri.clone());
        let mut via = false;
        for (name, value) in invite.msg.headers.iter() {
            let copied = if *name == Name::VIA {
                !std::mem::replace(&mut via, true)
            } else {
                [
                    Name::FROM,
                    Name::TO,
                    Name::CALL_ID,
                    Name::ROUTE,
                    Name::MAX_FORWARDS,
                ]
                .contains(name)
            };
            if copied {
                cancel.headers.insert(name.clone(), value.clone());
            }
        }
        let cseq = invite.msg.headers.get_named::<CSeq>().ok()?.cseq;
        cancel
            .headers
            .insert_named(&CSeq::new(cseq, Method::CANCEL));
        Some(OutgoingRequest {
            msg: cancel,
            parts: OutgoingParts {
                transport: invite.parts.transport.clone(),
                destination: invite.parts.destination,
                buffer: Default::default(),
            },
        })
    }
}

/// Takes a provisional response's SDP, if it has one, as the media to bridge: early media.
fn early_media(sdp: &PhoneSdp, response: &TsxResponse, peer: &str) {
    let Some(body) = sdp_of(response) else {
        return;
    };
    match sdp.answered(body) {
        Ok(()) => tracing::info!("{peer}: early media ({})", response.line),
        Err(e) => tracing::info!("{peer}: early media unusable: {e}"),
    }
}

/// A response's body when it is SDP.
fn sdp_of(response: &TsxResponse) -> Option<&str> {
    let kind = response.headers.get_named::<ContentType>().ok()?;
    if !kind.0.eq_ignore_ascii_case("application/sdp") {
        return None;
    }
    std::str::from_utf8(&response.body)
        .ok()
        .filter(|body| !body.trim().is_empty())
}

/// A dialled call once answered: ezk's INVITE session, run as ezk's `Call` runs calls that came
/// in (session refreshes, re-INVITEs for hold and resume, BYE), our SDP answering.
pub(crate) struct Dialled {
    session: InviteSession,
    sdp: PhoneSdp,
}

impl call::Session for Dialled {
    type Event = InviteSessionEvent;

    async fn event(&mut self) -> Result<InviteSessionEvent, String> {
        self.session.run().await.map_err(|e| e.to_string())
    }

    async fn handle(&mut self, event: InviteSessionEvent) -> Result<bool, String> {
        match event {
            InviteSessionEvent::RefreshNeeded => {
                self.session.refresh().await.map_err(|e| e.to_string())?;
            }
            InviteSessionEvent::ReInviteReceived(reinvite) => self.reinvite(reinvite).await?,
            InviteSessionEvent::Notify(mut notify) => {
                // We subscribe to nothing (no REFER of ours) that a NOTIFY could be about.
                let response = self.session.dialog.create_response(
                    &notify,
                    StatusCode::CALL_OR_TRANSACTION_DOES_NOT_EXIST,
                    None,
                );
                let transaction = self.session.endpoint.create_server_tsx(&mut notify);
                if let Ok(response) = response {
                    let _ = transaction.respond(response).await;
                }
            }
            InviteSessionEvent::Bye(bye) => {
                self.session
                    .handle_bye(bye)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(false);
            }
            InviteSessionEvent::Terminated => return Ok(false),
        }
        Ok(true)
    }

    async fn hang_up(mut self) -> Result<(), String> {
        self.session
            .terminate()
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

impl Dialled {
    /// A re-INVITE (hold, resume, a new address): its offer answered in our 200, or, without
    /// one, our offer in the 200 and the answer taken from the ACK. SDP we cannot take is 488.
    async fn reinvite(&mut self, reinvite: ReInviteReceived) -> Result<(), String> {
        let offer = std::str::from_utf8(&reinvite.invite.body)
            .unwrap_or_default()
            .trim()
            .to_string();
        let ours = if offer.is_empty() {
            self.sdp.create_sdp_offer().await
        } else {
            match SessionDescription::parse(&BytesStr::from(offer.clone())) {
                Ok(offer) => self.sdp.receive_sdp_offer(offer).await,
                Err(e) => Err(NegotiationError::Parse(e.to_string())),
            }
        };
        let dialog = &self.session.dialog;
        let ours = match ours {
            Ok(ours) => ours,
            Err(e) => {
                tracing::info!("re-INVITE refused: {e}");
                let response = dialog
                    .create_response(&reinvite.invite, StatusCode::NOT_ACCEPTABLE_HERE, None)
                    .map_err(|e| e.to_string())?;
                return reinvite
                    .transaction
                    .respond_failure(response)
                    .await
                    .map_err(|e| e.to_string());
            }
        };
        let mut response = dialog
            .create_response(&reinvite.invite, StatusCode::OK, None)
            .map_err(|e| e.to_string())?;
        response
            .msg
            .headers
            .insert_named(&ContentType(BytesStr::from_static("application/sdp")));
        response.msg.body = ours.to_string().into();
        let ack = self
            .session
            .handle_reinvite_success(reinvite, response)
            .await
            .map_err(|e| e.to_string())?;
        if offer.is_empty() {
            let answer = std::str::from_utf8(&ack.body).unwrap_or_default();
            self.sdp.answered(answer).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The address our Contact and SDP give for calls to `trunk`: the configured public one, else
/// the one SIP listens on, else the one the system routes to the trunk from.
async fn local_address(shared: &Shared, trunk: &Trunk) -> IpAddr {
    if let Some(public) = shared.config.public_address {
        return public;
    }
    let listen = shared.config.listen.ip();
    if !listen.is_unspecified() {
        return listen;
    }
    let routed = async {
        let to = trunk.address().await?;
        let bind: SocketAddr = if to.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        // A connected UDP socket sends nothing; it only asks the routing table.
        let socket = UdpSocket::bind(bind).await.ok()?;
        socket.connect(to).await.ok()?;
        socket.local_addr().ok().map(|a| a.ip())
    };
    routed.await.unwrap_or(shared.config.rtp_address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(domain: &str, transport: Transport) -> Trunk {
        Trunk {
            name: "main".into(),
            domain: domain.into(),
            transport,
            register: false,
            username: None,
            password: None,
            authorization_id: None,
            outbound_proxy: None,
            caller_id: None,
        }
    }

    #[test]
    fn numbers_are_checked() {
        assert!(valid_number("+4930123456"));
        assert!(valid_number("*21#"));
        assert!(!valid_number(""));
        assert!(!valid_number("12 34"));
        assert!(!valid_number("1234@evil"));
        assert!(!valid_number(&"1".repeat(33)));
        assert!(valid_number(&"1".repeat(32)));
    }

    #[test]
    fn trunks_make_uris() {
        let udp = trunk("sip.example.com", Transport::Udp);
        assert_eq!(udp.uri("1234"), "sip:1234@sip.example.com");
        assert_eq!(udp.uri(""), "sip:sip.example.com");
        let tcp = trunk("127.0.0.1:5080", Transport::Tcp);
        assert_eq!(tcp.uri("1234"), "sip:1234@127.0.0.1:5080;transport=tcp");
        let tls = trunk("[::1]:5061", Transport::Tls);
        assert_eq!(tls.uri("+1"), "sips:+1@[::1]:5061");
        for uri in [udp.uri("1234"), tcp.uri("1234"), tls.uri("+1")] {
            assert!(uri.parse::<SipUri>().is_ok(), "{uri} parses");
        }
    }

    #[test]
    fn caller_ids_are_checked() {
        assert!(valid_user("+4930123"));
        assert!(valid_user("switchyard"));
        assert!(!valid_user("a b"));
        assert!(!valid_user("a@b"));
        assert!(!valid_user("<a>"));
    }

    #[test]
    fn a_trunk_shows_no_password() {
        let mut t = trunk("sip.example.com", Transport::Udp);
        t.password = Some("hunter2".into());
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("****"),
            "{shown}"
        );
    }
}
