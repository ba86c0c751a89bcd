//! The MCU's audio: Opus inputs in, one mix-minus Opus stream per listener out.
//!
//! - [`opus_codec`]: 48 kHz mono Opus decoder (with PLC and in-band FEC) and encoder wrappers.
//! - [`jitter`]: a sans-IO jitter buffer per input, one packet out per mixer tick.
//! - [`talkers`]: voice activity with hysteresis, and the choice of the loudest few.
//! - [`mixer`]: [`AudioMixer`], which ties them together every tick.

pub mod jitter;
pub mod mixer;
pub mod opus_codec;
pub mod talkers;

pub use jitter::{JitterBuffer, JitterError, JitterStats, Pop};
pub use mixer::{AudioMixer, MixedPacket, MixerConfig, MixerStats, Ptime, SourceId};
pub use opus_codec::{OpusDecoder, OpusEncoder};
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
}
