//! Why a turn or a request to the worker failed, classified for the API's error mapping.

use std::time::Duration;

use serde_json::Value;

use crate::protocol::TurnError;
use crate::rpc::RpcError;

/// A failure class the API maps to an HTTP status (see `docs/errors.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The worker is not ready (starting, restarting, stopped).
    NotReady,
    /// The provider rate-limited the worker's requests.
    RateLimited,
    /// The worker's account has no quota left; retrying cannot help.
    QuotaExceeded,
    /// The provider refused the worker's own credentials (HTTP 401: a login
    /// that expired or was revoked, a revoked key), or no worker that could
    /// take the turn has a login. Not the client's fault and not the
    /// client's to fix: the worker takes no turns until an operator logs it
    /// in again.
    LoginRequired,
    /// The provider rejected the request as malformed.
    BadRequest,
    /// The prompt does not fit the model's context window.
    ContextLengthExceeded,
    /// No answer in time.
    Timeout,
    /// The worker died or its channel closed mid-request.
    WorkerGone,
    /// The gateway is at its concurrency limit.
    Overloaded,
    /// The client fell too far behind the stream.
    SlowClient,
    /// The provider refused the request on a usage policy (`cyberPolicy`,
    /// `bioPolicy`, `misalignmentPolicyViolation`); the same prompt will be
    /// refused again, so it is the client's to change, not to retry.
    PolicyRefused,
    /// Codex started one of its own tools that act on the host, which the
    /// gateway does not allow (`PROXY_ENABLE_CODEX_TOOLS` is off).
    HostToolRefused,
    /// Anything else that went wrong in the worker or provider.
    Upstream,
}

/// A classified failure with a message fit for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, d: Duration) -> Failure {
        self.retry_after = Some(d);
        self
    }

    /// A quota failure with the time the account's quota comes back (unix
    /// seconds): in the message (codex names only a local time of day) and
    /// as `Retry-After`.
    pub fn resetting_at(mut self, resets_at: u64) -> Failure {
        let now = crate::calendar::unix_now();
        let wait = resets_at.saturating_sub(now).max(1);
        self.message = format!(
            "{} (quota resets at {}, in {wait} s)",
            self.message.trim_end(),
            crate::calendar::rfc3339(resets_at)
        );
        self.with_retry_after(Duration::from_secs(wait))
    }

    /// Classifies a turn error by its `codexErrorInfo`.
    pub fn from_turn_error(err: &TurnError) -> Failure {
        let info = err.codex_error_info.as_ref();
        let http_status = info.and_then(|v| {
            v.as_object()?
                .values()
                .find_map(|inner| inner.get("httpStatusCode")?.as_u64())
        });
        let tag = match info {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(map)) => map.keys().next().map(String::as_str).unwrap_or("other"),
            _ => "other",
        };
        let kind = match (tag, http_status) {
            ("usageLimitExceeded" | "sessionBudgetExceeded", _) => FailureKind::QuotaExceeded,
            // Measured on 0.171.0: `{"httpConnectionFailed":{"httpStatusCode":401}}`,
            // whatever the provider (an `env_key`, an API key or a ChatGPT
            // login in `auth.json`); `unauthorized` is the tag codex's core
            // has for it, should a later app-server pass it on.
            ("unauthorized", _) | (_, Some(401)) => FailureKind::LoginRequired,
            ("rateLimitExceeded" | "serverOverloaded", _) | (_, Some(429)) => {
                FailureKind::RateLimited
            }
            ("contextWindowExceeded", _) => FailureKind::ContextLengthExceeded,
            ("cyberPolicy" | "bioPolicy" | "misalignmentPolicyViolation", _) => {
                FailureKind::PolicyRefused
            }
            ("badRequest" | "other", _) | (_, Some(400))
                if is_client_fault(tag, http_status, &err.message) =>
            {
                FailureKind::BadRequest
            }
            _ => FailureKind::Upstream,
        };
        if kind == FailureKind::LoginRequired {
            return Failure::login_rejected();
        }
        let f = Failure::new(kind, err.message.clone());
        match f.kind {
            FailureKind::RateLimited => f.with_retry_after(Duration::from_secs(1)),
            _ => f,
        }
    }

    /// The provider refused the worker's credentials (HTTP 401). Codex's own
    /// message names the provider's URL and echoes its body: for the
    /// operator (the worker's log line), not for the client, who gets this.
    pub fn login_rejected() -> Failure {
        Failure::new(FailureKind::LoginRequired, LOGIN_REJECTED)
    }

    pub fn from_rpc(err: &RpcError) -> Failure {
        match err {
            RpcError::Timeout { .. } => Failure::new(FailureKind::Timeout, err.to_string()),
            RpcError::WorkerGone(_) => Failure::new(FailureKind::WorkerGone, err.to_string())
                .with_retry_after(Duration::from_secs(1)),
            // Codex's own ingress queue is full ("Server overloaded; retry later").
            RpcError::Remote { code: -32001, .. } => {
                Failure::new(FailureKind::Overloaded, err.to_string())
                    .with_retry_after(Duration::from_secs(1))
            }
            RpcError::Remote { .. } | RpcError::Decode { .. } => {
                Failure::new(FailureKind::Upstream, err.to_string())
            }
        }
    }
}

/// What the client of a turn whose worker's credentials were refused reads.
// True of both backends: an app-server worker also leaves the rotation until
// it has a new login; an exec turn's CLI is simply refused again.
const LOGIN_REJECTED: &str = "The model provider refused the Codex worker's credentials \
     (its login expired or was revoked): an operator must log it in again, and no other \
     worker could take this request.";

/// Codex reports a provider 400 as `other` with the provider's JSON error
/// body as the message (measured), but it also tags a dropped model stream
/// (`stream disconnected before completion`) as `other`: only the JSON body
/// marks the client's fault. `badRequest` is explicit; any non-400 status is
/// not the client's fault.
fn is_client_fault(tag: &str, status: Option<u64>, message: &str) -> bool {
    match status {
        Some(400) => true,
        Some(_) => false,
        None if tag == "badRequest" => true,
        None => serde_json::from_str::<Value>(message).is_ok_and(|v| v.get("error").is_some()),
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn classify(info: Value) -> FailureKind {
        Failure::from_turn_error(&TurnError {
            message: "m".into(),
            codex_error_info: Some(info),
        })
        .kind
    }

    #[test]
    fn provider_errors_are_classified_as_measured() {
        assert_eq!(
            classify(json!({"responseTooManyFailedAttempts": {"httpStatusCode": 429}})),
            FailureKind::RateLimited
        );
        assert_eq!(
            classify(json!("internalServerError")),
            FailureKind::Upstream
        );
        let provider_400 = TurnError {
            message: r#"{"error":{"message":"bad","type":"invalid_request_error"}}"#.into(),
            codex_error_info: Some(json!("other")),
        };
        assert_eq!(
            Failure::from_turn_error(&provider_400).kind,
            FailureKind::BadRequest
        );
        // A dropped model stream is also `other`, but not the client's fault.
        assert_eq!(classify(json!("other")), FailureKind::Upstream);
        assert_eq!(
            classify(json!("usageLimitExceeded")),
            FailureKind::QuotaExceeded
        );
        assert_eq!(
            classify(json!("contextWindowExceeded")),
            FailureKind::ContextLengthExceeded
        );
        // Added in 0.171.0 (`bioPolicy`) next to `cyberPolicy`: a refusal, not an outage.
        assert_eq!(classify(json!("bioPolicy")), FailureKind::PolicyRefused);
        assert_eq!(classify(json!("cyberPolicy")), FailureKind::PolicyRefused);
        // The worker's own credentials are bad: not the HTTP client's
        // fault, and the worker needs a new login.
        let rejected = Failure::from_turn_error(&TurnError {
            message: "unexpected status 401 Unauthorized: {\"error\":{\"code\":\"token_invalidated\"}}, url: http://10.0.0.1/v1/responses".into(),
            codex_error_info: Some(json!({"httpConnectionFailed": {"httpStatusCode": 401}})),
        });
        assert_eq!(rejected.kind, FailureKind::LoginRequired);
        assert!(
            !rejected.message.contains("10.0.0.1"),
            "{}",
            rejected.message
        );
        assert_eq!(classify(json!("unauthorized")), FailureKind::LoginRequired);
        // A 403 is not a login problem (a region or an organisation policy).
        assert_eq!(
            classify(json!({"httpConnectionFailed": {"httpStatusCode": 403}})),
            FailureKind::Upstream
        );
    }
}
