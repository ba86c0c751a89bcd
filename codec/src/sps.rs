//! The picture size an H.264 sequence parameter set declares (ITU-T H.264 §7.3.2.1.1).
//!
//! The router picks a simulcast layer no taller than a subscriber's `maxHeight`, and an H264
//! layer's height is written nowhere but in the SPS its encoder sends with every IDR; a
//! recording's video track declares its picture size from it too. Both need those numbers
//! only, so this reads an SPS up to its cropping window and stops; a crate
//! that parses all of H.264 is not worth a dependency for it. It runs on the packet path (once
//! per keyframe), so it allocates nothing: the bit reader steps over emulation-prevention bytes
//! instead of copying the RBSP out. Every read is bounded; a malformed or truncated SPS gives
//! `None`.

/// The NAL unit type of a sequence parameter set (Table 7-1).
pub const SPS: u8 = 7;

/// The profiles whose SPS carries chroma_format_idc, bit depths and scaling lists before the
/// fields shared by all profiles (the `if( profile_idc == 100 || ...)` of §7.3.2.1.1).
const HIGH_PROFILES: [u32; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// The width and height, after the cropping window, of the SPS NAL unit `nal` (its one-byte
/// NAL header first, emulation-prevention bytes still in).
pub fn sps_size(nal: &[u8]) -> Option<(u16, u16)> {
    let (&header, payload) = nal.split_first()?;
    if header & 0x80 != 0 || header & 0x1F != SPS {
        return None;
    }
    let mut r = Bits::new(payload);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint_set flags, reserved_zero_2bits, level_idc
    let seq_parameter_set_id = r.ue()?;
    if seq_parameter_set_id > 31 {
        return None;
    }
    // Absent chroma_format_idc means 4:2:0 (§7.4.2.1.1).
    let mut chroma_format_idc = 1;
    let mut separate_colour_planes = false;
    if HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_planes = r.flag()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.flag()?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            // seq_scaling_matrix_present_flag: six 4x4 lists, then two (six for 4:4:4) 8x8.
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    let pic_order_cnt_type = r.ue()?;
    match pic_order_cnt_type {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.flag()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?; // num_ref_frames_in_pic_order_cnt_cycle, 0..=255
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?; // offset_for_ref_frame
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.flag()?; // mb_adaptive_frame_field_flag
    }
    r.flag()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.flag()? {
        let (left, right) = (u64::from(r.ue()?), u64::from(r.ue()?));
        let (top, bottom) = (u64::from(r.ue()?), u64::from(r.ue()?));
        (crop_x, crop_y) = (left + right, top + bottom);
    }
    // A map unit is a macroblock pair when pictures may be coded as fields (7-18); crop offsets
    // count chroma samples (7-19 to 7-22), and field pairs of them when so coded.
    let fields = if frame_mbs_only { 1 } else { 2 };
    let (unit_x, unit_y) = match (separate_colour_planes, chroma_format_idc) {
        (false, 1) => (2, 2 * fields),
        (false, 2) => (2, fields),
        _ => (1, fields),
    };
    let width = (width_mbs * 16).checked_sub(unit_x * crop_x)?;
    let height = (fields * height_map_units * 16).checked_sub(unit_y * crop_y)?;
    if width == 0 || height == 0 {
        return None;
    }
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

/// Reads past a scaling_list() of `size` entries (§7.3.2.1.1.1): only its length matters, but
/// that depends on the values, as a delta that brings the next scale to 0 ends the list.
fn skip_scaling_list(r: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return None;
            }
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// A most-significant-bit-first reader over a NAL unit's payload that drops the
/// emulation-prevention byte of every 0x000003 as it goes (§7.4.1), so it reads the RBSP.
struct Bits<'a> {
    data: &'a [u8],
    /// The next byte of `data` to load.
    at: usize,
    /// How many 0x00 bytes were loaded in a row just before `at`.
    zeros: u8,
    byte: u8,
    /// Bits of `byte` not yet read.
    left: u8,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            at: 0,
            zeros: 0,
            byte: 0,
            left: 0,
        }
    }

    fn flag(&mut self) -> Option<bool> {
        if self.left == 0 {
            let mut b = *self.data.get(self.at)?;
            self.at += 1;
            if b == 3 && self.zeros >= 2 {
                b = *self.data.get(self.at)?;
                self.at += 1;
                self.zeros = 0;
            }
            self.zeros = if b == 0 {
                self.zeros.saturating_add(1)
            } else {
                0
            };
            self.byte = b;
            self.left = 8;
        }
        self.left -= 1;
        Some((self.byte >> self.left) & 1 == 1)
    }

    /// `n` bits (at most 32) as an unsigned number.
    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u64;
        for _ in 0..n.min(32) {
            v = (v << 1) | u64::from(self.flag()?);
        }
        u32::try_from(v).ok()
    }

    /// An unsigned Exp-Golomb number (§9.1); more than 31 leading zeros is malformed, as no
    /// syntax element needs more than 32 bits.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let value = (1u64 << zeros) - 1 + u64::from(self.bits(zeros)?);
        u32::try_from(value).ok()
    }

    /// A signed Exp-Golomb number (§9.1.1): 1, -1, 2, -2, ... for 1, 2, 3, 4, ...
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// SPS NAL units libx264 wrote (ffmpeg 5.1, `-f lavfi -i testsrc=size=WxH -frames:v 1
    /// -c:v libx264 -profile:v P -pix_fmt F -f h264`), with the size they were given. Each has
    /// emulation-prevention bytes in its VUI timing info, after the fields read here.
    const X264: [(&str, &str, (u16, u16)); 11] = [
        (
            "baseline 320x180",
            "6742c00dd901419f9f0110000003001000000303c0f142a480",
            (320, 180),
        ),
        (
            "baseline 640x360",
            "6742c01ed900a02ff970110000030001000003003c0f162e48",
            (640, 360),
        ),
        (
            "baseline 1280x720",
            "6742c01fd9005005bb0110000003001000000303c0f1832480",
            (1280, 720),
        ),
        (
            "baseline 1920x1080, cropped from 1088",
            "6742c028d900780227e5c044000003000400000300f03c60c920",
            (1920, 1080),
        ),
        (
            "main 322x182, cropped on both axes",
            "674d400deca0a8cf11360220000003002000000781e28532c0",
            (322, 182),
        ),
        (
            "high 1280x720",
            "6764001facd9405005bb0110000003001000000303c0f1831960",
            (1280, 720),
        ),
        (
            "high 1280x720, B-frames (pic_order_cnt_type 0)",
            "6764001facd1005005bb0110000003001000000303c0f1831120",
            (1280, 720),
        ),
        (
            "high 1920x1080 interlaced (field macroblock pairs)",
            "67640028acd94078044fde0220000003002000000783e2c5b2c0",
            (1920, 1080),
        ),
        (
            "high 4:2:2 1920x1080",
            "677a0028bcd940780227e270110000030001000003003c0f183196",
            (1920, 1080),
        ),
        (
            "high 4:4:4 640x360",
            "67f4001e919b281405ff138088000003000800000301e078b16cb0",
            (640, 360),
        ),
        (
            "high 4:4:4 640x360 lossless (qpprime_y_zero_transform_bypass)",
            "67f4001e91d640280bfe270110000003001000000303c0f162e480",
            (640, 360),
        ),
    ];

    #[test]
    fn sizes_of_x264_sps() {
        for (name, sps, size) in X264 {
            assert_eq!(sps_size(&hex(sps)), Some(size), "{name}");
        }
    }

    #[test]
    fn truncated_sps_gives_none_or_the_size() {
        for (name, sps, size) in X264 {
            let sps = hex(sps);
            for n in 0..sps.len() {
                let got = sps_size(&sps[..n]);
                assert!(got.is_none() || got == Some(size), "{name} cut at {n}");
            }
            // Cut before the picture size is read.
            assert_eq!(sps_size(&sps[..5]), None, "{name}");
        }
    }

    #[test]
    fn not_an_sps() {
        let sps = hex(X264[0].1);
        let mut pps = sps.clone();
        pps[0] = 0x68;
        assert_eq!(sps_size(&pps), None);
        let mut forbidden = sps.clone();
        forbidden[0] |= 0x80;
        assert_eq!(sps_size(&forbidden), None);
        // 40 zero bytes: an Exp-Golomb number with more than 31 leading zeros.
        assert_eq!(sps_size(&[[0x67].as_slice(), &[0; 40]].concat()), None);
        assert_eq!(sps_size(&[0x67; 64]), None);
        assert_eq!(sps_size(&[]), None);
    }

    /// An MSB-first bit writer for building SPSs the encoders here do not write.
    #[derive(Default)]
    struct Writer {
        bytes: Vec<u8>,
        /// Bits of the last byte written, 0 when it is full (or there is none).
        used: u8,
    }

    impl Writer {
        fn bit(&mut self, b: bool) {
            if self.used == 0 {
                self.bytes.push(0);
            }
            *self.bytes.last_mut().unwrap() |= u8::from(b) << (7 - self.used);
            self.used = (self.used + 1) % 8;
        }
        fn u(&mut self, n: u32, v: u64) {
            for i in (0..n).rev() {
                self.bit((v >> i) & 1 == 1);
            }
        }
        fn ue(&mut self, v: u64) {
            let n = 64 - (v + 1).leading_zeros();
            self.u(n - 1, 0);
            self.u(n, v + 1);
        }
        fn se(&mut self, v: i64) {
            self.ue(if v > 0 {
                2 * v as u64 - 1
            } else {
                2 * v.unsigned_abs()
            });
        }
        /// The RBSP with its stop bit, escaped (§7.4.1) into a NAL unit after header 0x67.
        fn nal(mut self) -> Vec<u8> {
            self.bit(true);
            let mut out = vec![0x67];
            let mut zeros = 0;
            for b in self.bytes {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                out.push(b);
                zeros = if b == 0 { zeros + 1 } else { 0 };
            }
            out
        }
    }

    /// The SPS fields that decide what `sps_size` reads; the others are written as 0.
    #[derive(Debug, Clone)]
    struct Fields {
        profile_idc: u8,
        chroma_format_idc: u64,
        separate_colour_planes: bool,
        /// The delta_scale written over and over in each scaling list present, if any are.
        scaling: Option<[Option<i64>; 12]>,
        pic_order_cnt_type: u64,
        offset_for_non_ref_pic: i64,
        offsets_for_ref_frame: Vec<i64>,
        width_mbs: u64,
        height_map_units: u64,
        frame_mbs_only: bool,
        crop: Option<[u64; 4]>,
    }

    impl Fields {
        fn plain(width_mbs: u64, height_map_units: u64) -> Fields {
            Fields {
                profile_idc: 66,
                chroma_format_idc: 1,
                separate_colour_planes: false,
                scaling: None,
                pic_order_cnt_type: 2,
                offset_for_non_ref_pic: 0,
                offsets_for_ref_frame: vec![],
                width_mbs,
                height_map_units,
                frame_mbs_only: true,
                crop: None,
            }
        }

        fn nal(&self) -> Vec<u8> {
            let mut w = Writer::default();
            w.u(8, self.profile_idc.into());
            w.u(16, 0x001f);
            w.ue(0);
            if HIGH_PROFILES.contains(&self.profile_idc.into()) {
                w.ue(self.chroma_format_idc);
                if self.chroma_format_idc == 3 {
                    w.bit(self.separate_colour_planes);
                }
                w.ue(0);
                w.ue(0);
                w.bit(false);
                w.bit(self.scaling.is_some());
                let lists = if self.chroma_format_idc == 3 { 12 } else { 8 };
                for (i, delta) in self.scaling.iter().flatten().take(lists).enumerate() {
                    w.bit(delta.is_some());
                    let Some(delta) = *delta else { continue };
                    let (mut last, mut next) = (8, 8);
                    for _ in 0..if i < 6 { 16 } else { 64 } {
                        if next != 0 {
                            w.se(delta);
                            next = (last + delta).rem_euclid(256);
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
            w.ue(0);
            w.ue(self.pic_order_cnt_type);
            if self.pic_order_cnt_type == 0 {
                w.ue(2);
            } else if self.pic_order_cnt_type == 1 {
                w.bit(false);
                w.se(self.offset_for_non_ref_pic);
                w.se(-2);
                w.ue(self.offsets_for_ref_frame.len() as u64);
                for &o in &self.offsets_for_ref_frame {
                    w.se(o);
                }
            }
            w.ue(1);
            w.bit(false);
            w.ue(self.width_mbs - 1);
            w.ue(self.height_map_units - 1);
            w.bit(self.frame_mbs_only);
            if !self.frame_mbs_only {
                w.bit(true);
            }
            w.bit(true);
            w.bit(self.crop.is_some());
            for c in self.crop.iter().flatten() {
                w.ue(*c);
            }
            w.bit(false); // vui_parameters_present_flag
            w.nal()
        }
    }

    #[test]
    fn scaling_lists_are_skipped() {
        // High profile, 4:2:0: a flat list (every delta 0, all 16 or 64 entries written), one
        // that ends at once (delta -8 brings the next scale to 0) and one that keeps changing.
        let mut f = Fields::plain(80, 45);
        f.profile_idc = 100;
        f.scaling = Some([
            Some(0),
            None,
            Some(-8),
            Some(5),
            None,
            Some(0),
            Some(3),
            Some(-8),
            None,
            None,
            None,
            None,
        ]);
        assert_eq!(sps_size(&f.nal()), Some((1280, 720)));
        // 4:4:4 has twelve lists, and separate colour planes crop in luma samples.
        f.profile_idc = 244;
        f.chroma_format_idc = 3;
        f.separate_colour_planes = true;
        f.scaling = Some([Some(1); 12]);
        f.height_map_units = 46;
        f.crop = Some([1, 3, 0, 16]);
        assert_eq!(sps_size(&f.nal()), Some((1276, 720)));
    }

    #[test]
    fn crop_units_follow_chroma_format_and_fields() {
        let mut f = Fields::plain(120, 68);
        f.profile_idc = 122;
        f.crop = Some([0, 0, 0, 4]);
        assert_eq!(sps_size(&f.nal()), Some((1920, 1080)));
        f.chroma_format_idc = 2;
        f.crop = Some([1, 0, 0, 8]);
        assert_eq!(sps_size(&f.nal()), Some((1918, 1080)));
        f.chroma_format_idc = 0;
        f.crop = Some([1, 0, 0, 8]);
        assert_eq!(sps_size(&f.nal()), Some((1919, 1080)));
        f.chroma_format_idc = 1;
        f.frame_mbs_only = false;
        f.height_map_units = 34;
        f.crop = Some([0, 0, 0, 2]);
        assert_eq!(sps_size(&f.nal()), Some((1920, 1080)));
    }

    #[test]
    fn emulation_prevention_before_the_size() {
        // pic_order_cnt_type 1 with a large offset_for_non_ref_pic (up to 2^31 - 1 is allowed)
        // writes 24 zero bits either side of a one: runs of 0x00 that need escaping, all of
        // them before the picture size.
        let mut f = Fields::plain(40, 23);
        f.pic_order_cnt_type = 1;
        f.offset_for_non_ref_pic = 1 << 23;
        f.offsets_for_ref_frame = vec![1 << 22, -3, 0];
        f.crop = Some([0, 0, 0, 3]);
        let nal = f.nal();
        let escapes = nal.windows(3).filter(|w| w == &[0, 0, 3]).count();
        assert!(escapes >= 2, "{nal:02x?}");
        assert_eq!(sps_size(&nal), Some((640, 362)));
    }

    #[test]
    fn out_of_range_gives_none() {
        // Wider than a u16.
        assert_eq!(sps_size(&Fields::plain(5000, 10).nal()), None);
        // Cropped to nothing, and past nothing.
        let mut f = Fields::plain(2, 2);
        f.crop = Some([8, 8, 0, 0]);
        assert_eq!(sps_size(&f.nal()), None);
        f.crop = Some([0, 0, u64::from(u32::MAX) - 1, 0]);
        assert_eq!(sps_size(&f.nal()), None);
        // More than 255 offsets in the picture order count cycle, pic_order_cnt_type 3, and a
        // chroma_format_idc of 4.
        let mut f = Fields::plain(20, 20);
        f.pic_order_cnt_type = 1;
        f.offsets_for_ref_frame = vec![1; 256];
        assert_eq!(sps_size(&f.nal()), None);
        f.pic_order_cnt_type = 3;
        assert_eq!(sps_size(&f.nal()), None);
        let mut f = Fields::plain(20, 20);
        f.profile_idc = 100;
        f.chroma_format_idc = 4;
        assert_eq!(sps_size(&f.nal()), None);
        // A delta_scale out of -128..=127.
        f.chroma_format_idc = 1;
        f.scaling = Some([Some(200); 12]);
        assert_eq!(sps_size(&f.nal()), None);
    }

    fn fields() -> impl Strategy<Value = Fields> {
        (
            prop::sample::select(vec![66u8, 77, 88, 100, 110, 122, 244, 44]),
            0u64..=3,
            any::<bool>(),
            prop::option::of(prop::array::uniform12(prop::option::of(-128i64..=127))),
            0u64..=2,
            -(1i64 << 31) + 1..(1i64 << 31),
            prop::collection::vec(-1000i64..1000, 0..4),
            1u64..=300,
            1u64..=200,
            any::<bool>(),
        )
            .prop_map(|(p, c, s, scaling, poc, off, offs, w, h, fmo)| Fields {
                profile_idc: p,
                chroma_format_idc: c,
                separate_colour_planes: s,
                scaling,
                pic_order_cnt_type: poc,
                offset_for_non_ref_pic: off,
                offsets_for_ref_frame: offs,
                width_mbs: w,
                height_map_units: h,
                frame_mbs_only: fmo,
                crop: None,
            })
    }

    proptest! {
        #[test]
        fn written_sps_reads_back(f in fields()) {
            let height = f.height_map_units * 16 * if f.frame_mbs_only { 1 } else { 2 };
            let want = (f.width_mbs as u16 * 16, height as u16);
            prop_assert_eq!(sps_size(&f.nal()), Some(want));
        }

        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = sps_size(&data);
            let _ = sps_size(&[[0x67].as_slice(), &data].concat());
        }
    }
}
