//! H264 through Cisco's OpenH264 (the `openh264` crate, which builds the library from its
//! bundled source: no system library or download at run time).
//!
//! The encoder is set up for what Chromium's WebRTC stack decodes everywhere: Constrained
//! Baseline (profile 66, no B-frames, CAVLC), one slice per picture (the packetizer fragments
//! it with FU-A), the camera real-time usage, rate control on bitrate that may skip a frame
//! rather than overshoot, one thread. Its output is Annex B with 4-byte start codes, what the
//! crate's H264 packetizer takes.
//!
//! The crate's safe API fixes the bitrate when the encoder starts; changing it later goes
//! through OpenH264's own option call, the one `unsafe` here.

use std::os::raw::c_void;

use openh264::OpenH264API;
use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Complexity, Encoder, FrameRate, FrameType, IntraFramePeriod, Profile, RateControlMode,
    UsageType,
};
use openh264::formats::YUVSource;
use openh264_sys2::{
    ENCODER_OPTION, ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, LAYER_NUM, SBitrateInfo,
    SPATIAL_LAYER_0, SPATIAL_LAYER_ALL,
};

use super::{
    Clock, CodecError, Encoded, EncoderConfig, KEYFRAME_INTERVAL, VideoCodec, VideoDecoder,
    VideoEncoder, check_size, copy_into,
};
use crate::frame::{FramePool, I420, Plane};

/// OpenH264's limit (its level 5.2); larger sizes are refused at start rather than at the
/// first frame.
const MAX_LONG_SIDE: u32 = 3840;
const MAX_SHORT_SIDE: u32 = 2160;

/// An [`I420`] as OpenH264 reads it, without copying.
struct Source<'a>(&'a I420);

impl YUVSource for Source<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width() as usize, self.0.height() as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (
            self.0.stride(Plane::Y),
            self.0.stride(Plane::U),
            self.0.stride(Plane::V),
        )
    }

    fn y(&self) -> &[u8] {
        self.0.plane(Plane::Y)
    }

    fn u(&self) -> &[u8] {
        self.0.plane(Plane::U)
    }

    fn v(&self) -> &[u8] {
        self.0.plane(Plane::V)
    }
}

/// An H264 encoder.
pub(super) struct H264Encoder {
    encoder: Encoder,
    width: u32,
    height: u32,
    fps: u32,
    /// The target, which is also the ceiling: the MCU's bandwidth estimate is not to be
    /// overshot.
    bitrate: u32,
    /// OpenH264 starts its encoder on the first picture; until then a new bitrate is applied by
    /// starting over with it.
    started: bool,
    clock: Clock,
}

/// The encoder's settings (see the module's documentation for why).
fn settings(bitrate_bps: u32, fps: u32) -> openh264::encoder::EncoderConfig {
    openh264::encoder::EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        .skip_frames(true)
        .complexity(Complexity::Low)
        .num_threads(1)
        .intra_frame_period(IntraFramePeriod::from_num_frames(KEYFRAME_INTERVAL))
}

fn start(bitrate_bps: u32, fps: u32) -> Result<Encoder, CodecError> {
    Encoder::with_api_config(OpenH264API::from_source(), settings(bitrate_bps, fps))
        .map_err(|e| CodecError::Init(VideoCodec::H264, e.to_string()))
}

impl H264Encoder {
    pub(super) fn new(config: &EncoderConfig) -> Result<Self, CodecError> {
        let (long, short) = (
            config.width.max(config.height),
            config.width.min(config.height),
        );
        if long > MAX_LONG_SIDE || short > MAX_SHORT_SIDE {
            return Err(CodecError::BadConfig(format!(
                "H264 size {}x{} above OpenH264's {MAX_LONG_SIDE}x{MAX_SHORT_SIDE}",
                config.width, config.height
            )));
        }
        // H264 codes whole macroblocks of chroma pairs; OpenH264 refuses odd sizes.
        if !config.width.is_multiple_of(2) || !config.height.is_multiple_of(2) {
            return Err(CodecError::BadConfig(format!(
                "H264 size {}x{} is odd",
                config.width, config.height
            )));
        }
        Ok(Self {
            encoder: start(config.bitrate_bps, config.fps)?,
            width: config.width,
            height: config.height,
            fps: config.fps,
            bitrate: config.bitrate_bps,
            started: false,
            clock: Clock::default(),
        })
    }

    /// Sets one of OpenH264's bitrate options.
    fn set_option(&mut self, option: ENCODER_OPTION, layer: LAYER_NUM, bps: u32) {
        let mut info = SBitrateInfo {
            iLayer: layer,
            iBitrate: i32::try_from(bps).unwrap_or(i32::MAX),
        };
        // SAFETY: the encoder has been initialized (by its first picture), and both bitrate
        // options take a pointer to an SBitrateInfo, which outlives the call. Only the rate
        // changes, nothing the crate's wrapper relies on. A refusal keeps the old rate.
        unsafe {
            self.encoder
                .raw_api()
                .set_option(option, (&raw mut info).cast::<c_void>());
        }
    }
}

impl VideoEncoder for H264Encoder {
    fn encode(
        &mut self,
        picture: &I420,
        timestamp_90k: u32,
        out: &mut Vec<u8>,
    ) -> Result<Option<Encoded>, CodecError> {
        check_size(picture, self.width, self.height)?;
        out.clear();
        let millis = self.clock.extend(timestamp_90k) / 90;
        let stream = self
            .encoder
            .encode_at(&Source(picture), openh264::Timestamp::from_millis(millis))
            .map_err(|e| CodecError::Encode(VideoCodec::H264, e.to_string()))?;
        self.started = true;
        let keyframe = match stream.frame_type() {
            FrameType::IDR => true,
            FrameType::I | FrameType::P | FrameType::IPMixed => false,
            FrameType::Skip | FrameType::Invalid => return Ok(None),
        };
        stream.write_vec(out);
        Ok(Some(Encoded { keyframe }))
    }

    fn force_keyframe(&mut self) {
        // Before the first picture the encoder is not running yet, and its first frame is an
        // IDR anyway.
        if self.started {
            self.encoder.force_intra_frame();
        }
    }

    fn set_bitrate(&mut self, bps: u32) {
        if !self.started {
            if let Ok(encoder) = start(bps, self.fps) {
                self.encoder = encoder;
                self.bitrate = bps;
            }
            return;
        }
        // OpenH264 refuses a target above the (single) layer's ceiling and a ceiling below its
        // target, so the ceiling moves first on the way up and last on the way down. The
        // target is set for all layers, which also spreads it over them (here, the one).
        let bps = bps.max(1);
        if bps > self.bitrate {
            self.set_option(ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, bps);
            self.set_option(ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL, bps);
        } else {
            self.set_option(ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL, bps);
            self.set_option(ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, bps);
        }
        self.bitrate = bps;
    }

    fn codec(&self) -> VideoCodec {
        VideoCodec::H264
    }
}

/// An H264 decoder.
pub(super) struct H264Decoder {
    decoder: Decoder,
}

impl H264Decoder {
    pub(super) fn new() -> Result<Self, CodecError> {
        let decoder =
            Decoder::new().map_err(|e| CodecError::Init(VideoCodec::H264, e.to_string()))?;
        Ok(Self { decoder })
    }
}

impl VideoDecoder for H264Decoder {
    fn decode(&mut self, frame: &[u8], pool: &mut FramePool) -> Result<Option<I420>, CodecError> {
        let fail = |e: String| CodecError::Decode(VideoCodec::H264, e);
        if frame.is_empty() {
            return Err(fail("empty access unit".into()));
        }
        let decoded = self
            .decoder
            .decode(frame)
            .map_err(|e| fail(e.to_string()))?;
        let Some(yuv) = decoded else {
            return Ok(None);
        };
        let (width, height) = yuv.dimensions();
        let (Ok(width), Ok(height)) = (u32::try_from(width), u32::try_from(height)) else {
            return Err(fail("decoded size out of range".into()));
        };
        let mut picture = pool.get(width, height)?;
        let (sy, su, sv) = yuv.strides();
        match copy_into(
            &mut picture,
            VideoCodec::H264,
            [(yuv.y(), sy), (yuv.u(), su), (yuv.v(), sv)],
        ) {
            Ok(()) => Ok(Some(picture)),
            Err(e) => {
                pool.put(picture);
                Err(e)
            }
        }
    }
}
