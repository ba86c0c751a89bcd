//! The VP9 RTP payload format (RFC 9628): a payload descriptor, then part of one layer frame.
//!
//! A picture is every layer frame with one RTP timestamp; the marker bit ends it. Within it,
//! each spatial layer's frame runs from a packet with the B bit to one with the E bit. The
//! depacketizer joins a picture's layer frames into one VP9 superframe (with its index) so a
//! decoder, or a Matroska file, gets the whole picture as one chunk, as libvpx's encoder
//! makes it. A picture is a keyframe when its first layer frame is not inter-picture
//! predicted (P=0) and its uncompressed header says KEY_FRAME: the upper layers of such a
//! picture predict only from the layers below, so the picture decodes on its own.
//!
//! Picture ids, layer indices, flexible mode's reference differences and the scalability
//! structure are read past; of the structure, the top layer's size is kept, for a recording
//! whose keyframe header does not give it. Like VP8's, a gap asks for a keyframe.

mod header;

pub use header::{FrameHeader, MAX_SUPERFRAME, frame_header, frames, picture_size};

use crate::depacketize::{DepacketizeError, Depacketizer, PayloadFormat};
use crate::packetize::{PacketizeError, Packetizer, Payloads};

/// The parts of a VP9 payload descriptor the depacketizer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// P: the layer frame predicts from an earlier picture.
    pub inter_picture: bool,
    /// B and E: the packet begins, or ends, a layer frame.
    pub begin: bool,
    pub end: bool,
    /// The picture id (7 or 15 bits), if present.
    pub picture_id: Option<u16>,
    /// The spatial and temporal layer (L), if present.
    pub spatial: Option<u8>,
    pub temporal: Option<u8>,
    /// The scalability structure, if the packet carries one (V).
    pub structure: Option<Structure>,
    /// Where the VP9 data begins in the payload.
    pub len: usize,
}

impl Descriptor {
    /// Reads the descriptor at the start of `payload`; the payload must hold VP9 data after
    /// it.
    pub fn parse(payload: &[u8]) -> Result<Self, DepacketizeError> {
        let (&first, _) = payload.split_first().ok_or(DepacketizeError::Empty)?;
        let byte = |i: usize| payload.get(i).copied().ok_or(DepacketizeError::Truncated);
        let flag = |bit: u8| first & bit != 0;
        let flexible = flag(0x10);
        let mut d = Descriptor {
            inter_picture: flag(0x40),
            begin: flag(0x08),
            end: flag(0x04),
            ..Descriptor::default()
        };
        let mut at = 1;
        if flag(0x80) {
            let high = byte(at)?;
            if high & 0x80 != 0 {
                d.picture_id = Some(u16::from(high & 0x7F) << 8 | u16::from(byte(at + 1)?));
                at += 2;
            } else {
                d.picture_id = Some(u16::from(high));
                at += 1;
            }
        }
        if flag(0x20) {
            let layers = byte(at)?;
            d.temporal = Some(layers >> 5);
            d.spatial = Some(layers >> 1 & 7);
            at += 1;
            if !flexible {
                byte(at)?; // TL0PICIDX
                at += 1;
            }
        }
        if flexible && d.inter_picture {
            // Up to three reference differences, each with N: another follows.
            for i in 0.. {
                let diff = byte(at)?;
                at += 1;
                if diff & 1 == 0 {
                    break;
                }
                if i == 2 {
                    return Err(DepacketizeError::BadVp9);
                }
            }
        }
        if flag(0x02) {
            let (structure, len) = structure(&payload[at..])?;
            d.structure = Some(structure);
            at += len;
        }
        if payload.len() <= at {
            return Err(DepacketizeError::Truncated);
        }
        d.len = at;
        Ok(d)
    }
}

/// What a scalability structure says that a recording needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Structure {
    pub spatial_layers: u8,
    /// The top layer's size, when the structure gives sizes (Y).
    pub top_size: Option<(u16, u16)>,
}

/// Reads a scalability structure, and its length.
fn structure(ss: &[u8]) -> Result<(Structure, usize), DepacketizeError> {
    let byte = |i: usize| ss.get(i).copied().ok_or(DepacketizeError::Truncated);
    let head = byte(0)?;
    let layers = (head >> 5) + 1;
    let mut at = 1;
    let mut size = None;
    if head & 0x10 != 0 {
        for _ in 0..layers {
            let w = u16::from_be_bytes([byte(at)?, byte(at + 1)?]);
            let h = u16::from_be_bytes([byte(at + 2)?, byte(at + 3)?]);
            size = Some((w, h));
            at += 4;
        }
    }
    if head & 0x08 != 0 {
        let groups = byte(at)?;
        at += 1;
        for _ in 0..groups {
            let refs = usize::from(byte(at)? >> 2 & 3);
            at += 1 + refs;
        }
        if at > ss.len() {
            return Err(DepacketizeError::Truncated);
        }
    }
    let structure = Structure {
        spatial_layers: layers,
        top_size: size.filter(|&(w, h)| w > 0 && h > 0),
    };
    Ok((structure, at))
}

/// VP9's [`PayloadFormat`].
#[derive(Debug, Clone, Default)]
pub struct Vp9 {
    /// The descriptor of the payload being read, from `starts_frame` to `append`.
    descriptor: Descriptor,
    /// Where the open layer frame began in the picture; `None` between layer frames.
    open: Option<usize>,
    /// The sizes of the picture's finished layer frames.
    layers: Vec<usize>,
    keyframe: bool,
    /// The top layer's size from the last scalability structure that gave one.
    structure_size: Option<(u16, u16)>,
}

impl Vp9 {
    /// The top spatial layer's size from the last scalability structure that gave sizes.
    pub fn structure_size(&self) -> Option<(u16, u16)> {
        self.structure_size
    }
}

/// Reassembles VP9 pictures.
pub type Vp9Depacketizer = Depacketizer<Vp9>;

impl PayloadFormat for Vp9 {
    /// A new timestamp begins a picture: a picture's spatial layers each have a B bit, so the
    /// bit alone does not mark the picture's first packet.
    fn starts_frame(&mut self, payload: &[u8]) -> Result<Option<bool>, DepacketizeError> {
        self.descriptor = Descriptor::parse(payload)?;
        Ok(None)
    }

    fn reset(&mut self) {
        self.open = None;
        self.layers.clear();
        self.keyframe = false;
    }

    fn append(&mut self, payload: &[u8], frame: &mut Vec<u8>) -> Result<(), DepacketizeError> {
        let d = self.descriptor;
        let data = payload.get(d.len..).ok_or(DepacketizeError::Truncated)?;
        if d.begin {
            if self.open.is_some() {
                return Err(DepacketizeError::Unfinished);
            }
            if self.layers.len() >= MAX_SUPERFRAME {
                return Err(DepacketizeError::BadVp9);
            }
            if self.layers.is_empty() {
                self.keyframe = !d.inter_picture && frame_header(data).is_some_and(|h| h.keyframe);
            }
            self.open = Some(frame.len());
        }
        let start = self.open.ok_or(DepacketizeError::NoStart)?;
        frame.extend_from_slice(data);
        if d.end {
            self.layers.push(frame.len() - start);
            self.open = None;
        }
        if let Some(size) = d.structure.and_then(|s| s.top_size) {
            self.structure_size = Some(size);
        }
        Ok(())
    }

    fn can_end(&self) -> bool {
        self.open.is_none() && !self.layers.is_empty()
    }

    /// Several layer frames become a superframe: the index after them.
    fn finish(&mut self, frame: &mut Vec<u8>) -> Result<(), DepacketizeError> {
        if self.layers.len() > 1 {
            header::write_superframe_index(frame, &self.layers);
        }
        Ok(())
    }

    fn keyframe(&self) -> bool {
        self.keyframe
    }
}

/// Splits VP9 pictures (a frame, or a superframe of one frame per spatial layer) into
/// payloads in non-flexible mode: a 15-bit picture id, layer indices (the superframe's n-th
/// frame is spatial layer n), and on a keyframe's first packet a scalability structure with
/// each layer's size where its header gives it. For tests and tools; the MCU sends VP8.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vp9Packetizer {
    picture_id: u16,
    tl0: u8,
}

impl Vp9Packetizer {
    /// Starts counting pictures at `picture_id` (modulo 2^15).
    pub fn new(picture_id: u16) -> Self {
        Self {
            picture_id: picture_id & 0x7FFF,
            tl0: 0,
        }
    }
}

impl Packetizer for Vp9Packetizer {
    fn packetize(
        &mut self,
        picture: &[u8],
        mtu: usize,
        out: &mut Payloads,
    ) -> Result<(), PacketizeError> {
        out.clear();
        if picture.is_empty() {
            return Err(PacketizeError::EmptyFrame);
        }
        let layers: Vec<&[u8]> = frames(picture).filter(|f| !f.is_empty()).collect();
        if layers.is_empty() {
            return Err(PacketizeError::EmptyFrame);
        }
        let keyframe = layers
            .first()
            .and_then(|f| frame_header(f))
            .is_some_and(|h| h.keyframe);
        let sizes: Option<Vec<(u32, u32)>> = layers.iter().map(|f| frame_header(f)?.size).collect();
        let [high, low] = self.picture_id.to_be_bytes();
        let mut ss = Vec::new();
        if keyframe {
            let n = layers.len().clamp(1, MAX_SUPERFRAME) as u8;
            match &sizes {
                Some(sizes) => {
                    ss.push((n - 1) << 5 | 0x10);
                    for &(w, h) in sizes {
                        ss.extend_from_slice(&(w as u16).to_be_bytes());
                        ss.extend_from_slice(&(h as u16).to_be_bytes());
                    }
                }
                None => ss.push((n - 1) << 5),
            }
        }
        // I, L, B/E, V; picture id (2), layers and TL0PICIDX (2).
        let fixed = 5;
        if mtu <= fixed + ss.len() {
            return Err(PacketizeError::MtuTooSmall(mtu));
        }
        for (sid, layer) in layers.iter().enumerate() {
            let mut first = true;
            let mut rest = *layer;
            while !rest.is_empty() {
                let with_ss = first && sid == 0 && !ss.is_empty();
                let room = mtu - fixed - if with_ss { ss.len() } else { 0 };
                let (chunk, tail) = rest.split_at(room.min(rest.len()));
                rest = tail;
                let mut head = 0xA0; // I, L
                if !keyframe {
                    head |= 0x40;
                }
                if first {
                    head |= 0x08;
                }
                if rest.is_empty() {
                    head |= 0x04;
                }
                if with_ss {
                    head |= 0x02;
                }
                let d = u8::from(sid > 0);
                out.extend(&[head, 0x80 | high, low, (sid as u8) << 1 | d, self.tl0]);
                if with_ss {
                    out.extend(&ss);
                }
                out.extend(chunk);
                out.finish();
                first = false;
            }
        }
        self.picture_id = (self.picture_id + 1) & 0x7FFF;
        self.tl0 = self.tl0.wrapping_add(1);
        Ok(())
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::header::tests::{inter, keyframe};
    use super::header::write_superframe_index;
    use super::*;
    use proptest::prelude::*;

    /// A picture of `layers` spatial layers (each twice the size of the one below), as an
    /// encoder makes it: one frame, or a superframe.
    fn picture(layers: usize, key: bool, len: usize, seed: u8) -> Vec<u8> {
        let frames: Vec<Vec<u8>> = (0..layers)
            .map(|i| {
                let (w, h) = (160 << i, 120 << i);
                let mut body: Vec<u8> = (0..len)
                    .map(|j| (j as u8).wrapping_mul(13) ^ seed)
                    .collect();
                // Not a superframe marker at the end (encoders avoid it too).
                body.push(0);
                if key && i == 0 {
                    keyframe(w, h, &body)
                } else {
                    [inter(w, h), body].concat()
                }
            })
            .collect();
        let mut out = frames.concat();
        if layers > 1 {
            let sizes: Vec<usize> = frames.iter().map(Vec::len).collect();
            write_superframe_index(&mut out, &sizes);
        }
        out
    }

    /// Packetizes and pushes one picture; returns what came out of the last push.
    fn send(
        p: &mut Vp9Packetizer,
        d: &mut Vp9Depacketizer,
        seq: &mut u16,
        ts: u32,
        data: &[u8],
        mtu: usize,
    ) -> Option<(Vec<u8>, bool)> {
        let mut out = Payloads::new();
        p.packetize(data, mtu, &mut out).unwrap();
        let n = out.len();
        let mut got = None;
        for (i, payload) in out.iter().enumerate() {
            assert!(payload.len() <= mtu);
            *seq = seq.wrapping_add(1);
            let f = d.push(*seq, ts, i + 1 == n, payload).unwrap();
            got = f.map(|f| (f.data.to_vec(), f.keyframe));
        }
        got
    }

    #[test]
    fn pictures_of_one_and_three_layers_round_trip() {
        for layers in [1, 3] {
            for mtu in [40, 200, 1200] {
                let mut p = Vp9Packetizer::new(0x7FFE);
                let mut d = Vp9Depacketizer::default();
                let mut seq = 65530;
                for i in 0..5u32 {
                    let pic = picture(layers, i == 0, 100 + 700 * i as usize, i as u8);
                    let got = send(&mut p, &mut d, &mut seq, i * 3000, &pic, mtu);
                    assert_eq!(got, Some((pic, i == 0)), "{layers} layers, mtu {mtu}");
                }
                let top = (160 << (layers - 1), 120 << (layers - 1));
                assert_eq!(d.format().structure_size(), Some(top));
            }
        }
    }

    #[test]
    fn descriptor_reads_every_field() {
        // I (7-bit id 5), P, L, F, B; two reference differences; then data.
        let d = Descriptor::parse(&[0xF8, 0x05, 0x44, 0x03, 0x04, 0xAA]).unwrap();
        assert_eq!(d.picture_id, Some(5));
        assert_eq!((d.temporal, d.spatial), (Some(2), Some(2)));
        assert!(d.inter_picture && d.begin && !d.end);
        assert_eq!(d.len, 5);
        // Non-flexible: L and TL0PICIDX; E; a structure of 2 layers with sizes and one group
        // with one reference.
        let d = Descriptor::parse(&[
            0x26, 0x02, 0x07, 0x38, 0x00, 0xA0, 0x00, 0x78, 0x01, 0x40, 0x00, 0xF0, 0x01, 0x04,
            0x01, 0xAA,
        ])
        .unwrap();
        let want = Structure {
            spatial_layers: 2,
            top_size: Some((320, 240)),
        };
        assert_eq!(d.structure, Some(want));
        assert_eq!(d.len, 15);
        assert!(d.end && !d.begin);
        // A 15-bit id.
        assert_eq!(
            Descriptor::parse(&[0x88, 0x81, 0x02, 0xAA])
                .unwrap()
                .picture_id,
            Some(0x102)
        );
    }

    #[test]
    fn malformed_descriptors_are_errors() {
        use DepacketizeError::*;
        for (payload, want) in [
            (&[][..], Empty),
            (&[0x88][..], Truncated),
            (&[0x88, 0x81, 0x02][..], Truncated),
            (&[0x28, 0x00][..], Truncated),
            (&[0x58, 0x03, 0x03, 0x03, 0xAA][..], BadVp9),
            (&[0x0A, 0x18, 0x00][..], Truncated),
            (&[0x0A, 0x08, 0x02, 0x00, 0xAA][..], Truncated),
        ] {
            assert_eq!(Descriptor::parse(payload), Err(want), "{payload:?}");
        }
        let mut d = Vp9Depacketizer::default();
        // A continuation with no B before it.
        assert_eq!(d.push(1, 0, true, &[0x04, 0x10]), Err(NoStart));
        // A layer frame left open at the marker.
        let key = keyframe(16, 16, &[0]);
        let first = [&[0x08][..], &key].concat();
        assert_eq!(d.push(2, 9, true, &first), Err(Unfinished));
        assert_eq!(d.stats().malformed_packets, 2);
    }

    #[test]
    fn loss_drops_the_picture_until_a_keyframe() {
        let mut p = Vp9Packetizer::new(0);
        let mut d = Vp9Depacketizer::default();
        let mut seq = 0;
        assert_eq!(
            send(&mut p, &mut d, &mut seq, 0, &picture(2, false, 50, 0), 1200),
            None,
            "a delta picture first"
        );
        let key = picture(2, true, 3000, 1);
        assert!(send(&mut p, &mut d, &mut seq, 3000, &key, 1200).is_some());
        let mut out = Payloads::new();
        p.packetize(&picture(2, false, 3000, 2), 1200, &mut out)
            .unwrap();
        let v: Vec<&[u8]> = out.iter().collect();
        assert!(v.len() > 3);
        assert_eq!(d.push(seq + 1, 6000, false, v[0]), Ok(None));
        assert_eq!(d.push(seq + 3, 6000, false, v[2]), Ok(None));
        seq += 3;
        assert!(d.keyframe_wanted());
        let delta = picture(1, false, 10, 3);
        assert_eq!(send(&mut p, &mut d, &mut seq, 9000, &delta, 1200), None);
        let key = picture(1, true, 10, 4);
        assert_eq!(
            send(&mut p, &mut d, &mut seq, 12000, &key, 1200),
            Some((key, true))
        );
    }

    /// An inter-picture predicted base layer is no keyframe, whatever its header says.
    #[test]
    fn p_bit_means_not_a_keyframe() {
        let key = keyframe(16, 16, &[0]);
        let mut d = Vp9Depacketizer::default();
        let payload = [&[0x4C][..], &key].concat();
        assert_eq!(d.push(1, 0, true, &payload), Ok(None));
        let payload = [&[0x0C][..], &key].concat();
        let f = d.push(2, 1, true, &payload).unwrap().unwrap();
        assert!(f.keyframe);
        assert_eq!(f.data, key);
    }

    proptest! {
        #[test]
        fn any_payloads_never_panic(
            packets in proptest::collection::vec(
                (0u16..8, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)),
                0..40,
            )
        ) {
            let mut d = Vp9Depacketizer::default();
            let mut seq = 0u16;
            for (step, marker, payload) in packets {
                seq = seq.wrapping_add(step);
                if let Ok(Some(f)) = d.push(seq, u32::from(seq / 4), marker, &payload) {
                    prop_assert!(!f.data.is_empty());
                }
            }
        }

        #[test]
        fn any_picture_round_trips(layers in 1usize..4, len in 1usize..5000, mtu in 40usize..1500) {
            let pic = picture(layers, true, len, 7);
            let mut seq = 0;
            let got = send(&mut Vp9Packetizer::new(9), &mut Vp9Depacketizer::default(), &mut seq, 0, &pic, mtu);
            prop_assert_eq!(got, Some((pic, true)));
        }
    }
}
