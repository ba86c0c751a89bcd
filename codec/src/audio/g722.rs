//! ITU-T G.722 at 64 kbit/s (mode 1), the wideband codec of desk phones and HD voice trunks:
//! 16 kHz audio split into two sub-bands by a QMF filter pair, each coded with ADPCM (6 bits
//! for 0-4 kHz, 2 bits for 4-8 kHz), one byte per pair of samples.
//!
//! Written from the Recommendation. The ADPCM blocks carry its names (QUANTL, INVQAL, LOGSCL,
//! SCALEL, UPPOL2, FILTEZ, ...) and follow its integer arithmetic to the bit, 16-bit words
//! saturated where it limits them: a decoder's predictor and scale factor are rebuilt from the
//! codes alone, so they only track the encoder's if both sides run the very same recursion,
//! and that is what lets a phone's G.722 decode our bytes and us decode theirs. The QMF filters
//! are outside that loop; they take and give 16-bit samples instead of the Recommendation's
//! 14-bit ones, so the two low bits a 16-bit source has are not thrown away.
//!
//! The state is a few dozen integers per direction: nothing is allocated per call. The tests
//! pin the bytes and samples that ffmpeg's and SpanDSP's G.722 give for the same input.

use super::AudioError;

/// G.722's sample rate (its RTP clock is 8000 all the same: RFC 3551 section 4.5.2).
pub const G722_RATE: u32 = 16_000;

/// The QMF coefficients h0..h23, times 2^13. The transmit filter splits the band with them,
/// the receive one puts it back together; the even and the odd ones each sum to 2^12.
const QMF: [i32; 24] = [
    3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876, 3876, 951, -805, -210, 362, 32,
    -156, 12, 53, -11, -11, 3,
];

/// QUANTL's decision levels: the top of each of the lower band's 6-bit magnitude intervals
/// (index MIL, 1..=29; interval 30 has no top), in units of the scale factor over 4096.
const Q6: [i32; 30] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
];
/// QUANTL's codes for a negative difference in interval MIL (index 1..=30).
const ILN: [u8; 31] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4,
];
/// QUANTL's codes for a positive difference in interval MIL (index 1..=30).
const ILP: [u8; 31] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32,
];
/// INVQBL's 6-bit output levels for each interval MIL (index 1..=30), in the same units as
/// [`Q6`]: what the decoder puts out, the full resolution of the code.
const QQ6: [i32; 31] = [
    0, 17, 54, 91, 130, 170, 211, 254, 300, 347, 396, 447, 501, 558, 618, 682, 750, 822, 899, 982,
    1072, 1170, 1279, 1399, 1535, 1689, 1873, 2088, 2376, 2738, 3101,
];
/// RIL4: the magnitude (0..=7) of each 4-bit code, the 6-bit code's top four bits. The
/// predictor and the scale factor see only these, so that the bits mode 2 and 3 give to data
/// never reach them.
const RIL4: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// INVQAL's 4-bit output levels by magnitude, in [`Q6`]'s units.
const QQ4: [i32; 8] = [0, 150, 323, 530, 786, 1121, 1612, 2557];
/// LOGSCL's log scale factor multipliers by 4-bit magnitude: large codes grow the scale,
/// small ones shrink it.
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// The log scale factor's bound, lower band.
const NBL_MAX: i32 = 18_432;

/// QUANTH's one decision level (the higher band has two magnitudes), in [`Q6`]'s units.
const Q2: i32 = 564;
/// INVQAH's output levels by magnitude (1 or 2).
const QQ2: [i32; 3] = [0, 202, 926];
/// LOGSCH's log scale factor multipliers by magnitude.
const WH: [i32; 3] = [0, -214, 798];
/// The log scale factor's bound, higher band.
const NBH_MAX: i32 = 22_528;

/// ILB: 2048 * 2^(i/32), the fraction of the log scale factor turned linear (SCALEL, SCALEH).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

/// A 16-bit word's range: where the Recommendation limits a value, it is to this.
fn saturate(x: i32) -> i32 {
    x.clamp(-32_768, 32_767)
}

/// The Recommendation's `x * y >> 15`: a product scaled back by 2^15, the 1.0 of the scale
/// factors and of the leak factors (32_512 is 1 - 2^-7). The shift floors, negatives included.
fn mul15(x: i32, y: i32) -> i32 {
    (x * y) >> 15
}

/// The sign bit of a word, as the Recommendation reads it (zero counts as positive).
fn negative(x: i32) -> bool {
    x < 0
}

/// The magnitude the quantizers compare: one's complement for negatives, as the
/// Recommendation's 16-bit arithmetic has it (so -1 is 0).
fn magnitude(e: i32) -> i32 {
    if negative(e) { -e - 1 } else { e }
}

/// SUBTRA: the difference between a sub-band sample and its prediction.
fn subtra(x: i32, s: i32) -> i32 {
    saturate(x - s)
}

/// QUANTL: the lower band's 6-bit code for the difference `el` at scale `detl`.
fn quantl(el: i32, detl: i32) -> u8 {
    let wd = magnitude(el);
    let mil = (1..30)
        .find(|&mil| wd < mul15(Q6[mil] << 3, detl))
        .unwrap_or(30);
    if negative(el) { ILN[mil] } else { ILP[mil] }
}

/// INVQAL: the 4-bit quantized difference, what the predictor and the scale adaptation use.
fn invqal(il: u8, detl: i32) -> i32 {
    let code = usize::from(il >> 2);
    let level = QQ4[RIL4[code]] << 3;
    // The codes 0-7 are the negative half.
    let level = if code < 8 { -level } else { level };
    mul15(level, detl)
}

/// INVQBL in mode 1: the 6-bit quantized difference, what the decoder puts out.
fn invqbl(il: u8, detl: i32) -> i32 {
    // Codes 32-61 are positive intervals 30 to 1, 4-31 negative intervals 30 to 3, 62 and 63
    // negative intervals 2 and 1; the encoder never sends 0-3, which read as negative 1.
    let (negative, mil) = match il & 63 {
        il @ 32..=61 => (false, 62 - il),
        il @ 4..=31 => (true, 34 - il),
        il @ 62..=63 => (true, 64 - il),
        _ => (true, 1),
    };
    let level = QQ6[usize::from(mil)] << 3;
    let level = if negative { -level } else { level };
    mul15(level, detl)
}

/// LOGSCL: the lower band's log scale factor, leaking towards 0 and pushed by the new code.
fn logscl(il: u8, nbl: i32) -> i32 {
    let wd = mul15(nbl, 32_512);
    (wd + WL[RIL4[usize::from(il >> 2)]]).clamp(0, NBL_MAX)
}

/// SCALEL: the lower band's scale factor from its log (8 more octaves below the table's
/// 2048 makes a log of 0 a scale of 32).
fn scalel(nbpl: i32) -> i32 {
    scale(nbpl, 8)
}

/// QUANTH: the higher band's 2-bit code for the difference `eh` at scale `deth`.
fn quanth(eh: i32, deth: i32) -> u8 {
    let large = magnitude(eh) >= mul15(Q2 << 3, deth);
    match (negative(eh), large) {
        (true, false) => 1,
        (true, true) => 0,
        (false, false) => 3,
        (false, true) => 2,
    }
}

/// The magnitude (1 or 2) of a higher band code: 0 and 2 are the large ones.
fn rih2(ih: u8) -> usize {
    if ih & 1 == 0 { 2 } else { 1 }
}

/// INVQAH: the higher band's quantized difference.
fn invqah(ih: u8, deth: i32) -> i32 {
    let level = QQ2[rih2(ih)] << 3;
    // The codes 0 and 1 are the negative half.
    let level = if ih & 2 == 0 { -level } else { level };
    mul15(level, deth)
}

/// LOGSCH: the higher band's log scale factor.
fn logsch(ih: u8, nbh: i32) -> i32 {
    let wd = mul15(nbh, 32_512);
    (wd + WH[rih2(ih)]).clamp(0, NBH_MAX)
}

/// SCALEH: the higher band's scale factor from its log (a log of 0 is a scale of 8).
fn scaleh(nbph: i32) -> i32 {
    scale(nbph, 10)
}

/// SCALEL and SCALEH: 2^(log / 2048) through [`ILB`], shifted down by `octaves`, times 4.
fn scale(log: i32, octaves: i32) -> i32 {
    let fraction = ILB[((log >> 6) & 31) as usize];
    let shift = (log >> 11) - octaves;
    let linear = if shift >= 0 {
        fraction << shift
    } else {
        fraction >> -shift
    };
    linear << 2
}

/// RECONS: the reconstructed signal, the prediction plus the quantized difference.
fn recons(s: i32, d: i32) -> i32 {
    saturate(s + d)
}

/// PARREC: the partially reconstructed signal (the zero section's part of the prediction plus
/// the difference), whose signs drive the pole section's adaptation.
fn parrec(d: i32, sz: i32) -> i32 {
    saturate(d + sz)
}

/// UPPOL2: the second pole coefficient, leaking, nudged by the signs of the partially
/// reconstructed signal and its last two values, limited to 0.75 so the poles stay stable.
fn uppol2(a: [i32; 2], p: i32, past: [i32; 2]) -> i32 {
    let wd1 = saturate(a[0] << 2);
    let wd2 = if negative(p) == negative(past[0]) {
        saturate(-wd1)
    } else {
        wd1
    };
    let wd3 = if negative(p) == negative(past[1]) {
        128
    } else {
        -128
    };
    let wd5 = mul15(a[1], 32_512);
    ((wd2 >> 7) + wd3 + wd5).clamp(-12_288, 12_288)
}

/// UPPOL1: the first pole coefficient, leaking, nudged by the signs of the partially
/// reconstructed signal and its last value, limited by the new second one (the stability
/// triangle: |a1| <= 1 - 2^-4 - a2).
fn uppol1(a1: i32, apl2: i32, p: i32, past: i32) -> i32 {
    let wd1 = if negative(p) == negative(past) {
        192
    } else {
        -192
    };
    let wd2 = mul15(a1, 32_640);
    let wd3 = 15_360 - apl2;
    (wd1 + wd2).clamp(-wd3, wd3)
}

/// UPZERO: the six zero coefficients, leaking, each nudged by whether its past difference had
/// the new one's sign (not at all when the new difference is 0).
fn upzero(d: i32, past: &[i32; 6], b: &mut [i32; 6]) {
    let wd1 = if d == 0 { 0 } else { 128 };
    for (bi, &di) in b.iter_mut().zip(past) {
        let wd2 = if negative(d) == negative(di) {
            wd1
        } else {
            -wd1
        };
        *bi = saturate(wd2 + mul15(*bi, 32_640));
    }
}

/// FILTEP: the pole section's prediction from the last two reconstructed values.
fn filtep(r: [i32; 2], a: [i32; 2]) -> i32 {
    let wd1 = mul15(a[0], saturate(r[0] << 1));
    let wd2 = mul15(a[1], saturate(r[1] << 1));
    saturate(wd1 + wd2)
}

/// FILTEZ: the zero section's prediction from the last six quantized differences.
fn filtez(d: &[i32; 6], b: &[i32; 6]) -> i32 {
    saturate(
        d.iter()
            .zip(b)
            .map(|(&di, &bi)| mul15(bi, saturate(di << 1)))
            .sum(),
    )
}

/// PREDIC: the prediction of the next sample.
fn predic(sp: i32, sz: i32) -> i32 {
    saturate(sp + sz)
}

/// LIMIT: the decoder's reconstructed sub-band sample, kept to 15 bits.
fn limit(r: i32) -> i32 {
    r.clamp(-16_384, 16_383)
}

/// One sub-band's ADPCM state, the same in the encoder and the decoder (it must stay so).
#[derive(Clone, Copy)]
struct Band {
    /// The log scale factor (NBL, NBH).
    nb: i32,
    /// The scale factor (DETL, DETH).
    det: i32,
    /// The prediction of the next sample (SL, SH) and its zero section's part (SZL, SZH).
    s: i32,
    sz: i32,
    /// The last two reconstructed values (RLT, RH).
    r: [i32; 2],
    /// The last two partially reconstructed values (PLT, PH).
    p: [i32; 2],
    /// The pole coefficients (AL1-2, AH1-2), 1.0 being 2^14.
    a: [i32; 2],
    /// The zero coefficients (BL1-6, BH1-6), 1.0 being 2^14.
    b: [i32; 6],
    /// The last six quantized differences (DLT, DH).
    d: [i32; 6],
}

impl Band {
    /// The Recommendation's reset state: all zero but the scale factor `det`, which must be
    /// what SCALEL or SCALEH makes of the log's 0 (32 and 8), or the first codes are off.
    fn new(det: i32) -> Self {
        Self {
            nb: 0,
            det,
            s: 0,
            sz: 0,
            r: [0; 2],
            p: [0; 2],
            a: [0; 2],
            b: [0; 6],
            d: [0; 6],
        }
    }

    /// The adaptive predictor (the Recommendation's block 4): takes this sample's quantized
    /// difference `d`, adapts the coefficients, and sets the prediction of the next sample.
    fn predict(&mut self, d: i32) {
        let r = recons(self.s, d);
        let p = parrec(d, self.sz);
        let apl2 = uppol2(self.a, p, self.p);
        let apl1 = uppol1(self.a[0], apl2, p, self.p[0]);
        upzero(d, &self.d, &mut self.b);
        // DELAYA and DELAYL: this sample's values become the past.
        self.a = [apl1, apl2];
        self.d = [d, self.d[0], self.d[1], self.d[2], self.d[3], self.d[4]];
        self.r = [r, self.r[0]];
        self.p = [p, self.p[0]];
        let sp = filtep(self.r, self.a);
        self.sz = filtez(&self.d, &self.b);
        self.s = predic(sp, self.sz);
    }
}

/// A G.722 encoder, 16 kHz samples in, one byte per two out.
pub struct G722Encoder {
    /// The transmit QMF's last 24 input samples, the newest first.
    x: [i32; 24],
    low: Band,
    high: Band,
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Encoder {
    pub fn new() -> Self {
        Self {
            x: [0; 24],
            low: Band::new(scalel(0)),
            high: Band::new(scaleh(0)),
        }
    }

    /// Encodes `pcm` (16 kHz, an even number of samples) into `out`; returns the bytes written,
    /// half the samples.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, AudioError> {
        if !pcm.len().is_multiple_of(2) {
            return Err(AudioError::OddLength(pcm.len()));
        }
        let needed = pcm.len() / 2;
        let Some(out) = out.get_mut(..needed) else {
            return Err(AudioError::BufferTooSmall {
                needed,
                got: out.len(),
            });
        };
        for (byte, pair) in out.iter_mut().zip(pcm.chunks_exact(2)) {
            *byte = self.encode_pair(pair[0], pair[1]);
        }
        Ok(needed)
    }

    /// One byte from two samples: the QMF's split, then each band's ADPCM.
    fn encode_pair(&mut self, first: i16, second: i16) -> u8 {
        let (xl, xh) = self.transmit_qmf(first, second);

        let low = &mut self.low;
        let el = subtra(xl, low.s);
        let il = quantl(el, low.det);
        let dlt = invqal(il, low.det);
        low.nb = logscl(il, low.nb);
        low.det = scalel(low.nb);
        low.predict(dlt);

        let high = &mut self.high;
        let eh = subtra(xh, high.s);
        let ih = quanth(eh, high.det);
        let dh = invqah(ih, high.det);
        high.nb = logsch(ih, high.nb);
        high.det = scaleh(high.nb);
        high.predict(dh);

        ih << 6 | il
    }

    /// The transmit QMF: the lower and the higher sub-band sample (8 kHz) of two 16 kHz
    /// samples, the sum and the difference of the even and the odd coefficients' filters.
    /// Scaled to half the input (15 bits), the range the ADPCM expects.
    fn transmit_qmf(&mut self, first: i16, second: i16) -> (i32, i32) {
        self.x.copy_within(..22, 2);
        self.x[0] = i32::from(second);
        self.x[1] = i32::from(first);
        let (mut xa, mut xb) = (0, 0);
        for (x, h) in self.x.chunks_exact(2).zip(QMF.chunks_exact(2)) {
            xa += h[0] * x[0];
            xb += h[1] * x[1];
        }
        ((xa + xb) >> 14, (xa - xb) >> 14)
    }
}

/// A G.722 decoder, one byte in, two 16 kHz samples out.
pub struct G722Decoder {
    /// The receive QMF's last 12 sub-band differences and sums, the newest first.
    xd: [i32; 12],
    xs: [i32; 12],
    low: Band,
    high: Band,
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    pub fn new() -> Self {
        Self {
            xd: [0; 12],
            xs: [0; 12],
            low: Band::new(scalel(0)),
            high: Band::new(scaleh(0)),
        }
    }

    /// Decodes `payload` into `out` (16 kHz); returns the samples written, two per byte. Every
    /// byte is a valid code, so only a short `out` is an error.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, AudioError> {
        let needed = payload.len() * 2;
        let Some(out) = out.get_mut(..needed) else {
            return Err(AudioError::BufferTooSmall {
                needed,
                got: out.len(),
            });
        };
        for (&byte, pair) in payload.iter().zip(out.chunks_exact_mut(2)) {
            let [first, second] = self.decode_byte(byte);
            pair[0] = first;
            pair[1] = second;
        }
        Ok(needed)
    }

    /// Two samples from one byte: each band's ADPCM, then the QMF's merge.
    fn decode_byte(&mut self, byte: u8) -> [i16; 2] {
        let (ilr, ih) = (byte & 63, byte >> 6);

        let low = &mut self.low;
        let dl = invqbl(ilr, low.det);
        let dlt = invqal(ilr, low.det);
        let rl = limit(low.s + dl);
        low.nb = logscl(ilr, low.nb);
        low.det = scalel(low.nb);
        low.predict(dlt);

        let high = &mut self.high;
        let dh = invqah(ih, high.det);
        let rh = limit(high.s + dh);
        high.nb = logsch(ih, high.nb);
        high.det = scaleh(high.nb);
        high.predict(dh);

        self.receive_qmf(rl, rh)
    }

    /// The receive QMF: two 16 kHz samples from a lower and a higher sub-band sample, the
    /// even coefficients' filter over their difference, then the odd ones' over their sum.
    fn receive_qmf(&mut self, rl: i32, rh: i32) -> [i16; 2] {
        self.xd.copy_within(..11, 1);
        self.xs.copy_within(..11, 1);
        self.xd[0] = rl - rh;
        self.xs[0] = rl + rh;
        let (mut even, mut odd) = (0, 0);
        for ((&xd, &xs), h) in self.xd.iter().zip(&self.xs).zip(QMF.chunks_exact(2)) {
            even += h[0] * xd;
            odd += h[1] * xs;
        }
        // Twice the sub-bands' 15 bits: the input's 16 again.
        [to_i16(even >> 11), to_i16(odd >> 11)]
    }
}

/// A 16-bit sample, saturated: the QMF can overshoot on full-scale input.
fn to_i16(x: i32) -> i16 {
    saturate(x) as i16
}

// ok: test code
#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::resample::tests::{goertzel, tone};
    use proptest::prelude::*;

    /// The delay of G.722's analysis and synthesis filters, in 16 kHz samples.
    const QMF_DELAY: usize = 22;

    #[test]
    fn a_tone_round_trips() {
        let mut enc = G722Encoder::new();
        let mut dec = G722Decoder::new();
        let mut out = Vec::new();
        let (mut payload, mut pcm) = ([0u8; 160], [0i16; 320]);
        // The lower sub-band has 6 bits a sample, the upper one (4-8 kHz) 2.
        for (freq, min_snr) in [
            (300.0, 50.0),
            (1000.0, 40.0),
            (3000.0, 35.0),
            (6000.0, 22.0),
        ] {
            // One second in 20 ms frames.
            let input = tone(freq, G722_RATE, 10_000.0, 16_000);
            out.clear();
            for frame in input.chunks(320) {
                assert_eq!(enc.encode(frame, &mut payload).unwrap(), 160);
                assert_eq!(dec.decode(&payload, &mut pcm).unwrap(), 320);
                out.extend_from_slice(&pcm);
            }
            // The level comes back, and little else: the error against the input, delayed by
            // the codec's QMF pair, is far under the signal.
            let level = goertzel(&out[1600..], freq, G722_RATE) / 10_000.0;
            assert!((20.0 * level.log10()).abs() < 1.0, "{freq} Hz at {level}");
            let error = |delay: usize| {
                (1600..15_000).fold(0.0, |e, i| {
                    e + (f64::from(input[i]) - f64::from(out[i + delay])).powi(2)
                })
            };
            // 300 Hz has the longest period: it finds the delay unambiguously.
            if freq == 300.0 {
                let best = (0..64).min_by(|&a, &b| error(a).total_cmp(&error(b)));
                assert_eq!(best, Some(QMF_DELAY));
            }
            let signal: f64 = input[1600..15_000]
                .iter()
                .map(|&x| f64::from(x).powi(2))
                .sum();
            let snr = 10.0 * (signal / error(QMF_DELAY)).log10();
            assert!(snr > min_snr, "{freq} Hz: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut enc = G722Encoder::new();
        let mut dec = G722Decoder::new();
        assert!(enc.encode(&[0; 3], &mut [0; 4]).is_err());
        assert!(enc.encode(&[0; 4], &mut [0; 1]).is_err());
        assert!(dec.decode(&[0; 4], &mut [0; 7]).is_err());
        assert_eq!(dec.decode(&[], &mut []).unwrap(), 0);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_and_any_samples_encode(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            samples in proptest::collection::vec(any::<i16>(), 0..200),
        ) {
            let mut dec = G722Decoder::new();
            let mut pcm = [0i16; 800];
            prop_assert_eq!(dec.decode(&bytes, &mut pcm).unwrap(), bytes.len() * 2);
            let mut enc = G722Encoder::new();
            let even = &samples[..samples.len() / 2 * 2];
            let mut out = [0u8; 100];
            prop_assert_eq!(enc.encode(even, &mut out).unwrap(), even.len() / 2);
        }
    }

    /// A linear congruential generator's states (Knuth's MMIX constants): test signals that
    /// are the same on every machine.
    fn lcg(mut state: u64, increment: u64) -> impl FnMut() -> u64 {
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(increment);
            state
        }
    }

    /// FNV-1a over bytes: a short fingerprint of a long stream.
    fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
        bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    }

    fn samples_fnv(samples: &[i16]) -> u64 {
        fnv(samples.iter().flat_map(|s| s.to_le_bytes()))
    }

    /// Other implementations' output, to the bit. The fingerprints are of what ffmpeg 5.1's
    /// G.722 and the system's SpanDSP 0.0.6 (baresip's G.722) made of the same input: both
    /// encoders gave these very bytes, ffmpeg's decoder these samples. SpanDSP's decoder gave
    /// them too, but where the receive QMF overshoots 16 bits: it wraps around there, we (and
    /// ffmpeg) saturate. The loud signals are there for the saturations of the
    /// Recommendation's arithmetic, the random bytes for codes no encoder sends.
    #[test]
    fn bit_exact_with_spandsp_and_ffmpeg() {
        let mut phase = 0.0f64;
        let sweep = (0..64_000)
            .map(|i| {
                // 50 Hz to 7.95 kHz in 4 s, near full scale.
                let freq = 50.0 + 7900.0 * f64::from(i) / 64_000.0;
                phase += 2.0 * std::f64::consts::PI * freq / f64::from(G722_RATE);
                (30_000.0 * phase.sin()) as i16
            })
            .collect();
        let mut noise = lcg(1, 1_442_695_040_888_963_407);
        let signals: [(&str, Vec<i16>, u64, u64); 4] = [
            (
                "1 kHz",
                tone(1000.0, G722_RATE, 10_000.0, 16_000),
                0xc8dc_a88f_24f4_addb,
                0x8e80_c594_afae_65f0,
            ),
            ("sweep", sweep, 0xe637_223c_c463_99ee, 0x0aaf_7ce8_f602_30e7),
            (
                "noise",
                (0..32_000).map(|_| (noise() >> 48) as u16 as i16).collect(),
                0x866e_2968_6715_aaad,
                0x3f43_27e4_e087_0537,
            ),
            (
                "full-scale square",
                (0..32_000)
                    .map(|i| if (i / 7) % 2 == 0 { i16::MAX } else { i16::MIN })
                    .collect(),
                0x7e04_08e5_836e_14d3,
                0xe333_3279_3062_8d98,
            ),
        ];
        for (name, input, coded_fnv, decoded_fnv) in signals {
            let mut coded = vec![0; input.len() / 2];
            G722Encoder::new().encode(&input, &mut coded).unwrap();
            assert_eq!(fnv(coded.iter().copied()), coded_fnv, "{name} encoded");
            let mut decoded = vec![0; input.len()];
            G722Decoder::new().decode(&coded, &mut decoded).unwrap();
            assert_eq!(samples_fnv(&decoded), decoded_fnv, "{name} decoded");
        }
        let mut random = lcg(7, 1);
        let bytes: Vec<u8> = (0..100_000).map(|_| (random() >> 56) as u8).collect();
        let mut decoded = vec![0; bytes.len() * 2];
        G722Decoder::new().decode(&bytes, &mut decoded).unwrap();
        assert_eq!(samples_fnv(&decoded), 0xdb70_aaa9_e5ae_2459, "random bytes");
    }

    #[test]
    fn silence_stays_quiet() {
        // At its smallest scale factors the codec is not quite silent (the predictors wander a
        // little: idle channel noise), but a second of it stays under 16, -66 dBFS.
        let (mut enc, mut dec) = (G722Encoder::new(), G722Decoder::new());
        let (mut coded, mut pcm) = ([0; 160], [0; 320]);
        let mut loudest = 0;
        for _ in 0..50 {
            enc.encode(&[0; 320], &mut coded).unwrap();
            dec.decode(&coded, &mut pcm).unwrap();
            loudest = pcm.iter().fold(loudest, |m, s| m.max(s.unsigned_abs()));
        }
        assert!(loudest < 16, "{loudest}");
    }
}
