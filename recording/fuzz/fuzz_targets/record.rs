#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_recording::h264;
use switchyard_recording::mkv::{Codec, Track, Writer};

fuzz_target!(|data: &[u8]| {
    // The bytes as an H264 access unit from the network: its NAL units in AVCC form, and the
    // decoder configuration record of its parameter sets, if it has them.
    let mut avcc = Vec::new();
    if let (Some(sps), Some(pps)) = h264::to_avcc(data, &mut avcc) {
        let _ = h264::avcc_record(sps, pps);
    }
    // The bytes as frames for the writer: each a head byte (bit 7: keyframe; the rest: the
    // step to its time in ms, so time stalls, jumps and, from 100 on, goes back) and up to 16
    // bytes of frame. Whatever comes is written or refused, never a panic.
    let track = Track {
        codec: Codec::Vp8,
        width: 2,
        height: 2,
    };
    let mut writer = Writer::new(&[track], None);
    let mut at = 1_000u64;
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let step = u64::from(head & 0x7F);
        at = if step >= 100 { at.saturating_sub(step * 10) } else { at + step * 40 };
        let len = tail.len().min(16);
        let _ = writer.frame(0, at, head & 0x80 != 0, &tail[..len]);
        let _ = writer.take();
        rest = &tail[len..];
    }
    let _ = writer.finish();
});
