//! The sans-IO core of one worker: every transport and router on that core.
//!
//! The I/O backend hands it datagrams and ticks ([`io::Handler`]); it answers with datagrams
//! queued in the backend's [`Tx`]. Commands from the control plane arrive on a bounded queue
//! drained at each tick, and events go back on a channel whose send never blocks, so the data
//! plane never waits for the control plane.
//!
//! The packet path: classify (RFC 7983) → find the transport (STUN by ICE ufrag, everything
//! else by source address) → decrypt once into the receive buffer → producer (history for
//! NACKs) → for each consumer, write the rewritten packet straight into a send buffer and
//! encrypt it there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use slab::Slab;
use tokio::sync::{mpsc, oneshot};

use crate::demux::{self, PacketKind};
use crate::dtls::{self, Dtls, Identity};
use crate::ice::{self, IceLite};
use crate::io::{self, Tx};
use crate::media::MediaKind;
use crate::router::{Producer, Router};
use crate::stats::{self, Counters, Drop};
use crate::transport::{HANDSHAKE_TIMEOUT, PipeIds, Publishing, RTCP_INTERVAL, Srtp, Transport};
use crate::worker::{
    CloseReason, Error, MediaEvent, PIPE_KEY_LEN, PIPE_PROFILE, PipeSpec, RouterId, TransportId,
    TransportSpec,
};
use crate::{rtcp, rtp, srtp, stun};

/// Timers (DTLS retransmits, consent, reports, keyframe retries) are checked this often.
const SCAN_INTERVAL: Duration = Duration::from_millis(20);
/// Counters are published for the control plane this often.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);
/// The bitrate we tell publishers they may use (REMB), until bandwidth estimation lands.
const REMB_BITRATE: u64 = 3_000_000;
/// A consumer still waiting for a keyframe asks again this often.
const KEYFRAME_RETRY: Duration = Duration::from_secs(1);
/// CNAME in our RTCP SDES.
const CNAME: &str = "switchyard";

/// What the control plane asks of a worker.
pub enum Command {
    CreateTransport {
        spec: TransportSpec,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    CloseTransport {
        id: TransportId,
    },
    Stop,
}

pub struct Engine {
    identity: Arc<Identity>,
    commands: Receiver<Command>,
    events: mpsc::UnboundedSender<MediaEvent>,
    shared: Arc<stats::Shared>,
    counters: Counters,
    transports: Slab<Transport>,
    by_id: HashMap<TransportId, usize>,
    by_ufrag: HashMap<Vec<u8>, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Pipes by the other media server's worker address. Several pipes (channels, relayed
    /// publications) share one pair of worker sockets, so packets are told apart by SSRC.
    pipes_by_addr: HashMap<SocketAddr, Vec<usize>>,
    routers: HashMap<RouterId, Router>,
    /// Producers with a keyframe request to send, as (router, producer).
    keyframe_pending: Vec<(RouterId, u64)>,
    /// Where DTLS records are polled into (sized for dimpl; see `dtls::POLL_BUFFER`).
    scratch: Box<[u8]>,
    next_scan: Instant,
    next_publish: Instant,
    stopped: bool,
}

impl Engine {
    pub fn new(
        identity: Arc<Identity>,
        commands: Receiver<Command>,
        events: mpsc::UnboundedSender<MediaEvent>,
        shared: Arc<stats::Shared>,
        now: Instant,
    ) -> Engine {
        Engine {
            identity,
            commands,
            events,
            shared,
            counters: Counters::default(),
            transports: Slab::new(),
            by_id: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            pipes_by_addr: HashMap::new(),
            routers: HashMap::new(),
            keyframe_pending: Vec::new(),
            scratch: vec![0; dtls::POLL_BUFFER].into_boxed_slice(),
            next_scan: now,
            next_publish: now,
            stopped: false,
        }
    }

    fn command(&mut self, now: Instant, command: Command, tx: &mut Tx) {
        match command {
            Command::CreateTransport { spec, reply } => {
                let id = spec.id;
                let result = self.create(now, spec);
                if let Err(e) = &result {
                    tracing::info!(transport = id, "transport rejected: {e}");
                }
                // The control plane may have given up waiting; nothing to do then.
                let _ = reply.send(result);
            }
            Command::CloseTransport { id } => {
                if let Some(&key) = self.by_id.get(&id) {
                    self.close(key, CloseReason::Closed);
                }
            }
            Command::Stop => {
                let keys: Vec<usize> = self.transports.iter().map(|(k, _)| k).collect();
                for key in keys {
                    self.close(key, CloseReason::Closed);
                }
                self.stopped = true;
            }
        }
        let _ = tx;
    }

    fn create(&mut self, now: Instant, spec: TransportSpec) -> Result<(), Error> {
        if self.by_id.contains_key(&spec.id) {
            return Err(Error::Rejected(format!("transport {} exists", spec.id)));
        }
        let ufrag = spec.local_ice.ufrag.as_bytes().to_vec();
        if self.by_ufrag.contains_key(&ufrag) {
            return Err(Error::Rejected("ICE ufrag in use".into()));
        }
        let router = self.routers.entry(spec.router).or_default();
        for c in &spec.consumers {
            if !router.producers.contains_key(&c.producer) {
                return Err(Error::Rejected(format!(
                    "producer {} is not in this channel",
                    c.producer
                )));
            }
        }
        for p in &spec.producers {
            if router.producers.contains_key(&p.id) {
                return Err(Error::Rejected(format!("producer {} exists", p.id)));
            }
        }

        let pipe_srtp = match &spec.pipe {
            Some(pipe) => {
                if self.by_addr.contains_key(&pipe.remote) {
                    return Err(Error::Rejected(format!(
                        "a peer connection already receives from {}",
                        pipe.remote
                    )));
                }
                Some(pipe_contexts(pipe)?)
            }
            None => None,
        };
        let ice = IceLite::new(spec.local_ice, spec.remote_ice, now);
        let dtls = Dtls::server(&self.identity, spec.remote_fingerprint, now);
        let mut transport = Transport::new(spec.id, spec.router, ice, dtls, now);
        let key = self.transports.vacant_key();
        if let (Some(pipe), Some(srtp)) = (&spec.pipe, pipe_srtp) {
            transport.pipe = Some(PipeIds {
                local_rtcp_ssrc: pipe.local_rtcp_ssrc,
                remote_rtcp_ssrc: pipe.remote_rtcp_ssrc,
            });
            transport.rtcp_ssrc = pipe.local_rtcp_ssrc;
            transport.srtp = Some(srtp);
            transport.remote = Some(pipe.remote);
            self.pipes_by_addr.entry(pipe.remote).or_default().push(key);
        }
        for p in &spec.producers {
            transport.publishing.push(Publishing {
                producer: p.id,
                ssrc: p.ssrc,
                payload_type: p.payload_type,
                mid: p.mid.clone(),
                mid_ext: p.mid_ext,
            });
            router.producers.insert(p.id, Producer::new(key, p.clone()));
        }
        for c in &spec.consumers {
            if router.add_consumer(key, c) {
                transport.consuming.push((c.ssrc, c.producer));
            }
        }
        router.transports += 1;
        self.transports.insert(transport);
        self.by_id.insert(spec.id, key);
        self.by_ufrag.insert(ufrag, key);
        self.counters.transports += 1;
        tracing::debug!(
            transport = spec.id,
            router = spec.router,
            pipe = ?spec.pipe,
            "transport created"
        );
        if spec.pipe.is_some() {
            // A pipe is connected from the start: its consumers ask for a keyframe now.
            self.on_connected(key);
        }
        Ok(())
    }

    /// Removes a transport and everything that hangs off it, and tells the control plane.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(t) = self.transports.try_remove(key) else {
            return;
        };
        self.by_id.remove(&t.id);
        self.by_ufrag.remove(t.ice.local().ufrag.as_bytes());
        for addr in &t.addrs {
            if self.by_addr.get(addr) == Some(&key) {
                self.by_addr.remove(addr);
            }
        }
        if let (Some(_), Some(remote)) = (&t.pipe, t.remote)
            && let Some(pipes) = self.pipes_by_addr.get_mut(&remote)
        {
            pipes.retain(|&k| k != key);
            if pipes.is_empty() {
                self.pipes_by_addr.remove(&remote);
            }
        }
        if let Some(router) = self.routers.get_mut(&t.router) {
            for p in &t.publishing {
                router.producers.remove(&p.producer);
            }
            for (_, producer) in &t.consuming {
                if let Some(p) = router.producers.get_mut(producer) {
                    p.consumers.retain(|c| c.transport != key);
                }
            }
            router.transports = router.transports.saturating_sub(1);
            if router.transports == 0 {
                self.routers.remove(&t.router);
            }
        }
        self.counters.transports = self.counters.transports.saturating_sub(1);
        tracing::debug!(transport = t.id, ?reason, "transport closed");
        let _ = self.events.send(MediaEvent::Closed {
            transport: t.id,
            reason,
        });
    }

    fn on_stun(&mut self, now: Instant, src: SocketAddr, data: &[u8], tx: &mut Tx) {
        let Ok(msg) = stun::Message::parse(data) else {
            return self.counters.drop(Drop::StunMalformed);
        };
        if msg.class() != stun::Class::Request || msg.method() != stun::method::BINDING {
            return self.counters.drop(Drop::StunRejected);
        }
        let Some(key) = msg
            .username()
            .and_then(ice::local_ufrag)
            .and_then(|ufrag| self.by_ufrag.get(ufrag))
            .copied()
        else {
            return self.counters.drop(Drop::StunUnknownUfrag);
        };
        let Some(t) = self.transports.get_mut(key) else {
            return self.counters.drop(Drop::StunUnknownUfrag);
        };
        let mut outcome = None;
        let queued = tx.push(src, |out| {
            let result = t.ice.handle_request(now, src, &msg, out);
            let len = result.as_ref().ok().map(|c| c.response_len);
            outcome = Some(result);
            len
        });
        match outcome {
            None => self.counters.drop(Drop::TxFull),
            Some(Err(e)) => self.counters.drop(match e {
                ice::Error::BadIntegrity => Drop::StunBadIntegrity,
                ice::Error::BadFingerprint => Drop::StunBadFingerprint,
                _ => Drop::StunRejected,
            }),
            Some(Ok(check)) => {
                debug_assert!(queued);
                self.counters.sent(check.response_len);
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

    fn on_dtls(&mut self, src: SocketAddr, data: &[u8], tx: &mut Tx) {
        let Some(&key) = self.by_addr.get(&src) else {
            return self.counters.drop(Drop::UnknownSource);
        };
        let Some(t) = self.transports.get_mut(key) else {
            return self.counters.drop(Drop::UnknownSource);
        };
        if let Err(e) = t.dtls.handle_datagram(data) {
            self.counters.drop(Drop::DtlsFailed);
            return self.dtls_failed(key, e);
        }
        self.drive_dtls(key, tx);
    }

    fn dtls_failed(&mut self, key: usize, e: dtls::Error) {
        if let Some(t) = self.transports.get(key) {
            tracing::info!(transport = t.id, "DTLS failed: {e}");
        }
        self.close(key, CloseReason::DtlsFailed(e.to_string()));
    }

    /// Sends what DTLS has to send and takes the SRTP keys when the handshake completes.
    fn drive_dtls(&mut self, key: usize, tx: &mut Tx) {
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        let mut connected = false;
        loop {
            match t.dtls.poll_output(&mut self.scratch) {
                Ok(dtls::Output::Transmit(record)) => {
                    let Some(dst) = t.remote else { continue };
                    send(tx, &mut self.counters, dst, |out| {
                        out.get_mut(..record.len())?.copy_from_slice(record);
                        Some(record.len())
                    });
                }
                Ok(dtls::Output::Connected(keying)) => {
                    match srtp::session_from_keying(
                        keying.profile,
                        &keying.material,
                        keying.is_server,
                    ) {
                        Ok((inbound, outbound)) => {
                            t.srtp = Some(Srtp { inbound, outbound });
                            connected = true;
                        }
                        Err(e) => {
                            return self.dtls_failed(
                                key,
                                dtls::Error::Handshake(format!("SRTP keys: {e}")),
                            );
                        }
                    }
                }
                Ok(dtls::Output::Timeout(at)) => {
                    t.dtls_deadline = Some(at);
                    break;
                }
                Ok(dtls::Output::Idle) => {
                    t.dtls_deadline = None;
                    break;
                }
                Err(e) => {
                    self.counters.drop(Drop::DtlsFailed);
                    return self.dtls_failed(key, e);
                }
            }
        }
        if connected {
            let id = t.id;
            tracing::debug!(transport = id, "connected");
            let _ = self.events.send(MediaEvent::Connected { transport: id });
            self.on_connected(key);
        }
    }

    /// A subscriber's consumers of video ask their producers for a keyframe, so the new
    /// subscriber sees a picture at once.
    fn on_connected(&mut self, key: usize) {
        let Some(t) = self.transports.get(key) else {
            return;
        };
        let Engine {
            routers,
            keyframe_pending,
            ..
        } = self;
        let Some(router) = routers.get_mut(&t.router) else {
            return;
        };
        for &(_, producer) in &t.consuming {
            if router
                .producers
                .get(&producer)
                .is_some_and(|p| p.spec.kind == MediaKind::Video)
            {
                mark_keyframe(router, keyframe_pending, t.router, producer);
            }
        }
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
        let ssrc = u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?);
        pipes.iter().copied().find(|&k| {
            self.transports.get(k).is_some_and(|t| {
                t.publishing.iter().any(|p| p.ssrc == Some(ssrc))
                    || (rtcp
                        && (t.pipe.as_ref().is_some_and(|p| p.remote_rtcp_ssrc == ssrc)
                            || t.consuming.iter().any(|&(c, _)| c == ssrc)))
            })
        })
    }

    fn on_rtp(&mut self, now: Instant, src: SocketAddr, data: &mut [u8], tx: &mut Tx) {
        let Some(key) = self.transport_for(src, data, false) else {
            return self.counters.drop(Drop::UnknownSource);
        };
        let Engine {
            transports,
            routers,
            counters,
            ..
        } = self;
        let Some(t) = transports.get_mut(key) else {
            return counters.drop(Drop::UnknownSource);
        };
        let len = match t.unprotect(data, false) {
            Ok(len) => len,
            Err(reason) => return counters.drop(reason),
        };
        let Some(packet) = data.get(..len) else {
            return counters.drop(Drop::RtpMalformed);
        };
        let Ok(header) = rtp::Header::parse(packet) else {
            return counters.drop(Drop::RtpMalformed);
        };
        let Some((producer_id, learned)) = t.producer_for(&header, packet) else {
            return counters.drop(Drop::RtpUnknownSsrc);
        };
        let router_id = t.router;
        let Some(producer) = routers
            .get_mut(&router_id)
            .and_then(|r| r.producers.get_mut(&producer_id))
        else {
            return counters.drop(Drop::RtpUnknownSsrc);
        };
        if learned {
            producer.ssrc = Some(header.ssrc);
        }
        producer
            .receive
            .on_packet(header.sequence, header.timestamp, now);
        if let Some(history) = producer.history.as_mut() {
            history.insert(header.sequence, packet);
        }
        let payload = packet
            .get(header.payload_offset..header.payload_end)
            .unwrap_or_default();
        let keyframe = producer.spec.kind == MediaKind::Video
            && rtp::is_keyframe(producer.spec.codec, payload);

        for consumer in producer.consumers.iter_mut() {
            let Some(ct) = transports.get_mut(consumer.transport) else {
                continue;
            };
            let (Some(srtp), Some(dst)) = (ct.srtp.as_mut(), ct.remote) else {
                continue;
            };
            if !consumer.started {
                if !keyframe {
                    continue;
                }
                consumer.started = true;
            }
            if send(tx, counters, dst, |out| {
                consumer.write(&header, packet, &mut srtp.outbound, out)
            }) {
                counters.rtp_forwarded += 1;
                consumer.packets = consumer.packets.wrapping_add(1);
                let payload_len = header.payload_end.saturating_sub(header.payload_offset);
                consumer.octets = consumer.octets.wrapping_add(payload_len as u32);
            }
        }
    }

    fn on_rtcp(&mut self, now: Instant, src: SocketAddr, data: &mut [u8], tx: &mut Tx) {
        let Some(key) = self.transport_for(src, data, true) else {
            return self.counters.drop(Drop::UnknownSource);
        };
        let Engine {
            transports,
            routers,
            counters,
            keyframe_pending,
            ..
        } = self;
        let Some(t) = transports.get_mut(key) else {
            return counters.drop(Drop::UnknownSource);
        };
        let len = match t.unprotect(data, true) {
            Ok(len) => len,
            Err(reason) => return counters.drop(reason),
        };
        let Some(compound) = data.get(..len) else {
            return counters.drop(Drop::RtcpMalformed);
        };
        let Some(router) = routers.get_mut(&t.router) else {
            return;
        };
        for packet in rtcp::packets(compound) {
            let packet = match packet {
                Ok(p) => p,
                Err(_) => {
                    counters.drop(Drop::RtcpMalformed);
                    break;
                }
            };
            match packet {
                rtcp::Packet::SenderReport {
                    ssrc,
                    ntp,
                    rtp_timestamp,
                    ..
                } => {
                    let producer = t
                        .producer_by_ssrc(ssrc)
                        .and_then(|p| router.producers.get_mut(&p));
                    if let Some(p) = producer {
                        p.receive.on_sender_report(ntp, now);
                        p.last_sr = Some((ntp, rtp_timestamp, now));
                    }
                }
                rtcp::Packet::Nack(nack) => {
                    let Some(p) = t
                        .consumed_producer(nack.media_ssrc)
                        .and_then(|p| router.producers.get(&p))
                    else {
                        continue;
                    };
                    let (Some(history), Some(consumer), Some(srtp), Some(dst)) = (
                        p.history.as_ref(),
                        p.consumers
                            .iter()
                            .find(|c| c.transport == key && c.ssrc == nack.media_ssrc),
                        t.srtp.as_mut(),
                        t.remote,
                    ) else {
                        continue;
                    };
                    if !consumer.nack || !consumer.started {
                        continue;
                    }
                    for seq in nack.lost() {
                        let original = consumer.producer_seq(seq);
                        let Some(packet) = history.get(original) else {
                            continue;
                        };
                        let Ok(header) = rtp::Header::parse(packet) else {
                            continue;
                        };
                        if send(tx, counters, dst, |out| {
                            consumer.write(&header, packet, &mut srtp.outbound, out)
                        }) {
                            counters.nack_retransmits += 1;
                        }
                    }
                }
                rtcp::Packet::Pli { media_ssrc, .. } => {
                    if let Some(producer) = t.consumed_producer(media_ssrc) {
                        mark_keyframe(router, keyframe_pending, t.router, producer);
                    }
                }
                rtcp::Packet::Fir { entries, .. } => {
                    for (ssrc, _) in entries {
                        if let Some(producer) = t.consumed_producer(ssrc) {
                            mark_keyframe(router, keyframe_pending, t.router, producer);
                        }
                    }
                }
                rtcp::Packet::ReceiverReport { .. }
                | rtcp::Packet::Remb { .. }
                | rtcp::Packet::TransportCc { .. }
                | rtcp::Packet::Other { .. } => {}
            }
        }
    }

    /// Sends due keyframe requests (PLI, else FIR) to their producers' publishers.
    fn send_keyframe_requests(&mut self, now: Instant, tx: &mut Tx) {
        let Engine {
            transports,
            routers,
            counters,
            keyframe_pending,
            ..
        } = self;
        keyframe_pending.retain(|&(router, producer)| {
            let Some(p) = routers
                .get_mut(&router)
                .and_then(|r| r.producers.get_mut(&producer))
            else {
                return false;
            };
            if !p.keyframe.due(now) {
                return p.keyframe.pending;
            }
            p.keyframe.pending = false;
            let (Some(t), Some(ssrc)) = (transports.get_mut(p.transport), p.ssrc) else {
                return false;
            };
            let (Some(srtp), Some(dst)) = (t.srtp.as_mut(), t.remote) else {
                return false;
            };
            let sender = t.rtcp_ssrc;
            let (pli, fir) = (p.spec.pli, p.spec.fir);
            if !pli && !fir {
                return false;
            }
            p.keyframe.last_sent = Some(now);
            p.keyframe.fir_seq = p.keyframe.fir_seq.wrapping_add(u8::from(!pli));
            let fir_seq = p.keyframe.fir_seq;
            if send(tx, counters, dst, |out| {
                let n = if pli {
                    rtcp::write_pli(out, sender, ssrc).ok()?
                } else {
                    rtcp::write_fir(out, sender, ssrc, fir_seq).ok()?
                };
                srtp.outbound.protect_rtcp(out, n).ok()
            }) {
                counters.keyframe_requests += 1;
            }
            false
        });
    }

    /// Timers: DTLS retransmissions, consent and handshake timeouts, RTCP reports, keyframe
    /// retries for consumers still waiting.
    fn scan(&mut self, now: Instant, tx: &mut Tx) {
        let mut expired = Vec::new();
        let mut dtls_due = Vec::new();
        for (key, t) in self.transports.iter() {
            if t.pipe.is_some() {
                // Keyed by the control plane and closed by it; no consent or handshake.
                continue;
            }
            if t.ice.consent_expired(now) {
                expired.push((key, CloseReason::ConsentExpired));
            } else if !t.is_connected()
                && now.saturating_duration_since(t.created) >= HANDSHAKE_TIMEOUT
            {
                expired.push((key, CloseReason::HandshakeTimeout));
            } else if t.dtls_deadline.is_some_and(|d| d <= now) {
                dtls_due.push(key);
            }
        }
        for (key, reason) in expired {
            self.close(key, reason);
        }
        for key in dtls_due {
            let Some(t) = self.transports.get_mut(key) else {
                continue;
            };
            if let Err(e) = t.dtls.handle_timeout(now) {
                self.dtls_failed(key, e);
                continue;
            }
            self.drive_dtls(key, tx);
        }
        self.send_reports(now, tx);
        let mut retry = Vec::new();
        for (&router, r) in &self.routers {
            for (&id, p) in &r.producers {
                let stale = p
                    .keyframe
                    .last_sent
                    .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_RETRY);
                if p.consumers_waiting() && stale && !p.keyframe.pending {
                    retry.push((router, id));
                }
            }
        }
        for (router_id, producer) in retry {
            if let Some(router) = self.routers.get_mut(&router_id) {
                mark_keyframe(router, &mut self.keyframe_pending, router_id, producer);
            }
        }
    }

    /// Receiver reports (and REMB) to publishers, sender reports to subscribers, once per
    /// RTCP_INTERVAL per transport.
    fn send_reports(&mut self, now: Instant, tx: &mut Tx) {
        let Engine {
            transports,
            routers,
            counters,
            ..
        } = self;
        for (key, t) in transports.iter_mut() {
            if now < t.next_report {
                continue;
            }
            t.next_report = now + RTCP_INTERVAL;
            let (Some(srtp), Some(dst)) = (t.srtp.as_mut(), t.remote) else {
                continue;
            };
            let Some(router) = routers.get_mut(&t.router) else {
                continue;
            };
            if !t.publishing.is_empty() {
                send(tx, counters, dst, |out| {
                    let n = receiver_report(out, t.rtcp_ssrc, &t.publishing, router, now)?;
                    srtp.outbound.protect_rtcp(out, n).ok()
                });
            }
            for &(ssrc, producer) in &t.consuming {
                let Some(p) = router.producers.get(&producer) else {
                    continue;
                };
                let Some(c) = p
                    .consumers
                    .iter()
                    .find(|c| c.transport == key && c.ssrc == ssrc)
                else {
                    continue;
                };
                let Some((ntp, rtp_ts)) = p.rtp_time_at(now) else {
                    continue;
                };
                if !c.started {
                    continue;
                }
                send(tx, counters, dst, |out| {
                    let sr = rtcp::write_sender_report(
                        out,
                        c.ssrc,
                        ntp,
                        rtp_ts.wrapping_add(c.ts_offset),
                        c.packets,
                        c.octets,
                        &[],
                    )
                    .ok()?;
                    let sdes = rtcp::write_sdes_cname(out.get_mut(sr..)?, c.ssrc, CNAME).ok()?;
                    srtp.outbound.protect_rtcp(out, sr + sdes).ok()
                });
            }
        }
    }
}

/// Queues a datagram through `write` and counts it as sent, or as a `TxFull` drop when no send
/// buffer was free. A `write` that gives up (`None`) is neither.
/// The SRTP contexts of a pipe from the keys the control plane gave both ends.
fn pipe_contexts(pipe: &PipeSpec) -> Result<Srtp, Error> {
    let context = |material: &[u8]| {
        let (key, salt) = material.split_at(material.len().min(16));
        srtp::Context::new(PIPE_PROFILE, key, salt)
            .map_err(|e| Error::Rejected(format!("pipe keys: {e}")))
    };
    if pipe.send_key.len() != PIPE_KEY_LEN || pipe.receive_key.len() != PIPE_KEY_LEN {
        return Err(Error::Rejected(format!(
            "pipe keys must be {PIPE_KEY_LEN} bytes"
        )));
    }
    Ok(Srtp {
        inbound: context(&pipe.receive_key)?,
        outbound: context(&pipe.send_key)?,
    })
}

fn send(
    tx: &mut Tx,
    counters: &mut Counters,
    dst: SocketAddr,
    write: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> bool {
    let mut called = false;
    let mut len = 0;
    let queued = tx.push(dst, |out| {
        called = true;
        len = write(out)?;
        Some(len)
    });
    if queued {
        counters.sent(len);
    } else if !called {
        counters.drop(Drop::TxFull);
    }
    queued
}

fn mark_keyframe(
    router: &mut Router,
    pending: &mut Vec<(RouterId, u64)>,
    router_id: RouterId,
    producer: u64,
) {
    if let Some(p) = router.producers.get_mut(&producer)
        && !p.keyframe.pending
    {
        p.keyframe.pending = true;
        pending.push((router_id, producer));
    }
}

/// A compound RR (one block per producer with a known SSRC), SDES, and REMB when negotiated.
fn receiver_report(
    out: &mut [u8],
    sender: u32,
    publishing: &[Publishing],
    router: &mut Router,
    now: Instant,
) -> Option<usize> {
    let mut blocks = [rtcp::ReportBlock::default(); 8];
    let mut count = 0;
    let mut remb_ssrcs = [0u32; 8];
    let mut remb_count = 0;
    for p in publishing {
        let Some(producer) = router.producers.get_mut(&p.producer) else {
            continue;
        };
        let Some(ssrc) = producer.ssrc else { continue };
        if let Some(slot) = blocks.get_mut(count) {
            *slot = producer.receive.report_block(ssrc, now);
            count += 1;
        }
        if producer.spec.remb
            && let Some(slot) = remb_ssrcs.get_mut(remb_count)
        {
            *slot = ssrc;
            remb_count += 1;
        }
    }
    let mut len = rtcp::write_receiver_report(out, sender, blocks.get(..count)?).ok()?;
    len += rtcp::write_sdes_cname(out.get_mut(len..)?, sender, CNAME).ok()?;
    if remb_count > 0 {
        len += rtcp::write_remb(
            out.get_mut(len..)?,
            sender,
            REMB_BITRATE,
            remb_ssrcs.get(..remb_count)?,
        )
        .ok()?;
    }
    Some(len)
}

impl io::Handler for Engine {
    fn on_datagram(&mut self, now: Instant, src: SocketAddr, data: &mut [u8], tx: &mut Tx) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += data.len() as u64;
        match demux::classify(data) {
            PacketKind::Stun => self.on_stun(now, src, data, tx),
            PacketKind::Dtls => self.on_dtls(src, data, tx),
            PacketKind::Rtp => self.on_rtp(now, src, data, tx),
            PacketKind::Rtcp => self.on_rtcp(now, src, data, tx),
            PacketKind::Unknown => self.counters.drop(Drop::Malformed),
        }
    }

    fn on_tick(&mut self, now: Instant, tx: &mut Tx) -> Option<Instant> {
        loop {
            match self.commands.try_recv() {
                Ok(command) => self.command(now, command, tx),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // The control plane is gone: stop as if told to.
                    self.command(now, Command::Stop, tx);
                    break;
                }
            }
        }
        if !self.keyframe_pending.is_empty() {
            self.send_keyframe_requests(now, tx);
        }
        if now >= self.next_scan {
            self.scan(now, tx);
            self.next_scan = now + SCAN_INTERVAL;
        }
        if now >= self.next_publish {
            self.shared.publish(&self.counters);
            self.next_publish = now + PUBLISH_INTERVAL;
        }
        Some(self.next_scan)
    }

    fn is_stopped(&self) -> bool {
        self.stopped
    }
}
