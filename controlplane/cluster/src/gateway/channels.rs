//! The gateway's side of signalling: the [`Channels`] a WebSocket session runs against. Joining
//! is recorded in presence; media is placed on media servers and recorded there too, so every
//! gateway can tell its clients about it.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use switchyard_controlplane::canvas::Canvas;
use switchyard_controlplane::channels::{Channels, Joined, MIX_VIEW};
use switchyard_controlplane::error::Error;
use switchyard_controlplane::metrics::Metrics;
use switchyard_controlplane::protocol::{
    LayerPreferences, ParticipantInfo, PublicationInfo, ServerMessage,
};
use switchyard_controlplane::rules::Rules;
use switchyard_controlplane::sync_limits::SyncLimits;
use switchyard_controlplane::token::Applications;
use switchyard_store::ChannelConfig;
use tokio::sync::{mpsc, watch};

use super::Gateway;
use super::clients::Client;
use super::media_client::{CallError, ending};
use crate::api::{
    MixReply, MixRequest, PreferencesRequest, PublishReply, PublishRequest, SubscribeReply,
    SubscribeRequest, ViewMixReply, ViewMixRequest,
};
use crate::presence::{
    ChannelEvent, ParticipantEntry, PresenceError, PublicationEntry, SubscriptionEntry,
};
use crate::registry::{MediaServerRecord, MediaServerRegistry};

impl Channels for Gateway {
    /// Passed on to the standalone SIP connectors, which hold the calls.
    async fn send_dtmf(&self, channel: &str, to: Option<&str>, digits: &str) -> Result<(), Error> {
        self.send_digits(channel, to, digits).await
    }

    fn applications(&self) -> &Applications {
        &self.applications
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn sync_limits(&self) -> &SyncLimits {
        &self.sync_limits
    }

    fn dev_tokens(&self) -> Option<&(String, String)> {
        self.dev_tokens.as_ref()
    }

    fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The TURN URLs of every media server taking work, with a credential from the shared
    /// secret: the client relays through whichever it reaches (placement happens later, per
    /// publication). None without TURN:SECRET or when the registry cannot be read.
    async fn ice_servers(
        &self,
        user: &str,
    ) -> Vec<switchyard_controlplane::ice_servers::IceServer> {
        let Some(secrets) = &self.turn_secrets else {
            return Vec::new();
        };
        let servers = match self.registry.list().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("no TURN servers for a client: {e}");
                return Vec::new();
            }
        };
        let mut urls: Vec<String> = servers
            .into_iter()
            .filter(|s| s.available && !s.draining)
            .flat_map(|s| s.turn_urls)
            .collect();
        urls.sort();
        urls.dedup();
        switchyard_controlplane::ice_servers::ice_servers(secrets, urls, user)
    }

    /// Webhooks are sent by all-in-one only so far: the application is not kept here yet.
    async fn join(
        &self,
        channel: &str,
        _application: &str,
        user: &str,
        region: Option<&str>,
        outbox: mpsc::UnboundedSender<ServerMessage>,
        resume: Option<&str>,
    ) -> Result<Joined, Error> {
        let id = match resume {
            Some(id) if self.take_over(channel, id, user).await => id.to_string(),
            _ => self.fresh_id(),
        };
        self.enter(channel, &id, Client::new(user, outbox, region))
            .await
    }

    /// The session belongs to this gateway: its watcher reads the outbox, to which the other
    /// gateways' kicks (their `DELETE`s, see [`Gateway::end_session`]) and a lost publication
    /// come through presence like any client's events.
    async fn join_session(
        &self,
        channel: &str,
        _application: &str,
        user: &str,
        region: Option<&str>,
        outbox: mpsc::UnboundedSender<ServerMessage>,
    ) -> Result<Joined, Error> {
        let client = Client {
            session: true,
            ..Client::new(user, outbox, region)
        };
        self.enter(channel, &self.fresh_id(), client).await
    }

    /// This gateway's own session leaves at once. Another gateway's is kicked through
    /// presence, as an operator's kick is: that gateway's watcher makes it leave, and this waits
    /// (a little) until presence no longer has it, so that a `DELETE` answered here is done
    /// when it is answered and the next one gets 404 on any gateway. Should its gateway be gone,
    /// the kick reaches no one and the ghost sweep removes the session within seconds.
    async fn end_session(&self, channel: &str, participant: &str) -> Result<bool, Error> {
        match self.clients.with(channel, participant, |c| c.session) {
            Some(true) => {
                self.leave(channel, participant).await;
                return Ok(true);
            }
            Some(false) => return Ok(false),
            None => {}
        }
        if !self
            .presence
            .participant(channel, participant)
            .await?
            .is_some_and(|e| e.session)
        {
            return Ok(false);
        }
        self.kick(channel, participant, "the session's resource was deleted")
            .await?;
        let deadline = tokio::time::Instant::now() + SESSION_END_WAIT;
        while tokio::time::Instant::now() < deadline
            && self.presence.has_participant(channel, participant).await?
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(true)
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
            .clients
            .with(channel, participant, |c| (c.user.clone(), c.region.clone()))
            .ok_or_else(|| Error::NotFound(format!("{participant} is not in channel {channel}")))?;
        let request = PublishRequest {
            channel: channel.to_string(),
            participant: participant.to_string(),
            user,
            offer: offer.to_string(),
            codecs: rules.codec_names(),
            max_bitrate_kbps: rules.max_bitrate_kbps,
            canvas: Canvas::default(),
            record: rules.record || self.recorded(channel).await,
        };
        // A server that does not answer (killed, its record not yet expired) is skipped once.
        let mut avoid = Vec::new();
        let (server, reply) = loop {
            let server = self.place(channel, region.as_deref(), &avoid).await?;
            match self
                .media
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
        let (publication, answer) = self
            .published(channel, participant, server.clone(), reply, false)
            .await?;
        // A mixer on another server shows this publication too.
        match self.mixer_server(channel).await {
            Ok(Some(mixer)) if mixer.id != server.id => {
                self.relay_to_mixer(channel, &mixer, Some(&publication))
                    .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(channel, %publication, "not mixed: {e}"),
        }
        Ok((publication, answer))
    }

    /// An MCU connection goes to the media server that holds the channel's mixer (see
    /// [`Gateway::mixer_server`]) and is recorded as the participant's publication there,
    /// `mixed`: SFU participants hear it published and may subscribe to it like to any.
    async fn mix(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> Result<(String, String), Error> {
        let user = self.user_of(channel, participant)?;
        let request = MixRequest {
            channel: channel.to_string(),
            participant: participant.to_string(),
            user,
            offer: offer.to_string(),
            codecs: rules.codec_names(),
            max_bitrate_kbps: rules.max_bitrate_kbps,
            canvas: rules.canvas,
            record: rules.record || self.recorded(channel).await,
        };
        let (server, reply) = self
            .call_mixer::<MixReply>(channel, "mix", &request)
            .await?;
        let done = self
            .published(channel, participant, server.clone(), reply, true)
            .await?;
        self.relay_to_mixer(channel, &server, None).await;
        Ok(done)
    }

    /// A view of the mix is made where the channel's mixer is, as an MCU connection is, and
    /// recorded as a subscription of the participant's to [`MIX_VIEW`].
    async fn view_mix(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> Result<(String, String), Error> {
        let user = self.user_of(channel, participant)?;
        let request = ViewMixRequest {
            channel: channel.to_string(),
            participant: participant.to_string(),
            user,
            offer: offer.to_string(),
            canvas: rules.canvas,
        };
        let (server, reply) = self
            .call_mixer::<ViewMixReply>(channel, "view-mix", &request)
            .await?;
        let done = self
            .subscribed(channel, participant, MIX_VIEW, server.clone(), reply)
            .await?;
        self.relay_to_mixer(channel, &server, None).await;
        Ok(done)
    }

    async fn subscribe(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
        offer: &str,
    ) -> Result<(String, String), Error> {
        let user = self.user_of(channel, participant)?;
        let entry = self
            .presence
            .publication(channel, publication)
            .await?
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
            .media
            .call::<SubscribeReply>(&server, "subscribe", &request)
            .await?
            .ok_or_else(|| {
                Error::Unavailable(format!("media server {} sent no answer", server.id))
            })?;
        self.subscribed(channel, participant, publication, server, reply)
            .await
    }

    async fn unpublish(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
    ) -> Result<(), Error> {
        let server = self
            .clients
            .with(channel, participant, |c| c.publications.remove(publication))
            .flatten()
            .ok_or_else(|| Error::NotFound(format!("no publication {publication} of yours")))?;
        if let Ok(s) = self.server(&server).await {
            self.media.end_on(
                s,
                "unpublish",
                ending(channel, participant, Some(publication)),
            );
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
            .clients
            .with(channel, participant, |c| {
                c.subscriptions.remove(subscription)
            })
            .flatten()
            .map(|(server, _)| server)
            .ok_or_else(|| Error::NotFound(format!("no subscription {subscription} of yours")))?;
        if let Ok(s) = self.server(&server).await {
            self.media.end_on(
                s,
                "unsubscribe",
                ending(channel, participant, Some(subscription)),
            );
        }
        let _ = self
            .presence
            .remove_subscriptions(channel, &[subscription.to_string()])
            .await;
        Ok(())
    }

    /// Passed to the media server that holds the subscription.
    async fn set_preferences(
        &self,
        channel: &str,
        participant: &str,
        subscription: &str,
        preferences: LayerPreferences,
    ) -> Result<(), Error> {
        let server = self
            .clients
            .with(channel, participant, |c| {
                c.subscriptions
                    .get(subscription)
                    .map(|(server, _)| server.clone())
            })
            .flatten()
            .ok_or_else(|| Error::NotFound(format!("no subscription {subscription} of yours")))?;
        let s = self.server(&server).await?;
        let request = PreferencesRequest {
            channel: channel.to_string(),
            participant: participant.to_string(),
            subscription: subscription.to_string(),
            preferences,
        };
        self.media
            .call::<serde_json::Value>(&s, "preferences", &request)
            .await
            .map(|_| ())
            .map_err(Error::from)
    }

    /// A client of this gateway gets the signal straight from here; another gateway's client
    /// through the channel's events in Redis, addressed to it alone, after presence says it is
    /// in the channel (so the sender hears of a wrong target at once).
    async fn signal(&self, channel: &str, from: &str, to: &str, data: Value) -> Result<(), Error> {
        let message = ServerMessage::Signal {
            from: from.to_string(),
            data,
        };
        self.send_to(channel, to, message).await
    }

    /// To one participant like a `signal` (its own outbox, else through presence to the gateway
    /// that has it); to everyone else as a channel event every gateway delivers.
    async fn message(
        &self,
        channel: &str,
        from: &str,
        to: Option<&str>,
        data: Value,
    ) -> Result<(), Error> {
        let message = ServerMessage::Message {
            from: from.to_string(),
            data,
        };
        let Some(to) = to else {
            self.announce(channel, Some(from), message).await;
            return Ok(());
        };
        self.send_to(channel, to, message).await
    }

    async fn leave(&self, channel: &str, participant: &str) {
        let Some(gone) = self.clients.forget(channel, participant) else {
            return;
        };
        let publications: Vec<String> = gone.publications.keys().cloned().collect();
        let subscriptions: Vec<String> = gone.subscriptions.keys().cloned().collect();
        self.remove_participant(
            channel,
            participant,
            &self.id,
            &publications,
            &subscriptions,
            gone.servers(),
        )
        .await;
        tracing::info!(channel, participant, "left");
    }
}

/// How long a `DELETE` of another gateway's WHIP/WHEP session waits for that gateway to end it.
const SESSION_END_WAIT: Duration = Duration::from_secs(2);

/// The refusal of `message` to `to`, a WHIP/WHEP session, which has no socket to hear it.
fn cannot_receive(to: &str, message: &ServerMessage) -> Error {
    let what = match message {
        ServerMessage::Signal { .. } => "signals",
        _ => "messages",
    };
    Error::BadRequest(format!(
        "{to} is a WHIP/WHEP session and cannot receive {what}"
    ))
}

impl Gateway {
    /// The user of this gateway's client `participant`.
    fn user_of(&self, channel: &str, participant: &str) -> Result<String, Error> {
        self.clients
            .with(channel, participant, |c| c.user.clone())
            .ok_or_else(|| Error::NotFound(format!("{participant} is not in channel {channel}")))
    }

    /// Records a publication (`mixed`: an MCU connection) a media server made, here and in
    /// presence, and tells the channel; a participant that left meanwhile, or presence that
    /// cannot record it, ends it there again. Returns (its id, the answer).
    async fn published(
        &self,
        channel: &str,
        participant: &str,
        server: MediaServerRecord,
        reply: PublishReply,
        mixed: bool,
    ) -> Result<(String, String), Error> {
        let entry = PublicationEntry {
            participant: participant.to_string(),
            server: server.id.clone(),
            tracks: reply.tracks.clone(),
            mixed,
        };
        let recorded = self
            .presence
            .add_publication(channel, &reply.publication, &entry)
            .await;
        let still_here = self
            .clients
            .with(channel, participant, |c| {
                c.publications
                    .insert(reply.publication.clone(), server.id.clone());
                c.home = Some(server.id.clone());
            })
            .is_some();
        if let Err(e) = recorded {
            self.media.end_on(
                server,
                "unpublish",
                ending(channel, participant, Some(&reply.publication)),
            );
            return Err(e.into());
        }
        if !still_here {
            self.media.end_on(
                server,
                "unpublish",
                ending(channel, participant, Some(&reply.publication)),
            );
            let _ = self
                .presence
                .remove_publication(channel, &reply.publication)
                .await;
            return Err(Error::Gone(format!("{participant} left channel {channel}")));
        }
        tracing::info!(channel, participant, publication = %reply.publication, server = %server.id, region = %server.region, mixed, "published");
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

    /// Records a subscription to `publication` (or to [`MIX_VIEW`]) a media server made, here
    /// and in presence; a participant that left meanwhile ends it there again. Returns (its
    /// id, the answer).
    async fn subscribed(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
        server: MediaServerRecord,
        reply: SubscribeReply,
    ) -> Result<(String, String), Error> {
        let still_here = self
            .clients
            .with(channel, participant, |c| {
                c.subscriptions.insert(
                    reply.subscription.clone(),
                    (server.id.clone(), publication.to_string()),
                );
            })
            .is_some();
        if !still_here {
            self.media.end_on(
                server,
                "unsubscribe",
                ending(channel, participant, Some(&reply.subscription)),
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

    /// Calls `what` (`mix`, `view-mix`) on the media server for the channel's mix: the one
    /// that holds its mixer, else the channel's server, placed as for a publication but
    /// without the client's region claim (one mixer serves the whole channel; other servers'
    /// publications are relayed to it). While there is no mixer yet, a server that
    /// does not answer is skipped once, as for `publish`.
    async fn call_mixer<T: serde::de::DeserializeOwned>(
        &self,
        channel: &str,
        what: &str,
        request: &impl serde::Serialize,
    ) -> Result<(MediaServerRecord, T), Error> {
        let mixer = self.mixer_server(channel).await?;
        let mut avoid = Vec::new();
        loop {
            let server = match &mixer {
                Some(s) => s.clone(),
                None => self.place(channel, None, &avoid).await?,
            };
            match self.media.call::<T>(&server, what, request).await {
                Ok(Some(reply)) => return Ok((server, reply)),
                Ok(None) => {
                    return Err(Error::Unavailable(format!(
                        "media server {} sent no answer",
                        server.id
                    )));
                }
                Err(CallError::Unreachable(m)) if mixer.is_none() && avoid.is_empty() => {
                    tracing::warn!(channel, "{m}; trying another media server");
                    avoid.push(server.id);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The live media server that holds the channel's mixer, as presence has it (where its
    /// MCU connections and views of the mix are); `None` while there is none. One mixer
    /// serves a channel, so a mixer on a draining or unavailable server refuses new MCU
    /// connections rather than start a second mix elsewhere that would not show the first's
    /// participants. A server that left the registry holds nothing: its connections are
    /// being announced lost.
    pub(super) async fn mixer_server(
        &self,
        channel: &str,
    ) -> Result<Option<MediaServerRecord>, Error> {
        let publications = self.presence.publications(channel).await?;
        let subscriptions = self.presence.subscriptions(channel).await?;
        let servers: BTreeSet<String> = publications
            .into_iter()
            .filter(|(_, p)| p.mixed)
            .map(|(_, p)| p.server)
            .chain(
                subscriptions
                    .into_iter()
                    .filter(|(_, s)| s.publication == MIX_VIEW)
                    .map(|(_, s)| s.server),
            )
            .collect();
        for id in servers {
            let Some(s) = self.registry.get(&id).await? else {
                continue;
            };
            if s.draining || !s.available {
                return Err(Error::Unavailable(format!(
                    "the mix of channel {channel} runs on media server {id}, which takes no new connections (draining or unavailable)"
                )));
            }
            return Ok(Some(s));
        }
        Ok(None)
    }

    /// Clears the way for participant `id` to continue as this gateway's client (see
    /// `Channels::join`): whatever is left of it is removed as if it had left, on whichever
    /// gateway it was, and its old socket is told it was replaced. A participant whose gateway
    /// died is taken over at once, without waiting for the sweep. False when `id` is another
    /// user's, or presence cannot say (then the client joins under a new id).
    async fn take_over(&self, channel: &str, id: &str, user: &str) -> bool {
        let entry = match self.presence.participant(channel, id).await {
            Ok(Some(entry)) => entry,
            // Nothing is left of it (it left, or was swept): it just takes its id again.
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!(channel, participant = id, "cannot resume: {e}");
                return false;
            }
        };
        if entry.user != user {
            return false;
        }
        let old = self.clients.forget(channel, id);
        let (publications, subscriptions, servers) = match &old {
            Some(old) => {
                // Its old socket is ours: the session ends without leaving.
                let _ = old.outbox.send(ServerMessage::Replaced);
                (
                    old.publications.keys().cloned().collect(),
                    old.subscriptions.keys().cloned().collect(),
                    old.servers(),
                )
            }
            None => self.held(channel, id).await,
        };
        // Its media servers end what it had before anything new of the same id reaches them.
        for server in servers {
            if let Ok(s) = self.server(&server).await {
                self.media
                    .end_now(&s, "leave", &ending(channel, id, None))
                    .await;
            }
        }
        let owner = if old.is_some() {
            &self.id
        } else {
            &entry.gateway
        };
        self.remove_participant(
            channel,
            id,
            owner,
            &publications,
            &subscriptions,
            BTreeSet::new(),
        )
        .await;
        if old.is_none() && entry.gateway != self.id {
            // Only that gateway's client with this id hears it: from now on this gateway has
            // one too.
            let event = ChannelEvent {
                channel: channel.to_string(),
                except: None,
                to: Some(id.to_string()),
                gateway: Some(entry.gateway.clone()),
                message: ServerMessage::Replaced,
            };
            if let Err(e) = self.presence.send(&event).await {
                tracing::warn!(
                    channel,
                    participant = id,
                    "cannot close the old socket: {e}"
                );
            }
        }
        tracing::info!(channel, participant = id, from = %entry.gateway, "resuming");
        true
    }

    /// A new participant id: this gateway's, with a random part.
    fn fresh_id(&self) -> String {
        format!("p-{}-{:08x}", self.id, rand::random::<u32>())
    }

    /// Adds `client` to `channel`, here and in presence, and tells the others.
    async fn enter(&self, channel: &str, id: &str, client: Client) -> Result<Joined, Error> {
        let id = id.to_string();
        let user = client.user.clone();
        let region = client.region.clone();
        let entry = ParticipantEntry {
            user: user.clone(),
            gateway: self.id.clone(),
            session: client.session,
        };
        // Known locally before it is in presence, so the ghost sweep never takes it for a
        // client this gateway has lost.
        self.clients.add(channel, &id, client);
        let shared = async {
            self.presence.add_participant(channel, &id, &entry).await?;
            let participants = self.presence.participants(channel).await?;
            let publications = self.presence.publications(channel).await?;
            Ok::<_, PresenceError>((participants, publications))
        };
        let (participants, publications) = match shared.await {
            Ok(r) => r,
            Err(e) => {
                self.clients.forget(channel, &id);
                return Err(e.into());
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
                user: user.clone(),
            },
        )
        .await;
        tracing::info!(channel, participant = %id, user = %user, region = region.as_deref(), session = entry.session, "joined");
        Ok((id, others))
    }

    /// Sends `message` to participant `to` of `channel`: straight to its outbox when it is this
    /// gateway's client, else, once presence says it is in the channel (so the sender hears of a
    /// wrong target at once), through the channel's events in Redis, addressed to it alone.
    pub(super) async fn send_to(
        &self,
        channel: &str,
        to: &str,
        message: ServerMessage,
    ) -> Result<(), Error> {
        // The outbox is cloned out so that nothing is sent under the clients' lock.
        if let Some((outbox, session)) = self
            .clients
            .with(channel, to, |c| (c.outbox.clone(), c.session))
        {
            if session {
                return Err(cannot_receive(to, &message));
            }
            return outbox
                .send(message)
                .map_err(|_| Error::Gone(format!("{to} is leaving channel {channel}")));
        }
        match self.presence.participant(channel, to).await? {
            None => {
                return Err(Error::NotFound(format!(
                    "no participant {to} in channel {channel}"
                )));
            }
            Some(e) if e.session => return Err(cannot_receive(to, &message)),
            Some(_) => {}
        }
        let event = ChannelEvent {
            channel: channel.to_string(),
            except: None,
            to: Some(to.to_string()),
            gateway: None,
            message,
        };
        self.presence.send(&event).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::gateway::SERVER_TTL;
    use crate::gateway::tests::{gateway, gateway_sharing, server};
    use crate::presence::Presence;

    /// The next signal in `rx`, skipping presence events.
    async fn next_signal(rx: &mut mpsc::UnboundedReceiver<ServerMessage>) -> ServerMessage {
        loop {
            let m = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("a message within 5 s")
                .expect("the outbox is open");
            if let ServerMessage::Signal { .. } = m {
                return m;
            }
        }
    }

    /// The next channel message in `rx`, skipping presence events.
    async fn next_message(rx: &mut mpsc::UnboundedReceiver<ServerMessage>) -> ServerMessage {
        loop {
            let m = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("a message within 5 s")
                .expect("the outbox is open");
            if let ServerMessage::Message { .. } = m {
                return m;
            }
        }
    }

    #[tokio::test]
    async fn messages_reach_the_channel_across_gateways_or_one_participant() {
        let presence = Presence::memory();
        let g1 = gateway_sharing("g1", presence.clone()).await;
        let g2 = gateway_sharing("g2", presence).await;
        let (a_tx, mut a_rx) = mpsc::unbounded_channel();
        let (b_tx, mut b_rx) = mpsc::unbounded_channel();
        let (d_tx, mut d_rx) = mpsc::unbounded_channel();
        let (e_tx, mut e_rx) = mpsc::unbounded_channel();
        let (alice, _) = g1
            .join("c", "app", "alice", None, a_tx, None)
            .await
            .unwrap();
        let (bob, _) = g2.join("c", "app", "bob", None, b_tx, None).await.unwrap();
        let (_dave, _) = g1.join("c", "app", "dave", None, d_tx, None).await.unwrap();
        let (eve, _) = g1
            .join("other", "app", "eve", None, e_tx, None)
            .await
            .unwrap();
        let hello = ServerMessage::Message {
            from: alice.clone(),
            data: json!({"text": "hello"}),
        };

        // To everyone else: this gateway's client and the other gateway's.
        g1.message("c", &alice, None, json!({"text": "hello"}))
            .await
            .unwrap();
        assert_eq!(next_message(&mut b_rx).await, hello);
        assert_eq!(next_message(&mut d_rx).await, hello);

        // To one participant on the other gateway, and only to it.
        g1.message("c", &alice, Some(&bob), json!(1)).await.unwrap();
        assert_eq!(
            next_message(&mut b_rx).await,
            ServerMessage::Message {
                from: alice.clone(),
                data: json!(1)
            }
        );
        // And back.
        g2.message("c", &bob, Some(&alice), json!(2)).await.unwrap();
        assert_eq!(
            next_message(&mut a_rx).await,
            ServerMessage::Message {
                from: bob.clone(),
                data: json!(2)
            }
        );
        let e = g1
            .message("c", &alice, Some(&eve), json!(3))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");

        tokio::task::yield_now().await;
        for (who, rx) in [
            ("alice", &mut a_rx),
            ("dave", &mut d_rx),
            ("eve", &mut e_rx),
        ] {
            while let Ok(m) = rx.try_recv() {
                assert!(!matches!(m, ServerMessage::Message { .. }), "{who}: {m:?}");
            }
        }
    }

    #[tokio::test]
    async fn signals_cross_gateways_within_one_channel_only() {
        let presence = Presence::memory();
        let g1 = gateway_sharing("g1", presence.clone()).await;
        let g2 = gateway_sharing("g2", presence).await;
        let (a_tx, mut a_rx) = mpsc::unbounded_channel();
        let (b_tx, mut b_rx) = mpsc::unbounded_channel();
        let (d_tx, mut d_rx) = mpsc::unbounded_channel();
        let (e_tx, mut e_rx) = mpsc::unbounded_channel();
        let (alice, _) = g1
            .join("c", "app", "alice", None, a_tx, None)
            .await
            .unwrap();
        let (bob, _) = g2.join("c", "app", "bob", None, b_tx, None).await.unwrap();
        let (dave, _) = g1.join("c", "app", "dave", None, d_tx, None).await.unwrap();
        let (eve, _) = g1
            .join("other", "app", "eve", None, e_tx, None)
            .await
            .unwrap();
        let offer = json!({"description": {"type": "offer", "sdp": "v=0\r\n"}});

        // To another gateway's client, through presence events.
        g1.signal("c", &alice, &bob, offer.clone()).await.unwrap();
        assert_eq!(
            next_signal(&mut b_rx).await,
            ServerMessage::Signal {
                from: alice.clone(),
                data: offer.clone()
            }
        );
        // And back, to this gateway's own client.
        g2.signal("c", &bob, &alice, json!(null)).await.unwrap();
        assert_eq!(
            next_signal(&mut a_rx).await,
            ServerMessage::Signal {
                from: bob.clone(),
                data: json!(null)
            }
        );
        g1.signal("c", &alice, &dave, json!(1)).await.unwrap();
        assert_eq!(
            next_signal(&mut d_rx).await,
            ServerMessage::Signal {
                from: alice.clone(),
                data: json!(1)
            }
        );

        // Another channel's participant is as unknown as one that never was.
        for to in [eve.as_str(), "p-g9-00000000"] {
            let e = g1.signal("c", &alice, to, json!(2)).await.unwrap_err();
            assert!(matches!(e, Error::NotFound(_)), "{e}");
            assert_eq!(e.to_string(), format!("no participant {to} in channel c"));
        }
        let e = g2.signal("c", &bob, &eve, json!(2)).await.unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        // A refused signal is not sent anywhere (refusals return before anything is sent).
        tokio::task::yield_now().await;
        for rx in [&mut a_rx, &mut b_rx, &mut d_rx, &mut e_rx] {
            while let Ok(m) = rx.try_recv() {
                assert!(!matches!(m, ServerMessage::Signal { .. }), "{m:?}");
            }
        }

        // A client that left cannot be reached.
        g2.leave("c", &bob).await;
        let e = g1.signal("c", &alice, &bob, json!(3)).await.unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
    }

    #[tokio::test]
    async fn a_session_refuses_signals_and_ends_from_any_gateway() {
        let presence = Presence::memory();
        let g1 = gateway_sharing("g1", presence.clone()).await;
        let g2 = gateway_sharing("g2", presence).await;
        let (a_tx, _a_rx) = mpsc::unbounded_channel();
        let (alice, _) = g2
            .join("c", "app", "alice", None, a_tx, None)
            .await
            .unwrap();
        let (s_tx, mut s_rx) = mpsc::unbounded_channel();
        let (session, others) = g1
            .join_session("c", "app", "obs", None, s_tx)
            .await
            .unwrap();
        assert_eq!(others.len(), 1);
        let entry = g1.presence.participant("c", &session).await.unwrap();
        assert!(entry.is_some_and(|e| e.session));

        // Neither its own gateway nor another hands it signals or messages.
        for g in [&g1, &g2] {
            let e = g.signal("c", &alice, &session, json!(1)).await.unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{session} is a WHIP/WHEP session and cannot receive signals")
            );
            let e = g
                .message("c", &alice, Some(&session), json!(1))
                .await
                .unwrap_err();
            assert!(matches!(e, Error::BadRequest(_)), "{e}");
        }

        // A DELETE names sessions only.
        assert!(!g1.end_session("c", &alice).await.unwrap());
        assert!(!g2.end_session("c", &alice).await.unwrap());
        assert!(!g2.end_session("c", "p-g9-00000000").await.unwrap());

        // Through the other gateway: the session's own is told (its watcher then leaves).
        let (owner, id) = (g1.clone(), session.clone());
        let watcher = tokio::spawn(async move {
            while let Some(m) = s_rx.recv().await {
                if let ServerMessage::Kicked { .. } = m {
                    owner.leave("c", &id).await;
                    return true;
                }
            }
            false
        });
        assert!(g2.end_session("c", &session).await.unwrap());
        assert!(watcher.await.unwrap(), "kicked");
        assert!(!g1.presence.has_participant("c", &session).await.unwrap());
        assert!(!g2.end_session("c", &session).await.unwrap(), "gone");

        // On its own gateway it leaves at once.
        let (t_tx, _t_rx) = mpsc::unbounded_channel();
        let (other, _) = g1
            .join_session("c", "app", "obs", None, t_tx)
            .await
            .unwrap();
        assert!(g1.end_session("c", &other).await.unwrap());
        assert!(!g1.presence.has_participant("c", &other).await.unwrap());
        assert!(!g1.end_session("c", &other).await.unwrap());
    }

    /// The next message in `rx` that is not about someone joining.
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

    /// Waits (at most 5 s) until `done` holds: what a gateway ends on a media server, it ends
    /// in the background.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        for _ in 0..250 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("not within 5 s: {what}");
    }

    /// Through a gateway, an MCU connection and a view of the mix are made on the media server
    /// (its mixer), recorded in presence (the connection as a mixed publication the channel
    /// hears published and an SFU participant subscribes to), counted in the server's load against its MCU capacity, and ended on
    /// the server by an unmix (`unpublish`) and by leaving.
    #[tokio::test]
    async fn mcu_connections_are_placed_recorded_counted_and_ended() {
        let (node, record) = crate::testing::media_server("ms1", 43000, 1).await;
        let g = gateway("g1").await;
        g.registry.heartbeat(&record, SERVER_TTL).await.unwrap();
        let (a_tx, mut a_rx) = mpsc::unbounded_channel();
        let (b_tx, _b_rx) = mpsc::unbounded_channel();
        let (alice, _) = g.join("c", "app", "alice", None, a_tx, None).await.unwrap();
        let (bob, _) = g.join("c", "app", "bob", None, b_tx, None).await.unwrap();
        let rules = Rules::for_mix(None).unwrap();

        let (mix, answer) = g
            .mix("c", &bob, &crate::testing::mix_offer(false), &rules)
            .await
            .unwrap();
        assert_eq!(answer.matches("a=sendrecv").count(), 2, "{answer}");
        let entry = g.presence.publication("c", &mix).await.unwrap().unwrap();
        assert!(entry.mixed, "{entry:?}");
        assert_eq!((entry.server.as_str(), entry.tracks.len()), ("ms1", 2));
        match next_but_joins(&mut a_rx).await {
            ServerMessage::Published {
                participant,
                publication,
                tracks,
            } => {
                assert_eq!((participant, publication), (bob.clone(), mix.clone()));
                let kinds: Vec<&str> = tracks.iter().map(|t| t.kind.as_str()).collect();
                assert_eq!(kinds, ["audio", "video"]);
            }
            m => panic!("{m:?}"),
        }
        // An SFU participant subscribes to it like to any publication.
        let (_, answer) = g
            .subscribe("c", &alice, &mix, &crate::testing::mix_offer(true))
            .await
            .unwrap();
        assert_eq!(answer.matches("a=sendonly").count(), 2, "{answer}");
        assert_eq!(node.state.mcu_connection_count(), 1, "an SFU subscription");
        let load = node.record();
        assert!(
            load.used_capacity >= 0.5 && !load.over_capacity,
            "one of two MCU connections: {load:?}"
        );

        // A WHEP viewer of the mix goes to the same server.
        let (s_tx, _s_rx) = mpsc::unbounded_channel();
        let (viewer, _) = g
            .join_session("c", "app", "viewer", None, s_tx)
            .await
            .unwrap();
        let (view, answer) = g
            .view_mix("c", &viewer, &crate::testing::mix_offer(true), &rules)
            .await
            .unwrap();
        assert_eq!(answer.matches("a=sendonly").count(), 2, "{answer}");
        let subscriptions: Vec<_> = g
            .presence
            .subscriptions("c")
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, s)| s.participant == viewer)
            .collect();
        assert_eq!(
            subscriptions,
            vec![(
                view.clone(),
                SubscriptionEntry {
                    participant: viewer.clone(),
                    publication: MIX_VIEW.into(),
                    server: "ms1".into(),
                }
            )]
        );
        assert_eq!(node.state.mcu_connection_count(), 2);
        assert!(node.record().over_capacity, "two MCU connections fill it");
        let mixer = g.mixer_server("c").await.unwrap();
        assert_eq!(mixer.map(|s| s.id), Some("ms1".to_string()));

        // An unmix ends the connection on the server; the channel hears it unpublished.
        g.unpublish("c", &bob, &mix).await.unwrap();
        assert_eq!(
            next_but_joins(&mut a_rx).await,
            ServerMessage::Unpublished {
                participant: bob.clone(),
                publication: mix.clone()
            }
        );
        eventually("the MCU connection ends on the server", || {
            node.state.mcu_connection_count() == 1
        })
        .await;
        // Leaving ends the view.
        g.leave("c", &viewer).await;
        eventually("the view ends on the server", || {
            node.state.mcu_connection_count() == 0 && !node.state.has_participant("c", &viewer)
        })
        .await;
        assert!(g.presence.subscriptions("c").await.unwrap().is_empty());
        assert!(g.mixer_server("c").await.unwrap().is_none());
        assert!(!node.record().over_capacity);
        node.state.media.stop();
    }

    /// An MCU connection goes to the server of the channel's mixer (here known from a view of
    /// the mix), not to the channel's server, and is refused rather than start a second mixer
    /// while that server drains.
    #[tokio::test]
    async fn a_mix_goes_where_the_channels_mixer_is() {
        let g = gateway("g1").await;
        for s in [server("a", "eu"), server("b", "eu")] {
            g.registry.heartbeat(&s, SERVER_TTL).await.unwrap();
        }
        let (tx, _rx) = mpsc::unbounded_channel();
        let (alice, _) = g.join("c", "app", "alice", None, tx, None).await.unwrap();
        assert_eq!(g.place("c", None, &[]).await.unwrap().id, "a");
        assert!(g.mixer_server("c").await.unwrap().is_none());
        let view = SubscriptionEntry {
            participant: "p-g2-00000001".into(),
            publication: MIX_VIEW.into(),
            server: "b".into(),
        };
        g.presence
            .add_subscription("c", "sub9", &view)
            .await
            .unwrap();
        let mixer = g.mixer_server("c").await.unwrap();
        assert_eq!(mixer.map(|s| s.id), Some("b".to_string()));

        // Only b is called (it does not answer: no other server is tried).
        let rules = Rules::for_mix(None).unwrap();
        let e = g.mix("c", &alice, "v=0", &rules).await.unwrap_err();
        assert!(
            matches!(e, Error::Unavailable(_)) && e.to_string().starts_with("media server b:"),
            "{e}"
        );
        let e = g.view_mix("c", &alice, "v=0", &rules).await.unwrap_err();
        assert!(e.to_string().starts_with("media server b:"), "{e}");
        assert!(g.presence.publications("c").await.unwrap().is_empty());

        g.registry.set_draining("b", true).await.unwrap();
        let e = g.mix("c", &alice, "v=0", &rules).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the mix of channel c runs on media server b, which takes no new connections (draining or unavailable)"
        );
        // A server that left holds no mixer.
        g.registry.remove("b").await.unwrap();
        assert!(g.mixer_server("c").await.unwrap().is_none());
        let e = g.mix("c", "stranger", "v=0", &rules).await.unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
    }
}
