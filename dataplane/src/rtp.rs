//! RTP packets (RFC 3550) with header extensions (RFC 8285), read and rewritten in place.
//!
//! Hand-written because it is on the per-packet path: parsing returns offsets into the datagram
//! and never allocates.
//!
//! CONTRACT (skeleton): signatures used by the router; implement the bodies.

use crate::media::Codec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("packet too short for its RTP header")]
    TooShort,
    #[error("RTP version is not 2")]
    BadVersion,
    #[error("bad RTP padding")]
    BadPadding,
    #[error("bad RTP header extension")]
    BadExtension,
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// The fixed header fields and where the parts of the packet lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Offset of the payload (after CSRCs and the extension block).
    pub payload_offset: usize,
    /// End of the payload (before padding).
    pub payload_end: usize,
    /// The extension block's profile and the byte range of its data, if present.
    pub extension: Option<(u16, usize, usize)>,
}

impl Header {
    pub fn parse(packet: &[u8]) -> Result<Header, Error> {
        let _ = packet;
        todo!()
    }

    /// The value of the one-byte (0xBEDE) or two-byte (0x100x) extension element `id`.
    pub fn extension_value<'a>(&self, packet: &'a [u8], id: u8) -> Option<&'a [u8]> {
        let _ = (packet, id);
        todo!()
    }
}

/// Fields for a header we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFields {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Writes a header with one-byte-form extensions `(id, value)` (omitted when empty) into `out`;
/// returns its length.
pub fn write_header(
    out: &mut [u8],
    fields: &HeaderFields,
    extensions: &[(u8, &[u8])],
) -> Result<usize, Error> {
    let _ = (out, fields, extensions);
    todo!()
}

/// Whether this payload starts a keyframe (VP8, VP9, H264, AV1; always false for audio).
pub fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    let _ = (codec, payload);
    todo!()
}

/// Extends 16-bit sequence numbers to 64 bits across wraps (RFC 3550 A.1).
#[derive(Debug, Clone, Default)]
pub struct SeqExtender {
    highest: Option<u64>,
}

impl SeqExtender {
    /// The extended sequence number of `seq`, judged against the highest seen so far.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let _ = (seq, self.highest);
        todo!()
    }
}
