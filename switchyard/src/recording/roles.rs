//! The recording roles as processes of their own, for a cluster:
//!
//! - media servers record into their own data directory; with RECORDING:STORAGE each
//!   recording goes to object storage as it finishes, with its log ([`media_server`]);
//! - `switchyard recording-monitor` reads the logs (from storage with RECORDING:STORAGE, else
//!   from a recordings directory it shares with the media servers), keeps the recording
//!   database, and queues each session on RabbitMQ (or muxes it itself without one);
//! - `switchyard recording-muxer` muxes the queued sessions, fetching their files from
//!   storage, and its mover stores each muxed session;
//! - `switchyard recording-mover` moves muxed sessions from a directory shared with a muxer.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use switchyard_controlplane::config::Config;
use switchyard_recording::mirror::Mirror;
use switchyard_recording::monitor::Monitor;

use super::{Pipeline, Worker, amqp_uri, db, every_poll, mover, mux_config, objects, queue};
use crate::fatal::Fatal;

/// Where a recording role keeps its files.
#[derive(Args)]
pub struct RecordingArgs {
    /// The data directory: recordings under `<data-dir>/recordings/` (with RECORDING:STORAGE, a
    /// working copy: the logs the monitor reads, the files a muxer fetches).
    #[arg(long, default_value = "switchyard-data", env = "SWITCHYARD_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    config: crate::ConfigFile,
}

impl RecordingArgs {
    fn recordings(&self) -> PathBuf {
        self.data_dir.join("recordings")
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Fatal> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Fatal::Recording(format!("runtime: {e}")))
}

/// A media server's recordings (`<data-dir>/recordings`): what a crash left is closed now
/// (this server is the only writer there); with RECORDING:STORAGE, each recording moves to
/// storage as it finishes, on a thread of its own.
pub fn media_server(config: &Config, dir: PathBuf) -> Result<Option<Worker>, Fatal> {
    let pipeline = Pipeline::new(Monitor {
        dir: dir.clone(),
        config: mux_config(config)?,
    });
    pipeline.close_orphans();
    let Some(mut mover) = mover(config)? else {
        tracing::info!(
            ?dir,
            "recordings stay in the data directory (no RECORDING:STORAGE)"
        );
        return Ok(None);
    };
    tracing::info!(url = %mover.objects().url(), "recordings move to object storage as they finish");
    let worker = every_poll("recording-mover", move || {
        mover.pass_recordings(&dir);
    })
    .map_err(|e| Fatal::Recording(format!("starting the recording mover: {e}")))?;
    Ok(Some(worker))
}

/// `switchyard recording-monitor`: runs until SIGTERM or Ctrl-C.
pub fn monitor(args: RecordingArgs) -> Result<(), Fatal> {
    let config = args.config.load()?;
    let dir = args.recordings();
    let runtime = runtime()?;
    let store = runtime.block_on(db::open(&config, &args.data_dir))?;
    let mut pipeline = Pipeline::new(Monitor {
        dir: dir.clone(),
        config: mux_config(&config)?,
    });
    pipeline.db = Some(db::RecordingDb::new(store, runtime.handle().clone()));
    match objects(&config)? {
        Some(objects) => {
            tracing::info!(url = %objects.url(), "reading the recordings' logs from object storage");
            pipeline.mirror = Some(Mirror::new(objects));
            pipeline.fetch = super::objects(&config)?;
            pipeline.mover = mover(&config)?;
        }
        // The media servers write here: what they leave open is theirs to close.
        None => tracing::info!(?dir, "reading the recordings' logs from the directory"),
    }
    match amqp_uri(&config) {
        Some(uri) => {
            pipeline.publisher = Some(super::queue_publisher(&uri)?);
            tracing::info!(
                queue = queue::QUEUE,
                "sessions are queued for recording muxers"
            );
        }
        None => {
            tracing::info!("sessions are muxed here (no DEPLOYMENTS:0:RECORDINGMANAGEMENT:AMQPURI)")
        }
    }
    tracing::info!(
        ?dir,
        "switchyard recording-monitor {}",
        env!("CARGO_PKG_VERSION")
    );
    let worker = every_poll("recording-monitor", move || pipeline.pass())
        .map_err(|e| Fatal::Recording(format!("starting the monitor: {e}")))?;
    runtime.block_on(crate::shutdown_signal());
    drop(worker);
    tracing::info!("stopped");
    Ok(())
}

/// `switchyard recording-muxer`: muxes the sessions the monitor queues, one at a time, until
/// SIGTERM or Ctrl-C (a job under way goes back to the queue).
pub fn muxer(args: RecordingArgs) -> Result<(), Fatal> {
    let config = args.config.load()?;
    let uri = amqp_uri(&config).ok_or_else(|| {
        Fatal::Recording("DEPLOYMENTS:0:RECORDINGMANAGEMENT:AMQPURI is not set".into())
    })?;
    let dir = args.recordings();
    let muxing = Arc::new(queue::Muxing {
        monitor: Monitor {
            dir: dir.clone(),
            config: mux_config(&config)?,
        },
        fetch: objects(&config)?,
    });
    // Sessions muxed here are stored by a mover of this process's own.
    let _mover = match mover(&config)? {
        Some(mut mover) => {
            tracing::info!(url = %mover.objects().url(), "files come from, and muxed sessions go to, object storage");
            let dir = dir.clone();
            let worker = every_poll("recording-mover", move || {
                mover.pass(&dir);
            })
            .map_err(|e| Fatal::Recording(format!("starting the mover: {e}")))?;
            Some(worker)
        }
        None => None,
    };
    let runtime = runtime()?;
    tracing::info!(
        ?dir,
        "switchyard recording-muxer {}",
        env!("CARGO_PKG_VERSION")
    );
    runtime.block_on(async { queue::run_muxer(uri, muxing, crate::shutdown_watch()).await });
    tracing::info!("stopped");
    Ok(())
}

/// `switchyard recording-mover`: moves the muxed sessions of a directory to RECORDING:STORAGE
/// until SIGTERM or Ctrl-C.
pub fn mover_role(args: RecordingArgs) -> Result<(), Fatal> {
    let config = args.config.load()?;
    let mut mover =
        mover(&config)?.ok_or_else(|| Fatal::Recording("RECORDING:STORAGE is not set".into()))?;
    let dir = args.recordings();
    tracing::info!(?dir, url = %mover.objects().url(), "switchyard recording-mover {}", env!("CARGO_PKG_VERSION"));
    let pass_dir = dir.clone();
    let worker = every_poll("recording-mover", move || {
        mover.pass(&pass_dir);
    })
    .map_err(|e| Fatal::Recording(format!("starting the mover: {e}")))?;
    runtime()?.block_on(crate::shutdown_signal());
    drop(worker);
    tracing::info!("stopped");
    Ok(())
}
