//! Integer-ratio resampling between the rates a phone call's audio meets: the mixer's 48 kHz,
//! G.722's 16 kHz and G.711's 8 kHz (a call bridged at G.722's rate that also accepts G.711
//! packets brings those up from 8 to 16 kHz).
//!
//! Both directions use one low-pass FIR: a windowed sinc (Kaiser window, 60 dB) whose pass band
//! ends at 42% of the low rate and whose stop band starts at its Nyquist frequency, so nothing
//! above it folds back into the phone band on the way down, and the images the zero-stuffing
//! makes on the way up are removed. Polyphase: going down, only every `factor`-th output is
//! computed; going up, each input sample is spread over `factor` outputs through the filter's
//! `factor` phases, so no zero is ever multiplied.
//!
//! Each keeps its history across calls, so frames join without clicks, and the output of any
//! split of a signal equals that of one call. Buffers are sized at construction; a call
//! allocates nothing.

use std::f64::consts::PI;

use super::AudioError;

/// The pass band's end and the stop band's start, as fractions of the low rate.
const PASS_EDGE: f64 = 0.42;
const STOP_EDGE: f64 = 0.5;
/// The stop band's attenuation the Kaiser window is designed for, dB.
const ATTENUATION_DB: f64 = 60.0;

/// The factor between `high_rate` and `low_rate`: 2 to 12, and an exact divisor.
fn factor_for(high_rate: u32, low_rate: u32) -> Result<usize, AudioError> {
    let unsupported = AudioError::UnsupportedRate(high_rate, low_rate);
    if low_rate == 0 || !high_rate.is_multiple_of(low_rate) {
        return Err(unsupported);
    }
    match high_rate / low_rate {
        factor @ 2..=12 => Ok(factor as usize),
        _ => Err(unsupported),
    }
}

/// The low-pass filter at the high rate for `factor`, with a DC gain of 1. Its length is a
/// multiple of `factor`, so every polyphase branch has as many taps. In frequencies relative
/// to the high rate it depends on the factor alone.
fn low_pass(factor: usize) -> Vec<f32> {
    let low = 1.0 / factor as f64;
    let cutoff = (PASS_EDGE + STOP_EDGE) / 2.0 * low;
    let transition = 2.0 * PI * (STOP_EDGE - PASS_EDGE) * low;
    // Kaiser's estimates of the window's shape and the filter's length for the attenuation.
    let beta = 0.1102 * (ATTENUATION_DB - 8.7);
    let estimate = ((ATTENUATION_DB - 8.0) / (2.285 * transition)).ceil() as usize + 1;
    let len = estimate.div_ceil(factor) * factor;
    let middle = (len - 1) as f64 / 2.0;
    let mut taps: Vec<f64> = (0..len)
        .map(|n| {
            let t = n as f64 - middle;
            let sinc = if t == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * PI * cutoff * t).sin() / (PI * t)
            };
            let r = t / middle;
            sinc * bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(beta)
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    taps.iter_mut().for_each(|t| *t /= sum);
    taps.into_iter().map(|t| t as f32).collect()
}

/// The modified Bessel function of the first kind, order 0, by its power series (converges
/// quickly for the window's arguments, under 10).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    for k in 1..50 {
        let half = x / (2.0 * k as f64);
        term *= half * half;
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum
}

fn to_i16(value: f32) -> i16 {
    // `as` saturates, and the clamp documents it.
    value
        .round()
        .clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

/// A delay line whose latest `len` samples are always one contiguous slice, newest last: each
/// sample is written twice, `len` apart.
struct DelayLine {
    samples: Vec<f32>,
    len: usize,
    /// Where the next sample goes, in 0..len.
    next: usize,
}

impl DelayLine {
    fn new(len: usize) -> Self {
        Self {
            samples: vec![0.0; 2 * len],
            len,
            next: 0,
        }
    }

    fn push(&mut self, sample: f32) {
        self.samples[self.next] = sample;
        self.samples[self.next + self.len] = sample;
        self.next = (self.next + 1) % self.len;
    }

    /// The latest `len` samples, oldest first.
    fn window(&self) -> &[f32] {
        &self.samples[self.next..self.next + self.len]
    }
}

/// The dot product of a window (oldest first) with taps stored newest-first, i.e. the filter
/// reversed. Written by hand because it is every phone call's hot loop (about 44 000
/// multiply-adds per 20 ms each way): one running `f32` sum is a chain of dependent adds the
/// compiler may not reorder, while [`LANES`] independent sums vectorize.
fn convolve(window: &[f32], reversed_taps: &[f32]) -> f32 {
    let mut sums = [0.0f32; LANES];
    let windows = window.chunks_exact(LANES);
    let taps = reversed_taps.chunks_exact(LANES);
    let tail: f32 = windows
        .remainder()
        .iter()
        .zip(taps.remainder())
        .map(|(s, t)| s * t)
        .sum();
    for (w, t) in windows.zip(taps) {
        for ((sum, s), t) in sums.iter_mut().zip(w).zip(t) {
            *sum += s * t;
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// Independent partial sums in [`convolve`]: two AVX registers' worth.
const LANES: usize = 16;

/// A rate down to a lower one.
pub struct Downsampler {
    factor: usize,
    /// The filter, reversed to match the delay line's order.
    taps: Vec<f32>,
    line: DelayLine,
    /// Samples taken since the last output, 0..factor.
    phase: usize,
}

impl Downsampler {
    /// `low_rate` must divide `high_rate` by 2 to 12.
    pub fn new(high_rate: u32, low_rate: u32) -> Result<Self, AudioError> {
        let factor = factor_for(high_rate, low_rate)?;
        let mut taps = low_pass(factor);
        taps.reverse();
        let line = DelayLine::new(taps.len());
        Ok(Self {
            factor,
            taps,
            line,
            phase: 0,
        })
    }

    /// How many samples the next call with `input_len` samples writes.
    pub fn output_len(&self, input_len: usize) -> usize {
        (self.phase + input_len) / self.factor
    }

    /// Filters `input` (the high rate) into `out` at the low rate, returning the samples written: one
    /// every `factor` inputs, counted across calls. An `out` shorter than
    /// [`Downsampler::output_len`] is an error, and nothing is consumed.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> Result<usize, AudioError> {
        let needed = self.output_len(input.len());
        if out.len() < needed {
            return Err(AudioError::BufferTooSmall {
                needed,
                got: out.len(),
            });
        }
        let mut written = 0;
        for &sample in input {
            self.line.push(f32::from(sample));
            self.phase += 1;
            if self.phase == self.factor {
                self.phase = 0;
                out[written] = to_i16(convolve(self.line.window(), &self.taps));
                written += 1;
            }
        }
        Ok(written)
    }
}

/// A rate up to a higher one.
pub struct Upsampler {
    factor: usize,
    /// The filter's phases one after another, each reversed to match the delay line's order
    /// and scaled by `factor` (the zero-stuffing left 1 sample in `factor`).
    phases: Vec<f32>,
    /// Taps per phase, which is also the delay line's length.
    phase_len: usize,
    line: DelayLine,
}

impl Upsampler {
    /// `low_rate` must divide `high_rate` by 2 to 12.
    pub fn new(low_rate: u32, high_rate: u32) -> Result<Self, AudioError> {
        let factor = factor_for(high_rate, low_rate)?;
        let taps = low_pass(factor);
        let phase_len = taps.len() / factor;
        let mut phases = Vec::with_capacity(taps.len());
        for phase in 0..factor {
            // Output phase p takes taps p, p + factor, ... applied to the newest input first.
            let start = phases.len();
            phases.extend(
                taps.iter()
                    .skip(phase)
                    .step_by(factor)
                    .map(|t| t * factor as f32),
            );
            phases[start..].reverse();
        }
        Ok(Self {
            factor,
            phases,
            phase_len,
            line: DelayLine::new(phase_len),
        })
    }

    /// How many samples a call with `input_len` samples writes.
    pub fn output_len(&self, input_len: usize) -> usize {
        input_len * self.factor
    }

    /// Interpolates `input` (the low rate) into `out` at the high rate, returning the samples written:
    /// `factor` per input. An `out` shorter than that is an error, and nothing is consumed.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> Result<usize, AudioError> {
        let needed = self.output_len(input.len());
        if out.len() < needed {
            return Err(AudioError::BufferTooSmall {
                needed,
                got: out.len(),
            });
        }
        for (&sample, chunk) in input.iter().zip(out.chunks_exact_mut(self.factor)) {
            self.line.push(f32::from(sample));
            let window = self.line.window();
            for (o, phase) in chunk
                .iter_mut()
                .zip(self.phases.chunks_exact(self.phase_len))
            {
                *o = to_i16(convolve(window, phase));
            }
        }
        Ok(needed)
    }
}

// ok: test code
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audio::SAMPLE_RATE;

    pub(crate) fn tone(freq: f64, rate: u32, amplitude: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (amplitude * (2.0 * PI * freq * t).sin()).round() as i16
            })
            .collect()
    }

    /// The amplitude of `freq` in `samples` (Goertzel), in the samples' units.
    pub(crate) fn goertzel(samples: &[i16], freq: f64, rate: u32) -> f64 {
        let w = 2.0 * PI * freq / f64::from(rate);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power.max(0.0).sqrt() / samples.len() as f64
    }

    fn db(ratio: f64) -> f64 {
        20.0 * ratio.log10()
    }

    fn down(rate: u32, input: &[i16]) -> Vec<i16> {
        let mut d = Downsampler::new(SAMPLE_RATE, rate).unwrap();
        let mut out = vec![0; d.output_len(input.len())];
        let n = d.process(input, &mut out).unwrap();
        assert_eq!(n, out.len());
        out
    }

    fn up(rate: u32, input: &[i16]) -> Vec<i16> {
        let mut u = Upsampler::new(rate, SAMPLE_RATE).unwrap();
        let mut out = vec![0; u.output_len(input.len())];
        assert_eq!(u.process(input, &mut out).unwrap(), out.len());
        out
    }

    #[test]
    fn a_1khz_tone_keeps_its_level_down_and_up() {
        for rate in [8_000, 16_000] {
            // One second; the level is measured over whole periods after the filters settle.
            let input = tone(1000.0, SAMPLE_RATE, 10_000.0, 48_000);
            let low = down(rate, &input);
            let skip = rate as usize / 10;
            let level = db(goertzel(&low[skip..], 1000.0, rate) / 10_000.0);
            assert!(
                level.abs() < 1.0,
                "{rate} Hz: {level:.2} dB after going down"
            );
            let back = up(rate, &low);
            let level = db(goertzel(&back[4800..], 1000.0, SAMPLE_RATE) / 10_000.0);
            assert!(level.abs() < 1.0, "{rate} Hz: {level:.2} dB down and up");
        }
    }

    #[test]
    fn tones_above_the_low_nyquist_are_removed() {
        // 6 kHz would fold onto 2 kHz at 8 kHz; the spec asks 40 dB, the design gives 60.
        let input = tone(6000.0, SAMPLE_RATE, 10_000.0, 48_000);
        let low = down(8_000, &input);
        let alias = db(goertzel(&low[800..], 2000.0, 8_000) / 10_000.0);
        assert!(alias < -40.0, "6 kHz folded at {alias:.1} dB");
        // Just past the stop-band's edge: 4.2 kHz would fold onto 3.8 kHz.
        let input = tone(4200.0, SAMPLE_RATE, 10_000.0, 48_000);
        let low = down(8_000, &input);
        let alias = db(goertzel(&low[800..], 3800.0, 8_000) / 10_000.0);
        assert!(alias < -50.0, "4.2 kHz folded at {alias:.1} dB");
        // 12 kHz at 16 kHz's rate folds onto 4 kHz.
        let input = tone(12_000.0, SAMPLE_RATE, 10_000.0, 48_000);
        let low = down(16_000, &input);
        let alias = db(goertzel(&low[1600..], 4000.0, 16_000) / 10_000.0);
        assert!(alias < -50.0, "12 kHz folded at {alias:.1} dB");
    }

    #[test]
    fn upsampling_leaves_no_images() {
        // A 1 kHz tone at 8 kHz, zero-stuffed to 48 kHz, has images at 7 and 9 kHz.
        let low = tone(1000.0, 8_000, 10_000.0, 8_000);
        let high = up(8_000, &low);
        for image in [7000.0, 9000.0, 15_000.0, 17_000.0] {
            let level = db(goertzel(&high[4800..], image, SAMPLE_RATE) / 10_000.0);
            assert!(level < -50.0, "image at {image} Hz: {level:.1} dB");
        }
    }

    #[test]
    fn frames_join_as_one_call() {
        let input = tone(440.0, SAMPLE_RATE, 12_000.0, 48_000);
        for rate in [8_000, 16_000] {
            let whole = down(rate, &input);
            let mut d = Downsampler::new(SAMPLE_RATE, rate).unwrap();
            let mut framed = Vec::new();
            let mut out = [0i16; 960];
            for frame in input.chunks(960) {
                let n = d.process(frame, &mut out).unwrap();
                framed.extend_from_slice(&out[..n]);
            }
            assert_eq!(framed, whole, "{rate} Hz down");

            // Odd-sized pieces too: the phase carries over.
            let mut d = Downsampler::new(SAMPLE_RATE, rate).unwrap();
            let mut odd = Vec::new();
            for frame in input.chunks(7) {
                let n = d.process(frame, &mut out).unwrap();
                odd.extend_from_slice(&out[..n]);
            }
            assert_eq!(odd, whole, "{rate} Hz down in 7s");

            let whole_up = up(rate, &whole);
            let mut u = Upsampler::new(rate, SAMPLE_RATE).unwrap();
            let mut framed_up = Vec::new();
            let per_frame = rate as usize / 50;
            for frame in whole.chunks(per_frame) {
                let n = u.process(frame, &mut out).unwrap();
                framed_up.extend_from_slice(&out[..n]);
            }
            assert_eq!(framed_up, whole_up, "{rate} Hz up");
        }
    }

    #[test]
    fn eight_to_sixteen_khz_keeps_a_tone() {
        // A G.711 packet on a call bridged at G.722's rate.
        let low = tone(1000.0, 8_000, 10_000.0, 8_000);
        let mut u = Upsampler::new(8_000, 16_000).unwrap();
        let mut high = vec![0; u.output_len(low.len())];
        u.process(&low, &mut high).unwrap();
        let level = db(goertzel(&high[1600..], 1000.0, 16_000) / 10_000.0);
        assert!(level.abs() < 1.0, "{level:.2} dB");
        let image = db(goertzel(&high[1600..], 7000.0, 16_000) / 10_000.0);
        assert!(image < -50.0, "image at 7 kHz: {image:.1} dB");
        let mut d = Downsampler::new(16_000, 8_000).unwrap();
        let mut back = vec![0; d.output_len(high.len())];
        d.process(&high, &mut back).unwrap();
        let level = db(goertzel(&back[800..], 1000.0, 8_000) / 10_000.0);
        assert!(level.abs() < 1.0, "{level:.2} dB back at 8 kHz");
    }

    #[test]
    fn bad_rates_and_short_buffers_are_errors() {
        for rate in [0, 7_000, 48_000, 96_000, 2_000] {
            assert!(Downsampler::new(SAMPLE_RATE, rate).is_err(), "{rate}");
            assert!(Upsampler::new(rate, SAMPLE_RATE).is_err(), "{rate}");
        }
        let mut d = Downsampler::new(SAMPLE_RATE, 8_000).unwrap();
        assert!(d.process(&[0; 960], &mut [0; 159]).is_err());
        assert_eq!(d.process(&[0; 960], &mut [0; 160]).unwrap(), 160);
        let mut u = Upsampler::new(16_000, SAMPLE_RATE).unwrap();
        assert!(u.process(&[0; 320], &mut [0; 959]).is_err());
        // Full-scale square waves overshoot the filter: the output saturates, no overflow.
        let square: Vec<i16> = (0..960)
            .map(|i| if i % 12 < 6 { i16::MAX } else { i16::MIN })
            .collect();
        let mut out = [0i16; 2880];
        assert_eq!(u.process(&square[..320], &mut out).unwrap(), 960);
        assert_eq!(d.process(&square, &mut out).unwrap(), 160);
    }
}
