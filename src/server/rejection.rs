//! hyper's own rejections, in the gateway's envelope.
//!
//! When hyper cannot parse a request head (a bad request line, path or
//! header, a duplicate or negative `Content-Length`, an unknown HTTP
//! version; too many or too large headers; a URI too long) it answers by
//! itself, before any service runs, with a bodiless head:
//!
//! ```text
//! HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: …\r\n\r\n
//! ```
//!
//! and closes the connection. hyper has no hook for it, so the connection's
//! I/O (`io.rs`) recognises exactly that head as it is written and writes
//! this module's response instead: the same status, the OpenAI error
//! envelope, and an `x-request-id`. Every response of the gateway's own
//! carries `x-request-id` (the stack sets it), so a head without one can only
//! be hyper's; anything that is not exactly hyper's form passes unchanged.

use std::fmt::Write as _;

/// hyper's rejection heads are about 110 bytes; the gateway's are longer.
const MAX_HEAD: usize = 256;

/// A rejection hyper wrote by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HyperRejection<'a> {
    pub(super) status: u16,
    pub(super) reason: &'a str,
    pub(super) date: Option<&'a str>,
}

/// Recognises hyper's automatic rejection head (and nothing else).
pub(super) fn recognise(buf: &[u8]) -> Option<HyperRejection<'_>> {
    if buf.len() > MAX_HEAD || !buf.starts_with(b"HTTP/1.1 ") || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(buf).ok()?;
    let mut lines = text[..text.len() - 4].split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line.strip_prefix("HTTP/1.1 ")?;
    let (code, reason) = rest.split_once(' ')?;
    let status: u16 = code.parse().ok()?;
    if !(400..600).contains(&status) {
        return None;
    }
    let (mut close, mut empty, mut date) = (false, false, None);
    for line in lines {
        match line.split_once(": ")? {
            ("connection", "close") => close = true,
            ("content-length", "0") => empty = true,
            ("date", d) => date = Some(d),
            // Anything else (x-request-id above all) is not hyper's.
            _ => return None,
        }
    }
    (close && empty).then_some(HyperRejection {
        status,
        reason,
        date,
    })
}

/// The response written in place of `rejection`.
pub(super) fn envelope(rejection: &HyperRejection<'_>, request_id: &str) -> Vec<u8> {
    let (message, code) = match rejection.status {
        431 => (
            "The request's headers are too large: at most 100 header fields, about \
             400 KiB in all.",
            "headers_too_large",
        ),
        414 => ("The request URL is too long.", "uri_too_long"),
        _ => (
            "The request is not valid HTTP/1.1: its request line, path, HTTP version or a \
             header (such as a duplicate or negative Content-Length) could not be parsed.",
            "invalid_http_request",
        ),
    };
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": null,
            "code": code,
        }
    })
    .to_string();
    let mut head = String::with_capacity(256);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nx-request-id: {request_id}\r\n\
         connection: close\r\ncontent-length: {}\r\n",
        rejection.status,
        rejection.reason,
        body.len()
    );
    if let Some(date) = rejection.date {
        let _ = write!(head, "date: {date}\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// A request id in the stack's format (`req_` and 32 hex digits).
pub(super) fn request_id() -> String {
    format!("req_{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] =
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
        content-length: 0\r\ndate: Sun, 29 Nov 2026 19:04:13 GMT\r\n\r\n";

    #[test]
    fn hypers_rejection_is_recognised_and_gets_the_envelope() {
        let r = recognise(HYPER_431).unwrap();
        assert_eq!(r.status, 431);
        let out = envelope(&r, "req_1");
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\nx-request-id: req_1\r\n"));
        assert!(head.contains("\r\ncontent-type: application/json\r\n"));
        assert!(head.contains("\r\ndate: Sun, 29 Nov 2026 19:04:13 GMT"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn the_gateways_own_responses_and_other_bytes_pass_unchanged() {
        for buf in [
            // The stack's responses carry x-request-id.
            &b"HTTP/1.1 400 Bad Request\r\nx-request-id: req_1\r\nconnection: close\r\n\
               content-length: 0\r\n\r\n"[..],
            // Not closing, or with a body: not hyper's automatic answer.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 2\r\n\r\n",
            // Successes, body bytes, h2 frames.
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"{\"error\":{}}",
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00",
        ] {
            assert_eq!(recognise(buf), None, "{}", String::from_utf8_lossy(buf));
        }
        assert!(request_id().starts_with("req_") && request_id().len() == 36);
    }
}
