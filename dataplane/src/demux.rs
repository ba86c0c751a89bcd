//! Classifies a datagram arriving on a media port (RFC 7983, RFC 5761).

/// What a datagram on the media port carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    /// Anything else (ZRTP, TURN channel data, garbage): dropped and counted.
    Unknown,
}

/// Classifies by the first byte (RFC 7983 §7) and, for RTP/RTCP, by the payload-type byte
/// (RFC 5761 §4: 192..=223 is RTCP). Never panics; empty input is `Unknown`.
pub fn classify(datagram: &[u8]) -> PacketKind {
    match *datagram {
        [0..=3, ..] if datagram.len() >= 20 => PacketKind::Stun,
        [20..=63, ..] => PacketKind::Dtls,
        [128..=191, 192..=223, ..] if datagram.len() >= 8 => PacketKind::Rtcp,
        [128..=191, ..] if datagram.len() >= 12 => PacketKind::Rtp,
        _ => PacketKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(first: u8, second: u8, len: usize) -> PacketKind {
        let mut v = vec![0u8; len];
        v[0] = first;
        if len > 1 {
            v[1] = second;
        }
        classify(&v)
    }

    #[test]
    fn ranges() {
        assert_eq!(classify(&[]), PacketKind::Unknown);
        assert_eq!(kind(0, 1, 20), PacketKind::Stun);
        assert_eq!(kind(3, 1, 20), PacketKind::Stun);
        assert_eq!(kind(0, 1, 19), PacketKind::Unknown);
        assert_eq!(kind(4, 0, 40), PacketKind::Unknown);
        assert_eq!(kind(16, 0, 40), PacketKind::Unknown);
        assert_eq!(kind(19, 0, 40), PacketKind::Unknown);
        assert_eq!(kind(20, 0, 40), PacketKind::Dtls);
        assert_eq!(kind(63, 0, 40), PacketKind::Dtls);
        assert_eq!(kind(64, 0, 40), PacketKind::Unknown);
        assert_eq!(kind(79, 0, 40), PacketKind::Unknown);
        assert_eq!(kind(127, 0, 40), PacketKind::Unknown);
        assert_eq!(kind(128, 96, 12), PacketKind::Rtp);
        assert_eq!(kind(128, 96, 11), PacketKind::Unknown);
        assert_eq!(kind(191, 0x80 | 96, 40), PacketKind::Rtp);
        assert_eq!(kind(0x80, 191, 40), PacketKind::Rtp);
        assert_eq!(kind(0x80, 192, 8), PacketKind::Rtcp);
        assert_eq!(kind(0x81, 200, 8), PacketKind::Rtcp);
        assert_eq!(kind(0x81, 223, 8), PacketKind::Rtcp);
        assert_eq!(kind(0x81, 224, 40), PacketKind::Rtp);
        assert_eq!(kind(0x80, 200, 7), PacketKind::Unknown);
        assert_eq!(kind(192, 200, 40), PacketKind::Unknown);
    }
}
