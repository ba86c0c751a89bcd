//! The media server registry: which media servers are alive, how loaded they are, and which
//! server each channel lives on. Gateways read it to place clients; media servers write their
//! own record to it on every heartbeat.
//!
//! Two implementations share one interface: [`MemoryRegistry`] for the embedded all-in-one
//! default (one process, nothing to run beside it) and [`RedisRegistry`] for a cluster, where
//! every gateway and media server must see the same state. [`Registry`] holds either, so the
//! choice is made once, from configuration, without boxing futures or `dyn`.

mod choose;
mod memory;
mod redis;
pub(crate) mod retry;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_controlplane::checks::HostCheck;
use switchyard_controlplane::error::Error;

pub use choose::choose_server;
pub use memory::MemoryRegistry;
pub use redis::RedisRegistry;

use crate::sip_connectors::ConnectorRecord;

/// One media server as the registry knows it. The JSON field names are the vendor's, so admin
/// API clients written for it read ours unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaServerRecord {
    pub id: String,
    pub region: String,
    /// The server can take new work: its media engine is up.
    pub available: bool,
    /// The server hosts at least one channel.
    pub active: bool,
    /// The server has passed its deployment's capacity threshold.
    pub over_capacity: bool,
    /// Load as a fraction of capacity, 0 to 1.
    pub used_capacity: f64,
    /// The server itself asked for no new placements (e.g. on SIGTERM). An operator's drain is
    /// kept apart (see [`MediaServerRegistry::set_draining`]) and merged in when reading.
    pub draining: bool,
    pub ip_addresses: Vec<String>,
    #[serde(rename = "publicIPAddress")]
    pub public_ip_address: Option<String>,
    pub version: String,
    pub core_count: u32,
    /// `host:port` of the server's internal control API.
    pub cluster_address: String,
    /// The server's embedded TURN (`turn:`/`turns:` URLs), handed to clients by gateways that
    /// share its `TURN:SECRET`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turn_urls: Vec<String>,
    /// The host checks the server ran on itself (`switchyard doctor`'s that need no outside
    /// help), for the admin API; readers that predate them ignore the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<HostCheck>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("the media server record at Redis key {key} is not valid: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("cannot encode the media server record: {0}")]
    Encode(serde_json::Error),
    #[error("no media server {0} in the registry")]
    UnknownServer(String),
    #[error("a registry TTL must be between 1 ms and 1 day, not {0:?}")]
    TtlOutOfRange(Duration),
}

/// A registry that cannot be read or written leaves a request undone for now.
impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Error {
        Error::Unavailable(format!("media server registry: {e}"))
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// What every registry does. The methods return `Send` futures so that callers can hold a
/// registry across `tokio::spawn`; implementations write them as plain `async fn`.
pub trait MediaServerRegistry: Send + Sync {
    /// Registers `server` or refreshes its record. It disappears `ttl` after the last call, so a
    /// media server calls this well within its TTL for as long as it lives.
    fn heartbeat(
        &self,
        server: &MediaServerRecord,
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Forgets a server at once (a clean shutdown), with its drain flag.
    fn remove(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// The live server `id`; a record that cannot be read is an error naming its key.
    fn get(&self, id: &str) -> impl Future<Output = Result<Option<MediaServerRecord>>> + Send;

    /// Every live server, in no particular order. A record that cannot be read is left out (and
    /// logged) rather than failing the list, so one bad entry cannot stop all placement.
    fn list(&self) -> impl Future<Output = Result<Vec<MediaServerRecord>>> + Send;

    /// An operator's drain: no new placements on the server while set. It is stored beside the
    /// record, not in it, so the server's next heartbeat does not undo it.
    fn set_draining(&self, id: &str, draining: bool) -> impl Future<Output = Result<()>> + Send;

    /// Places `channel` on `server_id` unless it is already placed, and returns the server it is
    /// on: when two gateways place one channel at once, both learn the same winner. A placement
    /// outlives its server; a caller that finds the server gone unplaces and places again.
    fn place(&self, channel: &str, server_id: &str) -> impl Future<Output = Result<String>> + Send;

    fn placement(&self, channel: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    fn unplace(&self, channel: &str) -> impl Future<Output = Result<()>> + Send;
}

/// The registry a process runs with, chosen from configuration.
#[derive(Debug, Clone)]
pub enum Registry {
    Memory(MemoryRegistry),
    Redis(RedisRegistry),
}

macro_rules! dispatch {
    ($self:ident, $r:ident => $call:expr) => {
        match $self {
            Registry::Memory($r) => $call.await,
            Registry::Redis($r) => $call.await,
        }
    };
}

impl MediaServerRegistry for Registry {
    async fn heartbeat(&self, server: &MediaServerRecord, ttl: Duration) -> Result<()> {
        dispatch!(self, r => r.heartbeat(server, ttl))
    }
    async fn remove(&self, id: &str) -> Result<()> {
        dispatch!(self, r => r.remove(id))
    }
    async fn get(&self, id: &str) -> Result<Option<MediaServerRecord>> {
        dispatch!(self, r => r.get(id))
    }
    async fn list(&self) -> Result<Vec<MediaServerRecord>> {
        dispatch!(self, r => r.list())
    }
    async fn set_draining(&self, id: &str, draining: bool) -> Result<()> {
        dispatch!(self, r => r.set_draining(id, draining))
    }
    async fn place(&self, channel: &str, server_id: &str) -> Result<String> {
        dispatch!(self, r => r.place(channel, server_id))
    }
    async fn placement(&self, channel: &str) -> Result<Option<String>> {
        dispatch!(self, r => r.placement(channel))
    }
    async fn unplace(&self, channel: &str) -> Result<()> {
        dispatch!(self, r => r.unplace(channel))
    }
}

/// The SIP connectors' records, beside the media servers' (see `crate::sip_connectors`).
impl Registry {
    /// Registers a connector or refreshes its record; it disappears `ttl` after the last call.
    pub async fn connector_heartbeat(
        &self,
        connector: &ConnectorRecord,
        ttl: Duration,
    ) -> Result<()> {
        dispatch!(self, r => r.connector_heartbeat(connector, ttl))
    }
    pub async fn remove_connector(&self, id: &str) -> Result<()> {
        dispatch!(self, r => r.remove_connector(id))
    }
    /// Every live connector, in no particular order.
    pub async fn connectors(&self) -> Result<Vec<ConnectorRecord>> {
        dispatch!(self, r => r.connectors())
    }
}

/// The longest TTL accepted: a heartbeat TTL is seconds; anything near this is a mistake.
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Checks a heartbeat TTL and returns it in whole milliseconds, Redis' unit. Zero would mean
/// "already expired" to the memory registry and an error to Redis, so both refuse it here.
fn ttl_millis(ttl: Duration) -> Result<u64> {
    match u64::try_from(ttl.as_millis()) {
        Ok(ms) if ms > 0 && ttl <= MAX_TTL => Ok(ms),
        _ => Err(RegistryError::TtlOutOfRange(ttl)),
    }
}
