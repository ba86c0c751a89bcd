//! Calls out: the connector dials a number through a SIP trunk (a provider's account) and,
//! once the callee answers, joins the call to a channel just as an inbound call joins
//! ([`crate::call::run_up`]), so the callee hears the channel and the channel hears the callee.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ezk_sip_auth::{DigestAuthenticator, DigestCredentials, DigestUser};
use ezk_sip_core::Endpoint;
use ezk_sip_types::uri::{NameAddr, SipUri};
use ezk_sip_ua::OutboundCall;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::call::{self, PhoneSdp, Up};
use crate::sdp::Local;
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
    /// Not used yet: requests go to `domain`.
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
            format!("{scheme}:{}{params}", self.domain)
        } else {
            format!("{scheme}:{user}@{}{params}", self.domain)
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

/// Checks `dial` and starts its call in a task of its own; its id (for logs) at once.
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
    let placed = Placed {
        id: id.clone(),
        target,
        from: NameAddr::uri(from),
        dial,
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
}

/// Places the call and, once it is answered, runs it; a failure is logged and counted.
async fn run(shared: Arc<Shared>, endpoint: Endpoint, placed: Placed) {
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
        target, from, dial, ..
    } = placed;
    let address = local_address(shared, &dial.trunk).await;
    let (rtp, rtp_port) = call::bind_rtp(shared).await.ok_or("no free RTP port")?;
    let local = Local {
        address,
        rtp_port,
        session_id: rand::random::<u32>().into(),
    };
    let (media_tx, media_rx) = watch::channel(None);
    let backend = PhoneSdp {
        local,
        version: 0,
        media: media_tx,
    };
    let contact = call::contact(address, shared.config.listen.port());
    tracing::info!("{peer}: dialling through trunk {:?}", dial.trunk.name);
    let answered = async {
        let mut outbound = OutboundCall::make(
            endpoint,
            dial.trunk.authenticator(),
            from,
            contact,
            target,
            backend,
        )
        .await
        .map_err(|e| e.to_string())?;
        let unacknowledged = outbound
            .wait_for_completion()
            .await
            .map_err(|e| e.to_string())?;
        unacknowledged.finish().await.map_err(|e| e.to_string())
    };
    let call = tokio::time::timeout(ANSWER_TIMEOUT, answered)
        .await
        .map_err(|_| format!("not answered within {ANSWER_TIMEOUT:?}"))??;
    let route = Route {
        application: dial.application,
        channel: dial.channel,
    };
    let display = format!("sip:{}", dial.number);
    let settled = media_rx.borrow().clone();
    let leg = match call::join_channel(shared, &route, &display, settled.as_ref()).await {
        Ok(leg) => leg,
        Err(e) => {
            let _ = call.terminate().await;
            return Err(format!("joining channel {:?}: {e}", route.channel));
        }
    };
    tracing::info!(
        "{peer} answered, joined channel {:?} of {:?}",
        route.channel,
        route.application
    );
    // The SIP stack does not show a dialled call's Call-ID: INFO key presses from the callee
    // are not matched (RFC 4733 events are).
    let (listed, commands) = call::list(shared, &route, &display, "");
    let up = Up {
        leg,
        phone: rtp,
        media: media_rx,
        route,
        display,
        listed,
        commands,
        peer: peer.to_string(),
    };
    call::run_up(shared, call, up).await;
    Ok(())
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
