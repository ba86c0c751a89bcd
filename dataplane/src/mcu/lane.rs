//! How packets cross between the I/O workers and the MCU threads.
//!
//! A mixer's streams are transports of the channel's router like any other (`Link::Mixer`),
//! so the router forwards to a mixer input and from a mixer output with all it already does
//! (keyframe gating, simulcast layers, NACK history, reports). What differs is the far end:
//! a stream's "address" is a made-up one, in the IPv6 discard prefix `100::/64` (RFC 6666),
//! that says which MCU thread and which stream it is. The worker takes every queued datagram
//! to such an address out of its send buffers (as it does for the TURN hand-off) and copies
//! it into that MCU thread's lane; should one ever reach the kernel, the discard prefix
//! drops it.
//!
//! Lanes are bounded channels of inline packets (preallocated slots, no allocation per
//! packet); a full lane drops the packet, as a full socket buffer would, and counts it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::io::MAX_DATAGRAM;
use crate::spec::TransportId;

/// Packets a lane holds: at 50 audio packets a second per participant plus video, a few
/// hundred milliseconds of a busy mixer.
pub const LANE_CAPACITY: usize = 2048;

/// The first 64 bits of every stream address: RFC 6666's discard-only prefix.
const PREFIX: [u16; 4] = [0x0100, 0, 0, 0];

/// The address of stream `transport` of a mixer on MCU thread `mcu`.
pub fn address(mcu: usize, transport: TransportId) -> SocketAddr {
    let id = transport.0;
    let segments = [
        PREFIX[0],
        PREFIX[1],
        PREFIX[2],
        PREFIX[3],
        (id >> 48) as u16,
        (id >> 32) as u16,
        (id >> 16) as u16,
        id as u16,
    ];
    // Port 0 is never a stream's, so a zeroed address cannot pass for one.
    let port = u16::try_from(mcu + 1).unwrap_or(u16::MAX);
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(segments)), port)
}

/// The MCU thread and stream an address names, if it is a stream address.
pub fn parse(addr: &SocketAddr) -> Option<(usize, TransportId)> {
    let SocketAddr::V6(v6) = addr else {
        return None;
    };
    let s = v6.ip().segments();
    if s[..4] != PREFIX || v6.port() == 0 {
        return None;
    }
    let id = s[4..]
        .iter()
        .fold(0u64, |id, &part| (id << 16) | u64::from(part));
    Some((usize::from(v6.port()) - 1, TransportId(id)))
}

/// One packet between a worker and a mixer, inline.
pub struct Packet {
    /// The mixer stream it belongs to.
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
        for (mcu, id) in [(0, 1), (3, u64::MAX), (15, 0x0102_0304_0506_0708)] {
            let a = address(mcu, TransportId(id));
            assert_eq!(parse(&a), Some((mcu, TransportId(id))));
        }
        assert_eq!(parse(&"127.0.0.1:5000".parse().unwrap()), None);
        assert_eq!(parse(&"[100::1]:0".parse().unwrap()), None);
        assert_eq!(parse(&"[2001:db8::1]:9".parse().unwrap()), None);
    }

    #[test]
    fn packets_hold_at_most_a_datagram() {
        assert!(Packet::new(TransportId(1), &[0; MAX_DATAGRAM + 1]).is_none());
        let p = Packet::new(TransportId(2), &[1, 2, 3]);
        assert_eq!(p.as_ref().map(Packet::data), Some(&[1u8, 2, 3][..]));
    }
}
