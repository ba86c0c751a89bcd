//! All-in-one's recording monitor and muxer: a thread that closes what a crash left in the
//! recordings directory at start, then every few seconds has each finished session muxed
//! (see `switchyard_recording::monitor`), one at a time, off the control plane's runtime.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use switchyard_controlplane::config::Config;
use switchyard_recording::monitor::Monitor;
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
        Some(_) => Err(Fatal::Mixer(format!(
            "{name}: outside {}..={}",
            range.start(),
            range.end()
        ))),
    };
    let layout = match config.get("RECORDING:LAYOUT") {
        None => default.layout,
        Some(v) => v.trim().parse().map_err(|_| {
            Fatal::Mixer(format!(
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

/// Starts the monitor of `dir`; `muxed` hears of each session muxed (the webhooks'
/// `recording.mixed`).
pub fn start(
    dir: PathBuf,
    config: mux::Config,
    mut muxed: impl FnMut(&Muxed) + Send + 'static,
) -> std::io::Result<MonitorThread> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let handle = std::thread::Builder::new()
        .name("recording-monitor".into())
        .spawn(move || {
            let monitor = Monitor { dir, config };
            match monitor.close_orphans() {
                Ok(closed) if !closed.is_empty() => {
                    tracing::warn!(files = closed.len(), "closed recordings a crash left");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(dir = ?monitor.dir, "recording monitor: {e}"),
            }
            while !stopping.load(Ordering::Relaxed) {
                match monitor.poll() {
                    Ok(done) => done.iter().for_each(&mut muxed),
                    Err(e) => tracing::error!(dir = ?monitor.dir, "recording monitor: {e}"),
                }
                std::thread::park_timeout(POLL);
            }
        })?;
    Ok(MonitorThread {
        stop,
        thread: handle.thread().clone(),
    })
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
