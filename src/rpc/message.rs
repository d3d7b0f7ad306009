//! Framing types: what one line from the worker can be.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON-RPC id. Codex accepts ints or strings; server→client requests use
/// their own counter starting at 0, so ids are only unique per direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    Int(i64),
    Str(String),
}

impl RequestId {
    pub(crate) fn to_value(&self) -> Value {
        match self {
            RequestId::Int(i) => Value::from(*i),
            RequestId::Str(s) => Value::from(s.clone()),
        }
    }
}

/// A request the worker sends to us (approvals, dynamic tool calls, user input).
#[derive(Debug, Clone)]
pub struct ServerRequest {
    pub id: RequestId,
    pub method: String,
    pub params: Value,
}

impl ServerRequest {
    pub fn thread_id(&self) -> Option<&str> {
        self.params.get("threadId").and_then(Value::as_str)
    }
}

/// What a thread's subscriber receives, in the order the worker wrote it.
#[derive(Debug, Clone)]
pub enum ThreadEvent {
    /// A notification. `params` is the worker's text as it came (a JSON
    /// object): the subscriber deserializes it straight into the type its
    /// `method` names, so no `Value` tree is built for a delta.
    Notification(Notification),
    /// A server→client request routed to this thread. The subscriber must
    /// answer it with [`RpcClient::respond`](super::RpcClient::respond) or
    /// interrupt the turn; the channel answers it itself only when no
    /// subscriber is there to take it. Boxed: it is rare, and each
    /// subscription's queue holds its events inline, sized to the largest
    /// variant (120 bytes unboxed against 40).
    Request(Box<ServerRequest>),
}

/// A notification for one thread: the worker's line as it came, and where
/// its method and params are in it. The subscriber decodes `params` straight
/// into the type `method` names; nothing was decoded before (see `scan.rs`).
#[derive(Clone)]
pub struct Notification {
    text: Box<str>,
    method: Range<usize>,
    params: Range<usize>,
}

impl Notification {
    /// From a line whose parts were found by [`scan`](super::scan); `None`
    /// when it is not UTF-8. Checked here once, with the whole line, so the
    /// subscriber decodes from a `str` (serde's `from_slice` would check
    /// each string and key on its own).
    pub(super) fn in_line(
        line: &[u8],
        method: Range<usize>,
        params: Range<usize>,
    ) -> Option<Notification> {
        Some(Notification {
            text: line_text(line, [&method, &params])?,
            method,
            params,
        })
    }

    /// From parts decoded apart (the decoding path, tests).
    pub fn new(method: &str, params: &RawValue) -> Notification {
        let mut text = String::with_capacity(method.len() + params.get().len());
        text.push_str(method);
        text.push_str(params.get());
        Notification {
            text: text.into(),
            method: 0..method.len(),
            params: method.len()..method.len() + params.get().len(),
        }
    }

    pub fn method(&self) -> &str {
        &self.text[self.method.clone()]
    }

    /// The params object's JSON text, not yet checked beyond its brackets
    /// (decoding it checks it).
    pub fn params(&self) -> &str {
        &self.text[self.params.clone()]
    }
}

impl std::fmt::Debug for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notification")
            .field("method", &self.method())
            .field("params", &self.params())
            .finish()
    }
}

/// A response's `result` as the worker wrote it: its reader decodes it
/// straight into the type it expects, from [`RawResult::get`].
#[derive(Debug)]
pub struct RawResult {
    text: Box<str>,
    result: Range<usize>,
}

impl RawResult {
    /// From a line whose `result` was found by [`scan`](super::scan);
    /// `None` when the line is not UTF-8.
    pub(super) fn in_line(line: &[u8], result: Range<usize>) -> Option<RawResult> {
        Some(RawResult {
            text: line_text(line, [&result])?,
            result,
        })
    }

    /// The result's JSON text, not yet checked beyond its brackets
    /// (decoding it checks it).
    pub fn get(&self) -> &str {
        &self.text[self.result.clone()]
    }
}

/// A line kept as text, its parts read later by range: `None` unless it is
/// UTF-8 and every range falls on character boundaries (the scan's always
/// do: they start and end at ASCII delimiters), so reading a part cannot
/// panic.
fn line_text<const N: usize>(line: &[u8], parts: [&Range<usize>; N]) -> Option<Box<str>> {
    let text = simdutf8::basic::from_utf8(line).ok()?;
    parts
        .iter()
        .all(|r| text.get((*r).clone()).is_some())
        .then(|| text.into())
}

impl From<Box<RawValue>> for RawResult {
    fn from(raw: Box<RawValue>) -> RawResult {
        let text: Box<str> = raw.get().into();
        let result = 0..text.len();
        RawResult { text, result }
    }
}

/// One decoded line from the worker.
#[derive(Debug)]
pub enum Incoming {
    /// A response; a result stays the worker's text until its caller
    /// deserializes it into the response type it expects.
    Response {
        id: RequestId,
        result: Result<Box<RawValue>, (i64, String)>,
    },
    Notification {
        method: String,
        /// The thread the notification belongs to (`params.threadId`).
        thread_id: Option<String>,
        params: Box<RawValue>,
    },
    Request(ServerRequest),
}

/// The JSON-RPC envelope, borrowed from the line: only the id and method are
/// decoded here, the rest stays raw text for whoever reads it.
/// Every field is taken raw, `null` included (`"result": null` is a
/// result), and decoded below as leniently as a `Value` lookup would be.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// A field that is there, even when it is `null` (`Option` alone would
/// read `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The one field routing needs from a notification's params.
#[derive(Deserialize)]
struct ThreadOf<'a> {
    #[serde(default, borrow, rename = "threadId")]
    thread_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct ErrorObject<'a> {
    #[serde(default)]
    code: Option<Value>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
}

/// A JSON string's text, unescaped; `None` for any other JSON value.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    serde_json::from_str::<Cow<'_, str>>(text).ok()
}

fn request_id(raw: &RawValue) -> Option<RequestId> {
    match string(raw) {
        Some(s) => Some(RequestId::Str(s.into_owned())),
        // An integer id; `null`, a float or anything else is no id.
        None => raw.get().parse::<i64>().ok().map(RequestId::Int),
    }
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

impl Incoming {
    /// Decodes one line. `None` for anything that is not a JSON-RPC message
    /// (the caller logs and skips it: one bad line must not take the channel down).
    pub fn parse(line: &[u8]) -> Option<Incoming> {
        // Only an object is a message (a struct would also read an array).
        if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        let env: Envelope<'_> = serde_json::from_slice(line).ok()?;
        let id = env.id.and_then(request_id);
        let method = env.method.and_then(string).map(Cow::into_owned);
        match (method, id) {
            (Some(method), Some(id)) => {
                let params = match env.params {
                    Some(p) => serde_json::from_str(p.get()).ok()?,
                    None => Value::Null,
                };
                Some(Incoming::Request(ServerRequest { id, method, params }))
            }
            (Some(method), None) => {
                let (thread_id, params) = match env.params {
                    Some(p) => (
                        serde_json::from_str::<ThreadOf<'_>>(p.get())
                            .ok()
                            .and_then(|t| t.thread_id)
                            .map(Cow::into_owned),
                        p.to_owned(),
                    ),
                    None => (None, null()),
                };
                Some(Incoming::Notification {
                    method,
                    thread_id,
                    params,
                })
            }
            (None, Some(id)) => {
                if let Some(result) = env.result {
                    Some(Incoming::Response {
                        id,
                        result: Ok(result.to_owned()),
                    })
                } else {
                    let err: ErrorObject<'_> =
                        serde_json::from_str(env.error?.get()).unwrap_or_default();
                    let code = err.code.as_ref().and_then(Value::as_i64).unwrap_or(-32603);
                    let message = err
                        .message
                        .and_then(string)
                        .map(Cow::into_owned)
                        .unwrap_or_else(|| "unknown error".to_owned());
                    Some(Incoming::Response {
                        id,
                        result: Err((code, message)),
                    })
                }
            }
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line is kept only when it is UTF-8, whatever its length (the
    /// check reads long lines in SIMD blocks) and wherever a bad byte is.
    #[test]
    fn a_line_is_kept_only_when_it_is_utf8() {
        for len in [10usize, 63, 64, 65, 200, 5000] {
            let text = format!(
                r#"{{"method":"m","params":{{"delta":"{}"}}}}"#,
                "é".repeat(len)
            );
            let line = text.as_bytes();
            let params = 23..line.len() - 1;
            let kept = Notification::in_line(line, 11..12, params.clone()).expect("UTF-8");
            assert_eq!((kept.method(), kept.params()), ("m", &text[params.clone()]));
            for bad in [24, 24 + len, line.len() - 3] {
                let mut broken = line.to_vec();
                broken[bad] = 0xff;
                assert!(Notification::in_line(&broken, 11..12, params.clone()).is_none());
            }
            // A range that cuts a character in two is refused too.
            assert!(Notification::in_line(line, 11..12, 23..34).is_none());
        }
    }

    #[test]
    fn parses_the_four_shapes_codex_writes() {
        let r = Incoming::parse(br#"{"id":3,"result":{"ok":true}}"#).unwrap();
        assert!(matches!(
            r,
            Incoming::Response {
                id: RequestId::Int(3),
                result: Ok(_)
            }
        ));
        let e = Incoming::parse(br#"{"id":4,"error":{"code":-32600,"message":"Not initialized"}}"#)
            .unwrap();
        match e {
            Incoming::Response {
                result: Err((code, msg)),
                ..
            } => {
                assert_eq!(code, -32600);
                assert_eq!(msg, "Not initialized");
            }
            other => panic!("{other:?}"),
        }
        let n = Incoming::parse(
            br#"{"method":"turn/started","params":{"threadId":"t"},"emittedAtMs":1}"#,
        )
        .unwrap();
        assert!(matches!(n, Incoming::Notification { ref method, .. } if method == "turn/started"));
        let q = Incoming::parse(br#"{"id":0,"method":"item/tool/call","params":{"threadId":"t"}}"#)
            .unwrap();
        match q {
            Incoming::Request(req) => assert_eq!(req.thread_id(), Some("t")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_null_result_is_a_result_and_a_null_id_is_no_id() {
        match Incoming::parse(br#"{"id":5,"result":null}"#).unwrap() {
            Incoming::Response {
                id: RequestId::Int(5),
                result: Ok(raw),
            } => assert_eq!(raw.get(), "null"),
            other => panic!("{other:?}"),
        }
        let n =
            Incoming::parse(br#"{"id":null,"method":"m","params":{"threadId":"a\"b"}}"#).unwrap();
        match n {
            Incoming::Notification {
                method,
                thread_id,
                params,
            } => {
                assert_eq!(method, "m");
                // Routing unescapes the id; the params stay the worker's text.
                assert_eq!(thread_id.as_deref(), Some("a\"b"));
                assert_eq!(params.get(), r#"{"threadId":"a\"b"}"#);
            }
            other => panic!("{other:?}"),
        }
        let s = Incoming::parse(br#"{"id":"s-1","method":"x/y"}"#).unwrap();
        assert!(
            matches!(s, Incoming::Request(ServerRequest { id: RequestId::Str(ref s), .. }) if s == "s-1")
        );
        let e = Incoming::parse(br#"{"id":2,"error":"boom"}"#).unwrap();
        assert!(
            matches!(e, Incoming::Response { result: Err((-32603, ref m)), .. } if m == "unknown error")
        );
    }

    #[test]
    fn rejects_lines_that_are_not_messages() {
        assert!(Incoming::parse(b"this is not json").is_none());
        assert!(Incoming::parse(b"[1,2]").is_none());
        assert!(Incoming::parse(br#"[1,"m"]"#).is_none());
        assert!(Incoming::parse(br#"{"foo":1}"#).is_none());
        assert!(Incoming::parse(br#"{"id":900,"#).is_none());
    }
}
