//! Classifies a datagram arriving on a media port (RFC 7983, RFC 5761).
//!
//! CONTRACT (skeleton): implement `classify`.

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
    let _ = datagram;
    todo!()
}
