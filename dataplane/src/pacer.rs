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

use std::time::{Duration, Instant};

/// The pacing rate is this multiple of the target: fast enough that the queue in the pacer
/// stays short (an encoder overshoots its target by a keyframe now and then), slow enough to
/// smooth bursts.
pub const PACING_FACTOR: f64 = 2.5;
/// The budget saved up during silence, in time at the pacing rate.
pub const BURST: Duration = Duration::from_millis(5);
/// The budget's cap is at least this many bytes (one full packet).
const MIN_BURST_BYTES: f64 = 1500.0;

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
        // At least one byte per second, so the time to the next packet is finite.
        self.bytes_per_s = (target_bps as f64 * PACING_FACTOR / 8.0).max(1.0);
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
}
