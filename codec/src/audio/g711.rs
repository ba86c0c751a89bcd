//! ITU-T G.711: μ-law (PCMU, North America and Japan) and A-law (PCMA, everywhere else), the
//! codecs every phone and SIP trunk speaks. One byte per 8 kHz sample, a sign, a 3-bit segment
//! (a power of two) and a 4-bit step within it, so the quantization step grows with the level.
//!
//! Written from the standard's segment algorithm on 16-bit samples (the standard's 14-bit
//! μ-law and 13-bit A-law scaled up). Decoding is a 256-entry table built at compile time;
//! encoding is a few bit operations, cheaper than a 64 KiB table in cache.

/// μ-law's bias: added before the segment search so that every segment's steps line up on
/// powers of two (33 in the standard's 14-bit units, times 4).
const ULAW_BIAS: i32 = 0x84;
/// The largest magnitude μ-law encodes before the bias would overflow its top segment.
const ULAW_CLIP: i32 = 32_635;

/// The 16-bit sample each μ-law byte stands for.
const ULAW_TABLE: [i16; 256] = ulaw_table();
/// The 16-bit sample each A-law byte stands for.
const ALAW_TABLE: [i16; 256] = alaw_table();

/// Encodes one sample as μ-law.
#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    let value = i32::from(sample);
    let (sign, magnitude) = if value < 0 {
        (0x80, -value)
    } else {
        (0, value)
    };
    let biased = magnitude.min(ULAW_CLIP) + ULAW_BIAS;
    // biased >> 7 is 1..=255: its top bit is the segment.
    let segment = 31 - ((biased >> 7) as u32).leading_zeros();
    let step = (biased >> (segment + 3)) & 0x0F;
    // The standard sends the code inverted (so that silence is not a run of zeros on a T1).
    !(sign | ((segment as i32) << 4) | step) as u8
}

/// Decodes one μ-law byte. 0xFF and 0x7F are both zero.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_TABLE[usize::from(code)]
}

/// Encodes one sample as A-law.
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    // A-law works on 13 bits; negative values are stored one's-complement style, so -1..=-8
    // share the code of the smallest negative step.
    let value = i32::from(sample) >> 3;
    let (mask, magnitude) = if value >= 0 {
        (0xD5, value)
    } else {
        (0x55, -value - 1)
    };
    // magnitude is 0..=4095. Segments 0 and 1 both step by 2; each one after doubles.
    let (segment, step) = if magnitude < 32 {
        (0, magnitude >> 1)
    } else {
        let segment = 31 - (magnitude as u32).leading_zeros() - 4;
        (segment as i32, (magnitude >> segment) & 0x0F)
    };
    (((segment << 4) | step) ^ mask) as u8
}

/// Decodes one A-law byte. A-law has no zero: 0xD5 and 0x55 are +8 and -8.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_TABLE[usize::from(code)]
}

/// Each code's value: the middle of the range of samples that encode to it.
const fn ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        let bits = !(code as u8) as i32;
        let segment = (bits >> 4) & 7;
        let step = bits & 0x0F;
        let magnitude = (((step << 3) + ULAW_BIAS) << segment) - ULAW_BIAS;
        table[code] = if bits & 0x80 != 0 {
            -magnitude as i16
        } else {
            magnitude as i16
        };
        code += 1;
    }
    table
}

const fn alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        let bits = (code as i32) ^ 0x55;
        let segment = (bits >> 4) & 7;
        let step = bits & 0x0F;
        let magnitude = if segment == 0 {
            (step << 4) + 8
        } else {
            ((step << 4) + 0x108) << (segment - 1)
        };
        // After the XOR, a set top bit is a positive sample.
        table[code] = if bits & 0x80 != 0 {
            magnitude as i16
        } else {
            -magnitude as i16
        };
        code += 1;
    }
    table
}

// ok: test code
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_from_the_standard() {
        // μ-law: both zeros, full scale (8031 in 14-bit units) and the smallest steps.
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32_124);
        assert_eq!(ulaw_decode(0x00), -32_124);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        // A-law: the two codes nearest zero, full scale (4032 in 13-bit units, times 8).
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32_256);
        assert_eq!(alaw_decode(0x2A), -32_256);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            // μ-law's negative zero comes back as the positive one.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(
                ulaw_encode(ulaw_decode(code)),
                expected,
                "μ-law {code:#04x}"
            );
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law {code:#04x}");
        }
    }

    /// The quantization step (in 16-bit units) of the segment a code lies in.
    fn ulaw_step(code: u8) -> i32 {
        8 << ((!code >> 4) & 7)
    }

    fn alaw_step(code: u8) -> i32 {
        let segment = ((code ^ 0x55) >> 4) & 7;
        16 << segment.saturating_sub(1)
    }

    #[test]
    fn sweep_round_trips_within_half_a_step() {
        for sample in i16::MIN..=i16::MAX {
            let s = i32::from(sample);
            let code = ulaw_encode(sample);
            let error = (i32::from(ulaw_decode(code)) - s).abs();
            // Above μ-law's clip level the error grows to at most one step.
            let bound = if s.abs() > ULAW_CLIP {
                ulaw_step(code)
            } else {
                ulaw_step(code) / 2
            };
            assert!(error <= bound, "μ-law {sample}: error {error} > {bound}");

            let code = alaw_encode(sample);
            let error = (i32::from(alaw_decode(code)) - s).abs();
            assert!(
                error <= alaw_step(code) / 2,
                "A-law {sample}: error {error}"
            );
        }
    }

    #[test]
    fn encoding_is_monotonic() {
        let mut last_u = ulaw_decode(ulaw_encode(i16::MIN));
        let mut last_a = alaw_decode(alaw_encode(i16::MIN));
        for sample in i16::MIN..=i16::MAX {
            let u = ulaw_decode(ulaw_encode(sample));
            let a = alaw_decode(alaw_encode(sample));
            assert!(u >= last_u && a >= last_a, "at {sample}");
            last_u = u;
            last_a = a;
        }
    }
}
