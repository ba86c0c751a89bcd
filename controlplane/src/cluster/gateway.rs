//! The gateway role: WebSocket signalling for clients, with media placed on the cluster's media
//! servers and presence shared with the other gateways.
//!
//! What a gateway keeps itself is only its own clients (their outboxes and which media server
//! holds each of their publications and subscriptions); who is in a channel and what is
//! published where lives in [`Presence`], and the media servers in the [`Registry`], so any
//! gateway can serve any client of any channel.
//!
//! Subscriptions are made on the media server that holds the publication, so a channel whose
//! publishers sit on different servers (a region claim, a server over capacity) still reaches
//! everyone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use super::api::{
    self, EndRequest, Ended, ErrorReply, HeartbeatReply, PipeAddress, PipeAddressRequest, PipeEnd,
    PipeInReply, PipeInRequest, PipeOutReply, PipeOutRequest, PublishReply, PublishRequest,
    SubscribeReply, SubscribeRequest,
};
use super::presence::{
    ChannelEvent, ParticipantEntry, Presence, PublicationEntry, RelayEntry, SubscriptionEntry,
    relay_field,
};
use super::stopped;
use crate::allowlist::AllowList;
use crate::channels::{Channels, Joined};
use crate::metrics::Metrics;
use crate::protocol::{ParticipantInfo, PublicationInfo, ServerMessage};
use crate::registry::{MediaServerRecord, MediaServerRegistry, Registry, choose_server};
use crate::session::{Error, Rules};
use crate::store::{CachedStore, ChannelConfig, Health};
use crate::token::Applications;

/// How long a media server's record lives without a heartbeat: three missed heartbeats.
pub const SERVER_TTL: Duration = Duration::from_secs(6);
/// How often the gateway looks for publications on media servers that are gone (and for
/// clients of gateways that are gone), and refreshes its own liveness.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// A gateway that has not refreshed its liveness this long is gone, with its clients.
pub const GATEWAY_TTL: Duration = Duration::from_secs(5);

/// One of this gateway's clients.
struct Local {
    user: String,
    outbox: mpsc::UnboundedSender<ServerMessage>,
    region: Option<String>,
    /// publication id → media server id
    publications: HashMap<String, String>,
    /// subscription id → (media server id, the publication it receives)
    subscriptions: HashMap<String, (String, String)>,
    /// The media server this client's media goes to: where it publishes, and where its
    /// subscriptions are made (relayed there from other servers).
    home: Option<String>,
}

impl Local {
    fn servers(&self) -> BTreeSet<String> {
        self.publications
            .values()
            .chain(self.subscriptions.values().map(|(server, _)| server))
            .cloned()
            .collect()
    }
}

pub struct Gateway {
    pub id: String,
    pub applications: Applications,
    pub metrics: Metrics,
    pub shutdown: watch::Sender<bool>,
    pub registry: Registry,
    pub presence: Presence,
    http: reqwest::Client,
    /// Who may heartbeat and report (INTERNAL:IPADDRESSES).
    internal: AllowList,
    /// channel → participant → client
    local: Mutex<HashMap<String, HashMap<String, Local>>>,
    /// The dev application's (id, secret), when `/api/dev-token` may hand out tokens.
    pub dev_tokens: Option<(String, String)>,
    /// Applications, channel configurations and deployments, as last read.
    pub store: CachedStore,
}

fn unavailable(what: &str) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Unavailable(format!("{what}: {e}"))
}

impl Gateway {
    pub fn new(
        id: String,
        applications: Applications,
        store: CachedStore,
        registry: Registry,
        presence: Presence,
        internal: AllowList,
    ) -> Result<Gateway, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let (shutdown, _) = watch::channel(false);
        Ok(Gateway {
            id,
            applications,
            metrics: Metrics::default(),
            shutdown,
            registry,
            presence,
            http,
            internal,
            local: Mutex::new(HashMap::new()),
            dev_tokens: None,
            store,
        })
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Local>>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_local<T>(
        &self,
        channel: &str,
        participant: &str,
        f: impl FnOnce(&mut Local) -> T,
    ) -> Option<T> {
        self.local()
            .get_mut(channel)
            .and_then(|c| c.get_mut(participant))
            .map(f)
    }

    fn forget_local(&self, channel: &str, participant: &str) -> Option<Local> {
        let mut local = self.local();
        let gone = local.get_mut(channel).and_then(|c| c.remove(participant));
        if local.get(channel).is_some_and(HashMap::is_empty) {
            local.remove(channel);
        }
        gone
    }

    /// How many of this gateway's clients are connected, for /metrics.
    pub fn client_count(&self) -> usize {
        self.local().values().map(HashMap::len).sum()
    }

    /// Tells every gateway's clients in the channel (but `except`).
    async fn announce(&self, channel: &str, except: Option<&str>, message: ServerMessage) {
        if let ServerMessage::Unpublished { publication, .. } = &message {
            self.forget_subscriptions_to(channel, publication).await;
            self.close_relays(channel, Some(publication), &HashSet::new())
                .await;
        }
        let event = ChannelEvent {
            channel: channel.to_string(),
            except: except.map(str::to_string),
            to: None,
            message,
        };
        if let Err(e) = self.presence.send(&event).await {
            tracing::warn!(
                channel,
                "could not pass an event to the other gateways: {e}"
            );
            // This gateway's own clients still hear it.
            self.deliver(&event);
        }
    }

    /// The client's home media server: the one it last published on, while it is live and not
    /// draining (a draining server takes no new subscriptions); else one placed as for a
    /// publication (which then becomes its home).
    async fn home(&self, channel: &str, participant: &str) -> Result<MediaServerRecord, Error> {
        let (home, region) = self
            .with_local(channel, participant, |l| (l.home.clone(), l.region.clone()))
            .ok_or_else(|| Error::NotFound(format!("{participant} is not in channel {channel}")))?;
        if let Some(id) = home
            && let Ok(Some(s)) = self.registry.get(&id).await
            && s.available
            && !s.draining
        {
            return Ok(s);
        }
        let placed = self.place(channel, region.as_deref(), &[]).await?;
        self.with_local(channel, participant, |l| l.home = Some(placed.id.clone()));
        Ok(placed)
    }

    /// The id on `home` of `publication` relayed there from `origin`, making the pipe if there
    /// is none: `home` says where the channel's worker listens, `origin` starts sending there
    /// and says what, and `home` starts receiving it as a publication. Keys and RTCP SSRCs are
    /// made here and given to both ends.
    async fn relay(
        &self,
        channel: &str,
        publication: &str,
        origin: &MediaServerRecord,
        home: &MediaServerRecord,
    ) -> Result<String, Error> {
        let field = relay_field(publication, &home.id);
        let presence = unavailable("presence (Redis)");
        if let Some(r) = self
            .presence
            .relay(channel, &field)
            .await
            .map_err(|e| presence(&e))?
        {
            return Ok(r.relay);
        }
        let request = PipeAddressRequest {
            channel: channel.to_string(),
        };
        let at: PipeAddress = self
            .call(home, "pipe/address", &request)
            .await?
            .ok_or_else(|| Error::Unavailable("no pipe address".into()))?;
        let (to_home, to_origin) = (api::pipe_key(), api::pipe_key());
        let (origin_ssrc, home_ssrc) = (rand::random::<u32>() | 1, rand::random::<u32>() | 1);
        let pipe_owner = format!("pipe-to:{}", home.id);
        let request = PipeOutRequest {
            channel: channel.to_string(),
            participant: pipe_owner.clone(),
            publication: publication.to_string(),
            pipe: PipeEnd {
                remote: at.address,
                send_key: to_home.clone(),
                receive_key: to_origin.clone(),
                local_rtcp_ssrc: origin_ssrc,
                remote_rtcp_ssrc: home_ssrc,
            },
        };
        let out: PipeOutReply = self
            .call(origin, "pipe/out", &request)
            .await?
            .ok_or_else(|| Error::Unavailable("no pipe from the origin".into()))?;
        let end_pipe = |pipe: &str| {
            self.end_on(
                origin.clone(),
                "unsubscribe",
                end(channel, &pipe_owner, pipe),
            )
        };
        let request = PipeInRequest {
            channel: channel.to_string(),
            participant: relay_owner(publication),
            tracks: out.tracks,
            pipe: PipeEnd {
                remote: out.address,
                send_key: to_origin,
                receive_key: to_home,
                local_rtcp_ssrc: home_ssrc,
                remote_rtcp_ssrc: origin_ssrc,
            },
        };
        let relay = match self.call::<PipeInReply>(home, "pipe/in", &request).await {
            Ok(Some(r)) => r.publication,
            Ok(None) => {
                end_pipe(&out.subscription);
                return Err(Error::Unavailable("no relayed publication".into()));
            }
            Err(e) => {
                end_pipe(&out.subscription);
                return Err(e.into());
            }
        };
        let entry = RelayEntry {
            relay: relay.clone(),
            origin_server: origin.id.clone(),
            pipe: out.subscription.clone(),
        };
        let added = self.presence.add_relay(channel, &field, &entry).await;
        if let Ok(true) = added {
            tracing::info!(channel, publication, from = %origin.id, to = %home.id, relay = %relay, "relaying");
            return Ok(relay);
        }
        // Another gateway made the same relay at the same moment (or presence failed): ours
        // goes, theirs is used.
        end_pipe(&out.subscription);
        self.end_on(
            home.clone(),
            "unpublish",
            end(channel, &relay_owner(publication), &relay),
        );
        let known = self
            .presence
            .relay(channel, &field)
            .await
            .map_err(|e| presence(&e))?;
        match (added, known) {
            (Ok(false), Some(r)) => Ok(r.relay),
            (Err(e), _) => Err(presence(&e)),
            _ => Err(Error::Unavailable("the relay went away".into())),
        }
    }

    /// Ends the relays of `publication` (or, with `None`, those touching a server in `gone`):
    /// the receiving server unpublishes the relayed copy, the origin ends its pipe.
    async fn close_relays(&self, channel: &str, publication: Option<&str>, gone: &HashSet<String>) {
        let Ok(relays) = self.presence.relays(channel).await else {
            return;
        };
        for (field, r) in relays {
            let Some((origin_publication, home)) = field.rsplit_once('@') else {
                continue;
            };
            let matches = match publication {
                Some(p) => p == origin_publication,
                None => gone.contains(home) || gone.contains(&r.origin_server),
            };
            if !matches || !matches!(self.presence.remove_relay(channel, &field).await, Ok(true)) {
                continue;
            }
            tracing::info!(
                channel,
                publication = origin_publication,
                to = home,
                "relay ended"
            );
            if let Ok(s) = self.server(home).await {
                self.end_on(
                    s,
                    "unpublish",
                    end(channel, &relay_owner(origin_publication), &r.relay),
                );
            }
            if let Ok(s) = self.server(&r.origin_server).await {
                self.end_on(
                    s,
                    "unsubscribe",
                    end(channel, &format!("pipe-to:{home}"), &r.pipe),
                );
            }
        }
    }

    /// Tells this gateway's clients whose subscriptions were on a server that is gone to
    /// subscribe again (their publications are still there: they were relayed).
    fn resubscribe_from(&self, live: &HashSet<String>) {
        let mut local = self.local();
        for clients in local.values_mut() {
            for client in clients.values_mut() {
                let lost: Vec<String> = client
                    .subscriptions
                    .iter()
                    .filter(|(_, (server, _))| !live.contains(server))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in lost {
                    if let Some((_, publication)) = client.subscriptions.remove(&id) {
                        let _ = client
                            .outbox
                            .send(ServerMessage::Resubscribe { publication });
                    }
                }
                if client.home.as_ref().is_some_and(|h| !live.contains(h)) {
                    client.home = None;
                }
            }
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

    /// Hands an event to this gateway's clients in its channel.
    fn deliver(&self, event: &ChannelEvent) {
        let mut local = self.local();
        let Some(clients) = local.get_mut(&event.channel) else {
            return;
        };
        for (id, client) in clients.iter_mut() {
            if event.except.as_deref() == Some(id.as_str())
                || event.to.as_deref().is_some_and(|to| to != id)
            {
                continue;
            }
            // A publisher hears about its own publication only when it was lost, and then
            // stops counting it as its own.
            if let ServerMessage::Unpublished {
                participant,
                publication,
            } = &event.message
                && participant == id
            {
                client.publications.remove(publication);
            }
            let _ = client.outbox.send(event.message.clone());
        }
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
            .await
            .map_err(|e| unavailable("presence (Redis)")(&e))?
            .iter()
            .any(|(p, _)| p == participant);
        if !present {
            return Ok(false);
        }
        let event = ChannelEvent {
            channel: channel.to_string(),
            except: None,
            to: Some(participant.to_string()),
            message: ServerMessage::Kicked {
                reason: reason.to_string(),
            },
        };
        self.presence
            .send(&event)
            .await
            .map_err(|e| unavailable("presence (Redis)")(&e))?;
        tracing::info!(channel, participant, reason, "kicked");
        Ok(true)
    }

    /// Runs the event pump: events from every gateway to this gateway's clients.
    pub async fn pump_events(self: Arc<Self>) {
        let mut events = self.presence.events();
        while let Some(event) = events.recv().await {
            self.deliver(&event);
        }
    }

    /// Every second: refreshes this gateway's liveness; removes the clients of gateways that are
    /// gone; announces publications on media servers that left the registry as unpublished
    /// (their publishers' SDKs publish again, on a live server).
    pub async fn watch_servers(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.presence.gateway_alive(&self.id, GATEWAY_TTL).await {
                tracing::warn!("cannot refresh this gateway's liveness in Redis: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_EVERY) => {}
                _ = stopped(&mut stop) => return,
            }
            self.sweep_ghosts().await;
            let live: HashSet<String> = match self.registry.list().await {
                Ok(servers) => servers.into_iter().map(|s| s.id).collect(),
                Err(e) => {
                    tracing::warn!("cannot list media servers: {e}");
                    continue;
                }
            };
            self.resubscribe_from(&live);
            let channels: Vec<String> = self.local().keys().cloned().collect();
            for channel in channels {
                let gone: HashSet<String> = match self.presence.relays(&channel).await {
                    Ok(relays) => relays
                        .iter()
                        .flat_map(|(f, r)| {
                            let home = f.rsplit_once('@').map(|(_, h)| h.to_string());
                            home.into_iter().chain([r.origin_server.clone()])
                        })
                        .filter(|s| !live.contains(s))
                        .collect(),
                    Err(_) => HashSet::new(),
                };
                if !gone.is_empty() {
                    self.close_relays(&channel, None, &gone).await;
                }
                let publications = match self.presence.publications(&channel).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(channel, "cannot read publications: {e}");
                        continue;
                    }
                };
                for (publication, entry) in publications {
                    if live.contains(&entry.server) {
                        continue;
                    }
                    if self
                        .end_publication(&channel, &entry.participant, &publication, true)
                        .await
                    {
                        tracing::warn!(channel, publication, server = %entry.server, "media server gone; publication lost");
                    }
                }
            }
        }
    }

    /// Removes participants whose gateway is gone (its liveness key expired) or, for this
    /// gateway's own id, that it does not know (it restarted): the others in their channels are
    /// told, and their media servers end what they had.
    async fn sweep_ghosts(&self) {
        let Ok(channels) = self.presence.channels().await else {
            return;
        };
        let mut alive: HashMap<String, bool> = HashMap::new();
        for channel in channels {
            let Ok(participants) = self.presence.participants(&channel).await else {
                continue;
            };
            for (participant, entry) in participants {
                let ghost = if entry.gateway == self.id {
                    self.with_local(&channel, &participant, |_| ()).is_none()
                } else {
                    let known = alive.get(&entry.gateway).copied();
                    let live = match known {
                        Some(live) => live,
                        None => {
                            let live = self
                                .presence
                                .is_gateway_alive(&entry.gateway)
                                .await
                                .unwrap_or(true);
                            alive.insert(entry.gateway.clone(), live);
                            live
                        }
                    };
                    !live
                };
                if ghost {
                    tracing::warn!(channel, participant, gateway = %entry.gateway, "its gateway is gone; removing it");
                    self.remove_ghost(&channel, &participant).await;
                }
            }
        }
    }

    async fn remove_ghost(&self, channel: &str, participant: &str) {
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
        self.remove_participant(channel, participant, &publications, &subscriptions, servers)
            .await;
    }

    /// Takes a participant out of the channel everywhere: its media servers end what it had,
    /// its publications are announced unpublished, its subscriptions and itself leave presence,
    /// and the channel hears it left.
    async fn remove_participant(
        &self,
        channel: &str,
        participant: &str,
        publications: &[String],
        subscriptions: &[String],
        servers: BTreeSet<String>,
    ) {
        for server in servers {
            if let Ok(s) = self.server(&server).await {
                let request = EndRequest {
                    channel: channel.to_string(),
                    participant: participant.to_string(),
                    id: None,
                };
                self.end_on(s, "leave", request);
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
        if let Err(e) = self.presence.remove_participant(channel, participant).await {
            tracing::warn!(channel, participant, "cannot remove from presence: {e}");
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

    /// The media server for a new publication of a client with `region`: the channel's server
    /// if it still fits, else [`choose_server`] (region, then under capacity, then least
    /// loaded), which then becomes the channel's server. `avoid` are servers that just failed.
    async fn place(
        &self,
        channel: &str,
        region: Option<&str>,
        avoid: &[String],
    ) -> Result<MediaServerRecord, Error> {
        let servers: Vec<MediaServerRecord> = self
            .registry
            .list()
            .await
            .map_err(|e| unavailable("media server registry")(&e))?
            .into_iter()
            .filter(|s| !avoid.contains(&s.id))
            .collect();
        let region_ok = |s: &MediaServerRecord| {
            region.is_none_or(|r| s.region == r || !servers.iter().any(|x| x.region == r))
        };
        let placed = self
            .registry
            .placement(channel)
            .await
            .map_err(|e| unavailable("media server registry")(&e))?;
        if let Some(s) = placed
            .as_ref()
            .and_then(|id| servers.iter().find(|s| &s.id == id))
            && s.available
            && !s.draining
            && !s.over_capacity
            && region_ok(s)
        {
            return Ok(s.clone());
        }
        let chosen = choose_server(&servers, region)
            .ok_or_else(|| Error::Unavailable("no media server is available".into()))?
            .clone();
        let stale = placed.is_some_and(|id| {
            !servers
                .iter()
                .any(|s| s.id == id && s.available && !s.draining)
        });
        let result = async {
            if stale {
                self.registry.unplace(channel).await?;
            }
            self.registry.place(channel, &chosen.id).await
        };
        if let Err(e) = result.await {
            tracing::warn!(channel, "cannot record the channel's placement: {e}");
        }
        Ok(chosen)
    }

    async fn server(&self, id: &str) -> Result<MediaServerRecord, Error> {
        self.registry
            .get(id)
            .await
            .map_err(|e| unavailable("media server registry")(&e))?
            .ok_or_else(|| Error::Gone(format!("media server {id} is gone")))
    }

    /// Calls a media server's internal API.
    async fn call<T: DeserializeOwned>(
        &self,
        server: &MediaServerRecord,
        what: &str,
        body: &impl serde::Serialize,
    ) -> Result<Option<T>, CallError> {
        let url = format!("http://{}{}/{what}", server.cluster_address, api::PREFIX);
        let reply = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::Unreachable(format!("media server {}: {e}", server.id)))?;
        let status = reply.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            return reply.json::<T>().await.map(Some).map_err(|e| {
                CallError::Failed(Error::Unavailable(format!(
                    "media server {}: {e}",
                    server.id
                )))
            });
        }
        let message = reply
            .json::<ErrorReply>()
            .await
            .map(|r| r.error)
            .unwrap_or_else(|_| format!("media server {} answered {status}", server.id));
        Err(CallError::Failed(api::error_from_status(
            status.as_u16(),
            message,
        )))
    }

    /// Ends what a participant has on a media server, in the background (a slow or dead server
    /// must not hold up a leaving client).
    fn end_on(&self, server: MediaServerRecord, what: &'static str, request: EndRequest) {
        let http = self.http.clone();
        tokio::spawn(async move {
            let url = format!("http://{}{}/{what}", server.cluster_address, api::PREFIX);
            if let Err(e) = http.post(&url).json(&request).send().await {
                tracing::debug!(server = %server.id, "{what} on the media server: {e}");
            }
        });
    }
}

enum CallError {
    /// The server could not be reached: try another.
    Unreachable(String),
    Failed(Error),
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Error {
        match e {
            CallError::Unreachable(m) => Error::Unavailable(m),
            CallError::Failed(e) => e,
        }
    }
}

impl Channels for Gateway {
    fn applications(&self) -> &Applications {
        &self.applications
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn dev_tokens(&self) -> Option<&(String, String)> {
        self.dev_tokens.as_ref()
    }

    fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    async fn join(
        &self,
        channel: &str,
        user: &str,
        region: Option<&str>,
        outbox: mpsc::UnboundedSender<ServerMessage>,
    ) -> Result<Joined, Error> {
        let id = format!("p-{}-{:08x}", self.id, rand::random::<u32>());
        let entry = ParticipantEntry {
            user: user.to_string(),
            gateway: self.id.clone(),
        };
        let unavailable = unavailable("presence (Redis)");
        // Known locally before it is in presence, so the ghost sweep never takes it for a
        // client this gateway has lost.
        self.local().entry(channel.to_string()).or_default().insert(
            id.clone(),
            Local {
                user: user.to_string(),
                outbox,
                region: region.map(str::to_string),
                publications: HashMap::new(),
                subscriptions: HashMap::new(),
                home: None,
            },
        );
        let shared = async {
            self.presence.add_participant(channel, &id, &entry).await?;
            let participants = self.presence.participants(channel).await?;
            let publications = self.presence.publications(channel).await?;
            Ok::<_, super::presence::PresenceError>((participants, publications))
        };
        let (participants, publications) = match shared.await {
            Ok(r) => r,
            Err(e) => {
                self.forget_local(channel, &id);
                return Err(unavailable(&e));
            }
        };
        let mut others: Vec<ParticipantInfo> = participants
            .into_iter()
            .filter(|(p, _)| *p != id)
            .map(|(participant, e)| ParticipantInfo {
                publications: publications
                    .iter()
                    .filter(|(_, x)| x.participant == participant)
                    .map(|(publication, x)| PublicationInfo {
                        publication: publication.clone(),
                        tracks: x.tracks.clone(),
                    })
                    .collect(),
                participant,
                user: e.user,
            })
            .collect();
        others.sort_by(|a, b| a.participant.cmp(&b.participant));
        self.announce(
            channel,
            Some(&id),
            ServerMessage::ParticipantJoined {
                participant: id.clone(),
                user: user.to_string(),
            },
        )
        .await;
        tracing::info!(channel, participant = %id, user, region, "joined");
        Ok((id, others))
    }

    fn channel_config(&self, application: &str, channel: &str) -> Option<ChannelConfig> {
        self.store.channel_config(application, channel)
    }

    async fn publish(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> Result<(String, String), Error> {
        let (user, region) = self
            .with_local(channel, participant, |l| (l.user.clone(), l.region.clone()))
            .ok_or_else(|| Error::NotFound(format!("{participant} is not in channel {channel}")))?;
        let request = PublishRequest {
            channel: channel.to_string(),
            participant: participant.to_string(),
            user,
            offer: offer.to_string(),
            codecs: rules.codec_names(),
        };
        // A server that does not answer (killed, its record not yet expired) is skipped once.
        let mut avoid = Vec::new();
        let (server, reply) = loop {
            let server = self.place(channel, region.as_deref(), &avoid).await?;
            match self
                .call::<PublishReply>(&server, "publish", &request)
                .await
            {
                Ok(Some(reply)) => break (server, reply),
                Ok(None) => {
                    return Err(Error::Unavailable(format!(
                        "media server {} sent no answer",
                        server.id
                    )));
                }
                Err(CallError::Unreachable(m)) if avoid.is_empty() => {
                    tracing::warn!(channel, "{m}; trying another media server");
                    avoid.push(server.id);
                }
                Err(e) => return Err(e.into()),
            }
        };
        let entry = PublicationEntry {
            participant: participant.to_string(),
            server: server.id.clone(),
            tracks: reply.tracks.clone(),
        };
        let recorded = self
            .presence
            .add_publication(channel, &reply.publication, &entry)
            .await;
        let still_here = self
            .with_local(channel, participant, |l| {
                l.publications
                    .insert(reply.publication.clone(), server.id.clone());
                l.home = Some(server.id.clone());
            })
            .is_some();
        if let Err(e) = recorded {
            self.end_on(
                server,
                "unpublish",
                end(channel, participant, &reply.publication),
            );
            return Err(unavailable("presence (Redis)")(&e));
        }
        if !still_here {
            self.end_on(
                server,
                "unpublish",
                end(channel, participant, &reply.publication),
            );
            let _ = self
                .presence
                .remove_publication(channel, &reply.publication)
                .await;
            return Err(Error::Gone(format!("{participant} left channel {channel}")));
        }
        tracing::info!(channel, participant, publication = %reply.publication, server = %server.id, region = %server.region, "published");
        self.announce(
            channel,
            Some(participant),
            ServerMessage::Published {
                participant: participant.to_string(),
                publication: reply.publication.clone(),
                tracks: reply.tracks,
            },
        )
        .await;
        Ok((reply.publication, reply.answer))
    }

    async fn subscribe(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
        offer: &str,
    ) -> Result<(String, String), Error> {
        let user = self
            .with_local(channel, participant, |l| l.user.clone())
            .ok_or_else(|| Error::NotFound(format!("{participant} is not in channel {channel}")))?;
        let entry = self
            .presence
            .publication(channel, publication)
            .await
            .map_err(|e| unavailable("presence (Redis)")(&e))?
            .ok_or_else(|| {
                Error::NotFound(format!("no publication {publication} in channel {channel}"))
            })?;
        let origin = self.server(&entry.server).await?;
        // Subscriptions are made on the client's home server; a publication on another server
        // is relayed there through a pipe (cascading). Should that fail, the subscription is
        // made on the publication's own server instead, which always works.
        let home = self.home(channel, participant).await.ok();
        let (server, target) = match home {
            Some(home) if home.id != origin.id => {
                match self.relay(channel, publication, &origin, &home).await {
                    Ok(relay) => (home, relay),
                    Err(e) => {
                        tracing::warn!(channel, publication, from = %origin.id, to = %home.id, "cannot relay ({e}); subscribing on the publication's server");
                        (origin, publication.to_string())
                    }
                }
            }
            _ => (origin, publication.to_string()),
        };
        let request = SubscribeRequest {
            channel: channel.to_string(),
            participant: participant.to_string(),
            user,
            publication: target,
            offer: offer.to_string(),
        };
        let reply = self
            .call::<SubscribeReply>(&server, "subscribe", &request)
            .await?
            .ok_or_else(|| {
                Error::Unavailable(format!("media server {} sent no answer", server.id))
            })?;
        let still_here = self
            .with_local(channel, participant, |l| {
                l.subscriptions.insert(
                    reply.subscription.clone(),
                    (server.id.clone(), publication.to_string()),
                );
            })
            .is_some();
        if !still_here {
            self.end_on(
                server,
                "unsubscribe",
                end(channel, participant, &reply.subscription),
            );
            return Err(Error::Gone(format!("{participant} left channel {channel}")));
        }
        let entry = SubscriptionEntry {
            participant: participant.to_string(),
            publication: publication.to_string(),
            server: server.id.clone(),
        };
        if let Err(e) = self
            .presence
            .add_subscription(channel, &reply.subscription, &entry)
            .await
        {
            tracing::warn!(channel, "cannot record the subscription in presence: {e}");
        }
        tracing::info!(channel, participant, publication, subscription = %reply.subscription, server = %server.id, "subscribed");
        Ok((reply.subscription, reply.answer))
    }

    async fn unpublish(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
    ) -> Result<(), Error> {
        let server = self
            .with_local(channel, participant, |l| l.publications.remove(publication))
            .flatten()
            .ok_or_else(|| Error::NotFound(format!("no publication {publication} of yours")))?;
        if let Ok(s) = self.server(&server).await {
            self.end_on(s, "unpublish", end(channel, participant, publication));
        }
        self.end_publication(channel, participant, publication, false)
            .await;
        Ok(())
    }

    async fn unsubscribe(
        &self,
        channel: &str,
        participant: &str,
        subscription: &str,
    ) -> Result<(), Error> {
        let server = self
            .with_local(channel, participant, |l| {
                l.subscriptions.remove(subscription)
            })
            .flatten()
            .map(|(server, _)| server)
            .ok_or_else(|| Error::NotFound(format!("no subscription {subscription} of yours")))?;
        if let Ok(s) = self.server(&server).await {
            self.end_on(s, "unsubscribe", end(channel, participant, subscription));
        }
        let _ = self
            .presence
            .remove_subscriptions(channel, &[subscription.to_string()])
            .await;
        Ok(())
    }

    async fn leave(&self, channel: &str, participant: &str) {
        let Some(gone) = self.forget_local(channel, participant) else {
            return;
        };
        let publications: Vec<String> = gone.publications.keys().cloned().collect();
        let subscriptions: Vec<String> = gone.subscriptions.keys().cloned().collect();
        self.remove_participant(
            channel,
            participant,
            &publications,
            &subscriptions,
            gone.servers(),
        )
        .await;
        tracing::info!(channel, participant, "left");
    }
}

/// Who owns a relayed copy of `publication` on the receiving server.
fn relay_owner(publication: &str) -> String {
    format!("relay:{publication}")
}

fn end(channel: &str, participant: &str, id: &str) -> EndRequest {
    EndRequest {
        channel: channel.to_string(),
        participant: participant.to_string(),
        id: Some(id.to_string()),
    }
}

/// The cluster API media servers call: heartbeats and ended publications.
pub fn cluster_router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(&format!("{}/media-servers", api::PREFIX), put(heartbeat))
        .route(
            &format!("{}/media-servers/remove", api::PREFIX),
            post(remove),
        )
        .route(&format!("{}/ended", api::PREFIX), post(ended))
        .route(
            &format!("{}/deployments/{{id}}", api::PREFIX),
            get(deployment),
        )
        .route(&format!("{}/media-servers", api::PREFIX), get(list))
        .with_state(gateway)
}

fn forbidden(g: &Gateway, from: SocketAddr) -> Option<Response> {
    if g.internal.allows(from.ip()) {
        return None;
    }
    tracing::warn!(%from, "cluster API call from outside INTERNAL:IPADDRESSES refused");
    Some(
        (
            StatusCode::FORBIDDEN,
            Json(ErrorReply {
                error: format!("{} may not use the cluster API", from.ip()),
            }),
        )
            .into_response(),
    )
}

fn registry_error(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(ErrorReply {
            error: format!("media server registry: {e}"),
        }),
    )
        .into_response()
}

async fn heartbeat(
    State(g): State<Arc<Gateway>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(record): Json<MediaServerRecord>,
) -> Response {
    if let Some(r) = forbidden(&g, from) {
        return r;
    }
    let known = matches!(g.registry.get(&record.id).await, Ok(Some(_)));
    match g.registry.heartbeat(&record, SERVER_TTL).await {
        Ok(()) => {
            if !known {
                tracing::info!(id = %record.id, region = %record.region, cluster = %record.cluster_address, public = ?record.public_ip_address, "media server registered");
            }
            Json(HeartbeatReply {
                ttl_ms: SERVER_TTL.as_millis() as u64,
            })
            .into_response()
        }
        Err(e) => registry_error(e),
    }
}

#[derive(Deserialize)]
struct RemoveRequest {
    id: String,
}

async fn remove(
    State(g): State<Arc<Gateway>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(r): Json<RemoveRequest>,
) -> Response {
    if let Some(refused) = forbidden(&g, from) {
        return refused;
    }
    match g.registry.remove(&r.id).await {
        Ok(()) => {
            tracing::info!(id = %r.id, "media server unregistered");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => registry_error(e),
    }
}

async fn ended(
    State(g): State<Arc<Gateway>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(r): Json<Ended>,
) -> Response {
    if let Some(refused) = forbidden(&g, from) {
        return refused;
    }
    let current = g.presence.publication(&r.channel, &r.publication).await;
    if let Ok(Some(entry)) = current
        && entry.server == r.server
        && g.end_publication(&r.channel, &r.participant, &r.publication, true)
            .await
    {
        tracing::info!(channel = %r.channel, publication = %r.publication, server = %r.server, "the media server ended a publication");
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A deployment's settings for a starting media server (STUN servers, capacity thresholds),
/// from the configuration as last read.
async fn deployment(
    State(g): State<Arc<Gateway>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if let Some(refused) = forbidden(&g, from) {
        return refused;
    }
    let snapshot = g.store.snapshot();
    match snapshot
        .deployments
        .iter()
        .find(|d| d.id.eq_ignore_ascii_case(&id))
    {
        Some(d) => Json(d.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(ErrorReply {
                error: format!("no deployment {id:?} is configured"),
            }),
        )
            .into_response(),
    }
}

async fn list(
    State(g): State<Arc<Gateway>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
) -> Response {
    if let Some(refused) = forbidden(&g, from) {
        return refused;
    }
    match g.registry.list().await {
        Ok(mut servers) => {
            servers.sort_by(|a, b| a.id.cmp(&b.id));
            Json(servers).into_response()
        }
        Err(e) => registry_error(e),
    }
}

/// Everything a gateway serves on its HTTP port: signalling, the demo page, `/ready`,
/// `/metrics`, and the cluster API for media servers.
pub fn router(gateway: Arc<Gateway>) -> Router {
    crate::server::signalling_routes::<Gateway>()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(gateway.clone())
        .merge(cluster_router(gateway))
}

/// 200 when the gateway can place media (the registry answers and lists a server) with current
/// configuration, else 503 with what is wrong; load balancers take a gateway out of rotation on
/// 503. With the configuration database down, sessions still work from the cached
/// configuration, and this says `degraded`.
async fn ready(State(g): State<Arc<Gateway>>) -> Response {
    if let Health::Degraded(reason) = g.store.health() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "degraded: configuration store: {reason} (serving the configuration read before)\n"
            ),
        )
            .into_response();
    }
    match g.registry.list().await {
        Ok(servers) if servers.iter().any(|s| s.available && !s.draining) => {
            (StatusCode::OK, "ready\n").into_response()
        }
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded: no media server is registered and accepting sessions\n",
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: media server registry: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(g): State<Arc<Gateway>>) -> Response {
    let mut out = String::new();
    g.metrics.render(&mut out);
    crate::metrics::metric(
        &mut out,
        "switchyard_gateway_clients",
        "gauge",
        "Signalling clients connected to this gateway.",
        g.client_count() as u64,
    );
    let servers = g.registry.list().await.map(|s| s.len()).unwrap_or(0);
    crate::metrics::metric(
        &mut out,
        "switchyard_media_servers",
        "gauge",
        "Media servers in the registry.",
        servers as u64,
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}
