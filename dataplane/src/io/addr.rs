//! `SocketAddr` to and from the kernel's socket address structures, without allocating.

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Room for either address family.
pub(super) const STORAGE_LEN: usize = size_of::<libc::sockaddr_in6>();

/// Writes `addr` into `storage` (which must be at least `STORAGE_LEN` bytes and suitably
/// aligned, e.g. a `sockaddr_in6`); returns the length to pass to the kernel.
pub(super) fn write(addr: SocketAddr, storage: &mut libc::sockaddr_in6) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in is smaller than sockaddr_in6 and both are plain data; the
            // write goes through a properly aligned pointer to `storage`.
            unsafe {
                std::ptr::write(
                    (storage as *mut libc::sockaddr_in6).cast::<libc::sockaddr_in>(),
                    sin,
                )
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            *storage = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads an address the kernel wrote as raw bytes (a `sockaddr_in` or `sockaddr_in6`).
pub(super) fn read(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(raw.get(..2)?.try_into().ok()?);
    let port = crate::wire::be_u16(raw, 2)?;
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_ne_bytes(raw.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(raw.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// An all-zero `sockaddr_in6`, the storage we hand the kernel.
pub(super) fn zeroed() -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain data for which all-zero bytes are valid.
    unsafe { std::mem::zeroed() }
}

/// The bytes of a storage the kernel filled.
pub(super) fn bytes(storage: &libc::sockaddr_in6, len: usize) -> &[u8] {
    // SAFETY: reads at most size_of::<sockaddr_in6>() bytes of a live, initialised struct.
    let all = unsafe {
        std::slice::from_raw_parts(
            (storage as *const libc::sockaddr_in6).cast::<u8>(),
            STORAGE_LEN,
        )
    };
    &all[..len.min(STORAGE_LEN)]
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for a in ["127.0.0.1:5000", "[::1]:6000", "[fe80::1%3]:7"] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut s = zeroed();
            let len = write(addr, &mut s) as usize;
            assert_eq!(read(bytes(&s, len)), Some(addr));
        }
        assert_eq!(read(&[0; 3]), None);
        assert_eq!(read(&[9, 0, 0, 0]), None);
    }
}
