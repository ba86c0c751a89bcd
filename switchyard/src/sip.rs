//! The SIP connector's settings and routing as this binary runs it: embedded in all-in-one
//! (on by default, `SIP:ENABLED=false` turns it off). Calls join channels through the
//! process's own `POST /mix`, with tokens signed by the application's secret.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use switchyard_controlplane::config::Config;
use switchyard_controlplane::phones::{DialRefusal, DialRequest, Phones};
use switchyard_controlplane::session::AppState;
use switchyard_controlplane::token::{self, Applications, ChannelClaim, Claims};
use switchyard_sip::{Connector, Dial, DialError, Directory, Incoming, Route, TlsConfig, Trunk};
use switchyard_store::CachedStore;
use switchyard_store::sip::{SipCall, SipTransport, SipTrunk};

use crate::fatal::Fatal;
use switchyard_cluster::listen::bind_with_fallback;
use switchyard_cluster::sip_connectors::api::{
    self, GatewayLink, PhoneDigit, heartbeat, report_digits,
};
use switchyard_cluster::sip_connectors::{ConnectorRecord, Counter};

const DEFAULT_PORT: u16 = 5060;
const DEFAULT_TLS_PORT: u16 = 5061;
const DEFAULT_RTP_PORTS: (u16, u16) = (30_000, 39_999);
const DEFAULT_RTP_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CALLS_PER_SECOND: u32 = 10;
/// How long the tokens calls join with are valid: longer than any call.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The connector's settings from `SIP:*`, or `None` when `SIP:ENABLED=false`. `bind` is the
/// address SIP listens on, `gateway` where calls' `POST /mix` go.
pub fn settings(
    config: &Config,
    bind: IpAddr,
    gateway: String,
) -> Result<Option<switchyard_sip::Config>, Fatal> {
    if !config.flag("SIP:ENABLED", true) {
        tracing::info!("SIP connector: disabled (SIP:ENABLED=false)");
        return Ok(None);
    }
    let port = config.port("SIP:PORT", DEFAULT_PORT);
    let tls = match (
        config.get("SIP:CERTIFICATEPATH"),
        config.get("SIP:PRIVATEKEYPATH"),
    ) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            listen: SocketAddr::new(bind, config.port("SIP:TLSPORT", DEFAULT_TLS_PORT)),
            certificate_pem: read_pem(cert)?,
            key_pem: read_pem(key)?,
        }),
        _ => None,
    };
    let low = config.port("SIP:RTPPORTMIN", DEFAULT_RTP_PORTS.0);
    let high = config.port("SIP:RTPPORTMAX", DEFAULT_RTP_PORTS.1).max(low);
    let rtp_address = if bind.is_unspecified() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        bind
    };
    Ok(Some(switchyard_sip::Config {
        listen: SocketAddr::new(bind, port),
        tls,
        public_address: config.public_ip(),
        rtp_address,
        rtp_ports: (low, high),
        rtp_timeout: config
            .count("SIP:RTPTIMEOUT")
            .map_or(DEFAULT_RTP_TIMEOUT, |s| Duration::from_secs(s.max(1))),
        gateway,
        calls_per_second_per_source: config
            .count("SIP:CALLSPERSECOND")
            .map_or(DEFAULT_CALLS_PER_SECOND, |n| {
                u32::try_from(n).unwrap_or(u32::MAX)
            }),
    }))
}

fn read_pem(path: &str) -> Result<String, Fatal> {
    std::fs::read_to_string(Path::new(path)).map_err(|source| Fatal::Read {
        what: "SIP's TLS certificate or key",
        path: path.into(),
        source,
    })
}

/// Starts the connector, or says why it could not bind.
pub async fn start(
    settings: switchyard_sip::Config,
    directory: Arc<dyn Directory>,
) -> Result<Connector, Fatal> {
    let port = settings.listen.port();
    Connector::start(settings, directory)
        .await
        .map_err(|e| Fatal::Sip {
            port,
            reason: e.to_string(),
        })
}

/// All-in-one's routing: the applications' SIP mappings (configuration store), in order;
/// then, while it serves dev tokens, `sip:NAME@host` joins channel NAME of the dev
/// application, so a newcomer can dial in with no configuration.
pub struct LocalDirectory {
    pub store: Option<CachedStore>,
    pub applications: Applications,
    /// The dev application's id, while dev tokens are served.
    pub dev: Option<String>,
    /// Where the callers' key presses go.
    pub digits: Digits,
}

/// Who hears callers' key presses: all-in-one's own participants, or, for a standalone
/// connector, the gateway (which tells the channel's participants).
pub enum Digits {
    /// Weak: the state holds the connector.
    Local(Weak<AppState>),
    Gateway(tokio::sync::mpsc::UnboundedSender<PhoneDigit>),
}

impl Directory for LocalDirectory {
    fn route(&self, call: &Incoming<'_>) -> Option<Route> {
        if let Some(store) = &self.store {
            let headers: Vec<(&str, &str)> = call
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let sip_call = SipCall {
                request_user: call.request_user,
                to_user: call.to_user,
                headers: &headers,
            };
            if let Some((mapping, channel)) = store.sip_route(&sip_call) {
                tracing::debug!("SIP mapping {:?} routes the call", mapping.name);
                return Some(Route {
                    application: mapping.application_id,
                    channel,
                });
            }
        }
        let application = self.dev.clone()?;
        let channel = call.request_user;
        let valid = !channel.is_empty()
            && channel.len() <= 128
            && channel
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        valid.then(|| Route {
            application,
            channel: channel.to_string(),
        })
    }

    fn token(&self, route: &Route, user: &str) -> Result<String, String> {
        sign(&self.applications, route, user)
    }

    fn digit(&self, route: &Route, caller: &str, digit: char) {
        match &self.digits {
            Digits::Local(state) => {
                if let Some(state) = state.upgrade() {
                    state.phone_digit(&route.channel, caller, digit);
                }
            }
            Digits::Gateway(report) => {
                let _ = report.send(PhoneDigit {
                    channel: route.channel.clone(),
                    from: caller.to_string(),
                    digit,
                });
            }
        }
    }
}

/// The connector's calls as signalling and the admin API reach them (participants' `dtmf`,
/// dial-out).
pub struct ConnectorPhones {
    pub connector: Arc<Connector>,
    /// Where trunks are read from (dial-out needs one).
    pub store: Option<CachedStore>,
    /// The application calls out join when the request names none (the dev one).
    pub default_application: Option<String>,
}

impl Phones for ConnectorPhones {
    fn send_digits(&self, channel: &str, to: Option<&str>, digits: &str) -> usize {
        self.connector.send_digits(channel, to, digits)
    }

    fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.connector.stats().snapshot()
    }

    fn hang_up(&self, channel: &str, call: &str) -> bool {
        self.connector.hang_up(channel, call)
    }

    fn dial(&self, request: DialRequest<'_>) -> Result<String, DialRefusal> {
        let no_trunk = || match request.trunk {
            Some(name) => DialRefusal::NoTrunk(format!(
                "no enabled trunk {name:?} that can terminate calls"
            )),
            None => DialRefusal::NoTrunk("no enabled trunk can terminate calls".into()),
        };
        let store = self.store.as_ref().ok_or_else(no_trunk)?;
        let trunk = match request.trunk {
            Some(name) => store
                .sip_trunk(name)
                .filter(|t| t.enabled && t.can_terminate),
            None => store.sip_outbound_trunk(),
        }
        .ok_or_else(no_trunk)?;
        let application = request
            .application
            .map(str::to_string)
            .or_else(|| self.default_application.clone())
            .ok_or_else(|| {
                DialRefusal::Invalid("no application given, and there is no default one".into())
            })?;
        if !switchyard_store::sip::valid_channel_id(request.channel) {
            return Err(DialRefusal::Invalid(format!(
                "{:?} is not a channel id",
                request.channel
            )));
        }
        let dial = Dial {
            channel: request.channel.to_string(),
            application,
            number: request.number.to_string(),
            trunk: trunk_of(&trunk),
            caller_id: request.caller_id.map(str::to_string),
        };
        self.connector.dial(dial).map_err(|e| match e {
            DialError::BadNumber(_) | DialError::BadCallerId(_) => {
                DialRefusal::Invalid(e.to_string())
            }
            DialError::BadTrunk(..) => DialRefusal::NoTrunk(e.to_string()),
        })
    }
}

/// The store's trunk as the connector takes it.
fn trunk_of(trunk: &SipTrunk) -> Trunk {
    Trunk {
        name: trunk.name.clone(),
        domain: trunk.domain.clone(),
        transport: match trunk.transport {
            SipTransport::Udp => switchyard_sip::Transport::Udp,
            SipTransport::Tcp => switchyard_sip::Transport::Tcp,
            SipTransport::Tls => switchyard_sip::Transport::Tls,
        },
        register: trunk.register,
        username: trunk.username.clone(),
        password: trunk.password.as_ref().map(|p| p.expose().to_string()),
        authorization_id: trunk.authorization_id.clone(),
        outbound_proxy: trunk.outbound_proxy.clone(),
        caller_id: trunk.caller_id.clone(),
    }
}

/// How often the trunks are read again for registration (a cheap look at the cached store).
const TRUNKS_POLL: Duration = Duration::from_secs(2);

/// Keeps the connector's registrations in step with the store's enabled trunks, until the
/// connector is dropped.
pub fn follow_trunks(connector: Weak<Connector>, store: CachedStore) {
    tokio::spawn(async move {
        let mut last: Option<Vec<SipTrunk>> = None;
        loop {
            let Some(connector) = connector.upgrade() else {
                return;
            };
            let trunks: Vec<SipTrunk> = store
                .snapshot()
                .sip_trunks
                .iter()
                .filter(|t| t.enabled)
                .cloned()
                .collect();
            if last.as_ref() != Some(&trunks) {
                connector.set_trunks(trunks.iter().map(trunk_of).collect());
                last = Some(trunks);
            }
            drop(connector);
            tokio::time::sleep(TRUNKS_POLL).await;
        }
    });
}

/// A token for `route` signed with its application's first secret.
fn sign(applications: &Applications, route: &Route, user: &str) -> Result<String, String> {
    let secret = applications
        .secrets(&route.application)
        .into_iter()
        .next()
        .ok_or_else(|| format!("application {:?} has no secret", route.application))?;
    let claims = Claims::new(
        &route.application,
        user,
        ChannelClaim {
            id: route.channel.clone(),
            publish: true,
            subscribe: true,
            dial: false,
        },
        TOKEN_LIFETIME,
    );
    token::issue(&claims, &secret).map_err(|e| e.to_string())
}

/// `switchyard sip-connector`: the connector on its own host, beside a cluster.
#[derive(clap::Args)]
pub struct SipConnectorArgs {
    #[command(flatten)]
    config: crate::ConfigFile,
    /// The gateway (or the load balancer before the gateways, or all-in-one): calls join
    /// channels through its `POST /mix/{channel}`, and the connector registers there
    /// [default: SERVICEBASEURL, as for a media server], e.g. http://gw1:8080.
    #[arg(long, env = "SWITCHYARD_GATEWAY")]
    gateway: Option<String>,
    /// The address SIP listens on (its port is SIP:PORT).
    #[arg(long, default_value = "0.0.0.0", env = "SWITCHYARD_SIP_BIND")]
    bind: IpAddr,
    /// Where the SQLite configuration store is when CONNECTIONSTRINGS:DEFAULT is not set.
    #[arg(long, default_value = "switchyard-data", env = "SWITCHYARD_DATA_DIR")]
    data_dir: PathBuf,
    /// The TCP port of the connector's API for the gateways (participants' key presses,
    /// dial-out); when taken, the next free port (8446, 8447, ...) is used and registered.
    #[arg(long, default_value_t = 8445, env = "SWITCHYARD_CLUSTER_PORT")]
    cluster_port: u16,
    /// Address the API port binds to.
    #[arg(long, default_value = "0.0.0.0")]
    cluster_bind: IpAddr,
    /// The address gateways reach the API on [default: as for a media server, an interface
    /// address inside INTERNAL:IPADDRESSES, else the first non-loopback IPv4, else 127.0.0.1].
    #[arg(long)]
    cluster_address: Option<IpAddr>,
    /// This connector's id in the registry [default: <hostname>-sip-<API port>].
    #[arg(long, env = "SWITCHYARD_SIP_CONNECTOR_ID")]
    id: Option<String>,
}

/// Runs the connector until SIGTERM or Ctrl-C: calls are routed by the applications' SIP
/// mappings in the configuration store (followed as it changes) and join through the gateway
/// with tokens signed by the application's secret. It registers with the gateway like a media
/// server, so that participants' key presses and the admin API's dial-out reach its calls, and
/// its callers' key presses reach the participants.
pub fn connector(args: SipConnectorArgs) -> Result<(), Fatal> {
    let config = args.config.load()?;
    let gateway = args
        .gateway
        .clone()
        .or_else(|| config.get("SERVICEBASEURL").map(str::to_string))
        .ok_or(Fatal::NoServiceBaseUrl)?;
    let Some(settings) = settings(&config, args.bind, gateway.clone())? else {
        return Ok(());
    };
    let internal = crate::roles::allowlist(
        &config,
        "INTERNAL:IPADDRESSES",
        crate::roles::DEFAULT_INTERNAL,
    )?;
    let secret = crate::roles::cluster_secret(&config)?;
    let applications = Applications::default();
    let runtime = crate::control_runtime()?;
    runtime.block_on(async move {
        let listener = bind_with_fallback(args.cluster_bind, args.cluster_port)
            .await
            .map_err(|source| Fatal::ClusterPort {
                port: args.cluster_port,
                source,
            })?;
        let port = listener.local_addr().map_err(Fatal::LocalAddress)?.port();
        let api_ip = args
            .cluster_address
            .unwrap_or_else(|| crate::roles::cluster_address(&config));
        let id = args
            .id
            .clone()
            .unwrap_or_else(|| format!("{}-sip-{port}", crate::roles::hostname()));
        let link = GatewayLink {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .build()?,
            secret: secret.clone(),
            base: gateway.clone(),
        };
        let cache = crate::open_store(&config, &args.data_dir, &applications, &[]).await?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(switchyard_controlplane::follow::follow(
            cache.clone(),
            applications.clone(),
            Vec::new(),
            stopped.clone(),
        ));
        let directory = LocalDirectory {
            store: Some(cache.clone()),
            applications,
            dev: None,
            digits: Digits::Gateway(report_digits(link.clone())),
        };
        let connector = Arc::new(start(settings, Arc::new(directory)).await?);
        follow_trunks(Arc::downgrade(&connector), cache.clone());
        let phones = Arc::new(ConnectorPhones {
            connector: connector.clone(),
            store: Some(cache),
            default_application: None,
        });
        let api_url = format!("http://{}", SocketAddr::new(api_ip, port));
        let sip_address = SocketAddr::new(
            config.public_ip().unwrap_or(api_ip),
            connector.listening().port(),
        )
        .to_string();
        let record = {
            let phones = phones.clone();
            let (id, api_url) = (id.clone(), api_url.clone());
            move || record_of(&id, &api_url, &sip_address, phones.metrics())
        };
        let heartbeat = tokio::spawn(heartbeat(link, record, stopped));
        tracing::info!(
            "SIP connector {id} on {}: calls join channels through {gateway}; API for the gateways on {api_url}",
            connector.listening(),
        );
        let served = switchyard_controlplane::server::serve_with(
            listener,
            api::router(phones, secret, internal),
            crate::shutdown_signal(),
            move || {
                let _ = stop.send(true);
            },
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), heartbeat).await;
        served.map_err(|source| Fatal::Serve {
            what: "the SIP connector's API",
            source,
        })
    })
}

/// The record the connector heartbeats: its calls up and its counters.
fn record_of(
    id: &str,
    api_url: &str,
    sip_address: &str,
    metrics: Vec<(&'static str, &'static str, u64)>,
) -> ConnectorRecord {
    let calls = metrics
        .iter()
        .find(|(name, _, _)| *name == "calls_active")
        .map_or(0, |(_, _, value)| *value);
    ConnectorRecord {
        id: id.to_string(),
        api_url: api_url.to_string(),
        sip_address: sip_address.to_string(),
        calls,
        counters: metrics
            .into_iter()
            .map(|(name, help, value)| Counter {
                name: name.to_string(),
                help: help.to_string(),
                value,
            })
            .collect(),
    }
}
