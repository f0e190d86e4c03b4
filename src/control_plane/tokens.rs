//! Instance tokens: the reference server issues EdDSA-signed JWTs and verifies them on every
//! call. The signing key is generated at first start and kept beside the database (mode 0600).
//!
//! Verification is on the hot path of every update check, so a token that verified once is
//! remembered, keyed by its SHA-256, with the identity it carries and its expiry: a repeated
//! token costs one hash and a map lookup instead of an Ed25519 verification. Expiry is checked
//! on every use against the `now` the caller passes in, so a remembered token still expires.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use jiff::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sha2::{Digest, Sha256};

use super::api::{INSTANCE_PRINCIPAL, SecretToken, TOKEN_AUDIENCE, TokenClaims};
use super::wave::wave_bucket;

/// The signing key's file name, beside the database.
pub const SIGNING_KEY_FILE: &str = "control-plane-signing-key.pk8";

/// Verified tokens remembered at most; past this, expired ones are dropped, then all.
const CACHE_CAPACITY: usize = 100_000;

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: Arc<str>,
    pub organization_id: Arc<str>,
    pub wave_bucket: u8,
    /// Seconds since the epoch.
    pub expires: i64,
}

/// Why a token was refused: the 401's `error` code and `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct TokenRefusal {
    pub code: &'static str,
    pub reason: String,
}

impl TokenRefusal {
    fn new(code: &'static str, reason: impl Into<String>) -> Self {
        TokenRefusal {
            code,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write the signing key {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the signing key {} is not an Ed25519 PKCS#8 key", path.display())]
    Invalid { path: PathBuf },
    #[error("cannot generate a signing key")]
    Generate,
}

/// Issues and verifies instance tokens.
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    lifetime: Duration,
    verified: RwLock<HashMap<[u8; 32], Identity>>,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TokenAuthority")
            .field("issuer", &self.issuer)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// The Ed25519 key in `directory`, generated (and written with mode 0600) if there is none.
pub fn load_or_create_key(directory: &Path) -> Result<Vec<u8>, KeyError> {
    let path = directory.join(SIGNING_KEY_FILE);
    let io = |source| KeyError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            Ed25519KeyPair::from_pkcs8(&bytes)
                .map_err(|_| KeyError::Invalid { path: path.clone() })?;
            Ok(bytes)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let document = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                .map_err(|_| KeyError::Generate)?;
            let bytes = document.as_ref().to_vec();
            write_private(&path, &bytes).map_err(io)?;
            Ok(bytes)
        }
        Err(error) => Err(io(error)),
    }
}

/// Writes a file only its owner can read, replacing any before it.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;

    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

impl TokenAuthority {
    /// `pkcs8` is the Ed25519 private key; tokens name `issuer` and live for `lifetime`.
    pub fn new(pkcs8: &[u8], issuer: String, lifetime: Duration) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| KeyError::Invalid {
            path: PathBuf::from(SIGNING_KEY_FILE),
        })?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[TOKEN_AUDIENCE]);
        validation.set_issuer(&[issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is checked against the caller's `now`, not the system clock, and exactly.
        validation.validate_exp = false;
        validation.leeway = 0;
        Ok(TokenAuthority {
            encoding: EncodingKey::from_ed_der(pkcs8),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
            validation,
            issuer,
            lifetime,
            verified: RwLock::new(HashMap::new()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A new token for the instance, and when it expires.
    pub fn issue(
        &self,
        instance_id: &str,
        organization_id: &str,
        now: Timestamp,
    ) -> Result<(SecretToken, Timestamp), TokenRefusal> {
        let issued = now.as_second();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX / 4);
        let expires = issued.saturating_add(lifetime);
        let claims = TokenClaims {
            iss: self.issuer.clone(),
            aud: TOKEN_AUDIENCE.to_owned(),
            sub: format!("{INSTANCE_PRINCIPAL}:{instance_id}"),
            principal_type: INSTANCE_PRINCIPAL.to_owned(),
            instance_id: instance_id.to_owned(),
            organization_id: organization_id.to_owned(),
            iat: issued,
            exp: expires,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|error| TokenRefusal::new("token_issue_failed", error.to_string()))?;
        let expires_at = Timestamp::from_second(expires)
            .map_err(|error| TokenRefusal::new("token_issue_failed", error.to_string()))?;
        Ok((SecretToken::new(token), expires_at))
    }

    /// The identity a bearer token speaks for, or why it is refused.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Identity, TokenRefusal> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let remembered = self
            .verified
            .read()
            .ok()
            .and_then(|verified| verified.get(&key).cloned());
        let identity = match remembered {
            Some(identity) => identity,
            None => {
                let identity = self.verify_signature(token)?;
                self.remember(key, identity.clone(), now);
                identity
            }
        };
        if now.as_second() >= identity.expires {
            let expired = Timestamp::from_second(identity.expires)
                .map(|expired| expired.to_string())
                .unwrap_or_else(|_| identity.expires.to_string());
            return Err(TokenRefusal::new(
                "token_expired",
                format!(
                    "the token expired at {expired}; refresh tokens before they expire, or register the instance again"
                ),
            ));
        }
        Ok(identity)
    }

    fn verify_signature(&self, token: &str) -> Result<Identity, TokenRefusal> {
        let data = jsonwebtoken::decode::<TokenClaims>(token, &self.decoding, &self.validation)
            .map_err(|error| match header_algorithm(token) {
                // An unsigned (`alg: none`) or otherwise signed token is a forgery, not a typo.
                Some(algorithm) if algorithm != "EdDSA" => TokenRefusal::new(
                    "token_signature_invalid",
                    format!("the token is signed with \"{algorithm}\", and only EdDSA signatures by this control plane are accepted"),
                ),
                _ => refusal(error.kind()),
            })?;
        let claims = data.claims;
        if claims.principal_type != INSTANCE_PRINCIPAL
            || claims.sub != format!("{INSTANCE_PRINCIPAL}:{}", claims.instance_id)
        {
            return Err(TokenRefusal::new(
                "token_wrong_principal",
                "the token is not an instance's token",
            ));
        }
        Ok(Identity {
            wave_bucket: wave_bucket(&claims.instance_id),
            instance_id: claims.instance_id.into(),
            organization_id: claims.organization_id.into(),
            expires: claims.exp,
        })
    }

    fn remember(&self, key: [u8; 32], identity: Identity, now: Timestamp) {
        let Ok(mut verified) = self.verified.write() else {
            return;
        };
        if verified.len() >= CACHE_CAPACITY {
            let now = now.as_second();
            verified.retain(|_, identity| identity.expires > now);
            if verified.len() >= CACHE_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(key, identity);
    }
}

/// The `alg` a token's header names, if the header can be read at all.
fn header_algorithm(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let algorithm = value.get("alg")?.as_str()?;
    Some(algorithm.chars().take(16).collect())
}

fn refusal(kind: &ErrorKind) -> TokenRefusal {
    match kind {
        ErrorKind::InvalidAudience => TokenRefusal::new(
            "token_wrong_audience",
            format!("the token is not meant for this API (its audience is not {TOKEN_AUDIENCE})"),
        ),
        ErrorKind::InvalidIssuer => TokenRefusal::new(
            "token_wrong_issuer",
            "the token was issued by another control plane",
        ),
        ErrorKind::InvalidSignature => TokenRefusal::new(
            "token_signature_invalid",
            "the token's signature does not verify with this control plane's key",
        ),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => TokenRefusal::new(
            "token_signature_invalid",
            "the token is not signed with EdDSA by this control plane",
        ),
        ErrorKind::MissingRequiredClaim(claim) => TokenRefusal::new(
            "token_malformed",
            format!("the token has no `{claim}` claim"),
        ),
        _ => TokenRefusal::new(
            "token_malformed",
            "the bearer token is not a well-formed JWT",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(lifetime: u64) -> TokenAuthority {
        let key = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
        TokenAuthority::new(
            key.as_ref(),
            "http://127.0.0.1:1".into(),
            Duration::from_secs(lifetime),
        )
        .unwrap()
    }

    #[test]
    fn control_plane_token_round_trip_and_expiry() {
        let authority = authority(60);
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let (token, expires) = authority.issue("instance-1", "org-1", now).unwrap();
        assert_eq!(expires.as_second(), now.as_second() + 60);
        let identity = authority.verify(token.expose(), now).unwrap();
        assert_eq!(&*identity.instance_id, "instance-1");
        assert_eq!(&*identity.organization_id, "org-1");
        // Remembered, and still expiring.
        assert!(authority.verify(token.expose(), now).is_ok());
        let later = Timestamp::from_second(now.as_second() + 60).unwrap();
        assert_eq!(
            authority.verify(token.expose(), later).unwrap_err().code,
            "token_expired"
        );
    }

    #[test]
    fn control_plane_another_key_is_refused() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let (token, _) = authority(60).issue("instance-1", "org-1", now).unwrap();
        let refusal = authority(60).verify(token.expose(), now).unwrap_err();
        assert_eq!(refusal.code, "token_signature_invalid");
        assert_eq!(
            authority(60).verify("not a jwt", now).unwrap_err().code,
            "token_malformed"
        );
    }
}
