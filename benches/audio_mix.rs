//! One 20 ms tick of the MCU's audio mixer, every source also listening, three of them talking:
//! a packet pushed per source, then the tick (decode every source, mix the talkers, one shared
//! encode and three mix-minus encodes). The per-tick budget is 20 ms; this says how many
//! conferences one core holds.
//!
//! `cargo bench -p switchyard-benches --bench audio_mix`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use switchyard_codec::audio::{AudioMixer, MixerConfig, OpusEncoder};

/// 20 ms of a tone (a talker) and of near-silence (everyone else), Opus-encoded the way a
/// browser would send them.
fn packets() -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut encoder = OpusEncoder::new(32_000, 10).expect("encoder");
    let mut out = [0u8; 1275];
    let talkers = [300.0, 450.0, 700.0]
        .iter()
        .map(|freq| {
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    let t = f64::from(i) / 48_000.0;
                    (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
                })
                .collect();
            let len = encoder.encode(&pcm, &mut out).expect("encode");
            out[..len].to_vec()
        })
        .collect();
    let hiss: Vec<i16> = (0..960).map(|i| ((i * 7919) % 41) as i16 - 20).collect();
    let mut quiet = Vec::new();
    for _ in 0..5 {
        let len = encoder.encode(&hiss, &mut out).expect("encode");
        quiet = out[..len].to_vec();
    }
    (talkers, quiet)
}

fn tick(c: &mut Criterion) {
    let (talkers, quiet) = packets();
    let mut group = c.benchmark_group("audio_mix_tick");
    for sources in [4u64, 8, 16] {
        let mut mixer = AudioMixer::new(MixerConfig::default()).expect("mixer");
        for id in 0..sources {
            mixer.add_source(id, true).expect("source");
        }
        let start = Instant::now();
        let mut n: u32 = 0;
        let mut step = |mixer: &mut AudioMixer| {
            let now = start + Duration::from_millis(20 * u64::from(n));
            for id in 0..sources {
                let payload = talkers.get(id as usize).unwrap_or(&quiet);
                mixer.push(id, n as u16, n.wrapping_mul(960), payload, None, now);
            }
            let mut bytes = 0;
            mixer.tick(now, &mut |p| bytes += p.payload.len());
            n += 1;
            black_box(bytes)
        };
        // Past the jitter buffer's fill and the talkers' onset.
        for _ in 0..10 {
            step(&mut mixer);
        }
        assert_eq!(mixer.stats().talkers, 3);
        group.bench_function(BenchmarkId::from_parameter(sources), |b| {
            b.iter(|| step(&mut mixer))
        });
    }
    group.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
