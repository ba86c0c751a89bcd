//! Noticing what is gone: media servers that left the registry (their publications are lost,
//! their relays end, subscriptions there are made again) and gateways whose liveness key expired
//! (their clients are removed by the others). Each gateway also keeps its own key fresh here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use switchyard_controlplane::server::stopped;
use tokio::sync::watch;

use super::{GATEWAY_TTL, Gateway};
use crate::presence::{RelayEntry, relay_field_parts};
use crate::registry::MediaServerRegistry;

/// How often the gateway looks for publications on media servers that are gone (and for
/// clients of gateways that are gone), and refreshes its own liveness.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The servers at either end of `relays` that are not `live`.
fn gone_servers(relays: &[(String, RelayEntry)], live: &HashSet<String>) -> HashSet<String> {
    relays
        .iter()
        .flat_map(|(field, r)| {
            let home = relay_field_parts(field).map(|(_, home)| home.to_string());
            home.into_iter().chain([r.origin_server.clone()])
        })
        .filter(|s| !live.contains(s))
        .collect()
}

impl Gateway {
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
            self.clients.resubscribe_from(&live);
            for channel in self.clients.channels() {
                self.forget_servers_in(&channel, &live).await;
            }
        }
    }

    /// Ends the relays of `channel` that touch a server not in `live`, and announces its
    /// publications on such servers as lost.
    async fn forget_servers_in(&self, channel: &str, live: &HashSet<String>) {
        let gone = match self.presence.relays(channel).await {
            Ok(relays) => gone_servers(&relays, live),
            Err(_) => HashSet::new(),
        };
        if !gone.is_empty() {
            self.close_relays(channel, None, &gone).await;
        }
        let publications = match self.presence.publications(channel).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(channel, "cannot read publications: {e}");
                return;
            }
        };
        for (publication, entry) in publications {
            if live.contains(&entry.server) {
                continue;
            }
            if self
                .end_publication(channel, &entry.participant, &publication, true)
                .await
            {
                tracing::warn!(channel, publication, server = %entry.server, "media server gone; publication lost");
            }
        }
    }

    /// Removes participants whose gateway is gone (its liveness key expired) or, for this
    /// gateway's own id, that it does not know (it restarted): the others in their channels are
    /// told, and their media servers end what they had.
    pub(super) async fn sweep_ghosts(&self) {
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
                    self.clients.with(&channel, &participant, |_| ()).is_none()
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
                    self.remove_ghost(&channel, &participant, &entry.gateway)
                        .await;
                }
            }
        }
    }

    async fn remove_ghost(&self, channel: &str, participant: &str, gateway: &str) {
        let (publications, subscriptions, servers) = self.held(channel, participant).await;
        self.remove_participant(
            channel,
            participant,
            gateway,
            &publications,
            &subscriptions,
            servers,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::SERVER_TTL;
    use crate::gateway::tests::{gateway, server};
    use crate::presence::{ParticipantEntry, PublicationEntry, relay_field};
    use switchyard_controlplane::channels::Channels;
    use switchyard_controlplane::protocol::ServerMessage;
    use tokio::sync::mpsc;

    #[test]
    fn a_relay_is_gone_with_either_of_its_servers() {
        let relays = vec![
            (
                relay_field("pub1", "home1"),
                RelayEntry {
                    relay: "r1".into(),
                    origin_server: "origin1".into(),
                    pipe: "p1".into(),
                },
            ),
            (
                relay_field("pub2", "home2"),
                RelayEntry {
                    relay: "r2".into(),
                    origin_server: "origin2".into(),
                    pipe: "p2".into(),
                },
            ),
        ];
        let live: HashSet<String> = ["home1", "origin1", "origin2"].map(String::from).into();
        assert_eq!(
            gone_servers(&relays, &live),
            HashSet::from(["home2".to_string()])
        );
        assert!(
            gone_servers(
                &relays,
                &["home1", "origin1", "home2", "origin2"]
                    .map(String::from)
                    .into()
            )
            .is_empty()
        );
    }

    #[tokio::test]
    async fn a_restarted_gateway_removes_the_clients_it_no_longer_knows() {
        let g = gateway("g1").await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (alice, _) = g.join("c", "app", "alice", None, tx, None).await.unwrap();
        // A client of this gateway's previous run, with a publication.
        let ghost = ParticipantEntry {
            user: "old".into(),
            gateway: "g1".into(),
            session: false,
        };
        g.presence
            .add_participant("c", "p-old", &ghost)
            .await
            .unwrap();
        let publication = PublicationEntry {
            participant: "p-old".into(),
            server: "ms1".into(),
            tracks: vec![],
            mixed: false,
        };
        g.presence
            .add_publication("c", "pub-old", &publication)
            .await
            .unwrap();

        g.sweep_ghosts().await;
        let participants = g.presence.participants("c").await.unwrap();
        assert_eq!(participants.len(), 1);
        assert_eq!(participants[0].0, alice);
        assert_eq!(g.presence.publication("c", "pub-old").await.unwrap(), None);
        assert_eq!(
            rx.recv().await,
            Some(ServerMessage::Unpublished {
                participant: "p-old".into(),
                publication: "pub-old".into()
            })
        );
        assert_eq!(
            rx.recv().await,
            Some(ServerMessage::ParticipantLeft {
                participant: "p-old".into()
            })
        );
    }

    #[tokio::test]
    async fn publications_on_a_server_that_left_are_lost_and_said_so() {
        let g = gateway("g1").await;
        g.registry
            .heartbeat(&server("ms1", "a"), SERVER_TTL)
            .await
            .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (alice, _) = g.join("c", "app", "alice", None, tx, None).await.unwrap();
        for (id, on) in [("pub-live", "ms1"), ("pub-lost", "ms2")] {
            let entry = PublicationEntry {
                participant: alice.clone(),
                server: on.into(),
                tracks: vec![],
                mixed: false,
            };
            g.presence.add_publication("c", id, &entry).await.unwrap();
        }
        g.forget_servers_in("c", &HashSet::from(["ms1".to_string()]))
            .await;
        let left: Vec<String> = g
            .presence
            .publications("c")
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(left, ["pub-live"]);
        assert_eq!(
            rx.recv().await,
            Some(ServerMessage::Unpublished {
                participant: alice,
                publication: "pub-lost".into()
            }),
            "the publisher hears it too, and publishes again"
        );
    }
}
