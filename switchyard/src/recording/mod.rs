//! Recording's monitor, muxer and mover in the server binary. All-in-one runs them on one
//! thread ([`start`]): it closes what a crash left in the recordings directory, then every few
//! seconds has each finished session muxed (see `switchyard_recording::monitor`), one at a
//! time, off the control plane's runtime, and, with RECORDING:STORAGE, moved to object storage
//! (`switchyard_recording::mover`); with DEPLOYMENTS:0:RECORDINGMANAGEMENT:AMQPURI the sessions
//! go to RabbitMQ instead, for `switchyard recording-muxer` processes to mux (`queue`). The
//! monitor keeps the recording database (`db`). A cluster runs them as roles of their own
//! (`roles`).

pub mod db;
mod queue;
pub mod roles;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use switchyard_controlplane::config::Config;
use switchyard_recording::mirror::Mirror;
use switchyard_recording::monitor::{Job, Monitor, SESSIONS};
use switchyard_recording::mover::Mover;
use switchyard_recording::mux::{self, Muxed};
use switchyard_recording::objects::Objects;
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

/// A thread of the recording roles, working in passes; dropping it stops it after the pass
/// under way (a mux cut short by the process's exit is made again at the next start).
pub struct Worker {
    stop: Arc<AtomicBool>,
    thread: std::thread::Thread,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}

/// Runs `pass` every [`POLL`] on a thread named `name` until the [`Worker`] is dropped.
fn every_poll(name: &str, mut pass: impl FnMut() + Send + 'static) -> std::io::Result<Worker> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                pass();
                std::thread::park_timeout(POLL);
            }
        })?;
    Ok(Worker {
        stop,
        thread: handle.thread().clone(),
    })
}

/// The mover of RECORDING:STORAGE, if set (the store's credentials and endpoint come from the
/// environment: `AWS_*`, `AZURE_*`, `GOOGLE_*`, as object_store names them).
pub fn mover(config: &Config) -> Result<Option<Mover>, Fatal> {
    let Some(url) = storage_url(config) else {
        return Ok(None);
    };
    let mover = Mover::new(url).map_err(|e| Fatal::Recording(format!("RECORDING:STORAGE: {e}")))?;
    Ok(Some(mover))
}

/// A client of RECORDING:STORAGE, if set.
pub fn objects(config: &Config) -> Result<Option<Objects>, Fatal> {
    storage_url(config)
        .map(|url| {
            Objects::new(url).map_err(|e| Fatal::Recording(format!("RECORDING:STORAGE: {e}")))
        })
        .transpose()
}

fn storage_url(config: &Config) -> Option<&str> {
    config.get("RECORDING:STORAGE").map(str::trim)
}

/// The AMQP URI of the recording pipeline's queue, if set.
pub fn amqp_uri(config: &Config) -> Option<String> {
    config
        .get("DEPLOYMENTS:0:RECORDINGMANAGEMENT:AMQPURI")
        .map(|u| u.trim().to_string())
}

/// The publisher of sessions to the muxers' queue at `uri` (it connects at its first job).
pub fn queue_publisher(uri: &str) -> Result<queue::Publisher, Fatal> {
    queue::Publisher::new(uri).map_err(|e| Fatal::Recording(format!("AMQP client: {e}")))
}

/// Told of each session muxed here, with its object URL once stored when there is a mover
/// (the webhooks' `recording.mixed`).
pub type OnMuxed = Box<dyn FnMut(&Muxed, Option<&str>) + Send>;

/// The monitor's work, one pass at a time: what all-in-one runs on a thread, and
/// `switchyard recording-monitor`.
pub struct Pipeline {
    pub monitor: Monitor,
    /// The logs come from object storage (a cluster's monitor), and so do the files to mux.
    pub mirror: Option<Mirror>,
    pub fetch: Option<Objects>,
    /// Sessions go to muxers through RabbitMQ, else are muxed here.
    pub publisher: Option<queue::Publisher>,
    pub mover: Option<Mover>,
    pub db: Option<db::RecordingDb>,
    pub on_muxed: OnMuxed,
    /// Sessions muxed here and not stored yet, by JSON, to tell of once the mover stored them.
    to_move: HashMap<PathBuf, Muxed>,
}

impl Pipeline {
    pub fn new(monitor: Monitor) -> Pipeline {
        Pipeline {
            monitor,
            mirror: None,
            fetch: None,
            publisher: None,
            mover: None,
            db: None,
            on_muxed: Box::new(|_, _| {}),
            to_move: HashMap::new(),
        }
    }

    /// Closes what a crash left in a directory this process writes alone.
    pub fn close_orphans(&self) {
        match self.monitor.close_orphans() {
            Ok(closed) if !closed.is_empty() => {
                tracing::warn!(files = closed.len(), "closed recordings a crash left");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(dir = ?self.monitor.dir, "recording monitor: {e}"),
        }
    }

    /// One pass: the logs copied from storage, sessions handed out or muxed, muxed sessions
    /// moved, the database brought up to date.
    pub fn pass(&mut self) {
        let dir = self.monitor.dir.clone();
        if let Some(mirror) = self.mirror.as_mut()
            && let Err(e) = mirror.pass(&dir)
        {
            tracing::warn!("recording monitor: reading the logs in storage: {e}");
        }
        let passed = match self.publisher.as_mut() {
            Some(p) => hand_out(&self.monitor, p),
            None => self.mux_here(),
        };
        if let Err(e) = passed {
            tracing::error!(?dir, "recording monitor: {e}");
        }
        if let Some(mover) = self.mover.as_mut() {
            for (json, storage) in mover.pass(&dir) {
                if let Some(m) = self.to_move.remove(&json) {
                    (self.on_muxed)(&m, storage.muxed.as_deref());
                }
            }
        }
        if let Some(db) = self.db.as_mut() {
            match self.monitor.index() {
                Ok(index) => db.sync(index),
                Err(e) => tracing::error!(?dir, "recording monitor: {e}"),
            }
        }
    }

    fn mux_here(&mut self) -> std::io::Result<()> {
        for job in self.monitor.pending()? {
            let Some(m) = mux_job(&self.monitor, self.fetch.as_ref(), &job)? else {
                continue;
            };
            if self.mover.is_some() {
                // Told once the mover stored it, with its object URL.
                self.to_move.insert(m.path.with_extension("json"), m);
            } else {
                (self.on_muxed)(&m, None);
            }
        }
        Ok(())
    }
}

/// Muxes `job` with `monitor` (see `Monitor::run`); with `fetch`, its files come from object
/// storage first and go again after (they stay there). `None` when it was done already.
pub fn mux_job(
    monitor: &Monitor,
    fetch: Option<&Objects>,
    job: &Job,
) -> std::io::Result<Option<Muxed>> {
    let Some(objects) = fetch else {
        return monitor.run(job);
    };
    let failed = |e: switchyard_recording::objects::Error| std::io::Error::other(e.to_string());
    // A job delivered again after another muxer finished it.
    let json = format!("{SESSIONS}/{}.json", job.id);
    if objects.head(&json).map_err(failed)?.is_some() {
        tracing::info!(session = %job.id, "muxed already (its JSON is in storage)");
        return Ok(None);
    }
    let mut fetched = Vec::new();
    let mut result = Ok(());
    for file in &job.files {
        if monitor.dir.join(file).exists() {
            continue;
        }
        match objects.get_file(file, &monitor.dir) {
            Ok(path) => fetched.push(path),
            Err(e) => {
                result = Err(failed(e));
                break;
            }
        }
    }
    let muxed = result.and_then(|()| monitor.run(job));
    for path in fetched {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(?path, "a file fetched to mux stays: {e}");
        }
    }
    muxed
}

/// Starts all-in-one's monitor on a thread (see [`Pipeline`]); it first closes what a crash
/// left in its directory.
pub fn start(mut pipeline: Pipeline) -> std::io::Result<Worker> {
    pipeline.close_orphans();
    every_poll("recording-monitor", move || pipeline.pass())
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
