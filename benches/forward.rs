//! The whole per-packet forward path of the real engine: one SRTP video packet (1200 bytes of
//! RTP) from a publisher is handed to `Engine::handle_datagram`, which decrypts it once, keeps it
//! for NACKs, and for each of K subscribers rewrites the header, copies the payload and encrypts
//! it into a send buffer; the queued datagrams are then freed as a backend's send would. The
//! publisher and the K subscribers are real clients connected in memory through ICE and DTLS,
//! which negotiate AEAD_AES_256_GCM (dimpl's first choice). Throughput is per consumer, so
//! criterion's elements/s is forwarded packets per second and time / K is the cost per consumer.
//!
//! The `simulcast_twcc_pacing` variant forwards the same packets as the top layer of a three-layer
//! simulcast producer, to consumers that negotiated transport-cc: the publisher's packets carry
//! the rid and transport-wide sequence number extensions (recorded for its feedback), each
//! consumer's copy gets a transport-wide sequence number written and its size handed to the
//! subscriber's bandwidth estimator, and each subscriber's pacer (set going by one transport-cc
//! feedback from it) checks it. Their ratio is the cost of layer selection, bandwidth estimation
//! and pacing on the forward path. The clock moves on by [`INTERVAL`] per packet in both, a
//! stream of ~3 Mbit/s that the pacers (at 2.5x the first estimate, 2 Mbit/s) let through
//! without holding: the common case, where pacing costs a check per packet.
//!
//! `cargo bench -p switchyard-benches --bench forward`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchyard_dataplane::io::MAX_DATAGRAM;
use switchyard_dataplane::media::{Codec, MediaKind};
use switchyard_dataplane::rtp::{self, HeaderFields};
use switchyard_dataplane::sim::Sim;
use switchyard_dataplane::spec::{
    ConsumerId, ConsumerSpec, ProducerId, ProducerSpec, Ssrc, TransportId,
};

/// Size of the publisher's RTP packet before encryption.
const SIZE: usize = 1200;
const PRODUCER: ProducerId = ProducerId(1);
const PUBLISHER_SSRC: u32 = 0x1234_5678;
const VP8_PT: u8 = 96;
/// Packets encrypted ahead (untimed) per timed run: each can be decrypted only once.
const CHUNK: u64 = 4096;
const PUBLISHER: usize = 0;
/// Simulated time between the publisher's packets.
const INTERVAL: Duration = Duration::from_millis(3);

fn producer(simulcast: bool) -> ProducerSpec {
    ProducerSpec {
        id: PRODUCER,
        kind: MediaKind::Video,
        codec: Codec::Vp8,
        payload_type: VP8_PT,
        clock_rate: Codec::Vp8.clock_rate(),
        ssrc: (!simulcast).then_some(Ssrc(PUBLISHER_SSRC)),
        mid: "0".into(),
        mid_ext: Some(1),
        rids: if simulcast {
            ["q", "h", "f"].map(String::from).to_vec()
        } else {
            Vec::new()
        },
        rid_ext: simulcast.then_some(2),
        nack: true,
        pli: true,
        fir: true,
        remb: true,
        audio_level_ext: None,
        twcc_ext: simulcast.then_some(5),
        dd_ext: None,
        red: None,
        max_bitrate: None,
    }
}

fn consumer(ssrc: u32, twcc: bool) -> ConsumerSpec {
    ConsumerSpec {
        id: ConsumerId(u64::from(ssrc)),
        producer: PRODUCER,
        ssrc: Ssrc(ssrc),
        payload_type: 98,
        mid: "0".into(),
        mid_ext: Some(3),
        nack: true,
        pli: true,
        fir: true,
        twcc_ext: twcc.then_some(6),
        dd_ext: None,
        audio_level_ext: None,
        rtx: None,
        red: None,
    }
}

/// The publisher's stream: 1200-byte VP8 packets with the MID extension, encrypted by its
/// client transport.
struct Stream {
    seq: u16,
    /// Simulcast and transport-cc: the rid `f` and a transport-wide sequence number.
    simulcast: bool,
}

impl Stream {
    fn next(&mut self, sim: &mut Sim, keyframe: bool) -> Vec<u8> {
        let fields = HeaderFields {
            marker: false,
            payload_type: VP8_PT,
            sequence: self.seq,
            timestamp: u32::from(self.seq / 8) * 3000,
            ssrc: PUBLISHER_SSRC,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let twcc = self.seq.to_be_bytes();
        let simulcast: [(u8, &[u8]); 3] = [(1, b"0"), (2, b"f"), (5, &twcc)];
        let extensions = if self.simulcast {
            &simulcast[..]
        } else {
            &simulcast[..1]
        };
        let header = rtp::write_header(&mut buf, &fields, extensions).expect("header");
        // VP8 payload descriptor (start of partition 0) and frame tag: P=0 is a keyframe.
        buf[header..SIZE].fill(0xAB);
        buf[header] = 0x10;
        buf[header + 1] = if keyframe { 0x00 } else { 0x01 };
        let n = sim.peers[PUBLISHER]
            .client
            .protect_rtp(&mut buf, SIZE)
            .expect("protect");
        buf.truncate(n);
        buf
    }
}

/// An engine with a publisher and `k` subscribers connected, every consumer started (it has
/// seen a keyframe).
fn setup(k: u32, simulcast: bool) -> (Sim, Stream) {
    let mut sim = Sim::new(1).expect("engine");
    sim.connect(TransportId(0), vec![producer(simulcast)], Vec::new())
        .expect("publisher");
    for i in 0..k {
        sim.connect(
            TransportId(u64::from(i) + 1),
            Vec::new(),
            vec![consumer(0x5000 + i, simulcast)],
        )
        .expect("subscriber");
    }
    assert!(sim.handshake(), "handshakes did not finish");
    let publisher = sim.peers[PUBLISHER].addr;
    let mut stream = Stream {
        seq: 1000,
        simulcast,
    };
    let mut key = stream.next(&mut sim, true);
    sim.deliver(publisher, &mut key);
    sim.drain();
    let mut delta = stream.next(&mut sim, false);
    sim.deliver(publisher, &mut delta);
    assert_eq!(sim.tx.queued(), k as usize, "one datagram per consumer");
    sim.drain();
    if simulcast {
        // Each subscriber reports the two packets it got: its estimate starts, and its pacer.
        for peer in 1..=k as usize {
            let mut recorder = switchyard_dataplane::twcc::Recorder::new(sim.now);
            recorder.record(0, sim.now);
            recorder.record(1, sim.now);
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let n = recorder
                .poll_feedback(sim.now, 9, 0x5000, &mut buf)
                .expect("feedback");
            let n = sim.peers[peer]
                .client
                .protect_rtcp(&mut buf, n)
                .expect("protect");
            let from = sim.peers[peer].addr;
            sim.deliver(from, &mut buf[..n]);
        }
    }
    (sim, stream)
}

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    for (k, simulcast) in [1u32, 10, 100]
        .into_iter()
        .flat_map(|k| [(k, false), (k, true)])
    {
        let (mut sim, mut stream) = setup(k, simulcast);
        let publisher = sim.peers[PUBLISHER].addr;
        group.throughput(Throughput::Elements(u64::from(k)));
        let name = if simulcast {
            "engine_aead_aes_256_gcm_1200_simulcast_twcc_pacing"
        } else {
            "engine_aead_aes_256_gcm_1200"
        };
        group.bench_function(BenchmarkId::new(name, k), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    let mut batch: Vec<Vec<u8>> =
                        (0..n).map(|_| stream.next(&mut sim, false)).collect();
                    let start = Instant::now();
                    for datagram in &mut batch {
                        sim.now += INTERVAL;
                        sim.deliver(publisher, datagram);
                        sim.drain();
                    }
                    total += start.elapsed();
                    left -= n;
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
