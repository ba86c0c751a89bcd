//! Pictures in I420, the one layout every decoder here produces, the compositor works in and
//! every encoder takes: a full-resolution Y plane, then U and V at half width and height.
//!
//! Rows are padded to a multiple of [`ALIGN`] bytes so the codecs' SIMD code reads whole
//! vectors, and frames are recycled through a [`FramePool`] because a mixer decodes and
//! composes tens of pictures a second per channel: after the first few, none is allocated.

/// Row alignment of every plane, in bytes.
pub const ALIGN: usize = 32;

/// The largest width or height accepted (a bad stream header must not make a mixer allocate
/// gigabytes).
pub const MAX_DIMENSION: u32 = 4096;

/// A colour in limited-range BT.601 YCbCr, what WebRTC's codecs carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Yuv {
    pub y: u8,
    pub u: u8,
    pub v: u8,
}

impl Yuv {
    /// Black as the codecs see it (Y 16, no chroma).
    pub const BLACK: Yuv = Yuv { y: 16, u: 128, v: 128 };

    /// Converts full-range sRGB (what a canvas paints) to limited-range BT.601.
    pub fn from_rgb(r: u8, g: u8, b: u8) -> Yuv {
        let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
        let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
        let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
        let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
        let clamp = |x: f32| x.round().clamp(0.0, 255.0) as u8;
        Yuv {
            y: clamp(y),
            u: clamp(u),
            v: clamp(v),
        }
    }

    /// The largest difference of the three components, for tolerance checks.
    pub fn distance(self, other: Yuv) -> u8 {
        let d = |a: u8, b: u8| a.abs_diff(b);
        d(self.y, other.y).max(d(self.u, other.u)).max(d(self.v, other.v))
    }
}

/// One of the three planes of an [`I420`] picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Y,
    U,
    V,
}

/// A picture in I420. Width and height are at least 2 and at most [`MAX_DIMENSION`]; odd
/// sizes round the chroma planes up.
#[derive(Clone, PartialEq, Eq)]
pub struct I420 {
    width: u32,
    height: u32,
    /// The three planes back to back: Y, then U, then V.
    data: Vec<u8>,
    stride_y: usize,
    stride_uv: usize,
}

impl std::fmt::Debug for I420 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420 {}x{}", self.width, self.height)
    }
}

/// Why a picture could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("picture size {0}x{1} outside 2x2..={MAX_DIMENSION}x{MAX_DIMENSION}")]
    BadSize(u32, u32),
}

fn aligned(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

impl I420 {
    /// A black picture.
    pub fn new(width: u32, height: u32) -> Result<I420, FrameError> {
        if !(2..=MAX_DIMENSION).contains(&width) || !(2..=MAX_DIMENSION).contains(&height) {
            return Err(FrameError::BadSize(width, height));
        }
        let stride_y = aligned(width as usize);
        let stride_uv = aligned(width.div_ceil(2) as usize);
        let rows_uv = height.div_ceil(2) as usize;
        let len = stride_y * height as usize + 2 * stride_uv * rows_uv;
        let mut frame = I420 {
            width,
            height,
            data: vec![0; len],
            stride_y,
            stride_uv,
        };
        frame.fill(Yuv::BLACK);
        Ok(frame)
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes from one row of `plane` to the next.
    pub fn stride(&self, plane: Plane) -> usize {
        match plane {
            Plane::Y => self.stride_y,
            Plane::U | Plane::V => self.stride_uv,
        }
    }

    /// Width and height of `plane` in samples.
    pub fn plane_size(&self, plane: Plane) -> (usize, usize) {
        match plane {
            Plane::Y => (self.width as usize, self.height as usize),
            Plane::U | Plane::V => (
                self.width.div_ceil(2) as usize,
                self.height.div_ceil(2) as usize,
            ),
        }
    }

    fn range(&self, plane: Plane) -> std::ops::Range<usize> {
        let y_len = self.stride_y * self.height as usize;
        let uv_len = self.stride_uv * self.height.div_ceil(2) as usize;
        match plane {
            Plane::Y => 0..y_len,
            Plane::U => y_len..y_len + uv_len,
            Plane::V => y_len + uv_len..y_len + 2 * uv_len,
        }
    }

    /// A plane's samples, rows [`I420::stride`] apart.
    pub fn plane(&self, plane: Plane) -> &[u8] {
        &self.data[self.range(plane)]
    }

    pub fn plane_mut(&mut self, plane: Plane) -> &mut [u8] {
        let range = self.range(plane);
        &mut self.data[range]
    }

    /// All three planes at once, for writers that fill them together (decoders, scalers).
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let y_len = self.range(Plane::Y).end;
        let (y, uv) = self.data.split_at_mut(y_len);
        let (u, v) = uv.split_at_mut(uv.len() / 2);
        (y, u, v)
    }

    /// Paints the whole picture one colour.
    pub fn fill(&mut self, colour: Yuv) {
        self.fill_rect(0, 0, self.width, self.height, colour);
    }

    /// Paints a rectangle (clipped to the picture). Chroma covers the rectangle's 2x2 blocks,
    /// so rectangles meant to stay apart should start on even coordinates.
    pub fn fill_rect(&mut self, x: u32, y: u32, width: u32, height: u32, colour: Yuv) {
        let x1 = x.saturating_add(width).min(self.width) as usize;
        let y1 = y.saturating_add(height).min(self.height) as usize;
        let (x0, y0) = (x as usize, y as usize);
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let (stride_y, stride_uv) = (self.stride_y, self.stride_uv);
        let (py, pu, pv) = self.planes_mut();
        for row in py.chunks_exact_mut(stride_y).skip(y0).take(y1 - y0) {
            row[x0..x1].fill(colour.y);
        }
        let (cx0, cx1, cy0, cy1) = (x0 / 2, x1.div_ceil(2), y0 / 2, y1.div_ceil(2));
        for (plane, value) in [(pu, colour.u), (pv, colour.v)] {
            for row in plane.chunks_exact_mut(stride_uv).skip(cy0).take(cy1 - cy0) {
                row[cx0..cx1].fill(value);
            }
        }
    }

    /// The mean colour of a rectangle (clipped; black when empty): how tests read a tile.
    pub fn mean(&self, x: u32, y: u32, width: u32, height: u32) -> Yuv {
        let x1 = x.saturating_add(width).min(self.width) as usize;
        let y1 = y.saturating_add(height).min(self.height) as usize;
        let (x0, y0) = (x as usize, y as usize);
        if x0 >= x1 || y0 >= y1 {
            return Yuv::BLACK;
        }
        let mean = |plane: Plane, x0: usize, x1: usize, y0: usize, y1: usize| {
            let stride = self.stride(plane);
            let data = self.plane(plane);
            let mut sum = 0u64;
            for row in data.chunks_exact(stride).skip(y0).take(y1 - y0) {
                sum += row[x0..x1].iter().map(|&s| u64::from(s)).sum::<u64>();
            }
            let n = ((x1 - x0) * (y1 - y0)) as u64;
            (sum / n.max(1)) as u8
        };
        Yuv {
            y: mean(Plane::Y, x0, x1, y0, y1),
            u: mean(Plane::U, x0 / 2, x1.div_ceil(2), y0 / 2, y1.div_ceil(2)),
            v: mean(Plane::V, x0 / 2, x1.div_ceil(2), y0 / 2, y1.div_ceil(2)),
        }
    }
}

/// Recycles pictures of any size: [`FramePool::get`] hands out a kept one of the asked size
/// when there is one. Contents are not cleared; whoever takes a frame writes all of it.
#[derive(Debug, Default)]
pub struct FramePool {
    free: Vec<I420>,
}

/// Pictures a pool keeps at most; more returned are freed.
const POOL_LIMIT: usize = 32;

impl FramePool {
    pub fn get(&mut self, width: u32, height: u32) -> Result<I420, FrameError> {
        match self
            .free
            .iter()
            .position(|f| f.width == width && f.height == height)
        {
            Some(i) => Ok(self.free.swap_remove(i)),
            None => I420::new(width, height),
        }
    }

    pub fn put(&mut self, frame: I420) {
        if self.free.len() < POOL_LIMIT {
            self.free.push(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_and_rows_aligned() {
        assert_eq!(I420::new(0, 10), Err(FrameError::BadSize(0, 10)));
        assert_eq!(I420::new(5000, 10), Err(FrameError::BadSize(5000, 10)));
        let Ok(f) = I420::new(321, 181) else {
            panic!("a valid size")
        };
        assert_eq!(f.stride(Plane::Y) % ALIGN, 0);
        assert_eq!(f.plane_size(Plane::U), (161, 91));
        assert_eq!(f.plane(Plane::V).len(), f.stride(Plane::V) * 91);
    }

    #[test]
    fn rectangles_fill_and_average() {
        let Ok(mut f) = I420::new(64, 32) else {
            panic!("a valid size")
        };
        let red = Yuv::from_rgb(255, 0, 0);
        f.fill_rect(32, 0, 32, 32, red);
        assert_eq!(f.mean(32, 0, 32, 32), red);
        assert_eq!(f.mean(0, 0, 32, 32), Yuv::BLACK);
        assert!(f.mean(0, 0, 64, 32).distance(red) > 10);
        // Clipped, never out of bounds.
        f.fill_rect(60, 30, 100, 100, Yuv::BLACK);
        assert_eq!(f.mean(100, 100, 5, 5), Yuv::BLACK);
    }

    #[test]
    fn pool_recycles_by_size() {
        let mut pool = FramePool::default();
        let Ok(f) = pool.get(32, 16) else {
            panic!("a valid size")
        };
        let ptr = f.plane(Plane::Y).as_ptr();
        pool.put(f);
        let Ok(again) = pool.get(32, 16) else {
            panic!("a valid size")
        };
        assert_eq!(again.plane(Plane::Y).as_ptr(), ptr);
        assert!(pool.get(16, 16).is_ok_and(|f| f.width() == 16));
    }
}
