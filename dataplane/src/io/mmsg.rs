//! The recvmmsg/sendmmsg backend: poll(2) on the socket, the waker and the ICE-TCP epoll
//! descriptor, then batches of up to `BATCH` datagrams per system call each way (sends in
//! GSO trains where the kernel takes them: [`gso`]).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::gso::{self, Trains};
use super::tcp::IceTcp;
use super::{Handler, MAX_DATAGRAM, Tx, Waker, addr};
use crate::stats::Counters;

/// Datagrams per recvmmsg/sendmmsg call.
pub(crate) const BATCH: usize = 64;
/// Receive batches per loop iteration before timers get a turn.
const MAX_RECV_BATCHES: usize = 16;

/// Preallocated message headers for one direction; `mmsghdr` holds raw pointers into the
/// boxed arrays, which never move.
pub(crate) struct Messages {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_in6]>,
}

impl Messages {
    pub(crate) fn new() -> Messages {
        // SAFETY: mmsghdr and iovec are plain data for which all-zero bytes are valid.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Messages {
            hdrs: vec![zero_hdr; BATCH].into_boxed_slice(),
            iovs: vec![zero_iov; BATCH].into_boxed_slice(),
            names: vec![addr::zeroed(); BATCH].into_boxed_slice(),
        }
    }

    /// Points message `i` at `buf` and its name storage.
    fn set(&mut self, i: usize, buf: *mut u8, len: usize, name_len: libc::socklen_t) {
        self.iovs[i] = libc::iovec {
            iov_base: buf.cast(),
            iov_len: len,
        };
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in6).cast();
        h.msg_namelen = name_len;
        h.msg_iov = &mut self.iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
        self.hdrs[i].msg_len = 0;
    }
}

/// Runs the loop; `gso`: send trains ([`gso`]; the caller has probed that the kernel takes
/// them).
pub(super) fn run(
    socket: &UdpSocket,
    mut tcp: Option<IceTcp>,
    waker: &Waker,
    handler: &mut impl Handler,
    tx: &mut Tx,
    gso: bool,
) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let mut rx = Receiver::new();
    let mut out = Trains::new(gso);
    let mut deadline = handler.on_tick(Instant::now(), tx);
    loop {
        if let Some(tcp) = &mut tcp {
            tcp.route(tx, handler);
        }
        let blocked = !gso::flush(fd, tx, &mut out, handler.counters())?;
        if handler.is_stopped() {
            return drain(fd, tx, &mut out, handler.counters());
        }
        let sweep = tcp.as_mut().and_then(|t| t.sweep(Instant::now(), handler));
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN | if blocked { libc::POLLOUT } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: waker.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            // poll(2) skips a negative descriptor: no ICE-TCP.
            libc::pollfd {
                fd: tcp.as_ref().map_or(-1, |t| t.fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = [deadline, sweep]
            .into_iter()
            .flatten()
            .min()
            .map_or(-1, |d| {
                let wait = d.saturating_duration_since(Instant::now());
                // Round up so we do not wake just before the deadline and spin.
                wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            });
        // SAFETY: `fds` is a live array of three pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if fds[1].revents & libc::POLLIN != 0 {
            waker.drain();
        }
        let now = Instant::now();
        if fds[0].revents & libc::POLLIN != 0 {
            for _ in 0..MAX_RECV_BATCHES {
                let got = rx.receive(fd, |src, data| handler.on_datagram(now, src, data, tx))?;
                if got < BATCH {
                    break;
                }
                if let Some(tcp) = &mut tcp {
                    tcp.route(tx, handler);
                }
                gso::flush(fd, tx, &mut out, handler.counters())?;
            }
        }
        if let Some(tcp) = &mut tcp
            && fds[2].revents & libc::POLLIN != 0
        {
            // What is left keeps the descriptor readable: poll(2) reports it again.
            let _ = tcp.service(now, handler, tx);
        }
        deadline = handler.on_tick(now, tx);
    }
}

/// Receive buffers and headers for one recvmmsg call of up to `BATCH` datagrams.
pub(crate) struct Receiver {
    bufs: Box<[u8]>,
    msgs: Messages,
}

impl Receiver {
    pub(crate) fn new() -> Receiver {
        Receiver {
            bufs: vec![0u8; BATCH * MAX_DATAGRAM].into_boxed_slice(),
            msgs: Messages::new(),
        }
    }

    /// One recvmmsg call on the nonblocking socket `fd`, handing each datagram (which the
    /// callee may rewrite in place) to `each`; returns how many datagrams it brought. Truncated
    /// datagrams (over `MAX_DATAGRAM`) are skipped.
    pub(crate) fn receive(
        &mut self,
        fd: i32,
        mut each: impl FnMut(SocketAddr, &mut [u8]),
    ) -> io::Result<usize> {
        let rx = &mut self.msgs;
        for i in 0..BATCH {
            let buf = self.bufs[i * MAX_DATAGRAM..].as_mut_ptr();
            rx.set(i, buf, MAX_DATAGRAM, addr::STORAGE_LEN as libc::socklen_t);
        }
        // SAFETY: every header points at live buffers and name storage owned by `self`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                rx.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                // ICMP errors from earlier sends surface here; they concern no one datagram.
                _ if e.raw_os_error() == Some(libc::ECONNREFUSED) => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        for i in 0..n {
            let h = &rx.hdrs[i];
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            let len = (h.msg_len as usize).min(MAX_DATAGRAM);
            let Some(src) = addr::read(addr::bytes(&rx.names[i], h.msg_hdr.msg_namelen as usize))
            else {
                continue;
            };
            each(
                src,
                &mut self.bufs[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len],
            );
        }
        Ok(n)
    }
}

/// Sends what is queued; false if the socket would block with datagrams left.
pub(crate) fn flush(fd: i32, tx: &mut Tx, out: &mut Messages) -> io::Result<bool> {
    while tx.queued() > 0 {
        let n = tx.queued().min(BATCH);
        for i in 0..n {
            let slot = tx.queued_slots()[i];
            let (data, dst) = tx.datagram(slot);
            let name_len = addr::write(dst, &mut out.names[i]);
            // The kernel only reads the buffer; the iovec type asks for a mutable pointer.
            out.set(i, data.as_ptr().cast_mut(), data.len(), name_len);
        }
        // SAFETY: every header points at live datagrams in `tx` and names in `out`.
        let sent =
            unsafe { libc::sendmmsg(fd, out.hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT) };
        if sent < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(false),
                io::ErrorKind::Interrupted => continue,
                // A datagram the kernel refuses (unreachable destination, EPERM from a firewall)
                // must not wedge the queue: drop it and go on.
                _ => {
                    release_first(tx, 1);
                    continue;
                }
            }
        }
        release_first(tx, sent as usize);
    }
    Ok(true)
}

/// Frees the first `n` queued datagrams' buffers (sent, or dropped) and dequeues them.
pub(crate) fn release_first(tx: &mut Tx, n: usize) {
    for i in 0..n.min(tx.queued()) {
        let slot = tx.queued_slots()[i];
        tx.release(slot);
    }
    tx.dequeue(n);
}

/// Sends what is left before the loop returns, waiting up to a second for the socket.
fn drain(fd: i32, tx: &mut Tx, out: &mut Trains, counters: &mut Counters) -> io::Result<()> {
    let until = Instant::now() + std::time::Duration::from_secs(1);
    while !gso::flush(fd, tx, out, counters)? && Instant::now() < until {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `p` is a live pollfd.
        unsafe { libc::poll(&mut p, 1, 10) };
    }
    Ok(())
}
