//! Fan-out a frame at a time, so that each consumer's packets of a frame leave as one UDP GSO
//! train (`crate::io::gso`), and a keyframe's fan-out is spread over ticks.
//!
//! A publisher's pacer spreads a frame's packets over up to half a frame interval, so a
//! receive batch rarely holds two packets of one stream, and a packet-at-a-time fan-out gives
//! each consumer one datagram per batch: nothing to put in a train. So a video layer's packets
//! are held (they are in its NACK history already, so holding copies nothing) until the
//! frame's last packet (the marker), a packet of a newer frame, [`MAX_FRAME_PACKETS`], or
//! [`MAX_HOLD`]; then the frame is written consumer by consumer. A frame cannot be decoded
//! before its last packet arrives, so holding its first ones delays the picture by no more than
//! the fan-out itself.
//!
//! GSO cuts a train into segments of one size (the last may be shorter), and a packetizer's
//! sizes differ by a byte or two, so the frame's packets but its last are padded (RTP padding,
//! at most [`MAX_PAD`] bytes each) to the largest.
//!
//! A frame goes to its consumers as a [`Job`]; jobs run in arrival order, and a job stops when
//! the send buffers run short ([`super::Output::room`]) and goes on at the router's next
//! timeout, right after the I/O loop has sent what was queued. A large keyframe to many
//! subscribers thus leaves over several loop turns instead of overflowing the send pool, and
//! it goes first to the consumers waiting for it (those starting or switching layers).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use slab::Slab;

use super::consumer::{Consumer, Read};
use super::producer::Producer;
use super::{Forward, Member, Output, forward};
use crate::media::Codec;
use crate::rtp;
use crate::stats::{Counters, DropReason};

/// The most packets of a frame held: the most segments in a GSO train.
pub const MAX_FRAME_PACKETS: u16 = 64;
/// The longest a frame's first packet is held: a publisher paces a keyframe over tens of
/// milliseconds, and past this the part that came goes on its own.
pub const MAX_HOLD: Duration = Duration::from_millis(50);
/// The most padding added to a packet to make it as large as its frame's others. Packetizers
/// split a frame into parts within a few bytes of each other.
pub const MAX_PAD: usize = 32;
/// Frames waiting to go out in one router; past it the oldest is dropped (counted): the
/// worker is far behind.
pub const MAX_JOBS: usize = 1024;

/// The packets of a layer's frame being held, by sequence number: `first` and the `count`
/// after it (gaps are packets lost on the way in; the history has no entry for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub span: Span,
    pub timestamp: u32,
    pub since: Instant,
}

/// Consecutive sequence numbers of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u16,
    pub count: u16,
    /// Whether a packet of it starts a keyframe: its consumers waiting for one go first.
    pub keyframe: bool,
}

/// A video packet as the hold sees it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub keyframe: bool,
}

/// Offers a packet to the layer's held frame; returns the spans to send now, in order (at most
/// two: the frame it ended, then itself when it is a frame of its own).
pub fn hold(held: &mut Option<Held>, p: Arrival, now: Instant) -> [Option<Span>; 2] {
    let mut out = [None, None];
    if let Some(h) = held.as_mut() {
        let ahead = p.seq.wrapping_sub(h.span.first);
        if ahead >= 0x8000 {
            // Older than the frame: late or resent; it goes at once, on its own.
            out[0] = Some(Span {
                first: p.seq,
                count: 1,
                keyframe: p.keyframe,
            });
            return out;
        }
        if p.timestamp == h.timestamp && ahead < MAX_FRAME_PACKETS {
            h.span.count = h.span.count.max(ahead + 1);
            h.span.keyframe |= p.keyframe;
            if p.marker || h.span.count == MAX_FRAME_PACKETS {
                out[0] = held.take().map(|h| h.span);
            }
            return out;
        }
        // A newer frame (or one too long to hold whole): the held one goes first.
        out[0] = held.take().map(|h| h.span);
    }
    let span = Span {
        first: p.seq,
        count: 1,
        keyframe: p.keyframe,
    };
    if p.marker {
        out[usize::from(out[0].is_some())] = Some(span);
    } else {
        *held = Some(Held {
            span,
            timestamp: p.timestamp,
            since: now,
        });
    }
    out
}

/// A span on its way to the consumers of `producer`'s `layer`.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub producer: usize,
    pub layer: usize,
    pub span: Span,
    /// Marks the consumers it was written for (see `Consumer::fanned`): a pass, or a job going
    /// on after a stop, skips those, so no position is kept that consumers coming and going
    /// in the meantime could shift.
    pub serial: u32,
    /// Whether it is still in the pass over consumers waiting for a keyframe.
    pub waiting_pass: bool,
}

/// A router's frames held and on their way out.
#[derive(Default)]
pub struct Fanout {
    /// Whether video is held a frame at a time (on where GSO trains are sent); off, every
    /// packet goes to the consumers as it comes.
    pub enabled: bool,
    jobs: VecDeque<Job>,
    serial: u32,
    /// When the earliest held frame is due out ([`MAX_HOLD`]).
    held_due: Option<Instant>,
    /// Set when a job stopped for want of send buffers: the router's next timeout goes on.
    resume: Option<Instant>,
    /// The packets of the job at the front, read once for all its consumers.
    frame: Frame,
}

/// A job's packets as read from the history.
#[derive(Default)]
struct Frame {
    serial: Option<u32>,
    packets: Vec<Packet>,
    sizes: Vec<Option<usize>>,
    pads: Vec<usize>,
}

struct Packet {
    seq: u16,
    header: rtp::Header,
    keyframe: bool,
    vp8: Option<rtp::Vp8Fields>,
    pad: usize,
}

impl Fanout {
    /// When the router should call [`Fanout::run`] again.
    pub fn due(&self) -> Option<Instant> {
        match (self.resume, self.held_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A layer holds a frame since `since`.
    pub fn holding(&mut self, since: Instant) {
        let due = since + MAX_HOLD;
        self.held_due = Some(self.held_due.map_or(due, |d| d.min(due)));
    }

    /// Queues a span for the consumers of `producer`'s `layer`.
    pub fn push(&mut self, producer: usize, layer: usize, span: Span, counters: &mut Counters) {
        if self.jobs.len() >= MAX_JOBS {
            self.jobs.pop_front();
            counters.drop(DropReason::FanoutBacklog);
        }
        // Zero is every consumer's mark before its first frame.
        self.serial = self.serial.wrapping_add(1).max(1);
        if span.count > 1 {
            counters.frames_fanned += 1;
        }
        self.jobs.push_back(Job {
            producer,
            layer,
            span,
            serial: self.serial,
            waiting_pass: span.keyframe,
        });
    }

    /// Forgets the jobs of a producer that is gone (its key may come back for another).
    pub fn forget(&mut self, producer: usize) {
        self.jobs.retain(|j| j.producer != producer);
        self.frame.serial = None;
    }

    /// Queues the held frames whose time is up at `now`.
    pub fn expire(
        &mut self,
        now: Instant,
        producers: &mut Slab<Producer>,
        counters: &mut Counters,
    ) {
        if self.held_due.is_none_or(|d| d > now) {
            return;
        }
        self.held_due = None;
        for (key, p) in producers.iter_mut() {
            for (layer, l) in p.layers.iter_mut().enumerate() {
                let Some(h) = l.held else { continue };
                if h.since + MAX_HOLD <= now {
                    l.held = None;
                    self.push(key, layer, h.span, counters);
                } else {
                    self.holding(h.since);
                }
            }
        }
    }

    /// Writes the queued frames to their consumers, oldest first, while the output has room.
    pub fn run(
        &mut self,
        now: Instant,
        producers: &Slab<Producer>,
        consumers: &mut Slab<Consumer>,
        members: &mut Slab<Member>,
        out: &mut impl Output,
    ) {
        let was_waiting = self.resume.take().is_some();
        while let Some(job) = self.jobs.front_mut() {
            if !self
                .frame
                .fan_out(job, now, producers, consumers, members, out)
            {
                // Just after `now`: the engine runs what is due at `now` until nothing is, so
                // a job due at `now` would spin with no buffer freed; this one waits for the
                // loop's next turn, which sends what is queued first, and does not sleep.
                self.resume = Some(now + Duration::from_nanos(1));
                // Counted once per wait, not again for each packet that finds it waiting.
                if !was_waiting {
                    out.counters().fanout_deferred += 1;
                }
                return;
            }
            self.jobs.pop_front();
        }
    }
}

impl Frame {
    /// Reads the job's packets from the history, with their padding.
    fn read(&mut self, job: &Job, history: &super::history::History, codec: Codec) {
        self.serial = Some(job.serial);
        self.packets.clear();
        self.sizes.clear();
        for i in 0..job.span.count {
            let seq = job.span.first.wrapping_add(i);
            let parsed = history
                .get(seq)
                .and_then(|p| Some((p.len(), rtp::Header::parse(p).ok()?, p)));
            self.sizes.push(parsed.map(|(len, ..)| len));
            if let Some((_, header, p)) = parsed {
                let payload = p
                    .get(header.payload_offset..header.payload_end)
                    .unwrap_or_default();
                self.packets.push(Packet {
                    seq,
                    header,
                    keyframe: rtp::is_keyframe(codec, payload),
                    vp8: (codec == Codec::Vp8)
                        .then(|| rtp::vp8_picture_fields(payload))
                        .flatten(),
                    pad: 0,
                });
            }
        }
        padding(&self.sizes, &mut self.pads);
        let pads = self
            .sizes
            .iter()
            .zip(&self.pads)
            .filter(|(s, _)| s.is_some());
        for (packet, (_, &pad)) in self.packets.iter_mut().zip(pads) {
            packet.pad = pad;
        }
    }

    /// Writes the job's frame for the consumers that have not had it, those waiting for its
    /// keyframe first; false if it stopped again for want of room.
    fn fan_out(
        &mut self,
        job: &mut Job,
        now: Instant,
        producers: &Slab<Producer>,
        consumers: &mut Slab<Consumer>,
        members: &mut Slab<Member>,
        out: &mut impl Output,
    ) -> bool {
        let Some(p) = producers.get(job.producer) else {
            return true;
        };
        let Some(history) = p.layers.get(job.layer).and_then(|l| l.history.as_ref()) else {
            return true;
        };
        if self.serial != Some(job.serial) {
            self.read(job, history, p.codec);
        }
        if self.packets.is_empty() {
            return true;
        }
        for waiting_pass in [true, false] {
            if waiting_pass && !job.waiting_pass {
                continue;
            }
            for &c in &p.consumers {
                let Some(consumer) = consumers.get_mut(c) else {
                    continue;
                };
                if consumer.fanned == job.serial || (waiting_pass && !consumer.waits_for(job.layer))
                {
                    continue;
                }
                if out.room() < self.packets.len() {
                    return false;
                }
                consumer.fanned = job.serial;
                for packet in &self.packets {
                    let Some(data) = history.get(packet.seq) else {
                        continue;
                    };
                    let f = Forward {
                        header: &packet.header,
                        packet: data,
                        layer: job.layer,
                        video: true,
                        keyframe: packet.keyframe,
                        clock_rate: p.clock_rate,
                        read: Read {
                            vp8: packet.vp8.as_ref(),
                            level: None,
                        },
                        pad: packet.pad,
                    };
                    forward(consumer, members, &f, now, out);
                }
            }
            job.waiting_pass = false;
        }
        true
    }
}

/// The padding for each packet of a frame, given their sizes in order (`None`: lost): all but
/// the last are padded to the largest of them, where that takes at most [`MAX_PAD`] bytes.
pub fn padding(sizes: &[Option<usize>], pads: &mut Vec<usize>) {
    pads.clear();
    let last = sizes.iter().rposition(Option::is_some);
    let target = sizes[..last.unwrap_or(0)]
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or(0);
    pads.extend(sizes.iter().enumerate().map(|(i, size)| match size {
        Some(s) if Some(i) != last && target - s <= MAX_PAD => target - s,
        _ => 0,
    }));
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(seq: u16, timestamp: u32, marker: bool) -> Arrival {
        Arrival {
            seq,
            timestamp,
            marker,
            keyframe: false,
        }
    }

    fn span(first: u16, count: u16) -> Option<Span> {
        Some(Span {
            first,
            count,
            keyframe: false,
        })
    }

    #[test]
    fn a_frame_is_held_until_its_marker() {
        let now = Instant::now();
        let mut held = None;
        assert_eq!(
            hold(&mut held, arrival(65534, 90, false), now),
            [None, None]
        );
        assert_eq!(
            hold(&mut held, arrival(65535, 90, false), now),
            [None, None]
        );
        // A gap (a packet lost on the way in) is spanned.
        assert_eq!(
            hold(&mut held, arrival(1, 90, true), now),
            [span(65534, 4), None]
        );
        assert_eq!(held, None);
        // A frame of one packet goes at once.
        assert_eq!(
            hold(&mut held, arrival(2, 180, true), now),
            [span(2, 1), None]
        );
    }

    #[test]
    fn a_newer_frame_ends_the_held_one_and_late_packets_go_alone() {
        let now = Instant::now();
        let mut held = None;
        hold(&mut held, arrival(10, 90, false), now);
        hold(&mut held, arrival(11, 90, false), now);
        // Its marker was lost: the next frame's first packet sends it.
        assert_eq!(
            hold(&mut held, arrival(12, 180, false), now),
            [span(10, 2), None]
        );
        // Resent, older than the held frame: alone, and the frame stays held.
        assert_eq!(
            hold(&mut held, arrival(11, 90, false), now),
            [span(11, 1), None]
        );
        assert_eq!(held.map(|h| h.span), span(12, 1));
        // The next frame in one packet: both go, in order.
        assert_eq!(
            hold(&mut held, arrival(13, 270, true), now),
            [span(12, 1), span(13, 1)]
        );
    }

    #[test]
    fn a_frame_goes_at_the_train_limit_and_remembers_a_keyframe() {
        let now = Instant::now();
        let mut held = None;
        let mut key = arrival(100, 0, false);
        key.keyframe = true;
        hold(&mut held, key, now);
        for seq in 101..100 + MAX_FRAME_PACKETS - 1 {
            assert_eq!(hold(&mut held, arrival(seq, 0, false), now), [None, None]);
        }
        let [sent, none] = hold(
            &mut held,
            arrival(100 + MAX_FRAME_PACKETS - 1, 0, false),
            now,
        );
        assert_eq!(none, None);
        assert_eq!(
            sent,
            Some(Span {
                first: 100,
                count: MAX_FRAME_PACKETS,
                keyframe: true
            })
        );
    }

    #[test]
    fn all_but_the_last_are_padded_to_the_largest() {
        let mut pads = Vec::new();
        padding(
            &[Some(1180), Some(1181), None, Some(1179), Some(400)],
            &mut pads,
        );
        assert_eq!(pads, [1, 0, 0, 2, 0]);
        // Too far below the largest to pad: left as it is (the train ends there).
        padding(&[Some(1200), Some(900), Some(1200), Some(1300)], &mut pads);
        assert_eq!(pads, [0, 0, 0, 0]);
        padding(&[Some(500)], &mut pads);
        assert_eq!(pads, [0]);
        padding(&[], &mut pads);
        assert!(pads.is_empty());
    }
}
