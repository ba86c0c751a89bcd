//! The recording database (DEPLOYMENTS:0:RECORDINGMANAGEMENT:POSTGRESURI, else the
//! configuration store's CONNECTIONSTRINGS:DEFAULT, else SQLite in the data directory): after
//! each of its passes the monitor writes what changed in what the recordings say (see
//! `Monitor::index`), so operators can look recordings and sessions up without reading files.

use std::collections::HashMap;

use switchyard_controlplane::config::Config;
use switchyard_recording::monitor::{Index, Indexed, IndexedSession};
use switchyard_store::{RecordedFile, RecordingSession, Store};

use crate::fatal::Fatal;

/// The database's URL: PostgreSQL, or `None` for SQLite in the data directory.
pub fn url(config: &Config) -> Option<&str> {
    config
        .get("DEPLOYMENTS:0:RECORDINGMANAGEMENT:POSTGRESURI")
        .or_else(|| config.get("CONNECTIONSTRINGS:DEFAULT"))
}

/// Opens the database (its migrations applied).
pub async fn open(config: &Config, data_dir: &std::path::Path) -> Result<Store, Fatal> {
    let url = url(config);
    let store = Store::open(url, data_dir).await?;
    tracing::info!(
        database = %url.map_or_else(|| data_dir.join(switchyard_store::SQLITE_FILE).display().to_string(), switchyard_store::mask),
        "recording database"
    );
    Ok(store)
}

/// The monitor's writer: remembers what it wrote, and writes only rows that changed.
pub struct RecordingDb {
    store: Store,
    runtime: tokio::runtime::Handle,
    files: HashMap<String, RecordedFile>,
    sessions: HashMap<String, RecordingSession>,
}

impl RecordingDb {
    /// A writer to `store`, whose pool lives on `runtime` (the monitor's thread is not one of
    /// its threads: it waits on it).
    pub fn new(store: Store, runtime: tokio::runtime::Handle) -> RecordingDb {
        RecordingDb {
            store,
            runtime,
            files: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    /// Writes the rows of `index` that changed; a failure is logged and the rows are written
    /// at a later pass.
    pub fn sync(&mut self, index: Index) {
        let files: Vec<RecordedFile> = index
            .recordings
            .into_iter()
            .map(file_row)
            .filter(|f| self.files.get(&f.file) != Some(f))
            .collect();
        let sessions: Vec<RecordingSession> = index
            .sessions
            .into_iter()
            .map(session_row)
            .filter(|s| self.sessions.get(&s.id) != Some(s))
            .collect();
        if files.is_empty() && sessions.is_empty() {
            return;
        }
        let store = &self.store;
        let written = self.runtime.block_on(async {
            store.put_recorded_files(&files).await?;
            store.put_recording_sessions(&sessions).await
        });
        match written {
            Ok(()) => {
                tracing::debug!(
                    files = files.len(),
                    sessions = sessions.len(),
                    "recording database updated"
                );
                self.files
                    .extend(files.into_iter().map(|f| (f.file.clone(), f)));
                self.sessions
                    .extend(sessions.into_iter().map(|s| (s.id.clone(), s)));
            }
            Err(e) => tracing::warn!("recording database: {e} (written at a later pass)"),
        }
    }
}

fn ms(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn file_row(i: Indexed) -> RecordedFile {
    let r = i.recorded;
    RecordedFile {
        file: i.key,
        application_id: r.application_id,
        channel_id: r
            .file
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        client_id: r.client_id,
        user_id: r.user_id,
        connection_id: r.connection_id,
        connection_type: r.connection_type,
        state: if i.open { "recording" } else { "finished" }.to_string(),
        start_at: ms(r.start_ms),
        duration_ms: ms(r.duration_ms),
        session_id: i.session,
    }
}

fn session_row(s: IndexedSession) -> RecordingSession {
    RecordingSession {
        id: s.id,
        channel_id: s.channel_id,
        start_at: ms(s.start_ms),
        end_at: ms(s.end_ms),
        participants: s.participants,
        state: s.state.to_string(),
        muxed: s.muxed,
        error: s.error,
    }
}
