//! Delay-based rate control (draft-ietf-rmcat-gcc-02 §5.5): additive increase, multiplicative
//! decrease, driven by the detector's signal.
//!
//! - **Overuse**: the rate drops to [`BETA`] × the acknowledged rate (what the path is
//!   delivering now, so the queue drains), at most once per [`DECREASE_INTERVAL_US`] (one
//!   response time, so a decrease is seen before the next). The acknowledged rate at each
//!   decrease is averaged into the *congestion level*: where the path's capacity was last
//!   found.
//! - **Underuse**: hold (the queue is draining; increasing now would refill it).
//! - **Normal**: increase. Near the congestion level (within three deviations of it) the
//!   increase is additive, one packet per response time (§5.5), so the rate creeps up to where
//!   the queue built before. Away from it, the increase is multiplicative, and **accelerates
//!   with the time since the last overuse**: [`INCREASE_PER_S`] (8%/s, §5.5's η) plus
//!   [`ACCELERATION`] times that for each second clean, up to [`MAX_INCREASE_PER_S`] (50%/s,
//!   reached after 2.6 s).
//!
//! Why the acceleration: the SFU must return a subscriber to the top simulcast layer soon after
//! a bandwidth limit goes away. From 300 kbit/s to 2.5 Mbit/s is a factor of 8.3; at a flat
//! 8%/s that takes 27 s. Accelerating, the model in `tests.rs` passes 2 Mbit/s 5.6 s after the
//! limit goes (6.3 s at a 200 ms round trip), about 2 s of it additive near the old level and
//! in hold while the queue drains; the first half second after a congestion event is still
//! §5.5's cautious 8-16%/s. Near a bottleneck that stays, the increase is additive, so the
//! acceleration does not make the sawtooth there any taller; and the
//! ceiling of twice the acknowledged rate (below) keeps a fast ramp from running ahead of what
//! the path demonstrably carries. Above the congestion level the old level is forgotten (the
//! path has changed), as libwebrtc's link capacity estimate is.

/// §5.5: the decrease factor.
pub const BETA: f64 = 0.85;
/// §5.5's η, the multiplicative increase per second right after a congestion event.
pub const INCREASE_PER_S: f64 = 0.08;
/// Each second without overuse adds this many times [`INCREASE_PER_S`] to the increase...
pub const ACCELERATION: f64 = 2.0;
/// ...up to this.
pub const MAX_INCREASE_PER_S: f64 = 0.5;
/// At most one decrease per this many µs (a response time: RTT plus the feedback interval).
pub const DECREASE_INTERVAL_US: i64 = 300_000;
/// Additive increase: one packet of this many bits per response time.
const PACKET_BITS: f64 = 1200.0 * 8.0;
const RESPONSE_TIME_S: f64 = 0.2;
/// The increase may not take the rate above this multiple of the acknowledged rate (plus
/// 10 kbit/s): a rate the path has not been seen to carry is a guess.
pub const ACKED_CEILING: f64 = 2.0;
const CEILING_SLACK_BPS: f64 = 10_000.0;
/// The congestion level's deviation is at least this fraction of it.
const MIN_DEVIATION: f64 = 0.05;

/// How the rate last moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Hold,
    Additive,
    Multiplicative,
    Decrease,
}

/// The acknowledged rate at decreases: mean and variance (bit/s).
#[derive(Debug, Clone, Copy)]
struct Congestion {
    mean: f64,
    var: f64,
}

impl Congestion {
    fn deviation(&self) -> f64 {
        self.var.sqrt().max(MIN_DEVIATION * self.mean)
    }
}

#[derive(Debug)]
pub struct RateControl {
    rate: f64,
    min: f64,
    max: f64,
    last_update_us: Option<i64>,
    last_decrease_us: Option<i64>,
    /// The start of the current run without overuse.
    clean_since_us: i64,
    congestion: Option<Congestion>,
    mode: Mode,
}

impl RateControl {
    pub fn new(start_bps: u64, min_bps: u64, max_bps: u64, now_us: i64) -> RateControl {
        let (min, max) = (min_bps as f64, (max_bps.max(min_bps)) as f64);
        RateControl {
            rate: (start_bps as f64).clamp(min, max),
            min,
            max,
            last_update_us: None,
            last_decrease_us: None,
            clean_since_us: now_us,
            congestion: None,
            mode: Mode::Hold,
        }
    }

    /// Applies the detector's `usage` at `now_us`; returns the new rate.
    pub fn update(&mut self, usage: super::Usage, acked_bps: Option<u64>, now_us: i64) -> u64 {
        use super::Usage;
        let dt_s = self.last_update_us.map_or(0.0, |last| {
            (now_us.saturating_sub(last) as f64 / 1e6).clamp(0.0, 1.0)
        });
        self.last_update_us = Some(now_us);
        let acked = acked_bps.map(|a| a as f64);
        match usage {
            Usage::Overusing => {
                self.clean_since_us = now_us;
                let due = self
                    .last_decrease_us
                    .is_none_or(|t| now_us.saturating_sub(t) >= DECREASE_INTERVAL_US);
                if due {
                    let base = acked.unwrap_or(self.rate);
                    self.rate = self.rate.min(BETA * base);
                    if let Some(a) = acked {
                        self.note_congestion(a);
                    }
                    self.last_decrease_us = Some(now_us);
                    self.mode = Mode::Decrease;
                } else {
                    self.mode = Mode::Hold;
                }
            }
            Usage::Underusing => self.mode = Mode::Hold,
            Usage::Normal => self.increase(dt_s, acked, now_us),
        }
        self.rate = self.rate.clamp(self.min, self.max);
        self.rate as u64
    }

    fn increase(&mut self, dt_s: f64, acked: Option<f64>, now_us: i64) {
        if self
            .congestion
            .is_some_and(|c| self.rate > c.mean + 3.0 * c.deviation())
        {
            self.congestion = None;
        }
        let near = self
            .congestion
            .is_some_and(|c| self.rate >= c.mean - 3.0 * c.deviation());
        let increased = if near {
            self.mode = Mode::Additive;
            self.rate + PACKET_BITS / RESPONSE_TIME_S * dt_s
        } else {
            self.mode = Mode::Multiplicative;
            let clean_s = now_us.saturating_sub(self.clean_since_us).max(0) as f64 / 1e6;
            let per_s = (INCREASE_PER_S * (1.0 + ACCELERATION * clean_s)).min(MAX_INCREASE_PER_S);
            self.rate * (1.0 + per_s).powf(dt_s)
        };
        let ceiling = acked.map_or(f64::INFINITY, |a| ACKED_CEILING * a + CEILING_SLACK_BPS);
        // Never above the ceiling by increasing; never lowered by it either.
        self.rate = increased.min(ceiling.max(self.rate));
    }

    fn note_congestion(&mut self, acked: f64) {
        self.congestion = Some(match self.congestion {
            Some(c) if (acked - c.mean).abs() <= 3.0 * c.deviation() => {
                let mean = 0.95 * c.mean + 0.05 * acked;
                let var = 0.95 * c.var + 0.05 * (acked - mean) * (acked - mean);
                Congestion { mean, var }
            }
            _ => Congestion {
                mean: acked,
                var: 0.0,
            },
        });
    }

    /// Sets the rate from outside (the loss-based ceiling, or a probe's result), so the next
    /// increase starts from what is actually used.
    pub fn set(&mut self, bps: u64) {
        self.rate = (bps as f64).clamp(self.min, self.max);
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The congestion level, if the rate is near one.
    pub fn congestion_bps(&self) -> Option<u64> {
        self.congestion.map(|c| c.mean as u64)
    }

    /// When the current run without overuse started (µs).
    pub fn clean_since_us(&self) -> i64 {
        self.clean_since_us
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::super::Usage;
    use super::*;

    #[test]
    fn decreases_to_beta_of_acked_at_most_once_per_interval() {
        let mut r = RateControl::new(2_000_000, 50_000, 5_000_000, 0);
        assert_eq!(r.update(Usage::Overusing, Some(1_000_000), 0), 850_000);
        assert_eq!(r.update(Usage::Overusing, Some(500_000), 100_000), 850_000);
        assert_eq!(r.mode(), Mode::Hold);
        assert_eq!(r.update(Usage::Overusing, Some(500_000), 400_000), 425_000);
        assert_eq!(r.update(Usage::Underusing, Some(500_000), 500_000), 425_000);
    }

    #[test]
    fn additive_near_congestion_then_accelerating_multiplicative() {
        let mut r = RateControl::new(300_000, 50_000, 10_000_000, 0);
        r.update(Usage::Overusing, Some(300_000), 0); // 255 kbit/s, level 300
        let mut now = 0;
        let mut rate = 0;
        // One second of normal: additive, about 48 kbit/s.
        for _ in 0..20 {
            now += 50_000;
            rate = r.update(Usage::Normal, None, now);
        }
        assert_eq!(r.mode(), Mode::Additive);
        assert!((295_000..310_000).contains(&rate), "{rate}");
        // Seven more seconds, unconstrained: past the level, then accelerating.
        let mut at = Vec::new();
        for i in 0..140 {
            now += 50_000;
            rate = r.update(Usage::Normal, None, now);
            if i % 20 == 19 {
                at.push(rate);
            }
        }
        assert_eq!(r.mode(), Mode::Multiplicative);
        assert!(at.windows(2).all(|w| w[1] > w[0]));
        assert!(rate > 2_500_000, "{at:?}");
    }

    #[test]
    fn the_increase_stops_at_twice_acked_and_the_clamp_holds() {
        let mut r = RateControl::new(1_000_000, 100_000, 3_000_000, 0);
        let mut now = 0;
        for _ in 0..200 {
            now += 50_000;
            r.update(Usage::Normal, Some(400_000), now);
        }
        assert_eq!(
            r.update(Usage::Normal, Some(400_000), now),
            1_000_000,
            "not lowered"
        );
        for _ in 0..400 {
            now += 50_000;
            r.update(Usage::Normal, Some(1_000_000), now);
        }
        assert_eq!(r.update(Usage::Normal, Some(1_000_000), now), 2_010_000);
        for _ in 0..400 {
            now += 50_000;
            r.update(Usage::Normal, Some(5_000_000), now);
        }
        assert_eq!(r.update(Usage::Normal, None, now), 3_000_000);
        for _ in 0..40 {
            now += 400_000;
            r.update(Usage::Overusing, Some(0), now);
        }
        assert_eq!(r.update(Usage::Overusing, Some(0), now), 100_000);
    }
}
