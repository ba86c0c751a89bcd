//! The I/O backends a worker thread runs its engine under.
//!
//! Two backends drive the same [`Handler`]: io_uring (multishot receive into a provided buffer
//! ring, batched sends) and recvmmsg/sendmmsg with poll(2), used where io_uring is unavailable
//! (seccomp profiles, old kernels) or chosen with `--io-backend mmsg`.
//!
//! CONTRACT (skeleton): signatures used by the worker; implement them in `uring.rs`, `mmsg.rs`
//! and here.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::Instant;

/// The largest datagram we receive or send. Media packets stay under ~1300 bytes.
pub const MAX_DATAGRAM: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Uring,
    Mmsg,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Mmsg => "mmsg",
        }
    }

    /// io_uring if this kernel and process may use it (probes a ring with the opcodes we need),
    /// else recvmmsg/sendmmsg.
    pub fn detect() -> Backend {
        todo!()
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "uring" | "io_uring" | "io-uring" => Ok(Backend::Uring),
            "mmsg" => Ok(Backend::Mmsg),
            other => Err(format!(
                "unknown I/O backend {other:?} (expected uring or mmsg)"
            )),
        }
    }
}

/// Outgoing datagrams of one loop iteration, in preallocated buffers.
///
/// The engine writes each datagram straight into a free buffer, so the only copy of a
/// forwarded packet is the one into its consumer's buffer, where it is encrypted in place.
pub struct Tx {
    _priv: (),
}

impl Tx {
    /// A pool of `capacity` buffers of `MAX_DATAGRAM` bytes.
    pub fn new(capacity: usize) -> Tx {
        let _ = capacity;
        todo!()
    }

    /// Queues a datagram to `dst`: `write` fills the buffer and returns the length, or `None`
    /// to abandon it. Returns false (and the caller counts a drop) when every buffer is queued or
    /// in flight, or `write` returned `None`.
    pub fn push(
        &mut self,
        dst: SocketAddr,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let _ = (dst, write);
        todo!()
    }

    /// Number of datagrams waiting to be sent.
    pub fn queued(&self) -> usize {
        todo!()
    }
}

/// The work a backend drives: one engine on one socket.
pub trait Handler {
    /// One received datagram; the handler may rewrite it in place (decrypt).
    fn on_datagram(&mut self, now: Instant, src: SocketAddr, data: &mut [u8], tx: &mut Tx);

    /// Called after every batch of datagrams, on wake-ups and when the deadline passes: drains
    /// commands, runs timers. Returns the next deadline.
    fn on_tick(&mut self, now: Instant, tx: &mut Tx) -> Option<Instant>;

    /// Whether the loop should return (after flushing what is queued).
    fn is_stopped(&self) -> bool;
}

/// Wakes a worker's loop from another thread (an eventfd the loop also waits on).
#[derive(Debug, Clone)]
pub struct Waker {
    _priv: (),
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        todo!()
    }

    /// Never blocks.
    pub fn wake(&self) {
        todo!()
    }
}

/// Binds a UDP socket on `ip` at the first free port in `ports`, with large buffers, nonblocking.
pub fn bind_udp(ip: IpAddr, ports: std::ops::RangeInclusive<u16>) -> io::Result<UdpSocket> {
    let _ = (ip, ports);
    todo!()
}

/// Runs `handler` on `socket` until it reports stopped.
pub fn run(
    backend: Backend,
    socket: &UdpSocket,
    waker: &Waker,
    handler: &mut impl Handler,
) -> io::Result<()> {
    let _ = (backend, socket, waker, handler);
    todo!()
}
