#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::dd::{ChainDiffs, Descriptor, Dtis, Fdiffs, Stream, Structure, Template};
use switchyard_dataplane::svc::{Decision, Layers, Selector, SeqRewriter};

/// The AV1 RTP specification's L1T3 example (A.10.2.1), for descriptors without a structure.
fn l1t3() -> Structure {
    let t = |temporal, fdiffs: &[u16], chain, dtis| Template {
        spatial_id: 0,
        temporal_id: temporal,
        dtis: Dtis::from_symbols(dtis).expect("valid symbols"),
        fdiffs: Fdiffs::new(fdiffs).expect("valid fdiffs"),
        chain_diffs: ChainDiffs::new(&[chain]).expect("one chain"),
    };
    let templates = [
        t(0, &[], 0, "SSS"),
        t(0, &[4], 4, "SSS"),
        t(1, &[2], 2, "SD-"),
        t(2, &[1], 1, "D--"),
        t(2, &[1], 3, "D--"),
    ];
    Structure::new(0, 3, 1, &[0, 0, 0], &templates, &[]).expect("the example is valid")
}

fuzz_target!(|data: &[u8]| {
    // Any bytes as a descriptor, with and without a structure in force: read to the end or an
    // error, never a panic; what was read writes back and reads again the same.
    let fixed = l1t3();
    for latest in [None, Some(&fixed)] {
        if let Ok((d, attached)) = Descriptor::parse(data, latest) {
            let used = attached
                .as_deref()
                .or(latest)
                .expect("read against a structure");
            let mut buf = vec![0u8; data.len() + 8];
            let n = d
                .write(used, &mut buf)
                .expect("what was read can be written");
            let (again, attached_again) =
                Descriptor::parse(&buf[..n], latest).expect("our own descriptor reads");
            assert_eq!(again, d);
            assert_eq!(attached_again, attached);
        }
    }

    // The same bytes as a packet sequence for one producer and one consumer: each packet a
    // length byte (low 5 bits: the descriptor's length; high 3: the step to its sequence
    // number, -2..=5, so packets go missing and come out of order) and its descriptor.
    let wanted = Layers {
        spatial: data.first().map_or(0, |b| b % 4),
        temporal: data.get(1).map_or(0, |b| b % 4),
    };
    let mut stream = Stream::new();
    let mut selector = Selector::new(wanted);
    let mut seqs = SeqRewriter::new(1000);
    let mut seq = 0u16;
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head & 31).min(tail.len());
        let (ext, tail) = tail.split_at(len);
        rest = tail;
        seq = seq.wrapping_add_signed(i16::from(head >> 5) - 2);
        let Ok(d) = stream.receive(seq, ext) else {
            continue;
        };
        match selector.decide(&stream, &d) {
            Decision::Forward => {
                if let Some(out) = seqs.forward(seq) {
                    assert_eq!(seqs.producer_seq(out), Some(seq));
                }
            }
            Decision::Drop(_) => {
                let _ = seqs.skip(seq);
            }
        }
        let _ = selector.keyframe_wanted();
    }
});
