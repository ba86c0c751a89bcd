//! What was sent, by transport-wide sequence number: the send side of the feedback match
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01 §2: the sender keeps each packet's send
//! time and size; the feedback brings back its arrival time).

/// Packets remembered: a feedback arrives within a few hundred milliseconds, and at 1,000
/// packets per second (about 10 Mbit/s) this is two seconds. A power of two, so the slot is
/// the low bits. 48 KiB per subscriber transport.
pub const CAPACITY: usize = 2048;

/// What the feedback has said of a packet so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Unreported,
    Lost,
    Received,
}

/// One sent packet.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Extended (64-bit) sequence number.
    pub seq: u64,
    /// Send time, µs since the estimator's epoch.
    pub sent_us: i64,
    pub size: u32,
    pub fate: Fate,
}

const EMPTY: Sent = Sent {
    seq: u64::MAX,
    sent_us: 0,
    size: 0,
    fate: Fate::Unreported,
};

/// A ring of the last [`CAPACITY`] packets sent. Allocates only in [`History::new`].
#[derive(Debug)]
pub struct History {
    ring: Box<[Sent]>,
    /// The highest extended sequence number sent.
    highest: Option<u64>,
}

impl History {
    pub fn new() -> History {
        History {
            ring: vec![EMPTY; CAPACITY].into_boxed_slice(),
            highest: None,
        }
    }

    /// Records a packet sent with transport-wide sequence number `seq`. The transport numbers
    /// its packets in sending order, so the number is extended from the highest sent.
    pub fn on_sent(&mut self, seq: u16, size: usize, sent_us: i64) {
        let ext = match self.highest {
            // One wrap up, so a reordered report of an earlier number cannot go below zero.
            None => (1 << 16) + u64::from(seq),
            Some(h) => match crate::twcc::extend(h, seq) {
                Some(e) => e,
                None => return,
            },
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        if let Some(slot) = self.ring.get_mut((ext as usize) & (CAPACITY - 1)) {
            *slot = Sent {
                seq: ext,
                sent_us,
                size,
                fate: Fate::Unreported,
            };
        }
    }

    /// The packet numbered `seq` left at `sent_us`, later than recorded (a pacer held it).
    /// Nothing changes once feedback has reported it.
    pub fn departed(&mut self, seq: u16, sent_us: i64) {
        if let Some(p) = self.get_mut(seq)
            && p.fate == Fate::Unreported
        {
            p.sent_us = p.sent_us.max(sent_us);
        }
    }

    /// The packet a feedback names by `seq`, if it is one we sent and still remember. Numbers
    /// ahead of the highest sent, and ones overwritten since, are not.
    pub fn get_mut(&mut self, seq: u16) -> Option<&mut Sent> {
        let h = self.highest?;
        let behind = u64::from((h as u16).wrapping_sub(seq));
        let ext = h.checked_sub(behind)?;
        let slot = self.ring.get_mut((ext as usize) & (CAPACITY - 1))?;
        (slot.seq == ext).then_some(slot)
    }
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_sent_across_the_wrap_and_nothing_else() {
        let mut h = History::new();
        assert!(h.get_mut(0).is_none());
        for i in 0u16..100 {
            h.on_sent(
                65_500u16.wrapping_add(i),
                1000 + usize::from(i),
                i64::from(i),
            );
        }
        let p = h.get_mut(10).unwrap();
        assert_eq!((p.size, p.sent_us), (1046, 46));
        assert!(h.get_mut(64).is_none(), "not sent yet");
        assert!(h.get_mut(65_000).is_none(), "never sent");
        h.departed(10, 90);
        assert_eq!(h.get_mut(10).unwrap().sent_us, 90, "held by a pacer");
        h.get_mut(10).unwrap().fate = Fate::Received;
        h.departed(10, 95);
        assert_eq!(h.get_mut(10).unwrap().sent_us, 90, "already reported");
        for i in 100u16..5000 {
            h.on_sent(65_500u16.wrapping_add(i), 1, 0);
        }
        assert!(h.get_mut(65_500).is_none(), "overwritten");
    }
}
