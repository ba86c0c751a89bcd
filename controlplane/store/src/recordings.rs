//! The recording database: what the recording monitor learned of each recorded file and each
//! session, for operators and the admin API to look up. The monitor writes it from what the
//! recordings say (their logs and the sessions' JSON), so rows are replaced whole, never
//! edited piecemeal: writing a row again is harmless.

use serde::{Deserialize, Serialize};

use super::queries::{json_list, parse_list};
use super::{Store, StoreError, now_millis};

/// One recorded track of one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedFile {
    /// Its path under the recordings directory (`<channel>/<name>`), which is also its key in
    /// object storage.
    pub file: String,
    pub application_id: String,
    pub channel_id: String,
    pub client_id: String,
    pub user_id: String,
    pub connection_id: String,
    pub connection_type: String,
    /// `recording` or `finished`.
    pub state: String,
    /// When its first frame arrived (its start entry's time while it records), Unix ms.
    pub start_at: i64,
    pub duration_ms: i64,
    /// The session it was muxed in, once it belongs to one.
    pub session_id: Option<String>,
}

/// A channel's recordings muxed into one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingSession {
    /// `<channel>-<start>`.
    pub id: String,
    pub channel_id: String,
    pub start_at: i64,
    pub end_at: i64,
    /// Client ids.
    pub participants: Vec<String>,
    /// `pending` (waiting to be muxed), `queued` (handed to a muxer), `muxed`, `failed` or
    /// `stored` (in object storage).
    pub state: String,
    /// The muxed file: its object URL once stored, else its path.
    pub muxed: Option<String>,
    pub error: Option<String>,
}

type FileRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
);
type SessionRow = (
    String,
    String,
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
);

const FILE_COLUMNS: &str = "SELECT file, application_id, channel_id, client_id, user_id, \
     connection_id, connection_type, state, start_at, duration_ms, session_id FROM recordings";
const SESSION_COLUMNS: &str = "SELECT id, channel_id, start_at, end_at, participants, state, \
     muxed, error FROM recording_sessions";

impl Store {
    /// Writes these files' rows (new or replacing), in one transaction.
    pub async fn put_recorded_files(&self, files: &[RecordedFile]) -> Result<(), StoreError> {
        let now = now_millis();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for f in files {
                sqlx::query(
                    "INSERT INTO recordings (file, application_id, channel_id, client_id, \
                     user_id, connection_id, connection_type, state, start_at, duration_ms, \
                     session_id, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (file) DO UPDATE SET application_id = excluded.application_id, \
                     channel_id = excluded.channel_id, client_id = excluded.client_id, \
                     user_id = excluded.user_id, connection_id = excluded.connection_id, \
                     connection_type = excluded.connection_type, state = excluded.state, \
                     start_at = excluded.start_at, duration_ms = excluded.duration_ms, \
                     session_id = excluded.session_id, updated_at = excluded.updated_at",
                )
                .bind(&f.file)
                .bind(&f.application_id)
                .bind(&f.channel_id)
                .bind(&f.client_id)
                .bind(&f.user_id)
                .bind(&f.connection_id)
                .bind(&f.connection_type)
                .bind(&f.state)
                .bind(f.start_at)
                .bind(f.duration_ms)
                .bind(&f.session_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Writes these sessions' rows (new or replacing), in one transaction.
    pub async fn put_recording_sessions(
        &self,
        sessions: &[RecordingSession],
    ) -> Result<(), StoreError> {
        let now = now_millis();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for s in sessions {
                sqlx::query(
                    "INSERT INTO recording_sessions (id, channel_id, start_at, end_at, \
                     participants, state, muxed, error, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (id) DO UPDATE SET channel_id = excluded.channel_id, \
                     start_at = excluded.start_at, end_at = excluded.end_at, \
                     participants = excluded.participants, state = excluded.state, \
                     muxed = excluded.muxed, error = excluded.error, \
                     updated_at = excluded.updated_at",
                )
                .bind(&s.id)
                .bind(&s.channel_id)
                .bind(s.start_at)
                .bind(s.end_at)
                .bind(json_list(&s.participants))
                .bind(&s.state)
                .bind(&s.muxed)
                .bind(&s.error)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Sessions, newest first, at most `limit`; only `channel`'s when given.
    pub async fn recording_sessions(
        &self,
        channel: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RecordingSession>, StoreError> {
        let rows: Vec<SessionRow> = match channel {
            Some(channel) => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "{SESSION_COLUMNS} WHERE channel_id = $1 ORDER BY start_at DESC, id LIMIT $2"
                ));
                on_pool!(self, pool => {
                    sqlx::query_as(sql).bind(channel).bind(i64::from(limit)).fetch_all(pool).await
                })?
            }
            None => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "{SESSION_COLUMNS} ORDER BY start_at DESC, id LIMIT $1"
                ));
                on_pool!(self, pool => {
                    sqlx::query_as(sql).bind(i64::from(limit)).fetch_all(pool).await
                })?
            }
        };
        rows.into_iter()
            .map(
                |(id, channel_id, start_at, end_at, participants, state, muxed, error)| {
                    let participants =
                        parse_list(|| format!("recording session {id}"), &participants)?;
                    Ok(RecordingSession {
                        id,
                        channel_id,
                        start_at,
                        end_at,
                        participants,
                        state,
                        muxed,
                        error,
                    })
                },
            )
            .collect()
    }

    /// A session's files, oldest first.
    pub async fn recorded_files(&self, session: &str) -> Result<Vec<RecordedFile>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{FILE_COLUMNS} WHERE session_id = $1 ORDER BY start_at, file"
        ));
        let rows: Vec<FileRow> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(session).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(file_from_row).collect())
    }
}

fn file_from_row(row: FileRow) -> RecordedFile {
    let (
        file,
        application_id,
        channel_id,
        client_id,
        user_id,
        connection_id,
        connection_type,
        state,
        start_at,
        duration_ms,
        session_id,
    ) = row;
    RecordedFile {
        file,
        application_id,
        channel_id,
        client_id,
        user_id,
        connection_id,
        connection_type,
        state,
        start_at,
        duration_ms,
        session_id,
    }
}
