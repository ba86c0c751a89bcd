//! Speaking changes from the data plane (`MediaEvent::Speaking` and `DominantSpeaker`, already
//! rate-limited by the router's detector, see `switchyard_dataplane::speaker`) told to the
//! channel as `speaking` and `dominant-speaker` messages: the producer is mapped to its
//! publication and participant, and everyone in the channel hears it, the speaker included
//! (its own page may show it too).
//!
//! A cluster media server's participants have no sockets here (their gateways have them): it
//! also hands each message to `forward`, which passes it to a gateway (`/cluster/v1/relay`).

use switchyard_dataplane::spec::{MediaEvent, ProducerId};
use tokio::sync::mpsc;

use crate::protocol::ServerMessage;
use crate::rooms::{Channel, Rooms};

/// Tells the channel of a speaking event, and `forward` with the channel's name; returns false
/// for other events (and does nothing).
pub(crate) fn announce(
    rooms: &Rooms,
    event: &MediaEvent,
    forward: Option<&mpsc::UnboundedSender<(String, ServerMessage)>>,
) -> bool {
    let router = match event {
        MediaEvent::Speaking { router, .. } | MediaEvent::DominantSpeaker { router, .. } => *router,
        MediaEvent::Connected { .. } | MediaEvent::Closed { .. } | MediaEvent::Layers { .. } => {
            return false;
        }
    };
    if let Some((name, ch)) = rooms.channels.iter().find(|(_, c)| c.router == router)
        && let Some(message) = message(ch, event)
    {
        ch.broadcast("", &message);
        if let Some(forward) = forward {
            let _ = forward.send((name.clone(), message));
        }
    }
    true
}

/// The message for a speaking event in `ch`; `None` when its publication is already gone.
fn message(ch: &Channel, event: &MediaEvent) -> Option<ServerMessage> {
    match *event {
        MediaEvent::Speaking {
            producer, speaking, ..
        } => {
            let (publication, participant) = publication_of(ch, producer)?;
            Some(ServerMessage::Speaking {
                participant,
                publication,
                speaking,
            })
        }
        MediaEvent::DominantSpeaker {
            producer: Some(producer),
            ..
        } => {
            let (publication, participant) = publication_of(ch, producer)?;
            Some(ServerMessage::DominantSpeaker {
                participant: Some(participant),
                publication: Some(publication),
            })
        }
        MediaEvent::DominantSpeaker { producer: None, .. } => {
            Some(ServerMessage::DominantSpeaker {
                participant: None,
                publication: None,
            })
        }
        MediaEvent::Connected { .. } | MediaEvent::Closed { .. } | MediaEvent::Layers { .. } => {
            None
        }
    }
}

/// The publication carrying `producer`, and its participant.
pub(crate) fn publication_of(ch: &Channel, producer: ProducerId) -> Option<(String, String)> {
    ch.publications
        .iter()
        .find(|(_, p)| p.tracks.iter().any(|t| t.producer() == producer))
        .map(|(id, p)| (id.clone(), p.participant.clone()))
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::{Participant, Publication, Track};
    use switchyard_dataplane::media::{Codec, MediaKind};
    use switchyard_dataplane::spec::{RouterId, TransportId};
    use tokio::sync::mpsc;

    #[test]
    fn speaking_is_told_to_everyone_in_the_producers_channel() {
        let mut rooms = Rooms::new(1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ch = rooms.channel("a");
        let router = ch.router;
        for (id, outbox) in [("alice", Some(tx)), ("whip", None)] {
            ch.participants.insert(
                id.into(),
                Participant {
                    user: id.into(),
                    application: String::new(),
                    outbox,
                },
            );
        }
        ch.publications.insert(
            "pub1".into(),
            Publication {
                participant: "alice".into(),
                transport: TransportId(1),
                tracks: vec![Track::for_test(MediaKind::Audio, Codec::Opus, 7)],
                data: None,
                mixed: None,
            },
        );
        let speaking = MediaEvent::Speaking {
            router,
            producer: ProducerId(7),
            speaking: true,
        };
        let (forward, mut forwarded) = mpsc::unbounded_channel();
        assert!(announce(&rooms, &speaking, Some(&forward)));
        assert!(matches!(
            forwarded.try_recv().unwrap(),
            (channel, ServerMessage::Speaking { .. }) if channel == "a"
        ));
        assert_eq!(
            rx.try_recv().unwrap(),
            ServerMessage::Speaking {
                participant: "alice".into(),
                publication: "pub1".into(),
                speaking: true
            },
            "the speaker hears it too"
        );
        let dominant = |producer| MediaEvent::DominantSpeaker { router, producer };
        assert!(announce(&rooms, &dominant(Some(ProducerId(7))), None));
        assert!(matches!(
            rx.try_recv().unwrap(),
            ServerMessage::DominantSpeaker { participant: Some(p), .. } if p == "alice"
        ));
        assert!(announce(&rooms, &dominant(None), None));
        assert!(matches!(
            rx.try_recv().unwrap(),
            ServerMessage::DominantSpeaker {
                participant: None,
                ..
            }
        ));
        // Unknown producers and routers: nothing is said.
        assert!(announce(&rooms, &dominant(Some(ProducerId(8))), None));
        let elsewhere = MediaEvent::Speaking {
            router: RouterId(router.0 + 1),
            producer: ProducerId(7),
            speaking: false,
        };
        assert!(announce(&rooms, &elsewhere, None));
        assert!(rx.try_recv().is_err());
        assert!(!announce(
            &rooms,
            &MediaEvent::Connected {
                transport: TransportId(1)
            },
            None
        ));
    }
}
