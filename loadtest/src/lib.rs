//! `switchyard loadtest`: emulated WebRTC clients that really do ICE, DTLS and SRTP against a
//! media server, with traffic shaped like 720p video and Opus audio, measuring loss, jitter,
//! latency and the server's CPU per forwarded packet.
//!
//! Two commands: `run` plays a named scenario (audio-room, meeting, livestream) and reports;
//! `capacity` ramps subscribers of one 720p publisher on a server pinned to one core until loss
//! or latency give out, and reports the sustained number per core; `capacity --mode mcu` ramps
//! rooms of MCU participants (one sendrecv connection each, real VP8 and Opus) instead;
//! `peers` holds one MCU participant in each of many channels (the SIP benchmark's).
//!
//! Layout: `traffic` makes the media (`clip` the real media MCU participants send; `mcu` is
//! the MCU ramp), `net` is the pinned net thread that owns every socket and
//! client, `generator` signals like a client and hands transports to it, `signal` speaks
//! Switchyard's `/sync` and WHIP/WHEP, `server` starts the server under test, `procfs` reads
//! CPU and memory, `stats` and `report` turn counts into the numbers printed.

mod capacity;
mod clip;
mod error;
mod generator;
pub mod janus;
mod mcu;
mod net;
mod peers;
mod procfs;
mod report;
mod run;
mod server;
mod signal;
mod stats;
mod traffic;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use error::Error;
pub use generator::Signalling;

#[derive(Args)]
pub struct LoadtestArgs {
    #[command(subcommand)]
    command: LoadtestCommand,
}

#[derive(Subcommand)]
enum LoadtestCommand {
    /// Play a scenario against a server and report loss, latency, throughput and CPU.
    Run(RunArgs),
    /// Ramp subscribers of a 720p + audio publisher on a one-core server until loss > 1% or
    /// latency p99 > 50 ms; report the sustained subscribers and packets/s per core. With
    /// --simulcast the publisher sends three layers and subscribers take mixed ones. With
    /// --mode mcu: rooms of MCU participants until the mix gives out (loss, delay, or the
    /// mixer falling behind its clocks).
    Capacity(CapacityArgs),
    /// Hold one MCU participant (audio only: an Opus tone, or silence) in each of channels
    /// PREFIX1..PREFIXN of a running server (--url) until SIGTERM; prints `peers: all
    /// receiving` once each receives its mix. The channel side of `scripts/sip_bench.py`.
    Peers(PeersArgs),
}

#[derive(Args)]
struct PeersArgs {
    /// Channels are this prefix and 1..=--count.
    #[arg(long)]
    prefix: String,
    #[arg(long)]
    count: usize,
    /// Send the tone (else silence, marked silent by its RFC 6464 level).
    #[arg(long)]
    talking: bool,
    /// Participants started per second.
    #[arg(long, default_value_t = 50.0)]
    ramp: f64,
    #[command(flatten)]
    target: TargetArgs,
}

/// The server under test and the generator's own placement.
#[derive(Args, Clone)]
pub struct TargetArgs {
    /// A running server's HTTP address (http://host:port); by default the generator starts
    /// `switchyard all-in-one --workers 1` itself, pinned to --server-core.
    #[arg(long)]
    url: Option<String>,
    /// With --url: its process id, for CPU and memory readings.
    #[arg(long, requires = "url")]
    server_pid: Option<u32>,
    /// The media server to load (`run`); `capacity --compare-janus` loads both.
    #[arg(long, value_enum, default_value = "switchyard")]
    sfu: run::Sfu,
    /// Janus's HTTP API (scripts/janus.sh starts one on loopback).
    #[arg(long, default_value = "http://127.0.0.1:8088/janus")]
    janus_url: String,
    /// Janus's process id, for its CPU and memory.
    #[arg(long)]
    janus_pid: Option<u32>,
    /// With --url: the application to sign tokens for (with --secret) [default: the dev
    /// application in --data-dir].
    #[arg(long, requires = "secret")]
    application: Option<String>,
    #[arg(long, requires = "application")]
    secret: Option<String>,
    /// With --url: the server's data directory, for the dev application's secret.
    #[arg(long, default_value = "switchyard-data", env = "SWITCHYARD_DATA_DIR")]
    data_dir: PathBuf,
    /// I/O backend of the server the generator starts: uring or mmsg [default: the server's].
    #[arg(long)]
    io_backend: Option<String>,
    /// Media workers of the server the generator starts.
    #[arg(long, default_value_t = 1)]
    server_workers: usize,
    /// The switchyard binary the generator starts as the server [default: this one]: another
    /// build, to compare two builds under one generator.
    #[arg(long, conflicts_with = "url")]
    server_exe: Option<PathBuf>,
    /// Core the started server is pinned to; with several workers, this core and the ones
    /// after it, one per worker.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// Core the generator is pinned to [default: the last core, if there are two or more].
    #[arg(long)]
    generator_core: Option<usize>,
    /// Net threads of the generator: the first on --generator-core, the others on the cores
    /// below it, one each, with transports dealt out in turn. One generator core loads
    /// about one server core: load a server of N workers with N threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    generator_threads: u16,
    /// WebSocket /sync signalling, or WHIP/WHEP.
    #[arg(long, value_enum)]
    signalling: Option<Signalling>,
    /// Channel name [default: a random one].
    #[arg(long)]
    channel: Option<String>,
    /// Print the final report as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    /// audio-room (10 audio publishers, many listeners), meeting (N publish and all subscribe
    /// to all), livestream (1 video + audio publisher, many subscribers).
    #[arg(long, value_enum)]
    scenario: run::Scenario,
    /// Publishers [default: 10 for audio-room, 1 for livestream; meeting: --participants].
    #[arg(long)]
    publishers: Option<usize>,
    /// Subscribers [default: 50 for audio-room, 100 for livestream].
    #[arg(long)]
    subscribers: Option<usize>,
    /// Participants of a meeting (each publishes and subscribes to all others).
    #[arg(long, default_value_t = 8)]
    participants: usize,
    /// Seconds to measure once everyone is connected.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Participants started per second.
    #[arg(long, default_value_t = 50.0)]
    ramp: f64,
    #[command(flatten)]
    simulcast: SimulcastArgs,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Args, Clone, Copy)]
struct SimulcastArgs {
    /// Publish video as three simulcast layers (rids q, h, f: 180p, 360p, 720p at ~150 kbit/s,
    /// 500 kbit/s, 1.5 Mbit/s), and have subscribers ask for them in turn (maxHeight 180,
    /// 360, none). Switchyard over /sync signalling only (the default then).
    #[arg(long)]
    simulcast: bool,
}

#[derive(Args)]
struct CapacityArgs {
    /// Subscribers added per step.
    #[arg(long, default_value_t = 50)]
    step: usize,
    /// Stop ramping at this many subscribers.
    #[arg(long, default_value_t = 3000)]
    max: usize,
    /// Seconds measured at each step (after everyone in it is receiving).
    #[arg(long, default_value_t = 3.0)]
    step_seconds: f64,
    /// Subscribers started per second within a step.
    #[arg(long, default_value_t = 200.0)]
    ramp: f64,
    /// Loss above this fraction ends the ramp.
    #[arg(long, default_value_t = 0.01)]
    max_loss: f64,
    /// Latency p99 above this (ms) ends the ramp.
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
    /// After Switchyard, ramp Janus (--janus-url, --janus-pid) the same way in the same run
    /// and report the ratios.
    #[arg(long)]
    compare_janus: bool,
    /// sfu: subscribers of one publisher; mcu: rooms of MCU participants (`POST /mix`), each
    /// sending a real VP8 640x360 clip and an Opus tone and receiving the mix. With
    /// --compare-janus (and --audio-only): the same rooms on Janus's AudioBridge.
    #[arg(long, value_enum, default_value = "sfu")]
    mode: Mode,
    /// MCU participants per room.
    #[arg(long, default_value_t = 4)]
    room: usize,
    /// MCU rooms added per step.
    #[arg(long, default_value_t = 1)]
    rooms_per_step: usize,
    /// MCU participants per room that talk (send the tone); the rest send silence, marked
    /// silent by their RFC 6464 levels, as a meeting's listeners do [default: all].
    #[arg(long)]
    talkers: Option<usize>,
    /// MCU participants send and receive audio only.
    #[arg(long)]
    audio_only: bool,
    /// The server's canvas rate, which composite frames are held to (as MCU__FRAMERATE).
    #[arg(long, env = "MCU__FRAMERATE")]
    canvas_fps: Option<u32>,
    #[command(flatten)]
    simulcast: SimulcastArgs,
    #[command(flatten)]
    target: TargetArgs,
}

/// What `capacity` ramps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Sfu,
    Mcu,
}

/// Runs `switchyard loadtest ...`; `exe` is the switchyard binary (to start the server).
pub fn main(args: LoadtestArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard loadtest: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    raise_file_limit();
    let result = runtime.block_on(async {
        match args.command {
            LoadtestCommand::Run(a) => run::run(a).await,
            LoadtestCommand::Capacity(a) if a.mode == Mode::Mcu => mcu::capacity(&a).await,
            LoadtestCommand::Capacity(a) => capacity::capacity(a).await,
            LoadtestCommand::Peers(a) => peers::peers(&a).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("switchyard loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One socket per emulated transport: thousands of descriptors.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit read and write one struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
