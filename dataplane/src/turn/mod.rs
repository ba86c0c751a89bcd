//! The embedded TURN server (RFC 8656): a sans-IO core ([`Server`]) fed datagrams, stream bytes
//! and time, and the threads that drive it on real sockets ([`service`]).
//!
//! Clients behind firewalls that block UDP, or behind symmetric NATs, reach the media server
//! only through a relay; LiveSwitch embeds one for that reason and so do we. Credentials are
//! the TURN REST scheme (coturn's `use-auth-secret`): no user database, only a shared secret.

pub mod auth;
pub mod client;
mod counters;
pub mod framing;
pub mod policy;
mod server;
pub mod service;
// ok: the unwrap()/expect() calls of turn/tests.rs are test-only, on values the tests built
#[cfg(test)]
mod tests;

pub use counters::{Counter, Counters, Shared};
pub use server::{ClientAddr, Config, Family, Output, RelayId, Server};

/// TURN methods (RFC 8656 section 17); Binding comes from STUN.
pub mod method {
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// TURN attributes (RFC 8656 section 18) and the STUN ones long-term credentials use.
pub mod attr {
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
}

/// Channel numbers clients may bind: RFC 5766's range, which RFC 8656 narrowed to
/// 0x4000-0x4FFF; clients of the older RFC (coturn's tools among them) still pick from all of
/// it, and every number in it is unambiguous ChannelData.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFE;
/// The ChannelData header: channel number and length.
pub const CHANNEL_HEADER: usize = 4;

/// Writes ChannelData for channel `number` into `buf`: padded to four bytes when `pad` (over
/// TCP and TLS, RFC 8656 section 12.5). `None` when it does not fit.
pub fn write_channel_data(buf: &mut [u8], number: u16, data: &[u8], pad: bool) -> Option<usize> {
    let total = CHANNEL_HEADER + data.len();
    let framed = if pad { (total + 3) & !3 } else { total };
    let len = u16::try_from(data.len()).ok()?;
    let frame = buf.get_mut(..framed)?;
    frame[..2].copy_from_slice(&number.to_be_bytes());
    frame[2..4].copy_from_slice(&len.to_be_bytes());
    frame[4..total].copy_from_slice(data);
    frame[total..].fill(0);
    Some(framed)
}

/// Whether a datagram's first byte marks ChannelData (first two bits 01) rather than STUN.
pub fn is_channel_data(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| b & 0xC0 == 0x40)
}
