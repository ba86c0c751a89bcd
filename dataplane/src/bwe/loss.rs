//! The loss-based controller (draft-ietf-rmcat-gcc-02 §6): a high loss fraction (over 10%)
//! cuts the rate by half the fraction, a low one (under 2%) lets the delay-based controller
//! increase, and in between the rate holds. The fraction is taken over a window of feedback
//! with enough packets that a few percent of random loss does not read as ten.

/// A window closes with this many packets reported...
const WINDOW_PACKETS: u32 = 100;
/// ...or after this long (µs, sender's clock) with at least [`MIN_PACKETS`].
const WINDOW_US: i64 = 1_000_000;
const MIN_PACKETS: u32 = 20;
const HIGH: f64 = 0.10;
const LOW: f64 = 0.02;

#[derive(Debug, Default)]
pub struct Loss {
    lost: u32,
    total: u32,
    started_us: Option<i64>,
    last_fraction: f64,
    /// The controller's ceiling; `None` while loss is low.
    ceiling: Option<u64>,
}

impl Loss {
    /// A packet the feedback reports for the first time.
    pub fn on_reported(&mut self, received: bool, now_us: i64) {
        self.started_us.get_or_insert(now_us);
        self.total = self.total.saturating_add(1);
        if !received {
            self.lost = self.lost.saturating_add(1);
        }
    }

    /// A packet reported lost before is now reported received (it was late, not lost).
    pub fn on_recovered(&mut self) {
        self.lost = self.lost.saturating_sub(1);
    }

    /// Closes the window if it is due and applies §6 to `target`; returns the ceiling the loss
    /// controller puts on the rate (`None`: no limit).
    pub fn update(&mut self, now_us: i64, target: u64) -> Option<u64> {
        let Some(started) = self.started_us else {
            return self.ceiling;
        };
        let due = self.total >= WINDOW_PACKETS
            || (now_us.saturating_sub(started) >= WINDOW_US && self.total >= MIN_PACKETS);
        if !due {
            return self.ceiling;
        }
        let fraction = f64::from(self.lost.min(self.total)) / f64::from(self.total.max(1));
        self.last_fraction = fraction;
        self.lost = 0;
        self.total = 0;
        self.started_us = None;
        self.ceiling = if fraction > HIGH {
            Some((target as f64 * (1.0 - 0.5 * fraction)).round() as u64)
        } else if fraction >= LOW {
            Some(target)
        } else {
            None
        };
        self.ceiling
    }

    /// The loss fraction of the last closed window.
    pub fn fraction(&self) -> f64 {
        self.last_fraction
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn window(l: &mut Loss, lost_every: u32, now_us: i64, target: u64) -> Option<u64> {
        for i in 0..WINDOW_PACKETS {
            l.on_reported(lost_every == 0 || i % lost_every != 0, now_us);
        }
        l.update(now_us, target)
    }

    #[test]
    fn high_cuts_middle_holds_low_frees() {
        let mut l = Loss::default();
        assert_eq!(l.update(0, 1_000_000), None);
        assert_eq!(window(&mut l, 5, 0, 1_000_000), Some(900_000)); // 20%: × 0.9
        assert!((l.fraction() - 0.2).abs() < 1e-9);
        assert_eq!(window(&mut l, 20, 0, 900_000), Some(900_000)); // 5%: hold
        assert_eq!(window(&mut l, 0, 0, 900_000), None);
        // A late window closes on time with few packets.
        for _ in 0..MIN_PACKETS {
            l.on_reported(false, 0);
        }
        l.on_recovered();
        assert_eq!(l.update(10, 500_000), None, "not due yet");
        assert!(l.update(WINDOW_US, 500_000).unwrap() < 500_000);
    }
}
