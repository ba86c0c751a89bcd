//! Who is in each channel across all gateways, what they publish and on which media server, and
//! the events gateways pass each other: in Redis for a cluster, in memory for a lone gateway.
//!
//! Redis keys, under `switchyard:{namespace}:` like the registry's:
//! - `channel:{channel}:participants`: hash, participant id → JSON [`ParticipantEntry`]
//! - `channel:{channel}:publications`: hash, publication id → JSON [`PublicationEntry`]
//! - `channel:{channel}:subscriptions`: hash, subscription id → JSON [`SubscriptionEntry`]
//! - `channel:{channel}:relays`: hash, `{publication}@{server}` → JSON [`RelayEntry`]: the
//!   publication relayed (cascaded) to that media server
//! - `channels`: set of the channels with participants, for the admin API's list
//! - `gateway:{id}`: set with a TTL by each gateway every second; when it expires, the other
//!   gateways remove that gateway's clients (it crashed)
//! - `events`: the pub/sub channel every gateway subscribes to; each message is a JSON
//!   [`ChannelEvent`]. One topic for all channels keeps a gateway at one subscription; each
//!   gateway drops events for channels it has no one in.
//!
//! Removing a publication reports whether this call removed it, so when several gateways notice
//! the same loss (a media server gone) exactly one announces it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use switchyard_controlplane::error::Error;
use switchyard_controlplane::protocol::{ServerMessage, TrackInfo};

use crate::registry::retry::Retrying;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantEntry {
    pub user: String,
    pub gateway: String,
    /// A WHIP/WHEP session (no socket: it cannot receive signals or messages, and a `DELETE`
    /// may end it). Absent, and false, for signalling clients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicationEntry {
    pub participant: String,
    pub server: String,
    pub tracks: Vec<TrackInfo>,
    /// An MCU connection (its publication is what the participant sends into the mix): its
    /// server holds the channel's mixer. Absent, and false, for SFU publications.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mixed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionEntry {
    pub participant: String,
    pub publication: String,
    pub server: String,
}

/// A publication relayed from its media server (`origin_server`) to another over a pipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayEntry {
    /// The relayed publication's id on the receiving server.
    pub relay: String,
    pub origin_server: String,
    /// The pipe's subscription on the origin server.
    pub pipe: String,
}

/// The field of a relay in the channel's relays hash.
pub fn relay_field(publication: &str, server: &str) -> String {
    format!("{publication}@{server}")
}

/// The publication and the receiving server a relay's field names (see [`relay_field`]).
pub fn relay_field_parts(field: &str) -> Option<(&str, &str)> {
    field.rsplit_once('@')
}

/// A message for the participants of one channel, on whichever gateway they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelEvent {
    pub channel: String,
    /// Everyone in the channel but this participant gets it.
    #[serde(default)]
    pub except: Option<String>,
    /// Only this participant gets it.
    #[serde(default)]
    pub to: Option<String>,
    /// Only this gateway's clients get it: a participant's old socket on one gateway, while the
    /// same participant, resumed, is another's client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub message: ServerMessage,
}

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot encode presence: {0}")]
    Json(#[from] serde_json::Error),
}

/// Presence that cannot be read or written leaves a request undone for now.
impl From<PresenceError> for Error {
    fn from(e: PresenceError) -> Error {
        Error::Unavailable(format!("presence (Redis): {e}"))
    }
}

pub type Result<T, E = PresenceError> = std::result::Result<T, E>;

#[derive(Clone)]
pub enum Presence {
    Memory(Arc<Memory>),
    Redis(RedisPresence),
}

#[derive(Default)]
pub struct Memory {
    channels: Mutex<HashMap<String, MemoryChannel>>,
    recorded: Mutex<std::collections::HashSet<String>>,
    events: Mutex<Option<broadcast::Sender<ChannelEvent>>>,
}

#[derive(Default)]
struct MemoryChannel {
    participants: HashMap<String, ParticipantEntry>,
    publications: HashMap<String, PublicationEntry>,
    subscriptions: HashMap<String, SubscriptionEntry>,
    relays: HashMap<String, RelayEntry>,
}

#[derive(Clone)]
pub struct RedisPresence {
    connection: ConnectionManager,
    client: redis::Client,
    prefix: String,
}

impl Presence {
    pub fn memory() -> Presence {
        Presence::Memory(Arc::new(Memory::default()))
    }

    /// Connects to Redis at `url`, keys under `switchyard:{namespace}:`.
    pub async fn redis(url: &str, namespace: &str) -> Result<Presence> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new(client.clone()).await?;
        Ok(Presence::Redis(RedisPresence {
            connection,
            client,
            prefix: format!("switchyard:{namespace}:"),
        }))
    }

    pub async fn add_participant(
        &self,
        channel: &str,
        id: &str,
        entry: &ParticipantEntry,
    ) -> Result<()> {
        match self {
            Presence::Memory(m) => {
                m.channel(channel, |c| {
                    c.participants.insert(id.to_string(), entry.clone());
                });
                Ok(())
            }
            Presence::Redis(r) => {
                let json = serde_json::to_string(entry)?;
                let _: () = redis::pipe()
                    .hset(r.key(channel, "participants"), id, json)
                    .sadd(r.channels_key(), channel)
                    .query_async(&mut r.con())
                    .await?;
                Ok(())
            }
        }
    }

    /// Removes participant `id` if it is still `gateway`'s: `None` when it is not (then nothing
    /// changed), else whether the channel has no participant left (on any gateway), so that its
    /// placement can go. One resumed on another gateway meanwhile (see
    /// `switchyard_controlplane::resume`) belongs to that gateway, which alone may remove it: the
    /// old gateway's leave, or a sweep of a dead gateway's clients, must not take it.
    pub async fn remove_participant(
        &self,
        channel: &str,
        id: &str,
        gateway: &str,
    ) -> Result<Option<bool>> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| {
                let ours = c.participants.get(id).is_some_and(|e| e.gateway == gateway);
                if !ours {
                    return None;
                }
                c.participants.remove(id);
                Some(c.participants.is_empty())
            })),
            Presence::Redis(r) => {
                // One script, so nothing can resume the participant between the check and the
                // removal. An entry that does not decode is removed (nobody can own it).
                const SCRIPT: &str = r#"
                    local v = redis.call('HGET', KEYS[1], ARGV[1])
                    if not v then return -1 end
                    local ok, e = pcall(cjson.decode, v)
                    if ok and type(e) == 'table' and e['gateway'] ~= ARGV[2] then return -1 end
                    redis.call('HDEL', KEYS[1], ARGV[1])
                    local left = redis.call('HLEN', KEYS[1])
                    if left == 0 then
                        redis.call('SREM', KEYS[2], ARGV[3])
                    end
                    return left
                "#;
                let left: i64 = redis::cmd("EVAL")
                    .arg(SCRIPT)
                    .arg(2)
                    .arg(r.key(channel, "participants"))
                    .arg(r.channels_key())
                    .arg(id)
                    .arg(gateway)
                    .arg(channel)
                    .query_async(&mut r.con())
                    .await?;
                Ok((left >= 0).then_some(left == 0))
            }
        }
    }

    pub async fn participants(&self, channel: &str) -> Result<Vec<(String, ParticipantEntry)>> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| {
                c.participants
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })),
            Presence::Redis(r) => r.read_hash(&r.key(channel, "participants")).await,
        }
    }

    /// Participant `id` of `channel`, on any gateway (one field read).
    pub async fn participant(&self, channel: &str, id: &str) -> Result<Option<ParticipantEntry>> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| c.participants.get(id).cloned())),
            Presence::Redis(r) => {
                let json: Option<String> = r.con().hget(r.key(channel, "participants"), id).await?;
                Ok(match json {
                    Some(j) => Some(serde_json::from_str(&j)?),
                    None => None,
                })
            }
        }
    }

    /// Whether participant `id` is in `channel`, on any gateway (one field read, not the whole
    /// hash: it is asked for every peer-to-peer signal to another gateway's client).
    pub async fn has_participant(&self, channel: &str, id: &str) -> Result<bool> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| c.participants.contains_key(id))),
            Presence::Redis(r) => Ok(r.con().hexists(r.key(channel, "participants"), id).await?),
        }
    }

    /// Channels with participants, sorted.
    pub async fn channels(&self) -> Result<Vec<String>> {
        let mut channels: Vec<String> = match self {
            Presence::Memory(m) => m
                .channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(_, c)| !c.participants.is_empty())
                .map(|(k, _)| k.clone())
                .collect(),
            Presence::Redis(r) => r.con().smembers(r.channels_key()).await?,
        };
        channels.sort();
        Ok(channels)
    }

    pub async fn add_publication(
        &self,
        channel: &str,
        id: &str,
        entry: &PublicationEntry,
    ) -> Result<()> {
        match self {
            Presence::Memory(m) => {
                m.channel(channel, |c| {
                    c.publications.insert(id.to_string(), entry.clone());
                });
                Ok(())
            }
            Presence::Redis(r) => {
                let json = serde_json::to_string(entry)?;
                let _: () = r
                    .con()
                    .hset(r.key(channel, "publications"), id, json)
                    .await?;
                Ok(())
            }
        }
    }

    /// Removes a publication; true if this call removed it (false: gone already).
    pub async fn remove_publication(&self, channel: &str, id: &str) -> Result<bool> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| c.publications.remove(id).is_some())),
            Presence::Redis(r) => {
                let removed: u32 = r.con().hdel(r.key(channel, "publications"), id).await?;
                Ok(removed > 0)
            }
        }
    }

    pub async fn publications(&self, channel: &str) -> Result<Vec<(String, PublicationEntry)>> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| {
                c.publications
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })),
            Presence::Redis(r) => r.read_hash(&r.key(channel, "publications")).await,
        }
    }

    pub async fn publication(&self, channel: &str, id: &str) -> Result<Option<PublicationEntry>> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| c.publications.get(id).cloned())),
            Presence::Redis(r) => {
                let json: Option<String> = r.con().hget(r.key(channel, "publications"), id).await?;
                Ok(match json {
                    Some(j) => Some(serde_json::from_str(&j)?),
                    None => None,
                })
            }
        }
    }

    pub async fn add_subscription(
        &self,
        channel: &str,
        id: &str,
        entry: &SubscriptionEntry,
    ) -> Result<()> {
        match self {
            Presence::Memory(m) => {
                m.channel(channel, |c| {
                    c.subscriptions.insert(id.to_string(), entry.clone());
                });
                Ok(())
            }
            Presence::Redis(r) => {
                let json = serde_json::to_string(entry)?;
                let _: () = r
                    .con()
                    .hset(r.key(channel, "subscriptions"), id, json)
                    .await?;
                Ok(())
            }
        }
    }

    /// Removes subscriptions by id.
    pub async fn remove_subscriptions(&self, channel: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        match self {
            Presence::Memory(m) => {
                m.channel(channel, |c| {
                    for id in ids {
                        c.subscriptions.remove(id);
                    }
                });
                Ok(())
            }
            Presence::Redis(r) => {
                let _: () = r.con().hdel(r.key(channel, "subscriptions"), ids).await?;
                Ok(())
            }
        }
    }

    pub async fn subscriptions(&self, channel: &str) -> Result<Vec<(String, SubscriptionEntry)>> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| {
                c.subscriptions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })),
            Presence::Redis(r) => r.read_hash(&r.key(channel, "subscriptions")).await,
        }
    }

    /// Records a relay unless one is recorded already; false if another won.
    pub async fn add_relay(&self, channel: &str, field: &str, entry: &RelayEntry) -> Result<bool> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| {
                if c.relays.contains_key(field) {
                    false
                } else {
                    c.relays.insert(field.to_string(), entry.clone());
                    true
                }
            })),
            Presence::Redis(r) => {
                let json = serde_json::to_string(entry)?;
                Ok(r.con()
                    .hset_nx(r.key(channel, "relays"), field, json)
                    .await?)
            }
        }
    }

    /// The relay recorded under `field` (see [`relay_field`]).
    pub async fn relay(&self, channel: &str, field: &str) -> Result<Option<RelayEntry>> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| c.relays.get(field).cloned())),
            Presence::Redis(r) => {
                let json: Option<String> = r.con().hget(r.key(channel, "relays"), field).await?;
                Ok(match json {
                    Some(j) => Some(serde_json::from_str(&j)?),
                    None => None,
                })
            }
        }
    }

    pub async fn relays(&self, channel: &str) -> Result<Vec<(String, RelayEntry)>> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| {
                c.relays
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })),
            Presence::Redis(r) => r.read_hash(&r.key(channel, "relays")).await,
        }
    }

    /// Removes a relay record; true if this call removed it.
    pub async fn remove_relay(&self, channel: &str, field: &str) -> Result<bool> {
        match self {
            Presence::Memory(m) => Ok(m.channel(channel, |c| c.relays.remove(field).is_some())),
            Presence::Redis(r) => {
                let removed: u32 = r.con().hdel(r.key(channel, "relays"), field).await?;
                Ok(removed > 0)
            }
        }
    }

    /// Says this gateway is alive for `ttl`.
    pub async fn gateway_alive(&self, id: &str, ttl: Duration) -> Result<()> {
        match self {
            Presence::Memory(_) => Ok(()),
            Presence::Redis(r) => {
                let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                let _: () = r.con().pset_ex(r.gateway_key(id), 1, ms).await?;
                Ok(())
            }
        }
    }

    /// Whether gateway `id` refreshed its liveness within its TTL (always, in memory: there is
    /// only this gateway).
    pub async fn is_gateway_alive(&self, id: &str) -> Result<bool> {
        match self {
            Presence::Memory(_) => Ok(true),
            Presence::Redis(r) => Ok(r.con().exists(r.gateway_key(id)).await?),
        }
    }

    /// Records `channel` (its publications, now and as they come) or stops: every gateway
    /// then asks the media servers to record the channel's new publications.
    pub async fn set_recorded(&self, channel: &str, on: bool) -> Result<()> {
        match self {
            Presence::Memory(m) => {
                let mut recorded = m.recorded.lock().unwrap_or_else(|p| p.into_inner());
                if on {
                    recorded.insert(channel.to_string());
                } else {
                    recorded.remove(channel);
                }
                Ok(())
            }
            Presence::Redis(r) => {
                let _: u32 = if on {
                    r.con().sadd(r.recorded_key(), channel).await?
                } else {
                    r.con().srem(r.recorded_key(), channel).await?
                };
                Ok(())
            }
        }
    }

    /// Whether `channel` is recorded by an administrator's request (see
    /// [`Presence::set_recorded`]).
    pub async fn is_recorded(&self, channel: &str) -> Result<bool> {
        match self {
            Presence::Memory(m) => Ok(m
                .recorded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(channel)),
            Presence::Redis(r) => Ok(r.con().sismember(r.recorded_key(), channel).await?),
        }
    }

    /// Sends an event to every gateway (this one included).
    pub async fn send(&self, event: &ChannelEvent) -> Result<()> {
        match self {
            Presence::Memory(m) => {
                if let Some(tx) = m.events.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    let _ = tx.send(event.clone());
                }
                Ok(())
            }
            Presence::Redis(r) => {
                let json = serde_json::to_string(event)?;
                let _: () = r.con().publish(r.events_topic(), json).await?;
                Ok(())
            }
        }
    }

    /// Every event sent by any gateway, for as long as the receiver is kept. With Redis a
    /// background task holds the subscription and, when Redis goes away, subscribes again
    /// (events sent while it was down are lost; presence itself is in hashes and survives).
    pub fn events(&self) -> mpsc::UnboundedReceiver<ChannelEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        match self {
            Presence::Memory(m) => {
                let mut sub = m
                    .events
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| broadcast::channel(1024).0)
                    .subscribe();
                tokio::spawn(async move {
                    loop {
                        match sub.recv().await {
                            Ok(e) => {
                                if tx.send(e).is_err() {
                                    return;
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                tracing::warn!("presence events: {n} dropped (receiver too slow)");
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                });
            }
            Presence::Redis(r) => {
                let r = r.clone();
                tokio::spawn(async move { r.pump(tx).await });
            }
        }
        rx
    }
}

impl Memory {
    fn channel<T>(&self, name: &str, f: impl FnOnce(&mut MemoryChannel) -> T) -> T {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let c = channels.entry(name.to_string()).or_default();
        let out = f(c);
        if c.participants.is_empty()
            && c.publications.is_empty()
            && c.subscriptions.is_empty()
            && c.relays.is_empty()
        {
            channels.remove(name);
        }
        out
    }
}

impl RedisPresence {
    /// A handle for one command (sent once more if it finds the connection broken).
    fn con(&self) -> Retrying {
        Retrying(self.connection.clone())
    }

    fn key(&self, channel: &str, what: &str) -> String {
        format!("{}channel:{channel}:{what}", self.prefix)
    }

    fn gateway_key(&self, id: &str) -> String {
        format!("{}gateway:{id}", self.prefix)
    }

    fn recorded_key(&self) -> String {
        format!("{}recorded", self.prefix)
    }

    fn channels_key(&self) -> String {
        format!("{}channels", self.prefix)
    }

    fn events_topic(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// Reads a hash of JSON values; an entry that does not decode is skipped with a warning, so
    /// one bad entry cannot hide a whole channel.
    async fn read_hash<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Vec<(String, T)>> {
        let raw: HashMap<String, String> = self.con().hgetall(key).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(k, v)| match serde_json::from_str(&v) {
                Ok(value) => Some((k, value)),
                Err(e) => {
                    tracing::warn!(key, field = %k, "skipping an unreadable presence entry: {e}");
                    None
                }
            })
            .collect())
    }

    async fn pump(self, tx: mpsc::UnboundedSender<ChannelEvent>) {
        let topic = self.events_topic();
        let mut failures = 0u32;
        let mut before = false;
        loop {
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&topic).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match subscribed.await {
                Ok(mut pubsub) => {
                    if before {
                        tracing::info!("presence events: subscribed to Redis again");
                    }
                    before = true;
                    failures = 0;
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<ChannelEvent>(&payload) {
                            Ok(event) => {
                                if tx.send(event).is_err() {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!("presence events: dropped a bad event: {e}"),
                        }
                    }
                    tracing::warn!("presence events: the Redis subscription ended; resubscribing");
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(
                            "presence events: cannot subscribe in Redis ({e}); retrying"
                        );
                    }
                    failures += 1;
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_presence_and_events() {
        let p = Presence::memory();
        let mut events = p.events();
        let entry = ParticipantEntry {
            user: "u".into(),
            gateway: "g1".into(),
            session: false,
        };
        p.add_participant("c", "p1", &entry).await.unwrap();
        assert_eq!(
            p.participants("c").await.unwrap(),
            vec![("p1".into(), entry.clone())]
        );
        assert!(p.has_participant("c", "p1").await.unwrap());
        assert!(!p.has_participant("c", "p2").await.unwrap());
        assert!(!p.has_participant("other", "p1").await.unwrap());
        assert_eq!(p.participant("c", "p1").await.unwrap(), Some(entry.clone()));
        assert_eq!(p.participant("c", "p2").await.unwrap(), None);
        let publication = PublicationEntry {
            participant: "p1".into(),
            server: "ms1".into(),
            tracks: vec![],
            mixed: false,
        };
        p.add_publication("c", "pub1", &publication).await.unwrap();
        assert_eq!(p.publication("c", "pub1").await.unwrap(), Some(publication));
        let relay = RelayEntry {
            relay: "relay1".into(),
            origin_server: "ms1".into(),
            pipe: "pipe1".into(),
        };
        let field = relay_field("pub1", "ms2");
        assert!(p.add_relay("c", &field, &relay).await.unwrap());
        assert!(
            !p.add_relay("c", &field, &relay).await.unwrap(),
            "first writer wins"
        );
        assert_eq!(p.relay("c", &field).await.unwrap(), Some(relay));
        assert!(p.remove_relay("c", &field).await.unwrap());
        assert_eq!(p.relay("c", &field).await.unwrap(), None);
        assert!(p.remove_publication("c", "pub1").await.unwrap());
        assert!(
            !p.remove_publication("c", "pub1").await.unwrap(),
            "removed once"
        );
        let event = ChannelEvent {
            channel: "c".into(),
            except: None,
            to: None,
            gateway: None,
            message: ServerMessage::ParticipantLeft {
                participant: "p1".into(),
            },
        };
        p.send(&event).await.unwrap();
        assert_eq!(events.recv().await, Some(event));
        assert_eq!(
            p.remove_participant("c", "p1", "g2").await.unwrap(),
            None,
            "g1's"
        );
        assert_eq!(p.participant("c", "p1").await.unwrap(), Some(entry.clone()));
        assert_eq!(
            p.remove_participant("c", "p1", "g1").await.unwrap(),
            Some(true),
            "removed, and the channel is empty now"
        );
        assert_eq!(p.remove_participant("c", "p1", "g1").await.unwrap(), None);
        assert!(p.participants("c").await.unwrap().is_empty());
        assert!(p.channels().await.unwrap().is_empty());
    }

    /// Entries written before MCU connections were recorded read as SFU publications, and an
    /// SFU publication is written as it was.
    #[test]
    fn a_publication_is_mixed_only_when_it_says_so() {
        let old = r#"{"participant":"p1","server":"ms1","tracks":[]}"#;
        let entry: PublicationEntry = serde_json::from_str(old).unwrap();
        assert!(!entry.mixed);
        assert_eq!(serde_json::to_string(&entry).unwrap(), old);
        let mixed = PublicationEntry {
            mixed: true,
            ..entry
        };
        let json = serde_json::to_string(&mixed).unwrap();
        assert!(json.ends_with(r#""mixed":true}"#), "{json}");
        assert_eq!(
            serde_json::from_str::<PublicationEntry>(&json).unwrap(),
            mixed
        );
    }
}
