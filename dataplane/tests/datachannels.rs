//! Data channels through the engine, in memory: a publisher's channels are mirrored to its
//! subscribers (DCEP from the server), its messages reach them in order and whole, and a
//! subscriber that stops reading loses messages without holding back the others.

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
use switchyard_dataplane::datachannel::{ChannelParams, Event, MAX_MESSAGE_SIZE, Reliability};
use switchyard_dataplane::sim::Sim;
use switchyard_dataplane::spec::{DataSpec, ProducerId, TransportId};
use switchyard_dataplane::stats::DropReason;

const DATA: ProducerId = ProducerId(100);

/// A publisher (peer 0) and `n` subscribers of its data channels, connected, with their SCTP
/// associations up.
fn channel(n: usize) -> Sim {
    let mut sim = Sim::new(5).unwrap();
    let publisher = DataSpec {
        producer: Some(DATA),
        consumes: Vec::new(),
        remote_max_message_size: Some(MAX_MESSAGE_SIZE),
    };
    sim.connect_data(TransportId(1), publisher).unwrap();
    for i in 0..n {
        let subscriber = DataSpec {
            producer: None,
            consumes: vec![DATA],
            remote_max_message_size: Some(MAX_MESSAGE_SIZE),
        };
        sim.connect_data(TransportId(10 + i as u64), subscriber)
            .unwrap();
    }
    assert!(sim.handshake());
    assert!(sim.run_until(400, |s| s.peers.iter().all(|p| p.client.is_connected())));
    let up = sim.run_until(400, |s| {
        s.peers.iter().all(|p| {
            // `is_connected` on the client's association.
            p.client
                .data_channels_ref()
                .is_some_and(|d| d.is_connected())
        })
    });
    assert!(up, "associations did not come up");
    sim
}

/// Every event peer `i`'s data channels reported since the last call.
fn events(sim: &mut Sim, i: usize) -> Vec<Event> {
    let d = sim.peers[i].client.data_channels().unwrap();
    std::iter::from_fn(|| d.poll_event()).collect()
}

#[test]
fn messages_reach_every_subscriber_in_order_and_whole() {
    let mut sim = channel(2);
    let mut seen: Vec<Vec<Event>> = vec![Vec::new(); 3];
    let now = sim.now;
    let stream = sim.peers[0]
        .client
        .data_channels()
        .unwrap()
        .open(now, ChannelParams::reliable("chat"))
        .unwrap();
    let lossy = sim.peers[0]
        .client
        .data_channels()
        .unwrap()
        .open(
            now,
            ChannelParams {
                ordered: false,
                reliability: Reliability::MaxRetransmits(0),
                ..ChannelParams::reliable("lossy")
            },
        )
        .unwrap();
    // The server opens both toward each subscriber, with the publisher's settings.
    let opened = sim.run_until(400, |s| {
        (1..3).all(|i| {
            let d = s.peers[i].client.data_channels_ref().unwrap();
            d.stream_of("chat").is_some() && d.stream_of("lossy").is_some()
        })
    });
    assert!(opened);
    for i in 1..3 {
        let d = sim.peers[i].client.data_channels_ref().unwrap();
        let s = d.stream_of("lossy").unwrap();
        assert_eq!(s % 2, 1, "server-opened streams are odd");
        let params = d.channel(s).unwrap();
        assert!(!params.ordered);
        assert_eq!(params.reliability, Reliability::MaxRetransmits(0));
    }

    let big: Vec<u8> = (0..MAX_MESSAGE_SIZE as usize)
        .map(|i| (i % 253) as u8)
        .collect();
    let now = sim.now;
    {
        let d = sim.peers[0].client.data_channels().unwrap();
        for k in 0..100u32 {
            d.send(now, stream, false, format!("{k}").as_bytes())
                .unwrap();
        }
        d.send(now, stream, true, &big).unwrap();
        d.send(now, lossy, true, b"quick").unwrap();
    }
    for _ in 0..2000 {
        sim.step();
    }
    for (i, list) in seen.iter_mut().enumerate() {
        list.extend(events(&mut sim, i));
    }
    for list in &seen[1..] {
        let messages: Vec<(bool, &[u8])> = list
            .iter()
            .filter_map(|e| match e {
                Event::Message { binary, data, .. } => Some((*binary, data.as_slice())),
                _ => None,
            })
            .collect();
        let chat: Vec<&[u8]> = messages
            .iter()
            .filter(|(b, _)| !b)
            .map(|(_, d)| *d)
            .collect();
        let want: Vec<String> = (0..100).map(|k| format!("{k}")).collect();
        assert_eq!(
            chat,
            want.iter().map(|s| s.as_bytes()).collect::<Vec<_>>(),
            "in order"
        );
        assert!(messages.iter().any(|(b, d)| *b && *d == big.as_slice()));
        assert!(messages.iter().any(|(b, d)| *b && *d == b"quick"));
    }
    let c = sim.engine.counters();
    assert_eq!(c.data_messages_received, 102);
    assert_eq!(c.data_messages_forwarded, 204);
    assert_eq!(c.data_messages_dropped, 0);
    assert!(c.data_bytes_forwarded >= 2 * u64::from(MAX_MESSAGE_SIZE));
    assert_eq!(c.dropped(DropReason::SctpMalformed), 0);
}

#[test]
fn a_subscriber_that_stops_reading_loses_messages_alone() {
    let mut sim = channel(2);
    let now = sim.now;
    let stream = sim.peers[0]
        .client
        .data_channels()
        .unwrap()
        .open(now, ChannelParams::reliable("bulk"))
        .unwrap();
    assert!(sim.run_until(400, |s| (1..3).all(|i| {
        s.peers[i]
            .client
            .data_channels_ref()
            .unwrap()
            .stream_of("bulk")
            .is_some()
    })));
    // Subscriber 2 goes quiet: nothing it sends (SACKs) reaches the server.
    sim.peers[2].silent = true;
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..40 {
        let now = sim.now;
        sim.peers[0]
            .client
            .data_channels()
            .unwrap()
            .send(now, stream, true, &chunk)
            .unwrap();
        for _ in 0..20 {
            sim.step();
        }
    }
    for _ in 0..400 {
        sim.step();
    }
    let got = |sim: &mut Sim, i| {
        events(sim, i)
            .iter()
            .filter(|e| matches!(e, Event::Message { .. }))
            .count()
    };
    assert_eq!(
        got(&mut sim, 1),
        40,
        "the reading subscriber gets everything"
    );
    let c = sim.engine.counters();
    assert!(
        c.data_messages_dropped > 0,
        "the silent one's queue filled: {c:?}"
    );
    assert_eq!(c.data_messages_forwarded + c.data_messages_dropped, 80);
}

#[test]
fn a_late_subscriber_gets_the_channels_already_open() {
    let mut sim = channel(0);
    let now = sim.now;
    let stream = sim.peers[0]
        .client
        .data_channels()
        .unwrap()
        .open(
            now,
            ChannelParams {
                protocol: "json".into(),
                reliability: Reliability::MaxLifetimeMs(500),
                ..ChannelParams::reliable("state")
            },
        )
        .unwrap();
    for _ in 0..100 {
        sim.step();
    }
    let late = DataSpec {
        producer: None,
        consumes: vec![DATA],
        remote_max_message_size: None,
    };
    sim.connect_data(TransportId(20), late).unwrap();
    assert!(sim.handshake());
    let opened = sim.run_until(400, |s| {
        s.peers[1]
            .client
            .data_channels_ref()
            .is_some_and(|d| d.stream_of("state").is_some())
    });
    assert!(
        opened,
        "the channel open before it came is opened toward it"
    );
    let d = sim.peers[1].client.data_channels_ref().unwrap();
    let params = d.channel(d.stream_of("state").unwrap()).unwrap();
    assert_eq!(params.protocol, "json");
    assert_eq!(params.reliability, Reliability::MaxLifetimeMs(500));

    // It announced no a=max-message-size: 64 KiB (RFC 8841) is its limit, so a larger
    // message is not forwarded to it, and is counted.
    let now = sim.now;
    {
        let d = sim.peers[0].client.data_channels().unwrap();
        d.send(now, stream, false, b"{}").unwrap();
        d.send(now, stream, true, &vec![1u8; 70_000]).unwrap();
    }
    for _ in 0..400 {
        sim.step();
    }
    let got: Vec<Event> = events(&mut sim, 1)
        .into_iter()
        .filter(|e| matches!(e, Event::Message { .. }))
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(matches!(&got[0], Event::Message { data, binary: false, .. } if data == b"{}"));
    let c = sim.engine.counters();
    assert_eq!((c.data_messages_forwarded, c.data_messages_dropped), (1, 1));
}
