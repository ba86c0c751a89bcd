//! A TURN client just big enough for the reachability probe: allocate a relay on an outside
//! TURN server with REST credentials, permit peers, send through it (UDP), and open TCP
//! connections from it (RFC 6062). Messages come from the data plane's builders
//! (`turn::client`); this adds sockets, retransmission and the 401/438 dance.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_dataplane::stun::{self, Class, Message};
use switchyard_dataplane::turn::auth::rest_password;
use switchyard_dataplane::turn::client::{Credentials, Request};
use switchyard_dataplane::turn::{attr, method};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use super::listeners::read_stun;

/// RFC 6062 (TURN extensions for TCP allocations): the methods and the attribute the data
/// plane's server does not speak, so they are not in `turn::method`.
pub mod rfc6062 {
    pub const CONNECT: u16 = 0x000A;
    pub const CONNECTION_BIND: u16 = 0x000B;
    pub const CONNECTION_ID: u16 = 0x002A;
    /// REQUESTED-TRANSPORT's protocol number for TCP (UDP is 17).
    pub const TCP: u8 = 6;
}

/// Why a TURN exchange went nowhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    #[error("{0}")]
    Io(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("refused: {0} {1}")]
    Refused(u16, String),
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl From<std::io::Error> for TurnError {
    fn from(e: std::io::Error) -> Self {
        TurnError::Io(e.to_string())
    }
}

impl From<stun::Error> for TurnError {
    fn from(e: stun::Error) -> Self {
        TurnError::Malformed(e.to_string())
    }
}

/// A REST credential (`expiry:user`, HMAC-SHA1 of the shared secret) for a short probe.
#[derive(Clone)]
pub struct Auth {
    username: String,
    password: String,
}

impl Auth {
    pub fn rest(secret: &str) -> Auth {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let username = format!("{}:switchyard-doctor", now + 600);
        let password = rest_password(secret.as_bytes(), &username);
        Auth { username, password }
    }
}

/// Builds a request into the buffer with this transaction id, signed when credentials are
/// known.
type Build<'a> =
    &'a dyn Fn(&mut [u8], &[u8; 12], Option<&Credentials>) -> Result<usize, stun::Error>;

/// Where requests go: a UDP socket (which needs retransmissions) or a TCP stream (which does not).
enum Link {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
}

/// A session with the TURN server: the link and the credentials learnt from its first 401.
pub struct Client {
    link: Link,
    auth: Auth,
    creds: Option<Credentials>,
    timeout: Duration,
}

impl Client {
    pub async fn udp(
        server: SocketAddr,
        auth: Auth,
        timeout: Duration,
    ) -> Result<Client, TurnError> {
        let bind: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind).await?;
        Ok(Client {
            link: Link::Udp(socket, server),
            auth,
            creds: None,
            timeout,
        })
    }

    pub async fn tcp(
        server: SocketAddr,
        auth: Auth,
        timeout: Duration,
    ) -> Result<Client, TurnError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(server))
            .await
            .map_err(|_| TurnError::Timeout(timeout))??;
        Ok(Client {
            link: Link::Tcp(stream),
            auth,
            creds: None,
            timeout,
        })
    }

    /// A second connection to the same server signed with this session's credentials (RFC
    /// 6062's data connection).
    async fn data_connection(&self) -> Result<Client, TurnError> {
        let Link::Tcp(control) = &self.link else {
            return Err(TurnError::Io(
                "a data connection needs a TCP session".into(),
            ));
        };
        let mut c = Client::tcp(control.peer_addr()?, self.auth.clone(), self.timeout).await?;
        c.creds = self.creds.clone();
        Ok(c)
    }

    /// Sends the request and returns the success answer, signing and retrying on 401 (first
    /// contact, or credentials the server does not take yet) and 438 (stale nonce).
    async fn request(&mut self, build: Build<'_>) -> Result<Vec<u8>, TurnError> {
        for _ in 0..3 {
            let tid: [u8; 12] = rand::random();
            let mut buf = [0u8; 512];
            let len = build(&mut buf, &tid, self.creds.as_ref())?;
            let answer = self.exchange(&buf[..len], &tid).await?;
            let m = Message::parse(&answer)?;
            if m.class() == Class::Success {
                return Ok(answer);
            }
            let (code, reason) = m
                .error_code()
                .unwrap_or((0, "an error answer without a code"));
            // Some servers pad the reason phrase with spaces or NULs.
            let reason = reason.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            let retry = match code {
                401 => self.creds.is_none(),
                438 => true,
                _ => false,
            };
            let (Some(realm), Some(nonce)) = (m.attribute(attr::REALM), m.attribute(attr::NONCE))
            else {
                return Err(TurnError::Refused(code, reason.to_string()));
            };
            if !retry {
                return Err(TurnError::Refused(code, reason.to_string()));
            }
            let realm = String::from_utf8_lossy(realm);
            self.creds = Some(Credentials::new(
                &self.auth.username,
                &self.auth.password,
                &realm,
                nonce,
            ));
        }
        Err(TurnError::Refused(401, "credentials not accepted".into()))
    }

    /// One request out, its answer back (other messages are skipped).
    async fn exchange(&mut self, request: &[u8], tid: &[u8; 12]) -> Result<Vec<u8>, TurnError> {
        let timeout = self.timeout;
        let work = async {
            match &mut self.link {
                Link::Udp(socket, server) => {
                    let mut buf = [0u8; 1500];
                    loop {
                        socket.send_to(request, *server).await?;
                        let wait = tokio::time::timeout(
                            Duration::from_millis(500),
                            socket.recv_from(&mut buf),
                        );
                        let Ok(got) = wait.await else { continue };
                        let (n, from) = got?;
                        if from == *server && answers(&buf[..n], tid) {
                            return Ok(buf[..n].to_vec());
                        }
                    }
                }
                Link::Tcp(stream) => {
                    stream.write_all(request).await?;
                    loop {
                        let msg = read_stun(stream).await?;
                        if answers(&msg, tid) {
                            return Ok(msg);
                        }
                    }
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| TurnError::Timeout(timeout))?
    }

    /// Allocates a relay (UDP, or TCP per RFC 6062) and returns its address.
    pub async fn allocate(&mut self, transport: u8) -> Result<SocketAddr, TurnError> {
        let build = |buf: &mut [u8], tid: &[u8; 12], c: Option<&Credentials>| {
            Request::new(buf, method::ALLOCATE, tid)?
                .attribute(attr::REQUESTED_TRANSPORT, &[transport, 0, 0, 0])?
                .lifetime(300)?
                .finish(c)
        };
        let answer = self.request(&build).await?;
        Message::parse(&answer)?
            .xor_address(attr::XOR_RELAYED_ADDRESS)
            .ok_or_else(|| TurnError::Malformed("no XOR-RELAYED-ADDRESS".into()))
    }

    /// Lets `ip` send to the relay (and the relay to it).
    pub async fn permit(&mut self, ip: IpAddr) -> Result<(), TurnError> {
        let build = |buf: &mut [u8], tid: &[u8; 12], c: Option<&Credentials>| {
            Request::new(buf, method::CREATE_PERMISSION, tid)?
                .peer(SocketAddr::new(ip, 0))?
                .finish(c)
        };
        self.request(&build).await.map(|_| ())
    }

    /// Sends a STUN Binding request to each target through the relay (Send indications,
    /// retransmitted every 500 ms) and returns, per target, the transaction id used and
    /// whether an answer came back within the timeout. Only for a UDP session.
    pub async fn udp_reach(&mut self, targets: &[SocketAddr]) -> Vec<(SocketAddr, [u8; 12], bool)> {
        let mut state: Vec<(SocketAddr, [u8; 12], bool)> = targets
            .iter()
            .map(|t| (*t, rand::random(), false))
            .collect();
        let Link::Udp(socket, server) = &self.link else {
            return state;
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut buf = [0u8; 1500];
        while tokio::time::Instant::now() < deadline && state.iter().any(|s| !s.2) {
            for (target, tid, done) in &state {
                if *done {
                    continue;
                }
                let Some(bytes) = send_binding(*target, tid) else {
                    continue;
                };
                let _ = socket.send_to(&bytes, *server).await;
            }
            let round = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
            while let Ok(got) = tokio::time::timeout_at(round, socket.recv_from(&mut buf)).await {
                let Ok((n, from)) = got else { break };
                if from != *server {
                    continue;
                }
                if let Some(tid) = relayed_answer(&buf[..n]) {
                    for s in state.iter_mut().filter(|s| s.1 == tid) {
                        s.2 = true;
                    }
                }
            }
        }
        state
    }

    /// RFC 6062: asks the server to open a TCP connection from the relay to `peer`; on
    /// success binds a data connection to it and, when `exchange` is set, sends a Binding
    /// request through and waits for the answer (which shows who accepted: this host).
    pub async fn tcp_reach(&mut self, peer: SocketAddr, exchange: bool) -> TcpReach {
        let build = |buf: &mut [u8], tid: &[u8; 12], c: Option<&Credentials>| {
            Request::new(buf, rfc6062::CONNECT, tid)?
                .peer(peer)?
                .finish(c)
        };
        let answer = match self.request(&build).await {
            Ok(a) => a,
            Err(TurnError::Timeout(t)) => return TcpReach::NoAnswer(t),
            Err(TurnError::Refused(code, reason)) => return TcpReach::Refused(code, reason),
            Err(e) => return TcpReach::Broken(e.to_string()),
        };
        let Some(id) = Message::parse(&answer)
            .ok()
            .and_then(|m| m.attribute(rfc6062::CONNECTION_ID).map(<[u8]>::to_vec))
        else {
            return TcpReach::Broken("Connect answer without CONNECTION-ID".into());
        };
        if !exchange {
            return TcpReach::Connected { answered: None };
        }
        match self.bind_and_ask(&id).await {
            Ok(tid) => TcpReach::Connected {
                answered: Some(Ok(tid)),
            },
            Err(e) => TcpReach::Connected {
                answered: Some(Err(e.to_string())),
            },
        }
    }

    /// ConnectionBind on a new connection, then a Binding request to the peer over it.
    async fn bind_and_ask(&self, id: &[u8]) -> Result<[u8; 12], TurnError> {
        let mut data = self.data_connection().await?;
        let build = |buf: &mut [u8], tid: &[u8; 12], c: Option<&Credentials>| {
            Request::new(buf, rfc6062::CONNECTION_BIND, tid)?
                .attribute(rfc6062::CONNECTION_ID, id)?
                .finish(c)
        };
        data.request(&build).await?;
        // From here the connection is a raw pipe to the peer.
        let tid: [u8; 12] = rand::random();
        let mut buf = [0u8; 64];
        let len = binding(&mut buf, &tid)?;
        data.exchange(&buf[..len], &tid).await?;
        Ok(tid)
    }
}

/// What became of a TCP connection attempt from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpReach {
    /// The relay connected; `answered`: the Binding exchange over it, when asked for.
    Connected {
        answered: Option<Result<[u8; 12], String>>,
    },
    /// The server answered the Connect with an error (447: the connection failed or timed out).
    Refused(u16, String),
    /// No answer to the Connect: the server is still trying, so SYNs are being dropped.
    NoAnswer(Duration),
    Broken(String),
}

/// Whether `msg` is the answer (success or error) to transaction `tid`.
fn answers(msg: &[u8], tid: &[u8; 12]) -> bool {
    Message::parse(msg).is_ok_and(|m| {
        m.transaction_id() == tid && matches!(m.class(), Class::Success | Class::Error)
    })
}

/// A plain Binding request with FINGERPRINT.
fn binding(buf: &mut [u8], tid: &[u8; 12]) -> Result<usize, stun::Error> {
    let mut w = stun::Writer::new(buf, stun::method::BINDING, Class::Request, tid)?;
    w.fingerprint()?;
    Ok(w.finish())
}

/// A Send indication carrying a Binding request to `target`.
fn send_binding(target: SocketAddr, tid: &[u8; 12]) -> Option<Vec<u8>> {
    let mut inner = [0u8; 64];
    let n = binding(&mut inner, tid).ok()?;
    let mut out = vec![0u8; 256];
    let len = switchyard_dataplane::turn::client::send_indication(
        &mut out,
        &rand::random(),
        target,
        &inner[..n],
    )
    .ok()?;
    out.truncate(len);
    Some(out)
}

/// The transaction id of a Binding success carried in a Data indication.
fn relayed_answer(msg: &[u8]) -> Option<[u8; 12]> {
    let m = Message::parse(msg).ok()?;
    if m.class() != Class::Indication || m.method() != method::DATA {
        return None;
    }
    let inner = Message::parse(m.attribute(attr::DATA)?).ok()?;
    (inner.method() == stun::method::BINDING && inner.class() == Class::Success)
        .then(|| *inner.transaction_id())
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_dataplane::stun::Writer;

    #[test]
    fn send_indication_carries_a_binding_request_and_data_indications_are_read() {
        let tid = [3u8; 12];
        let target: SocketAddr = "203.0.113.20:3478".parse().unwrap();
        let bytes = send_binding(target, &tid).unwrap();
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.method(), method::SEND);
        assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS), Some(target));
        let inner = Message::parse(m.attribute(attr::DATA).unwrap()).unwrap();
        assert_eq!(inner.transaction_id(), &tid);

        // The peer's answer, wrapped as the TURN server relays it back.
        let mut answer = [0u8; 64];
        let mut w = Writer::new(&mut answer, stun::method::BINDING, Class::Success, &tid).unwrap();
        w.xor_mapped_address("198.51.100.10:50000".parse().unwrap())
            .unwrap();
        let n = w.finish();
        let mut data = [0u8; 256];
        let mut w = Writer::new(&mut data, method::DATA, Class::Indication, &[9; 12]).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, target).unwrap();
        w.attribute(attr::DATA, &answer[..n]).unwrap();
        let len = w.finish();
        assert_eq!(relayed_answer(&data[..len]), Some(tid));
        // A relayed request (not an answer) is not taken for one.
        let mut w = Writer::new(&mut data, method::DATA, Class::Indication, &[9; 12]).unwrap();
        w.attribute(attr::DATA, m.attribute(attr::DATA).unwrap())
            .unwrap();
        let len = w.finish();
        assert_eq!(relayed_answer(&data[..len]), None);
    }

    #[test]
    fn rest_credentials_match_the_scheme() {
        let auth = Auth::rest("0123456789abcdef");
        assert!(auth.username.ends_with(":switchyard-doctor"));
        assert_eq!(
            auth.password,
            rest_password(b"0123456789abcdef", &auth.username)
        );
    }
}
