//! The router's per-packet RTP work on a 1200-byte packet, without encryption: parsing the
//! publisher's header (once per packet) and writing one consumer's copy with its SSRC, payload
//! type, sequence number and timestamp (once per consumer, `Rewrite::write`).
//!
//! `cargo bench -p switchyard-benches --bench rtp`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use switchyard_dataplane::media::Codec;
use switchyard_dataplane::router::{Read, Rewrite};
use switchyard_dataplane::rtp::{self, HeaderFields};
use switchyard_dataplane::spec::{ConsumerId, ConsumerSpec, ProducerId, Ssrc};

const SIZE: usize = 1200;

/// A 1200-byte video packet as a browser sends it: MID, abs-send-time and transport-wide
/// sequence number extensions, then payload.
fn publisher_packet() -> Vec<u8> {
    let fields = HeaderFields {
        marker: false,
        payload_type: 96,
        sequence: 4711,
        timestamp: 90_000,
        ssrc: 0x1234_5678,
    };
    let extensions: [(u8, &[u8]); 3] = [(1, b"1"), (2, &[1, 2, 3]), (3, &[0, 9])];
    let mut packet = vec![0u8; SIZE];
    let header = rtp::write_header(&mut packet, &fields, &extensions).expect("header");
    packet[header..].fill(0xAB);
    packet
}

fn consumer() -> Rewrite {
    let spec = ConsumerSpec {
        id: ConsumerId(1),
        producer: ProducerId(1),
        ssrc: Ssrc(0x0BAD_CAFE),
        payload_type: 98,
        mid: "1".into(),
        mid_ext: Some(4),
        nack: true,
        pli: true,
        fir: true,
        twcc_ext: None,
        dd_ext: None,
        audio_level_ext: None,
        rtx: None,
        red: None,
    };
    Rewrite::new(&spec, Codec::Vp8, &mut StdRng::seed_from_u64(1))
}

fn rewrite(c: &mut Criterion) {
    let packet = publisher_packet();
    let header = rtp::Header::parse(&packet).expect("parse");
    let mut consumer = consumer();
    let now = std::time::Instant::now();
    let mut out = vec![0u8; 2048];
    // Read once per packet by the router, for all its consumers.
    let vp8 = packet
        .get(header.payload_offset..header.payload_end)
        .and_then(rtp::vp8_picture_fields);

    let mut group = c.benchmark_group("rtp");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_1200", |b| {
        b.iter(|| black_box(rtp::Header::parse(black_box(&packet)).expect("parse")))
    });
    group.bench_function("rewrite_1200", |b| {
        b.iter(|| {
            black_box(
                consumer
                    .write(
                        black_box(&header),
                        black_box(&packet),
                        &mut out,
                        now,
                        None,
                        Read {
                            vp8: vp8.as_ref(),
                            level: None,
                        },
                    )
                    .expect("rewrite"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
