//! Why a command or a server role cannot run: what it was doing, and the library's error. It is
//! printed once and the process exits with status 1.
//!
//! A small enum rather than `anyhow`: every library error here already prints its cause in its
//! own message (thiserror `{source}`), which `anyhow`'s `{:#}` would print a second time, and
//! each variant keeps the message operators (and tests/cli.rs, tests/cluster.rs) know.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use switchyard_cluster::gateway::HttpClientError;
use switchyard_cluster::presence::PresenceError;
use switchyard_cluster::registry::RegistryError;
use switchyard_controlplane::allowlist::BadEntry;
use switchyard_controlplane::config::SettingError;
use switchyard_controlplane::server::HttpsError;
use switchyard_controlplane::token::TokenError;
use switchyard_dataplane::spec;
use switchyard_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error("{setting}: {source}")]
    AllowList {
        setting: &'static str,
        source: BadEntry,
    },
    #[error(
        "EXTERNAL:IPADDRESSES ({list}) matches no address of this host (interfaces: {local:?}); media would be unreachable"
    )]
    NoExternalAddress { list: String, local: Vec<IpAddr> },
    #[error(
        "SERVICEBASEURL is not set: a media server or SIP connector registers with the gateway at that URL (e.g. SERVICEBASEURL=http://gateway:8080)"
    )]
    NoServiceBaseUrl,
    #[error("{0}")]
    Mixer(String),
    #[error("{0}")]
    Recording(String),
    #[error("{what} in {}: {source}", dir.display())]
    DataDir {
        what: &'static str,
        dir: PathBuf,
        source: io::Error,
    },
    #[error("CONNECTIONSTRINGS:DEFAULT: {0}")]
    Store(#[from] StoreError),
    /// The configuration store opened but could not be read.
    #[error("configuration store: {0}")]
    StoreUnreadable(String),
    /// The URL is masked.
    #[error("CONNECTIONSTRINGS:CACHE ({url}): {source}")]
    Registry { url: String, source: RegistryError },
    #[error("CONNECTIONSTRINGS:CACHE: {0}")]
    Presence(#[from] PresenceError),
    #[error(transparent)]
    GatewayClient(#[from] HttpClientError),
    #[error("HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("webhook client: {0}")]
    WebhookClient(#[from] rustls::Error),
    #[error("cannot listen on {addr} for {what}: {source}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot listen on the cluster port {port}: {source}")]
    ClusterPort { port: u16, source: io::Error },
    #[error("cannot read the address of a listener: {0}")]
    LocalAddress(io::Error),
    #[error(transparent)]
    Https(#[from] HttpsError),
    #[error("{what}: {source}")]
    Serve {
        what: &'static str,
        source: io::Error,
    },
    #[error("tokio runtime: {0}")]
    Runtime(io::Error),
    #[error(transparent)]
    Media(#[from] spec::Error),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{what}: {source}")]
    Certificate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("{}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("TURN on port {port}: {source} (set TURN:PORT to a free port, or TURN:ENABLED=false)")]
    Turn { port: u16, source: io::Error },
    #[error(
        "the SIP connector on port {port}: {reason} (set SIP:PORT to a free port, or SIP:ENABLED=false)"
    )]
    Sip { port: u16, reason: String },
    #[error("{what} ({}): {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{setting}: {problem}")]
    TurnSetting {
        setting: &'static str,
        problem: String,
    },
    #[error(
        "CLUSTER:SECRET is too short: use at least {} characters (e.g. `openssl rand -hex 32`)",
        switchyard_cluster::signing::MIN_SECRET_LEN
    )]
    ClusterSecret,
}
