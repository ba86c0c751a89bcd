//! How packets cross between the threads of the data plane: from an I/O worker to an MCU
//! thread and back (a mixer's streams), and from one worker to another (a channel's shards).
//!
//! Both are transports of a router like any other (`Link::Mixer`, `Link::Shard`), so the
//! router forwards to and from them with all it already does (keyframe gating, simulcast
//! layers, NACK history, reports). What differs is the far end: a stream's "address" is a
//! made-up one, in the IPv6 discard prefix `100::/64` (RFC 6666), that says which thread and
//! which of its transports it is for. The worker takes every queued datagram to such an
//! address out of its send buffers (as it does for the TURN hand-off) and copies it into that
//! thread's lane; should one ever reach the kernel, the discard prefix drops it.
//!
//! Lanes are bounded channels of inline packets (preallocated slots, no allocation per
//! packet); a full lane drops the packet, as a full socket buffer would, and counts it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::io::MAX_DATAGRAM;
use crate::spec::TransportId;

/// Packets a lane holds: at 50 audio packets a second per participant plus video, a few
/// hundred milliseconds of a busy mixer, or of a large channel's publications.
pub const LANE_CAPACITY: usize = 2048;

/// The first 48 bits of every stream address: RFC 6666's discard-only prefix. The fourth
/// segment says which kind of thread the port names.
const PREFIX: [u16; 3] = [0x0100, 0, 0];
const TO_MCU: u16 = 0;
const TO_WORKER: u16 = 1;

/// The thread at the far end of a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Far {
    /// MCU thread `n`.
    Mcu(usize),
    /// I/O worker `n`.
    Worker(usize),
}

/// The address of transport `transport` on thread `far`.
pub fn address(far: Far, transport: TransportId) -> SocketAddr {
    let id = transport.0;
    let (kind, n) = match far {
        Far::Mcu(n) => (TO_MCU, n),
        Far::Worker(n) => (TO_WORKER, n),
    };
    let segments = [
        PREFIX[0],
        PREFIX[1],
        PREFIX[2],
        kind,
        (id >> 48) as u16,
        (id >> 32) as u16,
        (id >> 16) as u16,
        id as u16,
    ];
    // Port 0 is never a stream's, so a zeroed address cannot pass for one.
    let port = u16::try_from(n + 1).unwrap_or(u16::MAX);
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(segments)), port)
}

/// The thread and transport an address names, if it is a stream address.
pub fn parse(addr: &SocketAddr) -> Option<(Far, TransportId)> {
    let SocketAddr::V6(v6) = addr else {
        return None;
    };
    let s = v6.ip().segments();
    if s[..3] != PREFIX || v6.port() == 0 {
        return None;
    }
    let n = usize::from(v6.port()) - 1;
    let far = match s[3] {
        TO_MCU => Far::Mcu(n),
        TO_WORKER => Far::Worker(n),
        _ => return None,
    };
    let id = s[4..]
        .iter()
        .fold(0u64, |id, &part| (id << 16) | u64::from(part));
    Some((far, TransportId(id)))
}

/// One packet on a lane, inline.
pub struct Packet {
    /// The transport it is for (a mixer stream, or a shard link's far end).
    pub transport: TransportId,
    len: u16,
    data: [u8; MAX_DATAGRAM],
}

impl Packet {
    /// `None` when `data` is longer than a datagram.
    pub fn new(transport: TransportId, data: &[u8]) -> Option<Packet> {
        let mut packet = Packet {
            transport,
            len: u16::try_from(data.len()).ok()?,
            data: [0; MAX_DATAGRAM],
        };
        packet.data.get_mut(..data.len())?.copy_from_slice(data);
        Some(packet)
    }

    pub fn data(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

// ok: every unwrap() below is in this test-only module, on addresses the tests wrote
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_nothing_else_parses() {
        for (far, id) in [
            (Far::Mcu(0), 1),
            (Far::Mcu(3), u64::MAX),
            (Far::Worker(0), 7),
            (Far::Worker(15), 0x0102_0304_0506_0708),
        ] {
            let a = address(far, TransportId(id));
            assert_eq!(parse(&a), Some((far, TransportId(id))));
        }
        assert_ne!(
            address(Far::Mcu(1), TransportId(9)),
            address(Far::Worker(1), TransportId(9))
        );
        assert_eq!(parse(&"127.0.0.1:5000".parse().unwrap()), None);
        assert_eq!(parse(&"[100::1]:0".parse().unwrap()), None);
        assert_eq!(parse(&"[2001:db8::1]:9".parse().unwrap()), None);
        assert_eq!(parse(&"[100::2:0:0:0:1]:9".parse().unwrap()), None);
    }

    #[test]
    fn packets_hold_at_most_a_datagram() {
        assert!(Packet::new(TransportId(1), &[0; MAX_DATAGRAM + 1]).is_none());
        let p = Packet::new(TransportId(2), &[1, 2, 3]);
        assert_eq!(p.as_ref().map(Packet::data), Some(&[1u8, 2, 3][..]));
    }
}
