//! The MCU's canvas: every participant's latest picture scaled into its tile, composed once per
//! output frame and encoded once for all viewers.

use crate::frame::{FrameError, FramePool, I420, Yuv};
use crate::layout::{Layout, Rect, tiles_into};
use crate::scale::Scaler;

/// Composes pictures into a canvas of a fixed size. It keeps everything a frame needs (the
/// canvas, the scaler's tables, the tile list), so composing allocates nothing once every
/// source size has been seen.
#[derive(Debug)]
pub struct Compositor {
    layout: Layout,
    canvas: I420,
    /// Where an earlier canvas goes when the size changes, and a later one comes from.
    pool: FramePool,
    scaler: Scaler,
    tiles: Vec<Rect>,
    /// The tiles of the last composed frame: while they stay the same, every tile is painted
    /// over whole (picture and bars) and the gaps between them are still black, so the canvas
    /// is only cleared when they change.
    painted: Vec<Rect>,
    /// Whether the canvas holds anything but a black background (a fresh one from the pool).
    stale: bool,
}

impl Compositor {
    pub fn new(width: u32, height: u32, layout: Layout) -> Result<Compositor, FrameError> {
        let mut pool = FramePool::default();
        let canvas = pool.get(width, height)?;
        Ok(Compositor {
            layout,
            canvas,
            pool,
            scaler: Scaler::default(),
            tiles: Vec::new(),
            painted: Vec::new(),
            stale: true,
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Takes effect at the next [`Compositor::compose`].
    pub fn set_layout(&mut self, layout: Layout) {
        self.layout = layout;
    }

    /// Changes the canvas size (the encoder's resolution follows the viewers' bandwidth); the
    /// old canvas is kept for when the size comes back.
    pub fn set_size(&mut self, width: u32, height: u32) -> Result<(), FrameError> {
        if (width, height) == (self.canvas.width(), self.canvas.height()) {
            return Ok(());
        }
        let canvas = self.pool.get(width, height)?;
        self.pool.put(std::mem::replace(&mut self.canvas, canvas));
        self.stale = true;
        Ok(())
    }

    /// The last composed canvas.
    pub fn canvas(&self) -> &I420 {
        &self.canvas
    }

    /// Composes the canvas from the latest picture of each source, in order: `None` is a source
    /// without a picture yet, whose tile is black. `speaker` is the index of the active speaker,
    /// who gets the big tile in [`Layout::Speaker`]. Every tile is redrawn on every call.
    pub fn compose(&mut self, sources: &[Option<&I420>], speaker: Option<usize>) -> &I420 {
        let (width, height) = (self.canvas.width(), self.canvas.height());
        tiles_into(
            self.layout,
            width,
            height,
            sources.len(),
            speaker,
            &mut self.tiles,
        );
        if self.stale || self.tiles != self.painted {
            self.canvas.fill(Yuv::BLACK);
            self.painted.clone_from(&self.tiles);
            self.stale = false;
        }
        for (source, rect) in sources.iter().zip(&self.tiles) {
            match source {
                Some(picture) => self.scaler.scale_into(picture, &mut self.canvas, *rect),
                None => {
                    let Rect {
                        x,
                        y,
                        width,
                        height,
                    } = *rect;
                    self.canvas.fill_rect(x, y, width, height, Yuv::BLACK);
                }
            }
        }
        &self.canvas
    }
}

// ok: test code
#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::tiles;
    use crate::scale::letterbox;

    fn colours() -> [Yuv; 4] {
        [
            Yuv::from_rgb(255, 0, 0),
            Yuv::from_rgb(0, 200, 0),
            Yuv::from_rgb(0, 0, 255),
            Yuv::from_rgb(255, 255, 0),
        ]
    }

    /// Sources of different sizes (none a multiple of the row alignment) and aspect ratios.
    fn sources() -> Vec<I420> {
        let sizes = [(64, 36), (100, 60), (48, 48), (90, 50)];
        sizes
            .into_iter()
            .zip(colours())
            .map(|((w, h), c)| {
                let mut p = I420::new(w, h).unwrap();
                p.fill(c);
                p
            })
            .collect()
    }

    /// Checks that each source's colour fills the middle of its picture's place in its tile
    /// (and a missing source's tile is black).
    fn assert_tiles(
        canvas: &I420,
        layout: Layout,
        sources: &[Option<&I420>],
        speaker: Option<usize>,
    ) {
        let t = tiles(
            layout,
            canvas.width(),
            canvas.height(),
            sources.len(),
            speaker,
        );
        for (i, (&tile, source)) in t.iter().zip(sources).enumerate() {
            let (place, colour) = match source {
                Some(p) => (
                    letterbox(p.width(), p.height(), tile),
                    p.mean(0, 0, p.width(), p.height()),
                ),
                None => (tile, Yuv::BLACK),
            };
            let got = canvas.mean(
                place.x + place.width / 4,
                place.y + place.height / 4,
                place.width / 2,
                place.height / 2,
            );
            assert!(
                got.distance(colour) <= 2,
                "tile {i} {tile:?}: {got:?} != {colour:?}"
            );
        }
    }

    #[test]
    fn grid_puts_each_source_in_its_tile() {
        let pictures = sources();
        let all: Vec<Option<&I420>> = pictures.iter().map(Some).collect();
        let mut c = Compositor::new(320, 180, Layout::Grid).unwrap();
        let canvas = c.compose(&all, None);
        assert_tiles(canvas, Layout::Grid, &all, None);
        // A source without a picture yet: a black tile.
        let mut some = all.clone();
        some[1] = None;
        let canvas = c.compose(&some, None);
        assert_tiles(canvas, Layout::Grid, &some, None);
    }

    #[test]
    fn a_padded_canvas_keeps_tiles_apart() {
        // 330 wide: rows of 352 bytes, chroma rows of 192.
        let pictures = sources();
        let all: Vec<Option<&I420>> = pictures.iter().map(Some).collect();
        let mut c = Compositor::new(330, 190, Layout::Grid).unwrap();
        let canvas = c.compose(&all, None);
        assert_tiles(canvas, Layout::Grid, &all, None);
        // Right next to each tile, only black: nothing spilled over.
        for r in tiles(Layout::Grid, 330, 190, 4, None) {
            if r.x + r.width + 2 <= 330 {
                assert_eq!(canvas.mean(r.x + r.width, r.y, 2, r.height), Yuv::BLACK);
            }
        }
    }

    #[test]
    fn speaker_gets_the_big_tile() {
        let pictures = sources();
        let all: Vec<Option<&I420>> = pictures.iter().map(Some).collect();
        let mut c = Compositor::new(320, 180, Layout::Speaker).unwrap();
        let canvas = c.compose(&all, Some(2));
        assert_tiles(canvas, Layout::Speaker, &all, Some(2));
        // The big tile covers the middle of the top.
        assert!(canvas.mean(140, 50, 40, 30).distance(colours()[2]) <= 2);
        let canvas = c.compose(&all, Some(3)).clone();
        assert!(canvas.mean(140, 50, 40, 30).distance(colours()[3]) <= 2);
    }

    #[test]
    fn layout_changes_and_removed_sources_retile() {
        let pictures = sources();
        let all: Vec<Option<&I420>> = pictures.iter().map(Some).collect();
        let mut c = Compositor::new(320, 180, Layout::Grid).unwrap();
        let grid = c.compose(&all, None).clone();
        c.set_layout(Layout::Speaker);
        assert_eq!(c.layout(), Layout::Speaker);
        let speaker = c.compose(&all, None).clone();
        assert_ne!(grid, speaker);
        assert_tiles(&speaker, Layout::Speaker, &all, None);

        // Back to the grid with one source gone: the last row's one tile is centred and where
        // the fourth tile was, right of it, is black again.
        c.set_layout(Layout::Grid);
        let canvas = c.compose(&all[..3], None);
        assert_tiles(canvas, Layout::Grid, &all[..3], None);
        let last = tiles(Layout::Grid, 320, 180, 3, None)[2];
        assert!(last.x > 0 && last.x + last.width < 320);
        let right = last.x + last.width;
        assert_eq!(
            canvas.mean(right, last.y, 320 - right, last.height),
            Yuv::BLACK
        );
    }

    #[test]
    fn canvas_size_changes() {
        let pictures = sources();
        let all: Vec<Option<&I420>> = pictures.iter().map(Some).collect();
        let mut c = Compositor::new(320, 180, Layout::Grid).unwrap();
        c.compose(&all, None);
        c.set_size(160, 90).unwrap();
        assert_eq!((c.canvas().width(), c.canvas().height()), (160, 90));
        assert_tiles(c.compose(&all, None), Layout::Grid, &all, None);
        c.set_size(320, 180).unwrap();
        assert_tiles(c.compose(&all, None), Layout::Grid, &all, None);
        assert!(c.set_size(0, 90).is_err());
        assert!(Compositor::new(5000, 90, Layout::Grid).is_err());
    }
}
