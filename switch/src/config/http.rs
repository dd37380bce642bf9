//! `[http]` and `[http.tls]`: the JSON API's listener.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::check::{Check, ConfigError};
use super::raw::RawHttp;

/// The JSON/HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// `Some`: the listener speaks HTTPS only.
    pub tls: Option<HttpTlsConfig>,
    pub body_bytes_max: usize,
    pub header_read_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// A reply write that makes no progress for this long closes the
    /// connection: a client that sends and never reads.
    pub write_timeout_ms: u64,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub connections_max: usize,
    /// How long after its handler starts a card request's answer is still
    /// of use: past it, 503 with `Retry-After` unless its record is already
    /// being written.
    pub deadline_ms: u64,
}

/// HTTPS for the JSON API and the ops routes: `http.listen` speaks TLS.
/// Client certificates are not asked for; API keys authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTlsConfig {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// `[http]`; `listen` is `--http-listen` when given, over the file's.
pub(super) fn http(
    check: &Check,
    raw: &RawHttp,
    listen: Option<&str>,
) -> Result<HttpConfig, ConfigError> {
    Ok(HttpConfig {
        listen: check.address("http.listen", listen.unwrap_or(&raw.listen))?,
        tls: raw.tls.as_ref().map(|tls| HttpTlsConfig {
            certificate: tls.certificate.clone(),
            private_key: tls.private_key.clone(),
        }),
        body_bytes_max: check.positive("http.body_bytes_max", raw.body_bytes_max)?,
        header_read_timeout_ms: check
            .positive("http.header_read_timeout_ms", raw.header_read_timeout_ms)?,
        request_timeout_ms: check.positive("http.request_timeout_ms", raw.request_timeout_ms)?,
        write_timeout_ms: check.positive("http.write_timeout_ms", raw.write_timeout_ms)?,
        connections_max: check.positive("http.connections_max", raw.connections_max)?,
        deadline_ms: check.positive("http.deadline_ms", raw.deadline_ms)?,
    })
}
