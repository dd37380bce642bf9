//! ISO 8583 over TCP: accept, frame, decode, hand to the engine, write back.
//!
//! Each connection has one reader and one writer task. The reader cuts frames
//! off the stream and starts one task per request, so several requests are in
//! flight per connection and each response is written as soon as it is ready;
//! the acquirer matches responses by DE11 and DE41, so order may differ. A
//! per-connection semaphore bounds the requests in flight: when it is used
//! up, the reader stops reading and TCP pushes back on the acquirer.
//!
//! A frame that cannot be framed (header not digits, over the maximum) closes
//! that connection only; a frame that frames but has a bad field is answered
//! DE39 30 on the same connection.
//!
//! The same code serves both listeners: plain TCP (`iso.listen`) and mutual
//! TLS (`[iso.tls]`). On TLS the handshake comes first, inside the
//! connection's own task and within its timeout, holding a permit of the
//! one connection limit both listeners share; only once it has finished and
//! named the acquirer does the reader start, so a refused client never has
//! a byte parsed as ISO 8583. The reader and writer are generic over the
//! stream's halves: plain TCP keeps its lock-free `into_split`, TLS uses
//! `tokio::io::split`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use protocol::{Message, ResponseCode, Spec, iso};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::IsoConfig;
use crate::engine::Engine;
use crate::engine::acquirer::Acquirer;
use crate::ingress::tls::{self, IsoTls, RefusalReason, TlsListener};
use crate::ops::audit::{Audit, AuditEvent, events};
use crate::ops::metrics::Stage;
use protocol::domain::Channel;

/// What every ISO 8583 listener of one switch shares.
#[derive(Debug, Clone)]
pub struct IsoIngress {
    pub engine: Arc<Engine>,
    pub spec: Arc<Spec>,
    pub config: IsoConfig,
    /// `iso.connections_max`, across the plain and the TLS listener.
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
            engine
                .metrics()
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, limit = config.connections_max, "connection refused at the limit");
            drop(stream);
            continue;
        };
        let engine = Arc::clone(&engine);
        let spec = Arc::clone(&spec);
        let config = config.clone();
        let shutdown = shutdown.clone();
        let connection_tracker = tracker.clone();
        let tls = tls.clone();
        let audit = audit.clone();
        tracker.spawn(async move {
            engine
                .metrics()
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            let outcome = match tls {
                None => {
                    accept_iso_connection(
                        stream,
                        &engine,
                        &spec,
                        &config,
                        &shutdown,
                        &connection_tracker,
                    )
                    .await
                }
                Some(tls) => {
                    accept_iso_tls_connection(
                        stream,
                        peer,
                        &tls,
                        &audit,
                        &engine,
                        &spec,
                        &config,
                        &shutdown,
                        &connection_tracker,
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
    tracker: &TaskTracker,
) -> Result<(), String> {
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    let (reader, writer) = stream.into_split();
    serve_iso_stream(
        reader, writer, None, engine, spec, config, shutdown, tracker,
    )
    .await
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
    tracker: &TaskTracker,
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
        tracker,
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

/// Reads frames off one connection and answers them, whatever the stream:
/// `acquirer` is `Some` on a mutual-TLS connection.
#[allow(clippy::too_many_arguments)]
async fn serve_iso_stream<R, W>(
    mut reader: R,
    mut writer: W,
    acquirer: Option<Arc<Acquirer>>,
    engine: &Arc<Engine>,
    spec: &Arc<Spec>,
    config: &IsoConfig,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let framing = spec.framing();
    let (responses, mut outbox) = mpsc::channel::<Vec<u8>>(config.in_flight_max);
    let in_flight = Arc::new(Semaphore::new(config.in_flight_max));

    // The writer coalesces whatever responses are ready into one write.
    let writer_task = tokio::spawn(async move {
        let mut out = Vec::with_capacity(4096);
        while let Some(frame) = outbox.recv().await {
            out.clear();
            out.extend_from_slice(&frame);
            while let Ok(more) = outbox.try_recv() {
                out.extend_from_slice(&more);
            }
            if writer.write_all(&out).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });

    let idle = Duration::from_millis(config.idle_timeout_ms);
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    let outcome = loop {
        // Cut every whole frame already buffered before reading more.
        match framing.check(&buffer) {
            Ok(Some(bounds)) => {
                let received_at = Instant::now();
                let frame = buffer.split_to(bounds.total()).freeze();
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    break Ok(());
                };
                let engine = Arc::clone(engine);
                let spec = Arc::clone(spec);
                let responses = responses.clone();
                let acquirer = acquirer.clone();
                tracker.spawn(async move {
                    let payload = frame.slice(bounds.header..);
                    if let Some(reply) =
                        answer_frame(&engine, &spec, &payload, received_at, acquirer.as_deref())
                            .await
                    {
                        let _ = responses.send(reply).await;
                    }
                    drop(permit);
                });
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                engine
                    .metrics()
                    .frames_unframeable
                    .fetch_add(1, Ordering::Relaxed);
                break Err(format!("unframeable stream: {error}"));
            }
        }
        let read = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            read = tokio::time::timeout(idle, reader.read_buf(&mut buffer)) => read,
        };
        match read {
            Err(_) => break Err(format!("idle for {} ms", config.idle_timeout_ms)),
            Ok(Err(error)) => break Err(error.to_string()),
            Ok(Ok(0)) => {
                if buffer.has_remaining() {
                    break Err(format!(
                        "closed by the peer with {} bytes of an unfinished frame",
                        buffer.len()
                    ));
                }
                break Ok(());
            }
            Ok(Ok(_)) => {}
        }
    };
    // Let the requests in flight finish and their answers leave before closing.
    drop(responses);
    let _ = in_flight.acquire_many(config.in_flight_max as u32).await;
    let _ = writer_task.await;
    outcome
}

/// Decodes one frame's payload and returns the framed reply, if the message
/// deserves one.
async fn answer_frame(
    engine: &Engine,
    spec: &Spec,
    payload: &[u8],
    received_at: Instant,
    acquirer: Option<&Acquirer>,
) -> Option<Vec<u8>> {
    // The decode stage is the decode alone; time spent waiting for an
    // in-flight permit or a worker thread shows in the total, which counts
    // from the moment the frame was cut off the stream.
    let decode_started = Instant::now();
    let mut message = Message::with_capacity(payload.len() * 2);
    let decoded = message.decode_into(spec, payload);
    engine.metrics().record(
        Channel::Iso,
        Stage::Decode,
        decode_started.elapsed().as_micros() as u64,
    );
    let response = match decoded {
        Ok(()) => engine.handle_iso(&message, acquirer).await,
        Err(error) => {
            engine
                .metrics()
                .messages_malformed
                .fetch_add(1, Ordering::Relaxed);
            if !error.mti_was_read() {
                // Without an MTI there is no response type to answer with.
                tracing::info!(%error, "malformed message without an MTI dropped");
                return None;
            }
            tracing::info!(mti = %message.mti(), %error, "malformed message answered 30");
            iso::response(&message, ResponseCode::FormatError, None)
        }
    }?;
    let code = response
        .get(39)
        .and_then(ResponseCode::parse)
        .unwrap_or(ResponseCode::SystemMalfunction);
    engine.metrics().count_response(Channel::Iso, code);
    let mut out = Vec::with_capacity(payload.len() + 16);
    match response.encode_frame(spec, &mut out) {
        Ok(()) => {
            engine.metrics().record(
                Channel::Iso,
                Stage::Total,
                received_at.elapsed().as_micros() as u64,
            );
            Some(out)
        }
        Err(error) => {
            // The response echoes request fields the dialect accepted, so this
            // is a bug; say so rather than leave the acquirer waiting silently.
            tracing::error!(%error, "response could not be encoded");
            None
        }
    }
}
