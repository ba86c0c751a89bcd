//! What a router keeps of a transport's bandwidth, from transport-wide congestion control
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01):
//! - toward a publisher, the feedback we write ([`Feedback`]), from which the browser's own
//!   estimator sets its sending rate (and which simulcast layers it sends);
//! - toward a subscriber, the send-side estimate of its path ([`Bandwidth`]), from the feedback
//!   it writes about what we sent; it caps the simulcast layer each of its consumers forwards.

use std::time::{Duration, Instant};

use crate::bwe::{BweConfig, Estimator, PROBE_DURATION, PROBE_INTERVAL, Usage};
use crate::twcc::{self, Recorder};

/// Where an estimate starts: enough for a 720p layer, so that a subscriber on a good link
/// starts at the top; the estimator comes down within a second where the path is weaker.
const START_BPS: u64 = 2_000_000;
const MIN_BPS: u64 = 100_000;
const MAX_BPS: u64 = 20_000_000;
/// Kept out of the estimate for the transport's audio and RTCP before video layers are chosen.
const AUDIO_ALLOWANCE_BPS: u64 = 64_000;
/// The longest wait between probes after failures (each failed probe doubles the wait, from
/// the estimator's `PROBE_INTERVAL`): a probe forwards a higher layer, and on a link that
/// cannot carry it the picture stalls until the lower layer's next keyframe.
const MAX_PROBE_WAIT: Duration = Duration::from_secs(64);
/// SRTP's authentication tag (AES_CM_128_HMAC_SHA1_80) or GCM tag, roughly, plus nothing
/// for UDP/IP: the estimator compares what it sent with what arrived, so only consistency
/// matters.
const SRTP_OVERHEAD: usize = 12;

/// The transport-cc feedback a publisher gets from us.
pub(super) struct Feedback {
    /// The transport-wide sequence number extension's id in its packets.
    pub ext: u8,
    pub recorder: Recorder,
}

impl Feedback {
    pub fn new(ext: u8, now: Instant) -> Feedback {
        Feedback {
            ext,
            recorder: Recorder::new(now),
        }
    }

    /// Records the packet's arrival if it carries the transport-wide sequence number.
    pub fn on_packet(&mut self, now: Instant, value: Option<&[u8]>) {
        if let Some(&[hi, lo]) = value {
            self.recorder.record(u16::from_be_bytes([hi, lo]), now);
        }
    }
}

/// The send-side estimate of a subscriber's path, and the probes that find out whether it
/// carries more than what is being sent.
pub(super) struct Bandwidth {
    /// The transport-wide sequence number extension's id in our packets.
    pub ext: u8,
    /// The next packet's transport-wide sequence number.
    seq: u16,
    estimator: Estimator,
    /// While a probe runs: until when, and the rate it may use.
    probe: Option<(Instant, u64)>,
    /// Probes that ended in overuse since the last that did not, and when the next may start.
    failures: u32,
    next_probe: Option<Instant>,
}

impl Bandwidth {
    pub fn new(ext: u8, now: Instant) -> Bandwidth {
        Bandwidth {
            ext,
            seq: 0,
            estimator: Estimator::new(
                now,
                BweConfig {
                    start_bps: START_BPS,
                    min_bps: MIN_BPS,
                    max_bps: MAX_BPS,
                },
            ),
            probe: None,
            failures: 0,
            next_probe: None,
        }
    }

    /// The sequence number for the packet being written (it becomes taken by `on_sent`).
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// The packet numbered `next_seq()` went out, `len` bytes before SRTP.
    pub fn on_sent(&mut self, len: usize, now: Instant) {
        self.estimator.on_sent(self.seq, len + SRTP_OVERHEAD, now);
        self.seq = self.seq.wrapping_add(1);
    }

    /// The packet numbered `seq` left only now (a pacer held it).
    pub fn on_departed(&mut self, seq: u16, now: Instant) {
        self.estimator.on_departed(seq, now);
    }

    /// The rate the transport's pacer paces for: the estimate, or a running probe's rate
    /// with audio's allowance if that is higher.
    pub fn pacing_bps(&self) -> u64 {
        let probe = self
            .probe
            .map_or(0, |(_, bps)| bps.saturating_add(AUDIO_ALLOWANCE_BPS));
        self.estimator.target_bps().max(probe)
    }

    pub fn on_feedback(&mut self, now: Instant, feedback: &twcc::Feedback<'_>) {
        self.estimator.on_feedback(now, feedback);
        let state = self.estimator.state();
        if self.probe.is_some() && state.usage == Usage::Overusing {
            // The path did not carry it: back off before the next.
            self.probe = None;
            self.failures = self.failures.saturating_add(1);
            let wait = PROBE_INTERVAL.saturating_mul(1 << self.failures.min(6));
            self.next_probe = Some(now + wait.min(MAX_PROBE_WAIT));
        } else if self.probe.is_some() && !state.probing {
            // It ran its course without a queue.
            self.probe = None;
            self.failures = 0;
        }
    }

    /// What the consumers' video may use now: the estimate less an allowance for audio, or a
    /// running probe's rate.
    pub fn video_budget(&mut self, now: Instant) -> u64 {
        self.expire_probe(now);
        match self.probe {
            Some((_, bps)) => bps,
            None => self
                .estimator
                .target_bps()
                .saturating_sub(AUDIO_ALLOWANCE_BPS),
        }
    }

    /// Starts a probe if the estimator wants one (it sends less than the path may carry and
    /// has been clean for a while); the caller then forwards a higher layer for a while, and
    /// the estimate follows if the path carries it. Returns whether one started.
    pub fn start_probe(&mut self, now: Instant) -> bool {
        if self.probe.is_some() || self.next_probe.is_some_and(|t| t > now) {
            return false;
        }
        match self.estimator.wants_probe(now) {
            Some(bps) => {
                self.probe = Some((now + PROBE_DURATION, bps));
                true
            }
            None => false,
        }
    }

    /// When a running probe ends (layers are chosen again then).
    pub fn probe_ends(&self) -> Option<Instant> {
        self.probe.map(|(until, _)| until)
    }

    /// Ends a probe whose time is up; returns whether one ended.
    pub fn expire_probe(&mut self, now: Instant) -> bool {
        let ended = self.probe.is_some_and(|(until, _)| until <= now);
        if ended {
            self.probe = None;
        }
        ended
    }
}
