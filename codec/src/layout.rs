//! Where each participant's picture goes on the MCU's canvas.
//!
//! A layout only computes rectangles; [`crate::compose`] paints them. Every coordinate and size
//! is even so a tile's chroma samples (one per 2x2 block) belong to that tile alone and two tiles
//! never bleed into each other, and tiles are separated by a small black gap when the canvas has
//! room for one.

use std::fmt;
use std::str::FromStr;

/// How the canvas is divided among the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Everyone the same size, in a near-square grid.
    Grid,
    /// The active speaker large on top, the others in a strip of small tiles below.
    Speaker,
    /// Everyone side by side in one row (the recording muxer's `hstack`).
    HStack,
    /// Everyone one above the other in one column (`vstack`).
    VStack,
}

/// A layout name in the configuration that is neither `grid` nor `speaker`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown layout {0:?} (expected \"grid\", \"speaker\", \"hstack\" or \"vstack\")")]
pub struct UnknownLayout(pub String);

impl FromStr for Layout {
    type Err = UnknownLayout;

    fn from_str(s: &str) -> Result<Layout, UnknownLayout> {
        match s {
            "grid" => Ok(Layout::Grid),
            "speaker" => Ok(Layout::Speaker),
            "hstack" => Ok(Layout::HStack),
            "vstack" => Ok(Layout::VStack),
            other => Err(UnknownLayout(other.to_owned())),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Grid => "grid",
            Layout::Speaker => "speaker",
            Layout::HStack => "hstack",
            Layout::VStack => "vstack",
        })
    }
}

/// A rectangle on the canvas, in luma samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    /// Whether the rectangle covers nothing (what a tile too small to draw becomes).
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// Whether the two rectangles share a sample.
    pub fn overlaps(&self, other: &Rect) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && self.x < other.x + other.width
            && other.x < self.x + self.width
            && self.y < other.y + other.height
            && other.y < self.y + self.height
    }
}

/// The gap between tiles, in samples.
const GAP: u32 = 4;

/// Tiles smaller than this (in the gap's direction) get no gap: the room is worth more as
/// picture than as border.
const MIN_TILE_FOR_GAP: u32 = 32;

/// The share of the canvas height that the speaker layout's strip of small tiles takes (1/4).
const STRIP_DIVISOR: u32 = 4;

/// The speaker layout's strip has room for at least this many small tiles, so one or two
/// listeners are not stretched across the whole width.
const STRIP_MIN_SLOTS: u32 = 4;

fn even_floor(n: u32) -> u32 {
    n & !1
}

/// Splits `total` samples into `count` equal even-sized tiles; returns the tile size and the gap
/// between tiles (none when it would leave tiles too small).
fn split(total: u32, count: u32) -> (u32, u32) {
    let count = count.max(1);
    let with_gap = even_floor(total.saturating_sub(GAP.saturating_mul(count - 1)) / count);
    if with_gap >= MIN_TILE_FOR_GAP {
        (with_gap, GAP)
    } else {
        (even_floor(total / count), 0)
    }
}

/// Samples taken by `count` tiles of `size` with `gap` between them.
fn span(count: u32, size: u32, gap: u32) -> u32 {
    count * size + count.saturating_sub(1) * gap
}

/// The even offset that centres `used` samples in `total`.
fn centre(total: u32, used: u32) -> u32 {
    even_floor(total.saturating_sub(used) / 2)
}

/// A tile, or an empty one where the canvas is too small to draw it (below 2x2).
fn tile(x: u32, y: u32, width: u32, height: u32) -> Rect {
    if width < 2 || height < 2 {
        Rect::default()
    } else {
        Rect {
            x,
            y,
            width,
            height,
        }
    }
}

/// Tiles for `n` sources on a `canvas_width` x `canvas_height` canvas, one per source in order.
/// See [`tiles_into`].
pub fn tiles(
    layout: Layout,
    canvas_width: u32,
    canvas_height: u32,
    n: usize,
    speaker: Option<usize>,
) -> Vec<Rect> {
    let mut out = Vec::with_capacity(n);
    tiles_into(layout, canvas_width, canvas_height, n, speaker, &mut out);
    out
}

/// The largest of `n` sources' tiles (the whole canvas for none or one): with
/// [`Layout::Speaker`] the speaker's, which any source may become.
pub fn largest_tile(layout: Layout, canvas_width: u32, canvas_height: u32, n: usize) -> Rect {
    tiles(layout, canvas_width, canvas_height, n.max(1), None)
        .into_iter()
        .max_by_key(|t| t.height)
        .unwrap_or_default()
}

/// Writes the tiles for `n` sources into `out` (cleared first; the compositor reuses one vector
/// so that composing a frame allocates nothing).
///
/// - [`Layout::Grid`]: `ceil(sqrt n)` columns and `ceil(n / columns)` rows of equal tiles, the
///   grid centred on the canvas and its last, possibly shorter, row centred horizontally.
/// - [`Layout::Speaker`]: source `speaker` (0 when `None` or out of range) takes the top three
///   quarters, the others share a centred strip of small tiles along the bottom, in order.
/// - [`Layout::HStack`], [`Layout::VStack`]: equal tiles in one row, or one column, each the
///   canvas's full height, or width.
///
/// With `n == 1` the single tile fills the canvas in both layouts. All coordinates and sizes are
/// even, tiles stay inside the canvas and never overlap; a tile that would be smaller than 2x2
/// (only on canvases far too small for `n`) comes out empty ([`Rect::is_empty`]) and is skipped.
pub fn tiles_into(
    layout: Layout,
    canvas_width: u32,
    canvas_height: u32,
    n: usize,
    speaker: Option<usize>,
    out: &mut Vec<Rect>,
) {
    out.clear();
    let (width, height) = (even_floor(canvas_width), even_floor(canvas_height));
    match n {
        0 => {}
        1 => out.push(tile(0, 0, width, height)),
        _ => match layout {
            Layout::Grid => grid(width, height, n, out),
            Layout::Speaker => {
                let speaker = speaker.filter(|&s| s < n).unwrap_or(0);
                speaker_strip(width, height, n, speaker, out);
            }
            Layout::HStack => stack(width, height, n, true, out),
            Layout::VStack => stack(width, height, n, false, out),
        },
    }
}

fn stack(width: u32, height: u32, n: usize, across: bool, out: &mut Vec<Rect>) {
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    let (size, gap) = split(if across { width } else { height }, n32);
    for i in 0..n32 {
        let at = i * (size + gap);
        out.push(if across {
            tile(at, 0, size, height)
        } else {
            tile(0, at, width, size)
        });
    }
}

fn grid(width: u32, height: u32, n: usize, out: &mut Vec<Rect>) {
    // Layouts have at most a few hundred tiles; saturate rather than wrap on absurd counts.
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    let cols = n32.isqrt() + u32::from(n32.isqrt() * n32.isqrt() < n32);
    let rows = n32.div_ceil(cols);
    let (tile_w, gap_x) = split(width, cols);
    let (tile_h, gap_y) = split(height, rows);
    let top = centre(height, span(rows, tile_h, gap_y));
    for row in 0..rows {
        let in_row = cols.min(n32 - row * cols);
        let left = centre(width, span(in_row, tile_w, gap_x));
        let y = top + row * (tile_h + gap_y);
        for col in 0..in_row {
            out.push(tile(left + col * (tile_w + gap_x), y, tile_w, tile_h));
        }
    }
}

fn speaker_strip(width: u32, height: u32, n: usize, speaker: usize, out: &mut Vec<Rect>) {
    let others = u32::try_from(n - 1).unwrap_or(u32::MAX);
    let strip_h = even_floor(height / STRIP_DIVISOR);
    let gap = if strip_h >= MIN_TILE_FOR_GAP { GAP } else { 0 };
    let big_h = height.saturating_sub(strip_h + gap);
    let (small_w, gap_x) = split(width, others.max(STRIP_MIN_SLOTS));
    let left = centre(width, span(others, small_w, gap_x));
    let strip_y = big_h + gap;
    let mut slot = 0;
    for i in 0..n {
        if i == speaker {
            out.push(tile(0, 0, width, big_h));
        } else {
            out.push(tile(
                left + slot * (small_w + gap_x),
                strip_y,
                small_w,
                strip_h,
            ));
            slot += 1;
        }
    }
}

// ok: test code
#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write;

    /// One line per tile count: `n: x,y,wxh x,y,wxh ...`.
    fn table(
        layout: Layout,
        width: u32,
        height: u32,
        ns: &[usize],
        speaker: Option<usize>,
    ) -> String {
        let mut s = String::new();
        for &n in ns {
            write!(s, "{n}:").unwrap();
            for r in tiles(layout, width, height, n, speaker) {
                write!(s, " {},{},{}x{}", r.x, r.y, r.width, r.height).unwrap();
            }
            s.push('\n');
        }
        s
    }

    /// Golden tables: the layouts a viewer sees. Regenerate deliberately (print `table(...)`)
    /// when a layout is meant to change, and look at the numbers.
    const GRID_640X360: &str = "\
1: 0,0,640x360
2: 0,0,318x360 322,0,318x360
3: 0,0,318x178 322,0,318x178 160,182,318x178
4: 0,0,318x178 322,0,318x178 0,182,318x178 322,182,318x178
5: 0,0,210x178 214,0,210x178 428,0,210x178 108,182,210x178 322,182,210x178
6: 0,0,210x178 214,0,210x178 428,0,210x178 0,182,210x178 214,182,210x178 428,182,210x178
7: 0,2,210x116 214,2,210x116 428,2,210x116 0,122,210x116 214,122,210x116 428,122,210x116 214,242,210x116
8: 0,2,210x116 214,2,210x116 428,2,210x116 0,122,210x116 214,122,210x116 428,122,210x116 108,242,210x116 322,242,210x116
9: 0,2,210x116 214,2,210x116 428,2,210x116 0,122,210x116 214,122,210x116 428,122,210x116 0,242,210x116 214,242,210x116 428,242,210x116
10: 2,2,156x116 162,2,156x116 322,2,156x116 482,2,156x116 2,122,156x116 162,122,156x116 322,122,156x116 482,122,156x116 162,242,156x116 322,242,156x116
11: 2,2,156x116 162,2,156x116 322,2,156x116 482,2,156x116 2,122,156x116 162,122,156x116 322,122,156x116 482,122,156x116 82,242,156x116 242,242,156x116 402,242,156x116
12: 2,2,156x116 162,2,156x116 322,2,156x116 482,2,156x116 2,122,156x116 162,122,156x116 322,122,156x116 482,122,156x116 2,242,156x116 162,242,156x116 322,242,156x116 482,242,156x116
13: 2,2,156x86 162,2,156x86 322,2,156x86 482,2,156x86 2,92,156x86 162,92,156x86 322,92,156x86 482,92,156x86 2,182,156x86 162,182,156x86 322,182,156x86 482,182,156x86 242,272,156x86
14: 2,2,156x86 162,2,156x86 322,2,156x86 482,2,156x86 2,92,156x86 162,92,156x86 322,92,156x86 482,92,156x86 2,182,156x86 162,182,156x86 322,182,156x86 482,182,156x86 162,272,156x86 322,272,156x86
15: 2,2,156x86 162,2,156x86 322,2,156x86 482,2,156x86 2,92,156x86 162,92,156x86 322,92,156x86 482,92,156x86 2,182,156x86 162,182,156x86 322,182,156x86 482,182,156x86 82,272,156x86 242,272,156x86 402,272,156x86
16: 2,2,156x86 162,2,156x86 322,2,156x86 482,2,156x86 2,92,156x86 162,92,156x86 322,92,156x86 482,92,156x86 2,182,156x86 162,182,156x86 322,182,156x86 482,182,156x86 2,272,156x86 162,272,156x86 322,272,156x86 482,272,156x86
";

    const SPEAKER_640X360: &str = "\
1: 0,0,640x360
2: 0,0,640x266 242,270,156x90
5: 0,0,640x266 2,270,156x90 162,270,156x90 322,270,156x90 482,270,156x90
9: 0,0,640x266 2,270,76x90 82,270,76x90 162,270,76x90 242,270,76x90 322,270,76x90 402,270,76x90 482,270,76x90 562,270,76x90
";

    const ALL: [Layout; 4] = [
        Layout::Grid,
        Layout::Speaker,
        Layout::HStack,
        Layout::VStack,
    ];

    #[test]
    fn stacks() {
        let across = table(Layout::HStack, 640, 360, &[2, 3], None);
        assert_eq!(
            across,
            "2: 0,0,318x360 322,0,318x360\n3: 0,0,210x360 214,0,210x360 428,0,210x360\n"
        );
        let down = table(Layout::VStack, 640, 360, &[2], None);
        assert_eq!(down, "2: 0,0,640x178 0,182,640x178\n");
    }

    #[test]
    fn golden_grid_640x360() {
        let ns: Vec<usize> = (1..=16).collect();
        let actual = table(Layout::Grid, 640, 360, &ns, None);
        assert_eq!(actual, GRID_640X360, "actual:\n{actual}");
    }

    #[test]
    fn golden_speaker_640x360() {
        let actual = table(Layout::Speaker, 640, 360, &[1, 2, 5, 9], None);
        assert_eq!(actual, SPEAKER_640X360, "actual:\n{actual}");
        // Another speaker moves to the big tile; the others keep their order in the strip.
        let moved = tiles(Layout::Speaker, 640, 360, 5, Some(3));
        let default = tiles(Layout::Speaker, 640, 360, 5, None);
        assert_eq!(moved[3], default[0]);
        assert_eq!(&moved[..3], &default[1..4]);
        assert_eq!(moved[4], default[4]);
        // Out of range falls back to the first source.
        assert_eq!(tiles(Layout::Speaker, 640, 360, 5, Some(7)), default);
    }

    #[test]
    fn tiles_are_even_inside_disjoint_and_drawable() {
        let sizes = [
            (320, 180),
            (640, 360),
            (1280, 720),
            (176, 144),
            (1920, 1080),
            (321, 181),
        ];
        for layout in ALL {
            for (w, h) in sizes {
                for n in 1..=16 {
                    for speaker in [None, Some(n - 1)] {
                        let t = tiles(layout, w, h, n, speaker);
                        let ctx = format!("{layout} {w}x{h} n={n} speaker={speaker:?}");
                        assert_eq!(t.len(), n, "{ctx}");
                        for (i, r) in t.iter().enumerate() {
                            assert!(r.width >= 2 && r.height >= 2, "{ctx}: {r:?}");
                            assert!(
                                r.x % 2 == 0
                                    && r.y % 2 == 0
                                    && r.width % 2 == 0
                                    && r.height % 2 == 0,
                                "{ctx}: odd {r:?}"
                            );
                            assert!(r.x + r.width <= w && r.y + r.height <= h, "{ctx}: {r:?}");
                            for other in &t[i + 1..] {
                                assert!(!r.overlaps(other), "{ctx}: {r:?} {other:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn single_source_fills_the_canvas_and_tiny_canvases_do_not_panic() {
        for layout in ALL {
            let full = Rect {
                x: 0,
                y: 0,
                width: 640,
                height: 360,
            };
            assert_eq!(tiles(layout, 640, 360, 1, None), vec![full]);
            assert!(tiles(layout, 640, 360, 0, None).is_empty());
            let tiny = tiles(layout, 2, 2, 9, Some(4));
            assert_eq!(tiny.len(), 9);
            assert!(
                tiny.iter()
                    .all(|r| r.x + r.width <= 2 && r.y + r.height <= 2)
            );
            assert_eq!(tiles(layout, 64, 64, 300, None).len(), 300);
        }
    }

    #[test]
    fn names_round_trip() {
        for layout in ALL {
            assert_eq!(layout.to_string().parse(), Ok(layout));
        }
        assert_eq!(
            "mosaic".parse::<Layout>(),
            Err(UnknownLayout("mosaic".into()))
        );
    }

    #[test]
    fn largest_tile_follows_the_count_and_the_speaker() {
        let height = |layout, n| largest_tile(layout, 1280, 720, n).height;
        assert_eq!(height(Layout::Grid, 0), 720);
        assert_eq!(largest_tile(Layout::Grid, 1280, 720, 1).width, 1280);
        let four = largest_tile(Layout::Grid, 1280, 720, 4);
        assert!((340..=360).contains(&four.height), "{four:?}");
        assert!((600..=640).contains(&four.width), "{four:?}");
        let nine = height(Layout::Grid, 9);
        assert!((220..=240).contains(&nine), "{nine}");
        // The speaker's tile, three quarters of the canvas, whoever it is.
        let speaker = height(Layout::Speaker, 9);
        assert!((520..=540).contains(&speaker), "{speaker}");
    }
}
