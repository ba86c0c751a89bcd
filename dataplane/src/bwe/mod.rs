//! Send-side bandwidth estimation for one subscriber transport, in the manner of Google
//! Congestion Control (draft-ietf-rmcat-gcc-02, send-side variant driven by transport-wide
//! feedback, draft-holmer-rmcat-transport-wide-cc-extensions-01). Sans-IO: fed sends, feedback
//! and `now`; nothing allocated after [`Estimator::new`].
//!
//! The pieces, each in its own file:
//! - [`history`]: what was sent, by transport-wide sequence number (a fixed ring);
//! - [`acked`]: the acknowledged bitrate, what the path delivered over the last 500 ms;
//! - [`delay`]: packet groups, the trendline of their delay variation, the adaptive threshold:
//!   Normal / Overusing / Underusing;
//! - [`rate`]: AIMD on that signal, with an increase that accelerates the longer the path is
//!   clean (the product needs ~300 kbit/s → ~2.5 Mbit/s within 8 s; see `rate`'s docs);
//! - [`loss`]: the loss-based ceiling (§6).
//!
//! The target is the delay-based rate, capped by the loss-based ceiling, clamped to
//! [`BweConfig`]'s bounds; the delay-based controller then continues from that target.
//!
//! **Probing.** The increase never goes above twice the acknowledged rate, so a subscriber
//! held on a low simulcast layer (say 500 kbit/s, next layer 2.5 Mbit/s) would never earn the
//! next layer: the SFU sends what the target allows, and the target follows what is sent.
//! [`Estimator::wants_probe`] breaks that circle. When the target has been held at that
//! ceiling for a while with a clean path, it returns a rate the SFU may try: forward the best
//! layer (or padding) up to it for [`PROBE_DURATION`], then choose by [`Estimator::target_bps`]
//! again. While the probe's feedback comes in without overuse, the target rises to the
//! acknowledged rate directly (the path carried it), so a layer that fits is kept; an overuse
//! during the probe is an ordinary decrease and ends it early ([`State::probing`] turns false:
//! the SFU should go back to the target then). Probes are at most one per [`PROBE_INTERVAL`],
//! or one a second while they succeed.
//! The cost: a probe into a path that cannot carry it builds a queue for up to a second; on a
//! path held at its limit the "clean for 2 s" condition rarely holds, so that is rare.
//!
//! **Wiring** (one estimator per subscriber transport): number every outgoing packet with the
//! transport-wide sequence extension and call [`Estimator::on_sent`] with that number, the
//! packet's size on the wire and the send time; hand every
//! [`crate::rtcp::Packet::TransportCc`] from the subscriber to [`Estimator::on_feedback`];
//! choose layers by [`Estimator::target_bps`] (asking [`Estimator::wants_probe`] when the
//! target does not reach the next layer), and set the [`crate::pacer::Pacer`]'s rate to it.

pub mod acked;
pub mod delay;
pub mod history;
pub mod loss;
pub mod rate;

use std::time::{Duration, Instant};

pub use delay::Usage;
pub use rate::Mode;

use crate::twcc::{Feedback, REFERENCE_UNIT_US};
use history::Fate;

/// How long the SFU should keep a probe's higher rate up.
pub const PROBE_DURATION: Duration = Duration::from_secs(1);
/// At most one probe this often.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(4);
/// The path must have been free of overuse this long before a probe.
const PROBE_AFTER_CLEAN_US: i64 = 2_000_000;
/// A probe asks for up to this multiple of the target.
const PROBE_FACTOR: u64 = 3;
/// After a probe the path carried, the next may start this soon (µs) rather than after
/// [`PROBE_INTERVAL`]: climbing back from the lowest layer takes one probe per layer.
const PROBE_AGAIN_US: i64 = 1_000_000;
/// Feedback on a probe arrives up to this long after it ends.
const PROBE_FEEDBACK_US: i64 = 500_000;

/// The estimator's bounds and starting point (bit/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BweConfig {
    pub start_bps: u64,
    pub min_bps: u64,
    pub max_bps: u64,
}

/// A snapshot for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct State {
    pub target_bps: u64,
    pub acked_bps: Option<u64>,
    pub usage: Usage,
    pub mode: Mode,
    /// The loss fraction of the last closed window, and the ceiling it set.
    pub loss_fraction: f64,
    pub loss_ceiling_bps: Option<u64>,
    /// Where the path's capacity was last found, while the rate is near it.
    pub congestion_bps: Option<u64>,
    pub probing: bool,
    /// Feedback results for packets we do not know or had already been told about.
    pub ignored: u64,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    bps: u64,
    started_us: i64,
}

/// One subscriber transport's estimator.
#[derive(Debug)]
pub struct Estimator {
    epoch: Instant,
    config: BweConfig,
    history: history::History,
    detector: delay::Detector,
    acked: acked::AckedRate,
    loss: loss::Loss,
    rate: rate::RateControl,
    loss_ceiling: Option<u64>,
    target: u64,
    /// The reference time of the last feedback, unwrapped (24-bit, 64 ms units).
    reference: Option<i64>,
    probe: Option<Probe>,
    last_probe_us: Option<i64>,
    ignored: u64,
}

impl Estimator {
    pub fn new(now: Instant, config: BweConfig) -> Estimator {
        let max = config.max_bps.max(config.min_bps);
        Estimator {
            epoch: now,
            config,
            history: history::History::new(),
            detector: delay::Detector::new(),
            acked: acked::AckedRate::default(),
            loss: loss::Loss::default(),
            rate: rate::RateControl::new(config.start_bps, config.min_bps, max, 0),
            loss_ceiling: None,
            target: config.start_bps.clamp(config.min_bps, max),
            reference: None,
            probe: None,
            last_probe_us: None,
            ignored: 0,
        }
    }

    fn us(&self, now: Instant) -> i64 {
        i64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(i64::MAX)
    }

    /// A packet carrying transport-wide sequence number `seq`, `size` bytes on the wire (the
    /// whole SRTP packet), left at `now`. Call it for every packet the transport numbers, in
    /// the order they are numbered.
    pub fn on_sent(&mut self, seq: u16, size: usize, now: Instant) {
        let us = self.us(now);
        self.history.on_sent(seq, size, us);
    }

    /// The packet numbered `seq` was recorded by [`Estimator::on_sent`] but left only at `now`
    /// (a pacer held it): its send time moves there, unless feedback already reported it.
    pub fn on_departed(&mut self, seq: u16, now: Instant) {
        let us = self.us(now);
        self.history.departed(seq, us);
    }

    /// A transport-cc feedback from the subscriber ([`crate::rtcp::Packet::TransportCc`]'s
    /// `feedback`). Results for unknown, repeated or garbage sequence numbers are ignored; a
    /// malformed tail ends the walk.
    pub fn on_feedback(&mut self, now: Instant, feedback: &Feedback) {
        let now_us = self.us(now);
        // The reference time wraps at 24 bits; keep the arrivals on one timeline.
        let reference = i64::from(feedback.reference_time);
        let unwrapped = match self.reference {
            None => reference,
            Some(last) => {
                let step = (reference - last).rem_euclid(1 << 24);
                last + if step >= 1 << 23 {
                    step - (1 << 24)
                } else {
                    step
                }
            }
        };
        self.reference = Some(unwrapped);
        let shift = (unwrapped - reference).saturating_mul(REFERENCE_UNIT_US);
        // A feedback can describe 65,535 packets in a few bytes; we remember fewer.
        for result in feedback.results().take(history::CAPACITY) {
            let Ok((seq, arrival)) = result else { break };
            let Some(packet) = self.history.get_mut(seq) else {
                self.ignored += 1;
                continue;
            };
            match (packet.fate, arrival) {
                (Fate::Unreported, None) => {
                    packet.fate = Fate::Lost;
                    self.loss.on_reported(false, now_us);
                }
                (Fate::Unreported, Some(at)) => {
                    packet.fate = Fate::Received;
                    let at = at.saturating_add(shift);
                    self.loss.on_reported(true, now_us);
                    self.acked.on_acked(at, packet.size);
                    self.detector.on_packet(packet.sent_us, at);
                }
                (Fate::Lost, Some(at)) => {
                    // Late, not lost; too late to say anything about the queue.
                    packet.fate = Fate::Received;
                    self.loss.on_recovered();
                    self.acked.on_acked(at.saturating_add(shift), packet.size);
                }
                (Fate::Lost, None) | (Fate::Received, _) => self.ignored += 1,
            }
        }
        let usage = self.detector.usage();
        let acked = self.acked.bps();
        let mut delay_bps = self.rate.update(usage, acked, now_us);
        if let (Some(probe), Some(acked), Usage::Normal) = (self.probe, acked, usage) {
            // The path carried the probe's rate without a queue: take it.
            delay_bps = delay_bps.max(acked.min(probe.bps));
        }
        if usage == Usage::Overusing {
            self.probe = None;
        } else if self
            .probe
            .is_some_and(|p| now_us.saturating_sub(p.started_us) > self.probe_span_us())
        {
            // The path carried it: the next probe (a step further up) may follow sooner.
            self.probe = None;
            let interval = i64::try_from(PROBE_INTERVAL.as_micros()).unwrap_or(i64::MAX);
            self.last_probe_us = Some(now_us.saturating_sub(interval - PROBE_AGAIN_US));
        }
        self.loss_ceiling = self.loss.update(now_us, self.target);
        let max = self.config.max_bps.max(self.config.min_bps);
        self.target = delay_bps
            .min(self.loss_ceiling.unwrap_or(u64::MAX))
            .clamp(self.config.min_bps, max);
        self.rate.set(self.target);
    }

    fn probe_span_us(&self) -> i64 {
        i64::try_from(PROBE_DURATION.as_micros()).unwrap_or(i64::MAX) + PROBE_FEEDBACK_US
    }

    /// The rate the SFU should keep this transport's media under (bit/s).
    pub fn target_bps(&self) -> u64 {
        self.target
    }

    /// `Some(bps)` when the SFU should try sending more than the target, up to `bps`, for
    /// [`PROBE_DURATION`] (see the module docs): the target is held at twice the acknowledged
    /// rate (the SFU is sending less than the path may carry), the path has been clean for
    /// 2 s, the loss controller is not limiting, and no probe ran in the last
    /// [`PROBE_INTERVAL`]. A `Some` starts the probe; call it when choosing layers.
    pub fn wants_probe(&mut self, now: Instant) -> Option<u64> {
        let now_us = self.us(now);
        let max = self.config.max_bps.max(self.config.min_bps);
        let interval = i64::try_from(PROBE_INTERVAL.as_micros()).unwrap_or(i64::MAX);
        let acked = self.acked.bps()?;
        let held = self.target as f64 >= 0.9 * rate::ACKED_CEILING * acked as f64;
        let clean = now_us.saturating_sub(self.rate.clean_since_us()) >= PROBE_AFTER_CLEAN_US;
        let idle = self
            .last_probe_us
            .is_none_or(|t| now_us.saturating_sub(t) >= interval);
        if self.probe.is_some()
            || !held
            || !clean
            || !idle
            || self.loss_ceiling.is_some()
            || self.target >= max
        {
            return None;
        }
        let bps = self.target.saturating_mul(PROBE_FACTOR).min(max);
        self.probe = Some(Probe {
            bps,
            started_us: now_us,
        });
        self.last_probe_us = Some(now_us);
        Some(bps)
    }

    pub fn state(&self) -> State {
        State {
            target_bps: self.target,
            acked_bps: self.acked.bps(),
            usage: self.detector.usage(),
            mode: self.rate.mode(),
            loss_fraction: self.loss.fraction(),
            loss_ceiling_bps: self.loss_ceiling,
            congestion_bps: self.rate.congestion_bps(),
            probing: self.probe.is_some(),
            ignored: self.ignored,
        }
    }
}

// ok: the unwrap()/expect() calls of bwe/tests.rs are test-only, on values the tests built
#[cfg(test)]
mod tests;
