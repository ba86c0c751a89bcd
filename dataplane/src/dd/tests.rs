// ok: every unwrap()/expect() below is in this test-only module, on values the tests built

use super::examples::*;
use super::*;
use proptest::prelude::*;

fn write(d: &Descriptor, s: &Structure) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = d.write(s, &mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn hand_encoded_minimal_structure_reads_as_the_specification_says() {
    // Worked out bit by bit from A.8.2: start and end of frame, template id 0, frame 1; then
    // structure present (10000), template_id_offset 0 (6 bits), dt_cnt_minus_one 0 (5 bits),
    // next_layer_idc 3 (11), one DTI 'S' (10), no fdiffs (0), chain_cnt = ns(2) = 0 (0), no
    // resolutions (0), one bit of zero padding.
    let bytes = [0xC0, 0x00, 0x01, 0x80, 0x00, 0xE0];
    let (d, s) = Descriptor::parse(&bytes, None).unwrap();
    let s = s.unwrap();
    assert!(d.start_of_frame && d.end_of_frame && d.has_structure);
    assert_eq!((d.template_id, d.frame_number), (0, 1));
    assert_eq!(s.decode_targets(), 1);
    assert_eq!(s.chains(), 0);
    assert_eq!(s.templates().len(), 1);
    assert_eq!(d.dtis.get(0), Dti::Switch);
    assert!(d.fdiffs.as_slice().is_empty());
    assert_eq!(d.active_decode_targets, None);
    // And our writer produces exactly those bytes.
    assert_eq!(write(&d, &s), bytes);
    // The next packet of the frame is the three mandatory bytes, read against it.
    let (d2, none) = Descriptor::parse(&[0x40, 0x00, 0x01], Some(&s)).unwrap();
    assert!(none.is_none());
    assert!(!d2.start_of_frame && d2.end_of_frame && !d2.has_structure);
    assert_eq!(d2.dtis, d.dtis);
}

#[test]
fn mandatory_fields_take_three_bytes() {
    let s = l1t3(5);
    // Template index 2 (S0 T1) has id 7 with an offset of 5.
    let mut d = Descriptor::from_template(&s, 7, 0xBEEF).unwrap();
    d.start_of_frame = true;
    let bytes = write(&d, &s);
    assert_eq!(bytes, [0x80 | 7, 0xBE, 0xEF]);
    let (got, none) = Descriptor::parse(&bytes, Some(&s)).unwrap();
    assert!(none.is_none());
    assert_eq!(got, d);
    assert_eq!((got.spatial_id, got.temporal_id), (0, 1));
    assert_eq!(got.fdiffs.as_slice(), &[2]);
    assert_eq!(got.chain_diffs.as_slice(), &[2]);
    assert_eq!(
        [got.dtis.get(0), got.dtis.get(1), got.dtis.get(2)],
        [Dti::Switch, Dti::Discardable, Dti::NotPresent]
    );
}

#[test]
fn example_structures_round_trip_and_derive_their_decode_targets() {
    for (s, offset) in [(l1t3(0), 0), (l3t3_full(60), 60), (l3t3_key_shift(17), 17)] {
        let mut d = Descriptor::from_template(&s, offset, 100).unwrap();
        d.start_of_frame = true;
        d.has_structure = true;
        let bytes = write(&d, &s);
        let (got, attached) = Descriptor::parse(&bytes, None).unwrap();
        assert_eq!(got, d);
        assert_eq!(*attached.unwrap(), s);
    }
    let full = l3t3_full(0);
    // Decode target 0 is HD30, 4 is VGA15, 8 is QVGA7.5.
    assert_eq!(full.target_layers(0), Some((2, 2)));
    assert_eq!(full.target_layers(4), Some((1, 1)));
    assert_eq!(full.target_layers(8), Some((0, 0)));
    assert_eq!(full.target_layers(9), None);
    assert_eq!(full.protected_by(4), Some(1));
    assert_eq!(full.chains(), 3);
    assert_eq!(
        full.resolution(1),
        Some(Resolution {
            width: 640,
            height: 360
        })
    );
    assert_eq!(full.resolution(3), None);
    assert_eq!(l3t3_key_shift(0).resolution(0), None);
    // Template ids wrap modulo 64 around the offset.
    let wrapped = l1t3(62);
    assert_eq!(wrapped.template(62).unwrap().temporal_id, 0);
    assert_eq!(wrapped.template(2).unwrap().temporal_id, 2);
    assert!(wrapped.template(3).is_none());
}

#[test]
fn custom_fields_and_active_targets_round_trip() {
    let s = l3t3_full(0);
    let mut d = Descriptor::from_template(&s, 1, 7).unwrap();
    d.active_decode_targets = Some(0b1_1100_0000);
    d.dtis = Dtis::from_symbols("RRRRRRSSD").unwrap();
    d.fdiffs = Fdiffs::new(&[1, 17, 300, 4096]).unwrap();
    d.chain_diffs = ChainDiffs::new(&[200, 0, 15]).unwrap();
    let bytes = write(&d, &s);
    let (got, none) = Descriptor::parse(&bytes, Some(&s)).unwrap();
    assert!(none.is_none());
    assert_eq!(got, d);
    // Back to the template's values: only the mandatory fields and the bitmask remain.
    let mut plain = Descriptor::from_template(&s, 1, 7).unwrap();
    plain.active_decode_targets = Some(0b1_1100_0000);
    let bytes = write(&plain, &s);
    // 24 mandatory bits, 5 flags, 9 bits of bitmask: 5 bytes.
    assert_eq!(bytes.len(), 5);
    assert_eq!(Descriptor::parse(&bytes, Some(&s)).unwrap().0, plain);
}

#[test]
fn bad_input_is_an_error() {
    let s = l1t3(0);
    assert_eq!(
        Descriptor::parse(&[0x80, 0], Some(&s)),
        Err(Error::Truncated)
    );
    assert_eq!(
        Descriptor::parse(&[0x80, 0, 1], None),
        Err(Error::NoStructure)
    );
    // Template id 5 is past L1T3's five templates at offset 0.
    assert_eq!(
        Descriptor::parse(&[0x85, 0, 1], Some(&s)),
        Err(Error::UnknownTemplate)
    );
    // A structure cut short.
    let mut d = Descriptor::from_template(&s, 0, 1).unwrap();
    d.has_structure = true;
    let bytes = write(&d, &s);
    for n in 4..bytes.len() {
        assert!(Descriptor::parse(&bytes[..n], None).is_err(), "{n} bytes");
    }
    // Writing into too little room, or what cannot be said.
    assert_eq!(d.write(&s, &mut [0u8; 4]), Err(Error::BufferTooSmall));
    let mut wrong = Descriptor::from_template(&s, 0, 1).unwrap();
    wrong.temporal_id = 2;
    assert_eq!(wrong.write(&s, &mut [0u8; 8]), Err(Error::Invalid));
    let mut wrong = Descriptor::from_template(&s, 0, 1).unwrap();
    wrong.active_decode_targets = Some(0b1000);
    assert_eq!(wrong.write(&s, &mut [0u8; 8]), Err(Error::Invalid));
    // A structure that next_layer_idc cannot describe.
    let t = |sid, tid| Template {
        spatial_id: sid,
        temporal_id: tid,
        dtis: Dtis::from_symbols("S").unwrap(),
        fdiffs: Fdiffs::EMPTY,
        chain_diffs: ChainDiffs::EMPTY,
    };
    assert_eq!(
        Structure::new(0, 1, 0, &[], &[t(0, 0), t(0, 2)], &[]),
        Err(Error::Invalid)
    );
    assert_eq!(
        Structure::new(0, 1, 0, &[], &[t(1, 0)], &[]),
        Err(Error::Invalid)
    );
    assert!(Structure::new(0, 1, 0, &[], &[t(0, 0), t(0, 1), t(1, 0)], &[]).is_ok());
}

#[test]
fn stream_keeps_the_structure_and_active_targets_in_sequence_order() {
    let s = l1t3(0);
    let mut stream = Stream::new();
    let plain = write(&Descriptor::from_template(&s, 1, 10).unwrap(), &s);
    assert_eq!(stream.receive(100, &plain), Err(Error::NoStructure));

    let mut key = Descriptor::from_template(&s, 0, 9).unwrap();
    key.has_structure = true;
    stream.receive(99, &write(&key, &s)).unwrap();
    assert_eq!(stream.structure(), Some(&s));
    assert_eq!(stream.active_decode_targets(), 0b111);
    let generation = stream.generation();

    // Only the base layer is produced from seq 101 on.
    let mut d = Descriptor::from_template(&s, 1, 11).unwrap();
    d.active_decode_targets = Some(0b100);
    stream.receive(101, &write(&d, &s)).unwrap();
    assert_eq!(stream.active_decode_targets(), 0b100);
    // A late packet from before that update does not undo it.
    d.active_decode_targets = Some(0b111);
    stream.receive(100, &write(&d, &s)).unwrap();
    assert_eq!(stream.active_decode_targets(), 0b100);
    // The same structure again restores all targets but is not a new generation.
    stream.receive(102, &write(&key, &s)).unwrap();
    assert_eq!(stream.active_decode_targets(), 0b111);
    assert_eq!(stream.generation(), generation);
    // A different one is; sequence numbers wrap.
    let full = l3t3_full(10);
    let mut key = Descriptor::from_template(&full, 10, 12).unwrap();
    key.has_structure = true;
    for seq in [30_000u16, 60_000, 65_535, 3] {
        stream.receive(seq, &plain).unwrap();
    }
    stream.receive(4, &write(&key, &full)).unwrap();
    assert_eq!(stream.structure(), Some(&full));
    assert_ne!(stream.generation(), generation);
    assert_eq!(stream.active_decode_targets(), (1 << 9) - 1);
}

#[test]
fn example_frame_sequences_refer_only_to_frames_they_may() {
    // The test data itself: every frame and chain difference of the sequences points at an
    // earlier frame, and frame references never go up a layer.
    type Seq = fn(usize) -> Vec<usize>;
    let cases: [(Structure, Seq, bool); 3] = [
        (l1t3(0), l1t3_templates, false),
        (l3t3_full(0), l3t3_full_templates, false),
        (l3t3_key_shift(0), l3t3_key_shift_templates, true),
    ];
    for (s, seq, k_svc) in cases {
        let frames = seq(40);
        for (i, &t) in frames.iter().enumerate() {
            let t = &s.templates()[t];
            for &f in t.fdiffs.as_slice() {
                let r = &s.templates()[frames[i - usize::from(f)]];
                assert!(r.spatial_id <= t.spatial_id && r.temporal_id <= t.temporal_id);
                if k_svc && i >= 3 {
                    assert_eq!(r.spatial_id, t.spatial_id, "frame {i}");
                }
            }
            for &c in t.chain_diffs.as_slice() {
                assert!(usize::from(c) <= i, "frame {i}");
            }
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_reparse_equal(
        data in proptest::collection::vec(any::<u8>(), 0..64),
        with_structure in any::<bool>(),
    ) {
        let s = l3t3_full(3);
        let latest = with_structure.then_some(&s);
        if let Ok((d, attached)) = Descriptor::parse(&data, latest) {
            let used = attached.as_deref().or(latest).unwrap();
            let mut buf = [0u8; 512];
            let n = d.write(used, &mut buf).unwrap();
            let (again, attached2) = Descriptor::parse(&buf[..n], latest).unwrap();
            prop_assert_eq!(again, d);
            prop_assert_eq!(attached2, attached);
        }
    }
}
