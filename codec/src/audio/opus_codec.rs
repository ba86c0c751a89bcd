//! Thin wrappers over libopus (through the `opus` crate) fixed to what the mixer needs: 48 kHz,
//! mono, 16-bit PCM. The SIP connector runs them at a phone codec's own rate instead (8 or
//! 16 kHz, [`OpusDecoder::with_rate`], [`OpusEncoder::with_rate`]): libopus takes and gives
//! those rates natively, so a phone call's audio is never resampled on its way.
//!
//! Mono because the mixer sums voices: a conference mix has no stereo image to keep, and a mono
//! decoder downmixes the stereo packets Chromium may send (its Opus is stereo-capable, but a
//! voice call is mono in practice) inside libopus, for free. Mono encoding halves the encoders'
//! CPU, which is the mixer's main cost.
//!
//! The decoder adds the two ways Opus fills a hole, so that the jitter buffer can ask for them by
//! name: packet loss concealment (PLC, an extrapolation from the decoder's state) and in-band FEC
//! (the low-bitrate copy of a lost frame that the *next* packet carries, when its encoder was
//! told to expect loss).

use opus::{Application, Bitrate, Channels};

use super::{AudioError, SAMPLE_RATE};

/// The most samples one Opus packet decodes to at 48 kHz: 120 ms.
pub const MAX_PACKET_SAMPLES: usize = 5760;

/// The most bytes one encoded packet may take: the Opus limit for one frame.
pub const MAX_ENCODED: usize = 1275;

/// A mono Opus decoder, at 48 kHz unless made [`OpusDecoder::with_rate`].
pub struct OpusDecoder {
    inner: opus::Decoder,
}

/// The rates libopus decodes to and encodes from.
const OPUS_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, SAMPLE_RATE];

fn check_rate(rate: u32) -> Result<u32, AudioError> {
    if OPUS_RATES.contains(&rate) {
        Ok(rate)
    } else {
        Err(AudioError::UnsupportedRate(SAMPLE_RATE, rate))
    }
}

impl OpusDecoder {
    pub fn new() -> Result<Self, AudioError> {
        Self::with_rate(SAMPLE_RATE)
    }

    /// A decoder whose samples come out at `rate`: 8, 12, 16, 24 or 48 kHz. Lower rates cost
    /// less (libopus skips the bands above them).
    pub fn with_rate(rate: u32) -> Result<Self, AudioError> {
        Ok(Self {
            inner: opus::Decoder::new(check_rate(rate)?, Channels::Mono)?,
        })
    }

    /// Decodes `packet` into the start of `out` and returns the number of samples written. An
    /// error (a packet libopus cannot parse, or one longer than `out`) leaves the state usable:
    /// the caller conceals the frame instead.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, AudioError> {
        // The `opus` crate takes an empty packet as "lost": that must be asked for by name.
        if packet.is_empty() {
            return Err(AudioError::EmptyPacket);
        }
        Ok(self.inner.decode(packet, out, false)?)
    }

    /// Conceals one lost packet: fills all of `out` (a multiple of 2.5 ms, 120 samples) by
    /// extrapolating from what was decoded before.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, AudioError> {
        Ok(self.inner.decode(&[], out, false)?)
    }

    /// Recovers one lost packet from the FEC data in the packet after it (`next`), filling all of
    /// `out` (the lost packet's duration). libopus falls back to concealment when `next` carries
    /// no FEC data. `next` itself is decoded normally afterwards.
    pub fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, AudioError> {
        if next.is_empty() {
            return Err(AudioError::EmptyPacket);
        }
        Ok(self.inner.decode(next, out, true)?)
    }

    /// Forgets the signal before, as if new: used before decoding again after packets were
    /// skipped, so the first one decoded is not read as the continuation of one long ago.
    pub fn reset(&mut self) -> Result<(), AudioError> {
        Ok(self.inner.reset_state()?)
    }
}

/// The samples at 48 kHz that `packet` holds, read from its TOC byte and frame count (no
/// decoding); `None` for a packet libopus cannot parse.
pub fn packet_samples(packet: &[u8]) -> Option<usize> {
    opus::packet::get_nb_samples(packet, SAMPLE_RATE).ok()
}

/// An audio band narrower than Opus's full band (see [`OpusEncoder::set_max_band`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    /// Up to 4 kHz: what G.711 carries.
    Narrow,
    /// Up to 8 kHz: what G.722 carries.
    Wide,
}

/// A mono Opus encoder for voice (48 kHz unless made [`OpusEncoder::with_rate`]): the VOIP application (not restricted-lowdelay, which
/// is CELT-only and so has no in-band FEC), in-band FEC on, constant frame duration given by the
/// PCM length (20 ms for the mixer).
pub struct OpusEncoder {
    inner: opus::Encoder,
}

/// Opus's accepted bitrate range, bits per second.
const MIN_BITRATE: u32 = 6_000;
const MAX_BITRATE: u32 = 510_000;

impl OpusEncoder {
    /// `bitrate` is clamped to Opus's 6-510 kbit/s; `loss_percent` is the packet loss the
    /// encoder expects, which decides how much FEC it adds (0 turns FEC off in practice).
    /// The complexity is libopus's default (9) until [`OpusEncoder::set_complexity`].
    pub fn new(bitrate: u32, loss_percent: u8) -> Result<Self, AudioError> {
        Self::with_rate(SAMPLE_RATE, bitrate, loss_percent)
    }

    /// An encoder that takes samples at `rate` (8, 12, 16, 24 or 48 kHz); otherwise as
    /// [`OpusEncoder::new`]. At 8 kHz only the narrow band is coded (nothing above 4 kHz is
    /// there), at 16 kHz up to the wide band.
    pub fn with_rate(rate: u32, bitrate: u32, loss_percent: u8) -> Result<Self, AudioError> {
        let mut inner = opus::Encoder::new(check_rate(rate)?, Channels::Mono, Application::Voip)?;
        inner.set_inband_fec(true)?;
        inner.set_packet_loss_perc(i32::from(loss_percent.min(100)))?;
        let mut encoder = Self { inner };
        encoder.set_bitrate(bitrate)?;
        Ok(encoder)
    }

    /// Sets the target bitrate (clamped to 6-510 kbit/s), e.g. from the receivers' estimate.
    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<(), AudioError> {
        let bits = bitrate.clamp(MIN_BITRATE, MAX_BITRATE);
        // The clamp keeps it far below i32::MAX.
        self.inner.set_bitrate(Bitrate::Bits(bits as i32))?;
        Ok(())
    }

    /// Sets libopus's complexity, 0-10 (clamped): how hard it searches for the best coding.
    /// Lower costs less CPU per frame for slightly lower quality at the same bitrate.
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), AudioError> {
        self.inner.set_complexity(i32::from(complexity.min(10)))?;
        Ok(())
    }

    /// Encodes one frame (`pcm` is 2.5, 5, 10, 20, 40 or 60 ms of samples) into `out`, returning
    /// the packet's length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, AudioError> {
        Ok(self.inner.encode(pcm, out)?)
    }

    /// Caps the audio band coded: `narrow` 4 kHz (a G.711 phone's band), else 8 kHz (G.722's),
    /// or neither (`None`: Opus's full band). A signal that has nothing above the cap costs less
    /// to encode, and the decoder on the other side does less too.
    pub fn set_max_band(&mut self, band: Option<Band>) -> Result<(), AudioError> {
        let bandwidth = match band {
            Some(Band::Narrow) => opus::Bandwidth::Narrowband,
            Some(Band::Wide) => opus::Bandwidth::Wideband,
            None => opus::Bandwidth::Fullband,
        };
        self.inner.set_max_bandwidth(bandwidth)?;
        Ok(())
    }

    /// Forgets the signal before, as if new. Used when a listener moves onto this encoder after
    /// it sat unused: state from seconds ago predicts nothing about the next frame.
    pub fn reset(&mut self) -> Result<(), AudioError> {
        Ok(self.inner.reset_state()?)
    }
}

// ok: test code
#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, start: usize, out: &mut [i16]) {
        for (i, s) in out.iter_mut().enumerate() {
            let t = (start + i) as f64 / f64::from(SAMPLE_RATE);
            *s = (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
        }
    }

    /// The RMS of a tone's component in `pcm` (a single-bin DFT).
    fn component(pcm: &[i16], freq: f64) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in pcm.iter().enumerate() {
            let w = 2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(SAMPLE_RATE);
            re += f64::from(s) * w.cos();
            im += f64::from(s) * w.sin();
        }
        (re * re + im * im).sqrt() / pcm.len() as f64
    }

    #[test]
    fn a_narrow_band_keeps_voice_and_drops_what_is_above() {
        let mut enc = OpusEncoder::new(32_000, 0).unwrap();
        enc.set_max_band(Some(Band::Narrow)).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let (mut low, mut high) = (Vec::new(), Vec::new());
        for (freq, sink) in [(1000.0, &mut low), (6000.0, &mut high)] {
            for n in 0..25 {
                let mut pcm = [0i16; 960];
                tone(freq, n * 960, &mut pcm);
                let mut packet = [0u8; MAX_ENCODED];
                let len = enc.encode(&pcm, &mut packet).unwrap();
                let mut out = [0i16; 960];
                dec.decode(&packet[..len], &mut out).unwrap();
                sink.extend_from_slice(&out);
            }
        }
        // The last half second of each, after the encoder settled.
        let low = component(&low[low.len() - 24_000..], 1000.0);
        let high = component(&high[high.len() - 24_000..], 6000.0);
        assert!(low > 2000.0, "1 kHz came back at {low}");
        assert!(
            high < low / 30.0,
            "6 kHz came back at {high} (1 kHz at {low})"
        );
        enc.set_max_band(Some(Band::Wide)).unwrap();
        enc.set_max_band(None).unwrap();
    }

    #[test]
    fn round_trip_conceal_and_fec() {
        let mut enc = OpusEncoder::new(32_000, 20).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut pcm = [0i16; 960];
        let mut packets = Vec::new();
        for n in 0..10 {
            tone(440.0, n * 960, &mut pcm);
            let mut out = [0u8; MAX_ENCODED];
            let len = enc.encode(&pcm, &mut out).unwrap();
            packets.push(out[..len].to_vec());
        }
        let mut out = [0i16; MAX_PACKET_SAMPLES];
        for p in &packets[..5] {
            assert_eq!(dec.decode(p, &mut out).unwrap(), 960);
        }
        // Packet 5 lost: FEC from packet 6, then packet 6 itself, then PLC for 7.
        assert_eq!(dec.decode_fec(&packets[6], &mut out[..960]).unwrap(), 960);
        let energy: f64 = out[..960].iter().map(|&s| f64::from(s).powi(2)).sum();
        assert!(energy > 0.0);
        assert_eq!(dec.decode(&packets[6], &mut out).unwrap(), 960);
        assert_eq!(dec.conceal(&mut out[..960]).unwrap(), 960);
        assert!(dec.decode(&[], &mut out).is_err());
        assert!(dec.decode_fec(&[], &mut out).is_err());
        enc.reset().unwrap();
        enc.set_complexity(0).unwrap();
        enc.set_complexity(200).unwrap();
        dec.reset().unwrap();
        assert_eq!(packet_samples(&packets[0]), Some(960));
        assert_eq!(packet_samples(&[]), None);
        enc.set_bitrate(1).unwrap();
        enc.set_bitrate(u32::MAX).unwrap();
    }
}
