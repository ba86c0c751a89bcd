//! H264 for Matroska: access units arrive in Annex B form (start codes, as RTP depacketizers
//! and encoders give them), Matroska wants AVCC (each NAL unit after its 4-byte length) and
//! the decoder configuration record (`avcC`) of the stream's SPS and PPS.

/// NAL unit types: sequence and picture parameter sets.
const SPS: u8 = 7;
const PPS: u8 = 8;

/// The NAL units of an Annex B access unit (3- or 4-byte start codes), without start codes;
/// anything before the first start code is not a unit.
pub fn nal_units(annex_b: &[u8]) -> impl Iterator<Item = &[u8]> {
    NalUnits {
        data: annex_b,
        at: start_code_end(annex_b, 0),
    }
}

struct NalUnits<'a> {
    data: &'a [u8],
    /// Where the next unit starts (after its start code); `None` when done.
    at: Option<usize>,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // A loop, not recursion, past empty units: input of nothing but start codes must not
        // grow the stack.
        loop {
            let start = self.at?;
            let next = start_code_end(self.data, start);
            self.at = next;
            // The unit ends before the next start code, and before the extra zero of a 4-byte
            // one (which is not the unit's: units do not end with a zero byte).
            let end = next.map_or(self.data.len(), |n| {
                let code = n - 3;
                if code > start && self.data.get(code - 1) == Some(&0) {
                    code - 1
                } else {
                    code
                }
            });
            match self.data.get(start..end) {
                Some(unit) if !unit.is_empty() => return Some(unit),
                _ => continue,
            }
        }
    }
}

/// Where the unit after the first start code (0 0 1) at or after `from` begins.
fn start_code_end(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|i| from + i + 3)
}

/// Appends `annex_b`'s NAL units to `out` in AVCC form; returns the SPS and PPS among them, if
/// any (a keyframe carries them; the first ones make the track's `avcC`).
pub fn to_avcc<'a>(annex_b: &'a [u8], out: &mut Vec<u8>) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
    let (mut sps, mut pps) = (None, None);
    for unit in nal_units(annex_b) {
        match unit.first().map(|h| h & 0x1F) {
            Some(SPS) => sps = sps.or(Some(unit)),
            Some(PPS) => pps = pps.or(Some(unit)),
            _ => {}
        }
        // A NAL unit is far below 4 GiB (a datagram's worth of RTP packets at most).
        out.extend_from_slice(&(unit.len() as u32).to_be_bytes());
        out.extend_from_slice(unit);
    }
    (sps, pps)
}

/// The decoder configuration record (ISO/IEC 14496-15 §5.3.3) for one SPS and one PPS, with
/// 4-byte NAL lengths; `None` for an SPS too short to name its profile and level.
pub fn avcc_record(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    let profile = sps.get(1..4)?;
    let mut record = Vec::with_capacity(11 + sps.len() + pps.len());
    record.push(1);
    record.extend_from_slice(profile);
    // Reserved bits, then lengthSizeMinusOne = 3; reserved bits, then one SPS.
    record.push(0xFF);
    record.push(0xE1);
    record.extend_from_slice(&u16::try_from(sps.len()).ok()?.to_be_bytes());
    record.extend_from_slice(sps);
    record.push(1);
    record.extend_from_slice(&u16::try_from(pps.len()).ok()?.to_be_bytes());
    record.extend_from_slice(pps);
    Some(record)
}

/// Appends an AVCC frame (4-byte lengths, as we write them) to `out` in Annex B form, for a
/// decoder; stops at a length that runs past the frame (garbage).
pub fn to_annex_b(avcc: &[u8], out: &mut Vec<u8>) {
    let mut rest = avcc;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some(unit) = tail.get(..len) else {
            return;
        };
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(unit);
        rest = &tail[len..];
    }
}

/// Appends the SPS and PPS of a decoder configuration record to `out` in Annex B form (what a
/// decoder needs before a keyframe that does not carry them); stops at garbage.
pub fn record_to_annex_b(record: &[u8], out: &mut Vec<u8>) {
    let Some(&sps_count) = record.get(5) else {
        return;
    };
    let mut at = 6;
    let units = |count: usize, at: &mut usize, out: &mut Vec<u8>| -> Option<()> {
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes(
                record.get(*at..*at + 2)?.try_into().ok()?,
            ));
            let unit = record.get(*at + 2..*at + 2 + len)?;
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(unit);
            *at += 2 + len;
        }
        Some(())
    };
    if units(usize::from(sps_count & 0x1F), &mut at, out).is_none() {
        return;
    }
    let Some(&pps_count) = record.get(at) else {
        return;
    };
    at += 1;
    let _ = units(usize::from(pps_count), &mut at, out);
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annex_b_becomes_length_prefixed() {
        let au = [
            0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1F, 0xAA, // SPS
            0, 0, 1, 0x68, 0xCE, // PPS
            0, 0, 0, 1, 0x65, 0x88, 0x00, 0x10, // IDR slice (with a 0 inside)
        ];
        let mut out = Vec::new();
        let (sps, pps) = to_avcc(&au, &mut out);
        assert_eq!(sps, Some(&[0x67, 0x42, 0xC0, 0x1F, 0xAA][..]));
        assert_eq!(pps, Some(&[0x68, 0xCE][..]));
        assert_eq!(
            out,
            [
                0, 0, 0, 5, 0x67, 0x42, 0xC0, 0x1F, 0xAA, 0, 0, 0, 2, 0x68, 0xCE, 0, 0, 0, 4, 0x65,
                0x88, 0x00, 0x10
            ]
        );
        let record = avcc_record(sps.unwrap(), pps.unwrap()).unwrap();
        assert_eq!(&record[..8], [1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1, 0, 5]);
        assert_eq!(&record[13..], [1, 0, 2, 0x68, 0xCE]);
        let mut back = Vec::new();
        to_annex_b(&out, &mut back);
        let mut units: Vec<&[u8]> = nal_units(&back).collect();
        assert_eq!(units, nal_units(&au).collect::<Vec<_>>());
        back.clear();
        record_to_annex_b(&record, &mut back);
        units = nal_units(&back).collect();
        assert_eq!(units, [sps.unwrap(), pps.unwrap()]);
    }

    #[test]
    fn garbage_gives_nothing() {
        let mut out = Vec::new();
        assert_eq!(to_avcc(&[], &mut out), (None, None));
        assert_eq!(to_avcc(&[0, 0, 1], &mut out), (None, None));
        assert_eq!(to_avcc(&[0x65, 1, 2], &mut out), (None, None));
        // Nothing but start codes: no units, and no deep recursion.
        let codes: Vec<u8> = [0, 0, 1].repeat(1 << 20);
        assert_eq!(nal_units(&codes).count(), 0);
        assert!(out.is_empty());
        assert!(avcc_record(&[0x67], &[0x68]).is_none());
        to_annex_b(&[0, 0, 0, 9, 1, 2], &mut out);
        record_to_annex_b(&[1, 2, 3, 4, 5, 0xE1, 0, 9, 1], &mut out);
        assert!(out.is_empty());
    }
}
