//! This gateway's own clients: the one thing a gateway keeps itself. Each has its outbox (the
//! WebSocket's writer), its region claim, where its media is, and its home media server.
//! Everything about other gateways' clients is in presence.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use switchyard_controlplane::protocol::ServerMessage;
use tokio::sync::mpsc;

use crate::presence::ChannelEvent;

/// One of this gateway's clients.
#[derive(Debug)]
pub(super) struct Client {
    pub user: String,
    pub outbox: mpsc::UnboundedSender<ServerMessage>,
    pub region: Option<String>,
    /// A WHIP/WHEP session: its outbox is read by its watcher, not a socket, so signals and
    /// messages to it are refused.
    pub session: bool,
    /// publication id → media server id
    pub publications: HashMap<String, String>,
    /// subscription id → (media server id, the publication it receives)
    pub subscriptions: HashMap<String, (String, String)>,
    /// The media server this client's media goes to: where it publishes, and where its
    /// subscriptions are made (relayed there from other servers).
    pub home: Option<String>,
}

impl Client {
    pub fn new(
        user: &str,
        outbox: mpsc::UnboundedSender<ServerMessage>,
        region: Option<&str>,
    ) -> Client {
        Client {
            user: user.to_string(),
            outbox,
            region: region.map(str::to_string),
            session: false,
            publications: HashMap::new(),
            subscriptions: HashMap::new(),
            home: None,
        }
    }

    /// The media servers that hold something of this client's.
    pub fn servers(&self) -> BTreeSet<String> {
        self.publications
            .values()
            .chain(self.subscriptions.values().map(|(server, _)| server))
            .cloned()
            .collect()
    }
}

/// The clients by channel and participant id, behind one mutex held only for short, non-async
/// sections.
#[derive(Debug, Default)]
pub(super) struct Clients {
    by_channel: Mutex<HashMap<String, HashMap<String, Client>>>,
}

impl Clients {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Client>>> {
        // Every change is a whole insert or remove, so a poisoned lock holds nothing half-done.
        self.by_channel.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, channel: &str, participant: &str, client: Client) {
        self.lock()
            .entry(channel.to_string())
            .or_default()
            .insert(participant.to_string(), client);
    }

    /// Runs `f` on the client, if it is (still) here.
    pub fn with<T>(
        &self,
        channel: &str,
        participant: &str,
        f: impl FnOnce(&mut Client) -> T,
    ) -> Option<T> {
        self.lock()
            .get_mut(channel)
            .and_then(|c| c.get_mut(participant))
            .map(f)
    }

    /// Removes the client (and its channel, when it was the last).
    pub fn forget(&self, channel: &str, participant: &str) -> Option<Client> {
        let mut clients = self.lock();
        let gone = clients.get_mut(channel).and_then(|c| c.remove(participant));
        if clients.get(channel).is_some_and(HashMap::is_empty) {
            clients.remove(channel);
        }
        gone
    }

    pub fn count(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// The channels this gateway has clients in.
    pub fn channels(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Hands an event to the clients in its channel it is for.
    pub fn deliver(&self, event: &ChannelEvent) {
        let mut clients = self.lock();
        let Some(clients) = clients.get_mut(&event.channel) else {
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
        // A client replaced by its own resumed participant on another gateway is no longer
        // this gateway's: its session ends without leaving (the participant stays).
        if let (ServerMessage::Replaced, Some(to)) = (&event.message, &event.to) {
            clients.remove(to);
        }
    }

    /// Tells the clients whose subscriptions were on a server not in `live` to subscribe again
    /// (their publications are still there: they were relayed), and forgets homes that are
    /// gone.
    pub fn resubscribe_from(&self, live: &HashSet<String>) {
        let mut channels = self.lock();
        for clients in channels.values_mut() {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(user: &str) -> (Client, mpsc::UnboundedReceiver<ServerMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Client::new(user, tx, Some("eu")), rx)
    }

    fn event(except: Option<&str>, to: Option<&str>, message: ServerMessage) -> ChannelEvent {
        ChannelEvent {
            channel: "c".into(),
            except: except.map(str::to_string),
            to: to.map(str::to_string),
            gateway: None,
            message,
        }
    }

    fn left(who: &str) -> ServerMessage {
        ServerMessage::ParticipantLeft {
            participant: who.into(),
        }
    }

    #[test]
    fn clients_come_and_go_with_their_channels() {
        let clients = Clients::default();
        let (a, _ra) = client("alice");
        let (b, _rb) = client("bob");
        clients.add("c", "a", a);
        clients.add("d", "b", b);
        assert_eq!(clients.count(), 2);
        let mut channels = clients.channels();
        channels.sort();
        assert_eq!(channels, ["c", "d"]);
        assert_eq!(
            clients.with("c", "a", |c| (c.user.clone(), c.region.clone())),
            Some(("alice".into(), Some("eu".into())))
        );
        assert_eq!(clients.with("c", "b", |_| ()), None, "bob is in d");
        assert!(clients.forget("c", "a").is_some());
        assert!(clients.forget("c", "a").is_none());
        assert_eq!(clients.channels(), ["d"], "an empty channel goes");
        assert_eq!(clients.count(), 1);
    }

    #[test]
    fn servers_are_where_publications_and_subscriptions_are() {
        let (mut c, _rx) = client("alice");
        c.publications.insert("pub1".into(), "ms1".into());
        c.subscriptions
            .insert("sub1".into(), ("ms2".into(), "pub9".into()));
        c.subscriptions
            .insert("sub2".into(), ("ms1".into(), "pub8".into()));
        assert_eq!(c.servers().into_iter().collect::<Vec<_>>(), ["ms1", "ms2"]);
    }

    #[test]
    fn events_reach_the_channel_but_the_excepted_or_only_the_addressee() {
        let clients = Clients::default();
        let (a, mut ra) = client("alice");
        let (b, mut rb) = client("bob");
        let (elsewhere, mut re) = client("eve");
        clients.add("c", "a", a);
        clients.add("c", "b", b);
        clients.add("other", "e", elsewhere);

        clients.deliver(&event(Some("a"), None, left("x")));
        assert_eq!(rb.try_recv().ok(), Some(left("x")));
        assert!(ra.try_recv().is_err(), "excepted");

        clients.deliver(&event(None, Some("a"), left("y")));
        assert_eq!(ra.try_recv().ok(), Some(left("y")));
        assert!(rb.try_recv().is_err(), "addressed to alice only");
        assert!(re.try_recv().is_err(), "another channel");
    }

    #[test]
    fn a_publisher_told_its_publication_is_gone_stops_counting_it() {
        let clients = Clients::default();
        let (mut a, mut ra) = client("alice");
        a.publications.insert("pub1".into(), "ms1".into());
        clients.add("c", "a", a);
        let lost = ServerMessage::Unpublished {
            participant: "a".into(),
            publication: "pub1".into(),
        };
        clients.deliver(&event(None, None, lost.clone()));
        assert_eq!(ra.try_recv().ok(), Some(lost));
        assert_eq!(clients.with("c", "a", |c| c.publications.len()), Some(0));
    }

    #[test]
    fn subscriptions_on_a_lost_server_are_made_again() {
        let clients = Clients::default();
        let (mut a, mut ra) = client("alice");
        a.subscriptions
            .insert("sub1".into(), ("gone".into(), "pub1".into()));
        a.subscriptions
            .insert("sub2".into(), ("live".into(), "pub2".into()));
        a.home = Some("gone".into());
        clients.add("c", "a", a);
        clients.resubscribe_from(&HashSet::from(["live".to_string()]));
        assert_eq!(
            ra.try_recv().ok(),
            Some(ServerMessage::Resubscribe {
                publication: "pub1".into()
            })
        );
        assert!(ra.try_recv().is_err(), "only the lost one");
        assert_eq!(
            clients.with("c", "a", |c| (
                c.subscriptions.keys().cloned().collect::<Vec<_>>(),
                c.home.clone()
            )),
            Some((vec!["sub2".to_string()], None))
        );
    }
}
