//! In-process hand-off between the embedded TURN server and the SFU of the same process.
//!
//! A client that can only relay (a firewall that allows nothing but TURN) reaches the SFU
//! through an allocation whose peer is one of the SFU's own media sockets. Through the kernel
//! each packet would leave a relay socket and arrive at a worker socket of this very process,
//! and back: a send, a softirq delivery and a receive per packet and direction, which is most
//! of what relaying costs (docs/benchmarks.md). Instead the TURN thread copies the payload into
//! the worker's inbound lane and the worker's engine sees it arrive from the same address the
//! kernel would have shown (the SFU address the allocation sent to, with the relay's port);
//! what the engine sends to a relayed address of this process goes back the same way.
//!
//! Lanes are bounded queues of fixed-size datagrams (no allocation per packet), one per worker
//! and one per TURN thread; a full lane drops the datagram, as a full socket buffer would. Who
//! owns a relay port is one atomic byte per port, written by the TURN thread that binds it.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::io::{MAX_DATAGRAM, Waker};

/// Datagrams a lane holds.
const LANE_CAPACITY: usize = 512;

/// One handed-off datagram, inline (a lane preallocates its slots).
pub struct Datagram {
    /// The address the receiver sees it from.
    pub src: SocketAddr,
    /// The port it is for: a worker's media port or a relay port.
    pub dst_port: u16,
    len: u16,
    data: [u8; MAX_DATAGRAM],
}

impl Datagram {
    fn new(src: SocketAddr, dst_port: u16, payload: &[u8]) -> Option<Datagram> {
        let mut data = [0u8; MAX_DATAGRAM];
        data.get_mut(..payload.len())?.copy_from_slice(payload);
        Some(Datagram {
            src,
            dst_port,
            len: payload.len() as u16,
            data,
        })
    }

    /// The payload, which the receiver may rewrite in place (decrypt).
    pub fn payload(&mut self) -> &mut [u8] {
        &mut self.data[..usize::from(self.len)]
    }
}

/// The sending end of a thread's lane and the waker of its loop.
struct Lane {
    tx: SyncSender<Datagram>,
    waker: Waker,
}

impl Lane {
    fn new(waker: Waker) -> (Lane, Receiver<Datagram>) {
        let (tx, rx) = sync_channel(LANE_CAPACITY);
        (Lane { tx, waker }, rx)
    }

    /// False when the lane is full (or its thread is gone): the datagram is dropped.
    fn push(&self, datagram: Datagram) -> bool {
        match self.tx.try_send(datagram) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The SFU's side: a lane per worker, by the worker's media port.
struct Workers {
    lanes: Vec<(u16, Lane)>,
}

/// The TURN side: a lane per thread, the addresses the SFU is reached at, and relay owners.
struct Turn {
    lanes: Vec<Lane>,
    /// The addresses of this host that the SFU's media sockets are announced or bound at: a
    /// datagram to one of them at a relay port is for a relay of this process.
    ips: Vec<IpAddr>,
}

/// Where the two meet; shared by every worker and TURN thread of the process.
pub struct Hub {
    workers: OnceLock<Workers>,
    turn: OnceLock<Turn>,
    /// Relay port → TURN thread + 1 (0: none of ours).
    owners: Box<[AtomicU8]>,
    /// Relay ports owned now: while none, the workers skip looking at what they send.
    owned: AtomicUsize,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            workers: OnceLock::new(),
            turn: OnceLock::new(),
            owners: (0..=u16::MAX).map(|_| AtomicU8::new(0)).collect(),
            owned: AtomicUsize::new(0),
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("workers", &self.workers.get().map(|w| w.lanes.len()))
            .field("turn_threads", &self.turn.get().map(|t| t.lanes.len()))
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Registers the workers (their media ports and wakers); returns each worker's receiving
    /// end, in the same order. Only the first registration counts.
    pub fn register_workers(&self, workers: &[(u16, Waker)]) -> Vec<Receiver<Datagram>> {
        let (lanes, receivers): (Vec<_>, Vec<_>) = workers
            .iter()
            .map(|(port, waker)| {
                let (lane, rx) = Lane::new(waker.clone());
                ((*port, lane), rx)
            })
            .unzip();
        let _ = self.workers.set(Workers { lanes });
        receivers
    }

    /// Registers the TURN threads' wakers and the addresses the SFU is reached at; returns
    /// each thread's receiving end, in the same order.
    pub fn register_turn(&self, wakers: &[Waker], ips: Vec<IpAddr>) -> Vec<Receiver<Datagram>> {
        let (lanes, receivers): (Vec<_>, Vec<_>) =
            wakers.iter().map(|w| Lane::new(w.clone())).unzip();
        let _ = self.turn.set(Turn { lanes, ips });
        receivers
    }

    /// The worker whose media socket `peer` is, when it is one of ours (by port: the TURN
    /// server's peer policy has already matched the whole address against the SFU's sockets).
    pub fn worker_for(&self, peer: SocketAddr) -> Option<usize> {
        let turn = self.turn.get()?;
        if !turn.ips.contains(&peer.ip()) {
            return None;
        }
        self.workers
            .get()?
            .lanes
            .iter()
            .position(|(port, _)| *port == peer.port())
    }

    /// Hands `payload` from a relay (seen from `src`) to worker `worker`; false when dropped.
    /// The caller wakes the worker with [`Hub::wake_worker`] once per batch.
    pub fn to_worker(&self, worker: usize, src: SocketAddr, payload: &[u8]) -> bool {
        let Some((port, lane)) = self.workers.get().and_then(|w| w.lanes.get(worker)) else {
            return false;
        };
        Datagram::new(src, *port, payload).is_some_and(|d| lane.push(d))
    }

    pub fn wake_worker(&self, worker: usize) {
        if let Some((_, lane)) = self.workers.get().and_then(|w| w.lanes.get(worker)) {
            lane.waker.wake();
        }
    }

    /// Whether a worker may be sending to a relay of ours: TURN runs and holds relays.
    pub fn has_relays(&self) -> bool {
        self.turn.get().is_some() && self.owned.load(Ordering::Relaxed) > 0
    }

    /// The TURN thread that owns the relay `dst` is, when `dst` is a relayed address of ours.
    pub fn turn_for(&self, dst: SocketAddr) -> Option<usize> {
        let turn = self.turn.get()?;
        let owner = self.owners[usize::from(dst.port())].load(Ordering::Relaxed);
        (owner != 0 && turn.ips.contains(&dst.ip())).then(|| usize::from(owner - 1))
    }

    /// Hands `payload`, sent by the worker on media port `from_port` to the relay at `dst`, to
    /// TURN thread `thread`; false when dropped.
    pub fn to_turn(&self, thread: usize, from_port: u16, dst: SocketAddr, payload: &[u8]) -> bool {
        let Some(lane) = self.turn.get().and_then(|t| t.lanes.get(thread)) else {
            return false;
        };
        // The relay sees it from the SFU socket at the address it sent to.
        let src = SocketAddr::new(dst.ip(), from_port);
        Datagram::new(src, dst.port(), payload).is_some_and(|d| lane.push(d))
    }

    pub fn wake_turn(&self, thread: usize) {
        if let Some(lane) = self.turn.get().and_then(|t| t.lanes.get(thread)) {
            lane.waker.wake();
        }
    }

    /// Records that TURN thread `thread` bound relay port `port` (`None`: released it).
    pub fn set_owner(&self, port: u16, thread: Option<usize>) {
        let value = thread.map_or(0, |t| (t + 1).min(usize::from(u8::MAX)) as u8);
        let before = self.owners[usize::from(port)].swap(value, Ordering::Relaxed);
        match (before, value) {
            (0, 1..) => {
                self.owned.fetch_add(1, Ordering::Relaxed);
            }
            (1.., 0) => {
                self.owned.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn datagrams_cross_both_ways_and_only_for_our_addresses() {
        let hub = Hub::default();
        let (w0, w1, t0) = (
            Waker::new().unwrap(),
            Waker::new().unwrap(),
            Waker::new().unwrap(),
        );
        let workers = hub.register_workers(&[(49152, w0), (49153, w1)]);
        // Before TURN registers, nothing is ours.
        assert_eq!(hub.worker_for(addr("127.0.0.1:49153")), None);
        let turn = hub.register_turn(&[t0], vec!["127.0.0.1".parse().unwrap()]);

        assert_eq!(hub.worker_for(addr("127.0.0.1:49153")), Some(1));
        assert_eq!(hub.worker_for(addr("127.0.0.1:5432")), None);
        assert_eq!(hub.worker_for(addr("10.0.0.1:49153")), None);

        let relay = addr("127.0.0.1:40001");
        assert!(hub.to_worker(1, relay, b"check"));
        let mut d = workers[1].try_recv().unwrap();
        assert_eq!(
            (d.src, d.dst_port, &d.payload()[..]),
            (relay, 49153, &b"check"[..])
        );
        assert!(workers[0].try_recv().is_err());

        assert_eq!(hub.turn_for(relay), None, "no thread owns the port yet");
        assert!(!hub.has_relays());
        hub.set_owner(40001, Some(0));
        assert!(hub.has_relays());
        assert_eq!(hub.turn_for(relay), Some(0));
        assert_eq!(hub.turn_for(addr("192.0.2.1:40001")), None);
        assert!(hub.to_turn(0, 49153, relay, b"answer"));
        let mut d = turn[0].try_recv().unwrap();
        assert_eq!(
            (d.src, d.dst_port, &d.payload()[..]),
            (addr("127.0.0.1:49153"), 40001, &b"answer"[..])
        );
        hub.set_owner(40001, None);
        assert_eq!(hub.turn_for(relay), None);
        assert!(!hub.has_relays());
    }

    #[test]
    fn a_full_lane_or_an_oversized_datagram_is_dropped() {
        let hub = Hub::default();
        let _workers = hub.register_workers(&[(49152, Waker::new().unwrap())]);
        let _turn = hub.register_turn(&[], vec!["127.0.0.1".parse().unwrap()]);
        let src = addr("127.0.0.1:40000");
        assert!(!hub.to_worker(0, src, &[0; MAX_DATAGRAM + 1]));
        for _ in 0..LANE_CAPACITY {
            assert!(hub.to_worker(0, src, b"x"));
        }
        assert!(!hub.to_worker(0, src, b"x"));
        assert!(!hub.to_worker(1, src, b"x"), "no such worker");
    }
}
