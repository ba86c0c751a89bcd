//! RTP payload for redundant audio data (RED, RFC 2198), as browsers send Opus with it: a
//! payload is a list of block headers, then the blocks, the primary (newest) one last.
//!
//! A block header (§3) is 4 bytes, `F=1 | block PT (7) | timestamp offset (14) | length (10)`,
//! except the last one, the primary's, which is 1 byte: `F=0 | block PT`. The primary's length
//! is what remains of the payload.
//!
//! The router passes RED through to subscribers that negotiated it (their payload type numbers
//! for the inner blocks may differ, so `set_block_types` renumbers them in place) and gives the
//! others the primary block alone, a plain Opus payload. Both read only from the payload and
//! fail (`None`) on a malformed one, which the caller drops.

/// The primary block of a RED payload: its payload type and the offset of its data.
pub fn primary(payload: &[u8]) -> Option<(u8, usize)> {
    let mut at = 0usize;
    let mut data = 0usize;
    loop {
        let first = *payload.get(at)?;
        if first & 0x80 == 0 {
            let offset = at.checked_add(1)?.checked_add(data)?;
            return (offset <= payload.len()).then_some((first & 0x7F, offset));
        }
        let len = u16::from_be_bytes([*payload.get(at + 2)?, *payload.get(at + 3)?]) & 0x03FF;
        data = data.checked_add(usize::from(len))?;
        at = at.checked_add(4)?;
    }
}

/// Renumbers every block whose payload type is `from` to `to`, in place. `None` (the payload
/// possibly part rewritten, to be dropped) when the headers run past the payload.
pub fn set_block_types(payload: &mut [u8], from: u8, to: u8) -> Option<()> {
    let mut at = 0usize;
    loop {
        let byte = payload.get_mut(at)?;
        let more = *byte & 0x80 != 0;
        if *byte & 0x7F == from {
            *byte = (*byte & 0x80) | (to & 0x7F);
        }
        if !more {
            return Some(());
        }
        at = at.checked_add(4)?;
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    /// Two redundant blocks (PT 111, 3 and 2 bytes) and a primary one (PT 111, 4 bytes).
    fn payload() -> Vec<u8> {
        let mut p = vec![
            0x80 | 111,
            0x03,
            0xC0, // timestamp offset 240, then the length's top bits: 0
            3,
            0x80 | 111,
            0x01,
            0xE0,
            2,
            111,
        ];
        p.extend_from_slice(b"aaa");
        p.extend_from_slice(b"bb");
        p.extend_from_slice(b"prim");
        p
    }

    #[test]
    fn primary_is_the_last_block() {
        let p = payload();
        let (pt, at) = primary(&p).unwrap();
        assert_eq!((pt, &p[at..]), (111, &b"prim"[..]));
        // Only a primary header: the data follows it.
        assert_eq!(primary(&[111, 1, 2]), Some((111, 1)));
        // Truncated headers or blocks longer than the payload.
        assert_eq!(primary(&[0x80 | 111, 0, 0]), None);
        assert_eq!(primary(&[0x80 | 111, 0, 0, 9, 111, 1]), None);
        assert_eq!(primary(&[]), None);
    }

    #[test]
    fn block_types_are_renumbered_in_place() {
        let mut p = payload();
        set_block_types(&mut p, 111, 109).unwrap();
        assert_eq!(p[0], 0x80 | 109);
        assert_eq!(p[4], 0x80 | 109);
        assert_eq!(p[8], 109);
        assert_eq!(primary(&p).unwrap().0, 109);
        assert_eq!(&p[9..], b"aaabbprim");
        assert_eq!(set_block_types(&mut [0x80 | 111, 0], 111, 109), None);
    }
}
