//! Dialling the destinations a networking mode needs: which address each one is dialled at
//! (overrides, the AWS endpoint, loopback-only mode), and the [`Dialer`] that opens a TCP
//! connection and, for HTTPS destinations, completes a TLS handshake.
//!
//! Every address that is dialled goes through [`Dialer::dial`] as a [`DialTarget`], so a test
//! can record them all; names are resolved inside the dialer, never before it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// `host:port=address:port,...`: where to dial a destination instead of its own address.
pub const OVERRIDES_VARIABLE: &str = "STACKWRIGHT_DIAL_OVERRIDES";
/// When set to `1`, only loopback addresses are dialled; anything else is reported as skipped.
pub const ONLY_LOOPBACK_VARIABLE: &str = "STACKWRIGHT_DIAL_ONLY_LOOPBACK";

/// A destination to dial: what it is called, and whether it speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    /// Whether the destination is HTTPS, so a TLS handshake follows the connection.
    pub tls: bool,
}

impl fmt::Display for Destination {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.host, self.port)
    }
}

/// Where a destination is actually dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialAddress {
    /// An address given by an override or the AWS endpoint: no name is resolved.
    Socket(SocketAddr),
    /// The destination's own name, resolved by the dialer.
    Name { host: String, port: u16 },
}

impl fmt::Display for DialAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialAddress::Socket(address) => write!(formatter, "{address}"),
            DialAddress::Name { host, port } => write!(formatter, "{host}:{port}"),
        }
    }
}

/// One dial: the address, and the name a TLS handshake presents and verifies (the
/// destination's own, whatever address it is dialled at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialTarget {
    pub address: DialAddress,
    pub tls_server_name: Option<String>,
}

/// What a successful dial reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialled {
    /// The address the connection was made to.
    pub peer: SocketAddr,
    /// The TLS version negotiated, when there was a handshake.
    pub tls_version: Option<String>,
}

/// The step at which a dial failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DialStage {
    Resolve,
    Connect,
    Tls,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", match stage { DialStage::Resolve => "name resolution failed", DialStage::Connect => "TCP connection failed", DialStage::Tls => "TLS handshake failed" })]
pub struct DialFailure {
    pub stage: DialStage,
    pub message: String,
}

/// Opens connections. The one implementation dials for real; tests wrap it to record every
/// target, or replace it.
#[allow(async_fn_in_trait)]
pub trait Dialer: Sync {
    async fn dial(&self, target: &DialTarget) -> Result<Dialled, DialFailure>;
}

/// How destinations are dialled, from the environment.
#[derive(Debug, Clone, Default)]
pub struct DialSettings {
    /// `host:port` to the address to dial instead.
    pub overrides: BTreeMap<String, SocketAddr>,
    /// Where AWS service destinations are dialled when the SDK is pointed at an endpoint
    /// (`AWS_ENDPOINT_URL`), and whether that endpoint speaks TLS.
    pub aws_endpoint: Option<(DialAddress, bool)>,
    /// Dial loopback addresses only; everything else is skipped.
    pub only_loopback: bool,
    pub timeout: Duration,
}

/// What to do with one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Dial {
        target: DialTarget,
        /// How the address was chosen, for the report: `override`, `AWS_ENDPOINT_URL`, `direct`.
        via: &'static str,
    },
    Skip {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} is invalid: {message}")]
pub struct DialSettingsError {
    pub variable: &'static str,
    pub message: String,
}

impl DialSettings {
    /// Reads the overrides, the AWS endpoint and loopback-only mode from the environment.
    pub fn from_environment(timeout: Duration) -> Result<Self, DialSettingsError> {
        Self::from_variables(timeout, |name| std::env::var(name).ok())
    }

    /// The same, from any source of variables (a test reads the local environment's env.sh).
    pub fn from_variables(
        timeout: Duration,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, DialSettingsError> {
        let variable = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let overrides = match variable(OVERRIDES_VARIABLE) {
            Some(text) => parse_overrides(&text).map_err(|message| DialSettingsError {
                variable: OVERRIDES_VARIABLE,
                message,
            })?,
            None => BTreeMap::new(),
        };
        let aws_endpoint = match variable("AWS_ENDPOINT_URL") {
            Some(url) => Some(endpoint_address(&url).ok_or_else(|| DialSettingsError {
                variable: "AWS_ENDPOINT_URL",
                message: format!(
                    "\"{url}\" is not an http:// or https:// URL with a host (such as http://127.0.0.1:5000)"
                ),
            })?),
            None => None,
        };
        let only_loopback = match variable(ONLY_LOOPBACK_VARIABLE).as_deref() {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                return Err(DialSettingsError {
                    variable: ONLY_LOOPBACK_VARIABLE,
                    message: format!("\"{other}\" is neither 1 nor 0"),
                });
            }
        };
        Ok(DialSettings {
            overrides,
            aws_endpoint,
            only_loopback,
            timeout,
        })
    }

    /// Where `destination` is dialled, or why it is not. `aws_service` marks destinations the
    /// AWS SDK reaches, which follow `AWS_ENDPOINT_URL` like the SDK does.
    pub fn plan(&self, destination: &Destination, aws_service: bool) -> Plan {
        let key = destination.to_string();
        let (address, tls, via) = if let Some(address) = self.overrides.get(&key) {
            (DialAddress::Socket(*address), destination.tls, "override")
        } else if let (true, Some((address, tls))) = (aws_service, &self.aws_endpoint) {
            (address.clone(), *tls, "AWS_ENDPOINT_URL")
        } else if let Ok(ip) = destination.host.trim_matches(['[', ']']).parse::<IpAddr>() {
            (
                DialAddress::Socket(SocketAddr::new(ip, destination.port)),
                destination.tls,
                "direct",
            )
        } else {
            (
                DialAddress::Name {
                    host: destination.host.clone(),
                    port: destination.port,
                },
                destination.tls,
                "direct",
            )
        };
        if self.only_loopback {
            let loopback =
                matches!(&address, DialAddress::Socket(socket) if socket.ip().is_loopback());
            if !loopback {
                return Plan::Skip {
                    reason: format!("not dialled: no local override ({ONLY_LOOPBACK_VARIABLE}=1)"),
                };
            }
        }
        Plan::Dial {
            target: DialTarget {
                address,
                tls_server_name: tls.then(|| destination.host.clone()),
            },
            via,
        }
    }
}

/// Parses `host:port=address:port` pairs separated by commas; the port of the host defaults
/// to 443.
pub fn parse_overrides(text: &str) -> Result<BTreeMap<String, SocketAddr>, String> {
    let mut overrides = BTreeMap::new();
    for pair in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let (from, to) = pair
            .split_once('=')
            .ok_or_else(|| format!("\"{pair}\" is not of the form host:port=address:port"))?;
        let from = from.trim();
        let from = match from.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() && !host.is_empty() => {
                from.to_owned()
            }
            _ if !from.is_empty() && !from.contains(':') => format!("{from}:443"),
            _ => return Err(format!("\"{from}\" is not a host and port")),
        };
        let to: SocketAddr = to.trim().parse().map_err(|_| {
            format!(
                "\"{}\" is not an IP address and port, such as 127.0.0.1:8443",
                to.trim()
            )
        })?;
        overrides.insert(from, to);
    }
    Ok(overrides)
}

/// The address of an endpoint URL, and whether it speaks TLS.
fn endpoint_address(url: &str) -> Option<(DialAddress, bool)> {
    let (scheme, rest) = url.split_once("://")?;
    let tls = match scheme {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let default_port = if tls { 443 } else { 80 };
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if let Ok(address) = authority.parse::<SocketAddr>() {
        return Some((DialAddress::Socket(address), tls));
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(port) => (host, port.parse().ok()?),
            None if after.is_empty() => (host, default_port),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    let address = match host.parse::<IpAddr>() {
        Ok(ip) => DialAddress::Socket(SocketAddr::new(ip, port)),
        Err(_) if host == "localhost" => {
            DialAddress::Socket(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port))
        }
        Err(_) => DialAddress::Name {
            host: host.to_owned(),
            port,
        },
    };
    Some((address, tls))
}

/// The real dialer: tokio TCP and rustls, trusting what the installer's HTTPS clients trust:
/// the platform's roots plus `STACKWRIGHT_CA_BUNDLE` ([`crate::tls`]).
pub struct NetworkDialer {
    tls: Arc<rustls::ClientConfig>,
}

impl NetworkDialer {
    pub fn new(roots: &crate::tls::ExtraRoots) -> Result<Self, DialSettingsError> {
        let tls = roots.rustls_config().map_err(|error| DialSettingsError {
            variable: crate::tls::CA_BUNDLE_VARIABLE,
            message: error.to_string(),
        })?;
        Ok(NetworkDialer { tls })
    }
}

impl Dialer for NetworkDialer {
    async fn dial(&self, target: &DialTarget) -> Result<Dialled, DialFailure> {
        let failure = |stage, message: String| DialFailure { stage, message };
        let addresses: Vec<SocketAddr> = match &target.address {
            DialAddress::Socket(address) => vec![*address],
            DialAddress::Name { host, port } => tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|error| failure(DialStage::Resolve, error.to_string()))?
                .collect(),
        };
        let mut last_error = failure(DialStage::Resolve, "the name has no address".into());
        let mut stream = None;
        for address in addresses {
            match tokio::net::TcpStream::connect(address).await {
                Ok(connected) => {
                    stream = Some((connected, address));
                    break;
                }
                Err(error) => last_error = failure(DialStage::Connect, error.to_string()),
            }
        }
        let (stream, peer) = stream.ok_or(last_error)?;
        let Some(name) = &target.tls_server_name else {
            return Ok(Dialled {
                peer,
                tls_version: None,
            });
        };
        let server_name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|error| failure(DialStage::Tls, format!("\"{name}\": {error}")))?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let tls = connector
            .connect(server_name, stream)
            .await
            .map_err(|error| failure(DialStage::Tls, error.to_string()))?;
        let version = tls
            .get_ref()
            .1
            .protocol_version()
            .map(|version| match version {
                rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_owned(),
                rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_owned(),
                other => format!("{other:?}"),
            });
        Ok(Dialled {
            peer,
            tls_version: version,
        })
    }
}

/// The outcome of dialling one destination, with how long it took.
#[derive(Debug, Clone)]
pub struct DialReport {
    pub destination: Destination,
    pub via: &'static str,
    pub target: DialTarget,
    pub result: Result<Dialled, DialFailure>,
    pub elapsed: Duration,
}

/// Dials every planned target at once, each within the timeout.
pub async fn dial_all<D: Dialer>(
    dialer: &D,
    timeout: Duration,
    planned: Vec<(Destination, DialTarget, &'static str)>,
) -> Vec<DialReport> {
    let attempts = planned
        .into_iter()
        .map(|(destination, target, via)| async move {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, dialer.dial(&target)).await {
                Ok(result) => result,
                Err(_) => Err(DialFailure {
                    stage: DialStage::Connect,
                    message: format!("no answer within {} s", timeout.as_secs_f64()),
                }),
            };
            DialReport {
                destination,
                via,
                target,
                result,
                elapsed: started.elapsed(),
            }
        });
    futures_util::future::join_all(attempts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(host: &str, port: u16, tls: bool) -> Destination {
        Destination {
            host: host.into(),
            port,
            tls,
        }
    }

    #[test]
    fn overrides_parse_with_a_default_port() {
        let overrides =
            parse_overrides("control.example.com=127.0.0.1:8443, open-vsx.org:443=127.0.0.1:9")
                .unwrap();
        assert_eq!(
            overrides["control.example.com:443"].to_string(),
            "127.0.0.1:8443"
        );
        assert_eq!(overrides["open-vsx.org:443"].to_string(), "127.0.0.1:9");
        assert!(parse_overrides("control.example.com=localhost:1").is_err());
        assert!(parse_overrides("nonsense").is_err());
    }

    #[test]
    fn loopback_only_skips_what_has_no_local_address() {
        let settings = DialSettings {
            overrides: parse_overrides("control.example.com=127.0.0.1:8443").unwrap(),
            aws_endpoint: Some((
                DialAddress::Socket("127.0.0.1:5000".parse().unwrap()),
                false,
            )),
            only_loopback: true,
            ..DialSettings::default()
        };
        let control = settings.plan(&destination("control.example.com", 443, true), false);
        assert!(matches!(control, Plan::Dial { ref target, via: "override" }
            if target.address == DialAddress::Socket("127.0.0.1:8443".parse().unwrap())
                && target.tls_server_name.as_deref() == Some("control.example.com")));
        // The SDK's endpoint is plain HTTP, so its stand-ins are dialled without TLS.
        let sts = settings.plan(&destination("sts.us-east-1.amazonaws.com", 443, true), true);
        assert!(
            matches!(sts, Plan::Dial { ref target, via: "AWS_ENDPOINT_URL" }
            if target.tls_server_name.is_none())
        );
        let vscode = settings.plan(&destination("open-vsx.org", 443, true), false);
        assert!(
            matches!(vscode, Plan::Skip { ref reason } if reason.starts_with("not dialled: no local override"))
        );
    }

    #[test]
    fn without_overrides_names_are_left_to_the_dialer() {
        let settings = DialSettings::default();
        let plan = settings.plan(&destination("open-vsx.org", 443, true), false);
        assert!(matches!(plan, Plan::Dial { ref target, via: "direct" }
            if target.address == DialAddress::Name { host: "open-vsx.org".into(), port: 443 }));
    }

    #[test]
    fn endpoint_urls_give_an_address_and_a_scheme() {
        let socket = |text: &str| DialAddress::Socket(text.parse().unwrap());
        assert_eq!(
            endpoint_address("http://127.0.0.1:5000"),
            Some((socket("127.0.0.1:5000"), false))
        );
        assert_eq!(
            endpoint_address("https://127.0.0.1/"),
            Some((socket("127.0.0.1:443"), true))
        );
        assert_eq!(
            endpoint_address("http://localhost:5000"),
            Some((socket("127.0.0.1:5000"), false))
        );
        assert_eq!(
            endpoint_address("https://vpce.example.internal:8443"),
            Some((
                DialAddress::Name {
                    host: "vpce.example.internal".into(),
                    port: 8443
                },
                true
            ))
        );
        assert_eq!(endpoint_address("ftp://127.0.0.1"), None);
    }
}
