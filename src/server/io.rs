//! A connection's socket as hyper sees it: two things hyper cannot be asked
//! to do.
//!
//! - **hyper's own rejections get the envelope.** A write that is exactly
//!   hyper's bodiless rejection head is replaced by `rejection.rs`'s JSON
//!   response (same status, `x-request-id`).
//! - **Lingering close.** When the gateway answers before it has read the
//!   whole request (a body over the limit, a rejected upload, hyper's 431 for
//!   a huge head), closing at once would make the kernel reset the
//!   connection as the rest of the request arrives, and a client that writes
//!   its whole request before reading (Python's urllib, httpx) would see a
//!   broken pipe instead of the answer. So on close the socket sends its FIN
//!   and then reads and discards what the client still sends, until the
//!   client closes too, or for at most [`LINGER_MAX`] / [`LINGER_MAX_BYTES`]
//!   (or [`LINGER_GAP`] of silence). It does so when the request was marked
//!   ([`LingerOnClose`]) or when unread bytes are waiting at close; an
//!   ordinary close is not delayed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::rejection;

/// Longest a lingering close waits for the client to finish sending.
pub(super) const LINGER_MAX: Duration = Duration::from_secs(10);
/// Longest a lingering close waits for the next bytes.
pub(super) const LINGER_GAP: Duration = Duration::from_secs(2);
/// Most bytes a lingering close reads and discards.
pub(super) const LINGER_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// In every request's extensions: marks the connection for a lingering
/// close, because the answer went out before the request's body was read.
#[derive(Debug, Clone, Default)]
pub struct LingerOnClose(Arc<AtomicBool>);

impl LingerOnClose {
    pub fn linger(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Boxed where it is rare (a lingering close, a replaced rejection): every
/// connection holds a `ConnIo` inside hyper's connection, which is 752 bytes
/// with them boxed (an allocation of 768) and was 792 without (one of 896).
enum Close {
    Open,
    /// FIN sent; discarding what the client still sends.
    Lingering(Box<Linger>),
    Closed,
}

struct Linger {
    deadline: Pin<Box<Sleep>>,
    gap: Pin<Box<Sleep>>,
    discarded: u64,
}

pin_project_lite::pin_project! {
    /// The socket under hyper (module docs).
    pub(super) struct ConnIo<T> {
        #[pin]
        inner: T,
        peer: SocketAddr,
        linger: LingerOnClose,
        // What is still to be written in place of hyper's own rejection.
        replacement: Option<Box<(Vec<u8>, usize)>>,
        close: Close,
    }
}

impl<T> ConnIo<T> {
    pub(super) fn new(inner: T, peer: SocketAddr, linger: LingerOnClose) -> ConnIo<T> {
        ConnIo {
            inner,
            peer,
            linger,
            replacement: None,
            close: Close::Open,
        }
    }
}

impl<T: AsyncWrite> ConnIo<T> {
    /// Writes out a pending replacement before anything else.
    fn poll_replacement(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        while let Some(pending) = this.replacement.as_mut() {
            let (bytes, written) = &mut **pending;
            if *written == bytes.len() {
                *this.replacement = None;
                break;
            }
            let n = std::task::ready!(this.inner.as_mut().poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` in place of hyper's rejection if it is one.
    fn replace(self: Pin<&mut Self>, buf: &[u8]) -> bool {
        let Some(rejection) = rejection::recognise(buf) else {
            return false;
        };
        let this = self.project();
        let request_id = rejection::request_id();
        tracing::debug!(
            peer = %this.peer,
            status = rejection.status,
            request_id = %request_id,
            "rejected a request hyper could not parse"
        );
        *this.replacement = Some(Box::new((rejection::envelope(&rejection, &request_id), 0)));
        // The rest of the request (a huge head, its body) may still come.
        this.linger.linger();
        true
    }
}

impl<T: AsyncRead> AsyncRead for ConnIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite> AsyncWrite for ConnIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.as_mut().poll_replacement(cx))?;
        if self.as_mut().replace(buf) {
            // Taken whole; written out here or on the next flush.
            return match self.poll_replacement(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.as_mut().poll_replacement(cx))?;
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if self.as_mut().replace(only) {
                return match self.poll_replacement(cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    _ => Poll::Ready(Ok(only.len())),
                };
            }
        }
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().poll_replacement(cx))?;
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().poll_replacement(cx))?;
        let mut this = self.project();
        loop {
            match this.close {
                Close::Closed => return Poll::Ready(Ok(())),
                Close::Open => {
                    std::task::ready!(this.inner.as_mut().poll_shutdown(cx))?;
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    let waiting = match this.inner.as_mut().poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) => !buf.filled().is_empty(),
                        Poll::Ready(Err(_)) => false,
                        Poll::Pending => this.linger.is_set(),
                    };
                    *this.close = if waiting {
                        Close::Lingering(Box::new(Linger {
                            deadline: Box::pin(tokio::time::sleep(LINGER_MAX)),
                            gap: Box::pin(tokio::time::sleep(LINGER_GAP)),
                            discarded: buf.filled().len() as u64,
                        }))
                    } else {
                        Close::Closed
                    };
                }
                Close::Lingering(linger) => {
                    let Linger {
                        deadline,
                        gap,
                        discarded,
                    } = &mut **linger;
                    if deadline.as_mut().poll(cx).is_ready()
                        || gap.as_mut().poll(cx).is_ready()
                        || *discarded >= LINGER_MAX_BYTES
                    {
                        *this.close = Close::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match std::task::ready!(this.inner.as_mut().poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() => {
                            *discarded += buf.filled().len() as u64;
                            gap.as_mut().reset(tokio::time::Instant::now() + LINGER_GAP);
                        }
                        // The client closed too (or the socket failed): done.
                        _ => *this.close = Close::Closed,
                    }
                }
            }
        }
    }
}
