//! AV1's open bitstream units as the recorder needs them: the OBU header, walking a temporal
//! unit in low-overhead form (every OBU with its size), the sequence header (picture size and
//! what Matroska's `av1C` record repeats) and whether a frame header starts a keyframe.

use crate::bits::{Bits, leb128};

pub const OBU_SEQUENCE_HEADER: u8 = 1;
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;
pub const OBU_FRAME_HEADER: u8 = 3;
pub const OBU_FRAME: u8 = 6;
pub const OBU_TILE_LIST: u8 = 8;
pub const OBU_PADDING: u8 = 15;

/// One OBU split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obu<'a> {
    pub kind: u8,
    /// The header byte and, when its extension flag is set, the extension byte.
    pub header: &'a [u8],
    pub payload: &'a [u8],
}

/// Splits the OBU at the start of `data`: its header, and its payload (the size field's bytes
/// when it has one, else the rest of `data`). Returns it and the bytes after it; `None` when
/// the header is malformed or the size overruns.
pub fn split(data: &[u8]) -> Option<(Obu<'_>, &[u8])> {
    let &first = data.first()?;
    if first & 0x80 != 0 {
        return None; // obu_forbidden_bit
    }
    let header_len = 1 + usize::from(first & 0x04 != 0);
    let header = data.get(..header_len)?;
    let rest = &data[header_len..];
    let (payload, after) = if first & 0x02 != 0 {
        let (size, len) = leb128(rest)?;
        let body = rest.get(len..)?;
        (body.get(..size)?, &body[size..])
    } else {
        (rest, &rest[rest.len()..])
    };
    let obu = Obu {
        kind: first >> 3 & 0x0F,
        header,
        payload,
    };
    Some((obu, after))
}

/// The OBUs of a temporal unit in low-overhead form; stops at the first malformed one.
pub fn obus(mut tu: &[u8]) -> impl Iterator<Item = (Obu<'_>, &[u8])> {
    std::iter::from_fn(move || {
        if tu.is_empty() {
            return None;
        }
        let (obu, rest) = split(tu)?;
        let whole = &tu[..tu.len() - rest.len()];
        tu = rest;
        Some((obu, whole))
    })
}

/// What a sequence header says that a recording needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SequenceHeader {
    pub profile: u8,
    /// `seq_level_idx` and `seq_tier` of the first operating point.
    pub level: u8,
    pub tier: bool,
    pub high_bitdepth: bool,
    pub twelve_bit: bool,
    pub monochrome: bool,
    pub subsampling_x: bool,
    pub subsampling_y: bool,
    pub chroma_sample_position: u8,
    /// The largest picture of the sequence (`max_frame_width_minus_1` + 1, ...).
    pub width: u32,
    pub height: u32,
    /// Frames of this sequence are all keyframes with no header fields to read.
    pub reduced_still_picture_header: bool,
}

impl SequenceHeader {
    /// Reads a sequence header OBU's payload (AV1 spec §5.5); `None` when it is cut short.
    pub fn parse(payload: &[u8]) -> Option<SequenceHeader> {
        let mut b = Bits::new(payload);
        let mut s = SequenceHeader {
            profile: b.bits(3)? as u8,
            ..SequenceHeader::default()
        };
        b.flag()?; // still_picture
        s.reduced_still_picture_header = b.flag()?;
        if s.reduced_still_picture_header {
            s.level = b.bits(5)? as u8;
        } else {
            let timing_info = b.flag()?;
            let mut decoder_model = false;
            let mut buffer_delay_bits = 0;
            if timing_info {
                b.bits(32)?; // num_units_in_display_tick
                b.bits(32)?; // time_scale
                if b.flag()? {
                    b.uvlc()?; // num_ticks_per_picture_minus_1
                }
                decoder_model = b.flag()?;
                if decoder_model {
                    buffer_delay_bits = b.bits(5)? + 1;
                    b.bits(32)?; // num_units_in_decoding_tick
                    b.bits(10)?; // buffer_removal_time_length, frame_presentation_time_length
                }
            }
            let initial_display_delay = b.flag()?;
            let points = b.bits(5)? + 1;
            for i in 0..points {
                b.bits(12)?; // operating_point_idc
                let level = b.bits(5)? as u8;
                let tier = level > 7 && b.flag()?;
                if i == 0 {
                    (s.level, s.tier) = (level, tier);
                }
                if decoder_model && b.flag()? {
                    b.bits(buffer_delay_bits)?; // decoder_buffer_delay
                    b.bits(buffer_delay_bits)?; // encoder_buffer_delay
                    b.flag()?; // low_delay_mode_flag
                }
                if initial_display_delay && b.flag()? {
                    b.bits(4)?;
                }
            }
        }
        let width_bits = b.bits(4)? + 1;
        let height_bits = b.bits(4)? + 1;
        s.width = b.bits(width_bits)? + 1;
        s.height = b.bits(height_bits)? + 1;
        Self::tools(&mut b, s.reduced_still_picture_header)?;
        s.color_config(&mut b)?;
        Some(s)
    }

    /// Reads past the coding tools between the frame size and the color configuration.
    fn tools(b: &mut Bits, reduced: bool) -> Option<()> {
        if !reduced && b.flag()? {
            b.bits(7)?; // delta_frame_id_length_minus_2, additional_frame_id_length_minus_1
        }
        b.bits(3)?; // use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
        if !reduced {
            b.bits(4)?; // interintra, masked compound, warped motion, dual filter
            let order_hint = b.flag()?;
            if order_hint {
                b.bits(2)?; // enable_jnt_comp, enable_ref_frame_mvs
            }
            let screen_content = if b.flag()? { 2 } else { b.bits(1)? };
            if screen_content > 0 && !b.flag()? {
                b.flag()?; // seq_force_integer_mv
            }
            if order_hint {
                b.bits(3)?; // order_hint_bits_minus_1
            }
        }
        b.bits(3)?; // enable_superres, enable_cdef, enable_restoration
        Some(())
    }

    /// `color_config()` (§5.5.2): bit depth, monochrome, subsampling, chroma position.
    fn color_config(&mut self, b: &mut Bits) -> Option<()> {
        self.high_bitdepth = b.flag()?;
        if self.profile == 2 && self.high_bitdepth {
            self.twelve_bit = b.flag()?;
        }
        self.monochrome = self.profile != 1 && b.flag()?;
        let (mut primaries, mut transfer, mut matrix) = (2, 2, 2);
        if b.flag()? {
            primaries = b.bits(8)?;
            transfer = b.bits(8)?;
            matrix = b.bits(8)?;
        }
        if self.monochrome {
            b.flag()?; // color_range
            (self.subsampling_x, self.subsampling_y) = (true, true);
            return Some(());
        }
        if primaries == 1 && transfer == 13 && matrix == 0 {
            return Some(()); // sRGB: 4:4:4
        }
        b.flag()?; // color_range
        (self.subsampling_x, self.subsampling_y) = match self.profile {
            0 => (true, true),
            1 => (false, false),
            _ if self.twelve_bit => {
                let x = b.flag()?;
                (x, x && b.flag()?)
            }
            _ => (true, false),
        };
        if self.subsampling_x && self.subsampling_y {
            self.chroma_sample_position = b.bits(2)? as u8;
        }
        Some(())
    }

    /// Matroska's `CodecPrivate` for AV1: the `av1C` record (AV1-ISOBMFF §2.3) followed by
    /// `sequence_header_obu`, the whole OBU (with its size field) this header came from.
    pub fn config_record(&self, sequence_header_obu: &[u8]) -> Vec<u8> {
        let bit = |b: bool, at: u8| u8::from(b) << at;
        let mut out = vec![
            0x81, // marker, version 1
            self.profile << 5 | self.level & 0x1F,
            bit(self.tier, 7)
                | bit(self.high_bitdepth, 6)
                | bit(self.twelve_bit, 5)
                | bit(self.monochrome, 4)
                | bit(self.subsampling_x, 3)
                | bit(self.subsampling_y, 2)
                | self.chroma_sample_position & 3,
            0, // no initial presentation delay
        ];
        out.extend_from_slice(sequence_header_obu);
        out
    }
}

/// The first sequence header of a temporal unit (low-overhead form), and its whole OBU.
pub fn sequence_header(tu: &[u8]) -> Option<(SequenceHeader, &[u8])> {
    let (obu, whole) = obus(tu).find(|(o, _)| o.kind == OBU_SEQUENCE_HEADER)?;
    Some((SequenceHeader::parse(obu.payload)?, whole))
}

/// Whether a frame (header) OBU's payload starts a KEY_FRAME: a reduced still picture
/// header's always does; otherwise not `show_existing_frame`, and `frame_type` 0.
pub fn key_frame_header(payload: &[u8], reduced_still_picture_header: bool) -> bool {
    if reduced_still_picture_header {
        return true;
    }
    let mut b = Bits::new(payload);
    b.flag() == Some(false) && b.bits(2) == Some(0)
}

// ok: every unwrap() below is in this test-only module, on values the tests built
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A bit writer for hand-made headers.
    #[derive(Default)]
    pub(crate) struct Writer(Vec<bool>);

    impl Writer {
        pub(crate) fn u(&mut self, n: u32, v: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.0.push(v >> i & 1 == 1);
            }
            self
        }

        pub(crate) fn bytes(&self) -> Vec<u8> {
            self.0
                .chunks(8)
                .map(|c| {
                    c.iter()
                        .enumerate()
                        .fold(0, |v, (i, &b)| v | u8::from(b) << (7 - i))
                })
                .collect()
        }
    }

    /// A profile 0, 8-bit 4:2:0 sequence header payload for `width` x `height`, as libaom's
    /// real-time mode writes one (no timing info, one operating point at level 8).
    pub(crate) fn sequence_payload(width: u32, height: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.u(3, 0).u(1, 0).u(1, 0); // profile, still_picture, reduced
        w.u(1, 0).u(1, 0).u(5, 0); // timing info, initial display delay, 1 point
        w.u(12, 0).u(5, 8).u(1, 0); // idc, level 8 (4.0), tier
        w.u(4, 15).u(4, 15).u(16, width - 1).u(16, height - 1);
        w.u(1, 0); // frame_id_numbers_present
        w.u(3, 0).u(4, 0).u(1, 1).u(2, 0); // sb, filters; compound...; order hint; jnt, mvs
        w.u(1, 1).u(1, 1).u(3, 6); // screen content select, integer mv select, hint bits
        w.u(3, 0); // superres, cdef, restoration
        w.u(1, 0).u(1, 0).u(1, 0).u(1, 0).u(2, 0); // 8-bit, not mono, no description, range, csp
        w.u(1, 0).u(1, 0); // separate_uv_delta_q, film_grain_params_present
        w.u(1, 1); // trailing bit
        w.bytes()
    }

    /// An OBU of `kind` with a size field.
    pub(crate) fn obu(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind << 3 | 0x02];
        crate::bits::write_leb128(&mut out, payload.len());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn sequence_headers_give_size_and_record() {
        let payload = sequence_payload(320, 240);
        let s = SequenceHeader::parse(&payload).unwrap();
        assert_eq!((s.width, s.height, s.level), (320, 240, 8));
        assert!(s.subsampling_x && s.subsampling_y && !s.high_bitdepth);
        let tu = [obu(OBU_TEMPORAL_DELIMITER, &[]), obu(1, &payload)].concat();
        let (found, whole) = sequence_header(&tu).unwrap();
        assert_eq!(found, s);
        assert_eq!(whole, obu(1, &payload));
        let record = s.config_record(whole);
        assert_eq!(record[..4], [0x81, 0x08, 0x0C, 0x00]);
        assert_eq!(&record[4..], whole);
        // Cut short anywhere: no header, no panic.
        for cut in 0..payload.len() - 1 {
            assert_eq!(SequenceHeader::parse(&payload[..cut]), None, "{cut}");
        }
    }

    #[test]
    fn obus_split_with_and_without_sizes() {
        let (o, rest) = split(&[0x0A, 0x02, 0xAA, 0xBB, 0xCC]).unwrap();
        assert_eq!(
            (o.kind, o.payload, rest),
            (1, &[0xAA, 0xBB][..], &[0xCC][..])
        );
        // Extension byte, no size: the rest is the payload.
        let (o, rest) = split(&[0x34, 0x20, 0x01]).unwrap();
        assert_eq!(
            (o.kind, o.header, o.payload),
            (6, &[0x34, 0x20][..], &[0x01][..])
        );
        assert!(rest.is_empty());
        assert_eq!(split(&[0x8A, 0x00]), None, "forbidden bit");
        assert_eq!(split(&[0x0A, 0x05, 0x00]), None, "size overruns");
        assert!(key_frame_header(&[0x10], false));
        assert!(!key_frame_header(&[0x30], false), "INTER_FRAME");
        assert!(!key_frame_header(&[0x80], false), "show_existing_frame");
        assert!(key_frame_header(&[], true));
    }
}
