//! Binding the cluster port: 8445 by default, and when it is taken the next free one (8446,
//! 8447, ...), so that several media servers can share a host without per-process settings.
//! The port actually bound is what the server registers.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpListener;

/// How many ports past the first are tried.
pub const FALLBACK_PORTS: u16 = 100;

/// Binds `ip:first`, or the first free port after it; any error but "address in use" stops the
/// search at once (a bad address will not get better on the next port).
pub async fn bind_with_fallback(ip: IpAddr, first: u16) -> io::Result<TcpListener> {
    let last = first.saturating_add(FALLBACK_PORTS);
    for port in first..=last {
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(listener) => {
                if port != first {
                    tracing::info!(
                        "cluster port {first} is taken; using {port} (the next free port)"
                    );
                }
                return Ok(listener);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("every TCP port from {first} to {last} on {ip} is taken"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn takes_the_next_port_when_the_first_is_taken() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let taken = TcpListener::bind((ip, 0)).await.unwrap();
        let first = taken.local_addr().unwrap().port();
        match bind_with_fallback(ip, first).await {
            Ok(l) => assert_ne!(l.local_addr().unwrap().port(), first),
            // The next ports may belong to someone else on a busy host; then all were taken.
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrInUse),
        }
    }

    #[tokio::test]
    async fn a_bad_address_is_an_error_at_once() {
        let err = bind_with_fallback("192.0.2.1".parse().unwrap(), 8445)
            .await
            .unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
