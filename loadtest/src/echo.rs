//! `loadtest echo`: sends every whole frame back as it came. With the same
//! frames, connections and CPUs as a switch run, it is the machine's own
//! limit (E_rr strict request/response, E_pipe pipelined), the baseline
//! every switch figure is divided by.
//!
//! With `--durable FILE` it is the durable echo (`D`, see
//! [`crate::durable`]): the same answers, each released only after a
//! record of its request is appended to FILE and synced.
//!
//! It can also stall on purpose (`--stall-every`, `--stall-for`): a server
//! that pauses like a garbage collector or a slow disk, to show that a run's
//! percentiles see the pause.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use protocol::Framing;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::clock::Instant;
use crate::durable::{Journal, append_record};

/// A pause of the whole server: for `length` at the start of every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub every: Duration,
    pub length: Duration,
}

impl Stall {
    /// How long until the stall that covers `now` ends (zero outside one).
    fn remaining(&self, started: Instant, now: Instant) -> Duration {
        let every = self.every.as_nanos().max(1);
        let into = now.saturating_duration_since(started).as_nanos() % every;
        let length = self.length.as_nanos();
        if into < length {
            // At most the stall's length (`--stall-for`, a week at most),
            // so it fits.
            Duration::from_nanos(u64::try_from(length - into).unwrap_or(u64::MAX))
        } else {
            Duration::ZERO
        }
    }
}

/// How the echo server behaves.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    pub framing: Framing,
    pub stall: Option<Stall>,
    /// Serve TLS (`--tls-cert`), with or without client certificates.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Answer only after each request's record is durable (`--durable`).
    pub journal: Option<Journal>,
}

/// Serves echo connections on `listener` until the process ends.
pub async fn serve(listener: TcpListener, config: EchoConfig) -> io::Result<()> {
    let started = Instant::now();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors or an aborted handshake: wait, go on.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let framing = config.framing;
        let stall = config.stall;
        let journal = config.journal.clone();
        match &config.tls {
            None => {
                tokio::spawn(echo_connection(stream, framing, stall, journal, started));
            }
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
                tokio::spawn(async move {
                    // A refused handshake (no or a bad client certificate)
                    // closes that connection only.
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await
                    {
                        echo_connection(stream, framing, stall, journal, started).await;
                    }
                });
            }
        }
    }
}

/// Echoes whole frames back in the batches they arrived in, one write per
/// read, as a server that answers everything it has read would; with a
/// journal, once their records are durable.
async fn echo_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    framing: Framing,
    stall: Option<Stall>,
    journal: Option<Journal>,
    started: Instant,
) {
    let mut records = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0usize;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        // The whole frames at the front.
        let mut whole = 0usize;
        loop {
            match framing.check(&buf[whole..filled]) {
                Ok(Some(bounds)) => {
                    let frame = whole..whole + bounds.total();
                    if journal.is_some() {
                        append_record(buf.get(frame.clone()).unwrap_or_default(), &mut records);
                    }
                    whole = frame.end;
                }
                Ok(None) => break,
                // A header that can never be a frame: hang up, as a switch
                // does.
                Err(_) => return,
            }
        }
        if whole == 0 {
            continue;
        }
        if let Some(stall) = stall {
            let wait = stall.remaining(started, Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        if let Some(journal) = &journal
            && journal.commit(std::mem::take(&mut records)).await.is_err()
        {
            // Never answered, never acknowledged: hang up.
            return;
        }
        if stream.write_all(&buf[..whole]).await.is_err() {
            return;
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_cover_the_start_of_each_period() {
        let stall = Stall {
            every: Duration::from_secs(1),
            length: Duration::from_millis(200),
        };
        let t0 = Instant::now();
        assert_eq!(
            stall.remaining(t0, t0 + Duration::from_millis(50)),
            Duration::from_millis(150)
        );
        assert_eq!(
            stall.remaining(t0, t0 + Duration::from_millis(500)),
            Duration::ZERO
        );
        assert_eq!(
            stall.remaining(t0, t0 + Duration::from_millis(1100)),
            Duration::from_millis(100)
        );
    }
}
