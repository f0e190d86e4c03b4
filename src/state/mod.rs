//! The installer's state: the installation record, the journal of the operation in flight, the
//! history of operations, and the leased lock that keeps two operations off one instance. The
//! core speaks to storage only through [`StateStore`]; the DynamoDB adapter lives in
//! `crate::aws`. Time is a parameter ([`Clock`]), so that lease expiry is testable.

pub mod fault;
mod guard;
mod items;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub(crate) use guard::later;
pub use guard::{LockSettings, Operation, acquire, run_guarded};
pub use items::{ItemKey, SCHEMA_VERSION, StoredItem, decode, encode};

use crate::cloud::DeployError;
use crate::release::TrustFloor;
use crate::stacks::StackKind;

/// The three operations that change an instance, and that the lock keeps apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    Install,
    Upgrade,
    Teardown,
}

impl fmt::Display for OperationKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            OperationKind::Install => "install",
            OperationKind::Upgrade => "upgrade",
            OperationKind::Teardown => "teardown",
        })
    }
}

/// One step of an operation, recorded in the journal once it is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Phase {
    /// install: the plan is made and confirmed.
    Plan,
    /// teardown: the inventory is taken and confirmed.
    Inventory,
    /// One stack deployed (install) or deleted (teardown).
    Stack(StackKind),
    /// teardown: resources the data stack retained are deleted.
    Data,
    /// The installation record and the history entry are written; the journal is cleared.
    Record,
}

impl fmt::Display for Phase {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Plan => formatter.write_str("plan"),
            Phase::Inventory => formatter.write_str("inventory"),
            Phase::Stack(kind) => write!(formatter, "stack:{}", kind.as_str()),
            Phase::Data => formatter.write_str("data"),
            Phase::Record => formatter.write_str("record"),
        }
    }
}

impl FromStr for Phase {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "plan" => Phase::Plan,
            "inventory" => Phase::Inventory,
            "data" => Phase::Data,
            "record" => Phase::Record,
            _ => {
                let kind = text
                    .strip_prefix("stack:")
                    .and_then(|kind| {
                        StackKind::ALL
                            .into_iter()
                            .find(|known| known.as_str() == kind)
                    })
                    .ok_or_else(|| format!("unknown phase \"{text}\""))?;
                Phase::Stack(kind)
            }
        })
    }
}

impl TryFrom<String> for Phase {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Phase> for String {
    fn from(phase: Phase) -> Self {
        phase.to_string()
    }
}

/// Who asks for the lock: shown to anyone who finds it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The AWS principal the holder acts as.
    pub owner: String,
    pub operation: OperationKind,
    pub host: String,
    pub pid: u32,
    pub installer_version: String,
}

impl Holder {
    /// This process, acting as `owner`.
    pub fn this_process(owner: &str, operation: OperationKind) -> Self {
        Holder {
            owner: owner.to_owned(),
            operation,
            host: host_name(),
            pid: std::process::id(),
            installer_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The name of this machine, for people to recognise a lock's holder by.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// A held lock: who holds it, since and until when, and the fencing token every state write of
/// the holder is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub lock_id: String,
    pub fencing_token: u64,
    #[serde(flatten)]
    pub holder: Holder,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Lease {
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }
}

impl fmt::Display for Lease {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} on {} (pid {}, stackwright {}), running {} since {}, lease until {}, lock ID {}",
            self.holder.owner,
            self.holder.host,
            self.holder.pid,
            self.holder.installer_version,
            self.holder.operation,
            self.created_at
                .round(jiff::Unit::Second)
                .unwrap_or(self.created_at),
            self.expires_at
                .round(jiff::Unit::Second)
                .unwrap_or(self.expires_at),
            self.lock_id
        )
    }
}

/// What is installed, as the last operation left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installation {
    /// The release the stacks run; `None` before a first install completed.
    pub installed_release: Option<String>,
    pub networking_mode: String,
    /// The stacks that exist, by name.
    pub stacks: Vec<String>,
    pub status: InstallationStatus,
    /// The SHA-256 of the configuration the stacks were last deployed from.
    pub config_hash: String,
    /// The operation that wrote this record.
    pub operation_id: String,
    pub updated_at: Timestamp,
    /// Releases whose upgrade failed here: unattended upgrades skip them until one is retried
    /// with `upgrade --to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_releases: Vec<String>,
    /// How far the release repository was seen here: the root version and hash and the
    /// metadata versions the next verification must reach (it always starts from the root
    /// built into the installer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_floor: Option<TrustFloor>,
    /// A whole root metadata file, as records kept it before floors: read only to derive a
    /// floor (never trusted as a root), and never written again.
    #[serde(default, skip_serializing)]
    pub trusted_root: Option<String>,
}

/// What an operation leaves deployed: the input of [`Installation::after`].
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The release the stacks run.
    pub release: Option<String>,
    pub networking_mode: String,
    pub stacks: Vec<String>,
    pub status: InstallationStatus,
}

impl Installation {
    /// The record `journal`'s operation leaves. What the previous record learned stays: the
    /// newest trusted root it reached, and the releases that failed here. The release just
    /// deployed leaves that list when it is installed and joins it when it failed; a teardown
    /// leaves the list as it was.
    pub fn after(
        journal: &Journal,
        previous: Option<&Installation>,
        deployed: Deployed,
        now: Timestamp,
    ) -> Installation {
        let mut failed_releases = previous
            .map(|record| record.failed_releases.clone())
            .unwrap_or_default();
        if let Some(release) = &deployed.release {
            match deployed.status {
                InstallationStatus::Installed => failed_releases.retain(|failed| failed != release),
                InstallationStatus::Failed if !failed_releases.contains(release) => {
                    failed_releases.push(release.clone());
                }
                InstallationStatus::Failed | InstallationStatus::DataKept => {}
            }
        }
        Installation {
            installed_release: deployed.release,
            networking_mode: deployed.networking_mode,
            stacks: deployed.stacks,
            status: deployed.status,
            config_hash: journal.config_hash.clone(),
            operation_id: journal.operation_id.clone(),
            updated_at: now,
            failed_releases,
            trust_floor: previous.and_then(|record| record.trust_floor.clone()),
            trusted_root: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallationStatus {
    Installed,
    /// The last install or upgrade failed; the stacks are as CloudFormation left them.
    Failed,
    /// Torn down except the data stack, which is kept.
    DataKept,
}

impl fmt::Display for InstallationStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            InstallationStatus::Installed => "installed",
            InstallationStatus::Failed => "failed",
            InstallationStatus::DataKept => "torn down, data kept",
        })
    }
}

/// A resource a deleted stack retained (`DeletionPolicy: Retain`) that data deletion removes
/// afterwards. Kept in the journal, because once its stack is gone nothing else names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedTarget {
    pub stack_name: String,
    pub resource_type: String,
    pub physical_id: String,
}

/// The operation in flight and the phases it has completed, so that a run that dies halfway
/// can be resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub operation_id: String,
    pub kind: OperationKind,
    pub started_at: Timestamp,
    pub started_by: String,
    pub host: String,
    pub from_release: Option<String>,
    pub to_release: Option<String>,
    pub config_hash: String,
    #[serde(default)]
    pub delete_data: bool,
    pub completed: Vec<Phase>,
    /// teardown: what the data phase deletes, taken from the inventory before the data stack
    /// went away.
    #[serde(default)]
    pub retained: Vec<RetainedTarget>,
}

impl Journal {
    pub fn new(
        inputs: &OperationInputs,
        started_by: &str,
        from_release: Option<String>,
        now: Timestamp,
    ) -> Self {
        Journal {
            operation_id: uuid::Uuid::new_v4().to_string(),
            kind: inputs.kind,
            started_at: now,
            started_by: started_by.to_owned(),
            host: host_name(),
            from_release,
            to_release: inputs.release.clone(),
            config_hash: inputs.config_hash.clone(),
            delete_data: inputs.delete_data,
            completed: Vec::new(),
            retained: Vec::new(),
        }
    }

    pub fn is_done(&self, phase: &Phase) -> bool {
        self.completed.contains(phase)
    }

    /// The history entry of this operation, ended now with `result`.
    pub fn finish(
        &self,
        result: OperationResult,
        error: Option<String>,
        now: Timestamp,
    ) -> HistoryEntry {
        HistoryEntry {
            operation_id: self.operation_id.clone(),
            kind: self.kind,
            started_at: self.started_at,
            finished_at: now,
            duration_seconds: (now - self.started_at)
                .total(jiff::Unit::Second)
                .unwrap_or_default()
                .max(0.0),
            who: self.started_by.clone(),
            host: self.host.clone(),
            from_release: self.from_release.clone(),
            to_release: self.to_release.clone(),
            result,
            error,
        }
    }
}

/// What a run was asked to do: decides whether an unfinished journal is the same operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationInputs {
    pub kind: OperationKind,
    pub release: Option<String>,
    pub config_hash: String,
    pub delete_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationResult {
    Succeeded,
    Failed,
    /// Failed, and CloudFormation undid the change: the instance runs what it ran before.
    #[serde(rename = "rolled_back")]
    RolledBack,
    /// An interrupted operation that a later run of the same kind, asked something else,
    /// replaced.
    Abandoned,
    /// An unattended upgrade whose changes the policy would not approve: left for a person.
    Parked,
    /// An unattended upgrade that moved the updater to the newer installer its release needs,
    /// which applies the release on its next run.
    #[serde(rename = "handed_over")]
    HandedOver,
}

impl fmt::Display for OperationResult {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            OperationResult::Succeeded => "succeeded",
            OperationResult::Failed => "failed",
            OperationResult::RolledBack => "rolled back",
            OperationResult::Abandoned => "abandoned",
            OperationResult::Parked => "parked",
            OperationResult::HandedOver => "handed over",
        })
    }
}

/// One finished operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub operation_id: String,
    pub kind: OperationKind,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub duration_seconds: f64,
    pub who: String,
    pub host: String,
    pub from_release: Option<String>,
    pub to_release: Option<String>,
    pub result: OperationResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What to do with the journal a run finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeDecision {
    /// No unfinished operation: start a new one.
    Fresh,
    /// The same operation was interrupted: continue it, skipping its completed phases.
    Resume(Journal),
    /// An interrupted operation of the same kind, asked something else (another release,
    /// another configuration): record it as abandoned and start anew.
    Supersede(Journal),
    /// An interrupted operation of another kind: it must be finished first.
    Refuse(Journal),
}

/// Decides, from the journal found and what this run was asked, whether to start, resume or
/// refuse. Pure, so every case is tested.
pub fn resume_decision(journal: Option<Journal>, inputs: &OperationInputs) -> ResumeDecision {
    let Some(journal) = journal else {
        return ResumeDecision::Fresh;
    };
    if journal.kind != inputs.kind {
        return ResumeDecision::Refuse(journal);
    }
    let same = match inputs.kind {
        OperationKind::Install | OperationKind::Upgrade => {
            journal.to_release == inputs.release && journal.config_hash == inputs.config_hash
        }
        OperationKind::Teardown => journal.delete_data == inputs.delete_data,
    };
    if same {
        ResumeDecision::Resume(journal)
    } else {
        ResumeDecision::Supersede(journal)
    }
}

/// One write of a fenced transaction.
#[derive(Debug, Clone)]
pub enum StateWrite {
    Installation(Installation),
    Journal(Journal),
    ClearJournal,
    History(HistoryEntry),
}

/// What the core needs from the state storage. Every write is fenced: it happens only while
/// `lease` is still the current, unexpired holder of the lock.
#[allow(async_fn_in_trait)]
pub trait StateStore: Sync {
    /// Where the state lives, for messages (the table's name).
    fn location(&self) -> &str;
    /// Creates the storage if it does not exist yet, and waits until it is usable.
    async fn prepare(&self) -> Result<(), StateError>;
    /// Whether the storage exists.
    async fn exists(&self) -> Result<bool, StateError>;
    /// Deletes the storage and everything in it (history included).
    async fn destroy(&self) -> Result<(), StateError>;
    /// Takes the lock if it is free or its lease has expired; `LockHeld` names the holder
    /// otherwise. The returned lease carries a fencing token larger than any before it.
    async fn acquire(
        &self,
        holder: &Holder,
        lock_id: &str,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Lease, StateError>;
    /// Extends the lease to `now + duration`; `LeaseLost` when another holder has taken it.
    async fn renew(
        &self,
        lease: &Lease,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Timestamp, StateError>;
    /// Frees the lock if `lease` still holds it.
    async fn release(&self, lease: &Lease) -> Result<(), StateError>;
    /// The current holder, expired or not; `None` when the lock is free.
    async fn lock(&self) -> Result<Option<Lease>, StateError>;
    /// Frees the lock if `lock_id` holds it; `LockIdMismatch` otherwise.
    async fn break_lock(&self, lock_id: &str) -> Result<(), StateError>;
    async fn installation(&self) -> Result<Option<Installation>, StateError>;
    async fn journal(&self) -> Result<Option<Journal>, StateError>;
    /// Every finished operation, newest first.
    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError>;
    /// Applies `writes` as one transaction, fenced by `lease`.
    async fn write(
        &self,
        lease: &Lease,
        now: Timestamp,
        writes: Vec<StateWrite>,
    ) -> Result<(), StateError>;
}

/// Where time comes from.
pub trait Clock: Sync {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{instance} is locked by {holder}")]
    LockHeld {
        instance: String,
        holder: Box<Lease>,
    },
    #[error(
        "the lock on {instance} was lost: this run's lease expired and another run took the lock, so this run stops without writing"
    )]
    LeaseLost { instance: String },
    #[error("the state item {key} has schema version {found}, which this installer does not know")]
    UnknownSchemaVersion { key: String, found: String },
    #[error("the state item {key} is malformed: {reason}")]
    Malformed { key: String, reason: String },
    #[error("an interrupted {} of {instance} (operation {}, started {} by {}) is unfinished{}; `{requested}` cannot start until it is finished",
        unfinished.kind, unfinished.operation_id, unfinished.started_at.round(jiff::Unit::Second).unwrap_or(unfinished.started_at), unfinished.started_by,
        if unfinished.completed.is_empty() { String::new() } else { format!(" (done: {})", unfinished.completed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")) })]
    UnfinishedOperation {
        instance: String,
        requested: OperationKind,
        unfinished: Box<Journal>,
    },
    #[error("{}", match holder {
        Some(holder) => format!("the lock on {instance} is held by another lock ID than {given}: {holder}"),
        None => format!("{instance} is not locked"),
    })]
    LockIdMismatch {
        instance: String,
        given: String,
        holder: Option<Box<Lease>>,
    },
    #[error(
        "interrupted by a signal; the lock is released and the journal kept, so the next run resumes"
    )]
    Interrupted,
    #[error("state table {table}: {error}")]
    Store { table: String, error: DeployError },
}

impl StateError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            StateError::LockHeld { holder, .. } => format!(
                "wait for that run to finish (or pass --wait SECONDS to wait for it); if you are sure the holder is gone, break the lock with `stackwright unlock --force {}`",
                holder.lock_id
            ),
            StateError::LeaseLost { .. } => {
                "check with `stackwright status` who holds the lock now, then run the command again; the journal lets it resume".into()
            }
            StateError::UnknownSchemaVersion { .. } => {
                "a newer stackwright wrote it: use that version (or newer); the item was left as it is".into()
            }
            StateError::Malformed { .. } => {
                "the item was left as it is; restore it from the table's point-in-time recovery, or delete it if you know it is not needed".into()
            }
            StateError::UnfinishedOperation { unfinished, .. } => match unfinished.kind {
                OperationKind::Teardown => "run `stackwright teardown` to finish it first".into(),
                kind => format!(
                    "run `stackwright {kind}`{} to finish it first",
                    unfinished
                        .to_release
                        .as_deref()
                        .map(|release| format!(" with release {release}"))
                        .unwrap_or_default()
                ),
            },
            StateError::LockIdMismatch { holder: Some(holder), .. } => {
                format!("check the ID with `stackwright status`; the current one is {}", holder.lock_id)
            }
            StateError::LockIdMismatch { holder: None, .. } => return None,
            StateError::Interrupted => "run the same command again to resume".into(),
            StateError::Store { error, .. } => return error.hint(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(kind: OperationKind, release: &str, hash: &str) -> OperationInputs {
        OperationInputs {
            kind,
            release: Some(release.into()),
            config_hash: hash.into(),
            delete_data: false,
        }
    }

    fn journal(kind: OperationKind, release: &str, hash: &str, completed: Vec<Phase>) -> Journal {
        let mut journal = Journal::new(
            &inputs(kind, release, hash),
            "arn:aws:iam::1:user/a",
            None,
            Timestamp::UNIX_EPOCH,
        );
        journal.completed = completed;
        journal
    }

    #[test]
    fn without_a_journal_a_run_starts_fresh() {
        assert_eq!(
            resume_decision(None, &inputs(OperationKind::Install, "1.0.0", "h")),
            ResumeDecision::Fresh
        );
    }

    #[test]
    fn the_same_install_resumes_with_its_completed_phases() {
        let found = journal(
            OperationKind::Install,
            "1.0.0",
            "h",
            vec![Phase::Plan, Phase::Stack(StackKind::Bootstrap)],
        );
        let decision = resume_decision(
            Some(found.clone()),
            &inputs(OperationKind::Install, "1.0.0", "h"),
        );
        let ResumeDecision::Resume(resumed) = decision else {
            panic!("expected a resume, got {decision:?}");
        };
        assert_eq!(resumed.operation_id, found.operation_id);
        assert!(resumed.is_done(&Phase::Plan));
        assert!(resumed.is_done(&Phase::Stack(StackKind::Bootstrap)));
        assert!(!resumed.is_done(&Phase::Stack(StackKind::Network)));
    }

    #[test]
    fn an_install_of_another_release_or_configuration_supersedes_the_interrupted_one() {
        let found = journal(OperationKind::Install, "1.0.0", "h", vec![Phase::Plan]);
        for asked in [
            inputs(OperationKind::Install, "1.1.0", "h"),
            inputs(OperationKind::Install, "1.0.0", "other"),
        ] {
            assert_eq!(
                resume_decision(Some(found.clone()), &asked),
                ResumeDecision::Supersede(found.clone())
            );
        }
    }

    #[test]
    fn another_kind_of_operation_is_refused() {
        let found = journal(
            OperationKind::Teardown,
            "1.0.0",
            "h",
            vec![Phase::Inventory],
        );
        assert_eq!(
            resume_decision(
                Some(found.clone()),
                &inputs(OperationKind::Install, "1.0.0", "h")
            ),
            ResumeDecision::Refuse(found.clone())
        );
        let error = StateError::UnfinishedOperation {
            instance: "acme".into(),
            requested: OperationKind::Install,
            unfinished: Box::new(found),
        };
        assert!(
            error
                .to_string()
                .contains("an interrupted teardown of acme"),
            "{error}"
        );
        assert!(error.to_string().contains("(done: inventory)"), "{error}");
        assert_eq!(
            error.hint().as_deref(),
            Some("run `stackwright teardown` to finish it first")
        );
    }

    #[test]
    fn a_teardown_resumes_only_with_the_same_data_choice() {
        let mut asked = inputs(OperationKind::Teardown, "1.0.0", "h");
        asked.release = None;
        let mut found = Journal::new(&asked, "a", None, Timestamp::UNIX_EPOCH);
        assert!(matches!(
            resume_decision(Some(found.clone()), &asked),
            ResumeDecision::Resume(_)
        ));
        found.delete_data = true;
        assert!(matches!(
            resume_decision(Some(found), &asked),
            ResumeDecision::Supersede(_)
        ));
    }

    #[test]
    fn phases_read_back_as_written() {
        for phase in [
            Phase::Plan,
            Phase::Inventory,
            Phase::Data,
            Phase::Record,
            Phase::Stack(StackKind::Platform),
        ] {
            assert_eq!(phase.to_string().parse::<Phase>(), Ok(phase));
        }
        assert!("stack:nonsense".parse::<Phase>().is_err());
    }

    #[test]
    fn a_history_entry_measures_the_whole_operation() {
        let found = journal(OperationKind::Install, "1.0.0", "h", vec![]);
        let entry = found.finish(
            OperationResult::Succeeded,
            None,
            Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_secs(90),
        );
        assert_eq!(entry.duration_seconds, 90.0);
        assert_eq!(entry.operation_id, found.operation_id);
        assert_eq!(entry.to_release.as_deref(), Some("1.0.0"));
    }

    fn after(previous: &Installation, release: &str, status: InstallationStatus) -> Installation {
        let journal = journal(OperationKind::Upgrade, release, "def", Vec::new());
        let deployed = Deployed {
            release: Some(release.into()),
            networking_mode: "public".into(),
            stacks: vec!["acme-platform".into()],
            status,
        };
        Installation::after(&journal, Some(previous), deployed, Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn the_next_record_keeps_what_the_previous_one_learned() {
        let previous = Installation {
            installed_release: Some("1.0.0".into()),
            networking_mode: "public".into(),
            stacks: vec!["acme-platform".into()],
            status: InstallationStatus::Installed,
            config_hash: "abc".into(),
            operation_id: "op-1".into(),
            updated_at: Timestamp::UNIX_EPOCH,
            failed_releases: vec!["1.1.0".into()],
            trust_floor: Some(TrustFloor {
                root_version: 2,
                root_sha256: "ab".repeat(32),
                timestamp_version: 7,
                snapshot_version: 3,
                targets_version: 3,
            }),
            trusted_root: None,
        };
        let failed = after(&previous, "1.2.0", InstallationStatus::Failed);
        assert_eq!(failed.failed_releases, ["1.1.0", "1.2.0"]);
        assert_eq!(failed.config_hash, "def");
        assert_eq!(failed.trust_floor, previous.trust_floor);
        // Failing again does not list the release twice.
        let again = after(&failed, "1.2.0", InstallationStatus::Failed);
        assert_eq!(again.failed_releases, ["1.1.0", "1.2.0"]);
        let retried = after(&failed, "1.1.0", InstallationStatus::Installed);
        assert_eq!(retried.failed_releases, ["1.2.0"]);
        assert_eq!(retried.installed_release.as_deref(), Some("1.1.0"));
        // A teardown that keeps the data keeps the trust floor and the failed releases, so a
        // re-install starts from what was learned.
        let kept = after(&failed, "1.2.0", InstallationStatus::DataKept);
        assert_eq!(kept.failed_releases, ["1.1.0", "1.2.0"]);
        assert_eq!(kept.trust_floor, previous.trust_floor);
    }
}
