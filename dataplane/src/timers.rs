//! When an engine has work to do without a packet arriving: one queue of deadlines for all its
//! transports and routers, so `poll_timeout` is the earliest real deadline and an idle worker
//! sleeps.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Times that need no precision (reports, consent and handshake limits) are rounded up onto a
/// grid of [`Grid::TICK`] steps from one epoch per engine, so the transports and routers of a
/// worker share wake-ups: at most one per tick for them, however many transports there are.
/// DTLS retransmissions are not rounded.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    epoch: Instant,
}

impl Grid {
    pub const TICK: Duration = Duration::from_millis(20);

    pub fn new(epoch: Instant) -> Grid {
        Grid { epoch }
    }

    /// The first grid point at or after `t`.
    pub fn after(&self, t: Instant) -> Instant {
        let since = t.saturating_duration_since(self.epoch).as_nanos();
        let tick = Self::TICK.as_nanos();
        let nanos = u64::try_from(since.div_ceil(tick) * tick).unwrap_or(u64::MAX);
        self.epoch + Duration::from_nanos(nanos)
    }
}

/// What a deadline belongs to: a transport or a router, by its key on the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    Transport(usize),
    Router(usize),
}

/// Deadlines in time order. Each transport and router records the time of its live entry
/// (`scheduled`); an entry is pushed only when its owner's deadline moves earlier, and a
/// deadline that moved later is found when the old entry comes due. Entries of removed owners,
/// and superseded ones, are skipped when they come due: the owner checks what is actually due.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    /// Makes sure `timer` is woken by `at`: pushes an entry unless its live one (`scheduled`)
    /// is as early.
    pub fn schedule(&mut self, scheduled: &mut Option<Instant>, at: Option<Instant>, timer: Timer) {
        let Some(at) = at else { return };
        if scheduled.is_some_and(|s| s <= at) {
            return;
        }
        *scheduled = Some(at);
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest entry's time.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_rounds_up_to_ticks() {
        let epoch = Instant::now();
        let grid = Grid::new(epoch);
        assert_eq!(grid.after(epoch), epoch);
        assert_eq!(
            grid.after(epoch + Duration::from_millis(1)),
            epoch + Grid::TICK
        );
        assert_eq!(grid.after(epoch + Grid::TICK), epoch + Grid::TICK);
        assert_eq!(
            grid.after(epoch + Duration::from_millis(1001)),
            epoch + Duration::from_millis(1020)
        );
    }

    #[test]
    fn only_earlier_deadlines_are_pushed_and_due_ones_pop_in_order() {
        let now = Instant::now();
        let mut timers = Timers::default();
        let (mut a, mut b) = (None, None);
        timers.schedule(
            &mut a,
            Some(now + Duration::from_secs(2)),
            Timer::Transport(0),
        );
        timers.schedule(
            &mut a,
            Some(now + Duration::from_secs(3)),
            Timer::Transport(0),
        );
        assert_eq!(
            timers.heap.len(),
            1,
            "a later deadline waits for the live entry"
        );
        timers.schedule(&mut b, Some(now + Duration::from_secs(1)), Timer::Router(0));
        timers.schedule(&mut b, None, Timer::Router(0));
        assert_eq!(timers.next(), Some(now + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(now), None);
        let later = now + Duration::from_secs(5);
        assert_eq!(
            timers.pop_due(later),
            Some((now + Duration::from_secs(1), Timer::Router(0)))
        );
        assert_eq!(
            timers.pop_due(later),
            Some((now + Duration::from_secs(2), Timer::Transport(0)))
        );
        assert_eq!(timers.pop_due(later), None);
    }
}
