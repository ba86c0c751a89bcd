//! Switchyard's media codecs, for the MCU's mixers.
//!
//! For now this holds the RTP payload formats only: a depacketizer and a packetizer for VP8
//! (RFC 7741), H264 in packetization-mode 1 (RFC 6184) and Opus (RFC 7587). They are sans-IO:
//! fed payloads with their sequence numbers, timestamps and marker bits, they return frames (and
//! frames return payloads), and they are tested without sockets. The decoders and encoders they
//! feed come next.
//!
//! The MCU's video compositor (`layout`, `scale`, `compose`) places every participant's decoded
//! picture in a tile of one canvas (a grid, or the active speaker large above a strip), scaled
//! with its aspect ratio kept, so the canvas is encoded once for all viewers.
//!
//! [`audio`] is the MCU's audio mixer: Opus decoders with PLC and FEC behind a jitter buffer
//! per input, the few loudest talkers mixed, and one Opus stream per listener of everyone but
//! itself (mix-minus), with one shared encode for all who are not talking.

#![forbid(unsafe_code)]

pub mod audio;
pub mod compose;
pub mod depacketize;
pub mod frame;
pub mod h264;
pub mod layout;
pub mod opus;
pub mod packetize;
pub mod scale;
pub mod vp8;

pub use compose::Compositor;
pub use depacketize::{DepacketizeError, Depacketizer, DepacketizerStats, Frame, PayloadFormat};
pub use frame::{FramePool, I420, Plane, Yuv};
pub use layout::{Layout, Rect};
pub use packetize::{PacketizeError, Packetizer, Payloads};
