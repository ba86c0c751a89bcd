//! Switchyard's media codecs, for the MCU's mixers. Everything here is sans-IO: fed bytes,
//! pictures and samples, it returns the same, and it is tested without sockets.
//!
//! - The RTP payload formats: a depacketizer and a packetizer for VP8 (RFC 7741), VP9
//!   (RFC 9628, layers joined into superframes), AV1 (AOM's format, OBUs in low-overhead
//!   form), H264 in packetization-mode 1 (RFC 6184) and Opus (RFC 7587), fed payloads with
//!   their sequence numbers, timestamps and marker bits. The recorder writes VP9 and AV1 as
//!   they arrive; the mixers decode VP8 and H264.
//! - [`frame`]: I420 pictures and their pool, the one picture type of the crate.
//! - [`video`] decodes and encodes VP8 (libvpx) and H264 (OpenH264) behind one pair of traits,
//!   between those frames and [`I420`] pictures. It holds the crate's only `unsafe`: the calls
//!   into the two C libraries.
//! - The compositor (`layout`, `scale`, `compose`) places every participant's decoded picture
//!   in a tile of one canvas (a grid, or the active speaker large above a strip), scaled with
//!   its aspect ratio kept, so the canvas is encoded once for all viewers.
//! - [`audio`] is the audio mixer: Opus decoders with PLC and FEC behind a jitter buffer per
//!   input, the few loudest talkers mixed, and one Opus stream per listener of everyone but
//!   itself (mix-minus), with one shared encode for all who are not talking.

#![deny(unsafe_code)]

pub mod audio;
pub mod av1;
mod bits;
pub mod compose;
pub mod depacketize;
pub mod frame;
pub mod h264;
pub mod layout;
pub mod opus;
pub mod packetize;
pub mod scale;
pub mod sps;
pub mod video;
pub mod vp8;
pub mod vp9;

pub use compose::Compositor;
pub use depacketize::{DepacketizeError, Depacketizer, DepacketizerStats, Frame, PayloadFormat};
pub use frame::{FramePool, I420, Plane, Yuv};
pub use layout::{Layout, Rect};
pub use packetize::{PacketizeError, Packetizer, Payloads};
pub use video::{CodecError, Encoded, EncoderConfig, VideoCodec, VideoDecoder, VideoEncoder};
