//! The TURN server's threads: each runs one [`Server`] on its own UDP and TCP (and TLS)
//! listeners, all bound to the same port with SO_REUSEPORT, so the kernel spreads clients over
//! the threads by their address and an allocation, its relay socket and its client stay on one
//! thread. Nothing is shared between threads but the counters they publish.
//!
//! The loop is epoll over the listeners, the stream connections and the relay sockets, with a
//! nonblocking drain of each ready socket: a relay socket per allocation (the port a peer
//! sees) rules out the single-socket backends of the media workers.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use super::framing::Framer;
use super::{ClientAddr, Config, Counter, Counters, Family, Output, RelayId, Server, Shared};
use crate::handoff::{self, Hub};
use crate::io::epoll::{Epoll, epoll_add, epoll_del, epoll_mod, epoll_wait};
use crate::io::mmsg::{self, Messages, Receiver};
use crate::io::{Tx, Waker};

/// Counters are published this often while anything changes.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);
/// recvmmsg calls on one socket before the loop looks at the others.
const RECV_BATCHES: usize = 4;
/// Datagrams to clients queued for one sendmmsg (each is flushed at the end of an event).
const TX_BUFFERS: usize = 512;
/// Bytes a stream connection may have waiting to be written before it is closed (a client
/// that stops reading must not grow the server).
const MAX_PENDING_WRITE: usize = 1 << 20;
/// Stream connections per thread.
const MAX_CONNECTIONS: usize = 16_384;

const WAKER: u64 = 0;
const UDP: u64 = 1;
const TCP: u64 = 2;
const TLS: u64 = 3;
/// Tokens above this carry a kind in the high bits and a slab key below.
const RELAY_KIND: u64 = 1 << 32;
const CONN_KIND: u64 = 2 << 32;
/// Datagrams from the SFU relayed per loop turn before the sockets get theirs.
const SFU_BATCH: usize = 256;

/// How the TURN threads are set up.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Threads (one per media worker core).
    pub threads: usize,
    /// Address the listeners bind to.
    pub bind_ip: IpAddr,
    /// UDP and TCP listening port (3478).
    pub port: u16,
    /// TLS listening port and its configuration, when a certificate is configured.
    pub tls: Option<(u16, Arc<rustls::ServerConfig>)>,
    /// Address relay sockets bind to, and the address clients are told (a public address
    /// in front of a 1:1 NAT, else the same).
    pub relay_bind_ip: IpAddr,
    pub relay_public_ip: IpAddr,
    pub relay_ports: RangeInclusive<u16>,
    /// Pin thread i to core (first_core + i), as the media workers are.
    pub pin: Option<usize>,
    pub server: Config,
    /// The process's SFU workers: datagrams between an allocation and the SFU's own media
    /// sockets cross in-process instead of through the kernel.
    pub handoff: Option<Arc<Hub>>,
}

/// The running TURN threads.
pub struct TurnService {
    stop: Arc<AtomicBool>,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<()>>,
    shared: Vec<Arc<Shared>>,
    udp: SocketAddr,
    tcp: SocketAddr,
    tls: Option<SocketAddr>,
}

impl TurnService {
    /// Binds every listener (so a taken port fails here, at start) and starts the threads.
    pub fn start(config: ServiceConfig) -> io::Result<TurnService> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut service = TurnService {
            stop: stop.clone(),
            wakers: Vec::new(),
            threads: Vec::new(),
            shared: Vec::new(),
            udp: SocketAddr::new(config.bind_ip, config.port),
            tcp: SocketAddr::new(config.bind_ip, config.port),
            tls: None,
        };
        let mut server = config.server.clone();
        for ip in [config.relay_bind_ip, config.relay_public_ip] {
            if !server.relay_ips.contains(&ip) {
                server.relay_ips.push(ip);
            }
        }
        server.relay_ports = config.relay_ports.clone();
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        // The first thread may bind port 0 (tests); the others then share the port it got.
        let mut port = config.port;
        let mut tls_port = config.tls.as_ref().map(|(p, _)| *p);
        let threads = config.threads.max(1);
        let wakers: Vec<Waker> = (0..threads)
            .map(|_| Waker::new())
            .collect::<io::Result<_>>()?;
        // The addresses the SFU's media sockets are known by, where hand-off applies.
        let mut sfu_ips: Vec<IpAddr> = Vec::new();
        for a in &server.policy.own_media {
            if !sfu_ips.contains(&a.ip()) {
                sfu_ips.push(a.ip());
            }
        }
        let mut lanes = config
            .handoff
            .as_ref()
            .map(|hub| hub.register_turn(&wakers, sfu_ips).into_iter());
        for (index, waker) in wakers.into_iter().enumerate() {
            let udp = bind(config.bind_ip, port, Type::DGRAM)?;
            let udp: UdpSocket = udp.into();
            port = udp.local_addr()?.port();
            let tcp: TcpListener = bind(config.bind_ip, port, Type::STREAM)?.into();
            let tls = match (&config.tls, tls_port) {
                (Some((_, tls_config)), Some(p)) => {
                    let l: TcpListener = bind(config.bind_ip, p, Type::STREAM)?.into();
                    tls_port = Some(l.local_addr()?.port());
                    Some((l, tls_config.clone()))
                }
                _ => None,
            };
            if index == 0 {
                service.udp = udp.local_addr()?;
                service.tcp = tcp.local_addr()?;
                service.tls = tls.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
            }
            let shared = Arc::new(Shared::default());
            let from_sfu = lanes.as_mut().and_then(Iterator::next);
            let handoff = config.handoff.clone();
            let mut seed = [0u8; 32];
            rand::Rng::fill(&mut rand::rng(), &mut seed[..]);
            let now = Instant::now();
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let epoll = Epoll::new()?;
            let server = Server::new(server.clone(), now, unix, &seed);
            let (thread_waker, thread_stop, thread_shared) =
                (waker.clone(), stop.clone(), shared.clone());
            let (relay_bind_ip, relay_public_ip, relay_ports) = (
                config.relay_bind_ip,
                config.relay_public_ip,
                config.relay_ports.clone(),
            );
            // The batch buffers hold raw pointers (not Send): the thread makes its own.
            let make = move || Thread {
                server,
                rx: Receiver::new(),
                io: Io {
                    tx: Tx::new(TX_BUFFERS),
                    tx_msgs: Messages::new(),
                    udp,
                    relays: Slab::new(),
                    conns: Slab::new(),
                    dirty: Vec::new(),
                    closed: VecDeque::new(),
                    relay_bind_ip,
                    relay_public_ip,
                    relay_ports,
                    next_port: u16::from_be_bytes([seed[0], seed[1]]),
                    epoll: epoll.fd,
                    handoff,
                    thread: index,
                    by_port: std::collections::HashMap::new(),
                    wake_workers: 0,
                    to_sfu: 0,
                    to_sfu_dropped: 0,
                },
                epoll,
                from_sfu,
                waker: thread_waker,
                stop: thread_stop,
                shared: thread_shared,
                published: Counters::default(),
                last_publish: now,
                tcp,
                tls,
            };
            let core = config
                .pin
                .and_then(|first| cores.get((first + index) % cores.len().max(1)).copied());
            let handle = std::thread::Builder::new()
                .name(format!("turn-{index}"))
                .spawn(move || {
                    if let Some(core) = core
                        && !core_affinity::set_for_current(core)
                    {
                        tracing::warn!(
                            thread = index,
                            "could not pin TURN thread to core {}",
                            core.id
                        );
                    }
                    if let Err(e) = make().run() {
                        tracing::error!(thread = index, "TURN loop failed: {e}");
                    }
                })?;
            service.wakers.push(waker);
            service.threads.push(handle);
            service.shared.push(shared);
        }
        Ok(service)
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// Every thread's counters summed (published at most every 250 ms).
    pub fn counters(&self) -> Counters {
        let mut total = Counters::default();
        for s in &self.shared {
            total.merge(&s.snapshot());
        }
        total
    }

    /// Stops the threads (on drop), closing every allocation.
    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.wakers {
            w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for TurnService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A nonblocking socket with SO_REUSEPORT, so each thread can bind the same port.
fn bind(ip: IpAddr, port: u16, typ: Type) -> io::Result<Socket> {
    let addr = SocketAddr::new(ip, port);
    let protocol = if typ == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let socket = Socket::new(Domain::for_address(addr), typ, Some(protocol))?;
    socket.set_reuse_port(true)?;
    if typ == Type::STREAM {
        socket.set_reuse_address(true)?;
    } else {
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
    }
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("TURN cannot bind {addr}: {e}")))?;
    if typ == Type::STREAM {
        socket.listen(1024)?;
    }
    Ok(socket)
}

/// A relay socket and its port.
struct Relay {
    socket: UdpSocket,
    port: u16,
}

/// A TCP or TLS client connection.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    framer: Framer,
    tls: Option<Box<rustls::ServerConnection>>,
    /// Bytes the socket would not take yet (plain TCP; TLS keeps its own).
    pending: Vec<u8>,
    broken: bool,
    /// Listed in `Io::dirty`, to be flushed at the end of the loop's turn.
    dirty: bool,
}

impl Conn {
    /// Queues a message written by `fill`, to go out when the loop flushes (so the messages of
    /// one wake-up leave in one write); marks the connection broken if the client stopped
    /// reading. False when nothing was queued.
    fn queue(&mut self, fill: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        if self.broken {
            return false;
        }
        let queued = match &mut self.tls {
            Some(tls) => {
                // rustls takes a copy into its own records.
                let mut buf = [0u8; 2048];
                let Some(n) = fill(&mut buf) else {
                    return false;
                };
                if tls.writer().write_all(&buf[..n]).is_err() {
                    self.broken = true;
                }
                true
            }
            None => {
                // Written in place at the end of what waits.
                let at = self.pending.len();
                self.pending.resize(at + 2048, 0);
                let n = fill(&mut self.pending[at..]);
                self.pending.truncate(at + n.unwrap_or(0));
                n.is_some()
            }
        };
        if self.pending.len() > MAX_PENDING_WRITE {
            self.broken = true;
        }
        queued
    }

    /// Writes what is queued; false when the connection is gone.
    fn flush(&mut self) -> bool {
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => return false,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
            }
            return !self.broken;
        }
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
        !self.broken
    }

    /// Reads application bytes: `Some(n)`, `None` when nothing more is there now, an error
    /// when the connection ended (EOF, reset, a TLS failure).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let eof = || io::Error::from(io::ErrorKind::UnexpectedEof);
        let Some(tls) = &mut self.tls else {
            return match self.stream.read(buf) {
                Ok(0) => Err(eof()),
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
            };
        };
        loop {
            match tls.reader().read(buf) {
                Ok(0) => return Err(eof()),
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut self.stream) {
                Ok(0) => return Err(eof()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                // Send the alert, then close.
                let _ = tls.write_tls(&mut self.stream);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    fn wants_write(&self) -> bool {
        !self.pending.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
}

/// The sockets a server's [`Output`] reaches.
struct Io {
    /// Datagrams to UDP clients, sent in batches from the listener (sendmmsg): most of what a
    /// relay sends goes to clients, through this one socket.
    tx: Tx,
    tx_msgs: Messages,
    udp: UdpSocket,
    relays: Slab<Relay>,
    conns: Slab<Conn>,
    /// Connections with something queued (or broken) since the last flush.
    dirty: Vec<usize>,
    /// Relay sockets the server closed, deregistered after the current event.
    closed: VecDeque<usize>,
    relay_bind_ip: IpAddr,
    relay_public_ip: IpAddr,
    relay_ports: RangeInclusive<u16>,
    /// Where the next relay port search starts (spread so threads rarely collide).
    next_port: u16,
    epoll: RawFd,
    /// The SFU hand-off.
    handoff: Option<Arc<Hub>>,
    /// This thread's index (the relay ports it owns are recorded under it).
    thread: usize,
    /// Relay port → relay key, for datagrams the SFU hands over.
    by_port: std::collections::HashMap<u16, usize>,
    /// Workers handed something since they were last woken, as bits.
    wake_workers: u64,
    /// Datagrams handed to the SFU, and dropped at a full lane, since the last count.
    to_sfu: u64,
    to_sfu_dropped: u64,
}

impl Output for Io {
    fn to_client(
        &mut self,
        client: ClientAddr,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        match client {
            ClientAddr::Udp(addr) => {
                if self.tx.queued() >= TX_BUFFERS / 2 {
                    self.flush_udp();
                }
                // A full pool (the socket would not take more) loses this datagram, as the
                // network would.
                self.tx.push(addr, fill)
            }
            ClientAddr::Stream(key) => {
                let key = key as usize;
                let Some(conn) = self.conns.get_mut(key) else {
                    return false;
                };
                let queued = conn.queue(fill);
                if !conn.dirty {
                    conn.dirty = true;
                    self.dirty.push(key);
                }
                queued
            }
        }
    }

    fn to_peer(&mut self, relay: RelayId, peer: SocketAddr, data: &[u8]) {
        let Some(r) = self.relays.get(relay.0 as usize) else {
            return;
        };
        if let Some(hub) = &self.handoff
            && let Some(worker) = hub.worker_for(peer)
        {
            // The worker sees it from the relay's port at the address it was sent to, as the
            // kernel would have shown it.
            if hub.to_worker(worker, SocketAddr::new(peer.ip(), r.port), data) {
                self.wake_workers |= 1 << worker.min(63);
                self.to_sfu += 1;
            } else {
                self.to_sfu_dropped += 1;
            }
            return;
        }
        let _ = r.socket.send_to(data, peer);
    }

    fn bind_relay(&mut self, family: Family) -> Option<(RelayId, SocketAddr)> {
        let ip = match (family, self.relay_bind_ip) {
            (Family::V4, ip @ IpAddr::V4(_)) | (Family::V6, ip @ IpAddr::V6(_)) => ip,
            _ => return None,
        };
        let (lo, hi) = (*self.relay_ports.start(), *self.relay_ports.end());
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        for i in 0..span.min(256) {
            let port = if lo == 0 {
                0
            } else {
                lo + ((u32::from(self.next_port) + i) % span) as u16
            };
            let Ok(socket) = bind_relay_socket(SocketAddr::new(ip, port)) else {
                continue;
            };
            self.next_port = self.next_port.wrapping_add(i as u16 + 1);
            let local = socket.local_addr().ok()?;
            let entry = self.relays.vacant_entry();
            if let Some(hub) = &self.handoff {
                hub.set_owner(local.port(), Some(self.thread));
            }
            self.by_port.insert(local.port(), entry.key());
            let key = entry.key();
            epoll_add(
                self.epoll,
                socket.as_raw_fd(),
                RELAY_KIND | key as u64,
                false,
            )
            .ok()?;
            entry.insert(Relay {
                socket,
                port: local.port(),
            });
            return Some((
                RelayId(key as u32),
                SocketAddr::new(self.relay_public_ip, local.port()),
            ));
        }
        None
    }

    fn close_relay(&mut self, relay: RelayId) {
        self.closed.push_back(relay.0 as usize);
    }
}

impl Io {
    /// Wakes the workers handed datagrams since the last call.
    fn wake_workers(&mut self) {
        if let Some(hub) = &self.handoff {
            for worker in (0..64).filter(|w| self.wake_workers & (1 << w) != 0) {
                hub.wake_worker(worker);
            }
        }
        self.wake_workers = 0;
    }

    /// Sends the queued client datagrams from the listener.
    fn flush_udp(&mut self) {
        // A send error other than a full socket drops the datagram inside `flush`.
        let _ = mmsg::flush(self.udp.as_raw_fd(), &mut self.tx, &mut self.tx_msgs);
    }
}

fn bind_relay_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    let _ = socket.set_recv_buffer_size(1 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

struct Thread {
    server: Server,
    rx: Receiver,
    epoll: Epoll,
    /// What the SFU workers hand to this thread's relays.
    from_sfu: Option<std::sync::mpsc::Receiver<handoff::Datagram>>,
    waker: Waker,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    published: Counters,
    last_publish: Instant,
    io: Io,
    tcp: TcpListener,
    tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
}

impl Thread {
    fn run(&mut self) -> io::Result<()> {
        let e = self.epoll.fd;
        epoll_add(e, self.waker.raw_fd(), WAKER, false)?;
        epoll_add(e, self.io.udp.as_raw_fd(), UDP, false)?;
        epoll_add(e, self.tcp.as_raw_fd(), TCP, false)?;
        if let Some((l, _)) = &self.tls {
            epoll_add(e, l.as_raw_fd(), TLS, false)?;
        }
        let mut buf = vec![0u8; 65_536];
        let udp_fd = self.io.udp.as_raw_fd();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut more_from_sfu = false;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let deadline = if more_from_sfu {
                Duration::ZERO
            } else {
                self.server
                    .poll_timeout()
                    .map_or(PUBLISH_INTERVAL, |t| t.saturating_duration_since(now))
                    .min(PUBLISH_INTERVAL)
            };
            let n = epoll_wait(e, &mut events, deadline)?;
            for ev in &events[..n] {
                let (token, flags) = (ev.u64, ev.events);
                let now = Instant::now();
                match token {
                    WAKER => self.waker.drain(),
                    UDP => self.read_udp(now, udp_fd),
                    TCP => self.accept(false),
                    TLS => self.accept(true),
                    t if t & RELAY_KIND != 0 && t < CONN_KIND => {
                        self.read_relay(now, (t & 0xFFFF_FFFF) as usize)
                    }
                    t => self.conn_event(now, (t & 0xFFFF_FFFF) as usize, flags, &mut buf),
                }
                self.reap();
            }
            more_from_sfu = self.take_from_sfu();
            self.io.flush_udp();
            let now = Instant::now();
            self.server.handle_timeout(now, &mut self.io);
            self.reap();
            self.io.flush_udp();
            self.flush_conns();
            self.io.wake_workers();
            for (counter, n) in [
                (Counter::ToSfuInProcess, &mut self.io.to_sfu),
                (Counter::DropSendFailed, &mut self.io.to_sfu_dropped),
            ] {
                if *n > 0 {
                    self.server.count(counter, std::mem::take(n));
                }
            }
            if now.duration_since(self.last_publish) >= PUBLISH_INTERVAL
                && *self.server.counters() != self.published
            {
                self.published = self.server.counters().clone();
                self.shared.publish(&self.published);
                self.last_publish = now;
            }
        }
        self.server.close_all(&mut self.io);
        self.reap();
        self.shared.publish(self.server.counters());
        Ok(())
    }

    /// Relays what the SFU handed over as if it had arrived at the relay sockets; true when
    /// the lane still holds more.
    fn take_from_sfu(&mut self) -> bool {
        let Some(lane) = &self.from_sfu else {
            return false;
        };
        let now = Instant::now();
        let mut taken = 0;
        for _ in 0..SFU_BATCH {
            let Ok(mut d) = lane.try_recv() else {
                break;
            };
            if let Some(&key) = self.io.by_port.get(&d.dst_port) {
                let src = d.src;
                self.server
                    .handle_peer(now, RelayId(key as u32), src, d.payload(), &mut self.io);
                taken += 1;
            }
        }
        if taken > 0 {
            self.server.count(Counter::FromSfuInProcess, taken);
        }
        taken == SFU_BATCH as u64
    }

    fn read_udp(&mut self, now: Instant, fd: RawFd) {
        let (server, io) = (&mut self.server, &mut self.io);
        for _ in 0..RECV_BATCHES {
            let got = self.rx.receive(fd, |src, data| {
                server.handle_client(now, ClientAddr::Udp(src), src, data, io)
            });
            if got.unwrap_or(0) < mmsg::BATCH {
                break;
            }
            io.flush_udp();
        }
    }

    fn read_relay(&mut self, now: Instant, key: usize) {
        let Some(fd) = self.io.relays.get(key).map(|r| r.socket.as_raw_fd()) else {
            return;
        };
        let (server, io) = (&mut self.server, &mut self.io);
        let relay = RelayId(key as u32);
        for _ in 0..RECV_BATCHES {
            let got = self.rx.receive(fd, |peer, data| {
                server.handle_peer(now, relay, peer, data, io)
            });
            if got.unwrap_or(0) < mmsg::BATCH {
                break;
            }
            io.flush_udp();
        }
    }

    fn accept(&mut self, tls: bool) {
        loop {
            let listener = match (&self.tls, tls) {
                (Some((l, _)), true) => l,
                _ => &self.tcp,
            };
            let Ok((stream, peer)) = listener.accept() else {
                return;
            };
            if self.io.conns.len() >= MAX_CONNECTIONS || stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let tls = match (&self.tls, tls) {
                (Some((_, config)), true) => match rustls::ServerConnection::new(config.clone()) {
                    Ok(c) => Some(Box::new(c)),
                    Err(_) => continue,
                },
                _ => None,
            };
            let entry = self.io.conns.vacant_entry();
            let key = entry.key();
            if epoll_add(
                self.epoll.fd,
                stream.as_raw_fd(),
                CONN_KIND | key as u64,
                false,
            )
            .is_err()
            {
                continue;
            }
            entry.insert(Conn {
                stream,
                peer,
                framer: Framer::turn(),
                tls,
                pending: Vec::new(),
                broken: false,
                dirty: false,
            });
        }
    }

    fn conn_event(&mut self, now: Instant, key: usize, flags: u32, buf: &mut [u8]) {
        let mut alive = true;
        if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            alive = self.read_conn(now, key, buf);
        }
        if alive {
            alive = self.io.conns.get_mut(key).is_some_and(|c| c.flush());
        }
        if !alive {
            self.close_conn(key);
        } else {
            self.watch_writes(key);
        }
    }

    /// Reads what the connection has and hands each whole message to the server; false when
    /// the connection ended or broke the framing.
    fn read_conn(&mut self, now: Instant, key: usize, buf: &mut [u8]) -> bool {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return false;
        };
        let peer = conn.peer;
        // Take the framer out so the server can write to this very connection meanwhile.
        let mut framer = std::mem::replace(&mut conn.framer, Framer::turn());
        let alive = loop {
            let Some(conn) = self.io.conns.get_mut(key) else {
                break false;
            };
            let n = match conn.read(buf) {
                Ok(Some(n)) => n,
                Ok(None) => break true,
                Err(_) => break false,
            };
            let server = &mut self.server;
            let io = &mut self.io;
            let fed = framer.feed(&buf[..n], |msg| {
                server.handle_client(now, ClientAddr::Stream(key as u64), peer, msg, io)
            });
            if fed.is_err() {
                self.server.malformed_stream();
                break false;
            }
        };
        if let Some(conn) = self.io.conns.get_mut(key) {
            conn.framer = framer;
        }
        alive
    }

    fn close_conn(&mut self, key: usize) {
        self.server
            .client_closed(ClientAddr::Stream(key as u64), &mut self.io);
        if self.io.conns.contains(key) {
            let conn = self.io.conns.remove(key);
            epoll_del(self.epoll.fd, conn.stream.as_raw_fd());
        }
    }

    /// Asks for writability only while a connection has something queued.
    fn watch_writes(&mut self, key: usize) {
        if let Some(conn) = self.io.conns.get(key) {
            let _ = epoll_mod(
                self.epoll.fd,
                conn.stream.as_raw_fd(),
                CONN_KIND | key as u64,
                conn.wants_write(),
            );
        }
    }

    /// Writes what responses and relayed data queued on stream connections.
    fn flush_conns(&mut self) {
        // Only the connections written to since the last turn; the list keeps its capacity.
        let mut dirty = std::mem::take(&mut self.io.dirty);
        for key in dirty.drain(..) {
            let Some(conn) = self.io.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            let alive = conn.flush();
            if alive {
                self.watch_writes(key);
            } else {
                self.close_conn(key);
            }
        }
        self.io.dirty = dirty;
    }

    /// Deregisters and drops relay sockets the server closed.
    fn reap(&mut self) {
        while let Some(key) = self.io.closed.pop_front() {
            if self.io.relays.contains(key) {
                let relay = self.io.relays.remove(key);
                epoll_del(self.epoll.fd, relay.socket.as_raw_fd());
                self.io.by_port.remove(&relay.port);
                if let Some(hub) = &self.io.handoff {
                    hub.set_owner(relay.port, None);
                }
            }
        }
    }
}
