//! The MCU's per-frame video work besides decoding and encoding: scaling every participant's
//! 640x360 picture into its tile and composing the canvas, for 4 and 9 participants on a
//! 640x360 and a 1280x720 canvas (grid layout). One iteration is one output frame; at 30 fps a
//! mixer has 33 ms per frame for this and the codecs together.
//!
//! `cargo bench -p switchyard-benches --bench compose`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_codec::{Compositor, I420, Layout, Plane, Yuv};

/// A 640x360 picture with a gradient (so the filters do real work) and a coloured block.
fn picture(seed: u8) -> I420 {
    let mut p = I420::new(640, 360).expect("picture");
    let stride = p.stride(Plane::Y);
    for (y, row) in p.plane_mut(Plane::Y).chunks_mut(stride).enumerate() {
        for (x, s) in row[..640].iter_mut().enumerate() {
            *s = ((x + 2 * y) as u8).wrapping_add(seed);
        }
    }
    p.fill_rect(100, 60, 200, 120, Yuv::from_rgb(seed, 128, 255 - seed));
    p
}

fn compose(c: &mut Criterion) {
    let pictures: Vec<I420> = (0..9u8).map(|i| picture(i * 28)).collect();
    let mut group = c.benchmark_group("compose");
    group.throughput(Throughput::Elements(1));
    for (width, height) in [(640, 360), (1280, 720)] {
        for n in [4, 9] {
            let sources: Vec<Option<&I420>> = pictures[..n].iter().map(Some).collect();
            let mut compositor = Compositor::new(width, height, Layout::Grid).expect("canvas");
            group.bench_function(format!("grid_{n}x640x360_into_{width}x{height}"), |b| {
                b.iter(|| black_box(compositor.compose(black_box(&sources), None).width()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, compose);
criterion_main!(benches);
