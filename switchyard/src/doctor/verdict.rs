//! Turning the evidence (settings, STUN answers, DNS, the probe) into checks with fixes. Pure
//! functions, so each judgement is tested without a network.
//!
//! How doctor knows the right public address: STUN only ever shows the address this host goes
//! *out* through. Behind a NAT whose outbound address differs from its inbound one (the seed's
//! failure: SNAT to one address, 1:1 DNAT from another) that is the wrong one to announce, and
//! nothing inside the host can tell. So doctor collects candidates (the configured value, the
//! STUN answers, what EXTERNAL:PUBLICHOSTNAME resolves to, public interface addresses) and
//! lets the outside TURN probe test each: an address whose ports answer a request sent from
//! the internet is one clients can use. Without the probe a disagreement is reported, not
//! settled.

use std::net::IpAddr;

use super::listeners::list_ports;
use super::plan::{PUBLIC_HOSTNAME, PUBLIC_IP};
use super::probe::{Kind, Probe, Reach};
use super::report::{Check, Fix};
use super::stun_check::not_public;

/// An address that might be the one clients reach this host on, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub ip: IpAddr,
    pub source: String,
}

/// What goes in ICE candidates, and why.
#[derive(Debug, Clone)]
pub struct Announced {
    pub ips: Vec<IpAddr>,
    pub source: String,
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A probe that ran (its relay was allocated).
fn usable(probe: Option<&Probe>) -> Option<&Probe> {
    probe.filter(|p| p.relay.is_ok())
}

pub fn public_ip(
    announced: &Announced,
    configured: Option<IpAddr>,
    stun: Option<IpAddr>,
    candidates: &[Candidate],
    probe: Option<&Probe>,
) -> Check {
    let check = Check::named("public_ip", "public IP");
    let list = join(&announced.ips);
    let source = &announced.source;
    if let Some(p) = usable(probe) {
        let unreachable: Vec<IpAddr> = announced
            .ips
            .iter()
            .copied()
            .filter(|ip| !p.reaches(*ip))
            .collect();
        if unreachable.is_empty() {
            return match (configured, stun) {
                (Some(c), Some(s)) if c != s => check.pass(format!(
                    "{list} ({source}) answers from outside; STUN sees {s}, the address this host goes out through: keep {PUBLIC_IP}={c} set, without it {s} would be announced"
                )),
                _ => check.pass(format!("{list} ({source}) answers from outside")),
            };
        }
        let other = candidates
            .iter()
            .find(|c| !announced.ips.contains(&c.ip) && p.reaches(c.ip));
        let missing = join(&unreachable);
        return match other {
            Some(c) => {
                let why = if stun.is_some_and(|s| unreachable.contains(&s)) {
                    format!(
                        ": STUN sees the address this host goes out through ({}), which is not the one it is reached on",
                        join(&unreachable)
                    )
                } else {
                    String::new()
                };
                check.fail(
                    format!(
                        "announced {missing} ({source}) does not answer from outside, but {} ({}) does{why}",
                        c.ip, c.source
                    ),
                    Fix::set(PUBLIC_IP, c.ip, ""),
                )
            }
            None => {
                let tried: Vec<String> = candidates
                    .iter()
                    .filter(|c| !announced.ips.contains(&c.ip))
                    .map(|c| format!("{} ({})", c.ip, c.source))
                    .collect();
                let tried = if tried.is_empty() {
                    String::new()
                } else {
                    format!(", nor does {}", tried.join(", "))
                };
                check.fail(
                    format!(
                        "announced {missing} ({source}) answers on no port from outside{tried}"
                    ),
                    Fix::todo(format!(
                        "open the ports below in the firewall/NAT; if clients reach this host on another address, set {PUBLIC_IP} to it (or {PUBLIC_HOSTNAME} to a name that resolves to it, so doctor tries it)"
                    )),
                )
            }
        };
    }
    match (configured, stun) {
        (Some(c), Some(s)) if c == s => {
            check.pass(format!("{c} ({PUBLIC_IP}) is what the STUN servers see"))
        }
        (Some(c), Some(s)) => check.fail(
            format!("{PUBLIC_IP} is {c} but the STUN servers see {s}"),
            Fix::set(
                PUBLIC_IP,
                s,
                &format!(
                    "unless this host is reached on {c} and only goes out through {s}: --probe-turn tells which answers from outside"
                ),
            ),
        ),
        (Some(c), None) => check.warn(
            format!("{c} ({PUBLIC_IP}) is not verified: no STUN answer and no --probe-turn"),
            Some(Fix::todo("pass --stun-server (two) and --probe-turn to verify it")),
        ),
        (None, Some(s)) => check.pass(format!(
            "announcing {s}, found by STUN: the address this host goes out through (--probe-turn checks it is also the one it is reached on)"
        )),
        (None, None) => {
            let private: Vec<IpAddr> = announced
                .ips
                .iter()
                .copied()
                .filter(|ip| not_public(*ip).is_some())
                .collect();
            if private.is_empty() {
                check.pass(format!("announcing {list} ({source})"))
            } else {
                check.warn(
                    format!(
                        "announcing {list} ({source}); {} cannot be reached from the internet (not a public address)",
                        join(&private)
                    ),
                    Some(Fix::todo(format!(
                        "set {PUBLIC_IP} to this host's public address, or pass --stun-server to find it"
                    ))),
                )
            }
        }
    }
}

/// EXTERNAL:PUBLICHOSTNAME against the announced address: TURNS clients use the name, ICE
/// candidates the address, and both must reach this host.
pub fn hostname(
    name: &str,
    resolved: &Result<Vec<IpAddr>, String>,
    announced: &Announced,
    probe: Option<&Probe>,
) -> Check {
    let check = Check::named("public_hostname", "public hostname");
    let list = join(&announced.ips);
    let ips = match resolved {
        Ok(ips) if !ips.is_empty() => ips,
        Ok(_) | Err(_) => {
            let why = resolved
                .as_ref()
                .err()
                .cloned()
                .unwrap_or_else(|| "no address".into());
            return check.fail(
                format!("{PUBLIC_HOSTNAME}={name} does not resolve ({why})"),
                Fix::todo(format!("publish a DNS A record {name} -> {list}")),
            );
        }
    };
    let resolved_list = join(ips);
    if ips.iter().any(|ip| announced.ips.contains(ip)) {
        return check.pass(format!(
            "{name} resolves to {resolved_list}, which is announced"
        ));
    }
    if let Some(p) = usable(probe) {
        let name_reaches = ips.iter().any(|ip| p.reaches(*ip));
        let announced_reaches = announced.ips.iter().any(|ip| p.reaches(*ip));
        if name_reaches {
            return check.pass(format!(
                "{name} resolves to {resolved_list}, which answers from outside (the announced {list} is judged under public IP)"
            ));
        }
        if announced_reaches {
            return check.fail(
                format!(
                    "{name} resolves to {resolved_list}, which does not answer from outside: TURNS clients using the name will fail"
                ),
                Fix::todo(format!("point the DNS record of {name} at {list}")),
            );
        }
    }
    check.warn(
        format!(
            "{name} resolves to {resolved_list}, but {list} is announced: TURNS clients and ICE candidates go to different addresses"
        ),
        Some(Fix::todo(format!(
            "make them agree: set {PUBLIC_IP} to the address of {name}, or fix its DNS record"
        ))),
    )
}

/// One check per announced address and kind of port, each failure with the firewall rule or
/// setting that fixes it.
///
/// When nothing at an announced address answers but another candidate does, the address is
/// the wrong one rather than the ports closed, and the fix says so.
pub fn reachability(
    probe: &Probe,
    announced: &[IpAddr],
    candidates: &[Candidate],
    media_range: (u16, u16),
) -> Vec<Check> {
    let mut checks = Vec::new();
    let inbound = candidates
        .iter()
        .find(|c| !announced.contains(&c.ip) && probe.reaches(c.ip));
    let wrong_address = |ip: IpAddr, open: String| -> Fix {
        match inbound {
            Some(c) if !probe.reaches(ip) => Fix::set(
                PUBLIC_IP,
                c.ip,
                &format!("{ip} is not where clients reach this host; {} is", c.ip),
            ),
            _ => Fix::todo(open),
        }
    };
    if let Err(e) = &probe.relay {
        checks.push(Check::named("probe", "outside probe").fail(
            format!("cannot use {}: {e}", probe.server),
            Fix::todo(
                "check --probe-turn (turn:HOST:PORT of a TURN server outside this network) and --probe-secret (its REST secret, use-auth-secret)",
            ),
        ));
        return checks;
    }
    if let Some(problem) = &probe.tcp_problem {
        checks.push(Check::named("probe_tcp", "outside probe (TCP)").warn(
            format!("{problem}: TCP ports not checked"),
            Some(Fix::todo(
                "use a probe server with TCP relays (coturn does by default)",
            )),
        ));
    }
    for ip in announced {
        checks.extend(media(probe, *ip, Kind::Media, media_range, &wrong_address));
        checks.extend(media(
            probe,
            *ip,
            Kind::MediaTcp,
            media_range,
            &wrong_address,
        ));
        for o in probe.outcomes.iter().filter(|o| o.target.ip == *ip) {
            let t = &o.target;
            let (id, title, proto, setting) = match t.kind {
                Kind::Media | Kind::MediaTcp => continue,
                Kind::TurnUdp => ("reach_turn_udp", "reach TURN UDP", "udp", "TURN:PORT"),
                Kind::TurnTcp => ("reach_turn_tcp", "reach TURN TCP", "tcp", "TURN:PORT"),
                Kind::TurnTls => ("reach_turn_tls", "reach TURN TLS", "tcp", "TURN:TLSPORT"),
            };
            let check = Check::named(format!("{id}_{ip}"), title);
            let port = t.port;
            let open = if t.port == t.local {
                format!(
                    "open {} {port} to this host in the firewall/NAT ({setting})",
                    proto.to_uppercase()
                )
            } else {
                let advertised = if t.kind == Kind::TurnTls {
                    "TURN:ADVERTISEDTLSPORT"
                } else {
                    "TURN:ADVERTISEDPORT"
                };
                format!(
                    "forward {} {port} to this host's port {} in the firewall/NAT ({advertised} -> {setting})",
                    proto.to_uppercase(),
                    t.local
                )
            };
            let at = format!("{ip}:{port}/{proto}");
            checks.push(match &o.reach {
                Reach::Answered => check.pass(format!("{at} answers from outside")),
                Reach::Connected { verified: true } => check.pass(format!(
                    "{at} accepts connections from outside (and answered STUN over it)"
                )),
                Reach::Connected { verified: false } => {
                    check.pass(format!("{at} accepts connections from outside"))
                }
                Reach::ArrivedUnanswered => check.fail(
                    format!("{at}: requests from outside arrive, but the answers never get back out"),
                    Fix::todo(format!(
                        "let this host's answers out through the same NAT mapping (1:1, outbound as inbound); {open}"
                    )),
                ),
                Reach::NoAnswer => check.fail(
                    format!(
                        "{at} unreachable from outside (no answer through {} within {:?})",
                        probe.server, probe.timeout
                    ),
                    wrong_address(*ip, open),
                ),
                Reach::Refused(code, reason) => check.fail(
                    format!("{at} unreachable from outside: the relay's connection failed ({code} {reason})"),
                    wrong_address(*ip, open),
                ),
                Reach::NotProbed(why) => check.warn(format!("{at} not checked: {why}"), None),
            });
        }
    }
    checks
}

/// The media ports of one address and protocol (`Kind::Media` for UDP, `Kind::MediaTcp` for
/// ICE-TCP), as one check. Over TCP an accepted connection is the answer, and the fix also
/// offers --no-ice-tcp: a server that cannot open TCP still serves UDP and TURN clients.
fn media(
    probe: &Probe,
    ip: IpAddr,
    kind: Kind,
    (lo, hi): (u16, u16),
    wrong_address: &dyn Fn(IpAddr, String) -> Fix,
) -> Option<Check> {
    let outcomes: Vec<_> = probe
        .outcomes
        .iter()
        .filter(|o| o.target.ip == ip && o.target.kind == kind)
        .collect();
    let first = outcomes.first()?;
    let (check, proto, answer) = if kind == Kind::MediaTcp {
        (
            Check::named(format!("reach_media_tcp_{ip}"), "reach media TCP"),
            "TCP",
            "accept connections",
        )
    } else {
        (
            Check::named(format!("reach_media_{ip}"), "reach media UDP"),
            "UDP",
            "answer",
        )
    };
    if let Reach::NotProbed(why) = &first.reach {
        return Some(check.warn(
            format!("media {proto} ports on {ip} not checked: {why}"),
            None,
        ));
    }
    let ports = |pred: &dyn Fn(&Reach) -> bool| -> Vec<u16> {
        outcomes
            .iter()
            .filter(|o| pred(&o.reach))
            .map(|o| o.target.port)
            .collect()
    };
    let reached = |r: &Reach| matches!(r, Reach::Answered | Reach::Connected { .. });
    let answered = ports(&reached);
    let lost = ports(&|r| *r == Reach::ArrivedUnanswered);
    let silent = ports(&|r| !reached(r) && *r != Reach::ArrivedUnanswered);
    if lost.is_empty() && silent.is_empty() {
        return Some(check.pass(format!(
            "{ip} {proto} {} {answer} from outside",
            list_ports(&answered)
        )));
    }
    let open = if kind == Kind::MediaTcp {
        format!(
            "open TCP {lo}-{hi} (the media ports, --media-ports, for ICE-TCP) to this host in the firewall/NAT, or start the server with --no-ice-tcp so clients are not offered TCP candidates"
        )
    } else {
        format!(
            "open UDP {lo}-{hi} (the media ports, --media-ports) to this host in the firewall/NAT"
        )
    };
    if !lost.is_empty() {
        return Some(check.fail(
            format!(
                "{ip} {proto} {}: requests from outside arrive, but the answers never get back out",
                list_ports(&lost)
            ),
            Fix::todo(format!(
                "let this host's answers out through the same NAT mapping (1:1, outbound as inbound); {open}"
            )),
        ));
    }
    Some(check.fail(
        format!(
            "{ip} {proto} {} unreachable from outside{}",
            list_ports(&silent),
            if answered.is_empty() {
                String::new()
            } else {
                format!(" ({} {answer})", list_ports(&answered))
            }
        ),
        wrong_address(ip, open),
    ))
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::super::probe::{Outcome, Target};
    use super::super::report::Status;
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn probe(answering: &[&str]) -> Probe {
        let mut outcomes = Vec::new();
        for addr in ["203.0.113.20", "203.0.113.30"] {
            for (port, kind) in [
                (49152, Kind::Media),
                (3478, Kind::TurnUdp),
                (3478, Kind::TurnTcp),
            ] {
                let yes = answering.contains(&addr);
                outcomes.push(Outcome {
                    target: Target {
                        ip: ip(addr),
                        port,
                        local: port,
                        kind,
                    },
                    reach: match (kind, yes) {
                        (Kind::TurnTcp, true) => Reach::Connected { verified: true },
                        (_, true) => Reach::Answered,
                        (_, false) => Reach::NoAnswer,
                    },
                });
            }
        }
        Probe {
            server: "turn:198.51.100.10:3478".into(),
            relay: Ok("198.51.100.10:50000".parse().unwrap()),
            tcp_problem: None,
            outcomes,
            timeout: std::time::Duration::from_secs(3),
        }
    }

    fn candidates() -> Vec<Candidate> {
        vec![
            Candidate {
                ip: ip("203.0.113.30"),
                source: "STUN".into(),
            },
            Candidate {
                ip: ip("203.0.113.20"),
                source: "EXTERNAL:PUBLICHOSTNAME media.example.test".into(),
            },
        ]
    }

    /// The seed's first failure: STUN sees the outbound address, clients come in on another.
    #[test]
    fn outbound_address_announced_names_the_inbound_one() {
        let announced = Announced {
            ips: vec![ip("203.0.113.30")],
            source: "STUN".into(),
        };
        let p = probe(&["203.0.113.20"]);
        let c = public_ip(
            &announced,
            None,
            Some(ip("203.0.113.30")),
            &candidates(),
            Some(&p),
        );
        assert_eq!(c.status, Status::Fail, "{}", c.message);
        let fix = c.fix.unwrap();
        assert_eq!(fix.setting.as_deref(), Some(PUBLIC_IP));
        assert_eq!(fix.value.as_deref(), Some("203.0.113.20"));
        assert!(c.message.contains("goes out through"), "{}", c.message);

        // Set right, it passes, and says why the setting must stay.
        let announced = Announced {
            ips: vec![ip("203.0.113.20")],
            source: PUBLIC_IP.into(),
        };
        let c = public_ip(
            &announced,
            Some(ip("203.0.113.20")),
            Some(ip("203.0.113.30")),
            &candidates(),
            Some(&p),
        );
        assert_eq!(c.status, Status::Pass, "{}", c.message);
        assert!(c.message.contains("keep"), "{}", c.message);
    }

    #[test]
    fn without_the_probe_a_disagreement_fails_and_agreement_passes() {
        let announced = Announced {
            ips: vec![ip("203.0.113.20")],
            source: PUBLIC_IP.into(),
        };
        let c = public_ip(
            &announced,
            Some(ip("203.0.113.20")),
            Some(ip("203.0.113.30")),
            &[],
            None,
        );
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.fix.unwrap().value.as_deref(), Some("203.0.113.30"));
        let c = public_ip(
            &announced,
            Some(ip("203.0.113.20")),
            Some(ip("203.0.113.20")),
            &[],
            None,
        );
        assert_eq!(c.status, Status::Pass);
        let private = Announced {
            ips: vec![ip("10.0.0.2")],
            source: "interface addresses".into(),
        };
        assert_eq!(
            public_ip(&private, None, None, &[], None).status,
            Status::Warn
        );
    }

    /// The seed's second failure: the TURN port is closed at the firewall.
    #[test]
    fn closed_ports_name_the_firewall_rule() {
        let mut p = probe(&["203.0.113.20"]);
        for o in p.outcomes.iter_mut() {
            if o.target.kind != Kind::Media {
                o.reach = Reach::NoAnswer;
            }
        }
        let checks = reachability(&p, &[ip("203.0.113.20")], &candidates(), (49152, 65535));
        let by_id = |id: &str| checks.iter().find(|c| c.id == id).unwrap();
        assert_eq!(by_id("reach_media_203.0.113.20").status, Status::Pass);
        let udp = by_id("reach_turn_udp_203.0.113.20");
        assert_eq!(udp.status, Status::Fail);
        assert!(
            udp.message.contains("203.0.113.20:3478/udp unreachable"),
            "{}",
            udp.message
        );
        assert_eq!(
            udp.fix.as_ref().unwrap().text,
            "open UDP 3478 to this host in the firewall/NAT (TURN:PORT)"
        );
        let tcp = by_id("reach_turn_tcp_203.0.113.20");
        assert_eq!(tcp.status, Status::Fail);
        assert!(tcp.fix.as_ref().unwrap().text.contains("open TCP 3478"));
    }

    /// ICE-TCP at the media ports: an accepted connection passes; a dropped or refused one
    /// fails with the TCP range to open or --no-ice-tcp; a running server's are not probed.
    #[test]
    fn media_tcp_ports_are_judged_on_their_own() {
        let media_tcp = |port: u16, reach: Reach| Outcome {
            target: Target {
                ip: ip("203.0.113.20"),
                port,
                local: port,
                kind: Kind::MediaTcp,
            },
            reach,
        };
        let announced = [ip("203.0.113.20")];
        let judge = |p: &Probe| {
            reachability(p, &announced, &candidates(), (49152, 49200))
                .into_iter()
                .find(|c| c.id == "reach_media_tcp_203.0.113.20")
                .unwrap()
        };

        let mut p = probe(&["203.0.113.20"]);
        assert!(
            reachability(&p, &announced, &candidates(), (49152, 49200))
                .iter()
                .all(|c| !c.id.starts_with("reach_media_tcp")),
            "no TCP targets, no TCP check"
        );
        p.outcomes
            .push(media_tcp(49152, Reach::Connected { verified: false }));
        p.outcomes
            .push(media_tcp(49153, Reach::Connected { verified: false }));
        let c = judge(&p);
        assert_eq!(c.status, Status::Pass, "{}", c.message);
        assert_eq!(
            c.message,
            "203.0.113.20 TCP 49152-49153 accept connections from outside"
        );

        p.outcomes.pop();
        p.outcomes
            .push(media_tcp(49153, Reach::Refused(447, "timeout".into())));
        let c = judge(&p);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.message,
            "203.0.113.20 TCP 49153 unreachable from outside (49152 accept connections)"
        );
        let fix = c.fix.unwrap().text;
        assert!(fix.starts_with("open TCP 49152-49200"), "{fix}");
        assert!(fix.contains("--no-ice-tcp"), "{fix}");
        // UDP is judged apart, and still passes.
        let checks = reachability(&p, &announced, &candidates(), (49152, 49200));
        let udp = checks
            .iter()
            .find(|c| c.id == "reach_media_203.0.113.20")
            .unwrap();
        assert_eq!(udp.status, Status::Pass);

        p.outcomes.retain(|o| o.target.kind != Kind::MediaTcp);
        p.outcomes.push(media_tcp(
            49152,
            Reach::NotProbed("a running server".into()),
        ));
        let c = judge(&p);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("media TCP ports"), "{}", c.message);
    }

    #[test]
    fn a_wrong_address_is_not_blamed_on_the_firewall() {
        let p = probe(&["203.0.113.20"]);
        let checks = reachability(&p, &[ip("203.0.113.30")], &candidates(), (49152, 65535));
        assert!(!checks.is_empty());
        for c in &checks {
            assert_eq!(c.status, Status::Fail, "{}", c.message);
            assert_eq!(
                c.fix.as_ref().unwrap().value.as_deref(),
                Some("203.0.113.20"),
                "{}",
                c.id
            );
        }
    }

    #[test]
    fn hostname_against_announced() {
        let announced = Announced {
            ips: vec![ip("203.0.113.30")],
            source: "STUN".into(),
        };
        let name = "media.example.test";
        let to_20 = Ok(vec![ip("203.0.113.20")]);
        assert_eq!(
            hostname(name, &to_20, &announced, None).status,
            Status::Warn
        );
        let p = probe(&["203.0.113.20"]);
        assert_eq!(
            hostname(name, &to_20, &announced, Some(&p)).status,
            Status::Pass
        );
        let p = probe(&["203.0.113.30"]);
        assert_eq!(
            hostname(name, &to_20, &announced, Some(&p)).status,
            Status::Fail
        );
        assert_eq!(
            hostname(name, &Err("NXDOMAIN".into()), &announced, None).status,
            Status::Fail
        );
    }
}
