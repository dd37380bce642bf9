//! A client that sends requests and never reads the replies must not hold
//! its connection, its task and its replies for as long as it likes. hyper
//! writes the replies itself, so the bound sits under it, on the socket: a
//! write (or flush) that makes no progress for `http.write_timeout_ms`
//! fails with `TimedOut`, hyper drops the connection, and its slot under
//! `http.connections_max` is free again. The ISO 8583 listener bounds its own
//! writes where it makes them (`ingress/iso/connection.rs`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::ops::metrics::{Closed, Listener, Metrics};

/// `S`, whose writes fail once one has waited `timeout` without progress.
pub(super) struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write waits; disarmed by any progress.
    waiting: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
}

impl<S> WriteDeadline<S> {
    pub(super) fn new(inner: S, timeout: Duration, metrics: Arc<Metrics>) -> WriteDeadline<S> {
        WriteDeadline {
            inner,
            timeout,
            waiting: None,
            metrics,
        }
    }

    /// The outcome of one write step: progress disarms the deadline; a step
    /// still waiting arms it, and fails once it has passed.
    fn bound<T>(&mut self, cx: &mut Context<'_>, step: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if step.is_ready() {
            self.waiting = None;
            return step;
        }
        let timeout = self.timeout;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if waiting.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.waiting = None;
        self.metrics
            .count_closed(Listener::Http, Closed::WriteTimeout);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not read its replies within http.write_timeout_ms",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let step = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.bound(cx, step)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let step = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.bound(cx, step)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let step = Pin::new(&mut self.inner).poll_flush(cx);
        self.bound(cx, step)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let step = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.bound(cx, step)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A write the peer never reads fails at the deadline, and is counted;
    /// a write that keeps making progress does not, however long it takes
    /// in all.
    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_fails_at_the_deadline() {
        let metrics = Arc::new(Metrics::default());
        let (client, mut server) = tokio::io::duplex(64);
        let mut bounded =
            WriteDeadline::new(client, Duration::from_millis(300), Arc::clone(&metrics));
        let error = bounded.write_all(&[7; 4096]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let text = metrics.render(&crate::ops::metrics::Readings::default());
        assert!(
            text.contains(
                "switch_connections_closed_total{listener=\"http\",reason=\"write_timeout\"} 1"
            ),
            "{text}"
        );

        // A reader that takes 100 ms per 64 bytes: 6.4 s in all, never 300 ms
        // without progress.
        let (client, mut server_side) = tokio::io::duplex(64);
        let mut bounded = WriteDeadline::new(client, Duration::from_millis(300), metrics);
        let reader = tokio::spawn(async move {
            let mut buf = [0; 64];
            let mut read = 0;
            while read < 4096 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                read += tokio::io::AsyncReadExt::read(&mut server_side, &mut buf)
                    .await
                    .unwrap();
            }
            read
        });
        bounded.write_all(&[7; 4096]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 4096);
        drop(server.shutdown().await);
    }
}
