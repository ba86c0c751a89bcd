//! Finding this host's public address by asking STUN servers (RFC 8489 Binding), as a media
//! server does at start unless `EXTERNAL:PUBLICIPADDRESS` says it. The message is built and read
//! with the data plane's sans-IO STUN codec; this only adds a socket and a deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use switchyard_dataplane::stun::{self, Class, Message, Writer};
use tokio::net::{UdpSocket, lookup_host};

/// How long one server gets to answer (two requests are sent, RFC 8489's first retransmission
/// comes after 500 ms).
const PER_SERVER: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no STUN servers are configured")]
    NoServers,
    /// Each server with what went wrong with it.
    #[error("no STUN server answered: {0}")]
    NoAnswer(String),
}

/// What went wrong asking one server.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("cannot resolve: {0}")]
    Resolve(std::io::Error),
    #[error("resolves to no address")]
    NoAddress,
    #[error("{0}")]
    Socket(std::io::Error),
    #[error("{0}")]
    Request(stun::Error),
    #[error("the answer has no XOR-MAPPED-ADDRESS")]
    NoMappedAddress,
    #[error("error {0} {1}")]
    Refused(u16, String),
    #[error("an error answer")]
    ErrorAnswer,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Asks each of `servers` (`host:port`, or `stun:host:port`, port 3478 when left out) in turn
/// and returns the first mapped address any gives.
pub async fn public_ip(servers: &[String]) -> Result<IpAddr, ProbeError> {
    if servers.is_empty() {
        return Err(ProbeError::NoServers);
    }
    let mut problems = Vec::new();
    for server in servers {
        match probe(server).await {
            Ok(addr) => {
                tracing::info!(server = %server, "public address {} (STUN)", addr.ip());
                return Ok(addr.ip());
            }
            Err(e) => problems.push(format!("{server}: {e}")),
        }
    }
    Err(ProbeError::NoAnswer(problems.join("; ")))
}

/// `stun:host:port` or `host:port` or `host`, as `host:port` (also `switchyard doctor`'s).
pub fn target(server: &str) -> String {
    let s = server.trim();
    let s = s.strip_prefix("stun:").unwrap_or(s);
    let bracketed_v6 = s.starts_with('[') && s.ends_with(']');
    let has_port = !bracketed_v6
        && s.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && !h.ends_with(':') && p.parse::<u16>().is_ok());
    if has_port {
        s.to_string()
    } else {
        format!("{s}:3478")
    }
}

async fn probe(server: &str) -> Result<SocketAddr, Failure> {
    let to = lookup_host(target(server))
        .await
        .map_err(Failure::Resolve)?
        .next()
        .ok_or(Failure::NoAddress)?;
    let bind = if to.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = UdpSocket::bind(bind).await.map_err(Failure::Socket)?;
    let tid: [u8; 12] = rand::random();
    let mut request = [0u8; 64];
    let mut w = Writer::new(&mut request, stun::method::BINDING, Class::Request, &tid)
        .map_err(Failure::Request)?;
    w.fingerprint().map_err(Failure::Request)?;
    let len = w.finish();
    let exchange = async {
        let mut buf = [0u8; 1500];
        loop {
            socket
                .send_to(&request[..len], to)
                .await
                .map_err(Failure::Socket)?;
            let reply =
                tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf));
            let Ok(received) = reply.await else {
                continue; // retransmit
            };
            let (n, from) = received.map_err(Failure::Socket)?;
            if from != to {
                continue;
            }
            let Ok(m) = Message::parse(&buf[..n]) else {
                continue;
            };
            if m.transaction_id() != &tid {
                continue;
            }
            return match m.class() {
                Class::Success => m.xor_mapped_address().ok_or(Failure::NoMappedAddress),
                _ => Err(match m.error_code() {
                    Some((code, reason)) => Failure::Refused(code, reason.to_string()),
                    None => Failure::ErrorAnswer,
                }),
            };
        }
    };
    tokio::time::timeout(PER_SERVER, exchange)
        .await
        .map_err(|_| Failure::Timeout(PER_SERVER))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        assert_eq!(target("stun.example.org"), "stun.example.org:3478");
        assert_eq!(
            target("stun:stun.example.org:19302"),
            "stun.example.org:19302"
        );
        assert_eq!(target("127.0.0.1:3478"), "127.0.0.1:3478");
        assert_eq!(target("[::1]"), "[::1]:3478");
        assert_eq!(target("[::1]:5000"), "[::1]:5000");
    }

    #[tokio::test]
    async fn nothing_configured_or_nobody_answering_is_an_error() {
        assert!(matches!(public_ip(&[]).await, Err(ProbeError::NoServers)));
        // A port nothing listens on: the probe gives up after its deadline.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = silent.local_addr().unwrap().to_string();
        let err = public_ip(&[server]).await.unwrap_err();
        assert!(matches!(err, ProbeError::NoAnswer(_)), "{err}");
    }
}
