//! Check 4: is each announced address reachable from outside? A relay is allocated on an
//! outside TURN server and STUN Binding requests go from it to every announced `IP:port`; an
//! answer proves that a client on the internet gets through to this host and back. TCP ports
//! are tried with RFC 6062 connections from a TCP relay.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::net::lookup_host;

use super::listeners::Arrivals;
use super::turn_client::{Auth, Client, TcpReach, rfc6062};

/// What an announced port is for (the fix depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Media,
    /// A media port over TCP (ICE-TCP): reachable when the relay's connection is accepted.
    MediaTcp,
    TurnUdp,
    TurnTcp,
    TurnTls,
}

/// An address clients are told, and the local port it should end up at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub ip: IpAddr,
    /// The port clients use (the advertised one).
    pub port: u16,
    /// The port the server listens on (differs when something forwards).
    pub local: u16,
    pub kind: Kind,
}

impl Target {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// What became of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The Binding request got its answer back through the relay.
    Answered,
    /// The request reached this host but its answer never came back out.
    ArrivedUnanswered,
    NoAnswer,
    /// The relay's TCP connection was accepted; `verified`: a Binding exchange over it worked.
    Connected {
        verified: bool,
    },
    /// The TURN server reported the TCP connection failed (447) or refused it.
    Refused(u16, String),
    /// Not tried, and why.
    NotProbed(String),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub target: Target,
    pub reach: Reach,
}

/// The probe as a whole: where it ran, whether it could, and each target's outcome.
#[derive(Debug, Clone)]
pub struct Probe {
    pub server: String,
    /// The UDP relay's address, or why there is none (then nothing was probed).
    pub relay: Result<SocketAddr, String>,
    /// Why TCP targets could not be tried (no TCP relay), if so.
    pub tcp_problem: Option<String>,
    pub outcomes: Vec<Outcome>,
    /// How long each answer was waited for.
    pub timeout: Duration,
}

impl Probe {
    /// Whether any UDP target at `ip` answered: proof that `ip` reaches this host.
    pub fn reaches(&self, ip: IpAddr) -> bool {
        self.outcomes
            .iter()
            .any(|o| o.target.ip == ip && o.reach == Reach::Answered)
    }

    /// Whether every target of this kind at `ip` answered (false if there were none).
    pub fn all_answered(&self, ip: IpAddr, kind: Kind) -> bool {
        let mut of_kind = self
            .outcomes
            .iter()
            .filter(|o| o.target.ip == ip && o.target.kind == kind)
            .peekable();
        of_kind.peek().is_some() && of_kind.all(|o| o.reach == Reach::Answered)
    }
}

/// `turn:HOST:PORT`, `turn:HOST` or `HOST:PORT` (a `?transport=` suffix is ignored: the probe
/// uses UDP for UDP targets and TCP for TCP ones).
pub fn probe_target(url: &str) -> String {
    let s = url.trim();
    let s = s.strip_prefix("turn:").unwrap_or(s);
    let s = s.split('?').next().unwrap_or(s);
    switchyard_cluster::stun_probe::target(s)
}

/// Runs the probe: UDP targets through one UDP relay, each TCP target through its own TCP
/// relay (in parallel: a dropped SYN costs the whole timeout).
pub async fn run(
    url: &str,
    secret: &str,
    targets: &[Target],
    arrivals: &Arrivals,
    timeout: Duration,
) -> Probe {
    let mut probe = Probe {
        server: url.to_string(),
        relay: Err(String::new()),
        tcp_problem: None,
        outcomes: Vec::new(),
        timeout,
    };
    let server = match lookup_host(probe_target(url)).await {
        Ok(mut addrs) => match addrs.find(SocketAddr::is_ipv4) {
            Some(a) => a,
            None => {
                probe.relay = Err(format!("{url} resolves to no IPv4 address"));
                return probe;
            }
        },
        Err(e) => {
            probe.relay = Err(format!("cannot resolve {url}: {e}"));
            return probe;
        }
    };
    let auth = Auth::rest(secret);
    let (udp, tcp): (Vec<Target>, Vec<Target>) = targets
        .iter()
        .partition(|t| matches!(t.kind, Kind::Media | Kind::TurnUdp));
    let (udp_result, tcp_results) = tokio::join!(
        udp_probe(server, &auth, &udp, arrivals, timeout),
        join_all(tcp.iter().map(|t| tcp_probe(server, &auth, *t, timeout)))
    );
    match udp_result {
        Ok((relay, outcomes)) => {
            probe.relay = Ok(relay);
            probe.outcomes = outcomes;
        }
        Err(e) => {
            probe.relay = Err(e);
            return probe;
        }
    }
    for (target, result) in tcp.iter().zip(tcp_results) {
        match result {
            Ok(reach) => probe.outcomes.push(Outcome {
                target: *target,
                reach,
            }),
            Err(problem) => {
                probe.outcomes.push(Outcome {
                    target: *target,
                    reach: Reach::NotProbed(problem.clone()),
                });
                probe.tcp_problem.get_or_insert(problem);
            }
        }
    }
    probe
}

async fn udp_probe(
    server: SocketAddr,
    auth: &Auth,
    targets: &[Target],
    arrivals: &Arrivals,
    timeout: Duration,
) -> Result<(SocketAddr, Vec<Outcome>), String> {
    let mut client = Client::udp(server, auth.clone(), timeout)
        .await
        .map_err(|e| e.to_string())?;
    let relay = client
        .allocate(17)
        .await
        .map_err(|e| format!("UDP allocation on {server}: {e}"))?;
    let mut outcomes = Vec::new();
    let mut permitted = Vec::new();
    let mut ips: Vec<IpAddr> = targets.iter().map(|t| t.ip).collect();
    ips.sort();
    ips.dedup();
    for ip in ips {
        match client.permit(ip).await {
            Ok(()) => permitted.push(ip),
            Err(e) => outcomes.extend(targets.iter().filter(|t| t.ip == ip).map(|t| Outcome {
                target: *t,
                reach: Reach::NotProbed(format!(
                    "the probe server refuses a permission for {ip}: {e}"
                )),
            })),
        }
    }
    let send: Vec<Target> = targets
        .iter()
        .filter(|t| permitted.contains(&t.ip))
        .copied()
        .collect();
    let addrs: Vec<SocketAddr> = send.iter().map(Target::addr).collect();
    for ((_, tid, answered), target) in client.udp_reach(&addrs).await.into_iter().zip(send) {
        let reach = if answered {
            Reach::Answered
        } else if arrivals.arrived(&tid) {
            Reach::ArrivedUnanswered
        } else {
            Reach::NoAnswer
        };
        outcomes.push(Outcome { target, reach });
    }
    Ok((relay, outcomes))
}

/// One TCP target through its own TCP allocation; `Err` when the probe server cannot make
/// one (no RFC 6062), which says nothing about the target.
async fn tcp_probe(
    server: SocketAddr,
    auth: &Auth,
    target: Target,
    timeout: Duration,
) -> Result<Reach, String> {
    let mut client = Client::tcp(server, auth.clone(), timeout)
        .await
        .map_err(|e| format!("TCP to the probe server {server}: {e}"))?;
    client
        .allocate(rfc6062::TCP)
        .await
        .map_err(|e| format!("the probe server gives no TCP relay (RFC 6062): {e}"))?;
    client.permit(target.ip).await.map_err(|e| {
        format!(
            "the probe server refuses a permission for {}: {e}",
            target.ip
        )
    })?;
    // Over TLS a Binding request would be garbage to the server, and a media port over TCP
    // answers only its own sessions' checks in RFC 4571 frames, so only the TURN TCP port gets
    // the exchange; for the others the accepted connection is the proof.
    let exchange = target.kind == Kind::TurnTcp;
    Ok(match client.tcp_reach(target.addr(), exchange).await {
        TcpReach::Connected { answered } => Reach::Connected {
            verified: matches!(answered, Some(Ok(_))),
        },
        TcpReach::Refused(code, reason) => Reach::Refused(code, reason),
        TcpReach::NoAnswer(_) => Reach::NoAnswer,
        TcpReach::Broken(e) => Reach::NotProbed(e),
    })
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_server_forms() {
        assert_eq!(
            probe_target("turn:198.51.100.10:3478"),
            "198.51.100.10:3478"
        );
        assert_eq!(probe_target("turn:198.51.100.10"), "198.51.100.10:3478");
        assert_eq!(
            probe_target("turn:turn.example.org:443?transport=tcp"),
            "turn.example.org:443"
        );
        assert_eq!(probe_target("198.51.100.10:3479"), "198.51.100.10:3479");
    }
}
