#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_codec::av1::{Av1Depacketizer, Av1Packetizer};
use switchyard_codec::h264::{H264Depacketizer, H264Packetizer};
use switchyard_codec::opus::OpusDepacketizer;
use switchyard_codec::vp8::{Vp8Depacketizer, Vp8Packetizer};
use switchyard_codec::vp9::{Vp9Depacketizer, Vp9Packetizer};
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
    let mut vp9 = Vp9Depacketizer::default();
    let mut av1 = Av1Depacketizer::default();
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
        if let Ok(Some(f)) = vp9.push(seq, ts, marker, payload) {
            // A picture is one frame, or a superframe whose index splits it again.
            assert!(!f.data.is_empty());
            assert!(switchyard_codec::vp9::frames(f.data).count() >= 1);
        }
        if let Ok(Some(f)) = av1.push(seq, ts, marker, payload) {
            // Every OBU comes out with its size: the unit walks to its end.
            let walked: usize = switchyard_codec::av1::obus(f.data).map(|(_, o)| o.len()).sum();
            assert_eq!(walked, f.data.len());
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
    if Vp9Packetizer::new(0).packetize(data, mtu, &mut out).is_ok() {
        assert!(out.iter().all(|p| p.len() <= mtu));
    }
    if Av1Packetizer::default().packetize(data, mtu, &mut out).is_ok() {
        assert!(out.iter().all(|p| p.len() <= mtu));
    }
    // The bytes as VP9 and AV1 bitstream: the headers a recording reads its size from.
    let _ = switchyard_codec::vp9::picture_size(data);
    let _ = switchyard_codec::av1::sequence_header(data).map(|(s, obu)| s.config_record(obu));
});
