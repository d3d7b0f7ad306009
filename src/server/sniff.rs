//! Which protocol a new connection speaks, decided by peeking at its first
//! bytes before hyper reads any.
//!
//! hyper-util's `auto` connection tells HTTP/1 from h2c by *reading* the
//! first 24 bytes (the length of the HTTP/2 preface) and handing them back
//! to hyper in front of the socket. hyper's HTTP/1 side then sees a first
//! read of only those 24 bytes, reads again to get the rest of the head, and
//! its buffer, 8 KiB for the first read, doubles to 16 KiB to make room:
//! every HTTP/1 connection kept 16 KiB of read buffer (measured with
//! heaptrack, `docs/bench-notes-mem.md`). Peeking leaves the bytes in the
//! socket, so hyper's first read gets the whole head and its buffer stays at
//! 8 KiB.
//!
//! When the first bytes that have arrived are still a beginning of the
//! preface (a client that sent `P` alone, or nothing yet before closing),
//! peeking cannot decide without waiting for more; that rare case goes to
//! `auto`'s own reading, as before.
//!
//! An HTTP/1 connection is then served by hyper's HTTP/1 connection itself,
//! not by `auto`'s: `auto`'s is one type for both protocols, sized for
//! HTTP/2's state (1,680 bytes against 800 for HTTP/1 alone), and every
//! open stream kept it ([`Served`]).

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::server::conn::auto;

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
    /// A beginning of the preface, or nothing: read to find out.
    Unsure,
}

/// The bytes available so far, at most the preface's length, as peeked.
pub(super) fn protocol_of(first: &[u8]) -> Protocol {
    if first.len() >= H2_PREFACE.len() && first[..H2_PREFACE.len()] == H2_PREFACE[..] {
        Protocol::Http2
    } else if H2_PREFACE.starts_with(first) {
        Protocol::Unsure
    } else {
        Protocol::Http1
    }
}

/// Enough room to decide: the preface's length.
pub(super) const PEEK_LEN: usize = H2_PREFACE.len();

pin_project_lite::pin_project! {
    /// A connection from its accept on: first the peek (`F`, which yields
    /// the connection `C` built for the protocol it found), then `C`.
    #[project = OpeningProj]
    pub(super) enum Opening<F, C> {
        Peeking { #[pin] peek: F },
        Serving { #[pin] conn: C },
        /// Closed before a byte arrived.
        Cancelled,
    }
}

impl<F, C> Opening<F, C> {
    pub(super) fn new(peek: F) -> Opening<F, C> {
        Opening::Peeking { peek }
    }

    /// Starts the graceful close: a connection still waiting for its first
    /// bytes ends at once (as `auto` does while it reads them); a served one
    /// is handed to `close`.
    pub(super) fn graceful_shutdown(mut self: Pin<&mut Self>, close: impl FnOnce(Pin<&mut C>)) {
        match self.as_mut().project() {
            OpeningProj::Peeking { .. } => self.set(Opening::Cancelled),
            OpeningProj::Serving { conn } => close(conn),
            OpeningProj::Cancelled => {}
        }
    }
}

/// A connection being served, boxed at its own protocol's size: hyper's
/// HTTP/1 connection (`H1`), or `auto`'s (`Auto`) for HTTP/2 and for first
/// bytes that did not decide.
pub(super) enum Served<H1, Auto> {
    Http1(Pin<Box<H1>>),
    Other(Pin<Box<Auto>>),
}

/// What either kind of connection ends with.
pub(super) type ServeError = Box<dyn StdError + Send + Sync>;

/// The one call [`Served`] needs besides polling; the two connection types
/// have it under the same name but no common trait.
pub(super) trait GracefulShutdown {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<H1, Auto> Served<H1, Auto>
where
    H1: GracefulShutdown,
    Auto: GracefulShutdown,
{
    pub(super) fn graceful_shutdown(&mut self) {
        match self {
            Served::Http1(conn) => conn.as_mut().graceful_shutdown(),
            Served::Other(conn) => conn.as_mut().graceful_shutdown(),
        }
    }
}

impl<H1, Auto, E1> Future for Served<H1, Auto>
where
    H1: Future<Output = Result<(), E1>>,
    E1: Into<ServeError>,
    Auto: Future<Output = Result<(), ServeError>>,
{
    type Output = Result<(), ServeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            Served::Http1(conn) => conn.as_mut().poll(cx).map_err(Into::into),
            Served::Other(conn) => conn.as_mut().poll(cx),
        }
    }
}

impl<I, S> GracefulShutdown for http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<ServeError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: Body + 'static,
    <S::ResBody as Body>::Error: Into<ServeError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::Connection::graceful_shutdown(self)
    }
}

impl<I, S, E> GracefulShutdown for auto::Connection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<ServeError>,
    S::ResBody: Body + Send + 'static,
    <S::ResBody as Body>::Error: Into<ServeError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self)
    }
}

impl<F, C, E> Future for Opening<F, C>
where
    F: Future<Output = C>,
    C: Future<Output = Result<(), E>>,
{
    type Output = Result<(), E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        loop {
            match self.as_mut().project() {
                OpeningProj::Peeking { peek } => {
                    let conn = ready!(peek.poll(cx));
                    self.set(Opening::Serving { conn });
                }
                OpeningProj::Serving { conn } => return conn.poll(cx),
                OpeningProj::Cancelled => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_decide_the_protocol_as_soon_as_they_can() {
        assert_eq!(protocol_of(b"GET / HTTP/1.1\r\n"), Protocol::Http1);
        // `POST` shares its first byte with the preface: the second decides.
        assert_eq!(protocol_of(b"PO"), Protocol::Http1);
        assert_eq!(protocol_of(b"P"), Protocol::Unsure);
        assert_eq!(protocol_of(b""), Protocol::Unsure);
        assert_eq!(protocol_of(&H2_PREFACE[..23]), Protocol::Unsure);
        assert_eq!(protocol_of(H2_PREFACE), Protocol::Http2);
        // An almost-preface is HTTP/1 (hyper then answers it as a bad request).
        assert_eq!(
            protocol_of(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
            Protocol::Http1
        );
    }
}
