//! The H264 RTP payload format (RFC 6184) in packetization-mode 1: single NAL unit packets,
//! STAP-A aggregates and FU-A fragments (STAP-B, MTAP and FU-B belong to the interleaved mode
//! and are refused).
//!
//! An access unit is every packet with one timestamp, the marker bit on its last; the
//! depacketizer writes it out in Annex B form with 4-byte start codes, which is what decoders
//! take. It is a keyframe when it holds an IDR slice together with an SPS and a PPS: encoders
//! send those first, so an access unit whose head was lost is not taken for one.

use crate::depacketize::{DepacketizeError, Depacketizer, PayloadFormat};
use crate::packetize::{PacketizeError, Packetizer, Payloads};

const START_CODE: [u8; 4] = [0, 0, 0, 1];
const IDR: u8 = 5;
const SPS: u8 = 7;
const PPS: u8 = 8;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// H264's [`PayloadFormat`].
#[derive(Debug, Clone, Copy, Default)]
pub struct H264 {
    /// A FU-A fragment has started and not ended.
    fragment_open: bool,
    seen_idr: bool,
    seen_sps: bool,
    seen_pps: bool,
}

/// Reassembles H264 access units.
pub type H264Depacketizer = Depacketizer<H264>;

impl H264 {
    fn note(&mut self, nal_type: u8) {
        match nal_type {
            IDR => self.seen_idr = true,
            SPS => self.seen_sps = true,
            PPS => self.seen_pps = true,
            _ => {}
        }
    }

    /// Appends one whole NAL unit.
    fn nal(&mut self, nal: &[u8], frame: &mut Vec<u8>) -> Result<(), DepacketizeError> {
        let &header = nal.first().ok_or(DepacketizeError::BadAggregate)?;
        if self.fragment_open {
            return Err(DepacketizeError::Unfinished);
        }
        self.note(header & 0x1F);
        frame.extend_from_slice(&START_CODE);
        frame.extend_from_slice(nal);
        Ok(())
    }
}

impl PayloadFormat for H264 {
    fn starts_frame(&mut self, _payload: &[u8]) -> Result<Option<bool>, DepacketizeError> {
        Ok(None)
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn append(&mut self, payload: &[u8], frame: &mut Vec<u8>) -> Result<(), DepacketizeError> {
        let (&header, rest) = payload.split_first().ok_or(DepacketizeError::Empty)?;
        match header & 0x1F {
            1..=23 => self.nal(payload, frame),
            STAP_A => {
                if rest.is_empty() {
                    return Err(DepacketizeError::BadAggregate);
                }
                // Check every length before writing anything, so a bad aggregate adds nothing.
                let mut check = rest;
                while !check.is_empty() {
                    let (len, tail) = split_len(check)?;
                    if len == 0 || len > tail.len() {
                        return Err(DepacketizeError::BadAggregate);
                    }
                    check = &tail[len..];
                }
                let mut rest = rest;
                while !rest.is_empty() {
                    let (len, tail) = split_len(rest)?;
                    let (nal, tail) = tail.split_at(len);
                    self.nal(nal, frame)?;
                    rest = tail;
                }
                Ok(())
            }
            FU_A => {
                let (&fu, data) = rest.split_first().ok_or(DepacketizeError::Truncated)?;
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                if data.is_empty() {
                    return Err(DepacketizeError::Truncated);
                }
                if start {
                    if end || self.fragment_open {
                        return Err(DepacketizeError::Unfinished);
                    }
                    let nal_type = fu & 0x1F;
                    self.note(nal_type);
                    frame.extend_from_slice(&START_CODE);
                    frame.push(header & 0xE0 | nal_type);
                } else if !self.fragment_open {
                    return Err(DepacketizeError::NoStart);
                }
                frame.extend_from_slice(data);
                self.fragment_open = !end;
                Ok(())
            }
            other => Err(DepacketizeError::Unsupported(other)),
        }
    }

    fn can_end(&self) -> bool {
        !self.fragment_open
    }

    fn keyframe(&self) -> bool {
        self.seen_idr && self.seen_sps && self.seen_pps
    }
}

/// Splits a STAP-A unit's 16-bit length off.
fn split_len(bytes: &[u8]) -> Result<(usize, &[u8]), DepacketizeError> {
    match bytes {
        [a, b, tail @ ..] => Ok((usize::from(u16::from_be_bytes([*a, *b])), tail)),
        _ => Err(DepacketizeError::BadAggregate),
    }
}

/// The NAL units of an Annex B access unit, without their start codes (3 or 4 bytes) or the
/// zero bytes that may trail them. Empty units (two start codes in a row) are skipped.
fn nal_units(frame: &[u8]) -> Result<impl Iterator<Item = &[u8]>, PacketizeError> {
    let first = find_start(frame).ok_or(PacketizeError::NotAnnexB)?;
    if frame[..first].iter().any(|&b| b != 0) {
        return Err(PacketizeError::NotAnnexB);
    }
    let mut rest = &frame[first + 3..];
    Ok(std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let (nal, next) = match find_start(rest) {
                Some(i) => (&rest[..i], &rest[i + 3..]),
                None => (rest, &[][..]),
            };
            rest = next;
            let end = nal.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if end > 0 {
                return Some(&nal[..end]);
            }
        }
    }))
}

/// Where the next 3-byte start code (0, 0, 1) begins.
fn find_start(bytes: &[u8]) -> Option<usize> {
    bytes.windows(3).position(|w| w == [0, 0, 1])
}

/// Splits Annex B access units into payloads: NAL units that fit together go in one STAP-A
/// (typically SPS and PPS, with a small slice), one that fits alone in a single NAL unit
/// packet, and one too large for the MTU in FU-A fragments.
#[derive(Debug, Clone, Copy, Default)]
pub struct H264Packetizer;

impl H264Packetizer {
    /// Writes the NAL units in `group` (all fitting one payload) as one packet.
    fn flush(group: &[&[u8]], out: &mut Payloads) {
        match group {
            [] => {}
            [nal] => {
                out.extend(nal);
                out.finish();
            }
            nals => {
                // F is the OR of the units', NRI their maximum (RFC 6184 §5.7.1).
                let f = nals.iter().fold(0, |f, n| f | (n[0] & 0x80));
                let nri = nals.iter().map(|n| n[0] & 0x60).max().unwrap_or(0);
                out.extend(&[f | nri | STAP_A]);
                for nal in nals {
                    // A unit in a group fits the MTU, which fits in 16 bits (checked by the caller).
                    let len = u16::try_from(nal.len()).unwrap_or(u16::MAX);
                    out.extend(&len.to_be_bytes());
                    out.extend(nal);
                }
                out.finish();
            }
        }
    }
}

impl Packetizer for H264Packetizer {
    fn packetize(
        &mut self,
        frame: &[u8],
        mtu: usize,
        out: &mut Payloads,
    ) -> Result<(), PacketizeError> {
        out.clear();
        if !(3..=usize::from(u16::MAX)).contains(&mtu) {
            return Err(PacketizeError::MtuTooSmall(mtu));
        }
        // At most this many NAL units wait for a STAP-A at once; an array, not a Vec, so a
        // frame is packetized without allocating. A full group is sent and a new one begun.
        const GROUP: usize = 16;
        let mut group: [&[u8]; GROUP] = [&[]; GROUP];
        let mut grouped = 0;
        let mut group_len = 1; // the STAP-A header
        let mut any = false;
        for nal in nal_units(frame)? {
            any = true;
            if nal.len() + 2 + group_len <= mtu && grouped < GROUP {
                group[grouped] = nal;
                grouped += 1;
                group_len += 2 + nal.len();
                continue;
            }
            Self::flush(&group[..grouped], out);
            grouped = 0;
            group_len = 1;
            if nal.len() + 3 <= mtu {
                group[0] = nal;
                grouped = 1;
                group_len += 2 + nal.len();
            } else if nal.len() <= mtu {
                out.extend(nal);
                out.finish();
            } else {
                let header = nal[0];
                let body = &nal[1..];
                let chunk = mtu - 2;
                let count = body.len().div_ceil(chunk);
                for (i, part) in body.chunks(chunk).enumerate() {
                    let mut fu = header & 0x1F;
                    if i == 0 {
                        fu |= 0x80;
                    }
                    if i + 1 == count {
                        fu |= 0x40;
                    }
                    out.extend(&[header & 0xE0 | FU_A, fu]);
                    out.extend(part);
                    out.finish();
                }
            }
        }
        Self::flush(&group[..grouped], out);
        if !any {
            out.clear();
            return Err(PacketizeError::EmptyFrame);
        }
        Ok(())
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An Annex B access unit of NAL units with these types and body lengths.
    fn access_unit(nals: &[(u8, usize)], seed: u8) -> Vec<u8> {
        let mut au = Vec::new();
        for (k, &(nal_type, len)) in nals.iter().enumerate() {
            au.extend_from_slice(&START_CODE);
            au.push(0x60 | nal_type);
            // Bodies without zero bytes, so no start code hides in them and none ends in 0.
            au.extend((0..len).map(|i| ((i as u8) ^ seed ^ (k as u8)) | 0x01));
        }
        au
    }

    fn key(size: usize, seed: u8) -> Vec<u8> {
        access_unit(&[(SPS, 12), (PPS, 4), (IDR, size)], seed)
    }

    fn delta(size: usize, seed: u8) -> Vec<u8> {
        access_unit(&[(1, size)], seed)
    }

    /// Packetizes and pushes one access unit; returns what came out of the last push.
    fn send(
        d: &mut H264Depacketizer,
        seq: &mut u16,
        ts: u32,
        au: &[u8],
        mtu: usize,
    ) -> Option<(Vec<u8>, bool)> {
        let mut out = Payloads::new();
        H264Packetizer.packetize(au, mtu, &mut out).unwrap();
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
    fn round_trips_at_several_sizes_and_mtus() {
        for mtu in [3, 20, 100, 1200] {
            let mut d = H264Depacketizer::default();
            let mut seq = 65500;
            for (i, size) in [1usize, 30, 1199, 1200, 9000].into_iter().enumerate() {
                let ts = i as u32 * 3000;
                let k = key(size, i as u8);
                assert_eq!(send(&mut d, &mut seq, ts, &k, mtu), Some((k, true)));
                let f = delta(size, i as u8);
                assert_eq!(send(&mut d, &mut seq, ts + 1500, &f, mtu), Some((f, false)));
            }
        }
    }

    #[test]
    fn packetizer_picks_stap_a_single_and_fu_a() {
        let mut out = Payloads::new();
        H264Packetizer
            .packetize(&key(2000, 0), 1200, &mut out)
            .unwrap();
        let types: Vec<u8> = out.iter().map(|p| p[0] & 0x1F).collect();
        assert_eq!(types, [STAP_A, FU_A, FU_A]);
        let fu: Vec<u8> = out.iter().skip(1).map(|p| p[1]).collect();
        assert_eq!(fu, [0x80 | IDR, 0x40 | IDR]);
        H264Packetizer
            .packetize(&delta(500, 0), 1200, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out.iter().next().unwrap()[0] & 0x1F, 1);
        // 3-byte start codes and trailing zeros are accepted.
        H264Packetizer
            .packetize(
                &[0, 0, 1, 0x65, 9, 0, 0, 0, 0, 1, 0x41, 7, 0],
                1200,
                &mut out,
            )
            .unwrap();
        assert_eq!(
            out.iter().next().unwrap(),
            [STAP_A | 0x60, 0, 2, 0x65, 9, 0, 2, 0x41, 7]
        );
    }

    #[test]
    fn packetizer_refuses_bad_input() {
        let mut out = Payloads::new();
        let p = &mut H264Packetizer;
        assert_eq!(
            p.packetize(&[], 1200, &mut out),
            Err(PacketizeError::NotAnnexB)
        );
        assert_eq!(
            p.packetize(&[0x65, 1], 1200, &mut out),
            Err(PacketizeError::NotAnnexB)
        );
        assert_eq!(
            p.packetize(&[0, 0, 0, 1], 1200, &mut out),
            Err(PacketizeError::EmptyFrame)
        );
        assert_eq!(
            p.packetize(&key(10, 0), 2, &mut out),
            Err(PacketizeError::MtuTooSmall(2))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_payloads_are_errors() {
        use DepacketizeError::*;
        for (payload, want) in [
            (&[0x7C][..], Truncated),                      // FU-A with no FU header
            (&[0x7C, 0x85][..], Truncated),                // FU-A with no data
            (&[0x7C, 0x05, 1][..], NoStart),               // FU-A middle without start
            (&[0x7C, 0xC5, 1][..], Unfinished),            // FU-A start and end at once
            (&[0x78][..], BadAggregate),                   // STAP-A with nothing
            (&[0x78, 0][..], BadAggregate),                // STAP-A with half a length
            (&[0x78, 0, 5, 0x67][..], BadAggregate),       // STAP-A length past the end
            (&[0x78, 0, 0, 0, 1, 0x68][..], BadAggregate), // STAP-A with an empty unit
            (&[0x79, 0, 1][..], Unsupported(25)),          // STAP-B
            (&[0x7D, 0x85, 1][..], Unsupported(29)),       // FU-B
            (&[0x60][..], Unsupported(0)),
            (&[0x7F][..], Unsupported(31)),
        ] {
            let mut d = H264Depacketizer::default();
            assert_eq!(d.push(1, 0, true, payload), Err(want), "{payload:?}");
            assert_eq!(d.stats().malformed_packets, 1);
        }
        // A frame that ends inside a fragment.
        let mut d = H264Depacketizer::default();
        assert_eq!(d.push(1, 0, true, &[0x7C, 0x85, 1]), Err(Unfinished));
        // A fragment started inside another.
        let mut d = H264Depacketizer::default();
        assert_eq!(d.push(1, 0, false, &[0x7C, 0x85, 1]), Ok(None));
        assert_eq!(d.push(2, 0, false, &[0x7C, 0x85, 1]), Err(Unfinished));
    }

    #[test]
    fn loss_drops_the_access_unit_and_wants_a_keyframe_until_one_comes() {
        let mut d = H264Depacketizer::default();
        let mut seq = 0;
        assert!(send(&mut d, &mut seq, 0, &delta(10, 0), 1200).is_none());
        assert!(send(&mut d, &mut seq, 3000, &key(3000, 0), 1200).is_some());
        assert!(!d.keyframe_wanted());

        // The second of three fragments is lost: the rest of the unit is skipped.
        let mut out = Payloads::new();
        H264Packetizer
            .packetize(&delta(3000, 1), 1200, &mut out)
            .unwrap();
        let v: Vec<&[u8]> = out.iter().collect();
        assert_eq!(v.len(), 3);
        assert_eq!(d.push(seq + 1, 6000, false, v[0]), Ok(None));
        assert_eq!(d.push(seq + 3, 6000, true, v[2]), Ok(None));
        seq += 3;
        assert!(d.keyframe_wanted());
        assert_eq!(d.stats().skipped_packets, 1);

        // Delta units are dropped until a keyframe.
        assert!(send(&mut d, &mut seq, 9000, &delta(100, 2), 1200).is_none());
        // An IDR without SPS and PPS is no keyframe.
        let idr = access_unit(&[(IDR, 50)], 3);
        assert!(send(&mut d, &mut seq, 12000, &idr, 1200).is_none());
        let k = key(100, 4);
        assert_eq!(send(&mut d, &mut seq, 15000, &k, 1200), Some((k, true)));
        assert!(!d.keyframe_wanted());

        // A lost marker packet: the next timestamp breaks the unit that never ended.
        let f = delta(2000, 5);
        H264Packetizer.packetize(&f, 1200, &mut out).unwrap();
        let first = out.iter().next().unwrap().to_vec();
        assert_eq!(d.push(seq + 1, 18000, false, &first), Ok(None));
        seq += 1;
        assert!(send(&mut d, &mut seq, 21000, &delta(10, 6), 1200).is_none());
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
            let mut d = H264Depacketizer::default();
            let mut seq = 0u16;
            for (step, marker, payload) in packets {
                seq = seq.wrapping_add(step);
                if let Ok(Some(f)) = d.push(seq, u32::from(seq / 4), marker, &payload) {
                    prop_assert!(f.data.starts_with(&START_CODE));
                }
            }
        }

        #[test]
        fn any_access_unit_round_trips(
            nals in proptest::collection::vec((1u8..24, 0usize..3000), 1..6),
            mtu in 3usize..1500,
        ) {
            let au = access_unit(&nals, 1);
            let mut d = H264Depacketizer::new(H264::default());
            // Not waiting for a keyframe: start from one.
            let mut seq = 0;
            prop_assert!(send(&mut d, &mut seq, 0, &key(5, 0), 1200).is_some());
            let keyframe = nals.iter().any(|n| n.0 == IDR)
                && nals.iter().any(|n| n.0 == SPS)
                && nals.iter().any(|n| n.0 == PPS);
            prop_assert_eq!(send(&mut d, &mut seq, 3000, &au, mtu), Some((au.clone(), keyframe)));
        }
    }
}
