// ok: every unwrap()/expect() below is in this test-only module, on values the tests built

use super::*;
use crate::dd::examples::*;
use crate::dd::{ChainDiffs, Descriptor, Stream, Structure, Template};

/// A producer sending a structure's frames, two packets per frame, the structure on the first
/// packet of each keyframe (template 0).
struct Producer {
    structure: Structure,
    /// The frames' templates, temporal unit by unit, from a keyframe on.
    pattern: fn(usize) -> Vec<usize>,
    frames_per_unit: usize,
    /// The next unit of the pattern.
    unit: usize,
    stream: Stream,
    seq: u16,
    frame: u16,
    /// Per frame sent: (frame number, template index).
    sent: Vec<(u16, usize)>,
}

impl Producer {
    fn new(structure: Structure, pattern: fn(usize) -> Vec<usize>) -> Producer {
        let frames_per_unit = usize::from(structure.max_spatial_id()) + 1;
        Producer {
            structure,
            pattern,
            frames_per_unit,
            unit: 0,
            stream: Stream::new(),
            seq: 65_000,
            frame: 65_500,
            sent: Vec::new(),
        }
    }

    /// Sends the next `units` temporal units of the pattern.
    fn units(&mut self, units: usize, consumers: &mut [Consumer]) {
        let all = (self.pattern)(self.unit + units);
        self.send(&all[self.unit * self.frames_per_unit..], consumers);
        self.unit += units;
    }

    /// Sends a keyframe and `units - 1` more units after it.
    fn keyframe(&mut self, units: usize, consumers: &mut [Consumer]) {
        self.unit = 0;
        self.units(units, consumers);
    }

    /// Sends frames with these template indices; every consumer decides every packet.
    fn send(&mut self, templates: &[usize], consumers: &mut [Consumer]) {
        let offset = self.structure.template_id_offset();
        for &t in templates {
            let id = ((usize::from(offset) + t) % 64) as u8;
            for packet in 0..2 {
                let mut d = Descriptor::from_template(&self.structure, id, self.frame).unwrap();
                d.start_of_frame = packet == 0;
                d.end_of_frame = packet == 1;
                d.has_structure = packet == 0 && t == 0;
                let mut buf = [0u8; 256];
                let n = d.write(&self.structure, &mut buf).unwrap();
                let got = self.stream.receive(self.seq, &buf[..n]).unwrap();
                for c in consumers.iter_mut() {
                    c.take(&self.stream, &got, self.seq);
                }
                self.seq = self.seq.wrapping_add(1);
            }
            self.sent.push((self.frame, t));
            self.frame = self.frame.wrapping_add(1);
        }
    }

    fn layers(&self, frame: u16) -> (u8, u8) {
        let t = self.sent.iter().find(|(f, _)| *f == frame).unwrap().1;
        let t = &self.structure.templates()[t];
        (t.spatial_id, t.temporal_id)
    }
}

struct Consumer {
    selector: Selector,
    seq: SeqRewriter,
    /// Frame numbers forwarded (once per frame), in order.
    frames: Vec<u16>,
    /// Consumer sequence numbers sent.
    out: Vec<u16>,
    drops: Vec<(u16, DropReason)>,
}

impl Consumer {
    fn new(spatial: u8, temporal: u8) -> Consumer {
        Consumer {
            selector: Selector::new(Layers { spatial, temporal }),
            seq: SeqRewriter::new(100),
            frames: Vec::new(),
            out: Vec::new(),
            drops: Vec::new(),
        }
    }

    fn take(&mut self, stream: &Stream, d: &Descriptor, seq: u16) {
        match self.selector.decide(stream, d) {
            Decision::Forward => {
                if d.start_of_frame {
                    self.frames.push(d.frame_number);
                }
                self.out.push(self.seq.forward(seq).unwrap());
            }
            Decision::Drop(why) => {
                if d.start_of_frame {
                    self.drops.push((d.frame_number, why));
                }
                assert_eq!(self.seq.skip(seq), None);
            }
        }
    }

    fn want(&mut self, spatial: u8, temporal: u8) {
        self.selector.set_wanted(Layers { spatial, temporal });
    }
}

/// Every frame forwarded to `c` refers only to frames forwarded to it.
fn assert_decodable(p: &Producer, c: &Consumer) {
    for &f in &c.frames {
        let t = p.sent.iter().find(|(n, _)| *n == f).unwrap().1;
        for &diff in p.structure.templates()[t].fdiffs.as_slice() {
            let r = f.wrapping_sub(diff);
            assert!(
                c.frames.contains(&r),
                "frame {f} refers to {r}, not forwarded"
            );
        }
    }
    // And the consumer's sequence numbers have no gap.
    for w in c.out.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1));
    }
}

fn frames_where(p: &Producer, keep: impl Fn(usize, (u8, u8)) -> bool) -> Vec<u16> {
    p.sent
        .iter()
        .enumerate()
        .filter(|&(i, &(f, _))| keep(i, p.layers(f)))
        .map(|(_, &(f, _))| f)
        .collect()
}

#[test]
fn full_svc_consumers_get_exactly_their_layers() {
    let mut p = Producer::new(l3t3_full(40), l3t3_full_templates);
    let mut cs = [
        Consumer::new(0, 0),
        Consumer::new(1, 1),
        Consumer::new(2, 2),
    ];
    p.units(20, &mut cs);
    for (c, max) in cs.iter().zip([(0, 0), (1, 1), (2, 2)]) {
        let want = frames_where(&p, |_, (s, t)| s <= max.0 && t <= max.1);
        assert_eq!(c.frames, want, "wanted {max:?}");
        assert_decodable(&p, c);
        assert!(!c.selector.keyframe_wanted());
        assert!(
            c.drops
                .iter()
                .all(|(_, why)| *why == DropReason::NotInTarget)
        );
    }
    // HD gets every one of the 60 frames and 120 packets, numbered from 100.
    assert_eq!(cs[2].out.len(), 120);
    assert_eq!(cs[2].out[0], 100);
    // QVGA 7.5 fps: the keyframe's and every fourth unit's base frame.
    assert_eq!(cs[0].frames.len(), 5);
    assert_eq!(cs[0].out, (100..110).collect::<Vec<u16>>());
}

#[test]
fn k_svc_consumers_get_their_spatial_layer_and_the_keyframe_below_it() {
    let mut p = Producer::new(l3t3_key_shift(0), l3t3_key_shift_templates);
    let mut cs = [
        Consumer::new(0, 0),
        Consumer::new(1, 1),
        Consumer::new(2, 2),
    ];
    p.units(21, &mut cs);
    for (c, max) in cs.iter().zip([(0u8, 0u8), (1, 1), (2, 2)]) {
        // The keyframe's lower layers, then the wanted spatial layer alone.
        let want = frames_where(&p, |i, (s, t)| {
            if i < 3 {
                s <= max.0
            } else {
                s == max.0 && t <= max.1
            }
        });
        assert_eq!(c.frames, want, "wanted {max:?}");
        assert_decodable(&p, c);
    }
}

#[test]
fn spatial_upswitch_waits_for_a_keyframe() {
    let mut p = Producer::new(l3t3_full(0), l3t3_full_templates);
    let mut c = [Consumer::new(0, 2)];
    p.units(9, &mut c);
    c[0].want(2, 2);
    let before = c[0].frames.len();
    p.units(8, &mut c);
    // Still only the base layer: none of the upper frames would decode.
    assert!(c[0].frames.len() > before, "the base layer keeps flowing");
    assert!(c[0].frames.iter().all(|&f| p.layers(f).0 == 0));
    assert!(c[0].selector.keyframe_wanted());
    // The keyframe (the same structure again) lets it move.
    let before = c[0].frames.len();
    p.keyframe(9, &mut c);
    assert!(!c[0].selector.keyframe_wanted());
    assert_eq!(
        c[0].frames.len() - before,
        27,
        "every frame from the keyframe on"
    );
    assert_decodable(&p, &c[0]);
}

#[test]
fn full_svc_downswitch_is_immediate() {
    let mut p = Producer::new(l3t3_full(0), l3t3_full_templates);
    let mut c = [Consumer::new(2, 2)];
    p.units(6, &mut c);
    c[0].want(0, 0);
    let before = c[0].frames.len();
    p.units(8, &mut c);
    let after = &c[0].frames[before..];
    assert_eq!(after.len(), 2, "the base frames of two units");
    assert!(after.iter().all(|&f| p.layers(f) == (0, 0)));
    assert!(!c[0].selector.keyframe_wanted());
    assert_decodable(&p, &c[0]);
}

#[test]
fn k_svc_downswitch_waits_for_a_keyframe_and_keeps_the_old_layer_meanwhile() {
    let mut p = Producer::new(l3t3_key_shift(0), l3t3_key_shift_templates);
    let mut c = [Consumer::new(2, 2)];
    p.units(9, &mut c);
    c[0].want(1, 1);
    let before = c[0].frames.len();
    p.units(8, &mut c);
    let after = &c[0].frames[before..];
    assert_eq!(after.len(), 8, "still HD, every unit");
    assert!(after.iter().all(|&f| p.layers(f).0 == 2));
    assert!(c[0].selector.keyframe_wanted());
    let before = c[0].frames.len();
    p.keyframe(9, &mut c);
    let after = &c[0].frames[before..];
    assert_eq!(p.layers(after[0]), (0, 0), "the keyframe's base");
    assert!(after[1..].iter().all(|&f| p.layers(f).0 == 1));
    assert!(!c[0].selector.keyframe_wanted());
    assert_decodable(&p, &c[0]);
}

#[test]
fn temporal_upswitch_needs_no_keyframe() {
    let mut p = Producer::new(l1t3(0), l1t3_templates);
    let mut c = [Consumer::new(0, 0)];
    p.units(9, &mut c);
    assert_eq!(c[0].frames.len(), 3, "7.5 fps: frames 0, 4, 8");
    c[0].want(0, 2);
    // The next frames: T2 (refers to the T0 the consumer has), T1, T2, T0 ...
    p.units(8, &mut c);
    assert!(!c[0].selector.keyframe_wanted());
    assert_eq!(c[0].frames.len(), 3 + 8, "all frames from the switch on");
    assert_decodable(&p, &c[0]);
}

#[test]
fn temporal_upswitch_mid_cycle_drops_what_would_not_decode() {
    let mut p = Producer::new(l1t3(0), l1t3_templates);
    let mut c = [Consumer::new(0, 0)];
    // Keyframe, T2, T1: the consumer has the keyframe only.
    p.units(3, &mut c);
    c[0].want(0, 2);
    // T2 refers to the T1 just dropped: of no use. Then T0, T2, T1 flow.
    p.units(4, &mut c);
    let last = c[0].drops.last().unwrap();
    assert_eq!(last.1, DropReason::Undecodable);
    assert_eq!(c[0].frames.len(), 1 + 3);
    assert_decodable(&p, &c[0]);
}

#[test]
fn without_chains_a_decodable_switch_indication_is_the_switch_point() {
    // L1T3 without its chain: only DTIs and frame references tell where to switch.
    let chained = l1t3(0);
    let templates: Vec<Template> = chained
        .templates()
        .iter()
        .map(|t| Template {
            chain_diffs: ChainDiffs::EMPTY,
            ..*t
        })
        .collect();
    let s = Structure::new(0, 3, 0, &[], &templates, &[]).unwrap();
    let mut p = Producer::new(s, l1t3_templates);
    let mut c = [Consumer::new(0, 0)];
    p.units(1, &mut c);
    c[0].want(0, 2);
    // T2 is only discardable for 30 fps: no switch. T1 is a switch point whose reference (the
    // keyframe) the consumer has: the switch happens there, and everything after flows.
    p.units(8, &mut c);
    assert_eq!(c[0].drops, [(p.sent[1].0, DropReason::NotInTarget)]);
    assert_eq!(c[0].frames.len(), 8);
    assert_decodable(&p, &c[0]);
}

#[test]
fn late_joiner_waits_for_a_keyframe_and_unknown_structures_are_dropped() {
    // Packets before any structure cannot be read at all.
    let s = l3t3_full(0);
    let d = Descriptor::from_template(&s, 1, 3).unwrap();
    let mut buf = [0u8; 8];
    let n = d.write(&s, &mut buf).unwrap();
    let empty = Stream::new();
    assert_eq!(
        Stream::new().receive(1, &buf[..n]),
        Err(crate::dd::Error::NoStructure)
    );
    let mut nobody = Selector::new(Layers {
        spatial: 2,
        temporal: 2,
    });
    assert_eq!(
        nobody.decide(&empty, &d),
        Decision::Drop(DropReason::NoStructure)
    );

    let mut p = Producer::new(s, l3t3_full_templates);
    p.units(5, &mut []);
    let mut c = [Consumer::new(2, 2)];
    p.units(8, &mut c);
    assert!(c[0].frames.is_empty());
    assert_eq!(c[0].drops.len(), 24);
    assert!(
        c[0].drops
            .iter()
            .all(|(_, why)| *why == DropReason::NoTarget)
    );
    assert!(c[0].selector.keyframe_wanted());
    p.keyframe(5, &mut c);
    assert_eq!(c[0].frames.len(), 15);
    assert_decodable(&p, &c[0]);
}

#[test]
fn marker_and_active_targets_follow_the_consumers_layers() {
    let mut p = Producer::new(l3t3_full(0), l3t3_full_templates);
    let mut c = [Consumer::new(1, 2)];
    assert_eq!(c[0].selector.active_decode_targets(), None);
    p.units(1, &mut c);
    // VGA 30 fps is decode target 3 of the example.
    assert_eq!(c[0].selector.current(), Some(3));
    assert_eq!(c[0].selector.active_decode_targets(), Some(1 << 3));
    let s = p.structure.clone();
    let end = |template: usize| {
        let mut d = Descriptor::from_template(&s, template as u8, 1).unwrap();
        d.end_of_frame = true;
        d
    };
    // S1 ends the unit for this consumer; S0 does not; the producer's own marker stays.
    assert!(c[0].selector.marker(&p.stream, &end(6), false));
    assert!(!c[0].selector.marker(&p.stream, &end(1), false));
    assert!(c[0].selector.marker(&p.stream, &end(1), true));
    let mut middle = end(6);
    middle.end_of_frame = false;
    assert!(!c[0].selector.marker(&p.stream, &middle, false));
}

#[test]
fn inactive_decode_targets_are_not_chosen() {
    let s = l3t3_full(0);
    let all = s.all_targets();
    let hd = Layers {
        spatial: 2,
        temporal: 2,
    };
    assert_eq!(fitting_target(&s, all, hd), Some(0));
    // HD is not produced: the best VGA.
    assert_eq!(fitting_target(&s, all & !0b111, hd), Some(3));
    // Nothing within (1, 0) is active but QVGA 30 fps: the lowest active one.
    let vga75 = Layers {
        spatial: 1,
        temporal: 0,
    };
    assert_eq!(fitting_target(&s, 1 << 5, vga75), Some(5));
    assert_eq!(fitting_target(&s, 1 << 6, vga75), Some(6));
    assert_eq!(fitting_target(&s, 0, vga75), None);
}
