//! SRTP protect and unprotect per packet, for each profile, at 100 and 1200 bytes of payload.
//!
//! `cargo bench -p switchyard-benches --bench srtp`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchyard_dataplane::srtp::{Context, Profile};

const PROFILES: [(Profile, &str); 3] = [
    (Profile::AeadAes128Gcm, "aead_aes_128_gcm"),
    (Profile::AeadAes256Gcm, "aead_aes_256_gcm"),
    (Profile::Aes128CmHmacSha1_80, "aes_cm_128_hmac_sha1_80"),
];

fn packet(seq: u16, payload: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef]);
    p.extend(std::iter::repeat_n(0xAB, payload));
    p
}

fn context(profile: Profile) -> Context {
    Context::new(
        profile,
        &vec![7; profile.key_len()],
        &vec![9; profile.salt_len()],
    )
    .expect("keys")
}

fn protect(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp_protect");
    for (profile, name) in PROFILES {
        for size in [100usize, 1200] {
            group.throughput(Throughput::Bytes(size as u64));
            let mut ctx = context(profile);
            let plain = packet(0, size);
            let mut buf = plain.clone();
            buf.resize(plain.len() + 16, 0);
            let mut seq = 0u16;
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    buf[2..4].copy_from_slice(&seq.to_be_bytes());
                    black_box(ctx.protect_rtp(&mut buf, plain.len()).expect("protect"))
                })
            });
        }
    }
    group.finish();
}

fn unprotect(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp_unprotect");
    for (profile, name) in PROFILES {
        for size in [100usize, 1200] {
            group.throughput(Throughput::Bytes(size as u64));
            // Pre-protect a run of packets so every iteration is a fresh (non-replayed) one.
            let mut tx = context(profile);
            let sealed: Vec<Vec<u8>> = (0..8192u16)
                .map(|seq| {
                    let plain = packet(seq, size);
                    let mut buf = plain.clone();
                    buf.resize(plain.len() + 16, 0);
                    let n = tx.protect_rtp(&mut buf, plain.len()).expect("protect");
                    buf.truncate(n);
                    buf
                })
                .collect();
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                // Each packet decrypts once per context (a second time is a replay), so time
                // chunks of fresh copies with a fresh context; the copying is not timed.
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(sealed.len() as u64) as usize;
                        let mut rx = context(profile);
                        let mut batch = sealed[..n].to_vec();
                        let start = Instant::now();
                        for p in &mut batch {
                            black_box(rx.unprotect_rtp(p).expect("unprotect"));
                        }
                        total += start.elapsed();
                        left -= n as u64;
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, protect, unprotect);
criterion_main!(benches);
