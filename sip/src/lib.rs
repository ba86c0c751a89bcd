//! The SIP Connector: phone calls into channels. A call that arrives (INVITE over UDP, TCP or
//! TLS) is routed to an application's channel ([`Directory`]), joins that channel's mix as an
//! MCU connection of its own ([`leg`]: audio only, through the gateway's `POST /mix`, as a
//! browser would), and its audio is bridged ([`bridge`]) between the phone's plain RTP and the
//! channel: the caller hears everyone but itself, everyone hears the caller, and SFU
//! participants see the caller's audio as a publication.
//!
//! The SIP stack (transactions, RFC 3261 timers, dialogs, session timers) is the ezk family's;
//! what is ours is the routing, the offer/answer for plain RTP ([`sdp`]) and the media bridge.
//! A call is two tasks: the dialog's (SIP events: re-INVITE, BYE, session refresh) and the
//! media's (both sockets and every codec state), which share nothing but two channels.

#![forbid(unsafe_code)]

mod bridge;
mod call;
pub mod dial;
mod fifo;
pub mod leg;
mod register;
pub mod sdp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ezk_sip_core::{Endpoint, IncomingRequest, Layer, MayTake};
use ezk_sip_types::Method;
use ezk_sip_ua::dialog::DialogLayer;
use ezk_sip_ua::invite::InviteLayer;
use switchyard_dataplane::dtls::Identity;

pub use dial::{Dial, DialError, Transport, Trunk, valid_number};

/// Where the connector listens and how its calls behave.
#[derive(Debug, Clone)]
pub struct Config {
    /// SIP over UDP and TCP (5060 by default).
    pub listen: SocketAddr,
    /// SIP over TLS (5061 by default), with a certificate chain and key in PEM.
    pub tls: Option<TlsConfig>,
    /// The address in our Contact headers and SDP: the public one behind NAT
    /// (`EXTERNAL:PUBLICIPADDRESS`), else the address SIP listens on.
    pub public_address: Option<IpAddr>,
    /// The local address RTP sockets bind to.
    pub rtp_address: IpAddr,
    /// RTP ports are taken from this range (even ones, one per call).
    pub rtp_ports: (u16, u16),
    /// A phone that should be sending and has sent nothing this long is hung up.
    pub rtp_timeout: Duration,
    /// The gateway (or all-in-one) whose `POST /mix/{channel}` calls join through.
    pub gateway: String,
    /// New calls from one address, at most this many a second (a burst of twice that).
    pub calls_per_second_per_source: u32,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub certificate_pem: String,
    pub key_pem: String,
}

/// Where a call goes: an application's channel, and a token to join it with.
pub trait Directory: Send + Sync + 'static {
    /// The application and channel for a call, or `None` when nothing maps it (404).
    fn route(&self, call: &Incoming<'_>) -> Option<Route>;
    /// A client token for `route`'s channel that may publish and subscribe, for `user`.
    fn token(&self, route: &Route, user: &str) -> Result<String, String>;
    /// The phone of `caller` (`sip:<number>`) in `route`'s channel pressed `digit`: tell the
    /// channel's participants.
    fn digit(&self, route: &Route, caller: &str, digit: char);
}

/// What routing knows of an incoming call.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The Request-URI's user part (the number or name dialled).
    pub request_user: &'a str,
    /// The To URI's user part.
    pub to_user: &'a str,
    /// The From URI's user part (the caller).
    pub from_user: &'a str,
    /// Every header by name, as received.
    pub headers: &'a [(String, String)],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub application: String,
    pub channel: String,
}

/// Counters for /metrics (`switchyard_sip_*`).
#[derive(Debug, Default)]
pub struct Stats {
    pub calls_in: AtomicU64,
    pub calls_active: AtomicU64,
    /// Calls refused: no route (404), no common codec or bad SDP (488), no capacity or no
    /// channel (503), rate-limited (503).
    pub refused_no_route: AtomicU64,
    pub refused_sdp: AtomicU64,
    pub refused_unavailable: AtomicU64,
    pub rate_limited: AtomicU64,
    pub cancelled: AtomicU64,
    pub rtp_timeouts: AtomicU64,
    pub digits_in: AtomicU64,
    pub digits_out: AtomicU64,
    /// RTP from the phone that does not parse or has a payload type not negotiated.
    pub malformed_rtp: AtomicU64,
    /// RTP from an address other than the latched one.
    pub strangers: AtomicU64,
    /// Phone payloads the codec could not decode.
    pub undecodable: AtomicU64,
    /// Datagrams on a channel leg that failed (SRTP, DTLS).
    pub channel_errors: AtomicU64,
    pub packets_to_phones: AtomicU64,
    /// Calls out placed, and those that failed before the callee answered.
    pub calls_out: AtomicU64,
    pub calls_out_failed: AtomicU64,
    /// Trunk registrations that succeeded, and those that failed or lapsed.
    pub registrations: AtomicU64,
    pub registration_failures: AtomicU64,
}

impl Stats {
    /// `(name, help, value)` for each counter, for the Prometheus text format.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            (
                "calls_in_total",
                "Calls that arrived (INVITEs out of a dialog).",
                get(&self.calls_in),
            ),
            ("calls_active", "Calls up now.", get(&self.calls_active)),
            (
                "refused_no_route_total",
                "Calls no mapping routed (404).",
                get(&self.refused_no_route),
            ),
            (
                "refused_sdp_total",
                "Calls refused for their SDP (488).",
                get(&self.refused_sdp),
            ),
            (
                "refused_unavailable_total",
                "Calls refused for want of a port or a channel (503).",
                get(&self.refused_unavailable),
            ),
            (
                "rate_limited_total",
                "Calls refused by the per-source rate limit (503).",
                get(&self.rate_limited),
            ),
            (
                "cancelled_total",
                "Calls the caller cancelled before the answer.",
                get(&self.cancelled),
            ),
            (
                "rtp_timeouts_total",
                "Calls hung up for RTP inactivity.",
                get(&self.rtp_timeouts),
            ),
            (
                "dtmf_digits_in_total",
                "Digits received from phones.",
                get(&self.digits_in),
            ),
            (
                "dtmf_digits_out_total",
                "Digits sent to phones.",
                get(&self.digits_out),
            ),
            (
                "malformed_rtp_total",
                "Phone RTP dropped: unreadable or an unnegotiated payload type.",
                get(&self.malformed_rtp),
            ),
            (
                "rtp_strangers_total",
                "Phone RTP dropped: not from the latched address.",
                get(&self.strangers),
            ),
            (
                "undecodable_total",
                "Phone payloads the codec refused.",
                get(&self.undecodable),
            ),
            (
                "channel_errors_total",
                "Channel-leg datagrams that failed SRTP or DTLS.",
                get(&self.channel_errors),
            ),
            (
                "packets_to_phones_total",
                "RTP packets sent to phones.",
                get(&self.packets_to_phones),
            ),
            (
                "calls_out_total",
                "Calls out placed through trunks.",
                get(&self.calls_out),
            ),
            (
                "calls_out_failed_total",
                "Calls out that failed before the answer (refused, unanswered, no channel).",
                get(&self.calls_out_failed),
            ),
            (
                "registrations_total",
                "Registrations with trunks that succeeded.",
                get(&self.registrations),
            ),
            (
                "registration_failures_total",
                "Registrations with trunks that failed or lapsed.",
                get(&self.registration_failures),
            ),
        ]
    }
}

/// What every call's tasks share.
pub(crate) struct Shared {
    pub config: Config,
    pub directory: Arc<dyn Directory>,
    pub identity: Arc<Identity>,
    pub http: reqwest::Client,
    pub stats: Arc<Stats>,
    pub limits: call::RateLimits,
    /// The calls up, by channel: what participants' key presses are played to.
    pub calls: Mutex<HashMap<String, Vec<call::Live>>>,
    /// Calls out not yet ended, by id, with their channel: what [`Connector::hang_up`] ends.
    pub dialled: Mutex<HashMap<String, (String, Arc<tokio::sync::Notify>)>>,
}

/// A running connector; dropping it does not stop it (see [`Connector::stop`]).
pub struct Connector {
    endpoint: Endpoint,
    shared: Arc<Shared>,
    listening: SocketAddr,
    registrations: Mutex<register::Registrations>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding SIP on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("the TLS certificate or key: {0}")]
    Tls(String),
    #[error("the DTLS identity: {0}")]
    Identity(String),
}

impl Connector {
    /// Binds SIP on UDP and TCP (and TLS when configured) and starts taking calls.
    pub async fn start(
        config: Config,
        directory: Arc<dyn Directory>,
    ) -> Result<Connector, StartError> {
        let identity = Identity::generate().map_err(|e| StartError::Identity(e.to_string()))?;
        let stats = Arc::new(Stats::default());
        let listen = config.listen;
        let tls = config.tls.clone();
        let shared = Arc::new(Shared {
            limits: call::RateLimits::new(config.calls_per_second_per_source),
            config,
            directory,
            identity,
            http: reqwest::Client::new(),
            stats,
            calls: Mutex::new(HashMap::new()),
            dialled: Mutex::new(HashMap::new()),
        });
        let mut builder = Endpoint::builder();
        builder.user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")));
        // INFO first: the dialog layer would answer it itself (it has no usage for INFO).
        builder.add_layer(Info {
            shared: shared.clone(),
        });
        builder.add_layer(DialogLayer::default());
        builder.add_layer(InviteLayer::default());
        builder.add_layer(Calls {
            shared: shared.clone(),
        });
        let udp = builder
            .bind_udp(listen)
            .await
            .map_err(|e| StartError::Bind(listen, e))?;
        let listening = udp.bound();
        let tcp = SocketAddr::new(listen.ip(), listening.port());
        builder
            .listen_tcp(tcp)
            .await
            .map_err(|e| StartError::Bind(tcp, e))?;
        if let Some(tls) = tls {
            let acceptor = call::tls_acceptor(&tls).map_err(StartError::Tls)?;
            builder
                .listen_rustls(tls.listen, acceptor)
                .await
                .map_err(|e| StartError::Bind(tls.listen, e))?;
        }
        let endpoint = builder.build();
        tracing::info!("SIP connector on {listening} (UDP, TCP)");
        Ok(Connector {
            endpoint,
            shared,
            listening,
            registrations: Mutex::new(register::Registrations::default()),
        })
    }

    /// The UDP address SIP is bound to (the port, when 0 was asked for).
    pub fn listening(&self) -> SocketAddr {
        self.listening
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    /// Plays `digits` to the calls in `channel`, or to the one whose caller is `to`; how many
    /// calls took them.
    pub fn send_digits(&self, channel: &str, to: Option<&str>, digits: &str) -> usize {
        let calls = self
            .shared
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        calls
            .get(channel)
            .into_iter()
            .flatten()
            .filter(|call| to.is_none_or(|to| to == call.caller))
            .filter(|call| {
                call.commands
                    .try_send(bridge::Command::Digits(digits.to_string()))
                    .is_ok()
            })
            .count()
    }

    /// Places a call out through `request.trunk`, its audio in `request.channel` from its
    /// first SDP (early media) on. Returns at once with the call's id (for logs and
    /// [`Connector::hang_up`]); how the call goes is logged and counted (`calls_out_total`,
    /// `calls_out_failed_total`), as nobody waits on it.
    pub fn dial(&self, request: Dial) -> Result<String, DialError> {
        dial::start(&self.shared, &self.endpoint, request)
    }

    /// Hangs up the call out `call` (an id [`Connector::dial`] returned) into `channel`:
    /// CANCEL while it rings, BYE once answered. `false` when no such call is going on.
    pub fn hang_up(&self, channel: &str, call: &str) -> bool {
        let dialled = self
            .shared
            .dialled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match dialled.get(call) {
            Some((into, stop)) if into == channel => {
                stop.notify_one();
                true
            }
            _ => false,
        }
    }

    /// The enabled trunks as the store has them now: those with `register` set are registered
    /// with their providers (and kept so), the others' registrations end. Call it on every
    /// change; an unchanged trunk's registration goes on undisturbed.
    pub fn set_trunks(&self, trunks: Vec<Trunk>) {
        self.registrations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set(&self.shared, &self.endpoint, trunks);
    }
}

/// The layer that takes key presses sent as INFO in our calls' dialogs.
struct Info {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl Layer for Info {
    fn name(&self) -> &'static str {
        "switchyard-info"
    }

    async fn receive(&self, endpoint: &Endpoint, request: MayTake<'_, IncomingRequest>) {
        if request.line.method == Method::INFO {
            call::info(&self.shared, endpoint, request).await;
        }
    }
}

/// The layer that takes new calls: INVITEs outside any dialog (the dialog and INVITE layers
/// before it take those inside one: re-INVITEs, BYE, ACK, CANCEL).
struct Calls {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl Layer for Calls {
    fn name(&self) -> &'static str {
        "switchyard-calls"
    }

    async fn receive(&self, endpoint: &Endpoint, request: MayTake<'_, IncomingRequest>) {
        if request.line.method != Method::INVITE {
            return;
        }
        let invite = request.take();
        tokio::spawn(call::inbound(self.shared.clone(), endpoint.clone(), invite));
    }
}
