//! Switchyard's media codecs, for the MCU's mixers.
//!
//! It holds the RTP payload formats: a depacketizer and a packetizer for VP8
//! (RFC 7741), H264 in packetization-mode 1 (RFC 6184) and Opus (RFC 7587). They are sans-IO:
//! fed payloads with their sequence numbers, timestamps and marker bits, they return frames (and
//! frames return payloads), and they are tested without sockets.
//!
//! [`video`] decodes and encodes VP8 (libvpx) and H264 (OpenH264) behind one pair of traits,
//! between those frames and [`I420`] pictures. It holds the crate's only `unsafe`: the calls
//! into the two C libraries.

#![deny(unsafe_code)]

pub mod depacketize;
pub mod frame;
pub mod h264;
pub mod opus;
pub mod packetize;
pub mod video;
pub mod vp8;

pub use depacketize::{DepacketizeError, Depacketizer, DepacketizerStats, Frame, PayloadFormat};
pub use frame::{FramePool, I420, Plane, Yuv};
pub use packetize::{PacketizeError, Packetizer, Payloads};
pub use video::{CodecError, Encoded, EncoderConfig, VideoCodec, VideoDecoder, VideoEncoder};
