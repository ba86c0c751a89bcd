//! VP8 through libvpx, the system library (Debian's libvpx 1.12), called through the
//! `env-libvpx-sys` bindings. This is the crate's only FFI to a C library by hand, so every
//! call to it lives here, each with what makes it sound.
//!
//! Settings follow what a real-time sender needs: one pass, no lag (a frame in, a frame out),
//! the real-time deadline and a fast speed, CBR with error resilience (a lost frame damages
//! less), one thread (the MCU runs many encoders side by side, one per core's worth of work).

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_long, c_uint, c_ulong};
use std::ptr;

use vpx_sys::vp8e_enc_control_id::{
    VP8E_SET_CPUUSED, VP8E_SET_MAX_INTRA_BITRATE_PCT, VP8E_SET_NOISE_SENSITIVITY,
    VP8E_SET_STATIC_THRESHOLD,
};
use vpx_sys::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT;
use vpx_sys::{
    VPX_DECODER_ABI_VERSION, VPX_DL_REALTIME, VPX_EFLAG_FORCE_KF, VPX_ENCODER_ABI_VERSION,
    VPX_ERROR_RESILIENT_DEFAULT, VPX_FRAME_IS_KEY, vpx_codec_ctx_t, vpx_codec_enc_cfg_t,
    vpx_codec_err_t, vpx_codec_iter_t, vpx_image_t, vpx_img_fmt, vpx_kf_mode, vpx_rc_mode,
};

use super::{
    Clock, CodecError, Encoded, EncoderConfig, KEYFRAME_INTERVAL, VideoCodec, VideoDecoder,
    VideoEncoder, check_size, copy_into,
};
use crate::frame::{FramePool, I420, Plane};

/// libvpx's speed setting: negative values pick real-time speed presets, -6 fast enough for
/// several 720p encodes per core while keeping quality usable.
const CPU_USED: c_int = -6;

/// Rate control may drop a frame when its buffer falls below this percentage of full, rather
/// than overshoot the bitrate the MCU was given.
const DROP_FRAME_THRESHOLD: c_uint = 30;

/// A keyframe may take at most this percentage of an average frame's bits, so a PLI does not
/// burst far past the link's rate.
const MAX_INTRA_BITRATE_PCT: c_int = 300;

/// The message for a libvpx error code.
fn describe(err: vpx_codec_err_t) -> String {
    // SAFETY: vpx_codec_err_to_string returns a pointer to a static NUL-terminated string for
    // every code, never null.
    let text = unsafe { CStr::from_ptr(vpx_sys::vpx_codec_err_to_string(err)) };
    text.to_string_lossy().into_owned()
}

/// Turns a libvpx status into a result.
fn check(err: vpx_codec_err_t, what: impl FnOnce(String) -> CodecError) -> Result<(), CodecError> {
    if err == vpx_codec_err_t::VPX_CODEC_OK {
        Ok(())
    } else {
        Err(what(describe(err)))
    }
}

/// A started codec context, destroyed on drop. Boxed: libvpx keeps the context's address.
struct Context(Box<vpx_codec_ctx_t>);

impl Context {
    /// Runs `init` on a zeroed context and keeps the context (to destroy it later) only when
    /// that succeeded: a failed init leaves nothing to destroy.
    fn init(init: impl FnOnce(*mut vpx_codec_ctx_t) -> vpx_codec_err_t) -> Result<Self, String> {
        // SAFETY: vpx_codec_ctx_t is plain data (pointers, integers, a union of pointers and an
        // error enum whose zero is VPX_CODEC_OK); all zeros is what libvpx expects before init.
        let mut ctx: Box<vpx_codec_ctx_t> =
            Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        match init(&mut *ctx) {
            vpx_codec_err_t::VPX_CODEC_OK => Ok(Context(ctx)),
            err => Err(describe(err)),
        }
    }

    fn as_mut_ptr(&mut self) -> *mut vpx_codec_ctx_t {
        &mut *self.0
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: a Context is only kept after its init call succeeded, and is destroyed once.
        unsafe {
            vpx_sys::vpx_codec_destroy(self.as_mut_ptr());
        }
    }
}

// SAFETY: a libvpx context has no thread affinity; it is only ever used through `&mut self`,
// so one thread at a time.
unsafe impl Send for Context {}

/// An encoder's configuration, kept to change its bitrate later.
struct Settings(vpx_codec_enc_cfg_t);

// SAFETY: the configuration's only pointers are the two-pass statistics buffers, null in the
// one-pass mode used here; the rest is numbers.
unsafe impl Send for Settings {}

/// A VP8 encoder.
pub(super) struct Vp8Encoder {
    ctx: Context,
    cfg: Settings,
    width: u32,
    height: u32,
    /// Ticks of the 90 kHz clock per frame at the configured rate.
    duration: c_ulong,
    clock: Clock,
    keyframe_wanted: bool,
}

impl Vp8Encoder {
    pub(super) fn new(config: &EncoderConfig) -> Result<Self, CodecError> {
        let init = |e: String| CodecError::Init(VideoCodec::Vp8, e);
        let mut cfg = MaybeUninit::<vpx_codec_enc_cfg_t>::uninit();
        // SAFETY: the VP8 interface is a static; vpx_codec_enc_config_default fills the whole
        // struct on success, checked before it is read.
        let cfg = unsafe {
            check(
                vpx_sys::vpx_codec_enc_config_default(
                    vpx_sys::vpx_codec_vp8_cx(),
                    cfg.as_mut_ptr(),
                    0,
                ),
                init,
            )?;
            cfg.assume_init()
        };
        let mut cfg = cfg;
        cfg.g_w = config.width;
        cfg.g_h = config.height;
        cfg.g_timebase.num = 1;
        cfg.g_timebase.den = 90_000;
        cfg.g_threads = 1;
        cfg.g_lag_in_frames = 0;
        cfg.g_error_resilient = VPX_ERROR_RESILIENT_DEFAULT;
        cfg.rc_end_usage = vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = kbps(config.bitrate_bps);
        cfg.rc_dropframe_thresh = DROP_FRAME_THRESHOLD;
        cfg.rc_resize_allowed = 0;
        cfg.rc_min_quantizer = 2;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        cfg.kf_mode = vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_max_dist = KEYFRAME_INTERVAL;

        // SAFETY: the context is zeroed and boxed, cfg fully initialized, and the ABI version is
        // the one of the headers the bindings were generated from (1.12, matching the installed
        // library: the bindings crate picks them by pkg-config's version).
        let mut ctx = Context::init(|ctx| unsafe {
            vpx_sys::vpx_codec_enc_init_ver(
                ctx,
                vpx_sys::vpx_codec_vp8_cx(),
                &cfg,
                0,
                VPX_ENCODER_ABI_VERSION as c_int,
            )
        })
        .map_err(init)?;
        let controls = [
            (VP8E_SET_CPUUSED, CPU_USED),
            (VP8E_SET_NOISE_SENSITIVITY, 0),
            (VP8E_SET_STATIC_THRESHOLD, 1),
            (VP8E_SET_MAX_INTRA_BITRATE_PCT, MAX_INTRA_BITRATE_PCT),
        ];
        for (id, value) in controls {
            // SAFETY: the context is initialized; each of these controls takes one int.
            let err = unsafe { vpx_sys::vpx_codec_control_(ctx.as_mut_ptr(), id as c_int, value) };
            check(err, init)?;
        }
        Ok(Self {
            ctx,
            cfg: Settings(cfg),
            width: config.width,
            height: config.height,
            duration: c_ulong::from(90_000 / config.fps.max(1)),
            clock: Clock::default(),
            keyframe_wanted: false,
        })
    }
}

/// libvpx takes kilobits per second; at least 1.
fn kbps(bps: u32) -> c_uint {
    (bps / 1000).max(1)
}

impl VideoEncoder for Vp8Encoder {
    fn encode(
        &mut self,
        picture: &I420,
        timestamp_90k: u32,
        out: &mut Vec<u8>,
    ) -> Result<Option<Encoded>, CodecError> {
        check_size(picture, self.width, self.height)?;
        out.clear();
        let fail = |e: String| CodecError::Encode(VideoCodec::Vp8, e);
        let pts = i64::try_from(self.clock.extend(timestamp_90k)).unwrap_or(i64::MAX);

        // SAFETY: all zeros is a valid vpx_image_t (null pointers, zero sizes, enums whose zero
        // is a variant); vpx_img_wrap then fills it without touching the data it points to.
        let mut img: vpx_image_t = unsafe { MaybeUninit::zeroed().assume_init() };
        let y = picture.plane(Plane::Y).as_ptr().cast_mut();
        // SAFETY: img is a valid struct; with stride alignment 1 and a non-null data pointer
        // libvpx only records pointers and sizes (it allocates nothing and reads nothing).
        let wrapped = unsafe {
            vpx_sys::vpx_img_wrap(
                &mut img,
                vpx_img_fmt::VPX_IMG_FMT_I420,
                self.width,
                self.height,
                1,
                y,
            )
        };
        if wrapped.is_null() {
            return Err(fail("vpx_img_wrap refused the picture".into()));
        }
        // The wrap assumed libvpx's own plane layout; point it at the picture's planes instead.
        let stride = |p| c_int::try_from(picture.stride(p)).unwrap_or(c_int::MAX);
        img.planes[0] = y;
        img.planes[1] = picture.plane(Plane::U).as_ptr().cast_mut();
        img.planes[2] = picture.plane(Plane::V).as_ptr().cast_mut();
        img.stride = [stride(Plane::Y), stride(Plane::U), stride(Plane::V), 0];

        let flags = if self.keyframe_wanted {
            VPX_EFLAG_FORCE_KF as c_long
        } else {
            0
        };
        // SAFETY: the context is initialized; img points into `picture`, which outlives the call
        // and has the configured size with planes of stride * rows bytes; the encoder only reads
        // it (and keeps no reference: no lag).
        let err = unsafe {
            vpx_sys::vpx_codec_encode(
                self.ctx.as_mut_ptr(),
                &img,
                pts,
                self.duration,
                flags,
                c_ulong::from(VPX_DL_REALTIME),
            )
        };
        check(err, fail)?;

        let mut encoded = None;
        let mut iter: vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: the context is initialized and iter starts null, as the API asks.
            let pkt = unsafe { vpx_sys::vpx_codec_get_cx_data(self.ctx.as_mut_ptr(), &mut iter) };
            // SAFETY: a non-null packet is valid until the next call on the context.
            let Some(pkt) = (unsafe { pkt.as_ref() }) else {
                break;
            };
            if pkt.kind != VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: kind says the union holds a frame; buf holds sz bytes owned by libvpx
            // until the next call on the context, and is copied out before that.
            let (data, flags) = unsafe {
                let frame = pkt.data.frame;
                let Ok(len) = usize::try_from(frame.sz) else {
                    continue;
                };
                if frame.buf.is_null() {
                    continue;
                }
                (
                    std::slice::from_raw_parts(frame.buf.cast::<u8>(), len),
                    frame.flags,
                )
            };
            out.extend_from_slice(data);
            let keyframe = flags & VPX_FRAME_IS_KEY != 0;
            encoded = Some(Encoded { keyframe });
        }
        if encoded.is_some_and(|e| e.keyframe) {
            self.keyframe_wanted = false;
        }
        Ok(encoded)
    }

    fn force_keyframe(&mut self) {
        self.keyframe_wanted = true;
    }

    fn set_bitrate(&mut self, bps: u32) {
        self.cfg.0.rc_target_bitrate = kbps(bps);
        // SAFETY: the context is initialized and cfg is the full configuration it started
        // with, only the target changed. A refusal keeps the old rate; nothing to report to.
        unsafe {
            vpx_sys::vpx_codec_enc_config_set(self.ctx.as_mut_ptr(), &self.cfg.0);
        }
    }

    fn codec(&self) -> VideoCodec {
        VideoCodec::Vp8
    }
}

/// A VP8 decoder.
pub(super) struct Vp8Decoder {
    ctx: Context,
}

impl Vp8Decoder {
    pub(super) fn new() -> Result<Self, CodecError> {
        let cfg = vpx_sys::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        };
        // SAFETY: the context is zeroed and boxed, cfg is valid for the call, and the ABI version
        // is the bindings' (see the encoder).
        let ctx = Context::init(|ctx| unsafe {
            vpx_sys::vpx_codec_dec_init_ver(
                ctx,
                vpx_sys::vpx_codec_vp8_dx(),
                &cfg,
                0,
                VPX_DECODER_ABI_VERSION as c_int,
            )
        })
        .map_err(|e| CodecError::Init(VideoCodec::Vp8, e))?;
        Ok(Self { ctx })
    }
}

impl VideoDecoder for Vp8Decoder {
    fn decode(&mut self, frame: &[u8], pool: &mut FramePool) -> Result<Option<I420>, CodecError> {
        let fail = |e: String| CodecError::Decode(VideoCodec::Vp8, e);
        if frame.is_empty() {
            return Err(fail("empty frame".into()));
        }
        let len = c_uint::try_from(frame.len()).map_err(|_| fail("frame too large".into()))?;
        // SAFETY: the context is initialized; frame is valid for len bytes during the call, and
        // libvpx copies what it keeps.
        let err = unsafe {
            vpx_sys::vpx_codec_decode(
                self.ctx.as_mut_ptr(),
                frame.as_ptr(),
                len,
                ptr::null_mut(),
                0,
            )
        };
        check(err, fail)?;
        let mut iter: vpx_codec_iter_t = ptr::null();
        // SAFETY: the context is initialized and iter starts null.
        let img = unsafe { vpx_sys::vpx_codec_get_frame(self.ctx.as_mut_ptr(), &mut iter) };
        // SAFETY: a non-null image is valid until the next decode call on the context.
        let Some(img) = (unsafe { img.as_ref() }) else {
            return Ok(None);
        };
        if img.fmt != vpx_img_fmt::VPX_IMG_FMT_I420 {
            return Err(fail(format!("unexpected picture format {:?}", img.fmt)));
        }
        let mut picture = pool.get(img.d_w, img.d_h)?;
        let sizes = [Plane::Y, Plane::U, Plane::V].map(|p| picture.plane_size(p));
        let mut planes: [(&[u8], usize); 3] = [(&[], 0); 3];
        for (((slot, &(width, rows)), &data), &stride) in planes
            .iter_mut()
            .zip(&sizes)
            .zip(&img.planes)
            .zip(&img.stride)
        {
            let stride = usize::try_from(stride)
                .ok()
                .filter(|&s| s >= width && !data.is_null());
            let Some(stride) = stride else {
                pool.put(picture);
                return Err(fail("decoder returned a plane without data".into()));
            };
            // The last row need not be padded to the stride; pictures have at least one row.
            let len = stride * (rows - 1) + width;
            // SAFETY: libvpx's plane holds `rows` rows of at least `width` samples, `stride`
            // bytes apart (the picture is d_w x d_h in I420), valid until the next decode call;
            // the slice is dropped before this function returns.
            *slot = (unsafe { std::slice::from_raw_parts(data, len) }, stride);
        }
        match copy_into(&mut picture, VideoCodec::Vp8, planes) {
            Ok(()) => Ok(Some(picture)),
            Err(e) => {
                pool.put(picture);
                Err(e)
            }
        }
    }
}
