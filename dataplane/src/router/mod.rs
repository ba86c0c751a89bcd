//! SFU routing in mediasoup's terms: a [`Router`] is a channel on a worker. It holds the
//! channel's producers (published tracks) and consumers (subscriptions to them), and does the
//! SFU's work on media: fan-out of each packet to its consumers, simulcast layer choice per
//! consumer, NACKs answered from a producer's history, keyframe requests to publishers
//! (rate-limited, repeated while a consumer waits), and the RTCP reports each transport gets.
//!
//! Simulcast: a producer has one RTP stream per layer (told apart by their rids, RFC 8852),
//! each with its own SSRC, history, statistics and keyframe requests. Each video consumer
//! forwards one layer and has a target layer: the highest layer that arrives and fits the
//! subscriber's preferences. A consumer whose target changes asks for a keyframe of the target
//! and goes on forwarding its layer until that keyframe comes, then switches
//! (`Rewrite::switch` keeps the subscriber's stream continuous), so it never freezes on a
//! switch.
//!
//! The router never touches sockets or SRTP. It knows each transport of its channel as a
//! member (its producers, consumers and RTCP sender SSRC) and hands packets in the clear to an
//! [`Output`], which encrypts them for the transport and queues them: the engine in production,
//! a recorder in the tests below.

mod bandwidth;
mod consumer;
mod fanout;
mod history;
mod mirror;
mod producer;
mod svc;
mod temporal;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;
use slab::Slab;

use bandwidth::{Bandwidth, Feedback};
use consumer::Consumer;
pub use consumer::{Read, Rewrite};
use fanout::{Arrival, Fanout};
use producer::Producer;

use crate::media::MediaKind;
use crate::pacer::Class;
use crate::rtcp;
use crate::rtp;
use crate::speaker::{self, Change, Detector, Talker};
use crate::spec::{
    ConsumerId, ConsumerSpec, Error, MediaEvent, Preferences, ProducerId, ProducerSpec, RouterId,
    Ssrc,
};
use crate::stats::{Counters, DropReason};
use crate::timers::Grid;
use crate::transport::TransportKey;

/// A consumer whose layer sends more than this many times its bandwidth budget leaves it at
/// once when it switches down (see `select_layer`); below that, it keeps it until the lower
/// layer's keyframe, so a probe that overshot a little costs no freeze.
const CONGESTED: f64 = 2.0;

/// Layers no consumer wants any more are told off only after this long.
const LAYERS_OFF_AFTER: Duration = Duration::from_secs(2);
/// Reports go to each connected transport this often.
pub const RTCP_INTERVAL: Duration = Duration::from_secs(1);
/// The bitrate we tell publishers they may use (REMB), until bandwidth estimation lands.
const REMB_BITRATE: u64 = 3_000_000;
/// CNAME in our RTCP SDES.
const CNAME: &str = "switchyard";
/// Report blocks (and REMB SSRCs) per receiver report: more producers on one transport than
/// this are left out of its reports.
const MAX_REPORT_BLOCKS: usize = 8;

/// Where a router's packets go: the transports of its worker. Each method writes one packet in
/// the clear through `write` (which returns its length, or `None` to send nothing), protects it
/// with the transport's SRTP context and queues it. They return whether it was queued: not when
/// the transport is not connected yet, `write` gave up, or no send buffer was free (which the
/// output counts).
///
/// RTP goes through the transport's pacer once [`Output::pace`] gave it a rate: `class` is the
/// packet's priority there, and `twcc` its transport-wide sequence number, whose real send time
/// the output reports with [`Router::on_departed`] if the pacer held it.
pub trait Output {
    fn send_rtp(
        &mut self,
        to: TransportKey,
        class: Class,
        twcc: Option<u16>,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool;
    /// Paces the transport's media for a path estimated at `target_bps`.
    fn pace(&mut self, to: TransportKey, target_bps: u64);
    fn send_rtcp(
        &mut self,
        to: TransportKey,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool;
    fn counters(&mut self) -> &mut Counters;
    /// How many more packets may be written now: a frame's fan-out waits for the next
    /// timeout below its size (see `fanout`).
    fn room(&self) -> usize {
        usize::MAX
    }
}

/// A transport as its router knows it.
struct Member {
    transport: TransportKey,
    /// Our SSRC as the sender of receiver reports, PLI, FIR and REMB to this transport.
    rtcp_ssrc: Ssrc,
    producers: Vec<usize>,
    consumers: Vec<usize>,
    /// When its next reports are due; `None` until the transport connects.
    next_report: Option<Instant>,
    /// A publisher that takes transport-cc feedback: what we write to it.
    feedback: Option<Feedback>,
    /// A subscriber that sends transport-cc feedback: the estimate of its path.
    bandwidth: Option<Bandwidth>,
    /// The home end of a shard link: the producers it carries (`mirror`).
    mirrored: Vec<usize>,
}

/// A channel on one worker.
pub struct Router {
    id: RouterId,
    members: Slab<Member>,
    producers: Slab<Producer>,
    consumers: Slab<Consumer>,
    /// Producers and consumers by the control plane's ids: consumers are attached to
    /// producers by id, and ids must be unique in the channel.
    producer_ids: HashMap<ProducerId, usize>,
    consumer_ids: HashMap<ConsumerId, usize>,
    /// Reports are due on this grid (see `Grid`), so they share wake-ups.
    grid: Grid,
    /// The earliest report or keyframe request due, kept current by every change that can make
    /// one due sooner and recomputed after each `handle_timeout`.
    deadline: Option<Instant>,
    /// Who speaks, from the audio producers' levels; run at `next_speaker_check` while the
    /// router has an audio producer with the level extension.
    speaker: Detector,
    next_speaker_check: Option<Instant>,
    /// Speaking changes for the control plane, taken by `poll_event`.
    events: VecDeque<MediaEvent>,
    /// Video held a frame at a time and frames on their way out.
    fanout: Fanout,
}

impl Router {
    pub fn new(id: RouterId, grid: Grid) -> Router {
        Router {
            id,
            members: Slab::new(),
            producers: Slab::new(),
            consumers: Slab::new(),
            producer_ids: HashMap::new(),
            consumer_ids: HashMap::new(),
            grid,
            deadline: None,
            speaker: Detector::default(),
            next_speaker_check: None,
            events: VecDeque::new(),
            fanout: Fanout::default(),
        }
    }

    /// Holds video a frame at a time for its fan-out (see `fanout`): where GSO sends each
    /// consumer's frame as one train.
    pub fn with_frame_fanout(mut self, on: bool) -> Router {
        self.fanout.enabled = on;
        self
    }

    pub fn id(&self) -> RouterId {
        self.id
    }

    /// Whether no transport is left (the router goes away then).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Adds transport `transport` with the producers it publishes and the consumers it
    /// receives; returns its member key. Consumers must name producers already in the router,
    /// and producer ids must be new: otherwise nothing is added.
    pub fn add_member(
        &mut self,
        now: Instant,
        transport: TransportKey,
        producers: &[ProducerSpec],
        consumers: &[ConsumerSpec],
        rtcp_ssrc: Ssrc,
        rng: &mut impl Rng,
    ) -> Result<usize, Error> {
        for (i, c) in consumers.iter().enumerate() {
            if !self.producer_ids.contains_key(&c.producer) {
                return Err(Error::Rejected(format!(
                    "producer {} is not in this channel",
                    c.producer
                )));
            }
            if self.consumer_ids.contains_key(&c.id) || consumers[..i].iter().any(|d| d.id == c.id)
            {
                return Err(Error::Rejected(format!("consumer {} exists", c.id)));
            }
        }
        for (i, p) in producers.iter().enumerate() {
            if self.producer_ids.contains_key(&p.id) || producers[..i].iter().any(|q| q.id == p.id)
            {
                return Err(Error::Rejected(format!("producer {} exists", p.id)));
            }
        }
        let member = self.members.vacant_key();
        let mut m = Member {
            transport,
            rtcp_ssrc,
            producers: Vec::with_capacity(producers.len()),
            consumers: Vec::with_capacity(consumers.len()),
            next_report: None,
            feedback: producers
                .iter()
                .find_map(|p| p.twcc_ext)
                .map(|ext| Feedback::new(ext, now)),
            bandwidth: consumers
                .iter()
                .find_map(|c| c.twcc_ext)
                .map(|ext| Bandwidth::new(ext, now)),
            mirrored: Vec::new(),
        };
        for spec in producers {
            let producer = Producer::new(member, spec);
            if producer.audio_level_ext.is_some() && self.next_speaker_check.is_none() {
                let at = self.grid.after(now + speaker::EVALUATE_EVERY);
                self.next_speaker_check = Some(at);
                self.lower_deadline(Some(at));
            }
            let key = self.producers.insert(producer);
            self.producer_ids.insert(spec.id, key);
            m.producers.push(key);
        }
        for spec in consumers {
            let Some((producer, p)) = self
                .producer_ids
                .get(&spec.producer)
                .and_then(|&k| Some((k, self.producers.get_mut(k)?)))
            else {
                continue;
            };
            let audio = p.kind == MediaKind::Audio;
            let prefs = Preferences::default();
            let target = choose_layer(p, &prefs, now, None, None);
            let key = self.consumers.insert(Consumer {
                id: spec.id,
                transport,
                member,
                producer,
                rewrite: Rewrite::new(spec, p.codec, rng).with_red(p.red, p.payload_type),
                nack: spec.nack,
                layer: audio.then_some(0),
                target,
                prefs,
                packets: 0,
                octets: 0,
                fanned: 0,
                svc: p
                    .svc
                    .as_ref()
                    .map(|_| svc::ConsumerSvc::new(rng.random(), spec.dd_ext)),
            });
            self.consumer_ids.insert(spec.id, key);
            p.consumers.push(key);
            if !audio {
                // A consumer waiting for a keyframe has one asked for at once, even before it
                // connects, and again every `KEYFRAME_RETRY` until it starts.
                let can_ask = p.can_ask_keyframe();
                let due = p
                    .layers
                    .get(target)
                    .and_then(|l| l.keyframe_due(now, true, can_ask));
                self.lower_deadline(due);
            }
            m.consumers.push(key);
        }
        let consumed: Vec<usize> = m
            .consumers
            .iter()
            .filter_map(|&c| self.consumers.get(c).map(|c| c.producer))
            .collect();
        self.members.insert(m);
        // A new subscriber may want layers its publisher was told it could stop.
        for producer in consumed {
            self.report_wanted(now, producer);
        }
        Ok(member)
    }

    /// Removes a member with its producers (and every consumer of them) and its consumers.
    pub fn remove_member(&mut self, member: usize) {
        let Some(m) = self.members.try_remove(member) else {
            return;
        };
        self.remove_mirror(&m.mirrored, member);
        for key in m.consumers {
            self.remove_consumer(key);
        }
        for key in m.producers {
            let Some(p) = self.producers.try_remove(key) else {
                continue;
            };
            self.fanout.forget(key);
            self.producer_ids.remove(&p.id);
            if let Some(change) = self.speaker.removed(p.id) {
                self.report(change);
            }
            for c in p.consumers {
                let Some(consumer) = self.consumers.try_remove(c) else {
                    continue;
                };
                self.consumer_ids.remove(&consumer.id);
                if let Some(other) = self.members.get_mut(consumer.member) {
                    other.consumers.retain(|&k| k != c);
                }
            }
        }
    }

    fn remove_consumer(&mut self, key: usize) {
        let Some(c) = self.consumers.try_remove(key) else {
            return;
        };
        self.consumer_ids.remove(&c.id);
        if let Some(p) = self.producers.get_mut(c.producer) {
            p.consumers.retain(|&k| k != key);
        }
    }

    /// The member's transport connected: its reports start, its video consumers ask their
    /// producers for a keyframe (so a new subscriber sees a picture at once), and its own
    /// producers are asked for one if consumers already wait for it.
    pub fn connected(&mut self, now: Instant, member: usize) {
        let Some(m) = self.members.get_mut(member) else {
            return;
        };
        let next_report = self.grid.after(now + RTCP_INTERVAL);
        m.next_report = Some(next_report);
        self.lower_deadline(Some(next_report));
        let Some(m) = self.members.get(member) else {
            return;
        };
        let (producers, consumers) = (&self.producers, &self.consumers);
        let video = |p: usize| producers.get(p).is_some_and(|p| p.kind == MediaKind::Video);
        let mut wanted: Vec<(usize, usize)> = m
            .consumers
            .iter()
            .filter_map(|&c| consumers.get(c).map(|c| (c.producer, c.target)))
            .filter(|&(p, _)| video(p))
            .collect();
        for &key in &m.producers {
            let Some(p) = producers.get(key) else {
                continue;
            };
            for layer in 0..p.layers.len() {
                if waiting(consumers, &p.consumers, layer) {
                    wanted.push((key, layer));
                }
            }
        }
        for (producer, layer) in wanted {
            self.request_keyframe(now, producer, layer);
        }
    }

    /// Asks for a keyframe of a producer's layer (sent by `handle_timeout` once the rate limit
    /// allows).
    fn request_keyframe(&mut self, now: Instant, producer: usize, layer: usize) {
        let Some(p) = self.producers.get_mut(producer) else {
            return;
        };
        let can_ask = p.can_ask_keyframe();
        let Some(l) = p.layers.get_mut(layer) else {
            return;
        };
        if !l.keyframe.pending {
            l.keyframe.pending = true;
            let due = l.keyframe_due(now, false, can_ask);
            self.lower_deadline(due);
        }
    }

    fn lower_deadline(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
        }
    }

    /// Whether `ssrc` belongs to the member's stream: a producer's, or for RTCP also one of its
    /// consumers' (feedback names our SSRCs). Pipes sharing an address are told apart by this.
    pub fn member_has_ssrc(&self, member: usize, ssrc: Ssrc, rtcp: bool) -> bool {
        let Some(m) = self.members.get(member) else {
            return false;
        };
        m.producers.iter().any(|&p| {
            self.producers
                .get(p)
                .is_some_and(|p| p.layer_of(ssrc).is_some())
        }) || (rtcp
            && m.consumers.iter().any(|&c| {
                self.consumers
                    .get(c)
                    .is_some_and(|c| c.rewrite.ssrc == ssrc)
            }))
    }

    /// The member's producer and layer an incoming RTP packet belongs to: by SSRC, else by
    /// binding an unsignalled SSRC: to a simulcast layer through the rid extension, to a
    /// producer through the MID extension or, failing that, a unique payload type among
    /// those with no SSRC yet.
    fn producer_for(
        &mut self,
        member: usize,
        header: &rtp::Header,
        packet: &[u8],
    ) -> Option<(usize, usize)> {
        let m = self.members.get(member)?;
        let ssrc = Ssrc(header.ssrc);
        if let Some(found) = m.producers.iter().find_map(|&k| {
            let layer = self.producers.get(k)?.layer_of(ssrc)?;
            Some((k, layer))
        }) {
            return Some(found);
        }
        let unbound = || {
            m.producers.iter().copied().filter(|&k| {
                self.producers
                    .get(k)
                    .is_some_and(|p| p.layers.iter().any(|l| l.ssrc.is_none()))
            })
        };
        let mid_matches = |p: &Producer| {
            p.mid_ext
                .and_then(|id| header.extension_value(packet, id))
                .is_none_or(|v| v == p.mid.as_bytes())
        };
        let by_rid = unbound().find_map(|k| {
            let p = self.producers.get(k)?;
            let rid = header.extension_value(packet, p.rid_ext?)?;
            let layer = p.layers.iter().position(|l| {
                l.ssrc.is_none() && l.rid.as_deref().map(str::as_bytes) == Some(rid)
            })?;
            mid_matches(p).then_some((k, layer))
        });
        let single = |k: usize| self.producers.get(k).is_some_and(|p| p.rid_ext.is_none());
        let found = by_rid
            .or_else(|| {
                unbound()
                    .filter(|&k| single(k))
                    .find(|&k| {
                        self.producers.get(k).is_some_and(|p| {
                            p.mid_ext
                                .and_then(|id| header.extension_value(packet, id))
                                .is_some_and(|v| v == p.mid.as_bytes())
                        })
                    })
                    .map(|k| (k, 0))
            })
            .or_else(|| {
                let mut same_pt = unbound().filter(|&k| {
                    single(k)
                        && self
                            .producers
                            .get(k)
                            .is_some_and(|p| p.payload_type == header.payload_type)
                });
                match (same_pt.next(), same_pt.next()) {
                    (Some(k), None) => Some((k, 0)),
                    _ => None,
                }
            })?;
        self.producers
            .get_mut(found.0)?
            .layers
            .get_mut(found.1)?
            .ssrc = Some(ssrc);
        Some(found)
    }

    /// A decrypted RTP packet from `member`: kept for NACKs (video), then written for every
    /// consumer of its producer that forwards its layer. A video consumer starts, or switches
    /// to its target layer, at a keyframe of that layer.
    pub fn on_rtp(
        &mut self,
        now: Instant,
        member: usize,
        header: &rtp::Header,
        packet: &[u8],
        out: &mut impl Output,
    ) {
        if let Some(f) = self
            .members
            .get_mut(member)
            .and_then(|m| m.feedback.as_mut())
        {
            f.on_packet(now, header.extension_value(packet, f.ext));
            let due = f.recorder.poll_timeout();
            self.lower_deadline(due);
        }
        let Some((key, layer)) = self.producer_for(member, header, packet) else {
            return out.counters().drop(DropReason::RtpUnknownSsrc);
        };
        let Some(producer) = self.producers.get_mut(key) else {
            return;
        };
        let level = producer
            .audio_level_ext
            .and_then(|id| header.extension_value(packet, id));
        if let Some(level) = level {
            // A malformed level is ignored; the packet is forwarded all the same.
            producer.activity.on_level(now, level);
        }
        let payload = packet
            .get(header.payload_offset..header.payload_end)
            .unwrap_or_default();
        let video = producer.kind == MediaKind::Video;
        let keyframe = video && rtp::is_keyframe(producer.codec, payload);
        // Read once here for every consumer: picture ids and temporal layers.
        let vp8 = (producer.codec == crate::media::Codec::Vp8)
            .then(|| rtp::vp8_picture_fields(payload))
            .flatten();
        let clock_rate = producer.clock_rate;
        let linked = producer.linked;
        let Some(l) = producer.layers.get_mut(layer) else {
            return;
        };
        let resumed = !l.active(now);
        l.last_packet = Some(now);
        l.rate.add(now, packet.len());
        let frame_rate_moved = video && l.frame_rate.add(now, header.timestamp);
        if let Some((tid, _)) = vp8.and_then(|f| f.temporal) {
            l.top_tid = l.top_tid.max(Some(tid));
        }
        let highest = l.receive.highest_seq();
        l.receive.on_packet(header.sequence, header.timestamp, now);
        if let Some(history) = l.history.as_mut() {
            history.insert(header.sequence, packet);
        }
        if keyframe && let Some((_, height)) = rtp::keyframe_size(producer.codec, payload) {
            l.height = Some(height);
        }
        if (resumed && producer.layers.len() > 1) || frame_rate_moved {
            // A layer (re)appeared: consumers may want it; or the frame rate that temporal
            // layers give moved.
            self.select_layers(now, key);
        }
        self.copy_to_mirrors(key, layer, packet, out);
        if let Some(highest) = highest.filter(|_| linked) {
            self.ask_again(key, layer, highest, header.sequence, out);
        }
        let Some(producer) = self.producers.get(key) else {
            return;
        };
        if producer.svc.is_some() {
            return self.forward_svc(now, key, header, packet, out);
        }
        if self.fanout.enabled
            && video
            && let Some(l) = self
                .producers
                .get_mut(key)
                .and_then(|p| p.layers.get_mut(layer))
            && l.history
                .as_ref()
                .is_some_and(|h| h.get(header.sequence).is_some())
        {
            let arrival = Arrival {
                seq: header.sequence,
                timestamp: header.timestamp,
                marker: header.marker,
                keyframe,
            };
            let spans = fanout::hold(&mut l.held, arrival, now);
            if let Some(h) = l.held {
                self.fanout.holding(h.since);
            }
            for span in spans.into_iter().flatten() {
                self.fanout.push(key, layer, span, out.counters());
            }
            return self.run_fanout(now, out);
        }
        let Some(producer) = self.producers.get(key) else {
            return;
        };
        let f = Forward {
            header,
            packet,
            layer,
            video,
            keyframe,
            clock_rate,
            read: consumer::Read {
                vp8: vp8.as_ref(),
                level,
            },
            pad: 0,
        };
        for &c in &producer.consumers {
            if let Some(consumer) = self.consumers.get_mut(c) {
                forward(consumer, &mut self.members, &f, now, out);
            }
        }
    }

    /// Writes the frames held or waiting for room to their consumers.
    fn run_fanout(&mut self, now: Instant, out: &mut impl Output) {
        self.fanout.run(
            now,
            &self.producers,
            &mut self.consumers,
            &mut self.members,
            out,
        );
    }

    /// Sets the preferences of a member's consumers (from its subscriber): their target layers
    /// follow, and a keyframe is asked for where that changes what they forward.
    pub fn set_preferences(&mut self, now: Instant, member: usize, prefs: Preferences) {
        let Some(m) = self.members.get(member) else {
            return;
        };
        let mut producers = Vec::with_capacity(m.consumers.len());
        for &key in &m.consumers {
            let Some(c) = self.consumers.get_mut(key) else {
                continue;
            };
            let video = self
                .producers
                .get(c.producer)
                .is_some_and(|p| p.kind == MediaKind::Video);
            if c.prefs.paused && !prefs.paused && video {
                // Its stream was interrupted: it starts again at a keyframe.
                c.layer = None;
                if let Some(svc) = c.svc.as_mut() {
                    svc.restart();
                }
            }
            c.prefs = prefs;
            producers.push(c.producer);
        }
        for p in producers {
            self.select_layers(now, p);
        }
    }

    /// Chooses the target layer of each consumer of `producer`.
    fn select_layers(&mut self, now: Instant, producer: usize) {
        let count = self
            .producers
            .get(producer)
            .map_or(0, |p| p.consumers.len());
        for i in 0..count {
            if let Some(&c) = self
                .producers
                .get(producer)
                .and_then(|p| p.consumers.get(i))
            {
                self.select_layer(now, c);
            }
        }
        self.report_wanted(now, producer);
    }

    /// Tells the control plane which simulcast layers of `producer` some consumer's preferences
    /// take: every layer up to the highest one taken (lower layers are cheap and are where a
    /// subscriber goes when its bandwidth falls), only the lowest when nobody watches.
    /// Bandwidth is left out on purpose: a layer a weak link cannot take now is where its
    /// probes go next. More layers are told at once, fewer only after `LAYERS_OFF_AFTER`, so
    /// preferences that flip back and forth do not toggle the publisher's encoders.
    fn report_wanted(&mut self, now: Instant, key: usize) {
        let Some(p) = self.producers.get(key) else {
            return;
        };
        if p.layers.len() < 2 {
            return;
        }
        // A shard link wants every layer (`mirror`).
        let linked = (!p.mirrors.is_empty()).then(|| p.layers.len() - 1);
        let top = p
            .consumers
            .iter()
            .filter_map(|&c| self.consumers.get(c))
            .filter(|c| !c.prefs.paused)
            .map(|c| wanted_layer(p, &c.prefs))
            .chain(linked)
            .max()
            .unwrap_or(0);
        let mask = u8::MAX >> (7 - top.min(7));
        let (router, id, count) = (self.id, p.id, p.layers.len());
        let Some(p) = self.producers.get_mut(key) else {
            return;
        };
        if mask == p.wanted {
            p.fewer_wanted_since = None;
            return;
        }
        if mask < p.wanted {
            let since = *p.fewer_wanted_since.get_or_insert(now);
            if now.saturating_duration_since(since) < LAYERS_OFF_AFTER {
                return;
            }
        }
        p.wanted = mask;
        p.fewer_wanted_since = None;
        self.events.push_back(MediaEvent::Layers {
            router,
            producer: id,
            active: (0..count).map(|i| mask & (1 << i) != 0).collect(),
        });
    }

    /// Chooses the target layer of each consumer of `member` (its bandwidth estimate moved).
    fn select_member_layers(&mut self, now: Instant, member: usize) {
        let count = self.members.get(member).map_or(0, |m| m.consumers.len());
        for i in 0..count {
            if let Some(&c) = self.members.get(member).and_then(|m| m.consumers.get(i)) {
                self.select_layer(now, c);
            }
        }
    }

    /// Chooses a video consumer's target layer from its preferences, the layers that arrive
    /// and its subscriber's bandwidth; when the bandwidth alone keeps it below a layer it
    /// could have, a probe (the estimator's) lets it try that layer. A consumer whose target
    /// changed has a keyframe of its target asked for.
    fn select_layer(&mut self, now: Instant, key: usize) {
        let Some(c) = self.consumers.get_mut(key) else {
            return;
        };
        let Some(p) = self.producers.get(c.producer) else {
            return;
        };
        if p.kind != MediaKind::Video {
            return;
        }
        let mut bandwidth = self
            .members
            .get_mut(c.member)
            .and_then(|m| m.bandwidth.as_mut());
        // The channel's cap bounds the estimate, and stands for it where there is none.
        let capped = |budget: Option<u64>| match (budget, p.max_bitrate) {
            (Some(b), Some(cap)) => Some(b.min(cap)),
            (b, cap) => b.or(cap),
        };
        let budget = capped(bandwidth.as_mut().map(|b| b.video_budget(now)));
        if let Some(svc) = c.svc.as_mut() {
            // One stream whose layers the selector drops; no probing (yet).
            let structure = p.svc.as_ref().and_then(|s| s.stream.structure());
            let bps = p.layers.first().map_or(0, |l| l.rate.bps);
            let fps = p.layers.first().map_or(0, |l| l.frame_rate.fps);
            let wanted = structure.map_or(svc::ALL_LAYERS, |st| {
                svc::wanted_layers(st, &c.prefs, budget, bps, fps)
            });
            svc.selector.set_wanted(wanted);
            return;
        }
        let mut target = choose_layer(p, &c.prefs, now, budget, c.layer);
        let mut probe_ends = None;
        if let Some(b) = bandwidth
            && target < choose_layer(p, &c.prefs, now, p.max_bitrate, c.layer)
            && b.start_probe(now)
        {
            // One layer up at a time: a probe that fails costs the least, and one that
            // succeeds raises the estimate enough for the next.
            let probed = choose_layer(p, &c.prefs, now, capped(Some(b.video_budget(now))), c.layer);
            target = probed.min(target + 1);
            probe_ends = b.probe_ends();
        }
        // Far over the budget, the current layer only fills the bottleneck's queue (its frames
        // are lost there anyway) and delays the keyframe of the layer that fits: it stops now
        // rather than at that keyframe.
        if let (Some(b), Some(current)) = (budget, c.layer)
            && target < current
            && p.layers
                .get(current)
                .is_some_and(|l| l.rate.bps as f64 > b as f64 * CONGESTED)
        {
            c.layer = None;
        }
        c.target = target;
        // `max_frame_rate` on a VP8 stream with temporal layers: drop the layers above it.
        if let Some(l) = p.layers.get(target)
            && let Some(top) = l.top_tid
        {
            let cap = |max| svc::temporal_cap(Some(max), l.frame_rate.fps, top);
            c.rewrite.set_temporal(c.prefs.max_frame_rate.map(cap));
        }
        let (producer, wants) = (c.producer, c.waits_for(target));
        self.lower_deadline(probe_ends);
        if wants {
            self.request_keyframe(now, producer, target);
        }
    }

    /// A decrypted compound RTCP packet from `member`: sender reports from a publisher,
    /// NACK, PLI and FIR from a subscriber.
    pub fn on_rtcp(&mut self, now: Instant, member: usize, compound: &[u8], out: &mut impl Output) {
        for packet in rtcp::packets(compound) {
            let Ok(packet) = packet else {
                out.counters().drop(DropReason::RtcpMalformed);
                break;
            };
            match packet {
                rtcp::Packet::SenderReport {
                    ssrc,
                    ntp,
                    rtp_timestamp,
                    ..
                } => {
                    if let Some((k, layer)) = self.own_producer(member, Ssrc(ssrc))
                        && let Some(l) = self
                            .producers
                            .get_mut(k)
                            .and_then(|p| p.layers.get_mut(layer))
                    {
                        l.receive.on_sender_report(ntp, now);
                        l.last_sr = Some((ntp, rtp_timestamp, now));
                        self.mirror_sender_report(k, layer, ntp, rtp_timestamp, out);
                    }
                }
                rtcp::Packet::Nack(nack) => {
                    match self.own_consumer(member, Ssrc(nack.media_ssrc)) {
                        Some(c) => self.retransmit(now, c, nack.lost(), out),
                        None => self.mirror_resend(member, Ssrc(nack.media_ssrc), nack.lost(), out),
                    }
                }
                rtcp::Packet::Pli { media_ssrc, .. } => {
                    self.keyframe_for(now, member, Ssrc(media_ssrc));
                }
                rtcp::Packet::Fir { entries, .. } => {
                    for (ssrc, _) in entries {
                        self.keyframe_for(now, member, Ssrc(ssrc));
                    }
                }
                rtcp::Packet::TransportCc { feedback, .. } => {
                    let Some(b) = self
                        .members
                        .get_mut(member)
                        .and_then(|m| m.bandwidth.as_mut())
                    else {
                        continue;
                    };
                    b.on_feedback(now, &feedback);
                    let target = b.pacing_bps();
                    if let Some(m) = self.members.get(member) {
                        out.pace(m.transport, target);
                    }
                    self.select_member_layers(now, member);
                }
                rtcp::Packet::ReceiverReport { .. }
                | rtcp::Packet::Remb { .. }
                | rtcp::Packet::Other { .. } => {}
            }
        }
    }

    /// A packet the member's pacer held went out at `now`: the estimator takes that as its
    /// send time (the time in the pacer is not the path's delay).
    pub fn on_departed(&mut self, member: usize, twcc: u16, now: Instant) {
        if let Some(b) = self
            .members
            .get_mut(member)
            .and_then(|m| m.bandwidth.as_mut())
        {
            b.on_departed(twcc, now);
        }
    }

    /// The member's producer and layer with `ssrc`.
    fn own_producer(&self, member: usize, ssrc: Ssrc) -> Option<(usize, usize)> {
        self.members.get(member)?.producers.iter().find_map(|&k| {
            let layer = self.producers.get(k)?.layer_of(ssrc)?;
            Some((k, layer))
        })
    }

    /// A keyframe request (PLI or FIR) from `member` for its consumer `ssrc`: asks that
    /// consumer's producer, for the layer it forwards (or waits for).
    fn keyframe_for(&mut self, now: Instant, member: usize, ssrc: Ssrc) {
        let wanted = self
            .own_consumer(member, ssrc)
            .and_then(|c| self.consumers.get(c))
            .map(|c| (c.producer, c.layer.unwrap_or(c.target)));
        match wanted {
            Some((producer, layer)) => self.request_keyframe(now, producer, layer),
            None => {
                self.mirror_keyframe(now, member, ssrc);
            }
        }
    }

    /// The member's consumer that sends as `ssrc`.
    fn own_consumer(&self, member: usize, ssrc: Ssrc) -> Option<usize> {
        self.members
            .get(member)?
            .consumers
            .iter()
            .copied()
            .find(|&k| {
                self.consumers
                    .get(k)
                    .is_some_and(|c| c.rewrite.ssrc == ssrc)
            })
    }

    /// Resends the packets a consumer NACKed, from the history of the layer it forwards, if it
    /// negotiated NACK. Packets sent before its last layer switch are not resent.
    /// A NACK for a consumer's RTX SSRC finds no consumer (`own_consumer` matches the media
    /// SSRC only), so retransmissions are never themselves retransmitted.
    fn retransmit(
        &mut self,
        now: Instant,
        consumer: usize,
        lost: impl Iterator<Item = u16>,
        out: &mut impl Output,
    ) {
        let Some(c) = self.consumers.get_mut(consumer) else {
            return;
        };
        let Some(history) = c
            .layer
            .and_then(|l| self.producers.get(c.producer)?.layers.get(l))
            .and_then(|l| l.history.as_ref())
        else {
            return;
        };
        if !c.nack {
            return;
        }
        let mut bandwidth = self
            .members
            .get_mut(c.member)
            .and_then(|m| m.bandwidth.as_mut());
        let producer = self.producers.get(c.producer);
        for seq in lost {
            let producer_seq = match c.svc.as_deref() {
                Some(svc) => svc.seq.producer_seq(seq),
                None => c.rewrite.producer_seq(seq),
            };
            let Some(packet) = producer_seq.and_then(|s| history.get(s)) else {
                continue;
            };
            let Ok(header) = rtp::Header::parse(packet) else {
                continue;
            };
            let twcc = bandwidth.as_ref().map(|b| (b.ext, b.next_seq()));
            let mut len = 0;
            // With RTX negotiated, the resend goes on the RTX stream (RFC 4588 §4), which
            // the subscriber tells from late originals; otherwise it repeats the original.
            // (SVC resends repeat the original, with its descriptor.)
            let rtx = c.rewrite.rtx_ssrc().is_some() && c.svc.is_none();
            let (rewrite, svc) = (&mut c.rewrite, c.svc.as_deref());
            let class = Class::Retransmission;
            if out.send_rtp(c.transport, class, twcc.map(|t| t.1), |buf| {
                len = match (svc, producer) {
                    (Some(svc), Some(p)) => {
                        let (marker, dd) = svc::resend_fields(p, svc, &header, packet);
                        let fields = consumer::SvcFields {
                            seq,
                            marker,
                            dd,
                            twcc,
                        };
                        rewrite.write_svc_again(&header, packet, buf, fields)?
                    }
                    _ if rtx => rewrite.write_rtx(&header, packet, buf, seq, twcc)?,
                    _ => rewrite.write_as(&header, packet, buf, seq, twcc)?,
                };
                Some(len)
            }) {
                out.counters().nack_retransmits += 1;
                if rtx {
                    out.counters().rtx_retransmits += 1;
                }
                if let Some(b) = bandwidth.as_mut() {
                    b.on_sent(len, now);
                }
            }
        }
    }

    /// When `handle_timeout` next has work: a report or a keyframe request due, a held frame's
    /// time up, or a fan-out to go on.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.fanout.due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends what is due: keyframe requests, then reports (and, with them, each simulcast
    /// producer's layer choice is revisited: layers stop and start). Recomputes the deadline.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl Output) {
        if self.fanout.due().is_some_and(|d| d <= now) {
            self.fanout.expire(now, &mut self.producers, out.counters());
            self.run_fanout(now, out);
        }
        if self.deadline.is_none_or(|d| d > now) {
            return;
        }
        self.send_keyframe_requests(now, out);
        self.send_feedback(now, out);
        self.end_probes(now);
        if self.send_reports(now, out) {
            let simulcast: Vec<usize> = self
                .producers
                .iter()
                .filter(|(_, p)| p.layers.len() > 1)
                .map(|(k, _)| k)
                .collect();
            for p in simulcast {
                self.select_layers(now, p);
            }
        }
        self.check_speakers(now);
        let mut deadline = self
            .members
            .iter()
            .flat_map(|(_, m)| {
                let feedback = m.feedback.as_ref().and_then(|f| f.recorder.poll_timeout());
                let probe = m.bandwidth.as_ref().and_then(Bandwidth::probe_ends);
                [m.next_report, feedback, probe]
            })
            .flatten()
            .chain(self.next_speaker_check)
            .min();
        for (_, p) in self.producers.iter() {
            for (i, l) in p.layers.iter().enumerate() {
                let due = l.keyframe_due(
                    now,
                    waiting(&self.consumers, &p.consumers, i),
                    p.can_ask_keyframe(),
                );
                deadline = match (deadline, due) {
                    (Some(d), Some(e)) => Some(d.min(e)),
                    (d, e) => d.or(e),
                };
            }
        }
        self.deadline = deadline;
    }

    /// Writes the transport-cc feedback due to publishers: every `FEEDBACK_INTERVAL` while
    /// packets arrive, each message naming one of the publisher's streams.
    fn send_feedback(&mut self, now: Instant, out: &mut impl Output) {
        for (_, m) in self.members.iter_mut() {
            let Some(f) = m.feedback.as_mut() else {
                continue;
            };
            if f.recorder.poll_timeout().is_none_or(|t| t > now) {
                continue;
            }
            let media = m
                .producers
                .iter()
                .filter_map(|&p| self.producers.get(p))
                .flat_map(|p| &p.layers)
                .find_map(|l| l.ssrc)
                .map_or(0, |s| s.0);
            let sender = m.rtcp_ssrc.0;
            loop {
                let mut wrote = false;
                out.send_rtcp(m.transport, |buf| {
                    let n = f.recorder.poll_feedback(now, sender, media, buf);
                    wrote = n.is_some();
                    n
                });
                if !wrote {
                    break;
                }
            }
        }
    }

    /// Chooses layers again for the subscribers whose bandwidth probe ended.
    fn end_probes(&mut self, now: Instant) {
        let ended: Vec<usize> = self
            .members
            .iter_mut()
            .filter_map(|(k, m)| {
                let ended = m.bandwidth.as_mut()?.expire_probe(now);
                ended.then_some(k)
            })
            .collect();
        for member in ended {
            self.select_member_layers(now, member);
        }
    }

    /// Runs the speaker detector when it is due, and again every `EVALUATE_EVERY` while an
    /// audio producer with levels remains.
    fn check_speakers(&mut self, now: Instant) {
        if self.next_speaker_check.is_none_or(|t| t > now) {
            return;
        }
        let talkers = self
            .producers
            .iter_mut()
            .filter(|(_, p)| p.audio_level_ext.is_some())
            .map(|(_, p)| (p.id, &mut p.activity));
        let (router, events) = (self.id, &mut self.events);
        self.speaker.evaluate(now, talkers, |change| {
            events.push_back(event(router, change))
        });
        let any = self
            .producers
            .iter()
            .any(|(_, p)| p.audio_level_ext.is_some());
        self.next_speaker_check = any.then(|| self.grid.after(now + speaker::EVALUATE_EVERY));
    }

    fn report(&mut self, change: Change) {
        self.events.push_back(event(self.id, change));
    }

    /// The next speaking change for the control plane (after `handle_timeout` or
    /// `remove_member`).
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// The audio producers that carry levels, with their smoothed loudness and whether they
    /// are speaking: what an MCU picks the talkers it mixes from (the loudest speaking ones),
    /// without decoding anything.
    pub fn talkers(&self, now: Instant) -> impl Iterator<Item = Talker> + '_ {
        self.producers
            .iter()
            .filter(|(_, p)| p.audio_level_ext.is_some())
            .map(move |(_, p)| Talker {
                producer: p.id,
                loudness: p.activity.loudness(now),
                speaking: p.activity.is_speaking(),
            })
    }

    /// The dominant speaker (see `speaker::Detector::dominant`).
    pub fn dominant_speaker(&self) -> Option<ProducerId> {
        self.speaker.dominant()
    }

    /// Sends each due keyframe request (PLI, else FIR) to its producer's publisher, for the
    /// layer's SSRC. A request to a publisher that is not connected yet counts as sent for the
    /// rate limit; the publisher is asked again when it connects.
    fn send_keyframe_requests(&mut self, now: Instant, out: &mut impl Output) {
        for (_, p) in self.producers.iter_mut() {
            let can_ask = p.can_ask_keyframe();
            for (i, l) in p.layers.iter_mut().enumerate() {
                let due = l.keyframe_due(now, waiting(&self.consumers, &p.consumers, i), can_ask);
                if due.is_none_or(|due| due > now) {
                    continue;
                }
                l.keyframe.pending = false;
                l.keyframe.last_sent = Some(now);
                let (Some(ssrc), Some(m)) = (l.ssrc, self.members.get(p.member)) else {
                    continue;
                };
                let (pli, sender) = (p.pli, m.rtcp_ssrc.0);
                if !pli && !p.fir {
                    continue;
                }
                if !pli {
                    l.keyframe.fir_seq = l.keyframe.fir_seq.wrapping_add(1);
                }
                let fir_seq = l.keyframe.fir_seq;
                if out.send_rtcp(m.transport, |buf| {
                    if pli {
                        rtcp::write_pli(buf, sender, ssrc.0).ok()
                    } else {
                        rtcp::write_fir(buf, sender, ssrc.0, fir_seq).ok()
                    }
                }) {
                    out.counters().keyframe_requests += 1;
                }
            }
        }
    }

    /// Receiver reports (and REMB) for the producers of each member whose reports are due,
    /// sender reports for its started consumers. Returns whether any member's were due.
    fn send_reports(&mut self, now: Instant, out: &mut impl Output) -> bool {
        let next = self.grid.after(now + RTCP_INTERVAL);
        let mut any = false;
        for (_, m) in self.members.iter_mut() {
            if m.next_report.is_none_or(|t| t > now) {
                continue;
            }
            any = true;
            m.next_report = Some(next);
            if !m.producers.is_empty() {
                out.send_rtcp(m.transport, |buf| {
                    receiver_report(buf, m, &mut self.producers, &self.consumers, now)
                });
            }
            for &c in &m.consumers {
                let Some(c) = self.consumers.get(c) else {
                    continue;
                };
                let Some((ntp, rtp_ts)) = c.layer.and_then(|layer| {
                    let p = self.producers.get(c.producer)?;
                    p.layers.get(layer)?.rtp_time_at(now, p.clock_rate)
                }) else {
                    continue;
                };
                out.send_rtcp(m.transport, |buf| {
                    let ssrc = c.rewrite.ssrc.0;
                    let ts = c.rewrite.timestamp(rtp_ts);
                    let sr =
                        rtcp::write_sender_report(buf, ssrc, ntp, ts, c.packets, c.octets, &[])
                            .ok()?;
                    let sdes = rtcp::write_sdes_cname(buf.get_mut(sr..)?, ssrc, CNAME).ok()?;
                    Some(sr + sdes)
                });
            }
        }
        any
    }
}

/// A packet of a producer's layer, read once for all its consumers.
struct Forward<'a> {
    header: &'a rtp::Header,
    packet: &'a [u8],
    layer: usize,
    video: bool,
    keyframe: bool,
    clock_rate: u32,
    read: consumer::Read<'a>,
    /// RTP padding to add (see `fanout`).
    pad: usize,
}

/// Writes `p` for `consumer` if it forwards the packet's layer, or switches to it here (video
/// at a keyframe of its target layer, audio at once).
fn forward(
    consumer: &mut Consumer,
    members: &mut Slab<Member>,
    p: &Forward<'_>,
    now: Instant,
    out: &mut impl Output,
) {
    if consumer.prefs.paused {
        return;
    }
    let switching =
        consumer.layer != Some(p.layer) && consumer.target == p.layer && (p.keyframe || !p.video);
    if consumer.layer != Some(p.layer) && !switching {
        return;
    }
    if !consumer.rewrite.admits(p.read.vp8, p.keyframe) {
        consumer.rewrite.skip(p.header.sequence);
        return;
    }
    let mut bandwidth = members
        .get_mut(consumer.member)
        .and_then(|m| m.bandwidth.as_mut());
    let twcc = bandwidth.as_ref().map(|b| (b.ext, b.next_seq()));
    let (mut switched, mut len, mut padded) = (false, 0, 0);
    let class = if p.video { Class::Video } else { Class::Audio };
    let payload = p
        .packet
        .get(p.header.payload_offset..p.header.payload_end)
        .unwrap_or_default();
    let sent = out.send_rtp(consumer.transport, class, twcc.map(|t| t.1), |buf| {
        if switching {
            consumer
                .rewrite
                .switch(p.header, payload, now, p.clock_rate);
            switched = true;
        }
        let n = consumer
            .rewrite
            .write(p.header, p.packet, buf, now, twcc, p.read)?;
        len = rtp::pad(buf, n, p.pad).unwrap_or(n);
        padded = len - n;
        Some(len)
    });
    if switched {
        consumer.layer = Some(p.layer);
    }
    if sent {
        let counters = out.counters();
        counters.rtp_forwarded += 1;
        counters.padding_bytes += padded as u64;
        consumer.packets = consumer.packets.wrapping_add(1);
        consumer.octets = consumer.octets.wrapping_add(payload.len() as u32);
        if let Some(b) = bandwidth.as_mut() {
            b.on_sent(len, now);
        }
    }
}

/// The layer a consumer of `p` should forward: the highest that arrives, is no taller than
/// its `max_height` (where the layer's height is known) and whose bitrate fits `budget` (the
/// layer it forwards, `current`, may exceed it by a quarter, a higher one must leave a quarter
/// free, so that rate noise does not flap it); else the lowest that arrives and fits the preferences, else the lowest that
/// arrives; the top layer while none arrives yet (a publisher starting up).
fn choose_layer(
    p: &Producer,
    prefs: &Preferences,
    now: Instant,
    budget: Option<u64>,
    current: Option<usize>,
) -> usize {
    let top = p.layers.len().saturating_sub(1);
    let active = || p.layers.iter().enumerate().filter(|(_, l)| l.active(now));
    let wanted = |l: &producer::Layer| match (prefs.max_height, l.height) {
        (Some(max), Some(h)) => h <= max,
        _ => true,
    };
    let affordable = |i: usize, l: &producer::Layer| {
        // Hysteresis: the layer it has may run a little over, a higher one must fit with room.
        let share = match current {
            Some(c) if i == c => 1.25,
            Some(c) if i > c => 0.75,
            _ => 1.0,
        };
        budget.is_none_or(|b| l.rate.bps as f64 <= b as f64 * share)
    };
    active()
        .filter(|(i, l)| wanted(l) && affordable(*i, l))
        .map(|(i, _)| i)
        .next_back()
        .or_else(|| active().find(|(_, l)| wanted(l)).map(|(i, _)| i))
        .or_else(|| active().map(|(i, _)| i).next())
        .unwrap_or(top)
}

fn event(router: RouterId, change: Change) -> MediaEvent {
    match change {
        Change::Speaking { producer, speaking } => MediaEvent::Speaking {
            router,
            producer,
            speaking,
        },
        Change::Dominant(producer) => MediaEvent::DominantSpeaker { router, producer },
    }
}

/// The highest layer of `p` no taller than `prefs.max_height`, whether it arrives now or
/// not; the lowest when none fits.
fn wanted_layer(p: &Producer, prefs: &Preferences) -> usize {
    let Some(max) = prefs.max_height else {
        return p.layers.len().saturating_sub(1);
    };
    // A layer whose height no keyframe has told yet (its publisher may not have started it:
    // REMB or the server held it back) is taken for twice the one below, as simulcast layers
    // are spaced (the SDK's 4, 2, 1). Taking it for fitting instead would keep every upper
    // layer wanted whenever the encoder scaled the lowest one down (CPU or bandwidth
    // adaptation), and the publisher would never be told to stop them. Layers come lowest
    // first, so none above one taller than the cap fits either.
    let mut wanted = 0;
    let mut below: Option<u32> = None;
    for (i, l) in p.layers.iter().enumerate() {
        let height = l.height.map(u32::from).or(below.map(|h| h * 2));
        if height.is_some_and(|h| h > u32::from(max)) {
            break;
        }
        wanted = i;
        below = height;
    }
    wanted
}

/// Whether a consumer among `consumers` waits for a keyframe of `layer` of their producer.
fn waiting(all: &Slab<Consumer>, consumers: &[usize], layer: usize) -> bool {
    consumers
        .iter()
        .any(|&c| all.get(c).is_some_and(|c| c.waits_for(layer)))
}

/// The REMB bitrate for `p`, if it gets REMB: ours where it negotiated REMB, lowered to the
/// channel's cap and to what its consumers have use for (`demand`); that cap alone for a
/// transport-cc publisher.
fn remb_bitrate(p: &Producer, consumers: &Slab<Consumer>) -> Option<u64> {
    let cap = match (p.max_bitrate, demand(p, consumers)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match (p.remb, cap) {
        (true, cap) => Some(cap.map_or(REMB_BITRATE, |c| c.min(REMB_BITRATE))),
        (false, cap) => cap,
    }
}

/// The most bits per second `p`'s consumers have use for: the largest of their
/// `max_bitrate`s when every consumer that is not paused names one, `None` when one takes
/// whatever comes, a shard link carries it, or none watches (a publication nobody watches is
/// left as it is).
fn demand(p: &Producer, consumers: &Slab<Consumer>) -> Option<u64> {
    if !p.mirrors.is_empty() {
        // A shard link takes whatever comes: its subscribers' demands stay on their worker.
        return None;
    }
    let mut most = None;
    for c in p.consumers.iter().filter_map(|&c| consumers.get(c)) {
        if !c.prefs.paused {
            most = Some(most.unwrap_or(0).max(c.prefs.max_bitrate?));
        }
    }
    most
}

/// A compound RR (one block per stream with a known SSRC), SDES, and REMB when negotiated
/// or capped (the lowest of its producers' REMB bitrates).
fn receiver_report(
    out: &mut [u8],
    m: &Member,
    producers: &mut Slab<Producer>,
    consumers: &Slab<Consumer>,
    now: Instant,
) -> Option<usize> {
    let mut blocks = [rtcp::ReportBlock::default(); MAX_REPORT_BLOCKS];
    let mut count = 0;
    let mut remb_ssrcs = [0u32; MAX_REPORT_BLOCKS];
    let mut remb_count = 0;
    let mut remb_bps = u64::MAX;
    for &key in &m.producers {
        let Some(p) = producers.get_mut(key) else {
            continue;
        };
        let remb = remb_bitrate(p, consumers);
        for l in &mut p.layers {
            let Some(ssrc) = l.ssrc else { continue };
            if let Some(slot) = blocks.get_mut(count) {
                *slot = l.receive.report_block(ssrc.0, now);
                count += 1;
            }
            if let Some(bps) = remb
                && let Some(slot) = remb_ssrcs.get_mut(remb_count)
            {
                *slot = ssrc.0;
                remb_count += 1;
                remb_bps = remb_bps.min(bps);
            }
        }
    }
    let sender = m.rtcp_ssrc.0;
    let mut len = rtcp::write_receiver_report(out, sender, blocks.get(..count)?).ok()?;
    len += rtcp::write_sdes_cname(out.get_mut(len..)?, sender, CNAME).ok()?;
    if remb_count > 0 {
        len += rtcp::write_remb(
            out.get_mut(len..)?,
            sender,
            remb_bps,
            remb_ssrcs.get(..remb_count)?,
        )
        .ok()?;
    }
    Some(len)
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Codec;
    use crate::rtp::HeaderFields;
    use crate::spec::{ConsumerId, RtxSpec};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashSet;

    const PUB: TransportKey = TransportKey(0);
    const SUB: TransportKey = TransportKey(1);
    const SUB2: TransportKey = TransportKey(2);
    const AUDIO: u32 = 1111;
    const VIDEO: u32 = 2222;
    const VP8_KEY: &[u8] = &[0x10, 0x00, 0x9d, 0x01, 0x2a, 0xAA, 0xBB];
    const VP8_DELTA: &[u8] = &[0x10, 0x01, 0xCC, 0xDD];

    /// An output that records what the router sends, in the clear, to the transports marked
    /// connected.
    #[derive(Default)]
    pub(super) struct Recorder {
        pub(super) connected: HashSet<TransportKey>,
        pub(super) sent: Vec<(TransportKey, bool, Vec<u8>)>,
        pub(super) counters: Counters,
        /// Packets it takes before it is full (`Output::room`); `None`: no limit.
        pub(super) room: Option<usize>,
    }

    impl Recorder {
        fn record(
            &mut self,
            to: TransportKey,
            rtcp: bool,
            write: impl FnOnce(&mut [u8]) -> Option<usize>,
        ) -> bool {
            if !self.connected.contains(&to) {
                return false;
            }
            let mut buf = [0u8; 1500];
            if self.room == Some(0) {
                return false;
            }
            let Some(n) = write(&mut buf) else {
                return false;
            };
            self.sent.push((to, rtcp, buf[..n].to_vec()));
            if let Some(room) = self.room.as_mut() {
                *room -= 1;
            }
            true
        }

        fn rtp_to(&self, to: TransportKey) -> Vec<rtp::Header> {
            self.sent
                .iter()
                .filter(|(t, rtcp, _)| *t == to && !rtcp)
                .map(|(_, _, p)| rtp::Header::parse(p).unwrap())
                .collect()
        }

        fn rtcp_to(&self, to: TransportKey) -> Vec<rtcp::Packet<'_>> {
            self.sent
                .iter()
                .filter(|(t, rtcp, _)| *t == to && *rtcp)
                .flat_map(|(_, _, p)| rtcp::packets(p).map(Result::unwrap))
                .collect()
        }
    }

    impl Output for Recorder {
        fn send_rtp(
            &mut self,
            to: TransportKey,
            _class: Class,
            _twcc: Option<u16>,
            write: impl FnOnce(&mut [u8]) -> Option<usize>,
        ) -> bool {
            self.record(to, false, write)
        }

        fn pace(&mut self, _to: TransportKey, _target_bps: u64) {}

        fn send_rtcp(
            &mut self,
            to: TransportKey,
            write: impl FnOnce(&mut [u8]) -> Option<usize>,
        ) -> bool {
            self.record(to, true, write)
        }

        fn counters(&mut self) -> &mut Counters {
            &mut self.counters
        }

        fn room(&self) -> usize {
            self.room.unwrap_or(usize::MAX)
        }
    }

    fn producer(id: u64, codec: Codec, ssrc: Option<u32>) -> ProducerSpec {
        ProducerSpec {
            id: ProducerId(id),
            kind: codec.kind(),
            codec,
            payload_type: if codec == Codec::Opus { 111 } else { 96 },
            clock_rate: codec.clock_rate(),
            ssrc: ssrc.map(Ssrc),
            mid: id.to_string(),
            mid_ext: Some(1),
            rids: Vec::new(),
            rid_ext: None,
            nack: true,
            pli: true,
            fir: true,
            remb: true,
            audio_level_ext: None,
            twcc_ext: None,
            dd_ext: None,
            red: None,
            max_bitrate: None,
        }
    }

    fn consumer(id: u64, producer: u64, ssrc: u32) -> ConsumerSpec {
        ConsumerSpec {
            id: ConsumerId(id),
            producer: ProducerId(producer),
            ssrc: Ssrc(ssrc),
            payload_type: 98,
            mid: "0".into(),
            mid_ext: Some(3),
            nack: true,
            pli: true,
            fir: true,
            twcc_ext: None,
            dd_ext: None,
            audio_level_ext: None,
            rtx: None,
            red: None,
        }
    }

    fn packet(ssrc: u32, pt: u8, seq: u16, mid: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
        let fields = HeaderFields {
            marker: false,
            payload_type: pt,
            sequence: seq,
            timestamp: u32::from(seq) * 3000,
            ssrc,
        };
        let mut buf = [0u8; 256];
        let ext: Vec<(u8, &[u8])> = mid.map(|m| (1, m)).into_iter().collect();
        let h = rtp::write_header(&mut buf, &fields, &ext).unwrap();
        buf[h..h + payload.len()].copy_from_slice(payload);
        buf[..h + payload.len()].to_vec()
    }

    /// A router with a publisher (audio and video, SSRCs known) and `subscribers` transports
    /// consuming both, all connected at `now`.
    struct Channel {
        router: Router,
        out: Recorder,
        now: Instant,
        publisher: usize,
        subscribers: Vec<usize>,
    }

    impl Channel {
        fn new(subscribers: &[TransportKey]) -> Channel {
            let now = Instant::now();
            let mut rng = StdRng::seed_from_u64(7);
            let mut router = Router::new(RouterId(1), Grid::new(now));
            let publisher = router
                .add_member(
                    now,
                    PUB,
                    &[
                        producer(1, Codec::Opus, Some(AUDIO)),
                        producer(2, Codec::Vp8, Some(VIDEO)),
                    ],
                    &[],
                    Ssrc(9),
                    &mut rng,
                )
                .unwrap();
            let mut out = Recorder::default();
            out.connected.insert(PUB);
            router.connected(now, publisher);
            let subscribers = subscribers
                .iter()
                .map(|&t| {
                    let base = 10 * t.0 as u64;
                    let m = router
                        .add_member(
                            now,
                            t,
                            &[],
                            &[
                                consumer(base + 1, 1, 3000 + t.0 as u32),
                                consumer(base + 2, 2, 4000 + t.0 as u32),
                            ],
                            Ssrc(90 + t.0 as u32),
                            &mut rng,
                        )
                        .unwrap();
                    out.connected.insert(t);
                    router.connected(now, m);
                    m
                })
                .collect();
            Channel {
                router,
                out,
                now,
                publisher,
                subscribers,
            }
        }

        fn rtp(&mut self, ssrc: u32, pt: u8, seq: u16, payload: &[u8]) {
            let p = packet(ssrc, pt, seq, None, payload);
            let h = rtp::Header::parse(&p).unwrap();
            self.router
                .on_rtp(self.now, self.publisher, &h, &p, &mut self.out);
        }

        fn rtcp(&mut self, member: usize, compound: &[u8]) {
            self.router
                .on_rtcp(self.now, member, compound, &mut self.out);
        }

        /// Runs the router's timers up to `now + by`.
        fn advance(&mut self, by: Duration) {
            self.now += by;
            self.router.handle_timeout(self.now, &mut self.out);
        }

        fn plis(&self) -> usize {
            self.out
                .rtcp_to(PUB)
                .iter()
                .filter(|p| {
                    matches!(p, rtcp::Packet::Pli { sender_ssrc: 9, media_ssrc } if *media_ssrc == VIDEO)
                })
                .count()
        }
    }

    #[test]
    fn fan_out_writes_each_consumer_its_copy_and_video_starts_at_a_keyframe() {
        let mut c = Channel::new(&[SUB, SUB2]);
        c.rtp(AUDIO, 111, 1, b"opus");
        c.rtp(VIDEO, 96, 1, VP8_DELTA);
        for sub in [SUB, SUB2] {
            let got = c.out.rtp_to(sub);
            assert_eq!(got.len(), 1, "audio at once, video waits");
            assert_eq!(
                (got[0].ssrc, got[0].payload_type),
                (3000 + sub.0 as u32, 98)
            );
        }
        c.rtp(VIDEO, 96, 2, VP8_KEY);
        c.rtp(VIDEO, 96, 3, VP8_DELTA);
        for sub in [SUB, SUB2] {
            let video: Vec<_> = c
                .out
                .rtp_to(sub)
                .into_iter()
                .filter(|h| h.ssrc == 4000 + sub.0 as u32)
                .collect();
            assert_eq!(video.len(), 2);
            assert_eq!(video[1].sequence, video[0].sequence.wrapping_add(1));
            assert_eq!(video[1].timestamp.wrapping_sub(video[0].timestamp), 3000);
        }
        assert_eq!(c.out.counters.rtp_forwarded, 6);
        assert!(
            c.out.rtp_to(PUB).is_empty(),
            "nothing goes back to the publisher"
        );
    }

    /// A video packet of the frame at `timestamp`: `payload` with `fill` bytes after it.
    fn frame_packet(
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
        fill: usize,
    ) -> Vec<u8> {
        let fields = HeaderFields {
            marker,
            payload_type: 96,
            sequence: seq,
            timestamp,
            ssrc: VIDEO,
        };
        let mut buf = vec![0u8; 1500];
        let h = rtp::write_header(&mut buf, &fields, &[]).unwrap();
        buf[h..h + payload.len()].copy_from_slice(payload);
        buf.truncate(h + payload.len() + fill);
        buf
    }

    impl Channel {
        fn frame_rtp(&mut self, p: &[u8]) {
            let h = rtp::Header::parse(p).unwrap();
            self.router
                .on_rtp(self.now, self.publisher, &h, p, &mut self.out);
        }

        /// The video each transport got, as (transport, sequence, length, payload length), in
        /// the order written.
        fn video_sent(&self) -> Vec<(TransportKey, u16, usize, usize)> {
            self.out
                .sent
                .iter()
                .filter(|(_, rtcp, _)| !rtcp)
                .map(|(t, _, p)| (*t, rtp::Header::parse(p).unwrap(), p.len()))
                .filter(|(t, h, _)| h.ssrc == 4000 + t.0 as u32)
                .map(|(t, h, len)| (t, h.sequence, len, h.payload_end - h.payload_offset))
                .collect()
        }
    }

    #[test]
    fn a_frame_goes_consumer_by_consumer_padded_to_one_size() {
        let mut c = Channel::new(&[SUB, SUB2]);
        c.router.fanout.enabled = true;
        c.frame_rtp(&frame_packet(7, 9000, false, VP8_KEY, 13));
        c.frame_rtp(&frame_packet(8, 9000, false, &[0x00], 18));
        assert!(
            c.video_sent().is_empty(),
            "held until the frame's last packet"
        );
        c.frame_rtp(&frame_packet(9, 9000, true, &[0x00], 3));
        let got = c.video_sent();
        let order: Vec<_> = got.iter().map(|g| g.0).collect();
        assert_eq!(order, [SUB, SUB, SUB, SUB2, SUB2, SUB2]);
        for sub in got.chunks(3) {
            // One size but the last, whose padding the receiver strips.
            assert_eq!(sub[0].2, sub[1].2);
            assert!(sub[2].2 < sub[0].2);
            let payloads: Vec<_> = sub.iter().map(|g| g.3).collect();
            assert_eq!(payloads, [VP8_KEY.len() + 13, 19, 4]);
            assert_eq!(sub[1].1, sub[0].1.wrapping_add(1));
            assert_eq!(sub[2].1, sub[0].1.wrapping_add(2));
        }
        assert_eq!(c.out.counters.frames_fanned, 1);
        assert_eq!(
            c.out.counters.padding_bytes, 2,
            "one byte for each consumer"
        );
        assert_eq!(c.out.counters.rtp_forwarded, 6);
    }

    #[test]
    fn a_held_frame_goes_when_its_time_is_up() {
        let mut c = Channel::new(&[SUB]);
        c.router.fanout.enabled = true;
        c.frame_rtp(&frame_packet(1, 90, false, VP8_KEY, 0));
        c.frame_rtp(&frame_packet(2, 90, false, &[0x00], 0));
        let due = c.router.poll_timeout().unwrap();
        assert!(due <= c.now + fanout::MAX_HOLD);
        c.advance(fanout::MAX_HOLD - Duration::from_millis(1));
        assert!(c.video_sent().is_empty());
        c.advance(Duration::from_millis(1));
        assert_eq!(c.video_sent().len(), 2);
    }

    #[test]
    fn a_keyframe_waits_for_room_and_reaches_waiting_subscribers_first() {
        const SUB3: TransportKey = TransportKey(3);
        let mut c = Channel::new(&[SUB, SUB2]);
        c.router.fanout.enabled = true;
        c.frame_rtp(&frame_packet(1, 90, false, VP8_KEY, 0));
        c.frame_rtp(&frame_packet(2, 90, true, &[0x00], 0));
        assert_eq!(c.video_sent().len(), 4);
        // A subscriber joins: it waits for the next keyframe.
        let mut rng = StdRng::seed_from_u64(3);
        let consumers = [consumer(31, 1, 3003), consumer(32, 2, 4003)];
        let m = c
            .router
            .add_member(c.now, SUB3, &[], &consumers, Ssrc(93), &mut rng)
            .unwrap();
        c.out.connected.insert(SUB3);
        c.router.connected(c.now, m);
        c.out.sent.clear();
        // Room for one subscriber's frame per turn of the loop.
        c.out.room = Some(2);
        c.frame_rtp(&frame_packet(3, 180, false, VP8_KEY, 0));
        c.frame_rtp(&frame_packet(4, 180, true, &[0x00], 0));
        let mut turns = vec![c.video_sent()];
        while c
            .router
            .poll_timeout()
            .is_some_and(|t| t <= c.now + Duration::from_micros(1))
        {
            c.out.sent.clear();
            c.out.room = Some(2);
            c.advance(Duration::from_micros(1));
            turns.push(c.video_sent());
        }
        let order: Vec<Vec<TransportKey>> = turns
            .iter()
            .map(|t| t.iter().map(|g| g.0).collect())
            .filter(|t: &Vec<_>| !t.is_empty())
            .collect();
        assert_eq!(order, [[SUB3, SUB3], [SUB, SUB], [SUB2, SUB2]]);
        // One wait, however many turns it took.
        assert_eq!(c.out.counters.fanout_deferred, 1);
    }

    #[test]
    fn a_subscriber_leaving_mid_fanout_costs_the_others_nothing() {
        let mut c = Channel::new(&[SUB, SUB2, TransportKey(3)]);
        c.router.fanout.enabled = true;
        c.out.room = Some(2);
        c.frame_rtp(&frame_packet(1, 90, false, VP8_KEY, 0));
        c.frame_rtp(&frame_packet(2, 90, true, &[0x00], 0));
        // The first subscriber has the keyframe; then it leaves, and the list shifts.
        let first: Vec<_> = c.video_sent().iter().map(|g| g.0).collect();
        assert_eq!(first, [SUB, SUB]);
        c.router.remove_member(c.subscribers[0]);
        while c
            .router
            .poll_timeout()
            .is_some_and(|t| t <= c.now + Duration::from_micros(1))
        {
            c.out.room = Some(2);
            c.advance(Duration::from_micros(1));
        }
        let got: Vec<_> = c.video_sent().iter().map(|g| g.0).collect();
        assert_eq!(
            got,
            [SUB, SUB, SUB2, SUB2, TransportKey(3), TransportKey(3)]
        );
    }

    /// A VP8 payload with a 15-bit picture id: a keyframe declaring `height`, or a delta.
    fn vp8(picture: u16, keyframe: Option<u16>) -> Vec<u8> {
        let [hi, lo] = (picture | 0x8000).to_be_bytes();
        let mut p = vec![0x90, 0x80, hi, lo];
        match keyframe {
            Some(h) => {
                let [w0, w1] = (h * 16 / 9).to_le_bytes();
                let [h0, h1] = h.to_le_bytes();
                p.extend_from_slice(&[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, w0, w1, h0, h1]);
            }
            None => p.extend_from_slice(&[0x01, 0xCC, 0xDD]),
        }
        p
    }

    /// Three simulcast layers (rids q, h, f: 180, 360 and 720 lines) published on one
    /// transport, each with its own SSRC, sequence numbers, timestamps and picture ids, and
    /// one subscriber.
    struct Simulcast {
        router: Router,
        out: Recorder,
        now: Instant,
        publisher: usize,
        subscriber: usize,
        seqs: [u16; 3],
        /// With transport-cc: the publisher's next transport-wide sequence number.
        twcc: Option<u16>,
        /// Bytes added to each payload (a layer's bitrate), and to each layer's.
        pad: usize,
        layer_pad: [usize; 3],
        /// Each layer as L1T3 (TID in the payload descriptor, by picture id: 0, 2, 1, 2, ...,
        /// the first TL1 and TL2 after a TL0 frame with the sync bit).
        temporal: bool,
    }

    const LAYER_SSRCS: [u32; 3] = [100, 200, 300];
    const HEIGHTS: [u16; 3] = [180, 360, 720];

    impl Simulcast {
        fn new() -> Simulcast {
            Simulcast::with(false)
        }

        /// With `twcc`, both sides negotiated transport-cc (extension 5 from the publisher,
        /// 6 to the subscriber).
        fn with(twcc: bool) -> Simulcast {
            let now = Instant::now();
            let mut rng = StdRng::seed_from_u64(3);
            let mut router = Router::new(RouterId(1), Grid::new(now));
            let mut spec = producer(2, Codec::Vp8, None);
            spec.rids = vec!["q".into(), "h".into(), "f".into()];
            spec.rid_ext = Some(2);
            spec.twcc_ext = twcc.then_some(5);
            let publisher = router
                .add_member(now, PUB, &[spec], &[], Ssrc(9), &mut rng)
                .unwrap();
            let mut consumer = consumer(1, 2, 4001);
            consumer.twcc_ext = twcc.then_some(6);
            let subscriber = router
                .add_member(now, SUB, &[], &[consumer], Ssrc(8), &mut rng)
                .unwrap();
            let mut out = Recorder::default();
            out.connected.extend([PUB, SUB]);
            router.connected(now, publisher);
            router.connected(now, subscriber);
            Simulcast {
                router,
                out,
                now,
                publisher,
                subscriber,
                seqs: [1000, 30000, 65000],
                twcc: twcc.then_some(65530),
                pad: 0,
                layer_pad: [0; 3],
                temporal: false,
            }
        }

        /// The next packet of `layer`, a keyframe or not; the first ones carry the rid.
        fn send(&mut self, layer: usize, keyframe: bool) {
            let seq = self.seqs[layer];
            self.seqs[layer] = seq.wrapping_add(1);
            let rid = [b"q", b"h", b"f"][layer];
            let fields = HeaderFields {
                marker: true,
                payload_type: 96,
                sequence: seq,
                // Each layer has its own random timestamp base, as browsers send.
                timestamp: (layer as u32 * 1_000_000).wrapping_add(u32::from(seq) * 3000),
                ssrc: LAYER_SSRCS[layer],
            };
            let mut buf = [0u8; 1500];
            let twcc = self.twcc.map(u16::to_be_bytes);
            self.twcc = self.twcc.map(|n| n.wrapping_add(1));
            let mut ext: Vec<(u8, &[u8])> = vec![(1, b"2"), (2, rid)];
            ext.extend(twcc.as_ref().map(|n| (5, &n[..])));
            let h = rtp::write_header(&mut buf, &fields, &ext).unwrap();
            let mut payload = vp8(seq & 0x7FFF, keyframe.then_some(HEIGHTS[layer]));
            if self.temporal {
                let (tid, sync) = if keyframe {
                    (0, false)
                } else {
                    super::temporal::tests::tid(seq)
                };
                payload[1] |= 0x20;
                payload.insert(4, tid << 6 | u8::from(sync) << 5);
            }
            payload.resize(payload.len() + self.pad + self.layer_pad[layer], 0xEE);
            buf[h..h + payload.len()].copy_from_slice(&payload);
            let packet = &buf[..h + payload.len()];
            let header = rtp::Header::parse(packet).unwrap();
            self.router
                .on_rtp(self.now, self.publisher, &header, packet, &mut self.out);
        }

        /// A round of packets: one on each layer in `layers`, 33 ms apart.
        fn round(&mut self, layers: &[usize]) {
            self.now += Duration::from_millis(33);
            for &l in layers {
                self.send(l, false);
            }
            self.router.handle_timeout(self.now, &mut self.out);
        }

        /// What the subscriber got since the last call: (sequence, timestamp, picture id).
        fn received(&mut self) -> Vec<(u16, u32, u16)> {
            let got = self
                .out
                .sent
                .iter()
                .filter(|(t, rtcp, _)| *t == SUB && !rtcp)
                .map(|(_, _, p)| {
                    let h = rtp::Header::parse(p).unwrap();
                    let payload = &p[h.payload_offset..h.payload_end];
                    let id = rtp::vp8_picture_fields(payload)
                        .unwrap()
                        .picture_id
                        .unwrap()
                        .0;
                    assert_eq!(h.ssrc, 4001);
                    (h.sequence, h.timestamp, id)
                })
                .collect();
            self.out.sent.retain(|(t, rtcp, _)| *t != SUB || *rtcp);
            got
        }

        fn plis_for(&self, layer: usize) -> usize {
            self.out
                .rtcp_to(PUB)
                .iter()
                .filter(|p| matches!(p, rtcp::Packet::Pli { media_ssrc, .. } if *media_ssrc == LAYER_SSRCS[layer]))
                .count()
        }
    }

    #[test]
    fn max_frame_rate_drops_vp8_temporal_layers_and_the_stream_stays_whole() {
        let mut s = Simulcast::new();
        s.temporal = true;
        s.seqs = [1000, 2000, 65000];
        for layer in 0..3 {
            s.send(layer, true);
        }
        // A second and a bit at 30 fps: the frame rate is known.
        for _ in 0..40 {
            s.round(&[0, 1, 2]);
        }
        let all = s.received();
        assert!(
            all.len() >= 41,
            "every frame of f (after the lower layers' keyframes)"
        );
        continuous(&all);
        let capped = |max_frame_rate| Preferences {
            max_height: None,
            max_frame_rate,
            paused: false,
            max_bitrate: None,
        };
        s.router
            .set_preferences(s.now, s.subscriber, capped(Some(15)));
        for _ in 0..40 {
            s.round(&[0, 1, 2]);
        }
        let half = s.received();
        assert_eq!(half.len(), 20, "TL0 and TL1 only: {half:?}");
        // One stream still: numbers and picture ids close up over the dropped frames.
        continuous(&[&all[all.len() - 1..], &half[..]].concat());
        // A NACK maps back through the closed-up numbers; the resend keeps its picture id.
        let (seq, _, picture) = half[5];
        let mut nack = [0u8; 64];
        let n = rtcp::write_nack(&mut nack, 8, 4001, &[seq]).unwrap();
        s.router
            .on_rtcp(s.now, s.subscriber, &nack[..n], &mut s.out);
        assert_eq!(s.received(), [(seq, half[5].1, picture)]);

        s.router
            .set_preferences(s.now, s.subscriber, capped(Some(8)));
        for _ in 0..40 {
            s.round(&[0, 1, 2]);
        }
        let quarter = s.received();
        assert_eq!(quarter.len(), 10, "TL0 only");
        s.router.set_preferences(s.now, s.subscriber, capped(None));
        for _ in 0..8 {
            s.round(&[0, 1, 2]);
        }
        let back = s.received();
        assert!(
            (6..=8).contains(&back.len()),
            "every layer from a sync frame: {back:?}"
        );
        continuous(&[&half[half.len() - 1..], &quarter[..], &back[..]].concat());
        assert_eq!(s.plis_for(2), 1, "no keyframe needed for any of it");
    }

    /// Sequence numbers and picture ids go up by one, timestamps go up.
    fn continuous(got: &[(u16, u32, u16)]) {
        for w in got.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1), "{got:?}");
            assert!(
                w[1].1.wrapping_sub(w[0].1) > 0 && w[1].1.wrapping_sub(w[0].1) < 90_000,
                "{got:?}"
            );
            assert_eq!(w[1].2, (w[0].2 + 1) & 0x7FFF, "{got:?}");
        }
    }

    #[test]
    fn simulcast_consumers_forward_one_layer_and_switch_at_its_keyframes() {
        let mut s = Simulcast::new();
        // Layers appear lowest first; the consumer climbs to the top at each keyframe.
        for layer in 0..3 {
            s.send(layer, true);
        }
        s.round(&[0, 1, 2]);
        s.round(&[0, 1, 2]);
        let got = s.received();
        assert_eq!(got.len(), 5, "q, h and f keyframes, then f only: {got:?}");
        continuous(&got);
        assert_eq!(s.out.counters.rtp_forwarded, 5);

        // maxHeight 360: a keyframe of h is asked for; f goes on until it comes.
        let (h_plis, f_plis) = (s.plis_for(1), s.plis_for(2));
        s.router.set_preferences(
            s.now,
            s.subscriber,
            Preferences {
                max_height: Some(360),
                max_frame_rate: None,
                paused: false,
                max_bitrate: None,
            },
        );
        // (After the rate limit: h was asked for one when it appeared.)
        for _ in 0..16 {
            s.round(&[0, 2]);
        }
        assert_eq!(s.plis_for(1), h_plis + 1);
        assert_eq!(s.plis_for(2), f_plis);
        s.send(1, true);
        s.round(&[0, 1, 2]);
        let got = s.received();
        assert_eq!(
            got.len(),
            18,
            "16 of f, then h's keyframe and delta: {got:?}"
        );
        continuous(&got);
        let got = got[15..].to_vec();

        // A NACK for a packet of f (before the switch) is not answered with h's packets.
        let mut nack = [0u8; 64];
        let n = rtcp::write_nack(&mut nack, 5, 4001, &[got[0].0, got[2].0]).unwrap();
        s.router
            .on_rtcp(s.now, s.subscriber, &nack[..n], &mut s.out);
        assert_eq!(s.received(), vec![got[2]]);

        // Paused: nothing; resumed: it starts again at a keyframe, continuing its numbers.
        let paused = Preferences {
            max_height: Some(360),
            max_frame_rate: None,
            paused: true,
            max_bitrate: None,
        };
        s.router.set_preferences(s.now, s.subscriber, paused);
        s.round(&[0, 1, 2]);
        assert!(s.received().is_empty());
        s.router.set_preferences(
            s.now,
            s.subscriber,
            Preferences {
                paused: false,
                ..paused
            },
        );
        s.round(&[0, 1, 2]);
        assert!(s.received().is_empty(), "waits for a keyframe");
        s.send(1, true);
        let mut got2 = vec![got[2]];
        got2.extend(s.received());
        assert_eq!(got2.len(), 2);
        continuous(&got2);

        // No preference and f stops arriving: back to h (the highest that arrives) after the
        // layer timeout, with no keyframe needed since it forwards h already.
        s.router
            .set_preferences(s.now, s.subscriber, Preferences::default());
        s.send(2, true);
        assert_eq!(s.received().len(), 1, "f again at its keyframe");
        // (The layer timeout, then the next report tick.)
        for _ in 0..90 {
            s.round(&[0, 1]);
        }
        let plis = s.plis_for(1);
        s.send(1, true);
        let got = s.received();
        assert_eq!(got.len(), 1, "h again once f is gone: {got:?}");
        assert!(plis >= 2);
    }

    #[test]
    fn publishers_hear_which_layers_someone_watches() {
        let mut s = Simulcast::new();
        for layer in 0..3 {
            s.send(layer, true);
        }
        s.round(&[0, 1, 2]);
        let layers = |r: &mut Router| -> Vec<Vec<bool>> {
            std::iter::from_fn(|| r.poll_event())
                .filter_map(|e| match e {
                    MediaEvent::Layers { active, .. } => Some(active),
                    _ => None,
                })
                .collect()
        };
        assert!(layers(&mut s.router).is_empty(), "all three are watched");
        let capped = Preferences {
            max_height: Some(360),
            max_frame_rate: None,
            paused: false,
            max_bitrate: None,
        };
        s.router.set_preferences(s.now, s.subscriber, capped);
        assert!(layers(&mut s.router).is_empty(), "not at once");
        for _ in 0..100 {
            s.round(&[0, 1, 2]);
        }
        assert_eq!(layers(&mut s.router), [vec![true, true, false]]);
        // Paused: only the lowest; wanted again: all of them, at once.
        let paused = Preferences {
            paused: true,
            ..capped
        };
        s.router.set_preferences(s.now, s.subscriber, paused);
        for _ in 0..100 {
            s.round(&[0, 1]);
        }
        assert_eq!(layers(&mut s.router), [vec![true, false, false]]);
        s.router
            .set_preferences(s.now, s.subscriber, Preferences::default());
        assert_eq!(layers(&mut s.router), [vec![true, true, true]]);
    }

    #[test]
    fn transport_cc_feedback_both_ways_and_a_lossy_subscriber_gets_the_low_layer() {
        let mut s = Simulcast::with(true);
        s.pad = 1000;
        for layer in 0..3 {
            s.send(layer, true);
        }
        for _ in 0..10 {
            s.round(&[0, 1, 2]);
        }
        // The publisher hears of the packets it sent (33, the last few not yet due), all
        // arrived, across the wrap of its transport-wide numbers.
        let mut reported = Vec::new();
        for p in s.out.rtcp_to(PUB) {
            if let rtcp::Packet::TransportCc {
                feedback,
                sender_ssrc,
                ..
            } = p
            {
                assert_eq!(sender_ssrc, 9);
                reported.extend(feedback.results().map(Result::unwrap));
            }
        }
        assert!((30..=33).contains(&reported.len()), "{reported:?}");
        assert!(reported.iter().all(|(_, at)| at.is_some()));
        assert_eq!(reported[0].0, 65530);

        // What the subscriber gets carries consecutive transport-wide numbers (and f's).
        let numbers = |s: &Simulcast| -> Vec<u16> {
            s.out
                .sent
                .iter()
                .filter(|(t, rtcp, _)| *t == SUB && !rtcp)
                .map(|(_, _, p)| {
                    let h = rtp::Header::parse(p).unwrap();
                    let v = h.extension_value(p, 6).unwrap();
                    u16::from_be_bytes([v[0], v[1]])
                })
                .collect()
        };
        let sent = numbers(&s);
        assert!(
            sent.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{sent:?}"
        );
        let c = s.router.consumers.iter().next().unwrap().1;
        assert_eq!((c.layer, c.target), (Some(2), 2));

        // Its feedback says three quarters of what we send is lost: the estimate falls, and
        // with it the layer, to q at q's next keyframe.
        let mut receiver = crate::twcc::Recorder::new(s.now);
        let mut seen = sent.len();
        for round in 0..300 {
            s.round(&[0, 1, 2]);
            let sent = numbers(&s);
            for &n in &sent[seen..] {
                if n % 4 == 0 {
                    receiver.record(n, s.now);
                }
            }
            seen = sent.len();
            if round % 3 == 0 {
                let mut buf = [0u8; 1200];
                if let Some(n) = receiver.poll_feedback(s.now, 8, 4001, &mut buf) {
                    s.router.on_rtcp(s.now, s.subscriber, &buf[..n], &mut s.out);
                }
            }
        }
        let c = s.router.consumers.iter().next().unwrap().1;
        assert_eq!(c.target, 0);
        // f sends far more than the budget now: it stopped at once, not at q's keyframe.
        assert_eq!(c.layer, None);
        s.out.sent.clear();
        s.round(&[0, 1, 2]);
        assert!(s.received().is_empty(), "nothing until q's keyframe");
        s.send(0, true);
        let c = s.router.consumers.iter().next().unwrap().1;
        assert_eq!(c.layer, Some(0));
    }

    /// The REMB bitrates the publisher got since the last call.
    fn rembs(s: &mut Simulcast) -> Vec<u64> {
        let got = s
            .out
            .rtcp_to(PUB)
            .into_iter()
            .filter_map(|p| match p {
                rtcp::Packet::Remb { bitrate_bps, .. } => Some(bitrate_bps),
                _ => None,
            })
            .collect();
        s.out.sent.retain(|(t, _, _)| *t != PUB);
        got
    }

    #[test]
    fn the_channel_cap_bounds_the_remb_to_the_publisher_and_the_layer_forwarded() {
        const CAP: u64 = 200_000;
        let mut s = Simulcast::new();
        // About 30, 130 and 320 kbps at 30 packets a second.
        s.layer_pad = [100, 500, 1300];
        s.router.producers.iter_mut().next().unwrap().1.max_bitrate = Some(CAP);
        for layer in 0..3 {
            s.send(layer, true);
        }
        for _ in 0..90 {
            s.round(&[0, 1, 2]);
        }
        let rates: Vec<u64> = s
            .router
            .producers
            .iter()
            .next()
            .unwrap()
            .1
            .layers
            .iter()
            .map(|l| l.rate.bps)
            .collect();
        assert!(rates[1] < CAP * 3 / 4 && rates[2] > CAP, "{rates:?}");
        // The publisher negotiated REMB: it is told the cap, not our usual 3 Mb/s.
        let remb = rembs(&mut s);
        assert!(!remb.is_empty());
        assert!(remb.iter().all(|&b| b == CAP), "{remb:?}");
        // The subscriber, with no estimate of its own, gets h: f does not fit the cap.
        let c = s.router.consumers.iter().next().unwrap().1;
        assert_eq!(c.target, 1);
        s.send(1, true);
        assert_eq!(s.router.consumers.iter().next().unwrap().1.layer, Some(1));

        // A transport-cc publisher (no REMB negotiated) of a capped channel gets REMB with
        // the cap all the same; without a cap, none.
        s.router.producers.iter_mut().next().unwrap().1.remb = false;
        for _ in 0..60 {
            s.round(&[0, 1, 2]);
        }
        let remb = rembs(&mut s);
        assert!(
            !remb.is_empty() && remb.iter().all(|&b| b == CAP),
            "{remb:?}"
        );
        s.router.producers.iter_mut().next().unwrap().1.max_bitrate = None;
        for _ in 0..60 {
            s.round(&[0, 1, 2]);
        }
        assert!(rembs(&mut s).is_empty());
    }

    /// A layer whose height is not known yet is taken for twice the one below it (fitting
    /// when nothing below is known either), and none above a too tall one fits.
    #[test]
    fn layers_whose_heights_are_not_known_yet_are_taken_for_twice_the_one_below() {
        let mut s = Simulcast::new();
        let p = s.router.producers.iter_mut().next().unwrap().1;
        let cap = |h| Preferences {
            max_height: Some(h),
            ..Preferences::default()
        };
        for l in &mut p.layers {
            l.height = None;
        }
        assert_eq!(wanted_layer(p, &cap(179)), 2);
        p.layers[0].height = Some(180);
        assert_eq!(wanted_layer(p, &cap(179)), 0);
        assert_eq!(wanted_layer(p, &cap(359)), 0);
        assert_eq!(wanted_layer(p, &cap(360)), 1);
        assert_eq!(wanted_layer(p, &cap(720)), 2);
        // The encoder scaled its lowest layer down (CPU adaptation), and the others scale with
        // it: a tile under 180 lines takes no more than the lowest.
        p.layers[0].height = Some(90);
        assert_eq!(wanted_layer(p, &cap(179)), 0);
        p.layers[1].height = Some(360);
        assert_eq!(wanted_layer(p, &cap(719)), 1);
        assert_eq!(wanted_layer(p, &cap(720)), 2);
        assert_eq!(wanted_layer(p, &Preferences::default()), 2);
    }

    /// A consumer that names a `max_bitrate` (a mixer input sized to its tile) lowers the
    /// REMB to its publisher, the channel's cap still bounding it; a consumer that takes
    /// whatever comes lifts it again, and a paused one has no say.
    #[test]
    fn consumers_that_want_less_lower_the_remb() {
        const TILE: u64 = 400_000;
        let mut s = Simulcast::new();
        let remb_after = |s: &mut Simulcast, prefs: Preferences| {
            let now = s.now;
            s.router.set_preferences(now, s.subscriber, prefs);
            for _ in 0..60 {
                s.round(&[0, 1, 2]);
            }
            let remb = rembs(s);
            assert!(!remb.is_empty());
            assert!(remb.iter().all(|&b| b == remb[0]), "{remb:?}");
            remb[0]
        };
        let tile = Preferences {
            max_bitrate: Some(TILE),
            ..Preferences::default()
        };
        assert_eq!(remb_after(&mut s, Preferences::default()), REMB_BITRATE);
        assert_eq!(remb_after(&mut s, tile), TILE);
        s.router.producers.iter_mut().next().unwrap().1.max_bitrate = Some(TILE / 2);
        assert_eq!(remb_after(&mut s, tile), TILE / 2);
        s.router.producers.iter_mut().next().unwrap().1.max_bitrate = None;
        let paused = Preferences {
            paused: true,
            ..tile
        };
        assert_eq!(remb_after(&mut s, paused), REMB_BITRATE);
        assert_eq!(remb_after(&mut s, Preferences::default()), REMB_BITRATE);
    }

    #[test]
    fn a_transport_that_is_not_connected_gets_nothing_and_waits_for_its_keyframe() {
        let mut c = Channel::new(&[SUB]);
        c.out.connected.remove(&SUB);
        c.rtp(VIDEO, 96, 1, VP8_KEY);
        assert!(c.out.rtp_to(SUB).is_empty());
        c.out.connected.insert(SUB);
        c.rtp(VIDEO, 96, 2, VP8_DELTA);
        assert!(
            c.out.rtp_to(SUB).is_empty(),
            "its first video is a keyframe"
        );
        c.rtp(VIDEO, 96, 3, VP8_KEY);
        assert_eq!(c.out.rtp_to(SUB).len(), 1);
    }

    #[test]
    fn nacks_are_answered_from_the_history_with_the_consumers_numbers() {
        let mut c = Channel::new(&[SUB]);
        c.rtp(VIDEO, 96, 100, VP8_KEY);
        c.rtp(VIDEO, 96, 101, VP8_DELTA);
        let sent = c.out.rtp_to(SUB);
        let lost = sent[1].sequence;
        c.out.sent.clear();
        let mut nack = [0u8; 64];
        let n = rtcp::write_nack(&mut nack, 5, 4001, &[lost]).unwrap();
        let sub = c.subscribers[0];
        c.rtcp(sub, &nack[..n]);
        let resent = c.out.rtp_to(SUB);
        assert_eq!(resent.len(), 1);
        assert_eq!((resent[0].ssrc, resent[0].sequence), (4001, lost));
        assert_eq!(c.out.counters.nack_retransmits, 1);
        // A NACK for a sequence number never seen, or for another transport's SSRC, is ignored.
        c.out.sent.clear();
        let n = rtcp::write_nack(&mut nack, 5, 4001, &[lost.wrapping_add(50)]).unwrap();
        c.rtcp(sub, &nack[..n]);
        let n = rtcp::write_nack(&mut nack, 5, 4002, &[lost]).unwrap();
        c.rtcp(sub, &nack[..n]);
        assert!(c.out.sent.is_empty());
    }

    #[test]
    fn nacks_of_an_rtx_consumer_are_answered_on_its_rtx_stream() {
        let mut c = Channel::new(&[]);
        let mut video = consumer(12, 2, 4001);
        video.rtx = Some(RtxSpec {
            ssrc: Ssrc(5001),
            payload_type: 99,
        });
        let sub = c
            .router
            .add_member(
                c.now,
                SUB,
                &[],
                &[video],
                Ssrc(91),
                &mut StdRng::seed_from_u64(8),
            )
            .unwrap();
        c.out.connected.insert(SUB);
        c.router.connected(c.now, sub);
        c.rtp(VIDEO, 96, 100, VP8_KEY);
        c.rtp(VIDEO, 96, 101, VP8_DELTA);
        let sent = c.out.rtp_to(SUB);
        let lost = [sent[0].sequence, sent[1].sequence];
        c.out.sent.clear();
        let mut nack = [0u8; 64];
        let n = rtcp::write_nack(&mut nack, 5, 4001, &lost).unwrap();
        c.rtcp(sub, &nack[..n]);
        let resent: Vec<&Vec<u8>> = c
            .out
            .sent
            .iter()
            .filter(|(t, rtcp, _)| *t == SUB && !rtcp)
            .map(|(_, _, p)| p)
            .collect();
        assert_eq!(resent.len(), 2);
        for (i, (p, (original, payload))) in resent
            .iter()
            .zip(sent.iter().zip([VP8_KEY, VP8_DELTA]))
            .enumerate()
        {
            let h = rtp::Header::parse(p).unwrap();
            assert_eq!((h.ssrc, h.payload_type), (5001, 99));
            assert_eq!(h.timestamp, original.timestamp);
            let body = &p[h.payload_offset..h.payload_end];
            assert_eq!(&body[..2], &original.sequence.to_be_bytes());
            assert_eq!(&body[2..], payload);
            if i == 1 {
                let first = rtp::Header::parse(resent[0]).unwrap().sequence;
                assert_eq!(h.sequence, first.wrapping_add(1));
            }
        }
        assert_eq!(c.out.counters.nack_retransmits, 2);
        assert_eq!(c.out.counters.rtx_retransmits, 2);
        // A NACK naming the RTX SSRC is not answered: retransmissions are not retransmitted.
        c.out.sent.clear();
        let n = rtcp::write_nack(&mut nack, 5, 5001, &lost).unwrap();
        c.rtcp(sub, &nack[..n]);
        assert!(c.out.sent.is_empty());
    }

    #[test]
    fn keyframe_requests_go_to_the_publisher_rate_limited() {
        let mut c = Channel::new(&[SUB]);
        // The subscriber's waiting video consumer asked for one at once.
        c.advance(Duration::ZERO);
        assert_eq!(c.plis(), 1);
        assert_eq!(c.out.counters.keyframe_requests, 1);
        // Its PLI asks again, but not before the rate limit allows.
        let mut pli = [0u8; 16];
        let n = rtcp::write_pli(&mut pli, 5, 4001).unwrap();
        let sub = c.subscribers[0];
        c.rtcp(sub, &pli[..n]);
        c.advance(Duration::from_millis(100));
        assert_eq!(c.plis(), 1);
        assert_eq!(
            c.router.poll_timeout(),
            Some(c.now - Duration::from_millis(100) + producer::KEYFRAME_REQUEST_INTERVAL)
        );
        c.advance(Duration::from_millis(400));
        assert_eq!(c.plis(), 2);
        // Once the consumer has its keyframe, no more repeats.
        c.rtp(VIDEO, 96, 1, VP8_KEY);
        c.advance(Duration::from_secs(3));
        assert_eq!(c.plis(), 2);
    }

    #[test]
    fn a_publisher_without_pli_gets_fir_with_increasing_sequence_numbers() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let mut router = Router::new(RouterId(1), Grid::new(now));
        let mut spec = producer(2, Codec::Vp8, Some(VIDEO));
        spec.pli = false;
        let publisher = router
            .add_member(now, PUB, &[spec], &[], Ssrc(9), &mut rng)
            .unwrap();
        let mut out = Recorder::default();
        out.connected.insert(PUB);
        router.connected(now, publisher);
        router
            .add_member(now, SUB, &[], &[consumer(1, 2, 4001)], Ssrc(8), &mut rng)
            .unwrap();
        router.handle_timeout(now, &mut out);
        let later = now + Duration::from_secs(1);
        router.handle_timeout(later, &mut out);
        let firs: Vec<u8> = out
            .rtcp_to(PUB)
            .into_iter()
            .filter_map(|p| match p {
                rtcp::Packet::Fir { mut entries, .. } => entries.next().map(|(_, seq)| seq),
                _ => None,
            })
            .collect();
        assert_eq!(firs, [1, 2]);
    }

    #[test]
    fn reports_go_out_each_interval_once_connected() {
        let mut c = Channel::new(&[SUB]);
        c.rtp(AUDIO, 111, 1, b"opus");
        c.rtp(VIDEO, 96, 1, VP8_KEY);
        c.out.sent.clear();
        c.advance(RTCP_INTERVAL + Grid::TICK);
        let to_pub = c.out.rtcp_to(PUB);
        assert!(
            to_pub
                .iter()
                .any(|p| matches!(p, rtcp::Packet::ReceiverReport { ssrc: 9, .. }))
        );
        assert!(to_pub.iter().any(
            |p| matches!(p, rtcp::Packet::Remb { bitrate_bps, .. } if *bitrate_bps == REMB_BITRATE)
        ));
        // No sender reports to the subscriber before the publisher's clock is known.
        assert!(c.out.rtcp_to(SUB).is_empty());
        let mut sr = [0u8; 64];
        let n = rtcp::write_sender_report(&mut sr, VIDEO, 5 << 32, 3000, 1, 4, &[]).unwrap();
        let publisher = c.publisher;
        c.rtcp(publisher, &sr[..n]);
        c.advance(RTCP_INTERVAL);
        let srs: Vec<u32> = c
            .out
            .rtcp_to(SUB)
            .into_iter()
            .filter_map(|p| match p {
                rtcp::Packet::SenderReport { ssrc, .. } => Some(ssrc),
                _ => None,
            })
            .collect();
        assert_eq!(
            srs,
            [4001],
            "for the started consumer whose producer sent an SR"
        );
        // The next reports wait a whole interval.
        c.out.sent.clear();
        c.advance(RTCP_INTERVAL / 2);
        assert!(c.out.sent.is_empty());
    }

    #[test]
    fn unsignalled_ssrcs_are_bound_by_mid_once_and_kept_in_one_place() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let mut router = Router::new(RouterId(1), Grid::new(now));
        let publisher = router
            .add_member(
                now,
                PUB,
                &[producer(1, Codec::Opus, None)],
                &[],
                Ssrc(9),
                &mut rng,
            )
            .unwrap();
        let mut out = Recorder::default();
        assert!(!router.member_has_ssrc(publisher, Ssrc(77), false));
        let p = packet(77, 111, 1, Some(b"1"), b"x");
        let h = rtp::Header::parse(&p).unwrap();
        router.on_rtp(now, publisher, &h, &p, &mut out);
        assert!(router.member_has_ssrc(publisher, Ssrc(77), false));
        // Another SSRC with no MID and no unbound producer left is unknown.
        let p = packet(78, 111, 1, None, b"x");
        let h = rtp::Header::parse(&p).unwrap();
        router.on_rtp(now, publisher, &h, &p, &mut out);
        assert_eq!(out.counters.dropped(DropReason::RtpUnknownSsrc), 1);
    }

    #[test]
    fn audio_levels_turn_into_speaking_events_on_the_routers_timer() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(3);
        let mut router = Router::new(RouterId(1), Grid::new(now));
        let mut spec = producer(1, Codec::Opus, Some(AUDIO));
        spec.audio_level_ext = Some(2);
        let publisher = router
            .add_member(now, PUB, &[spec], &[], Ssrc(9), &mut rng)
            .unwrap();
        router
            .add_member(now, SUB, &[], &[consumer(11, 1, 3001)], Ssrc(8), &mut rng)
            .unwrap();
        let mut out = Recorder::default();
        out.connected.insert(SUB);
        assert_eq!(
            router.poll_timeout(),
            Some(now + speaker::EVALUATE_EVERY),
            "the detector runs on the timer from the first audio producer with levels"
        );
        let mut t = now;
        let mut events = Vec::new();
        // A second of tone (-20 dBov) then two of silence, a packet each 20 ms, one with a
        // malformed level; the timers run as the engine runs them.
        for i in 0..150u16 {
            let level: &[u8] = match i {
                10 => &[20, 20],
                0..50 => &[20],
                _ => &[127],
            };
            let mut buf = [0u8; 64];
            let fields = HeaderFields {
                marker: false,
                payload_type: 111,
                sequence: i,
                timestamp: u32::from(i) * 960,
                ssrc: AUDIO,
            };
            let n = rtp::write_header(&mut buf, &fields, &[(2, level)]).unwrap();
            let h = rtp::Header::parse(&buf[..n + 4]).unwrap();
            router.on_rtp(t, publisher, &h, &buf[..n + 4], &mut out);
            if i == 49 {
                let talker = router.talkers(t).next().unwrap();
                assert!(talker.speaking && talker.loudness > 100, "{talker:?}");
            }
            t += Duration::from_millis(20);
            while router.poll_timeout().is_some_and(|d| d <= t) {
                router.handle_timeout(t, &mut out);
            }
            events.extend(std::iter::from_fn(|| router.poll_event()));
        }
        assert_eq!(out.rtp_to(SUB).len(), 150, "every packet is forwarded");
        let speaking = |speaking| MediaEvent::Speaking {
            router: RouterId(1),
            producer: ProducerId(1),
            speaking,
        };
        let dominant = |producer| MediaEvent::DominantSpeaker {
            router: RouterId(1),
            producer,
        };
        assert_eq!(
            events,
            [
                speaking(true),
                dominant(Some(ProducerId(1))),
                speaking(false)
            ]
        );
        assert_eq!(router.dominant_speaker(), Some(ProducerId(1)));
        assert_eq!(router.talkers(t).next().unwrap().loudness, 0);
        // The publisher leaves: the dominant speaker is gone, and the detector stops.
        router.remove_member(publisher);
        assert_eq!(router.poll_event(), Some(dominant(None)));
        router.handle_timeout(t + Duration::from_secs(1), &mut out);
        assert_eq!(router.next_speaker_check, None);
    }

    #[test]
    fn members_come_and_go_with_their_tracks() {
        let mut c = Channel::new(&[SUB]);
        let mut rng = StdRng::seed_from_u64(2);
        let err = |r: Result<usize, Error>| r.unwrap_err().to_string();
        assert!(
            err(c
                .router
                .add_member(c.now, SUB2, &[], &[consumer(99, 5, 1)], Ssrc(1), &mut rng))
            .contains("producer 5 is not in this channel")
        );
        assert!(
            err(c.router.add_member(
                c.now,
                SUB2,
                &[producer(1, Codec::Opus, None)],
                &[],
                Ssrc(1),
                &mut rng
            ))
            .contains("producer 1 exists")
        );
        assert!(
            err(c
                .router
                .add_member(c.now, SUB2, &[], &[consumer(11, 1, 1)], Ssrc(1), &mut rng))
            .contains("consumer 11 exists")
        );
        // The publisher leaves: its consumers go with it, and its ids may be used again.
        let publisher = c.publisher;
        c.router.remove_member(publisher);
        assert!(c.router.consumers.is_empty());
        let sub = c.subscribers[0];
        assert!(c.router.members[sub].consumers.is_empty());
        let again = c
            .router
            .add_member(
                c.now,
                PUB,
                &[producer(1, Codec::Opus, None)],
                &[],
                Ssrc(1),
                &mut rng,
            )
            .unwrap();
        c.router
            .add_member(c.now, SUB2, &[], &[consumer(11, 1, 5)], Ssrc(2), &mut rng)
            .unwrap();
        c.router.remove_member(sub);
        c.router.remove_member(again);
        assert!(!c.router.is_empty());
        assert_eq!(
            c.router.consumers.len(),
            0,
            "consumers of a removed producer go"
        );
    }
}
