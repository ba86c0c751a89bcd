//! `switchyard doctor`: checks a media server's network set-up before clients find the
//! problems (issue 11). It reads the same settings as the media server and reports each check
//! as pass, warn or fail, every failure with the setting or firewall rule that fixes it.
//!
//! The checks: the listeners (bound here, or read from a running server with `--server`), the
//! TURN TLS certificate, the public address as two or more STUN servers see it, and, the one
//! that finds the seed's failures, reachability from outside: `--probe-turn` allocates a relay
//! on a TURN server elsewhere and sends STUN Binding requests from it to every announced
//! address and port, which doctor itself answers while it holds the ports (a pre-flight check
//! stands in for the server that is not running yet). A media server runs the checks that need
//! no outside help on itself at start (`at_start`).

mod at_start;
mod cert;
mod listeners;
mod plan;
mod probe;
mod report;
mod running;
mod stun_check;
mod turn_client;
mod verdict;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use switchyard_controlplane::listeners::Listeners;

use crate::{ConfigFile, MediaArgs};
pub use at_start::run as check_at_start;
use listeners::{Arrivals, Bound};
use plan::{PUBLIC_HOSTNAME, PUBLIC_IP, Plan};
use probe::{Kind, Outcome, Reach, Target};
use report::{Check, Fix, Report};
use verdict::{Announced, Candidate};

#[derive(Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    config: ConfigFile,
    #[command(flatten)]
    media: MediaArgs,
    /// A running server's HTTP address (e.g. http://127.0.0.1:8080): read its listeners from
    /// /api/listeners instead of binding the ports (which it holds).
    #[arg(long)]
    server: Option<String>,
    /// STUN servers (host:port) to ask for this host's public address; give two or more so
    /// their answers can be compared [default: DEPLOYMENTS:0:STUNSERVERS].
    #[arg(long = "stun-server")]
    stun_servers: Vec<String>,
    /// A TURN server outside this network (turn:HOST:PORT) to probe reachability from: a relay
    /// there sends STUN requests to every announced address and port.
    #[arg(long, value_name = "turn:HOST:PORT")]
    probe_turn: Option<String>,
    /// The REST shared secret of --probe-turn (coturn's static-auth-secret, or another
    /// Switchyard's TURN:SECRET).
    #[arg(long, env = "SWITCHYARD_PROBE_SECRET", hide_env_values = true)]
    probe_secret: Option<String>,
    /// How long to wait for each answer: 3, 5s.
    #[arg(long, default_value = "3", value_parser = crate::parse_ttl)]
    timeout: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed.
pub fn main(args: DoctorArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard doctor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    let report = runtime.block_on(run(args));
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The ports clients are told, and where each ends up locally: from the plan and the sockets
/// doctor bound, or from a running server.
#[derive(Default)]
struct Layout {
    media: Vec<u16>,
    /// Whether the media ports also take TCP (ICE-TCP).
    media_tcp: bool,
    /// Why the media ports are not probed, when they are not.
    media_unprobed: Option<String>,
    /// (advertised, local) per TURN listener.
    turn_udp: Option<(u16, u16)>,
    turn_tcp: Option<(u16, u16)>,
    turn_tls: Option<(u16, u16)>,
}

impl Layout {
    fn from_bound(plan: &Plan, bound: &Bound) -> Layout {
        let turn = plan.turn.as_ref();
        Layout {
            media: bound.media_ports(),
            media_tcp: !bound.media_tcp.is_empty(),
            media_unprobed: None,
            turn_udp: turn
                .filter(|_| bound.turn_udp.is_some())
                .map(|t| (t.advertised, t.port)),
            turn_tcp: turn
                .filter(|_| bound.turn_tcp.is_some())
                .map(|t| (t.advertised, t.port)),
            turn_tls: turn
                .and_then(|t| t.tls.as_ref())
                .filter(|_| bound.tls.is_some())
                .map(|t| (t.advertised, t.port)),
        }
    }

    fn from_server(l: &Listeners) -> Layout {
        let mut layout = Layout {
            media: l.media.iter().map(SocketAddr::port).collect(),
            media_tcp: l.ice_tcp,
            media_unprobed: Some(
                "a running server's media ports answer only the ICE checks of its own sessions, and doctor leaves them to those; stop it and run doctor without --server to probe them".into(),
            ),
            ..Layout::default()
        };
        if let Some(t) = &l.turn {
            let advertised = |secure: bool, tcp: bool, local: u16| {
                t.urls
                    .iter()
                    .filter_map(|u| running::parse_url(u))
                    .find(|u| u.secure == secure && u.tcp == tcp)
                    .map_or(local, |u| u.port)
            };
            layout.turn_udp = Some((advertised(false, false, t.udp.port()), t.udp.port()));
            layout.turn_tcp = Some((advertised(false, true, t.tcp.port()), t.tcp.port()));
            layout.turn_tls = t.tls.map(|a| (advertised(true, true, a.port()), a.port()));
        }
        layout
    }

    /// The media ports as targets at `ip`: UDP, and TCP when the workers listen on it.
    fn media_targets(&self, ip: IpAddr, tcp: bool) -> impl Iterator<Item = Target> + '_ {
        let kinds: &[Kind] = if tcp && self.media_tcp {
            &[Kind::Media, Kind::MediaTcp]
        } else {
            &[Kind::Media]
        };
        kinds.iter().flat_map(move |kind| {
            self.media.iter().map(move |p| Target {
                ip,
                port: *p,
                local: *p,
                kind: *kind,
            })
        })
    }

    /// What to probe at `ip`: everything for an announced address; for another candidate
    /// only the UDP ports, which are enough to tell whether it reaches this host.
    fn targets(&self, ip: IpAddr, announced: bool) -> Vec<Target> {
        let mut out = Vec::new();
        if self.media_unprobed.is_none() {
            out.extend(self.media_targets(ip, announced));
        }
        let mut add = |ports: Option<(u16, u16)>, kind| {
            if let Some((port, local)) = ports {
                out.push(Target {
                    ip,
                    port,
                    local,
                    kind,
                });
            }
        };
        add(self.turn_udp, Kind::TurnUdp);
        if announced {
            add(self.turn_tcp, Kind::TurnTcp);
            add(self.turn_tls, Kind::TurnTls);
        }
        out
    }
}

/// The socket STUN servers are asked from: the first media socket when doctor holds them (so
/// the mapping seen is the media's), else a fresh one on the media bind address.
async fn stun_socket(
    bind_ip: IpAddr,
    media: &mut Vec<tokio::net::UdpSocket>,
) -> Option<tokio::net::UdpSocket> {
    if media.is_empty() {
        return tokio::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0))
            .await
            .ok();
    }
    Some(media.remove(0))
}

async fn run(args: DoctorArgs) -> Report {
    let mut report = Report::default();
    let config = match args.config.load() {
        Ok(c) => c,
        Err(e) => {
            report.push(Check::named("config", "settings").fail(
                e.to_string(),
                Fix::todo("correct that setting (`switchyard config print` shows them all)"),
            ));
            return report;
        }
    };
    let plan = Plan::new(&config, &args.media, &args.stun_servers);
    let timeout = args.timeout;
    let arrivals = Arrivals::default();

    // 1. Listeners: bound here, or read from the running server.
    let mut media_sockets = Vec::new();
    let (layout, server) = match &args.server {
        Some(url) => match running::fetch(url, timeout).await {
            Ok(l) => {
                report.extend(running::checks(&format!("at {url}"), &l, &plan));
                (Layout::from_server(&l), Some(l))
            }
            Err(e) => {
                report.push(Check::named("server", "running server").fail(
                    e,
                    Fix::todo("start the server, or give --server its HTTP address (e.g. http://127.0.0.1:8080)"),
                ));
                (Layout::default(), None)
            }
        },
        None => {
            let (bound, checks) = listeners::bind(&plan);
            report.extend(checks);
            let layout = Layout::from_bound(&plan, &bound);
            for l in bound.media_tcp {
                if let Some(l) = l
                    .set_nonblocking(true)
                    .ok()
                    .and_then(|()| tokio::net::TcpListener::from_std(l).ok())
                {
                    tokio::spawn(listeners::accept_tcp(l));
                }
            }
            media_sockets = bound
                .media
                .into_iter()
                .filter_map(|s| tokio::net::UdpSocket::from_std(s).ok())
                .collect();
            answer_on(bound.turn_udp, bound.turn_tcp, bound.tls, &arrivals);
            (layout, None)
        }
    };

    // 3. What STUN servers see, from a socket like the media sockets.
    let socket = stun_socket(plan.bind_ip, &mut media_sockets).await;
    let local = socket.as_ref().and_then(|s| s.local_addr().ok());
    let answers = match &socket {
        Some(s) => stun_check::ask(s, &plan.stun_servers, timeout).await,
        None => Vec::new(),
    };
    // Now the STUN answers are read, the media sockets answer the probe.
    for s in socket
        .into_iter()
        .filter(|_| server.is_none())
        .chain(media_sockets)
    {
        tokio::spawn(listeners::answer_udp(s, arrivals.clone()));
    }
    let stun_ip = stun_check::consensus(&answers);
    let announced = announced(&plan, server.as_ref(), &answers);

    // 2. The certificate, against what clients will be handed.
    report.extend(cert::check_plan(&plan, &announced.ips));

    let resolved = match &plan.hostname {
        Some(h) => Some(
            tokio::net::lookup_host((h.as_str(), 0))
                .await
                .map(|addrs| {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.sort();
                    ips.dedup();
                    ips
                })
                .map_err(|e| e.to_string()),
        ),
        None => None,
    };
    let candidates = candidates(&plan, &announced, &answers, resolved.as_ref());

    // 4. Reachability from outside.
    let probe = match (&args.probe_turn, &args.probe_secret) {
        (None, _) => None,
        (Some(_), None) => {
            report.push(Check::named("probe", "outside probe").fail(
                "--probe-turn needs the TURN server's REST secret",
                Fix::todo("pass --probe-secret (or SWITCHYARD_PROBE_SECRET)"),
            ));
            None
        }
        (Some(url), Some(secret)) => {
            let targets: Vec<Target> = candidates
                .iter()
                .filter(|c| c.ip.is_ipv4())
                .flat_map(|c| layout.targets(c.ip, announced.ips.contains(&c.ip)))
                .collect();
            let mut p = probe::run(url, secret, &targets, &arrivals, timeout).await;
            if let Some(why) = &layout.media_unprobed {
                for ip in &announced.ips {
                    p.outcomes
                        .extend(layout.media_targets(*ip, true).map(|target| Outcome {
                            target,
                            reach: Reach::NotProbed(why.clone()),
                        }));
                }
            }
            Some(p)
        }
    };

    let ports_reached = probe.as_ref().is_some_and(|p| {
        p.relay.is_ok()
            && announced
                .ips
                .iter()
                .all(|ip| p.all_answered(*ip, Kind::Media))
    });
    report.push(stun_check::check(&answers, local, ports_reached));
    report.push(verdict::public_ip(
        &announced,
        plan.configured_public,
        stun_ip,
        &candidates,
        probe.as_ref(),
    ));
    if let (Some(name), Some(resolved)) = (&plan.hostname, &resolved) {
        report.push(verdict::hostname(
            name,
            resolved,
            &announced,
            probe.as_ref(),
        ));
    }
    match &probe {
        Some(p) => report.extend(verdict::reachability(
            p,
            &announced.ips,
            &candidates,
            plan.media_ports,
        )),
        None if args.probe_turn.is_none() => report.push(
            Check::named("probe", "outside probe").warn(
                "not run, so nothing was checked from outside (a closed firewall port or a wrong public address goes unnoticed)",
                Some(Fix::todo(
                    "pass --probe-turn turn:HOST:PORT --probe-secret S: a TURN server outside this network (e.g. coturn with use-auth-secret)",
                )),
            ),
        ),
        None => {}
    }
    report
}

/// Starts answering on the TURN sockets doctor holds.
fn answer_on(
    udp: Option<std::net::UdpSocket>,
    tcp: Option<std::net::TcpListener>,
    tls: Option<std::net::TcpListener>,
    arrivals: &Arrivals,
) {
    if let Some(s) = udp.and_then(|s| {
        s.set_nonblocking(true).ok()?;
        tokio::net::UdpSocket::from_std(s).ok()
    }) {
        tokio::spawn(listeners::answer_udp(s, arrivals.clone()));
    }
    for l in [tcp, tls].into_iter().flatten() {
        if let Some(l) = l
            .set_nonblocking(true)
            .ok()
            .and_then(|()| tokio::net::TcpListener::from_std(l).ok())
        {
            tokio::spawn(listeners::answer_tcp(l, arrivals.clone()));
        }
    }
}

/// What the media server would announce: the running server's own list; else the configured
/// address; else the first STUN answer (what `media-server` does); else interface addresses.
fn announced(plan: &Plan, server: Option<&Listeners>, answers: &[stun_check::Answer]) -> Announced {
    if let Some(l) = server {
        return Announced {
            ips: l.announce.clone(),
            source: "announced by the running server".into(),
        };
    }
    if let Some(ip) = plan.configured_public {
        return Announced {
            ips: vec![ip],
            source: PUBLIC_IP.into(),
        };
    }
    if let Some(m) = answers.iter().find_map(|a| a.mapped.as_ref().ok()) {
        return Announced {
            ips: vec![m.ip()],
            source: "found by STUN".into(),
        };
    }
    Announced {
        ips: crate::announced(None, plan.bind_ip),
        source: "interface addresses".into(),
    }
}

/// Every address that might be the one clients reach this host on, announced first.
fn candidates(
    plan: &Plan,
    announced: &Announced,
    answers: &[stun_check::Answer],
    resolved: Option<&Result<Vec<IpAddr>, String>>,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = announced
        .ips
        .iter()
        .map(|ip| Candidate {
            ip: *ip,
            source: announced.source.clone(),
        })
        .collect();
    let mut add = |ip: IpAddr, source: String| {
        if !out.iter().any(|c| c.ip == ip) {
            out.push(Candidate { ip, source });
        }
    };
    if let Some(ip) = plan.configured_public {
        add(ip, PUBLIC_IP.into());
    }
    if let (Some(name), Some(Ok(ips))) = (&plan.hostname, resolved) {
        for ip in ips {
            add(*ip, format!("{PUBLIC_HOSTNAME} {name}"));
        }
    }
    for a in answers {
        if let Ok(m) = &a.mapped {
            add(m.ip(), format!("STUN {}", a.server));
        }
    }
    // A public address on an interface is what a 1:1 NAT-less host is reached on.
    for i in if_addrs::get_if_addrs().unwrap_or_default() {
        if stun_check::not_public(i.ip()).is_none() {
            add(i.ip(), format!("interface {}", i.name));
        }
    }
    out
}
