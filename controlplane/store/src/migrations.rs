//! The schema, embedded in the binary and brought up to date at open: one list for PostgreSQL
//! and one for SQLite, with the same versions and the same meaning.
//!
//! Listed by hand with `include_str!` rather than with `sqlx::migrate!`: the macro needs sqlx's
//! `macros` feature, whose proc-macro crate compiles sqlx's drivers and SQLite's C source a
//! second time, for the build host. The checksums are the same as the macro's (SHA-384 of the
//! file), so either can apply the other's migrations. A test checks these lists against the
//! folders, so a file added there and not here fails the tests.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// (version, description, SQL), in version order; the file for each is
/// `migrations/<database>/<version, 4 digits>_<description>.sql`.
type List = &'static [(i64, &'static str, &'static str)];

const POSTGRES: List = &[
    (
        1,
        "configuration",
        include_str!("../migrations/postgres/0001_configuration.sql"),
    ),
    (
        2,
        "deployment_turn_secret",
        include_str!("../migrations/postgres/0002_deployment_turn_secret.sql"),
    ),
    (
        3,
        "channel_config_mcu_canvas",
        include_str!("../migrations/postgres/0003_channel_config_mcu_canvas.sql"),
    ),
    (
        4,
        "channel_config_recording",
        include_str!("../migrations/postgres/0004_channel_config_recording.sql"),
    ),
    (
        5,
        "webhooks",
        include_str!("../migrations/postgres/0005_webhooks.sql"),
    ),
    (
        6,
        "recordings",
        include_str!("../migrations/postgres/0006_recordings.sql"),
    ),
    (
        7,
        "sip",
        include_str!("../migrations/postgres/0007_sip.sql"),
    ),
];

const SQLITE: List = &[
    (
        1,
        "configuration",
        include_str!("../migrations/sqlite/0001_configuration.sql"),
    ),
    (
        2,
        "deployment_turn_secret",
        include_str!("../migrations/sqlite/0002_deployment_turn_secret.sql"),
    ),
    (
        3,
        "channel_config_mcu_canvas",
        include_str!("../migrations/sqlite/0003_channel_config_mcu_canvas.sql"),
    ),
    (
        4,
        "channel_config_recording",
        include_str!("../migrations/sqlite/0004_channel_config_recording.sql"),
    ),
    (
        5,
        "webhooks",
        include_str!("../migrations/sqlite/0005_webhooks.sql"),
    ),
    (
        6,
        "recordings",
        include_str!("../migrations/sqlite/0006_recordings.sql"),
    ),
    (7, "sip", include_str!("../migrations/sqlite/0007_sip.sql")),
];

pub(super) fn postgres() -> Migrator {
    migrator(POSTGRES)
}

pub(super) fn sqlite() -> Migrator {
    migrator(SQLITE)
}

fn migrator(list: List) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The migration files in `migrations/<database>`, as (version, description).
    fn files(database: &str) -> Vec<(i64, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(database);
        let mut files: Vec<(i64, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                let stem = name.strip_suffix(".sql").expect("only .sql files");
                let (version, description) = stem.split_once('_').unwrap();
                (version.parse().unwrap(), description.to_string())
            })
            .collect();
        files.sort();
        files
    }

    fn listed(list: List) -> Vec<(i64, String)> {
        list.iter().map(|&(v, d, _)| (v, d.to_string())).collect()
    }

    #[test]
    fn every_file_is_embedded_and_both_databases_have_the_same_versions() {
        assert_eq!(listed(POSTGRES), files("postgres"));
        assert_eq!(listed(SQLITE), files("sqlite"));
        assert_eq!(files("postgres"), files("sqlite"));
        let versions: Vec<i64> = postgres().iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    }
}
