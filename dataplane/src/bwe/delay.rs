//! The delay-based detector: packet groups, their delay variation, a trendline of the
//! accumulated variation and an adaptive threshold (draft-ietf-rmcat-gcc-02 §5.1-§5.4, with the
//! trendline filter of the send-side variant in place of §5.3's Kalman filter).
//!
//! A growing queue on the path shows as packets arriving further apart than they were sent:
//! each group's inter-arrival minus inter-departure time is positive. Their running sum is the
//! queue's growth; the least-squares slope of its smoothed value over the last [`WINDOW`]
//! groups says whether the queue grows (overuse), drains (underuse) or holds (normal).

/// A packet group: packets sent within this many µs of the group's first (§5.2: a burst the
/// sender's pacer releases together is one sample).
const GROUP_SPAN_US: i64 = 5_000;
/// Groups in the trendline's regression.
pub const WINDOW: usize = 20;
/// Exponential smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// The slope is scaled by the number of deltas seen (at most [`MAX_DELTAS`]) and this gain, so
/// it compares with a threshold in milliseconds.
const GAIN: f64 = 4.0;
const MAX_DELTAS: f64 = 60.0;
/// §5.4: the threshold starts at 12.5 ms, adapts within [6, 600] ms, faster down (so a
/// threshold raised by a competing flow comes back) than up, and ignores spikes more than
/// 15 ms above it.
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
const SPIKE: f64 = 15.0;
/// §5.4: overuse is signalled once the trend stays above the threshold this long (ms), over
/// at least two groups, and is not falling.
const OVERUSE_TIME_MS: f64 = 10.0;
/// A delay variation this large (µs) is a clock jump or a stall, not queueing: start over.
const RESET_US: i64 = 3_000_000;

/// What the detector concludes of the path (§5.4's signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Usage {
    #[default]
    Normal,
    Overusing,
    Underusing,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_sent_us: i64,
    last_sent_us: i64,
    last_arrival_us: i64,
}

/// Groups packets and runs the trendline on consecutive groups. No allocation.
#[derive(Debug)]
pub struct Detector {
    current: Option<Group>,
    previous: Option<Group>,
    trend: Trendline,
}

impl Detector {
    pub fn new() -> Detector {
        Detector {
            current: None,
            previous: None,
            trend: Trendline::new(),
        }
    }

    /// Feeds one received packet, in sequence (= sending) order. Packets sent before the
    /// current group started (reordered reports) are passed over.
    pub fn on_packet(&mut self, sent_us: i64, arrival_us: i64) {
        let Some(mut current) = self.current else {
            self.current = Some(Group {
                first_sent_us: sent_us,
                last_sent_us: sent_us,
                last_arrival_us: arrival_us,
            });
            return;
        };
        if sent_us < current.first_sent_us {
            return;
        }
        if sent_us.saturating_sub(current.first_sent_us) <= GROUP_SPAN_US {
            current.last_sent_us = current.last_sent_us.max(sent_us);
            current.last_arrival_us = current.last_arrival_us.max(arrival_us);
            self.current = Some(current);
            return;
        }
        // `current` is complete: compare it with the group before it.
        if let Some(previous) = self.previous {
            let send_delta = current.last_sent_us.saturating_sub(previous.last_sent_us);
            let arrival_delta = current
                .last_arrival_us
                .saturating_sub(previous.last_arrival_us);
            let variation = arrival_delta.saturating_sub(send_delta);
            if variation.abs() > RESET_US || arrival_delta < 0 {
                self.trend = Trendline::new();
            } else {
                self.trend.update(
                    variation as f64 / 1000.0,
                    current.last_arrival_us as f64 / 1000.0,
                );
            }
        }
        self.previous = Some(current);
        self.current = Some(Group {
            first_sent_us: sent_us,
            last_sent_us: sent_us,
            last_arrival_us: arrival_us,
        });
    }

    pub fn usage(&self) -> Usage {
        self.trend.usage
    }

    /// The scaled trend and the threshold it is compared with (ms), for metrics and tests.
    pub fn trend_and_threshold(&self) -> (f64, f64) {
        (self.trend.modified_trend, self.trend.threshold)
    }
}

impl Default for Detector {
    fn default() -> Detector {
        Detector::new()
    }
}

#[derive(Debug)]
struct Trendline {
    /// (arrival ms since the first group, smoothed accumulated delay ms), a ring.
    points: [(f64, f64); WINDOW],
    len: usize,
    next: usize,
    first_arrival_ms: Option<f64>,
    last_arrival_ms: f64,
    accumulated: f64,
    smoothed: f64,
    deltas: f64,
    trend: f64,
    modified_trend: f64,
    threshold: f64,
    overuse_ms: f64,
    overuse_count: u32,
    usage: Usage,
}

impl Trendline {
    fn new() -> Trendline {
        Trendline {
            points: [(0.0, 0.0); WINDOW],
            len: 0,
            next: 0,
            first_arrival_ms: None,
            last_arrival_ms: 0.0,
            accumulated: 0.0,
            smoothed: 0.0,
            deltas: 0.0,
            trend: 0.0,
            modified_trend: 0.0,
            threshold: THRESHOLD_START,
            overuse_ms: -1.0,
            overuse_count: 0,
            usage: Usage::Normal,
        }
    }

    fn update(&mut self, variation_ms: f64, arrival_ms: f64) {
        let first = *self.first_arrival_ms.get_or_insert(arrival_ms);
        let since_last = if self.len == 0 {
            0.0
        } else {
            (arrival_ms - self.last_arrival_ms).max(0.0)
        };
        self.last_arrival_ms = arrival_ms;
        self.deltas = (self.deltas + 1.0).min(MAX_DELTAS);
        self.accumulated += variation_ms;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        if let Some(p) = self.points.get_mut(self.next) {
            *p = (arrival_ms - first, self.smoothed);
        }
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        let previous_trend = self.trend;
        if self.len == WINDOW
            && let Some(slope) = slope(&self.points)
        {
            self.trend = slope;
        }
        self.detect(previous_trend, since_last);
    }

    /// §5.4.
    fn detect(&mut self, previous_trend: f64, since_last_ms: f64) {
        let m = self.deltas * self.trend * GAIN;
        self.modified_trend = m;
        if m > self.threshold {
            if self.overuse_ms < 0.0 {
                // The first sample over: assume it crossed halfway since the last one.
                self.overuse_ms = since_last_ms / 2.0;
            } else {
                self.overuse_ms += since_last_ms;
            }
            self.overuse_count += 1;
            if self.overuse_ms > OVERUSE_TIME_MS
                && self.overuse_count > 1
                && self.trend >= previous_trend
            {
                self.overuse_ms = 0.0;
                self.overuse_count = 0;
                self.usage = Usage::Overusing;
            }
        } else if m < -self.threshold {
            self.overuse_ms = -1.0;
            self.overuse_count = 0;
            self.usage = Usage::Underusing;
        } else {
            self.overuse_ms = -1.0;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.adapt(m, since_last_ms.min(100.0));
    }

    /// §5.4's adaptive threshold.
    fn adapt(&mut self, m: f64, dt_ms: f64) {
        if m.abs() > self.threshold + SPIKE {
            return;
        }
        let k = if m.abs() < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        self.threshold += k * (m.abs() - self.threshold) * dt_ms;
        self.threshold = self.threshold.clamp(THRESHOLD_MIN, THRESHOLD_MAX);
    }
}

/// The least-squares slope of `points`; `None` when every x is the same.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn run(detector: &mut Detector, groups: usize, extra_per_group_us: i64) -> Vec<Usage> {
        let mut out = Vec::new();
        let start = detector.current.map_or(0, |g| g.first_sent_us + 10_000);
        let arrival0 = detector
            .current
            .map_or(50_000, |g| g.last_arrival_us + 10_000);
        for i in 0..groups as i64 {
            let sent = start + i * 10_000;
            detector.on_packet(sent, arrival0 + i * (10_000 + extra_per_group_us));
            out.push(detector.usage());
        }
        out
    }

    #[test]
    fn least_squares_slope() {
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 * f64::from(i) + 1.0))
            .collect();
        assert!((slope(&pts).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 5.0)]), None);
    }

    #[test]
    fn steady_is_normal_growing_queue_overuses_draining_underuses() {
        let mut d = Detector::new();
        assert!(run(&mut d, 100, 0).iter().all(|u| *u == Usage::Normal));
        // Each group arrives 2 ms later than it was sent relative to the last: a queue.
        let over = run(&mut d, 40, 2_000);
        assert_eq!(over.last(), Some(&Usage::Overusing));
        let first = over.iter().position(|u| *u == Usage::Overusing).unwrap();
        assert!(first < 25, "detected after {first} groups");
        let under = run(&mut d, 40, -2_000);
        assert_eq!(under.last(), Some(&Usage::Underusing));
        let again = run(&mut d, 100, 0);
        assert_eq!(again.last(), Some(&Usage::Normal));
    }

    #[test]
    fn jitter_without_a_trend_stays_normal() {
        let mut d = Detector::new();
        let mut usages = Vec::new();
        for i in 0..500i64 {
            let jitter = [0, 3_000, -2_000, 1_000, -1_500][(i % 5) as usize];
            d.on_packet(i * 10_000, 40_000 + i * 10_000 + jitter);
            usages.push(d.usage());
        }
        assert!(!usages.contains(&Usage::Overusing));
    }

    #[test]
    fn garbage_times_do_not_panic() {
        let mut d = Detector::new();
        for (s, a) in [
            (0, 0),
            (i64::MAX, i64::MIN),
            (i64::MIN, i64::MAX),
            (10_000, -5),
            (20_000, i64::MAX),
            (40_000, 7),
        ] {
            d.on_packet(s, a);
        }
    }
}
