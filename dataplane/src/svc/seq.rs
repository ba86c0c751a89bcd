//! Sequence numbers for a consumer that does not get every packet of its producer.
//!
//! A receiver takes a gap in RTP sequence numbers for loss (RFC 3550 §A.1) and NACKs it (RFC
//! 4585 §6.2.1), so when layer selection drops packets the consumer's numbers must close up
//! over them: each forwarded packet gets the next consumer number, and a NACK for a consumer
//! number must map back to the producer's packet. [`SeqRewriter`] does both in two fixed rings
//! of [`WINDOW`] packets; nothing is allocated per packet.
//!
//! Reordering: when a packet arrives after a gap, the missing packets' consumer numbers are
//! kept for them (they are most likely forwarded when they turn up). One that turns up and is
//! dropped leaves a hole the consumer will NACK in vain; [`SeqRewriter::skip`] says so, and the
//! caller may fill it (a padding-only packet with that number) or let it be.

use crate::dd::extend;

/// Packets remembered in each direction: more than a video producer's NACK history
/// (`router::history`, 256 packets), so every packet that can still be resent maps back.
pub const WINDOW: usize = 512;

/// A jump in the producer's numbers larger than this, either way, is taken for a restart
/// rather than loss or reordering: the consumer's numbers just carry on.
const RESYNC: u64 = 0x4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    /// Sent with this consumer number.
    Forwarded,
    /// Not yet arrived (a gap before a newer packet); the consumer number is kept for it.
    Reserved,
    /// Dropped; no consumer number (or a hole, if it was reserved).
    Dropped,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The producer's number (in `by_producer`) or the consumer's (in `by_consumer`), to tell
    /// whether the slot is still about this packet.
    key: u16,
    /// The other side's number.
    other: u16,
    state: State,
}

const EMPTY: Slot = Slot {
    key: 0,
    other: 0,
    state: State::Empty,
};

/// Maps one producer's sequence numbers to one consumer's, closing up over dropped packets.
#[derive(Debug, Clone)]
pub struct SeqRewriter {
    /// The newest producer number handled, extended past 16 bits.
    highest: Option<u64>,
    /// Consumer number = producer number + `delta` for the next new packet.
    delta: u16,
    /// The consumer number the first forwarded packet gets.
    first: u16,
    /// The consumer number of the newest forwarded or reserved packet.
    last_out: Option<u16>,
    by_producer: [Slot; WINDOW],
    by_consumer: [Slot; WINDOW],
}

impl SeqRewriter {
    /// `first` is the consumer's first sequence number (random, RFC 3550 §5.1).
    pub fn new(first: u16) -> SeqRewriter {
        SeqRewriter {
            highest: None,
            delta: 0,
            first,
            last_out: None,
            by_producer: [EMPTY; WINDOW],
            by_consumer: [EMPTY; WINDOW],
        }
    }

    /// The packet with producer number `seq` is forwarded: its consumer number, or `None` when
    /// it is too old to place (behind the window, or it was already dropped) and must not be
    /// sent. A duplicate gets the number it got before.
    pub fn forward(&mut self, seq: u16) -> Option<u16> {
        if self.advance(seq) {
            let out = seq.wrapping_add(self.delta);
            self.remember(seq, out, State::Forwarded);
            return Some(out);
        }
        let slot = self.older(seq)?;
        match slot.state {
            State::Forwarded => Some(slot.other),
            State::Reserved => {
                self.set_state(seq, slot.other, State::Forwarded);
                Some(slot.other)
            }
            State::Dropped | State::Empty => None,
        }
    }

    /// The packet with producer number `seq` is dropped. Returns the consumer number it leaves
    /// a hole at, when it arrived late and its number had already been kept for it.
    pub fn skip(&mut self, seq: u16) -> Option<u16> {
        if self.advance(seq) {
            self.remember(seq, 0, State::Dropped);
            // The next packet takes the number this one would have had.
            self.delta = self.delta.wrapping_sub(1);
            return None;
        }
        let slot = self.older(seq)?;
        if slot.state != State::Reserved {
            return None;
        }
        self.set_state(seq, slot.other, State::Dropped);
        Some(slot.other)
    }

    /// The producer's number for the consumer's `seq` (to answer a NACK from the history), or
    /// `None` when it is unknown, too old, or a hole left by a dropped packet.
    pub fn producer_seq(&self, seq: u16) -> Option<u16> {
        let slot = self.by_consumer.get(usize::from(seq) % WINDOW)?;
        (slot.key == seq && matches!(slot.state, State::Forwarded | State::Reserved))
            .then_some(slot.other)
    }

    /// If `seq` is newer than every packet so far (or the first, or a restart), makes it the
    /// newest, keeps consumer numbers for the gap before it, and returns true.
    fn advance(&mut self, seq: u16) -> bool {
        let ext = extend(self.highest, seq);
        let Some(h) = self.highest else {
            self.highest = Some(ext);
            self.delta = self.first.wrapping_sub(seq);
            return true;
        };
        if ext.abs_diff(h) > RESYNC {
            // A restart: carry on from the last consumer number, forget the old window.
            self.by_producer = [EMPTY; WINDOW];
            let next = self.last_out.map_or(self.first, |o| o.wrapping_add(1));
            self.delta = next.wrapping_sub(seq);
            self.highest = Some(ext);
            return true;
        }
        if ext <= h {
            return false;
        }
        let from = (h + 1).max(ext.saturating_sub(WINDOW as u64 - 1));
        for missing in from..ext {
            let p = missing as u16;
            self.remember(p, p.wrapping_add(self.delta), State::Reserved);
        }
        self.highest = Some(ext);
        true
    }

    /// The slot of an older packet, if it is still in the window and about `seq`.
    fn older(&self, seq: u16) -> Option<Slot> {
        let slot = *self.by_producer.get(usize::from(seq) % WINDOW)?;
        (slot.key == seq && slot.state != State::Empty).then_some(slot)
    }

    fn remember(&mut self, seq: u16, out: u16, state: State) {
        if let Some(s) = self.by_producer.get_mut(usize::from(seq) % WINDOW) {
            *s = Slot {
                key: seq,
                other: out,
                state,
            };
        }
        if state != State::Dropped {
            self.last_out = Some(out);
            if let Some(s) = self.by_consumer.get_mut(usize::from(out) % WINDOW) {
                *s = Slot {
                    key: out,
                    other: seq,
                    state,
                };
            }
        }
    }

    fn set_state(&mut self, seq: u16, out: u16, state: State) {
        if let Some(s) = self.by_producer.get_mut(usize::from(seq) % WINDOW) {
            s.state = state;
        }
        if let Some(s) = self.by_consumer.get_mut(usize::from(out) % WINDOW)
            && s.key == out
        {
            s.state = state;
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dropped_packets_leave_no_gap_and_nacks_map_back() {
        let mut r = SeqRewriter::new(1000);
        // Producer 65530.. wraps; every third packet is dropped.
        let mut outs = Vec::new();
        let mut seq = 65530u16;
        for i in 0..30 {
            if i % 3 == 2 {
                assert_eq!(r.skip(seq), None);
            } else {
                outs.push((seq, r.forward(seq).unwrap()));
            }
            seq = seq.wrapping_add(1);
        }
        for (i, (p, o)) in outs.iter().enumerate() {
            assert_eq!(*o, 1000 + i as u16, "contiguous");
            assert_eq!(r.producer_seq(*o), Some(*p), "NACK maps back");
        }
        // A number never given out maps to nothing.
        assert_eq!(r.producer_seq(1000 + outs.len() as u16), None);
    }

    #[test]
    fn a_dropped_first_packet_gives_its_number_to_the_next() {
        let mut r = SeqRewriter::new(7);
        assert_eq!(r.skip(500), None);
        assert_eq!(r.forward(501), Some(7));
    }

    #[test]
    fn reordered_packets_keep_their_numbers() {
        let mut r = SeqRewriter::new(0);
        assert_eq!(r.forward(10), Some(0));
        // 11 and 12 are late; 13 arrives first.
        assert_eq!(r.forward(13), Some(3));
        assert_eq!(
            r.producer_seq(1),
            Some(11),
            "a NACK for a late packet maps back too"
        );
        assert_eq!(r.forward(12), Some(2));
        // 11 turns out to be dropped: it leaves a hole the caller hears about.
        assert_eq!(r.skip(11), Some(1));
        assert_eq!(r.producer_seq(1), None);
        // Duplicates get their number again; a dropped one stays dropped.
        assert_eq!(r.forward(12), Some(2));
        assert_eq!(r.forward(11), None);
        // Drops after the gap close up as usual.
        assert_eq!(r.skip(14), None);
        assert_eq!(r.forward(15), Some(4));
    }

    #[test]
    fn too_old_packets_are_refused_and_restarts_carry_on() {
        let mut r = SeqRewriter::new(0);
        assert_eq!(r.forward(1000), Some(0));
        assert_eq!(r.forward(1000 + WINDOW as u16 + 5), Some(WINDOW as u16 + 5));
        assert_eq!(r.forward(1001), None, "behind the window");
        assert_eq!(r.forward(999), None, "before the first packet");
        // The producer jumps far: the consumer carries on from its last number.
        assert_eq!(r.forward(40_000), Some(WINDOW as u16 + 6));
        assert_eq!(r.forward(40_001), Some(WINDOW as u16 + 7));
    }

    proptest! {
        #[test]
        fn in_order_streams_come_out_contiguous(
            start in any::<u16>(),
            first in any::<u16>(),
            keep in proptest::collection::vec(any::<bool>(), 1..2000),
        ) {
            let mut r = SeqRewriter::new(first);
            let mut next = first;
            let mut sent = Vec::new();
            for (i, &k) in keep.iter().enumerate() {
                let seq = start.wrapping_add(i as u16);
                if k {
                    prop_assert_eq!(r.forward(seq), Some(next));
                    sent.push((seq, next));
                    next = next.wrapping_add(1);
                } else {
                    prop_assert_eq!(r.skip(seq), None);
                }
            }
            // The recent ones map back.
            for &(p, o) in sent.iter().rev().take(WINDOW) {
                prop_assert_eq!(r.producer_seq(o), Some(p));
            }
        }
    }
}
