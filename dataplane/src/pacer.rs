//! A sans-IO pacer: a leaky bucket that spreads a transport's media over time, so a keyframe
//! (tens of packets produced at once) does not leave as one burst that overflows a bottleneck
//! queue and reads as congestion (draft-ietf-rmcat-gcc-02 §4: the pacer "sends packets at a
//! rate... a multiple of the target", with the factor 2.5 libwebrtc uses).
//!
//! The budget is in bytes, refilled at the pacing rate ([`PACING_FACTOR`] × the target) and
//! capped at [`BURST`] of it (at least one full packet), so a few milliseconds of silence can
//! be caught up at once but not more. A packet may go while the budget is not negative; it
//! then takes its size from the budget, which may go below zero by less than one packet: the
//! bucket need not know the packet sizes to come.
//!
//! Priorities: the caller keeps a queue per class and asks in this order:
//! - [`Class::Audio`] always passes (its rate is tiny, and delaying it is audible). It still
//!   takes from the budget, so video yields to it.
//! - [`Class::Retransmission`] passes while the debt is under one [`BURST`]: a lost packet
//!   holds up a frame at the receiver, so it goes before video queued behind it, but cannot
//!   flood.
//! - [`Class::Video`] passes while the budget is not negative. A keyframe is thus spread at the
//!   pacing rate: 30 × 1200 B at a 1 Mbit/s target leave over about 110 ms, well within the
//!   time a receiver waits for a keyframe, and never faster than 2.5× the target.
//!
//! [`Queue`] holds what may not go yet, one lane per class that waits (retransmissions, then
//! video), for the engine: it offers each packet of a paced transport as it is written and
//! takes out what is due when the transport's timer fires. Its items are whatever the caller
//! needs to send later (the engine's: a send buffer and the transport-wide sequence number);
//! the queue never looks at packets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The pacing rate is this multiple of the target: fast enough that the queue in the pacer
/// stays short (an encoder overshoots its target by a keyframe now and then), slow enough to
/// smooth bursts.
pub const PACING_FACTOR: f64 = 2.5;
/// The budget saved up during silence, in time at the pacing rate.
pub const BURST: Duration = Duration::from_millis(5);
/// The budget's cap is at least this many bytes (one full packet).
const MIN_BURST_BYTES: f64 = 1500.0;

/// The longest a queue should take to drain: past it, the pacing rate rises until it drains
/// within this time, so an encoder's overshoot or a falling estimate never turns into seconds
/// of delay (the estimator sees the queue only as the rate it sends at).
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(250);
/// Packets each lane of a [`Queue`] holds; more are refused (the receiver NACKs them). 128
/// packets is a large keyframe; with [`MAX_QUEUE_DELAY`], a full lane drains at about 5 Mbit/s.
pub const LANE_CAPACITY: usize = 128;

/// What a packet is, for its priority (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Audio,
    Retransmission,
    Video,
}

#[derive(Debug, Clone)]
pub struct Pacer {
    /// Bytes per second at the pacing rate.
    bytes_per_s: f64,
    /// Bytes that may go now; negative: owed.
    budget: f64,
    updated: Instant,
}

impl Pacer {
    /// A pacer for a target of `target_bps` (bit/s); the pacing rate is
    /// [`PACING_FACTOR`] times it.
    pub fn new(target_bps: u64, now: Instant) -> Pacer {
        let mut p = Pacer {
            bytes_per_s: 0.0,
            budget: 0.0,
            updated: now,
        };
        p.set_rate(target_bps);
        p.budget = p.cap();
        p
    }

    /// A new target (bit/s), from the estimator.
    pub fn set_rate(&mut self, target_bps: u64) {
        self.set_bytes_per_s(target_bps as f64 * PACING_FACTOR / 8.0);
    }

    fn set_bytes_per_s(&mut self, rate: f64) {
        // At least one byte per second, so the time to the next packet is finite.
        self.bytes_per_s = rate.max(1.0);
        self.budget = self.budget.min(self.cap());
    }

    fn cap(&self) -> f64 {
        (self.bytes_per_s * BURST.as_secs_f64()).max(MIN_BURST_BYTES)
    }

    fn refill(&mut self, now: Instant) {
        if now > self.updated {
            let dt = (now - self.updated).as_secs_f64();
            self.budget = (self.budget + dt * self.bytes_per_s).min(self.cap());
            self.updated = now;
        }
    }

    /// Whether a packet of `bytes` of `class` may be sent at `now`; if so, it is counted as
    /// sent.
    pub fn try_send(&mut self, now: Instant, bytes: usize, class: Class) -> bool {
        self.refill(now);
        let may = match class {
            Class::Audio => true,
            Class::Retransmission => self.budget > -self.cap(),
            Class::Video => self.budget >= 0.0,
        };
        if may {
            // Audio may run the debt up, but not without bound (a second at the pacing rate).
            self.budget = (self.budget - bytes as f64).max(-self.bytes_per_s);
        }
        may
    }

    /// When a video packet may go (now, or once the debt is paid); for the caller's timer.
    /// The size does not matter (see the module docs).
    pub fn next_send_time(&self) -> Instant {
        if self.budget >= 0.0 {
            return self.updated;
        }
        // Rounded up, and a nanosecond more, so the refill at that instant clears the debt.
        let ns = (-self.budget / self.bytes_per_s * 1e9).ceil().min(3.6e12);
        self.updated + Duration::from_nanos(ns as u64 + 1)
    }
}

/// What [`Queue::offer`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// It may go now; the queue did not keep it.
    Send,
    /// The queue keeps it until [`Queue::pop`] gives it back.
    Held,
    /// Its lane is full: the queue did not keep it and the caller drops it.
    Full,
}

/// A transport's pacer and the packets it holds back: retransmissions before video, each lane
/// in order; audio is never held (see the module docs).
#[derive(Debug)]
pub struct Queue<T> {
    pacer: Pacer,
    /// The pacing rate the estimate asks for, in bytes per second.
    paced_bytes_per_s: f64,
    /// The rate that drains what is held within [`MAX_QUEUE_DELAY`] of its arrival: raised as
    /// packets arrive, kept while the queue drains, dropped when it is empty.
    drain_bytes_per_s: f64,
    resends: VecDeque<(T, usize)>,
    video: VecDeque<(T, usize)>,
    /// Bytes in both lanes.
    bytes: usize,
}

impl<T> Queue<T> {
    /// A queue pacing at [`PACING_FACTOR`] × `target_bps`. Its lanes are allocated here, once.
    pub fn new(target_bps: u64, now: Instant) -> Queue<T> {
        let pacer = Pacer::new(target_bps, now);
        Queue {
            paced_bytes_per_s: pacer.bytes_per_s,
            drain_bytes_per_s: 0.0,
            pacer,
            resends: VecDeque::with_capacity(LANE_CAPACITY),
            video: VecDeque::with_capacity(LANE_CAPACITY),
            bytes: 0,
        }
    }

    /// A new target (bit/s), from the estimator.
    pub fn set_rate(&mut self, now: Instant, target_bps: u64) {
        self.paced_bytes_per_s = target_bps as f64 * PACING_FACTOR / 8.0;
        self.adjust(now);
    }

    /// A packet of `bytes` and `class`, written and ready: whether it goes now, waits in the
    /// queue (which then owns `item`), or is refused. A packet never overtakes one of its own
    /// class or a more urgent one.
    pub fn offer(&mut self, now: Instant, item: T, bytes: usize, class: Class) -> Offer {
        let (lane, ahead) = match class {
            Class::Audio => {
                self.pacer.try_send(now, bytes, class);
                return Offer::Send;
            }
            Class::Retransmission => (&mut self.resends, 0),
            Class::Video => (&mut self.video, self.resends.len()),
        };
        if lane.is_empty() && ahead == 0 && self.pacer.try_send(now, bytes, class) {
            return Offer::Send;
        }
        if lane.len() >= LANE_CAPACITY {
            return Offer::Full;
        }
        lane.push_back((item, bytes));
        self.bytes += bytes;
        self.adjust(now);
        Offer::Held
    }

    /// The next held packet that may go at `now`, if any.
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        let (lane, class) = if !self.resends.is_empty() {
            (&mut self.resends, Class::Retransmission)
        } else {
            (&mut self.video, Class::Video)
        };
        let &(_, bytes) = lane.front()?;
        if !self.pacer.try_send(now, bytes, class) {
            return None;
        }
        let (item, _) = lane.pop_front()?;
        self.bytes = self.bytes.saturating_sub(bytes);
        self.adjust(now);
        Some(item)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.resends.is_empty() && self.video.is_empty()
    }

    /// When the next held packet may go; `None` when nothing is held.
    pub fn next_due(&self) -> Option<Instant> {
        (!self.is_empty()).then(|| self.pacer.next_send_time())
    }

    /// Takes out every held packet (the transport closes), in no particular order.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.bytes = 0;
        self.resends
            .drain(..)
            .chain(self.video.drain(..))
            .map(|(item, _)| item)
    }

    /// Paces at the estimate's rate, or faster while the held bytes would take longer than
    /// [`MAX_QUEUE_DELAY`] at it.
    fn adjust(&mut self, now: Instant) {
        let needed = self.bytes as f64 / MAX_QUEUE_DELAY.as_secs_f64();
        self.drain_bytes_per_s = if self.bytes == 0 {
            0.0
        } else {
            self.drain_bytes_per_s.max(needed)
        };
        self.pacer.refill(now);
        self.pacer
            .set_bytes_per_s(self.paced_bytes_per_s.max(self.drain_bytes_per_s));
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `n` video packets of `size` as soon as the pacer allows, from `t0`; returns
    /// when each left.
    fn drain(p: &mut Pacer, t0: Instant, n: usize, size: usize) -> Vec<Duration> {
        let mut now = t0;
        let mut sent = Vec::new();
        while sent.len() < n {
            if p.try_send(now, size, Class::Video) {
                sent.push(now - t0);
            } else {
                let next = p.next_send_time();
                assert!(next > now, "the timer moves forward");
                now = next;
            }
        }
        sent
    }

    #[test]
    fn a_keyframe_is_spread_at_the_pacing_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000, t0);
        let sent = drain(&mut p, t0, 30, 1200);
        // 2.5 Mbit/s: 1200 B every 3.84 ms; the first two ride on the saved burst.
        let total = sent.last().unwrap().as_secs_f64();
        let expected = 28.0 * 1200.0 * 8.0 / 2_500_000.0;
        assert!((total - expected).abs() < 0.004, "{total} vs {expected}");
        assert!(
            sent.windows(2)
                .skip(2)
                .all(|w| w[1] - w[0] >= Duration::from_micros(3_800))
        );
    }

    #[test]
    fn audio_always_passes_and_retransmissions_go_before_video() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100_000, t0);
        drain(&mut p, t0, 10, 1200);
        let now = t0 + Duration::from_millis(300);
        assert!(!p.try_send(now, 1200, Class::Video), "video waits");
        for _ in 0..100 {
            assert!(p.try_send(now, 200, Class::Audio));
        }
        let mut p = Pacer::new(1_000_000, t0);
        assert!(p.try_send(t0, 1200, Class::Video));
        assert!(p.try_send(t0, 1200, Class::Video));
        assert!(!p.try_send(t0, 1200, Class::Video));
        assert!(
            p.try_send(t0, 1200, Class::Retransmission),
            "borrows one burst"
        );
        assert!(!p.try_send(t0, 1200, Class::Retransmission), "but no more");
    }

    #[test]
    fn a_new_rate_applies_and_silence_saves_only_a_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000, t0);
        drain(&mut p, t0, 5, 1200);
        p.set_rate(4_000_000);
        let later = t0 + Duration::from_secs(10);
        // 10 s of silence saves 5 ms at 10 Mbit/s (6250 B): six packets, then pacing.
        let sent = drain(&mut p, later, 20, 1200);
        let immediate = sent.iter().filter(|d| d.is_zero()).count();
        assert!((5..=7).contains(&immediate), "{sent:?}");
        p.set_rate(0);
        assert!(p.next_send_time() >= later);
        let _ = p.try_send(later, usize::MAX, Class::Audio);
        assert!(p.next_send_time() > later);
    }

    /// Offers `n` video packets of `size` at `t0`, then pops until empty; returns each
    /// packet's departure after `t0`, by its number.
    fn through_queue(q: &mut Queue<usize>, t0: Instant, n: usize, size: usize) -> Vec<Duration> {
        let mut left = vec![None; n];
        for (i, left) in left.iter_mut().enumerate() {
            match q.offer(t0, i, size, Class::Video) {
                Offer::Send => *left = Some(Duration::ZERO),
                Offer::Held => {}
                Offer::Full => panic!("lane full at {i}"),
            }
        }
        let mut now = t0;
        while let Some(due) = q.next_due() {
            now = now.max(due);
            while let Some(i) = q.pop(now) {
                left[i] = Some(now - t0);
            }
        }
        left.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn a_queue_spreads_a_keyframe_in_order() {
        let t0 = Instant::now();
        let mut q = Queue::new(1_000_000, t0);
        let left = through_queue(&mut q, t0, 30, 1200);
        assert!(left.windows(2).all(|w| w[0] <= w[1]), "in order: {left:?}");
        // As the bare pacer: 2.5 Mbit/s after the saved burst.
        let total = left.last().unwrap().as_secs_f64();
        assert!(
            (total - 28.0 * 1200.0 * 8.0 / 2_500_000.0).abs() < 0.005,
            "{total}"
        );
        assert_eq!(q.next_due(), None);
        assert_eq!(q.pop(t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn audio_passes_a_queue_and_resends_go_first() {
        let t0 = Instant::now();
        let mut q = Queue::new(500_000, t0);
        for i in 0..10 {
            q.offer(t0, i, 1200, Class::Video);
        }
        assert_eq!(q.offer(t0, 100, 200, Class::Audio), Offer::Send);
        // Resends wait only for the budget (one may borrow a burst), not behind held video.
        let resends: Vec<Offer> = (200..203)
            .map(|i| q.offer(t0, i, 1200, Class::Retransmission))
            .collect();
        assert!(resends.contains(&Offer::Held), "{resends:?}");
        let mut now = t0;
        let mut order = Vec::new();
        while let Some(due) = q.next_due() {
            now = now.max(due);
            order.extend(std::iter::from_fn(|| q.pop(now)));
        }
        let first_video = order.iter().position(|&i| i < 100).unwrap();
        assert!(order[..first_video].iter().all(|&i| i >= 200), "{order:?}");
        // Video offered while video is held waits behind it even when the budget allows.
        let later = now + Duration::from_secs(1);
        assert_eq!(q.offer(later, 1, 1200, Class::Video), Offer::Send);
        q.offer(later, 2, 1200, Class::Video);
        q.offer(later, 3, 1200, Class::Video);
        let held = q.offer(later + Duration::from_secs(1), 4, 1200, Class::Video);
        assert_eq!(held, Offer::Held, "3 is still held, so 4 waits");
    }

    #[test]
    fn a_long_queue_drains_within_the_limit_and_a_full_lane_refuses() {
        let t0 = Instant::now();
        // 100 kbit/s paces at 31 kB/s: 100 packets of 1200 B would take 3.8 s.
        let mut q = Queue::new(100_000, t0);
        let left = through_queue(&mut q, t0, 100, 1200);
        let total = left.last().unwrap();
        assert!(
            *total < MAX_QUEUE_DELAY + Duration::from_millis(20),
            "{total:?}"
        );
        let mut q = Queue::new(100_000, t0);
        let offers: Vec<Offer> = (0..LANE_CAPACITY + 10)
            .map(|i| q.offer(t0, i, 1200, Class::Video))
            .collect();
        let count = |offer| offers.iter().filter(|&&o| o == offer).count();
        assert_eq!(count(Offer::Held), LANE_CAPACITY);
        assert_eq!(count(Offer::Full), 10 - count(Offer::Send));
        assert_eq!(q.drain().count(), LANE_CAPACITY);
        assert_eq!(q.next_due(), None);
    }
}
