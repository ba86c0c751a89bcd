//! Reading and changing the configuration. Every change made for an administrator writes its
//! audit row in the same transaction, so the log holds exactly the changes that happened.

use serde_json::{Value, json};

use super::records::{
    Application, AuditEntry, ChannelConfig, ClusteringStrategy, Deployment, validate_order,
};
use super::secret::Secret;
use super::webhook::Webhook;
use super::{ConfigError, Store, StoreError, now_millis};

type DeploymentRow = (
    String,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
);
type ApplicationRow = (String, String, i64);
type ChannelConfigRow = (
    String,
    String,
    i64,
    String,
    Option<i64>,
    bool,
    bool,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    bool,
);
type AuditRow = (i64, i64, String, String, String, String);
type WebhookRow = (String, String, String, String);

const DEPLOYMENT_COLUMNS: &str = "SELECT id, name, stun_servers, sfu_connections_per_cpu_safe, \
     sfu_connections_per_cpu_unsafe, mcu_connections_per_cpu_safe, \
     mcu_connections_per_cpu_unsafe, clustering_strategy, turn_secret, turn_previous_secret \
     FROM deployments";
const APPLICATION_COLUMNS: &str = "SELECT id, secrets, created_at FROM applications";
const CHANNEL_CONFIG_COLUMNS: &str = "SELECT application_id, pattern, position, allowed_codecs, \
     max_bitrate_kbps, sfu_allowed, mcu_allowed, mcu_layout, mcu_canvas_width, mcu_canvas_height, \
     mcu_frame_rate, recording FROM channel_configs";

const WEBHOOK_COLUMNS: &str = "SELECT application_id, name, url, events FROM webhooks";

const INSERT_AUDIT: &str = "INSERT INTO audit_log (at, actor, action, target, detail) \
     VALUES ($1, $2, $3, $4, $5) RETURNING id";

/// A no-op update that takes the application's row lock (PostgreSQL) or the write lock
/// (SQLite) first, so that read-check-write sequences on one application run one at a time.
const LOCK_APPLICATION: &str = "UPDATE applications SET secrets = secrets WHERE id = $1";

/// Writes an audit row on `$conn` (a transaction's connection), evaluating to its id.
macro_rules! write_audit {
    ($conn:expr, $actor:expr, $action:expr, $target:expr, $detail:expr) => {
        sqlx::query_scalar::<_, i64>(INSERT_AUDIT)
            .bind(now_millis())
            .bind($actor)
            .bind($action)
            .bind($target)
            .bind($detail.to_string())
            .fetch_one($conn)
            .await
    };
}

impl Store {
    // Deployments.

    pub async fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{DEPLOYMENT_COLUMNS} ORDER BY id"));
        let rows: Vec<DeploymentRow> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        rows.into_iter().map(deployment_from_row).collect()
    }

    pub async fn deployment(&self, id: &str) -> Result<Option<Deployment>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{DEPLOYMENT_COLUMNS} WHERE id = $1"));
        let row: Option<DeploymentRow> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)?;
        row.map(deployment_from_row).transpose()
    }

    /// Creates or replaces the deployment with `deployment.id`.
    pub async fn put_deployment(
        &self,
        actor: &str,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        deployment.validate()?;
        let d = deployment;
        let detail = serde_json::to_value(d.masked())?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO deployments (id, name, stun_servers, sfu_connections_per_cpu_safe, \
                 sfu_connections_per_cpu_unsafe, mcu_connections_per_cpu_safe, \
                 mcu_connections_per_cpu_unsafe, clustering_strategy, turn_secret, \
                 turn_previous_secret) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 stun_servers = excluded.stun_servers, \
                 sfu_connections_per_cpu_safe = excluded.sfu_connections_per_cpu_safe, \
                 sfu_connections_per_cpu_unsafe = excluded.sfu_connections_per_cpu_unsafe, \
                 mcu_connections_per_cpu_safe = excluded.mcu_connections_per_cpu_safe, \
                 mcu_connections_per_cpu_unsafe = excluded.mcu_connections_per_cpu_unsafe, \
                 clustering_strategy = excluded.clustering_strategy, \
                 turn_secret = excluded.turn_secret, \
                 turn_previous_secret = excluded.turn_previous_secret",
            )
            .bind(&d.id)
            .bind(&d.name)
            .bind(json_list(&d.stun_servers))
            .bind(i64::from(d.sfu_connections_per_cpu_safe))
            .bind(i64::from(d.sfu_connections_per_cpu_unsafe))
            .bind(i64::from(d.mcu_connections_per_cpu_safe))
            .bind(i64::from(d.mcu_connections_per_cpu_unsafe))
            .bind(d.clustering_strategy.as_str())
            .bind(d.turn_secret.as_ref().map(Secret::expose))
            .bind(d.turn_previous_secret.as_ref().map(Secret::expose))
            .execute(&mut *tx)
            .await?;
            write_audit!(&mut *tx, actor, "deployment.put", &d.id, detail)?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes the deployment; false if there was none (and nothing is logged).
    pub async fn delete_deployment(&self, actor: &str, id: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM deployments WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            write_audit!(&mut *tx, actor, "deployment.delete", id, Value::Null)?;
            tx.commit().await?;
        });
        Ok(true)
    }

    // Applications.

    pub async fn applications(&self) -> Result<Vec<Application>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{APPLICATION_COLUMNS} ORDER BY id"));
        let rows: Vec<ApplicationRow> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        rows.into_iter().map(application_from_row).collect()
    }

    pub async fn application(&self, id: &str) -> Result<Option<Application>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{APPLICATION_COLUMNS} WHERE id = $1"));
        let row: Option<ApplicationRow> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)?;
        row.map(application_from_row).transpose()
    }

    /// Creates the application, or replaces the secrets of an existing one (its `created_at`
    /// stays). The audit row counts the secrets and never holds one.
    pub async fn put_application(
        &self,
        actor: &str,
        application: &Application,
    ) -> Result<(), StoreError> {
        application.validate()?;
        let a = application;
        let detail = json!({ "secrets": a.secrets.len(), "createdAt": a.created_at });
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO applications (id, secrets, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET secrets = excluded.secrets",
            )
            .bind(&a.id)
            .bind(json_list(&a.secrets))
            .bind(a.created_at)
            .execute(&mut *tx)
            .await?;
            write_audit!(&mut *tx, actor, "application.put", &a.id, detail)?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes the application and its channel configurations; false if there was none.
    pub async fn delete_application(&self, actor: &str, id: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM applications WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            write_audit!(&mut *tx, actor, "application.delete", id, Value::Null)?;
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Adds `secret` as the application's newest, keeping the one before it valid too and
    /// dropping any older (see [`Application::rotate`]). Returns the application as stored.
    pub async fn rotate_secret(
        &self,
        actor: &str,
        application: &str,
        secret: &str,
    ) -> Result<Application, StoreError> {
        self.change_secrets(actor, application, "application.rotateSecret", |a| {
            a.rotate(secret);
            Ok(())
        })
        .await
    }

    /// Removes `secret` from the application's valid ones; its last secret cannot go.
    pub async fn retire_secret(
        &self,
        actor: &str,
        application: &str,
        secret: &str,
    ) -> Result<Application, StoreError> {
        self.change_secrets(actor, application, "application.retireSecret", |a| {
            a.retire(secret)
        })
        .await
    }

    async fn change_secrets(
        &self,
        actor: &str,
        id: &str,
        action: &str,
        change: impl FnOnce(&mut Application) -> Result<(), ConfigError>,
    ) -> Result<Application, StoreError> {
        let not_found = || StoreError::NotFound {
            kind: "application",
            id: id.to_string(),
        };
        let sql = sqlx::AssertSqlSafe(format!("{APPLICATION_COLUMNS} WHERE id = $1"));
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let locked = sqlx::query(LOCK_APPLICATION)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if locked == 0 {
                return Err(not_found());
            }
            let row: Option<ApplicationRow> =
                sqlx::query_as(sql).bind(id).fetch_optional(&mut *tx).await?;
            let mut application = application_from_row(row.ok_or_else(not_found)?)?;
            change(&mut application)?;
            application.validate()?;
            sqlx::query("UPDATE applications SET secrets = $2 WHERE id = $1")
                .bind(id)
                .bind(json_list(&application.secrets))
                .execute(&mut *tx)
                .await?;
            let detail = json!({ "secrets": application.secrets.len() });
            write_audit!(&mut *tx, actor, action, id, detail)?;
            tx.commit().await?;
            Ok(application)
        })
    }

    // Channel configurations.

    /// Every application's channel configurations, by application, then position.
    pub async fn channel_configs(&self) -> Result<Vec<ChannelConfig>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{CHANNEL_CONFIG_COLUMNS} ORDER BY application_id, position"
        ));
        let rows: Vec<ChannelConfigRow> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        rows.into_iter().map(channel_config_from_row).collect()
    }

    /// One application's channel configurations, by position.
    pub async fn channel_configs_of(
        &self,
        application: &str,
    ) -> Result<Vec<ChannelConfig>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{CHANNEL_CONFIG_COLUMNS} WHERE application_id = $1 ORDER BY position"
        ));
        let rows: Vec<ChannelConfigRow> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(application).fetch_all(pool).await
        })?;
        rows.into_iter().map(channel_config_from_row).collect()
    }

    pub async fn channel_config(
        &self,
        application: &str,
        pattern: &str,
    ) -> Result<Option<ChannelConfig>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{CHANNEL_CONFIG_COLUMNS} WHERE application_id = $1 AND pattern = $2"
        ));
        let row: Option<ChannelConfigRow> = on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(application)
                .bind(pattern)
                .fetch_optional(pool)
                .await
        })?;
        row.map(channel_config_from_row).transpose()
    }

    /// Creates or replaces the configuration with this application and pattern, after checking
    /// it together with the application's others (a catch-all only last, distinct positions).
    /// Returns it as stored, codec names written as in SDP.
    pub async fn put_channel_config(
        &self,
        actor: &str,
        config: &ChannelConfig,
    ) -> Result<ChannelConfig, StoreError> {
        let mut config = config.clone();
        config.normalize()?;
        let c = &config;
        let detail = serde_json::to_value(c)?;
        let sql = sqlx::AssertSqlSafe(format!(
            "{CHANNEL_CONFIG_COLUMNS} WHERE application_id = $1"
        ));
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let locked = sqlx::query(LOCK_APPLICATION)
                .bind(&c.application_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if locked == 0 {
                return Err(ConfigError::NoSuchApplication {
                    application: c.application_id.clone(),
                    pattern: c.pattern.clone(),
                }
                .into());
            }
            let rows: Vec<ChannelConfigRow> = sqlx::query_as(sql)
                .bind(&c.application_id)
                .fetch_all(&mut *tx)
                .await?;
            let mut all = rows
                .into_iter()
                .map(channel_config_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            all.retain(|other| other.pattern != c.pattern);
            all.push(c.clone());
            validate_order(&all)?;
            sqlx::query(
                "INSERT INTO channel_configs (application_id, pattern, position, allowed_codecs, \
                 max_bitrate_kbps, sfu_allowed, mcu_allowed, mcu_layout, mcu_canvas_width, \
                 mcu_canvas_height, mcu_frame_rate, recording) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (application_id, pattern) DO UPDATE SET \
                 position = excluded.position, allowed_codecs = excluded.allowed_codecs, \
                 max_bitrate_kbps = excluded.max_bitrate_kbps, \
                 sfu_allowed = excluded.sfu_allowed, mcu_allowed = excluded.mcu_allowed, \
                 mcu_layout = excluded.mcu_layout, mcu_canvas_width = excluded.mcu_canvas_width, \
                 mcu_canvas_height = excluded.mcu_canvas_height, \
                 mcu_frame_rate = excluded.mcu_frame_rate, recording = excluded.recording",
            )
            .bind(&c.application_id)
            .bind(&c.pattern)
            .bind(c.position)
            .bind(json_list(&c.allowed_codecs))
            .bind(c.max_bitrate_kbps.map(i64::from))
            .bind(c.sfu_allowed)
            .bind(c.mcu_allowed)
            .bind(&c.mcu_layout)
            .bind(c.mcu_canvas_width.map(i64::from))
            .bind(c.mcu_canvas_height.map(i64::from))
            .bind(c.mcu_frame_rate.map(i64::from))
            .bind(c.recording)
            .execute(&mut *tx)
            .await?;
            write_audit!(&mut *tx, actor, "channelConfig.put", &c.application_id, detail)?;
            tx.commit().await?;
        });
        Ok(config)
    }

    /// Deletes one configuration; false if there was none.
    pub async fn delete_channel_config(
        &self,
        actor: &str,
        application: &str,
        pattern: &str,
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query(
                "DELETE FROM channel_configs WHERE application_id = $1 AND pattern = $2",
            )
            .bind(application)
            .bind(pattern)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            let detail = json!({ "pattern": pattern });
            write_audit!(&mut *tx, actor, "channelConfig.delete", application, detail)?;
            tx.commit().await?;
        });
        Ok(true)
    }

    // Webhooks.

    /// Every application's webhooks, by application, then name.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{WEBHOOK_COLUMNS} ORDER BY application_id, name"));
        let rows: Vec<WebhookRow> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        rows.into_iter().map(webhook_from_row).collect()
    }

    /// One application's webhooks, by name.
    pub async fn webhooks_of(&self, application: &str) -> Result<Vec<Webhook>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{WEBHOOK_COLUMNS} WHERE application_id = $1 ORDER BY name"
        ));
        let rows: Vec<WebhookRow> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(application).fetch_all(pool).await
        })?;
        rows.into_iter().map(webhook_from_row).collect()
    }

    /// Creates or replaces the application's webhook of this name (its URL when it has none).
    /// Returns it as stored. The application must exist.
    pub async fn put_webhook(&self, actor: &str, webhook: &Webhook) -> Result<Webhook, StoreError> {
        let mut webhook = webhook.clone();
        webhook.normalize()?;
        let w = &webhook;
        let detail = serde_json::to_value(w)?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let locked = sqlx::query(LOCK_APPLICATION)
                .bind(&w.application_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if locked == 0 {
                return Err(StoreError::NotFound {
                    kind: "application",
                    id: w.application_id.clone(),
                });
            }
            sqlx::query(
                "INSERT INTO webhooks (application_id, name, url, events) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (application_id, name) DO UPDATE SET url = excluded.url, \
                 events = excluded.events",
            )
            .bind(&w.application_id)
            .bind(&w.name)
            .bind(&w.url)
            .bind(json_list(&w.events))
            .execute(&mut *tx)
            .await?;
            write_audit!(&mut *tx, actor, "webhook.put", &w.application_id, detail)?;
            tx.commit().await?;
        });
        Ok(webhook)
    }

    /// Deletes the application's webhook `name`; false if there was none.
    pub async fn delete_webhook(
        &self,
        actor: &str,
        application: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        self.delete_named("webhooks", "webhook.delete", actor, application, name)
            .await
    }

    /// Deletes row `name` of `application` from `table` (one keyed by both, such as webhooks
    /// and SIP mappings) with its audit entry `action`; false if there was none.
    pub(crate) async fn delete_named(
        &self,
        table: &'static str,
        action: &'static str,
        actor: &str,
        application: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE application_id = $1 AND name = $2"
        ));
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query(sql)
                .bind(application)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            let detail = json!({ "name": name });
            write_audit!(&mut *tx, actor, action, application, detail)?;
            tx.commit().await?;
        });
        Ok(true)
    }

    // The audit log.

    /// Logs a change made outside this store (a drain, a restart); returns the entry's id.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &Value,
    ) -> Result<i64, StoreError> {
        let id = on_pool!(self, pool => write_audit!(pool, actor, action, target, detail))?;
        Ok(id)
    }

    /// The newest `limit` entries, newest first.
    pub async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, at, actor, action, target, detail FROM audit_log \
                 ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, at, actor, action, target, detail)| AuditEntry {
                id,
                at,
                actor,
                action,
                target,
                // A detail that is not JSON (written by hand) is shown as the text it is.
                detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
            })
            .collect())
    }
}

/// A list as the JSON array text the databases store.
pub(crate) fn json_list(list: &[String]) -> String {
    Value::from(list.to_vec()).to_string()
}

pub(crate) fn parse_list(what: impl Fn() -> String, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what(),
        detail: e.to_string(),
    })
}

fn threshold(id: &str, column: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt {
        what: format!("deployment {id:?}"),
        detail: format!("{column} = {value} is out of range"),
    })
}

fn deployment_from_row(row: DeploymentRow) -> Result<Deployment, StoreError> {
    let (
        id,
        name,
        stun_servers,
        sfu_safe,
        sfu_unsafe,
        mcu_safe,
        mcu_unsafe,
        strategy,
        turn_secret,
        turn_previous_secret,
    ) = row;
    let what = || format!("deployment {id:?}");
    Ok(Deployment {
        stun_servers: parse_list(what, &stun_servers)?,
        sfu_connections_per_cpu_safe: threshold(&id, "sfu_connections_per_cpu_safe", sfu_safe)?,
        sfu_connections_per_cpu_unsafe: threshold(
            &id,
            "sfu_connections_per_cpu_unsafe",
            sfu_unsafe,
        )?,
        mcu_connections_per_cpu_safe: threshold(&id, "mcu_connections_per_cpu_safe", mcu_safe)?,
        mcu_connections_per_cpu_unsafe: threshold(
            &id,
            "mcu_connections_per_cpu_unsafe",
            mcu_unsafe,
        )?,
        clustering_strategy: ClusteringStrategy::from_name(&strategy).ok_or_else(|| {
            StoreError::Corrupt {
                what: what(),
                detail: format!("unknown clustering strategy {strategy:?}"),
            }
        })?,
        turn_secret: turn_secret.map(Secret::new),
        turn_previous_secret: turn_previous_secret.map(Secret::new),
        id,
        name,
    })
}

fn application_from_row(
    (id, secrets, created_at): ApplicationRow,
) -> Result<Application, StoreError> {
    Ok(Application {
        secrets: parse_list(|| format!("application {id:?}"), &secrets)?,
        id,
        created_at,
    })
}

fn channel_config_from_row(row: ChannelConfigRow) -> Result<ChannelConfig, StoreError> {
    let (
        application_id,
        pattern,
        position,
        codecs,
        max_bitrate,
        sfu_allowed,
        mcu_allowed,
        mcu_layout,
        mcu_canvas_width,
        mcu_canvas_height,
        mcu_frame_rate,
        recording,
    ) = row;
    let what = || format!("channel configuration {application_id:?} {pattern:?}");
    let number = |column: &str, value: Option<i64>| {
        value
            .map(|n| {
                u32::try_from(n).map_err(|_| StoreError::Corrupt {
                    what: what(),
                    detail: format!("{column} = {n} is out of range"),
                })
            })
            .transpose()
    };
    Ok(ChannelConfig {
        allowed_codecs: parse_list(what, &codecs)?,
        max_bitrate_kbps: number("max_bitrate_kbps", max_bitrate)?,
        mcu_canvas_width: number("mcu_canvas_width", mcu_canvas_width)?,
        mcu_canvas_height: number("mcu_canvas_height", mcu_canvas_height)?,
        mcu_frame_rate: number("mcu_frame_rate", mcu_frame_rate)?,
        mcu_layout,
        application_id,
        pattern,
        position,
        sfu_allowed,
        mcu_allowed,
        recording,
    })
}

fn webhook_from_row(
    (application_id, name, url, events): WebhookRow,
) -> Result<Webhook, StoreError> {
    Ok(Webhook {
        events: parse_list(|| format!("webhook {application_id:?} {name:?}"), &events)?,
        application_id,
        name,
        url,
    })
}

// After the macro, so that it is in scope there.
mod sip;
