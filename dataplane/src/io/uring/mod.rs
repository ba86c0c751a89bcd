//! The io_uring backend: one multishot `RecvMsg` fills buffers the kernel takes from a
//! provided-buffer ring, sends go out as `SendMsg` entries submitted in one batch per loop
//! iteration (several datagrams to one destination as one GSO train, see [`super::gso`]),
//! and a `Read` on the waker's eventfd interrupts the wait. ICE-TCP connections
//! are served through their epoll descriptor, watched by a multishot `PollAdd`: fallback
//! traffic, not worth per-connection ring operations.
//!
//! Driven with the `io-uring` crate directly (not tokio-uring, which has no multishot receive
//! or buffer rings and no release since 2024).

use std::io;
use std::mem::ManuallyDrop;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};

use super::tcp::IceTcp;
use super::{Handler, MAX_DATAGRAM, Options, Tx, Waker, addr, gso};
use trains::{TrainBlocks, Way};

mod trains;

/// Submission queue entries (the completion queue is twice as large).
const RING_ENTRIES: u32 = 4096;
/// Receive buffers in the provided-buffer ring (a power of two).
const RECV_BUFFERS: u16 = 4096;
const BUFFER_GROUP: u16 = 0;
/// The kernel's `io_uring_recvmsg_out` header in front of each received datagram.
const RECVMSG_OUT: usize = 16;
/// Name area of each receive buffer (room for an IPv6 address).
const NAME_LEN: usize = addr::STORAGE_LEN;
const RECV_BUF_LEN: usize = RECVMSG_OUT + NAME_LEN + MAX_DATAGRAM;

const KIND_SHIFT: u64 = 62;
/// Readiness of the ICE-TCP epoll descriptor (a multishot poll).
const TCP: u64 = 0;
const RECV: u64 = 1 << KIND_SHIFT;
const WAKE: u64 = 2 << KIND_SHIFT;
const SEND: u64 = 3 << KIND_SHIFT;
/// With `SEND`: the low bits name a train's block, not a datagram's slot.
const TRAIN: u64 = 1 << 61;
/// The socket is the ring's registered file 0: no descriptor lookup per operation.
const SOCKET: Fixed = Fixed(0);
/// How long an idle SQPOLL thread polls before it sleeps (and the loop must wake it).
const SQPOLL_IDLE_MS: u32 = 50;

/// Whether io_uring with the opcodes and buffer rings we need works here.
pub(super) fn usable() -> bool {
    let Ok(ring) = IoUring::new(8) else {
        return false;
    };
    let mut probe = Probe::new();
    if ring.submitter().register_probe(&mut probe).is_err() {
        return false;
    }
    let ops = [
        opcode::RecvMsg::CODE,
        opcode::SendMsg::CODE,
        opcode::Read::CODE,
        opcode::PollAdd::CODE,
    ];
    if !ops.iter().all(|op| probe.is_supported(*op)) {
        return false;
    }
    let Ok(bufs) = BufRing::new(2) else {
        return false;
    };
    // SAFETY: the ring memory outlives the registration, which is removed right after.
    let registered = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.ring_addr(), 2, 7, 0)
    };
    let ok = registered.is_ok();
    let _ = ring.submitter().unregister_buf_ring(7);
    // The socket goes in as a registered file.
    let Ok(socket) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None) else {
        return false;
    };
    ok && ring
        .submitter()
        .register_files(&[socket.as_raw_fd()])
        .is_ok()
}

/// The provided-buffer ring: an mmap'd array of `io_uring_buf` entries the kernel takes
/// receive buffers from, and the buffers themselves.
struct BufRing {
    entries: *mut BufRingEntry,
    map_len: usize,
    count: u16,
    tail: u16,
    buffers: Box<[u8]>,
}

impl BufRing {
    fn new(count: u16) -> io::Result<BufRing> {
        let map_len = (usize::from(count) * std::mem::size_of::<BufRingEntry>()).max(4096);
        // SAFETY: an anonymous private mapping; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(BufRing {
            entries: ptr.cast(),
            map_len,
            count,
            tail: 0,
            buffers: vec![0u8; usize::from(count) * RECV_BUF_LEN].into_boxed_slice(),
        })
    }

    fn ring_addr(&self) -> u64 {
        self.entries as u64
    }

    /// Hands buffer `bid` (back) to the kernel; visible after `publish`.
    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let addr = self.buffers[usize::from(bid) * RECV_BUF_LEN..].as_mut_ptr() as u64;
        // SAFETY: `index` < count, inside the mapping; the kernel only reads entries between
        // its head and our published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(addr);
        entry.set_len(RECV_BUF_LEN as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes pushed buffers visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of our mapping; the kernel reads it
        // with acquire semantics, so a release store orders the entry writes before it.
        unsafe {
            let tail = BufRingEntry::tail(self.entries).cast_mut();
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }

    /// The bytes the kernel wrote into buffer `bid`.
    fn filled(&mut self, bid: u16, len: usize) -> Option<&mut [u8]> {
        let start = usize::from(bid) * RECV_BUF_LEN;
        self.buffers.get_mut(start..start + len.min(RECV_BUF_LEN))
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, once. No ring uses it any more: the
        // one `run` registers it with is unregistered and closed in `UringLoop`'s `Drop`
        // before any field (this one included) is dropped, and `usable` unregisters its test
        // registration right after making it.
        unsafe { libc::munmap(self.entries.cast(), self.map_len) };
    }
}

/// Per-slot send headers: the kernel reads them until the completion, so they live in arrays
/// indexed by the Tx slot and never move.
struct SendHeaders {
    hdrs: Box<[libc::msghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_in6]>,
}

impl SendHeaders {
    fn new(n: usize) -> SendHeaders {
        // SAFETY: msghdr is plain data for which all-zero bytes are valid.
        let zero: libc::msghdr = unsafe { std::mem::zeroed() };
        SendHeaders {
            hdrs: vec![zero; n].into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ]
            .into_boxed_slice(),
            names: vec![addr::zeroed(); n].into_boxed_slice(),
        }
    }
}

/// Pushes an entry, submitting first if the queue is full.
fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every entry we build points into memory `UringLoop` owns next to the ring
        // (the buffer ring, the send headers, the receive header, the wake buffer), whose
        // `Drop` closes the ring before that memory is freed, or into `Tx`'s buffers, which
        // the caller of `run` owns for longer than the `UringLoop` lives.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

/// The ring and the memory its entries point into, owned together so that the order they go
/// away in is written down in `Drop` rather than left to the order of declarations.
///
/// Everything the kernel is given a pointer to lives in a heap allocation (or, for the
/// buffer ring, an mmap) owned here, so moving a `UringLoop` moves none of it.
struct UringLoop {
    /// Dropped by hand in `Drop::drop`, before the fields below.
    ring: ManuallyDrop<IoUring>,
    /// Receive buffers, registered with the ring as `BUFFER_GROUP`.
    bufs: BufRing,
    /// Per-slot `SendMsg` headers.
    sends: SendHeaders,
    /// Headers of the trains in flight.
    trains: TrainBlocks,
    /// Whether a kernel thread polls the submission queue (SQPOLL).
    sqpoll: bool,
    /// The header `RecvMsgMulti` reads its name and control lengths from.
    recv_hdr: Box<libc::msghdr>,
    /// Where the waker's eventfd is read into.
    wake_buf: Box<[u8; 8]>,
}

impl UringLoop {
    /// A ring with `RECV_BUFFERS` receive buffers registered, `socket` as registered file 0,
    /// and send headers for `tx`'s slots; trains, zero-copy and SQPOLL as `options` ask.
    fn new(socket: &UdpSocket, tx: &Tx, options: &Options) -> io::Result<UringLoop> {
        let mut bufs = BufRing::new(RECV_BUFFERS)?;
        for bid in 0..RECV_BUFFERS {
            bufs.push(bid);
        }
        bufs.publish();
        // SAFETY: msghdr is plain data; only the name and control lengths matter for
        // RecvMsgMulti.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = NAME_LEN as libc::socklen_t;
        let (ring, sqpoll) = build_ring(options.sqpoll)?;
        let best = match (options.gso, options.zero_copy_from) {
            (false, _) => Way::Single,
            (true, None) => Way::Copied,
            (true, Some(_)) if register_send_buffers(&ring, tx) => Way::ZeroCopyFixed,
            (true, Some(_)) => Way::ZeroCopy,
        };
        let uring = UringLoop {
            ring: ManuallyDrop::new(ring),
            bufs,
            sends: SendHeaders::new(tx.capacity()),
            trains: TrainBlocks::new(best, options.zero_copy_from.unwrap_or(usize::MAX)),
            sqpoll,
            recv_hdr,
            wake_buf: Box::new([0u8; 8]),
        };
        // SAFETY: the buffer ring's mapping belongs to `uring`, whose `Drop` unregisters it
        // and closes the ring before unmapping it (also if this call fails).
        unsafe {
            uring.ring.submitter().register_buf_ring_with_flags(
                uring.bufs.ring_addr(),
                RECV_BUFFERS,
                BUFFER_GROUP,
                0,
            )?
        };
        uring
            .ring
            .submitter()
            .register_files(&[socket.as_raw_fd()])?;
        Ok(uring)
    }
}

/// Registers `tx`'s send buffers with `ring` for zero-copy sends: whether the kernel took them.
/// Where it does not (typically RLIMIT_MEMLOCK, systemd's LimitMEMLOCK, below the pool's
/// size), zero-copy sends pin their pages each time.
fn register_send_buffers(ring: &IoUring, tx: &Tx) -> bool {
    let region = tx.region();
    // SAFETY: `tx` outlives the ring (the caller of `run` owns it), and its buffers never
    // move: the kernel may read them until the ring is closed.
    match unsafe { ring.submitter().register_buffers(&[region]) } {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "send buffers ({} MiB) not registered ({e}); zero-copy sends pin their pages each time",
                region.iov_len >> 20
            );
            false
        }
    }
}

/// The ring: one thread submits and reaps (SINGLE_ISSUER), and completions' task work runs
/// at any kernel entry (COOP_TASKRUN). DEFER_TASKRUN, which holds it until the loop waits,
/// held fewer subscribers within the latency limit (docs/benchmarks.md, 2026-12-07), likely
/// because send completions, and the send buffers they free, wait with it.
///
/// With `sqpoll`, a kernel thread takes submissions instead (COOP_TASKRUN does not apply
/// there); where that is refused (older kernels, missing privileges), a warning and the
/// ordinary ring. Returns the ring and whether it polls.
fn build_ring(sqpoll: bool) -> io::Result<(IoUring, bool)> {
    if sqpoll {
        match IoUring::builder()
            .setup_single_issuer()
            .setup_sqpoll(SQPOLL_IDLE_MS)
            .build(RING_ENTRIES)
        {
            Ok(ring) => return Ok((ring, true)),
            Err(e) => tracing::warn!("io_uring SQPOLL refused ({e}); submitting from the worker"),
        }
    }
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(RING_ENTRIES)
        .or_else(|_| IoUring::new(RING_ENTRIES))?;
    Ok((ring, false))
}

impl Drop for UringLoop {
    fn drop(&mut self) {
        // No receive takes a buffer from the ring after this. It fails only if `new` failed
        // before registering, when there is nothing to remove. Registered files and send
        // buffers go with the ring.
        let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
        // SAFETY: the ring is dropped once, here, and never used again. Dropping it unmaps the
        // queues and closes the ring: nothing more can be submitted, and the kernel cancels
        // what is still in flight (the armed receive and eventfd read; `run` gives sends up to
        // a second to complete before it returns). The memory those requests point into is
        // freed only after this function returns, when the other fields are dropped, so the
        // ring goes first whatever order the fields are declared in.
        unsafe { ManuallyDrop::drop(&mut self.ring) };
    }
}

pub(super) fn run(
    socket: &UdpSocket,
    mut tcp: Option<IceTcp>,
    waker: &Waker,
    handler: &mut impl Handler,
    tx: &mut Tx,
    options: &Options,
) -> io::Result<()> {
    let mut uring = UringLoop::new(socket, tx, options)?;
    let UringLoop {
        ring,
        bufs,
        sends,
        trains,
        sqpoll,
        recv_hdr,
        wake_buf,
    } = &mut uring;
    let sqpoll = *sqpoll;
    let ring: &mut IoUring = ring;

    let recv = opcode::RecvMsgMulti::new(SOCKET, &**recv_hdr, BUFFER_GROUP)
        .build()
        .user_data(RECV);
    let wake = opcode::Read::new(Fd(waker.raw_fd()), wake_buf.as_mut_ptr(), 8)
        .build()
        .user_data(WAKE);
    // Multishot: one completion each time the descriptor turns readable.
    let tcp_poll = tcp.as_ref().map(|t| {
        opcode::PollAdd::new(Fd(t.fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(TCP)
    });
    push(ring, &recv)?;
    push(ring, &wake)?;
    if let Some(poll) = &tcp_poll {
        push(ring, poll)?;
    }

    let mut deadline = handler.on_tick(Instant::now(), tx);
    let mut in_flight = 0usize;
    let mut stopping: Option<Instant> = None;
    // The poll fires on new readiness only; work `service` left must not wait for more.
    let mut tcp_more = false;
    loop {
        if let Some(tcp) = &mut tcp {
            tcp.route(tx, handler);
        }
        in_flight += queue_sends(ring, tx, sends, trains)?;
        let sweep = tcp.as_mut().and_then(|t| t.sweep(Instant::now(), handler));
        let now_if_more = tcp_more.then(Instant::now);
        deadline = [deadline, sweep, now_if_more].into_iter().flatten().min();
        if stopping.is_none() && handler.is_stopped() {
            stopping = Some(Instant::now() + Duration::from_secs(1));
        }
        if let Some(until) = stopping {
            if in_flight == 0 || Instant::now() >= until {
                return Ok(());
            }
            deadline = Some(until.min(Instant::now() + Duration::from_millis(10)));
        }
        // Under SQPOLL the kernel thread takes the submissions; while completions wait to be
        // reaped the loop goes on without a system call (one only to wake a sleeping thread).
        let waited = match deadline {
            _ if sqpoll && !ring.completion().is_empty() => ring.submit(),
            Some(d) => {
                let ts = Timespec::from(d.saturating_duration_since(Instant::now()));
                ring.submitter()
                    .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
            }
            None => ring.submit_and_wait(1),
        };
        if let Err(e) = waited {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) => {}
                _ => return Err(e),
            }
        }
        let now = Instant::now();
        let (mut rearm_recv, mut rearm_wake) = (false, false);
        let (mut tcp_ready, mut rearm_tcp) = (false, false);
        let mut cq = ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let data = cqe.user_data();
            match data & (3 << KIND_SHIFT) {
                RECV => {
                    if !cqueue::more(cqe.flags()) {
                        rearm_recv = true;
                    }
                    let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                        // ENOBUFS (the ring ran dry) or another error: nothing to read.
                        continue;
                    };
                    if cqe.result() > 0 {
                        deliver(bufs, bid, cqe.result() as usize, now, handler, tx);
                    }
                    bufs.push(bid);
                }
                WAKE => rearm_wake = true,
                TCP => {
                    tcp_ready = true;
                    rearm_tcp |= !cqueue::more(cqe.flags());
                }
                SEND if data & TRAIN != 0 => {
                    let block = (data & 0xFFFF) as u16;
                    let counters = handler.counters();
                    if trains.completed(block, cqe.result(), cqe.flags(), tx, counters) {
                        in_flight = in_flight.saturating_sub(1);
                    }
                }
                SEND => {
                    in_flight = in_flight.saturating_sub(1);
                    tx.release((data & 0xFFFF_FFFF) as u32);
                }
                _ => {}
            }
        }
        drop(cq);
        bufs.publish();
        if rearm_recv {
            push(ring, &recv)?;
        }
        if rearm_wake {
            push(ring, &wake)?;
        }
        if let (Some(poll), true) = (&tcp_poll, rearm_tcp) {
            push(ring, poll)?;
        }
        if let (Some(tcp), true) = (&mut tcp, tcp_ready || tcp_more) {
            tcp_more = tcp.service(now, handler, tx);
        }
        deadline = handler.on_tick(now, tx);
    }
}

/// Hands one received datagram (laid out as `io_uring_recvmsg_out`, name, payload) to the
/// handler.
fn deliver(
    bufs: &mut BufRing,
    bid: u16,
    len: usize,
    now: Instant,
    handler: &mut impl Handler,
    tx: &mut Tx,
) {
    let Some(buf) = bufs.filled(bid, len) else {
        return;
    };
    let word = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .and_then(|w| w.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    let (Some(name_len), Some(payload_len), Some(flags)) =
        (word(buf, 0), word(buf, 8), word(buf, 12))
    else {
        return;
    };
    if flags & libc::MSG_TRUNC as u32 != 0 {
        return;
    }
    let name_len = (name_len as usize).min(NAME_LEN);
    let Some(src) = buf
        .get(RECVMSG_OUT..RECVMSG_OUT + name_len)
        .and_then(addr::read)
    else {
        return;
    };
    let start = RECVMSG_OUT + NAME_LEN;
    let end = (start + payload_len as usize).min(buf.len());
    if let Some(payload) = buf.get_mut(start..end) {
        handler.on_datagram(now, src, payload, tx);
    }
}

/// Submits a send for every queued datagram, or train of datagrams while trains are on;
/// returns how many entries went in flight.
fn queue_sends(
    ring: &mut IoUring,
    tx: &mut Tx,
    sends: &mut SendHeaders,
    trains: &mut TrainBlocks,
) -> io::Result<usize> {
    let n = tx.queued();
    if trains.enabled() && n > 1 {
        tx.group_by(&mut trains.scratch, gso::key);
    }
    let (mut at, mut entries) = (0, 0);
    while at < n {
        let len = if trains.enabled() {
            gso::train_len(tx, at)
        } else {
            1
        };
        if len > 1
            && let Some((block, entry)) = trains.send(SOCKET, tx, at, len)
        {
            push(ring, &entry.user_data(SEND | TRAIN | u64::from(block)))?;
            at += len;
        } else {
            send_one(ring, tx, sends, at)?;
            at += 1;
        }
        entries += 1;
    }
    // Submitted by the loop's next io_uring_enter, which also waits: one system call.
    tx.dequeue(n);
    Ok(entries)
}

/// Pushes a `SendMsg` for the datagram at queue position `at`, with the header of its slot.
fn send_one(ring: &mut IoUring, tx: &Tx, sends: &mut SendHeaders, at: usize) -> io::Result<()> {
    let slot = tx.queued_slots()[at];
    let s = slot as usize;
    let (data, dst) = tx.datagram(slot);
    let name_len = addr::write(dst, &mut sends.names[s]);
    sends.iovs[s] = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let h = &mut sends.hdrs[s];
    h.msg_name = (&mut sends.names[s] as *mut libc::sockaddr_in6).cast();
    h.msg_namelen = name_len;
    h.msg_iov = &mut sends.iovs[s];
    h.msg_iovlen = 1;
    let entry = opcode::SendMsg::new(SOCKET, &sends.hdrs[s])
        .build()
        .user_data(SEND | u64::from(slot));
    push(ring, &entry)
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    /// Where io_uring works here, the ways the io tests' setups ask for are really taken: the
    /// ring polls under SQPOLL (unprivileged since Linux 5.11), and the send pool registers for
    /// zero-copy (the echo tests' zero-copy trains then go from registered buffers: they
    /// count no fallback).
    #[test]
    fn sqpoll_and_registered_send_buffers_are_taken() {
        if !usable() {
            return;
        }
        // The pool outlives the ring it is registered with, as in `run`.
        let tx = Tx::new(super::super::TX_BUFFERS);
        let (ring, sqpoll) = build_ring(true).unwrap();
        assert!(sqpoll, "SQPOLL refused");
        assert!(register_send_buffers(&ring, &tx), "send buffers refused");
    }
}
