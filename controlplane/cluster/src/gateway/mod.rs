//! The gateway role: WebSocket signalling for clients, with media placed on the cluster's media
//! servers and presence shared with the other gateways.
//!
//! What a gateway keeps itself is only its own clients ([`clients`]: their outboxes and which
//! media server holds each of their publications and subscriptions); who is in a channel and
//! what is published where lives in [`Presence`], and the media servers in the [`Registry`], so
//! any gateway can serve any client of any channel.
//!
//! A client's media goes to its home server ([`placement`]); a publication on another server
//! is relayed there through a pipe ([`relay`]). [`liveness`] notices media servers and gateways
//! that are gone, [`media_client`] calls the media servers, [`channels`] is the signalling
//! side and [`http`] what the gateway serves besides signalling.

mod channels;
mod clients;
mod http;
mod liveness;
mod media_client;
mod placement;
mod recording;
mod relay;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use switchyard_controlplane::allowlist::AllowList;
use switchyard_controlplane::error::Error;
use switchyard_controlplane::metrics::Metrics;
use switchyard_controlplane::protocol::ServerMessage;
use switchyard_controlplane::sync_limits::SyncLimits;
use switchyard_controlplane::token::Applications;
use switchyard_dataplane::turn::auth::Secrets;
use switchyard_store::CachedStore;
use tokio::sync::watch;

use self::clients::Clients;
pub use self::http::router;
pub use self::media_client::HttpClientError;
use self::media_client::{MediaClient, ending};
use crate::presence::{ChannelEvent, Presence};
use crate::registry::{MediaServerRecord, MediaServerRegistry, Registry};
use crate::signing::ClusterSecret;
use crate::sip_connectors::api::{DialBody, DigitsRequest, HangUpRequest};
use crate::sip_connectors::client::ConnectorClient;
use crate::sip_connectors::{ConnectorRecord, by_load};

/// How long a media server's record lives without a heartbeat: three missed heartbeats.
pub const SERVER_TTL: Duration = Duration::from_secs(6);
/// A gateway that has not refreshed its liveness this long is gone, with its clients.
pub const GATEWAY_TTL: Duration = Duration::from_secs(5);

/// A gateway: its clients, the shared registry and presence, and what it serves them with.
pub struct Gateway {
    /// Part of its participants' ids, and the key of its liveness in presence.
    pub id: String,
    pub applications: Applications,
    pub metrics: Metrics,
    /// Limits on its clients' `/sync` sockets.
    pub sync_limits: SyncLimits,
    pub shutdown: watch::Sender<bool>,
    pub registry: Registry,
    pub presence: Presence,
    media: MediaClient,
    /// Calls the standalone SIP connectors (participants' `dtmf`, dial-out).
    connectors: ConnectorClient,
    /// Who may heartbeat and report (INTERNAL:IPADDRESSES).
    internal: AllowList,
    clients: Clients,
    /// The dev application's (id, secret), when `/api/dev-token` may hand out tokens.
    pub dev_tokens: Option<(String, String)>,
    /// Applications, channel configurations and deployments, as last read.
    pub store: CachedStore,
    /// TURN:SECRET, shared with the media servers whose TURN URLs clients are handed.
    pub turn_secrets: Option<Secrets>,
    /// CLUSTER:SECRET: the cluster API's requests are signed with it both ways, pipe keys
    /// sealed (see `crate::signing`). Set with [`Gateway::with_secret`].
    secret: Option<ClusterSecret>,
}

impl Gateway {
    pub fn new(
        id: String,
        applications: Applications,
        store: CachedStore,
        registry: Registry,
        presence: Presence,
        internal: AllowList,
    ) -> Result<Gateway, HttpClientError> {
        let (shutdown, _) = watch::channel(false);
        Ok(Gateway {
            id,
            applications,
            metrics: Metrics::default(),
            sync_limits: SyncLimits::default(),
            shutdown,
            registry,
            presence,
            media: MediaClient::new()?,
            connectors: ConnectorClient::new()?,
            internal,
            clients: Clients::default(),
            dev_tokens: None,
            store,
            turn_secrets: None,
            secret: None,
        })
    }

    /// Signs this gateway's calls to media servers and requires signed ones from them.
    pub fn with_secret(mut self, secret: Option<ClusterSecret>) -> Gateway {
        self.media.secret = secret.clone();
        self.connectors.secret = secret.clone();
        self.secret = secret;
        self
    }

    /// How many of this gateway's clients are connected, for /metrics.
    pub fn client_count(&self) -> usize {
        self.clients.count()
    }

    /// Tells every gateway's clients in the channel (but `except`).
    async fn announce(&self, channel: &str, except: Option<&str>, message: ServerMessage) {
        if let ServerMessage::Unpublished { publication, .. } = &message {
            self.forget_subscriptions_to(channel, publication).await;
            self.close_relays(channel, Some(publication), &Default::default())
                .await;
        }
        let event = ChannelEvent {
            channel: channel.to_string(),
            except: except.map(str::to_string),
            to: None,
            gateway: None,
            message,
        };
        if let Err(e) = self.presence.send(&event).await {
            tracing::warn!(
                channel,
                "could not pass an event to the other gateways: {e}"
            );
            // This gateway's own clients still hear it.
            self.clients.deliver(&event);
        }
    }

    /// Removes a publication from presence and, if this call removed it (gateways may race),
    /// tells the channel: everyone but the publisher, or, when it was `lost` (not ended by its
    /// publisher), the publisher too, whose SDK then publishes again. True if removed here.
    async fn end_publication(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
        lost: bool,
    ) -> bool {
        if !matches!(
            self.presence.remove_publication(channel, publication).await,
            Ok(true)
        ) {
            return false;
        }
        let message = ServerMessage::Unpublished {
            participant: participant.to_string(),
            publication: publication.to_string(),
        };
        let except = (!lost).then_some(participant);
        self.announce(channel, except, message).await;
        true
    }

    /// Forgets the subscriptions to a publication that ended (the media server closed them).
    async fn forget_subscriptions_to(&self, channel: &str, publication: &str) {
        if let Ok(subs) = self.presence.subscriptions(channel).await {
            let ids: Vec<String> = subs
                .into_iter()
                .filter(|(_, s)| s.publication == publication)
                .map(|(id, _)| id)
                .collect();
            let _ = self.presence.remove_subscriptions(channel, &ids).await;
        }
    }

    /// Takes a participant of gateway `owner` out of the channel everywhere: it leaves presence,
    /// its media servers end what it had, its publications are announced unpublished, its
    /// subscriptions leave presence, and the channel hears it left. Nothing happens when presence
    /// says it is no longer `owner`'s (it was resumed elsewhere: what it has now is the new
    /// gateway's); when presence cannot be read, it is removed anyway.
    async fn remove_participant(
        &self,
        channel: &str,
        participant: &str,
        owner: &str,
        publications: &[String],
        subscriptions: &[String],
        servers: BTreeSet<String>,
    ) {
        let empty = match self
            .presence
            .remove_participant(channel, participant, owner)
            .await
        {
            Ok(Some(empty)) => empty,
            Ok(None) => {
                tracing::debug!(
                    channel,
                    participant,
                    owner,
                    "not removed: no longer that gateway's"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(channel, participant, "cannot remove from presence: {e}");
                false
            }
        };
        for server in servers {
            if let Ok(s) = self.server(&server).await {
                self.media
                    .end_on(s, "leave", ending(channel, participant, None));
            }
        }
        for publication in publications {
            self.end_publication(channel, participant, publication, false)
                .await;
        }
        let _ = self
            .presence
            .remove_subscriptions(channel, subscriptions)
            .await;
        if empty {
            // The last one left: the channel's placement goes with it, so that the channel's
            // next publication is placed afresh (on the least loaded server then) instead of
            // on the server chosen when it first started. A publication placed meanwhile by a
            // join on another gateway keeps its server; the next one may go elsewhere and is
            // relayed like any channel spanning servers.
            match self.registry.unplace(channel).await {
                Ok(()) => tracing::debug!(channel, "empty: its placement is removed"),
                Err(e) => {
                    tracing::warn!(channel, "cannot remove the empty channel's placement: {e}")
                }
            }
        }
        self.announce(
            channel,
            Some(participant),
            ServerMessage::ParticipantLeft {
                participant: participant.to_string(),
            },
        )
        .await;
    }

    /// What presence says a participant has: its publications, its subscriptions, and the media
    /// servers they are on (for a participant that is not this gateway's client).
    async fn held(
        &self,
        channel: &str,
        participant: &str,
    ) -> (Vec<String>, Vec<String>, BTreeSet<String>) {
        let publications = self
            .presence
            .publications(channel)
            .await
            .unwrap_or_default();
        let subscriptions = self
            .presence
            .subscriptions(channel)
            .await
            .unwrap_or_default();
        let mut servers = BTreeSet::new();
        let publications: Vec<String> = publications
            .into_iter()
            .filter(|(_, p)| p.participant == participant)
            .map(|(id, p)| {
                servers.insert(p.server);
                id
            })
            .collect();
        let subscriptions: Vec<String> = subscriptions
            .into_iter()
            .filter(|(_, s)| s.participant == participant)
            .map(|(id, s)| {
                servers.insert(s.server);
                id
            })
            .collect();
        (publications, subscriptions, servers)
    }

    /// Disconnects a client, on whichever gateway it is; false if it is not in the channel.
    pub async fn kick(
        &self,
        channel: &str,
        participant: &str,
        reason: &str,
    ) -> Result<bool, Error> {
        let present = self
            .presence
            .participants(channel)
            .await?
            .iter()
            .any(|(p, _)| p == participant);
        if !present {
            return Ok(false);
        }
        let event = ChannelEvent {
            channel: channel.to_string(),
            except: None,
            to: Some(participant.to_string()),
            gateway: None,
            message: ServerMessage::Kicked {
                reason: reason.to_string(),
            },
        };
        self.presence.send(&event).await?;
        tracing::info!(channel, participant, reason, "kicked");
        Ok(true)
    }

    /// Runs the event pump: events from every gateway to this gateway's clients.
    pub async fn pump_events(self: Arc<Self>) {
        let mut events = self.presence.events();
        while let Some(event) = events.recv().await {
            if event.gateway.as_ref().is_none_or(|g| *g == self.id) {
                self.clients.deliver(&event);
            }
        }
    }

    /// Plays a participant's `digits` to the phone calls in `channel` (or to `to`'s) on every
    /// live SIP connector: a channel's calls may be on any of them. `NotFound` when no call
    /// took them.
    pub async fn send_digits(
        &self,
        channel: &str,
        to: Option<&str>,
        digits: &str,
    ) -> Result<(), Error> {
        let connectors = self.registry.connectors().await?;
        let request = DigitsRequest {
            channel: channel.to_string(),
            to: to.map(str::to_string),
            digits: digits.to_string(),
        };
        let answers = futures_util::future::join_all(
            connectors
                .iter()
                .map(|c| self.connectors.send_digits(c, &request)),
        )
        .await;
        let mut calls = 0;
        for (connector, answer) in connectors.iter().zip(answers) {
            match answer {
                Ok(n) => calls += n,
                Err(e) => {
                    tracing::warn!(connector = %connector.id, channel, "digits not passed on: {e}")
                }
            }
        }
        if calls == 0 {
            return Err(Error::NotFound(match to {
                Some(to) => format!("no phone call of {to:?} in channel {channel}"),
                None => format!("no phone call in channel {channel}"),
            }));
        }
        Ok(())
    }

    /// Dials out through the live SIP connector with the fewest calls (the next one when it
    /// cannot be reached); the call's id. `Unavailable` when no connector is registered.
    pub async fn dial(&self, body: &DialBody) -> Result<String, Error> {
        let mut last = Error::Unavailable("no SIP connector is registered".into());
        for connector in by_load(self.registry.connectors().await?) {
            match self.connectors.dial(&connector, body).await {
                Err(Error::Unavailable(why)) => last = Error::Unavailable(why),
                done => return done,
            }
        }
        Err(last)
    }

    /// Hangs up call out `call` in `channel` on whichever live connector has it (the id says
    /// not which: each is asked); whether one had it. When none had it but one could not be
    /// asked, that connector's error: the call may be there.
    pub async fn hang_up(&self, channel: &str, call: &str) -> Result<bool, Error> {
        let request = HangUpRequest {
            channel: channel.to_string(),
            call: call.to_string(),
        };
        let mut failed = None;
        for connector in self.registry.connectors().await? {
            match self.connectors.hang_up(&connector, &request).await {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(connector = %connector.id, channel, "hang-up not passed on: {e}");
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(false), Err)
    }

    /// The live SIP connectors, for `/metrics`.
    async fn sip_connectors(&self) -> Vec<ConnectorRecord> {
        self.registry.connectors().await.unwrap_or_default()
    }

    /// The live media server `id`.
    async fn server(&self, id: &str) -> Result<MediaServerRecord, Error> {
        self.registry
            .get(id)
            .await?
            .ok_or_else(|| Error::Gone(format!("media server {id} is gone")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::registry::MemoryRegistry;
    use switchyard_controlplane::channels::Channels;
    use switchyard_store::Store;
    use tokio::sync::mpsc;

    /// A gateway on the in-memory registry and presence and an in-memory SQLite store (no
    /// network, no other process), its event pump running.
    pub(crate) async fn gateway(id: &str) -> Arc<Gateway> {
        gateway_sharing(id, Presence::memory()).await
    }

    /// A gateway as [`gateway`] makes one, on `presence` (which other gateways may share, as
    /// gateways of a cluster share Redis).
    pub(crate) async fn gateway_sharing(id: &str, presence: Presence) -> Arc<Gateway> {
        let store = Store::open(Some("sqlite::memory:"), std::path::Path::new("."))
            .await
            .unwrap();
        let store = CachedStore::new(store);
        store.refresh().await;
        let g = Gateway::new(
            id.into(),
            Applications::default(),
            store,
            Registry::Memory(MemoryRegistry::new()),
            presence,
            AllowList::parse("127.0.0.1").unwrap(),
        )
        .unwrap();
        let g = Arc::new(g);
        tokio::spawn(g.clone().pump_events());
        // Let the pump subscribe before anything is announced.
        tokio::task::yield_now().await;
        g
    }

    pub(crate) fn server(id: &str, region: &str) -> MediaServerRecord {
        MediaServerRecord {
            id: id.into(),
            region: region.into(),
            available: true,
            active: false,
            over_capacity: false,
            used_capacity: 0.0,
            draining: false,
            ip_addresses: vec![],
            public_ip_address: None,
            version: "test".into(),
            core_count: 1,
            // Nothing listens there: calls to it fail at once.
            cluster_address: "127.0.0.1:9".into(),
            turn_urls: Vec::new(),
            checks: Vec::new(),
        }
    }

    #[tokio::test]
    async fn clients_hear_of_each_other_through_presence() {
        let g = gateway("g1").await;
        let (a_tx, mut a_rx) = mpsc::unbounded_channel();
        let (a, others) = g.join("c", "app", "alice", None, a_tx, None).await.unwrap();
        assert!(others.is_empty());
        let (b_tx, _b_rx) = mpsc::unbounded_channel();
        let (b, others) = g
            .join("c", "app", "bob", Some("eu"), b_tx, None)
            .await
            .unwrap();
        assert_eq!(others.len(), 1);
        assert_eq!(
            (others[0].participant.as_str(), others[0].user.as_str()),
            (a.as_str(), "alice")
        );
        assert!(b.starts_with("p-g1-"), "{b}");
        assert_eq!(
            a_rx.recv().await,
            Some(ServerMessage::ParticipantJoined {
                participant: b.clone(),
                user: "bob".into()
            })
        );
        assert_eq!(g.client_count(), 2);

        assert!(g.kick("c", &b, "bye").await.unwrap());
        assert!(!g.kick("c", "nobody", "bye").await.unwrap());
        g.leave("c", &b).await;
        assert_eq!(
            a_rx.recv().await,
            Some(ServerMessage::ParticipantLeft { participant: b })
        );
        assert_eq!(g.client_count(), 1);
        assert_eq!(g.presence.participants("c").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_publication_needs_a_media_server() {
        let g = gateway("g1").await;
        let (tx, _rx) = mpsc::unbounded_channel();
        let (p, _) = g.join("c", "app", "alice", None, tx, None).await.unwrap();
        let rules = switchyard_controlplane::rules::Rules::from_link(&[], None);
        let e = g.publish("c", &p, "v=0", &rules).await.unwrap_err();
        assert_eq!(e.to_string(), "no media server is available");
        // One that does not answer is skipped; then none is left.
        g.registry
            .heartbeat(&server("ms1", "a"), SERVER_TTL)
            .await
            .unwrap();
        let e = g.publish("c", &p, "v=0", &rules).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        let e = g.publish("c", "stranger", "v=0", &rules).await.unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        let e = g.unpublish("c", &p, "nope").await.unwrap_err();
        assert_eq!(e.to_string(), "no publication nope of yours");
    }

    #[tokio::test]
    async fn kick_reaches_only_the_client_named() {
        let g = gateway("g1").await;
        let (a_tx, mut a_rx) = mpsc::unbounded_channel();
        let (b_tx, mut b_rx) = mpsc::unbounded_channel();
        let (a, _) = g.join("c", "app", "alice", None, a_tx, None).await.unwrap();
        let (b, _) = g.join("c", "app", "bob", None, b_tx, None).await.unwrap();
        assert!(matches!(
            a_rx.recv().await,
            Some(ServerMessage::ParticipantJoined { .. })
        ));
        g.kick("c", &a, "removed").await.unwrap();
        assert_eq!(
            a_rx.recv().await,
            Some(ServerMessage::Kicked {
                reason: "removed".into()
            })
        );
        g.leave("c", &a).await;
        // Bob hears Alice leave and nothing of the kick (the event was for Alice only). He may
        // hear of Alice's join too: it was announced as he joined.
        loop {
            match b_rx.recv().await {
                Some(ServerMessage::ParticipantJoined { participant, .. }) => {
                    assert_eq!(participant, a)
                }
                m => {
                    assert_eq!(m, Some(ServerMessage::ParticipantLeft { participant: a }));
                    break;
                }
            }
        }
        let participants = g.presence.participants("c").await.unwrap();
        assert_eq!(participants.len(), 1);
        assert_eq!(participants[0].0, b);
    }

    /// The next message that is not about someone joining (announced as others join).
    async fn next_but_joins(rx: &mut mpsc::UnboundedReceiver<ServerMessage>) -> ServerMessage {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a message within 5 s")
                .expect("the outbox is open");
            if !matches!(m, ServerMessage::ParticipantJoined { .. }) {
                return m;
            }
        }
    }

    #[tokio::test]
    async fn a_participant_resumes_on_another_gateway_under_its_id() {
        let presence = Presence::memory();
        let g1 = gateway_sharing("g1", presence.clone()).await;
        let g2 = gateway_sharing("g2", presence.clone()).await;
        let (a_tx, mut a_rx) = mpsc::unbounded_channel();
        let (b_tx, mut b_rx) = mpsc::unbounded_channel();
        let (alice, _) = g1
            .join("c", "app", "alice", None, a_tx, None)
            .await
            .unwrap();
        let (bob, _) = g2.join("c", "app", "bob", None, b_tx, None).await.unwrap();

        // Alice's socket to g1 is still open (g1 did not notice it drop) when she resumes on g2.
        let (a2_tx, mut a2_rx) = mpsc::unbounded_channel();
        let (again, others) = g2
            .join("c", "app", "alice", None, a2_tx, Some(alice.as_str()))
            .await
            .unwrap();
        assert_eq!(again, alice);
        assert_eq!(others.len(), 1, "bob: {others:?}");
        assert_eq!(next_but_joins(&mut a_rx).await, ServerMessage::Replaced);
        assert_eq!(g1.client_count(), 0, "g1 let go of her old socket");
        assert_eq!(
            presence
                .participant("c", &alice)
                .await
                .unwrap()
                .map(|e| e.gateway),
            Some("g2".to_string())
        );
        // Bob hears her leave, then join again, in that order.
        assert_eq!(
            next_but_joins(&mut b_rx).await,
            ServerMessage::ParticipantLeft {
                participant: alice.clone()
            }
        );
        assert_eq!(
            b_rx.recv().await,
            Some(ServerMessage::ParticipantJoined {
                participant: alice.clone(),
                user: "alice".into()
            })
        );
        // The old session's leave, if it comes, takes nothing from the resumed one.
        g1.leave("c", &alice).await;
        assert!(presence.has_participant("c", &alice).await.unwrap());
        // (It may hear of Bob's join: announced as she came.)
        while let Ok(m) = a2_rx.try_recv() {
            assert!(
                matches!(m, ServerMessage::ParticipantJoined { .. }),
                "the new socket heard {m:?}"
            );
        }

        // Resuming on the same gateway replaces the socket there; another user cannot.
        let (a3_tx, _a3_rx) = mpsc::unbounded_channel();
        let (third, _) = g2
            .join("c", "app", "alice", None, a3_tx, Some(alice.as_str()))
            .await
            .unwrap();
        assert_eq!(third, alice);
        assert_eq!(next_but_joins(&mut a2_rx).await, ServerMessage::Replaced);
        assert_eq!(g2.client_count(), 2);
        let (m_tx, _m_rx) = mpsc::unbounded_channel();
        let (mallory, _) = g2
            .join("c", "app", "mallory", None, m_tx, Some(bob.as_str()))
            .await
            .unwrap();
        assert_ne!(mallory, bob);
        assert_eq!(presence.participants("c").await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_dead_gateways_participant_is_taken_over_at_once() {
        let presence = Presence::memory();
        let g2 = gateway_sharing("g2", presence.clone()).await;
        // g1 died with Alice's entry in presence, before any sweep.
        let entry = crate::presence::ParticipantEntry {
            user: "alice".into(),
            gateway: "g1".into(),
            session: false,
        };
        presence
            .add_participant("c", "p-g1-1", &entry)
            .await
            .unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let (id, others) = g2
            .join("c", "app", "alice", None, tx, Some("p-g1-1"))
            .await
            .unwrap();
        assert_eq!(id, "p-g1-1");
        assert!(others.is_empty(), "{others:?}");
        // A later sweep of g1's clients leaves her alone: she is g2's now.
        assert_eq!(
            presence
                .remove_participant("c", "p-g1-1", "g1")
                .await
                .unwrap(),
            None
        );
    }
}
