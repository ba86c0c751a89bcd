//! The registry of the embedded all-in-one process: plain maps behind one mutex, with expiry by
//! deadline on tokio's clock (so tests can pause and advance time). The mutex is never held
//! across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{MediaServerRecord, MediaServerRegistry, RegistryError, Result, ttl_millis};
use crate::sip_connectors::ConnectorRecord;

#[derive(Debug, Clone, Default)]
pub struct MemoryRegistry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    servers: HashMap<String, (MediaServerRecord, Instant)>,
    drained: HashSet<String>,
    placements: HashMap<String, String>,
    connectors: HashMap<String, (ConnectorRecord, Instant)>,
}

impl Inner {
    /// Drops records past their deadline; called on every access, so nothing stale is read.
    fn expire(&mut self) {
        let now = Instant::now();
        self.servers.retain(|_, (_, deadline)| *deadline > now);
        self.connectors.retain(|_, (_, deadline)| *deadline > now);
    }

    fn record(&self, server: &MediaServerRecord) -> MediaServerRecord {
        let mut server = server.clone();
        server.draining |= self.drained.contains(&server.id);
        server
    }
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the maps consistent (every update is
        // a single insert or remove), so a poisoned lock is still safe to use.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.expire();
        inner
    }
}

/// The SIP connectors' records, kept and expired like the media servers'.
impl MemoryRegistry {
    pub async fn connector_heartbeat(
        &self,
        connector: &ConnectorRecord,
        ttl: Duration,
    ) -> Result<()> {
        ttl_millis(ttl)?;
        let deadline = Instant::now() + ttl;
        self.lock()
            .connectors
            .insert(connector.id.clone(), (connector.clone(), deadline));
        Ok(())
    }

    pub async fn remove_connector(&self, id: &str) -> Result<()> {
        self.lock().connectors.remove(id);
        Ok(())
    }

    pub async fn connectors(&self) -> Result<Vec<ConnectorRecord>> {
        Ok(self
            .lock()
            .connectors
            .values()
            .map(|(c, _)| c.clone())
            .collect())
    }
}

impl MediaServerRegistry for MemoryRegistry {
    async fn heartbeat(&self, server: &MediaServerRecord, ttl: Duration) -> Result<()> {
        ttl_millis(ttl)?;
        let deadline = Instant::now() + ttl;
        self.lock()
            .servers
            .insert(server.id.clone(), (server.clone(), deadline));
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let mut inner = self.lock();
        inner.servers.remove(id);
        inner.drained.remove(id);
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<MediaServerRecord>> {
        let inner = self.lock();
        Ok(inner.servers.get(id).map(|(s, _)| inner.record(s)))
    }

    async fn list(&self) -> Result<Vec<MediaServerRecord>> {
        let inner = self.lock();
        Ok(inner
            .servers
            .values()
            .map(|(s, _)| inner.record(s))
            .collect())
    }

    async fn set_draining(&self, id: &str, draining: bool) -> Result<()> {
        let mut inner = self.lock();
        if !inner.servers.contains_key(id) {
            return Err(RegistryError::UnknownServer(id.to_owned()));
        }
        if draining {
            inner.drained.insert(id.to_owned());
        } else {
            inner.drained.remove(id);
        }
        Ok(())
    }

    async fn place(&self, channel: &str, server_id: &str) -> Result<String> {
        let mut inner = self.lock();
        let placed = inner
            .placements
            .entry(channel.to_owned())
            .or_insert_with(|| server_id.to_owned());
        Ok(placed.clone())
    }

    async fn placement(&self, channel: &str) -> Result<Option<String>> {
        Ok(self.lock().placements.get(channel).cloned())
    }

    async fn unplace(&self, channel: &str) -> Result<()> {
        self.lock().placements.remove(channel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str) -> MediaServerRecord {
        MediaServerRecord {
            id: id.into(),
            region: "x".into(),
            available: true,
            active: false,
            over_capacity: false,
            used_capacity: 0.0,
            draining: false,
            ip_addresses: vec![],
            public_ip_address: None,
            version: "0.1.0".into(),
            core_count: 1,
            cluster_address: "127.0.0.1:8445".into(),
            turn_urls: Vec::new(),
            checks: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_stops_heartbeating_disappears_within_its_ttl() {
        let registry = MemoryRegistry::new();
        let ttl = Duration::from_secs(10);
        registry.heartbeat(&server("a"), ttl).await.unwrap();
        registry.heartbeat(&server("b"), ttl).await.unwrap();

        // "a" keeps heartbeating every 4 s; "b" stops.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(4)).await;
            registry.heartbeat(&server("a"), ttl).await.unwrap();
        }
        assert!(registry.get("a").await.unwrap().is_some());
        assert!(registry.get("b").await.unwrap().is_none());
        let ids: Vec<_> = registry
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_record_is_alive_until_just_before_its_deadline() {
        let registry = MemoryRegistry::new();
        registry
            .heartbeat(&server("a"), Duration::from_millis(100))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(registry.get("a").await.unwrap().is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(registry.get("a").await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connector_that_stops_heartbeating_disappears_within_its_ttl() {
        use crate::sip_connectors::tests::connector;
        let registry = MemoryRegistry::new();
        let ttl = Duration::from_secs(6);
        registry
            .connector_heartbeat(&connector("a", 0), ttl)
            .await
            .unwrap();
        registry
            .connector_heartbeat(&connector("b", 0), ttl)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        registry
            .connector_heartbeat(&connector("a", 2), ttl)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        let live = registry.connectors().await.unwrap();
        assert_eq!(
            live,
            [connector("a", 2)],
            "b expired, a's record is its latest"
        );
        // Media servers and connectors are apart: neither lists the other.
        assert!(registry.list().await.unwrap().is_empty());
        registry.remove_connector("a").await.unwrap();
        assert!(registry.connectors().await.unwrap().is_empty());
        let err = registry
            .connector_heartbeat(&connector("a", 0), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::TtlOutOfRange(_)), "{err}");
    }

    #[tokio::test]
    async fn a_ttl_out_of_range_is_refused() {
        let registry = MemoryRegistry::new();
        for ttl in [Duration::ZERO, Duration::from_secs(2 * 24 * 60 * 60)] {
            let err = registry.heartbeat(&server("a"), ttl).await.unwrap_err();
            assert!(matches!(err, RegistryError::TtlOutOfRange(_)), "{err}");
        }
    }
}
