//! Big-endian (network order) integer readers for the packet parsers.
//!
//! STUN, RTP, RTCP and SRTP all read 16-, 32- and 64-bit fields at offsets that come from the
//! packet itself, so every read is bounds-checked: `None` when the field runs past the end of
//! the buffer (or the offset overflows), never a panic.

/// The `N` bytes at `at`, if they are all inside `b`.
fn bytes<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The big-endian `u16` at byte offset `at`.
pub fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    bytes(b, at).map(u16::from_be_bytes)
}

/// The big-endian `u32` at byte offset `at`.
pub fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    bytes(b, at).map(u32::from_be_bytes)
}

/// The big-endian `u64` at byte offset `at`.
pub fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    bytes(b, at).map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_network_order() {
        let b = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09];
        assert_eq!(be_u16(&b, 0), Some(0x0102));
        assert_eq!(be_u16(&b, 7), Some(0x0809));
        assert_eq!(be_u32(&b, 1), Some(0x0203_0405));
        assert_eq!(be_u64(&b, 0), Some(0x0102_0304_0506_0708));
        assert_eq!(be_u64(&b, 1), Some(0x0203_0405_0607_0809));
    }

    #[test]
    fn out_of_range_is_none() {
        let b = [0u8; 8];
        assert_eq!(be_u16(&b, 7), None);
        assert_eq!(be_u32(&b, 5), None);
        assert_eq!(be_u64(&b, 1), None);
        assert_eq!(be_u16(&[], 0), None);
        // Offsets near the top of the address space must not overflow into a panic.
        assert_eq!(be_u16(&b, usize::MAX), None);
        assert_eq!(be_u32(&b, usize::MAX - 2), None);
        assert_eq!(be_u64(&b, usize::MAX - 7), None);
    }

    proptest! {
        #[test]
        fn agrees_with_from_be_bytes(data in proptest::collection::vec(any::<u8>(), 0..24), at in 0usize..32) {
            let want16 = data.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]));
            let want32 = data.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
            let want64 = data
                .get(at..at + 8)
                .map(|s| u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]));
            prop_assert_eq!(be_u16(&data, at), want16);
            prop_assert_eq!(be_u32(&data, at), want32);
            prop_assert_eq!(be_u64(&data, at), want64);
        }
    }
}
