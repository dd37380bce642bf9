//! One ISO 8583 connection: one reader and one writer task. The reader cuts
//! frames off the stream and starts one task per request, so several
//! requests are in flight per connection and each response is written as
//! soon as it is ready; the acquirer matches responses by DE11 and DE41, so
//! order may differ. A per-connection semaphore bounds the requests in
//! flight: when it is used up, the reader stops reading and TCP pushes back
//! on the acquirer. A peer that does not read its answers is closed when a
//! write has waited `iso.write_timeout_ms`.
//!
//! A frame that cannot be framed (header not digits, over the maximum) closes
//! that connection only; a frame that frames but has a bad field is answered
//! DE39 30 on the same connection. The reader and writer are generic over
//! the stream's halves: plain TCP keeps its lock-free `into_split`, TLS uses
//! `tokio::io::split`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use protocol::domain::Channel;
use protocol::{Message, ResponseCode, Spec, iso};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Stopwatch;
use crate::config::IsoConfig;
use crate::engine::Engine;
use crate::engine::acquirer::Acquirer;
use crate::ingress::iso::mapping;
use crate::ingress::iso::order::{Arrivals, Ticket};
use crate::ops::metrics::{Closed, Listener, Stage};

/// Reads frames off one connection and answers them, whatever the stream:
/// `acquirer` is `Some` on a mutual-TLS connection.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_iso_stream<R, W>(
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
    let arrivals = Arc::new(Arrivals::default());

    // The writer coalesces whatever responses are ready into one write. A
    // write that does not finish within the write timeout means the peer
    // is not reading its answers: the connection is closed rather than
    // holding its slot, its tasks and their answers for as long as the peer
    // likes. `closing` tells the reader to stop.
    let closing = shutdown.child_token();
    let write_timeout = Duration::from_millis(config.write_timeout_ms);
    let acquirer_named = acquirer.is_some();
    let writer_task = {
        let closing = closing.clone();
        let engine = Arc::clone(engine);
        tokio::spawn(async move {
            let mut out = Vec::with_capacity(4096);
            while let Some(frame) = outbox.recv().await {
                out.clear();
                out.extend_from_slice(&frame);
                while let Ok(more) = outbox.try_recv() {
                    out.extend_from_slice(&more);
                }
                match tokio::time::timeout(write_timeout, writer.write_all(&out)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        // Only a mutual-TLS connection names an acquirer.
                        let listener = if acquirer_named {
                            Listener::IsoTls
                        } else {
                            Listener::Iso
                        };
                        engine
                            .metrics()
                            .count_closed(listener, Closed::WriteTimeout);
                        closing.cancel();
                        // No shutdown: a close_notify or FIN would wait
                        // behind the answers the peer is not reading.
                        return true;
                    }
                }
            }
            let _ = tokio::time::timeout(write_timeout, writer.shutdown()).await;
            false
        })
    };

    let idle = Duration::from_millis(config.idle_timeout_ms);
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    let outcome = loop {
        // Cut every whole frame already buffered before reading more.
        match framing.check(&buffer) {
            Ok(Some(bounds)) => {
                let received = Stopwatch::start();
                let frame = buffer.split_to(bounds.total()).freeze();
                let permit = tokio::select! {
                    () = closing.cancelled() => break Ok(()),
                    permit = Arc::clone(&in_flight).acquire_owned() => permit,
                };
                let Ok(permit) = permit else {
                    break Ok(());
                };
                // Taken here, in frame order, not in the task.
                let ticket = arrivals.arrive();
                let engine = Arc::clone(engine);
                let spec = Arc::clone(spec);
                let responses = responses.clone();
                let acquirer = acquirer.clone();
                tracker.spawn(async move {
                    let payload = frame.slice(bounds.header..);
                    let reply = answer_frame(
                        &engine,
                        &spec,
                        &payload,
                        received,
                        acquirer.as_deref(),
                        &ticket,
                    )
                    .await;
                    // Answered: a reversal behind it may go on.
                    drop(ticket);
                    if let Some(reply) = reply {
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
            () = closing.cancelled() => break Ok(()),
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
    // Let the requests in flight finish (in the engine, and recorded) and
    // their answers leave before closing; after a write timeout their
    // answers are dropped, as the peer would not read them.
    drop(responses);
    let _ = in_flight
        .acquire_many(u32::try_from(config.in_flight_max).unwrap_or(u32::MAX))
        .await;
    if writer_task.await.unwrap_or(false) {
        return Err(format!(
            "answers not written within {} ms: the peer is not reading",
            config.write_timeout_ms
        ));
    }
    outcome
}

/// Decodes one frame's payload and returns the framed reply, if the message
/// deserves one.
async fn answer_frame(
    engine: &Engine,
    spec: &Spec,
    payload: &[u8],
    received: Stopwatch,
    acquirer: Option<&Acquirer>,
    ticket: &Ticket,
) -> Option<Vec<u8>> {
    // The decode stage is the decode alone; time spent waiting for an
    // in-flight permit or a worker thread shows in the total, which counts
    // from the moment the frame was cut off the stream.
    let decoding = Stopwatch::start();
    let mut message = Message::with_capacity(payload.len() * 2);
    let decoded = message.decode_into(spec, payload);
    let decode_us = decoding.elapsed_us();
    engine
        .metrics()
        .record(Channel::Iso, Stage::Decode, decode_us);
    let response = match decoded {
        Ok(()) => mapping::answer(engine, &message, acquirer, decode_us, ticket).await,
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
            engine
                .metrics()
                .record(Channel::Iso, Stage::Total, received.elapsed_us());
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
