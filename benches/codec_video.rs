//! The MCU's per-frame video work: encoding one composed canvas and decoding one participant's
//! frame, for VP8 (libvpx) and H264 (OpenH264) at 360p and 720p. The picture moves (a square
//! sweeping over a gradient), so P frames carry real motion rather than the near-empty frames a
//! still picture gives. One encoder or decoder runs on one thread, as in the mixer.
//!
//! `cargo bench -p switchyard-benches --bench codec_video`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_codec::video::{self, EncoderConfig, VideoCodec};
use switchyard_codec::{FramePool, I420, Plane, Yuv};

/// Distinct pictures cycled through; the decode bench's sequence starts with a keyframe, so
/// going round again is a clean restart.
const FRAMES: u32 = 60;
/// 30 frames a second on the 90 kHz clock.
const TICK: u32 = 3000;

const SIZES: [(&str, u32, u32, u32); 2] =
    [("360p", 640, 360, 800_000), ("720p", 1280, 720, 2_000_000)];

/// Frame `n` of the moving picture: a horizontal luma gradient with a square sweeping across.
fn picture(width: u32, height: u32, n: u32) -> I420 {
    let mut p = I420::new(width, height).expect("picture size");
    let stride = p.stride(Plane::Y);
    for (y, row) in p.plane_mut(Plane::Y).chunks_exact_mut(stride).enumerate() {
        for (x, s) in row.iter_mut().enumerate() {
            *s = (16 + (x + y + n as usize) % 200) as u8;
        }
    }
    let side = height / 4;
    let x = (n * width / FRAMES) % (width - side);
    p.fill_rect(x & !1, height / 3, side, side, Yuv::from_rgb(240, 200, 30));
    p
}

fn config(codec: VideoCodec, width: u32, height: u32, bitrate_bps: u32) -> EncoderConfig {
    EncoderConfig {
        codec,
        width,
        height,
        bitrate_bps,
        fps: 30,
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("video_encode");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    for (name, width, height, bitrate) in SIZES {
        let pictures: Vec<I420> = (0..FRAMES).map(|n| picture(width, height, n)).collect();
        for codec in [VideoCodec::Vp8, VideoCodec::H264] {
            let mut encoder =
                video::encoder(&config(codec, width, height, bitrate)).expect("encoder");
            let mut out = Vec::new();
            let mut n = 0u32;
            group.bench_function(format!("{codec:?}_{name}"), |b| {
                b.iter(|| {
                    let p = &pictures[(n % FRAMES) as usize];
                    let encoded = encoder.encode(black_box(p), n * TICK, &mut out);
                    n += 1;
                    black_box(encoded.expect("encode"))
                })
            });
        }
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("video_decode");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    for (name, width, height, bitrate) in SIZES {
        for codec in [VideoCodec::Vp8, VideoCodec::H264] {
            let mut encoder =
                video::encoder(&config(codec, width, height, bitrate)).expect("encoder");
            let mut frames = Vec::new();
            for n in 0..FRAMES {
                let mut out = Vec::new();
                if encoder
                    .encode(&picture(width, height, n), n * TICK, &mut out)
                    .expect("encode")
                    .is_some()
                {
                    frames.push(out);
                }
            }
            let mut decoder = video::decoder(codec).expect("decoder");
            let mut pool = FramePool::default();
            let mut n = 0;
            group.bench_function(format!("{codec:?}_{name}"), |b| {
                b.iter(|| {
                    let frame = &frames[n % frames.len()];
                    n += 1;
                    if let Some(p) = decoder.decode(black_box(frame), &mut pool).expect("decode") {
                        pool.put(black_box(p));
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
