//! Reading and changing SIP trunks and mappings, each change with its audit row in the same
//! transaction, as for the rest of the configuration. A child of `queries` for its audit
//! macro and application lock.

use serde_json::Value;

use super::{INSERT_AUDIT, LOCK_APPLICATION};
use crate::sip::{SipMapping, SipMatch, SipTransport, SipTrunk};
use crate::{Secret, Store, StoreError, now_millis};

type SipTrunkRow = (
    String,
    String,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    bool,
);
type SipMappingRow = (String, String, i32, String, Option<String>, String, String);

const SIP_TRUNK_COLUMNS: &str = "SELECT name, domain, transport, register, username, password, \
     authorization_id, outbound_proxy, caller_id, can_terminate, enabled FROM sip_trunks";
const SIP_MAPPING_COLUMNS: &str = "SELECT application_id, name, position, kind, header, pattern, \
     channel_id FROM sip_mappings";

impl Store {
    // SIP trunks.

    /// Every SIP trunk, by name, with its password.
    pub async fn sip_trunks(&self) -> Result<Vec<SipTrunk>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{SIP_TRUNK_COLUMNS} ORDER BY name"));
        let rows: Vec<SipTrunkRow> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        rows.into_iter().map(sip_trunk_from_row).collect()
    }

    pub async fn sip_trunk(&self, name: &str) -> Result<Option<SipTrunk>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{SIP_TRUNK_COLUMNS} WHERE name = $1"));
        let row: Option<SipTrunkRow> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(name).fetch_optional(pool).await)?;
        row.map(sip_trunk_from_row).transpose()
    }

    /// Creates or replaces the trunk named `trunk.name`. Without a password, or with the
    /// placeholder the admin API shows, the stored password stays; an empty one removes it.
    /// Returns the trunk as stored, password included; the audit row has it masked.
    pub async fn put_sip_trunk(
        &self,
        actor: &str,
        trunk: &SipTrunk,
    ) -> Result<SipTrunk, StoreError> {
        let mut trunk = trunk.clone();
        trunk.normalize()?;
        let t = &trunk;
        let keep = t.keeps_password();
        let password = t
            .password
            .as_ref()
            .map(Secret::expose)
            .filter(|p| !keep && !p.is_empty());
        let sql = sqlx::AssertSqlSafe(format!("{SIP_TRUNK_COLUMNS} WHERE name = $1"));
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO sip_trunks (name, domain, transport, register, username, password, \
                 authorization_id, outbound_proxy, caller_id, can_terminate, enabled) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (name) DO UPDATE SET domain = excluded.domain, \
                 transport = excluded.transport, register = excluded.register, \
                 username = excluded.username, \
                 password = CASE WHEN $12 THEN sip_trunks.password ELSE excluded.password END, \
                 authorization_id = excluded.authorization_id, \
                 outbound_proxy = excluded.outbound_proxy, caller_id = excluded.caller_id, \
                 can_terminate = excluded.can_terminate, enabled = excluded.enabled",
            )
            .bind(&t.name)
            .bind(&t.domain)
            .bind(t.transport.as_str())
            .bind(t.register)
            .bind(&t.username)
            .bind(password)
            .bind(&t.authorization_id)
            .bind(&t.outbound_proxy)
            .bind(&t.caller_id)
            .bind(t.can_terminate)
            .bind(t.enabled)
            .bind(keep)
            .execute(&mut *tx)
            .await?;
            let row: SipTrunkRow = sqlx::query_as(sql).bind(&t.name).fetch_one(&mut *tx).await?;
            let stored = sip_trunk_from_row(row)?;
            let detail = serde_json::to_value(stored.masked())?;
            write_audit!(&mut *tx, actor, "sipTrunk.put", &t.name, detail)?;
            tx.commit().await?;
            Ok(stored)
        })
    }

    /// Deletes the trunk `name`; false if there was none.
    pub async fn delete_sip_trunk(&self, actor: &str, name: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM sip_trunks WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            write_audit!(&mut *tx, actor, "sipTrunk.delete", name, Value::Null)?;
            tx.commit().await?;
        });
        Ok(true)
    }

    // SIP mappings.

    /// Every application's SIP mappings in the order calls are routed: by position, then
    /// application, then name (see [`crate::sip::route`]).
    pub async fn sip_mappings(&self) -> Result<Vec<SipMapping>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{SIP_MAPPING_COLUMNS} ORDER BY position, application_id, name"
        ));
        let rows: Vec<SipMappingRow> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        rows.into_iter().map(sip_mapping_from_row).collect()
    }

    /// One application's SIP mappings, by position, then name.
    pub async fn sip_mappings_of(&self, application: &str) -> Result<Vec<SipMapping>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{SIP_MAPPING_COLUMNS} WHERE application_id = $1 ORDER BY position, name"
        ));
        let rows: Vec<SipMappingRow> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(application).fetch_all(pool).await
        })?;
        rows.into_iter().map(sip_mapping_from_row).collect()
    }

    /// Creates or replaces the application's mapping of this name. Returns it as stored. The
    /// application must exist.
    pub async fn put_sip_mapping(
        &self,
        actor: &str,
        mapping: &SipMapping,
    ) -> Result<SipMapping, StoreError> {
        let mut mapping = mapping.clone();
        mapping.normalize()?;
        let m = &mapping;
        let detail = serde_json::to_value(m)?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let locked = sqlx::query(LOCK_APPLICATION)
                .bind(&m.application_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if locked == 0 {
                return Err(StoreError::NotFound {
                    kind: "application",
                    id: m.application_id.clone(),
                });
            }
            sqlx::query(
                "INSERT INTO sip_mappings (application_id, name, position, kind, header, \
                 pattern, channel_id) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (application_id, name) DO UPDATE SET \
                 position = excluded.position, kind = excluded.kind, header = excluded.header, \
                 pattern = excluded.pattern, channel_id = excluded.channel_id",
            )
            .bind(&m.application_id)
            .bind(&m.name)
            .bind(m.position)
            .bind(m.kind.as_str())
            .bind(&m.header)
            .bind(&m.pattern)
            .bind(&m.channel_id)
            .execute(&mut *tx)
            .await?;
            write_audit!(&mut *tx, actor, "sipMapping.put", &m.application_id, detail)?;
            tx.commit().await?;
        });
        Ok(mapping)
    }

    /// Deletes the application's mapping `name`; false if there was none.
    pub async fn delete_sip_mapping(
        &self,
        actor: &str,
        application: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        self.delete_named(
            "sip_mappings",
            "sipMapping.delete",
            actor,
            application,
            name,
        )
        .await
    }
}

fn sip_trunk_from_row(row: SipTrunkRow) -> Result<SipTrunk, StoreError> {
    let (
        name,
        domain,
        transport,
        register,
        username,
        password,
        authorization_id,
        outbound_proxy,
        caller_id,
        can_terminate,
        enabled,
    ) = row;
    let transport = SipTransport::from_name(&transport).ok_or_else(|| StoreError::Corrupt {
        what: format!("SIP trunk {name:?}"),
        detail: format!("unknown transport {transport:?}"),
    })?;
    Ok(SipTrunk {
        name,
        domain,
        transport,
        register,
        username,
        password: password.map(Secret::new),
        authorization_id,
        outbound_proxy,
        caller_id,
        can_terminate,
        enabled,
    })
}

fn sip_mapping_from_row(
    (application_id, name, position, kind, header, pattern, channel_id): SipMappingRow,
) -> Result<SipMapping, StoreError> {
    let kind = SipMatch::from_name(&kind).ok_or_else(|| StoreError::Corrupt {
        what: format!("SIP mapping {application_id:?} {name:?}"),
        detail: format!("unknown kind {kind:?}"),
    })?;
    Ok(SipMapping {
        application_id,
        name,
        position,
        kind,
        header,
        pattern,
        channel_id,
    })
}
