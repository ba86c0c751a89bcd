//! Forwarding scalable (SVC) video: a VP9 or AV1 producer sent as one RTP stream with spatial
//! and temporal layers, whose packets carry the dependency descriptor ([`crate::dd`]).
//!
//! The producer keeps a [`dd::Stream`] (the structure in force); each consumer a
//! [`Selector`] (which decode target it gets, frame by frame) and a [`SeqRewriter`] (its
//! sequence numbers close up over the dropped packets, and NACKs map back through it). Only
//! the descriptor is read, never the payload, so this works on end-to-end encrypted media.
//!
//! The layers a consumer wants ([`wanted_layers`]) follow its `max_height` (through the
//! structure's render resolutions), its `max_frame_rate` (through the producer's measured
//! frame rate, each temporal layer below the top taken to halve it, as in the structures
//! encoders use) and its subscriber's bandwidth budget, by a simple model: the producer's
//! bitrate is shared among spatial layers in proportion to their pixel counts, and each
//! temporal layer above the base doubles the base's rate; spatial layers are dropped first,
//! then temporal ones, until the estimate fits the budget.

use std::time::Instant;

use super::consumer::SvcFields;
use super::{Output, Router};
use crate::dd::{self, Descriptor, Structure};
use crate::media::{Codec, MediaKind};
use crate::pacer::Class;
use crate::rtp;
use crate::spec::{Preferences, ProducerSpec};
use crate::stats::DropReason;
use crate::svc::{Decision, Layers, Selector, SeqRewriter};

/// What the router keeps for an SVC producer.
#[derive(Debug)]
pub(crate) struct ProducerSvc {
    /// The publisher's dependency descriptor extension id.
    pub ext: u8,
    pub stream: dd::Stream,
}

impl ProducerSvc {
    /// For a single-stream VP9 or AV1 video producer that negotiated the descriptor. Simulcast
    /// producers (rids) keep choosing whole streams, descriptor or not.
    pub fn for_spec(spec: &ProducerSpec) -> Option<Box<ProducerSvc>> {
        let ext = spec.dd_ext?;
        let svc_codec = matches!(spec.codec, Codec::Vp9 | Codec::Av1);
        (spec.kind == MediaKind::Video && svc_codec && spec.rids.is_empty()).then(|| {
            Box::new(ProducerSvc {
                ext,
                stream: dd::Stream::new(),
            })
        })
    }
}

/// What the router keeps for a consumer of an SVC producer.
#[derive(Debug)]
pub(crate) struct ConsumerSvc {
    pub selector: Selector,
    pub seq: SeqRewriter,
    /// The subscriber's descriptor extension id: forwarded packets carry the producer's
    /// descriptor under it (its receiver assembles frames and follows references from it).
    pub ext: Option<u8>,
}

/// Every layer: what a consumer wants before it says otherwise.
pub(crate) const ALL_LAYERS: Layers = Layers {
    spatial: u8::MAX,
    temporal: u8::MAX,
};

impl ConsumerSvc {
    pub fn new(first_seq: u16, ext: Option<u8>) -> Box<ConsumerSvc> {
        Box::new(ConsumerSvc {
            selector: Selector::new(ALL_LAYERS),
            seq: SeqRewriter::new(first_seq),
            ext,
        })
    }

    /// Starts over (after a pause): nothing forwarded before counts, so the selector waits
    /// for a keyframe. Sequence numbers carry on.
    pub fn restart(&mut self) {
        self.selector = Selector::new(self.selector.wanted());
    }
}

/// A frame rate up to this much above `max_frame_rate` still fits it: measured rates wobble
/// (a 30 fps camera reads 31 now and then), and a subscriber asking for 15 of 31 wants half.
const FRAME_RATE_TOLERANCE: (u64, u64) = (9, 8);

/// The highest temporal layer of `top` whose frame rate, from the stream's `fps` (unknown
/// while 0) halved per layer below the top, is within `max_frame_rate`; the base layer at
/// least, `top` without a limit.
pub(super) fn temporal_cap(max_frame_rate: Option<u16>, fps: u32, top: u8) -> u8 {
    let Some(max) = max_frame_rate.filter(|_| fps > 0) else {
        return top;
    };
    let (num, den) = FRAME_RATE_TOLERANCE;
    // Layer t's rate, fps / 2^(top - t), within max * num / den.
    let fits = |t: u8| {
        let halvings = u32::from(top - t).min(32);
        u64::from(fps) * den <= (u64::from(max) * num) << halvings
    };
    (0..=top).rev().find(|&t| fits(t)).unwrap_or(0)
}

/// The layers a consumer should get: the highest spatial layer no taller than `max_height`
/// (every layer when the structure gives no resolutions) and the highest temporal layer whose
/// frame rate (from the producer's, `producer_fps`; unknown while 0) is within
/// `max_frame_rate`, then lower while the estimated bitrate of what it would get exceeds
/// `budget` (see the module doc for the model), the base layer at least.
pub(crate) fn wanted_layers(
    structure: &Structure,
    prefs: &Preferences,
    budget: Option<u64>,
    producer_bps: u64,
    producer_fps: u32,
) -> Layers {
    let top_spatial = structure.max_spatial_id();
    let top_temporal = structure
        .templates()
        .iter()
        .map(|t| t.temporal_id)
        .max()
        .unwrap_or(0);
    let height = |s: u8| structure.resolution(s).map(|r| r.height);
    let mut spatial = match prefs.max_height {
        Some(max) => (0..=top_spatial)
            .rev()
            .find(|&s| height(s).is_none_or(|h| h <= u32::from(max)))
            .unwrap_or(0),
        None => top_spatial,
    };
    let mut temporal = temporal_cap(prefs.max_frame_rate, producer_fps, top_temporal);
    let Some(budget) = budget else {
        return Layers { spatial, temporal };
    };
    // Pixel counts per spatial layer; without resolutions, each layer doubles both sides.
    let area = |s: u8| {
        structure
            .resolution(s)
            .map(|r| u64::from(r.width) * u64::from(r.height))
            .unwrap_or(1u64 << (2 * u32::from(s.min(30))))
            .max(1)
    };
    let total: u64 = (0..=top_spatial).map(area).sum::<u64>().max(1);
    let estimate = |s: u8, t: u8| {
        let up_to: u64 = (0..=s).map(area).sum();
        let spatial_bps = producer_bps.saturating_mul(up_to) / total;
        // Each temporal layer dropped halves the frame rate, and roughly the rate.
        spatial_bps >> u32::from(top_temporal.saturating_sub(t).min(63))
    };
    while spatial > 0 && estimate(spatial, temporal) > budget {
        spatial -= 1;
    }
    while temporal > 0 && estimate(spatial, temporal) > budget {
        temporal -= 1;
    }
    Layers { spatial, temporal }
}

impl Router {
    /// Forwards a packet of SVC producer `key` (its bookkeeping done by `on_rtp`) to each of
    /// its consumers whose decode target includes the packet's frame.
    pub(super) fn forward_svc(
        &mut self,
        now: Instant,
        key: usize,
        header: &rtp::Header,
        packet: &[u8],
        out: &mut impl Output,
    ) {
        let Some(p) = self.producers.get_mut(key) else {
            return;
        };
        let Some(svc) = p.svc.as_mut() else {
            return;
        };
        let generation = svc.stream.generation();
        let parsed = header
            .extension_value(packet, svc.ext)
            .map(|ext| svc.stream.receive(header.sequence, ext));
        let new_structure = svc.stream.generation() != generation;
        let (desc, mut keyframe_wanted) = match parsed {
            Some(Ok(d)) => (Some(d), false),
            // The structure's packet was lost: nothing can be placed until the next keyframe.
            Some(Err(dd::Error::NoStructure | dd::Error::UnknownTemplate)) => (None, true),
            Some(Err(_)) => {
                out.counters().drop(DropReason::RtpMalformed);
                (None, false)
            }
            None => (None, false),
        };
        if new_structure {
            // Decode targets and resolutions may differ: each consumer's wanted layers too.
            self.select_layers(now, key);
        }
        let Some(p) = self.producers.get(key) else {
            return;
        };
        let Some(svc) = p.svc.as_deref() else {
            return;
        };
        let empty = header.payload_end <= header.payload_offset;
        let payload_len = header.payload_end.saturating_sub(header.payload_offset) as u32;
        for &c in &p.consumers {
            let Some(consumer) = self.consumers.get_mut(c) else {
                continue;
            };
            let Some(cs) = consumer.svc.as_deref_mut() else {
                continue;
            };
            let decision = if consumer.prefs.paused {
                None
            } else {
                match &desc {
                    Some(d) => Some(cs.selector.decide(&svc.stream, d)),
                    // No descriptor (or an unusable one): only payload-less packets are safe to
                    // leave out; others go to a consumer already started, whose receiver sorts
                    // them out.
                    None => Some(if !empty && cs.selector.current().is_some() {
                        Decision::Forward
                    } else {
                        Decision::Drop(crate::svc::DropReason::NoTarget)
                    }),
                }
            };
            keyframe_wanted |= cs.selector.keyframe_wanted() && !consumer.prefs.paused;
            if decision != Some(Decision::Forward) {
                // A late packet dropped after its number was kept leaves a hole the
                // subscriber may NACK in vain; nothing to fill it with here.
                let _hole = cs.seq.skip(header.sequence);
                continue;
            }
            let Some(seq) = cs.seq.forward(header.sequence) else {
                continue;
            };
            let marker = desc.as_ref().map_or(header.marker, |d| {
                cs.selector.marker(&svc.stream, d, header.marker)
            });
            let dd = cs
                .ext
                .zip(header.extension_value(packet, svc.ext))
                .filter(|_| desc.is_some());
            let mut bandwidth = self
                .members
                .get_mut(consumer.member)
                .and_then(|m| m.bandwidth.as_mut());
            let twcc = bandwidth.as_ref().map(|b| (b.ext, b.next_seq()));
            let fields = SvcFields {
                seq,
                marker,
                dd,
                twcc,
            };
            let mut len = 0;
            let rewrite = &mut consumer.rewrite;
            let twcc_seq = twcc.map(|t| t.1);
            let sent = out.send_rtp(consumer.transport, Class::Video, twcc_seq, |buf| {
                len = rewrite.write_svc(header, packet, buf, fields, now)?;
                Some(len)
            });
            consumer.layer = Some(0);
            if sent {
                out.counters().rtp_forwarded += 1;
                consumer.packets = consumer.packets.wrapping_add(1);
                consumer.octets = consumer.octets.wrapping_add(payload_len);
                if let Some(b) = bandwidth.as_mut() {
                    b.on_sent(len, now);
                }
            }
        }
        if keyframe_wanted {
            self.request_keyframe(now, key, 0);
        }
    }
}

/// For a retransmission to an SVC consumer: the marker and descriptor it was first sent with
/// (the descriptor read again, without touching the producer's stream).
pub(super) fn resend_fields<'a>(
    producer: &super::producer::Producer,
    consumer: &ConsumerSvc,
    header: &rtp::Header,
    packet: &'a [u8],
) -> (bool, Option<(u8, &'a [u8])>) {
    let Some(svc) = producer.svc.as_deref() else {
        return (header.marker, None);
    };
    let ext = header.extension_value(packet, svc.ext);
    let desc = ext.and_then(|e| {
        Descriptor::parse(e, svc.stream.structure())
            .ok()
            .map(|(d, _)| d)
    });
    let marker = desc.as_ref().map_or(header.marker, |d| {
        consumer.selector.marker(&svc.stream, d, header.marker)
    });
    (marker, consumer.ext.zip(ext).filter(|_| desc.is_some()))
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use crate::dd::examples::{l3t3_full, l3t3_full_templates};
    use crate::router::tests::Recorder;
    use crate::rtcp;
    use crate::rtp::HeaderFields;
    use crate::spec::{ConsumerId, ConsumerSpec, ProducerId, RouterId, Ssrc};
    use crate::timers::Grid;
    use crate::transport::TransportKey;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::time::Duration;

    const PUB: TransportKey = TransportKey(0);
    const FULL: TransportKey = TransportKey(1);
    const SMALL: TransportKey = TransportKey(2);
    const VIDEO: u32 = 2222;
    /// The publisher's and the subscribers' descriptor extension ids (different on purpose).
    const PUB_DD: u8 = 5;
    const SUB_DD: u8 = 7;

    /// A VP9 publisher sending the L3T3 full-SVC structure of the AV1 RTP specification
    /// (A.10.2.2: 320x180, 640x360, 1280x720) with the descriptor, two packets per frame, and
    /// two subscribers: FULL with no limit, SMALL with `maxHeight` 360.
    struct Svc {
        router: Router,
        out: Recorder,
        now: Instant,
        publisher: usize,
        small: usize,
        structure: Structure,
        unit: usize,
        seq: u16,
        frame: u16,
    }

    impl Svc {
        fn new() -> Svc {
            let now = Instant::now();
            let mut rng = StdRng::seed_from_u64(3);
            let mut router = Router::new(RouterId(1), Grid::new(now));
            let spec = ProducerSpec {
                id: ProducerId(1),
                kind: MediaKind::Video,
                codec: Codec::Vp9,
                payload_type: 98,
                clock_rate: 90_000,
                ssrc: Some(Ssrc(VIDEO)),
                mid: "0".into(),
                mid_ext: Some(1),
                rids: Vec::new(),
                rid_ext: None,
                nack: true,
                pli: true,
                fir: true,
                remb: true,
                audio_level_ext: None,
                twcc_ext: None,
                dd_ext: Some(PUB_DD),
                red: None,
                max_bitrate: None,
            };
            let publisher = router
                .add_member(now, PUB, &[spec], &[], Ssrc(9), &mut rng)
                .unwrap();
            router.connected(now, publisher);
            let mut members = [FULL, SMALL].map(|t| {
                let c = ConsumerSpec {
                    id: ConsumerId(t.0 as u64),
                    producer: ProducerId(1),
                    ssrc: Ssrc(4000 + t.0 as u32),
                    payload_type: 100,
                    mid: "0".into(),
                    mid_ext: Some(3),
                    nack: true,
                    pli: true,
                    fir: true,
                    twcc_ext: None,
                    dd_ext: Some(SUB_DD),
                    audio_level_ext: None,
                    rtx: None,
                    red: None,
                };
                let m = router
                    .add_member(now, t, &[], &[c], Ssrc(90 + t.0 as u32), &mut rng)
                    .unwrap();
                router.connected(now, m);
                m
            });
            let small = members[1];
            router.set_preferences(
                now,
                small,
                Preferences {
                    max_height: Some(360),
                    max_frame_rate: None,
                    paused: false,
                    max_bitrate: None,
                },
            );
            members.sort();
            Svc {
                router,
                out: Recorder {
                    connected: [PUB, FULL, SMALL].into(),
                    ..Recorder::default()
                },
                now,
                publisher,
                small,
                structure: l3t3_full(0),
                unit: 0,
                seq: 65_000,
                frame: 65_530,
            }
        }

        /// Sends `units` temporal units, the first a keyframe when `key`.
        fn send(&mut self, units: usize, key: bool) {
            if key {
                self.unit = 0;
            }
            let all = l3t3_full_templates(self.unit + units);
            for (i, &t) in all.iter().enumerate().skip(self.unit * 3) {
                let last_of_unit = i % 3 == 2;
                for part in 0..2 {
                    let mut d =
                        Descriptor::from_template(&self.structure, t as u8, self.frame).unwrap();
                    d.start_of_frame = part == 0;
                    d.end_of_frame = part == 1;
                    d.has_structure = part == 0 && t == 0;
                    let mut ext = [0u8; 256];
                    let n = d.write(&self.structure, &mut ext).unwrap();
                    let fields = HeaderFields {
                        marker: last_of_unit && part == 1,
                        payload_type: 98,
                        sequence: self.seq,
                        timestamp: (i / 3) as u32 * 3000,
                        ssrc: VIDEO,
                    };
                    let mut buf = [0u8; 512];
                    let h = rtp::write_header(&mut buf, &fields, &[(PUB_DD, &ext[..n])]).unwrap();
                    // An opaque (say, encrypted) payload: the router must not need it.
                    buf[h..h + 4].copy_from_slice(&[0xEE, t as u8, part, 0xEE]);
                    let packet = &buf[..h + 4];
                    let header = rtp::Header::parse(packet).unwrap();
                    self.router
                        .on_rtp(self.now, self.publisher, &header, packet, &mut self.out);
                    self.seq = self.seq.wrapping_add(1);
                }
                self.frame = self.frame.wrapping_add(1);
                if last_of_unit {
                    // 30 temporal units a second.
                    self.now += Duration::from_millis(33);
                }
            }
            self.unit += units;
            self.router.handle_timeout(self.now, &mut self.out);
        }

        /// What `to` got, in order: (sequence number, marker, spatial id, packet).
        fn got(&self, to: TransportKey) -> Vec<(u16, bool, u8, Vec<u8>)> {
            let mut stream = dd::Stream::new();
            self.out
                .sent
                .iter()
                .filter(|(t, rtcp, _)| *t == to && !rtcp)
                .map(|(_, _, p)| {
                    let h = rtp::Header::parse(p).unwrap();
                    assert_eq!(h.extension_value(p, PUB_DD), None);
                    let ext = h
                        .extension_value(p, SUB_DD)
                        .expect("the descriptor is copied");
                    let d = stream.receive(h.sequence, ext).unwrap();
                    (h.sequence, h.marker, d.spatial_id, p.clone())
                })
                .collect()
        }

        fn plis(&self) -> usize {
            self.out
                .sent
                .iter()
                .filter(|(t, rtcp, _)| *t == PUB && *rtcp)
                .flat_map(|(_, _, p)| rtcp::packets(p).map(Result::unwrap))
                .filter(
                    |p| matches!(p, rtcp::Packet::Pli { media_ssrc, .. } if *media_ssrc == VIDEO),
                )
                .count()
        }
    }

    fn contiguous(got: &[(u16, bool, u8, Vec<u8>)]) {
        for w in got.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1));
        }
    }

    #[test]
    fn a_consumer_with_max_height_gets_only_the_spatial_layers_that_fit() {
        let mut s = Svc::new();
        s.send(9, true);
        let full = s.got(FULL);
        let small = s.got(SMALL);
        assert_eq!(full.len(), 9 * 3 * 2, "everything");
        assert_eq!(small.len(), 9 * 2 * 2, "S0 and S1 only");
        assert!(small.iter().all(|(_, _, spatial, _)| *spatial <= 1));
        contiguous(&full);
        contiguous(&small);
        // Each temporal unit ends, for SMALL, with the end of its S1 frame.
        let markers: Vec<u8> = small
            .iter()
            .filter(|(_, m, _, _)| *m)
            .map(|(_, _, s, _)| *s)
            .collect();
        assert_eq!(markers, vec![1; 9]);
        assert_eq!(full.iter().filter(|(_, m, _, _)| *m).count(), 9);
    }

    #[test]
    fn nacks_map_back_through_the_rewritten_numbers() {
        let mut s = Svc::new();
        s.send(5, true);
        let small = s.got(SMALL);
        let (lost, _, _, original) = small[7].clone();
        s.out.sent.clear();
        let mut nack = [0u8; 64];
        let n = rtcp::write_nack(&mut nack, 5, 4000 + SMALL.0 as u32, &[lost]).unwrap();
        let small_member = s.small;
        s.router
            .on_rtcp(s.now, small_member, &nack[..n], &mut s.out);
        let resent: Vec<_> = s.out.sent.iter().filter(|(t, ..)| *t == SMALL).collect();
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].2, original, "the same packet, byte for byte");
        // A number it was never sent maps to nothing.
        s.out.sent.clear();
        let n = rtcp::write_nack(
            &mut nack,
            5,
            4000 + SMALL.0 as u32,
            &[lost.wrapping_add(500)],
        )
        .unwrap();
        s.router
            .on_rtcp(s.now, small_member, &nack[..n], &mut s.out);
        assert!(s.out.sent.iter().all(|(t, ..)| *t != SMALL));
    }

    #[test]
    fn lifting_max_height_brings_the_top_layer_back_at_a_keyframe() {
        let mut s = Svc::new();
        s.send(5, true);
        let before = s.plis();
        let small_member = s.small;
        s.router
            .set_preferences(s.now, small_member, Preferences::default());
        // Full SVC: S2 frames refer to earlier S2 frames SMALL never got, so it waits...
        s.send(8, false);
        assert!(s.got(SMALL).iter().all(|(_, _, spatial, _)| *spatial <= 1));
        // ... and asks for a keyframe (rate-limited).
        s.now += Duration::from_millis(600);
        s.router.handle_timeout(s.now, &mut s.out);
        assert!(s.plis() > before);
        s.out.sent.clear();
        s.send(5, true);
        let small = s.got(SMALL);
        assert_eq!(small.len(), 5 * 3 * 2);
        contiguous(&small);
    }

    /// The temporal id of each frame `got` holds (its first packet), from the template
    /// index the test payload carries.
    fn temporal_ids(structure: &Structure, got: &[(u16, bool, u8, Vec<u8>)]) -> Vec<u8> {
        got.iter()
            .filter(|(_, _, _, p)| p[p.len() - 2] == 0)
            .map(|(_, _, _, p)| structure.templates()[usize::from(p[p.len() - 3])].temporal_id)
            .collect()
    }

    #[test]
    fn a_consumer_with_max_frame_rate_gets_fewer_temporal_layers() {
        let mut s = Svc::new();
        let small = s.small;
        let capped = |max_frame_rate| Preferences {
            max_height: Some(360),
            max_frame_rate,
            paused: false,
            max_bitrate: None,
        };
        // What `to` got from the `units` units sent now (the earlier ones hold the structure).
        let send = |s: &mut Svc, units, to| {
            let before = s.got(to).len();
            s.send(units, false);
            s.got(to).split_off(before)
        };
        // Asked before the producer's frame rate is known: applied once it is (in a second).
        s.router.set_preferences(s.now, small, capped(Some(15)));
        s.send(40, true);
        let plis = s.plis();
        // Units T0 T2 T1 T2 from here: SMALL gets the T0 and T1 ones, 15 a second.
        let full_before = s.got(FULL).len();
        let got = send(&mut s, 16, SMALL);
        assert_eq!(s.got(FULL).len() - full_before, 16 * 3 * 2);
        assert_eq!(got.len(), 8 * 2 * 2);
        contiguous(&got);
        assert_eq!(temporal_ids(&s.structure, &got), [0, 0, 1, 1].repeat(4));
        assert_eq!(got.iter().filter(|(_, m, _, _)| *m).count(), 8);
        // 8 a second: the base layer only, 7.5.
        s.router.set_preferences(s.now, small, capped(Some(8)));
        let got = send(&mut s, 16, SMALL);
        assert_eq!(temporal_ids(&s.structure, &got), [0, 0].repeat(4));
        // Lifted: every frame again from the next one that allows it, with no keyframe.
        s.router.set_preferences(s.now, small, capped(None));
        s.send(4, false);
        let got = send(&mut s, 16, SMALL);
        assert_eq!(got.len(), 16 * 2 * 2);
        let all = s.got(SMALL);
        contiguous(&all);
        assert_eq!(s.plis(), plis, "no keyframe asked for");
    }

    #[test]
    fn wanted_layers_follow_max_frame_rate() {
        let st = l3t3_full(0);
        let prefs = |fps| Preferences {
            max_height: None,
            max_frame_rate: fps,
            paused: false,
            max_bitrate: None,
        };
        let l = |spatial, temporal| Layers { spatial, temporal };
        let temporal = |max, fps| wanted_layers(&st, &prefs(max), None, 0, fps).temporal;
        assert_eq!(temporal(None, 30), 2);
        assert_eq!(temporal(Some(30), 30), 2);
        assert_eq!(temporal(Some(15), 30), 1);
        assert_eq!(temporal(Some(29), 30), 2, "within the tolerance");
        assert_eq!(temporal(Some(15), 31), 1, "15.5 is within it too");
        assert_eq!(temporal(Some(14), 30), 1);
        assert_eq!(temporal(Some(13), 30), 0, "15 is not 13: 7.5");
        assert_eq!(temporal(Some(1), 30), 0, "never below the base layer");
        assert_eq!(temporal(Some(0), 30), 0);
        assert_eq!(temporal(Some(15), 0), 2, "the producer's rate unknown yet");
        assert_eq!(temporal(Some(u16::MAX), u32::MAX), 0, "no overflow");
        // With a budget: the frame rate caps first, then the bitrate lowers further.
        let bps = 2_100_000;
        assert_eq!(
            wanted_layers(&st, &prefs(Some(15)), Some(3_000_000), bps, 30),
            l(2, 1)
        );
        assert_eq!(
            wanted_layers(&st, &prefs(Some(15)), Some(30_000), bps, 30),
            l(0, 0)
        );
    }

    #[test]
    fn wanted_layers_follow_max_height_and_budget() {
        let st = l3t3_full(0);
        let prefs = |h| Preferences {
            max_height: h,
            max_frame_rate: None,
            paused: false,
            max_bitrate: None,
        };
        let l = |spatial, temporal| Layers { spatial, temporal };
        assert_eq!(wanted_layers(&st, &prefs(None), None, 0, 0), l(2, 2));
        assert_eq!(wanted_layers(&st, &prefs(Some(720)), None, 0, 0), l(2, 2));
        assert_eq!(wanted_layers(&st, &prefs(Some(400)), None, 0, 0), l(1, 2));
        assert_eq!(wanted_layers(&st, &prefs(Some(100)), None, 0, 0), l(0, 2));
        // 2.1 Mb/s shared 1:4:16 by pixels: S0 100 kb/s, S0+S1 500 kb/s, all 2.1 Mb/s.
        let bps = 2_100_000;
        assert_eq!(
            wanted_layers(&st, &prefs(None), Some(3_000_000), bps, 0),
            l(2, 2)
        );
        assert_eq!(
            wanted_layers(&st, &prefs(None), Some(1_000_000), bps, 0),
            l(1, 2)
        );
        assert_eq!(
            wanted_layers(&st, &prefs(None), Some(200_000), bps, 0),
            l(0, 2)
        );
        assert_eq!(
            wanted_layers(&st, &prefs(None), Some(30_000), bps, 0),
            l(0, 0)
        );
    }
}
