//! The gateway's side of signalling: the [`Channels`] a WebSocket session runs against. Joining
//! is recorded in presence; media is placed on media servers and recorded there too, so every
//! gateway can tell its clients about it.

use switchyard_controlplane::channels::{Channels, Joined};
use switchyard_controlplane::error::Error;
use switchyard_controlplane::metrics::Metrics;
use switchyard_controlplane::protocol::{ParticipantInfo, PublicationInfo, ServerMessage};
use switchyard_controlplane::rules::Rules;
use switchyard_controlplane::token::Applications;
use switchyard_store::ChannelConfig;
use tokio::sync::{mpsc, watch};

use super::Gateway;
use super::clients::Client;
use super::media_client::{CallError, ending};
use crate::api::{PublishReply, PublishRequest, SubscribeReply, SubscribeRequest};
use crate::presence::{ParticipantEntry, PresenceError, PublicationEntry, SubscriptionEntry};

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
        // Known locally before it is in presence, so the ghost sweep never takes it for a
        // client this gateway has lost.
        self.clients
            .add(channel, &id, Client::new(user, outbox, region));
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
            .clients
            .with(channel, participant, |c| (c.user.clone(), c.region.clone()))
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
            .clients
            .with(channel, participant, |c| c.user.clone())
            .ok_or_else(|| Error::NotFound(format!("{participant} is not in channel {channel}")))?;
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

    async fn leave(&self, channel: &str, participant: &str) {
        let Some(gone) = self.clients.forget(channel, participant) else {
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
