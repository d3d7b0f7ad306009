//! One Server-Sent-Events frame, and its encoding on the wire.
//!
//! OpenAI streams chat completions as bare `data: <json>\n\n` frames and the
//! Responses API as named frames (`event: response.output_text.delta\n` then
//! `data: …`). Both are built here, so no caller ever concatenates SSE text by
//! hand and gets a stray newline wrong: a newline inside a payload would end the
//! field early and the client would read half a JSON document. The encoding
//! follows the WHATWG SSE grammar: every line of a payload becomes its own
//! `data:` line, and the client joins them back with `\n`.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// One SSE frame: an optional event name and a data payload, or a comment.
///
/// Build it with [`SseEvent::json`], [`SseEvent::data`] or [`SseEvent::comment`];
/// turn it into wire bytes with [`SseEvent::to_bytes`].
///
/// ```
/// use codex_sse::SseEvent;
///
/// let ev = SseEvent::json(&serde_json::json!({"id": 1})).unwrap();
/// assert_eq!(ev.to_bytes(), "data: {\"id\":1}\n\n");
///
/// let ev = SseEvent::data("a\nb").with_event("delta");
/// assert_eq!(ev.to_bytes(), "event: delta\ndata: a\ndata: b\n\n");
///
/// assert_eq!(SseEvent::comment("ping").to_bytes(), ": ping\n\n");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SseEvent {
    event: Option<Cow<'static, str>>,
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    /// A payload known to hold no line break (compact JSON escapes them), so
    /// encoding can skip the scan.
    SingleLine(Bytes),
    /// A payload that may hold line breaks; each line becomes a `data:` line.
    Data(Bytes),
    /// A comment; each line becomes a `:` line. Clients ignore comments.
    Comment(Bytes),
}

// === impl SseEvent ===

impl SseEvent {
    /// A `data:` frame holding `value` serialized as compact JSON.
    ///
    /// # Errors
    ///
    /// Fails when `value`'s `Serialize` impl fails (for example a map with
    /// non-string keys). A frame is never half-written.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        // Compact JSON escapes every control character inside strings and puts
        // no whitespace between tokens, so the text is a single line.
        let json = serde_json::to_vec(value)?;
        Ok(Self {
            event: None,
            kind: Kind::SingleLine(Bytes::from(json)),
        })
    }

    /// A `data:` frame holding an already-serialized payload.
    ///
    /// A payload containing line breaks (`\n`, `\r\n` or `\r`) is written as
    /// several `data:` lines; an SSE client joins them back with `\n`.
    pub fn data(payload: impl Into<Bytes>) -> Self {
        Self {
            event: None,
            kind: Kind::Data(payload.into()),
        }
    }

    /// A comment frame, `: text\n\n`. Clients ignore it; proxies see traffic.
    ///
    /// A multi-line `text` is written as several comment lines.
    pub fn comment(text: impl Into<Bytes>) -> Self {
        Self {
            event: None,
            kind: Kind::Comment(text.into()),
        }
    }

    /// Names the event: an `event: NAME` line is written before the data.
    ///
    /// The Responses API names every event (`response.created`,
    /// `response.output_text.delta`, …). Line breaks in `name` would end the
    /// field early, so they are removed. A comment frame has no name: on a
    /// comment this is a no-op.
    #[must_use]
    pub fn with_event(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        if matches!(self.kind, Kind::Comment(_)) {
            return self;
        }
        let mut name = name.into();
        if name.contains(['\r', '\n']) {
            name = Cow::Owned(name.replace(['\r', '\n'], ""));
        }
        self.event = Some(name);
        self
    }

    /// The event name set by [`SseEvent::with_event`], if any.
    pub fn event(&self) -> Option<&str> {
        self.event.as_deref()
    }

    /// Whether this frame is a comment.
    pub fn is_comment(&self) -> bool {
        matches!(self.kind, Kind::Comment(_))
    }

    /// The frame as it goes on the wire, ending with the blank line that
    /// dispatches it.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode_into(&mut buf);
        buf.freeze()
    }

    /// Appends the frame as it goes on the wire (see [`SseEvent::to_bytes`])
    /// to `buf`: how a body gathers several ready events into one write.
    pub fn encode_into(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len_hint());
        if let Some(name) = &self.event {
            buf.put_slice(b"event: ");
            buf.put_slice(name.as_bytes());
            buf.put_u8(b'\n');
        }
        match &self.kind {
            Kind::SingleLine(payload) => put_field(buf, b"data: ", payload),
            Kind::Data(payload) => put_lines(buf, b"data: ", payload),
            Kind::Comment(text) => put_lines(buf, b": ", text),
        }
        buf.put_u8(b'\n');
    }

    /// The frame as one line of newline-delimited JSON: the payload and
    /// `\n`, no field names; `None` for a comment (NDJSON has none).
    ///
    /// Line breaks inside a payload become spaces: in valid JSON they can
    /// only sit between tokens (inside strings they are escaped), so the
    /// line still parses to the same value.
    ///
    /// ```
    /// use codex_sse::SseEvent;
    ///
    /// let ev = SseEvent::json(&serde_json::json!({"done": true})).unwrap();
    /// assert_eq!(ev.to_ndjson_line().unwrap(), "{\"done\":true}\n");
    /// assert_eq!(SseEvent::data("{\n}").to_ndjson_line().unwrap(), "{ }\n");
    /// assert!(SseEvent::comment("ping").to_ndjson_line().is_none());
    /// ```
    pub fn to_ndjson_line(&self) -> Option<Bytes> {
        let mut buf = BytesMut::new();
        self.encode_ndjson_into(&mut buf).then(|| buf.freeze())
    }

    /// Appends the event's NDJSON line (see [`SseEvent::to_ndjson_line`]) to
    /// `buf`; `false`, and nothing appended, for a comment.
    pub fn encode_ndjson_into(&self, buf: &mut BytesMut) -> bool {
        let (payload, single_line) = match &self.kind {
            Kind::Comment(_) => return false,
            Kind::SingleLine(p) => (p, true),
            Kind::Data(p) => (p, false),
        };
        buf.reserve(payload.len() + 1);
        if single_line {
            buf.put_slice(payload);
        } else {
            buf.extend(
                payload
                    .iter()
                    .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
            );
        }
        buf.put_u8(b'\n');
        true
    }

    fn encoded_len_hint(&self) -> usize {
        let event = self
            .event
            .as_ref()
            .map_or(0, |n| "event: \n".len() + n.len());
        let body = match &self.kind {
            Kind::SingleLine(p) | Kind::Data(p) | Kind::Comment(p) => p.len(),
        };
        // Exact for single-line payloads; multi-line ones grow once.
        event + "data: ".len() + body + "\n\n".len()
    }
}

/// Writes `prefix payload \n`.
fn put_field(buf: &mut BytesMut, prefix: &[u8], payload: &[u8]) {
    buf.put_slice(prefix);
    buf.put_slice(payload);
    buf.put_u8(b'\n');
}

/// Writes one `prefix line \n` per line of `payload`, treating `\r\n`, `\n`
/// and `\r` as line ends, as an SSE parser does.
fn put_lines(buf: &mut BytesMut, prefix: &[u8], payload: &[u8]) {
    let mut rest = payload;
    loop {
        match memchr::memchr2(b'\n', b'\r', rest) {
            Some(end) => {
                put_field(buf, prefix, &rest[..end]);
                let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[end + skip..];
            }
            None => {
                put_field(buf, prefix, rest);
                return;
            }
        }
    }
}

impl fmt::Debug for SseEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, payload) = match &self.kind {
            Kind::SingleLine(p) | Kind::Data(p) => ("data", p),
            Kind::Comment(p) => ("comment", p),
        };
        f.debug_struct("SseEvent")
            .field("event", &self.event)
            .field(kind, &String::from_utf8_lossy(payload))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_compact_data_line() {
        // One key per object, so the expectation holds whether or not
        // serde_json's `preserve_order` is unified into the build.
        let ev = SseEvent::json(&serde_json::json!({
            "choices": [{"delta": {"content": "line one\nline two"}}],
        }))
        .unwrap();
        let wire = ev.to_bytes();
        assert_eq!(
            wire,
            "data: {\"choices\":[{\"delta\":{\"content\":\"line one\\nline two\"}}]}\n\n"
        );
        // Exactly one line before the terminating blank line.
        assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 2);
    }

    #[test]
    fn json_serialize_failure_is_an_error_not_a_frame() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), "tuple keys are not JSON object keys");
        assert!(SseEvent::json(&map).is_err());
    }

    #[test]
    fn data_splits_every_kind_of_line_break() {
        let ev = SseEvent::data("a\nb\r\nc\rd");
        assert_eq!(ev.to_bytes(), "data: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    #[test]
    fn data_keeps_empty_and_trailing_lines() {
        // "a\n\nb\n" must come back as the same string: the client appends
        // "\n" after each data line and strips the last one.
        let ev = SseEvent::data("a\n\nb\n");
        assert_eq!(ev.to_bytes(), "data: a\ndata: \ndata: b\ndata: \n\n");
    }

    #[test]
    fn single_line_data_is_untouched() {
        assert_eq!(
            SseEvent::data(Bytes::from_static(b"[DONE]")).to_bytes(),
            "data: [DONE]\n\n"
        );
    }

    #[test]
    fn named_event_line_comes_first() {
        let ev = SseEvent::json(&serde_json::json!({"type": "response.created"}))
            .unwrap()
            .with_event("response.created");
        assert_eq!(ev.event(), Some("response.created"));
        assert_eq!(
            ev.to_bytes(),
            "event: response.created\ndata: {\"type\":\"response.created\"}\n\n"
        );
    }

    #[test]
    fn line_breaks_in_event_name_cannot_forge_fields() {
        let ev = SseEvent::data("x").with_event(String::from("evil\ndata: injected"));
        assert_eq!(ev.to_bytes(), "event: evildata: injected\ndata: x\n\n");
    }

    #[test]
    fn comment_frames() {
        assert_eq!(
            SseEvent::comment("keep-alive").to_bytes(),
            ": keep-alive\n\n"
        );
        assert_eq!(SseEvent::comment("a\nb").to_bytes(), ": a\n: b\n\n");
        let named = SseEvent::comment("x").with_event("ignored");
        assert!(named.is_comment());
        assert_eq!(named.event(), None);
        assert_eq!(named.to_bytes(), ": x\n\n");
    }
}
