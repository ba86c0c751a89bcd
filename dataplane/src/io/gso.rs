//! UDP generic segmentation offload (`UDP_SEGMENT`, Linux 4.18): several datagrams to one
//! destination leave as one `sendmmsg` entry, a train, which the kernel cuts into datagrams of
//! one segment size (the last may be shorter). Most of a forwarding server's CPU is the kernel's
//! per-datagram send path (docs/benchmarks.md); a train pays most of it once.
//!
//! A receive batch's fan-out queues packets consumer after consumer (a frame's first packet to
//! every consumer, then its second, ...). Before sending, the queue is grouped by destination,
//! stably (each consumer's packets keep their order), and each destination's run is cut into
//! trains of equal-sized datagrams, a shorter one last. The grouping, the trains and their
//! headers are hand-written: they are the per-packet path, with no allocation once warm.
//!
//! A train the kernel refuses (a device without checksum offload answers EIO) turns GSO off
//! for the socket, counted in `gso_fallbacks`; the queue then goes out datagram by datagram.

use std::io;
use std::net::SocketAddr;

use super::mmsg::{self, BATCH, Messages};
use super::{Tx, addr};
use crate::stats::Counters;

/// The most datagrams in one train: the kernel's `UDP_MAX_SEGMENTS`.
pub(crate) const MAX_SEGMENTS: usize = 64;
/// The most bytes in one train: within an IP datagram's 64 KiB, headers included.
const MAX_TRAIN_BYTES: usize = 65_000;
/// Room for one control message of a `u16` (`CMSG_SPACE(2)` is 24 on 64-bit Linux).
const CONTROL_ROOM: usize = 32;

/// Whether the kernel takes `UDP_SEGMENT` on socket `fd`.
pub(crate) fn supported(fd: i32) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the live local `value`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0
}

/// A sort key equal for equal addresses. Unequal IPv6 addresses may rarely share one; a train
/// still checks the address itself, so that only costs a train.
pub(crate) fn key(addr: SocketAddr) -> u64 {
    match addr {
        SocketAddr::V4(a) => (u64::from(a.ip().to_bits()) << 16) | u64::from(a.port()),
        SocketAddr::V6(a) => {
            let ip = a.ip().to_bits();
            ((ip as u64) ^ ((ip >> 64) as u64)).rotate_left(16) ^ u64::from(a.port())
        }
    }
}

/// How many queued datagrams, from queue position `at`, make one train: the same destination,
/// each as long as the first, the last perhaps shorter, within the kernel's limits.
pub(crate) fn train_len(tx: &Tx, at: usize) -> usize {
    let slots = tx.queued_slots();
    let (first, dst) = tx.datagram(slots[at]);
    let segment = first.len();
    let mut total = segment;
    let mut n = 1;
    while n < MAX_SEGMENTS && at + n < slots.len() {
        let (data, to) = tx.datagram(slots[at + n]);
        if to != dst || data.len() > segment || total + data.len() > MAX_TRAIN_BYTES {
            break;
        }
        total += data.len();
        n += 1;
        if data.len() < segment {
            break;
        }
    }
    n
}

/// `sendmmsg` headers whose entries each carry a train: its datagrams' buffers as iovecs and,
/// for two or more, a `UDP_SEGMENT` control message; raw pointers into boxed arrays that never
/// move.
pub(crate) struct Trains {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_in6]>,
    controls: Box<[Control]>,
    /// Datagrams in each entry of the call being made.
    counts: [usize; BATCH],
    /// (destination key, queue position, slot) of each queued datagram, for the grouping.
    scratch: Vec<(u64, u32, u32)>,
    /// Whether trains are sent: the socket takes them and none was refused.
    enabled: bool,
    /// Datagrams sent one by one while trains are off.
    plain: Messages,
}

/// Room for a train's `UDP_SEGMENT` control message, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct Control([u8; CONTROL_ROOM]);

impl Control {
    pub(crate) const ZERO: Control = Control([0; CONTROL_ROOM]);
}

/// Points `h` at the train of `n` queued datagrams from queue position `at` (see
/// [`train_len`]): their buffers as `iovs`, the destination written into `name`, and for two
/// or more a `UDP_SEGMENT` message of the first one's size in `control`. The kernel reads all
/// of them, so they must stay put until the send is done.
pub(crate) fn point(
    h: &mut libc::msghdr,
    tx: &Tx,
    at: usize,
    n: usize,
    iovs: &mut [libc::iovec],
    name: &mut libc::sockaddr_in6,
    control: &mut Control,
) {
    let slots = &tx.queued_slots()[at..at + n];
    let (first, to) = tx.datagram(slots[0]);
    let segment = first.len();
    for (iov, &slot) in iovs.iter_mut().zip(slots) {
        let (data, _) = tx.datagram(slot);
        // The kernel only reads the buffers; the iovec type asks for a mutable pointer.
        *iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
    }
    let name_len = addr::write(to, name);
    h.msg_name = (name as *mut libc::sockaddr_in6).cast();
    h.msg_namelen = name_len;
    h.msg_iov = iovs.as_mut_ptr();
    h.msg_iovlen = n;
    h.msg_flags = 0;
    if n > 1 {
        h.msg_control = control.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
        // SAFETY: the header points at `control`, which has room for one control message of
        // two bytes (CONTROL_ROOM >= CMSG_SPACE(2)), aligned for cmsghdr.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(h);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment as u16);
        }
    } else {
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
    }
}

impl Trains {
    /// Headers that send trains when `enabled` (the caller has probed [`supported`]; a train
    /// the kernel refuses anyway turns them off).
    pub(crate) fn new(enabled: bool) -> Trains {
        // SAFETY: mmsghdr is plain data for which all-zero bytes are valid.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Trains {
            hdrs: vec![zero_hdr; BATCH].into_boxed_slice(),
            iovs: vec![zero_iov; BATCH * MAX_SEGMENTS].into_boxed_slice(),
            names: vec![addr::zeroed(); BATCH].into_boxed_slice(),
            controls: vec![Control::ZERO; BATCH].into_boxed_slice(),
            counts: [0; BATCH],
            scratch: Vec::with_capacity(super::TX_BUFFERS),
            enabled,
            plain: Messages::new(),
        }
    }

    /// Points the headers at the trains from the head of the queue, at most [`BATCH`] of
    /// them; returns how many.
    fn fill(&mut self, tx: &Tx) -> usize {
        let queued = tx.queued();
        let mut at = 0;
        let mut m = 0;
        while m < BATCH && at < queued {
            let n = train_len(tx, at);
            point(
                &mut self.hdrs[m].msg_hdr,
                tx,
                at,
                n,
                &mut self.iovs[m * MAX_SEGMENTS..(m + 1) * MAX_SEGMENTS],
                &mut self.names[m],
                &mut self.controls[m],
            );
            self.hdrs[m].msg_len = 0;
            self.counts[m] = n;
            at += n;
            m += 1;
        }
        m
    }
}

/// Sends what is queued, in trains while they are on; false if the socket would block with
/// datagrams left.
pub(crate) fn flush(
    fd: i32,
    tx: &mut Tx,
    trains: &mut Trains,
    counters: &mut Counters,
) -> io::Result<bool> {
    if !trains.enabled {
        return mmsg::flush(fd, tx, &mut trains.plain);
    }
    if tx.queued() > 1 {
        tx.group_by(&mut trains.scratch, key);
    }
    while tx.queued() > 0 {
        let m = trains.fill(tx);
        // SAFETY: every header points at live datagrams in `tx` and names and control
        // messages in `trains`.
        let sent =
            unsafe { libc::sendmmsg(fd, trains.hdrs.as_mut_ptr(), m as u32, libc::MSG_DONTWAIT) };
        if sent < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(false),
                io::ErrorKind::Interrupted => continue,
                // The kernel refuses trains here: datagram by datagram from now on.
                _ if trains.counts[0] > 1 => {
                    tracing::warn!("UDP GSO refused ({e}); sending datagram by datagram");
                    trains.enabled = false;
                    counters.gso_fallbacks += 1;
                    return mmsg::flush(fd, tx, &mut trains.plain);
                }
                // A datagram the kernel refuses (unreachable destination, EPERM from a
                // firewall) must not wedge the queue: drop it and go on.
                _ => {
                    mmsg::release_first(tx, 1);
                    continue;
                }
            }
        }
        let mut datagrams = 0;
        for &n in &trains.counts[..sent as usize] {
            if n > 1 {
                counters.gso_trains += 1;
                counters.gso_segments += n as u64;
            }
            datagrams += n;
        }
        mmsg::release_first(tx, datagrams);
    }
    Ok(true)
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn queue(tx: &mut Tx, datagrams: &[(SocketAddr, usize, u8)]) {
        for &(dst, len, byte) in datagrams {
            assert!(tx.push(dst, |b| {
                b[..len].fill(byte);
                Some(len)
            }));
        }
    }

    /// The queue as (destination port, length, first byte), in order.
    fn order(tx: &Tx) -> Vec<(u16, usize, u8)> {
        tx.queued_slots()
            .iter()
            .map(|&s| {
                let (data, dst) = tx.datagram(s);
                (dst.port(), data.len(), data[0])
            })
            .collect()
    }

    /// A loopback socket that takes trains, or `None` (said) on a kernel without UDP GSO.
    fn gso_socket() -> Option<UdpSocket> {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let taken = supported(socket.as_raw_fd());
        if !taken {
            eprintln!("no UDP GSO on this kernel: nothing to check");
        }
        taken.then_some(socket)
    }

    fn receiver() -> UdpSocket {
        let r = UdpSocket::bind("127.0.0.1:0").unwrap();
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        r
    }

    #[test]
    fn grouping_keeps_each_destinations_order() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let c: SocketAddr = "[::1]:1000".parse().unwrap();
        let mut tx = Tx::new(16);
        // A frame's three packets fanned out to three consumers, packet by packet.
        for (packet, len) in [(1, 1200), (2, 1200), (3, 700)] {
            for dst in [b, a, c] {
                queue(&mut tx, &[(dst, len, packet)]);
            }
        }
        let mut scratch = Vec::new();
        tx.group_by(&mut scratch, key);
        let got = order(&tx);
        for port in [1000, 2000] {
            let run: Vec<_> = got.iter().filter(|d| d.0 == port).collect();
            let firsts: Vec<u8> = run.iter().map(|d| d.2).collect();
            assert_eq!(firsts.len() % 3, 0);
            assert!(firsts.chunks(3).all(|c| c == [1, 2, 3]), "{got:?}");
        }
        // Each destination's datagrams are next to each other.
        let mut seen = Vec::new();
        for i in 0..tx.queued() {
            let dst = tx.datagram(tx.queued_slots()[i]).1;
            if seen.last() != Some(&dst) {
                assert!(!seen.contains(&dst), "{got:?}");
                seen.push(dst);
            }
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(train_len(&tx, 0), 3);
    }

    #[test]
    fn trains_are_equal_sized_with_a_shorter_last() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let mut tx = Tx::new(256);
        queue(
            &mut tx,
            &[
                (a, 1000, 0),
                (a, 1000, 0),
                (a, 900, 0),
                // A shorter one ended the train: this starts the next.
                (a, 1000, 0),
                // Longer than the segment: a train of its own.
                (a, 1100, 0),
                (b, 1100, 0),
                (a, 50, 0),
            ],
        );
        let mut lens = Vec::new();
        let mut at = 0;
        while at < tx.queued() {
            let n = train_len(&tx, at);
            lens.push(n);
            at += n;
        }
        assert_eq!(lens, [3, 1, 1, 1, 1]);

        // At most MAX_SEGMENTS datagrams, and at most MAX_TRAIN_BYTES.
        let mut tx = Tx::new(256);
        for _ in 0..100 {
            queue(&mut tx, &[(a, 100, 0)]);
        }
        assert_eq!(train_len(&tx, 0), MAX_SEGMENTS);
        let mut tx = Tx::new(256);
        for _ in 0..60 {
            queue(&mut tx, &[(a, 1400, 0)]);
        }
        assert_eq!(train_len(&tx, 0), MAX_TRAIN_BYTES / 1400);
    }

    /// Over loopback, trains arrive as the datagrams they were made of, each destination's in
    /// order; one train per destination here, counted.
    #[test]
    fn trains_arrive_as_their_datagrams() {
        let Some(sender) = gso_socket() else {
            return;
        };
        let fd = sender.as_raw_fd();
        let receivers = [receiver(), receiver()];
        let dsts: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
        let mut tx = Tx::new(64);
        for frame_packet in 0..4u8 {
            for &dst in &dsts {
                let len = if frame_packet == 3 { 300 } else { 1200 };
                queue(&mut tx, &[(dst, len, frame_packet)]);
            }
        }
        let mut trains = Trains::new(true);
        assert!(trains.enabled);
        let mut counters = Counters::default();
        assert!(flush(fd, &mut tx, &mut trains, &mut counters).unwrap());
        assert_eq!(tx.queued(), 0);
        assert_eq!(tx.free(), 64, "every buffer is free again");
        assert_eq!((counters.gso_trains, counters.gso_segments), (2, 8));
        for r in &receivers {
            let mut buf = [0u8; 2048];
            for expected in 0..4u8 {
                let (n, _) = r.recv_from(&mut buf).unwrap();
                assert_eq!(buf[0], expected);
                assert_eq!(n, if expected == 3 { 300 } else { 1200 });
                assert!(buf[..n].iter().all(|&x| x == expected));
            }
        }
    }

    /// A socket whose trains the kernel refuses (one without UDP checksums: EINVAL, as a
    /// device without checksum offload gives EIO) turns trains off, counted, and its queue
    /// still goes out, datagram by datagram.
    #[test]
    fn a_refused_train_falls_back_to_single_datagrams() {
        let Some(sender) = gso_socket() else {
            return;
        };
        let fd = sender.as_raw_fd();
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one`, a live c_int.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        let receiver = receiver();
        let dst = receiver.local_addr().unwrap();
        let mut tx = Tx::new(8);
        queue(&mut tx, &[(dst, 800, 1), (dst, 800, 2), (dst, 100, 3)]);
        let mut trains = Trains::new(true);
        let mut counters = Counters::default();
        assert!(flush(fd, &mut tx, &mut trains, &mut counters).unwrap());
        assert!(!trains.enabled);
        assert_eq!((counters.gso_fallbacks, counters.gso_trains), (1, 0));
        assert_eq!(tx.free(), 8);
        let mut buf = [0u8; 2048];
        for (len, first) in [(800, 1), (800, 2), (100, 3)] {
            let (n, _) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!((n, buf[0]), (len, first));
        }
    }

    /// With trains off, the queue goes out datagram by datagram, uncounted.
    #[test]
    fn without_trains_datagrams_go_one_by_one() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = sender.as_raw_fd();
        let receiver = receiver();
        let dst = receiver.local_addr().unwrap();
        let mut tx = Tx::new(8);
        queue(&mut tx, &[(dst, 500, 1), (dst, 500, 2)]);
        let mut trains = Trains::new(false);
        let mut counters = Counters::default();
        assert!(flush(fd, &mut tx, &mut trains, &mut counters).unwrap());
        assert_eq!(counters.gso_trains, 0);
        let mut buf = [0u8; 2048];
        for expected in [1, 2] {
            let (n, _) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!((n, buf[0]), (500, expected));
        }
    }
}
