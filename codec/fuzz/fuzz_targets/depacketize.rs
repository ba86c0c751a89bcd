#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_codec::h264::{H264Depacketizer, H264Packetizer};
use switchyard_codec::opus::OpusDepacketizer;
use switchyard_codec::vp8::{Vp8Depacketizer, Vp8Packetizer};
use switchyard_codec::{Packetizer, Payloads};

fuzz_target!(|data: &[u8]| {
    // The bytes as an H264 SPS (the router's layer heights, a recording's picture size).
    let _ = switchyard_codec::sps::sps_size(data);
    // The bytes as a packet sequence fed to every depacketizer: each packet a head byte (low 5
    // bits: the payload's length; bit 5: the marker; high 2: the step to its sequence number,
    // -1..=2, so packets repeat, go missing and come late; the timestamp moves every 4th
    // sequence number) and its payload. Whatever comes out is an error or a frame, never a
    // panic.
    let mut vp8 = Vp8Depacketizer::default();
    let mut h264 = H264Depacketizer::default();
    let mut opus = OpusDepacketizer::default();
    let mut seq = 0u16;
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head & 31).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        seq = seq.wrapping_add_signed(i16::from(head >> 6) - 1);
        let marker = head & 32 != 0;
        let ts = u32::from(seq / 4);
        if let Ok(Some(f)) = vp8.push(seq, ts, marker, payload) {
            assert!(!f.data.is_empty());
        }
        if let Ok(Some(f)) = h264.push(seq, ts, marker, payload) {
            assert!(f.data.starts_with(&[0, 0, 0, 1]));
        }
        if let Ok(Some(f)) = opus.push(seq, ts, marker, payload) {
            assert_eq!(f.data, payload);
        }
    }

    // The bytes as a frame: whatever packetizes fits the MTU.
    let mtu = usize::from(data.first().copied().unwrap_or(0)) + 1;
    let mut out = Payloads::new();
    if Vp8Packetizer::new(0).packetize(data, mtu, &mut out).is_ok() {
        assert!(out.iter().all(|p| p.len() <= mtu));
    }
    if H264Packetizer.packetize(data, mtu, &mut out).is_ok() {
        assert!(out.iter().all(|p| p.len() <= mtu));
    }
});
