//! Who is where in this process: channels, their participants, publications and
//! subscriptions, and which worker each channel lives on. In memory, behind one mutex held only
//! for short, non-async sections. (A cluster's media servers are in
//! `switchyard_cluster::registry`; this table is what one process runs.)

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use switchyard_dataplane::mcu::MixerConfig;
use switchyard_dataplane::media::{Codec, MediaKind};
use switchyard_dataplane::spec::{ProducerId, ProducerSpec, RouterId, TransportId};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::ids;
use crate::protocol::{ParticipantInfo, PublicationInfo, ServerMessage, TrackInfo};

/// A published track: the producer behind it, as the data plane has it (a pipe to another
/// server keeps its payload type and clock rate; a shard link's far end gets a copy, see
/// `crate::shards`), and the codec's `fmtp` line from the SDP.
#[derive(Debug, Clone)]
pub struct Track {
    pub spec: ProducerSpec,
    pub fmtp: Option<String>,
}

impl Track {
    /// The track of producer `spec`, with the codec's `fmtp` line.
    pub fn new(spec: ProducerSpec, fmtp: Option<String>) -> Track {
        Track { spec, fmtp }
    }

    pub fn kind(&self) -> MediaKind {
        self.spec.kind
    }

    pub fn codec(&self) -> Codec {
        self.spec.codec
    }

    pub fn producer(&self) -> ProducerId {
        self.spec.id
    }

    /// Audio published as RED (RFC 2198) around the producer's payload type.
    pub fn red(&self) -> bool {
        self.spec.red.is_some()
    }

    /// A track as the tests need one: producer `id`, the codec's usual payload type.
    #[cfg(test)]
    pub fn for_test(kind: MediaKind, codec: Codec, id: u64) -> Track {
        let spec = ProducerSpec {
            id: ProducerId(id),
            kind,
            codec,
            payload_type: if kind == MediaKind::Audio { 111 } else { 96 },
            clock_rate: codec.clock_rate(),
            ssrc: None,
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
        Track::new(spec, None)
    }
}

#[derive(Debug, Clone)]
pub struct Publication {
    pub participant: String,
    pub transport: TransportId,
    pub tracks: Vec<Track>,
    /// The data producer of its data channels, if it has any.
    pub data: Option<ProducerId>,
    /// Set on an MCU participant's connection (`mix`): it sends like a publication and
    /// receives the channel's mix. This is the mixer stream of what it hears.
    pub mixed: Option<Mixed>,
}

/// What an MCU participant's connection has in the channel's mixer of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mixed {
    /// Its mix-minus audio stream (`None` when it receives no audio).
    pub audio_out: Option<TransportId>,
}

/// A channel's mixer: on which MCU thread, and its streams (transports of the router) that
/// are the channel's rather than one participant's.
#[derive(Debug, Clone, Default)]
pub struct ChannelMixer {
    pub mcu: usize,
    /// The canvas it draws (the channel's, or the deployment's): the size of its tiles decides
    /// which simulcast layer each video input takes.
    pub canvas: MixerConfig,
    /// The composite in each codec someone receives: (codec, stream, its producer).
    pub video_out: Vec<(Codec, TransportId, ProducerId)>,
    /// The mixer's input of each producer it takes in, and whether it is video.
    pub inputs: HashMap<ProducerId, (TransportId, bool)>,
}

impl Publication {
    pub fn track_info(&self) -> Vec<TrackInfo> {
        self.tracks
            .iter()
            .map(|t| TrackInfo {
                kind: t.kind().to_string(),
                codec: t.codec().to_string(),
            })
            .chain(self.data.map(|_| crate::data_channels::track_info()))
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub participant: String,
    pub publication: String,
    pub transport: TransportId,
    /// The worker of its transport: the channel's, or one of its shards'.
    pub worker: usize,
    /// Set on a viewer of the channel's mix (`POST /whep/{channel}/mix`, whose `publication`
    /// is [`MIX_VIEW`]): its own stream of the mixer's audio.
    pub mixed: Option<Mixed>,
}

/// What a viewer of the mix is subscribed to.
pub const MIX_VIEW: &str = "mix";

#[derive(Debug)]
pub struct Participant {
    pub user: String,
    /// The application of its token (empty for one a cluster gateway placed here: the gateway
    /// knows its application, this media server does not).
    pub application: String,
    /// Where events for this participant go; `None` for WHIP/WHEP sessions.
    pub outbox: Option<mpsc::UnboundedSender<ServerMessage>>,
}

#[derive(Debug)]
pub struct Channel {
    pub router: RouterId,
    pub worker: usize,
    pub participants: BTreeMap<String, Participant>,
    pub publications: BTreeMap<String, Publication>,
    pub subscriptions: BTreeMap<String, Subscription>,
    /// Its mixer, while it has MCU participants or viewers of the mix.
    pub mixer: Option<ChannelMixer>,
    /// Tracks being recorded, and the stream each one's RTP reaches its recorder on (see
    /// `crate::recording`).
    pub recordings: BTreeMap<ProducerId, TransportId>,
    /// The application its channel events go to: that of the participant that activated it
    /// (the first with an application to join), until none with an application is left.
    /// Channels are named per server, not per application, so two applications using one name
    /// share the channel, and its channel events go to the first one's webhooks.
    pub application: String,
    /// Its routers on other workers, by worker, once its subscribers outgrew its own
    /// (`crate::shards`).
    pub shards: BTreeMap<usize, Shard>,
}

/// A channel's router on another worker than its own, and the links that carry its
/// publications there.
#[derive(Debug)]
pub struct Shard {
    pub router: RouterId,
    /// The link of each publication it receives: (its home end, its far end).
    pub links: BTreeMap<String, (TransportId, TransportId)>,
}

impl Channel {
    /// The mixer's streams to close when nobody mixes or views the mix any more (and takes
    /// the mixer away then); none while someone does.
    pub fn idle_mixer_closes(&mut self) -> Vec<(usize, TransportId)> {
        let used = self.publications.values().any(|p| p.mixed.is_some())
            || self.subscriptions.values().any(|s| s.mixed.is_some());
        if used {
            return Vec::new();
        }
        let worker = self.worker;
        let Some(m) = self.mixer.take() else {
            return Vec::new();
        };
        m.video_out
            .iter()
            .map(|&(_, t, _)| t)
            .chain(m.inputs.values().map(|&(t, _)| t))
            .map(|t| (worker, t))
            .collect()
    }

    /// Sends `message` to every participant but `except`.
    pub fn broadcast(&self, except: &str, message: &ServerMessage) {
        for (id, p) in &self.participants {
            if id != except
                && let Some(outbox) = &p.outbox
            {
                // A participant whose socket is closing just misses the event.
                let _ = outbox.send(message.clone());
            }
        }
    }

    /// Everyone but `except`, with what they publish.
    pub fn snapshot(&self, except: &str) -> Vec<ParticipantInfo> {
        self.participants
            .iter()
            .filter(|(id, _)| id.as_str() != except)
            .map(|(id, p)| ParticipantInfo {
                participant: id.clone(),
                user: p.user.clone(),
                publications: self
                    .publications
                    .iter()
                    .filter(|(_, publication)| publication.participant == *id)
                    .map(|(pid, publication)| PublicationInfo {
                        publication: pid.clone(),
                        tracks: publication.track_info(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Hands a peer-to-peer signal from `from` to `to`, who must be in this channel with a
    /// socket to hear it. The sender cannot tell a participant of another channel from one that
    /// never existed: both are simply not here.
    pub fn signal(&self, name: &str, from: &str, to: &str, data: Value) -> Result<(), Error> {
        let message = ServerMessage::Signal {
            from: from.to_string(),
            data,
        };
        self.send_to(name, to, message, "signals")
    }

    /// A channel `message` to `to`, or with none to everyone but `from` (who has a socket).
    pub fn message(
        &self,
        name: &str,
        from: &str,
        to: Option<&str>,
        data: Value,
    ) -> Result<(), Error> {
        let message = ServerMessage::Message {
            from: from.to_string(),
            data,
        };
        let Some(to) = to else {
            self.broadcast(from, &message);
            return Ok(());
        };
        self.send_to(name, to, message, "messages")
    }

    /// Sends `message` to `to`, who must be in this channel with a socket to hear it (`what`
    /// names what a WHIP/WHEP session cannot receive).
    fn send_to(
        &self,
        name: &str,
        to: &str,
        message: ServerMessage,
        what: &str,
    ) -> Result<(), Error> {
        let target = self
            .participants
            .get(to)
            .ok_or_else(|| Error::NotFound(format!("no participant {to} in channel {name}")))?;
        let outbox = target.outbox.as_ref().ok_or_else(|| {
            Error::BadRequest(format!(
                "{to} is a WHIP/WHEP session and cannot receive {what}"
            ))
        })?;
        outbox
            .send(message)
            .map_err(|_| Error::Gone(format!("{to} is leaving channel {name}")))
    }

    fn is_empty(&self) -> bool {
        self.participants.is_empty()
            && self.publications.is_empty()
            && self.subscriptions.is_empty()
    }
}

/// What a transport is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Publication(String),
    Subscription(String),
}

/// The channels of this process and their transports.
#[derive(Debug)]
pub struct Rooms {
    pub channels: HashMap<String, Channel>,
    /// Every live transport: its channel and what it carries.
    pub transports: HashMap<TransportId, (String, Owner)>,
    /// The worker of each live transport, and how many each worker has: channels and their
    /// shards go to the least loaded.
    workers: HashMap<TransportId, usize>,
    load: Vec<usize>,
    /// Names handed out so far, numbering the next.
    named: u64,
    /// Channels whose publications are recorded (now and as they come) until told to stop.
    pub recorded: BTreeSet<String>,
}

impl Rooms {
    pub fn new(workers: usize) -> Rooms {
        Rooms {
            channels: HashMap::new(),
            transports: HashMap::new(),
            recorded: BTreeSet::new(),
            workers: HashMap::new(),
            load: vec![0; workers.max(1)],
            named: 0,
        }
    }

    /// A fresh short text id with a prefix (participants, publications, subscriptions).
    pub fn next_name(&mut self, prefix: &str) -> String {
        self.named += 1;
        format!("{prefix}{}-{:08x}", self.named, rand::random::<u32>())
    }

    /// The channel, created on the least-loaded worker if new.
    pub fn channel(&mut self, name: &str) -> &mut Channel {
        let worker = self.least_loaded();
        self.channels
            .entry(name.to_string())
            .or_insert_with(|| Channel {
                router: ids::router(),
                worker,
                participants: BTreeMap::new(),
                publications: BTreeMap::new(),
                subscriptions: BTreeMap::new(),
                mixer: None,
                recordings: BTreeMap::new(),
                application: String::new(),
                shards: BTreeMap::new(),
            })
    }

    pub fn add_transport(
        &mut self,
        channel: &str,
        worker: usize,
        transport: TransportId,
        owner: Owner,
    ) {
        self.transports
            .insert(transport, (channel.to_string(), owner));
        self.workers.insert(transport, worker);
        if let Some(n) = self.load.get_mut(worker) {
            *n += 1;
        }
    }

    /// Records publication `id` (its transport on `worker`) and tells the channel; false, and
    /// nothing recorded, when its participant has left meanwhile.
    pub fn publish(&mut self, channel: &str, worker: usize, id: &str, p: Publication) -> bool {
        let Some(ch) = self
            .channels
            .get_mut(channel)
            .filter(|c| c.participants.contains_key(&p.participant))
        else {
            return false;
        };
        ch.broadcast(
            &p.participant,
            &ServerMessage::Published {
                participant: p.participant.clone(),
                publication: id.to_string(),
                tracks: p.track_info(),
            },
        );
        tracing::info!(channel, participant = %p.participant, publication = id, transport = %p.transport, tracks = ?p.track_info(), mixed = p.mixed.is_some(), "published");
        let transport = p.transport;
        ch.publications.insert(id.to_string(), p);
        self.add_transport(
            channel,
            worker,
            transport,
            Owner::Publication(id.to_string()),
        );
        true
    }

    /// Forgets a transport; returns its channel and owner if it was known.
    pub fn remove_transport(&mut self, transport: TransportId) -> Option<(String, Owner)> {
        let (channel, owner) = self.transports.remove(&transport)?;
        if let Some(worker) = self.workers.remove(&transport)
            && let Some(n) = self.load.get_mut(worker)
        {
            *n = n.saturating_sub(1);
        }
        Some((channel, owner))
    }

    /// Live transports on `worker`.
    pub fn load(&self, worker: usize) -> usize {
        self.load.get(worker).copied().unwrap_or(0)
    }

    /// The worker with the fewest live transports (the first of those tied).
    pub fn least_loaded(&self) -> usize {
        self.load
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| **n)
            .map_or(0, |(w, _)| w)
    }

    /// Drops the channel if nothing is left in it.
    pub fn prune(&mut self, channel: &str) {
        if self.channels.get(channel).is_some_and(Channel::is_empty) {
            self.channels.remove(channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_go_to_the_least_loaded_worker() {
        let mut r = Rooms::new(2);
        let a = r.channel("a").worker;
        let t = ids::transport();
        r.add_transport("a", a, t, Owner::Publication("p".into()));
        let b = r.channel("b").worker;
        assert_ne!(a, b);
        assert_eq!(r.channel("a").worker, a, "a channel stays where it is");
        assert_eq!(r.load[a], 1);
        assert_eq!(
            r.remove_transport(t),
            Some(("a".into(), Owner::Publication("p".into())))
        );
        assert_eq!(r.load[a], 0);
        r.prune("a");
        assert!(!r.channels.contains_key("a"));
        let router = r.channel("a").router;
        assert_ne!(router, r.channel("b").router);
    }

    /// A transport counts on the worker it was added on, also when that is not its
    /// channel's (a subscription on a shard), and stops counting there when it goes.
    #[test]
    fn load_is_counted_on_each_transports_own_worker() {
        let mut r = Rooms::new(2);
        let home = r.channel("a").worker;
        let other = 1 - home;
        let (p, s) = (ids::transport(), ids::transport());
        r.add_transport("a", home, p, Owner::Publication("p".into()));
        assert_eq!(r.least_loaded(), other);
        r.add_transport("a", other, s, Owner::Subscription("s".into()));
        assert_eq!((r.load(home), r.load(other)), (1, 1));
        assert_eq!(r.least_loaded(), 0, "ties go to the first worker");
        r.remove_transport(s);
        assert_eq!((r.load(home), r.load(other)), (1, 0));
        r.remove_transport(p);
        assert_eq!((r.load(home), r.load(other)), (0, 0));
    }

    fn participant(
        ch: &mut Channel,
        id: &str,
        socket: bool,
    ) -> Option<mpsc::UnboundedReceiver<ServerMessage>> {
        let (tx, rx) = mpsc::unbounded_channel();
        ch.participants.insert(
            id.into(),
            Participant {
                user: id.into(),
                application: String::new(),
                outbox: socket.then_some(tx),
            },
        );
        socket.then_some(rx)
    }

    #[test]
    fn messages_reach_everyone_else_or_one_participant() {
        let mut r = Rooms::new(1);
        let mut alice = participant(r.channel("a"), "alice", true).unwrap();
        let mut bob = participant(r.channel("a"), "bob", true).unwrap();
        let mut dave = participant(r.channel("a"), "dave", true).unwrap();
        participant(r.channel("a"), "whip", false);
        let mut carol = participant(r.channel("b"), "carol", true).unwrap();
        let data = serde_json::json!({"text": "hi"});
        let from_alice = ServerMessage::Message {
            from: "alice".into(),
            data: data.clone(),
        };

        r.channel("a")
            .message("a", "alice", None, data.clone())
            .unwrap();
        assert_eq!(bob.try_recv().ok(), Some(from_alice.clone()));
        assert_eq!(dave.try_recv().ok(), Some(from_alice.clone()));
        assert!(alice.try_recv().is_err(), "not to the sender");
        assert!(carol.try_recv().is_err(), "not to another channel");

        r.channel("a")
            .message("a", "alice", Some("dave"), data.clone())
            .unwrap();
        assert_eq!(dave.try_recv().ok(), Some(from_alice));
        assert!(bob.try_recv().is_err(), "only to dave");

        let e = r
            .channel("a")
            .message("a", "alice", Some("carol"), data.clone());
        assert!(matches!(e, Err(Error::NotFound(_))), "{e:?}");
        let e = r.channel("a").message("a", "alice", Some("whip"), data);
        assert!(matches!(e, Err(Error::BadRequest(_))), "{e:?}");
    }

    #[test]
    fn signals_reach_only_participants_of_the_same_channel() {
        let mut r = Rooms::new(1);
        let mut alice = participant(r.channel("a"), "alice", true).unwrap();
        let mut bob = participant(r.channel("a"), "bob", true).unwrap();
        participant(r.channel("a"), "whip", false);
        let mut carol = participant(r.channel("b"), "carol", true).unwrap();
        let data = serde_json::json!({"candidate": "candidate:1 1 udp 2113937151 127.0.0.1 5000 typ host"});

        r.channel("a")
            .signal("a", "alice", "bob", data.clone())
            .unwrap();
        assert_eq!(
            bob.try_recv().ok(),
            Some(ServerMessage::Signal {
                from: "alice".into(),
                data: data.clone()
            })
        );
        assert!(alice.try_recv().is_err(), "the sender hears nothing back");

        let e = r.channel("a").signal("a", "alice", "carol", data.clone());
        assert!(
            matches!(&e, Err(Error::NotFound(m)) if m == "no participant carol in channel a"),
            "{e:?}"
        );
        assert!(carol.try_recv().is_err(), "another channel's participant");
        let e = r.channel("a").signal("a", "alice", "nobody", data.clone());
        assert!(matches!(e, Err(Error::NotFound(_))), "{e:?}");
        let e = r.channel("a").signal("a", "alice", "whip", data.clone());
        assert!(matches!(e, Err(Error::BadRequest(_))), "{e:?}");

        drop(bob);
        let e = r.channel("a").signal("a", "alice", "bob", data);
        assert!(matches!(e, Err(Error::Gone(_))), "{e:?}");
    }

    #[test]
    fn names_are_unique_and_say_what_they_name() {
        let mut r = Rooms::new(1);
        let (a, b) = (r.next_name("pub"), r.next_name("pub"));
        assert!(a.starts_with("pub1-") && b.starts_with("pub2-"), "{a} {b}");
    }
}
