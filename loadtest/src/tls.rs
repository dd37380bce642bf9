//! TLS for both ends of a run: the client side for `--tls` (ISO 8583 over TLS
//! and HTTPS, with a client certificate for mutual TLS), and the server side
//! for `loadtest echo --tls-cert`, so the echo baseline pays for the same
//! encryption as the switch it is compared with.
//!
//! A connection's task drives its socket by readiness (`try_read`,
//! `try_write`), so TLS is spoken sans-I/O: the handshake is done with
//! tokio-rustls when the connection opens, then the rustls session is taken
//! out of it and fed from the same readiness loop as a plain socket
//! ([`Transport`]). Versions: TLS 1.2 and 1.3 only, ring provider, as the
//! switch.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

use crate::error::Error;

/// What `--tls` and its options ask for.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA certificates (PEM) the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// The name checked against the server's certificate [default: the
    /// target's host].
    pub server_name: Option<String>,
}

/// A client ready to open TLS connections to one server name.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certificates: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .map_err(|e| Error::flag(flag, format!("{}: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(Error::flag(
            flag,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certificates)
}

fn private_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        Error::flag(
            flag,
            format!("{}: no usable PEM private key: {e}", path.display()),
        )
    })
}

impl TlsClient {
    /// Builds the client for `host` (the target's host part).
    pub fn new(options: &TlsOptions, host: &str) -> Result<TlsClient, Error> {
        let ca = options.ca.as_deref().ok_or_else(|| {
            Error::flag(
                "tls-ca",
                "--tls needs the CA that signed the server's certificate (PEM)",
            )
        })?;
        let mut roots = RootCertStore::empty();
        for certificate in certificates("tls-ca", ca)? {
            roots
                .add(certificate)
                .map_err(|e| Error::flag("tls-ca", format!("{}: {e}", ca.display())))?;
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::flag("tls", e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    certificates("tls-cert", cert)?,
                    private_key("tls-key", key)?,
                )
                .map_err(|e| Error::flag("tls-key", e.to_string()))?,
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(Error::flag("tls-key", "--tls-cert needs --tls-key")),
            (None, Some(_)) => return Err(Error::flag("tls-cert", "--tls-key needs --tls-cert")),
        };
        let name = options.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| Error::flag("tls-server-name", format!("`{name}` is not a host name")))?;
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// A server configuration for `loadtest echo --tls-cert --tls-key`, asking
/// for a client certificate signed by `client_ca` when given.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, Error> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::flag("tls-cert", e.to_string()))?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates("tls-client-ca", path)? {
                roots
                    .add(certificate)
                    .map_err(|e| Error::flag("tls-client-ca", e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| Error::flag("tls-client-ca", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(
            certificates("tls-cert", cert)?,
            private_key("tls-key", key)?,
        )
        .map_err(|e| Error::flag("tls-key", e.to_string()))?;
    Ok(Arc::new(config))
}

/// How long a TLS handshake may take before the connection counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection's byte stream: plain TCP, or TLS over it driven sans-I/O.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    Tls {
        stream: TcpStream,
        session: Box<ClientConnection>,
        /// Decrypted bytes rustls holds that the caller has not read yet.
        plaintext_buffered: bool,
    },
}

/// `Read`/`Write` over a non-blocking tokio socket, for rustls.
struct Nonblocking<'a>(&'a TcpStream);

impl Read for Nonblocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Nonblocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport {
    /// Connects to `address`, and shakes hands when `tls` is given.
    pub async fn connect(address: SocketAddr, tls: Option<&TlsClient>) -> io::Result<Transport> {
        let stream = TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        let Some(tls) = tls else {
            return Ok(Transport::Plain(stream));
        };
        let handshake = tls.connector.connect(tls.server_name.clone(), stream);
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let (stream, session) = stream.into_inner();
        Ok(Transport::Tls {
            stream,
            session: Box::new(session),
            plaintext_buffered: false,
        })
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) | Transport::Tls { stream, .. } => stream,
        }
    }

    /// Waits until the socket has something to read.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket().readable().await
    }

    /// Waits until the socket takes more bytes.
    pub async fn writable(&self) -> io::Result<()> {
        self.socket().writable().await
    }

    /// Whether bytes are waiting that a read would return without the
    /// socket becoming readable (decrypted data rustls holds).
    pub fn has_buffered(&self) -> bool {
        matches!(
            self,
            Transport::Tls {
                plaintext_buffered: true,
                ..
            }
        )
    }

    /// Whether encrypted bytes are waiting for the socket.
    pub fn wants_flush(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls { session, .. } => session.wants_write(),
        }
    }

    /// Reads what is there: `Ok(0)` at the end of the stream, `WouldBlock`
    /// when nothing is.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => {
                // A read that leaves room in `buf` emptied the socket: say
                // so to tokio (a `WouldBlock` from inside `try_io` clears
                // the readiness it saw, unless a newer event came), so the
                // next wait parks instead of paying a read that finds
                // nothing, one system call per wake-up.
                let mut read = None;
                let outcome = stream.try_io(tokio::io::Interest::READABLE, || {
                    let n = stream.try_read(buf)?;
                    read = Some(n);
                    if n > 0 && n < buf.len() {
                        Err(io::ErrorKind::WouldBlock.into())
                    } else {
                        Ok(())
                    }
                });
                match (read, outcome) {
                    (Some(n), _) => Ok(n),
                    (None, Err(e)) => Err(e),
                    (None, Ok(())) => Ok(0),
                }
            }
            Transport::Tls {
                stream,
                session,
                plaintext_buffered,
            } => loop {
                match session.reader().read(buf) {
                    Ok(n) => {
                        // A full buffer may have left more behind.
                        *plaintext_buffered = n == buf.len();
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        *plaintext_buffered = false;
                    }
                    Err(e) => return Err(e),
                }
                if session.read_tls(&mut Nonblocking(stream))? == 0 {
                    return Ok(0);
                }
                session.process_new_packets().map_err(io::Error::other)?;
            },
        }
    }

    /// Writes what the socket takes now; returns how many of `data`'s bytes
    /// were taken (a TLS session takes plaintext and sends records as the
    /// socket allows; [`Transport::flush`] sends the rest).
    pub fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.try_write(data),
            Transport::Tls { session, .. } => {
                let taken = session.writer().write(data)?;
                self.flush()?;
                if taken == 0 && !data.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(taken)
            }
        }
    }

    /// Sends encrypted records rustls holds, as far as the socket takes them.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Transport::Tls {
            stream, session, ..
        } = self
        {
            while session.wants_write() {
                match session.write_tls(&mut Nonblocking(stream)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
