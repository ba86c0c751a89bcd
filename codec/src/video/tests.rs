use super::*;
use crate::frame::Yuv;
use crate::h264::{H264Depacketizer, H264Packetizer};
use crate::packetize::{Packetizer, Payloads};
use crate::vp8::{Vp8Depacketizer, Vp8Packetizer};

const CODECS: [VideoCodec; 2] = [VideoCodec::Vp8, VideoCodec::H264];
const W: u32 = 160;
const H: u32 = 96;
/// 30 frames a second on the 90 kHz clock.
const TICK: u32 = 3000;

fn config(codec: VideoCodec, width: u32, height: u32) -> EncoderConfig {
    EncoderConfig {
        codec,
        width,
        height,
        bitrate_bps: 600_000,
        fps: 30,
    }
}

fn solid(width: u32, height: u32, colour: Yuv) -> I420 {
    let mut p = I420::new(width, height).unwrap();
    p.fill(colour);
    p
}

/// A picture with a square whose place depends on `n`, so consecutive frames differ.
fn moving(n: u32) -> I420 {
    let mut p = solid(W, H, Yuv::from_rgb(30, 60, 200));
    p.fill_rect((n * 8) % (W - 32), 16, 32, 32, Yuv::from_rgb(250, 250, 40));
    p
}

/// The NAL unit types of an Annex B access unit, in order.
fn nal_types(au: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < au.len() {
        if au[i..i + 3] == [0, 0, 1] {
            types.push(au[i + 3] & 0x1F);
            i += 3;
        } else {
            i += 1;
        }
    }
    types
}

/// Whether the bitstream itself says keyframe (not what the encoder reported).
fn bitstream_keyframe(codec: VideoCodec, frame: &[u8]) -> bool {
    match codec {
        // The frame tag's bit 0 is 0 on key frames.
        VideoCodec::Vp8 => frame[0] & 1 == 0,
        VideoCodec::H264 => nal_types(frame).contains(&5),
        VideoCodec::Vp9 => unreachable!("not encoded here"),
    }
}

fn encode(enc: &mut dyn VideoEncoder, p: &I420, ts: u32, out: &mut Vec<u8>) -> Encoded {
    enc.encode(p, ts, out).unwrap().expect("no frame dropped")
}

#[test]
fn solid_colours_survive_a_round_trip() {
    let colours = [
        Yuv::from_rgb(255, 0, 0),
        Yuv::from_rgb(0, 200, 0),
        Yuv::from_rgb(20, 40, 230),
        Yuv::from_rgb(240, 240, 240),
        Yuv::BLACK,
    ];
    for codec in CODECS {
        let mut enc = encoder(&config(codec, W, H)).unwrap();
        assert_eq!(enc.codec(), codec);
        let mut dec = decoder(codec).unwrap();
        let mut pool = FramePool::default();
        let mut out = Vec::new();
        let mut ts = 0;
        for colour in colours {
            // A few frames each: the first after a change is a P frame that may still be
            // converging.
            let mut last = None;
            for _ in 0..3 {
                encode(enc.as_mut(), &solid(W, H, colour), ts, &mut out);
                ts += TICK;
                if let Some(old) = last.take() {
                    pool.put(old);
                }
                last = dec.decode(&out, &mut pool).unwrap();
            }
            let got = last.unwrap();
            assert_eq!((got.width(), got.height()), (W, H));
            let mean = got.mean(0, 0, W, H);
            assert!(
                mean.distance(colour) <= 6,
                "{codec:?}: sent {colour:?}, decoded {mean:?}"
            );
            pool.put(got);
        }
    }
}

#[test]
fn keyframes_come_first_and_when_forced() {
    for codec in CODECS {
        let mut enc = encoder(&config(codec, W, H)).unwrap();
        let mut out = Vec::new();
        let mut kinds = Vec::new();
        for n in 0..6 {
            if n == 3 {
                enc.force_keyframe();
            }
            let e = encode(enc.as_mut(), &moving(n), n * TICK, &mut out);
            assert_eq!(
                e.keyframe,
                bitstream_keyframe(codec, &out),
                "{codec:?} frame {n}"
            );
            kinds.push(e.keyframe);
        }
        assert_eq!(kinds, [true, false, false, true, false, false], "{codec:?}");
    }
}

#[test]
fn h264_is_constrained_baseline_in_annex_b() {
    let mut enc = encoder(&config(VideoCodec::H264, W, H)).unwrap();
    let mut out = Vec::new();
    encode(enc.as_mut(), &moving(0), 0, &mut out);
    assert_eq!(out[..4], [0, 0, 0, 1], "4-byte start code first");
    let types = nal_types(&out);
    assert!(
        types.contains(&7) && types.contains(&8) && types.contains(&5),
        "{types:?}"
    );
    let sps = out
        .windows(4)
        .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1F == 7)
        .unwrap();
    let (profile_idc, constraints) = (out[sps + 4], out[sps + 5]);
    assert_eq!(profile_idc, 66, "baseline");
    // constraint_set1_flag: Constrained Baseline, what 42e0xx in the SDP promises.
    assert_ne!(constraints & 0x40, 0, "constraint flags {constraints:#04x}");
}

#[test]
fn bitrate_changes_keep_encoding() {
    for codec in CODECS {
        let mut enc = encoder(&config(codec, W, H)).unwrap();
        enc.set_bitrate(300_000); // before the first frame
        let mut dec = decoder(codec).unwrap();
        let mut pool = FramePool::default();
        let mut out = Vec::new();
        let mut decoded = 0;
        for n in 0..12 {
            match n {
                4 => enc.set_bitrate(100_000),
                8 => enc.set_bitrate(2_000_000),
                _ => {}
            }
            if let Some(e) = enc.encode(&moving(n), n * TICK, &mut out).unwrap() {
                assert_eq!(
                    e.keyframe,
                    n == 0,
                    "{codec:?} frame {n}: no keyframe for a rate"
                );
                if let Some(p) = dec.decode(&out, &mut pool).unwrap() {
                    decoded += 1;
                    pool.put(p);
                }
            }
        }
        assert!(decoded >= 10, "{codec:?}: {decoded} of 12 decoded");
    }
}

#[test]
fn wrong_sizes_are_errors() {
    for codec in CODECS {
        let mut enc = encoder(&config(codec, W, H)).unwrap();
        let mut out = vec![1, 2, 3];
        let err = enc.encode(&solid(W + 2, H, Yuv::BLACK), 0, &mut out);
        assert!(
            matches!(err, Err(CodecError::BadSize { got_width: 162, .. })),
            "{err:?}"
        );
        // Still usable, and its first frame is still the keyframe.
        let e = encode(enc.as_mut(), &solid(W, H, Yuv::BLACK), 0, &mut out);
        assert!(e.keyframe);
    }
    let bad = [
        EncoderConfig {
            width: 0,
            ..config(VideoCodec::Vp8, W, H)
        },
        EncoderConfig {
            height: 5000,
            ..config(VideoCodec::Vp8, W, H)
        },
        EncoderConfig {
            fps: 0,
            ..config(VideoCodec::Vp8, W, H)
        },
        config(VideoCodec::H264, 161, 96),
    ];
    for c in bad {
        assert!(
            matches!(encoder(&c), Err(CodecError::BadConfig(_))),
            "{c:?}"
        );
    }
}

#[test]
fn garbage_is_an_error_and_the_next_keyframe_decodes() {
    let mut noise = Vec::new();
    let mut x = 0x1234_5678u32;
    for _ in 0..500 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        noise.push((x >> 24) as u8);
    }
    let mut fake_key = noise.clone();
    fake_key[0] &= 0xFE; // a VP8 "key frame" tag with a junk header
    let mut fake_idr = vec![0, 0, 0, 1, 0x65];
    fake_idr.extend_from_slice(&noise); // an H264 "IDR" slice with no SPS/PPS, junk inside
    let garbage: [&[u8]; 5] = [&[], &[0; 64], &noise, &fake_key, &fake_idr];
    let blue = Yuv::from_rgb(20, 40, 230);
    for codec in CODECS {
        let mut dec = decoder(codec).unwrap();
        let mut pool = FramePool::default();
        let mut out = Vec::new();
        let mut enc = encoder(&config(codec, W, H)).unwrap();
        for (round, ts) in [(0, 0), (1, 10 * TICK)] {
            for g in garbage {
                // Err or no picture, never a panic, never a picture.
                if let Ok(got) = dec.decode(g, &mut pool) {
                    assert!(got.is_none(), "{codec:?}: a picture from garbage");
                }
            }
            if round == 1 {
                enc.force_keyframe();
            }
            let e = encode(enc.as_mut(), &solid(W, H, blue), ts, &mut out);
            assert!(e.keyframe);
            let got = dec.decode(&out, &mut pool).unwrap().unwrap();
            assert!(
                got.mean(0, 0, W, H).distance(blue) <= 6,
                "{codec:?} round {round}"
            );
        }
    }
}

#[test]
fn decoders_follow_a_size_change() {
    for codec in CODECS {
        let mut dec = decoder(codec).unwrap();
        let mut pool = FramePool::default();
        let mut out = Vec::new();
        for (w, h) in [(W, H), (320, 180), (64, 64)] {
            let mut enc = encoder(&config(codec, w, h)).unwrap();
            encode(enc.as_mut(), &solid(w, h, Yuv::BLACK), 0, &mut out);
            let got = dec.decode(&out, &mut pool).unwrap().unwrap();
            assert_eq!((got.width(), got.height()), (w, h), "{codec:?}");
        }
    }
}

/// Packetizes a frame, pushes its payloads through a depacketizer and returns the frame that
/// came out (with its keyframe flag).
fn through_rtp<P: Packetizer, F: crate::depacketize::PayloadFormat>(
    packetizer: &mut P,
    depacketizer: &mut crate::depacketize::Depacketizer<F>,
    seq: &mut u16,
    ts: u32,
    frame: &[u8],
) -> Option<(Vec<u8>, bool)> {
    const MTU: usize = 300;
    let mut payloads = Payloads::new();
    packetizer.packetize(frame, MTU, &mut payloads).unwrap();
    let mut got = None;
    let last = payloads.len() - 1;
    for (i, payload) in payloads.iter().enumerate() {
        assert!(payload.len() <= MTU);
        let frame = depacketizer.push(*seq, ts, i == last, payload).unwrap();
        *seq = seq.wrapping_add(1);
        if let Some(f) = frame {
            got = Some((f.data.to_vec(), f.keyframe));
        }
    }
    got
}

#[test]
fn encoded_frames_survive_rtp_payloads() {
    for codec in CODECS {
        let mut enc = encoder(&config(codec, 320, 180)).unwrap();
        let mut dec = decoder(codec).unwrap();
        let mut pool = FramePool::default();
        let mut out = Vec::new();
        let (mut vp8p, mut vp8d) = (Vp8Packetizer::new(77), Vp8Depacketizer::default());
        let (mut h264p, mut h264d) = (H264Packetizer, H264Depacketizer::default());
        let mut seq = 65_530; // wraps on the way
        let colour = Yuv::from_rgb(200, 100, 50);
        for n in 0..8u32 {
            let mut p = solid(320, 180, colour);
            p.fill_rect(n * 16, 60, 48, 48, Yuv::from_rgb(0, 255, 0));
            let e = encode(enc.as_mut(), &p, 1000 + n * TICK, &mut out);
            let ts = 1000 + n * TICK;
            let (frame, keyframe) = match codec {
                VideoCodec::Vp8 => through_rtp(&mut vp8p, &mut vp8d, &mut seq, ts, &out),
                VideoCodec::H264 => through_rtp(&mut h264p, &mut h264d, &mut seq, ts, &out),
                VideoCodec::Vp9 => unreachable!("not in CODECS"),
            }
            .unwrap_or_else(|| panic!("{codec:?} frame {n} did not come out"));
            assert_eq!(frame, out, "{codec:?}: same bytes after RTP");
            assert_eq!(keyframe, e.keyframe, "{codec:?} frame {n}");
            let got = dec.decode(&frame, &mut pool).unwrap().unwrap();
            assert!(
                got.mean(0, 0, 320, 40).distance(colour) <= 6,
                "{codec:?} frame {n}"
            );
            pool.put(got);
        }
    }
}

#[test]
fn vp9_is_decoded_but_not_encoded() {
    assert!(matches!(
        encoder(&config(VideoCodec::Vp9, W, H)),
        Err(CodecError::BadConfig(_))
    ));
    let mut dec = decoder(VideoCodec::Vp9).unwrap();
    let mut pool = FramePool::default();
    assert!(dec.decode(&[0x55; 40], &mut pool).is_err());
    assert!(dec.decode(&[], &mut pool).is_err());
}

#[test]
fn clock_extends_across_the_wrap() {
    let mut c = Clock::default();
    assert_eq!(c.extend(u32::MAX - 1000), u64::from(u32::MAX - 1000));
    assert_eq!(c.extend(2000), u64::from(u32::MAX) + 2001);
    // Repeated or backwards: still forward by one tick.
    assert_eq!(c.extend(2000), u64::from(u32::MAX) + 2002);
    assert_eq!(c.extend(1000), u64::from(u32::MAX) + 2003);
}

/// A 320x180 picture full of detail that moves with `n`, so the rate controller has to work.
fn busy(n: u32) -> I420 {
    let mut p = I420::new(320, 180).unwrap();
    let stride = p.stride(Plane::Y);
    for (y, row) in p.plane_mut(Plane::Y).chunks_exact_mut(stride).enumerate() {
        for (x, s) in row.iter_mut().enumerate() {
            *s = (16 + (x * 7 + y * 3 + n as usize * 5) % 200) as u8;
        }
    }
    p
}

#[test]
fn bitrate_changes_move_the_output_rate() {
    for codec in CODECS {
        let mut enc = encoder(&config(codec, 320, 180)).unwrap();
        let mut out = Vec::new();
        let mut bytes = Vec::new();
        for n in 0..90 {
            match n {
                30 => enc.set_bitrate(100_000),
                60 => enc.set_bitrate(2_000_000),
                _ => {}
            }
            let e = enc.encode(&busy(n), n * TICK, &mut out).unwrap();
            bytes.push(if e.is_some() { out.len() } else { 0 });
        }
        // Bits per second over the last 20 frames (two thirds of a second) of each third.
        let rate = |end: usize| bytes[end - 20..end].iter().sum::<usize>() * 8 * 3 / 2;
        let (start, low, high) = (rate(30), rate(60), rate(90));
        assert!(
            low < 160_000,
            "{codec:?}: {low} bit/s at a 100 kbit/s target"
        );
        assert!(
            low * 2 < start,
            "{codec:?}: {start} bit/s before, {low} after lowering"
        );
        assert!(
            high > low * 2,
            "{codec:?}: {high} bit/s after raising from {low}"
        );
    }
}
