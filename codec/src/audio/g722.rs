//! ITU-T G.722 at 64 kbit/s (mode 1), the wideband codec of desk phones and HD voice trunks:
//! 16 kHz audio split into two sub-bands by a QMF filter, each coded with ADPCM (6 bits for
//! 0-4 kHz, 2 bits for 4-8 kHz), one byte per pair of samples.
//!
//! The coding itself is the `ezk-g722` crate's (a Rust translation of the public-domain
//! SpanDSP/CMU implementation); this wraps it in the crate's shape: fixed to mode 1, caller's
//! buffers, errors instead of its assertion on odd lengths. Its calls return a new `Vec` each,
//! the one allocation per frame on the phone path.

use ezk_g722::libg722::{Bitrate, decoder::Decoder, encoder::Encoder};

use super::AudioError;

/// G.722's sample rate (its RTP clock is 8000 all the same: RFC 3551 section 4.5.2).
pub const G722_RATE: u32 = 16_000;

/// A G.722 encoder, 16 kHz samples in, one byte per two out.
pub struct G722Encoder {
    inner: Encoder,
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Encoder {
    pub fn new() -> Self {
        // Unpacked (one code per byte is how 64 kbit/s is sent anyway), from 16 kHz.
        Self {
            inner: Encoder::new(Bitrate::Mode1_64000, false, false),
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
        let coded = self.inner.encode(pcm);
        if coded.len() != needed {
            return Err(AudioError::Codec(
                "g722 encoder returned a frame of another length",
            ));
        }
        out.copy_from_slice(&coded);
        Ok(needed)
    }
}

/// A G.722 decoder, one byte in, two 16 kHz samples out.
pub struct G722Decoder {
    inner: Decoder,
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    pub fn new() -> Self {
        Self {
            inner: Decoder::new(Bitrate::Mode1_64000, false, false),
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
        let pcm = self.inner.decode(payload);
        if pcm.len() != needed {
            return Err(AudioError::Codec(
                "g722 decoder returned a frame of another length",
            ));
        }
        out.copy_from_slice(&pcm);
        Ok(needed)
    }
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
}
