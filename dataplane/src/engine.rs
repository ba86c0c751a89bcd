//! The sans-IO core of one worker: every transport and router on that core, as one state
//! machine in quinn-proto's shape. Nothing here reads a clock, touches a socket or a channel,
//! or draws unseeded randomness; the driver (`worker`, or a test) owns all of that.
//!
//! The run loop a driver follows:
//! - commands are plain calls: [`Engine::create_transport`], [`Engine::close_transport`],
//!   [`Engine::close_all`];
//! - each received datagram goes to [`Engine::handle_datagram`]; when the time from
//!   [`Engine::poll_timeout`] has come, the driver calls [`Engine::handle_timeout`];
//! - both write what is to be sent straight into the driver's send buffers ([`Tx`]): a
//!   forwarded packet fans out to many consumers, and each copy is written and encrypted in
//!   place in the buffer the kernel sends from (the buffers are the driver's because the I/O
//!   backend owns their lifetime: io_uring frees one only at its completion);
//! - events for the control plane come out of [`Engine::poll_event`]: transports connected and
//!   closed, and the routers' speaking changes (`speaker`, run on the routers' timers).
//!
//! The packet path: classify (RFC 7983) → find the transport (STUN by ICE ufrag, everything
//! else by source address, pipes then by SSRC) → the transport decrypts once into the receive
//! buffer → its router forwards (history for NACKs, a rewritten and encrypted copy for each
//! consumer).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use slab::Slab;

use crate::data_routes::DataRoutes;
use crate::datachannel;
use crate::demux::{self, PacketKind};
use crate::dtls::{self, Dtls, Identity};
use crate::ice::{self, IceLite};
use crate::io::Tx;
use crate::lane::{self, Far};
use crate::pacer::{self, Class, Offer};
use crate::router::{Output, Router};
use crate::spec::{
    CloseReason, Error, MediaEvent, Preferences, RouterId, Ssrc, TransportId, TransportKind,
    TransportSpec,
};
use crate::stats::{Counters, DropReason};
use crate::timers::{Grid, Timer, Timers};
use crate::transport::{
    self, DataLink, Expiry, Held, Link, Pipe, Srtp, Transport, TransportKey, WebRtc,
};
use crate::{rtp, stun, wire};

/// A router and the time of its live entry in the timer queue.
struct RouterSlot {
    router: Router,
    scheduled: Option<Instant>,
}

pub struct Engine {
    identity: Arc<Identity>,
    rng: StdRng,
    grid: Grid,
    counters: Counters,
    transports: Slab<Transport>,
    by_id: HashMap<TransportId, usize>,
    by_ufrag: HashMap<Vec<u8>, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Pipes by the other media server's worker address. Several pipes (channels, relayed
    /// publications) share one pair of worker sockets, so packets are told apart by SSRC.
    pipes_by_addr: HashMap<SocketAddr, Vec<usize>>,
    routers: Slab<RouterSlot>,
    router_keys: HashMap<RouterId, usize>,
    timers: Timers,
    events: VecDeque<MediaEvent>,
    /// Where DTLS records are polled into (sized for dimpl; see `dtls::POLL_BUFFER`).
    scratch: Box<[u8]>,
    /// Where data channel messages go (publications' data producers and their subscribers).
    data_routes: DataRoutes,
    /// Transports whose pacer started holding during a router call (see `Links`).
    pacing_started: Vec<usize>,
    /// Send buffers held by the pacers of transports closed since the engine last had the
    /// [`Tx`] in hand: freed on its next call.
    orphans: Vec<u32>,
    /// Mixer streams and shard links open (`Link::Mixer`, `Link::Shard`): while none, the
    /// worker skips looking for packets to hand to other threads' lanes.
    lane_streams: usize,
    /// Mixer streams closed since the worker last looked, with their MCU thread: it tells
    /// the thread, whose mixer then forgets them.
    closed_mixer_streams: Vec<(usize, TransportId)>,
    /// Whether new routers hold video a frame at a time for its fan-out (`router::fanout`).
    frame_fanout: bool,
}

impl Engine {
    /// An engine whose transports present `identity` in DTLS. `seed` drives everything random
    /// the engine picks (RTCP sender SSRCs, consumers' sequence and timestamp offsets), so a
    /// test can replay a run; the worker seeds it from the OS.
    pub fn new(identity: Arc<Identity>, seed: u64, now: Instant) -> Engine {
        Engine {
            identity,
            rng: StdRng::seed_from_u64(seed),
            grid: Grid::new(now),
            counters: Counters::default(),
            transports: Slab::new(),
            by_id: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            pipes_by_addr: HashMap::new(),
            routers: Slab::new(),
            router_keys: HashMap::new(),
            timers: Timers::default(),
            events: VecDeque::new(),
            scratch: vec![0; dtls::POLL_BUFFER].into_boxed_slice(),
            data_routes: DataRoutes::default(),
            pacing_started: Vec::new(),
            orphans: Vec::new(),
            lane_streams: 0,
            closed_mixer_streams: Vec::new(),
            frame_fanout: false,
        }
    }

    /// Holds video a frame at a time in routers made from now on, so each consumer's frame
    /// leaves as one GSO train: for a worker that sends trains.
    pub fn set_frame_fanout(&mut self, on: bool) {
        self.frame_fanout = on;
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// For what the I/O driver counts on the engine's behalf (ICE-TCP connections and drops).
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Whether any mixer stream or shard link is open (see [`crate::lane`]).
    pub fn has_lane_streams(&self) -> bool {
        self.lane_streams > 0
    }

    /// The mixer streams closed since the last call, with their MCU threads (see
    /// [`crate::mcu`]); the caller keeps those it could not pass on yet.
    pub fn closed_mixer_streams(&mut self) -> &mut Vec<(usize, TransportId)> {
        &mut self.closed_mixer_streams
    }

    /// The next event for the control plane.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` next has work; `None` when nothing is scheduled (no transports).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Sets up a transport with its producers and consumers in router `spec.router` (created
    /// with its first transport). A pipe is connected at once.
    pub fn create_transport(&mut self, now: Instant, spec: TransportSpec) -> Result<(), Error> {
        let id = spec.id;
        let result = self.create(now, spec);
        if let Err(e) = &result {
            tracing::info!(transport = %id, "transport rejected: {e}");
        }
        result
    }

    fn create(&mut self, now: Instant, spec: TransportSpec) -> Result<(), Error> {
        if self.by_id.contains_key(&spec.id) {
            return Err(Error::Rejected(format!("transport {} exists", spec.id)));
        }
        // Everything that can refuse the transport is checked before the router changes.
        let (link, pipe, rtcp_ssrc) = match &spec.kind {
            TransportKind::WebRtc {
                local_ice,
                remote_ice,
                remote_fingerprint,
            } => {
                if self.by_ufrag.contains_key(local_ice.ufrag.as_bytes()) {
                    return Err(Error::Rejected("ICE ufrag in use".into()));
                }
                let ice = IceLite::new(local_ice.clone(), remote_ice.clone(), now);
                let dtls = Dtls::server(&self.identity, remote_fingerprint.clone(), now);
                let mut webrtc = WebRtc::new(ice, dtls, now);
                webrtc.data = spec.data.as_ref().map(|d| Box::new(DataLink::new(d)));
                let link = Link::WebRtc(Box::new(webrtc));
                (link, None, Ssrc(self.rng.random()))
            }
            TransportKind::Pipe(pipe) => {
                if self.by_addr.contains_key(&pipe.remote) {
                    return Err(Error::Rejected(format!(
                        "a peer connection already receives from {}",
                        pipe.remote
                    )));
                }
                let link = Link::Pipe(Pipe {
                    remote_rtcp_ssrc: pipe.remote_rtcp_ssrc,
                });
                let connected = (pipe.remote, Srtp::for_pipe(pipe)?);
                (link, Some(connected), pipe.local_rtcp_ssrc)
            }
            TransportKind::Mixer { mcu } => {
                (Link::Mixer { mcu: *mcu }, None, Ssrc(self.rng.random()))
            }
            TransportKind::Shard(shard) => (
                Link::Shard {
                    worker: shard.worker,
                },
                None,
                Ssrc(self.rng.random()),
            ),
        };
        let router_key = match self.router_keys.get(&spec.router) {
            Some(&k) => k,
            None => {
                let k = self.routers.insert(RouterSlot {
                    router: Router::new(spec.router, self.grid)
                        .with_frame_fanout(self.frame_fanout),
                    scheduled: None,
                });
                self.router_keys.insert(spec.router, k);
                k
            }
        };
        let key = self.transports.vacant_key();
        let Some(slot) = self.routers.get_mut(router_key) else {
            return Err(Error::Rejected(format!("router {} is gone", spec.router)));
        };
        let added = slot.router.add_member(
            now,
            TransportKey(key),
            &spec.producers,
            &spec.consumers,
            rtcp_ssrc,
            &mut self.rng,
        );
        let added = match (added, &spec.kind) {
            // A shard link's home end carries producers of this router; its far end has the
            // copies, bound to the link's SSRCs.
            (Ok(m), TransportKind::Shard(shard)) => {
                let linked = if spec.producers.is_empty() {
                    slot.router.add_mirror(now, m, &shard.streams)
                } else {
                    slot.router.bind_layers(m, &shard.streams)
                };
                if linked.is_err() {
                    slot.router.remove_member(m);
                }
                linked.map(|()| m)
            }
            (added, _) => added,
        };
        self.events
            .extend(std::iter::from_fn(|| slot.router.poll_event()));
        let member = match added {
            Ok(m) => m,
            Err(e) => {
                if slot.router.is_empty() {
                    self.routers.try_remove(router_key);
                    self.router_keys.remove(&spec.router);
                }
                return Err(e);
            }
        };
        if let Link::WebRtc(w) = &link {
            self.by_ufrag
                .insert(w.ice.local().ufrag.as_bytes().to_vec(), key);
        }
        if let (Some(d), Link::WebRtc(_)) = (&spec.data, &link) {
            if let Some(p) = d.producer {
                self.data_routes.add_producer(router_key, p, key);
            }
            for &p in &d.consumes {
                self.data_routes.add_subscriber(router_key, p, key);
            }
        }
        let mut transport = Transport::new(spec.id, router_key, member, link);
        if let Some((remote, srtp)) = pipe {
            transport.remote = Some(remote);
            transport.srtp = Some(srtp);
            self.pipes_by_addr.entry(remote).or_default().push(key);
            // A pipe is connected from the start: its consumers ask for a keyframe now.
            slot.router.connected(now, member);
        }
        // Its "address" names the other thread and the transport there; the worker hands what
        // is queued to it over to that thread's lane instead of the kernel.
        let far = match &spec.kind {
            TransportKind::Mixer { mcu } => Some(lane::address(Far::Mcu(*mcu), spec.id)),
            TransportKind::Shard(shard) => {
                Some(lane::address(Far::Worker(shard.worker), shard.peer))
            }
            TransportKind::WebRtc { .. } | TransportKind::Pipe(_) => None,
        };
        if let Some(far) = far {
            transport.remote = Some(far);
            slot.router.connected(now, member);
            self.lane_streams += 1;
        }
        self.transports.insert(transport);
        self.by_id.insert(spec.id, key);
        self.counters.transports += 1;
        tracing::debug!(transport = %spec.id, router = %spec.router, "transport created");
        self.schedule_transport(key);
        self.schedule_router(router_key);
        Ok(())
    }

    /// Closes a transport; a `Closed` event follows. Unknown ids are ignored (it may have
    /// closed on its own meanwhile).
    pub fn close_transport(&mut self, id: TransportId) {
        if let Some(&key) = self.by_id.get(&id) {
            self.close(key, CloseReason::Closed);
        }
    }

    /// Sets what a subscriber asks of its consumers on transport `id` (simulcast layer
    /// limits, pause); unknown transports are ignored.
    pub fn set_preferences(&mut self, now: Instant, id: TransportId, prefs: Preferences) {
        let Some(t) = self.by_id.get(&id).and_then(|&k| self.transports.get(k)) else {
            return;
        };
        let (router, member) = (t.router, t.member);
        if let Some(slot) = self.routers.get_mut(router) {
            slot.router.set_preferences(now, member, prefs);
            self.events
                .extend(std::iter::from_fn(|| slot.router.poll_event()));
            self.schedule_router(router);
        }
    }

    /// Closes every transport (the worker is stopping).
    pub fn close_all(&mut self) {
        let keys: Vec<usize> = self.transports.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, CloseReason::Closed);
        }
    }

    /// Removes a transport and everything that hangs off it, and tells the control plane.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(mut t) = self.transports.try_remove(key) else {
            return;
        };
        if let Some(q) = t.pacing.as_mut() {
            self.orphans.extend(q.drain().map(|h| h.slot));
        }
        self.by_id.remove(&t.id);
        self.data_routes.remove_transport(key);
        match &t.link {
            Link::WebRtc(w) => {
                self.by_ufrag.remove(w.ice.local().ufrag.as_bytes());
                for addr in &w.addrs {
                    if self.by_addr.get(addr) == Some(&key) {
                        self.by_addr.remove(addr);
                    }
                }
            }
            Link::Mixer { mcu } => {
                self.lane_streams = self.lane_streams.saturating_sub(1);
                self.closed_mixer_streams.push((*mcu, t.id));
            }
            Link::Shard { .. } => {
                self.lane_streams = self.lane_streams.saturating_sub(1);
            }
            Link::Pipe(_) => {
                if let Some(remote) = t.remote
                    && let Some(pipes) = self.pipes_by_addr.get_mut(&remote)
                {
                    pipes.retain(|&k| k != key);
                    if pipes.is_empty() {
                        self.pipes_by_addr.remove(&remote);
                    }
                }
            }
        }
        if let Some(slot) = self.routers.get_mut(t.router) {
            slot.router.remove_member(t.member);
            self.events
                .extend(std::iter::from_fn(|| slot.router.poll_event()));
            if slot.router.is_empty() {
                let id = slot.router.id();
                self.routers.try_remove(t.router);
                self.router_keys.remove(&id);
            }
        }
        self.counters.transports = self.counters.transports.saturating_sub(1);
        tracing::debug!(transport = %t.id, ?reason, "transport closed");
        self.events.push_back(MediaEvent::Closed {
            transport: t.id,
            reason,
        });
    }

    /// One received datagram; it may be decrypted in place.
    pub fn handle_datagram(&mut self, now: Instant, src: SocketAddr, data: &mut [u8], tx: &mut Tx) {
        self.free_orphans(tx);
        self.counters.packets_in += 1;
        self.counters.bytes_in += data.len() as u64;
        match demux::classify(data) {
            PacketKind::Stun => self.on_stun(now, src, data, tx),
            PacketKind::Dtls => self.on_dtls(now, src, data, tx),
            PacketKind::Rtp => self.on_rtp(now, src, data, tx),
            PacketKind::Rtcp => self.on_rtcp(now, src, data, tx),
            PacketKind::Unknown => self.counters.drop(DropReason::Malformed),
        }
    }

    /// Runs every timer due at `now`: consent and handshake limits, DTLS retransmissions,
    /// keyframe requests and reports.
    pub fn handle_timeout(&mut self, now: Instant, tx: &mut Tx) {
        self.free_orphans(tx);
        while let Some((at, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Transport(key) => self.transport_timeout(now, at, key, tx),
                Timer::Router(key) => self.router_timeout(now, at, key, tx),
            }
        }
    }

    fn free_orphans(&mut self, tx: &mut Tx) {
        for slot in self.orphans.drain(..) {
            tx.release(slot);
        }
    }

    /// Sends what the transport's pacer lets go at `now`, and tells its router when each of
    /// those packets really left.
    fn send_held(&mut self, now: Instant, key: usize, tx: &mut Tx) {
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        let Some(queue) = t.pacing.as_mut() else {
            return;
        };
        let mut router = self.routers.get_mut(t.router);
        while let Some(held) = queue.pop(now) {
            let len = tx.queue_held(held.slot);
            self.counters.sent(len);
            if let (Some(seq), Some(slot)) = (held.twcc, router.as_mut()) {
                slot.router.on_departed(t.member, seq, now);
            }
        }
    }

    /// Schedules the transports whose pacers started holding packets.
    fn schedule_paced(&mut self) {
        while let Some(key) = self.pacing_started.pop() {
            self.schedule_transport(key);
        }
    }

    fn transport_timeout(&mut self, now: Instant, at: Instant, key: usize, tx: &mut Tx) {
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        if t.scheduled != Some(at) {
            return; // superseded by an earlier entry, already handled
        }
        t.scheduled = None;
        match t.expired(now) {
            Some(Expiry::ConsentExpired) => return self.close(key, CloseReason::ConsentExpired),
            Some(Expiry::HandshakeTimeout) => {
                return self.close(key, CloseReason::HandshakeTimeout);
            }
            None => {}
        }
        if let Err(e) = t.dtls_timeout(now) {
            return self.dtls_failed(key, e);
        }
        self.send_held(now, key, tx);
        self.drive_dtls(now, key, tx);
    }

    fn router_timeout(&mut self, now: Instant, at: Instant, key: usize, tx: &mut Tx) {
        let Some(slot) = self.routers.get_mut(key) else {
            return;
        };
        if slot.scheduled != Some(at) {
            return;
        }
        slot.scheduled = None;
        let mut out = Links {
            transports: &mut self.transports,
            tx,
            counters: &mut self.counters,
            now,
            pacing_started: &mut self.pacing_started,
        };
        slot.router.handle_timeout(now, &mut out);
        self.events
            .extend(std::iter::from_fn(|| slot.router.poll_event()));
        self.schedule_router(key);
        self.schedule_paced();
    }

    fn schedule_transport(&mut self, key: usize) {
        if let Some(t) = self.transports.get_mut(key) {
            let at = t.deadline(&self.grid);
            self.timers
                .schedule(&mut t.scheduled, at, Timer::Transport(key));
        }
    }

    fn schedule_router(&mut self, key: usize) {
        if let Some(slot) = self.routers.get_mut(key) {
            let at = slot.router.poll_timeout();
            self.timers
                .schedule(&mut slot.scheduled, at, Timer::Router(key));
        }
    }

    fn on_stun(&mut self, now: Instant, src: SocketAddr, data: &[u8], tx: &mut Tx) {
        let Ok(msg) = stun::Message::parse(data) else {
            return self.counters.drop(DropReason::StunMalformed);
        };
        if msg.class() != stun::Class::Request || msg.method() != stun::method::BINDING {
            return self.counters.drop(DropReason::StunRejected);
        }
        let Some(key) = msg
            .username()
            .and_then(ice::local_ufrag)
            .and_then(|ufrag| self.by_ufrag.get(ufrag))
            .copied()
        else {
            return self.counters.drop(DropReason::StunUnknownUfrag);
        };
        let Some(Link::WebRtc(w)) = self.transports.get_mut(key).map(|t| &mut t.link) else {
            return self.counters.drop(DropReason::StunUnknownUfrag);
        };
        let mut outcome = None;
        tx.push(src, |out| {
            let result = w.ice.handle_request(now, src, &msg, out);
            let len = result.as_ref().ok().map(|c| c.response_len);
            outcome = Some(result);
            len
        });
        match outcome {
            None => self.counters.drop(DropReason::TxFull),
            Some(Err(e)) => self.counters.drop(match e {
                ice::Error::BadIntegrity => DropReason::StunBadIntegrity,
                ice::Error::BadFingerprint => DropReason::StunBadFingerprint,
                _ => DropReason::StunRejected,
            }),
            Some(Ok(check)) => {
                self.counters.sent(check.response_len);
                let Some(t) = self.transports.get_mut(key) else {
                    return;
                };
                let (evicted, new) = t.checked(src, check.nominated);
                if let Some(old) = evicted
                    && self.by_addr.get(&old) == Some(&key)
                {
                    self.by_addr.remove(&old);
                }
                if new {
                    // A previous owner of this address (a transport the peer abandoned) loses it.
                    self.by_addr.insert(src, key);
                }
            }
        }
    }

    fn on_dtls(&mut self, now: Instant, src: SocketAddr, data: &[u8], tx: &mut Tx) {
        let Some(&key) = self.by_addr.get(&src) else {
            return self.counters.drop(DropReason::UnknownSource);
        };
        let Some(Link::WebRtc(w)) = self.transports.get_mut(key).map(|t| &mut t.link) else {
            return self.counters.drop(DropReason::UnknownSource);
        };
        if let Err(e) = w.dtls.handle_datagram(data) {
            return self.dtls_failed(key, e);
        }
        self.drive_dtls(now, key, tx);
    }

    fn dtls_failed(&mut self, key: usize, e: dtls::Error) {
        self.counters.drop(DropReason::DtlsFailed);
        if let Some(t) = self.transports.get(key) {
            tracing::info!(transport = %t.id, "DTLS failed: {e}");
        }
        self.close(key, CloseReason::DtlsFailed(e.to_string()));
    }

    /// Sends what DTLS has to send; on completion tells the control plane and the router.
    fn drive_dtls(&mut self, now: Instant, key: usize, tx: &mut Tx) {
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        match t.drive_dtls(now, &mut self.scratch, tx, &mut self.counters) {
            Err(e) => return self.dtls_failed(key, e),
            Ok(true) => {
                let (id, router, member) = (t.id, t.router, t.member);
                tracing::debug!(transport = %id, "connected");
                self.events
                    .push_back(MediaEvent::Connected { transport: id });
                if let Some(slot) = self.routers.get_mut(router) {
                    slot.router.connected(now, member);
                }
                self.schedule_router(router);
            }
            Ok(false) => {}
        }
        self.schedule_transport(key);
        self.data_events(now, key, tx);
    }

    /// Acts on what a transport's data channels reported: a subscriber whose association came
    /// up gets the channels of what it receives opened toward it; a publisher's channel opened,
    /// closed or carrying a message is mirrored to each of its subscribers.
    fn data_events(&mut self, now: Instant, key: usize, tx: &mut Tx) {
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        let router = t.router;
        let Some(d) = t.data_mut() else {
            return;
        };
        let producer = d.producer;
        let mut events = Vec::new();
        while let Some(e) = d.channels.poll_event() {
            events.push(e);
        }
        for event in events {
            match (event, producer) {
                (datachannel::Event::Connected, _) => {
                    let Some(d) = self.transports.get_mut(key).and_then(|t| t.data_mut()) else {
                        continue;
                    };
                    for params in self.data_routes.channels(router, &d.consumes) {
                        if let Err(e) = d.channels.open(now, params) {
                            tracing::debug!("data channel not opened: {e}");
                        }
                    }
                    self.flush_data(now, key, tx);
                }
                (datachannel::Event::Opened { stream, params }, Some(p)) => {
                    let subscribers = self.data_routes.opened(router, p, stream, &params).to_vec();
                    for sub in subscribers {
                        self.on_subscriber(now, sub, tx, |d| {
                            if d.channels.is_connected()
                                && let Err(e) = d.channels.open(now, params.clone())
                            {
                                tracing::debug!("data channel not opened: {e}");
                            }
                        });
                    }
                }
                (datachannel::Event::Closed { stream }, Some(p)) => {
                    let Some((label, subscribers)) = self.data_routes.closed(router, p, stream)
                    else {
                        continue;
                    };
                    let subscribers = subscribers.to_vec();
                    for sub in subscribers {
                        self.on_subscriber(now, sub, tx, |d| {
                            if let Some(s) = d.channels.stream_of(&label) {
                                d.channels.close(now, s);
                            }
                        });
                    }
                }
                (
                    datachannel::Event::Message {
                        stream,
                        binary,
                        data,
                    },
                    Some(p),
                ) => {
                    self.counters.data_messages_received += 1;
                    self.counters.data_bytes_received += data.len() as u64;
                    let Some((label, subscribers)) = self.data_routes.route(router, p, stream)
                    else {
                        continue;
                    };
                    let (label, subscribers) = (label.to_string(), subscribers.to_vec());
                    for sub in subscribers {
                        let mut sent = false;
                        self.on_subscriber(now, sub, tx, |d| {
                            sent = d
                                .channels
                                .stream_of(&label)
                                .is_some_and(|s| d.channels.send(now, s, binary, &data).is_ok());
                        });
                        if sent {
                            self.counters.data_messages_forwarded += 1;
                            self.counters.data_bytes_forwarded += data.len() as u64;
                        } else {
                            self.counters.data_messages_dropped += 1;
                        }
                    }
                }
                // Subscribers' own messages and acknowledgements go nowhere; a lost
                // association ends with its transport.
                _ => {}
            }
        }
    }

    /// Runs `f` on subscriber `key`'s data channels, then sends what it queued.
    fn on_subscriber(
        &mut self,
        now: Instant,
        key: usize,
        tx: &mut Tx,
        f: impl FnOnce(&mut DataLink),
    ) {
        let Some(d) = self.transports.get_mut(key).and_then(|t| t.data_mut()) else {
            return;
        };
        f(d);
        self.flush_data(now, key, tx);
    }

    /// Sends the SCTP packets a transport's data channels queued (through its DTLS).
    fn flush_data(&mut self, now: Instant, key: usize, tx: &mut Tx) {
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        if let Err(e) = t.drive_dtls(now, &mut self.scratch, tx, &mut self.counters) {
            return self.dtls_failed(key, e);
        }
        self.schedule_transport(key);
    }

    /// The transport a packet from `src` belongs to: the peer connection at that address, else
    /// the pipe from that media server whose SSRCs the packet carries. The SSRCs are read from
    /// the part SRTP leaves in clear: the RTP header's SSRC, the SRTCP sender's SSRC.
    fn transport_for(&self, src: SocketAddr, data: &[u8], rtcp: bool) -> Option<usize> {
        if let Some(&key) = self.by_addr.get(&src) {
            return Some(key);
        }
        let pipes = self.pipes_by_addr.get(&src)?;
        let at = if rtcp { 4 } else { 8 };
        let ssrc = Ssrc(wire::be_u32(data, at)?);
        pipes.iter().copied().find(|&k| {
            self.transports.get(k).is_some_and(|t| {
                let from_far_end =
                    matches!(&t.link, Link::Pipe(p) if rtcp && p.remote_rtcp_ssrc == ssrc);
                from_far_end
                    || self
                        .routers
                        .get(t.router)
                        .is_some_and(|r| r.router.member_has_ssrc(t.member, ssrc, rtcp))
            })
        })
    }

    /// Finds the transport of an SRTP or SRTCP packet and decrypts it in place; returns its
    /// router, its member key there and the decrypted length, or counts why not.
    fn unprotect(
        &mut self,
        src: SocketAddr,
        data: &mut [u8],
        rtcp: bool,
    ) -> Option<(usize, usize, usize)> {
        let Some(t) = self
            .transport_for(src, data, rtcp)
            .and_then(|key| self.transports.get_mut(key))
        else {
            self.counters.drop(DropReason::UnknownSource);
            return None;
        };
        match t.unprotect(data, rtcp) {
            Ok(len) => Some((t.router, t.member, len)),
            Err(reason) => {
                self.counters.drop(reason);
                None
            }
        }
    }

    fn on_rtp(&mut self, now: Instant, src: SocketAddr, data: &mut [u8], tx: &mut Tx) {
        let Some((router, member, len)) = self.unprotect(src, data, false) else {
            return;
        };
        let Some(header) = data
            .get(..len)
            .and_then(|packet| rtp::Header::parse(packet).ok())
        else {
            return self.counters.drop(DropReason::RtpMalformed);
        };
        let (Some(packet), Some(slot)) = (data.get(..len), self.routers.get_mut(router)) else {
            return;
        };
        let mut out = Links {
            transports: &mut self.transports,
            tx,
            counters: &mut self.counters,
            now,
            pacing_started: &mut self.pacing_started,
        };
        slot.router.on_rtp(now, member, &header, packet, &mut out);
        // A frame may be held, or its fan-out waiting for send buffers.
        self.schedule_router(router);
        self.schedule_paced();
    }

    fn on_rtcp(&mut self, now: Instant, src: SocketAddr, data: &mut [u8], tx: &mut Tx) {
        let Some((router, member, len)) = self.unprotect(src, data, true) else {
            return;
        };
        let Some(compound) = data.get(..len) else {
            return self.counters.drop(DropReason::RtcpMalformed);
        };
        let Some(slot) = self.routers.get_mut(router) else {
            return;
        };
        let mut out = Links {
            transports: &mut self.transports,
            tx,
            counters: &mut self.counters,
            now,
            pacing_started: &mut self.pacing_started,
        };
        slot.router.on_rtcp(now, member, compound, &mut out);
        // Feedback may have asked for a keyframe.
        self.schedule_router(router);
        self.schedule_paced();
    }

    /// A packet from another thread's lane, in the clear: what a mixer made for its output
    /// stream `transport` (RTP) or its feedback on an input stream (RTCP: a keyframe
    /// request); or what the other end of shard link `transport` sent (RTP copies to the far
    /// end, feedback and sender reports back).
    pub fn handle_lane(&mut self, now: Instant, transport: TransportId, data: &[u8], tx: &mut Tx) {
        self.free_orphans(tx);
        let Some((router, member, shard)) = self
            .by_id
            .get(&transport)
            .and_then(|&k| self.transports.get(k))
            .filter(|t| matches!(t.link, Link::Mixer { .. } | Link::Shard { .. }))
            .map(|t| (t.router, t.member, matches!(t.link, Link::Shard { .. })))
        else {
            return self.counters.drop(DropReason::UnknownSource);
        };
        if shard {
            self.counters.shard_packets += 1;
        }
        let Some(slot) = self.routers.get_mut(router) else {
            return;
        };
        let mut out = Links {
            transports: &mut self.transports,
            tx,
            counters: &mut self.counters,
            now,
            pacing_started: &mut self.pacing_started,
        };
        match demux::classify(data) {
            PacketKind::Rtp => match rtp::Header::parse(data) {
                Ok(header) => slot.router.on_rtp(now, member, &header, data, &mut out),
                Err(_) => return self.counters.drop(DropReason::RtpMalformed),
            },
            PacketKind::Rtcp => slot.router.on_rtcp(now, member, data, &mut out),
            _ => return self.counters.drop(DropReason::Malformed),
        }
        self.schedule_router(router);
        self.schedule_paced();
    }
}

/// The engine's transports as a router's [`Output`]: each packet is encrypted with the
/// destination transport's SRTP context, in the send buffer it was written into.
struct Links<'a> {
    transports: &'a mut Slab<Transport>,
    tx: &'a mut Tx,
    counters: &'a mut Counters,
    now: Instant,
    /// Transports whose pacer started holding packets: their timers need scheduling.
    pacing_started: &'a mut Vec<usize>,
}

impl Links<'_> {
    /// Writes and protects an RTP packet into a held buffer, then lets the transport's pacer
    /// send it now, keep it, or refuse it (its queue is full: a counted drop).
    fn send_paced(
        &mut self,
        to: TransportKey,
        class: Class,
        twcc: Option<u16>,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let Some(t) = self.transports.get_mut(to.0) else {
            return false;
        };
        let (Some(srtp), Some(dst), Some(queue)) = (t.srtp.as_mut(), t.remote, t.pacing.as_mut())
        else {
            return false;
        };
        let mut called = false;
        let held = self.tx.hold(dst, |out| {
            called = true;
            let n = write(out)?;
            srtp.outbound.protect_rtp(out, n).ok()
        });
        let Some((slot, len)) = held else {
            if !called {
                self.counters.drop(DropReason::TxFull);
            }
            return false;
        };
        let was_idle = queue.is_empty();
        match queue.offer(self.now, Held { slot, twcc }, len, class) {
            Offer::Send => {
                self.tx.queue_held(slot);
                self.counters.sent(len);
            }
            Offer::Held => {
                if was_idle {
                    self.pacing_started.push(to.0);
                }
            }
            Offer::Full => {
                self.tx.release(slot);
                self.counters.drop(DropReason::PacerFull);
                return false;
            }
        }
        true
    }

    fn send(
        &mut self,
        to: TransportKey,
        rtcp: bool,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let Some(t) = self.transports.get_mut(to.0) else {
            return false;
        };
        if let (Link::Mixer { .. } | Link::Shard { .. }, Some(dst)) = (&t.link, t.remote) {
            // In the clear: it stays in this process.
            return transport::send(self.tx, self.counters, dst, write);
        }
        let (Some(srtp), Some(dst)) = (t.srtp.as_mut(), t.remote) else {
            return false;
        };
        transport::send(self.tx, self.counters, dst, |out| {
            let n = write(out)?;
            let sealed = if rtcp {
                srtp.outbound.protect_rtcp(out, n)
            } else {
                srtp.outbound.protect_rtp(out, n)
            };
            sealed.ok()
        })
    }
}

impl Output for Links<'_> {
    fn send_rtp(
        &mut self,
        to: TransportKey,
        class: Class,
        twcc: Option<u16>,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let paced = self
            .transports
            .get(to.0)
            .is_some_and(|t| t.pacing.is_some());
        // Held buffers come from the pool every transport sends from: past half of it held,
        // packets go unpaced rather than starve other transports' sends.
        if !paced || self.tx.free() < self.tx.capacity() / 2 {
            return self.send(to, false, write);
        }
        self.send_paced(to, class, twcc, write)
    }

    fn pace(&mut self, to: TransportKey, target_bps: u64) {
        let Some(t) = self.transports.get_mut(to.0) else {
            return;
        };
        match t.pacing.as_mut() {
            Some(q) => q.set_rate(self.now, target_bps),
            None => t.pacing = Some(Box::new(pacer::Queue::new(target_bps, self.now))),
        }
    }

    fn send_rtcp(
        &mut self,
        to: TransportKey,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        self.send(to, true, write)
    }

    fn counters(&mut self) -> &mut Counters {
        self.counters
    }

    /// Free send buffers, less an eighth of the pool kept for what cannot wait (audio,
    /// feedback, handshakes) while a large fan-out goes out over several loop turns.
    fn room(&self) -> usize {
        self.tx.free().saturating_sub(self.tx.capacity() / 8)
    }
}
