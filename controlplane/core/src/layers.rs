//! Which simulcast layers of a publication someone watches (`MediaEvent::Layers`, from the
//! router's `report_wanted`), told to its publisher alone as a `layers` message, so that its
//! browser stops encoding the others.
//!
//! A cluster media server's participants have no sockets here (their gateways have them): the
//! message then goes to `forward` with the channel's name, which passes it to a gateway
//! (`/cluster/v1/relay`), and the gateway to the publisher wherever it is connected.

use switchyard_dataplane::spec::MediaEvent;
use tokio::sync::mpsc;

use crate::protocol::ServerMessage;
use crate::rooms::Rooms;
use crate::speaking::publication_of;

/// Tells the publisher of a layers event (or `forward`, when its socket is elsewhere); returns
/// false for other events (and does nothing).
pub(crate) fn tell_publisher(
    rooms: &Rooms,
    event: &MediaEvent,
    forward: Option<&mpsc::UnboundedSender<(String, ServerMessage)>>,
) -> bool {
    let MediaEvent::Layers {
        router,
        producer,
        active,
    } = event
    else {
        return false;
    };
    let Some((name, ch)) = rooms.channels.iter().find(|(_, c)| c.router == *router) else {
        return true;
    };
    let Some((publication, participant)) = publication_of(ch, *producer) else {
        return true;
    };
    let message = ServerMessage::Layers {
        publication,
        active: active.clone(),
    };
    let outbox = ch
        .participants
        .get(&participant)
        .and_then(|p| p.outbox.as_ref());
    match (outbox, forward) {
        (Some(outbox), _) => {
            let _ = outbox.send(message);
        }
        (None, Some(forward)) => {
            let _ = forward.send((name.clone(), message));
        }
        (None, None) => {}
    }
    true
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::{Participant, Publication, Track};
    use switchyard_dataplane::media::{Codec, MediaKind};
    use switchyard_dataplane::spec::{ProducerId, TransportId};

    /// A channel "a" where `publisher` publishes video producer 7, its socket here or not.
    fn rooms(outbox: Option<mpsc::UnboundedSender<ServerMessage>>) -> Rooms {
        let mut rooms = Rooms::new(1);
        let ch = rooms.channel("a");
        ch.participants.insert(
            "publisher".into(),
            Participant {
                user: "publisher".into(),
                application: String::new(),
                outbox,
            },
        );
        ch.publications.insert(
            "pub1".into(),
            Publication {
                participant: "publisher".into(),
                transport: TransportId(1),
                tracks: vec![Track::for_test(MediaKind::Video, Codec::Vp8, 7)],
                data: None,
                mixed: None,
            },
        );
        rooms
    }

    fn layers(rooms: &mut Rooms) -> MediaEvent {
        MediaEvent::Layers {
            router: rooms.channel("a").router,
            producer: ProducerId(7),
            active: vec![true, true, false],
        }
    }

    #[test]
    fn the_publisher_hears_here_or_through_its_gateway() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut here = rooms(Some(tx));
        let event = layers(&mut here);
        let (forward, mut forwarded) = mpsc::unbounded_channel();
        assert!(tell_publisher(&here, &event, Some(&forward)));
        assert!(matches!(
            rx.try_recv().unwrap(),
            ServerMessage::Layers { publication, active } if publication == "pub1" && active == [true, true, false]
        ));
        assert!(forwarded.try_recv().is_err(), "told once, here");

        let mut elsewhere = rooms(None);
        let event = layers(&mut elsewhere);
        assert!(tell_publisher(&elsewhere, &event, Some(&forward)));
        assert!(matches!(
            forwarded.try_recv().unwrap(),
            (channel, ServerMessage::Layers { publication, .. }) if channel == "a" && publication == "pub1"
        ));
        let other = MediaEvent::Connected {
            transport: TransportId(1),
        };
        assert!(!tell_publisher(&elsewhere, &other, Some(&forward)));
    }
}
