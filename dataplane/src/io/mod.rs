//! The I/O backends a worker thread runs its engine under.
//!
//! Two backends drive the same [`Handler`]: io_uring (multishot receive into a provided buffer
//! ring, batched sends) and recvmmsg/sendmmsg with poll(2), used where io_uring is unavailable
//! (seccomp profiles, old kernels) or chosen with `--io-backend mmsg`. Either also serves the
//! worker's ICE-TCP connections ([`tcp`]) when given a TCP listener.

mod addr;
pub(crate) mod epoll;
mod gso;
pub(crate) mod mmsg;
mod tcp;
mod tx;
mod uring;

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};

use crate::stats::Counters;
use tcp::IceTcp;
pub use tx::Tx;

/// The largest datagram we receive or send. Media packets stay under ~1300 bytes.
pub const MAX_DATAGRAM: usize = 2048;
/// Send buffers per worker: a keyframe burst to a few hundred subscribers fits.
pub const TX_BUFFERS: usize = 8192;
/// Socket buffer size asked for (the kernel caps it at `net.core.rmem_max` and `wmem_max`).
const SOCKET_BUFFER: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Uring,
    Mmsg,
}

impl Backend {
    /// What workers use unless told otherwise: recvmmsg/sendmmsg. Under SFU load (the capacity
    /// runs in docs/benchmarks.md) it sustained as many or more subscribers per core than
    /// io_uring at slightly less CPU per packet; io_uring remains a choice (`--io-backend uring`).
    pub const DEFAULT: Backend = Backend::Mmsg;

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Mmsg => "mmsg",
        }
    }

    /// io_uring if this kernel and process may use it (a ring with a provided-buffer ring can
    /// be set up, and the opcodes we need are there), else recvmmsg/sendmmsg.
    pub fn detect() -> Backend {
        if uring::usable() {
            Backend::Uring
        } else {
            Backend::Mmsg
        }
    }
}

/// A `--io-backend` value that names no backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown I/O backend {0:?} (expected uring or mmsg)")]
pub struct UnknownBackend(String);

impl FromStr for Backend {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Backend, UnknownBackend> {
        match s {
            "uring" | "io_uring" | "io-uring" => Ok(Backend::Uring),
            "mmsg" => Ok(Backend::Mmsg),
            other => Err(UnknownBackend(other.to_string())),
        }
    }
}

/// How a backend sends, beyond the backend itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Several datagrams to one destination go as one UDP GSO train (probe the socket with
    /// [`gso_supported`] first).
    pub gso: bool,
    /// io_uring only: trains of at least this many bytes go as zero-copy sends
    /// (`SENDMSG_ZC`, from registered send buffers where the kernel takes them); `None`: none
    /// do. It pays on a NIC only: loopback and veth copy the payload anyway
    /// (docs/benchmarks.md).
    pub zero_copy_from: Option<usize>,
    /// io_uring only: a kernel thread polls the submission queue (SQPOLL), so sends need no
    /// system call; that thread takes CPU of its own, beside the worker's core.
    pub sqpoll: bool,
}

impl Default for Options {
    /// Trains where the kernel takes them; no zero-copy, no SQPOLL.
    fn default() -> Options {
        Options {
            gso: true,
            zero_copy_from: None,
            sqpoll: false,
        }
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

    /// Where the backend counts what it drops or refuses itself (ICE-TCP).
    fn counters(&mut self) -> &mut Counters;
}

/// Wakes a worker's loop from another thread (an eventfd the loop also waits on).
#[derive(Debug, Clone)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd has no memory arguments; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd: Arc::new(fd) })
    }

    /// Never blocks: a full counter (EAGAIN) already means "woken".
    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to our eventfd.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Resets the counter after a wake-up.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer; EAGAIN is fine.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

/// Binds a UDP socket on `ip` at the first free port in `ports`, with large buffers,
/// nonblocking. A range starting at 0 lets the kernel choose.
pub fn bind_udp(ip: IpAddr, ports: std::ops::RangeInclusive<u16>) -> io::Result<UdpSocket> {
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "empty port range");
    let ports: Box<dyn Iterator<Item = u16>> = if *ports.start() == 0 {
        Box::new(std::iter::once(0))
    } else {
        Box::new(ports)
    };
    for port in ports {
        let addr = SocketAddr::new(ip, port);
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: the kernel caps these at its maximum.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.set_nonblocking(true)?;
        match socket.bind(&addr.into()) {
            Ok(()) => return Ok(socket.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Binds the UDP socket and, with `tcp`, a TCP listener on the same port (for ICE-TCP, so a
/// worker's candidates differ only in protocol): the first port in `ports` where both are
/// free. A range starting at 0 lets the kernel choose the UDP port.
pub fn bind_media(
    ip: IpAddr,
    ports: std::ops::RangeInclusive<u16>,
    tcp: bool,
) -> io::Result<(UdpSocket, Option<TcpListener>)> {
    let (mut from, to) = (*ports.start(), *ports.end());
    // Kernel-chosen ports are retried a few times; a range is walked to its end.
    let mut tries = 16;
    loop {
        let udp = bind_udp(ip, from..=to)?;
        if !tcp {
            return Ok((udp, None));
        }
        let addr = udp.local_addr()?;
        match bind_tcp(addr) {
            Ok(listener) => return Ok((udp, Some(listener))),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && from == 0 && tries > 0 => {
                tries -= 1;
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && from != 0 && addr.port() < to => {
                from = addr.port() + 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A nonblocking TCP listener on `addr`, reusable right after a restart (SO_REUSEADDR).
fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Runs `handler` on `socket`, and on the ICE-TCP connections `tcp` accepts, until it reports
/// stopped, sending as `options` say.
pub fn run(
    backend: Backend,
    socket: &UdpSocket,
    tcp: Option<TcpListener>,
    waker: &Waker,
    handler: &mut impl Handler,
    options: &Options,
) -> io::Result<()> {
    let mut tx = Tx::new(TX_BUFFERS);
    let tcp = tcp.map(IceTcp::new).transpose()?;
    match backend {
        Backend::Uring => uring::run(socket, tcp, waker, handler, &mut tx, options),
        Backend::Mmsg => mmsg::run(socket, tcp, waker, handler, &mut tx, options.gso),
    }
}

/// Whether the kernel takes UDP GSO trains on `socket`.
pub fn gso_supported(socket: &UdpSocket) -> bool {
    gso::supported(socket.as_raw_fd())
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Echoes every datagram (`copies` times, the copy's number in its last byte); counts
    /// ticks; stops when told.
    struct Echo {
        copies: u8,
        stop: Arc<AtomicBool>,
        ticks: Arc<std::sync::atomic::AtomicU64>,
        deadline: Option<Instant>,
        tick_times: Arc<std::sync::Mutex<Vec<Instant>>>,
        counters: Counters,
    }

    impl Handler for Echo {
        fn on_datagram(&mut self, _now: Instant, src: SocketAddr, data: &mut [u8], tx: &mut Tx) {
            for copy in 0..self.copies {
                tx.push(src, |out| {
                    out.get_mut(..data.len())?.copy_from_slice(data);
                    if self.copies > 1 {
                        *out.get_mut(data.len() - 1)? = copy;
                    }
                    Some(data.len())
                });
            }
        }

        fn on_tick(&mut self, now: Instant, _tx: &mut Tx) -> Option<Instant> {
            self.ticks.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut t) = self.tick_times.lock() {
                t.push(now);
            }
            self.deadline
        }

        fn is_stopped(&self) -> bool {
            self.stop.load(Ordering::Relaxed)
        }

        fn counters(&mut self) -> &mut Counters {
            &mut self.counters
        }
    }

    struct Running {
        addr: SocketAddr,
        waker: Waker,
        stop: Arc<AtomicBool>,
        ticks: Arc<std::sync::atomic::AtomicU64>,
        tick_times: Arc<std::sync::Mutex<Vec<Instant>>>,
        thread: Option<std::thread::JoinHandle<io::Result<Counters>>>,
    }

    impl Running {
        fn start(setup: Setup, deadline: Option<Instant>) -> Running {
            Running::start_with(setup, deadline, false, 1)
        }

        /// With `tcp`, also an ICE-TCP listener on the same port; each datagram echoed
        /// `copies` times.
        fn start_with(setup: Setup, deadline: Option<Instant>, tcp: bool, copies: u8) -> Running {
            let (socket, listener) = bind_media("127.0.0.1".parse().unwrap(), 0..=0, tcp).unwrap();
            let addr = socket.local_addr().unwrap();
            let waker = Waker::new().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let tick_times = Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut echo = Echo {
                copies,
                stop: stop.clone(),
                ticks: ticks.clone(),
                deadline,
                tick_times: tick_times.clone(),
                counters: Counters::default(),
            };
            let w = waker.clone();
            let options = Options {
                gso: gso_supported(&socket),
                ..setup.options
            };
            let thread = std::thread::spawn(move || {
                run(setup.backend, &socket, listener, &w, &mut echo, &options)
                    .map(|()| echo.counters)
            });
            Running {
                addr,
                waker,
                stop,
                ticks,
                tick_times,
                thread: Some(thread),
            }
        }

        /// Stops the loop; its counters.
        fn stop(mut self) -> Counters {
            self.stop.store(true, Ordering::Relaxed);
            self.waker.wake();
            self.thread.take().unwrap().join().unwrap().unwrap()
        }
    }

    /// A backend and how it sends.
    #[derive(Debug, Clone, Copy)]
    struct Setup {
        backend: Backend,
        options: Options,
    }

    /// Both backends where this machine has io_uring, and io_uring's zero-copy trains (from
    /// any size) and SQPOLL mode too.
    fn setups() -> Vec<Setup> {
        let setup = |backend, options| Setup { backend, options };
        let mut all = vec![setup(Backend::Mmsg, Options::default())];
        if Backend::detect() == Backend::Uring {
            let zero_copy = Options {
                zero_copy_from: Some(0),
                ..Options::default()
            };
            let sqpoll = Options {
                sqpoll: true,
                ..Options::default()
            };
            all.push(setup(Backend::Uring, Options::default()));
            all.push(setup(Backend::Uring, zero_copy));
            all.push(setup(Backend::Uring, sqpoll));
        }
        all
    }

    /// `recv_from`, again after EINTR: this thread's io_uring probe (`setups`) may leave it
    /// a task-work notification, which interrupts its next blocking call without a signal.
    fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            match socket.recv_from(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    #[test]
    fn echo_many_datagrams() {
        for setup in setups() {
            let r = Running::start(setup, None);
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 2048];
            let total = 10_000usize;
            let burst = 64;
            let mut received = 0;
            for start in (0..total).step_by(burst) {
                for i in start..(start + burst).min(total) {
                    let len = 1 + i % 1500;
                    let payload: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
                    client.send_to(&payload, r.addr).unwrap();
                }
                for _ in start..(start + burst).min(total) {
                    let (n, from) =
                        recv(&client, &mut buf).unwrap_or_else(|e| panic!("{setup:?}: echo: {e}"));
                    assert_eq!(from, r.addr);
                    let i = (0..total)
                        .find(|i| 1 + i % 1500 == n && buf[0] == *i as u8)
                        .unwrap_or(usize::MAX);
                    assert_ne!(i, usize::MAX, "{setup:?}: unexpected echo of {n} bytes");
                    assert!(
                        buf[..n]
                            .iter()
                            .enumerate()
                            .all(|(j, b)| *b == (i + j) as u8)
                    );
                    received += 1;
                }
            }
            assert_eq!(received, total, "{setup:?}");
            r.stop();
        }
    }

    /// Each datagram comes back four times: a train per echo where the kernel takes them, on
    /// both backends, arriving as its datagrams in order; zero-copy trains too, which loopback
    /// reports copied (it copies every zero-copy send it delivers).
    #[test]
    fn echoes_go_as_trains_on_both_backends() {
        for setup in setups() {
            let r = Running::start_with(setup, None, false, 4);
            let trains = gso_supported(&UdpSocket::bind("127.0.0.1:0").unwrap());
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 2048];
            for i in 0..50u8 {
                let payload = [i; 1000];
                client.send_to(&payload, r.addr).unwrap();
                for copy in 0..4 {
                    let (n, _) =
                        recv(&client, &mut buf).unwrap_or_else(|e| panic!("{setup:?}: echo: {e}"));
                    assert_eq!((n, buf[0], buf[n - 1]), (1000, i, copy), "{setup:?}");
                }
            }
            let counters = r.stop();
            if trains {
                assert_eq!(
                    (counters.gso_trains, counters.gso_segments),
                    (50, 200),
                    "{setup:?}"
                );
                let zero_copy = if setup.options.zero_copy_from.is_some() {
                    50
                } else {
                    0
                };
                assert_eq!(
                    (counters.zero_copy_trains, counters.zero_copy_copied),
                    (zero_copy, zero_copy),
                    "{setup:?}"
                );
                assert_eq!(counters.zero_copy_fallbacks, 0, "{setup:?}");
            }
        }
    }

    /// Reads one RFC 4571 frame.
    fn read_frame(stream: &mut std::net::TcpStream) -> Vec<u8> {
        use std::io::Read;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).expect("frame length");
        let mut frame = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut frame).expect("frame");
        frame
    }

    #[test]
    fn ice_tcp_frames_reach_the_handler_and_replies_go_back_on_the_connection() {
        use std::io::Write;
        for setup in setups() {
            let r = Running::start_with(setup, None, true, 1);
            let mut tcp = std::net::TcpStream::connect(r.addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // Frames written in pieces that cut through lengths and payloads.
            let mut stream = Vec::new();
            for i in 0..200u16 {
                let len = 1 + usize::from(i) * 7 % 1400;
                stream.extend_from_slice(&(len as u16).to_be_bytes());
                stream.extend((0..len).map(|j| (usize::from(i) + j) as u8));
            }
            for chunk in stream.chunks(333) {
                tcp.write_all(chunk).unwrap();
            }
            for i in 0..200u16 {
                let len = 1 + usize::from(i) * 7 % 1400;
                let want: Vec<u8> = (0..len).map(|j| (usize::from(i) + j) as u8).collect();
                assert_eq!(read_frame(&mut tcp), want, "{setup:?}: frame {i}");
            }
            // UDP on the same port still works beside it.
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            udp.send_to(b"udp", r.addr).unwrap();
            let mut buf = [0u8; 16];
            let (n, _) = recv(&udp, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"udp");
            // A frame longer than any datagram is dropped; the connection goes on.
            let big = vec![1u8; MAX_DATAGRAM + 1];
            tcp.write_all(&(big.len() as u16).to_be_bytes()).unwrap();
            tcp.write_all(&big).unwrap();
            tcp.write_all(&[0, 2, b'o', b'k']).unwrap();
            assert_eq!(read_frame(&mut tcp), b"ok", "{setup:?}");
            r.stop();
        }
    }

    #[test]
    fn wake_runs_a_tick_promptly() {
        for setup in setups() {
            let r = Running::start(setup, Some(Instant::now() + Duration::from_secs(3600)));
            std::thread::sleep(Duration::from_millis(50));
            let before = r.ticks.load(Ordering::Relaxed);
            let t = Instant::now();
            r.waker.wake();
            while r.ticks.load(Ordering::Relaxed) == before {
                assert!(
                    t.elapsed() < Duration::from_millis(100),
                    "{setup:?}: no tick after wake"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            r.stop();
        }
    }

    #[test]
    fn deadline_is_honoured() {
        for setup in setups() {
            let deadline = Instant::now() + Duration::from_millis(200);
            let r = Running::start(setup, Some(deadline));
            std::thread::sleep(Duration::from_millis(400));
            let times = r.tick_times.lock().unwrap().clone();
            let after: Vec<_> = times.iter().filter(|t| **t >= deadline).collect();
            assert!(!after.is_empty(), "{setup:?}: no tick at the deadline");
            assert!(
                after[0].duration_since(deadline) < Duration::from_millis(30),
                "{setup:?}: late tick"
            );
            r.stop();
        }
    }

    #[test]
    fn recovers_after_an_overrun() {
        for setup in setups() {
            let r = Running::start(setup, None);
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            // Far more than the receive ring holds, as fast as we can.
            for _ in 0..40_000 {
                let _ = client.send_to(&[7u8; 1200], r.addr);
            }
            std::thread::sleep(Duration::from_millis(200));
            client.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 2048];
            while client.recv_from(&mut buf).is_ok() {}
            client.set_nonblocking(false).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            client.send_to(b"after", r.addr).unwrap();
            let (n, _) = recv(&client, &mut buf).expect("the loop still echoes");
            assert_eq!(&buf[..n], b"after");
            r.stop();
        }
    }

    #[test]
    fn this_machine_has_io_uring() {
        // The CI machines run kernel 6.x with io_uring enabled; if this fails there, the uring
        // backend's tests above silently ran on mmsg only.
        if std::env::var_os("SWITCHYARD_EXPECT_URING").is_some() {
            assert_eq!(Backend::detect(), Backend::Uring);
        }
    }

    #[test]
    fn backend_names() {
        assert_eq!("uring".parse(), Ok(Backend::Uring));
        assert_eq!("mmsg".parse(), Ok(Backend::Mmsg));
        assert!("epoll".parse::<Backend>().is_err());
    }

    #[test]
    fn bind_takes_the_next_free_port() {
        let a = bind_udp("127.0.0.1".parse().unwrap(), 0..=0).unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX {
            let b = bind_udp("127.0.0.1".parse().unwrap(), port..=port.saturating_add(20)).unwrap();
            assert_ne!(b.local_addr().unwrap().port(), port);
        }
    }
}
