//! Scaling a picture into a rectangle of another, keeping its aspect ratio: what the compositor
//! does to every participant's picture on every frame.
//!
//! Each plane is resampled separately with a separable filter: an area average when shrinking
//! (every source sample counts, so fine detail averages out instead of aliasing) and bilinear
//! interpolation when growing. The per-pixel work is integer fixed point; the filter weights for
//! one axis depend only on the source and destination lengths, so they are computed once per
//! pair of lengths and cached in the [`Scaler`], which also keeps its one row of scratch space:
//! scaling a picture whose size was seen before allocates nothing.

use crate::frame::{I420, Plane, Yuv};
use crate::layout::Rect;

/// Filter weights are fractions of `1 << WEIGHT_BITS`.
const WEIGHT_BITS: u32 = 14;
const ONE: u32 = 1 << WEIGHT_BITS;

/// Bits of the vertical pass's result dropped before the horizontal pass, so that pass's sums
/// (`255 << (2 * WEIGHT_BITS - MID_DROP)` at most) fit in a `u32`; `WEIGHT_BITS - MID_DROP`
/// bits of fraction survive between the passes.
const MID_DROP: u32 = 7;

/// A source larger than its place by at most `1 / CROP_DIVISOR` on each axis is cropped to it
/// (its centre copied) instead of resampled. A mixer's inputs are usually such: a 640x360 layer
/// in a 2x2 grid's tile of a 1280x720 canvas, a little smaller for the gaps between tiles.
/// Cropping loses at most 1.5% at each edge, keeps the picture sharp (a resample by 0.99
/// blurs every sample a little) and costs a copy instead of a filter.
const CROP_DIVISOR: u32 = 32;

/// Kernels a scaler keeps; a compositor sees a few source sizes (one per participant and
/// simulcast layer) and a few tile sizes, and starts over when that is exceeded.
const KERNEL_CACHE: usize = 64;

/// The weights that resample one axis from `src_len` samples to `dst_len`.
#[derive(Debug)]
struct Kernel {
    src_len: usize,
    dst_len: usize,
    /// Source samples read per output sample (padded with zero weights where fewer count).
    taps: usize,
    /// The first source sample read for each output sample; `start + taps <= src_len`.
    starts: Vec<usize>,
    /// `taps` weights per output sample, each group summing to [`ONE`].
    weights: Vec<u32>,
}

impl Kernel {
    fn new(src_len: usize, dst_len: usize) -> Kernel {
        // Every output sample's (source sample, weight) pairs, back to back, and where each
        // one's pairs end; made once per pair of lengths, so allocating here is fine.
        let mut entries: Vec<(usize, u32)> = Vec::new();
        let mut ends = Vec::with_capacity(dst_len);
        for i in 0..dst_len {
            let from = entries.len();
            if dst_len < src_len {
                area_weights(src_len, dst_len, i, &mut entries);
            } else {
                linear_weights(src_len, dst_len, i, &mut entries);
            }
            round_to_one(&mut entries[from..]);
            ends.push(entries.len());
        }
        let mut kernel = Kernel {
            src_len,
            dst_len,
            taps: 0,
            starts: Vec::with_capacity(dst_len),
            weights: Vec::new(),
        };
        let mut from = 0;
        for &end in &ends {
            kernel.taps = kernel.taps.max(end - from);
            from = end;
        }
        kernel.weights.reserve(dst_len * kernel.taps);
        let mut from = 0;
        for end in ends {
            kernel.push(&entries[from..end]);
            from = end;
        }
        kernel
    }

    /// Appends one output sample's weights in a window of `taps` samples inside the source.
    fn push(&mut self, entries: &[(usize, u32)]) {
        let first = entries.first().map_or(0, |e| e.0);
        let start = first.min(self.src_len - self.taps);
        self.starts.push(start);
        let at = self.weights.len();
        self.weights.resize(at + self.taps, 0);
        for &(j, w) in entries {
            self.weights[at + j - start] = w;
        }
    }
}

/// Makes one output sample's rounded weights sum to exactly [`ONE`] (so a flat colour stays
/// exactly that colour) by correcting the largest.
fn round_to_one(entries: &mut [(usize, u32)]) {
    let sum: u32 = entries.iter().map(|e| e.1).sum();
    if let Some(largest) = entries.iter_mut().max_by_key(|e| e.1) {
        largest.1 = (largest.1 + ONE).saturating_sub(sum);
    }
}

/// Shrinking: output `i` covers source interval `[i, i + 1) * src_len / dst_len`, and every
/// source sample weighs what it overlaps (lengths counted in `1 / dst_len` units, exactly).
fn area_weights(src_len: usize, dst_len: usize, i: usize, out: &mut Vec<(usize, u32)>) {
    let (from, to) = (i * src_len, (i + 1) * src_len);
    for j in from / dst_len..to.div_ceil(dst_len) {
        let overlap = to.min((j + 1) * dst_len) - from.max(j * dst_len);
        let weight = (overlap as u64 * u64::from(ONE) + src_len as u64 / 2) / src_len as u64;
        // A sliver of a sample that rounds to nothing would only cost a tap.
        if weight > 0 {
            out.push((j, weight as u32));
        }
    }
}

/// Growing: output `i`'s centre maps to source position `(i + 1/2) * src_len / dst_len - 1/2`
/// (in `1 / (2 * dst_len)` units, exactly), clamped to the edge samples, and the two nearest
/// source samples are blended.
fn linear_weights(src_len: usize, dst_len: usize, i: usize, out: &mut Vec<(usize, u32)>) {
    let den = 2 * dst_len as u64;
    let pos = ((2 * i as u64 + 1) * src_len as u64)
        .saturating_sub(dst_len as u64)
        .min((src_len as u64 - 1) * den);
    let j = (pos / den) as usize;
    let frac = ((pos % den * u64::from(ONE) + den / 2) / den) as u32;
    out.push((j, ONE - frac));
    if frac > 0 {
        out.push((j + 1, frac));
    }
}

/// Scales pictures into rectangles, caching its filter tables between calls; one per
/// compositor.
#[derive(Debug, Default)]
pub struct Scaler {
    kernels: Vec<Kernel>,
    /// The vertical pass's output: one row of the source plane's width.
    row: Vec<u32>,
}

impl Scaler {
    /// Scales `src` into `dst` at `rect`, as large as fits with its aspect ratio kept and
    /// centred, and paints the rest of `rect` (the letterbox bars) black. `rect` is first
    /// shrunk to even coordinates and sizes inside `dst` (so no chroma sample is shared with a
    /// neighbouring tile); one smaller than 2x2 after that is left alone.
    pub fn scale_into(&mut self, src: &I420, dst: &mut I420, rect: Rect) {
        let Some(area) = clip(rect, dst.width(), dst.height()) else {
            return;
        };
        let inner = letterbox(src.width(), src.height(), area);
        paint_bars(dst, area, inner);
        let crop = crop_offset(src.width(), src.height(), inner);
        if self.kernels.len() + 6 > KERNEL_CACHE {
            self.kernels.clear();
        }
        for plane in [Plane::Y, Plane::U, Plane::V] {
            let (src_w, src_h) = src.plane_size(plane);
            let (x, y, w, h) = match plane {
                Plane::Y => (inner.x, inner.y, inner.width, inner.height),
                Plane::U | Plane::V => {
                    (inner.x / 2, inner.y / 2, inner.width / 2, inner.height / 2)
                }
            };
            let (x, y, w, h) = (x as usize, y as usize, w as usize, h as usize);
            let dst_stride = dst.stride(plane);
            let out = &mut dst.plane_mut(plane)[y * dst_stride + x..];
            if let Some((cx, cy)) = crop {
                let (cx, cy) = match plane {
                    Plane::Y => (cx, cy),
                    Plane::U | Plane::V => (cx / 2, cy / 2),
                };
                let stride = src.stride(plane);
                let from = &src.plane(plane)[cy * stride + cx..];
                copy_plane(from, stride, out, dst_stride, w, h);
                continue;
            }
            let across = self.kernel(src_w, w);
            let down = self.kernel(src_h, h);
            resample(
                &self.kernels[across],
                &self.kernels[down],
                src.plane(plane),
                src.stride(plane),
                out,
                dst_stride,
                &mut self.row,
            );
        }
    }

    /// The index of the cached kernel from `src_len` to `dst_len`, made if new.
    fn kernel(&mut self, src_len: usize, dst_len: usize) -> usize {
        match self
            .kernels
            .iter()
            .position(|k| k.src_len == src_len && k.dst_len == dst_len)
        {
            Some(i) => i,
            None => {
                self.kernels.push(Kernel::new(src_len, dst_len));
                self.kernels.len() - 1
            }
        }
    }
}

/// Scales `src` into `dst` at `rect` like [`Scaler::scale_into`], with a scaler of its own: for
/// one-off use, as it computes its filter tables on every call.
pub fn scale_into(src: &I420, dst: &mut I420, rect: Rect) {
    Scaler::default().scale_into(src, dst, rect);
}

/// `rect` with its start rounded up and its end rounded down to even samples and its end
/// clipped to the picture; `None` when less than 2x2 is left.
fn clip(rect: Rect, width: u32, height: u32) -> Option<Rect> {
    let x = rect.x.saturating_add(1) & !1;
    let y = rect.y.saturating_add(1) & !1;
    let x1 = rect.x.saturating_add(rect.width).min(width) & !1;
    let y1 = rect.y.saturating_add(rect.height).min(height) & !1;
    (x1 >= x.saturating_add(2) && y1 >= y.saturating_add(2)).then(|| Rect {
        x,
        y,
        width: x1 - x,
        height: y1 - y,
    })
}

/// The largest even-sized rectangle of the source's aspect ratio centred in `area` (even).
pub(crate) fn letterbox(src_w: u32, src_h: u32, area: Rect) -> Rect {
    let (sw, sh) = (u64::from(src_w), u64::from(src_h));
    let (aw, ah) = (u64::from(area.width), u64::from(area.height));
    let (w, h) = if sw * ah >= sh * aw {
        // Wider than the area: full width, bars above and below.
        (aw, (2 * aw * sh + sw) / (2 * sw))
    } else {
        ((2 * ah * sw + sh) / (2 * sh), ah)
    };
    // Both at most the area's (even) sizes, so the casts cannot truncate.
    let w = ((w as u32) & !1).clamp(2, area.width);
    let h = ((h as u32) & !1).clamp(2, area.height);
    Rect {
        x: area.x + (((area.width - w) / 2) & !1),
        y: area.y + (((area.height - h) / 2) & !1),
        width: w,
        height: h,
    }
}

/// Where the centre of a `src_w` x `src_h` picture that is to be cropped to `inner` starts
/// (even, so chroma samples stay whole), if it is to be cropped: when it is as large as
/// `inner` and larger by at most `1 / CROP_DIVISOR` on each axis.
fn crop_offset(src_w: u32, src_h: u32, inner: Rect) -> Option<(usize, usize)> {
    let near = |s: u32, d: u32| s >= d && (s - d).saturating_mul(CROP_DIVISOR) <= d;
    let offset = |s: u32, d: u32| (((s - d) / 2) & !1) as usize;
    (near(src_w, inner.width) && near(src_h, inner.height))
        .then(|| (offset(src_w, inner.width), offset(src_h, inner.height)))
}

/// Paints black the parts of `area` outside `inner` (at most two bars are non-empty).
fn paint_bars(dst: &mut I420, area: Rect, inner: Rect) {
    let black = Yuv::BLACK;
    let (area_right, area_bottom) = (area.x + area.width, area.y + area.height);
    let (inner_right, inner_bottom) = (inner.x + inner.width, inner.y + inner.height);
    dst.fill_rect(area.x, area.y, area.width, inner.y - area.y, black);
    dst.fill_rect(
        area.x,
        inner_bottom,
        area.width,
        area_bottom - inner_bottom,
        black,
    );
    dst.fill_rect(area.x, inner.y, inner.x - area.x, inner.height, black);
    dst.fill_rect(
        inner_right,
        inner.y,
        area_right - inner_right,
        inner.height,
        black,
    );
}

/// Same size (or a crop of the source): rows copied as they are.
fn copy_plane(
    src: &[u8],
    src_stride: usize,
    dst: &mut [u8],
    dst_stride: usize,
    w: usize,
    h: usize,
) {
    for (from, to) in src
        .chunks(src_stride)
        .zip(dst.chunks_mut(dst_stride))
        .take(h)
    {
        to[..w].copy_from_slice(&from[..w]);
    }
}

/// Resamples one plane: for each output row, the vertical pass blends the source rows it needs
/// into `row`, then the horizontal pass blends `row`'s samples into the output row.
fn resample(
    across: &Kernel,
    down: &Kernel,
    src: &[u8],
    src_stride: usize,
    dst: &mut [u8],
    dst_stride: usize,
    row: &mut Vec<u32>,
) {
    let src_w = across.src_len;
    row.resize(src_w, 0);
    let row = &mut row[..src_w];
    let out_rows = dst.chunks_mut(dst_stride);
    let in_rows = down.starts.iter().zip(down.weights.chunks_exact(down.taps));
    for (out, (&start, weights)) in out_rows.zip(in_rows) {
        row.fill(0);
        for (t, &w) in weights.iter().enumerate() {
            if w == 0 {
                continue;
            }
            let line = &src[(start + t) * src_stride..][..src_w];
            for (acc, &s) in row.iter_mut().zip(line) {
                *acc += w * u32::from(s);
            }
        }
        for acc in row.iter_mut() {
            *acc = (*acc + (1 << (MID_DROP - 1))) >> MID_DROP;
        }
        let out = &mut out[..across.dst_len];
        match across.taps {
            1 => horizontal::<1>(across, row, out),
            2 => horizontal::<2>(across, row, out),
            3 => horizontal::<3>(across, row, out),
            4 => horizontal::<4>(across, row, out),
            5 => horizontal::<5>(across, row, out),
            _ => horizontal_any(across, row, out),
        }
    }
}

/// The fixed-point result of the horizontal pass: its weights times the vertical pass's.
const OUT_SHIFT: u32 = 2 * WEIGHT_BITS - MID_DROP;

/// The horizontal pass for kernels of `TAPS` taps, which the compiler unrolls (the common
/// ratios need 1 to 5).
fn horizontal<const TAPS: usize>(across: &Kernel, row: &[u32], out: &mut [u8]) {
    let taps = across.starts.iter().zip(across.weights.chunks_exact(TAPS));
    for (o, (&start, weights)) in out.iter_mut().zip(taps) {
        let (Some(window), Ok(weights)) = (
            row.get(start..start + TAPS),
            <&[u32; TAPS]>::try_from(weights),
        ) else {
            continue;
        };
        let mut sum = 1 << (OUT_SHIFT - 1);
        for t in 0..TAPS {
            sum += window[t] * weights[t];
        }
        *o = (sum >> OUT_SHIFT).min(255) as u8;
    }
}

/// The horizontal pass for any number of taps (large reductions).
fn horizontal_any(across: &Kernel, row: &[u32], out: &mut [u8]) {
    let taps = across
        .starts
        .iter()
        .zip(across.weights.chunks_exact(across.taps));
    for (o, (&start, weights)) in out.iter_mut().zip(taps) {
        let window = &row[start..start + across.taps];
        let sum: u32 = window.iter().zip(weights).map(|(&s, &w)| s * w).sum();
        *o = ((sum + (1 << (OUT_SHIFT - 1))) >> OUT_SHIFT).min(255) as u8;
    }
}

// ok: test code
#[cfg(test)]
mod tests {
    use super::*;

    fn picture(width: u32, height: u32, colour: Yuv) -> I420 {
        let mut p = I420::new(width, height).unwrap();
        p.fill(colour);
        p
    }

    /// The middle half of a rectangle, away from edges where filters blend neighbours.
    fn middle(r: Rect) -> (u32, u32, u32, u32) {
        (
            r.x + r.width / 4,
            r.y + r.height / 4,
            r.width / 2,
            r.height / 2,
        )
    }

    fn mean(p: &I420, (x, y, w, h): (u32, u32, u32, u32)) -> Yuv {
        p.mean(x, y, w, h)
    }

    #[test]
    fn kernels_sum_to_one_and_stay_inside_the_source() {
        for (src, dst) in [
            (640, 317),
            (360, 2),
            (2, 360),
            (1, 7),
            (7, 1),
            (33, 33),
            (17, 40),
        ] {
            let k = Kernel::new(src, dst);
            assert_eq!(k.starts.len(), dst);
            for (start, w) in k.starts.iter().zip(k.weights.chunks_exact(k.taps)) {
                assert!(start + k.taps <= src, "{src}->{dst}");
                assert_eq!(w.iter().sum::<u32>(), ONE, "{src}->{dst}");
            }
        }
    }

    #[test]
    fn kernels_read_no_more_samples_than_they_weigh() {
        for (src, dst, taps) in [
            (640, 640, 1),
            (640, 320, 2),
            (640, 638, 2),
            (320, 640, 2),
            (640, 210, 4),
        ] {
            assert_eq!(Kernel::new(src, dst).taps, taps, "{src}->{dst}");
        }
    }

    #[test]
    fn solid_colour_fills_the_tile_and_other_aspects_get_black_bars() {
        let orange = Yuv::from_rgb(255, 128, 0);
        // 4:3 into a 16:9 tile: bars left and right.
        let src = picture(64, 48, orange);
        let mut dst = picture(330, 190, Yuv::from_rgb(0, 0, 255));
        let tile = Rect {
            x: 80,
            y: 44,
            width: 160,
            height: 90,
        };
        scale_into(&src, &mut dst, tile);
        let inner = letterbox(64, 48, tile);
        assert_eq!(
            inner,
            Rect {
                x: 100,
                y: 44,
                width: 120,
                height: 90
            }
        );
        assert!(mean(&dst, middle(inner)).distance(orange) <= 2);
        // Exact everywhere inside: the weights of every sample sum to one.
        assert_eq!(
            dst.mean(inner.x, inner.y, inner.width, inner.height),
            orange
        );
        assert_eq!(dst.mean(80, 44, 20, 90), Yuv::BLACK);
        assert_eq!(dst.mean(220, 44, 20, 90), Yuv::BLACK);
        // Outside the tile, untouched.
        assert_eq!(dst.mean(0, 0, 80, 190), Yuv::from_rgb(0, 0, 255));
        assert_eq!(dst.mean(240, 0, 90, 190), Yuv::from_rgb(0, 0, 255));

        // 16:9 into a 4:3 tile: bars above and below, also when growing.
        let src = picture(32, 18, orange);
        let tile = Rect {
            x: 10,
            y: 0,
            width: 200,
            height: 150,
        };
        scale_into(&src, &mut dst, tile);
        let inner = letterbox(32, 18, tile);
        assert_eq!((inner.width, inner.height), (200, 112));
        assert_eq!(
            dst.mean(inner.x, inner.y, inner.width, inner.height),
            orange
        );
        assert_eq!(dst.mean(10, 0, 200, inner.y), Yuv::BLACK);
        assert_eq!(
            dst.mean(
                10,
                inner.y + inner.height,
                200,
                150 - inner.y - inner.height
            ),
            Yuv::BLACK
        );
    }

    fn quadrant_colours() -> [Yuv; 4] {
        [
            Yuv::from_rgb(255, 0, 0),
            Yuv::from_rgb(0, 255, 0),
            Yuv::from_rgb(0, 0, 255),
            Yuv::from_rgb(255, 255, 255),
        ]
    }

    /// A 68x52 picture (rows padded: stride 96 and 64) with a colour per quadrant.
    fn quadrants() -> I420 {
        let [tl, tr, bl, br] = quadrant_colours();
        let mut p = I420::new(68, 52).unwrap();
        p.fill_rect(0, 0, 34, 26, tl);
        p.fill_rect(34, 0, 34, 26, tr);
        p.fill_rect(0, 26, 34, 26, bl);
        p.fill_rect(34, 26, 34, 26, br);
        p
    }

    fn assert_quadrants(dst: &I420, inner: Rect) {
        let (hw, hh) = (inner.width / 2, inner.height / 2);
        let corners = [(0, 0), (hw, 0), (0, hh), (hw, hh)];
        for ((dx, dy), colour) in corners.into_iter().zip(quadrant_colours()) {
            let q = Rect {
                x: inner.x + dx,
                y: inner.y + dy,
                width: hw,
                height: hh,
            };
            let got = mean(dst, middle(q));
            assert!(got.distance(colour) <= 2, "{q:?}: {got:?} != {colour:?}");
        }
    }

    #[test]
    fn quadrants_stay_in_place_when_shrinking_and_growing() {
        let src = quadrants();
        assert_ne!(src.stride(Plane::Y), 68);
        // Shrinking into a padded picture (stride 128) at an offset.
        let mut small = picture(100, 60, Yuv::BLACK);
        let tile = Rect {
            x: 2,
            y: 4,
            width: 48,
            height: 36,
        };
        scale_into(&src, &mut small, tile);
        assert_quadrants(&small, letterbox(68, 52, tile));
        // Growing.
        let mut large = picture(330, 250, Yuv::BLACK);
        let tile = Rect {
            x: 10,
            y: 20,
            width: 300,
            height: 220,
        };
        scale_into(&src, &mut large, tile);
        assert_quadrants(&large, letterbox(68, 52, tile));
        // And back down from the grown one, to a size with odd chroma.
        let grown = {
            let mut g = I420::new(300, 230).unwrap();
            scale_into(
                &src,
                &mut g,
                Rect {
                    x: 0,
                    y: 0,
                    width: 300,
                    height: 230,
                },
            );
            g
        };
        let mut back = picture(90, 70, Yuv::BLACK);
        let tile = Rect {
            x: 0,
            y: 0,
            width: 90,
            height: 70,
        };
        scale_into(&grown, &mut back, tile);
        assert_quadrants(&back, letterbox(300, 230, tile));
        // Same size: copied.
        let mut same = picture(100, 60, Yuv::BLACK);
        scale_into(
            &src,
            &mut same,
            Rect {
                x: 16,
                y: 4,
                width: 68,
                height: 52,
            },
        );
        assert_quadrants(
            &same,
            Rect {
                x: 16,
                y: 4,
                width: 68,
                height: 52,
            },
        );
    }

    /// A 640x360 picture in a tile a little smaller (a 2x2 grid's on 1280x720, less the gaps)
    /// is its centre, sample for sample; one a tenth smaller is resampled.
    #[test]
    fn a_source_slightly_larger_than_its_tile_is_cropped() {
        let mut src = picture(640, 360, Yuv::BLACK);
        for plane in [Plane::Y, Plane::U, Plane::V] {
            let stride = src.stride(plane);
            for (y, row) in src.plane_mut(plane).chunks_mut(stride).enumerate() {
                for (x, s) in row.iter_mut().enumerate() {
                    *s = (x * 3 + y * 7) as u8;
                }
            }
        }
        let tile = Rect {
            x: 20,
            y: 10,
            width: 636,
            height: 356,
        };
        let inner = letterbox(640, 360, tile);
        assert_eq!(crop_offset(640, 360, inner), Some((4, 2)));
        let mut dst = picture(700, 400, Yuv::from_rgb(0, 0, 255));
        scale_into(&src, &mut dst, tile);
        for (plane, (cx, cy), (ix, iy)) in [
            (Plane::Y, (4, 2), (inner.x, inner.y)),
            (Plane::U, (2, 1), (inner.x / 2, inner.y / 2)),
            (Plane::V, (2, 1), (inner.x / 2, inner.y / 2)),
        ] {
            let (w, h) = match plane {
                Plane::Y => (inner.width, inner.height),
                _ => (inner.width / 2, inner.height / 2),
            };
            let (ss, ds) = (src.stride(plane), dst.stride(plane));
            for y in 0..h as usize {
                let from = &src.plane(plane)[(y + cy) * ss + cx..][..w as usize];
                let to = &dst.plane(plane)[(y + iy as usize) * ds + ix as usize..][..w as usize];
                assert_eq!(from, to, "{plane:?} row {y}");
            }
        }
        let smaller = Rect {
            width: 576,
            height: 324,
            ..tile
        };
        assert_eq!(crop_offset(640, 360, letterbox(640, 360, smaller)), None);
        assert_eq!(crop_offset(630, 354, inner), None, "never grown");
    }

    #[test]
    fn odd_and_degenerate_sizes_do_not_panic() {
        let mut scaler = Scaler::default();
        let mut dst = picture(51, 29, Yuv::BLACK);
        let rects = [
            Rect {
                x: 3,
                y: 5,
                width: 41,
                height: 21,
            },
            Rect {
                x: 49,
                y: 27,
                width: 10,
                height: 10,
            },
            Rect {
                x: 100,
                y: 100,
                width: 5,
                height: 5,
            },
            Rect {
                x: 1,
                y: 1,
                width: 1,
                height: 1,
            },
            Rect {
                x: 0,
                y: 0,
                width: 51,
                height: 29,
            },
            Rect {
                x: u32::MAX - 1,
                y: 0,
                width: u32::MAX,
                height: 4,
            },
        ];
        for (w, h) in [(2, 2), (3, 3), (33, 17), (2, 200), (320, 2), (51, 29)] {
            let src = picture(w, h, Yuv::from_rgb(10, 200, 30));
            for rect in rects {
                scaler.scale_into(&src, &mut dst, rect);
            }
        }
    }

    #[test]
    fn kernels_are_cached_and_bounded() {
        let mut scaler = Scaler::default();
        let src = picture(64, 36, Yuv::BLACK);
        let mut dst = picture(320, 180, Yuv::BLACK);
        let tile = Rect {
            x: 0,
            y: 0,
            width: 160,
            height: 90,
        };
        scaler.scale_into(&src, &mut dst, tile);
        let cached = scaler.kernels.len();
        scaler.scale_into(&src, &mut dst, tile);
        assert_eq!(scaler.kernels.len(), cached);
        for w in (4..200).step_by(2) {
            scaler.scale_into(
                &src,
                &mut dst,
                Rect {
                    x: 0,
                    y: 0,
                    width: w,
                    height: 90,
                },
            );
            assert!(scaler.kernels.len() <= KERNEL_CACHE);
        }
    }
}
