//! How state documents are stored: one item per document, keyed by the instance and the
//! document's kind, carrying its schema version and its JSON body. Reading an item of an
//! unknown version or with a body that does not parse is an error naming its key; writers are
//! conditional on the version they expect, so no such item is ever overwritten.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StateError;

/// The version of every document this installer writes, and the only one it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The sort key of each kind of item; the partition key is the instance's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKey {
    Lock,
    Installation,
    Journal,
    /// `history#<RFC 3339 time>#<operation id>`: sorts by time.
    History {
        started_at: jiff::Timestamp,
        operation_id: String,
    },
}

impl ItemKey {
    pub const HISTORY_PREFIX: &str = "history#";

    pub fn sort_key(&self) -> String {
        match self {
            ItemKey::Lock => "lock".into(),
            ItemKey::Installation => "installation".into(),
            ItemKey::Journal => "journal".into(),
            ItemKey::History {
                started_at,
                operation_id,
            } => format!(
                "{}{}#{operation_id}",
                Self::HISTORY_PREFIX,
                // Fixed precision, so that the keys sort as the times do.
                jiff::fmt::temporal::DateTimePrinter::new()
                    .precision(Some(3))
                    .timestamp_to_string(started_at)
            ),
        }
    }
}

/// An item as storage holds it, before its body is understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredItem {
    /// `<instance>/<sort key>`, as errors name it.
    pub key: String,
    /// The `schema_version` attribute as written (a number), if present.
    pub schema_version: Option<String>,
    /// The `body` attribute, if present.
    pub body: Option<String>,
}

/// The document an item holds, or an error naming the item's key.
pub fn decode<T: DeserializeOwned>(item: &StoredItem) -> Result<T, StateError> {
    let Some(version) = &item.schema_version else {
        return Err(StateError::Malformed {
            key: item.key.clone(),
            reason: "it has no schema_version".into(),
        });
    };
    if version.trim() != SCHEMA_VERSION.to_string() {
        return Err(StateError::UnknownSchemaVersion {
            key: item.key.clone(),
            found: version.clone(),
        });
    }
    let Some(body) = &item.body else {
        return Err(StateError::Malformed {
            key: item.key.clone(),
            reason: "it has no body".into(),
        });
    };
    serde_json::from_str(body).map_err(|error| StateError::Malformed {
        key: item.key.clone(),
        reason: format!("its body does not parse: {error}"),
    })
}

/// The body of a document.
pub fn encode<T: Serialize>(document: &T) -> String {
    serde_json::to_string(document).expect("state documents serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Installation, InstallationStatus};

    fn installation() -> Installation {
        Installation {
            installed_release: Some("1.0.0".into()),
            networking_mode: "public".into(),
            stacks: vec!["acme-bootstrap".into()],
            status: InstallationStatus::Installed,
            config_hash: "abc".into(),
            operation_id: "op".into(),
            updated_at: jiff::Timestamp::UNIX_EPOCH,
            failed_releases: Vec::new(),
            trust_floor: None,
            trusted_root: None,
        }
    }

    fn item(version: Option<&str>, body: Option<&str>) -> StoredItem {
        StoredItem {
            key: "acme/installation".into(),
            schema_version: version.map(str::to_owned),
            body: body.map(str::to_owned),
        }
    }

    #[test]
    fn a_document_reads_back_as_written() {
        let written = installation();
        let read: Installation =
            decode(&item(Some("1"), Some(&encode(&written)))).expect("decodes");
        assert_eq!(read, written);
    }

    #[test]
    fn an_unknown_schema_version_is_an_error_naming_the_key() {
        let error =
            decode::<Installation>(&item(Some("99"), Some(&encode(&installation())))).unwrap_err();
        assert!(
            matches!(&error, StateError::UnknownSchemaVersion { key, found } if key == "acme/installation" && found == "99"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the state item acme/installation has schema version 99, which this installer does not know"
        );
    }

    #[test]
    fn a_malformed_body_is_an_error_naming_the_key_and_the_reason() {
        for (body, reason) in [
            (Some("{not json"), "its body does not parse"),
            (
                Some(r#"{"installed_release": 7}"#),
                "its body does not parse",
            ),
            (None, "it has no body"),
        ] {
            let error = decode::<Installation>(&item(Some("1"), body)).unwrap_err();
            let StateError::Malformed { key, reason: found } = &error else {
                panic!("expected Malformed, got {error:?}");
            };
            assert_eq!(key, "acme/installation");
            assert!(found.starts_with(reason), "{found}");
        }
        let error = decode::<Installation>(&item(None, Some("{}"))).unwrap_err();
        assert!(
            error.to_string().contains("it has no schema_version"),
            "{error}"
        );
    }

    #[test]
    fn history_keys_sort_by_time() {
        let key = |seconds: i64| {
            ItemKey::History {
                started_at: jiff::Timestamp::from_second(seconds).expect("a time"),
                operation_id: "x".into(),
            }
            .sort_key()
        };
        assert_eq!(key(0), "history#1970-01-01T00:00:00.000Z#x");
        assert!(key(9) < key(10));
        assert!(key(59) < key(61));
    }
}
