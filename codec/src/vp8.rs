//! The VP8 RTP payload format (RFC 7741): a payload descriptor, then part of a VP8 frame.
//!
//! The descriptor's S bit with partition index 0 marks a frame's first packet; the marker bit
//! its last. A frame is a keyframe when the P bit (bit 0) of its first byte is 0 (RFC 6386
//! §9.1). Picture ids, TL0PICIDX and the temporal layer fields are read past but not used here:
//! the mixer decodes every frame it gets and asks for a keyframe on any gap.

use crate::depacketize::{DepacketizeError, Depacketizer, PayloadFormat};
use crate::packetize::{PacketizeError, Packetizer, Payloads};

/// The length of the descriptor the packetizer writes: the first byte, the extension byte and
/// a 15-bit picture id.
const DESCRIPTOR_LEN: usize = 4;

/// The parts of a VP8 payload descriptor the depacketizer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// S bit and partition index 0: the first packet of a frame.
    pub frame_start: bool,
    /// The picture id (7 or 15 bits), if present.
    pub picture_id: Option<u16>,
    /// Where the VP8 data begins in the payload.
    pub len: usize,
}

impl Descriptor {
    /// Reads the descriptor at the start of `payload`; the payload must hold VP8 data after it.
    pub fn parse(payload: &[u8]) -> Result<Self, DepacketizeError> {
        let (&first, _) = payload.split_first().ok_or(DepacketizeError::Empty)?;
        let byte = |i: usize| payload.get(i).copied().ok_or(DepacketizeError::Truncated);
        let mut len = 1;
        let mut picture_id = None;
        if first & 0x80 != 0 {
            let ext = byte(1)?;
            len = 2;
            if ext & 0x80 != 0 {
                let high = byte(len)?;
                if high & 0x80 != 0 {
                    let low = byte(len + 1)?;
                    picture_id = Some(u16::from(high & 0x7F) << 8 | u16::from(low));
                    len += 2;
                } else {
                    picture_id = Some(u16::from(high));
                    len += 1;
                }
            }
            if ext & 0x40 != 0 {
                len += 1; // TL0PICIDX
            }
            if ext & 0x30 != 0 {
                len += 1; // TID, Y, KEYIDX
            }
        }
        if payload.len() <= len {
            return Err(DepacketizeError::Truncated);
        }
        Ok(Self {
            frame_start: first & 0x10 != 0 && first & 0x07 == 0,
            picture_id,
            len,
        })
    }
}

/// VP8's [`PayloadFormat`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Vp8 {
    /// The descriptor length of the payload being read, from `starts_frame` to `append`.
    descriptor_len: usize,
    keyframe: bool,
    /// Whether the frame's first VP8 byte has been seen.
    started: bool,
}

/// Reassembles VP8 frames.
pub type Vp8Depacketizer = Depacketizer<Vp8>;

impl PayloadFormat for Vp8 {
    fn starts_frame(&mut self, payload: &[u8]) -> Result<Option<bool>, DepacketizeError> {
        let d = Descriptor::parse(payload)?;
        self.descriptor_len = d.len;
        Ok(Some(d.frame_start))
    }

    fn reset(&mut self) {
        self.keyframe = false;
        self.started = false;
    }

    fn append(&mut self, payload: &[u8], frame: &mut Vec<u8>) -> Result<(), DepacketizeError> {
        let data = payload
            .get(self.descriptor_len..)
            .ok_or(DepacketizeError::Truncated)?;
        if !self.started {
            self.started = true;
            self.keyframe = data.first().is_some_and(|b| b & 0x01 == 0);
        }
        frame.extend_from_slice(data);
        Ok(())
    }

    fn keyframe(&self) -> bool {
        self.keyframe
    }
}

/// Splits VP8 frames into payloads, each with a descriptor carrying a 15-bit picture id that
/// counts frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vp8Packetizer {
    picture_id: u16,
}

impl Vp8Packetizer {
    /// Starts counting pictures at `picture_id` (taken modulo 2^15); a random start lets a
    /// receiver tell a restarted stream from a continued one.
    pub fn new(picture_id: u16) -> Self {
        Self {
            picture_id: picture_id & 0x7FFF,
        }
    }
}

impl Packetizer for Vp8Packetizer {
    fn packetize(
        &mut self,
        frame: &[u8],
        mtu: usize,
        out: &mut Payloads,
    ) -> Result<(), PacketizeError> {
        out.clear();
        if frame.is_empty() {
            return Err(PacketizeError::EmptyFrame);
        }
        if mtu <= DESCRIPTOR_LEN {
            return Err(PacketizeError::MtuTooSmall(mtu));
        }
        let [high, low] = self.picture_id.to_be_bytes();
        for (i, chunk) in frame.chunks(mtu - DESCRIPTOR_LEN).enumerate() {
            // X=1, S on the first packet, partition index 0; I=1; M=1 and the 15-bit id.
            let first = if i == 0 { 0x90 } else { 0x80 };
            out.extend(&[first, 0x80, 0x80 | high, low]);
            out.extend(chunk);
            out.finish();
        }
        self.picture_id = (self.picture_id + 1) & 0x7FFF;
        Ok(())
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A VP8 frame of `len` bytes whose first byte says keyframe or not.
    fn frame(len: usize, keyframe: bool, seed: u8) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        f[0] = if keyframe { 0x10 } else { 0x11 };
        f
    }

    /// Packetizes and pushes one frame; returns what came out of the last push.
    fn send(
        p: &mut Vp8Packetizer,
        d: &mut Vp8Depacketizer,
        seq: &mut u16,
        ts: u32,
        data: &[u8],
        mtu: usize,
    ) -> Option<(Vec<u8>, bool)> {
        let mut out = Payloads::new();
        p.packetize(data, mtu, &mut out).unwrap();
        let mut got = None;
        let n = out.len();
        for (i, payload) in out.iter().enumerate() {
            assert!(payload.len() <= mtu);
            *seq = seq.wrapping_add(1);
            let f = d.push(*seq, ts, i + 1 == n, payload).unwrap();
            assert!(f.is_none() || i + 1 == n);
            got = f.map(|f| {
                assert_eq!(f.timestamp, ts);
                (f.data.to_vec(), f.keyframe)
            });
        }
        got
    }

    #[test]
    fn round_trips_at_several_sizes_and_mtus() {
        for mtu in [5, 17, 200, 1200] {
            let mut p = Vp8Packetizer::new(0x7FFE); // wraps during the test
            let mut d = Vp8Depacketizer::default();
            let mut seq = 65530;
            for (i, len) in [1usize, 2, 100, 1195, 1196, 5000].into_iter().enumerate() {
                let f = frame(len, i == 0, i as u8);
                let got = send(&mut p, &mut d, &mut seq, i as u32 * 3000, &f, mtu).unwrap();
                assert_eq!(got, (f, i == 0), "mtu {mtu} len {len}");
            }
            assert_eq!(d.stats().frames, 6);
        }
    }

    #[test]
    fn descriptor_reads_every_extension() {
        // X; I with a 7-bit id; L; T/K; then one byte of data.
        let d = Descriptor::parse(&[0x90, 0xF0, 0x05, 0x11, 0x22, 0xAA]).unwrap();
        assert_eq!(
            d,
            Descriptor {
                frame_start: true,
                picture_id: Some(5),
                len: 5
            }
        );
        // 15-bit id, partition 1 (not a frame start).
        let d = Descriptor::parse(&[0x11, 0xAA]).unwrap();
        assert!(!d.frame_start);
        let d = Descriptor::parse(&[0x80, 0x80, 0x81, 0x02, 0xAA]).unwrap();
        assert_eq!(d.picture_id, Some(0x102));
        assert_eq!(d.len, 4);
        // No extension at all.
        assert_eq!(Descriptor::parse(&[0x10, 0xAA]).unwrap().len, 1);
    }

    #[test]
    fn malformed_descriptors_are_errors() {
        use DepacketizeError::*;
        for (payload, want) in [
            (&[][..], Empty),
            (&[0x90][..], Truncated),
            (&[0x90, 0x80][..], Truncated),
            (&[0x90, 0x80, 0x80, 0x01][..], Truncated),
            (&[0x90, 0x40, 0x01][..], Truncated),
            (&[0x10][..], Truncated),
        ] {
            assert_eq!(Descriptor::parse(payload), Err(want), "{payload:?}");
            let mut d = Vp8Depacketizer::default();
            // An empty payload is padding to the depacketizer, not an error.
            let pushed = if payload.is_empty() {
                Ok(None)
            } else {
                Err(want)
            };
            assert_eq!(d.push(1, 0, true, payload), pushed);
        }
        let mut d = Vp8Depacketizer::default();
        // A continuation with no start before it.
        assert_eq!(d.push(1, 0, true, &[0x00, 0x10]), Err(NoStart));
        assert_eq!(d.stats().malformed_packets, 1);
    }

    #[test]
    fn loss_drops_the_frame_and_wants_a_keyframe_until_one_comes() {
        let mut p = Vp8Packetizer::new(0);
        let mut d = Vp8Depacketizer::default();
        let mut seq = 0;
        assert!(d.keyframe_wanted());
        // A delta frame first: dropped, a keyframe is still wanted.
        assert_eq!(
            send(&mut p, &mut d, &mut seq, 0, &frame(50, false, 0), 1200),
            None
        );
        assert!(d.keyframe_wanted());
        let key = frame(3000, true, 1);
        assert!(send(&mut p, &mut d, &mut seq, 3000, &key, 1200).is_some());
        assert!(!d.keyframe_wanted());

        // The middle packet of a three-packet frame is lost.
        let mut out = Payloads::new();
        p.packetize(&frame(3000, false, 2), 1200, &mut out).unwrap();
        let v: Vec<&[u8]> = out.iter().collect();
        assert_eq!(v.len(), 3);
        assert_eq!(d.push(seq + 1, 6000, false, v[0]), Ok(None));
        assert_eq!(d.push(seq + 3, 6000, true, v[2]), Ok(None));
        seq += 3;
        assert!(d.keyframe_wanted());
        assert_eq!(d.stats().lost_packets, 1);
        assert_eq!(d.stats().skipped_packets, 1);

        // A whole delta frame arrives cleanly but is no keyframe: still dropped.
        assert_eq!(
            send(&mut p, &mut d, &mut seq, 9000, &frame(10, false, 3), 1200),
            None
        );
        assert!(d.keyframe_wanted());
        let key = frame(10, true, 4);
        assert_eq!(
            send(&mut p, &mut d, &mut seq, 12000, &key, 1200),
            Some((key, true))
        );
        assert!(!d.keyframe_wanted());
        assert_eq!(d.stats().dropped_frames, 3);
    }

    #[test]
    fn reordering_is_not_undone() {
        let mut p = Vp8Packetizer::new(0);
        let mut d = Vp8Depacketizer::default();
        let mut out = Payloads::new();
        p.packetize(&frame(30, true, 0), 12, &mut out).unwrap();
        let v: Vec<&[u8]> = out.iter().collect();
        assert_eq!(d.push(1, 0, false, v[0]), Ok(None));
        assert_eq!(d.push(3, 0, false, v[2]), Ok(None));
        assert_eq!(d.push(2, 0, false, v[1]), Err(DepacketizeError::Late(2)));
        assert!(d.keyframe_wanted());
    }

    proptest! {
        #[test]
        fn any_payloads_never_panic(
            packets in proptest::collection::vec(
                (0u16..8, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)),
                0..40,
            )
        ) {
            let mut d = Vp8Depacketizer::default();
            let mut seq = 0u16;
            for (step, marker, payload) in packets {
                seq = seq.wrapping_add(step);
                if let Ok(Some(f)) = d.push(seq, u32::from(seq / 4), marker, &payload) {
                    prop_assert!(!f.data.is_empty());
                }
            }
        }

        #[test]
        fn any_frame_round_trips(len in 1usize..6000, mtu in 5usize..1500) {
            let f = frame(len, true, 7);
            let mut seq = 0;
            let got = send(&mut Vp8Packetizer::new(9), &mut Vp8Depacketizer::default(), &mut seq, 0, &f, mtu);
            prop_assert_eq!(got, Some((f, true)));
        }
    }
}
