//! EBML encoding (RFC 8794), the few forms a Matroska writer needs.
//!
//! Written here rather than taken from `webm-iterable`: its writer checks every element
//! against the parents open in that one writer, and this file is made in pieces (a cluster
//! handed out whole, a seek head placed into a reserved space at the end). Encoding is an id,
//! a variable-length size and the content; `webm-iterable` reads our files back in the tests.

/// Appends element id `id` (its own length marker included, as the ids are written).
pub fn id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends `n` as a size in the fewest bytes (up to 8; every size here is far smaller).
pub fn size(out: &mut Vec<u8>, n: u64) {
    // A length of L bytes holds up to 2^(7L) - 2: all ones means "unknown".
    let len = (1..=8u32).find(|&l| n < (1u64 << (7 * l)) - 1).unwrap_or(8);
    let marked = n | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len as usize..]);
}

/// Appends the unknown size (8 bytes): the element runs until one that cannot be its child.
pub fn unknown_size(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
}

/// Appends an element whose content is `data`.
pub fn binary(out: &mut Vec<u8>, element: u32, data: &[u8]) {
    id(out, element);
    size(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// Appends an unsigned integer element, in the fewest bytes (one at least).
pub fn uint(out: &mut Vec<u8>, element: u32, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    binary(out, element, &bytes[skip..]);
}

/// Appends a float element as 8 bytes (the content is at the element's last 8 bytes).
pub fn float(out: &mut Vec<u8>, element: u32, v: f64) {
    binary(out, element, &v.to_be_bytes());
}

/// Appends a string element.
pub fn string(out: &mut Vec<u8>, element: u32, s: &str) {
    binary(out, element, s.as_bytes());
}

/// Appends a master element whose children `children` writes.
pub fn master(out: &mut Vec<u8>, element: u32, children: impl FnOnce(&mut Vec<u8>)) {
    let mut content = Vec::new();
    children(&mut content);
    binary(out, element, &content);
}

/// Appends a Void element of exactly `len` bytes (nothing for less than 2).
pub fn void(out: &mut Vec<u8>, len: usize) {
    // The id and a one-byte size take 2 bytes up to 126 bytes of content; beyond, the size
    // takes two bytes (written as two even where one would do, to fill `len` exactly).
    if len < 2 {
        return;
    }
    id(out, VOID);
    let content = if len <= 128 {
        size(out, (len - 2) as u64);
        len - 2
    } else {
        let content = (len - 3).min(16_382);
        out.extend_from_slice(&(0x4000 | content as u16).to_be_bytes());
        content
    };
    out.resize(out.len() + content, 0);
}

/// Element ids (Matroska's, and EBML's own).
pub const EBML: u32 = 0x1A45_DFA3;
pub const EBML_VERSION: u32 = 0x4286;
pub const EBML_READ_VERSION: u32 = 0x42F7;
pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
pub const DOC_TYPE: u32 = 0x4282;
pub const DOC_TYPE_VERSION: u32 = 0x4287;
pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
pub const VOID: u32 = 0xEC;
pub const SEGMENT: u32 = 0x1853_8067;
pub const SEEK_HEAD: u32 = 0x114D_9B74;
pub const SEEK: u32 = 0x4DBB;
pub const SEEK_ID: u32 = 0x53AB;
pub const SEEK_POSITION: u32 = 0x53AC;
pub const INFO: u32 = 0x1549_A966;
pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
pub const DURATION: u32 = 0x4489;
pub const DATE_UTC: u32 = 0x4461;
pub const MUXING_APP: u32 = 0x4D80;
pub const WRITING_APP: u32 = 0x5741;
pub const TRACKS: u32 = 0x1654_AE6B;
pub const TRACK_ENTRY: u32 = 0xAE;
pub const TRACK_NUMBER: u32 = 0xD7;
pub const TRACK_UID: u32 = 0x73C5;
pub const TRACK_TYPE: u32 = 0x83;
pub const FLAG_LACING: u32 = 0x9C;
pub const CODEC_ID: u32 = 0x86;
pub const CODEC_PRIVATE: u32 = 0x63A2;
pub const SEEK_PRE_ROLL: u32 = 0x56BB;
pub const VIDEO: u32 = 0xE0;
pub const PIXEL_WIDTH: u32 = 0xB0;
pub const PIXEL_HEIGHT: u32 = 0xBA;
pub const AUDIO: u32 = 0xE1;
pub const SAMPLING_FREQUENCY: u32 = 0xB5;
pub const CHANNELS: u32 = 0x9F;
pub const CLUSTER: u32 = 0x1F43_B675;
pub const TIMESTAMP: u32 = 0xE7;
pub const SIMPLE_BLOCK: u32 = 0xA3;
pub const CUES: u32 = 0x1C53_BB6B;
pub const CUE_POINT: u32 = 0xBB;
pub const CUE_TIME: u32 = 0xB3;
pub const CUE_TRACK_POSITIONS: u32 = 0xB7;
pub const CUE_TRACK: u32 = 0xF7;
pub const CUE_CLUSTER_POSITION: u32 = 0xF1;

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn sized(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        size(&mut out, n);
        out
    }

    #[test]
    fn sizes_take_the_fewest_bytes_and_never_read_as_unknown() {
        assert_eq!(sized(0), [0x80]);
        assert_eq!(sized(126), [0xFE]);
        // 127 in one byte would be all ones: "unknown".
        assert_eq!(sized(127), [0x40, 0x7F]);
        assert_eq!(sized(16_382), [0x7F, 0xFE]);
        assert_eq!(sized(16_383), [0x20, 0x3F, 0xFF]);
    }

    #[test]
    fn ids_integers_and_voids() {
        let mut out = Vec::new();
        uint(&mut out, TRACK_NUMBER, 1);
        uint(&mut out, TIMESTAMP_SCALE, 1_000_000);
        assert_eq!(
            out,
            [0xD7, 0x81, 0x01, 0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40]
        );
        for len in [2, 3, 96, 128, 129, 300] {
            let mut out = Vec::new();
            void(&mut out, len);
            assert_eq!(out.len(), len, "{len}");
        }
    }
}
