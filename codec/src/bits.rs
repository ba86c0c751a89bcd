//! A most-significant-bit-first reader over bytes, for the VP9 and AV1 headers the
//! depacketizers and the recorder read (no emulation prevention, unlike H264's). Reading past
//! the end gives `None`, never a panic: the headers come from the network.

#[derive(Debug, Clone)]
pub(crate) struct Bits<'a> {
    data: &'a [u8],
    /// The next bit's position from the start.
    at: usize,
}

impl<'a> Bits<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    pub(crate) fn flag(&mut self) -> Option<bool> {
        let byte = self.data.get(self.at / 8)?;
        let bit = byte >> (7 - self.at % 8) & 1;
        self.at += 1;
        Some(bit == 1)
    }

    /// `n` bits (at most 32) as an unsigned number.
    pub(crate) fn bits(&mut self, n: u32) -> Option<u32> {
        debug_assert!(n <= 32);
        let mut v: u64 = 0;
        for _ in 0..n {
            v = v << 1 | u64::from(self.flag()?);
        }
        u32::try_from(v).ok()
    }

    /// AV1's `uvlc()`: leading zeros, then that many bits; `None` past 32 zeros.
    pub(crate) fn uvlc(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros >= 32 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }
}

/// Reads an unsigned LEB128 number (AV1's `leb128()`: at most 8 bytes, up to 2^32 - 1) from
/// the start of `data`; returns it and its length in bytes.
pub(crate) fn leb128(data: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in data.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let value = u32::try_from(value).ok()?;
            return Some((usize::try_from(value).ok()?, i + 1));
        }
    }
    None
}

/// Appends `value` as LEB128 in the fewest bytes.
pub(crate) fn write_leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

// ok: every unwrap() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_read_msb_first_and_stop_at_the_end() {
        let mut b = Bits::new(&[0b1010_0000, 0xFF]);
        assert_eq!(b.flag(), Some(true));
        assert_eq!(b.bits(3), Some(0b010));
        assert_eq!(b.bits(8), Some(0x0F));
        assert_eq!(b.bits(5), None);
        // uvlc: 0 0 1 then 2 bits 11 = 3 + 3 = 6.
        assert_eq!(Bits::new(&[0b0011_1000]).uvlc(), Some(6));
        assert_eq!(Bits::new(&[0; 5]).uvlc(), None);
    }

    #[test]
    fn leb128_round_trips_and_refuses_overlong() {
        for v in [0usize, 1, 127, 128, 300, 1 << 20, u32::MAX as usize] {
            let mut out = Vec::new();
            write_leb128(&mut out, v);
            assert_eq!(leb128(&out), Some((v, out.len())));
        }
        assert_eq!(leb128(&[0x80]), None);
        assert_eq!(leb128(&[0xFF; 9]), None);
        assert_eq!(
            leb128(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            None,
            "over 2^32 - 1"
        );
    }
}
