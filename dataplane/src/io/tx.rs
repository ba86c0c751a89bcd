//! Outgoing datagrams: a fixed pool of buffers the engine writes into directly.

use std::net::SocketAddr;

use super::MAX_DATAGRAM;

/// Outgoing datagrams of one loop iteration, in preallocated buffers.
///
/// The engine writes each datagram straight into a free buffer, so the only copy of a
/// forwarded packet is the one into its consumer's buffer, where it is encrypted in place. A
/// buffer is queued until the backend hands it to the kernel and free again once the kernel is
/// done with it (at once for sendmmsg, at the completion for io_uring).
pub struct Tx {
    data: Box<[u8]>,
    lens: Box<[u16]>,
    dsts: Box<[SocketAddr]>,
    free: Vec<u32>,
    queued: Vec<u32>,
}

impl Tx {
    /// A pool of `capacity` buffers of `MAX_DATAGRAM` bytes.
    pub fn new(capacity: usize) -> Tx {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Tx {
            data: vec![0; capacity * MAX_DATAGRAM].into_boxed_slice(),
            lens: vec![0; capacity].into_boxed_slice(),
            dsts: vec![unspecified; capacity].into_boxed_slice(),
            free: (0..capacity as u32).rev().collect(),
            queued: Vec::with_capacity(capacity),
        }
    }

    /// Queues a datagram to `dst`: `write` fills the buffer and returns the length, or `None`
    /// to abandon it. Returns false (and the caller counts a drop) when every buffer is queued or
    /// in flight, or `write` returned `None`.
    pub fn push(
        &mut self,
        dst: SocketAddr,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        match self.hold(dst, write) {
            Some((slot, _)) => {
                self.queued.push(slot);
                true
            }
            None => false,
        }
    }

    /// Writes a datagram to `dst` like [`Tx::push`] but keeps it out of the queue (a pacer
    /// holds it): its slot and length, or `None` when no buffer is free or `write` gave up.
    /// It goes with [`Tx::queue_held`] or back to the pool with [`Tx::release`].
    pub fn hold(
        &mut self,
        dst: SocketAddr,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<(u32, usize)> {
        let slot = self.free.pop()?;
        let i = slot as usize;
        let buf = &mut self.data[i * MAX_DATAGRAM..(i + 1) * MAX_DATAGRAM];
        match write(buf) {
            Some(len) if len > 0 && len <= MAX_DATAGRAM => {
                self.lens[i] = len as u16;
                self.dsts[i] = dst;
                Some((slot, len))
            }
            _ => {
                self.free.push(slot);
                None
            }
        }
    }

    /// Queues a datagram written by [`Tx::hold`]; returns its length.
    pub fn queue_held(&mut self, slot: u32) -> usize {
        self.queued.push(slot);
        self.lens.get(slot as usize).map_or(0, |&l| usize::from(l))
    }

    /// Buffers neither queued, in flight nor held.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Number of datagrams waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Hands every queued datagram to `send` and frees its buffer: how an in-memory driver
    /// (the engine's simulation tests, a load generator's model) plays the kernel.
    pub fn drain_to(&mut self, mut send: impl FnMut(SocketAddr, &[u8])) {
        for i in 0..self.queued.len() {
            let slot = self.queued[i];
            let (data, dst) = self.datagram(slot);
            send(dst, data);
            self.free.push(slot);
        }
        self.queued.clear();
    }

    /// Takes out the queued datagrams `take` accepts (it is shown each one's bytes and
    /// destination and returns true when it took them), freeing their buffers; the others keep
    /// their order.
    pub(crate) fn take_if(&mut self, mut take: impl FnMut(&[u8], SocketAddr) -> bool) {
        let mut kept = 0;
        for i in 0..self.queued.len() {
            let slot = self.queued[i];
            let (data, dst) = self.datagram(slot);
            if take(data, dst) {
                self.free.push(slot);
            } else {
                self.queued[kept] = slot;
                kept += 1;
            }
        }
        self.queued.truncate(kept);
    }

    /// Orders the queue so that each destination's datagrams are together, each keeping its
    /// order: a stable grouping by `key` (equal for equal addresses), through `scratch`, which
    /// is reused (nothing is allocated once it has held a full queue).
    pub(super) fn group_by(
        &mut self,
        scratch: &mut Vec<(u64, u32, u32)>,
        key: impl Fn(SocketAddr) -> u64,
    ) {
        scratch.clear();
        scratch.extend(
            self.queued
                .iter()
                .enumerate()
                .map(|(i, &slot)| (key(self.dsts[slot as usize]), i as u32, slot)),
        );
        // The position breaks ties: stable without the allocation of a stable sort.
        scratch.sort_unstable();
        for (queued, &(_, _, slot)) in self.queued.iter_mut().zip(scratch.iter()) {
            *queued = slot;
        }
    }

    /// The queued slots, oldest first.
    pub(super) fn queued_slots(&self) -> &[u32] {
        &self.queued
    }

    /// Removes the first `n` queued slots (handed to the kernel).
    pub(super) fn dequeue(&mut self, n: usize) {
        self.queued.drain(..n.min(self.queued.len()));
    }

    /// The datagram in `slot` and its destination.
    pub(super) fn datagram(&self, slot: u32) -> (&[u8], SocketAddr) {
        let i = slot as usize;
        let len = usize::from(self.lens[i]);
        (
            &self.data[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len],
            self.dsts[i],
        )
    }

    /// Returns a sent (or held and abandoned) buffer to the pool.
    pub(crate) fn release(&mut self, slot: u32) {
        self.free.push(slot);
    }

    pub(crate) fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Where all the buffers lie, to register them with io_uring once. They never move: the
    /// pool is one allocation made in `new`.
    pub(super) fn region(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.data.as_ptr().cast_mut().cast(),
            iov_len: self.data.len(),
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_and_release() {
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut tx = Tx::new(2);
        assert!(tx.push(dst, |b| {
            b[..3].copy_from_slice(b"abc");
            Some(3)
        }));
        assert!(!tx.push(dst, |_| None));
        assert!(tx.push(dst, |_| Some(1)));
        assert!(!tx.push(dst, |_| Some(1)), "pool is empty");
        assert_eq!(tx.queued(), 2);
        let first = tx.queued_slots()[0];
        assert_eq!(tx.datagram(first), (&b"abc"[..], dst));
        tx.dequeue(1);
        tx.release(first);
        assert!(tx.push(dst, |_| Some(MAX_DATAGRAM)));
        assert!(!tx.push(dst, |_| Some(MAX_DATAGRAM + 1)));
    }

    #[test]
    fn held_buffers_wait_outside_the_queue() {
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut tx = Tx::new(3);
        let (held, len) = tx
            .hold(dst, |b| {
                b[0] = 7;
                Some(1)
            })
            .unwrap();
        assert_eq!((len, tx.queued(), tx.free()), (1, 0, 2));
        assert!(tx.push(dst, |_| Some(2)));
        assert_eq!(tx.queue_held(held), 1);
        assert_eq!(tx.datagram(tx.queued_slots()[1]), (&[7u8][..], dst));
        let (abandoned, _) = tx.hold(dst, |_| Some(1)).unwrap();
        assert_eq!(tx.free(), 0);
        tx.release(abandoned);
        assert_eq!(tx.free(), 1);
    }

    #[test]
    fn take_if_keeps_the_rest_in_order() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let mut tx = Tx::new(4);
        for (dst, byte) in [(a, 1u8), (b, 2), (a, 3), (b, 4)] {
            assert!(tx.push(dst, |buf| {
                buf[0] = byte;
                Some(1)
            }));
        }
        let mut taken = Vec::new();
        tx.take_if(|data, dst| {
            let take = dst == b;
            if take {
                taken.push(data[0]);
            }
            take
        });
        assert_eq!(taken, [2, 4]);
        let mut left = Vec::new();
        tx.drain_to(|_, data| left.push(data[0]));
        assert_eq!(left, [1, 3]);
        // Every buffer is free again.
        for _ in 0..4 {
            assert!(tx.push(a, |_| Some(1)));
        }
    }
}
