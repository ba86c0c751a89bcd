//! The cluster's registry, in Redis (one instance, no cluster mode), shared by every gateway and
//! media server.
//!
//! Keys, all under `switchyard:{namespace}:` so that deployments (and tests) can share one Redis:
//! - `mediaserver:{id}`: the record as JSON, written with `SET ... PX ttl`, so Redis itself
//!   forgets a server that stops heartbeating.
//! - `mediaservers`: a set of the ids ever registered, for listing. A set rather than `SCAN`
//!   because `SCAN` walks the whole keyspace (every channel and presence key too) on each list,
//!   while the set holds only servers. An id whose record has expired is dropped from the set
//!   when a list finds it missing; should that server re-register in the instant between the
//!   two, its next heartbeat adds it back.
//! - `mediaserver:{id}:draining`: an operator's drain, apart from the record so that heartbeats
//!   do not overwrite it, and without a TTL so that it outlives a restart of the server under
//!   the same id. `remove` deletes it.
//! - `channel:{channel}:mediaserver`: the id of the server a channel is placed on.
//! - `sipconnector:{id}` and `sipconnectors`: the SIP connectors' records and ids, kept like
//!   the media servers' (no drain).
//!
//! The connection is a [`ConnectionManager`]: it reconnects by itself, and [`Retrying`] sends a
//! command that found the old connection broken once more, so a Redis restart costs only the
//! commands issued while Redis is down, never a restart of ours.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, ExistenceCheck, SetExpiry, SetOptions};

use super::retry::Retrying;
use super::{MediaServerRecord, MediaServerRegistry, RegistryError, Result, ttl_millis};
use crate::sip_connectors::ConnectorRecord;

#[derive(Clone)]
pub struct RedisRegistry {
    connection: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisRegistry {
    /// Connects to the Redis at `url` (e.g. `redis://127.0.0.1:6379`), keeping keys under
    /// `switchyard:{namespace}:`. Fails if Redis cannot be reached now; later outages are
    /// reconnected.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new(client).await?;
        Ok(Self {
            connection,
            prefix: format!("switchyard:{namespace}:"),
        })
    }

    fn server_key(&self, id: &str) -> String {
        format!("{}mediaserver:{id}", self.prefix)
    }

    fn drain_key(&self, id: &str) -> String {
        format!("{}mediaserver:{id}:draining", self.prefix)
    }

    fn servers_key(&self) -> String {
        format!("{}mediaservers", self.prefix)
    }

    fn placement_key(&self, channel: &str) -> String {
        format!("{}channel:{channel}:mediaserver", self.prefix)
    }

    /// A handle for one command; clones share the underlying connection.
    fn con(&self) -> Retrying {
        Retrying(self.connection.clone())
    }

    fn decode(key: String, json: &str, drained: bool) -> Result<MediaServerRecord> {
        let mut server: MediaServerRecord =
            serde_json::from_str(json).map_err(|source| RegistryError::Corrupt { key, source })?;
        server.draining |= drained;
        Ok(server)
    }
}

/// The SIP connectors' records: `SET ... PX ttl` and a set of ids, as for media servers.
impl RedisRegistry {
    fn connector_key(&self, id: &str) -> String {
        format!("{}sipconnector:{id}", self.prefix)
    }

    fn connectors_key(&self) -> String {
        format!("{}sipconnectors", self.prefix)
    }

    pub async fn connector_heartbeat(
        &self,
        connector: &ConnectorRecord,
        ttl: Duration,
    ) -> Result<()> {
        let ttl = ttl_millis(ttl)?;
        let json = serde_json::to_string(connector).map_err(RegistryError::Encode)?;
        let set = SetOptions::default().with_expiration(SetExpiry::PX(ttl));
        redis::pipe()
            .atomic()
            .set_options(self.connector_key(&connector.id), json, set)
            .ignore()
            .sadd(self.connectors_key(), &connector.id)
            .ignore()
            .query_async::<()>(&mut self.con())
            .await?;
        Ok(())
    }

    pub async fn remove_connector(&self, id: &str) -> Result<()> {
        redis::pipe()
            .atomic()
            .del(self.connector_key(id))
            .ignore()
            .srem(self.connectors_key(), id)
            .ignore()
            .query_async::<()>(&mut self.con())
            .await?;
        Ok(())
    }

    /// The live connectors; an expired id leaves the set, a record that cannot be read is
    /// skipped (and logged).
    pub async fn connectors(&self) -> Result<Vec<ConnectorRecord>> {
        let mut con = self.con();
        let ids: Vec<String> = con.smembers(self.connectors_key()).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.connector_key(id)).collect();
        let records: Vec<Option<String>> = con.mget(&keys).await?;
        let mut connectors = Vec::with_capacity(ids.len());
        let mut expired = Vec::new();
        for (id, json) in ids.iter().zip(records) {
            match json.map(|j| serde_json::from_str::<ConnectorRecord>(&j)) {
                None => expired.push(id),
                Some(Ok(c)) => connectors.push(c),
                Some(Err(e)) => tracing::warn!("registry: skipping SIP connector {id}: {e}"),
            }
        }
        if !expired.is_empty() {
            con.srem::<_, _, ()>(self.connectors_key(), expired).await?;
        }
        Ok(connectors)
    }
}

impl MediaServerRegistry for RedisRegistry {
    async fn heartbeat(&self, server: &MediaServerRecord, ttl: Duration) -> Result<()> {
        let ttl = ttl_millis(ttl)?;
        let json = serde_json::to_string(server).map_err(RegistryError::Encode)?;
        let set = SetOptions::default().with_expiration(SetExpiry::PX(ttl));
        redis::pipe()
            .atomic()
            .set_options(self.server_key(&server.id), json, set)
            .ignore()
            .sadd(self.servers_key(), &server.id)
            .ignore()
            .query_async::<()>(&mut self.con())
            .await?;
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        redis::pipe()
            .atomic()
            .del(&[self.server_key(id), self.drain_key(id)])
            .ignore()
            .srem(self.servers_key(), id)
            .ignore()
            .query_async::<()>(&mut self.con())
            .await?;
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<MediaServerRecord>> {
        let key = self.server_key(id);
        let (json, drained): (Option<String>, bool) = redis::pipe()
            .get(&key)
            .exists(self.drain_key(id))
            .query_async(&mut self.con())
            .await?;
        json.map(|json| Self::decode(key, &json, drained))
            .transpose()
    }

    async fn list(&self) -> Result<Vec<MediaServerRecord>> {
        let mut con = self.con();
        let ids: Vec<String> = con.smembers(self.servers_key()).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.server_key(id)).collect();
        let drain_keys: Vec<String> = ids.iter().map(|id| self.drain_key(id)).collect();
        let (records, drains): (Vec<Option<String>>, Vec<Option<String>>) = redis::pipe()
            .mget(&keys)
            .mget(&drain_keys)
            .query_async(&mut con)
            .await?;
        let mut servers = Vec::with_capacity(ids.len());
        let mut expired = Vec::new();
        for ((id, key), (json, drain)) in ids.iter().zip(keys).zip(records.iter().zip(&drains)) {
            let Some(json) = json else {
                expired.push(id);
                continue;
            };
            // One bad record must not hide every server from placement: skip it, loudly.
            match Self::decode(key, json, drain.is_some()) {
                Ok(server) => servers.push(server),
                Err(e) => tracing::warn!("media server registry: skipping {id}: {e}"),
            }
        }
        if !expired.is_empty() {
            con.srem::<_, _, ()>(self.servers_key(), expired).await?;
        }
        Ok(servers)
    }

    async fn set_draining(&self, id: &str, draining: bool) -> Result<()> {
        let mut con = self.con();
        if !con.exists::<_, bool>(self.server_key(id)).await? {
            return Err(RegistryError::UnknownServer(id.to_owned()));
        }
        if draining {
            con.set::<_, _, ()>(self.drain_key(id), 1).await?;
        } else {
            con.del::<_, ()>(self.drain_key(id)).await?;
        }
        Ok(())
    }

    async fn place(&self, channel: &str, server_id: &str) -> Result<String> {
        // SET NX GET (Redis 7): sets only if absent, and answers the value it found, if any.
        let set = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .get(true);
        let existing: Option<String> = self
            .con()
            .set_options(self.placement_key(channel), server_id, set)
            .await?;
        Ok(existing.unwrap_or_else(|| server_id.to_owned()))
    }

    async fn placement(&self, channel: &str) -> Result<Option<String>> {
        Ok(self.con().get(self.placement_key(channel)).await?)
    }

    async fn unplace(&self, channel: &str) -> Result<()> {
        self.con().del::<_, ()>(self.placement_key(channel)).await?;
        Ok(())
    }
}
