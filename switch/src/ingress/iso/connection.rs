//! One ISO 8583 connection, served by one task.
//!
//! The task reads whatever bytes the socket has, cuts every whole frame off
//! them, decodes each and starts its answer; the answers of the connection
//! are futures polled by this same task, so several requests are in flight
//! per connection and each is answered as soon as its decision is durable.
//! Whenever it wakes, the task collects every answer that is ready and
//! writes them together, in one `write` where the socket takes them: a
//! group commit that answers forty requests of one connection costs that
//! connection one wake-up and one write, not forty tasks, forty channel
//! sends and forty writes. The acquirer matches answers by DE11 and DE41,
//! so their order may differ from the requests'.
//!
//! `iso.in_flight_max` bounds the requests a connection has open: at the
//! bound the task stops reading, and TCP pushes back on the acquirer. But
//! while the admission limit binds (the switch is overloaded) it reads on
//! and refuses the card requests past the bound with 91 at once: requests
//! left unread in the kernel's buffers would wait there unseen by their
//! deadline, and reach the switch after the acquirer gave up. A peer
//! that takes none of its answers for `iso.write_timeout_ms` is closed, and
//! one that sends nothing for `iso.idle_timeout_ms` too.
//!
//! A reversal waits for every request that arrived before it on its
//! connection to be answered before it starts, so one pipelined right
//! behind its original reverses it rather than finding nothing: the
//! acquirer's order is the switch's. The connection's own task knows what
//! it has open, so that order needs no lock
//! ([`Arrivals`](super::order::Arrivals)).
//!
//! A frame that cannot be framed (header not digits, over the maximum) closes
//! that connection only; a frame that frames but has a bad field is answered
//! DE39 30 on the same connection. Whatever ends a connection, the requests
//! it has open are still decided, journaled and answered (or, after a write
//! timeout, their answers dropped): a request is never abandoned half-way
//! through the engine. The reader and writer are generic over the stream's
//! halves: plain TCP keeps its lock-free `into_split`, TLS uses
//! `tokio::io::split`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use protocol::domain::Channel;
use protocol::{Message, ResponseCode, Spec, iso};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::admission::{Class, Permit, Refused};
use crate::clock::{Deadline, Quiet, Stopwatch};
use crate::config::IsoConfig;
use crate::engine::Engine;
use crate::engine::acquirer::Acquirer;
use crate::ingress::iso::mapping;
use crate::ingress::iso::order::Arrivals;
use crate::ops::metrics::{Closed, Listener, Stage};

/// Bytes of answers gathered before the task stops collecting and writes.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// A frame cut off the stream and decoded, waiting to be answered.
#[derive(Debug)]
struct Decoded<'a> {
    number: u64,
    /// Boxed: a message is a kilobyte of field slots, and a request is
    /// moved several times on its way into the answer futures (held back
    /// behind a reversal, started, pushed into the connection's set); the
    /// box moves as a pointer.
    message: Box<Message>,
    decoded: Result<(), protocol::DecodeError>,
    decode_us: u64,
    /// From the moment the frame was cut off the stream.
    received: Stopwatch,
    /// Its place in the admission limit, held until it is answered: card
    /// requests and reversals only.
    permit: Option<Permit<'a>>,
}

impl Decoded<'_> {
    /// A reversal waits for the requests that arrived before it.
    fn is_reversal(&self) -> bool {
        self.decoded.is_ok() && self.message.mti().class() == 4
    }
}

/// What ends the connection's loop, and how.
#[derive(Debug, Default)]
struct Ending {
    /// Reading has stopped: the open requests are finished, then the task
    /// ends.
    stop_reading: bool,
    /// The peer takes no more answers: later ones are dropped.
    write_failed: bool,
    /// Why the connection closed, if not cleanly.
    error: Option<String>,
}

impl Ending {
    fn stop(&mut self, error: String) {
        self.stop_reading = true;
        self.error.get_or_insert(error);
    }
}

/// Reads frames off one connection and answers them, whatever the stream:
/// `acquirer` is `Some` on a mutual-TLS connection.
pub(super) async fn serve_iso_stream<R, W>(
    mut reader: R,
    mut writer: W,
    acquirer: Option<Arc<Acquirer>>,
    engine: &Arc<Engine>,
    spec: &Arc<Spec>,
    config: &IsoConfig,
    shutdown: &CancellationToken,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let engine: &Engine = engine;
    let spec: &Spec = spec;
    let acquirer = acquirer.as_deref();
    let framing = spec.framing();
    let idle = Duration::from_millis(config.idle_timeout_ms);
    let write_timeout = Duration::from_millis(config.write_timeout_ms);
    // An acquirer's own deadline, else its listener's.
    let deadline = match acquirer {
        Some(acquirer) => acquirer.deadline.unwrap_or(Duration::from_millis(
            config
                .tls
                .as_ref()
                .map_or(config.deadline_ms, |tls| tls.deadline_ms),
        )),
        None => Duration::from_millis(config.deadline_ms),
    };
    let limits = Limits { deadline };

    let mut buffer = BytesMut::with_capacity(8 * 1024);
    let mut arrivals = Arrivals::default();
    // Each answer is boxed before it joins the set: an answer future is
    // some 6 KB (the engine's states for every step of a request), and the
    // set would otherwise copy it whole into a task of its own; boxed, it is
    // copied once and the set moves a pointer (1% of a request's
    // instructions, scripts/instructions-per-request).
    let mut answering = FuturesUnordered::new();
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    // A TLS writer may keep part of a write in its buffer: flushed once
    // everything gathered is written.
    let mut unflushed = false;
    let mut ending = Ending::default();
    // Reads push the idle timeout back, and writes the write timeout, by
    // noting when they happened; the sleeps are re-armed only when they end.
    let mut idle_quiet = Quiet::new(idle);
    let mut write_quiet = Quiet::new(write_timeout);
    let idle_sleep = idle_quiet.deadline().sleep();
    let write_sleep = write_quiet.deadline().sleep();
    tokio::pin!(idle_sleep, write_sleep);

    loop {
        // Cut, decode and start every whole frame buffered, as far as the
        // in-flight bound allows, or, overloaded, refusing past it.
        while !ending.stop_reading && room(engine, config, &arrivals, &out) {
            match framing.check(&buffer) {
                Ok(Some(bounds)) => {
                    let received = Stopwatch::start();
                    let frame = buffer.split_to(bounds.total());
                    let at_bound = arrivals.open() >= config.in_flight_max;
                    let mut request = decode(
                        engine,
                        spec,
                        &frame[bounds.header..],
                        arrivals.arrive(),
                        received,
                    );
                    match admit(engine, acquirer, &request, at_bound) {
                        Ok(permit) => request.permit = permit,
                        Err(refused) => {
                            // Refused at the door: answered 91 now, in this
                            // turn's write, without a future of its own.
                            if let Some(response) = shed(engine, &request.message, refused)
                                && !ending.write_failed
                            {
                                if out.is_empty() {
                                    write_quiet.touch();
                                }
                                frame_into(engine, spec, &response, received, &limits, &mut out);
                            }
                            if let Some(held) = arrivals.answered(request.number) {
                                answering.push(Box::pin(answer(engine, acquirer, held, &limits)));
                            }
                            continue;
                        }
                    }
                    let start = if request.is_reversal() {
                        arrivals.start_in_order(request.number, request)
                    } else {
                        Some(request)
                    };
                    if let Some(request) = start {
                        answering.push(Box::pin(answer(engine, acquirer, request, &limits)));
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    engine
                        .metrics()
                        .frames_unframeable
                        .fetch_add(1, Ordering::Relaxed);
                    ending.stop(format!("unframeable stream: {error}"));
                }
            }
        }
        let writing = !out.is_empty() && !ending.write_failed;
        if ending.stop_reading && answering.is_empty() && !writing {
            break;
        }
        let reading = !ending.stop_reading && room(engine, config, &arrivals, &out);
        let flushing = unflushed && out.is_empty() && !ending.write_failed;
        tokio::select! {
            biased;
            Some(answered) = answering.next() => {
                let mut ready = Some(answered);
                // Every answer ready now joins this write.
                while let Some((number, response, received)) = ready.take() {
                    if let Some(response) = response {
                        count_response(engine, &response);
                        if !ending.write_failed {
                            if out.is_empty() {
                                write_quiet.touch();
                            }
                            frame_into(engine, spec, &response, received, &limits, &mut out);
                        }
                    }
                    if let Some(request) = arrivals.answered(number) {
                        answering.push(Box::pin(answer(engine, acquirer, request, &limits)));
                    }
                    if out.len() < OUT_HIGH_WATER {
                        ready = answering.next().now_or_never().flatten();
                    }
                }
            }
            pushed = push_out(&mut writer, &out), if writing || flushing => match pushed {
                Ok(Pushed::Wrote(n)) if n > 0 => {
                    out.drain(..n);
                    unflushed = true;
                    write_quiet.touch();
                }
                Ok(Pushed::Flushed) => unflushed = false,
                Ok(Pushed::Wrote(_)) | Err(_) => {
                    // The peer is gone: its answers have nowhere to go.
                    ending.write_failed = true;
                    ending.stop_reading = true;
                    out.clear();
                }
            },
            () = &mut write_sleep, if writing => {
                // Nothing taken for the whole write timeout: the peer is not
                // reading its answers. Closed rather than holding its slot
                // and its answers for as long as the peer likes; its open
                // requests are still finished, their answers dropped.
                if write_quiet.rearm(write_sleep.as_mut()) {
                    let listener =
                        if acquirer.is_some() { Listener::IsoTls } else { Listener::Iso };
                    engine.metrics().count_closed(listener, Closed::WriteTimeout);
                    ending.write_failed = true;
                    out.clear();
                    ending.stop(format!(
                        "answers not written within {} ms: the peer is not reading",
                        config.write_timeout_ms
                    ));
                }
            }
            () = shutdown.cancelled(), if !ending.stop_reading => ending.stop_reading = true,
            read = reader.read_buf(&mut buffer), if reading => match read {
                Err(error) => ending.stop(error.to_string()),
                Ok(0) => {
                    ending.stop_reading = true;
                    if buffer.has_remaining() {
                        ending.stop(format!(
                            "closed by the peer with {} bytes of an unfinished frame",
                            buffer.len()
                        ));
                    }
                }
                Ok(_) => idle_quiet.touch(),
            },
            () = &mut idle_sleep, if reading => {
                if idle_quiet.rearm(idle_sleep.as_mut()) {
                    ending.stop(format!("idle for {} ms", config.idle_timeout_ms));
                }
            }
        }
    }
    if !ending.write_failed {
        // No shutdown after a write timeout: a close_notify or FIN would
        // wait behind the answers the peer is not reading.
        let _ = tokio::time::timeout(write_timeout, writer.shutdown()).await;
    }
    ending.error.map_or(Ok(()), Err)
}

/// What one turn of the writer did.
#[derive(Debug)]
enum Pushed {
    Wrote(usize),
    Flushed,
}

/// Writes what it can of `out`, or, with nothing left to write, flushes
/// what the writer kept (a TLS writer may keep part of a write). Each way
/// is one cancel-safe call, so losing the `select!` loses no bytes.
async fn push_out<W: AsyncWrite + Unpin>(writer: &mut W, out: &[u8]) -> std::io::Result<Pushed> {
    if out.is_empty() {
        writer.flush().await.map(|()| Pushed::Flushed)
    } else {
        writer.write(out).await.map(Pushed::Wrote)
    }
}

/// Decodes one frame's payload. The decode stage is the decode alone; the
/// total counts from `received`, when the frame was cut off the stream.
fn decode<'a>(
    engine: &Engine,
    spec: &Spec,
    payload: &[u8],
    number: u64,
    received: Stopwatch,
) -> Decoded<'a> {
    let decoding = Stopwatch::start();
    let mut message = Box::new(Message::with_capacity(payload.len() * 2));
    let decoded = message.decode_into(spec, payload);
    let decode_us = decoding.elapsed_us();
    engine
        .metrics()
        .record(Channel::Iso, Stage::Decode, decode_us);
    Decoded {
        number,
        message,
        decoded,
        decode_us,
        received,
        permit: None,
    }
}

/// What a connection holds its requests to.
#[derive(Debug)]
struct Limits {
    /// From the frame's arrival to its answer's leaving.
    deadline: Duration,
}

/// Whether the connection takes another frame: under its in-flight bound,
/// or past it while the switch is overloaded, refusing its card requests,
/// as long as the answers already waiting for the peer stay under the high
/// water.
fn room(engine: &Engine, config: &IsoConfig, arrivals: &Arrivals<Decoded<'_>>, out: &[u8]) -> bool {
    arrivals.open() < config.in_flight_max
        || (engine.load_limit().binds() && out.len() < OUT_HIGH_WATER)
}

/// A card request's or reversal's permit from the admission limit, taken
/// before anything else is done for it; other messages need none. A card
/// request past the connection's bound (`at_bound`, read only because the
/// limit binds) is refused.
fn admit<'a>(
    engine: &'a Engine,
    acquirer: Option<&Acquirer>,
    request: &Decoded<'_>,
    at_bound: bool,
) -> Result<Option<Permit<'a>>, Refused> {
    let mti = request.message.mti();
    if request.decoded.is_err() || mti.is_response() {
        return Ok(None);
    }
    let class = match mti.class() {
        1 | 2 if at_bound => return Err(Refused::Limit),
        1 | 2 => Class::Card,
        4 => Class::Reversal,
        _ => return Ok(None),
    };
    let merchant = request.message.get(42).unwrap_or_default();
    engine
        .load_limit()
        .admit(class, merchant, acquirer.map(|acquirer| &*acquirer.name))
        .map(Some)
}

/// The 91 a request refused at the door is answered with, counted.
fn shed(engine: &Engine, message: &Message, refused: Refused) -> Option<Message> {
    engine.metrics().count_shed(Channel::Iso, refused.into());
    let response = iso::response(message, ResponseCode::IssuerUnavailable, None)?;
    count_response(engine, &response);
    Some(response)
}

/// One request's answer: its arrival number, the response if the message
/// deserves one, and the time since its frame was cut off the stream.
type Answered = (u64, Option<Message>, Stopwatch);

/// Answers one decoded request; its permit is given back as the answer is
/// ready.
async fn answer(
    engine: &Engine,
    acquirer: Option<&Acquirer>,
    request: Decoded<'_>,
    limits: &Limits,
) -> Answered {
    let Decoded {
        number,
        message,
        decoded,
        decode_us,
        received,
        permit,
    } = request;
    let response = match decoded {
        Ok(()) => {
            // From the frame's arrival: a request held behind a reversal, or
            // waiting in the connection's buffer, has been waiting all along.
            let deadline = limits.deadline.checked_sub(received.elapsed());
            let deadline = Deadline::after(deadline.unwrap_or_default());
            let response = mapping::answer(engine, &message, acquirer, decode_us, deadline).await;
            drop(permit);
            response
        }
        Err(error) => {
            engine
                .metrics()
                .messages_malformed
                .fetch_add(1, Ordering::Relaxed);
            if error.mti_was_read() {
                tracing::info!(mti = %message.mti(), %error, "malformed message answered 30");
                iso::response(&message, ResponseCode::FormatError, None)
            } else {
                // Without an MTI there is no response type to answer with.
                tracing::info!(%error, "malformed message without an MTI dropped");
                None
            }
        }
    };
    (number, response, received)
}

/// Counts a response by its code, whether or not it can still be written.
fn count_response(engine: &Engine, response: &Message) {
    let code = response
        .get(39)
        .and_then(ResponseCode::parse)
        .unwrap_or(ResponseCode::SystemMalfunction);
    engine.metrics().count_response(Channel::Iso, code);
}

/// Appends a response to `out` as a frame; one that leaves after its
/// request's deadline is counted.
fn frame_into(
    engine: &Engine,
    spec: &Spec,
    response: &Message,
    received: Stopwatch,
    limits: &Limits,
    out: &mut Vec<u8>,
) {
    match response.encode_frame(spec, out) {
        Ok(()) => {
            engine
                .metrics()
                .record_answer(Channel::Iso, received.elapsed(), limits.deadline);
        }
        // The response echoes request fields the dialect accepted, so this
        // is a bug; say so rather than leave the acquirer waiting silently.
        Err(error) => tracing::error!(%error, "response could not be encoded"),
    }
}
