//! ICE-TCP (RFC 6544), the passive side: a worker also listens on TCP at its UDP port, and a
//! connection a client opens carries the same STUN, DTLS and SRTP a UDP path would, each
//! datagram behind a two-byte length (RFC 4571).
//!
//! The engine never learns about TCP. A frame from a connection reaches it as a datagram from
//! the connection's peer address, and a datagram it queues to an address that is a
//! connection's peer goes out on that connection. This is how clients reach the server where
//! UDP is blocked; head-of-line blocking makes it worse than UDP, so the candidates carry a
//! lower priority and ICE prefers UDP whenever both work. Routing is by peer address alone: a
//! client whose UDP and TCP paths had the same address and port would get its UDP traffic
//! over TCP, which still reaches it.
//!
//! Both backends watch one epoll descriptor that covers the listener and every connection, so
//! the TCP side is written once: when it is readable the loop calls [`IceTcp::service`].

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use slab::Slab;

use super::epoll::{Epoll, epoll_add, epoll_del, epoll_mod, epoll_wait};
use super::{Handler, MAX_DATAGRAM, Tx};
use crate::stats::DropReason;
use crate::turn::framing::Framer;

/// Connections per worker; more are refused (closed at once) and counted.
const MAX_CONNECTIONS: usize = 1024;
/// Bytes a connection may have waiting to be written; datagrams past this are dropped (whole,
/// so the framing stays intact) rather than growing the server for a client that stopped reading.
const MAX_PENDING_WRITE: usize = 512 * 1024;
/// A connection that has sent nothing for this long is closed. Clients send consent checks
/// every few seconds (RFC 7675), so only a dead path stays silent this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection must start with a frame (a connectivity check) within this time.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idle connections are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Reads of one connection per readiness event before the others get a turn (epoll is
/// level-triggered: what is left is reported again).
const READS_PER_EVENT: usize = 8;
/// Rounds of readiness events per [`IceTcp::service`] call.
const SERVICE_ROUNDS: usize = 4;

const LISTENER: u64 = u64::MAX;

/// One accepted connection.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    framer: Framer,
    /// Framed datagrams the socket has not taken yet.
    out: Vec<u8>,
    /// When the last frame arrived, or the connection was accepted.
    last_heard: Instant,
    heard: bool,
    /// Listed in `IceTcp::dirty`.
    dirty: bool,
    /// Whether epoll reports writability (only while `out` is not empty).
    watching_writes: bool,
}

/// A worker's ICE-TCP listener and connections.
pub(crate) struct IceTcp {
    listener: TcpListener,
    epoll: Epoll,
    conns: Slab<Conn>,
    by_peer: HashMap<SocketAddr, usize>,
    /// Connections written to by `route` since the last flush.
    dirty: Vec<usize>,
    events: Box<[libc::epoll_event]>,
    buf: Box<[u8]>,
    next_sweep: Instant,
}

impl IceTcp {
    /// Watches `listener` (nonblocking, listening).
    pub(crate) fn new(listener: TcpListener) -> io::Result<IceTcp> {
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll_add(epoll.fd, listener.as_raw_fd(), LISTENER, false)?;
        Ok(IceTcp {
            listener,
            epoll,
            conns: Slab::new(),
            by_peer: HashMap::new(),
            dirty: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 64].into_boxed_slice(),
            buf: vec![0u8; 16 * 1024].into_boxed_slice(),
            next_sweep: Instant::now(),
        })
    }

    /// The descriptor the backend waits on: readable while the listener or a connection has
    /// something for [`IceTcp::service`].
    pub(crate) fn fd(&self) -> RawFd {
        self.epoll.fd
    }

    /// Accepts, reads and writes what is ready, without blocking; every whole frame goes to
    /// `handler` as a datagram from the connection's peer. Returns true when it stopped with
    /// work left (a busy connection must not starve the UDP socket): call again soon.
    pub(crate) fn service(
        &mut self,
        now: Instant,
        handler: &mut impl Handler,
        tx: &mut Tx,
    ) -> bool {
        let mut more = false;
        for _ in 0..SERVICE_ROUNDS {
            let n = epoll_wait(self.epoll.fd, &mut self.events, Duration::ZERO).unwrap_or(0);
            for i in 0..n {
                let (token, flags) = (self.events[i].u64, self.events[i].events);
                if token == LISTENER {
                    self.accept(now, handler);
                } else {
                    self.conn_event(now, token as usize, flags, handler, tx);
                }
            }
            more = n > 0;
            if !more {
                break;
            }
        }
        self.flush_dirty(handler);
        more
    }

    /// Moves the queued datagrams addressed to a connection's peer out of `tx` and onto that
    /// connection. Costs nothing while there are no connections.
    pub(crate) fn route(&mut self, tx: &mut Tx, handler: &mut impl Handler) {
        if self.by_peer.is_empty() {
            return;
        }
        let (conns, by_peer, dirty) = (&mut self.conns, &self.by_peer, &mut self.dirty);
        let counters = handler.counters();
        tx.take_if(|data, dst| {
            let Some(&key) = by_peer.get(&dst) else {
                return false;
            };
            let Some(conn) = conns.get_mut(key) else {
                return false;
            };
            if conn.out.len() + 2 + data.len() > MAX_PENDING_WRITE {
                counters.drop(DropReason::TcpBacklog);
                return true;
            }
            // RFC 4571: the length, then the datagram (never over 64 KiB: MAX_DATAGRAM).
            conn.out
                .extend_from_slice(&(data.len() as u16).to_be_bytes());
            conn.out.extend_from_slice(data);
            if !conn.dirty {
                conn.dirty = true;
                dirty.push(key);
            }
            true
        });
        self.flush_dirty(handler);
    }

    /// Closes connections that went quiet; returns when to look again (`None` while there are
    /// none, so an idle worker sleeps).
    pub(crate) fn sweep(&mut self, now: Instant, handler: &mut impl Handler) -> Option<Instant> {
        if self.conns.is_empty() {
            return None;
        }
        if now >= self.next_sweep {
            let stale: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    let limit = if c.heard {
                        IDLE_TIMEOUT
                    } else {
                        FIRST_FRAME_TIMEOUT
                    };
                    now.duration_since(c.last_heard) >= limit
                })
                .map(|(key, _)| key)
                .collect();
            for key in stale {
                self.close(key, handler);
            }
            self.next_sweep = now + SWEEP_INTERVAL;
        }
        (!self.conns.is_empty()).then_some(self.next_sweep)
    }

    fn accept(&mut self, now: Instant, handler: &mut impl Handler) {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A connection that went away before we took it, or out of descriptors: the
                // next readiness event tries again.
                Err(_) => return,
            };
            if self.conns.len() >= MAX_CONNECTIONS || self.by_peer.contains_key(&peer) {
                handler.counters().ice_tcp_refused += 1;
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if epoll_add(self.epoll.fd, stream.as_raw_fd(), key as u64, false).is_err() {
                continue;
            }
            entry.insert(Conn {
                stream,
                peer,
                framer: Framer::rfc4571(),
                out: Vec::new(),
                last_heard: now,
                heard: false,
                dirty: false,
                watching_writes: false,
            });
            self.by_peer.insert(peer, key);
            handler.counters().ice_tcp_connections = self.conns.len() as u64;
            self.next_sweep = self.next_sweep.min(now + SWEEP_INTERVAL);
        }
    }

    fn conn_event(
        &mut self,
        now: Instant,
        key: usize,
        flags: u32,
        handler: &mut impl Handler,
        tx: &mut Tx,
    ) {
        let mut alive = true;
        if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            alive = self.read(now, key, handler, tx);
        }
        if alive && flags & libc::EPOLLOUT as u32 != 0 {
            alive = self.flush(key);
        }
        if !alive {
            self.close(key, handler);
        }
    }

    /// Reads what the connection has and hands each whole frame on; false when it ended.
    fn read(&mut self, now: Instant, key: usize, handler: &mut impl Handler, tx: &mut Tx) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let peer = conn.peer;
        for _ in 0..READS_PER_EVENT {
            let n = match conn.stream.read(&mut self.buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            // RFC 4571 framing cannot fail: every two bytes are a valid length.
            let _ = conn.framer.feed(&self.buf[..n], |frame| {
                conn.heard = true;
                conn.last_heard = now;
                if frame.len() > MAX_DATAGRAM {
                    handler.counters().drop(DropReason::TcpOversize);
                } else {
                    handler.on_datagram(now, peer, frame, tx);
                }
            });
        }
        true
    }

    /// Writes what is queued; false when the connection is gone.
    fn flush(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        conn.dirty = false;
        let mut written = 0;
        while written < conn.out.len() {
            match conn.stream.write(&conn.out[written..]) {
                Ok(0) => return false,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        conn.out.drain(..written);
        let want = !conn.out.is_empty();
        if want != conn.watching_writes {
            conn.watching_writes = want;
            return epoll_mod(self.epoll.fd, conn.stream.as_raw_fd(), key as u64, want).is_ok();
        }
        true
    }

    fn flush_dirty(&mut self, handler: &mut impl Handler) {
        while let Some(key) = self.dirty.pop() {
            if !self.flush(key) {
                self.close(key, handler);
            }
        }
    }

    fn close(&mut self, key: usize, handler: &mut impl Handler) {
        if let Some(conn) = self.conns.try_remove(key) {
            epoll_del(self.epoll.fd, conn.stream.as_raw_fd());
            self.by_peer.remove(&conn.peer);
            handler.counters().ice_tcp_connections = self.conns.len() as u64;
        }
    }
}
