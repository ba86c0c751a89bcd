//! `loadtest run`: the named scenarios, and what `capacity` shares with them: setting up the
//! server and generator, following progress once a second, and measuring a window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_controlplane::dev::DevApplication;

use crate::generator::{Generator, Media, Signalling, Target};
use crate::net::Net;
use crate::procfs::{self, CpuSample};
use crate::report::{self, Report};
use crate::server::Launched;
use crate::signal::Tokens;
use crate::stats::{self, Interval, Totals};
use crate::{Error, RunArgs, TargetArgs, janus};

/// Scenarios named like LiveKit's published load tests, so the numbers compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    AudioRoom,
    Meeting,
    Livestream,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::AudioRoom => "audio-room",
            Scenario::Meeting => "meeting",
            Scenario::Livestream => "livestream",
        }
    }
}

/// Which media server is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sfu {
    Switchyard,
    /// Janus's videoroom over its HTTP API (--janus-url); start it with scripts/janus.sh.
    Janus,
}

/// The generator and the server under test, ready to go.
pub struct Setup {
    pub generator: Arc<Generator>,
    /// Kept so the server stops when the run ends.
    _server: Option<Launched>,
    /// Janus: the session and handle that made the room (kept alive with it).
    _janus: Option<(janus::Session, janus::Handle)>,
    pub server_pid: Option<u32>,
    pub io_backend: Option<String>,
    /// The server's media workers, as its metrics say (1 for Janus, or when they do not).
    pub server_workers: usize,
    pub signalling: Signalling,
}

impl Setup {
    /// Starts (or finds) the server `sfu` under test, pins this thread and the net thread to
    /// the generator's core, and makes the channel (a Janus room) to load.
    pub async fn new(
        t: &TargetArgs,
        sfu: Sfu,
        default_signalling: Signalling,
    ) -> Result<Setup, Error> {
        let cores = core_affinity::get_core_ids().unwrap_or_default().len();
        let generator_core = t.generator_core.or_else(|| (cores >= 2).then(|| cores - 1));
        let signalling = t.signalling.unwrap_or(default_signalling);
        let (target, server, server_pid, janus_control) = match sfu {
            Sfu::Janus => {
                let control = janus::Session::connect(&t.janus_url)
                    .await
                    .map_err(|source| Error::JanusUnreachable {
                        url: t.janus_url.clone(),
                        source,
                    })?;
                let handle = control
                    .attach_videoroom()
                    .await
                    .map_err(Error::JanusVideoroom)?;
                let room = handle
                    .create_room(None, 1000)
                    .await
                    .map_err(Error::JanusRoom)?;
                eprintln!(
                    "Janus at {} (pid {:?}), room {room}",
                    t.janus_url, t.janus_pid
                );
                (
                    Target::Janus {
                        url: t.janus_url.clone(),
                        room,
                    },
                    None,
                    t.janus_pid,
                    Some((control, handle)),
                )
            }
            Sfu::Switchyard => {
                let (base, tokens, server) = switchyard(t).await?;
                let pid = server.as_ref().map(Launched::pid).or(t.server_pid);
                (
                    Target::Switchyard {
                        base,
                        tokens,
                        signalling,
                    },
                    server,
                    pid,
                    None,
                )
            }
        };
        // The signalling tasks run on this thread: keep them on the generator's core too.
        if let Some(id) = generator_core {
            core_affinity::set_for_current(core_affinity::CoreId { id });
        }
        let (io_backend, server_workers) = match &target {
            Target::Switchyard { base, .. } => match media_info(base).await {
                Some((backend, workers)) => (Some(backend), workers),
                None => (None, 1),
            },
            Target::Janus { .. } => (None, 1),
        };
        // The net threads on the generator's core and the ones below it.
        let net_cores: Vec<Option<usize>> = (0..usize::from(t.generator_threads))
            .map(|i| generator_core.and_then(|c| c.checked_sub(i)))
            .collect();
        let net = Net::spawn(&net_cores).map_err(Error::NetThread)?;
        let channel = t
            .channel
            .clone()
            .unwrap_or_else(|| format!("load-{:06x}", rand::random::<u32>() & 0xff_ffff));
        let generator = Generator::new(net, target, channel)?;
        Ok(Setup {
            generator,
            _server: server,
            _janus: janus_control,
            server_pid,
            io_backend,
            server_workers,
            signalling,
        })
    }

    pub fn sfu(&self) -> &'static str {
        self.generator.target().sfu()
    }

    pub fn signalling_name(&self) -> &'static str {
        match (self.generator.target(), self.signalling) {
            (Target::Janus { .. }, _) => "janus-http",
            (_, Signalling::Sync) => "sync",
            (_, Signalling::Whip) => "whip",
        }
    }
}

/// The Switchyard to load: `--url`, or one started here on `--server-core`.
async fn switchyard(t: &TargetArgs) -> Result<(String, Tokens, Option<Launched>), Error> {
    if let Some(url) = &t.url {
        let tokens = match (&t.application, &t.secret) {
            (Some(a), Some(s)) => Tokens {
                application: a.clone(),
                secret: s.clone(),
            },
            _ => {
                let dev = DevApplication::load_or_create(&t.data_dir).map_err(|source| {
                    Error::DevApplication {
                        dir: t.data_dir.clone(),
                        source,
                    }
                })?;
                Tokens {
                    application: dev.application_id,
                    secret: dev.secret,
                }
            }
        };
        return Ok((url.trim_end_matches('/').to_string(), tokens, None));
    }
    let exe = match &t.server_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().map_err(Error::OwnBinary)?,
    };
    let launched = Launched::start(
        &exe,
        Some(t.server_core),
        t.server_workers,
        t.io_backend.as_deref(),
    )
    .await?;
    eprintln!(
        "started switchyard all-in-one (pid {}) with {} worker(s), from core {} on, at http://{}",
        launched.pid(),
        t.server_workers,
        t.server_core,
        launched.http
    );
    Ok((
        format!("http://{}", launched.http),
        launched.tokens.clone(),
        Some(launched),
    ))
}

/// The server's I/O backend and media workers, from its metrics.
async fn media_info(base: &str) -> Option<(String, usize)> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    parse_media_info(&text)
}

/// `switchyard_media_info`'s labels: the backend, and the workers (1 where a build does not
/// say).
fn parse_media_info(metrics: &str) -> Option<(String, usize)> {
    let line = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_media_info"))?;
    let label = |name: &str| {
        let rest = line.split(&format!("{name}=\"")).nth(1)?;
        Some(rest.split('"').next()?.to_string())
    };
    let workers = label("workers").and_then(|w| w.parse().ok()).unwrap_or(1);
    Some((label("io_backend")?, workers))
}

/// One moment: the generator's totals and both processes' CPU.
#[derive(Clone)]
pub struct Snapshot {
    pub totals: Totals,
    server: Option<CpuSample>,
    generator: Option<CpuSample>,
}

/// Follows the net thread's once-a-second snapshots and prints a progress line for each.
pub struct Progress {
    last: Option<Snapshot>,
    server_pid: Option<u32>,
    started: Instant,
}

impl Progress {
    pub fn new(setup: &Setup) -> Progress {
        Progress {
            last: None,
            server_pid: setup.server_pid,
            started: Instant::now(),
        }
    }

    /// Waits for the next snapshot and prints the progress line.
    pub async fn next(&mut self, setup: &Setup, label: &str) -> Snapshot {
        let seen = self.last.as_ref().map_or(-1.0, |s| s.totals.at);
        let deadline = Instant::now() + Duration::from_millis(1500);
        let totals = loop {
            let t = setup.generator.net.totals();
            if t.at != seen || Instant::now() > deadline {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let snap = Snapshot {
            totals,
            server: self.server_pid.and_then(procfs::sample),
            generator: procfs::sample(std::process::id()),
        };
        if let Some(last) = &self.last {
            let i = Interval::between(&last.totals, &snap.totals);
            let server = cpu(&last.server, &snap.server).map_or("-".into(), |c| format!("{c:.2}"));
            let generator =
                cpu(&last.generator, &snap.generator).map_or("-".into(), |c| format!("{c:.2}"));
            eprintln!(
                "[{:>4.0}s] {label}: connected {} failed {} | in {:.0} pps out {:.0} pps | loss {:.2}% | p99 {} | cpu server {server} generator {generator}",
                self.started.elapsed().as_secs_f64(),
                snap.totals.connected,
                snap.totals.failed,
                i.packets_in_per_s,
                i.packets_out_per_s,
                i.loss * 100.0,
                i.latency_p99_ms
                    .map_or("-".into(), |v| format!("{v:.1} ms")),
            );
        }
        self.last = Some(snap.clone());
        snap
    }
}

fn cpu(a: &Option<CpuSample>, b: &Option<CpuSample>) -> Option<f64> {
    Some(procfs::usage(a.as_ref()?, b.as_ref()?).total)
}

/// What a measured window came to.
pub struct Window {
    pub interval: Interval,
    pub server_cpu: Option<procfs::CpuUsage>,
    /// The generator process's CPU, in cores per net thread.
    pub generator_cpu: Option<f64>,
    pub end: Totals,
}

impl Window {
    /// The generator could not keep up: its net threads or their cores were (nearly) full, or
    /// media went out late. Such a window measures the generator, not the server.
    pub fn generator_saturated(&self) -> bool {
        self.interval.generator_net_cpu > 0.9
            || self.generator_cpu.is_some_and(|c| c > 0.95)
            || self.end.send_lag > Duration::from_millis(20)
    }

    /// Server CPU per packet it forwarded to the generator, in microseconds.
    pub fn cpu_us_per_forwarded_packet(&self) -> Option<f64> {
        let cores = self.server_cpu.as_ref()?.total;
        (self.interval.packets_in_per_s > 0.0).then(|| cores * 1e6 / self.interval.packets_in_per_s)
    }
}

/// Measures `seconds` (whole snapshots) from the next snapshot on.
pub async fn measure(setup: &Setup, progress: &mut Progress, seconds: f64, label: &str) -> Window {
    let a = progress.next(setup, label).await;
    let mut b = a.clone();
    for _ in 0..(seconds.ceil() as usize).max(1) {
        b = progress.next(setup, label).await;
    }
    Window {
        interval: Interval::between(&a.totals, &b.totals),
        server_cpu: match (&a.server, &b.server) {
            (Some(x), Some(y)) => Some(procfs::usage(x, y)),
            _ => None,
        },
        // Per net thread, as each has a core of its own.
        generator_cpu: cpu(&a.generator, &b.generator)
            .map(|c| c / setup.generator.net.threads().max(1) as f64),
        end: b.totals,
    }
}

/// Waits until `joined` transports have media flowing (or `timeout`); false on timeout.
pub async fn wait_joined(
    setup: &Setup,
    progress: &mut Progress,
    joined: usize,
    timeout: Duration,
    label: &str,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let t = progress.next(setup, label).await;
        if t.totals.join_ms.len() >= joined {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

/// The signalling a run uses by default: `default`, or `/sync` with --simulcast, whose
/// subscribers ask for their layers with `preferences`; refuses --simulcast where they cannot.
pub fn default_signalling(
    t: &TargetArgs,
    sfu: Sfu,
    simulcast: bool,
    default: Signalling,
) -> Result<Signalling, Error> {
    if !simulcast {
        Ok(default)
    } else if sfu == Sfu::Janus || t.signalling == Some(Signalling::Whip) {
        Err(Error::SimulcastNeedsSync)
    } else {
        Ok(Signalling::Sync)
    }
}

/// Starts participants `from..to` at `per_second`.
pub async fn ramp(
    g: &Arc<Generator>,
    from: usize,
    to: usize,
    per_second: f64,
    publish: Option<Media>,
    subscribe: bool,
) {
    let gap = Duration::from_secs_f64(1.0 / per_second.max(0.1));
    for i in from..to {
        g.spawn(i, publish, subscribe);
        tokio::time::sleep(gap).await;
    }
}

pub async fn run(a: RunArgs) -> Result<bool, Error> {
    let simulcast = a.simulcast.simulcast;
    let signalling = default_signalling(&a.target, a.target.sfu, simulcast, Signalling::Sync)?;
    let setup = Setup::new(&a.target, a.target.sfu, signalling).await?;
    let g = setup.generator.clone();
    let (publishers, subscribers, media, publishers_subscribe) = match a.scenario {
        Scenario::AudioRoom => (
            a.publishers.unwrap_or(10),
            a.subscribers.unwrap_or(50),
            Media {
                video: false,
                audio: true,
                simulcast: false,
            },
            false,
        ),
        Scenario::Meeting => (
            a.participants,
            0,
            Media {
                video: true,
                audio: true,
                simulcast,
            },
            true,
        ),
        Scenario::Livestream => (
            a.publishers.unwrap_or(1),
            a.subscribers.unwrap_or(100),
            Media {
                video: true,
                audio: true,
                simulcast,
            },
            false,
        ),
    };
    if setup.sfu() == "switchyard" && setup.signalling == Signalling::Whip && publishers > 1 {
        return Err(Error::WhepOnePublication);
    }
    // Every subscriber takes every publication; meeting participants all but their own.
    let subscriptions = if publishers_subscribe {
        publishers * publishers.saturating_sub(1)
    } else {
        subscribers * publishers
    };
    let transports = publishers + subscriptions;
    eprintln!(
        "scenario {} on {}: {publishers} publisher(s), {subscribers} subscriber(s), {transports} transports, {} signalling, channel {}",
        a.scenario.name(),
        setup.sfu(),
        setup.signalling_name(),
        g.channel()
    );
    let mut progress = Progress::new(&setup);
    ramp(&g, 0, publishers, a.ramp, Some(media), publishers_subscribe).await;
    ramp(&g, publishers, publishers + subscribers, a.ramp, None, true).await;
    let expected = transports;
    let timeout = Duration::from_secs(20) + Duration::from_secs_f64(transports as f64 / 50.0);
    let all = wait_joined(&setup, &mut progress, expected, timeout, "joining").await;
    // Let keyframe waits and join bursts pass before measuring.
    progress.next(&setup, "settling").await;
    let w = measure(&setup, &mut progress, a.duration, "measuring").await;
    g.stop();
    let join_ms = &w.end.join_ms;
    let report = Report {
        scenario: a.scenario.name().into(),
        sfu: setup.sfu().into(),
        io_backend: setup.io_backend.clone(),
        signalling: setup.signalling_name(),
        simulcast,
        publishers,
        subscribers,
        transports,
        connected: w.end.connected,
        failed: w.end.failed,
        all_joined: all,
        signalling_errors: g.errors(),
        auth_failures: w.end.auth_failures,
        replayed: w.end.replayed,
        before_keys: w.end.before_keys,
        join_p50_ms: stats::quantile(join_ms, 0.5),
        join_p99_ms: stats::quantile(join_ms, 0.99),
        server_cpu_cores: w.server_cpu.as_ref().map(|c| c.total),
        server_worker_cpu: w
            .server_cpu
            .as_ref()
            .filter(|_| setup.sfu() == "switchyard")
            .map(|c| c.matching("sy-worker")),
        server_rss_bytes: setup.server_pid.and_then(procfs::rss_bytes),
        generator_cpu_cores: w.generator_cpu,
        generator_saturated: w.generator_saturated(),
        cpu_us_per_forwarded_packet: w.cpu_us_per_forwarded_packet(),
        interval: w.interval.clone(),
    };
    report::print_run(&report, a.target.json);
    Ok(report.valid())
}

#[cfg(test)]
mod tests {
    use super::parse_media_info;

    #[test]
    fn media_info_gives_the_backend_and_the_workers() {
        let metrics = "# HELP switchyard_media_info x\n# TYPE switchyard_media_info gauge\n\
                       switchyard_media_info{io_backend=\"uring\",workers=\"8\"} 1\n";
        assert_eq!(parse_media_info(metrics), Some(("uring".into(), 8)));
        let older = "switchyard_media_info{io_backend=\"mmsg\"} 1\n";
        assert_eq!(parse_media_info(older), Some(("mmsg".into(), 1)));
        assert_eq!(parse_media_info("switchyard_up 1\n"), None);
    }
}
