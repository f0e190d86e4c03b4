//! The reference server's records in SQLite: registration tokens (by hash only), instances,
//! heartbeats, reports and rollouts. Calls are synchronous; the server makes them off its
//! request threads.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use semver::Version;
use sha2::{Digest, Sha256};

use super::api::{
    Heartbeat, HeartbeatRecord, InstanceRecord, OperationReport, ReleaseStatus, ReportRecord,
};
use super::wave::wave_bucket;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the database failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("a record in the database does not parse: {0}")]
    Corrupt(String),
    #[error("the database lock is poisoned")]
    Poisoned,
}

/// Why a registration token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationRefusal {
    Unknown,
    Used,
    Expired,
}

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub version: Version,
    pub channel: String,
    pub percent: u8,
    pub urgent: bool,
    pub withdrawn: bool,
    pub updated_at: Timestamp,
}

impl From<&Rollout> for ReleaseStatus {
    fn from(rollout: &Rollout) -> Self {
        ReleaseStatus {
            version: rollout.version.clone(),
            channel: rollout.channel.clone(),
            percent: rollout.percent,
            urgent: rollout.urgent,
            withdrawn: rollout.withdrawn,
            updated_at: Some(rollout.updated_at),
        }
    }
}

pub struct Store {
    connection: Mutex<Connection>,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS registration_tokens (
    token_sha256 TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    instance_id TEXT
);
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    installer_version TEXT,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeats (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS heartbeats_by_instance ON heartbeats (instance_id, id);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    operation_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (instance_id, operation_id)
);
CREATE TABLE IF NOT EXISTS rollouts (
    version TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    percent INTEGER NOT NULL,
    urgent INTEGER NOT NULL,
    withdrawn INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
";

/// Registration tokens are kept as their SHA-256 only.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn timestamp(text: &str) -> Result<Timestamp, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("\"{text}\" is not a timestamp")))
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let connection = Connection::open(path).map_err(open)?;
        connection.execute_batch(SCHEMA).map_err(open)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open)?;
        Ok(Store {
            connection: Mutex::new(connection),
        })
    }

    fn with<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection.lock().map_err(|_| StoreError::Poisoned)?;
        work(&mut connection)
    }

    pub fn create_registration_token(
        &self,
        token: &str,
        organization_id: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.with(|connection| {
            connection.execute(
                "INSERT INTO registration_tokens (token_sha256, organization_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![token_hash(token), organization_id, now.to_string(), expires_at.to_string()],
            )?;
            Ok(())
        })
    }

    /// Spends a registration token and records the new instance, atomically: of two
    /// registrations with the same token, one wins. Returns the organization.
    pub fn register(
        &self,
        token: &str,
        instance_id: &str,
        installer_version: Option<&Version>,
        now: Timestamp,
    ) -> Result<Result<String, RegistrationRefusal>, StoreError> {
        let hash = token_hash(token);
        self.with(|connection| {
            let transaction = connection.transaction()?;
            let row: Option<(String, String, Option<String>)> = transaction
                .query_row(
                    "SELECT organization_id, expires_at, used_at FROM registration_tokens WHERE token_sha256 = ?1",
                    params![hash],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let Some((organization_id, expires_at, used_at)) = row else {
                return Ok(Err(RegistrationRefusal::Unknown));
            };
            if used_at.is_some() {
                return Ok(Err(RegistrationRefusal::Used));
            }
            if timestamp(&expires_at)? <= now {
                return Ok(Err(RegistrationRefusal::Expired));
            }
            let changed = transaction.execute(
                "UPDATE registration_tokens SET used_at = ?1, instance_id = ?2 WHERE token_sha256 = ?3 AND used_at IS NULL",
                params![now.to_string(), instance_id, hash],
            )?;
            if changed != 1 {
                return Ok(Err(RegistrationRefusal::Used));
            }
            transaction.execute(
                "INSERT INTO instances (instance_id, organization_id, registered_at, installer_version, seq)
                 VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(seq), 0) + 1 FROM instances))",
                params![
                    instance_id,
                    organization_id,
                    now.to_string(),
                    installer_version.map(ToString::to_string)
                ],
            )?;
            transaction.commit()?;
            Ok(Ok(organization_id))
        })
    }

    pub fn instance_exists(&self, instance_id: &str) -> Result<bool, StoreError> {
        self.with(|connection| {
            Ok(connection
                .query_row(
                    "SELECT 1 FROM instances WHERE instance_id = ?1",
                    params![instance_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
    }

    pub fn record_heartbeat(
        &self,
        instance_id: &str,
        heartbeat: &Heartbeat,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(heartbeat)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        self.with(|connection| {
            connection.execute(
                "INSERT INTO heartbeats (instance_id, received_at, body) VALUES (?1, ?2, ?3)",
                params![instance_id, now.to_string(), body],
            )?;
            Ok(())
        })
    }

    /// Records a report once per operation ID; `false` when it was already there.
    pub fn record_report(
        &self,
        instance_id: &str,
        report: &OperationReport,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let body = serde_json::to_string(report)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        self.with(|connection| {
            let changed = connection.execute(
                "INSERT OR IGNORE INTO reports (instance_id, operation_id, received_at, body) VALUES (?1, ?2, ?3, ?4)",
                params![instance_id, report.operation_id, now.to_string(), body],
            )?;
            Ok(changed == 1)
        })
    }

    pub fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        self.with(|connection| {
            let mut statement = connection.prepare(
                "SELECT version, channel, percent, urgent, withdrawn, updated_at FROM rollouts",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, bool>(3)?,
                    row.get::<_, bool>(4)?,
                    row.get::<_, String>(5)?,
                ))
            })?;
            let mut rollouts = Vec::new();
            for row in rows {
                let (version, channel, percent, urgent, withdrawn, updated_at) = row?;
                rollouts.push(Rollout {
                    version: version.parse().map_err(|_| {
                        StoreError::Corrupt(format!("\"{version}\" is not a version"))
                    })?,
                    channel,
                    percent: u8::try_from(percent.clamp(0, 100)).unwrap_or(100),
                    urgent,
                    withdrawn,
                    updated_at: timestamp(&updated_at)?,
                });
            }
            Ok(rollouts)
        })
    }

    pub fn save_rollout(&self, rollout: &Rollout) -> Result<(), StoreError> {
        self.with(|connection| {
            connection.execute(
                "INSERT INTO rollouts (version, channel, percent, urgent, withdrawn, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (version) DO UPDATE SET channel = excluded.channel, percent = excluded.percent,
                 urgent = excluded.urgent, withdrawn = excluded.withdrawn, updated_at = excluded.updated_at",
                params![
                    rollout.version.to_string(),
                    rollout.channel,
                    rollout.percent,
                    rollout.urgent,
                    rollout.withdrawn,
                    rollout.updated_at.to_string()
                ],
            )?;
            Ok(())
        })
    }

    /// Every instance, oldest registration first, with its last heartbeat and report.
    pub fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.with(|connection| {
            let mut statement = connection.prepare(
                "SELECT i.instance_id, i.organization_id, i.registered_at, i.installer_version,
                   (SELECT received_at FROM heartbeats h WHERE h.instance_id = i.instance_id ORDER BY id DESC LIMIT 1),
                   (SELECT body FROM heartbeats h WHERE h.instance_id = i.instance_id ORDER BY id DESC LIMIT 1),
                   (SELECT received_at FROM reports r WHERE r.instance_id = i.instance_id ORDER BY id DESC LIMIT 1),
                   (SELECT body FROM reports r WHERE r.instance_id = i.instance_id ORDER BY id DESC LIMIT 1)
                 FROM instances i ORDER BY i.seq",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<String>>(5)?,
                    row.get::<_, Option<String>>(6)?,
                    row.get::<_, Option<String>>(7)?,
                ))
            })?;
            let corrupt = |error: serde_json::Error| StoreError::Corrupt(error.to_string());
            let mut instances = Vec::new();
            for row in rows {
                let (
                    instance_id,
                    organization_id,
                    registered_at,
                    installer_version,
                    heartbeat_at,
                    heartbeat,
                    report_at,
                    report,
                ) = row?;
                let last_heartbeat = match (heartbeat_at, heartbeat) {
                    (Some(at), Some(body)) => Some(HeartbeatRecord {
                        received_at: timestamp(&at)?,
                        heartbeat: serde_json::from_str(&body).map_err(corrupt)?,
                    }),
                    _ => None,
                };
                let last_report = match (report_at, report) {
                    (Some(at), Some(body)) => Some(ReportRecord {
                        received_at: timestamp(&at)?,
                        report: serde_json::from_str(&body).map_err(corrupt)?,
                    }),
                    _ => None,
                };
                instances.push(InstanceRecord {
                    wave_bucket: wave_bucket(&instance_id),
                    instance_id,
                    organization_id,
                    registered_at: timestamp(&registered_at)?,
                    installer_version: installer_version.and_then(|text| text.parse().ok()),
                    last_heartbeat,
                    last_report,
                });
            }
            Ok(instances)
        })
    }
}
