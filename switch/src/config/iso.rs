//! `[iso]`, `[iso.tls]` and `[acquirers.NAME]`: the ISO 8583 listeners, and
//! the acquirers that the mutual-TLS listener knows by their client
//! certificates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use protocol::domain::pad;
use protocol::ids::{MerchantId, TerminalId, Text};

use super::check::{Check, ConfigError};
use super::raw::{RawAcquirer, RawIso};

/// The ISO 8583 listeners: plain TCP, TLS with client certificates, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoConfig {
    /// The plain TCP listener; `None` when only `[iso.tls]` takes acquirers.
    pub listen: Option<SocketAddr>,
    /// The mutual-TLS listener.
    pub tls: Option<IsoTlsConfig>,
    /// A built-in dialect name or a spec file.
    pub spec: String,
    /// Connections open at once on the plain TCP listener; the TLS
    /// listener has its own, `iso.tls.connections_max`.
    pub connections_max: usize,
    /// Requests one connection may have in flight before the switch stops
    /// reading from it.
    pub in_flight_max: usize,
    pub idle_timeout_ms: u64,
    /// The longest a write of answers may take: a connection whose peer
    /// does not read them is closed, its requests in flight still finished.
    pub write_timeout_ms: u64,
    /// Overrides the dialect's largest frame, in bytes after the length header.
    pub frame_length_max: Option<usize>,
    /// How long after its frame arrives a request's answer is still of use
    /// to the acquirer: past it, the request is shed with 91 unless its
    /// record is already being written.
    pub deadline_ms: u64,
}

/// ISO 8583 over TLS 1.2/1.3 on its own listener; every client presents a
/// certificate issued under `client_ca` that names a configured acquirer.
/// Paths are as written in the file (relative ones from the working
/// directory, like `data_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoTlsConfig {
    pub listen: SocketAddr,
    /// The server's certificate chain, PEM, leaf first.
    pub certificate: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// The CA certificates acquirers' client certificates are issued under, PEM.
    pub client_ca: PathBuf,
    /// The longest a handshake may take before the connection is closed.
    pub handshake_timeout_ms: u64,
    /// Connections open at once on this listener, apart from the plain
    /// one's, so unauthenticated clients cannot take acquirers' slots.
    pub connections_max: usize,
    /// As `iso.deadline_ms`, for this listener's acquirers that set none
    /// of their own.
    pub deadline_ms: u64,
}

/// An acquirer identified by its TLS client certificate on `[iso.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquirerConfig {
    /// The table's name, `[acquirers.NAME]`: what the journal records.
    pub name: String,
    /// Matched, ignoring ASCII case, against the certificate's subject
    /// common name and its DNS subject alternative names.
    pub certificate_subject: String,
    /// The merchants (DE42) it may send for; `None`: any.
    pub merchants: Option<Vec<MerchantId>>,
    /// The terminals (DE41) it may send for; `None`: any.
    pub terminals: Option<Vec<TerminalId>>,
    /// Its own deadline, where its timeouts differ from the listener's.
    pub deadline_ms: Option<u64>,
}

/// `[iso]`; `listen` is `--iso-listen` when given, over the file's.
pub(super) fn iso(
    check: &Check,
    raw: &RawIso,
    listen: Option<&str>,
) -> Result<IsoConfig, ConfigError> {
    let tls = raw
        .tls
        .as_ref()
        .map(|tls| -> Result<IsoTlsConfig, ConfigError> {
            Ok(IsoTlsConfig {
                listen: check.address("iso.tls.listen", &tls.listen)?,
                certificate: tls.certificate.clone(),
                private_key: tls.private_key.clone(),
                client_ca: tls.client_ca.clone(),
                handshake_timeout_ms: check
                    .positive("iso.tls.handshake_timeout_ms", tls.handshake_timeout_ms)?,
                connections_max: check.positive("iso.tls.connections_max", tls.connections_max)?,
                deadline_ms: check.positive(
                    "iso.tls.deadline_ms",
                    tls.deadline_ms.unwrap_or(raw.deadline_ms),
                )?,
            })
        })
        .transpose()?;
    let listen = match (listen, raw.listen.as_deref()) {
        (Some(text), _) | (None, Some(text)) => Some(check.address("iso.listen", text)?),
        (None, None) if tls.is_some() => None,
        (None, None) => {
            return Err(check.error(
                "iso.listen",
                "is needed unless [iso.tls] takes acquirers over TLS",
            ));
        }
    };
    Ok(IsoConfig {
        listen,
        tls,
        spec: raw.spec.clone(),
        connections_max: check.positive("iso.connections_max", raw.connections_max)?,
        in_flight_max: check.positive("iso.in_flight_max", raw.in_flight_max)?,
        idle_timeout_ms: check.positive("iso.idle_timeout_ms", raw.idle_timeout_ms)?,
        write_timeout_ms: check.positive("iso.write_timeout_ms", raw.write_timeout_ms)?,
        frame_length_max: raw
            .frame_length_max
            .map(|value| check.positive("iso.frame_length_max", value))
            .transpose()?,
        deadline_ms: check.positive("iso.deadline_ms", raw.deadline_ms)?,
    })
}

/// `[acquirers.NAME]`: only with `[iso.tls]`, and `[iso.tls]` needs at least
/// one, or every client certificate would be refused. One certificate
/// subject names one acquirer.
pub(super) fn acquirers(
    check: &Check,
    raw: &BTreeMap<String, RawAcquirer>,
    iso: &IsoConfig,
) -> Result<Vec<AcquirerConfig>, ConfigError> {
    let mut acquirers: Vec<AcquirerConfig> = Vec::new();
    for (name, acquirer) in raw {
        let key = format!("acquirers.{name}");
        if iso.tls.is_none() {
            return Err(check.error(
                &key,
                "acquirers are identified by client certificates on [iso.tls], which is not set",
            ));
        }
        if name.is_empty()
            || name.len() > storage::record::ACQUIRER_LENGTH_MAX
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(check.error(
                &key,
                "an acquirer name is 1 to 64 printable characters without spaces",
            ));
        }
        let subject = acquirer.certificate_subject.trim();
        if subject.is_empty() {
            return Err(check.error(
                &format!("{key}.certificate_subject"),
                "must name the certificate's subject common name or a DNS name",
            ));
        }
        if let Some(other) = acquirers
            .iter()
            .find(|other| other.certificate_subject.eq_ignore_ascii_case(subject))
        {
            return Err(check.error(
                &format!("{key}.certificate_subject"),
                format!("`{subject}` is already acquirer {}'s", other.name),
            ));
        }
        acquirers.push(AcquirerConfig {
            name: name.clone(),
            certificate_subject: subject.to_owned(),
            merchants: padded_ids(
                check,
                &format!("{key}.merchants"),
                acquirer.merchants.as_deref(),
                "merchant",
            )?,
            terminals: padded_ids(
                check,
                &format!("{key}.terminals"),
                acquirer.terminals.as_deref(),
                "terminal",
            )?,
            deadline_ms: acquirer
                .deadline_ms
                .map(|ms| check.positive(&format!("{key}.deadline_ms"), ms))
                .transpose()?,
        });
    }
    if iso.tls.is_some() && acquirers.is_empty() {
        return Err(check.error(
            "iso.tls",
            "no [acquirers.NAME] is configured, so every client certificate would be refused",
        ));
    }
    Ok(acquirers)
}

/// Ids of an acquirer's allowed merchants or terminals, space-padded to `N`.
fn padded_ids<const N: usize>(
    check: &Check,
    key: &str,
    ids: Option<&[String]>,
    what: &str,
) -> Result<Option<Vec<Text<N>>>, ConfigError> {
    ids.map(|ids| {
        ids.iter()
            .map(|id| {
                pad::<N>(id).filter(|_| !id.is_empty()).ok_or_else(|| {
                    check.error(
                        key,
                        format!("`{id}` is not a {what} id (1 to {N} printable characters)"),
                    )
                })
            })
            .collect()
    })
    .transpose()
}
