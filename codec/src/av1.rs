//! The AV1 RTP payload format (AOM's "RTP Payload Format for AV1", v1.0): an aggregation
//! header, then OBU elements, each but (when W is set) the last with a LEB128 length; an OBU
//! may be split across packets (Z: the first element continues the last packet's, Y: the last
//! continues in the next).
//!
//! A temporal unit is every packet with one RTP timestamp; the marker bit ends it. The
//! depacketizer joins fragments and writes each OBU in the low-overhead bitstream form that
//! decoders and Matroska take (`obu_has_size_field` set, its size after the header), dropping
//! temporal delimiters, tile lists and padding, which the format says a sender should not send
//! and Matroska says a block should not hold. A temporal unit is a keyframe when it carries a
//! sequence header and its first frame header is a KEY_FRAME (or the N bit says a coded video
//! sequence starts there): a recording starts on it and takes its `av1C` from that header.

mod obu;

pub use obu::{
    OBU_FRAME, OBU_FRAME_HEADER, OBU_PADDING, OBU_SEQUENCE_HEADER, OBU_TEMPORAL_DELIMITER,
    OBU_TILE_LIST, Obu, SequenceHeader, key_frame_header, obus, sequence_header, split,
};

use crate::bits::{leb128, write_leb128};
use crate::depacketize::{DepacketizeError, Depacketizer, MAX_FRAME, PayloadFormat};
use crate::packetize::{PacketizeError, Packetizer, Payloads};

/// AV1's [`PayloadFormat`].
#[derive(Debug, Clone, Default)]
pub struct Av1 {
    /// The aggregation header of the payload being read.
    aggregation: u8,
    /// Whether the temporal unit's first packet has been read (its N bit taken).
    started: bool,
    /// The OBU element being joined from fragments; `fragment` while one is open.
    element: Vec<u8>,
    fragment: bool,
    /// What the temporal unit held so far: N, a sequence header (and whether it has reduced
    /// still picture headers), and whether its first frame header is a KEY_FRAME.
    new_sequence: bool,
    sequence: Option<bool>,
    first_frame_key: Option<bool>,
}

/// Reassembles AV1 temporal units.
pub type Av1Depacketizer = Depacketizer<Av1>;

impl Av1 {
    /// Writes the OBU element in `self.element` to `frame` in low-overhead form.
    fn write_obu(&mut self, frame: &mut Vec<u8>) -> Result<(), DepacketizeError> {
        let (obu, _) = split(&self.element).ok_or(DepacketizeError::BadAv1)?;
        match obu.kind {
            OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST | OBU_PADDING => return Ok(()),
            OBU_SEQUENCE_HEADER => {
                let s = SequenceHeader::parse(obu.payload).ok_or(DepacketizeError::BadAv1)?;
                self.sequence = Some(s.reduced_still_picture_header);
            }
            OBU_FRAME | OBU_FRAME_HEADER if self.first_frame_key.is_none() => {
                let reduced = self.sequence.unwrap_or(false);
                self.first_frame_key = Some(key_frame_header(obu.payload, reduced));
            }
            _ => {}
        }
        let (&first, extension) = obu.header.split_first().ok_or(DepacketizeError::BadAv1)?;
        frame.push(first | 0x02);
        frame.extend_from_slice(extension);
        write_leb128(frame, obu.payload.len());
        frame.extend_from_slice(obu.payload);
        Ok(())
    }
}

impl PayloadFormat for Av1 {
    /// A new timestamp begins a temporal unit; Z only says whether an OBU continues.
    fn starts_frame(&mut self, payload: &[u8]) -> Result<Option<bool>, DepacketizeError> {
        let (&aggregation, _) = payload.split_first().ok_or(DepacketizeError::Empty)?;
        self.aggregation = aggregation;
        Ok(None)
    }

    fn reset(&mut self) {
        self.started = false;
        self.element.clear();
        self.fragment = false;
        self.new_sequence = false;
        self.sequence = None;
        self.first_frame_key = None;
    }

    fn append(&mut self, payload: &[u8], frame: &mut Vec<u8>) -> Result<(), DepacketizeError> {
        let a = self.aggregation;
        let (continues, last_continues) = (a & 0x80 != 0, a & 0x40 != 0);
        let count = usize::from(a >> 4 & 3);
        if !self.started {
            self.started = true;
            self.new_sequence = a & 0x08 != 0;
        }
        match (continues, self.fragment) {
            (true, false) => return Err(DepacketizeError::NoStart),
            (false, true) => return Err(DepacketizeError::Unfinished),
            _ => {}
        }
        let mut rest = payload.get(1..).ok_or(DepacketizeError::Truncated)?;
        let mut index = 0;
        while !rest.is_empty() {
            index += 1;
            let len = if index == count {
                rest.len()
            } else {
                let (len, used) = leb128(rest).ok_or(DepacketizeError::BadAv1)?;
                rest = &rest[used..];
                len
            };
            let element = rest.get(..len).ok_or(DepacketizeError::Truncated)?;
            rest = &rest[len..];
            if !(index == 1 && continues) {
                self.element.clear();
            }
            self.element.extend_from_slice(element);
            if self.element.len() > MAX_FRAME {
                return Err(DepacketizeError::TooLarge);
            }
            self.fragment = rest.is_empty() && last_continues;
            if !self.fragment {
                self.write_obu(frame)?;
            }
        }
        Ok(())
    }

    fn can_end(&self) -> bool {
        !self.fragment
    }

    fn keyframe(&self) -> bool {
        self.sequence.is_some() && (self.new_sequence || self.first_frame_key == Some(true))
    }
}

/// Splits AV1 temporal units (low-overhead OBUs, as an encoder writes them) into payloads:
/// temporal delimiters and tile lists left out, every element with its length (W = 0), OBUs
/// split where a payload fills, N on the first payload of a unit with a sequence header. For
/// tests and tools; the MCU sends VP8.
#[derive(Debug, Clone, Default)]
pub struct Av1Packetizer {
    /// The elements of the unit being packetized: OBUs without their size fields.
    elements: Vec<u8>,
    ends: Vec<usize>,
}

impl Packetizer for Av1Packetizer {
    fn packetize(
        &mut self,
        tu: &[u8],
        mtu: usize,
        out: &mut Payloads,
    ) -> Result<(), PacketizeError> {
        out.clear();
        if mtu < 3 {
            return Err(PacketizeError::MtuTooSmall(mtu));
        }
        self.elements.clear();
        self.ends.clear();
        let mut sequence = false;
        for (obu, _) in obus(tu) {
            if matches!(obu.kind, OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST) {
                continue;
            }
            sequence |= obu.kind == OBU_SEQUENCE_HEADER;
            let (&first, extension) = obu.header.split_first().unwrap_or((&0, &[]));
            self.elements.push(first & !0x02);
            self.elements.extend_from_slice(extension);
            self.elements.extend_from_slice(obu.payload);
            self.ends.push(self.elements.len());
        }
        if self.ends.is_empty() {
            return Err(PacketizeError::EmptyFrame);
        }
        let mut packet = vec![0u8];
        let mut first_continues = false;
        let mut n = sequence;
        let mut flush = |packet: &mut Vec<u8>, z: bool, y: bool| {
            packet[0] = u8::from(z) << 7 | u8::from(y) << 6 | u8::from(n) << 3;
            n = false;
            out.extend(packet);
            out.finish();
            packet.truncate(1);
        };
        let mut start = 0;
        for &end in &self.ends {
            let mut rest = &self.elements[start..end];
            start = end;
            while !rest.is_empty() {
                let room = mtu - packet.len();
                let prefix = leb128_len(rest.len().min(room));
                let take = rest.len().min(room.saturating_sub(prefix));
                if take == 0 {
                    flush(&mut packet, first_continues, false);
                    first_continues = false;
                    continue;
                }
                write_leb128(&mut packet, take);
                packet.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if !rest.is_empty() {
                    flush(&mut packet, first_continues, true);
                    first_continues = true;
                }
            }
        }
        if packet.len() > 1 {
            flush(&mut packet, first_continues, false);
        }
        Ok(())
    }
}

/// How many bytes `value` takes in LEB128.
fn leb128_len(value: usize) -> usize {
    let bits = usize::BITS - value.leading_zeros();
    (bits as usize).div_ceil(7).max(1)
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::obu::tests::{obu, sequence_payload};
    use super::*;
    use proptest::prelude::*;

    /// A temporal unit as an encoder writes it: a delimiter, on a keyframe a sequence header,
    /// then one frame OBU of `len` bytes (KEY_FRAME or INTER_FRAME in its first bits).
    fn unit(key: bool, len: usize, seed: u8) -> Vec<u8> {
        let mut frame: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(29) ^ seed)
            .collect();
        if let Some(f) = frame.first_mut() {
            *f = if key { 0x10 } else { 0x30 };
        }
        let mut tu = obu(OBU_TEMPORAL_DELIMITER, &[]);
        if key {
            tu.extend(obu(OBU_SEQUENCE_HEADER, &sequence_payload(320, 240)));
        }
        tu.extend(obu(OBU_FRAME, &frame));
        tu
    }

    /// The unit without its delimiter: what the depacketizer gives back.
    fn without_delimiter(tu: &[u8]) -> Vec<u8> {
        tu[2..].to_vec()
    }

    fn send(
        p: &mut Av1Packetizer,
        d: &mut Av1Depacketizer,
        seq: &mut u16,
        ts: u32,
        tu: &[u8],
        mtu: usize,
    ) -> Option<(Vec<u8>, bool)> {
        let mut out = Payloads::new();
        p.packetize(tu, mtu, &mut out).unwrap();
        let n = out.len();
        let mut got = None;
        for (i, payload) in out.iter().enumerate() {
            assert!(payload.len() <= mtu, "{} > {mtu}", payload.len());
            *seq = seq.wrapping_add(1);
            let f = d.push(*seq, ts, i + 1 == n, payload).unwrap();
            got = f.map(|f| (f.data.to_vec(), f.keyframe));
        }
        got
    }

    #[test]
    fn units_round_trip_at_several_mtus() {
        for mtu in [3, 4, 20, 200, 1200] {
            let mut p = Av1Packetizer::default();
            let mut d = Av1Depacketizer::default();
            let mut seq = 65000;
            for i in 0..5u32 {
                let tu = unit(i == 0, 1 + 600 * i as usize, i as u8);
                let got = send(&mut p, &mut d, &mut seq, i * 3000, &tu, mtu);
                assert_eq!(got, Some((without_delimiter(&tu), i == 0)), "mtu {mtu}");
            }
        }
    }

    /// Elements as a browser sends them: W set (the last without a length), OBUs without
    /// size fields, an extension header, and a fragment across two packets.
    #[test]
    fn counted_elements_and_fragments() {
        let seq_header = sequence_payload(640, 360);
        let mut first = vec![0x68]; // Y, W = 2, N
        first.push(seq_header.len() as u8 + 1);
        first.push(OBU_SEQUENCE_HEADER << 3);
        first.extend(&seq_header);
        first.extend([OBU_FRAME << 3 | 0x04, 0x08, 0x10, 0xAA]); // with extension, KEY_FRAME
        let mut d = Av1Depacketizer::default();
        assert_eq!(d.push(1, 0, false, &first), Ok(None));
        let second = [0x90, 0xBB, 0xCC]; // Z, W = 1: the rest of the frame OBU
        let f = d.push(2, 0, true, &second).unwrap().unwrap();
        assert!(f.keyframe);
        let mut want = obu(OBU_SEQUENCE_HEADER, &seq_header);
        want.extend([OBU_FRAME << 3 | 0x06, 0x08, 0x04, 0x10, 0xAA, 0xBB, 0xCC]);
        assert_eq!(f.data, want);
        let (s, whole) = sequence_header(f.data).unwrap();
        assert_eq!((s.width, s.height), (640, 360));
        assert_eq!(whole, obu(OBU_SEQUENCE_HEADER, &seq_header));
    }

    #[test]
    fn malformed_payloads_are_errors() {
        use DepacketizeError::*;
        let mut d = Av1Depacketizer::default();
        // An empty payload is padding, not an error.
        assert_eq!(d.push(1, 0, true, &[]), Ok(None));
        assert_eq!(d.push(2, 1, true, &[0x80, 0x01, 0x30]), Err(NoStart));
        assert_eq!(
            d.push(3, 2, true, &[0x40, 0x02, 0x30, 0x00]),
            Err(Unfinished)
        );
        assert_eq!(d.push(4, 3, true, &[0x00, 0x05, 0x30]), Err(Truncated));
        assert_eq!(d.push(5, 4, true, &[0x00, 0xFF]), Err(BadAv1), "LEB128 cut");
        assert_eq!(
            d.push(6, 5, true, &[0x10, 0xB0]),
            Err(BadAv1),
            "forbidden bit"
        );
        assert_eq!(
            d.push(7, 6, true, &[0x18, 0x08, 0x00]),
            Err(BadAv1),
            "bad sequence header"
        );
        assert_eq!(d.stats().malformed_packets, 6);
        // A unit without a sequence header is no keyframe, so nothing comes out yet.
        assert_eq!(d.push(8, 7, true, &[0x10, 0x30, 0x10]), Ok(None));
    }

    proptest! {
        #[test]
        fn any_payloads_never_panic(
            packets in proptest::collection::vec(
                (0u16..8, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)),
                0..40,
            )
        ) {
            let mut d = Av1Depacketizer::default();
            let mut seq = 0u16;
            for (step, marker, payload) in packets {
                seq = seq.wrapping_add(step);
                if let Ok(Some(f)) = d.push(seq, u32::from(seq / 4), marker, &payload) {
                    prop_assert!(obus(f.data).count() > 0);
                }
            }
        }

        #[test]
        fn any_unit_round_trips(len in 1usize..5000, mtu in 3usize..1500) {
            let tu = unit(true, len, 3);
            let mut seq = 0;
            let got = send(&mut Av1Packetizer::default(), &mut Av1Depacketizer::default(), &mut seq, 0, &tu, mtu);
            prop_assert_eq!(got, Some((without_delimiter(&tu), true)));
        }
    }
}
