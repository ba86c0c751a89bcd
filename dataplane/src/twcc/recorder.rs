//! The receive side of transport-wide congestion control: what the SFU records of a
//! publisher's packets and reports back to it, so that the browser's own send-side estimator
//! (draft-ietf-rmcat-gcc-02 §3 with draft-holmer-rmcat-transport-wide-cc-extensions-01) can
//! see the path's queueing delay and losses.
//!
//! The router calls [`Recorder::record`] for each packet that carries the transport-wide
//! sequence number extension, and [`Recorder::poll_feedback`] every [`FEEDBACK_INTERVAL`]
//! (or at [`Recorder::poll_timeout`]) until it returns `None`.
//!
//! Late packets: a packet that arrives after a feedback already reported it lost moves the
//! start of the next feedback back to it, so the next feedback covers it (and the packets
//! after it, again) as libwebrtc's receiver does. The sender then counts it received; its
//! estimator ignores the repeated reports of the others. Packets older than the ring
//! ([`CAPACITY`] packets behind the highest) are dropped and counted, unless a second one
//! follows the first closely: then, as for a jump ahead past the ring, the sender restarted
//! its numbering and recording starts over from it.

use std::time::{Duration, Instant};

use super::{DELTA_TICK_US, REFERENCE_UNIT_US, write};

/// How often the router should ask for feedback. 50 ms: the sender's delay detector sees a
/// queue building within one or two feedback intervals, and with Chrome's 5 ms packet groups a
/// feedback still describes ten groups or more; libwebrtc's receiver adapts between 50 and
/// 250 ms to keep feedback near 5% of the media rate, and at 50 ms a feedback costs about
/// 20 bytes plus 1.3 bytes per packet (some 7 kbit/s for a 2.5 Mbit/s publisher), well under
/// that.
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(50);

/// Packets remembered: at 1,000 packets per second (about 10 Mbit/s) two seconds, forty
/// feedback intervals. A power of two, so a slot is the sequence number's low bits. With the
/// scratch for one feedback, 48 KiB per publisher transport.
pub const CAPACITY: usize = 2048;

/// At most this many packets in one feedback (one status count; 1.3 bytes each, so a feedback
/// of this many would not fit a datagram anyway).
const MAX_PER_FEEDBACK: usize = 1024;

/// A forward jump larger than the ring: the sender restarted its numbering (or the packet is
/// garbage); what was recorded is forgotten rather than reported as thousands of losses.
const RESTART_JUMP: u64 = CAPACITY as u64;

/// A packet far behind the highest that follows a dropped one by at most this much is a
/// restart of the numbering, not a stray.
const STRAY_RUN: u16 = 16;

/// The RTCP common header (4) and the two SSRCs (8) before the FCI (RFC 4585 §6.1).
const HEADER_LEN: usize = 12;

/// One slot of the ring: which extended sequence number it holds, and when that packet
/// arrived (µs since the epoch).
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    arrival_us: i64,
}

const EMPTY: Slot = Slot {
    seq: u64::MAX,
    arrival_us: 0,
};

/// Arrival times of one transport's packets by transport-wide sequence number, and the
/// feedback that reports them. Allocates only in [`Recorder::new`].
#[derive(Debug)]
pub struct Recorder {
    epoch: Instant,
    ring: Box<[Slot]>,
    /// Scratch for the arrivals of one feedback.
    arrivals: Box<[Option<i64>]>,
    /// The highest extended sequence number received.
    highest: Option<u64>,
    /// The first extended sequence number the next feedback reports.
    next_report: u64,
    feedback_count: u8,
    last_feedback: Option<Instant>,
    /// The last packet dropped as far behind the highest.
    stray: Option<u16>,
    /// Packets too old for the ring, or duplicates.
    dropped: u64,
}

impl Recorder {
    /// Arrival times are kept in microseconds since `epoch` (any instant before the first
    /// packet; the reference time in the feedback counts from it).
    pub fn new(epoch: Instant) -> Recorder {
        Recorder {
            epoch,
            ring: vec![EMPTY; CAPACITY].into_boxed_slice(),
            arrivals: vec![None; MAX_PER_FEEDBACK].into_boxed_slice(),
            highest: None,
            next_report: 0,
            feedback_count: 0,
            last_feedback: None,
            stray: None,
            dropped: 0,
        }
    }

    /// Records that the packet with transport-wide sequence number `seq` arrived at
    /// `arrival`. Reordered, late and duplicate packets are handled; see the module docs.
    pub fn record(&mut self, seq: u16, arrival: Instant) {
        let arrival_us = i64::try_from(arrival.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(i64::MAX / 2);
        let Some(highest) = self.highest else {
            // Extended numbers start one wrap up, so reordering before the first packet
            // does not go below zero.
            let ext = (1 << 16) + u64::from(seq);
            self.restart(ext, arrival_us);
            return;
        };
        let Some(ext) = super::extend(highest, seq) else {
            self.dropped += 1;
            return;
        };
        if ext > highest {
            if ext - highest > RESTART_JUMP {
                self.restart(ext, arrival_us);
                return;
            }
            self.highest = Some(ext);
            // Unreported packets the ring is about to overwrite are given up.
            let oldest = ext + 1 - CAPACITY as u64;
            if self.next_report < oldest {
                self.next_report = oldest;
            }
        } else if highest - ext >= CAPACITY as u64 {
            // Far behind: a stray, or the sender restarted its numbering lower. Two in a row
            // (the second just after the first) is a restart.
            let follows = self
                .stray
                .is_some_and(|s| (1..=STRAY_RUN).contains(&seq.wrapping_sub(s)));
            if follows {
                // Numbered past everything in the ring, so no old slot matches.
                let ext = ((highest >> 16) + 2) << 16 | u64::from(seq);
                self.restart(ext, arrival_us);
            } else {
                self.stray = Some(seq);
                self.dropped += 1;
            }
            return;
        }
        let slot = self.slot(ext);
        if slot.seq == ext {
            self.dropped += 1;
            return;
        }
        *slot = Slot {
            seq: ext,
            arrival_us,
        };
        if ext < self.next_report {
            // Late: reported lost already; report it (and what follows) again.
            self.next_report = ext;
        }
    }

    fn restart(&mut self, ext: u64, arrival_us: i64) {
        self.stray = None;
        self.highest = Some(ext);
        self.next_report = ext;
        *self.slot(ext) = Slot {
            seq: ext,
            arrival_us,
        };
    }

    fn slot(&mut self, ext: u64) -> &mut Slot {
        // The ring's length is CAPACITY, a power of two, so the masked index is in range.
        let i = (ext as usize) & (CAPACITY - 1);
        &mut self.ring[i]
    }

    fn arrival(&self, ext: u64) -> Option<i64> {
        let slot = self.ring.get((ext as usize) & (CAPACITY - 1))?;
        (slot.seq == ext).then_some(slot.arrival_us)
    }

    /// When the next feedback is due: [`FEEDBACK_INTERVAL`] after the last one, if anything
    /// is unreported; `None` when nothing is.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let highest = self.highest?;
        if self.next_report > highest {
            return None;
        }
        Some(match self.last_feedback {
            Some(last) => last + FEEDBACK_INTERVAL,
            None => self.epoch,
        })
    }

    /// Packets dropped as too old for the ring or as duplicates.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes one RTCP transport-cc feedback packet (RTPFB, FMT 15, RFC 4585 §6.1 with
    /// draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1) into `out` for the packets
    /// not yet reported, up to the highest received; returns its length. If they do not all
    /// fit in `out` (or a receive delta does not fit in 16 bits), the feedback stops early
    /// and the next call continues; `None` when nothing is left to report (or `out` cannot
    /// hold even one packet: 24 bytes).
    pub fn poll_feedback(
        &mut self,
        now: Instant,
        sender_ssrc: u32,
        media_ssrc: u32,
        out: &mut [u8],
    ) -> Option<usize> {
        let highest = self.highest?;
        let first = self.next_report;
        if first > highest {
            return None;
        }
        let room = out.len().checked_sub(HEADER_LEN)?;
        // The reference time: the first received packet's arrival, floored to 64 ms. One is
        // always in range: the highest was received.
        let first_arrival = (first..=highest).find_map(|s| self.arrival(s))?;
        let reference = first_arrival.div_euclid(REFERENCE_UNIT_US);
        // How many packets fit: walk them as `twcc::write` will (two-bit vectors, one or two
        // delta bytes, rounding to ticks from the previous tick).
        let mut previous = reference * REFERENCE_UNIT_US / DELTA_TICK_US;
        let mut delta_bytes = 0usize;
        let mut count = 0usize;
        let mut ext = first;
        while ext <= highest && count < self.arrivals.len() {
            let arrival = self.arrival(ext);
            let mut bytes = 0;
            if let Some(us) = arrival {
                let tick = (us + DELTA_TICK_US / 2).div_euclid(DELTA_TICK_US);
                let delta = tick - previous;
                bytes = if u8::try_from(delta).is_ok() {
                    1
                } else if i16::try_from(delta).is_ok() {
                    2
                } else {
                    break;
                };
                let fci = 8 + 2 * (count + 1).div_ceil(7) + delta_bytes + bytes;
                if fci.next_multiple_of(4) > room {
                    break;
                }
                previous = tick;
            } else if (8 + 2 * (count + 1).div_ceil(7) + delta_bytes).next_multiple_of(4) > room {
                break;
            }
            delta_bytes += bytes;
            if let Some(a) = self.arrivals.get_mut(count) {
                *a = arrival;
            }
            count += 1;
            ext += 1;
        }
        if count == 0 {
            return None;
        }
        // The reference time is 24 bits on the wire, wrapping after 2^24 × 64 ms (12 days);
        // the arrivals are shifted with it.
        let wrapped = (((reference & 0xFF_FFFF) << 8) as i32) >> 8;
        let shift = (reference - i64::from(wrapped)) * REFERENCE_UNIT_US;
        let arrivals = self.arrivals.get_mut(..count)?;
        for a in arrivals.iter_mut().flatten() {
            *a -= shift;
        }
        let fci_len = write(
            out.get_mut(HEADER_LEN..)?,
            first as u16,
            wrapped,
            self.feedback_count,
            arrivals,
        )
        .ok()?;
        let len = HEADER_LEN + fci_len;
        let header = out.get_mut(..HEADER_LEN)?;
        header[0] = 0x80 | 15; // V=2, no padding, FMT 15
        header[1] = 205; // RTPFB
        header[2..4].copy_from_slice(&u16::try_from(len / 4 - 1).ok()?.to_be_bytes());
        header[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
        header[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
        self.next_report = ext;
        self.feedback_count = self.feedback_count.wrapping_add(1);
        self.last_feedback = Some(now);
        Some(len)
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtcp::{self, Packet};
    use crate::twcc::Feedback;

    /// One feedback read back: its count and every (sequence, arrival µs) it reports.
    type Parsed = (u8, Vec<(u16, Option<i64>)>);

    /// Parses a datagram of our feedback back: (base, count, every result with arrival µs
    /// relative to the feedback's own timeline).
    fn parse(buf: &[u8]) -> Parsed {
        let mut packets = rtcp::packets(buf);
        let Some(Ok(Packet::TransportCc {
            sender_ssrc,
            media_ssrc,
            feedback,
        })) = packets.next()
        else {
            panic!("not a transport-cc packet");
        };
        assert!(packets.next().is_none());
        assert_eq!((sender_ssrc, media_ssrc), (1, 2));
        let results = feedback.results().collect::<Result<Vec<_>, _>>().unwrap();
        assert_eq!(results.len(), usize::from(feedback.status_count));
        // Also through the bare FCI, as the brief's round trip reads it.
        let again = Feedback::parse(&buf[12..]).unwrap();
        assert_eq!(again.results().count(), results.len());
        (feedback.feedback_count, results)
    }

    fn drain(r: &mut Recorder, now: Instant, mtu: usize) -> Vec<Parsed> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; mtu];
        while let Some(n) = r.poll_feedback(now, 1, 2, &mut buf) {
            assert_eq!(n % 4, 0);
            assert_eq!(usize::from(u16::from_be_bytes([buf[2], buf[3]])), n / 4 - 1);
            out.push(parse(&buf[..n]));
        }
        out
    }

    #[test]
    fn round_trips_a_trace_with_losses_reordering_and_wrap() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        assert_eq!(r.poll_feedback(t0, 1, 2, &mut [0; 1200]), None);
        // 201 packets from 65_500 (wrapping at 36), every 7th lost, pairs swapped every 10th,
        // arrivals 1.3 ms apart with jitter.
        let mut sent = Vec::new();
        for i in 0u16..201 {
            let seq = 65_500u16.wrapping_add(i);
            let at_us = 1_000_000 + u64::from(i) * 1_300 + u64::from(i % 3) * 170;
            if i % 7 != 3 {
                sent.push((seq, at_us));
            }
        }
        for pair in sent.chunks_mut(2).step_by(5) {
            pair.reverse();
        }
        for &(seq, at_us) in &sent {
            r.record(seq, t0 + Duration::from_micros(at_us));
        }
        let feedbacks = drain(&mut r, t0 + Duration::from_secs(2), 1200);
        assert_eq!(feedbacks.len(), 1);
        let (count, results) = &feedbacks[0];
        assert_eq!(*count, 0);
        assert_eq!(results.len(), 201);
        assert_eq!(results[0].0, 65_500);
        assert_eq!(results[200].0, 164);
        let truth: std::collections::HashMap<u16, u64> = sent.iter().copied().collect();
        // Compare deltas from the first packet (the feedback's clock is its own).
        let base_got = results[0].1.unwrap();
        let base_true = truth[&65_500] as i64;
        for (seq, arrival) in results {
            match truth.get(seq) {
                None => assert_eq!(*arrival, None, "{seq} was lost"),
                Some(&us) => {
                    let got = arrival.unwrap() - base_got;
                    let want = us as i64 - base_true;
                    assert!((got - want).abs() <= 250, "{seq}: {got} vs {want}");
                }
            }
        }
        // Nothing new, nothing sent; the count increments with the next one.
        assert!(drain(&mut r, t0 + Duration::from_secs(3), 1200).is_empty());
        r.record(165, t0 + Duration::from_secs(3));
        let next = drain(&mut r, t0 + Duration::from_secs(3), 1200);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0, 1);
        assert_eq!(next[0].1, vec![(165, next[0].1[0].1)]);
    }

    #[test]
    fn splits_when_the_buffer_is_small_and_when_a_delta_does_not_fit() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        for i in 0u16..300 {
            r.record(i, t0 + Duration::from_millis(u64::from(i)));
        }
        let parts = drain(&mut r, t0, 100);
        assert!(parts.len() > 3);
        let seqs: Vec<u16> = parts.iter().flat_map(|p| p.1.iter().map(|r| r.0)).collect();
        assert_eq!(
            seqs,
            (0..300).collect::<Vec<_>>(),
            "contiguous, no gap, no repeat"
        );
        let counts: Vec<u8> = parts.iter().map(|p| p.0).collect();
        assert_eq!(counts, (0..parts.len() as u8).collect::<Vec<_>>());

        // 10 s between two packets: more than 16 bits of 250 µs ticks (8.2 s).
        r.record(300, t0 + Duration::from_secs(1));
        r.record(301, t0 + Duration::from_secs(11));
        let parts = drain(&mut r, t0, 1200);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1.len(), 1);
        assert_eq!(parts[1].1[0].0, 301);
    }

    #[test]
    fn late_packets_are_reported_again_duplicates_and_ancient_ones_dropped() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        for i in [0u16, 1, 3] {
            r.record(i, t0 + Duration::from_millis(u64::from(i)));
        }
        let first = drain(&mut r, t0, 1200);
        assert_eq!(first[0].1[2], (2, None));
        r.record(2, t0 + Duration::from_millis(20));
        r.record(2, t0 + Duration::from_millis(21));
        assert_eq!(r.dropped(), 1);
        let again = drain(&mut r, t0, 1200);
        let seqs: Vec<(u16, bool)> = again[0].1.iter().map(|x| (x.0, x.1.is_some())).collect();
        assert_eq!(seqs, [(2, true), (3, true)]);

        // Far behind the ring: dropped.
        for i in 4u16..5000 {
            r.record(i, t0 + Duration::from_millis(30));
        }
        drain(&mut r, t0, 1200);
        r.record(10, t0 + Duration::from_millis(40));
        assert_eq!(r.dropped(), 2);
        assert!(drain(&mut r, t0, 1200).is_empty());
    }

    #[test]
    fn a_jump_far_ahead_restarts() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        r.record(100, t0);
        r.record(100 + 20_000, t0 + Duration::from_millis(1));
        let parts = drain(&mut r, t0, 1200);
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].1.len(),
            1,
            "the gap is not reported as 20,000 losses"
        );
        assert_eq!(parts[0].1[0].0, 20_100);
    }

    #[test]
    fn a_restart_lower_is_followed_after_two_packets() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        for i in 40_000u16..40_010 {
            r.record(i, t0);
        }
        drain(&mut r, t0, 1200);
        r.record(10_000, t0);
        assert_eq!(r.dropped(), 1, "one stray");
        assert!(drain(&mut r, t0, 1200).is_empty());
        r.record(10_001, t0);
        r.record(10_002, t0);
        let parts = drain(&mut r, t0, 1200);
        let seqs: Vec<u16> = parts[0].1.iter().map(|x| x.0).collect();
        assert_eq!(seqs, [10_001, 10_002]);
        // Far behind the new numbering: a stray again.
        r.record(5_000, t0);
        assert_eq!(r.dropped(), 2);
    }

    #[test]
    fn poll_timeout_follows_the_interval() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        assert_eq!(r.poll_timeout(), None);
        r.record(5, t0 + Duration::from_millis(3));
        assert_eq!(r.poll_timeout(), Some(t0));
        let now = t0 + Duration::from_millis(10);
        assert!(r.poll_feedback(now, 1, 2, &mut [0; 64]).is_some());
        assert_eq!(r.poll_timeout(), None);
        r.record(6, now);
        assert_eq!(r.poll_timeout(), Some(now + FEEDBACK_INTERVAL));
        assert_eq!(r.poll_feedback(now, 1, 2, &mut [0; 23]), None);
    }

    proptest::proptest! {
        /// Any arrivals, any buffer sizes: every feedback written parses whole.
        #[test]
        fn whatever_arrives_the_feedback_parses(
            events in proptest::collection::vec((proptest::prelude::any::<u16>(), 0u64..20_000, 0usize..1500), 1..300)
        ) {
            let t0 = Instant::now();
            let mut r = Recorder::new(t0);
            let mut at = t0;
            let mut buf = vec![0u8; 1500];
            for (i, (seq, step_us, poll)) in events.into_iter().enumerate() {
                at += Duration::from_micros(step_us);
                // Half near the last number, half anywhere.
                let seq = if i % 2 == 0 { seq % 64 } else { seq };
                r.record(seq, at);
                if poll % 5 == 0 {
                    while let Some(n) = r.poll_feedback(at, 1, 2, &mut buf[..poll]) {
                        proptest::prop_assert!(n <= poll);
                        parse(&buf[..n]);
                    }
                }
            }
        }
    }

    #[test]
    fn a_late_epoch_and_a_long_run_do_not_panic() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0 + Duration::from_secs(5));
        let mut buf = [0u8; 1200];
        for i in 0u32..200_000 {
            r.record(
                i as u16 ^ 0x5A5A,
                t0 + Duration::from_micros(u64::from(i) * 37),
            );
            if i % 97 == 0 {
                while r.poll_feedback(t0, 1, 2, &mut buf).is_some() {}
            }
        }
    }
}
