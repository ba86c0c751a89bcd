//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions,
//! RTCP RTPFB FMT 15): which packets of a transport arrived and when, by transport-wide
//! sequence number.
//!
//! This is the first piece of issue 12's bandwidth estimation: the SFU will write this
//! feedback toward publishers (so the browser's own estimator works) and read it from
//! subscribers (to drive its send-side estimator and layer choice). Parsing is lazy and
//! allocates nothing: [`Feedback::results`] walks the status chunks and the receive deltas in
//! step.
//!
//! Layout after the two SSRCs: base sequence (16), status count (16), reference time (24,
//! signed, 64 ms units), feedback packet count (8); then 16-bit status chunks (run length, or a
//! vector of 14 one-bit or 7 two-bit symbols) until `status count` packets are described; then
//! one receive delta per received packet (one byte, or two signed bytes for "large or
//! negative"), in 250 µs ticks.

use crate::wire::be_u16;

/// One tick of a receive delta, in microseconds.
pub const DELTA_TICK_US: i64 = 250;
/// One unit of the reference time, in microseconds.
pub const REFERENCE_UNIT_US: i64 = 64_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("transport-cc feedback is truncated")]
    Truncated,
    #[error("transport-cc feedback uses the reserved status symbol")]
    ReservedSymbol,
    #[error("a receive delta does not fit in 16 bits of 250 µs ticks")]
    DeltaTooLarge,
    #[error("the buffer is too small for the feedback")]
    BufferTooSmall,
}

/// One feedback message, as received (the part after the media SSRC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback<'a> {
    pub base_sequence: u16,
    pub status_count: u16,
    /// In 64 ms units, sign-extended from 24 bits.
    pub reference_time: i32,
    pub feedback_count: u8,
    /// The status chunks and receive deltas.
    raw: &'a [u8],
}

impl<'a> Feedback<'a> {
    /// Reads the fixed fields of `fci` (the feedback control information).
    pub fn parse(fci: &'a [u8]) -> Result<Feedback<'a>, Error> {
        let (Some(base_sequence), Some(status_count), Some(fixed)) =
            (be_u16(fci, 0), be_u16(fci, 2), fci.get(4..8))
        else {
            return Err(Error::Truncated);
        };
        // 24 bits, sign-extended through the top byte.
        let reference_time = i32::from_be_bytes([fixed[0], fixed[1], fixed[2], 0]) >> 8;
        Ok(Feedback {
            base_sequence,
            status_count,
            reference_time,
            feedback_count: fixed[3],
            raw: &fci[8..],
        })
    }

    /// Every packet the feedback describes, in sequence order: its transport-wide sequence
    /// number and, when it arrived, its arrival time in microseconds on the receiver's clock
    /// (reference time plus the deltas so far). Errors end the iteration.
    pub fn results(&self) -> Results<'a> {
        // The deltas start after the last chunk that is needed for `status_count` packets.
        let mut described = 0usize;
        let mut at = 0usize;
        let wanted = usize::from(self.status_count);
        while described < wanted {
            let Some(chunk) = be_u16(self.raw, at) else {
                break;
            };
            described += Chunk::from(chunk).len();
            at += 2;
        }
        Results {
            raw: self.raw,
            chunk_at: 0,
            chunk: None,
            in_chunk: 0,
            left: self.status_count,
            delta_at: at,
            sequence: self.base_sequence,
            time_us: i64::from(self.reference_time) * REFERENCE_UNIT_US,
            broken: described < wanted,
        }
    }
}

/// A status chunk.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// `len` packets with one symbol.
    Run { symbol: u8, len: u16 },
    /// Two-bit (7) or one-bit (14) symbols, first in the top bits.
    Vector { two_bit: bool, bits: u16 },
}

impl From<u16> for Chunk {
    fn from(v: u16) -> Chunk {
        if v & 0x8000 == 0 {
            Chunk::Run {
                symbol: ((v >> 13) & 0b11) as u8,
                len: v & 0x1FFF,
            }
        } else {
            Chunk::Vector {
                two_bit: v & 0x4000 != 0,
                bits: v & 0x3FFF,
            }
        }
    }
}

impl Chunk {
    fn len(self) -> usize {
        match self {
            Chunk::Run { len, .. } => usize::from(len),
            Chunk::Vector { two_bit: true, .. } => 7,
            Chunk::Vector { two_bit: false, .. } => 14,
        }
    }

    fn symbol(self, i: usize) -> u8 {
        match self {
            Chunk::Run { symbol, .. } => symbol,
            Chunk::Vector {
                two_bit: true,
                bits,
            } => ((bits >> (12 - 2 * i)) & 0b11) as u8,
            Chunk::Vector {
                two_bit: false,
                bits,
            } => ((bits >> (13 - i)) & 1) as u8,
        }
    }
}

/// The packets of a [`Feedback`], decoded as they are read.
#[derive(Debug, Clone)]
pub struct Results<'a> {
    raw: &'a [u8],
    chunk_at: usize,
    chunk: Option<Chunk>,
    in_chunk: usize,
    left: u16,
    delta_at: usize,
    sequence: u16,
    time_us: i64,
    broken: bool,
}

impl Iterator for Results<'_> {
    type Item = Result<(u16, Option<i64>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        if self.broken {
            self.left = 0;
            return Some(Err(Error::Truncated));
        }
        let chunk = loop {
            match self.chunk {
                Some(c) if self.in_chunk < c.len() => break c,
                _ => {
                    // The next chunk (an empty run describes nothing and is passed over).
                    let Some(v) = be_u16(self.raw, self.chunk_at) else {
                        self.left = 0;
                        return Some(Err(Error::Truncated));
                    };
                    self.chunk_at += 2;
                    self.in_chunk = 0;
                    self.chunk = Some(Chunk::from(v));
                }
            }
        };
        let symbol = chunk.symbol(self.in_chunk);
        self.in_chunk += 1;
        self.left -= 1;
        let sequence = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        let delta = match symbol {
            0 => return Some(Ok((sequence, None))),
            1 => self.raw.get(self.delta_at).map(|b| i64::from(*b)),
            2 => be_u16(self.raw, self.delta_at).map(|v| i64::from(v as i16)),
            _ => {
                self.left = 0;
                return Some(Err(Error::ReservedSymbol));
            }
        };
        let Some(delta) = delta else {
            self.left = 0;
            return Some(Err(Error::Truncated));
        };
        self.delta_at += usize::from(symbol);
        self.time_us += delta * DELTA_TICK_US;
        Some(Ok((sequence, Some(self.time_us))))
    }
}

/// Writes the feedback control information for packets `base_sequence`,
/// `base_sequence + 1`, ... whose arrival times (µs on our clock, `None`: lost) are
/// `arrivals`; returns the length written (a multiple of four, zero-padded). Two-bit status
/// vectors throughout: simple, and at most one byte per seven packets more than the tightest
/// run-length coding.
pub fn write(
    out: &mut [u8],
    base_sequence: u16,
    reference_time: i32,
    feedback_count: u8,
    arrivals: &[Option<i64>],
) -> Result<usize, Error> {
    let count = u16::try_from(arrivals.len()).map_err(|_| Error::BufferTooSmall)?;
    let mut put = |at: usize, bytes: &[u8]| -> Result<(), Error> {
        out.get_mut(at..at + bytes.len())
            .ok_or(Error::BufferTooSmall)?
            .copy_from_slice(bytes);
        Ok(())
    };
    put(0, &base_sequence.to_be_bytes())?;
    put(2, &count.to_be_bytes())?;
    let reference = reference_time.to_be_bytes();
    put(
        4,
        &[reference[1], reference[2], reference[3], feedback_count],
    )?;
    let chunks = arrivals.len().div_ceil(7);
    let mut delta_at = 8 + 2 * chunks;
    // Deltas are taken between rounded tick positions, so rounding never accumulates.
    let mut previous = i64::from(reference_time) * REFERENCE_UNIT_US / DELTA_TICK_US;
    for (c, group) in arrivals.chunks(7).enumerate() {
        let mut bits = 0xC000u16;
        for (i, arrival) in group.iter().enumerate() {
            let symbol = match arrival {
                None => 0u16,
                Some(us) => {
                    let tick = (us + DELTA_TICK_US / 2).div_euclid(DELTA_TICK_US);
                    let delta = tick - previous;
                    previous = tick;
                    if let Ok(small) = u8::try_from(delta) {
                        put(delta_at, &[small])?;
                        delta_at += 1;
                        1
                    } else {
                        let large = i16::try_from(delta).map_err(|_| Error::DeltaTooLarge)?;
                        put(delta_at, &large.to_be_bytes())?;
                        delta_at += 2;
                        2
                    }
                }
            };
            bits |= symbol << (12 - 2 * i);
        }
        put(8 + 2 * c, &bits.to_be_bytes())?;
    }
    let len = delta_at.next_multiple_of(4);
    put(delta_at, &[0, 0, 0][..len - delta_at])?;
    Ok(len)
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn decode(fci: &[u8]) -> Vec<(u16, Option<i64>)> {
        let f = Feedback::parse(fci).unwrap();
        f.results().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn round_trips_losses_small_large_and_negative_deltas() {
        let reference = 100; // 6.4 s
        let t0 = i64::from(reference) * REFERENCE_UNIT_US;
        let arrivals = [
            Some(t0 + 1_000),
            None,
            Some(t0 + 1_250),
            Some(t0 + 200_000), // large: 796 ticks
            Some(t0 + 150_000), // negative
            None,
            None,
            Some(t0 + 150_500),
            Some(t0 + 150_500),
        ];
        let mut buf = [0u8; 64];
        let n = write(&mut buf, 65_534, reference, 7, &arrivals).unwrap();
        assert_eq!(n % 4, 0);
        let f = Feedback::parse(&buf[..n]).unwrap();
        assert_eq!(
            (
                f.base_sequence,
                f.status_count,
                f.reference_time,
                f.feedback_count
            ),
            (65_534, 9, 100, 7)
        );
        let got = decode(&buf[..n]);
        let sequences: Vec<u16> = got.iter().map(|g| g.0).collect();
        assert_eq!(sequences, [65_534, 65_535, 0, 1, 2, 3, 4, 5, 6], "wraps");
        let times: Vec<Option<i64>> = got.iter().map(|g| g.1).collect();
        assert_eq!(times, arrivals);
    }

    /// A message as libwebrtc writes it: a run-length chunk, a one-bit vector, a negative
    /// reference time.
    #[test]
    fn reads_run_length_and_one_bit_chunks() {
        let mut fci = vec![0x00, 0x0A, 0x00, 0x10]; // base 10, 16 packets
        fci.extend_from_slice(&[0xFF, 0xFF, 0xFE, 0x03]); // reference -2, count 3
        fci.extend_from_slice(&0x2002u16.to_be_bytes()); // run: 2 × small delta
        fci.extend_from_slice(&0x8001u16.to_be_bytes()); // 1-bit vector: 13 lost, 1 received
        fci.extend_from_slice(&[4, 8, 1, 0]); // three deltas, padding
        let f = Feedback::parse(&fci).unwrap();
        assert_eq!(f.reference_time, -2);
        let got = decode(&fci);
        assert_eq!(got.len(), 16);
        let t0 = -2 * REFERENCE_UNIT_US;
        assert_eq!(got[0], (10, Some(t0 + 1_000)));
        assert_eq!(got[1], (11, Some(t0 + 3_000)));
        assert_eq!(got[2], (12, None));
        assert_eq!(got[15], (25, Some(t0 + 3_250)));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(Feedback::parse(&[0; 7]), Err(Error::Truncated));
        // 5 packets promised, no chunk.
        let f = Feedback::parse(&[0, 0, 0, 5, 0, 0, 0, 0]).unwrap();
        assert_eq!(f.results().next(), Some(Err(Error::Truncated)));
        // A run of the reserved symbol.
        let fci = [0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x01, 0, 0];
        let f = Feedback::parse(&fci).unwrap();
        assert_eq!(f.results().next(), Some(Err(Error::ReservedSymbol)));
        // A received packet whose delta is missing.
        let fci = [0, 0, 0, 1, 0, 0, 0, 0, 0x20, 0x01];
        let f = Feedback::parse(&fci).unwrap();
        assert_eq!(f.results().next(), Some(Err(Error::Truncated)));
        // Too large a gap to write, and too small a buffer.
        let mut buf = [0u8; 64];
        assert_eq!(
            write(&mut buf, 0, 0, 0, &[Some(0), Some(10_000_000)]),
            Err(Error::DeltaTooLarge)
        );
        assert_eq!(
            write(&mut buf[..9], 0, 0, 0, &[Some(0)]),
            Err(Error::BufferTooSmall)
        );
    }
}

mod recorder;
pub use recorder::{FEEDBACK_INTERVAL, Recorder};

/// Extends a 16-bit transport-wide sequence number to 64 bits, as the number nearest to
/// `highest` (the highest extended number seen): within 2^15 either side, the reasoning of
/// RFC 3550 Appendix A.1. `None` below zero.
pub(crate) fn extend(highest: u64, seq: u16) -> Option<u64> {
    highest.checked_add_signed(i64::from(seq.wrapping_sub(highest as u16) as i16))
}
