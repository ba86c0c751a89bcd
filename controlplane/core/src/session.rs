//! What signalling and WHIP/WHEP have in common: joining a channel, publishing and
//! subscribing (offer in, answer out, a transport on the channel's worker), leaving, and
//! cleaning up when the data plane closes a transport.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use switchyard_dataplane::ice::Credentials;
use switchyard_dataplane::mcu::MixerConfig;
use switchyard_dataplane::media::{Codec, MediaKind};
use switchyard_dataplane::sdp::{self, LocalParams, MediaRole, Negotiated, Offer, SendTrack};
use switchyard_dataplane::spec::{
    self, ConsumerSpec, MediaEvent, PipeSpec, ProducerSpec, RouterId, RtxSpec, Ssrc, TransportId,
    TransportKind, TransportSpec,
};
use switchyard_dataplane::worker::MediaServer;
use switchyard_store::{CachedStore, ChannelConfig};
use tokio::sync::mpsc;

use crate::channels::{Channels, Joined};
use crate::data_channels;
use crate::error::Error;
use crate::ids;
use crate::metrics::{Live, Metrics};
use crate::phones::{DialRefusal, DialRequest};
use crate::pipe::PipeTrack;
use crate::protocol::{LayerPreferences, ParticipantInfo, ServerMessage, TrackInfo};
use crate::rooms::{
    Channel, MIX_VIEW, Owner, Participant, Publication, Rooms, Subscription, Track,
};
use crate::rules::{ALL_CODECS, Rules};
use crate::sync_limits::SyncLimits;
use crate::token::Applications;
use crate::webhooks::{Event, Kind, Link, Webhooks};

/// A participant as [`AppState::participants`] shows it.
#[derive(Debug, Clone)]
pub struct ParticipantView {
    pub channel: String,
    pub id: String,
    pub user: String,
    /// A WHIP/WHEP session: in all-in-one, a participant without a socket.
    pub session: bool,
    /// (publication id, its tracks).
    pub publications: Vec<(String, Vec<TrackInfo>)>,
    /// (subscription id, the publication it receives).
    pub subscriptions: Vec<(String, String)>,
}

/// Everything the HTTP handlers share.
pub struct AppState {
    pub media: MediaServer,
    pub applications: Applications,
    /// Addresses put in ICE candidates (each with the channel's worker port).
    pub announce: Vec<IpAddr>,
    /// How the channels' mixers compose (MCU:CANVAS, MCU:LAYOUT).
    pub mixer: MixerConfig,
    rooms: Mutex<Rooms>,
    pub metrics: Metrics,
    /// Limits on `/sync` sockets (all-in-one; a media server serves no `/sync`).
    pub sync_limits: SyncLimits,
    /// The dev application's (id, secret), when `/api/dev-token` may hand out tokens.
    pub dev_tokens: Option<(String, String)>,
    /// Set to true when the server shuts down; signalling sockets close with a reason.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Channel configurations (all-in-one; a cluster media server gets its rules from the
    /// gateway with each request).
    pub store: Option<CachedStore>,
    /// Publications the media server ended on its own (a transport closed), as
    /// (channel, participant, publication): a cluster media server reports them to its gateways.
    pub ended: Option<mpsc::UnboundedSender<(String, String, String)>>,
    /// The embedded TURN server, whose URLs and credentials clients are handed.
    pub turn: Option<crate::ice_servers::Turn>,
    /// Messages for participants whose sockets are on gateways, as (channel, message): speaking
    /// changes for the channel, `layers` for a publisher. A cluster media server passes them to
    /// its gateways.
    pub relay: Option<mpsc::UnboundedSender<(String, ServerMessage)>>,
    /// Where recordings go (`<data-dir>/recordings`); `None`: this server does not record.
    pub recordings: Option<std::path::PathBuf>,
    /// Where channel, client, connection and recording events go (all-in-one; none by
    /// default).
    pub webhooks: Webhooks,
    /// The embedded SIP connector's calls, once it runs (all-in-one): participants' `dtmf` and
    /// `dial`.
    pub phones: std::sync::OnceLock<Arc<dyn crate::phones::Phones>>,
    /// Transports a worker carries before a channel's new subscribers go to a less loaded
    /// worker (`MEDIA:SHARDAFTER`, `crate::shards`); `None`: a channel stays on one worker.
    pub shard_after: Option<usize>,
    /// Held while a publication is linked to a shard.
    pub(crate) linking: tokio::sync::Mutex<()>,
}

impl AppState {
    /// Tells everyone in `channel` that its phone caller `from` pressed `digit`.
    pub fn phone_digit(&self, channel: &str, from: &str, digit: char) {
        let message = ServerMessage::Dtmf {
            from: from.to_string(),
            digit: digit.to_string(),
        };
        if let Some(ch) = self.rooms().channels.get(channel) {
            ch.broadcast("", &message);
        }
    }
}

impl AppState {
    pub fn new(media: MediaServer, applications: Applications, announce: Vec<IpAddr>) -> AppState {
        let rooms = Mutex::new(Rooms::new(media.workers()));
        let (shutdown, _) = tokio::sync::watch::channel(false);
        AppState {
            media,
            applications,
            announce,
            mixer: MixerConfig::default(),
            rooms,
            metrics: Metrics::default(),
            sync_limits: SyncLimits::default(),
            dev_tokens: None,
            shutdown,
            store: None,
            ended: None,
            turn: None,
            relay: None,
            recordings: None,
            webhooks: Webhooks::default(),
            phones: std::sync::OnceLock::new(),
            shard_after: Some(crate::shards::SHARD_AFTER),
            linking: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than refusing every later request would.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn candidates(&self, worker: usize) -> Vec<SocketAddr> {
        let port = self.media.worker_addr(worker).map_or(0, |a| a.port());
        self.announce
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect()
    }

    /// Adds a participant of `application` to `channel` and tells the others; returns its id
    /// and who is there.
    pub fn join(
        &self,
        channel: &str,
        application: &str,
        user: &str,
        outbox: Option<mpsc::UnboundedSender<ServerMessage>>,
    ) -> (String, Vec<ParticipantInfo>) {
        let mut rooms = self.rooms();
        let id = rooms.next_name("p");
        let ch = rooms.channel(channel);
        ch.participants.insert(
            id.clone(),
            Participant {
                user: user.to_string(),
                application: application.to_string(),
                outbox,
            },
        );
        self.joined(ch, channel, &id);
        ch.broadcast(
            &id,
            &ServerMessage::ParticipantJoined {
                participant: id.clone(),
                user: user.to_string(),
            },
        );
        let others = ch.snapshot(&id);
        tracing::info!(channel, participant = %id, user, "joined");
        (id, others)
    }

    /// Continues participant `id` on a new connection (see [`Channels::join`]): what is left of
    /// it is removed first, as if it had left, and its old socket is told it was replaced. None
    /// when `id` is another user's. Ids carry a random part, so one taken over after a restart
    /// does not meet a fresh one.
    pub fn resume(
        &self,
        channel: &str,
        id: &str,
        application: &str,
        user: &str,
        outbox: mpsc::UnboundedSender<ServerMessage>,
    ) -> Option<(String, Vec<ParticipantInfo>)> {
        let old = {
            let rooms = self.rooms();
            match rooms
                .channels
                .get(channel)
                .and_then(|c| c.participants.get(id))
            {
                Some(p) if p.user != user => return None,
                Some(p) => Some(p.outbox.clone()),
                None => None,
            }
        };
        if let Some(old) = old {
            self.leave(channel, id);
            if let Some(o) = old {
                let _ = o.send(ServerMessage::Replaced);
            }
        }
        let mut rooms = self.rooms();
        let ch = rooms.channel(channel);
        ch.participants.insert(
            id.to_string(),
            Participant {
                user: user.to_string(),
                application: application.to_string(),
                outbox: Some(outbox),
            },
        );
        self.joined(ch, channel, id);
        ch.broadcast(
            id,
            &ServerMessage::ParticipantJoined {
                participant: id.to_string(),
                user: user.to_string(),
            },
        );
        let others = ch.snapshot(id);
        tracing::info!(channel, participant = id, user, "resumed");
        Some((id.to_string(), others))
    }

    /// Adds the participant `id` (named by a cluster gateway) unless it is there already. It has
    /// no outbox: the gateway, not this process, talks to its client.
    pub fn join_as(&self, channel: &str, id: &str, user: &str) {
        let mut rooms = self.rooms();
        let ch = rooms.channel(channel);
        if !ch.participants.contains_key(id) {
            ch.participants.insert(
                id.to_string(),
                Participant {
                    user: user.to_string(),
                    application: String::new(),
                    outbox: None,
                },
            );
            tracing::debug!(channel, participant = id, user, "joined through a gateway");
        }
    }

    /// Answers a publish offer and starts the transport; returns (publication id, answer).
    pub async fn publish(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> Result<(String, String), Error> {
        let offer =
            Offer::parse(offer).map_err(|e| Error::BadRequest(format!("bad offer: {e}")))?;
        let (worker, router, publication) = {
            let mut rooms = self.rooms();
            let publication = rooms.next_name("pub");
            let ch = rooms
                .channels
                .get(channel)
                .filter(|c| c.participants.contains_key(participant))
                .ok_or_else(|| {
                    Error::NotFound(format!("{participant} is not in channel {channel}"))
                })?;
            (ch.worker, ch.router, publication)
        };
        let local_ice = Credentials::random();
        let candidates = self.candidates(worker);
        let fingerprint = self.media.identity().fingerprint();
        let local = LocalParams {
            ice: &local_ice,
            fingerprint,
            candidates: &candidates,
            tcp: self.media.ice_tcp(),
            allowed_codecs: &rules.codecs,
            session_id: rand::random::<u32>().into(),
        };
        let roles: Vec<MediaRole> = offer
            .media
            .iter()
            .map(|m| {
                if m.kind.is_some() {
                    MediaRole::Receive
                } else {
                    MediaRole::Reject
                }
            })
            .collect();
        let roles = data_channels::with_data_roles(&offer, roles, true);
        let answer =
            sdp::answer(&offer, &local, &roles).map_err(|e| Error::BadRequest(e.to_string()))?;
        let data = data_channels::data_spec(&answer.media, Some(ids::producer()), Vec::new());
        let (producers, tracks): (Vec<ProducerSpec>, Vec<Track>) = answer
            .media
            .iter()
            .filter_map(|n| received(n, rules))
            .unzip();
        if producers.is_empty() && data.is_none() {
            return Err(Error::BadRequest(format!(
                "nothing to publish: {}",
                rejections(&answer.media)
            )));
        }
        let transport = ids::transport();
        let spec = TransportSpec {
            id: transport,
            router,
            kind: TransportKind::WebRtc {
                local_ice,
                remote_ice: offer.ice.clone(),
                remote_fingerprint: offer.fingerprint.clone(),
            },
            producers,
            consumers: Vec::new(),
            data: data.clone(),
        };
        self.media.create_transport(worker, spec).await?;

        let tracks_for_mix = tracks.clone();
        let published = Publication {
            participant: participant.to_string(),
            transport,
            tracks,
            data: data.and_then(|d| d.producer),
            mixed: None,
        };
        if !self
            .rooms()
            .publish(channel, worker, &publication, published)
        {
            self.close_media(worker, transport);
            return Err(Error::Gone(format!("{participant} left channel {channel}")));
        }
        // A channel with MCU participants mixes its SFU publications too, and a recorded
        // channel (or one whose configuration says so) records them.
        self.mix_inputs(channel, &tracks_for_mix).await;
        self.record_tracks(channel, &publication, &tracks_for_mix, rules.record)
            .await;
        Ok((publication, answer.sdp))
    }

    /// Answers a subscribe offer for `publication` and starts the transport; returns
    /// (subscription id, answer).
    pub async fn subscribe(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
        offer: &str,
    ) -> Result<(String, String), Error> {
        let offer =
            Offer::parse(offer).map_err(|e| Error::BadRequest(format!("bad offer: {e}")))?;
        let (subscription, publication, tracks, data_producer) = {
            let mut rooms = self.rooms();
            let subscription = rooms.next_name("sub");
            let ch = rooms
                .channels
                .get(channel)
                .filter(|c| c.participants.contains_key(participant))
                .ok_or_else(|| {
                    Error::NotFound(format!("{participant} is not in channel {channel}"))
                })?;
            let (id, p) = ch.publications.get_key_value(publication).ok_or_else(|| {
                Error::NotFound(format!("no publication {publication} in channel {channel}"))
            })?;
            (subscription, id.clone(), p.tracks.clone(), p.data)
        };
        let (worker, router) = self.place_subscription(channel, &publication).await?;
        let mut unused = tracks.clone();
        let mut chosen = Vec::with_capacity(offer.media.len());
        let roles: Vec<MediaRole> = offer
            .media
            .iter()
            .map(|m| {
                let position = m
                    .kind
                    .and_then(|k| unused.iter().position(|t| t.kind() == k));
                let Some(i) = position else {
                    chosen.push(None);
                    return MediaRole::Reject;
                };
                let track = unused.remove(i);
                let role = MediaRole::Send(SendTrack {
                    codec: track.codec(),
                    fmtp: track.fmtp.clone(),
                    ssrc: rand::random::<u32>() | 1,
                    cname: participant.to_string(),
                    stream_id: publication.clone(),
                    track_id: format!("{publication}-{}", track.kind()),
                    rtx_ssrc: Some(rand::random::<u32>() | 1),
                    red: track.red(),
                });
                chosen.push(Some(track.producer()));
                role
            })
            .collect();
        let local_ice = Credentials::random();
        let candidates = self.candidates(worker);
        let local = LocalParams {
            ice: &local_ice,
            fingerprint: self.media.identity().fingerprint(),
            candidates: &candidates,
            tcp: self.media.ice_tcp(),
            allowed_codecs: &ALL_CODECS,
            session_id: rand::random::<u32>().into(),
        };
        let roles = data_channels::with_data_roles(&offer, roles, data_producer.is_some());
        let answer =
            sdp::answer(&offer, &local, &roles).map_err(|e| Error::BadRequest(e.to_string()))?;
        let data =
            data_channels::data_spec(&answer.media, None, data_producer.into_iter().collect());
        let consumers: Vec<ConsumerSpec> = answer
            .media
            .iter()
            .zip(&chosen)
            .filter_map(|(n, producer)| match (n, producer) {
                (
                    Negotiated::Send {
                        mid,
                        codec,
                        extensions,
                        ssrc,
                        rtx,
                        ..
                    },
                    Some(producer),
                ) => Some(ConsumerSpec {
                    id: ids::consumer(),
                    producer: *producer,
                    ssrc: Ssrc(*ssrc),
                    payload_type: codec.payload_type,
                    mid: mid.clone(),
                    mid_ext: extensions.mid,
                    nack: codec.nack,
                    pli: codec.pli,
                    fir: codec.fir,
                    twcc_ext: extensions.transport_cc,
                    dd_ext: extensions.dependency_descriptor,
                    audio_level_ext: None,
                    rtx: rtx.map(|r| RtxSpec {
                        ssrc: Ssrc(r.ssrc),
                        payload_type: r.payload_type,
                    }),
                    red: codec.red,
                }),
                _ => None,
            })
            .collect();
        if consumers.is_empty() && data.is_none() {
            return Err(Error::BadRequest(format!(
                "nothing in this offer can receive publication {publication}: {}",
                rejections(&answer.media)
            )));
        }
        let transport = ids::transport();
        let spec = TransportSpec {
            id: transport,
            router,
            kind: TransportKind::WebRtc {
                local_ice,
                remote_ice: offer.ice.clone(),
                remote_fingerprint: offer.fingerprint.clone(),
            },
            producers: Vec::new(),
            consumers,
            data,
        };
        match self.media.create_transport(worker, spec).await {
            Ok(()) => {}
            Err(spec::Error::Rejected(reason)) => {
                return Err(Error::Gone(format!(
                    "publication {publication} is gone ({reason})"
                )));
            }
            Err(e) => return Err(e.into()),
        }

        let mut rooms = self.rooms();
        let live = rooms.channels.get(channel).is_some_and(|c| {
            c.participants.contains_key(participant) && c.publications.contains_key(&publication)
        });
        if !live {
            drop(rooms);
            self.close_media(worker, transport);
            return Err(Error::Gone(format!("publication {publication} is gone")));
        }
        if let Some(ch) = rooms.channels.get_mut(channel) {
            ch.subscriptions.insert(
                subscription.clone(),
                Subscription {
                    participant: participant.to_string(),
                    publication: publication.clone(),
                    transport,
                    worker,
                    mixed: None,
                },
            );
        }
        rooms.add_transport(
            channel,
            worker,
            transport,
            Owner::Subscription(subscription.clone()),
        );
        tracing::info!(channel, participant, publication = %publication, subscription = %subscription, transport = %transport, "subscribed");
        Ok((subscription, answer.sdp))
    }

    /// Stops a publication of `participant` (its subscribers' transports close too).
    pub fn unpublish(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
    ) -> Result<(), Error> {
        self.end(
            channel,
            participant,
            &Owner::Publication(publication.to_string()),
        )
    }

    pub fn unsubscribe(
        &self,
        channel: &str,
        participant: &str,
        subscription: &str,
    ) -> Result<(), Error> {
        self.end(
            channel,
            participant,
            &Owner::Subscription(subscription.to_string()),
        )
    }

    /// Sets the preferences of one of `participant`'s subscriptions on its worker.
    pub fn set_preferences(
        &self,
        channel: &str,
        participant: &str,
        subscription: &str,
        preferences: LayerPreferences,
    ) -> Result<(), Error> {
        let (worker, transport) = {
            let rooms = self.rooms();
            let ch = rooms.channels.get(channel);
            let s = ch
                .and_then(|c| c.subscriptions.get(subscription))
                .filter(|s| s.participant == participant)
                .ok_or_else(|| {
                    Error::NotFound(format!("no subscription {subscription} of yours"))
                })?;
            (s.worker, s.transport)
        };
        self.media
            .set_preferences(worker, transport, preferences.into())
            .map_err(Error::from)
    }

    /// Ends a publication or subscription that belongs to `participant`.
    fn end(&self, channel: &str, participant: &str, what: &Owner) -> Result<(), Error> {
        let mut rooms = self.rooms();
        let ch = rooms.channels.get(channel);
        let owner = match what {
            Owner::Publication(id) => ch
                .and_then(|c| c.publications.get(id))
                .map(|p| &p.participant),
            Owner::Subscription(id) => ch
                .and_then(|c| c.subscriptions.get(id))
                .map(|s| &s.participant),
        };
        if owner.map(String::as_str) != Some(participant) {
            return Err(Error::NotFound(match what {
                Owner::Publication(id) => format!("no publication {id} of yours"),
                Owner::Subscription(id) => format!("no subscription {id} of yours"),
            }));
        }
        let closes = match what {
            Owner::Publication(id) => remove_publication(&mut rooms, channel, id, &self.webhooks),
            Owner::Subscription(id) => remove_subscription(&mut rooms, channel, id, &self.webhooks),
        };
        rooms.prune(channel);
        drop(rooms);
        self.close_all(closes);
        self.fit_layers(channel);
        Ok(())
    }

    /// Removes a participant with everything it publishes and receives.
    pub fn leave(&self, channel: &str, participant: &str) -> bool {
        let mut rooms = self.rooms();
        let Some(ch) = rooms.channels.get_mut(channel) else {
            return false;
        };
        if !ch.participants.contains_key(participant) {
            return false;
        }
        ch.broadcast(
            participant,
            &ServerMessage::ParticipantLeft {
                participant: participant.to_string(),
            },
        );
        let publications: Vec<String> = ch
            .publications
            .iter()
            .filter(|(_, p)| p.participant == participant)
            .map(|(id, _)| id.clone())
            .collect();
        let subscriptions: Vec<String> = ch
            .subscriptions
            .iter()
            .filter(|(_, s)| s.participant == participant)
            .map(|(id, _)| id.clone())
            .collect();
        let mut closes = Vec::new();
        for p in publications {
            closes.extend(remove_publication(&mut rooms, channel, &p, &self.webhooks));
        }
        for s in subscriptions {
            closes.extend(remove_subscription(&mut rooms, channel, &s, &self.webhooks));
        }
        // Removed after its connections, whose events name it.
        if let Some(ch) = rooms.channels.get_mut(channel) {
            self.left(ch, channel, participant);
        }
        rooms.prune(channel);
        drop(rooms);
        tracing::info!(channel, participant, "left");
        self.close_all(closes);
        self.fit_layers(channel);
        true
    }

    /// Tells webhooks that `participant` (just added to `ch`, named `name`) joined, and that
    /// the channel is active if it is the first there with an application.
    fn joined(&self, ch: &mut Channel, name: &str, participant: &str) {
        let Some(p) = ch.participants.get(participant) else {
            return;
        };
        if ch.application.is_empty() && !p.application.is_empty() {
            ch.application = p.application.clone();
            self.webhooks
                .emit(Event::new(Kind::ChannelActivated, &ch.application, name));
        }
        self.webhooks.emit(
            Event::new(Kind::ClientJoined, &p.application, name).client(participant, &p.user),
        );
    }

    /// Removes `participant` from `ch` (named `name`) and tells webhooks, and that the channel
    /// is no longer active if no one with an application is left.
    fn left(&self, ch: &mut Channel, name: &str, participant: &str) {
        let Some(p) = ch.participants.remove(participant) else {
            return;
        };
        self.webhooks
            .emit(Event::new(Kind::ClientLeft, &p.application, name).client(participant, &p.user));
        let active = ch.participants.values().any(|p| !p.application.is_empty());
        if !active && !ch.application.is_empty() {
            let application = std::mem::take(&mut ch.application);
            self.webhooks
                .emit(Event::new(Kind::ChannelDeactivated, &application, name));
        }
    }

    /// Keeps the registry in step with the data plane.
    pub fn on_media_event(&self, event: MediaEvent) {
        if crate::speaking::announce(&self.rooms(), &event, self.relay.as_ref()) {
            return;
        }
        if crate::layers::tell_publisher(&self.rooms(), &event, self.relay.as_ref()) {
            return;
        }
        if let MediaEvent::Connected { transport } = &event {
            let rooms = self.rooms();
            let connected = rooms
                .transports
                .get(transport)
                .and_then(|(channel, owner)| {
                    let ch = rooms.channels.get(channel)?;
                    connection_event(ch, channel, owner, Kind::ConnectionConnected)
                });
            if let Some(e) = connected {
                self.webhooks.emit(e);
            }
            return;
        }
        let MediaEvent::Closed { transport, reason } = event else {
            return;
        };
        let mut rooms = self.rooms();
        // Transports we closed ourselves are already forgotten.
        let Some((channel, owner)) = rooms.transports.get(&transport).cloned() else {
            return;
        };
        tracing::info!(channel = %channel, transport = %transport, ?reason, "transport closed by the media server");
        let (closes, participant) = match &owner {
            Owner::Publication(id) => {
                let participant = rooms
                    .channels
                    .get(&channel)
                    .and_then(|c| c.publications.get(id))
                    .map(|p| p.participant.clone());
                if let (Some(ended), Some(p)) = (&self.ended, &participant) {
                    let _ = ended.send((channel.clone(), p.clone(), id.clone()));
                }
                let closes = remove_publication(&mut rooms, &channel, id, &self.webhooks);
                (closes, participant)
            }
            Owner::Subscription(id) => {
                let participant = rooms
                    .channels
                    .get(&channel)
                    .and_then(|c| c.subscriptions.get(id))
                    .map(|s| s.participant.clone());
                let closes = remove_subscription(&mut rooms, &channel, id, &self.webhooks);
                (closes, participant)
            }
        };
        // A WHIP or WHEP session is nothing but its one transport.
        let headless = participant.as_deref().and_then(|p| {
            let ch = rooms.channels.get(&channel)?;
            let idle = ch.participants.get(p)?.outbox.is_none()
                && !ch.publications.values().any(|x| x.participant == p)
                && !ch.subscriptions.values().any(|x| x.participant == p);
            idle.then(|| p.to_string())
        });
        drop(rooms);
        self.close_all(closes);
        self.fit_layers(&channel);
        if let Some(p) = headless {
            self.leave(&channel, &p);
        } else {
            self.rooms().prune(&channel);
        }
    }

    fn close_all(&self, closes: Vec<(usize, TransportId)>) {
        for (worker, transport) in closes {
            self.close_media(worker, transport);
        }
    }

    pub(crate) fn close_media(&self, worker: usize, transport: TransportId) {
        if let Err(e) = self.media.close_transport(worker, transport) {
            tracing::warn!(transport = %transport, "could not close transport: {e}");
        }
    }

    /// Everyone in every channel with what they publish and receive, ordered by channel and
    /// id: what an all-in-one's admin API shows (a gateway reads the same from presence).
    pub fn participants(&self) -> Vec<ParticipantView> {
        let rooms = self.rooms();
        let mut out: Vec<ParticipantView> = rooms
            .channels
            .iter()
            .flat_map(|(name, ch)| {
                ch.participants.iter().map(move |(id, p)| ParticipantView {
                    channel: name.clone(),
                    id: id.clone(),
                    user: p.user.clone(),
                    session: p.outbox.is_none(),
                    publications: ch
                        .publications
                        .iter()
                        .filter(|(_, x)| x.participant == *id)
                        .map(|(pid, x)| (pid.clone(), x.track_info()))
                        .collect(),
                    subscriptions: ch
                        .subscriptions
                        .iter()
                        .filter(|(_, x)| x.participant == *id)
                        .map(|(sid, x)| (sid.clone(), x.publication.clone()))
                        .collect(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.channel, &a.id).cmp(&(&b.channel, &b.id)));
        out
    }

    /// An operator removes `participant` (false if it is not in `channel`). A signalling client
    /// is told why and its socket closes, which makes it leave; one without a socket (WHIP/WHEP)
    /// leaves at once, its transports closed.
    pub fn kick(&self, channel: &str, participant: &str, reason: &str) -> bool {
        let outbox = {
            let rooms = self.rooms();
            match rooms
                .channels
                .get(channel)
                .and_then(|c| c.participants.get(participant))
            {
                Some(p) => p.outbox.clone(),
                None => return false,
            }
        };
        let told = outbox.is_some_and(|o| {
            o.send(ServerMessage::Kicked {
                reason: reason.to_string(),
            })
            .is_ok()
        });
        if !told {
            self.leave(channel, participant);
        }
        tracing::info!(channel, participant, reason, "kicked");
        true
    }

    /// Whether `participant` is in `channel` (for WHIP/WHEP resources).
    pub fn has_participant(&self, channel: &str, participant: &str) -> bool {
        self.rooms()
            .channels
            .get(channel)
            .is_some_and(|c| c.participants.contains_key(participant))
    }

    /// Where a pipe from another media server reaches `channel` here: its worker's port on
    /// `ip` (the address other servers reach this one on). Creates the channel if needed.
    pub fn pipe_address(&self, channel: &str, ip: IpAddr) -> Option<SocketAddr> {
        let worker = self.rooms().channel(channel).worker;
        let port = self.media.worker_addr(worker)?.port();
        Some(SocketAddr::new(ip, port))
    }

    /// Starts a pipe that sends `publication`'s tracks to another media server at
    /// `pipe.remote`, as a subscription of `participant` (the pipe's owner here). Returns the
    /// subscription id and the tracks as the other end must receive them.
    pub async fn pipe_out(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
        pipe: PipeSpec,
    ) -> Result<(String, Vec<PipeTrack>), Error> {
        self.join_as(channel, participant, "pipe");
        let (worker, router, subscription, tracks) = {
            let mut rooms = self.rooms();
            let subscription = rooms.next_name("pipe");
            let ch = rooms.channels.get(channel).ok_or_else(|| {
                Error::NotFound(format!("no channel {channel} on this media server"))
            })?;
            let p = ch.publications.get(publication).ok_or_else(|| {
                Error::NotFound(format!("no publication {publication} in channel {channel}"))
            })?;
            (ch.worker, ch.router, subscription, p.tracks.clone())
        };
        let mut consumers = Vec::new();
        let mut out = Vec::new();
        for t in &tracks {
            let ssrc = rand::random::<u32>() | 1;
            consumers.push(ConsumerSpec {
                id: ids::consumer(),
                producer: t.producer(),
                ssrc: Ssrc(ssrc),
                payload_type: t.spec.payload_type,
                mid: String::new(),
                mid_ext: None,
                nack: true,
                pli: true,
                fir: true,
                twcc_ext: None,
                dd_ext: None,
                audio_level_ext: None,
                rtx: None,
                red: None,
            });
            out.push(PipeTrack {
                kind: t.kind().to_string(),
                codec: t.codec().to_string(),
                fmtp: t.fmtp.clone(),
                payload_type: t.spec.payload_type,
                clock_rate: t.spec.clock_rate,
                ssrc,
            });
        }
        let transport = ids::transport();
        let spec = pipe_spec(transport, router, Vec::new(), consumers, pipe);
        self.media.create_transport(worker, spec).await?;
        let mut rooms = self.rooms();
        let live = rooms
            .channels
            .get(channel)
            .is_some_and(|c| c.publications.contains_key(publication));
        if !live {
            drop(rooms);
            self.close_media(worker, transport);
            return Err(Error::Gone(format!("publication {publication} is gone")));
        }
        if let Some(ch) = rooms.channels.get_mut(channel) {
            ch.subscriptions.insert(
                subscription.clone(),
                Subscription {
                    participant: participant.to_string(),
                    publication: publication.to_string(),
                    transport,
                    worker,
                    mixed: None,
                },
            );
        }
        rooms.add_transport(
            channel,
            worker,
            transport,
            Owner::Subscription(subscription.clone()),
        );
        tracing::info!(channel, publication, subscription = %subscription, transport = %transport, "pipe out");
        Ok((subscription, out))
    }

    /// Starts a pipe that receives `tracks` from another media server at `pipe.remote`, as a
    /// publication of `participant` here that local subscribers can subscribe to. Returns its
    /// id.
    pub async fn pipe_in(
        &self,
        channel: &str,
        participant: &str,
        tracks: &[PipeTrack],
        pipe: PipeSpec,
    ) -> Result<String, Error> {
        self.join_as(channel, participant, "pipe");
        let (worker, router, publication) = {
            let mut rooms = self.rooms();
            let publication = rooms.next_name("relay");
            let ch = rooms.channel(channel);
            (ch.worker, ch.router, publication)
        };
        let mut producers = Vec::new();
        let mut published = Vec::new();
        for t in tracks {
            let (Some(kind), Some(codec)) = (media_kind(&t.kind), Codec::from_name(&t.codec))
            else {
                return Err(Error::BadRequest(format!(
                    "a pipe cannot carry {} {}",
                    t.kind, t.codec
                )));
            };
            let id = ids::producer();
            let spec = ProducerSpec {
                id,
                kind,
                codec,
                payload_type: t.payload_type,
                clock_rate: t.clock_rate,
                ssrc: Some(Ssrc(t.ssrc)),
                mid: String::new(),
                mid_ext: None,
                rids: Vec::new(),
                rid_ext: None,
                nack: true,
                pli: true,
                fir: true,
                remb: false,
                audio_level_ext: None,
                twcc_ext: None,
                dd_ext: None,
                red: None,
                max_bitrate: None,
            };
            published.push(Track::new(spec.clone(), t.fmtp.clone()));
            producers.push(spec);
        }
        let transport = ids::transport();
        let spec = pipe_spec(transport, router, producers, Vec::new(), pipe);
        self.media.create_transport(worker, spec).await?;
        {
            let mut rooms = self.rooms();
            if let Some(ch) = rooms.channels.get_mut(channel) {
                ch.publications.insert(
                    publication.clone(),
                    Publication {
                        participant: participant.to_string(),
                        transport,
                        tracks: published.clone(),
                        data: None,
                        mixed: None,
                    },
                );
            }
            rooms.add_transport(
                channel,
                worker,
                transport,
                Owner::Publication(publication.clone()),
            );
        }
        tracing::info!(channel, publication = %publication, transport = %transport, "pipe in");
        // A publication relayed here from another media server is mixed like a local one.
        self.mix_inputs(channel, &published).await;
        Ok(publication)
    }

    /// Live transports, for a media server's load.
    pub fn transport_count(&self) -> usize {
        self.rooms().transports.len()
    }

    /// Live MCU connections (mixed connections and views of the mix), for a media server's
    /// load: they cost far more than a transport (see `switchyard_cluster::capacity`).
    pub fn mcu_connection_count(&self) -> usize {
        self.rooms()
            .channels
            .values()
            .map(|c| {
                c.publications
                    .values()
                    .filter(|p| p.mixed.is_some())
                    .count()
                    + c.subscriptions
                        .values()
                        .filter(|s| s.mixed.is_some())
                        .count()
            })
            .sum()
    }

    /// The tracks of a publication (empty if it is gone).
    pub fn publication_tracks(&self, channel: &str, publication: &str) -> Vec<TrackInfo> {
        self.rooms()
            .channels
            .get(channel)
            .and_then(|c| c.publications.get(publication))
            .map(Publication::track_info)
            .unwrap_or_default()
    }

    /// Forgets a gateway-named participant that has nothing left here.
    pub fn leave_if_idle(&self, channel: &str, participant: &str) {
        let idle = self.rooms().channels.get(channel).is_some_and(|ch| {
            ch.participants
                .get(participant)
                .is_some_and(|p| p.outbox.is_none())
                && !ch
                    .publications
                    .values()
                    .any(|x| x.participant == participant)
                && !ch
                    .subscriptions
                    .values()
                    .any(|x| x.participant == participant)
        });
        if idle {
            self.leave(channel, participant);
        }
    }

    /// How much is live, for /metrics.
    pub fn live(&self) -> Live {
        let rooms = self.rooms();
        let channels = rooms.channels.values();
        Live {
            channels: rooms.channels.len(),
            participants: channels.clone().map(|c| c.participants.len()).sum(),
            publications: channels.clone().map(|c| c.publications.len()).sum(),
            subscriptions: channels.map(|c| c.subscriptions.len()).sum(),
        }
    }
}

impl Channels for AppState {
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

    fn shutdown(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    async fn ice_servers(&self, user: &str) -> Vec<crate::ice_servers::IceServer> {
        self.turn
            .as_ref()
            .map(|t| t.ice_servers(user))
            .unwrap_or_default()
    }

    /// One process has one media server, so a region claim changes nothing here.
    async fn join(
        &self,
        channel: &str,
        application: &str,
        user: &str,
        _region: Option<&str>,
        outbox: mpsc::UnboundedSender<ServerMessage>,
        resume: Option<&str>,
    ) -> Result<Joined, Error> {
        if let Some(joined) =
            resume.and_then(|id| self.resume(channel, id, application, user, outbox.clone()))
        {
            return Ok(joined);
        }
        Ok(AppState::join(
            self,
            channel,
            application,
            user,
            Some(outbox),
        ))
    }

    /// A session here has no outbox: a kick or its transport closing removes it at once (see
    /// [`AppState::kick`], [`AppState::on_media_event`]), so nothing needs telling.
    async fn join_session(
        &self,
        channel: &str,
        application: &str,
        user: &str,
        _region: Option<&str>,
        _outbox: mpsc::UnboundedSender<ServerMessage>,
    ) -> Result<Joined, Error> {
        Ok(AppState::join(self, channel, application, user, None))
    }

    async fn end_session(&self, channel: &str, participant: &str) -> Result<bool, Error> {
        let session = self
            .rooms()
            .channels
            .get(channel)
            .and_then(|c| c.participants.get(participant))
            .is_some_and(|p| p.outbox.is_none());
        Ok(session && AppState::leave(self, channel, participant))
    }

    fn channel_config(&self, application: &str, channel: &str) -> Option<ChannelConfig> {
        self.store.as_ref()?.channel_config(application, channel)
    }

    async fn publish(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> Result<(String, String), Error> {
        AppState::publish(self, channel, participant, offer, rules).await
    }

    async fn mix(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> Result<(String, String), Error> {
        AppState::mix(self, channel, participant, offer, rules).await
    }

    async fn view_mix(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> Result<(String, String), Error> {
        AppState::view_mix(self, channel, participant, offer, rules).await
    }

    async fn subscribe(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
        offer: &str,
    ) -> Result<(String, String), Error> {
        AppState::subscribe(self, channel, participant, publication, offer).await
    }

    async fn unpublish(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
    ) -> Result<(), Error> {
        AppState::unpublish(self, channel, participant, publication)
    }

    async fn set_preferences(
        &self,
        channel: &str,
        participant: &str,
        subscription: &str,
        preferences: LayerPreferences,
    ) -> Result<(), Error> {
        AppState::set_preferences(self, channel, participant, subscription, preferences)
    }

    async fn unsubscribe(
        &self,
        channel: &str,
        participant: &str,
        subscription: &str,
    ) -> Result<(), Error> {
        AppState::unsubscribe(self, channel, participant, subscription)
    }

    async fn send_dtmf(&self, channel: &str, to: Option<&str>, digits: &str) -> Result<(), Error> {
        let calls = self
            .phones
            .get()
            .map_or(0, |phones| phones.send_digits(channel, to, digits));
        if calls == 0 {
            return Err(Error::NotFound(match to {
                Some(to) => format!("no phone call of {to:?} in channel {channel}"),
                None => format!("no phone call in channel {channel}"),
            }));
        }
        Ok(())
    }

    async fn dial(&self, request: DialRequest<'_>) -> Result<String, Error> {
        let Some(phones) = self.phones.get() else {
            return Err(Error::Unavailable(
                "no calls out here: this server runs no SIP connector".into(),
            ));
        };
        phones.dial(request).map_err(|refusal| match refusal {
            DialRefusal::Invalid(why) => Error::BadRequest(why),
            DialRefusal::NoTrunk(why) => Error::NotFound(why),
        })
    }

    /// Only the sockets of this process's own participants can hear it: all-in-one has no
    /// other gateway.
    async fn signal(&self, channel: &str, from: &str, to: &str, data: Value) -> Result<(), Error> {
        let rooms = self.rooms();
        let ch = rooms
            .channels
            .get(channel)
            .ok_or_else(|| Error::NotFound(format!("no participant {to} in channel {channel}")))?;
        ch.signal(channel, from, to, data)
    }

    async fn message(
        &self,
        channel: &str,
        from: &str,
        to: Option<&str>,
        data: Value,
    ) -> Result<(), Error> {
        let rooms = self.rooms();
        let ch = rooms
            .channels
            .get(channel)
            .ok_or_else(|| Error::NotFound(format!("no channel {channel}")))?;
        ch.message(channel, from, to, data)
    }

    async fn leave(&self, channel: &str, participant: &str) {
        AppState::leave(self, channel, participant);
    }
}

/// The producer a negotiated `Receive` m-line makes (what the client sends there), and its
/// track as the channel lists it; `None` for any other outcome.
pub(crate) fn received(n: &Negotiated, rules: &Rules) -> Option<(ProducerSpec, Track)> {
    let Negotiated::Receive {
        mid,
        kind,
        codec,
        extensions,
        ssrc,
        rids,
    } = n
    else {
        return None;
    };
    let id = ids::producer();
    let producer = ProducerSpec {
        id,
        kind: *kind,
        codec: codec.codec,
        payload_type: codec.payload_type,
        clock_rate: codec.clock_rate,
        ssrc: ssrc.map(Ssrc),
        mid: mid.clone(),
        mid_ext: extensions.mid,
        rids: rids.clone(),
        rid_ext: extensions.rid,
        nack: codec.nack,
        pli: codec.pli,
        fir: codec.fir,
        remb: codec.remb,
        audio_level_ext: extensions.audio_level,
        twcc_ext: extensions.transport_cc,
        dd_ext: extensions.dependency_descriptor,
        red: codec.red,
        max_bitrate: rules.max_bitrate_bps(),
    };
    let track = Track::new(producer.clone(), codec.fmtp.clone());
    Some((producer, track))
}

/// Removes a publication and its subscriptions, tells the channel and webhooks; returns the
/// transports to close in the media server as (worker, transport).
fn remove_publication(
    rooms: &mut Rooms,
    channel: &str,
    publication: &str,
    hooks: &Webhooks,
) -> Vec<(usize, TransportId)> {
    let Some(ch) = rooms.channels.get_mut(channel) else {
        return Vec::new();
    };
    let worker = ch.worker;
    let owner = Owner::Publication(publication.to_string());
    let closed = connection_event(ch, channel, &owner, Kind::ConnectionClosed);
    let Some(p) = ch.publications.remove(publication) else {
        return Vec::new();
    };
    if let Some(closed) = closed {
        let recorded = p
            .tracks
            .iter()
            .any(|t| ch.recordings.contains_key(&t.producer()));
        let stopped = recorded.then(|| closed.also(Kind::RecordingStopped));
        hooks.emit(closed);
        if let Some(stopped) = stopped {
            hooks.emit(stopped);
        }
    }
    ch.broadcast(
        &p.participant,
        &ServerMessage::Unpublished {
            participant: p.participant.clone(),
            publication: publication.to_string(),
        },
    );
    let subscriptions: Vec<String> = ch
        .subscriptions
        .iter()
        .filter(|(_, s)| s.publication == publication)
        .map(|(id, _)| id.clone())
        .collect();
    let mut closes = vec![(worker, p.transport)];
    // Its streams in the channel's mixer (the MCU thread forgets each when its transport
    // closes); the mixer's own streams go with the last MCU participant.
    closes.extend(p.mixed.and_then(|m| m.audio_out).map(|t| (worker, t)));
    if let Some(m) = ch.mixer.as_mut() {
        closes.extend(
            p.tracks
                .iter()
                .filter_map(|t| m.inputs.remove(&t.producer()))
                .map(|(t, _)| (worker, t)),
        );
    }
    closes.extend(ch.idle_mixer_closes());
    // Its links to the channel's shards: their far ends take its copies with them.
    for (&far, shard) in &mut ch.shards {
        if let Some((home_end, far_end)) = shard.links.remove(publication) {
            closes.extend([(worker, home_end), (far, far_end)]);
        }
    }
    // Its recordings: closing their streams finishes their files.
    closes.extend(
        p.tracks
            .iter()
            .filter_map(|t| ch.recordings.remove(&t.producer()))
            .map(|t| (worker, t)),
    );
    rooms.remove_transport(p.transport);
    for s in subscriptions {
        closes.extend(remove_subscription(rooms, channel, &s, hooks));
    }
    closes
}

fn remove_subscription(
    rooms: &mut Rooms,
    channel: &str,
    subscription: &str,
    hooks: &Webhooks,
) -> Vec<(usize, TransportId)> {
    let Some(ch) = rooms.channels.get_mut(channel) else {
        return Vec::new();
    };
    let worker = ch.worker;
    let owner = Owner::Subscription(subscription.to_string());
    if let Some(closed) = connection_event(ch, channel, &owner, Kind::ConnectionClosed) {
        hooks.emit(closed);
    }
    let Some(s) = ch.subscriptions.remove(subscription) else {
        return Vec::new();
    };
    let mut closes = vec![(s.worker, s.transport)];
    closes.extend(s.mixed.and_then(|m| m.audio_out).map(|t| (worker, t)));
    closes.extend(ch.idle_mixer_closes());
    rooms.remove_transport(s.transport);
    closes
}

/// The event `kind` about connection `owner` of channel `ch` (named `name`), with its client;
/// none when it is gone, or its client has no application (a pipe, a cluster's participant).
pub(crate) fn connection_event(
    ch: &Channel,
    name: &str,
    owner: &Owner,
    kind: Kind,
) -> Option<Event> {
    let (participant, link) = match owner {
        Owner::Publication(id) => {
            let p = ch.publications.get(id)?;
            let mcu = p.mixed.is_some();
            let link = Link {
                connection_id: id.clone(),
                connection_type: if mcu { "mcu" } else { "sfu" },
                direction: if mcu { "both" } else { "upstream" },
            };
            (&p.participant, link)
        }
        Owner::Subscription(id) => {
            let s = ch.subscriptions.get(id)?;
            let mcu = s.mixed.is_some() || s.publication == MIX_VIEW;
            let link = Link {
                connection_id: id.clone(),
                connection_type: if mcu { "mcu" } else { "sfu" },
                direction: "downstream",
            };
            (&s.participant, link)
        }
    };
    let who = ch.participants.get(participant)?;
    if who.application.is_empty() {
        return None;
    }
    Some(
        Event::new(kind, &who.application, name)
            .client(participant, &who.user)
            .connection(link),
    )
}

/// The spec of a pipe transport carrying `producers` in or `consumers` out.
fn pipe_spec(
    id: TransportId,
    router: RouterId,
    producers: Vec<ProducerSpec>,
    consumers: Vec<ConsumerSpec>,
    pipe: PipeSpec,
) -> TransportSpec {
    TransportSpec {
        id,
        router,
        kind: TransportKind::Pipe(Box::new(pipe)),
        producers,
        consumers,
        data: None,
    }
}

fn media_kind(name: &str) -> Option<MediaKind> {
    [MediaKind::Audio, MediaKind::Video]
        .into_iter()
        .find(|k| k.to_string() == name)
}

/// The reasons the answer gives for declined m-lines.
pub(crate) fn rejections(media: &[Negotiated]) -> String {
    let reasons: Vec<String> = media
        .iter()
        .filter_map(|n| match n {
            Negotiated::Rejected { mid, reason } => Some(format!("m-line {mid}: {reason}")),
            _ => None,
        })
        .collect();
    if reasons.is_empty() {
        "the offer has no audio or video".into()
    } else {
        reasons.join("; ")
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
pub(crate) mod tests {
    use switchyard_dataplane::io::Backend;
    use switchyard_dataplane::worker::MediaConfig;

    use super::*;

    fn state() -> AppState {
        state_on(1, 43100)
    }

    /// A state whose media server runs `workers` workers on loopback ports from `port_min`
    /// (each test module its own range of 100).
    pub(crate) fn state_on(workers: usize, port_min: u16) -> AppState {
        let config = MediaConfig {
            workers,
            io_backend: Some(Backend::Mmsg),
            bind_ip: "127.0.0.1".parse().unwrap(),
            port_min,
            port_max: port_min + 99,
            pin: false,
            first_core: 0,
            ice_tcp: false,
            handoff: None,
            mcu_workers: 0,
            io: Default::default(),
        };
        let (media, _events) = MediaServer::start(config).unwrap();
        AppState::new(media, Applications::default(), vec![])
    }

    /// The events queued so far, as (type, application, client).
    fn drain(events: &mut mpsc::Receiver<Event>) -> Vec<(&'static str, String, Option<String>)> {
        let mut out = Vec::new();
        while let Ok(e) = events.try_recv() {
            out.push((
                e.kind.name(),
                e.application_id,
                e.client.map(|c| format!("{}/{}", c.client_id, c.user_id)),
            ));
        }
        out
    }

    #[test]
    fn joining_and_leaving_are_told_to_the_clients_application() {
        let mut state = state();
        let (hooks, mut events) = Webhooks::capture();
        state.webhooks = hooks;
        let (alice, _) = state.join("room", "acme", "alice", None);
        let (bob, _) = state.join("room", "acme", "bob", None);
        // A participant a gateway placed here has no application: no event of its own, and it
        // does not keep the channel active.
        state.join_as("room", "g-1", "carol");
        let e = |kind, client: Option<&str>| (kind, "acme".to_string(), client.map(str::to_string));
        let (a, b) = (format!("{alice}/alice"), format!("{bob}/bob"));
        assert_eq!(
            drain(&mut events),
            [
                e("channel.activated", None),
                e("client.joined", Some(&a)),
                e("client.joined", Some(&b)),
            ]
        );
        assert!(state.leave("room", &alice));
        assert!(!state.leave("room", &alice), "only once");
        assert!(state.leave("room", &bob));
        assert_eq!(
            drain(&mut events),
            [
                e("client.left", Some(&a)),
                e("client.left", Some(&b)),
                e("channel.deactivated", None),
            ]
        );
        // The next to join activates it again.
        let (dave, _) = state.join("room", "acme", "dave", None);
        state.leave("room", "g-1");
        state.leave("room", &dave);
        let kinds: Vec<&str> = drain(&mut events).into_iter().map(|(k, ..)| k).collect();
        assert_eq!(
            kinds,
            [
                "channel.activated",
                "client.joined",
                "client.left",
                "channel.deactivated"
            ]
        );
        state.media.stop();
    }
}
