//! The ISO 8583 listeners: accept a connection within the listener's own
//! limit, on the TLS listener finish the mutual-TLS handshake and name the
//! acquirer, then hand the stream to [`connection`](super::connection).
//!
//! Each listener has its own connection limit (`iso.connections_max`,
//! `iso.tls.connections_max`), so unauthenticated clients of the plain
//! listener cannot take the slots of acquirers on the TLS one. On TLS the
//! handshake comes first, inside the connection's own task and within its
//! timeout, holding a permit of the TLS listener's limit; only once it has
//! finished and named the acquirer does the reader start, so a refused
//! client never has a byte parsed as ISO 8583.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use protocol::Spec;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::IsoConfig;
use crate::engine::Engine;
use crate::ingress::iso::connection::serve_iso_stream;
use crate::ingress::tls::{self, IsoTls, RefusalReason, TlsListener};
use crate::ops::audit::{Audit, AuditEvent, events};
use crate::ops::metrics::Listener;

/// What every ISO 8583 listener of one switch shares.
#[derive(Debug, Clone)]
pub struct IsoIngress {
    pub engine: Arc<Engine>,
    pub spec: Arc<Spec>,
    pub config: IsoConfig,
    /// This listener's connection limit: `iso.connections_max` for the plain
    /// one, `iso.tls.connections_max` for the TLS one.
    pub connections: Arc<Semaphore>,
    /// Mutual-TLS handshakes, accepted and refused, are audited.
    pub audit: Audit,
}

/// Accepts connections until `shutdown` fires, then lets open connections
/// finish the requests they have in flight. With `tls`, each connection
/// starts with a mutual-TLS handshake.
pub async fn serve(
    listener: TcpListener,
    ingress: IsoIngress,
    tls: Option<IsoTls>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let IsoIngress {
        engine,
        spec,
        config,
        connections,
        audit,
    } = ingress;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            let (listener, limit) = match &config.tls {
                Some(tls_config) if tls.is_some() => (Listener::IsoTls, tls_config.connections_max),
                _ => (Listener::Iso, config.connections_max),
            };
            engine.metrics().count_connection_refused(listener);
            tracing::warn!(%peer, listener = listener.as_str(), limit, "connection refused at the limit");
            drop(stream);
            continue;
        };
        let engine = Arc::clone(&engine);
        let spec = Arc::clone(&spec);
        let config = config.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        let audit = audit.clone();
        tracker.spawn(async move {
            engine
                .metrics()
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            let outcome = match tls {
                None => accept_iso_connection(stream, &engine, &spec, &config, &shutdown).await,
                Some(tls) => {
                    accept_iso_tls_connection(
                        stream, peer, &tls, &audit, &engine, &spec, &config, &shutdown,
                    )
                    .await
                }
            };
            if let Err(reason) = outcome {
                tracing::info!(%peer, %reason, "ISO 8583 connection closed");
            }
            engine
                .metrics()
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

async fn accept_iso_connection(
    stream: TcpStream,
    engine: &Arc<Engine>,
    spec: &Arc<Spec>,
    config: &IsoConfig,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    let (reader, writer) = stream.into_split();
    serve_iso_stream(reader, writer, None, engine, spec, config, shutdown).await
}

/// A connection to the mutual-TLS listener: the handshake, within its
/// timeout, decides the acquirer before the ISO 8583 reader starts.
#[allow(clippy::too_many_arguments)]
async fn accept_iso_tls_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    tls: &IsoTls,
    audit: &Audit,
    engine: &Arc<Engine>,
    spec: &Arc<Spec>,
    config: &IsoConfig,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        handshake = tls::handshake(&tls.acceptor, stream, tls.handshake_timeout) => handshake,
    };
    let stream = match handshake {
        Ok(stream) => stream,
        Err((reason, detail)) => {
            refuse_handshake(engine, audit, peer, reason, &detail);
            return Ok(());
        }
    };
    // The verifier already mapped this certificate during the handshake;
    // mapping it again here gives the acquirer to the connection.
    let acquirer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| tls.acquirers.identify(leaf));
    let Some(acquirer) = acquirer else {
        refuse_handshake(
            engine,
            audit,
            peer,
            RefusalReason::Unmapped,
            "the certificate names no configured acquirer",
        );
        return Ok(());
    };
    engine.metrics().count_tls_handshake(TlsListener::Iso);
    let (version, suite) = {
        let connection = stream.get_ref().1;
        (
            connection
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            connection
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
        )
    };
    audit.record(AuditEvent {
        actor: format!("acquirer:{}", acquirer.name),
        event: events::TLS_HANDSHAKE.to_owned(),
        outcome: "ok".to_owned(),
        origin: peer.to_string(),
        resource: format!("iso {version} {suite}"),
    });
    tracing::info!(%peer, acquirer = %acquirer.name, %version, %suite, "ISO 8583 TLS connection from an acquirer");
    let (reader, writer) = tokio::io::split(stream);
    serve_iso_stream(
        reader,
        writer,
        Some(acquirer),
        engine,
        spec,
        config,
        shutdown,
    )
    .await
}

/// Counts and logs a refused handshake. The detail is rustls's error or a
/// timeout: a handshake carries no card data, so it is safe to log.
fn refuse_handshake(
    engine: &Engine,
    audit: &Audit,
    peer: std::net::SocketAddr,
    reason: RefusalReason,
    detail: &str,
) {
    engine.metrics().count_tls_refused(TlsListener::Iso, reason);
    audit.record(AuditEvent {
        actor: "unknown".to_owned(),
        event: events::TLS_HANDSHAKE.to_owned(),
        outcome: reason.as_str().to_owned(),
        origin: peer.to_string(),
        resource: "iso".to_owned(),
    });
    tracing::warn!(%peer, reason = reason.as_str(), error = %detail, "ISO 8583 TLS handshake refused");
}
