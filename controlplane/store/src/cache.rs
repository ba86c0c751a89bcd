//! The configuration as last read, served while the database is unreachable: sessions keep
//! being admitted with the applications and channel configurations known before the outage,
//! calls keep being routed with the SIP mappings and trunks, and `/ready` says the server is
//! degraded rather than down.

use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;

use super::channel_match::match_channel;
use super::records::{Application, ChannelConfig, Deployment};
use super::sip::{self, SipCall, SipMapping, SipTrunk};
use super::webhook::Webhook;
use super::{Store, StoreError};

/// Whether the configuration served is current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "status", content = "reason")]
pub enum Health {
    Ok,
    /// The last refresh failed (or none has succeeded yet); the reason says why.
    Degraded(String),
}

/// Everything [`CachedStore::refresh`] reads, as of one refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub deployments: Vec<Deployment>,
    pub applications: Vec<Application>,
    pub channel_configs: Vec<ChannelConfig>,
    pub webhooks: Vec<Webhook>,
    /// With their passwords, for the SIP connector; by name.
    pub sip_trunks: Vec<SipTrunk>,
    /// Every application's, in the order calls are routed.
    pub sip_mappings: Vec<SipMapping>,
    /// Unix milliseconds of the refresh that read it; 0 before the first.
    pub read_at: i64,
}

/// A [`Store`] with the last snapshot read from it. Clones share the snapshot.
#[derive(Debug, Clone)]
pub struct CachedStore {
    store: Store,
    state: Arc<RwLock<(Arc<Snapshot>, Health)>>,
}

impl CachedStore {
    /// Wraps `store` with an empty snapshot, degraded until the first [`refresh`] succeeds.
    ///
    /// [`refresh`]: CachedStore::refresh
    pub fn new(store: Store) -> Self {
        let health = Health::Degraded("the configuration has not been read yet".into());
        CachedStore {
            store,
            state: Arc::new(RwLock::new((Arc::default(), health))),
        }
    }

    /// The store underneath, for changes (which the next refresh then picks up).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads everything again. On success the snapshot is replaced and health is ok; on failure
    /// the previous snapshot stays and health is degraded with the error as the reason.
    pub async fn refresh(&self) -> Health {
        let (snapshot, health) = match self.load().await {
            Ok(snapshot) => (Some(Arc::new(snapshot)), Health::Ok),
            Err(e) => {
                tracing::warn!("cannot read the configuration, serving the last snapshot: {e}");
                (None, Health::Degraded(e.to_string()))
            }
        };
        let mut state = self.write_lock();
        if let Some(snapshot) = snapshot {
            state.0 = snapshot;
        }
        state.1 = health.clone();
        health
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            deployments: self.store.deployments().await?,
            applications: self.store.applications().await?,
            channel_configs: self.store.channel_configs().await?,
            webhooks: self.store.webhooks().await?,
            sip_trunks: self.store.sip_trunks().await?,
            sip_mappings: self.store.sip_mappings().await?,
            read_at: super::now_millis(),
        })
    }

    pub fn health(&self) -> Health {
        self.read_lock().1.clone()
    }

    /// The configuration as of the last successful refresh.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.read_lock().0.clone()
    }

    pub fn application(&self, id: &str) -> Option<Application> {
        self.snapshot()
            .applications
            .iter()
            .find(|a| a.id == id)
            .cloned()
    }

    /// The secret to sign `application`'s event bodies with (its newest) and its webhooks that
    /// want events of type `kind`; none when the application is unknown.
    pub fn webhooks_for(&self, application: &str, kind: &str) -> Option<(String, Vec<Webhook>)> {
        let snapshot = self.snapshot();
        let app = snapshot.applications.iter().find(|a| a.id == application)?;
        let secret = app.secrets.last()?.clone();
        let hooks = snapshot
            .webhooks
            .iter()
            .filter(|w| w.application_id == application && w.wants(kind))
            .cloned()
            .collect();
        Some((secret, hooks))
    }

    /// The deployment `id`, matched without regard to case as operators' settings are
    /// (`DEPLOYMENTS:0:DEPLOYMENTID=Default` names the deployment `default`).
    pub fn deployment(&self, id: &str) -> Option<Deployment> {
        self.snapshot()
            .deployments
            .iter()
            .find(|d| d.id.eq_ignore_ascii_case(id))
            .cloned()
    }

    /// The channel configuration that applies to `channel` of `application` (see
    /// [`match_channel`]).
    pub fn channel_config(&self, application: &str, channel: &str) -> Option<ChannelConfig> {
        match_channel(&self.snapshot().channel_configs, application, channel).cloned()
    }

    /// The SIP mapping an incoming call matches, with the channel it joins (see
    /// [`sip::route`]).
    pub fn sip_route(&self, call: &SipCall<'_>) -> Option<(SipMapping, String)> {
        let snapshot = self.snapshot();
        sip::route(&snapshot.sip_mappings, call).map(|(m, channel)| (m.clone(), channel))
    }

    /// The SIP trunk `name`, password included.
    pub fn sip_trunk(&self, name: &str) -> Option<SipTrunk> {
        self.snapshot()
            .sip_trunks
            .iter()
            .find(|t| t.name == name)
            .cloned()
    }

    /// The trunk calls out go through (see [`sip::outbound_trunk`]).
    pub fn sip_outbound_trunk(&self) -> Option<SipTrunk> {
        sip::outbound_trunk(&self.snapshot().sip_trunks).cloned()
    }

    // A panic elsewhere while holding the lock cannot leave the pair half-written (a refresh
    // assigns whole values), so a poisoned lock is still good to use.
    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, (Arc<Snapshot>, Health)> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, (Arc<Snapshot>, Health)> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}
