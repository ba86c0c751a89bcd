//! Check 3's first half: what public address do STUN servers see for a socket bound like the
//! media sockets? Two or more servers are asked from the same socket, so their answers can be
//! compared: different addresses mean several ways out, different ports a NAT that maps per
//! destination, a port other than the local one a NAT that rewrites ports.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use switchyard_cluster::stun_probe;
use switchyard_dataplane::stun::{self, Class, Message, Writer};
use tokio::net::{UdpSocket, lookup_host};

use super::report::{Check, Fix};

/// What one STUN server said.
#[derive(Debug, Clone)]
pub struct Answer {
    pub server: String,
    /// The mapped address, or why there is none.
    pub mapped: Result<SocketAddr, String>,
}

/// Asks each server in turn from `socket` (one at a time, so every answer is read on the
/// socket it was meant for).
pub async fn ask(socket: &UdpSocket, servers: &[String], timeout: Duration) -> Vec<Answer> {
    let mut answers = Vec::new();
    for server in servers {
        let mapped = tokio::time::timeout(timeout, ask_one(socket, server))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
        answers.push(Answer {
            server: server.clone(),
            mapped,
        });
    }
    answers
}

async fn ask_one(socket: &UdpSocket, server: &str) -> Result<SocketAddr, String> {
    let to = lookup_host(stun_probe::target(server))
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?
        .find(|a| a.is_ipv4() == socket.local_addr().is_ok_and(|l| l.is_ipv4()))
        .ok_or("resolves to no address of the socket's family")?;
    let tid: [u8; 12] = rand::random();
    let mut request = [0u8; 64];
    let mut w = Writer::new(&mut request, stun::method::BINDING, Class::Request, &tid)
        .map_err(|e| e.to_string())?;
    w.fingerprint().map_err(|e| e.to_string())?;
    let len = w.finish();
    let mut buf = [0u8; 1500];
    loop {
        socket
            .send_to(&request[..len], to)
            .await
            .map_err(|e| e.to_string())?;
        // RFC 8489's first retransmission comes after 500 ms.
        let wait = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf));
        let Ok(received) = wait.await else { continue };
        let (n, from) = received.map_err(|e| e.to_string())?;
        let Ok(m) = Message::parse(&buf[..n]) else {
            continue;
        };
        if from != to || m.transaction_id() != &tid {
            continue;
        }
        return match m.class() {
            Class::Success => m
                .xor_mapped_address()
                .ok_or_else(|| "the answer has no XOR-MAPPED-ADDRESS".to_string()),
            _ => Err(match m.error_code() {
                Some((code, reason)) => format!("error {code} {reason}"),
                None => "an error answer".to_string(),
            }),
        };
    }
}

/// Why an address cannot be this host's public one, if it cannot.
pub fn not_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_private() {
                Some("a private (RFC 1918) address")
            } else if a == 100 && (64..128).contains(&b) {
                Some("a carrier-grade NAT (RFC 6598, 100.64.0.0/10) address")
            } else if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else if v4.is_unspecified() {
                Some("the unspecified address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("a loopback address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a unique local (fc00::/7) address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if v6.is_unspecified() {
                Some("the unspecified address")
            } else {
                None
            }
        }
    }
}

/// The address every answering server agrees on, if they agree.
pub fn consensus(answers: &[Answer]) -> Option<IpAddr> {
    let mut ips = answers
        .iter()
        .filter_map(|a| a.mapped.as_ref().ok())
        .map(|m| m.ip());
    let first = ips.next()?;
    ips.all(|ip| ip == first).then_some(first)
}

/// The STUN check. `ports_reached`: the reachability probe reached every media port from
/// outside, which settles what port rewriting on the way out would otherwise leave open.
pub fn check(answers: &[Answer], local: Option<SocketAddr>, ports_reached: bool) -> Check {
    let check = Check::named("stun", "STUN");
    if answers.is_empty() {
        return check.warn(
            "no STUN servers (--stun-server, DEPLOYMENTS:0:STUNSERVERS): the public address is not checked",
            Some(Fix::todo("pass two or more --stun-server HOST:PORT")),
        );
    }
    let ok: Vec<(&str, SocketAddr)> = answers
        .iter()
        .filter_map(|a| a.mapped.as_ref().ok().map(|m| (a.server.as_str(), *m)))
        .collect();
    let failed: Vec<String> = answers
        .iter()
        .filter_map(|a| {
            a.mapped
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", a.server))
        })
        .collect();
    let Some(&(first_server, first)) = ok.first() else {
        return check.fail(
            format!("no STUN server answered ({})", failed.join("; ")),
            Fix::todo(
                "allow outbound UDP to the STUN servers, or fix their addresses (--stun-server, DEPLOYMENTS:0:STUNSERVERS)",
            ),
        );
    };
    let seen = ok
        .iter()
        .map(|(s, m)| format!("{s} sees {m}"))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(&(other, m)) = ok.iter().find(|(_, m)| m.ip() != first.ip()) {
        return check.fail(
            format!(
                "STUN servers disagree: {first_server} sees {}, {other} sees {}: this host leaves through more than one address (several routes, or a NAT pool), so no single announced address is right",
                first.ip(),
                m.ip()
            ),
            Fix::todo(format!(
                "set {} to the address clients reach this host on (--probe-turn shows which answers), and give the host one way out",
                super::plan::PUBLIC_IP
            )),
        );
    }
    if let Some(why) = not_public(first.ip()) {
        return check.fail(
            format!(
                "{seen}: {} is {why}, so the STUN servers are inside the same private network or a carrier-grade NAT sits in front of this host; clients on the internet cannot reach it there",
                first.ip()
            ),
            Fix::todo(format!(
                "use STUN servers on the internet; if the host really has no public address of its own, give it one (or a 1:1 NAT) and set {}",
                super::plan::PUBLIC_IP
            )),
        );
    }
    let mut notes = Vec::new();
    if ok.iter().any(|(_, m)| m.port() != first.port()) {
        notes.push(
            "the NAT maps each destination to a different port (endpoint-dependent, \"symmetric\")",
        );
    } else if local.is_some_and(|l| l.port() != first.port()) {
        notes.push("the NAT changes ports on the way out");
    }
    let single = (ok.len() < 2).then_some(if answers.len() < 2 {
        "only one STUN server is configured, so its answer cannot be cross-checked"
    } else {
        "only one STUN server answered, so its answer cannot be cross-checked"
    });
    let failed_note = (!failed.is_empty()).then(|| format!("not answering: {}", failed.join("; ")));
    let local_note = local.map(|l| format!(" (local {l})")).unwrap_or_default();
    if !notes.is_empty() && !ports_reached {
        return check.warn(
            format!(
                "{seen}{local_note}: {}; clients reach the media ports only if they are forwarded to this host unchanged (--probe-turn checks it)",
                notes.join("; ")
            ),
            Some(Fix::todo(
                "forward the media range (and TURN ports) 1:1 to this host, keeping port numbers",
            )),
        );
    }
    let mut message = format!("{seen}{local_note}");
    if !notes.is_empty() {
        message.push_str(&format!(
            "; {}, but the probe reached every port from outside",
            notes.join("; ")
        ));
    } else if ok.len() > 1 {
        message.push_str("; they agree and ports are kept");
    }
    match (single, failed_note) {
        (None, None) => check.pass(message),
        (single, failed) => {
            let why: Vec<String> = single
                .map(str::to_string)
                .into_iter()
                .chain(failed)
                .collect();
            check.warn(
                format!("{message}; {}", why.join("; ")),
                Some(Fix::todo("configure two or more reachable STUN servers")),
            )
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::super::report::Status;
    use super::*;

    fn answer(server: &str, mapped: &str) -> Answer {
        Answer {
            server: server.into(),
            mapped: Ok(mapped.parse().unwrap()),
        }
    }

    #[test]
    fn special_addresses() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "fd00::1",
        ] {
            assert!(not_public(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["203.0.113.20", "198.51.100.1", "100.128.0.1", "2001:db8::1"] {
            assert!(not_public(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[test]
    fn agreement_ports_and_private_answers() {
        let local = Some("10.0.0.2:49152".parse().unwrap());
        let agree = [
            answer("a", "203.0.113.30:49152"),
            answer("b", "203.0.113.30:49152"),
        ];
        assert_eq!(check(&agree, local, false).status, Status::Pass);
        assert_eq!(consensus(&agree), Some("203.0.113.30".parse().unwrap()));

        let differ = [
            answer("a", "203.0.113.30:49152"),
            answer("b", "203.0.113.31:49152"),
        ];
        assert_eq!(check(&differ, local, false).status, Status::Fail);
        assert_eq!(consensus(&differ), None);

        let symmetric = [
            answer("a", "203.0.113.30:1000"),
            answer("b", "203.0.113.30:1001"),
        ];
        let c = check(&symmetric, local, false);
        assert_eq!(c.status, Status::Warn, "{}", c.message);
        assert!(c.message.contains("symmetric"));
        assert_eq!(check(&symmetric, local, true).status, Status::Pass);

        let cgnat = [
            answer("a", "100.64.3.4:49152"),
            answer("b", "100.64.3.4:49152"),
        ];
        let c = check(&cgnat, local, false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("carrier-grade"), "{}", c.message);

        let one = [answer("a", "203.0.113.30:49152")];
        assert_eq!(check(&one, local, false).status, Status::Warn);
        let none = [Answer {
            server: "a".into(),
            mapped: Err("no answer".into()),
        }];
        assert_eq!(check(&none, local, false).status, Status::Fail);
        assert_eq!(check(&[], local, false).status, Status::Warn);
    }
}
