//! The MCU: mixers on their own pinned cores, beside the I/O workers.
//!
//! A channel that has MCU participants gets one [`mixer::Mixer`] on one MCU thread
//! (`--mcu-workers`). The mixer's inputs and outputs are transports of the channel's router
//! (`TransportKind::Mixer`), so the router on its I/O worker does what it does for any
//! subscriber or publisher: an input consumes a producer (keyframe gating, the simulcast layer
//! that fits the tile), an output produces a stream the participants' transports consume
//! (NACK history, keyframe requests, sender reports rewritten per consumer). Between the two
//! threads run bounded lanes of inline packets ([`crate::lane`]): the worker hands over what its
//! router sent to a mixer stream, the MCU thread hands back what its mixers made; neither
//! ever waits on the other, and a full lane drops and counts.
//!
//! Decoding, composing and encoding take milliseconds where forwarding takes microseconds:
//! on their own cores they never hold up the forwarding of the channels around them.

pub mod mixer;
// ok: the unwrap()/expect() calls of mcu/tests.rs are test-only, on values the tests built
#[cfg(test)]
mod tests;
mod thread;

pub use mixer::{
    AUDIO_LEVEL_EXT, MIX_RID_EXT, Mixer, MixerConfig, MixerStats, RUNG_RIDS, StreamSpec,
};
pub use switchyard_codec::audio::opus_codec::Band;
pub use switchyard_codec::layout::{Layout, largest_tile};
pub use switchyard_codec::video::VideoCodec;
pub use thread::{Mcu, McuLanes, McuStats, ToMcu};
