//! The MCU's audio: Opus inputs in, one mix-minus Opus stream per listener out; and the
//! telephony codecs that bring phone calls to and from the mixer's 48 kHz.
//!
//! - [`opus_codec`]: 48 kHz mono Opus decoder (with PLC and in-band FEC) and encoder wrappers.
//! - [`jitter`]: a sans-IO jitter buffer per input, one packet out per mixer tick.
//! - [`talkers`]: voice activity with hysteresis, and the choice of the loudest few.
//! - [`mixer`]: [`AudioMixer`], which ties them together every tick.
//! - [`phone`]: [`PhoneDecoder`] and [`PhoneEncoder`], a SIP call's PCMU, PCMA, G722 or Opus
//!   payloads to and from 48 kHz mono samples.
//! - [`g711`]: μ-law and A-law, sample by sample.
//! - [`g722`]: G.722 at 64 kbit/s, at 16 kHz.
//! - [`resample`]: polyphase FIR resampling between 48 kHz and 8 or 16 kHz.
//! - [`dtmf`]: RFC 4733 telephone-events in and out, and SIP INFO DTMF bodies.

pub mod dtmf;
pub mod g711;
pub mod g722;
pub mod jitter;
pub mod mixer;
pub mod opus_codec;
pub mod phone;
pub mod resample;
pub mod talkers;

pub use dtmf::{DtmfEvent, DtmfPacket, DtmfReceiver, DtmfSender, parse_dtmf_relay};
pub use jitter::{JitterBuffer, JitterError, JitterStats, Pop};
pub use mixer::{AudioMixer, MixedPacket, MixerConfig, MixerStats, Ptime, SourceId};
pub use opus_codec::{OpusDecoder, OpusEncoder};
pub use phone::{PHONE_RATES, PhoneCodec, PhoneDecoder, PhoneEncoder};
pub use resample::{Downsampler, Upsampler};
pub use talkers::{Activity, TalkerConfig, TalkerSelector, level_of};

/// The one rate everything runs at: Opus's native rate, and WebRTC's RTP clock for Opus.
pub const SAMPLE_RATE: u32 = 48_000;

/// What can go wrong in the audio path.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("empty opus packet")]
    EmptyPacket,
    #[error("payload of {0} bytes is longer than 120 ms")]
    PayloadTooLong(usize),
    #[error("buffer too small: {needed} needed, {got} given")]
    BufferTooSmall { needed: usize, got: usize },
    #[error("frame of {got} samples where {expected} were expected")]
    FrameLength { expected: usize, got: usize },
    #[error("g722 encodes pairs of samples, given {0}")]
    OddLength(usize),
    #[error("{codec} cannot send {ptime_ms} ms packets")]
    Ptime { codec: &'static str, ptime_ms: u32 },
    #[error("no resampling between {0} Hz and {1} Hz")]
    UnsupportedRate(u32, u32),
    #[error("{0}")]
    Codec(&'static str),
}
