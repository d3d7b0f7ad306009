//! Framing types: what one line from the worker can be.

use serde_json::Value;

/// A JSON-RPC id. Codex accepts ints or strings; server→client requests use
/// their own counter starting at 0, so ids are only unique per direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    Int(i64),
    Str(String),
}

impl RequestId {
    pub(crate) fn from_value(v: &Value) -> Option<RequestId> {
        match v {
            Value::Number(n) => n.as_i64().map(RequestId::Int),
            Value::String(s) => Some(RequestId::Str(s.clone())),
            _ => None,
        }
    }

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
    Notification {
        method: String,
        params: Value,
    },
    /// A server→client request routed to this thread. The subscriber must
    /// answer it with [`RpcClient::respond`](super::RpcClient::respond) or
    /// interrupt the turn; the channel answers it itself only when no
    /// subscriber is there to take it.
    Request(ServerRequest),
}

/// One decoded line from the worker.
#[derive(Debug)]
pub enum Incoming {
    Response {
        id: RequestId,
        result: Result<Value, (i64, String)>,
    },
    Notification {
        method: String,
        params: Value,
    },
    Request(ServerRequest),
}

impl Incoming {
    /// Decodes one line. `None` for anything that is not a JSON-RPC message
    /// (the caller logs and skips it: one bad line must not take the channel down).
    pub fn parse(line: &[u8]) -> Option<Incoming> {
        let mut v: Value = serde_json::from_slice(line).ok()?;
        let obj = v.as_object_mut()?;
        let method = obj.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = obj.get("id").and_then(RequestId::from_value);
        let params = obj.remove("params").unwrap_or(Value::Null);
        match (method, id) {
            (Some(method), Some(id)) => {
                Some(Incoming::Request(ServerRequest { id, method, params }))
            }
            (Some(method), None) => Some(Incoming::Notification { method, params }),
            (None, Some(id)) => {
                if let Some(result) = obj.remove("result") {
                    Some(Incoming::Response {
                        id,
                        result: Ok(result),
                    })
                } else {
                    let err = obj.get("error")?;
                    let code = err.get("code").and_then(Value::as_i64).unwrap_or(-32603);
                    let message = err
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                        .to_owned();
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
    fn rejects_lines_that_are_not_messages() {
        assert!(Incoming::parse(b"this is not json").is_none());
        assert!(Incoming::parse(b"[1,2]").is_none());
        assert!(Incoming::parse(br#"{"foo":1}"#).is_none());
        assert!(Incoming::parse(br#"{"id":900,"#).is_none());
    }
}
