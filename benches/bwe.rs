//! Bandwidth estimation's per-packet and per-feedback work: the receive side recording a
//! publisher's packets and writing transport-cc feedback (`twcc::Recorder`), and the send side
//! taking one feedback of 50 packets (`bwe::Estimator::on_feedback`, after `on_sent` for each).
//!
//! `cargo bench -p switchyard-benches --bench bwe`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_dataplane::bwe::{BweConfig, Estimator};
use switchyard_dataplane::twcc::{self, Feedback, Recorder};

/// Packets per feedback: 50 ms of a 10 Mbit/s stream of 1200-byte packets.
const BATCH: u16 = 50;

fn recorder(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut r = Recorder::new(t0);
    let mut seq = 0u16;
    let mut at = t0;
    let mut buf = [0u8; 1200];
    let mut g = c.benchmark_group("twcc");
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    g.bench_function("record 50 and write their feedback", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                seq = seq.wrapping_add(1);
                at += Duration::from_micros(960);
                r.record(seq, at);
            }
            while let Some(n) = r.poll_feedback(at, 1, 2, &mut buf) {
                black_box(n);
            }
        })
    });
    g.finish();
}

fn estimator(c: &mut Criterion) {
    let t0 = Instant::now();
    let config = BweConfig {
        start_bps: 2_000_000,
        min_bps: 50_000,
        max_bps: 10_000_000,
    };
    let mut est = Estimator::new(t0, config);
    let mut seq = 0u16;
    let mut sent = t0;
    let mut arrival_us = 0i64;
    let mut arrivals = [None; BATCH as usize];
    let mut fci = [0u8; 256];
    let mut g = c.benchmark_group("bwe");
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    g.bench_function("on_sent 50 and on_feedback for them", |b| {
        b.iter(|| {
            let base = seq.wrapping_add(1);
            for a in arrivals.iter_mut() {
                seq = seq.wrapping_add(1);
                sent += Duration::from_micros(960);
                arrival_us += 960;
                est.on_sent(seq, 1200, sent);
                *a = Some(arrival_us);
            }
            let first = arrival_us - 960 * i64::from(BATCH - 1);
            let reference = i32::try_from(first / twcc::REFERENCE_UNIT_US).unwrap_or(0);
            let Ok(n) = twcc::write(&mut fci, base, reference, 0, &arrivals) else {
                return;
            };
            if let Ok(fb) = Feedback::parse(&fci[..n]) {
                est.on_feedback(sent, &fb);
            }
            black_box(est.target_bps());
        })
    });
    g.finish();
}

criterion_group!(benches, recorder, estimator);
criterion_main!(benches);
