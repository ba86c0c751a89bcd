//! What the recorder and the depacketizer read of VP9's bitstream itself: superframes (VP9
//! spec Annex B: several frames, one per spatial layer, in one chunk with an index at its end)
//! and the start of a frame's uncompressed header (§6.2: keyframe or not, and the picture
//! size where the header states it).

use crate::bits::Bits;

/// The most frames one superframe holds (its index counts them in 3 bits).
pub const MAX_SUPERFRAME: usize = 8;

/// The frames of a chunk: those its superframe index lists, or the chunk itself when it has
/// no (valid) index. An index whose sizes overrun the chunk is taken as no index, as decoders
/// do.
pub fn frames(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let sizes = superframe_sizes(chunk);
    let mut rest = chunk;
    let mut i = 0;
    std::iter::from_fn(move || {
        let frame = match &sizes {
            Some((sizes, n)) => {
                let size = *sizes.get(i).filter(|_| i < *n)?;
                let (frame, tail) = rest.split_at(size);
                rest = tail;
                frame
            }
            None if i == 0 => chunk,
            None => return None,
        };
        i += 1;
        Some(frame)
    })
}

/// The frame sizes a superframe index at the end of `chunk` gives, and how many; `None`
/// without an index or when the sizes do not fit before it.
fn superframe_sizes(chunk: &[u8]) -> Option<([usize; MAX_SUPERFRAME], usize)> {
    let &marker = chunk.last()?;
    if marker & 0xE0 != 0xC0 {
        return None;
    }
    let n = usize::from(marker & 7) + 1;
    let mag = usize::from(marker >> 3 & 3) + 1;
    let index_len = 2 + mag * n;
    let index_at = chunk.len().checked_sub(index_len)?;
    let index = chunk.get(index_at..)?;
    if index.first() != Some(&marker) {
        return None;
    }
    let mut sizes = [0; MAX_SUPERFRAME];
    let mut total = 0usize;
    for (size, bytes) in sizes.iter_mut().zip(index.get(1..1 + mag * n)?.chunks(mag)) {
        *size = bytes
            .iter()
            .rev()
            .fold(0usize, |v, &b| v << 8 | usize::from(b));
        total = total.checked_add(*size)?;
    }
    (total <= index_at).then_some((sizes, n))
}

/// Appends a superframe index for frames of `sizes` (2 to [`MAX_SUPERFRAME`]) already in
/// `out`, one after another.
pub fn write_superframe_index(out: &mut Vec<u8>, sizes: &[usize]) {
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let mag: u8 = match largest {
        0..=0xFF => 1,
        0x100..=0xFFFF => 2,
        0x1_0000..=0xFF_FFFF => 3,
        _ => 4,
    };
    let n = sizes.len().clamp(1, MAX_SUPERFRAME) as u8;
    let marker = 0xC0 | (mag - 1) << 3 | (n - 1);
    out.push(marker);
    for &size in sizes.iter().take(MAX_SUPERFRAME) {
        out.extend_from_slice(&(size as u32).to_le_bytes()[..usize::from(mag)]);
    }
    out.push(marker);
}

/// What a frame's uncompressed header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// `frame_type` is KEY_FRAME: the frame decodes on its own and resets the references.
    pub keyframe: bool,
    /// The frame's size where the header gives it (keyframes, intra-only frames, inter
    /// frames that name no reference of the same size); `None` when it takes a reference's.
    pub size: Option<(u32, u32)>,
}

/// Reads the start of one frame's uncompressed header (not a superframe); `None` when it is
/// not a VP9 frame header or is cut short, or the frame only shows an earlier one.
pub fn frame_header(frame: &[u8]) -> Option<FrameHeader> {
    let mut b = Bits::new(frame);
    if b.bits(2)? != 2 {
        return None; // frame_marker
    }
    let low = b.bits(1)?;
    let profile = b.bits(1)? << 1 | low;
    if profile == 3 && b.flag()? {
        return None; // reserved_zero
    }
    if b.flag()? {
        return None; // show_existing_frame
    }
    let keyframe = !b.flag()?; // frame_type: 0 is KEY_FRAME
    let show_frame = b.flag()?;
    let error_resilient = b.flag()?;
    let size = if keyframe {
        sync_code(&mut b)?;
        color_config(&mut b, profile)?;
        Some(frame_size(&mut b)?)
    } else {
        let intra_only = !show_frame && b.flag()?;
        if !error_resilient {
            b.bits(2)?; // reset_frame_context
        }
        if intra_only {
            sync_code(&mut b)?;
            if profile > 0 {
                color_config(&mut b, profile)?;
            }
            b.bits(8)?; // refresh_frame_flags
            Some(frame_size(&mut b)?)
        } else {
            b.bits(8)?; // refresh_frame_flags
            b.bits(12)?; // 3 x (ref_frame_idx, ref_frame_sign_bias)
            // frame_size_with_refs: a found reference gives its size, unknown here.
            let mut found = false;
            for _ in 0..3 {
                if b.flag()? {
                    found = true;
                    break;
                }
            }
            if found {
                None
            } else {
                Some(frame_size(&mut b)?)
            }
        }
    };
    Some(FrameHeader { keyframe, size })
}

/// The size of a picture (one frame or a superframe): that of its last frame whose header
/// states one, so the top spatial layer's.
pub fn picture_size(chunk: &[u8]) -> Option<(u32, u32)> {
    frames(chunk).filter_map(|f| frame_header(f)?.size).last()
}

fn sync_code(b: &mut Bits) -> Option<()> {
    (b.bits(24)? == 0x49_83_42).then_some(())
}

fn color_config(b: &mut Bits, profile: u32) -> Option<()> {
    if profile >= 2 {
        b.flag()?; // ten_or_twelve_bit
    }
    let color_space = b.bits(3)?;
    if color_space != 7 {
        b.flag()?; // color_range
        if profile == 1 || profile == 3 {
            b.bits(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        b.flag()?; // reserved_zero
    }
    Some(())
}

fn frame_size(b: &mut Bits) -> Option<(u32, u32)> {
    let width = b.bits(16)? + 1;
    let height = b.bits(16)? + 1;
    Some((width, height))
}

// ok: every unwrap() below is in this test-only module, on values the tests built
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The first bytes of a profile 0 keyframe of `width` x `height` (frame marker, profile,
    /// key, shown, sync code, BT.601, size), then `tail`.
    pub(crate) fn keyframe(width: u16, height: u16, tail: &[u8]) -> Vec<u8> {
        // 10 0 0 0 0 1 0: marker, profile 0, not show-existing, KEY, shown, not resilient.
        let mut bits: Vec<bool> = [1, 0, 0, 0, 0, 0, 1, 0].iter().map(|&b| b == 1).collect();
        let mut push = |v: u32, n: u32| {
            for i in (0..n).rev() {
                bits.push(v >> i & 1 == 1);
            }
        };
        push(0x49_83_42, 24);
        push(1, 3); // color_space BT.601
        push(0, 1); // color_range
        push(u32::from(width) - 1, 16);
        push(u32::from(height) - 1, 16);
        let mut out: Vec<u8> = bits
            .chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0, |v, (i, &b)| v | u8::from(b) << (7 - i))
            })
            .collect();
        out.extend_from_slice(tail);
        out
    }

    /// An inter frame's first bytes (shown, not resilient) whose header names no reference
    /// of its size and states `width` x `height`.
    pub(crate) fn inter(width: u16, height: u16) -> Vec<u8> {
        let mut bits: Vec<bool> = [1, 0, 0, 0, 0, 1, 1, 0].iter().map(|&b| b == 1).collect();
        let mut push = |v: u32, n: u32| {
            for i in (0..n).rev() {
                bits.push(v >> i & 1 == 1);
            }
        };
        push(0, 2); // reset_frame_context
        push(1, 8); // refresh_frame_flags
        push(0, 12); // refs
        push(0, 3); // no found_ref
        push(u32::from(width) - 1, 16);
        push(u32::from(height) - 1, 16);
        bits.chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0, |v, (i, &b)| v | u8::from(b) << (7 - i))
            })
            .collect()
    }

    #[test]
    fn keyframe_headers_give_their_size() {
        let h = frame_header(&keyframe(320, 240, &[0; 4])).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                keyframe: true,
                size: Some((320, 240))
            }
        );
        let h = frame_header(&inter(640, 480)).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                keyframe: false,
                size: Some((640, 480))
            }
        );
        // An inter frame of a reference's size: found_ref set.
        let mut found = inter(640, 480);
        found[3] |= 0x02;
        assert_eq!(frame_header(&found).unwrap().size, None);
        // Not a frame marker; cut short; show-existing.
        assert_eq!(frame_header(&[0x00, 0x00]), None);
        assert_eq!(frame_header(&keyframe(320, 240, &[])[..5]), None);
        assert_eq!(frame_header(&[0x88]), None);
    }

    #[test]
    fn superframes_split_and_join() {
        let a = keyframe(160, 120, &[1; 300]);
        let b = inter(320, 240);
        let mut chunk = [a.clone(), b.clone()].concat();
        write_superframe_index(&mut chunk, &[a.len(), b.len()]);
        assert_eq!(chunk[chunk.len() - 1], 0xC9, "2-byte sizes, 2 frames");
        let got: Vec<&[u8]> = frames(&chunk).collect();
        assert_eq!(got, [&a[..], &b[..]]);
        assert_eq!(picture_size(&chunk), Some((320, 240)));
        // No index: the chunk is one frame.
        assert_eq!(frames(&a).count(), 1);
        assert_eq!(picture_size(&a), Some((160, 120)));
        // An index whose sizes overrun: one frame.
        let mut bad = b.clone();
        write_superframe_index(&mut bad, &[200, 200]);
        assert_eq!(frames(&bad).count(), 1);
    }
}
