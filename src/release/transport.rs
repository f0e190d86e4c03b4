//! How a release repository's files are fetched: the `tough` [`Transport`] that verification
//! reads through. It knows four kinds of address:
//!
//! - `file:` URLs, read from disk;
//! - `https://` URLs, through reqwest with rustls, trusting the platform's roots plus the
//!   extra CA bundle of [`crate::tls`] (`STACKWRIGHT_CA_BUNDLE`, such as a TLS-inspecting
//!   proxy's), following no redirect to another host;
//! - `http://` URLs on a loopback address only: plain HTTP to anywhere else could be read and
//!   rewritten on the way, and although every byte is checked against its signature, the
//!   repository's freshness (which timestamp it serves) would be an attacker's to pick;
//! - `s3://bucket/prefix` URLs, through the AWS SDK with the installer's own SDK settings, so
//!   that an all-private instance fetches through its S3 gateway endpoint, and a local test
//!   reaches the emulator through `AWS_ENDPOINT_URL`.
//!
//! Every answer is capped at [`MAX_RESPONSE_BYTES`] before `tough` sees it; HTTP has connect
//! and read timeouts and retries transient failures (connection errors, 5xx, 429) with backoff.
//! A missing file (HTTP 404 or 410, S3's `NoSuchKey`) is `tough`'s `FileNotFound`, never
//! retried: TUF's walk up the root chain ends on it.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use tough::{FilesystemTransport, Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

use crate::tls::{self, ExtraRoots};

/// A metadata file or manifest larger than this is refused before `tough` sees it.
pub const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Attempts per file over HTTP, for transient failures.
const HTTP_ATTEMPTS: u32 = 4;
/// Wait before the second attempt; doubles for each one after.
const HTTP_BACKOFF: Duration = Duration::from_millis(250);

/// Why a file could not be fetched, as the cause inside `tough`'s transport error. A refused
/// server certificate is kept apart, so that the refusal can name it and the fix.
#[derive(Debug, Clone)]
pub struct FetchFailure {
    pub message: String,
    /// What is wrong with the server's certificate, when that is the failure.
    pub certificate_problem: Option<String>,
}

impl fmt::Display for FetchFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for FetchFailure {}

impl FetchFailure {
    fn new(message: impl Into<String>) -> Self {
        FetchFailure {
            message: message.into(),
            certificate_problem: None,
        }
    }

    fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        FetchFailure {
            message: tls::describe_error(error),
            certificate_problem: tls::certificate_problem(error),
        }
    }
}

/// The loopback address a URL names, if it names one by address (a host name could resolve
/// anywhere).
pub fn loopback_address(url: &Url) -> Option<IpAddr> {
    let address = match url.host()? {
        url::Host::Ipv4(address) => IpAddr::V4(address),
        url::Host::Ipv6(address) => IpAddr::V6(address),
        url::Host::Domain(_) => return None,
    };
    address.is_loopback().then_some(address)
}

/// Reads a repository's files from wherever its base URL points.
#[derive(Debug, Clone)]
pub struct RepositoryTransport {
    http: reqwest::Client,
    s3: Option<aws_sdk_s3::Client>,
}

impl RepositoryTransport {
    /// A transport for the repository at `base`: an HTTP client that trusts the platform's
    /// roots and `STACKWRIGHT_CA_BUNDLE`, and for an `s3://` base an S3 client.
    pub async fn for_base(base: &Url) -> Result<Self, FetchFailure> {
        let roots = ExtraRoots::from_environment()
            .map_err(|error| FetchFailure::new(format!("{error} ({})", error.hint())))?;
        let allow_http = base.scheme() == "http" && loopback_address(base).is_some();
        let http = roots
            .http_client(allow_http)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|error| FetchFailure::from_error(&error))?;
        let s3 = if base.scheme() == "s3" {
            let region = std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .ok();
            let mut config = crate::cloud::sdk_config(region.as_deref(), None).await;
            if config.region().is_none() {
                config = crate::cloud::sdk_config(Some("us-east-1"), None).await;
            }
            Some(crate::cloud::s3_client(&config))
        } else {
            None
        };
        Ok(RepositoryTransport { http, s3 })
    }

    async fn fetch_http(&self, url: &Url) -> Result<Vec<u8>, TransportError> {
        let other = |failure: FetchFailure| {
            TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), failure)
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= HTTP_ATTEMPTS;
            let failure = match self
                .http
                .get(url.clone())
                .header(reqwest::header::ACCEPT_ENCODING, "identity")
                .send()
                .await
            {
                Ok(response) => match response.status().as_u16() {
                    200 => match read_capped(response).await {
                        Ok(body) => return Ok(body),
                        Err(Capped::TooLarge(failure)) => return Err(other(failure)),
                        Err(Capped::Broken(failure)) => failure,
                    },
                    404 | 410 => {
                        return Err(TransportError::new(
                            TransportErrorKind::FileNotFound,
                            url.as_str(),
                        ));
                    }
                    status @ (429 | 500..=599) => {
                        FetchFailure::new(format!("the server answered HTTP {status}"))
                    }
                    status => {
                        return Err(other(FetchFailure::new(format!(
                            "the server answered HTTP {status}"
                        ))));
                    }
                },
                Err(error) => {
                    let failure = FetchFailure::from_error(&error);
                    // A certificate refused now is refused on every attempt.
                    if failure.certificate_problem.is_some()
                        || !(error.is_connect() || error.is_timeout() || error.is_request())
                    {
                        return Err(other(failure));
                    }
                    failure
                }
            };
            if last {
                return Err(other(FetchFailure {
                    message: format!("{} (after {attempt} attempts)", failure.message),
                    ..failure
                }));
            }
            tracing::debug!(%url, attempt, "release repository: {failure}; retrying");
            tokio::time::sleep(HTTP_BACKOFF.saturating_mul(1 << (attempt - 1).min(6))).await;
        }
    }

    async fn fetch_s3(&self, url: &Url) -> Result<Vec<u8>, TransportError> {
        let other = |failure: FetchFailure| {
            TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), failure)
        };
        let client = self.s3.as_ref().ok_or_else(|| {
            TransportError::new(TransportErrorKind::UnsupportedUrlScheme, url.as_str())
        })?;
        let (bucket, key) = s3_location(url).ok_or_else(|| {
            other(FetchFailure::new(
                "an s3:// URL names a bucket and a key: s3://bucket/prefix/file",
            ))
        })?;
        // The SDK retries transient failures itself, as every other AWS call of the installer.
        let output = match client.get_object().bucket(&bucket).key(&key).send().await {
            Ok(output) => output,
            Err(error) => {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                let service = error.as_service_error();
                if service.is_some_and(|error| error.is_no_such_key())
                    || error.code() == Some("NotFound")
                {
                    return Err(TransportError::new(
                        TransportErrorKind::FileNotFound,
                        url.as_str(),
                    ));
                }
                let message = match (error.code(), error.message()) {
                    (Some(code), Some(message)) => {
                        format!("s3:GetObject on {bucket}/{key} failed: {code}: {message}")
                    }
                    (Some(code), None) => format!("s3:GetObject on {bucket}/{key} failed: {code}"),
                    _ => format!(
                        "s3:GetObject on {bucket}/{key} failed: {}",
                        aws_smithy_types::error::display::DisplayErrorContext(&error)
                    ),
                };
                return Err(other(FetchFailure::new(message)));
            }
        };
        if output
            .content_length()
            .is_some_and(|length| length as u64 > MAX_RESPONSE_BYTES)
        {
            return Err(other(too_large()));
        }
        let mut body = output.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.try_next().await.map_err(|error| {
            other(FetchFailure::new(format!(
                "reading s3://{bucket}/{key}: {error}"
            )))
        })? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > MAX_RESPONSE_BYTES {
                return Err(other(too_large()));
            }
        }
        Ok(bytes)
    }
}

/// The bucket and key an `s3://bucket/key` URL names.
fn s3_location(url: &Url) -> Option<(String, String)> {
    let bucket = url.host_str().filter(|bucket| !bucket.is_empty())?;
    let key = percent_decode(url.path().trim_start_matches('/'))?;
    (!key.is_empty()).then(|| (bucket.to_owned(), key))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

fn too_large() -> FetchFailure {
    FetchFailure::new(format!(
        "the file is larger than {MAX_RESPONSE_BYTES} bytes, more than any metadata or manifest"
    ))
}

enum Capped {
    /// Over the cap: refused, not retried.
    TooLarge(FetchFailure),
    /// The connection broke while reading: worth another attempt.
    Broken(FetchFailure),
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, Capped> {
    if response
        .content_length()
        .is_some_and(|length| length > MAX_RESPONSE_BYTES)
    {
        return Err(Capped::TooLarge(too_large()));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > MAX_RESPONSE_BYTES {
                    return Err(Capped::TooLarge(too_large()));
                }
            }
            Ok(None) => return Ok(body),
            Err(error) => return Err(Capped::Broken(FetchFailure::from_error(&error))),
        }
    }
}

#[tough::async_trait]
impl Transport for RepositoryTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let body = match url.scheme() {
            "file" => return FilesystemTransport.fetch(url).await,
            "https" => self.fetch_http(&url).await?,
            "http" if loopback_address(&url).is_some() => self.fetch_http(&url).await?,
            "s3" => self.fetch_s3(&url).await?,
            _ => {
                return Err(TransportError::new_with_cause(
                    TransportErrorKind::UnsupportedUrlScheme,
                    url.as_str(),
                    FetchFailure::new(
                        "only https://, s3://, a directory, or plain http:// on a loopback address",
                    ),
                ));
            }
        };
        let chunk: Result<tough::Bytes, TransportError> = Ok(tough::Bytes::from(body));
        Ok(Box::pin(futures_util::stream::iter([chunk])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_name_a_bucket_and_a_key() {
        let base = Url::parse("s3://vendor-releases/stable/").unwrap();
        let file = base.join("metadata/").unwrap().join("1.root.json").unwrap();
        assert_eq!(
            file.as_str(),
            "s3://vendor-releases/stable/metadata/1.root.json"
        );
        assert_eq!(
            s3_location(&file),
            Some((
                "vendor-releases".into(),
                "stable/metadata/1.root.json".into()
            ))
        );
        let spaced = Url::parse("s3://bucket/a%20b/c.json").unwrap();
        assert_eq!(s3_location(&spaced).unwrap().1, "a b/c.json");
        assert_eq!(s3_location(&Url::parse("s3://bucket/").unwrap()), None);
    }

    #[test]
    fn loopback_means_an_address_not_a_name() {
        for (url, loopback) in [
            ("http://127.0.0.1:8080/", true),
            ("http://[::1]/", true),
            ("http://localhost/", false),
            ("http://10.0.0.1/", false),
        ] {
            assert_eq!(
                loopback_address(&Url::parse(url).unwrap()).is_some(),
                loopback,
                "{url}"
            );
        }
    }
}
