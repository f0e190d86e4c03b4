//! Where a registry is and how to log in to it: address overrides for local work, docker-style
//! auth files, and a secret type that never prints.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::MirrorError;
use crate::release::ecr_account_region;

/// A password or token. It prints as `[redacted]` in every format, so that no log line, error
/// or `Debug` output can carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

/// How to log in to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Basic { username: String, password: Secret },
}

/// A registry as references name it, and where to connect to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEndpoint {
    /// The host (and port) in image references, such as `111122223333.dkr.ecr.us-east-1.amazonaws.com`.
    pub name: String,
    /// The host and port connected to: the name, or its override.
    pub address: String,
    /// HTTP without TLS (local registries only).
    pub plain_http: bool,
    /// Whether an override redirected the name.
    pub overridden: bool,
}

impl RegistryEndpoint {
    /// The endpoint for a registry name, through the overrides.
    pub fn resolve(name: &str, overrides: &RegistryOverrides, plain_http: bool) -> Self {
        match overrides.0.get(name) {
            Some((address, plain)) => RegistryEndpoint {
                name: name.to_owned(),
                address: address.clone(),
                plain_http: *plain || plain_http,
                overridden: true,
            },
            None => RegistryEndpoint {
                name: name.to_owned(),
                address: name.to_owned(),
                plain_http,
                overridden: false,
            },
        }
    }

    /// Whether the address connected to is a loopback address (or `localhost`), the only
    /// place plain HTTP goes.
    pub fn is_loopback(&self) -> bool {
        let host = match self.address.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|character| character.is_ascii_digit()) => host,
            _ => self.address.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback())
    }

    /// `name` or `name (at address)` for messages.
    pub fn display_name(&self) -> String {
        if self.overridden {
            format!("{} (at {})", self.name, self.address)
        } else {
            self.name.clone()
        }
    }

    /// An ECR registry's account and region, from its host name.
    pub fn ecr_account_region(&self) -> Option<(String, String)> {
        ecr_account_region(&self.name)
    }
}

/// Registry names redirected to other addresses, from `STACKWRIGHT_REGISTRY_OVERRIDES`:
/// `name=address[,name=address...]`, an address starting with `http://` meaning plain HTTP.
#[derive(Debug, Clone, Default)]
pub struct RegistryOverrides(BTreeMap<String, (String, bool)>);

pub const OVERRIDES_VARIABLE: &str = "STACKWRIGHT_REGISTRY_OVERRIDES";

impl RegistryOverrides {
    pub fn from_env() -> Result<Self, MirrorError> {
        match std::env::var(OVERRIDES_VARIABLE) {
            Ok(text) => Self::parse(&text),
            Err(_) => Ok(RegistryOverrides::default()),
        }
    }

    pub fn parse(text: &str) -> Result<Self, MirrorError> {
        let mut overrides = BTreeMap::new();
        for entry in text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            let invalid = || MirrorError::Override {
                entry: entry.to_owned(),
            };
            let (name, address) = entry.split_once('=').ok_or_else(invalid)?;
            let (address, plain) = match address.strip_prefix("http://") {
                Some(address) => (address, true),
                None => (address.strip_prefix("https://").unwrap_or(address), false),
            };
            let address = address.trim_end_matches('/');
            if name.trim().is_empty() || address.is_empty() || address.contains('/') {
                return Err(invalid());
            }
            overrides.insert(name.trim().to_owned(), (address.to_owned(), plain));
        }
        Ok(RegistryOverrides(overrides))
    }
}

#[derive(Debug, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("AuthEntry([redacted])")
    }
}

/// The docker-style auth file in use: `REGISTRY_AUTH_FILE`, then `$DOCKER_CONFIG/config.json`,
/// then `~/.docker/config.json`; the first that is set (and, for the defaults, exists).
pub fn auth_file_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if let Some(directory) = std::env::var_os("DOCKER_CONFIG").filter(|path| !path.is_empty()) {
        return Some(Path::new(&directory).join("config.json"));
    }
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".docker/config.json");
    path.exists().then_some(path)
}

/// Credentials for an endpoint from the auth file, looked up by its address, then its name
/// (with or without a scheme). Anonymous when there is no file or no entry.
pub fn from_auth_file(endpoint: &RegistryEndpoint) -> Result<Credentials, MirrorError> {
    let Some(path) = auth_file_path() else {
        return Ok(Credentials::Anonymous);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Credentials::Anonymous);
        }
        Err(source) => {
            return Err(MirrorError::AuthFile {
                path,
                problem: source.to_string(),
            });
        }
    };
    let file: AuthFile = serde_json::from_str(&text).map_err(|error| MirrorError::AuthFile {
        path: path.clone(),
        // serde_json's message names the line and column, never the value.
        problem: error.to_string(),
    })?;
    let entry = [&endpoint.address, &endpoint.name].iter().find_map(|key| {
        file.auths.iter().find_map(|(host, entry)| {
            let host = host
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            (host == key.as_str()).then_some(entry)
        })
    });
    let Some(entry) = entry else {
        return Ok(Credentials::Anonymous);
    };
    let malformed = || MirrorError::AuthFile {
        path: path.clone(),
        problem: format!(
            "the entry for {} has no usable `auth` (base64 of user:password) or username and password",
            endpoint.address
        ),
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Credentials::Basic {
            username: username.clone(),
            password: Secret::new(password.clone()),
        });
    }
    let encoded = entry.auth.as_deref().ok_or_else(malformed)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (username, password) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(Credentials::Basic {
        username: username.to_owned(),
        password: Secret::new(password),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "[redacted] [redacted]");
        let credentials = Credentials::Basic {
            username: "user".into(),
            password: secret,
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }

    #[test]
    fn overrides_parse_with_and_without_scheme() {
        let overrides = RegistryOverrides::parse(
            "111122223333.dkr.ecr.us-east-1.amazonaws.com=http://127.0.0.1:5000, example.com=127.0.0.1:5001",
        )
        .expect("valid");
        let endpoint = RegistryEndpoint::resolve(
            "111122223333.dkr.ecr.us-east-1.amazonaws.com",
            &overrides,
            false,
        );
        assert_eq!(endpoint.address, "127.0.0.1:5000");
        assert!(endpoint.plain_http && endpoint.overridden);
        let endpoint = RegistryEndpoint::resolve("example.com", &overrides, false);
        assert!(!endpoint.plain_http);
        assert!(RegistryOverrides::parse("no-equals-sign").is_err());
    }
}
