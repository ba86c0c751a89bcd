//! The io_uring backend's GSO trains in flight: their headers, which the kernel reads until
//! the send completes, and how each went out.
//!
//! A train goes as a plain `SendMsg` (the kernel copies the payload into its buffers) or, at
//! or above a size asked for, as `SendMsgZc`: the kernel sends from our buffers and posts a
//! second completion, the notification, once it no longer needs them; only then are the
//! buffers free. With the send buffers registered (Linux 6.15 takes them for `SENDMSG_ZC`),
//! the kernel skips pinning their pages on every send.
//!
//! A refused train steps down one rung and goes again: zero-copy from registered buffers, to
//! zero-copy, to copied trains, to datagram by datagram. Each step is logged once and counted,
//! so an older kernel or a device without the offload costs one retried train, not a wedge.

use std::io;

use io_uring::cqueue;
use io_uring::types::Fixed;
use io_uring::{opcode, squeue};

use super::super::gso::{self, MAX_SEGMENTS};
use super::super::{Tx, addr};
use crate::stats::Counters;

/// Trains in flight at once; past it, datagrams go one by one until blocks come back.
const TRAIN_BLOCKS: usize = 512;
/// The most datagrams a zero-copy train starts with. Each datagram's buffer is a page
/// fragment of the kernel's one packet, and a packet holds at most `MAX_SKB_FRAGS` (17 by
/// default); the kernel refuses more with EMSGSIZE, which lowers the limit to what it took
/// (Linux 6.18 here: 11 of 1200 bytes, docs/benchmarks.md). Longer trains go copied.
const ZERO_COPY_SEGMENTS: usize = 16;
/// `SendMsgZc` flags (the entry's `ioprio` field): the buffers are the registered ones, and
/// the notification says whether the kernel copied the payload after all (loopback does).
/// The io-uring crate keeps its bindings private; these are the kernel's UAPI values
/// (`IORING_RECVSEND_FIXED_BUF`, `IORING_SEND_ZC_REPORT_USAGE`).
const ZC_FIXED_BUF: u16 = 1 << 2;
const ZC_REPORT_USAGE: u16 = 1 << 3;
/// In a notification's result: the kernel copied after all (`IORING_NOTIF_USAGE_ZC_COPIED`).
const ZC_COPIED: u32 = 1 << 31;

/// How a train goes out, from the cheapest for the CPU down; a refusal steps down one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Way {
    /// Datagram by datagram: no trains.
    Single,
    /// `SendMsg` with `UDP_SEGMENT`: the kernel copies the payload.
    Copied,
    /// `SendMsgZc`: the kernel pins our pages and sends from them.
    ZeroCopy,
    /// `SendMsgZc` from the registered send buffers.
    ZeroCopyFixed,
}

/// A train in flight: its header and what it points at, which the kernel reads until the
/// send is done, and the send buffers to free then.
struct TrainBlock {
    hdr: libc::msghdr,
    name: libc::sockaddr_in6,
    control: gso::Control,
    iovs: [libc::iovec; MAX_SEGMENTS],
    slots: [u32; MAX_SEGMENTS],
    count: usize,
    way: Way,
    /// A zero-copy send's result, kept until its notification.
    result: i32,
}

/// Train blocks (boxed: they never move while the kernel reads them) and how trains go.
pub(super) struct TrainBlocks {
    blocks: Box<[TrainBlock]>,
    free: Vec<u16>,
    /// The best way trains may still go: what was asked for, less what was refused.
    best: Way,
    /// Trains of at least this many bytes go zero-copy, while `best` allows...
    zero_copy_from: usize,
    /// ...and they have at most this many datagrams.
    zero_copy_segments: usize,
    /// The grouping's scratch (see `Tx::group_by`).
    pub(super) scratch: Vec<(u64, u32, u32)>,
}

impl TrainBlocks {
    /// Blocks for trains that go at best `best`, zero-copy from `zero_copy_from` bytes.
    pub(super) fn new(best: Way, zero_copy_from: usize) -> TrainBlocks {
        let block = || TrainBlock {
            // SAFETY: msghdr is plain data for which all-zero bytes are valid.
            hdr: unsafe { std::mem::zeroed() },
            name: addr::zeroed(),
            control: gso::Control::ZERO,
            iovs: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_SEGMENTS],
            slots: [0; MAX_SEGMENTS],
            count: 0,
            way: Way::Copied,
            result: 0,
        };
        TrainBlocks {
            blocks: (0..TRAIN_BLOCKS).map(|_| block()).collect(),
            free: (0..TRAIN_BLOCKS as u16).rev().collect(),
            best,
            zero_copy_from,
            zero_copy_segments: ZERO_COPY_SEGMENTS,
            scratch: Vec::with_capacity(super::super::TX_BUFFERS),
        }
    }

    /// Whether queued datagrams are cut into trains at all.
    pub(super) fn enabled(&self) -> bool {
        self.best > Way::Single
    }

    /// Points a free block at the train of `len` queued datagrams from position `at` and
    /// returns its send entry (`user_data` is the caller's), or `None` when every block is in
    /// flight.
    pub(super) fn send(
        &mut self,
        socket: Fixed,
        tx: &Tx,
        at: usize,
        len: usize,
    ) -> Option<(u16, squeue::Entry)> {
        let b = self.free.pop()?;
        let block = &mut self.blocks[usize::from(b)];
        gso::point(
            &mut block.hdr,
            tx,
            at,
            len,
            &mut block.iovs,
            &mut block.name,
            &mut block.control,
        );
        block.slots[..len].copy_from_slice(&tx.queued_slots()[at..at + len]);
        block.count = len;
        // The train's bytes are summed only where zero-copy is on.
        let zero_copy = self.best >= Way::ZeroCopy
            && len <= self.zero_copy_segments
            && block.iovs[..len].iter().map(|v| v.iov_len).sum::<usize>() >= self.zero_copy_from;
        block.way = if zero_copy { self.best } else { Way::Copied };
        let entry = match block.way {
            Way::ZeroCopyFixed => opcode::SendMsgZc::new(socket, &block.hdr)
                .ioprio(ZC_FIXED_BUF | ZC_REPORT_USAGE)
                .build(),
            Way::ZeroCopy => opcode::SendMsgZc::new(socket, &block.hdr)
                .ioprio(ZC_REPORT_USAGE)
                .build(),
            Way::Copied | Way::Single => opcode::SendMsg::new(socket, &block.hdr).build(),
        };
        Some((b, entry))
    }

    /// A completion for block `block`. Returns whether the train is done with (its buffers
    /// freed or queued again); a zero-copy send is done at its notification, which follows the
    /// send's own completion when that says more is to come.
    pub(super) fn completed(
        &mut self,
        block: u16,
        result: i32,
        flags: u32,
        tx: &mut Tx,
        counters: &mut Counters,
    ) -> bool {
        let Some(b) = self.blocks.get_mut(usize::from(block)) else {
            return false;
        };
        let (result, copied) = if cqueue::notif(flags) {
            let copied = result as u32 & ZC_COPIED != 0;
            (b.result, copied)
        } else if cqueue::more(flags) {
            b.result = result;
            return false;
        } else {
            (result, false)
        };
        let (way, slots) = (b.way, &b.slots[..b.count]);
        if result == -libc::EMSGSIZE && way >= Way::ZeroCopy {
            // Too many fragments for one packet: zero-copy trains get shorter, the way stays.
            if slots.len() <= self.zero_copy_segments {
                self.zero_copy_segments = slots.len().saturating_sub(1);
                tracing::debug!(
                    "zero-copy trains of {} datagrams refused; at most {} from now on",
                    slots.len(),
                    self.zero_copy_segments
                );
            }
            for &slot in slots {
                tx.queue_held(slot);
            }
        } else if result < 0 {
            // The ways trains may go only ever narrow: a refusal of a way already given up on
            // (another train of it was still in flight) changes nothing more.
            if way <= self.best {
                let below = match way {
                    Way::ZeroCopyFixed => Way::ZeroCopy,
                    Way::ZeroCopy => Way::Copied,
                    Way::Copied | Way::Single => Way::Single,
                };
                tracing::warn!(
                    "{way:?} UDP train refused ({}); sending {below:?} from now on",
                    io::Error::from_raw_os_error(-result)
                );
                self.best = below;
                if way >= Way::ZeroCopy {
                    counters.zero_copy_fallbacks += 1;
                } else {
                    counters.gso_fallbacks += 1;
                }
            }
            for &slot in slots {
                tx.queue_held(slot);
            }
        } else {
            counters.gso_trains += 1;
            counters.gso_segments += slots.len() as u64;
            if way >= Way::ZeroCopy {
                counters.zero_copy_trains += 1;
                counters.zero_copy_copied += u64::from(copied);
            }
            for &slot in slots {
                tx.release(slot);
            }
        }
        self.free.push(block);
        true
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// `IORING_CQE_F_MORE` and `IORING_CQE_F_NOTIF`.
    const MORE: u32 = 1 << 1;
    const NOTIF: u32 = 1 << 3;
    const COPIED: i32 = ZC_COPIED as i32;

    /// Sends the first `n` queued datagrams as one train, queuing datagrams of `size` bytes to
    /// one destination first where fewer are queued: the block and the way it went.
    fn train(trains: &mut TrainBlocks, tx: &mut Tx, n: usize, size: usize) -> (u16, Way) {
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        while tx.queued() < n {
            assert!(tx.push(dst, |_| Some(size)));
        }
        let (block, _) = trains.send(Fixed(0), tx, 0, n).unwrap();
        tx.dequeue(n);
        (block, trains.blocks[usize::from(block)].way)
    }

    #[test]
    fn trains_at_or_over_the_size_go_zero_copy_and_are_freed_at_the_notification() {
        let mut tx = Tx::new(8);
        let mut c = Counters::default();
        let mut trains = TrainBlocks::new(Way::ZeroCopyFixed, 2400);
        let (small, way) = train(&mut trains, &mut tx, 2, 1000);
        assert_eq!(way, Way::Copied);
        let (big, way) = train(&mut trains, &mut tx, 2, 1200);
        assert_eq!(way, Way::ZeroCopyFixed);
        assert_eq!(tx.free(), 4);
        assert!(trains.completed(small, 2000, 0, &mut tx, &mut c));
        assert_eq!(tx.free(), 6);
        // The send's own completion says a notification follows: the buffers wait for it.
        assert!(!trains.completed(big, 2400, MORE, &mut tx, &mut c));
        assert_eq!(tx.free(), 6);
        assert!(trains.completed(big, COPIED, NOTIF, &mut tx, &mut c));
        assert_eq!(tx.free(), 8);
        assert_eq!(
            (
                c.gso_trains,
                c.gso_segments,
                c.zero_copy_trains,
                c.zero_copy_copied
            ),
            (2, 4, 1, 1)
        );
    }

    #[test]
    fn a_zero_copy_train_with_too_many_fragments_makes_them_shorter_not_copied() {
        let mut tx = Tx::new(64);
        let mut c = Counters::default();
        let mut trains = TrainBlocks::new(Way::ZeroCopyFixed, 0);
        let (long, way) = train(&mut trains, &mut tx, ZERO_COPY_SEGMENTS + 1, 100);
        assert_eq!(way, Way::Copied, "past the limit trains go copied");
        assert!(trains.completed(long, 1700, 0, &mut tx, &mut c));
        let (twelve, way) = train(&mut trains, &mut tx, 12, 100);
        assert_eq!(way, Way::ZeroCopyFixed);
        assert!(trains.completed(twelve, -libc::EMSGSIZE, 0, &mut tx, &mut c));
        assert_eq!(
            (trains.best, trains.zero_copy_segments, tx.queued()),
            (Way::ZeroCopyFixed, 11, 12)
        );
        let (again, way) = train(&mut trains, &mut tx, 12, 100);
        assert_eq!(way, Way::Copied);
        assert!(trains.completed(again, 1200, 0, &mut tx, &mut c));
        let (eleven, way) = train(&mut trains, &mut tx, 11, 100);
        assert_eq!(way, Way::ZeroCopyFixed);
        assert!(!trains.completed(eleven, 1100, MORE, &mut tx, &mut c));
        assert!(trains.completed(eleven, 0, NOTIF, &mut tx, &mut c));
        assert_eq!(
            (c.zero_copy_fallbacks, c.gso_fallbacks, c.zero_copy_trains),
            (0, 0, 1)
        );
        assert_eq!(tx.free(), 64);
    }

    #[test]
    fn a_refused_train_steps_down_one_way_and_goes_again() {
        let mut tx = Tx::new(8);
        let mut c = Counters::default();
        let mut trains = TrainBlocks::new(Way::ZeroCopyFixed, 0);
        // Two trains in flight when the kernel refuses registered buffers (before 6.15).
        let (first, _) = train(&mut trains, &mut tx, 2, 100);
        let (second, _) = train(&mut trains, &mut tx, 2, 100);
        assert!(trains.completed(first, -libc::EINVAL, 0, &mut tx, &mut c));
        assert_eq!((trains.best, tx.queued()), (Way::ZeroCopy, 2));
        // The second refusal of the same way costs nothing more.
        assert!(!trains.completed(second, -libc::EINVAL, MORE, &mut tx, &mut c));
        assert!(trains.completed(second, 0, NOTIF, &mut tx, &mut c));
        assert_eq!(
            (trains.best, tx.queued(), c.zero_copy_fallbacks),
            (Way::ZeroCopy, 4, 1)
        );
        let (third, way) = train(&mut trains, &mut tx, 2, 100);
        assert_eq!(way, Way::ZeroCopy);
        assert!(trains.completed(third, -libc::EOPNOTSUPP, 0, &mut tx, &mut c));
        assert_eq!(trains.best, Way::Copied);
        let (fourth, way) = train(&mut trains, &mut tx, 2, 100);
        assert_eq!(way, Way::Copied);
        assert!(trains.completed(fourth, -libc::EIO, 0, &mut tx, &mut c));
        assert!(!trains.enabled());
        assert_eq!((c.zero_copy_fallbacks, c.gso_fallbacks), (2, 1));
        // Every datagram is still there, queued to go again.
        assert_eq!((tx.queued(), tx.free()), (4, 4));
    }
}
