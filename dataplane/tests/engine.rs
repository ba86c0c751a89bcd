//! The whole SFU engine in memory: client transports (controlling ICE, DTLS client, SRTP) talk
//! to one worker's engine through a simulated network with a simulated clock. No sockets.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_dataplane::client::Client;
use switchyard_dataplane::dtls::Identity;
use switchyard_dataplane::media::{Codec, MediaKind};
use switchyard_dataplane::rtp::{self, HeaderFields};
use switchyard_dataplane::sim::{self, Sim};
use switchyard_dataplane::spec::{
    CloseReason, ConsumerId, ConsumerSpec, MediaEvent, ProducerId, ProducerSpec, Ssrc, TransportId,
    TransportKind, TransportSpec,
};
use switchyard_dataplane::stats::DropReason;
use switchyard_dataplane::{rtcp, stun};

const AUDIO_PT: u8 = 111;
const VIDEO_PT: u8 = 96;
const PUB_AUDIO: u32 = 1111;
const PUB_VIDEO: u32 = 2222;
const SUB_AUDIO: u32 = 3333;
const SUB_VIDEO: u32 = 4444;

/// What the tests do with the in-memory engine beyond `dataplane::sim`.
trait SimExt {
    fn open(id: u64) -> Sim;
    fn connect_peer(&mut self, id: u64, p: Vec<ProducerSpec>, c: Vec<ConsumerSpec>) -> usize;
    fn wait_for(&mut self, what: &str, done: impl FnMut(&Sim) -> bool);
    fn send_rtp(&mut self, i: usize, pt: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8>;
    fn send_rtp_with(
        &mut self,
        i: usize,
        fields: &HeaderFields,
        extensions: &[(u8, &[u8])],
        payload: &[u8],
    ) -> Vec<u8>;
    fn send_rtcp(&mut self, i: usize, packet: &[u8]);
    fn give(&mut self, from: SocketAddr, datagram: Vec<u8>);
    fn drops(&mut self, reason: DropReason) -> u64;
    fn plis_to(&self, i: usize, media_ssrc: u32) -> usize;
}

impl SimExt for Sim {
    fn open(seed: u64) -> Sim {
        Sim::new(seed).unwrap()
    }

    /// Creates a transport on the engine and the matching client; returns the peer index.
    fn connect_peer(&mut self, id: u64, p: Vec<ProducerSpec>, c: Vec<ConsumerSpec>) -> usize {
        self.connect(TransportId(id), p, c).unwrap()
    }

    fn wait_for(&mut self, what: &str, done: impl FnMut(&Sim) -> bool) {
        assert!(self.run_until(4000, done), "timed out waiting for {what}");
    }

    /// Sends an RTP packet from peer `i`, encrypted; returns the datagram sent (for replays).
    fn send_rtp(&mut self, i: usize, pt: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let fields = HeaderFields {
            marker: false,
            payload_type: pt,
            sequence: seq,
            timestamp: u32::from(seq) * 3000,
            ssrc,
        };
        self.send_rtp_with(i, &fields, &[], payload)
    }

    /// [`send_rtp`](SimExt::send_rtp) with every header field and extensions.
    fn send_rtp_with(
        &mut self,
        i: usize,
        fields: &HeaderFields,
        extensions: &[(u8, &[u8])],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let h = rtp::write_header(&mut buf, fields, extensions).unwrap();
        buf[h..h + payload.len()].copy_from_slice(payload);
        let n = self.peers[i]
            .client
            .protect_rtp(&mut buf, h + payload.len())
            .unwrap();
        let datagram = buf[..n].to_vec();
        let from = self.peers[i].addr;
        self.give(from, datagram.clone());
        datagram
    }

    fn send_rtcp(&mut self, i: usize, packet: &[u8]) {
        let mut buf = [0u8; 1500];
        buf[..packet.len()].copy_from_slice(packet);
        let n = self.peers[i]
            .client
            .protect_rtcp(&mut buf, packet.len())
            .unwrap();
        let from = self.peers[i].addr;
        self.give(from, buf[..n].to_vec());
    }

    fn give(&mut self, from: SocketAddr, mut datagram: Vec<u8>) {
        self.deliver(from, &mut datagram);
    }

    fn drops(&mut self, reason: DropReason) -> u64 {
        self.engine.counters().dropped(reason)
    }

    /// PLIs for `media_ssrc` that peer `i` has received.
    fn plis_to(&self, i: usize, media_ssrc: u32) -> usize {
        self.peers[i]
            .rtcp
            .iter()
            .flat_map(|c| rtcp::packets(c).filter_map(Result::ok).collect::<Vec<_>>())
            .filter(|p| matches!(p, rtcp::Packet::Pli { media_ssrc: m, .. } if *m == media_ssrc))
            .count()
    }
}

/// A producer with a known SSRC; `mid_ext` set as a browser publishes, unset as a pipe does.
fn producer(
    id: u64,
    kind: MediaKind,
    codec: Codec,
    pt: u8,
    ssrc: u32,
    mid_ext: bool,
) -> ProducerSpec {
    let video = kind == MediaKind::Video;
    ProducerSpec {
        id: ProducerId(id),
        kind,
        codec,
        payload_type: pt,
        clock_rate: codec.clock_rate(),
        ssrc: Some(Ssrc(ssrc)),
        mid: if mid_ext {
            id.to_string()
        } else {
            String::new()
        },
        mid_ext: mid_ext.then_some(1),
        rids: Vec::new(),
        rid_ext: None,
        nack: true,
        pli: video || !mid_ext,
        fir: video || !mid_ext,
        remb: video && mid_ext,
        audio_level_ext: None,
        twcc_ext: None,
        dd_ext: None,
        red: None,
        max_bitrate: None,
    }
}

fn producers() -> Vec<ProducerSpec> {
    vec![
        producer(1, MediaKind::Audio, Codec::Opus, AUDIO_PT, PUB_AUDIO, true),
        producer(2, MediaKind::Video, Codec::Vp8, VIDEO_PT, PUB_VIDEO, true),
    ]
}

fn consumers(audio_ssrc: u32, video_ssrc: u32) -> Vec<ConsumerSpec> {
    // Consumer ids must be unique in the router: the SSRCs are.
    let spec = |producer, ssrc: u32, pt: u8, mid: &str| ConsumerSpec {
        id: ConsumerId(u64::from(ssrc)),
        producer: ProducerId(producer),
        ssrc: Ssrc(ssrc),
        payload_type: pt,
        mid: mid.into(),
        mid_ext: Some(3),
        nack: true,
        pli: true,
        fir: true,
        twcc_ext: None,
        dd_ext: None,
        audio_level_ext: None,
        rtx: None,
        red: None,
    };
    vec![spec(1, audio_ssrc, 109, "0"), spec(2, video_ssrc, 98, "1")]
}

const VP8_KEY: &[u8] = &[0x10, 0x00, 0x9d, 0x01, 0x2a, 0xAA, 0xBB];
const VP8_DELTA: &[u8] = &[0x10, 0x01, 0xCC, 0xDD];

fn header(p: &[u8]) -> rtp::Header {
    rtp::Header::parse(p).unwrap()
}

#[test]
fn forwards_between_publisher_and_subscribers() {
    let mut sim = Sim::open(1);
    let publisher = sim.connect_peer(1, producers(), vec![]);
    sim.wait_for("publisher connected", |s| {
        s.peers[publisher].client.is_connected()
    });
    assert_eq!(
        sim.event(),
        Some(MediaEvent::Connected {
            transport: TransportId(1)
        })
    );

    // A video packet before anyone subscribes goes nowhere (but into the history).
    sim.send_rtp(publisher, VIDEO_PT, 100, PUB_VIDEO, VP8_DELTA);

    let subscriber = sim.connect_peer(2, vec![], consumers(SUB_AUDIO, SUB_VIDEO));
    sim.wait_for("subscriber connected", |s| {
        s.peers[subscriber].client.is_connected()
    });
    sim.step();

    // The new subscriber made the engine ask the publisher for a keyframe.
    let plis = |s: &Sim| s.plis_to(publisher, PUB_VIDEO);
    sim.wait_for("a PLI to the publisher", |s| plis(s) > 0);

    // Audio flows at once, rewritten for the subscriber.
    sim.send_rtp(publisher, AUDIO_PT, 500, PUB_AUDIO, b"opus frame");
    sim.step();
    let got = sim.peers[subscriber].rtp.pop().expect("audio forwarded");
    let h = header(&got);
    assert_eq!((h.ssrc, h.payload_type), (SUB_AUDIO, 109));
    assert_eq!(&got[h.payload_offset..h.payload_end], b"opus frame");
    assert_eq!(h.extension_value(&got, 3), Some(&b"0"[..]));

    // Video waits for a keyframe, then flows with consecutive sequence numbers.
    sim.send_rtp(publisher, VIDEO_PT, 101, PUB_VIDEO, VP8_DELTA);
    sim.step();
    assert!(
        sim.peers[subscriber].rtp.is_empty(),
        "a delta frame reached a subscriber that has no keyframe"
    );
    sim.send_rtp(publisher, VIDEO_PT, 102, PUB_VIDEO, VP8_KEY);
    sim.send_rtp(publisher, VIDEO_PT, 103, PUB_VIDEO, VP8_DELTA);
    sim.send_rtp(publisher, VIDEO_PT, 104, PUB_VIDEO, VP8_DELTA);
    sim.step();
    let video: Vec<rtp::Header> = sim.peers[subscriber]
        .rtp
        .iter()
        .map(|p| header(p))
        .collect();
    assert_eq!(video.len(), 3);
    assert!(
        video
            .iter()
            .all(|h| h.ssrc == SUB_VIDEO && h.payload_type == 98)
    );
    assert_eq!(video[1].sequence, video[0].sequence.wrapping_add(1));
    assert_eq!(video[2].sequence, video[0].sequence.wrapping_add(2));
    assert_eq!(video[1].timestamp.wrapping_sub(video[0].timestamp), 3000);
    let first = sim.peers[subscriber].rtp[0].clone();
    assert_eq!(
        &first[video[0].payload_offset..video[0].payload_end],
        VP8_KEY
    );
    sim.peers[subscriber].rtp.clear();

    // A NACK from the subscriber is answered from the history. (It never received the delta
    // frame before the keyframe, so that one is not a replay for its SRTP.)
    let missing = video[0].sequence.wrapping_sub(1);
    let mut nack = [0u8; 64];
    let n = rtcp::write_nack(&mut nack, 9, SUB_VIDEO, &[missing]).unwrap();
    sim.send_rtcp(subscriber, &nack[..n]);
    sim.step();
    let resent = sim.peers[subscriber].rtp.pop().expect("retransmission");
    let h = header(&resent);
    assert_eq!((h.ssrc, h.sequence), (SUB_VIDEO, missing));
    assert_eq!(&resent[h.payload_offset..h.payload_end], VP8_DELTA);

    // A PLI from the subscriber reaches the publisher (after the rate limit).
    let before = plis(&sim);
    sim.now += Duration::from_secs(1);
    let mut pli = [0u8; 16];
    let n = rtcp::write_pli(&mut pli, 9, SUB_VIDEO).unwrap();
    sim.send_rtcp(subscriber, &pli[..n]);
    sim.wait_for("the subscriber's PLI forwarded", |s| plis(s) > before);

    // Reports: the publisher gets receiver reports and REMB, the subscriber sender reports once
    // the publisher sent one.
    let mut sr = [0u8; 64];
    let n = rtcp::write_sender_report(&mut sr, PUB_VIDEO, rtcp::ntp_now(), 312_000, 4, 100, &[])
        .unwrap();
    sim.send_rtcp(publisher, &sr[..n]);
    let sub_srs = |s: &Sim| {
        s.peers[subscriber]
            .rtcp
            .iter()
            .flat_map(|c| rtcp::packets(c).filter_map(Result::ok).collect::<Vec<_>>())
            .filter(|p| {
                matches!(
                    p,
                    rtcp::Packet::SenderReport {
                        ssrc: SUB_VIDEO,
                        ..
                    }
                )
            })
            .count()
    };
    sim.wait_for("a sender report to the subscriber", |s| sub_srs(s) > 0);
    let pub_rtcp: Vec<rtcp::Packet<'_>> = sim.peers[publisher]
        .rtcp
        .iter()
        .flat_map(|c| rtcp::packets(c).filter_map(Result::ok))
        .collect();
    assert!(
        pub_rtcp
            .iter()
            .any(|p| matches!(p, rtcp::Packet::ReceiverReport { .. }))
    );
    assert!(
        pub_rtcp.iter().any(
            |p| matches!(p, rtcp::Packet::Remb { bitrate_bps, .. } if *bitrate_bps > 1_000_000)
        )
    );

    // A second subscriber joining late also starts at a keyframe.
    let late = sim.connect_peer(3, vec![], consumers(5555, 6666));
    sim.wait_for("late subscriber connected", |s| {
        s.peers[late].client.is_connected()
    });
    sim.send_rtp(publisher, VIDEO_PT, 105, PUB_VIDEO, VP8_DELTA);
    sim.step();
    assert!(sim.peers[late].rtp.is_empty());
    sim.send_rtp(publisher, VIDEO_PT, 106, PUB_VIDEO, VP8_KEY);
    sim.step();
    assert_eq!(sim.peers[late].rtp.len(), 1);
    assert_eq!(header(&sim.peers[late].rtp[0]).ssrc, 6666);

    assert!(
        sim.peers.iter().all(|p| p.errors.is_empty()),
        "client errors: {:?}",
        sim.peers.iter().map(|p| &p.errors).collect::<Vec<_>>()
    );

    // Closing the publisher tells the control plane; subscribers stop getting media.
    while sim.event().is_some() {}
    sim.engine.close_transport(TransportId(1));
    sim.step();
    assert_eq!(
        sim.event(),
        Some(MediaEvent::Closed {
            transport: TransportId(1),
            reason: CloseReason::Closed
        })
    );
}

#[test]
fn bad_input_is_dropped_and_counted() {
    let mut sim = Sim::open(1);
    let publisher = sim.connect_peer(1, producers(), vec![]);
    let subscriber = sim.connect_peer(2, vec![], consumers(SUB_AUDIO, SUB_VIDEO));

    // SRTP before DTLS, from an address with a valid ICE check.
    sim.step();
    let from = sim.peers[publisher].addr;
    sim.give(
        from,
        vec![
            0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0x08, 0xAE, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            13, 14, 15, 16,
        ],
    );
    assert_eq!(sim.drops(DropReason::SrtpBeforeDtls), 1);

    sim.wait_for("both connected", |s| {
        s.peers.iter().all(|p| p.client.is_connected())
    });

    // Garbage and truncated datagrams.
    let stranger: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for d in [vec![], vec![0xFF; 10], vec![0x80, 96], vec![0x10; 40]] {
        sim.give(stranger, d);
    }
    assert_eq!(sim.drops(DropReason::Malformed), 4);
    // RTP from an address no transport knows.
    sim.give(stranger, vec![0x80; 40]);
    assert_eq!(sim.drops(DropReason::UnknownSource), 1);

    // STUN with a wrong MESSAGE-INTEGRITY for a real ufrag.
    let ufrag = format!("{}:{}", "x", "y");
    let mut out = [0u8; 256];
    let mut w = stun::Writer::new(
        &mut out,
        stun::method::BINDING,
        stun::Class::Request,
        &[1; 12],
    )
    .unwrap();
    w.attribute(stun::attr::USERNAME, ufrag.as_bytes()).unwrap();
    w.message_integrity(b"wrong").unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    sim.give(stranger, out[..n].to_vec());
    assert_eq!(sim.drops(DropReason::StunUnknownUfrag), 1);

    // Replayed and forged SRTP.
    let packet = sim.send_rtp(publisher, AUDIO_PT, 7, PUB_AUDIO, b"once");
    sim.give(from, packet.clone());
    assert_eq!(sim.drops(DropReason::SrtpReplay), 1);
    let mut forged = packet;
    let last = forged.len() - 1;
    forged[last] ^= 0xFF;
    forged[3] = 8;
    sim.give(from, forged);
    assert_eq!(sim.drops(DropReason::SrtpAuthFailed), 1);

    // Media still flows for the healthy pair.
    sim.peers[subscriber].rtp.clear();
    sim.send_rtp(publisher, AUDIO_PT, 8, PUB_AUDIO, b"still here");
    sim.step();
    let last = sim.peers[subscriber].rtp.last().expect("media still flows");
    assert!(last.ends_with(b"still here"));
    let errors: Vec<_> = sim.peers.iter().map(|p| &p.errors).collect();
    assert!(errors.iter().all(|e| e.is_empty()), "{errors:?}");
}

#[test]
fn consent_expires_without_checks() {
    let mut sim = Sim::open(1);
    let a = sim.connect_peer(1, producers(), vec![]);
    sim.wait_for("connected", |s| s.peers[a].client.is_connected());
    assert_eq!(
        sim.event(),
        Some(MediaEvent::Connected {
            transport: TransportId(1)
        })
    );
    sim.peers[a].silent = true;
    for _ in 0..(31_000 / 5) {
        sim.step();
    }
    assert_eq!(
        sim.event(),
        Some(MediaEvent::Closed {
            transport: TransportId(1),
            reason: CloseReason::ConsentExpired
        })
    );
}

#[test]
fn dtls_peer_with_the_wrong_certificate_is_refused() {
    let mut sim = Sim::open(1);
    let impostor = Identity::generate().unwrap();
    let expected = Identity::generate().unwrap();
    let (server_ice, client_ice) = sim
        .create(TransportId(5), &expected, producers(), vec![])
        .unwrap();
    let client = Client::new(
        &impostor,
        client_ice,
        server_ice,
        sim.identity.fingerprint().clone(),
        sim.now,
        1,
    );
    sim.add_peer(client);
    for _ in 0..200 {
        sim.step();
        if let Some(MediaEvent::Closed { reason, .. }) = sim.event() {
            assert!(
                matches!(reason, CloseReason::DtlsFailed(ref r) if r.contains("fingerprint")),
                "{reason:?}"
            );
            assert!(sim.drops(DropReason::DtlsFailed) >= 1);
            return;
        }
    }
    panic!("the transport was not closed");
}

/// The other end of a pipe, played by the test: the remote media server's address and its SRTP
/// contexts (what it sends is what the engine receives, and the reverse).
struct PipeEnd {
    addr: SocketAddr,
    send: switchyard_dataplane::srtp::Context,
    receive: switchyard_dataplane::srtp::Context,
}

/// The far end's RTCP sender SSRC on test pipes.
const FAR_RTCP: u32 = 42;

/// Creates pipe transport `id` with `producers` and `consumers` on the sim's engine, to the far
/// end at 10.9.9.9:50000.
fn pipe(
    sim: &mut Sim,
    id: u64,
    producers: Vec<ProducerSpec>,
    consumers: Vec<ConsumerSpec>,
) -> PipeEnd {
    use switchyard_dataplane::spec::{PIPE_PROFILE, PipeSpec};
    use switchyard_dataplane::srtp::Context;
    let (a, b): ([u8; 28], [u8; 28]) = (rand::random(), rand::random());
    let addr: SocketAddr = "10.9.9.9:50000".parse().unwrap();
    let spec = TransportSpec {
        id: TransportId(id),
        router: sim::ROUTER,
        kind: TransportKind::Pipe(Box::new(PipeSpec {
            remote: addr,
            send_key: a.to_vec(),
            receive_key: b.to_vec(),
            local_rtcp_ssrc: Ssrc(rand::random()),
            remote_rtcp_ssrc: Ssrc(FAR_RTCP),
        })),
        producers,
        consumers,
        data: None,
    };
    sim.engine.create_transport(sim.now, spec).unwrap();
    PipeEnd {
        addr,
        send: Context::new(PIPE_PROFILE, &b[..16], &b[16..]).unwrap(),
        receive: Context::new(PIPE_PROFILE, &a[..16], &a[16..]).unwrap(),
    }
}

/// A pipe carries a publication to another media server: no ICE or DTLS, media at once, the
/// keyframe request on the pipe reaches the publisher, and what the far end sends into a pipe
/// producer reaches this server's subscribers.
#[test]
fn pipes_relay_between_media_servers() {
    let mut sim = Sim::open(1);
    let publisher = sim.connect_peer(1, producers(), vec![]);
    sim.wait_for("publisher connected", |s| {
        s.peers[publisher].client.is_connected()
    });
    // The sending end: consumers of the publisher's tracks, towards the other server.
    let mut out = pipe(&mut sim, 2, vec![], consumers(5555, 6666));
    sim.step();
    // Connected at creation: its video consumer asked the publisher for a keyframe already.
    let plis = |s: &Sim| s.plis_to(publisher, PUB_VIDEO);
    sim.wait_for("a PLI to the publisher", |s| plis(s) > 0);
    let before = plis(&sim);
    sim.send_rtp(publisher, AUDIO_PT, 10, PUB_AUDIO, b"opus over the pipe");
    sim.step();
    let (dst, mut datagram) = sim.elsewhere.pop().expect("forwarded into the pipe");
    assert_eq!(dst, out.addr);
    let n = out.receive.unprotect_rtp(&mut datagram).expect("pipe SRTP");
    let h = header(&datagram[..n]);
    assert_eq!((h.ssrc, h.payload_type), (5555, 109));
    assert_eq!(
        &datagram[h.payload_offset..h.payload_end],
        b"opus over the pipe"
    );

    // The far end asks for a keyframe through the pipe; the publisher gets a PLI (once the
    // engine's rate limit allows).
    let mut buf = [0u8; 1500];
    let len = rtcp::write_pli(&mut buf, FAR_RTCP, 6666).unwrap();
    let n = out.send.protect_rtcp(&mut buf, len).unwrap();
    sim.now += Duration::from_secs(2);
    let from = out.addr;
    sim.give(from, buf[..n].to_vec());
    sim.wait_for("the pipe's PLI at the publisher", |s| plis(s) > before);

    // The receiving end on another server: a pipe producer and a local subscriber.
    let mut other = Sim::open(1);
    let spec = |id, kind, codec, pt, ssrc| producer(id, kind, codec, pt, ssrc, false);
    let mut inbound = pipe(
        &mut other,
        3,
        vec![
            spec(1, MediaKind::Audio, Codec::Opus, 109, 5555),
            spec(2, MediaKind::Video, Codec::Vp8, 98, 6666),
        ],
        vec![],
    );
    // A second pipe from the same server (another relayed publication): same addresses,
    // other SSRCs and keys.
    let mut second = pipe(
        &mut other,
        5,
        vec![spec(9, MediaKind::Audio, Codec::Opus, 109, 7777)],
        vec![],
    );
    let subscriber = other.connect_peer(4, vec![], consumers(SUB_AUDIO, SUB_VIDEO));
    other.wait_for("subscriber connected", |s| {
        s.peers[subscriber].client.is_connected()
    });
    let fields = HeaderFields {
        marker: false,
        payload_type: 109,
        sequence: 7,
        timestamp: 960,
        ssrc: 5555,
    };
    let h = rtp::write_header(&mut buf, &fields, &[]).unwrap();
    buf[h..h + 5].copy_from_slice(b"relay");
    let n = inbound.send.protect_rtp(&mut buf, h + 5).unwrap();
    let from = inbound.addr;
    other.give(from, buf[..n].to_vec());
    other.step();
    let got = other.peers[subscriber]
        .rtp
        .pop()
        .expect("relayed audio reached the subscriber");
    let h = header(&got);
    assert_eq!((h.ssrc, h.payload_type), (SUB_AUDIO, 109));
    assert_eq!(&got[h.payload_offset..h.payload_end], b"relay");
    // The second pipe's packet is told apart by its SSRC and decrypted with its own keys.
    let fields = HeaderFields {
        ssrc: 7777,
        ..fields
    };
    let h = rtp::write_header(&mut buf, &fields, &[]).unwrap();
    let n = second.send.protect_rtp(&mut buf, h + 5).unwrap();
    let before = other.drops(DropReason::SrtpAuthFailed);
    other.give(from, buf[..n].to_vec());
    assert_eq!(
        other.drops(DropReason::SrtpAuthFailed),
        before,
        "routed to the right pipe"
    );
    assert_eq!(other.drops(DropReason::UnknownSource), 0);
    // Its keyframe request for the new subscriber went back through the pipe.
    other.wait_for("a PLI into the pipe", |s| {
        s.elsewhere.iter().any(|(dst, d)| {
            let mut d = d.clone();
            *dst == inbound.addr
                && inbound.receive.unprotect_rtcp(&mut d).is_ok_and(|n| {
                    rtcp::packets(&d[..n]).filter_map(Result::ok).any(|p| {
                        matches!(
                            p,
                            rtcp::Packet::Pli {
                                media_ssrc: 6666,
                                ..
                            }
                        )
                    })
                })
        })
    });
    // Pipes have no consent to expire: a minute of silence keeps them.
    other.now += Duration::from_secs(60);
    other.step();
    sim.now += Duration::from_secs(60);
    sim.step();
    assert!(!std::iter::from_fn(|| other.event()).any(|e| matches!(
        e,
        MediaEvent::Closed {
            transport: TransportId(3),
            ..
        }
    )));
    let _ = &mut out;
}

/// A mixer's streams are transports whose far end is an MCU thread: what the router sends an
/// input goes out in the clear to the stream's address, the mixer's keyframe request reaches
/// the publisher, and what the mixer makes for an output reaches that output's consumers.
#[test]
fn mixer_streams_cross_in_the_clear() {
    use switchyard_dataplane::lane::{self, Far};
    let mut sim = Sim::open(1);
    let publisher = sim.connect_peer(1, producers(), vec![]);
    sim.wait_for("publisher connected", |s| {
        s.peers[publisher].client.is_connected()
    });
    assert!(!sim.engine.has_lane_streams());
    let mixer = |id: u64, producers, consumers| TransportSpec {
        id: TransportId(id),
        router: sim::ROUTER,
        kind: TransportKind::Mixer { mcu: 2 },
        producers,
        consumers,
        data: None,
    };
    let input = mixer(10, vec![], consumers(5555, 6666));
    let now = sim.now;
    sim.engine.create_transport(now, input).unwrap();
    assert!(sim.engine.has_lane_streams());
    // Connected at creation: its video consumer asked the publisher for a keyframe.
    let plis = |s: &Sim| s.plis_to(publisher, PUB_VIDEO);
    sim.wait_for("a PLI to the publisher", |s| plis(s) > 0);

    sim.send_rtp(publisher, AUDIO_PT, 10, PUB_AUDIO, b"opus for the mixer");
    sim.step();
    let to_mixer = lane::address(Far::Mcu(2), TransportId(10));
    let (_, clear) = sim
        .elsewhere
        .iter()
        .rev()
        .find(|(dst, d)| *dst == to_mixer && rtp::Header::parse(d).is_ok())
        .expect("forwarded to the mixer")
        .clone();
    let h = header(&clear);
    assert_eq!((h.ssrc, h.payload_type), (5555, 109));
    assert_eq!(
        &clear[h.payload_offset..h.payload_end],
        b"opus for the mixer"
    );

    // The mixer asks for a keyframe; the publisher gets a PLI once the rate limit allows.
    let before = plis(&sim);
    sim.now += Duration::from_secs(2);
    let mut buf = [0u8; 1500];
    let n = rtcp::write_pli(&mut buf, 1, 6666).unwrap();
    let now = sim.now;
    sim.engine
        .handle_lane(now, TransportId(10), &buf[..n], &mut sim.tx);
    sim.wait_for("the mixer's PLI at the publisher", |s| plis(s) > before);

    // An output: the mixer's producer, consumed by a subscriber.
    let mut mixed = producer(20, MediaKind::Audio, Codec::Opus, AUDIO_PT, 7000, false);
    mixed.pli = false;
    mixed.fir = false;
    sim.engine
        .create_transport(now, mixer(11, vec![mixed], vec![]))
        .unwrap();
    let mut c = consumers(SUB_AUDIO, SUB_VIDEO);
    c.truncate(1);
    c[0].producer = ProducerId(20);
    let subscriber = sim.connect_peer(12, vec![], c);
    sim.wait_for("subscriber connected", |s| {
        s.peers[subscriber].client.is_connected()
    });
    let fields = HeaderFields {
        marker: false,
        payload_type: AUDIO_PT,
        sequence: 1,
        timestamp: 960,
        ssrc: 7000,
    };
    let h = rtp::write_header(&mut buf, &fields, &[]).unwrap();
    buf[h..h + 3].copy_from_slice(b"mix");
    let now = sim.now;
    sim.engine
        .handle_lane(now, TransportId(11), &buf[..h + 3], &mut sim.tx);
    sim.step();
    let got = sim.peers[subscriber]
        .rtp
        .pop()
        .expect("the mix reached the subscriber");
    let h = header(&got);
    assert_eq!((h.ssrc, h.payload_type), (SUB_AUDIO, 109));
    assert_eq!(&got[h.payload_offset..h.payload_end], b"mix");

    // Only mixer streams take packets from the MCU.
    let before = sim.drops(DropReason::UnknownSource);
    let now = sim.now;
    sim.engine
        .handle_lane(now, TransportId(12), &buf[..h.payload_end], &mut sim.tx);
    assert_eq!(sim.drops(DropReason::UnknownSource), before + 1);

    sim.engine.close_transport(TransportId(10));
    sim.engine.close_transport(TransportId(11));
    assert!(!sim.engine.has_lane_streams());
}

/// The engine asks to be woken only for what is due: nothing without transports, the
/// handshake limit for a new one, DTLS's own retransmission time while a flight is out.
#[test]
fn the_engine_wakes_for_real_deadlines_only() {
    use switchyard_dataplane::transport::HANDSHAKE_TIMEOUT;
    let mut sim = Sim::open(1);
    let start = sim.now;
    assert_eq!(sim.engine.poll_timeout(), None, "nothing to wake for");
    let p = sim.connect_peer(1, producers(), vec![]);
    assert_eq!(sim.engine.poll_timeout(), Some(start + HANDSHAKE_TIMEOUT));

    // The server answers the ClientHello; the client then falls silent.
    sim.wait_for("the server's DTLS flight", |s| {
        s.engine.counters().packets_out >= 2
    });
    sim.peers[p].silent = true;
    let deadline = sim.engine.poll_timeout().unwrap();
    assert!(
        deadline > sim.now - sim::STEP && deadline < start + Duration::from_secs(5),
        "DTLS retransmission due in {:?}",
        deadline - start
    );
    let sent = sim.engine.counters().packets_out;
    sim.now = deadline;
    sim.step();
    assert!(
        sim.engine.counters().packets_out > sent,
        "the flight was sent again"
    );
}

/// Audio levels (RFC 6464) on a publisher's packets come out of the engine as speaking events
/// for the control plane, from the router's timer: a second of voice, then silence.
#[test]
fn audio_levels_become_speaking_events() {
    let mut sim = Sim::open(1);
    let mut audio = producer(1, MediaKind::Audio, Codec::Opus, AUDIO_PT, PUB_AUDIO, true);
    audio.audio_level_ext = Some(2);
    let publisher = sim.connect_peer(1, vec![audio], vec![]);
    sim.wait_for("publisher connected", |s| {
        s.peers[publisher].client.is_connected()
    });
    while sim.event().is_some() {}
    let start = sim.now;
    let mut events = Vec::new();
    for seq in 0..150u16 {
        let level = if seq < 50 { 25 } else { 127 };
        let mut buf = [0u8; 256];
        let fields = HeaderFields {
            marker: false,
            payload_type: AUDIO_PT,
            sequence: seq,
            timestamp: u32::from(seq) * 960,
            ssrc: PUB_AUDIO,
        };
        let h = rtp::write_header(&mut buf, &fields, &[(2, &[level])]).unwrap();
        let n = sim.peers[publisher]
            .client
            .protect_rtp(&mut buf, h + 10)
            .unwrap();
        let from = sim.peers[publisher].addr;
        sim.give(from, buf[..n].to_vec());
        // A packet every 20 ms.
        for _ in 0..4 {
            sim.step();
        }
        events.extend(std::iter::from_fn(|| {
            sim.event().map(|e| (sim.now.duration_since(start), e))
        }));
    }
    let speaking: Vec<(Duration, bool)> = events
        .iter()
        .filter_map(|(at, e)| match e {
            MediaEvent::Speaking {
                router,
                producer: ProducerId(1),
                speaking,
            } if *router == sim::ROUTER => Some((*at, *speaking)),
            _ => None,
        })
        .collect();
    assert_eq!(speaking.len(), 2, "{events:?}");
    assert!(speaking[0].1 && speaking[0].0 < Duration::from_millis(500));
    assert!(!speaking[1].1 && speaking[1].0 > Duration::from_millis(1900));
    assert!(events.iter().any(|(_, e)| matches!(
        e,
        MediaEvent::DominantSpeaker {
            producer: Some(ProducerId(1)),
            ..
        }
    )));
    // The publisher goes: so does the dominant speaker, before the transport's `Closed`.
    sim.engine.close_transport(TransportId(1));
    assert!(matches!(
        sim.event(),
        Some(MediaEvent::DominantSpeaker { producer: None, .. })
    ));
    assert!(matches!(sim.event(), Some(MediaEvent::Closed { .. })));
}

/// A subscriber that sends transport-cc feedback gets its video paced: before the first
/// feedback a 40-packet keyframe leaves in one burst; once the estimate (2 Mbit/s at first)
/// sets the pacer going, the same burst is spread at 2.5x that rate, in order, while audio
/// goes at once, and nothing is lost or dropped.
#[test]
fn a_subscriber_with_an_estimate_gets_bursts_paced() {
    const TWCC: u8 = 5;
    let mut sim = Sim::open(7);
    let publisher = sim.connect_peer(1, producers(), vec![]);
    let mut subscribed = consumers(SUB_AUDIO, SUB_VIDEO);
    for c in &mut subscribed {
        c.twcc_ext = Some(TWCC);
    }
    let subscriber = sim.connect_peer(2, vec![], subscribed);
    sim.wait_for("both connected", |s| {
        s.peers.iter().all(|p| p.client.is_connected())
    });
    let payload = |first: bool| {
        let mut p = vec![0u8; 1100];
        let head = if first { VP8_KEY } else { VP8_DELTA };
        p[..head.len()].copy_from_slice(head);
        p
    };
    let mut seq = 1000u16;
    let mut burst = |sim: &mut Sim| {
        for i in 0..40 {
            sim.send_rtp(publisher, VIDEO_PT, seq, PUB_VIDEO, &payload(i == 0));
            seq = seq.wrapping_add(1);
        }
        sim.send_rtp(publisher, AUDIO_PT, seq, PUB_AUDIO, b"opus frame");
        sim.step();
    };
    let video_got = |s: &Sim| {
        s.peers[subscriber]
            .rtp
            .iter()
            .filter(|p| header(p).ssrc == SUB_VIDEO)
            .count()
    };
    burst(&mut sim);
    assert_eq!(video_got(&sim), 40, "no estimate yet: no pacing");

    // Feedback for what arrived sets the estimate, and with it the pacer.
    let mut recorder = switchyard_dataplane::twcc::Recorder::new(sim.now);
    for p in &sim.peers[subscriber].rtp {
        let h = header(p);
        let value = h
            .extension_value(p, TWCC)
            .expect("transport-wide sequence number");
        recorder.record(u16::from_be_bytes([value[0], value[1]]), sim.now);
    }
    let mut feedback = [0u8; 1200];
    let n = recorder
        .poll_feedback(sim.now, 9, SUB_VIDEO, &mut feedback)
        .unwrap();
    sim.send_rtcp(subscriber, &feedback[..n]);
    sim.peers[subscriber].rtp.clear();
    sim.now += Duration::from_secs(1);

    burst(&mut sim);
    let first_step = video_got(&sim);
    let audio = |s: &Sim| {
        s.peers[subscriber]
            .rtp
            .iter()
            .filter(|p| header(p).ssrc == SUB_AUDIO)
            .count()
    };
    assert_eq!(audio(&sim), 1, "audio is not held behind video");
    // 5 Mbit/s paces 3 kB per 5 ms step: a few packets, not 40.
    assert!(
        (1..10).contains(&first_step),
        "{first_step} in the first step"
    );
    let mut steps = 1;
    while video_got(&sim) < 40 && steps < 100 {
        sim.step();
        steps += 1;
    }
    assert_eq!(video_got(&sim), 40, "every packet arrives");
    // 40 x ~1.15 kB at 625 kB/s: about 74 ms, 15 steps.
    assert!((10..=25).contains(&steps), "spread over {steps} steps");
    let seqs: Vec<u16> = sim.peers[subscriber]
        .rtp
        .iter()
        .map(|p| header(p))
        .filter(|h| h.ssrc == SUB_VIDEO)
        .map(|h| h.sequence)
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{seqs:?}"
    );
    assert_eq!(sim.drops(DropReason::PacerFull), 0);
    assert_eq!(sim.drops(DropReason::TxFull), 0);
    assert!(sim.peers[subscriber].errors.is_empty());
}

/// With frame fan-out on (as where GSO trains are sent), a keyframe larger than the send
/// buffers left is written over several turns of the loop: each subscriber gets the whole
/// frame, in order, and nothing is dropped for want of buffers.
#[test]
fn a_keyframe_larger_than_the_free_send_buffers_goes_out_over_turns() {
    let mut sim = Sim::open(11);
    // 64 buffers, 8 of them kept back: room for 56 packets a turn.
    sim.tx = switchyard_dataplane::io::Tx::new(64);
    sim.engine.set_frame_fanout(true);
    let publisher = sim.connect_peer(1, producers(), vec![]);
    let subscribers: Vec<usize> = (0..5u32)
        .map(|i| {
            sim.connect_peer(
                2 + u64::from(i),
                vec![],
                consumers(SUB_AUDIO + 10 * i, SUB_VIDEO + 10 * i),
            )
        })
        .collect();
    assert!(sim.handshake());
    sim.step();
    let frame = 20u16;
    for k in 0..frame {
        let mut buf = [0u8; 1500];
        let fields = HeaderFields {
            marker: k == frame - 1,
            payload_type: VIDEO_PT,
            sequence: 300 + k,
            timestamp: 90_000,
            ssrc: PUB_VIDEO,
        };
        let h = rtp::write_header(&mut buf, &fields, &[]).unwrap();
        let payload: &[u8] = if k == 0 { VP8_KEY } else { &[0x00, 0xEE] };
        buf[h..h + payload.len()].copy_from_slice(payload);
        buf[h + payload.len()] = k as u8;
        let n = sim.peers[publisher]
            .client
            .protect_rtp(&mut buf, h + payload.len() + 1)
            .unwrap();
        let from = sim.peers[publisher].addr;
        sim.give(from, buf[..n].to_vec());
    }
    let whole = |s: &Sim| {
        subscribers
            .iter()
            .all(|&i| s.peers[i].rtp.len() >= usize::from(frame))
    };
    sim.wait_for("the keyframe at every subscriber", whole);
    for &i in &subscribers {
        let got: Vec<u8> = sim.peers[i]
            .rtp
            .iter()
            .map(|p| {
                let h = header(p);
                p[h.payload_end - 1]
            })
            .collect();
        assert_eq!(got, (0..frame as u8).collect::<Vec<_>>(), "subscriber {i}");
    }
    let counters = sim.engine.counters();
    assert_eq!(counters.frames_fanned, 1);
    assert!(counters.fanout_deferred >= 1, "{counters:?}");
    assert_eq!(counters.dropped(DropReason::TxFull), 0);
}

/// Moves what `from` sent to shard links on worker `worker` into `to`'s engine, as the
/// workers' lanes do, except the packets `lose` picks; returns how many crossed.
fn cross(
    from: &mut Sim,
    to: &mut Sim,
    worker: usize,
    mut lose: impl FnMut(&[u8]) -> bool,
) -> usize {
    use switchyard_dataplane::lane::{self, Far};
    let mut crossed = 0;
    for (dst, d) in std::mem::take(&mut from.elsewhere) {
        let Some((far, transport)) = lane::parse(&dst) else {
            continue;
        };
        assert_eq!(far, Far::Worker(worker), "{dst}");
        if !lose(&d) {
            let now = to.now;
            to.engine.handle_lane(now, transport, &d, &mut to.tx);
            crossed += 1;
        }
    }
    crossed
}

/// Steps both workers with their lanes between them until `done` holds.
fn run_both(
    home: &mut Sim,
    shard: &mut Sim,
    what: &str,
    mut lose: impl FnMut(&[u8]) -> bool,
    mut done: impl FnMut(&Sim, &Sim) -> bool,
) {
    for _ in 0..4000 {
        if done(home, shard) {
            return;
        }
        home.step();
        cross(home, shard, 1, &mut lose);
        shard.step();
        cross(shard, home, 0, |_| false);
    }
    panic!("timed out waiting for {what}");
}

/// Sends one packet of a simulcast layer from peer `i`, with the MID and rid extensions a
/// browser puts on its first packets.
fn send_layer(sim: &mut Sim, i: usize, ssrc: u32, rid: &str, seq: u16, payload: &[u8]) {
    let fields = HeaderFields {
        marker: true,
        payload_type: VIDEO_PT,
        sequence: seq,
        timestamp: u32::from(seq) * 3000,
        ssrc,
    };
    let extensions: [(u8, &[u8]); 2] = [(1, b"2"), (RID_EXT, rid.as_bytes())];
    sim.send_rtp_with(i, &fields, &extensions, payload);
}

const RID_EXT: u8 = 4;

/// A channel across two workers: the home engine's shard link copies every packet of the
/// publisher's tracks, both simulcast layers, to the other worker's engine, whose subscriber
/// receives them in order as if the publisher were there. The far end's keyframe request
/// reaches the publisher, and a packet lost on the lane is NACKed back and resent from the
/// home's history.
#[test]
fn a_shard_link_carries_a_publication_to_another_worker() {
    use switchyard_dataplane::spec::{ShardSpec, ShardStream};
    const Q: u32 = 2221;
    const H: u32 = 2222;
    let mut home = Sim::open(1);
    let audio = producer(1, MediaKind::Audio, Codec::Opus, AUDIO_PT, PUB_AUDIO, true);
    let mut video = producer(2, MediaKind::Video, Codec::Vp8, VIDEO_PT, 0, true);
    video.ssrc = None;
    video.rids = vec!["q".into(), "h".into()];
    video.rid_ext = Some(RID_EXT);
    let publisher = home.connect_peer(1, vec![audio.clone(), video.clone()], vec![]);
    home.wait_for("publisher connected", |s| {
        s.peers[publisher].client.is_connected()
    });

    let streams = vec![
        ShardStream {
            producer: ProducerId(1),
            ssrcs: vec![Ssrc(71)],
        },
        ShardStream {
            producer: ProducerId(2),
            ssrcs: vec![Ssrc(72), Ssrc(73)],
        },
    ];
    let link = |id, worker, peer, producers| TransportSpec {
        id: TransportId(id),
        router: sim::ROUTER,
        kind: TransportKind::Shard(Box::new(ShardSpec {
            worker,
            peer: TransportId(peer),
            streams: streams.clone(),
        })),
        producers,
        consumers: vec![],
        data: None,
    };
    // The far end's copies learn nothing from extensions: their layers are the link's SSRCs.
    let copy = |mut p: ProducerSpec| {
        p.ssrc = None;
        p.mid_ext = None;
        p.rid_ext = None;
        p.remb = false;
        (p.nack, p.pli, p.fir) = (true, true, true);
        p
    };
    let mut shard = Sim::open(2);
    let now = shard.now;
    let far = link(21, 0, 20, vec![copy(audio), copy(video)]);
    shard.engine.create_transport(now, far).unwrap();
    let now = home.now;
    home.engine
        .create_transport(now, link(20, 1, 21, vec![]))
        .unwrap();
    assert!(home.engine.has_lane_streams() && shard.engine.has_lane_streams());
    // A link that names a producer the router does not have is refused whole.
    let mut wrong = link(22, 1, 23, vec![]);
    if let TransportKind::Shard(s) = &mut wrong.kind {
        s.streams[0].producer = ProducerId(9);
    }
    assert!(home.engine.create_transport(now, wrong).is_err());

    let subscriber = shard.connect_peer(3, vec![], consumers(SUB_AUDIO, SUB_VIDEO));
    run_both(
        &mut home,
        &mut shard,
        "subscriber connected",
        |_| false,
        |_, s| s.peers[subscriber].client.is_connected(),
    );

    // Audio and both layers cross; the subscriber gets the audio as from a local publisher.
    home.send_rtp(publisher, AUDIO_PT, 10, PUB_AUDIO, b"opus on another core");
    send_layer(&mut home, publisher, Q, "q", 100, VP8_DELTA);
    send_layer(&mut home, publisher, H, "h", 200, VP8_DELTA);
    home.step();
    let copies: Vec<u32> = home.elsewhere.iter().map(|(_, d)| header(d).ssrc).collect();
    assert_eq!(copies, [71, 72, 73], "every layer, as the link's SSRCs");
    cross(&mut home, &mut shard, 1, |_| false);
    shard.step();
    let got = shard.peers[subscriber]
        .rtp
        .pop()
        .expect("audio on the far worker");
    let h = header(&got);
    assert_eq!((h.ssrc, h.payload_type), (SUB_AUDIO, 109));
    assert_eq!(
        &got[h.payload_offset..h.payload_end],
        b"opus on another core"
    );

    // The subscriber waits for a keyframe of the top layer: its request crosses back and
    // reaches the publisher for that layer.
    run_both(
        &mut home,
        &mut shard,
        "a PLI for the top layer",
        |_| false,
        |home, _| home.plis_to(publisher, H) > 0,
    );

    // The publisher's sender report goes on to the far end, as the link's SSRC.
    let mut sr = [0u8; 64];
    let n = rtcp::write_sender_report(&mut sr, H, 7 << 32, 9000, 1, 100, &[]).unwrap();
    home.send_rtcp(publisher, &sr[..n]);
    home.step();
    assert!(home.elsewhere.iter().any(|(_, d)| {
        rtcp::packets(d).filter_map(Result::ok).any(
            |p| matches!(p, rtcp::Packet::SenderReport { ssrc: 73, ntp, .. } if ntp == 7 << 32),
        )
    }));
    cross(&mut home, &mut shard, 1, |_| false);

    // A keyframe and five more packets; the fourth is lost on the lane, NACKed by the far
    // end and resent from the home's history.
    send_layer(&mut home, publisher, H, "h", 201, VP8_KEY);
    for seq in 202..=206u16 {
        let payload = [0x10, 0x01, seq as u8];
        send_layer(&mut home, publisher, H, "h", seq, &payload);
    }
    let mut lost = false;
    let resent = |home: &Sim| home.engine.counters().nack_retransmits;
    run_both(
        &mut home,
        &mut shard,
        "the lost packet resent",
        |d| {
            let h = header(d);
            let lose = h.ssrc == 73 && h.sequence == 204 && !lost;
            lost |= lose;
            lose
        },
        |home, _| resent(home) > 0,
    );
    run_both(
        &mut home,
        &mut shard,
        "every packet",
        |_| false,
        |_, s| s.peers[subscriber].rtp.len() >= 6,
    );
    let video: Vec<Vec<u8>> = shard.peers[subscriber]
        .rtp
        .iter()
        .filter(|p| header(p).ssrc == SUB_VIDEO)
        .map(|p| {
            let h = header(p);
            p[h.payload_offset..h.payload_end].to_vec()
        })
        .collect();
    let mut expected = vec![VP8_KEY.to_vec()];
    expected.extend([202u8, 203, 205, 206, 204].map(|s| vec![0x10, 0x01, s]));
    assert_eq!(video, expected, "in order, the lost one when resent");
    assert_eq!(home.drops(DropReason::UnknownSource), 0);
    assert_eq!(shard.drops(DropReason::UnknownSource), 0);

    // Closing the far end's subscriber and the link leaves the home's publisher alone.
    home.engine.close_transport(TransportId(20));
    assert!(!home.engine.has_lane_streams());
    home.send_rtp(publisher, AUDIO_PT, 11, PUB_AUDIO, b"home only");
    home.step();
    assert!(home.elsewhere.is_empty());
}
