//! The cluster's configuration store: deployments, applications with their shared secrets,
//! channel configurations, webhooks, SIP trunks and mappings, and the audit log of
//! administrative changes; and the recording database, which the recording monitor keeps.
//!
//! PostgreSQL when the cluster has one (`CONNECTIONSTRINGS:DEFAULT`), otherwise a SQLite file in
//! the data directory, so that a single server needs no database to run. Both get the same
//! schema from embedded migrations applied at open, and the same queries: lists are stored as
//! JSON text and times as Unix milliseconds, types both databases share.
//!
//! The gateway reads configuration through [`CachedStore`], which keeps serving the last
//! snapshot read while the database is unreachable.

#![forbid(unsafe_code)]

mod cache;
mod channel_match;
mod mask;
mod migrations;
mod records;
mod secret;
pub mod sip;
mod webhook;

pub use cache::{CachedStore, Health, Snapshot};
pub use channel_match::match_channel;
pub use mask::mask;
pub use recordings::{RecordedFile, RecordingSession};
pub use records::{
    Application, AuditEntry, ChannelConfig, ClusteringStrategy, ConfigError, Deployment,
    MAX_SECRETS, MCU_CANVAS_HEIGHTS, MCU_CANVAS_WIDTHS, MCU_FRAME_RATES, validate_order,
};
pub use secret::{MASKED, Secret};
pub use sip::{SipCall, SipMapping, SipMatch, SipTransport, SipTrunk};
pub use webhook::{WEBHOOK_EVENTS, Webhook};

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection};

/// How long opening the database, or any later wait for a connection, may take: past it the
/// database counts as down, so that start fails with a clear error and the cache takes over,
/// rather than hanging.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite file's name in the data directory.
pub const SQLITE_FILE: &str = "switchyard.db";

/// The configuration database. Cloning is cheap: both hold a connection pool.
#[derive(Clone)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl std::fmt::Debug for Store {
    /// Only the kind: the pools' options hold the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Postgres(_) => f.write_str("Store::Postgres"),
            Store::Sqlite(_) => f.write_str("Store::Sqlite"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{url:?} is not a configuration database URL; expected postgres://user:password@host/db \
         or sqlite:path"
    )]
    Url { url: String },
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the configuration database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error(
        "the configuration database {url} did not accept a connection within {timeout:?} \
         (refused, unreachable or still starting)"
    )]
    Timeout { url: String, timeout: Duration },
    #[error("cannot bring the schema of the configuration database {url} up to date: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("configuration database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("no {kind} {id:?}")]
    NotFound { kind: &'static str, id: String },
    #[error("the stored {what} is not valid: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs `$body` with `$pool` bound to whichever pool `$store` holds. The body is compiled once
/// per database, so the same query text serves both (`$1` placeholders work in SQLite too).
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Postgres($pool) => $body,
            Store::Sqlite($pool) => $body,
        }
    };
}

mod queries;
mod recordings;

impl Store {
    /// Opens the configuration database and brings its schema up to date: PostgreSQL for a
    /// `postgres://` or `postgresql://` URL, SQLite for a `sqlite:` one (`sqlite::memory:` for
    /// tests), and with no URL the SQLite file [`SQLITE_FILE`] in `data_dir`, created if
    /// missing. Fails within about [`CONNECT_TIMEOUT`] when PostgreSQL does not answer; errors
    /// name the URL with its password masked.
    pub async fn open(url: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        match url {
            Some(url) if is_postgres(url) => Self::open_postgres(url).await,
            Some(url) if url.starts_with("sqlite:") => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|source| StoreError::Connect {
                        url: mask(url),
                        source,
                    })?
                    .create_if_missing(true);
                Self::open_sqlite(options, &mask(url)).await
            }
            Some(url) => Err(StoreError::Url { url: mask(url) }),
            None => {
                std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
                    path: data_dir.to_path_buf(),
                    source,
                })?;
                let path = data_dir.join(SQLITE_FILE);
                // WAL: readers (the cache's refresh) never wait for the admin API's writes.
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal);
                Self::open_sqlite(options, &path.display().to_string()).await
            }
        }
    }

    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let masked = mask(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|source| StoreError::Connect {
                url: masked.clone(),
                source,
            })?
            .application_name("switchyard");
        let connect = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options);
        let timeout = || StoreError::Timeout {
            url: masked.clone(),
            timeout: CONNECT_TIMEOUT,
        };
        // The pool retries a refused connection (the server may be starting) until its acquire
        // timeout, then reports the timeout; other errors (authentication, no such database)
        // come at once. The outer timeout is only a backstop.
        let pool = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), connect)
            .await
            .map_err(|_| timeout())?
            .map_err(|source| match source {
                sqlx::Error::PoolTimedOut => timeout(),
                source => StoreError::Connect {
                    url: masked.clone(),
                    source,
                },
            })?;
        migrations::postgres()
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: masked,
                source,
            })?;
        Ok(Store::Postgres(pool))
    }

    async fn open_sqlite(options: SqliteConnectOptions, shown: &str) -> Result<Store, StoreError> {
        let connect_error = |source| StoreError::Connect {
            url: shown.to_string(),
            source,
        };
        // One connection first creates the file and switches it to WAL. The pool opens two
        // at once (its minimum and the first acquire); on a new file both would try to change
        // the journal mode, and SQLite answers one of them "database is locked" at once,
        // without waiting (a writer deadlock it refuses).
        let first = options.connect().await.map_err(connect_error)?;
        first.close().await.map_err(connect_error)?;
        // Connections never expire: an in-memory database lives only as long as one is open.
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        migrations::sqlite()
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: shown.to_string(),
                source,
            })?;
        Ok(Store::Sqlite(pool))
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

fn is_postgres(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
    })
}

/// Now, in Unix milliseconds.
fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
