//! `switchyard`: an open-source WebRTC media server.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

mod doctor;
mod fatal;
mod recording;
mod roles;
mod sip;
mod turn;
use fatal::Fatal;
use switchyard_cluster::admin::{self, Admin, Administered};
use switchyard_controlplane::allowlist::AllowList;
use switchyard_controlplane::config::{Config, SettingError};
use switchyard_controlplane::dev::DevApplication;
use switchyard_controlplane::follow;
use switchyard_controlplane::server::{Https, HttpsError};
use switchyard_controlplane::session::AppState;
use switchyard_controlplane::token::{self, Applications, ChannelClaim, Claims};
use switchyard_controlplane::webhooks::{self, Webhooks};
use switchyard_dataplane::handoff::Hub;
use switchyard_dataplane::io::{self as media_io, Backend};
use switchyard_dataplane::mcu::MixerConfig;
use switchyard_dataplane::spec::{self, MediaEvent};
use switchyard_dataplane::worker::{MediaConfig, MediaServer};
use switchyard_store::{
    CachedStore, Health, MCU_CANVAS_HEIGHTS, MCU_CANVAS_WIDTHS, MCU_FRAME_RATES, Store,
};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An open-source WebRTC media server (SFU and MCU)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as one JSON object per line for log shippers (the message and
    /// its fields, such as channel, participant and transport ids, as keys).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "LOG__FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (signalling, WHIP/WHEP, demo page) and the media server in one process,
    /// with in-memory state. Open http://127.0.0.1:8080 for the demo.
    AllInOne(AllInOne),
    /// Run a gateway: signalling for clients, media placed on the registered media servers,
    /// presence shared with other gateways through Redis (CONNECTIONSTRINGS:CACHE).
    Gateway(roles::GatewayArgs),
    /// Run a media server: media workers and the internal control API on the cluster port
    /// (8445, or the next free one), registered with the gateway at SERVICEBASEURL. SIGTERM
    /// drains it.
    MediaServer(roles::MediaServerArgs),
    /// Run a SIP connector on its own: phone calls (SIP on 5060 UDP/TCP, 5061 TLS) routed by
    /// the applications' SIP mappings in the configuration store, joined to channels through
    /// the gateway's `POST /mix` (all-in-one embeds one).
    SipConnector(sip::SipConnectorArgs),
    /// Print a client token for a channel, signed with the dev application's secret (or the
    /// one given).
    Token(TokenArgs),
    /// Write a self-signed certificate and key (PEM) for development HTTPS.
    Cert(CertArgs),
    /// Show or check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check this host's network set-up as the media server would use it (listeners,
    /// certificate, public IP, reachability from outside); exits non-zero on a failure.
    Doctor(doctor::DoctorArgs),
    /// Load-test a media server with emulated WebRTC clients (real ICE, DTLS, SRTP): run a
    /// scenario, or find the subscribers one core sustains.
    Loadtest(switchyard_loadtest::LoadtestArgs),
    /// Compose recorded files (a session's `.mkv`/`.mka`, lined up by their dates) into one
    /// file, as the recording muxer does: a VP8 grid and an Opus mix.
    Mux(recording::MuxArgs),
    /// Run a recording monitor: read the recordings' logs (from RECORDING:STORAGE, else from
    /// `<data-dir>/recordings/`, shared with the media servers), keep the recording database
    /// (DEPLOYMENTS:0:RECORDINGMANAGEMENT:POSTGRESURI), and queue each finished session for
    /// the muxers on RabbitMQ (DEPLOYMENTS:0:RECORDINGMANAGEMENT:AMQPURI), or mux it here.
    RecordingMonitor(recording::roles::RecordingArgs),
    /// Run a recording muxer: take the sessions the monitor queues on RabbitMQ
    /// (DEPLOYMENTS:0:RECORDINGMANAGEMENT:AMQPURI), one at a time, and mux each into
    /// `<data-dir>/recordings/sessions/` (its files fetched from RECORDING:STORAGE, and the
    /// muxed session stored there, when set).
    RecordingMuxer(recording::roles::RecordingArgs),
    /// Run a recording mover: move the muxed sessions in `<data-dir>/recordings/sessions/`
    /// (a directory shared with a muxer) to RECORDING:STORAGE.
    RecordingMover(recording::roles::RecordingArgs),
}

#[derive(Args)]
struct CertArgs {
    /// Names the certificate is for (DNS names or IP addresses).
    #[arg(long = "name", default_values = ["localhost", "127.0.0.1"])]
    names: Vec<String>,
    /// Where to write the certificate.
    #[arg(long, default_value = "switchyard-cert.pem")]
    cert: PathBuf,
    /// Where to write the private key (mode 0600).
    #[arg(long, default_value = "switchyard-key.pem")]
    key: PathBuf,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective settings (file and environment), where each came from, secrets
    /// masked; exits non-zero if a value is bad.
    Print(ConfigFile),
}

/// Settings in the operators' names (CONNECTIONSTRINGS:DEFAULT, EXTERNAL:PUBLICIPADDRESS, ...)
/// come from this TOML file and the environment (which wins; `__` for `:`).
#[derive(Args)]
pub struct ConfigFile {
    /// A TOML file of settings.
    #[arg(long = "config", env = "SWITCHYARD_CONFIG")]
    path: Option<PathBuf>,
}

impl ConfigFile {
    pub fn load(&self) -> Result<Config, SettingError> {
        Config::load(self.path.as_deref(), std::env::vars_os())
    }
}

#[derive(Args)]
struct AllInOne {
    #[command(flatten)]
    config: ConfigFile,
    /// Address for HTTP: the demo page, /sync signalling, WHIP/WHEP, /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", env = "SWITCHYARD_HTTP")]
    http: SocketAddr,
    #[command(flatten)]
    admin: roles::AdminArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    media: MediaArgs,
    #[command(flatten)]
    dev: DevArgs,
}

/// HTTPS, served beside HTTP when a certificate is given (all-in-one and gateway).
#[derive(Args)]
struct TlsArgs {
    /// PEM certificate chain for HTTPS (with --tls-key); `switchyard cert` makes a
    /// self-signed pair for development.
    #[arg(long, requires = "tls_key", env = "SWITCHYARD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (with --tls-cert).
    #[arg(long, requires = "tls_cert", env = "SWITCHYARD_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Address for HTTPS signalling and pages (with --tls-cert).
    #[arg(long, default_value = "0.0.0.0:8443", env = "SWITCHYARD_HTTPS")]
    https: SocketAddr,
}

impl TlsArgs {
    /// Binds `addr` for HTTPS with the certificate, if one is given.
    async fn bind(&self, addr: SocketAddr) -> Result<Option<Https>, HttpsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Https::bind(addr, cert, key).await.map(Some),
            _ => Ok(None),
        }
    }
}

/// A watch that turns true on SIGTERM or Ctrl-C, for every listener of the process to follow.
pub fn shutdown_watch() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// Resolves when `rx` turns true.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.is_ok();
}

/// The media workers' settings (all-in-one and media-server).
#[derive(Args)]
struct MediaArgs {
    /// Media worker threads, one pinned per core, each with its own UDP port [default: all cores].
    #[arg(long, env = "SWITCHYARD_WORKERS")]
    workers: Option<usize>,
    /// I/O backend for the media workers: mmsg (recvmmsg/sendmmsg) or uring (io_uring)
    /// [default: mmsg, which measured ahead under load; see docs/benchmarks.md].
    #[arg(long, env = "SWITCHYARD_IO_BACKEND")]
    io_backend: Option<Backend>,
    /// Address the media sockets bind to.
    #[arg(long, default_value = "0.0.0.0")]
    media_bind: IpAddr,
    /// Port range for media, UDP and (for ICE-TCP) TCP; worker i takes the i-th port free for
    /// both from the start.
    #[arg(long, default_value = "49152-65535", value_parser = parse_ports)]
    media_ports: (u16, u16),
    /// The address announced in ICE candidates (also EXTERNAL:PUBLICIPADDRESS or
    /// EXTERNAL__PUBLICIPADDRESS) [default: this host's interface addresses, else 127.0.0.1].
    #[arg(long)]
    public_ip: Option<IpAddr>,
    /// Do not listen on TCP at the media ports: no ICE-TCP candidates (RFC 6544), so clients
    /// whose UDP is blocked need TURN.
    #[arg(long, env = "SWITCHYARD_NO_ICE_TCP", value_parser = BoolishValueParser::new())]
    no_ice_tcp: bool,
    /// Send each datagram on its own, not several to one destination as one UDP GSO train
    /// (both backends send trains where the kernel takes them).
    #[arg(long, env = "SWITCHYARD_NO_GSO", value_parser = BoolishValueParser::new())]
    no_gso: bool,
    /// io_uring: send GSO trains of at least BYTES zero-copy (SENDMSG_ZC, from registered
    /// buffers on Linux 6.15+). Pays only on a NIC (loopback copies anyway); off by default,
    /// see docs/benchmarks.md for the sizes where it gains.
    #[arg(long, value_name = "BYTES", env = "SWITCHYARD_IO_ZERO_COPY")]
    io_zero_copy: Option<usize>,
    /// io_uring: a kernel thread per worker polls for sends (SQPOLL), saving the worker its
    /// system calls at the cost of CPU of its own; for hosts with cores to spare.
    #[arg(long, env = "SWITCHYARD_IO_SQPOLL", value_parser = BoolishValueParser::new())]
    io_sqpoll: bool,
    /// MCU threads (also MCU:WORKERS), each pinned to a core after the workers'; a channel's
    /// mixer runs on one of them; 0 turns MCU connections off [default: 1].
    #[arg(long)]
    mcu_workers: Option<usize>,
}

impl MediaArgs {
    fn start(
        &self,
        config: &Config,
    ) -> Result<
        (
            MediaServer,
            tokio::sync::mpsc::UnboundedReceiver<MediaEvent>,
        ),
        spec::Error,
    > {
        let workers = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mcu_workers = self
            .mcu_workers
            .or_else(|| config.count("MCU:WORKERS").map(|n| n as usize))
            .unwrap_or(1);
        let config = MediaConfig {
            workers,
            io_backend: self.io_backend,
            bind_ip: self.media_bind,
            port_min: self.media_ports.0,
            port_max: self.media_ports.1,
            pin: true,
            first_core: 0,
            ice_tcp: !self.no_ice_tcp,
            handoff: Some(Arc::new(Hub::default())),
            mcu_workers,
            io: media_io::Options {
                gso: !self.no_gso,
                zero_copy_from: self.io_zero_copy,
                sqpoll: self.io_sqpoll,
            },
        };
        MediaServer::start(config)
    }
}

/// MEDIA:SHARDAFTER: transports a worker carries before a channel's new subscribers go to a
/// less loaded worker; 0 keeps each channel on one worker.
pub(crate) fn shard_after(config: &Config) -> Option<usize> {
    match config.count("MEDIA:SHARDAFTER") {
        Some(0) => None,
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => Some(switchyard_controlplane::shards::SHARD_AFTER),
    }
}

/// How the mixers compose: MCU:CANVASWIDTH, MCU:CANVASHEIGHT, MCU:FRAMERATE, MCU:LAYOUT,
/// MCU:LOWERRUNG, within the bounds a channel configuration's own canvas is held to.
fn mixer_config(config: &Config) -> Result<MixerConfig, Fatal> {
    let default = MixerConfig::default();
    let number = |name: &str, default: u32, range: std::ops::RangeInclusive<u32>| {
        let n = config
            .count(name)
            .map_or(Ok(default), |n| u32::try_from(n).map_err(|_| n.to_string()));
        match n {
            Ok(n) if range.contains(&n) => Ok(n),
            Ok(n) => Err(Fatal::Mixer(format!(
                "{name}: {n} is outside {}..={}",
                range.start(),
                range.end()
            ))),
            Err(n) => Err(Fatal::Mixer(format!("{name}: {n} is too large"))),
        }
    };
    let layout = match config.get("MCU:LAYOUT") {
        None => default.layout,
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| Fatal::Mixer(format!("MCU:LAYOUT: {v:?} is not grid or speaker")))?,
    };
    Ok(MixerConfig {
        // Even sizes: I420's chroma is subsampled 2x2.
        width: number("MCU:CANVASWIDTH", default.width, MCU_CANVAS_WIDTHS)? & !1,
        height: number("MCU:CANVASHEIGHT", default.height, MCU_CANVAS_HEIGHTS)? & !1,
        fps: number("MCU:FRAMERATE", default.fps, MCU_FRAME_RATES)?,
        layout,
        lower_rung: config.flag("MCU:LOWERRUNG", default.lower_rung),
        ..default
    })
}

/// The generated dev application (all-in-one and gateway).
#[derive(Args)]
struct DevArgs {
    /// Where the dev application's secret is kept.
    #[arg(long, default_value = "switchyard-data", env = "SWITCHYARD_DATA_DIR")]
    data_dir: PathBuf,
    /// Do not hand out dev tokens at /api/dev-token.
    #[arg(long)]
    no_dev_tokens: bool,
}

/// An application id and one of its secrets.
type AppSecret = (String, String);

impl DevArgs {
    /// The dev application as (id, secret), always accepted; and the same pair for
    /// /api/dev-token unless dev tokens are off.
    fn load(&self) -> Result<(Vec<AppSecret>, Option<AppSecret>), Fatal> {
        let dev =
            DevApplication::load_or_create(&self.data_dir).map_err(|source| Fatal::DataDir {
                what: "dev application",
                dir: self.data_dir.clone(),
                source,
            })?;
        let fixed = vec![(dev.application_id.clone(), dev.secret.clone())];
        if self.no_dev_tokens {
            return Ok((fixed, None));
        }
        tracing::warn!(
            "dev tokens are served at /api/dev-token (application {:?}, secret in {}); use --no-dev-tokens in production",
            dev.application_id,
            DevApplication::path(&self.data_dir).display()
        );
        Ok((fixed, Some((dev.application_id, dev.secret))))
    }
}

/// Opens the configuration store (CONNECTIONSTRINGS:DEFAULT, else SQLite in the data directory),
/// applies its migrations, and reads it into `applications` (with the `fixed` ones).
async fn open_store(
    config: &Config,
    data_dir: &std::path::Path,
    applications: &Applications,
    fixed: &[(String, String)],
) -> Result<CachedStore, Fatal> {
    let url = config.get("CONNECTIONSTRINGS:DEFAULT");
    let store = Store::open(url, data_dir).await?;
    let cache = CachedStore::new(store);
    if let Health::Degraded(reason) = follow::sync_once(&cache, applications, fixed).await {
        return Err(Fatal::StoreUnreadable(reason));
    }
    let snapshot = cache.snapshot();
    tracing::info!(
        "configuration store: {} ({} application(s), {} channel configuration(s), {} deployment(s))",
        match url {
            Some(u) => switchyard_store::mask(u),
            None => data_dir
                .join(switchyard_store::SQLITE_FILE)
                .display()
                .to_string(),
        },
        snapshot.applications.len(),
        snapshot.channel_configs.len(),
        snapshot.deployments.len()
    );
    Ok(cache)
}

/// The deployment this process follows in the configuration store (`DEPLOYMENTS:0:DEPLOYMENTID`,
/// else `default`): its STUN servers, capacity thresholds and TURN secret.
fn deployment_id(config: &Config) -> &str {
    config
        .get("DEPLOYMENTS:0:DEPLOYMENTID")
        .unwrap_or("default")
}

#[derive(Args)]
struct TokenArgs {
    /// The channel the token is for.
    #[arg(long)]
    channel: String,
    /// User id [default: a random guest name].
    #[arg(long)]
    user: Option<String>,
    /// Device id [default: random].
    #[arg(long)]
    device: Option<String>,
    /// Client id [default: random].
    #[arg(long)]
    client: Option<String>,
    /// How long the token is valid: 3600, 90s, 30m, 12h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Do not allow publishing.
    #[arg(long)]
    no_publish: bool,
    /// Do not allow subscribing.
    #[arg(long)]
    no_subscribe: bool,
    /// Allow placing phone calls out into the channel (signalling's `dial`).
    #[arg(long)]
    dial: bool,
    /// Application id (with --secret) instead of the dev application.
    #[arg(long, requires = "secret")]
    application: Option<String>,
    /// Shared secret (with --application) instead of the dev application's.
    #[arg(long, requires = "application")]
    secret: Option<String>,
    /// Where the dev application's secret is kept (the same as the server's).
    #[arg(long, default_value = "switchyard-data", env = "SWITCHYARD_DATA_DIR")]
    data_dir: PathBuf,
}

/// A command-line value clap's parsers refuse (clap prints it with the argument's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BadArgument {
    #[error("expected a range like 49152-65535")]
    NotARange,
    #[error("{0}")]
    Port(#[from] std::num::ParseIntError),
    #[error("the range must be ascending and start above 0")]
    RangeOrder,
    #[error("bad duration {0:?}: expected e.g. 3600, 90s, 30m, 12h, 7d")]
    Duration(String),
    #[error("bad duration unit {0:?}: use s, m, h or d")]
    DurationUnit(String),
    #[error("the token must be valid for at least a second")]
    ZeroDuration,
    #[error("expected seconds, e.g. 300 or 30s, not {0:?}")]
    Seconds(String),
}

fn parse_ports(s: &str) -> Result<(u16, u16), BadArgument> {
    let (a, b) = s.split_once('-').ok_or(BadArgument::NotARange)?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || a > b {
        return Err(BadArgument::RangeOrder);
    }
    Ok((a, b))
}

fn parse_ttl(s: &str) -> Result<Duration, BadArgument> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| BadArgument::Duration(s.to_string()))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86400),
        _ => return Err(BadArgument::DurationUnit(unit.to_string())),
    }
    .ok_or_else(|| BadArgument::Duration(s.to_string()))?;
    if secs == 0 {
        return Err(BadArgument::ZeroDuration);
    }
    Ok(Duration::from_secs(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = cli.log_format;
    match cli.command {
        Command::Token(args) => match token(args) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchyard token: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Cert(args) => match cert(&args) {
            Ok(()) => {
                println!(
                    "wrote {} and {} for {}",
                    args.cert.display(),
                    args.key.display(),
                    args.names.join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchyard cert: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Config(ConfigCommand::Print(file)) => match file.load() {
            Ok(config) => {
                print!("{}", config.describe());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchyard config: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Loadtest(args) => {
            let _logging = init_logging(log);
            switchyard_loadtest::main(args)
        }
        Command::Doctor(args) => doctor::main(args),
        Command::Mux(args) => recording::mux_main(&args),
        Command::RecordingMonitor(args) => {
            run(log, "recording-monitor", || recording::roles::monitor(args))
        }
        Command::RecordingMuxer(args) => {
            run(log, "recording-muxer", || recording::roles::muxer(args))
        }
        Command::RecordingMover(args) => run(log, "recording-mover", || {
            recording::roles::mover_role(args)
        }),
        Command::AllInOne(args) => run(log, "all-in-one", || all_in_one(args)),
        Command::Gateway(args) => run(log, "gateway", || roles::gateway(args)),
        Command::MediaServer(args) => run(log, "media-server", || roles::media_server(args)),
        Command::SipConnector(args) => run(log, "sip-connector", || sip::connector(args)),
    }
}

/// Runs a server role with logging, turning its error into a message and exit status 1.
fn run(log: LogFormat, role: &str, f: impl FnOnce() -> Result<(), Fatal>) -> ExitCode {
    let _logging = init_logging(log);
    match f() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("switchyard {role}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr through a thread of its own: the media workers and MCU threads log (a mixer
/// started, a worker's warning), and a write to a slow pipe, terminal or disk must not stall
/// their media. Should that thread fall behind by 128k lines, lines are dropped, not waited
/// for. What is queued is written out when the returned guard drops, at exit.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    match format {
        LogFormat::Text => fmt.with_ansi(ansi).init(),
        // Fields flattened next to the message, so a shipper indexes `channel` directly.
        LogFormat::Json => fmt.json().flatten_event(true).init(),
    }
    guard
}

fn token(args: TokenArgs) -> Result<String, Fatal> {
    let (application, secret) = match (args.application, args.secret) {
        (Some(a), Some(s)) => (a, s),
        _ => {
            let dev = DevApplication::load_or_create(&args.data_dir).map_err(|source| {
                Fatal::DataDir {
                    what: "dev application",
                    dir: args.data_dir.clone(),
                    source,
                }
            })?;
            (dev.application_id, dev.secret)
        }
    };
    let user = args
        .user
        .unwrap_or_else(|| format!("guest-{:04x}", rand::random::<u16>()));
    let claim = ChannelClaim {
        id: args.channel,
        publish: !args.no_publish,
        subscribe: !args.no_subscribe,
        dial: args.dial,
    };
    let mut claims = Claims::new(&application, &user, claim, args.ttl);
    if let Some(d) = args.device {
        claims.device_id = d;
    }
    if let Some(c) = args.client {
        claims.client_id = c;
    }
    Ok(token::issue(&claims, &secret)?)
}

/// A self-signed ECDSA P-256 certificate for `names`, valid for a year, as PEM files; the key
/// is created readable only by this user and never overwrites an existing file.
fn cert(args: &CertArgs) -> Result<(), Fatal> {
    let failed = |what| move |source| Fatal::Certificate { what, source };
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed("key"))?;
    let mut params =
        rcgen::CertificateParams::new(args.names.clone()).map_err(failed("bad --name"))?;
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + Duration::from_secs(365 * 86_400)).into();
    let cert = params.self_signed(&key).map_err(failed("certificate"))?;
    let write = |path: &PathBuf, text: &str, mode: u32| -> Result<(), Fatal> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        options
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(|source| Fatal::Write {
                path: path.clone(),
                source,
            })
    };
    write(&args.key, &key.serialize_pem(), 0o600)?;
    write(&args.cert, &cert.pem(), 0o644)
}

/// What goes in ICE candidates: the public address if set, the bind address if specific, else
/// this host's non-loopback IPv4 addresses, else 127.0.0.1 (a namespace with only `lo`).
fn announced(public: Option<IpAddr>, bind: IpAddr) -> Vec<IpAddr> {
    if let Some(ip) = public {
        return vec![ip];
    }
    if !bind.is_unspecified() {
        return vec![bind];
    }
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback())
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4())
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    ips
}

/// The address the media sockets and the embedded TURN server bind to: `--media-bind` when it
/// names one; else, with EXTERNAL:IPADDRESSES, a local address inside that list, so media
/// answers only where the operator said clients reach this host (and only that address is
/// announced, unless EXTERNAL:PUBLICIPADDRESS says otherwise); else every address.
///
/// One address, as each worker has one socket: interface addresses inside the list and the
/// list's single addresses this host can bind (all of 127.0.0.0/8 on loopback, a `local`
/// route), non-loopback first, then IPv4, then the lowest.
fn media_bind(config: &Config, flag: IpAddr) -> Result<IpAddr, Fatal> {
    const SETTING: &str = "EXTERNAL:IPADDRESSES";
    let Some(list) = config.get(SETTING) else {
        return Ok(flag);
    };
    let allow = AllowList::parse(list).map_err(|source| Fatal::AllowList {
        setting: SETTING,
        source,
    })?;
    if !flag.is_unspecified() {
        if !allow.allows(flag) {
            tracing::warn!("--media-bind {flag} is outside {SETTING} ({list}); binding it anyway");
        }
        return Ok(flag);
    }
    let interfaces: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .collect();
    let mut local: Vec<IpAddr> = interfaces
        .iter()
        .copied()
        .filter(|ip| allow.allows(*ip))
        .chain(
            allow
                .single_addresses()
                .filter(|ip| std::net::UdpSocket::bind((*ip, 0)).is_ok()),
        )
        .collect();
    local.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6(), *ip));
    local.dedup();
    let Some(&chosen) = local.first() else {
        return Err(Fatal::NoExternalAddress {
            list: list.to_string(),
            local: interfaces,
        });
    };
    if local.len() > 1 {
        tracing::warn!(
            "{SETTING} matches {local:?} here; media binds {chosen} only (one socket per worker)"
        );
    }
    tracing::info!("media binds {chosen}, inside {SETTING} ({list})");
    Ok(chosen)
}

fn all_in_one(mut args: AllInOne) -> Result<(), Fatal> {
    // Every setting is checked here, before anything binds.
    let config = args.config.load()?;
    args.media.media_bind = media_bind(&config, args.media.media_bind)?;
    let public = args.media.public_ip.or_else(|| config.public_ip());
    let admin_allow = roles::allowlist(&config, "ADMIN:IPADDRESSES", roles::DEFAULT_INTERNAL)?;
    let admin_key = roles::admin_key(&config, &args.dev.data_dir)?;
    let region = config.get("REGION").unwrap_or("default").to_string();
    let (fixed, dev_tokens) = args.dev.load()?;
    let applications = Applications::default();
    let runtime = control_runtime()?;
    let cache = runtime.block_on(open_store(
        &config,
        &args.dev.data_dir,
        &applications,
        &fixed,
    ))?;
    let (media, mut events) = args.media.start(&config)?;
    let announce = announced(public, args.media.media_bind);
    let ports = media_ports(&media);
    let backend = media.backend();
    let deployment = cache.deployment(deployment_id(&config));
    let turn = turn::start(
        &config,
        deployment.as_ref(),
        Some(&args.dev.data_dir),
        turn::Media {
            bind_ip: args.media.media_bind,
            announced: &announce,
            ports: &ports,
            workers: media.workers(),
            handoff: media.handoff(),
        },
    )?;
    let mut state = AppState::new(media, applications, announce.clone());
    state.mixer = mixer_config(&config)?;
    state.shard_after = shard_after(&config);
    state.turn = turn;
    state.dev_tokens = dev_tokens;
    state.sync_limits = switchyard_controlplane::sync_limits::SyncLimits::from_config(&config)
        .map_err(|source| Fatal::AllowList {
            setting: "SYNC:IPADDRESSES",
            source,
        })?;
    state.store = Some(cache.clone());
    // Recordings are written under the data directory, muxed there (or by muxers elsewhere,
    // through RabbitMQ) and moved to RECORDING:STORAGE when set.
    let recordings = args.dev.data_dir.join("recordings");
    state.recordings = Some(recordings.clone());
    let mut pipeline = recording::Pipeline::new(switchyard_recording::monitor::Monitor {
        dir: recordings.clone(),
        config: recording::mux_config(&config)?,
    });
    pipeline.mover = recording::mover(&config)?;
    if let Some(uri) = recording::amqp_uri(&config) {
        pipeline.publisher = Some(recording::queue_publisher(&uri)?);
    }
    let recording_db = runtime.block_on(recording::db::open(&config, &args.dev.data_dir))?;
    pipeline.db = Some(recording::db::RecordingDb::new(
        recording_db,
        runtime.handle().clone(),
    ));
    // The stored applications' webhooks (the dev application, which is not stored, has none).
    let (webhooks, webhook_sender) = Webhooks::new(
        cache.clone(),
        state.metrics.webhooks.clone(),
        webhooks::Client::new()?,
        webhooks::Retry::default(),
    );
    state.webhooks = webhooks;
    let state = Arc::new(state);
    // The STUN servers of the setting (which the checks read themselves), else the stored
    // deployment's.
    let stun_servers = match deployment {
        Some(d) if config.get("DEPLOYMENTS:0:STUNSERVERS").is_none() => d.stun_servers,
        _ => Vec::new(),
    };

    runtime.block_on(async move {
        let (stop_store, store_stop) = tokio::sync::watch::channel(false);
        // The same admin API as a gateway's: its configuration endpoints write the store this
        // process follows, and its live endpoints read this process's own rooms.
        let admin = Arc::new(Admin::new(
            Administered::AllInOne(admin::AllInOne::new(state.clone(), region)),
            cache.clone(),
            admin_allow,
            vec![admin_key],
        ));
        tokio::spawn(follow::follow(cache, state.applications.clone(), fixed, store_stop));
        let listener = tokio::net::TcpListener::bind(args.http)
            .await
            .map_err(|source| Fatal::Listen { addr: args.http, what: "HTTP", source })?;
        let admin_listener = tokio::net::TcpListener::bind(args.admin.admin)
            .await
            .map_err(|source| Fatal::Listen { addr: args.admin.admin, what: "the admin API", source })?;
        let https = args.tls.bind(args.tls.https).await?;
        let admin_https = args.tls.bind(args.admin.admin_https).await?;
        let page = page_address(&listener)?;
        let admin_page = page_address(&admin_listener)?;
        // Phone calls join channels through this process's own `POST /mix`.
        let _sip = match sip::settings(&config, args.http.ip(), format!("http://{page}"))? {
            Some(settings) => {
                let directory = sip::LocalDirectory {
                    store: state.store.clone(),
                    applications: state.applications.clone(),
                    dev: state.dev_tokens.as_ref().map(|(id, _)| id.clone()),
                    digits: sip::Digits::Local(Arc::downgrade(&state)),
                };
                let connector = Arc::new(sip::start(settings, Arc::new(directory)).await?);
                let phones = sip::ConnectorPhones {
                    connector: connector.clone(),
                    store: state.store.clone(),
                    default_application: state.dev_tokens.as_ref().map(|(id, _)| id.clone()),
                };
                let _ = state.phones.set(Arc::new(phones));
                if let Some(store) = state.store.clone() {
                    sip::follow_trunks(Arc::downgrade(&connector), store);
                }
                Some(connector)
            }
            None => None,
        };
        let stop = shutdown_watch();
        for (https, router, what) in [
            (https, switchyard_controlplane::server::router(state.clone()), "demo page and signalling"),
            (admin_https, admin::router(admin.clone()), "admin API"),
        ] {
            let Some(https) = https else { continue };
            tracing::info!("HTTPS {what} on {}", https.local_addr());
            let stop = stopped(stop.clone());
            tokio::spawn(async move {
                if let Err(e) = https.serve(router, stop).await {
                    tracing::error!("{e}");
                }
            });
        }
        let admin_server = tokio::spawn(switchyard_controlplane::server::serve_with(
            admin_listener,
            admin::router(admin),
            stopped(stop.clone()),
            || {},
        ));
        tracing::info!(
            "switchyard all-in-one {}: demo page http://{page}/ | signalling ws://{page}/sync | WHIP/WHEP http://{page}/whip|whep/<channel> | metrics http://{page}/metrics | admin API http://{admin_page}/admin/api/v1",
            env!("CARGO_PKG_VERSION")
        );
        tracing::info!(
            "media: {} worker(s) on {} {:?} ({} backend), announcing {:?}",
            ports.len(),
            if state.media.ice_tcp() { "UDP+TCP" } else { "UDP" },
            ports,
            backend.as_str(),
            announce
        );
        doctor::check_at_start(
            &config,
            &args.media,
            &stun_servers,
            switchyard_controlplane::listeners::Listeners::of(&state),
            state.metrics.checks.clone(),
        );
        tokio::spawn(webhook_sender.run());
        let mixed = state.webhooks.clone();
        let announce_mixed = move |muxed: &switchyard_recording::mux::Muxed, url: Option<&str>| {
            for event in webhooks::mixed(muxed, url) {
                mixed.emit(event);
            }
        };
        pipeline.on_muxed = Box::new(announce_mixed);
        let _monitor = recording::start(pipeline)
            .map_err(|source| Fatal::DataDir {
                what: "starting the recording monitor",
                dir: recordings,
                source,
            })?;
        let events_state = state.clone();
        let events_task = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                events_state.on_media_event(event);
            }
        });
        switchyard_controlplane::server::serve(listener, state.clone(), stopped(stop))
            .await
            .map_err(|source| Fatal::Serve { what: "HTTP server", source })?;
        let _ = admin_server.await;
        let _ = stop_store.send(true);
        tracing::info!("shutting down: stopping media workers");
        state.media.stop();
        let _ = tokio::time::timeout(Duration::from_secs(5), events_task).await;
        tracing::info!("stopped");
        Ok::<(), Fatal>(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// The control plane's tokio runtime: two threads, apart from the pinned media workers.
fn control_runtime() -> Result<tokio::runtime::Runtime, Fatal> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sy-control")
        .enable_all()
        .build()
        .map_err(Fatal::Runtime)
}

/// Where a person reaches a listener (127.0.0.1 when it listens on every address).
fn page_address(listener: &tokio::net::TcpListener) -> Result<SocketAddr, Fatal> {
    let http = listener.local_addr().map_err(Fatal::LocalAddress)?;
    Ok(if http.ip().is_unspecified() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), http.port())
    } else {
        http
    })
}

fn media_ports(media: &MediaServer) -> Vec<u16> {
    (0..media.workers())
        .filter_map(|w| media.worker_addr(w))
        .map(|a| a.port())
        .collect()
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_ports() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("99999999999999999d").is_err(), "no overflow");
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("0").is_err());
        assert_eq!(parse_ports("50000-50010"), Ok((50000, 50010)));
        assert!(parse_ports("50010-50000").is_err());
        assert!(parse_ports("abc").is_err());
    }

    #[test]
    fn announced_addresses() {
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            announced(Some(public), "0.0.0.0".parse().unwrap()),
            vec![public]
        );
        assert_eq!(
            announced(None, "10.1.2.3".parse().unwrap()),
            vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
        assert!(!announced(None, "0.0.0.0".parse().unwrap()).is_empty());
    }
}
