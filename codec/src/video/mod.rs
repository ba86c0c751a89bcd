//! Video decoders and encoders for the MCU: every participant's stream is decoded into an
//! [`I420`] picture, the compositor paints a canvas, and that canvas is encoded once per codec
//! and resolution for all viewers.
//!
//! Two backends sit behind one pair of traits, so the mixer does not care which codec a room
//! negotiated: H264 through Cisco's OpenH264 (built from its bundled source; module `openh264`)
//! and VP8 through the system's libvpx (module `libvpx`), which also decodes VP9 for the
//! recording muxer. Both are set up for real-time use:
//! no lookahead or B-frames (so a frame comes out of every `encode`), rate control on a
//! bitrate the MCU changes as its bandwidth estimate moves, and keyframes on request (a
//! viewer's PLI).
//!
//! Frames cross this API in the forms the crate's RTP payload formats use: an H264 access unit
//! in Annex B form (what [`crate::h264::H264Packetizer`] takes and
//! [`crate::h264::H264Depacketizer`] returns), or a raw VP8 frame.

use crate::frame::{FrameError, FramePool, I420, Plane};

#[allow(unsafe_code)]
mod libvpx;
#[allow(unsafe_code)]
mod openh264;

/// The video codecs the MCU decodes and encodes, and VP9, which is decoded only: the recording
/// muxer composes VP9 participants' files, and nothing here encodes VP9 ([`encoder`] refuses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Vp8,
    H264,
    Vp9,
}

/// Why a codec could not start, encode or decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{0:?} codec could not start: {1}")]
    Init(VideoCodec, String),
    #[error("bad encoder configuration: {0}")]
    BadConfig(String),
    #[error("picture is {got_width}x{got_height}, the encoder takes {width}x{height}")]
    BadSize {
        width: u32,
        height: u32,
        got_width: u32,
        got_height: u32,
    },
    #[error("{0:?} encoding failed: {1}")]
    Encode(VideoCodec, String),
    #[error("{0:?} decoding failed: {1}")]
    Decode(VideoCodec, String),
    #[error("decoded picture refused: {0}")]
    Picture(#[from] FrameError),
}

/// What an encoder is asked to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderConfig {
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
    /// The starting target; [`VideoEncoder::set_bitrate`] changes it later.
    pub bitrate_bps: u32,
    /// The frame rate rate control plans for (the pictures' timestamps carry the real one).
    pub fps: u32,
}

/// What [`VideoEncoder::encode`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// The frame decodes on its own (a VP8 key frame, an H264 IDR with its SPS and PPS).
    pub keyframe: bool,
}

/// Encodes pictures of one size into one stream.
pub trait VideoEncoder: Send {
    /// Encodes one picture (same size as configured; else an error). `out` is cleared and
    /// receives an Annex B access unit (H264) or a VP8 frame. `Ok(None)` if the encoder dropped
    /// the frame (rate control). `timestamp_90k` is the RTP timestamp the frame will carry.
    fn encode(
        &mut self,
        picture: &I420,
        timestamp_90k: u32,
        out: &mut Vec<u8>,
    ) -> Result<Option<Encoded>, CodecError>;

    /// Makes the next encoded frame a keyframe (a viewer joined or sent a PLI).
    fn force_keyframe(&mut self);

    /// Changes the target bitrate from the next frame on, without a keyframe.
    fn set_bitrate(&mut self, bps: u32);

    fn codec(&self) -> VideoCodec;
}

/// Decodes one stream.
pub trait VideoDecoder: Send {
    /// Decodes one frame; `Ok(Some(picture))` with a picture taken from `pool` (any size the
    /// stream says, up to [`crate::frame::MAX_DIMENSION`]), `Ok(None)` when the decoder has no
    /// picture yet, `Err` on garbage (never a panic; the decoder stays usable for the next
    /// keyframe).
    fn decode(&mut self, frame: &[u8], pool: &mut FramePool) -> Result<Option<I420>, CodecError>;
}

/// Keyframes come at least this many frames apart even when none is asked for: a safety net
/// for a viewer whose PLI got lost, rare enough to cost nothing in bitrate.
const KEYFRAME_INTERVAL: u32 = 3000;

/// Starts an encoder.
pub fn encoder(config: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, CodecError> {
    let max = crate::frame::MAX_DIMENSION;
    if !(2..=max).contains(&config.width) || !(2..=max).contains(&config.height) {
        return Err(CodecError::BadConfig(format!(
            "size {}x{} outside 2x2..={max}x{max}",
            config.width, config.height
        )));
    }
    if config.fps == 0 || config.bitrate_bps == 0 {
        return Err(CodecError::BadConfig(
            "frame rate and bitrate must not be zero".into(),
        ));
    }
    Ok(match config.codec {
        VideoCodec::Vp8 => Box::new(libvpx::Vp8Encoder::new(config)?),
        VideoCodec::H264 => Box::new(openh264::H264Encoder::new(config)?),
        VideoCodec::Vp9 => {
            return Err(CodecError::BadConfig("VP9 is decoded, not encoded".into()));
        }
    })
}

/// Starts a decoder.
pub fn decoder(codec: VideoCodec) -> Result<Box<dyn VideoDecoder>, CodecError> {
    Ok(match codec {
        VideoCodec::Vp8 | VideoCodec::Vp9 => Box::new(libvpx::VpxDecoder::new(codec)?),
        VideoCodec::H264 => Box::new(openh264::H264Decoder::new()?),
    })
}

/// Refuses a picture whose size is not the encoder's.
fn check_size(picture: &I420, width: u32, height: u32) -> Result<(), CodecError> {
    if picture.width() == width && picture.height() == height {
        Ok(())
    } else {
        Err(CodecError::BadSize {
            width,
            height,
            got_width: picture.width(),
            got_height: picture.height(),
        })
    }
}

/// Copies a decoder's picture into `picture` (already of the decoded size): each source plane
/// is given as its samples and its stride, in the order Y, U, V. A source too short for the
/// size is an error, not a panic.
fn copy_into(
    picture: &mut I420,
    codec: VideoCodec,
    src: [(&[u8], usize); 3],
) -> Result<(), CodecError> {
    let sizes = [Plane::Y, Plane::U, Plane::V].map(|p| (picture.plane_size(p), picture.stride(p)));
    let (y, u, v) = picture.planes_mut();
    for ((dst, ((width, height), dst_stride)), (src, src_stride)) in
        [y, u, v].into_iter().zip(sizes).zip(src)
    {
        for row in 0..height {
            let from = src
                .get(row * src_stride..)
                .and_then(|s| s.get(..width))
                .ok_or_else(|| CodecError::Decode(codec, "decoded plane too short".into()))?;
            let to = dst
                .get_mut(row * dst_stride..)
                .and_then(|d| d.get_mut(..width))
                .ok_or_else(|| CodecError::Decode(codec, "picture plane too short".into()))?;
            to.copy_from_slice(from);
        }
    }
    Ok(())
}

/// Extends 32-bit RTP timestamps (90 kHz, wrapping) into a 64-bit count that only goes up,
/// which is what the encoders' rate control wants as presentation times.
#[derive(Debug, Default)]
struct Clock {
    last: Option<(u32, u64)>,
}

impl Clock {
    /// The extended timestamp for `ts`: later by the (signed) step from the last one, and at
    /// least one tick after it, so a repeated or backwards timestamp cannot stall rate control.
    fn extend(&mut self, ts: u32) -> u64 {
        let now = match self.last {
            None => u64::from(ts),
            Some((last_ts, last)) => {
                let step = ts.wrapping_sub(last_ts) as i32;
                last + u64::try_from(step).unwrap_or(0).max(1)
            }
        };
        self.last = Some((ts, now));
        now
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests;
