//! Dropping VP8 temporal layers for one consumer of a simulcast (or single-stream) producer,
//! so that a subscriber's `maxFrameRate` holds without the publisher changing anything.
//!
//! Chromium sends each VP8 simulcast stream with three temporal layers (L1T3): the base layer
//! at a quarter of the frame rate, the first layer doubling it, the second doubling it again;
//! a frame never refers to one of a higher layer, so dropping every frame above a layer
//! leaves a stream the receiver decodes at a lower rate (RFC 7741 §4.2, TID in the payload
//! descriptor). Going up again waits for a frame that refers only to the base layer (Y, the
//! layer sync bit) or a keyframe.
//!
//! What the receiver sees must still look like one whole stream: the sequence numbers close up
//! over the dropped packets ([`SeqRewriter`], which also maps NACKs back), and so do the picture
//! ids (Chromium's VP8 receiver waits for a missing picture id before it decodes what follows):
//! [`Pictures`] numbers each forwarded picture next, and remembers the numbers given so that a
//! retransmission carries the same one.

use crate::svc::SeqRewriter;

/// Pictures remembered for retransmissions: more than a NACK history holds at 30 fps.
const PICTURES: usize = 256;

/// One consumer's temporal layer filter and the numbering that closes up behind it.
#[derive(Debug, Clone)]
pub(super) struct Temporal {
    /// The highest temporal layer wanted, and the highest forwarded now (it rises to `wanted`
    /// only at a layer sync frame or a keyframe).
    wanted: u8,
    current: u8,
    pub seq: SeqRewriter,
    pictures: Pictures,
}

impl Temporal {
    /// Starts with the consumer's next sequence number `first_seq` and next picture id
    /// `next_picture`, forwarding every layer up to `wanted`.
    pub fn new(first_seq: u16, next_picture: u16, wanted: u8) -> Box<Temporal> {
        Box::new(Temporal {
            wanted,
            current: wanted,
            seq: SeqRewriter::new(first_seq),
            pictures: Pictures::new(next_picture),
        })
    }

    /// A new highest layer: lower takes effect at once, higher at the next sync frame.
    pub fn set_wanted(&mut self, wanted: u8) {
        self.wanted = wanted;
        self.current = self.current.min(wanted);
    }

    /// Whether a packet of temporal layer `tid` (with the sync bit `sync`; a keyframe is one)
    /// goes to the consumer. Packets without a temporal layer always do.
    pub fn admits(&mut self, temporal: Option<(u8, bool)>, keyframe: bool) -> bool {
        let Some((tid, sync)) = temporal else {
            return true;
        };
        if keyframe {
            self.current = self.wanted;
        } else if sync && tid > self.current && tid <= self.wanted {
            self.current = tid;
        }
        tid <= self.current
    }

    /// Starts over on another stream (a simulcast switch, at a keyframe): the numbers carry on
    /// from `first_seq` and `next_picture`.
    pub fn restart(&mut self, first_seq: u16, next_picture: u16) {
        self.seq = SeqRewriter::new(first_seq);
        self.pictures = Pictures::new(next_picture);
        self.current = self.wanted;
    }

    /// Our picture id for the producer's `id` (15 or 7 bits, by `modulo`), numbering it next
    /// if it is new.
    pub fn picture(&mut self, id: u16, modulo: u16) -> u16 {
        self.pictures.forward(id, modulo)
    }

    /// The picture id we gave the producer's `id`, for a retransmission.
    pub fn picture_sent(&self, id: u16) -> Option<u16> {
        self.pictures.sent(id)
    }
}

/// Our picture ids for the producer's, in a ring by the producer's id.
#[derive(Debug, Clone)]
struct Pictures {
    /// (producer id, our id), by producer id modulo [`PICTURES`].
    ring: Box<[Option<(u16, u16)>]>,
    next: u16,
}

impl Pictures {
    fn new(next: u16) -> Pictures {
        Pictures {
            ring: vec![None; PICTURES].into_boxed_slice(),
            next,
        }
    }

    fn forward(&mut self, id: u16, modulo: u16) -> u16 {
        if let Some(ours) = self.sent(id) {
            return ours;
        }
        let ours = self.next % modulo.max(1);
        self.next = ours.wrapping_add(1);
        if let Some(slot) = self.ring.get_mut(usize::from(id) % PICTURES) {
            *slot = Some((id, ours));
        }
        ours
    }

    fn sent(&self, id: u16) -> Option<u16> {
        match self.ring.get(usize::from(id) % PICTURES)? {
            Some((key, ours)) if *key == id => Some(*ours),
            _ => None,
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Chromium's L1T3 pattern: TL0, TL2, TL1, TL2, ...; the TL1 and TL2 frames right after
    /// a TL0 frame are layer sync frames. (The router's tests send it too.)
    pub(in crate::router) fn tid(frame: u16) -> (u8, bool) {
        match frame % 4 {
            0 => (0, false),
            1 => (2, true),
            2 => (1, true),
            _ => (2, false),
        }
    }

    #[test]
    fn drops_layers_above_the_wanted_and_rises_at_a_sync_frame() {
        let mut t = Temporal::new(500, 10, 2);
        let admitted = |t: &mut Temporal, frames: std::ops::Range<u16>| -> Vec<u16> {
            frames.filter(|&f| t.admits(Some(tid(f)), f == 0)).collect()
        };
        assert_eq!(admitted(&mut t, 0..8), [0, 1, 2, 3, 4, 5, 6, 7]);
        t.set_wanted(1);
        assert_eq!(admitted(&mut t, 8..16), [8, 10, 12, 14], "15 fps of 30");
        t.set_wanted(0);
        assert_eq!(admitted(&mut t, 16..24), [16, 20]);
        t.set_wanted(2);
        // Frame 25 is TL2 with sync: every layer from there on.
        assert_eq!(admitted(&mut t, 24..28), [24, 25, 26, 27]);
        t.set_wanted(1);
        t.current = 0;
        // Rising to TL1 waits for its sync frame (30), never takes TL2.
        assert_eq!(admitted(&mut t, 28..32), [28, 30]);
        assert!(t.admits(None, false), "no temporal layer: always");
    }

    #[test]
    fn sequence_numbers_and_picture_ids_close_up_and_resends_keep_theirs() {
        let mut t = Temporal::new(65_534, 0x7FFE, 1);
        let mut got = Vec::new();
        // Two packets per frame; frames 100..108 with 15-bit ids.
        for frame in 100u16..108 {
            let (layer, sync) = tid(frame);
            for p in 0..2 {
                let seq = frame * 2 + p;
                if t.admits(Some((layer, sync)), false) {
                    let ours = t.seq.forward(seq).unwrap();
                    got.push((ours, t.picture(frame, 0x8000)));
                } else {
                    let _ = t.seq.skip(seq);
                }
            }
        }
        let seqs: Vec<u16> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, [65_534, 65_535, 0, 1, 2, 3, 4, 5]);
        let pictures: Vec<u16> = got.iter().map(|g| g.1).collect();
        assert_eq!(
            pictures,
            [0x7FFE, 0x7FFE, 0x7FFF, 0x7FFF, 0, 0, 1, 1],
            "forwarded frames 100, 102, 104, 106"
        );
        assert_eq!(t.picture_sent(104), Some(0));
        assert_eq!(t.picture_sent(105), None, "dropped, never numbered");
        assert_eq!(t.seq.producer_seq(2), Some(208));
        // A switch to another stream carries the numbers on.
        t.restart(6, 2);
        assert_eq!(t.seq.forward(9000), Some(6));
        assert_eq!(t.picture(40, 0x8000), 2);
        assert_eq!(t.picture_sent(104), None);
    }
}
