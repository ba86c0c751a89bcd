//! VP8 (both ways) and VP9 (decoding only, for the recording muxer) through libvpx, the system
//! library (Debian's libvpx 1.12), called through the `env-libvpx-sys` bindings. This is the
//! crate's only FFI to a C library by hand, so every call to it lives here, each with what makes
//! it sound.
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

/// A VP8 or VP9 decoder: the same libvpx API, only the interface differs. A VP9 superframe
/// (several frames in one buffer: a hidden alt-ref, or spatial layers) is one `decode` call;
/// libvpx splits it and gives back the picture to show.
pub(super) struct VpxDecoder {
    ctx: Context,
    codec: VideoCodec,
}

impl VpxDecoder {
    /// `codec` is VP8 or VP9; another codec is refused (it is not libvpx's).
    pub(super) fn new(codec: VideoCodec) -> Result<Self, CodecError> {
        let init = |e: String| CodecError::Init(codec, e);
        let iface = match codec {
            // SAFETY: returns a pointer to libvpx's static VP8 decoder interface.
            VideoCodec::Vp8 => unsafe { vpx_sys::vpx_codec_vp8_dx() },
            // SAFETY: the same, for VP9.
            VideoCodec::Vp9 => unsafe { vpx_sys::vpx_codec_vp9_dx() },
            VideoCodec::H264 => return Err(init("not a libvpx codec".into())),
        };
        let cfg = vpx_sys::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        };
        // SAFETY: the context is zeroed and boxed, iface is libvpx's static, cfg is valid for
        // the call, and the ABI version is the bindings' (see the encoder).
        let ctx = Context::init(|ctx| unsafe {
            vpx_sys::vpx_codec_dec_init_ver(ctx, iface, &cfg, 0, VPX_DECODER_ABI_VERSION as c_int)
        })
        .map_err(init)?;
        Ok(Self { ctx, codec })
    }
}

impl VideoDecoder for VpxDecoder {
    fn decode(&mut self, frame: &[u8], pool: &mut FramePool) -> Result<Option<I420>, CodecError> {
        let codec = self.codec;
        let fail = |e: String| CodecError::Decode(codec, e);
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
        // VP9 profiles 1-3 (4:2:2, 4:4:4, high bit depth) come out in other formats; WebRTC
        // sends profile 0, which is I420 like VP8.
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
        match copy_into(&mut picture, codec, planes) {
            Ok(()) => Ok(Some(picture)),
            Err(e) => {
                pool.put(picture);
                Err(e)
            }
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Yuv;
    use vpx_sys::vp8e_enc_control_id::{VP9E_SET_SVC, VP9E_SET_SVC_PARAMETERS};

    /// What a browser sends for VP9 SVC: two spatial layers (half and full size), each
    /// picture one superframe. Encoded here because ffmpeg's libvpx-vp9 wrapper has no
    /// spatial layers.
    fn svc_superframes(width: u32, height: u32, colour: Yuv, count: u32) -> Vec<Vec<u8>> {
        // SAFETY: as in Vp8Encoder::new and encode, with the VP9 interface; svc is a full
        // vpx_svc_extra_cfg_t that outlives the control call, and each packet is copied out
        // before the next call on the context.
        unsafe {
            let mut cfg = MaybeUninit::<vpx_codec_enc_cfg_t>::uninit();
            let err = vpx_sys::vpx_codec_enc_config_default(
                vpx_sys::vpx_codec_vp9_cx(),
                cfg.as_mut_ptr(),
                0,
            );
            assert_eq!(err, vpx_codec_err_t::VPX_CODEC_OK);
            let mut cfg = cfg.assume_init();
            cfg.g_w = width;
            cfg.g_h = height;
            cfg.g_timebase.num = 1;
            cfg.g_timebase.den = 90_000;
            cfg.g_lag_in_frames = 0;
            cfg.rc_end_usage = vpx_rc_mode::VPX_CBR;
            cfg.ss_number_layers = 2;
            cfg.ts_number_layers = 1;
            cfg.ss_target_bitrate[..2].copy_from_slice(&[100, 300]);
            cfg.layer_target_bitrate[..2].copy_from_slice(&[100, 300]);
            cfg.rc_target_bitrate = 400;
            let mut ctx = Context::init(|ctx| {
                vpx_sys::vpx_codec_enc_init_ver(
                    ctx,
                    vpx_sys::vpx_codec_vp9_cx(),
                    &cfg,
                    0,
                    VPX_ENCODER_ABI_VERSION as c_int,
                )
            })
            .unwrap();
            let err = vpx_sys::vpx_codec_control_(ctx.as_mut_ptr(), VP9E_SET_SVC as c_int, 1);
            assert_eq!(err, vpx_codec_err_t::VPX_CODEC_OK);
            let mut svc: vpx_sys::vpx_svc_extra_cfg_t = MaybeUninit::zeroed().assume_init();
            for layer in 0..2 {
                svc.max_quantizers[layer] = 56;
                svc.min_quantizers[layer] = 2;
                svc.scaling_factor_num[layer] = 1;
                svc.scaling_factor_den[layer] = 2 - layer as c_int;
            }
            let err = vpx_sys::vpx_codec_control_(
                ctx.as_mut_ptr(),
                VP9E_SET_SVC_PARAMETERS as c_int,
                &mut svc as *mut vpx_sys::vpx_svc_extra_cfg_t,
            );
            assert_eq!(err, vpx_codec_err_t::VPX_CODEC_OK);

            let mut picture = I420::new(width, height).unwrap();
            picture.fill(colour);
            let mut img: vpx_image_t = MaybeUninit::zeroed().assume_init();
            let y = picture.plane(Plane::Y).as_ptr().cast_mut();
            let wrapped =
                vpx_sys::vpx_img_wrap(&mut img, vpx_img_fmt::VPX_IMG_FMT_I420, width, height, 1, y);
            assert!(!wrapped.is_null());
            img.planes[0] = y;
            img.planes[1] = picture.plane(Plane::U).as_ptr().cast_mut();
            img.planes[2] = picture.plane(Plane::V).as_ptr().cast_mut();
            let stride = |p| picture.stride(p) as c_int;
            img.stride = [stride(Plane::Y), stride(Plane::U), stride(Plane::V), 0];

            let mut frames = Vec::new();
            for n in 0..count {
                let err = vpx_sys::vpx_codec_encode(
                    ctx.as_mut_ptr(),
                    &img,
                    i64::from(n * 3000),
                    3000,
                    0,
                    c_ulong::from(VPX_DL_REALTIME),
                );
                assert_eq!(err, vpx_codec_err_t::VPX_CODEC_OK);
                let mut iter: vpx_codec_iter_t = ptr::null();
                let mut out = Vec::new();
                while let Some(pkt) =
                    vpx_sys::vpx_codec_get_cx_data(ctx.as_mut_ptr(), &mut iter).as_ref()
                {
                    if pkt.kind == VPX_CODEC_CX_FRAME_PKT {
                        let frame = pkt.data.frame;
                        out.extend_from_slice(std::slice::from_raw_parts(
                            frame.buf.cast::<u8>(),
                            frame.sz as usize,
                        ));
                    }
                }
                frames.push(out);
            }
            frames
        }
    }

    /// The number of frames in a VP9 superframe's index (1 when it has none).
    fn frames_in(data: &[u8]) -> usize {
        let last = data[data.len() - 1];
        if last & 0xE0 == 0xC0 {
            usize::from(last & 7) + 1
        } else {
            1
        }
    }

    #[test]
    fn vp9_spatial_layer_superframes_decode_at_full_size() {
        let colour = Yuv::from_rgb(30, 200, 60);
        let frames = svc_superframes(320, 180, colour, 10);
        assert!(
            frames.iter().all(|f| frames_in(f) == 2),
            "{:?}",
            frames.iter().map(|f| frames_in(f)).collect::<Vec<_>>()
        );
        let mut dec = VpxDecoder::new(VideoCodec::Vp9).unwrap();
        let mut pool = FramePool::default();
        for (n, frame) in frames.iter().enumerate() {
            let got = dec.decode(frame, &mut pool).unwrap().expect("a picture");
            assert_eq!((got.width(), got.height()), (320, 180), "frame {n}");
            assert!(got.mean(0, 0, 320, 180).distance(colour) <= 6, "frame {n}");
            pool.put(got);
        }
    }
}
