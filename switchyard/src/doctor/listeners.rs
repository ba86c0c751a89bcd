//! Check 1 without a running server: can every port the server needs be bound? The sockets
//! are kept and answer STUN Binding requests while the reachability probe runs, because a
//! pre-flight check must stand in for the server that is not running yet.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};

use switchyard_dataplane::stun::{self, Class, Message, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::plan::{Plan, TurnPlan};
use super::report::{Check, Fix};

/// The sockets doctor holds in place of the server.
#[derive(Default)]
pub struct Bound {
    pub media: Vec<UdpSocket>,
    /// The workers' ICE-TCP listeners, on the same ports as `media` (none with --no-ice-tcp).
    pub media_tcp: Vec<TcpListener>,
    pub turn_udp: Option<UdpSocket>,
    pub turn_tcp: Option<TcpListener>,
    pub tls: Option<TcpListener>,
}

impl Bound {
    pub fn media_ports(&self) -> Vec<u16> {
        self.media
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .map(|a| a.port())
            .collect()
    }
}

/// Binds what the server would, reporting each listener.
pub fn bind(plan: &Plan) -> (Bound, Vec<Check>) {
    let mut bound = Bound::default();
    let mut checks = vec![bind_media(plan, &mut bound)];
    if let Some(turn) = &plan.turn {
        checks.extend(bind_turn(plan.bind_ip, turn, &mut bound));
        checks.push(relay_range(plan, turn));
    } else {
        checks.push(
            Check::named("turn_listeners", "TURN listeners")
                .warn("TURN is disabled (TURN:ENABLED=false): clients behind UDP-blocking firewalls cannot connect", None),
        );
    }
    (bound, checks)
}

/// The media workers' sockets, taken as the workers take them: the i-th port from the start of
/// the range that is free for UDP and, with ICE-TCP, for TCP too.
fn bind_media(plan: &Plan, bound: &mut Bound) -> Check {
    let check = Check::named("media_ports", "media ports");
    let (lo, hi) = plan.media_ports;
    let what = if plan.ice_tcp { "UDP and TCP" } else { "UDP" };
    let mut next = lo;
    for _ in 0..plan.workers {
        match switchyard_dataplane::io::bind_media(plan.bind_ip, next..=hi, plan.ice_tcp) {
            Ok((udp, tcp)) => {
                next = udp.local_addr().map_or(hi, |a| a.port()).saturating_add(1);
                bound.media.push(udp);
                bound.media_tcp.extend(tcp);
            }
            Err(e) => {
                let fix = if plan.ice_tcp {
                    "free ports (UDP and TCP) in the media range or give another or wider one (--media-ports), or fewer workers (--workers), or --no-ice-tcp to leave TCP alone (clients whose UDP is blocked then need TURN)"
                } else {
                    "free ports in the media range or give a wider one (--media-ports), or fewer workers (--workers)"
                };
                return check.fail(
                    format!(
                        "only {} of {} worker port(s) free for {what} in {lo}-{hi} on {}: {e}",
                        bound.media.len(),
                        plan.workers,
                        plan.bind_ip
                    ),
                    Fix::todo(fix),
                );
            }
        }
    }
    let ports = bound.media_ports();
    let list = list_ports(&ports);
    if ports.first() != Some(&lo) {
        return check.pass(format!(
            "{what} {list} on {} ({} worker(s)); {lo} is taken, so the workers would start further up the range: the firewall must allow all of {lo}-{hi}",
            plan.bind_ip, plan.workers
        ));
    }
    check.pass(format!(
        "{what} {list} on {} ({} worker(s)) can be bound",
        plan.bind_ip, plan.workers
    ))
}

/// What to do when a port cannot be bound, by why.
fn bind_fix(e: &io::Error, port: u16, setting: &str) -> Fix {
    match e.kind() {
        io::ErrorKind::AddrInUse => Fix::todo(format!(
            "stop what holds port {port} (if it is a running switchyard, run doctor with --server http://HOST:PORT to check it instead), or set {setting} to a free port"
        )),
        io::ErrorKind::PermissionDenied => Fix::todo(format!(
            "ports below 1024 need CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep, or AmbientCapabilities in systemd), or set {setting} above 1023"
        )),
        _ => Fix::todo(format!("set {setting} to a port this host can bind")),
    }
}

fn bind_turn(ip: IpAddr, turn: &TurnPlan, bound: &mut Bound) -> Vec<Check> {
    let mut checks = Vec::new();
    let check = Check::named("turn_listeners", "TURN listeners");
    if turn.port == 0 {
        // The server would work, but on a port nobody can open a firewall for in advance.
        checks.push(check.warn(
            "TURN:PORT=0 takes any free port at each start: no firewall rule can be written for it, and doctor cannot check it",
            Some(Fix::set("TURN:PORT", 3478, "the standard port")),
        ));
    } else {
        let addr = SocketAddr::new(ip, turn.port);
        let udp = UdpSocket::bind(addr);
        let tcp = TcpListener::bind(addr);
        let port = turn.port;
        checks.push(match (&udp, &tcp) {
            (Ok(_), Ok(_)) => check.pass(format!("{port}/udp and {port}/tcp on {ip} can be bound")),
            (Err(e), _) => check.fail(
                format!("{port}/udp on {ip}: {e}"),
                bind_fix(e, port, "TURN:PORT"),
            ),
            (_, Err(e)) => check.fail(
                format!("{port}/tcp on {ip}: {e}"),
                bind_fix(e, port, "TURN:PORT"),
            ),
        });
        bound.turn_udp = udp.ok();
        bound.turn_tcp = tcp.ok();
    }
    if let Some(tls) = &turn.tls {
        let check = Check::named("turn_tls_listener", "TURN TLS listener");
        let port = tls.port;
        match TcpListener::bind(SocketAddr::new(ip, port)) {
            Ok(l) => {
                bound.tls = Some(l);
                checks.push(check.pass(format!("{port}/tcp on {ip} can be bound")));
            }
            Err(e) => checks.push(check.fail(
                format!("{port}/tcp on {ip}: {e}"),
                bind_fix(&e, port, "TURN:TLSPORT"),
            )),
        }
    }
    checks.push(advertised(turn));
    checks
}

/// TURN:ADVERTISEDPORT differing from TURN:PORT is legitimate only when something in front
/// forwards one to the other; the reachability probe is what shows that it does.
fn advertised(turn: &TurnPlan) -> Check {
    let check = Check::named("turn_advertised_ports", "advertised ports");
    let mut forwarded = Vec::new();
    if turn.advertised != turn.port && turn.port != 0 {
        forwarded.push(format!(
            "clients are told {} (TURN:ADVERTISEDPORT) but TURN listens on {} (TURN:PORT)",
            turn.advertised, turn.port
        ));
    }
    if let Some(tls) = &turn.tls
        && tls.advertised != tls.port
    {
        forwarded.push(format!(
            "clients are told {} (TURN:ADVERTISEDTLSPORT) but TLS listens on {} (TURN:TLSPORT)",
            tls.advertised, tls.port
        ));
    }
    if forwarded.is_empty() {
        return check.pass("clients are told the ports TURN listens on");
    }
    check.warn(
        format!(
            "{}: a load balancer or NAT must forward them (--probe-turn checks it)",
            forwarded.join("; ")
        ),
        Some(Fix::todo(
            "forward the advertised ports to the listening ones, or unset TURN:ADVERTISEDPORT/TURN:ADVERTISEDTLSPORT",
        )),
    )
}

/// Relay ports inside the media range would make the two take each other's ports at random.
fn relay_range(plan: &Plan, turn: &TurnPlan) -> Check {
    let check = Check::named("turn_relay_ports", "TURN relay ports");
    let (rlo, rhi) = turn.relay_ports;
    let (mlo, mhi) = plan.media_ports;
    if rlo > rhi {
        return check.fail(
            format!("TURN:RELAYPORTMIN {rlo} is above TURN:RELAYPORTMAX {rhi}"),
            Fix::set(
                "TURN:RELAYPORTMIN",
                RELAY_MIN_DEFAULT,
                "or raise TURN:RELAYPORTMAX",
            ),
        );
    }
    if rlo <= mhi && mlo <= rhi {
        return check.warn(
            format!("relay ports {rlo}-{rhi} overlap the media ports {mlo}-{mhi}: relays and workers would take each other's ports"),
            Some(Fix::todo("give TURN:RELAYPORTMIN/TURN:RELAYPORTMAX a range apart from --media-ports")),
        );
    }
    check.pass(format!(
        "relay ports {rlo}-{rhi} (UDP, must be open inbound for relayed media) are apart from the media ports"
    ))
}

const RELAY_MIN_DEFAULT: u16 = 40000;

/// "49152-49155" for a run, else the ports listed.
pub fn list_ports(ports: &[u16]) -> String {
    match (ports.first(), ports.last()) {
        (Some(a), Some(b)) if usize::from(b - a) + 1 == ports.len() && ports.len() > 1 => {
            format!("{a}-{b}")
        }
        _ => ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Transaction ids of the Binding requests that reached a responder: when a probe gets no
/// answer, this tells "never arrived" from "arrived, but the answer was lost on the way out".
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<HashSet<[u8; 12]>>>);

impl Arrivals {
    fn record(&self, tid: [u8; 12]) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(tid);
        }
    }

    pub fn arrived(&self, tid: &[u8; 12]) -> bool {
        self.0.lock().is_ok_and(|set| set.contains(tid))
    }
}

/// A Binding success answer to `request` from `from`, or `None` if it is not a Binding request.
fn answer(request: &[u8], from: SocketAddr, out: &mut [u8]) -> Option<([u8; 12], usize)> {
    let m = Message::parse(request).ok()?;
    if m.method() != stun::method::BINDING || m.class() != Class::Request {
        return None;
    }
    let tid = *m.transaction_id();
    let mut w = Writer::new(out, stun::method::BINDING, Class::Success, &tid).ok()?;
    w.xor_mapped_address(from).ok()?;
    w.fingerprint().ok()?;
    Some((tid, w.finish()))
}

/// Answers Binding requests on `socket` until the task is dropped.
pub async fn answer_udp(socket: tokio::net::UdpSocket, arrivals: Arrivals) {
    let mut buf = [0u8; 1500];
    let mut out = [0u8; 128];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some((tid, len)) = answer(&buf[..n], from, &mut out) {
            arrivals.record(tid);
            let _ = socket.send_to(&out[..len], from).await;
        }
    }
}

/// Accepts TCP connections (as TURN over TCP or TLS would) and answers Binding requests on
/// them, the way the TURN server answers them over TCP.
pub async fn answer_tcp(listener: tokio::net::TcpListener, arrivals: Arrivals) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let mut out = [0u8; 128];
            while let Ok(request) = read_stun(&mut stream).await {
                if let Some((tid, len)) = answer(&request, from, &mut out) {
                    arrivals.record(tid);
                    if stream.write_all(&out[..len]).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
}

/// Accepts the connections the probe's relay opens to a media port and lets them go: for
/// ICE-TCP the accepted connection is the proof of reachability (the server would next expect
/// RFC 4571 frames of its own sessions' ICE checks, which doctor has none of).
pub async fn accept_tcp(listener: tokio::net::TcpListener) {
    loop {
        let _ = listener.accept().await;
    }
}

/// One STUN message from a stream: the 20-byte header, then as many bytes as it says.
pub async fn read_stun<S: AsyncReadExt + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let mut msg = vec![0u8; stun::HEADER_LEN];
    stream.read_exact(&mut msg).await?;
    if msg[0] & 0xC0 != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not STUN"));
    }
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    msg.resize(stun::HEADER_LEN + len, 0);
    stream.read_exact(&mut msg[stun::HEADER_LEN..]).await?;
    Ok(msg)
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists() {
        assert_eq!(list_ports(&[49152, 49153, 49154]), "49152-49154");
        assert_eq!(list_ports(&[49152]), "49152");
        assert_eq!(list_ports(&[49152, 49160]), "49152, 49160");
    }

    #[test]
    fn answers_binding_requests_only() {
        let tid = [7u8; 12];
        let mut req = [0u8; 64];
        let mut w = Writer::new(&mut req, stun::method::BINDING, Class::Request, &tid).unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();
        let from: SocketAddr = "198.51.100.10:50000".parse().unwrap();
        let mut out = [0u8; 128];
        let (got, len) = answer(&req[..n], from, &mut out).unwrap();
        assert_eq!(got, tid);
        let m = Message::parse(&out[..len]).unwrap();
        assert_eq!(m.class(), Class::Success);
        assert_eq!(m.xor_mapped_address(), Some(from));
        // An answer is not answered again (two doctors must not ping-pong).
        assert!(answer(&out[..len], from, &mut [0u8; 128]).is_none());
    }
}
