use std::time::Duration;

/// Why a call on the channel did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcError {
    /// The worker answered with a JSON-RPC error object.
    Remote { code: i64, message: String },
    /// No answer within the per-request deadline.
    Timeout {
        method: &'static str,
        after: Duration,
    },
    /// The worker process went away (or the channel was closed) before answering.
    WorkerGone(String),
    /// The answer did not have the shape the pinned protocol promises.
    Decode {
        method: &'static str,
        detail: String,
    },
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::Remote { code, message } => {
                // Codex puts the whole list of ~200 method names in some messages; keep logs readable.
                let short: String = message.chars().take(300).collect();
                write!(f, "worker error {code}: {short}")
            }
            RpcError::Timeout { method, after } => {
                write!(f, "worker did not answer `{method}` within {after:?}")
            }
            RpcError::WorkerGone(why) => write!(f, "worker connection lost: {why}"),
            RpcError::Decode { method, detail } => {
                write!(f, "unexpected answer to `{method}`: {detail}")
            }
        }
    }
}

impl std::error::Error for RpcError {}
