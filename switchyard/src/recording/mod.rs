//! All-in-one's recording monitor, muxer and mover: a thread that closes what a crash left in
//! the recordings directory at start, then every few seconds has each finished session muxed
//! (see `switchyard_recording::monitor`), one at a time, off the control plane's runtime, and,
//! with RECORDING:STORAGE, moved to object storage (`switchyard_recording::mover`). With
//! DEPLOYMENTS:0:RECORDINGMANAGEMENT:AMQPURI the sessions go to RabbitMQ instead, for
//! `switchyard recording-muxer` processes to mux (`queue`).

mod queue;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use switchyard_controlplane::config::Config;
use switchyard_recording::monitor::Monitor;
use switchyard_recording::mover::Mover;
use switchyard_recording::mux::{self, Muxed};
use switchyard_store::{MCU_CANVAS_HEIGHTS, MCU_CANVAS_WIDTHS, MCU_FRAME_RATES};

use crate::fatal::Fatal;

/// How often the monitor looks for finished sessions.
const POLL: Duration = Duration::from_secs(2);

/// How sessions are muxed: RECORDING:LAYOUT (`grid`, `hstack`, `vstack`), RECORDING:WIDTH,
/// RECORDING:HEIGHT, RECORDING:FRAMERATE, RECORDING:VIDEOBITRATE (bit/s).
pub fn mux_config(config: &Config) -> Result<mux::Config, Fatal> {
    let default = mux::Config::default();
    let number = |name: &str, default: u32, range: std::ops::RangeInclusive<u32>| match config
        .count(name)
        .map(u32::try_from)
    {
        None => Ok(default),
        Some(Ok(n)) if range.contains(&n) => Ok(n),
        Some(_) => Err(Fatal::Recording(format!(
            "{name}: outside {}..={}",
            range.start(),
            range.end()
        ))),
    };
    let layout = match config.get("RECORDING:LAYOUT") {
        None => default.layout,
        Some(v) => v.trim().parse().map_err(|_| {
            Fatal::Recording(format!(
                "RECORDING:LAYOUT: {v:?} is not grid, hstack or vstack"
            ))
        })?,
    };
    Ok(mux::Config {
        layout,
        // Even sizes: I420's chroma is subsampled 2x2.
        width: number("RECORDING:WIDTH", default.width, MCU_CANVAS_WIDTHS)? & !1,
        height: number("RECORDING:HEIGHT", default.height, MCU_CANVAS_HEIGHTS)? & !1,
        fps: number("RECORDING:FRAMERATE", default.fps, MCU_FRAME_RATES)?,
        video_bitrate: number(
            "RECORDING:VIDEOBITRATE",
            default.video_bitrate,
            100_000..=20_000_000,
        )?,
        ..default
    })
}

/// The running monitor; dropping it stops it after the pass under way (a mux cut short by the
/// process's exit is made again at the next start).
pub struct MonitorThread {
    stop: Arc<AtomicBool>,
    thread: std::thread::Thread,
}

impl Drop for MonitorThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}

/// The mover of RECORDING:STORAGE, if set (the store's credentials and endpoint come from the
/// environment: `AWS_*`, `AZURE_*`, `GOOGLE_*`, as object_store names them).
pub fn mover(config: &Config) -> Result<Option<Mover>, Fatal> {
    let Some(url) = config.get("RECORDING:STORAGE") else {
        return Ok(None);
    };
    let mover =
        Mover::new(url.trim()).map_err(|e| Fatal::Recording(format!("RECORDING:STORAGE: {e}")))?;
    tracing::info!(url = %url.trim(), "recordings are moved to object storage once muxed");
    Ok(Some(mover))
}

/// The AMQP URI of the recording pipeline's queue, if set.
pub fn amqp_uri(config: &Config) -> Option<String> {
    config
        .get("DEPLOYMENTS:0:RECORDINGMANAGEMENT:AMQPURI")
        .map(|u| u.trim().to_string())
}

/// Starts the monitor of `dir`: sessions are muxed here, or published to `amqp` for muxers
/// elsewhere; the mover runs after each pass when there is one. `muxed` hears of each session
/// muxed here (the webhooks' `recording.mixed`), with its object URL once the mover stored it
/// when there is a mover (a session muxed before a restart and moved after it is not told).
pub fn start(
    dir: PathBuf,
    config: mux::Config,
    mut mover: Option<Mover>,
    amqp: Option<String>,
    mut muxed: impl FnMut(&Muxed, Option<&str>) + Send + 'static,
) -> std::io::Result<MonitorThread> {
    let mut publisher = amqp.as_deref().map(queue::Publisher::new).transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let handle = std::thread::Builder::new()
        .name("recording-monitor".into())
        .spawn(move || {
            let monitor = Monitor { dir, config };
            let mut to_move: HashMap<PathBuf, Muxed> = HashMap::new();
            match monitor.close_orphans() {
                Ok(closed) if !closed.is_empty() => {
                    tracing::warn!(files = closed.len(), "closed recordings a crash left");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(dir = ?monitor.dir, "recording monitor: {e}"),
            }
            while !stopping.load(Ordering::Relaxed) {
                let passed = match publisher.as_mut() {
                    Some(p) => hand_out(&monitor, p),
                    None => monitor.poll().map(|done| {
                        for m in done {
                            if mover.is_some() {
                                // Told once the mover stored it, with its object URL.
                                to_move.insert(m.path.with_extension("json"), m);
                            } else {
                                muxed(&m, None);
                            }
                        }
                    }),
                };
                if let Err(e) = passed {
                    tracing::error!(dir = ?monitor.dir, "recording monitor: {e}");
                }
                if let Some(mover) = mover.as_mut() {
                    for (json, storage) in mover.pass(&monitor.dir) {
                        if let Some(m) = to_move.remove(&json) {
                            muxed(&m, storage.muxed.as_deref());
                        }
                    }
                }
                std::thread::park_timeout(POLL);
            }
        })?;
    Ok(MonitorThread {
        stop,
        thread: handle.thread().clone(),
    })
}

/// Publishes the sessions to mux; each is marked queued once the broker confirmed it (one not
/// confirmed is tried again at the next pass).
fn hand_out(monitor: &Monitor, publisher: &mut queue::Publisher) -> std::io::Result<()> {
    for job in monitor.pending()? {
        match publisher.publish(&job) {
            Ok(()) => {
                monitor.queued(&job)?;
                tracing::info!(session = %job.id, files = job.files.len(), "session queued to mux");
            }
            Err(e) => {
                tracing::warn!(session = %job.id, "session not queued, tried again later: {e}");
                break;
            }
        }
    }
    Ok(())
}

/// `switchyard recording-muxer`: muxes the sessions the monitor queues, one at a time.
#[derive(Args)]
pub struct MuxerArgs {
    /// The data directory whose `recordings/` the media server writes (shared with it).
    #[arg(long, default_value = "switchyard-data", env = "SWITCHYARD_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    config: crate::ConfigFile,
}

/// Runs a muxer until SIGTERM or Ctrl-C (a job under way goes back to the queue).
pub fn muxer(args: MuxerArgs) -> Result<(), Fatal> {
    let config = args.config.load()?;
    let uri = amqp_uri(&config).ok_or_else(|| {
        Fatal::Recording("DEPLOYMENTS:0:RECORDINGMANAGEMENT:AMQPURI is not set".into())
    })?;
    let monitor = Arc::new(Monitor {
        dir: args.data_dir.join("recordings"),
        config: mux_config(&config)?,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Fatal::Recording(format!("runtime: {e}")))?;
    tracing::info!(dir = ?monitor.dir, "switchyard recording-muxer {}", env!("CARGO_PKG_VERSION"));
    runtime.block_on(async { queue::run_muxer(uri, monitor, crate::shutdown_watch()).await });
    tracing::info!("stopped");
    Ok(())
}

/// `switchyard mux`: the muxer by hand.
#[derive(Args)]
pub struct MuxArgs {
    /// The recorded files (one track each, as the media server writes them; other Matroska
    /// files are read too, from time 0 when they carry no date).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The file to write (Matroska; written as `<out>.rec` until complete).
    #[arg(long, short)]
    out: PathBuf,
    /// grid (tiles follow who is there), hstack or vstack.
    #[arg(long, default_value = "grid")]
    layout: String,
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// VP8 bitrate, bit/s.
    #[arg(long, default_value_t = 2_000_000)]
    video_bitrate: u32,
}

pub fn mux_main(args: &MuxArgs) -> ExitCode {
    let layout = match args.layout.parse() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("switchyard mux: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = mux::Config {
        layout,
        width: args.width & !1,
        height: args.height & !1,
        fps: args.fps,
        video_bitrate: args.video_bitrate,
        ..mux::Config::default()
    };
    let started = std::time::Instant::now();
    match mux::mux(&args.files, &args.out, &config) {
        Ok(m) => {
            println!(
                "wrote {} ({:.1} s, {} video and {} audio frames) in {:.1} s",
                m.path.display(),
                m.duration_ms as f64 / 1000.0,
                m.video_frames,
                m.audio_frames,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard mux: {e}");
            ExitCode::FAILURE
        }
    }
}
