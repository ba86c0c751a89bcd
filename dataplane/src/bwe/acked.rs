//! The acknowledged bitrate: what the path delivered lately, from the sizes of the packets the
//! feedback reports received, binned by arrival time on the receiver's clock. Rate control
//! decreases to a fraction of it on overuse (draft-ietf-rmcat-gcc-02 §5.5: "R_hat", the
//! incoming rate measured over the last 500 ms) and never runs far ahead of it.

/// Bin width and count: a 500 ms sliding window (§5.5) in 50 ms steps.
const BIN_US: i64 = 50_000;
const BINS: usize = 10;
/// An arrival this many bins before the newest means the receiver's clock jumped back.
const FORGET_BINS: i64 = 100;
/// Less than this much of the window seen: no estimate yet.
const MIN_SPAN_US: i64 = 150_000;

#[derive(Debug, Default)]
pub struct AckedRate {
    bytes: [u64; BINS],
    /// The newest bin's number (arrival µs / BIN_US).
    newest_bin: Option<i64>,
    first_arrival_us: i64,
    newest_arrival_us: i64,
}

impl AckedRate {
    /// Counts a packet of `size` bytes that arrived at `arrival_us` (receiver's clock).
    /// Arrivals older than the window are passed over; a jump ahead clears the bins it skips.
    pub fn on_acked(&mut self, arrival_us: i64, size: u32) {
        let bin = arrival_us.div_euclid(BIN_US);
        let newest = match self.newest_bin {
            None => {
                self.newest_bin = Some(bin);
                self.first_arrival_us = arrival_us;
                self.newest_arrival_us = arrival_us;
                bin
            }
            Some(n) => n,
        };
        if bin > newest {
            let skipped = bin.saturating_sub(newest).min(BINS as i64);
            for b in 1..=skipped {
                if let Some(x) = self.bytes.get_mut(slot(newest.saturating_add(b))) {
                    *x = 0;
                }
            }
            self.newest_bin = Some(bin);
        } else if bin < newest.saturating_sub(FORGET_BINS) {
            // The receiver's clock went back by seconds: it restarted. Start over.
            self.reset();
            self.on_acked(arrival_us, size);
            return;
        } else if bin <= newest.saturating_sub(BINS as i64) {
            return;
        }
        self.newest_arrival_us = self.newest_arrival_us.max(arrival_us);
        if let Some(x) = self.bytes.get_mut(slot(bin)) {
            *x = x.saturating_add(u64::from(size));
        }
    }

    /// Bits per second over the window ending at the newest arrival; `None` until
    /// 150 ms of arrivals have been seen.
    pub fn bps(&self) -> Option<u64> {
        let newest = self.newest_bin?;
        let window_start = newest
            .saturating_sub(BINS as i64 - 1)
            .saturating_mul(BIN_US);
        let span = self
            .newest_arrival_us
            .saturating_sub(window_start.max(self.first_arrival_us));
        if span < MIN_SPAN_US {
            return None;
        }
        let bytes: u64 = self.bytes.iter().sum();
        Some(bytes.saturating_mul(8_000_000) / u64::try_from(span).ok()?)
    }

    /// Forgets everything (the receiver's clock jumped).
    pub fn reset(&mut self) {
        *self = AckedRate::default();
    }
}

fn slot(bin: i64) -> usize {
    bin.rem_euclid(BINS as i64) as usize
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_steady_rate_and_follows_a_change() {
        let mut a = AckedRate::default();
        assert_eq!(a.bps(), None);
        // 1200 B every 4 ms: 2.4 Mbit/s.
        for i in 0..500 {
            a.on_acked(1_000_000 + i * 4_000, 1200);
        }
        let r = a.bps().unwrap();
        assert!((2_300_000..2_500_000).contains(&r), "{r}");
        // Then every 32 ms: 300 kbit/s, once the window has moved on.
        for i in 0..40 {
            a.on_acked(3_000_000 + i * 32_000, 1200);
        }
        let r = a.bps().unwrap();
        assert!((250_000..350_000).contains(&r), "{r}");
        // Old and absurd arrivals do not panic.
        a.on_acked(0, 1200);
        a.on_acked(i64::MIN, u32::MAX);
        a.on_acked(i64::MAX, u32::MAX);
        let _ = a.bps();
    }
}
