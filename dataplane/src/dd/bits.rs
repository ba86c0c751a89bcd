//! Bit-level reading and writing for the dependency descriptor (AV1 RTP specification A.8.2):
//! `f(n)`, unsigned n-bit numbers read from high to low order, and `ns(n)`, the non-symmetric
//! encoding of a value in `0..n` that spends one bit less on the lower part of the range.

use super::Error;

/// Reads bits from a byte slice, most significant bit first. Running past the end is
/// [`Error::Truncated`], never a panic.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    /// Bits consumed so far.
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, at: 0 }
    }

    /// `f(n)`, for `n` up to 32.
    pub fn f(&mut self, n: u32) -> Result<u32, Error> {
        debug_assert!(n <= 32);
        let mut x: u64 = 0;
        for _ in 0..n {
            let byte = self.data.get(self.at / 8).ok_or(Error::Truncated)?;
            let bit = (byte >> (7 - self.at % 8)) & 1;
            x = (x << 1) | u64::from(bit);
            self.at += 1;
        }
        // n <= 32, so x fits.
        Ok(x as u32)
    }

    pub fn flag(&mut self) -> Result<bool, Error> {
        Ok(self.f(1)? == 1)
    }

    /// `f(n)` for a field of at most 8 bits.
    pub fn u8(&mut self, n: u32) -> Result<u8, Error> {
        debug_assert!(n <= 8);
        Ok(self.f(n)? as u8)
    }

    /// `ns(n)`: a value in `0..n` (A.8.2). `n` is at least 1; `ns(1)` reads nothing.
    pub fn ns(&mut self, n: u32) -> Result<u32, Error> {
        let w = bit_width(n);
        let m = ns_m(n, w);
        let v = self.f(w.saturating_sub(1))?;
        if v < m {
            return Ok(v);
        }
        let extra = self.f(1)?;
        Ok((v << 1) - m + extra)
    }
}

/// The number of bits needed to write `n` (the `w` of `ns(n)`): 0 for 0.
fn bit_width(n: u32) -> u32 {
    32 - n.leading_zeros()
}

/// `m` of `ns(n)`: how many values take one bit less. `n <= 2^w`, so this cannot underflow;
/// computed in 64 bits so that `w = 32` cannot overflow the shift.
fn ns_m(n: u32, w: u32) -> u32 {
    ((1u64 << w) - u64::from(n)) as u32
}

/// Writes bits into a byte slice, most significant bit first, clearing each byte as it first
/// touches it (so a dirty buffer is fine and the padding of the last byte is zero).
pub(super) struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Writer<'a> {
        Writer { buf, at: 0 }
    }

    /// `f(n)`: the low `n` bits of `v`, for `n` up to 32.
    pub fn f(&mut self, n: u32, v: u32) -> Result<(), Error> {
        debug_assert!(n <= 32);
        for i in (0..n).rev() {
            let byte = self.buf.get_mut(self.at / 8).ok_or(Error::BufferTooSmall)?;
            let shift = 7 - self.at % 8;
            if shift == 7 {
                *byte = 0;
            }
            *byte |= (((v >> i) & 1) as u8) << shift;
            self.at += 1;
        }
        Ok(())
    }

    pub fn flag(&mut self, v: bool) -> Result<(), Error> {
        self.f(1, u32::from(v))
    }

    /// `write_ns(n, v)` (A.8.2), for `v < n`.
    pub fn ns(&mut self, n: u32, v: u32) -> Result<(), Error> {
        if v >= n {
            return Err(Error::Invalid);
        }
        let w = bit_width(n);
        let m = ns_m(n, w);
        if v < m {
            self.f(w.saturating_sub(1), v)
        } else {
            self.f(w, v + m)
        }
    }

    /// The number of whole bytes written, the last one zero-padded.
    pub fn finish(self) -> usize {
        self.at.div_ceil(8)
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_matches_the_specification_table_for_five() {
        // A.8.2: for n = 5 the encodings are 00, 01, 10, 110, 111.
        let want = ["00", "01", "10", "110", "111"];
        for (v, code) in want.iter().enumerate() {
            let mut buf = [0xffu8; 1];
            let mut w = Writer::new(&mut buf);
            w.ns(5, v as u32).unwrap();
            assert_eq!(w.at, code.len());
            let got = format!("{:08b}", buf[0]);
            assert_eq!(&got[..code.len()], *code, "value {v}");
            assert_eq!(Reader::new(&buf).ns(5).unwrap(), v as u32);
        }
    }

    #[test]
    fn ns_round_trips_every_small_range() {
        for n in 1..=33u32 {
            for v in 0..n {
                let mut buf = [0u8; 2];
                let mut w = Writer::new(&mut buf);
                w.ns(n, v).unwrap();
                let bits = w.at;
                let mut r = Reader::new(&buf);
                assert_eq!(r.ns(n).unwrap(), v, "ns({n}) of {v}");
                assert_eq!(r.at, bits);
            }
        }
        // ns(1) takes no bits at all.
        let mut buf = [0u8; 1];
        let mut w = Writer::new(&mut buf);
        w.ns(1, 0).unwrap();
        assert_eq!(w.at, 0);
    }

    #[test]
    fn reading_past_the_end_is_an_error() {
        let mut r = Reader::new(&[0xab]);
        assert_eq!(r.f(4).unwrap(), 0xa);
        assert_eq!(r.f(4).unwrap(), 0xb);
        assert_eq!(r.f(1), Err(Error::Truncated));
        let mut buf = [0u8; 1];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.f(9, 0), Err(Error::BufferTooSmall));
        assert_eq!(w.ns(3, 3), Err(Error::Invalid));
    }

    #[test]
    fn writes_high_bits_first_over_a_dirty_buffer() {
        let mut buf = [0xffu8; 3];
        let mut w = Writer::new(&mut buf);
        w.f(3, 0b101).unwrap();
        w.f(16, 0xbeef).unwrap();
        assert_eq!(w.finish(), 3);
        let mut r = Reader::new(&buf);
        assert_eq!(r.f(3).unwrap(), 0b101);
        assert_eq!(r.f(16).unwrap(), 0xbeef);
        // Padding is zero.
        assert_eq!(r.f(5).unwrap(), 0);
        assert_eq!(r.f(32), Err(Error::Truncated));
    }
}
