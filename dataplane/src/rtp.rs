//! RTP packets (RFC 3550) with header extensions (RFC 8285), read and written in place.
//!
//! Hand-written because it is on the per-packet path: parsing returns offsets into the datagram
//! and never allocates.

use crate::media::Codec;
use crate::wire::{be_u16, be_u32};
use switchyard_codec::sps;

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
        let first = *packet.first().ok_or(Error::TooShort)?;
        if first >> 6 != 2 {
            return Err(Error::BadVersion);
        }
        let second = *packet.get(1).ok_or(Error::TooShort)?;
        let sequence = be_u16(packet, 2).ok_or(Error::TooShort)?;
        let timestamp = be_u32(packet, 4).ok_or(Error::TooShort)?;
        let ssrc = be_u32(packet, 8).ok_or(Error::TooShort)?;
        let mut offset = 12 + 4 * usize::from(first & 0x0F);
        if packet.len() < offset {
            return Err(Error::TooShort);
        }
        let mut extension = None;
        if first & 0x10 != 0 {
            let profile = be_u16(packet, offset).ok_or(Error::BadExtension)?;
            let words = usize::from(be_u16(packet, offset + 2).ok_or(Error::BadExtension)?);
            let start = offset + 4;
            let end = start + 4 * words;
            if end > packet.len() {
                return Err(Error::BadExtension);
            }
            extension = Some((profile, start, end));
            offset = end;
        }
        let mut payload_end = packet.len();
        if first & 0x20 != 0 {
            let pad = usize::from(*packet.last().ok_or(Error::BadPadding)?);
            if pad == 0 || pad > payload_end - offset {
                return Err(Error::BadPadding);
            }
            payload_end -= pad;
        }
        Ok(Header {
            marker: second & 0x80 != 0,
            payload_type: second & 0x7F,
            sequence,
            timestamp,
            ssrc,
            payload_offset: offset,
            payload_end,
            extension,
        })
    }

    /// The value of the one-byte (0xBEDE) or two-byte (0x100x) extension element `id`.
    pub fn extension_value<'a>(&self, packet: &'a [u8], id: u8) -> Option<&'a [u8]> {
        let (profile, start, end) = self.extension?;
        let data = packet.get(start..end)?;
        let two_byte = match profile {
            0xBEDE => false,
            p if p & 0xFFF0 == 0x1000 => true,
            _ => return None,
        };
        let mut at = 0;
        while at < data.len() {
            let b = *data.get(at)?;
            let (eid, len, header) = if two_byte {
                if b == 0 {
                    at += 1;
                    continue;
                }
                (b, usize::from(*data.get(at + 1)?), 2)
            } else {
                if b == 0 {
                    at += 1;
                    continue;
                }
                if b >> 4 == 15 {
                    return None;
                }
                (b >> 4, usize::from(b & 0x0F) + 1, 1)
            };
            let value = data.get(at + header..at + header + len)?;
            if eid == id {
                return Some(value);
            }
            at += header + len;
        }
        None
    }
}

/// Adds `pad` bytes of RTP padding (RFC 3550 §5.1: the P bit, zeros, the count last) to the
/// `len`-byte packet in `buf`, keeping padding it has; the new length. `None` (and the packet
/// as it was) when `buf` is too short or the padding would pass 255 bytes. The fan-out pads a
/// frame's packets to one size so they leave as one GSO train (`crate::router`).
pub fn pad(buf: &mut [u8], len: usize, pad: usize) -> Option<usize> {
    if pad == 0 {
        return Some(len);
    }
    let first = *buf.first()?;
    let had = if first & 0x20 != 0 {
        usize::from(*buf.get(len.checked_sub(1)?)?)
    } else {
        0
    };
    let count = u8::try_from(had + pad).ok()?;
    let end = len + pad;
    // The old count byte, if any, turns into padding.
    buf.get_mut(len - usize::from(had > 0)..end - 1)?.fill(0);
    *buf.get_mut(end - 1)? = count;
    buf[0] = first | 0x20;
    Some(end)
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
/// returns its length. Ids must be 1..=14 and values 1..=16 bytes.
pub fn write_header(
    out: &mut [u8],
    fields: &HeaderFields,
    extensions: &[(u8, &[u8])],
) -> Result<usize, Error> {
    // The one-byte form (RFC 8285 §4.2) takes ids 1..=14 and 1..=16 bytes; anything else, such
    // as a dependency descriptor carrying its structure, needs the two-byte form (§4.3), ids
    // 1..=255 and up to 255 bytes, for the whole packet.
    let two_byte = extensions
        .iter()
        .any(|(id, v)| !(1..=14).contains(id) || v.len() > 16);
    let per_element = if two_byte { 2 } else { 1 };
    let ext_bytes: usize = extensions.iter().map(|(_, v)| per_element + v.len()).sum();
    let ext_len = if extensions.is_empty() {
        0
    } else {
        4 + ext_bytes.div_ceil(4) * 4
    };
    let total = 12 + ext_len;
    let out = out.get_mut(..total).ok_or(Error::BufferTooSmall)?;
    out[0] = 0x80 | if extensions.is_empty() { 0 } else { 0x10 };
    out[1] = (fields.payload_type & 0x7F) | if fields.marker { 0x80 } else { 0 };
    out[2..4].copy_from_slice(&fields.sequence.to_be_bytes());
    out[4..8].copy_from_slice(&fields.timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&fields.ssrc.to_be_bytes());
    if !extensions.is_empty() {
        let profile: [u8; 2] = if two_byte { [0x10, 0x00] } else { [0xBE, 0xDE] };
        out[12..14].copy_from_slice(&profile);
        out[14..16].copy_from_slice(&(((ext_len - 4) / 4) as u16).to_be_bytes());
        let mut at = 16;
        for &(id, value) in extensions {
            if id == 0 || value.is_empty() || value.len() > 255 {
                return Err(Error::BadExtension);
            }
            if two_byte {
                out[at] = id;
                out[at + 1] = value.len() as u8;
            } else {
                out[at] = (id << 4) | (value.len() as u8 - 1);
            }
            out[at + per_element..at + per_element + value.len()].copy_from_slice(value);
            at += per_element + value.len();
        }
        out[at..].fill(0);
    }
    Ok(total)
}

/// Whether this payload starts a keyframe (VP8, VP9, H264, AV1; always false for audio).
pub fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Opus => false,
        Codec::Vp8 => vp8_keyframe(payload).unwrap_or(false),
        Codec::Vp9 => vp9_keyframe(payload).unwrap_or(false),
        Codec::H264 => h264_keyframe(payload).unwrap_or(false),
        // AV1 RTP: the aggregation header's N bit marks the first packet of a coded video
        // sequence, which starts with a keyframe.
        Codec::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0),
    }
}

/// RFC 7741: the start of partition 0 (S=1, PID=0) whose VP8 frame tag has P=0.
fn vp8_keyframe(p: &[u8]) -> Option<bool> {
    let b0 = *p.first()?;
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return Some(false);
    }
    Some(*p.get(vp8_descriptor_len(p)?)? & 0x01 == 0)
}

/// The length of the VP8 payload descriptor (RFC 7741 §4.2).
fn vp8_descriptor_len(p: &[u8]) -> Option<usize> {
    let b0 = *p.first()?;
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(at)?;
        at += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            at += if *p.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    Some(at)
}

/// The VP8 payload descriptor's picture id, TL0PICIDX and temporal layer (RFC 7741 §4.2),
/// where present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Fields {
    /// The picture id and whether it is the 15-bit form.
    pub picture_id: Option<(u16, bool)>,
    pub tl0: Option<u8>,
    /// The temporal layer index (TID) and the layer sync bit (Y: the frame depends only on
    /// the base layer), when the T bit says they are there.
    pub temporal: Option<(u8, bool)>,
}

/// Where the picture id (offset, whether 15-bit), TL0PICIDX (offset) and the TID/Y/KEYIDX
/// byte (offset, when T is set) sit in a VP8 payload.
type Vp8Offsets = (Option<(usize, bool)>, Option<usize>, Option<usize>);

fn vp8_field_offsets(p: &[u8]) -> Option<Vp8Offsets> {
    let b0 = *p.first()?;
    if b0 & 0x80 == 0 {
        return Some((None, None, None));
    }
    let x = *p.get(1)?;
    let mut at = 2;
    let mut picture = None;
    if x & 0x80 != 0 {
        let long = *p.get(at)? & 0x80 != 0;
        picture = Some((at, long));
        at += if long { 2 } else { 1 };
    }
    let tl0 = (x & 0x40 != 0).then_some(at);
    if tl0.is_some() {
        p.get(at)?;
        at += 1;
    }
    let temporal = (x & 0x20 != 0).then_some(at);
    if temporal.is_some() {
        p.get(at)?;
    }
    Some((picture, tl0, temporal))
}

/// Reads the VP8 payload descriptor's picture id, TL0PICIDX and temporal layer.
pub fn vp8_picture_fields(p: &[u8]) -> Option<Vp8Fields> {
    let (picture, tl0, temporal) = vp8_field_offsets(p)?;
    let picture_id = match picture {
        Some((at, true)) => Some((
            u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]) & 0x7FFF,
            true,
        )),
        Some((at, false)) => Some((u16::from(*p.get(at)? & 0x7F), false)),
        None => None,
    };
    let tl0 = match tl0 {
        Some(at) => Some(*p.get(at)?),
        None => None,
    };
    let temporal = match temporal {
        Some(at) => {
            let b = *p.get(at)?;
            Some((b >> 6, b & 0x20 != 0))
        }
        None => None,
    };
    Some(Vp8Fields {
        picture_id,
        tl0,
        temporal,
    })
}

/// Adds `picture` to the VP8 picture id (modulo its width) and `tl0` to TL0PICIDX, in place.
pub fn vp8_shift_picture(p: &mut [u8], picture: u16, tl0: u8) {
    let Some((id_at, tl0_at, _)) = vp8_field_offsets(p) else {
        return;
    };
    match id_at {
        Some((at, true)) => {
            if let (Some(&hi), Some(&lo)) = (p.get(at), p.get(at + 1)) {
                let id = (u16::from_be_bytes([hi, lo]) & 0x7FFF).wrapping_add(picture) & 0x7FFF;
                let [hi, lo] = (id | 0x8000).to_be_bytes();
                if let Some(b) = p.get_mut(at..at + 2) {
                    b.copy_from_slice(&[hi, lo]);
                }
            }
        }
        Some((at, false)) => {
            if let Some(b) = p.get_mut(at) {
                *b = (b.wrapping_add(picture as u8)) & 0x7F;
            }
        }
        None => {}
    }
    if let Some(b) = tl0_at.and_then(|at| p.get_mut(at)) {
        *b = b.wrapping_add(tl0);
    }
}

/// The width and height a VP8 keyframe's first packet declares (RFC 6386 §9.1: after the
/// 3-byte frame tag, the start code 9d 01 2a, then 14-bit width and height).
pub fn vp8_keyframe_size(p: &[u8]) -> Option<(u16, u16)> {
    if !vp8_keyframe(p)? {
        return None;
    }
    let at = vp8_descriptor_len(p)?;
    let Some(&[_, _, _, 0x9d, 0x01, 0x2a, w0, w1, h0, h1]) = p.get(at..at + 10) else {
        return None;
    };
    Some((
        u16::from_le_bytes([w0, w1]) & 0x3FFF,
        u16::from_le_bytes([h0, h1]) & 0x3FFF,
    ))
}

/// The width and height a keyframe's packet declares, for the codecs that write them there (VP8
/// in the frame header, H264 in the SPS); `None` for the others and for other packets.
pub fn keyframe_size(codec: Codec, payload: &[u8]) -> Option<(u16, u16)> {
    match codec {
        Codec::Vp8 => vp8_keyframe_size(payload),
        Codec::H264 => h264_keyframe_size(payload),
        Codec::Opus | Codec::Vp9 | Codec::Av1 => None,
    }
}

/// The width and height the SPS in an H264 packet declares (RFC 6184): a single NAL unit packet
/// of the SPS, or a STAP-A holding one. Browsers send the SPS so, ahead of each IDR; one cut
/// into FU-A fragments is not looked for.
pub fn h264_keyframe_size(p: &[u8]) -> Option<(u16, u16)> {
    match *p.first()? & 0x1F {
        sps::SPS => sps::sps_size(p),
        24 => {
            // STAP-A: a 16-bit size before each NAL unit.
            let mut at = 1;
            while let Some(size) = be_u16(p, at) {
                let nal = p.get(at + 2..at + 2 + usize::from(size))?;
                if nal.first().is_some_and(|h| h & 0x1F == sps::SPS) {
                    return sps::sps_size(nal);
                }
                at += 2 + usize::from(size);
            }
            None
        }
        _ => None,
    }
}

/// VP9 RTP payload: the start of a frame (B=1) that is not inter-predicted (P=0), in the
/// base spatial layer.
fn vp9_keyframe(p: &[u8]) -> Option<bool> {
    let b0 = *p.first()?;
    let (picture_id, inter, layers, begin) = (
        b0 & 0x80 != 0,
        b0 & 0x40 != 0,
        b0 & 0x20 != 0,
        b0 & 0x08 != 0,
    );
    if !begin || inter {
        return Some(false);
    }
    let mut at = 1;
    if picture_id {
        at += if *p.get(at)? & 0x80 != 0 { 2 } else { 1 };
    }
    if layers {
        let l = *p.get(at)?;
        // Spatial layer id is bits 3..1 of the layer byte.
        if (l >> 1) & 0x07 != 0 {
            return Some(false);
        }
    }
    Some(true)
}

/// RFC 6184: an IDR slice (5) or SPS (7), alone, in a STAP-A, or starting an FU-A.
fn h264_keyframe(p: &[u8]) -> Option<bool> {
    let nal = *p.first()? & 0x1F;
    Some(match nal {
        5 | 7 => true,
        24 => {
            let mut at = 1;
            while at + 2 < p.len() {
                let size = usize::from(be_u16(p, at)?);
                let t = *p.get(at + 2)? & 0x1F;
                if t == 5 || t == 7 {
                    return Some(true);
                }
                at += 2 + size;
            }
            false
        }
        28 => {
            let fu = *p.get(1)?;
            fu & 0x80 != 0 && matches!(fu & 0x1F, 5 | 7)
        }
        _ => false,
    })
}

/// Extends 16-bit sequence numbers to 64 bits across wraps (RFC 3550 A.1).
#[derive(Debug, Clone, Default)]
pub struct SeqExtender {
    highest: Option<u64>,
}

impl SeqExtender {
    /// The extended sequence number of `seq`, judged against the highest seen so far: within
    /// half the sequence space before the highest it is an old packet, not a wrap. The first
    /// packet starts one cycle in, so a late packet from before it does not underflow.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            self.highest = Some(u64::from(seq) + (1 << 16));
            return u64::from(seq) + (1 << 16);
        };
        let delta = seq.wrapping_sub(highest as u16) as i16;
        let extended = highest.wrapping_add_signed(i64::from(delta));
        if extended > highest {
            self.highest = Some(extended);
        }
        extended
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields(seq: u16) -> HeaderFields {
        HeaderFields {
            marker: true,
            payload_type: 96,
            sequence: seq,
            timestamp: 0xdeadbeef,
            ssrc: 0x01020304,
        }
    }

    #[test]
    fn write_then_parse_with_extensions() {
        let mut out = [0u8; 64];
        let n = write_header(&mut out, &fields(7), &[(1, b"0"), (3, &[1, 2, 3])]).unwrap();
        assert_eq!(n, 12 + 4 + 8);
        let mut packet = out[..n].to_vec();
        packet.extend_from_slice(b"payload");
        let h = Header::parse(&packet).unwrap();
        assert!(h.marker);
        assert_eq!(
            (h.payload_type, h.sequence, h.timestamp, h.ssrc),
            (96, 7, 0xdeadbeef, 0x01020304)
        );
        assert_eq!(&packet[h.payload_offset..h.payload_end], b"payload");
        assert_eq!(h.extension_value(&packet, 1), Some(&b"0"[..]));
        assert_eq!(h.extension_value(&packet, 3), Some(&[1u8, 2, 3][..]));
        assert_eq!(h.extension_value(&packet, 2), None);
        let n = write_header(&mut out, &fields(7), &[]).unwrap();
        assert_eq!(n, 12);
        assert_eq!(
            write_header(&mut out, &fields(1), &[(0, b"x")]),
            Err(Error::BadExtension)
        );
        // Ids above 14 or values over 16 bytes take the two-byte form (RFC 8285 §4.3).
        let long = [0xABu8; 40];
        let n = write_header(&mut out, &fields(1), &[(1, b"0"), (15, b"x"), (9, &long)]).unwrap();
        assert_eq!(&out[12..14], &[0x10, 0x00]);
        let mut packet = out[..n].to_vec();
        packet.extend_from_slice(b"p");
        let h = Header::parse(&packet).unwrap();
        assert_eq!(h.extension_value(&packet, 1), Some(&b"0"[..]));
        assert_eq!(h.extension_value(&packet, 15), Some(&b"x"[..]));
        assert_eq!(h.extension_value(&packet, 9), Some(&long[..]));
        assert_eq!(&packet[h.payload_offset..], b"p");
        assert_eq!(
            write_header(&mut out[..10], &fields(1), &[]),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn padding_is_added_to_what_a_packet_has() {
        let mut buf = [0u8; 40];
        let plain = [0x80, 96, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xAA, 0xBB];
        buf[..plain.len()].copy_from_slice(&plain);
        let n = pad(&mut buf, plain.len(), 3).unwrap();
        let h = Header::parse(&buf[..n]).unwrap();
        assert_eq!(
            (n, h.payload_end, &buf[12..14]),
            (17, 14, &[0xAA, 0xBB][..])
        );
        // Padded again: one count, of both.
        let m = pad(&mut buf, n, 2).unwrap();
        let h = Header::parse(&buf[..m]).unwrap();
        assert_eq!((m, h.payload_end, buf[m - 1]), (19, 14, 5));
        assert_eq!(pad(&mut buf, m, 0), Some(m));
        assert_eq!(pad(&mut buf, m, 30), None, "no room");
        assert_eq!(pad(&mut [0x80u8; 600], 20, 256), None, "a count over 255");
    }

    #[test]
    fn padding_csrcs_and_two_byte_extensions() {
        // CC=2, X, P; two-byte extension (0x1000) with id 5 len 2, then padding of 3.
        let mut p = vec![0xB2, 111, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[0x10, 0x00, 0x00, 0x01, 5, 2, 0xAA, 0xBB]);
        p.extend_from_slice(b"data");
        p.extend_from_slice(&[0, 0, 3]);
        let h = Header::parse(&p).unwrap();
        assert_eq!(&p[h.payload_offset..h.payload_end], b"data");
        assert_eq!(h.extension_value(&p, 5), Some(&[0xAA, 0xBB][..]));
        let mut bad = p.clone();
        *bad.last_mut().unwrap() = 0;
        assert_eq!(Header::parse(&bad), Err(Error::BadPadding));
        let mut bad = p.clone();
        *bad.last_mut().unwrap() = 200;
        assert_eq!(Header::parse(&bad), Err(Error::BadPadding));
        assert_eq!(Header::parse(&p[..22]), Err(Error::BadExtension));
        assert_eq!(Header::parse(&[0x40; 20]), Err(Error::BadVersion));
        assert_eq!(Header::parse(&[0x80; 11]), Err(Error::TooShort));
    }

    #[test]
    fn vp8_keyframes() {
        assert!(is_keyframe(Codec::Vp8, &[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Inter frame (P=1).
        assert!(!is_keyframe(Codec::Vp8, &[0x10, 0x01]));
        // Not the start of partition 0.
        assert!(!is_keyframe(Codec::Vp8, &[0x00, 0x00]));
        // Extended descriptor: X, I with 15-bit picture id, L, T.
        assert!(is_keyframe(
            Codec::Vp8,
            &[0x90, 0xE0, 0x80, 0x01, 0x05, 0x20, 0x00]
        ));
        assert!(!is_keyframe(Codec::Vp8, &[0x90, 0xE0, 0x80]));
        assert!(!is_keyframe(Codec::Vp8, &[]));
    }

    #[test]
    fn vp8_fields_with_temporal_layers() {
        // X; I (15-bit id 0x0123), L (TL0PICIDX 7), T (TID 2, Y).
        let p = [0x90, 0xE0, 0x81, 0x23, 0x07, 0xA0, 0xAA];
        let f = vp8_picture_fields(&p).unwrap();
        assert_eq!(f.picture_id, Some((0x0123, true)));
        assert_eq!(f.tl0, Some(7));
        assert_eq!(f.temporal, Some((2, true)));
        // T without L: the byte follows the picture id; TID 1, no sync.
        let f = vp8_picture_fields(&[0x90, 0xA0, 0x05, 0x40]).unwrap();
        assert_eq!(
            (f.picture_id, f.tl0, f.temporal),
            (Some((5, false)), None, Some((1, false)))
        );
        // K alone is no temporal layer; a truncated descriptor is nothing.
        assert_eq!(
            vp8_picture_fields(&[0x90, 0x10, 0x1F]).unwrap().temporal,
            None
        );
        assert_eq!(vp8_picture_fields(&[0x90, 0xE0, 0x81, 0x23, 0x07]), None);
    }

    #[test]
    fn vp9_keyframes() {
        // I (15-bit picture id), B; P=0.
        assert!(is_keyframe(Codec::Vp9, &[0x88, 0x80, 0x01, 0xAA]));
        assert!(!is_keyframe(Codec::Vp9, &[0xC8, 0x80, 0x01]));
        assert!(!is_keyframe(Codec::Vp9, &[0x80, 0x80, 0x01]));
        // L with spatial layer 1.
        assert!(!is_keyframe(Codec::Vp9, &[0xA8, 0x01, 0x02]));
        assert!(is_keyframe(Codec::Vp9, &[0xA8, 0x01, 0x00]));
        assert!(!is_keyframe(Codec::Vp9, &[0x88]));
    }

    #[test]
    fn h264_keyframes() {
        assert!(is_keyframe(Codec::H264, &[0x65, 0x88]));
        assert!(is_keyframe(Codec::H264, &[0x67, 0x42]));
        assert!(!is_keyframe(Codec::H264, &[0x41, 0x9a]));
        // STAP-A with SPS + PPS.
        assert!(is_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        assert!(!is_keyframe(Codec::H264, &[0x78, 0x00, 0x02, 0x41, 0x42]));
        // FU-A start of an IDR, and a middle fragment.
        assert!(is_keyframe(Codec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!is_keyframe(Codec::H264, &[0x7c, 0x05, 0x00]));
        assert!(!is_keyframe(Codec::H264, &[0x7c]));
    }

    #[test]
    fn h264_sizes_from_the_sps() {
        // libx264's baseline 640x360 SPS (see h264.rs), and a PPS.
        let sps = [
            0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
            0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
        ];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        assert_eq!(h264_keyframe_size(&sps), Some((640, 360)));
        assert_eq!(keyframe_size(Codec::H264, &sps), Some((640, 360)));
        // STAP-A: SEI, SPS, PPS.
        let stap = |units: &[&[u8]]| {
            let mut p = vec![0x78];
            for u in units {
                p.extend_from_slice(&(u.len() as u16).to_be_bytes());
                p.extend_from_slice(u);
            }
            p
        };
        let packet = stap(&[&[0x06, 0x05, 0x01, 0x80], &sps, &pps]);
        assert!(is_keyframe(Codec::H264, &packet));
        assert_eq!(h264_keyframe_size(&packet), Some((640, 360)));
        // Cut in the PPS after the SPS, cut in the SPS, a STAP-A without an SPS, one with a bad
        // SPS, one with an empty unit first.
        assert_eq!(
            h264_keyframe_size(&packet[..packet.len() - 1]),
            Some((640, 360))
        );
        assert_eq!(h264_keyframe_size(&packet[..20]), None);
        assert_eq!(h264_keyframe_size(&stap(&[&pps, &[0x65, 0x88]])), None);
        assert_eq!(h264_keyframe_size(&stap(&[&sps[..6], &pps])), None);
        assert_eq!(h264_keyframe_size(&stap(&[&[], &sps])), Some((640, 360)));
        // An IDR alone, an FU-A start of one, nothing.
        assert_eq!(h264_keyframe_size(&[0x65, 0x88, 0x84]), None);
        assert_eq!(h264_keyframe_size(&[0x7c, 0x85, 0x00]), None);
        assert_eq!(h264_keyframe_size(&[]), None);
        assert_eq!(keyframe_size(Codec::Vp9, &sps), None);
        assert_eq!(
            keyframe_size(
                Codec::Vp8,
                &[0x10, 0, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]
            ),
            Some((640, 360))
        );
    }

    #[test]
    fn av1_and_opus() {
        assert!(is_keyframe(Codec::Av1, &[0x18]));
        assert!(!is_keyframe(Codec::Av1, &[0x10]));
        assert!(!is_keyframe(Codec::Opus, &[0xff]));
    }

    #[test]
    fn sequence_extension_across_wraps() {
        let mut e = SeqExtender::default();
        let base = e.extend(65534);
        assert_eq!(e.extend(65535), base + 1);
        assert_eq!(e.extend(0), base + 2);
        assert_eq!(e.extend(65535), base + 1); // late packet, not a wrap back
        assert_eq!(e.extend(5), base + 7);
        let mut e = SeqExtender::default();
        let b = e.extend(10);
        assert_eq!(e.extend(5), b - 5);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..100), id in 0u8..16) {
            if let Ok(h) = Header::parse(&data) {
                let _ = h.extension_value(&data, id);
                let payload = &data[h.payload_offset..h.payload_end];
                for c in [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
                    let _ = is_keyframe(c, payload);
                    let _ = keyframe_size(c, payload);
                }
            }
            for c in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
                let _ = is_keyframe(c, &data);
                let _ = keyframe_size(c, &data);
            }
        }
    }
}
