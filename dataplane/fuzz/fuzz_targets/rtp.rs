#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::media::Codec;
use switchyard_dataplane::rtp;

fuzz_target!(|data: &[u8]| {
    for codec in [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
        let _ = rtp::is_keyframe(codec, data);
        let _ = rtp::keyframe_size(codec, data);
    }
    let Ok(h) = rtp::Header::parse(data) else { return };
    for id in 1..=14 {
        let _ = h.extension_value(data, id);
    }
    let payload = &data[h.payload_offset..h.payload_end];
    for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
        let _ = rtp::is_keyframe(codec, payload);
        let _ = rtp::keyframe_size(codec, payload);
    }
    let mut e = rtp::SeqExtender::default();
    let _ = (e.extend(h.sequence), e.extend(h.sequence.wrapping_add(40000)));
});
