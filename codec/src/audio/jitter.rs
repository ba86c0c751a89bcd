//! A jitter buffer for one Opus input: packets in arrival order in, one packet (or a request to
//! conceal one) per mixer tick out.
//!
//! Sans-IO: the arrival time is passed in, nothing sleeps or reads a clock. Packets sit in a
//! ring of [`CAPACITY`] slots indexed by their extended (unwrapped) sequence number, so
//! reordering within the ring is undone by construction and sequence wrap is just arithmetic.
//!
//! - **Depth adapts**: the RFC 3550 interarrival jitter of the packets (arrival time against RTP
//!   timestamp) sets the target depth, `1 + 3 × jitter / packet duration` packets, between
//!   [`MIN_DEPTH`] and [`MAX_DEPTH`]. Each packet that comes too late to be played adds one more
//!   packet for a while ([`LATE_BOOST_DECAY`] pops), since a late packet is exactly what a
//!   too-shallow buffer looks like. Playout starts once the target depth is buffered; a buffer
//!   that has grown well past its target drops its oldest packet, one per pop, to bring the delay
//!   back down.
//! - **Loss**: a hole with later packets behind it is played as [`Pop::Fec`] when the next packet
//!   is there (its in-band FEC may carry the lost frame) and [`Pop::Lost`] (concealment) when not.
//! - **Starvation** (nothing buffered: the sender paused, or the network stalled) is concealed
//!   for [`MAX_CONCEAL`] pops, then the buffer stops and fills up again before playing.
//! - **Drops**, all counted in [`JitterStats`]: duplicates, packets older than the one being
//!   played (late), empty or oversized payloads.
//! - **Restarts**: a sequence number far outside the window (a sender that restarted, or a
//!   forwarded stream that switched source) empties the buffer and starts over from that packet.

use std::time::Instant;

use super::SAMPLE_RATE;

/// Slots in the ring: the most packets held at once.
pub const CAPACITY: usize = 64;
/// The smallest target depth, in packets: one packet of margin for ordinary arrival jitter.
pub const MIN_DEPTH: usize = 2;
/// The largest target depth, in packets (one second of 20 ms packets).
pub const MAX_DEPTH: usize = 50;
/// Pops concealed while starved before the buffer stops and rebuffers: 100 ms of 20 ms packets,
/// by which time Opus's PLC has faded to silence anyway.
pub const MAX_CONCEAL: u32 = 5;
/// How many packets behind the one being played a packet may be and still count as late (2 s of
/// 20 ms packets, as the depacketizer's `MAX_LATE`); one farther back restarts the buffer: the
/// sender restarted its sequence numbers, and dropping its packets as late would mute it until
/// they caught up.
pub const MAX_LATE: i64 = 100;
/// Pops after which one packet of depth added for a late packet is taken back.
pub const LATE_BOOST_DECAY: u32 = 250;
/// The most extra depth late packets can add.
const MAX_LATE_BOOST: usize = 10;
/// The largest payload held; an Opus packet over an RTP MTU never comes close.
pub const MAX_PAYLOAD: usize = 4000;
/// The largest change in transit time taken as jitter, ms; see `Jitter::update`.
const MAX_TRANSIT_STEP_MS: f64 = 2000.0;
/// Extended sequence numbers start here, so that one a little behind the first is still positive.
const BASE: i64 = 1 << 32;

/// What the mixer does for this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop<'a> {
    /// The packet to decode, with its RFC 6464 level when the sender gave one.
    Packet {
        payload: &'a [u8],
        audio_level: Option<u8>,
    },
    /// The packet for this tick was lost, but the next one is here: decode `samples` of FEC
    /// from it (`next` is popped normally on the following tick).
    Fec { next: &'a [u8], samples: usize },
    /// The packet for this tick is missing: conceal `samples`.
    Lost { samples: usize },
    /// Not playing (nothing received yet, or rebuffering after a stall): silence.
    Empty,
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted into the buffer.
    pub packets: u64,
    /// Packets dropped because that sequence number was already held.
    pub duplicates: u64,
    /// Packets dropped because their turn had passed.
    pub late: u64,
    /// Payloads dropped as empty or larger than [`MAX_PAYLOAD`].
    pub malformed: u64,
    /// Holes played with later packets present ([`Pop::Fec`] or [`Pop::Lost`]).
    pub lost: u64,
    /// Of those, the ones where the next packet was there for FEC.
    pub fec: u64,
    /// Pops concealed because nothing was buffered.
    pub underruns: u64,
    /// Packets dropped unplayed to shrink a buffer too far over its target, or because a burst
    /// overflowed the ring.
    pub discarded: u64,
    /// Times the buffer emptied and started over on a far-away sequence number.
    pub restarts: u64,
}

impl JitterStats {
    /// Adds `other`'s counters to these (a mixer's total over its inputs).
    pub fn add(&mut self, other: &Self) {
        self.packets += other.packets;
        self.duplicates += other.duplicates;
        self.late += other.late;
        self.malformed += other.malformed;
        self.lost += other.lost;
        self.fec += other.fec;
        self.underruns += other.underruns;
        self.discarded += other.discarded;
        self.restarts += other.restarts;
    }
}

/// Why a packet was not taken. Each is counted in [`JitterStats`] as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JitterError {
    #[error("empty payload or larger than {MAX_PAYLOAD} bytes")]
    Malformed,
    #[error("sequence number already buffered")]
    Duplicate,
    #[error("packet arrived after its turn")]
    Late,
}

#[derive(Debug, Default)]
struct Slot {
    filled: bool,
    ext: i64,
    audio_level: Option<u8>,
    /// Cleared, never freed: after a few packets no push allocates.
    payload: Vec<u8>,
}

/// The RFC 3550 interarrival jitter estimator, in milliseconds.
#[derive(Debug, Default)]
struct Jitter {
    epoch: Option<Instant>,
    /// The last packet's RTP timestamp, and its unwrapped value in samples.
    last_ts: u32,
    ext_ts: i64,
    /// The last packet's transit time (arrival minus media time), ms.
    transit: Option<f64>,
    /// The smoothed jitter, ms.
    jitter: f64,
}

impl Jitter {
    fn update(&mut self, timestamp: u32, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        if self.transit.is_some() {
            self.ext_ts += i64::from(timestamp.wrapping_sub(self.last_ts) as i32);
        }
        self.last_ts = timestamp;
        let arrival = now.saturating_duration_since(epoch).as_secs_f64() * 1000.0;
        let media = self.ext_ts as f64 * 1000.0 / f64::from(SAMPLE_RATE);
        let transit = arrival - media;
        if let Some(last) = self.transit {
            let d = (transit - last).abs();
            // A jump of seconds is a timestamp discontinuity (a new source behind the same
            // SSRC, a sender's clock reset), not network jitter: it would hold the buffer at
            // its deepest for minutes.
            if d < MAX_TRANSIT_STEP_MS {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.transit = Some(transit);
    }
}

/// One input's jitter buffer. See the module doc.
#[derive(Debug)]
pub struct JitterBuffer {
    slots: Box<[Slot]>,
    /// Packets held.
    held: usize,
    /// The extended sequence number of the next packet to play (or, while buffering, the oldest
    /// one held); `None` before the first packet and after a restart.
    next: Option<i64>,
    /// The newest extended sequence number received.
    highest: i64,
    playing: bool,
    /// Whether anything was played since the last restart: packets older than `next` are late
    /// then, and extend the buffer backwards before.
    played: bool,
    /// Pops concealed in a row while starved.
    starved: u32,
    /// Samples per packet, from the timestamp step between consecutive packets.
    packet_samples: usize,
    /// The newest packet's sequence number and timestamp, for that step.
    last_seq_ts: Option<(i64, u32)>,
    jitter: Jitter,
    late_boost: usize,
    pops_since_late: u32,
    stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    pub fn new() -> Self {
        Self {
            slots: (0..CAPACITY).map(|_| Slot::default()).collect(),
            held: 0,
            next: None,
            highest: 0,
            playing: false,
            played: false,
            starved: 0,
            packet_samples: 960,
            last_seq_ts: None,
            jitter: Jitter::default(),
            late_boost: 0,
            pops_since_late: 0,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// The smoothed interarrival jitter, milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter.jitter
    }

    /// The depth, in packets, the buffer is steering towards.
    pub fn target_depth(&self) -> usize {
        let packet_ms = (self.packet_samples * 1000 / SAMPLE_RATE as usize).max(1) as f64;
        let depth = 1 + (3.0 * self.jitter.jitter / packet_ms).ceil() as usize;
        (depth + self.late_boost).clamp(MIN_DEPTH, MAX_DEPTH)
    }

    fn slot(&mut self, ext: i64) -> &mut Slot {
        // `ext` stays near BASE (restarts keep it there), so it is positive.
        &mut self.slots[ext.rem_euclid(CAPACITY as i64) as usize]
    }

    fn restart(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.filled = false;
        }
        self.held = 0;
        self.next = None;
        self.playing = false;
        self.played = false;
        self.starved = 0;
        self.last_seq_ts = None;
        self.jitter = Jitter::default();
        self.stats.restarts += 1;
    }

    /// Takes one packet. `audio_level` is its RFC 6464 level (-dBov, 0 loudest, 127 silence).
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
        audio_level: Option<u8>,
        now: Instant,
    ) -> Result<(), JitterError> {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            self.stats.malformed += 1;
            return Err(JitterError::Malformed);
        }
        let mut ext = self.extend(seq);
        if let Some(next) = self.next {
            let far_ahead = ext - self.highest >= CAPACITY as i64;
            if next - ext > MAX_LATE || far_ahead {
                self.restart();
                ext = self.extend(seq);
            } else if ext < next {
                // While buffering with nothing played yet, an older packet within the ring just
                // becomes the first; otherwise its turn has passed.
                if self.played || self.highest - ext >= CAPACITY as i64 {
                    self.stats.late += 1;
                    self.late_boost = (self.late_boost + 1).min(MAX_LATE_BOOST);
                    self.pops_since_late = 0;
                    return Err(JitterError::Late);
                }
                self.next = Some(ext);
            } else if !self.playing && self.held == 0 {
                // Refilling after a stall: start at this packet, not at the hole before it.
                self.next = Some(ext);
            }
        }
        let slot = self.slot(ext);
        if slot.filled && slot.ext == ext {
            self.stats.duplicates += 1;
            return Err(JitterError::Duplicate);
        }
        let next = *self.next.get_or_insert(ext);
        // A burst that runs past the ring's end pushes the oldest packets out.
        let overflow = ext - (next + CAPACITY as i64 - 1);
        if overflow > 0 {
            for old in next..next + overflow {
                let slot = self.slot(old);
                if slot.filled {
                    slot.filled = false;
                    self.held -= 1;
                    self.stats.discarded += 1;
                }
            }
            self.next = Some(next + overflow);
        }
        let slot = self.slot(ext);
        slot.filled = true;
        slot.ext = ext;
        slot.audio_level = audio_level;
        slot.payload.clear();
        slot.payload.extend_from_slice(payload);
        self.held += 1;
        self.highest = self.highest.max(ext);
        self.stats.packets += 1;
        self.learn_packet_samples(ext, timestamp);
        self.jitter.update(timestamp, now);
        Ok(())
    }

    /// The extended sequence number for `seq`: the one nearest the newest seen.
    fn extend(&mut self, seq: u16) -> i64 {
        if self.next.is_none() {
            self.highest = BASE + i64::from(seq);
            return self.highest;
        }
        let delta = seq.wrapping_sub(self.highest as u16) as i16;
        self.highest + i64::from(delta)
    }

    /// Learns the packet duration from consecutive packets, for concealing a lost one: the mixer
    /// ticks 20 ms, but a SIP caller may send 10, 40 or 60 ms packets.
    fn learn_packet_samples(&mut self, ext: i64, timestamp: u32) {
        if let Some((last_ext, last_ts)) = self.last_seq_ts
            && ext == last_ext + 1
        {
            let step = timestamp.wrapping_sub(last_ts) as usize;
            // Opus frames are multiples of 2.5 ms (120 samples) up to 120 ms.
            if (120..=5760).contains(&step) && step.is_multiple_of(120) {
                self.packet_samples = step;
            }
        }
        if self.last_seq_ts.is_none_or(|(last_ext, _)| ext > last_ext) {
            self.last_seq_ts = Some((ext, timestamp));
        }
    }

    /// Plays one packet's worth (see [`Pop`]).
    pub fn pop(&mut self) -> Pop<'_> {
        self.pops_since_late += 1;
        if self.pops_since_late >= LATE_BOOST_DECAY {
            self.pops_since_late = 0;
            self.late_boost = self.late_boost.saturating_sub(1);
        }
        let Some(mut next) = self.next else {
            return Pop::Empty;
        };
        let target = self.target_depth();
        // Span: the packets from the next one to the newest, held or not.
        let span = |next: i64, highest: i64| (highest - next + 1).max(0) as usize;
        if !self.playing {
            if self.held == 0 || span(next, self.highest) < target {
                return Pop::Empty;
            }
            self.playing = true;
            self.played = true;
            self.starved = 0;
        }
        // Too deep: drop the oldest packet (one per pop, so the delay comes down gently).
        if span(next, self.highest) > target + (target / 2).max(2) {
            let slot = self.slot(next);
            if slot.filled {
                slot.filled = false;
                self.held -= 1;
                self.stats.discarded += 1;
            }
            next += 1;
        }
        self.next = Some(next + 1);
        let samples = self.packet_samples;
        if self.held == 0 {
            self.starved += 1;
            if self.starved > MAX_CONCEAL {
                // Stop, and refill before playing again. `next` stays, so that a packet from
                // before the stall still counts as late.
                self.playing = false;
                self.next = Some(next);
                return Pop::Empty;
            }
            self.stats.underruns += 1;
            return Pop::Lost { samples };
        }
        self.starved = 0;
        let index = next.rem_euclid(CAPACITY as i64) as usize;
        if self.slots[index].filled && self.slots[index].ext == next {
            self.slots[index].filled = false;
            self.held -= 1;
            let slot = &self.slots[index];
            return Pop::Packet {
                payload: &slot.payload,
                audio_level: slot.audio_level,
            };
        }
        self.stats.lost += 1;
        let after = (next + 1).rem_euclid(CAPACITY as i64) as usize;
        let slot = &self.slots[after];
        if slot.filled && slot.ext == next + 1 {
            self.stats.fec += 1;
            return Pop::Fec {
                next: &slot.payload,
                samples,
            };
        }
        Pop::Lost { samples }
    }
}

// ok: test code
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Pushes packet `seq` (payload = its low byte, timestamp 960 per sequence number, counted
    /// from 65000 so that a wrapped sequence number still has a later timestamp) arriving at
    /// `ms`.
    fn push(jb: &mut JitterBuffer, start: Instant, seq: u16, ms: u64) -> Result<(), JitterError> {
        let ts = u32::from(seq.wrapping_sub(65_000)).wrapping_mul(960);
        let now = start + Duration::from_millis(ms);
        jb.push(seq, ts, &[seq as u8, 0xAA], Some(30), now)
    }

    /// What a pop gave, as the low byte of the packet played (or used for FEC).
    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        Packet(u8),
        Fec(u8),
        Lost,
        Empty,
    }

    fn pop(jb: &mut JitterBuffer) -> Got {
        match jb.pop() {
            Pop::Packet { payload, .. } => Got::Packet(payload[0]),
            Pop::Fec { next, samples } => {
                assert_eq!(samples, 960);
                Got::Fec(next[0])
            }
            Pop::Lost { samples } => {
                assert_eq!(samples, 960);
                Got::Lost
            }
            Pop::Empty => Got::Empty,
        }
    }

    /// Runs ticks: before tick `i`'s pop, pushes the packets `arrivals[i]` (arriving then).
    fn run(jb: &mut JitterBuffer, start: Instant, arrivals: &[&[u16]]) -> Vec<Got> {
        let mut got = Vec::new();
        for (tick, seqs) in arrivals.iter().enumerate() {
            for &seq in *seqs {
                push(jb, start, seq, tick as u64 * 20).unwrap();
            }
            got.push(pop(jb));
        }
        got
    }

    #[test]
    fn reordering_within_the_depth_is_undone() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new();
        // 1 before 0, 3 a tick before 2.
        let got = run(&mut jb, start, &[&[1, 0], &[3], &[2], &[4], &[5], &[]]);
        use Got::*;
        assert_eq!(got, [0, 1, 2, 3, 4, 5].map(Packet), "played in order");
        assert_eq!(jb.stats().lost, 0);
        assert_eq!(jb.stats().packets, 6);
    }

    #[test]
    fn loss_asks_for_fec_or_concealment() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new();
        // 2 lost (3 is there: FEC); 5 lost with nothing behind it (starved: concealed); 6 lost
        // with 7 there (FEC).
        let arrivals: [&[u16]; 10] = [&[0], &[1], &[], &[3], &[4], &[], &[], &[7], &[8], &[]];
        use Got::*;
        assert_eq!(
            run(&mut jb, start, &arrivals),
            [
                Empty,
                Packet(0),
                Packet(1),
                Fec(3),
                Packet(3),
                Packet(4),
                Lost,
                Fec(7),
                Packet(7),
                Packet(8)
            ]
        );
        assert_eq!(jb.stats().lost, 2);
        assert_eq!(jb.stats().fec, 2);
        assert_eq!(jb.stats().underruns, 1);
        // Starved: concealed a while, then silent until it has refilled.
        for _ in 0..MAX_CONCEAL {
            assert_eq!(pop(&mut jb), Lost);
        }
        assert_eq!(pop(&mut jb), Empty);
        assert_eq!(jb.stats().underruns, 1 + u64::from(MAX_CONCEAL));
        // A packet whose turn was concealed is late; the stream goes on after it.
        assert_eq!(push(&mut jb, start, 9, 400), Err(JitterError::Late));
        push(&mut jb, start, 20, 400).unwrap();
        assert_eq!(pop(&mut jb), Empty, "one packet is below the target depth");
        push(&mut jb, start, 21, 420).unwrap();
        assert_eq!(pop(&mut jb), Packet(20));
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped_and_counted() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new();
        for seq in 0..4 {
            push(&mut jb, start, seq, u64::from(seq) * 20).unwrap();
        }
        assert_eq!(push(&mut jb, start, 2, 80), Err(JitterError::Duplicate));
        assert_eq!(pop(&mut jb), Got::Packet(0));
        assert_eq!(pop(&mut jb), Got::Packet(1));
        // Played already: late, also when it is a duplicate.
        assert_eq!(push(&mut jb, start, 1, 90), Err(JitterError::Late));
        assert_eq!(push(&mut jb, start, 0, 90), Err(JitterError::Late));
        assert_eq!(jb.push(9, 0, &[], None, start), Err(JitterError::Malformed));
        assert_eq!(
            jb.push(9, 0, &[0; MAX_PAYLOAD + 1], None, start),
            Err(JitterError::Malformed)
        );
        let stats = jb.stats();
        assert_eq!(
            (stats.duplicates, stats.late, stats.malformed, stats.packets),
            (1, 2, 2, 4)
        );
        assert_eq!(pop(&mut jb), Got::Packet(2));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new();
        let seqs: Vec<u16> = (0..8).map(|i| 65_532u16.wrapping_add(i)).collect();
        let arrivals: Vec<&[u16]> = seqs.chunks(1).chain([&[][..]]).collect();
        let got = run(&mut jb, start, &arrivals);
        assert_eq!(got[0], Got::Empty);
        let played: Vec<Got> = seqs.iter().map(|&s| Got::Packet(s as u8)).collect();
        assert_eq!(got[1..], played[..]);
        assert_eq!(jb.stats().lost + jb.stats().late + jb.stats().restarts, 0);
    }

    #[test]
    fn big_jumps_restart() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new();
        for seq in 100..104 {
            push(&mut jb, start, seq, 0).unwrap();
        }
        assert_eq!(pop(&mut jb), Got::Packet(100));
        // The sender restarted at 30000: its packets play, after a refill.
        push(&mut jb, start, 30_000, 100).unwrap();
        push(&mut jb, start, 30_001, 120).unwrap();
        assert_eq!(jb.stats().restarts, 1);
        assert_eq!(jb.len(), 2);
        assert_eq!(pop(&mut jb), Got::Packet(30_000u16 as u8));
        // Far behind (more than MAX_LATE): a restart too, not a late drop.
        push(&mut jb, start, 30_000 - 2000, 140).unwrap();
        assert_eq!(jb.stats().restarts, 2);
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn depth_follows_jitter_and_shrinks_back() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new();
        for seq in 0..50u16 {
            push(&mut jb, start, seq, u64::from(seq) * 20).unwrap();
            pop(&mut jb);
        }
        assert_eq!(
            jb.target_depth(),
            MIN_DEPTH,
            "a steady stream needs no more"
        );
        // Arrivals 0-60 ms off their due time.
        for seq in 50..150u16 {
            let wobble = [0, 60, 10, 45, 30][usize::from(seq % 5)];
            push(&mut jb, start, seq, u64::from(seq) * 20 + wobble).ok();
            pop(&mut jb);
        }
        let deep = jb.target_depth();
        assert!(deep >= 4, "jitter {} ms, depth {deep}", jb.jitter_ms());
        // A burst of 40 packets at once (a stall that let go): dropped down to the target.
        for seq in 150..190u16 {
            push(&mut jb, start, seq, 190 * 20).unwrap();
        }
        let before = jb.stats().discarded;
        for _ in 0..40 {
            pop(&mut jb);
        }
        assert!(jb.stats().discarded > before);
        assert!(jb.len() <= jb.target_depth() + jb.target_depth() / 2 + 2);
    }

    #[test]
    fn longer_packets_conceal_their_own_length() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new();
        for seq in [0u16, 1, 3] {
            let now = start + Duration::from_millis(u64::from(seq) * 60);
            jb.push(seq, u32::from(seq) * 2880, &[1], None, now)
                .unwrap();
        }
        jb.pop();
        jb.pop();
        assert_eq!(
            jb.pop(),
            Pop::Fec {
                next: &[1],
                samples: 2880
            }
        );
    }
}
