//! Which certificate authorities the installer's TLS clients trust: the platform's roots, plus
//! the certificates of an optional extra bundle (`STACKWRIGHT_CA_BUNDLE`), such as a
//! TLS-inspecting proxy's or the local environment's CA. Every client that speaks HTTPS (the
//! release repository, the control plane, the registries, the connectivity checks) takes its
//! trust from one [`ExtraRoots`], so a customer adds a CA once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// The variable that names a PEM file of extra CA certificates.
pub const CA_BUNDLE_VARIABLE: &str = "STACKWRIGHT_CA_BUNDLE";

/// Why the extra CA bundle cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the CA bundle {path} cannot be used: {reason}")]
pub struct BundleError {
    pub path: PathBuf,
    pub reason: String,
}

impl BundleError {
    pub fn hint(&self) -> String {
        format!(
            "point {CA_BUNDLE_VARIABLE} at a PEM file of CA certificates (\"-----BEGIN CERTIFICATE-----\"), or unset it to trust the system's roots alone"
        )
    }
}

/// Certificates trusted beside the platform's roots: none, or those of one PEM bundle.
#[derive(Debug, Clone, Default)]
pub struct ExtraRoots {
    path: Option<PathBuf>,
    pem: Vec<u8>,
    certificates: Vec<CertificateDer<'static>>,
}

impl ExtraRoots {
    /// No extra certificates: the platform's roots alone.
    pub fn none() -> Self {
        ExtraRoots::default()
    }

    /// The bundle `STACKWRIGHT_CA_BUNDLE` names, if it names one.
    pub fn from_environment() -> Result<Self, BundleError> {
        match std::env::var_os(CA_BUNDLE_VARIABLE).filter(|value| !value.is_empty()) {
            Some(path) => ExtraRoots::load(Path::new(&path)),
            None => Ok(ExtraRoots::none()),
        }
    }

    /// Every certificate in the PEM file at `path`; a file without one is an error, as it is
    /// surely not what was meant.
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let invalid = |reason: String| BundleError {
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|error| invalid(error.to_string()))?;
        let certificates: Vec<CertificateDer<'static>> = pem::parse_many(&pem)
            .map_err(|error| invalid(format!("not PEM: {error}")))?
            .into_iter()
            .filter(|block| block.tag() == "CERTIFICATE")
            .map(|block| CertificateDer::from(block.into_contents()))
            .collect();
        if certificates.is_empty() {
            return Err(invalid("it holds no certificate".into()));
        }
        Ok(ExtraRoots {
            path: Some(path.to_owned()),
            pem,
            certificates,
        })
    }

    /// The bundle's path, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }

    /// The bundle as reqwest certificates, to merge with the platform's roots.
    pub fn reqwest_certificates(&self) -> Vec<reqwest::Certificate> {
        self.certificates
            .iter()
            .filter_map(|certificate| reqwest::Certificate::from_der(certificate).ok())
            .collect()
    }

    /// The bundle as PEM text, for clients that take it so (the OCI registry client).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// A reqwest client builder that trusts the platform's roots and this bundle, follows no
    /// redirect to another host, and speaks HTTPS only unless `allow_http` (loopback tests).
    pub fn http_client(&self, allow_http: bool) -> reqwest::ClientBuilder {
        let same_host = reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first().and_then(|url| url.host_str());
            if attempt.previous().len() > 3 {
                attempt.error("more than 3 redirects")
            } else if attempt.url().host_str() != first {
                attempt.error("a redirect to another host")
            } else {
                attempt.follow()
            }
        });
        reqwest::Client::builder()
            .tls_certs_merge(self.reqwest_certificates())
            .redirect(same_host)
            .https_only(!allow_http)
            .user_agent(concat!("stackwright/", env!("CARGO_PKG_VERSION")))
    }

    /// A rustls client configuration with the platform's roots and this bundle, for clients that
    /// make their own connections (the connectivity checks).
    pub fn rustls_config(&self) -> Result<Arc<rustls::ClientConfig>, BundleError> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in rustls_native_certs::load_native_certs().certs {
            // A platform root rustls cannot parse is one the platform's own tools skip too.
            let _ = roots.add(certificate);
        }
        for certificate in &self.certificates {
            roots
                .add(certificate.clone())
                .map_err(|error| BundleError {
                    path: self.path.clone().unwrap_or_default(),
                    reason: error.to_string(),
                })?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| BundleError {
                path: self.path.clone().unwrap_or_default(),
                reason: error.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// The fix for a server certificate this machine does not trust, for every HTTPS client's hint.
pub fn certificate_hint() -> String {
    format!(
        "if the server is meant to present this certificate (a TLS-inspecting proxy's, a private CA's, or the local environment's), put that CA's certificate in a PEM file and set {CA_BUNDLE_VARIABLE} to its path; otherwise something between here and the server is intercepting the connection"
    )
}

/// What is wrong with the server's certificate, when `error` (or one of its causes) is a TLS
/// certificate refusal: "invalid peer certificate: UnknownIssuer", say.
pub fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(rustls::Error::InvalidCertificate(problem)) =
            error.downcast_ref::<rustls::Error>()
        {
            return Some(describe_certificate(problem));
        }
        // `std::io::Error` hides the error it wraps from `source()`: look inside.
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(rustls::Error::InvalidCertificate(problem)) =
                inner.downcast_ref::<rustls::Error>()
        {
            return Some(describe_certificate(problem));
        }
        // Some layers box the error in a way that hides its type from `downcast_ref`; rustls's
        // own text is the same in every case.
        if let Some(problem) = error
            .to_string()
            .split_once("invalid peer certificate: ")
            .map(|(_, problem)| describe_certificate_text(problem))
        {
            return Some(problem);
        }
        current = error.source();
    }
    None
}

fn describe_certificate_text(problem: &str) -> String {
    let known = [
        ("UnknownIssuer", rustls::CertificateError::UnknownIssuer),
        ("expired", rustls::CertificateError::Expired),
        ("Expired", rustls::CertificateError::Expired),
        ("not valid yet", rustls::CertificateError::NotValidYet),
        ("NotValidYet", rustls::CertificateError::NotValidYet),
        (
            "not valid for name",
            rustls::CertificateError::NotValidForName,
        ),
        ("NotValidForName", rustls::CertificateError::NotValidForName),
        ("BadSignature", rustls::CertificateError::BadSignature),
        ("Revoked", rustls::CertificateError::Revoked),
    ];
    known
        .into_iter()
        .find(|(name, _)| problem.contains(name))
        .map_or_else(
            || format!("the server's certificate is refused ({problem})"),
            |(_, problem)| describe_certificate(&problem),
        )
}

fn describe_certificate(problem: &rustls::CertificateError) -> String {
    use rustls::CertificateError as Problem;
    match problem {
        Problem::UnknownIssuer => {
            "the server's certificate is signed by a certificate authority this machine does not trust (unknown issuer)".into()
        }
        Problem::Expired | Problem::ExpiredContext { .. } => "the server's certificate has expired".into(),
        Problem::NotValidYet | Problem::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (check this machine's clock)".into()
        }
        Problem::NotValidForName | Problem::NotValidForNameContext { .. } => {
            "the server's certificate does not name the host connected to".into()
        }
        Problem::BadSignature => "the server's certificate has a bad signature".into(),
        Problem::Revoked => "the server's certificate is revoked".into(),
        other => format!("the server's certificate is refused ({other:?})"),
    }
}

/// An error and its causes in one line, with what `std::io::Error` wraps.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        current = cause.source();
    }
    if let Some(problem) = certificate_problem(error)
        && !text.contains("certificate")
    {
        text.push_str(": ");
        text.push_str(&problem);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused_with_its_path() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("bundle.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = ExtraRoots::load(&path).unwrap_err();
        assert_eq!(error.path, path);
        assert!(error.reason.contains("no certificate"), "{error}");
        let missing = ExtraRoots::load(&directory.path().join("missing.pem")).unwrap_err();
        assert!(missing.to_string().contains("missing.pem"), "{missing}");
    }

    #[test]
    fn a_refused_certificate_is_described_however_it_is_wrapped() {
        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error.clone());
        let boxed: Box<dyn std::error::Error + Send + Sync> =
            Box::new(std::io::Error::other(rustls_error.to_string()));
        for error in [
            &rustls_error as &(dyn std::error::Error + 'static),
            &wrapped,
            boxed.as_ref(),
        ] {
            assert!(
                certificate_problem(error)
                    .is_some_and(|problem| problem.contains("unknown issuer")),
                "{error}"
            );
        }
        assert_eq!(
            certificate_problem(&std::io::Error::other("connection refused")),
            None
        );
    }

    #[test]
    fn a_bundle_adds_its_certificates_to_the_platform_roots() {
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["ca.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("bundle.pem");
        std::fs::write(&path, certificate.pem()).unwrap();
        let roots = ExtraRoots::load(&path).unwrap();
        assert_eq!(roots.reqwest_certificates().len(), 1);
        assert_eq!(roots.path(), Some(path.as_path()));
        roots.rustls_config().unwrap();
        roots.http_client(false).build().unwrap();
    }
}
