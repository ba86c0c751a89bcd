//! One call's dialog: routing the INVITE, joining the channel while the phone rings, the
//! answer, then SIP's events (re-INVITEs for hold and resume, session refreshes, BYE) until
//! either side hangs up. Its media runs beside it in [`crate::bridge`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytesstr::BytesStr;
use ezk_sdp_types::SessionDescription;
use ezk_sip_core::{Endpoint, IncomingRequest, MayTake};
use ezk_sip_types::StatusCode;
use ezk_sip_types::header::typed::{Contact, ContentType};
use ezk_sip_types::host::{Host, HostPort};
use ezk_sip_types::uri::NameAddr;
use ezk_sip_types::uri::{SipUri, SipUriUserPart};
use ezk_sip_ua::{Call, CallEvent, InboundCall, MediaBackend};
use switchyard_codec::audio::parse_dtmf_relay;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::bridge::{Bridge, Command, Event};
use crate::leg::{ChannelLeg, Join};
use crate::sdp::{self, Local, NegotiationError, PhoneMedia};
use crate::{Incoming, Shared, TlsConfig};

/// How long the channel leg may take to connect while the phone rings.
const JOIN_TIMEOUT: Duration = Duration::from_secs(8);
/// Addresses the rate limiter remembers, at most; beyond, idle ones are forgotten.
const LIMITER_ENTRIES: usize = 10_000;

/// A call that is up, as the connector lists it by channel.
pub(crate) struct Live {
    pub id: u64,
    /// The dialog's Call-ID, which in-dialog INFO requests carry.
    pub call_id: String,
    pub route: crate::Route,
    /// `sip:<number>`: what participants see it as and may address it by.
    pub caller: String,
    pub commands: mpsc::Sender<Command>,
}

/// Takes a new call: refuses it with the status that says why, or answers it and runs it to
/// its end.
pub(crate) async fn inbound(shared: Arc<Shared>, endpoint: Endpoint, invite: IncomingRequest) {
    let stats = &shared.stats;
    stats.calls_in.fetch_add(1, Ordering::Relaxed);
    let source = invite.tp_info.source;
    if !shared.limits.admit(source.ip(), Instant::now()) {
        stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        refuse(&endpoint, invite, StatusCode::SERVICE_UNAVAILABLE).await;
        return;
    }
    let headers: Vec<(String, String)> = invite
        .headers
        .iter()
        .map(|(name, value)| (name.as_print_str().to_string(), value.to_string()))
        .collect();
    let call_id = invite.base_headers.call_id.0.to_string();
    let request_user = user_of(&invite.line.uri);
    let to_user = user_of(&invite.base_headers.to.uri.uri);
    let from_user = user_of(&invite.base_headers.from.uri.uri);
    let incoming = Incoming {
        request_user: &request_user,
        to_user: &to_user,
        from_user: &from_user,
        headers: &headers,
    };
    let Some(route) = shared.directory.route(&incoming) else {
        tracing::info!("call from {source} to {request_user:?}: no mapping routes it (404)");
        stats.refused_no_route.fetch_add(1, Ordering::Relaxed);
        refuse(&endpoint, invite, StatusCode::NOT_FOUND).await;
        return;
    };
    let public = public_address(&shared, &invite);
    let Some((rtp, rtp_port)) = bind_rtp(&shared).await else {
        tracing::warn!("call from {source}: no free RTP port (503)");
        stats.refused_unavailable.fetch_add(1, Ordering::Relaxed);
        refuse(&endpoint, invite, StatusCode::SERVICE_UNAVAILABLE).await;
        return;
    };
    let local = Local {
        address: public,
        rtp_port,
        session_id: rand::random::<u32>().into(),
    };
    // The offer is checked before anything is promised: no common codec is a 488 (RFC 3261
    // §13.3.1.3), and an INVITE without one is answered with our offer in the 200.
    let initial = match std::str::from_utf8(&invite.body) {
        Ok(body) if !body.trim().is_empty() => match sdp::answer(body, &local, 0) {
            Ok((_, media)) => Some(media),
            Err(e) => {
                tracing::info!("call from {source}: {e} (488)");
                stats.refused_sdp.fetch_add(1, Ordering::Relaxed);
                refuse(&endpoint, invite, StatusCode::NOT_ACCEPTABLE_HERE).await;
                return;
            }
        },
        Ok(_) => None,
        Err(_) => {
            stats.refused_sdp.fetch_add(1, Ordering::Relaxed);
            refuse(&endpoint, invite, StatusCode::BAD_REQUEST).await;
            return;
        }
    };
    let contact = contact(public, shared.config.listen.port());
    let (media_tx, media_rx) = watch::channel(initial);
    let backend = PhoneSdp {
        local,
        version: 0,
        media: media_tx,
    };
    let mut ringing = match InboundCall::from_invite(endpoint.clone(), invite, contact) {
        Ok(call) => call.with_media(backend),
        Err(failed) => {
            let (invite, e) = *failed;
            tracing::info!("call from {source}: {e} (400)");
            stats.refused_sdp.fetch_add(1, Ordering::Relaxed);
            refuse(&endpoint, invite, StatusCode::BAD_REQUEST).await;
            return;
        }
    };
    let _ = ringing.respond_provisional(StatusCode::RINGING).await;

    let display = if from_user.is_empty() {
        "sip".to_string()
    } else {
        format!("sip:{from_user}")
    };
    let settled = media_rx.borrow().clone();
    let join = join_channel(&shared, &route, &display, settled.as_ref());
    let leg = tokio::select! {
        () = ringing.cancelled() => {
            stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        leg = join => leg,
    };
    let leg = match leg {
        Ok(leg) => leg,
        Err(e) => {
            tracing::warn!("call from {source} into {:?}: {e} (503)", route.channel);
            stats.refused_unavailable.fetch_add(1, Ordering::Relaxed);
            let _ = ringing.decline(StatusCode::SERVICE_UNAVAILABLE, None).await;
            return;
        }
    };
    // Listed before the answer: an INFO may follow the ACK before this task runs again.
    let (listed, commands) = list(&shared, &route, &display, &call_id);
    let call = match ringing.accept().await {
        Ok(call) => call,
        Err(e) => {
            tracing::info!("call from {source}: not answered: {e}");
            leg.leave().await;
            return;
        }
    };
    tracing::info!(
        "call from {source} ({from_user:?}) joined channel {:?} of {:?}",
        route.channel,
        route.application
    );
    let up = Up {
        leg,
        phone: rtp,
        media: media_rx,
        route,
        display,
        listed,
        commands,
        peer: format!("call from {source}"),
    };
    let running = start_media(&shared, up);
    run_up(&shared, call, running, std::future::pending()).await;
}

/// What a call that is up (answered, its channel joined) is run with, whichever side placed it.
pub(crate) struct Up {
    pub leg: ChannelLeg,
    /// The call's RTP socket, to the phone.
    pub phone: UdpSocket,
    /// The phone's media as offer/answer settles it (re-INVITEs change it).
    pub media: watch::Receiver<Option<PhoneMedia>>,
    pub route: crate::Route,
    /// `sip:<number>`: what participants see the phone as.
    pub display: String,
    /// The call in the connector's list ([`list`]), and the commands that list takes for it.
    pub listed: Listed,
    pub commands: mpsc::Receiver<Command>,
    /// How logs name the call ("call from 192.0.2.1:5060", "call to sip:1234").
    pub peer: String,
}

/// A call's media task (the bridge), started once its channel is joined: for calls out, before
/// the INVITE goes out, so that early media is heard.
pub(crate) struct Running {
    task: tokio::task::JoinHandle<()>,
    events: mpsc::Receiver<Event>,
    listed: Listed,
    route: crate::Route,
    display: String,
    peer: String,
}

/// Starts `up`'s media task.
pub(crate) fn start_media(shared: &Shared, up: Up) -> Running {
    let Up {
        leg,
        phone,
        media,
        route,
        display,
        listed,
        commands,
        peer,
    } = up;
    let (events_tx, events) = mpsc::channel(32);
    let bridge = Bridge {
        phone,
        media,
        leg,
        events: events_tx,
        commands,
        rtp_timeout: shared.config.rtp_timeout,
        stats: shared.stats.clone(),
    };
    Running {
        task: tokio::spawn(bridge.run()),
        events,
        listed,
        route,
        display,
        peer,
    }
}

impl Running {
    /// Passes the phone's key presses on until the media ends (no RTP for the timeout, a
    /// failure, or the channel leg gone): why it ended.
    pub async fn ended(&mut self, shared: &Shared) -> String {
        loop {
            match self.events.recv().await {
                Some(Event::Digit(digit)) => {
                    tracing::debug!("{}: DTMF {digit}", self.peer);
                    shared.directory.digit(&self.route, &self.display, digit);
                }
                Some(Event::Timeout) => {
                    return format!("no RTP for {:?}", shared.config.rtp_timeout);
                }
                Some(Event::Failed(e)) => return format!("media failed: {e}"),
                None => return "the channel side ended".to_string(),
            }
        }
    }

    /// Ends the media task: out of the list, the bridge's last command sender is gone.
    pub async fn stop(self) {
        drop(self.listed);
        let _ = self.task.await;
    }
}

/// The SIP side of a call that is up: ezk's [`Call`] for calls that came in, and
/// [`crate::dial::Dialled`] for calls out (ezk builds its `Call` only in its own `OutboundCall`,
/// which answers no proxy challenge and hides early media).
pub(crate) trait Session {
    type Event;
    /// The dialog's next event; cancel-safe, as it is raced against the media's.
    async fn event(&mut self) -> Result<Self::Event, String>;
    /// Handles `event`: `Ok(false)` once the peer has ended the call.
    async fn handle(&mut self, event: Self::Event) -> Result<bool, String>;
    /// Ends the call from our side (BYE).
    async fn hang_up(self) -> Result<(), String>;
}

impl Session for Call<PhoneSdp> {
    type Event = CallEvent<PhoneSdp>;

    async fn event(&mut self) -> Result<CallEvent<PhoneSdp>, String> {
        self.run().await.map_err(|e| e.to_string())
    }

    async fn handle(&mut self, event: CallEvent<PhoneSdp>) -> Result<bool, String> {
        match event {
            CallEvent::Internal(event) => self
                .handle_internal_event(event)
                .await
                .map(|()| true)
                .map_err(|e| e.to_string()),
            CallEvent::Media(never) => match never {},
            CallEvent::Terminated => Ok(false),
        }
    }

    async fn hang_up(self) -> Result<(), String> {
        self.terminate().await.map_err(|e| e.to_string())
    }
}

/// Runs a call that is up until either side hangs up or `stop` (an administrator's hang-up)
/// ends: its media task beside SIP's events, the call listed under its channel meanwhile.
/// Inbound and dialled calls share it, so both behave alike once answered.
pub(crate) async fn run_up<S: Session>(
    shared: &Shared,
    mut call: S,
    mut running: Running,
    stop: impl Future<Output = ()>,
) {
    let stats = &shared.stats;
    stats.calls_active.fetch_add(1, Ordering::Relaxed);
    let peer = running.peer.clone();
    let mut stop = std::pin::pin!(stop);
    let hang_up = loop {
        tokio::select! {
            event = call.event() => match event {
                Ok(event) => match call.handle(event).await {
                    Ok(true) => {}
                    Ok(false) => break false,
                    Err(e) => {
                        tracing::info!("{peer}: {e}");
                        break false;
                    }
                },
                Err(e) => {
                    tracing::info!("{peer}: {e}");
                    break false;
                }
            },
            why = running.ended(shared) => {
                tracing::info!("{peer}: {why}, hanging up");
                break true;
            }
            () = &mut stop => {
                tracing::info!("{peer}: hung up by an administrator");
                break true;
            }
        }
    };
    if hang_up && let Err(e) = call.hang_up().await {
        tracing::debug!("{peer}: BYE: {e}");
    }
    running.stop().await;
    stats.calls_active.fetch_sub(1, Ordering::Relaxed);
    tracing::info!("{peer} ended");
}

/// A call in the connector's list by channel (what INFO and participants' key presses find);
/// it leaves the list when dropped.
pub(crate) struct Listed {
    shared: Arc<Shared>,
    channel: String,
    id: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut calls = self
            .shared
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = calls.get_mut(&self.channel) {
            live.retain(|call| call.id != self.id);
            if live.is_empty() {
                calls.remove(&self.channel);
            }
        }
    }
}

/// Lists a call under its channel as `display`, its dialog's Call-ID `call_id` (empty when
/// unknown: it then matches no INFO); the receiver takes the commands sent to it.
pub(crate) fn list(
    shared: &Arc<Shared>,
    route: &crate::Route,
    display: &str,
    call_id: &str,
) -> (Listed, mpsc::Receiver<Command>) {
    let (commands, commands_rx) = mpsc::channel(32);
    let id = rand::random::<u64>();
    shared
        .calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(route.channel.clone())
        .or_default()
        .push(Live {
            id,
            call_id: call_id.to_string(),
            route: route.clone(),
            caller: display.to_string(),
            commands,
        });
    let listed = Listed {
        shared: shared.clone(),
        channel: route.channel.clone(),
        id,
    };
    (listed, commands_rx)
}

/// Joins `route`'s channel as `display`: a token, the `POST /mix` and its connection. `media`
/// is the call's, when settled: its codec's rate is the leg's ([`crate::bridge::call_rate`]).
pub(crate) async fn join_channel(
    shared: &Shared,
    route: &crate::Route,
    display: &str,
    media: Option<&PhoneMedia>,
) -> Result<ChannelLeg, String> {
    let token = shared
        .directory
        .token(route, display)
        .map_err(|e| format!("no token: {e}"))?;
    let join = Join {
        base: shared.config.gateway.clone(),
        channel: route.channel.clone(),
        token,
        rate: media.map_or(48_000, crate::bridge::call_rate),
    };
    let mut leg = ChannelLeg::join(&shared.http, &shared.identity, &join)
        .await
        .map_err(|e| e.to_string())?;
    leg.connect(JOIN_TIMEOUT).await.map_err(|e| e.to_string())?;
    Ok(leg)
}

/// Takes an INFO in one of our calls' dialogs (RFC 6086): `application/dtmf-relay` and
/// `application/dtmf` bodies are key presses, as some phones send them instead of RFC 4733
/// events; other bodies get 415. INFO outside our calls is left to the dialog layer (481).
pub(crate) async fn info(
    shared: &Shared,
    endpoint: &Endpoint,
    request: MayTake<'_, IncomingRequest>,
) {
    let call_id = request.base_headers.call_id.0.to_string();
    let found = shared
        .calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .flatten()
        .find(|call| !call.call_id.is_empty() && call.call_id == call_id)
        .map(|call| (call.route.clone(), call.caller.clone()));
    let Some((route, caller)) = found else {
        return;
    };
    let mut request = request.take();
    let kind = request
        .headers
        .get_named::<ContentType>()
        .map(|c| c.0.to_ascii_lowercase())
        .unwrap_or_default();
    let body = std::str::from_utf8(&request.body).unwrap_or_default();
    let dtmf = kind.starts_with("application/dtmf");
    let code = if dtmf {
        StatusCode::OK
    } else {
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    };
    if dtmf && let Some(digit) = parse_dtmf_relay(body) {
        shared.stats.digits_in.fetch_add(1, Ordering::Relaxed);
        shared.directory.digit(&route, &caller, digit);
    }
    let response = endpoint.create_response(&request, code, None);
    let transaction = endpoint.create_server_tsx(&mut request);
    if let Err(e) = transaction.respond(response).await {
        tracing::debug!("answering an INFO: {e}");
    }
}

/// Answers an INVITE we will not take with `code`.
async fn refuse(endpoint: &Endpoint, mut invite: IncomingRequest, code: StatusCode) {
    let response = endpoint.create_response(&invite, code, None);
    let transaction = endpoint.create_server_inv_tsx(&mut invite);
    if let Err(e) = transaction.respond_failure(response).await {
        tracing::debug!("refusing a call: {e}");
    }
}

fn user_of(uri: &SipUri) -> String {
    match &uri.user_part {
        SipUriUserPart::Empty => String::new(),
        SipUriUserPart::User(user) => user.to_string(),
        SipUriUserPart::UserPw(user) => user.user.to_string(),
    }
}

/// The address our Contact and SDP give: the configured public one, else the one the INVITE
/// came in on when SIP listens on a single address, else the Request-URI's host.
fn public_address(shared: &Shared, invite: &IncomingRequest) -> IpAddr {
    if let Some(public) = shared.config.public_address {
        return public;
    }
    let bound = invite.tp_info.transport.bound().ip();
    if !bound.is_unspecified() {
        return bound;
    }
    match &invite.line.uri.host_port.host {
        Host::IP4(ip) => IpAddr::V4(*ip),
        Host::IP6(ip) => IpAddr::V6(*ip),
        Host::Name(_) => shared.config.rtp_address,
    }
}

pub(crate) fn contact(address: IpAddr, port: u16) -> Contact {
    let host = match address {
        IpAddr::V4(ip) => Host::IP4(ip),
        IpAddr::V6(ip) => Host::IP6(ip),
    };
    let uri = SipUri::new(HostPort {
        host,
        port: Some(port),
    })
    .user(BytesStr::from_static("switchyard"));
    Contact::new(NameAddr::uri(uri))
}

/// A socket on a free even port of the configured range (odd ones are left for RTCP).
pub(crate) async fn bind_rtp(shared: &Shared) -> Option<(UdpSocket, u16)> {
    let (low, high) = shared.config.rtp_ports;
    let span = u32::from(high.saturating_sub(low) / 2).max(1);
    let start = rand::random::<u32>() % span;
    for i in 0..span.min(64) {
        let port = low.saturating_add((((start + i) % span) * 2) as u16);
        let addr = SocketAddr::new(shared.config.rtp_address, port);
        if let Ok(socket) = UdpSocket::bind(addr).await {
            return Some((socket, port));
        }
    }
    None
}

/// The connector's SDP side of the SIP stack's offer/answer: ours ([`sdp`]), with each
/// settled [`PhoneMedia`] handed to the call's media task.
pub(crate) struct PhoneSdp {
    pub local: Local,
    pub version: u64,
    pub media: watch::Sender<Option<PhoneMedia>>,
}

impl PhoneSdp {
    /// Takes the phone's answer to our offer (or its early media's SDP) as the media to use.
    pub fn answered(&self, answer: &str) -> Result<(), NegotiationError> {
        let media = sdp::answered(answer)?;
        self.media.send_replace(Some(media));
        Ok(())
    }
}

fn to_ezk(text: String) -> Result<SessionDescription, NegotiationError> {
    SessionDescription::parse(&BytesStr::from(text))
        .map_err(|e| NegotiationError::Parse(e.to_string()))
}

impl MediaBackend for PhoneSdp {
    type Error = NegotiationError;
    type Event = std::convert::Infallible;

    fn has_media(&self) -> bool {
        true
    }

    async fn create_sdp_offer(&mut self) -> Result<SessionDescription, NegotiationError> {
        self.version += 1;
        to_ezk(sdp::offer(&self.local, self.version))
    }

    async fn receive_sdp_answer(
        &mut self,
        answer: SessionDescription,
    ) -> Result<(), NegotiationError> {
        self.answered(&answer.to_string())
    }

    async fn receive_sdp_offer(
        &mut self,
        offer: SessionDescription,
    ) -> Result<SessionDescription, NegotiationError> {
        self.version += 1;
        let (answer, media) = sdp::answer(&offer.to_string(), &self.local, self.version)?;
        self.media.send_replace(Some(media));
        to_ezk(answer)
    }

    async fn run(&mut self) -> Result<Self::Event, NegotiationError> {
        std::future::pending().await
    }
}

/// New calls per source address: a token bucket each, refilled at the configured rate.
pub(crate) struct RateLimits {
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimits {
    pub fn new(per_second: u32) -> RateLimits {
        RateLimits {
            per_second: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a new call from `ip` may go on (taken at call set-up, never per packet).
    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let burst = self.per_second * 2.0;
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        if buckets.len() >= LIMITER_ENTRIES {
            let idle = Duration::from_secs(10);
            buckets.retain(|_, (_, at)| now.duration_since(*at) < idle);
        }
        let (tokens, at) = buckets.entry(ip).or_insert((burst, now));
        let refill = now.duration_since(*at).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The TLS listener's acceptor: rustls with aws-lc-rs, as every TLS endpoint here.
pub(crate) fn tls_acceptor(tls: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(tls.certificate_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(|e| format!("key: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

// ok: the unwrap()/expect() calls below are test-only, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_a_burst_then_the_rate() {
        let limits = RateLimits::new(2);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let t0 = Instant::now();
        let admitted = (0..10).filter(|_| limits.admit(ip, t0)).count();
        assert_eq!(admitted, 4, "a burst of twice the rate");
        assert!(limits.admit(other, t0), "another source has its own bucket");
        assert!(!limits.admit(ip, t0 + Duration::from_millis(100)));
        assert!(limits.admit(ip, t0 + Duration::from_millis(600)));
    }
}
