//! A phone call's audio: the four codecs SIP trunks and phones offer (PCMU, PCMA, G722 and
//! Opus), between their RTP payloads and mono samples at a rate the caller picks.
//!
//! The SIP connector bridges a call at its codec's own rate (8 kHz for G.711, 16 kHz for
//! G.722) and hands that to an Opus encoder and decoder running at the same rate, so a call
//! costs no resampling at all; the mixer's 48 kHz works too. Where a codec's rate and the
//! caller's differ (a G.711 packet on a call bridged at G.722's rate, or 48 kHz), the decoder
//! and encoder resample ([`super::resample`]), each with its own filter, since a filter's
//! history belongs to one stream. Buffers are sized at construction for the longest packet
//! (120 ms).

use super::g711::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
use super::g722::{G722_RATE, G722Decoder, G722Encoder};
use super::opus_codec::{OpusDecoder, OpusEncoder};
use super::resample::{Downsampler, Upsampler};
use super::{AudioError, SAMPLE_RATE};

/// The rates a call's samples may be at: Opus's (its decoder and encoder run at any of them).
pub const PHONE_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, SAMPLE_RATE];

/// The longest packet decoded: 120 ms, Opus's longest (and far beyond any phone's ptime).
const MAX_PACKET_MS: usize = 120;

/// G.711's sample rate and RTP clock.
const NARROW_RATE: u32 = 8_000;

/// The Opus encoder's bitrate for a call: wideband voice with room for in-band FEC.
const OPUS_BITRATE: u32 = 32_000;
/// The loss a call's Opus encoder plans its FEC for: trunks lose little, mobiles more.
const OPUS_LOSS_PERCENT: u8 = 10;

/// A codec a SIP call can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhoneCodec {
    /// G.711 μ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 at 64 kbit/s.
    G722,
    /// Opus, decoded and encoded mono.
    Opus,
}

impl PhoneCodec {
    /// The name in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::G722 => "G722",
            Self::Opus => "opus",
        }
    }

    /// The codec an `a=rtpmap` name stands for, in any case.
    pub fn from_encoding_name(name: &str) -> Option<PhoneCodec> {
        [Self::Pcmu, Self::Pcma, Self::G722, Self::Opus]
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name))
    }

    /// The RTP clock rate. G.722's is 8000 though it samples at 16 kHz: RFC 1890 got it wrong
    /// and RFC 3551 kept it for compatibility.
    pub fn clock_rate(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma | Self::G722 => 8_000,
            Self::Opus => SAMPLE_RATE,
        }
    }

    /// The channels in `a=rtpmap`: Opus is always announced as `opus/48000/2` (RFC 7587), even
    /// when mono is sent.
    pub fn channels(self) -> u8 {
        match self {
            Self::Opus => 2,
            _ => 1,
        }
    }

    /// The static RTP payload type (RFC 3551); Opus's is dynamic.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Self::Pcmu => Some(0),
            Self::Pcma => Some(8),
            Self::G722 => Some(9),
            Self::Opus => None,
        }
    }

    /// The rate the codec itself samples at: what a call bridged with no resampling runs at.
    pub fn sample_rate(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma => NARROW_RATE,
            Self::G722 => G722_RATE,
            Self::Opus => SAMPLE_RATE,
        }
    }
}

enum Decode {
    Pcmu,
    Pcma,
    /// Boxed: its filter state is some hundred bytes, the other variants' a few.
    G722(Box<G722Decoder>),
    Opus(OpusDecoder),
}

/// Between a codec's own rate and the call's, where they differ (where they do not, samples
/// are decoded straight into the caller's buffer and encoded straight from it: no copy).
enum Resample {
    Up(Upsampler),
    Down(Downsampler),
}

impl Resample {
    fn between(
        codec_rate: u32,
        call_rate: u32,
        decoding: bool,
    ) -> Result<Option<Self>, AudioError> {
        let (from, to) = if decoding {
            (codec_rate, call_rate)
        } else {
            (call_rate, codec_rate)
        };
        Ok(match from.cmp(&to) {
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Less => Some(Self::Up(Upsampler::new(from, to)?)),
            std::cmp::Ordering::Greater => Some(Self::Down(Downsampler::new(from, to)?)),
        })
    }

    fn output_len(&self, input: usize) -> usize {
        match self {
            Self::Up(up) => up.output_len(input),
            Self::Down(down) => down.output_len(input),
        }
    }

    fn process(&mut self, input: &[i16], out: &mut [i16]) -> Result<usize, AudioError> {
        match self {
            Self::Up(up) => up.process(input, out),
            Self::Down(down) => down.process(input, out),
        }
    }
}

fn check_rate(rate: u32) -> Result<(), AudioError> {
    if PHONE_RATES.contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::UnsupportedRate(SAMPLE_RATE, rate))
    }
}

/// One call's decoder: RTP payloads in, mono samples at the call's rate out.
pub struct PhoneDecoder {
    codec: PhoneCodec,
    rate: u32,
    decode: Decode,
    /// For G.711 and G.722 on a call at another rate: the codec's samples before resampling,
    /// 120 ms of them.
    low: Vec<i16>,
    resample: Option<Resample>,
}

impl PhoneDecoder {
    /// A decoder whose samples come out at `rate` (one of [`PHONE_RATES`]).
    pub fn new(codec: PhoneCodec, rate: u32) -> Result<Self, AudioError> {
        check_rate(rate)?;
        let decode = match codec {
            PhoneCodec::Pcmu => Decode::Pcmu,
            PhoneCodec::Pcma => Decode::Pcma,
            PhoneCodec::G722 => Decode::G722(Box::default()),
            PhoneCodec::Opus => Decode::Opus(OpusDecoder::with_rate(rate)?),
        };
        let resample = match codec {
            PhoneCodec::Opus => None,
            _ => Resample::between(codec.sample_rate(), rate, true)?,
        };
        let low = match resample {
            Some(_) => vec![0; codec.sample_rate() as usize / 1000 * MAX_PACKET_MS],
            None => Vec::new(),
        };
        Ok(Self {
            codec,
            rate,
            decode,
            low,
            resample,
        })
    }

    pub fn codec(&self) -> PhoneCodec {
        self.codec
    }

    /// Decodes one RTP payload into `out` as mono samples at the decoder's rate; returns how
    /// many were written. `out` must hold 120 ms of them; longer payloads are an error, and
    /// so is one Opus cannot read. An empty G.711 or G.722 payload is no samples.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, AudioError> {
        // G.711 and G.722 are one byte per 8 kHz tick, 8 per ms.
        let narrow_max = NARROW_RATE as usize / 1000 * MAX_PACKET_MS;
        let samples = match &mut self.decode {
            Decode::Opus(opus) => {
                let max = out.len().min(self.rate as usize / 1000 * MAX_PACKET_MS);
                return opus.decode(payload, &mut out[..max]);
            }
            _ if payload.len() > narrow_max => {
                return Err(AudioError::PayloadTooLong(payload.len()));
            }
            Decode::G722(_) => payload.len() * 2,
            Decode::Pcmu | Decode::Pcma => payload.len(),
        };
        // Check the room first, so a short `out` changes no state.
        let needed = self
            .resample
            .as_ref()
            .map_or(samples, |r| r.output_len(samples));
        if out.len() < needed {
            return Err(AudioError::BufferTooSmall {
                needed,
                got: out.len(),
            });
        }
        let into = match self.resample {
            Some(_) => &mut self.low[..],
            None => &mut out[..],
        };
        let decoded = match &mut self.decode {
            Decode::Pcmu => {
                for (s, &b) in into.iter_mut().zip(payload) {
                    *s = ulaw_decode(b);
                }
                payload.len()
            }
            Decode::Pcma => {
                for (s, &b) in into.iter_mut().zip(payload) {
                    *s = alaw_decode(b);
                }
                payload.len()
            }
            Decode::G722(g722) => g722.decode(payload, into)?,
            Decode::Opus(_) => 0,
        };
        match self.resample.as_mut() {
            Some(resample) => resample.process(&self.low[..decoded], out),
            None => Ok(decoded),
        }
    }
}

enum Encode {
    Pcmu,
    Pcma,
    G722(Box<G722Encoder>),
    Opus(OpusEncoder),
}

/// One call's encoder: mono frames at the call's rate in, RTP payloads out.
pub struct PhoneEncoder {
    codec: PhoneCodec,
    ptime_ms: u32,
    rate: u32,
    encode: Encode,
    /// For G.711 and G.722 on a call at another rate: one frame at the codec's rate.
    low: Vec<i16>,
    resample: Option<Resample>,
}

impl PhoneEncoder {
    /// `ptime_ms` 10..=60 in steps of 10 for G.711 and G.722; 10, 20, 40 or 60 for Opus (its
    /// frame sizes; 20 is what everyone sends). Frames come in at `rate` (one of
    /// [`PHONE_RATES`]).
    pub fn new(codec: PhoneCodec, ptime_ms: u32, rate: u32) -> Result<Self, AudioError> {
        check_rate(rate)?;
        let valid = match codec {
            PhoneCodec::Opus => matches!(ptime_ms, 10 | 20 | 40 | 60),
            _ => (10..=60).contains(&ptime_ms) && ptime_ms.is_multiple_of(10),
        };
        if !valid {
            return Err(AudioError::Ptime {
                codec: codec.encoding_name(),
                ptime_ms,
            });
        }
        let encode = match codec {
            PhoneCodec::Pcmu => Encode::Pcmu,
            PhoneCodec::Pcma => Encode::Pcma,
            PhoneCodec::G722 => Encode::G722(Box::default()),
            PhoneCodec::Opus => Encode::Opus(OpusEncoder::with_rate(
                rate,
                OPUS_BITRATE,
                OPUS_LOSS_PERCENT,
            )?),
        };
        let resample = match codec {
            PhoneCodec::Opus => None,
            _ => Resample::between(codec.sample_rate(), rate, false)?,
        };
        let low = match resample {
            Some(_) => vec![0; (codec.sample_rate() / 1000 * ptime_ms) as usize],
            None => Vec::new(),
        };
        Ok(Self {
            codec,
            ptime_ms,
            rate,
            encode,
            low,
            resample,
        })
    }

    pub fn codec(&self) -> PhoneCodec {
        self.codec
    }

    /// Samples one frame takes at the encoder's rate (ptime_ms * rate / 1000).
    pub fn frame_samples(&self) -> usize {
        (self.ptime_ms * self.rate / 1000) as usize
    }

    /// The RTP timestamp step per frame (ptime_ms * clock_rate / 1000; G.722: 8 per ms).
    pub fn timestamp_step(&self) -> u32 {
        self.ptime_ms * self.codec.clock_rate() / 1000
    }

    /// Encodes exactly frame_samples() samples into `out`; returns the payload length. For
    /// G.711 and G.722 that is ptime_ms * 8 bytes; Opus needs up to 1275.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, AudioError> {
        let expected = self.frame_samples();
        if pcm.len() != expected {
            return Err(AudioError::FrameLength {
                expected,
                got: pcm.len(),
            });
        }
        if let Encode::Opus(opus) = &mut self.encode {
            return opus.encode(pcm, out);
        }
        // G.711 and G.722 both send 8 bytes per ms; check before the resampler moves on.
        let bytes = self.ptime_ms as usize * 8;
        let Some(out) = out.get_mut(..bytes) else {
            return Err(AudioError::BufferTooSmall {
                needed: bytes,
                got: out.len(),
            });
        };
        // A frame is a whole number of ms, so exactly `low.len()` samples come out.
        let low: &[i16] = match self.resample.as_mut() {
            Some(resample) => {
                resample.process(pcm, &mut self.low)?;
                &self.low
            }
            None => pcm,
        };
        match &mut self.encode {
            Encode::Pcmu => out
                .iter_mut()
                .zip(low.iter())
                .for_each(|(b, &s)| *b = ulaw_encode(s)),
            Encode::Pcma => out
                .iter_mut()
                .zip(low.iter())
                .for_each(|(b, &s)| *b = alaw_encode(s)),
            Encode::G722(g722) => {
                g722.encode(low, out)?;
            }
            Encode::Opus(_) => {}
        }
        Ok(bytes)
    }
}

// ok: test code
#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::opus_codec::{MAX_ENCODED, MAX_PACKET_SAMPLES};
    use crate::audio::resample::tests::{goertzel, tone};
    use proptest::prelude::*;

    const ALL: [PhoneCodec; 4] = [
        PhoneCodec::Pcmu,
        PhoneCodec::Pcma,
        PhoneCodec::G722,
        PhoneCodec::Opus,
    ];

    #[test]
    fn names_clocks_and_payload_types() {
        let table: Vec<_> = ALL
            .iter()
            .map(|c| {
                (
                    c.encoding_name(),
                    c.clock_rate(),
                    c.channels(),
                    c.static_payload_type(),
                )
            })
            .collect();
        assert_eq!(
            table,
            [
                ("PCMU", 8000, 1, Some(0)),
                ("PCMA", 8000, 1, Some(8)),
                ("G722", 8000, 1, Some(9)),
                ("opus", 48000, 2, None),
            ]
        );
        for c in ALL {
            assert_eq!(PhoneCodec::from_encoding_name(c.encoding_name()), Some(c));
        }
        assert_eq!(
            PhoneCodec::from_encoding_name("pcmu"),
            Some(PhoneCodec::Pcmu)
        );
        assert_eq!(
            PhoneCodec::from_encoding_name("OPUS"),
            Some(PhoneCodec::Opus)
        );
        assert_eq!(
            PhoneCodec::from_encoding_name("g722"),
            Some(PhoneCodec::G722)
        );
        assert_eq!(PhoneCodec::from_encoding_name("G729"), None);
        assert_eq!(PhoneCodec::from_encoding_name("telephone-event"), None);
        assert_eq!(PhoneCodec::from_encoding_name(""), None);
    }

    #[test]
    fn frame_sizes_and_timestamp_steps() {
        for ptime in (10..=60).step_by(10) {
            for c in [PhoneCodec::Pcmu, PhoneCodec::Pcma, PhoneCodec::G722] {
                let e = PhoneEncoder::new(c, ptime, SAMPLE_RATE).unwrap();
                assert_eq!(e.frame_samples(), ptime as usize * 48);
                assert_eq!(e.timestamp_step(), ptime * 8, "{c:?}");
            }
        }
        let e = PhoneEncoder::new(PhoneCodec::Opus, 20, SAMPLE_RATE).unwrap();
        assert_eq!((e.frame_samples(), e.timestamp_step()), (960, 960));
        for (c, ptime) in [
            (PhoneCodec::Pcmu, 0),
            (PhoneCodec::Pcma, 15),
            (PhoneCodec::G722, 70),
            (PhoneCodec::Opus, 30),
            (PhoneCodec::Opus, 120),
        ] {
            assert!(
                PhoneEncoder::new(c, ptime, SAMPLE_RATE).is_err(),
                "{c:?} {ptime}"
            );
        }
    }

    /// One second of a 1 kHz tone through an encoder and decoder in frames of `ptime`: the
    /// payloads' sizes, and the tone's level at the end.
    fn round_trip(codec: PhoneCodec, ptime: u32) -> f64 {
        let mut enc = PhoneEncoder::new(codec, ptime, SAMPLE_RATE).unwrap();
        let mut dec = PhoneDecoder::new(codec, SAMPLE_RATE).unwrap();
        assert_eq!(dec.codec(), codec);
        assert_eq!(enc.codec(), codec);
        // Whole frames: 30 ms does not divide a second.
        let len = 48_000 / enc.frame_samples() * enc.frame_samples();
        let input = tone(1000.0, SAMPLE_RATE, 10_000.0, len);
        let mut payload = [0u8; MAX_ENCODED];
        let mut pcm = vec![0i16; MAX_PACKET_SAMPLES];
        let mut output = Vec::new();
        for frame in input.chunks(enc.frame_samples()) {
            let len = enc.encode(frame, &mut payload).unwrap();
            if codec != PhoneCodec::Opus {
                assert_eq!(len, ptime as usize * 8, "{codec:?}");
            }
            let n = dec.decode(&payload[..len], &mut pcm).unwrap();
            assert_eq!(n, frame.len(), "{codec:?}");
            output.extend_from_slice(&pcm[..n]);
        }
        let level = goertzel(&output[9600..], 1000.0, SAMPLE_RATE) / 10_000.0;
        20.0 * level.log10()
    }

    #[test]
    fn every_codec_round_trips_a_tone() {
        for codec in ALL {
            let level = round_trip(codec, 20);
            assert!(level.abs() < 1.0, "{codec:?}: {level:.2} dB");
        }
        for ptime in [10, 30, 60] {
            let level = round_trip(PhoneCodec::Pcma, ptime);
            assert!(level.abs() < 1.0, "PCMA at {ptime} ms: {level:.2} dB");
        }
        let level = round_trip(PhoneCodec::Opus, 60);
        assert!(level.abs() < 1.0, "Opus at 60 ms: {level:.2} dB");
    }

    #[test]
    fn calls_at_their_codecs_rates_need_no_resampling() {
        // The connector's way: each codec at its own rate, G.711 packets on a G.722 call, and
        // Opus at a phone's rate.
        for (codec, rate) in [
            (PhoneCodec::Pcmu, 8_000),
            (PhoneCodec::Pcma, 16_000),
            (PhoneCodec::G722, 16_000),
            (PhoneCodec::G722, 8_000),
            (PhoneCodec::Opus, 8_000),
            (PhoneCodec::Opus, 16_000),
        ] {
            let mut enc = PhoneEncoder::new(codec, 20, rate).unwrap();
            let mut dec = PhoneDecoder::new(codec, rate).unwrap();
            assert_eq!(enc.frame_samples(), rate as usize / 50);
            let input = tone(1000.0, rate, 10_000.0, rate as usize);
            let mut payload = [0u8; MAX_ENCODED];
            let mut pcm = vec![0i16; MAX_PACKET_SAMPLES];
            let mut output = Vec::new();
            for frame in input.chunks(enc.frame_samples()) {
                let len = enc.encode(frame, &mut payload).unwrap();
                let n = dec.decode(&payload[..len], &mut pcm).unwrap();
                assert_eq!(n, frame.len(), "{codec:?} at {rate}");
                output.extend_from_slice(&pcm[..n]);
            }
            let level = goertzel(&output[rate as usize / 5..], 1000.0, rate) / 10_000.0;
            let db = 20.0 * level.log10();
            assert!(db.abs() < 1.0, "{codec:?} at {rate}: {db:.2} dB");
        }
        for rate in [0, 11_025, 44_100, 96_000] {
            assert!(PhoneDecoder::new(PhoneCodec::Pcmu, rate).is_err(), "{rate}");
            assert!(
                PhoneEncoder::new(PhoneCodec::Opus, 20, rate).is_err(),
                "{rate}"
            );
        }
    }

    #[test]
    fn decoding_a_known_g711_payload() {
        // μ-law 0xFF is silence; A-law 0xD5 is the smallest positive step: 160 bytes are 20 ms.
        let mut pcm = [0i16; MAX_PACKET_SAMPLES];
        let mut dec = PhoneDecoder::new(PhoneCodec::Pcmu, SAMPLE_RATE).unwrap();
        assert_eq!(dec.decode(&[0xFF; 160], &mut pcm).unwrap(), 960);
        assert!(pcm[..960].iter().all(|&s| s == 0));
        let mut dec = PhoneDecoder::new(PhoneCodec::Pcma, SAMPLE_RATE).unwrap();
        for _ in 0..5 {
            assert_eq!(dec.decode(&[0xD5; 160], &mut pcm).unwrap(), 960);
        }
        // A constant +8 comes through the upsampler as +8 (the filter's DC gain is 1).
        assert!(pcm[..960].iter().all(|&s| s == 8), "{:?}", &pcm[..8]);
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut pcm = [0i16; MAX_PACKET_SAMPLES];
        for codec in [PhoneCodec::Pcmu, PhoneCodec::Pcma, PhoneCodec::G722] {
            let mut dec = PhoneDecoder::new(codec, SAMPLE_RATE).unwrap();
            // 120 ms is the limit.
            assert_eq!(dec.decode(&[0x55; 960], &mut pcm).unwrap(), 5760);
            assert!(matches!(
                dec.decode(&[0x55; 961], &mut pcm),
                Err(AudioError::PayloadTooLong(961))
            ));
            assert!(matches!(
                dec.decode(&[0x55; 160], &mut pcm[..959]),
                Err(AudioError::BufferTooSmall { .. })
            ));
            assert_eq!(dec.decode(&[], &mut pcm).unwrap(), 0);

            let mut enc = PhoneEncoder::new(codec, 20, SAMPLE_RATE).unwrap();
            let mut out = [0u8; 160];
            assert!(matches!(
                enc.encode(&[0; 959], &mut out),
                Err(AudioError::FrameLength { .. })
            ));
            assert!(enc.encode(&[0; 960], &mut out[..159]).is_err());
            assert_eq!(enc.encode(&[0; 960], &mut out).unwrap(), 160);
        }
        let mut dec = PhoneDecoder::new(PhoneCodec::Opus, SAMPLE_RATE).unwrap();
        assert!(dec.decode(&[], &mut pcm).is_err());
        let mut enc = PhoneEncoder::new(PhoneCodec::Opus, 20, SAMPLE_RATE).unwrap();
        assert!(enc.encode(&[0; 480], &mut [0; MAX_ENCODED]).is_err());
        // An Opus packet of 20 ms into 10 ms of room.
        let mut payload = [0u8; MAX_ENCODED];
        let len = enc.encode(&[0; 960], &mut payload).unwrap();
        assert!(dec.decode(&payload[..len], &mut pcm[..480]).is_err());
        assert_eq!(dec.decode(&payload[..len], &mut pcm).unwrap(), 960);
    }

    proptest! {
        #[test]
        fn any_payload_decodes_or_fails_cleanly(
            payload in proptest::collection::vec(any::<u8>(), 0..1200),
        ) {
            let mut pcm = [0i16; MAX_PACKET_SAMPLES];
            for codec in ALL {
                let mut dec = PhoneDecoder::new(codec, SAMPLE_RATE).unwrap();
                if let Ok(n) = dec.decode(&payload, &mut pcm) {
                    prop_assert!(n <= MAX_PACKET_SAMPLES);
                }
            }
        }
    }
}
