//! The one place where failures become OpenAI-shaped JSON error responses.
//!
//! Envelope: `{"error": {"message", "type", "param", "code"}}`. The mapping
//! from core failures to statuses is the table in `docs/errors.md`.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::ApiBody;
use crate::core::{Failure, FailureKind};

/// Marks a response as one of the API's own rejections that metrics count,
/// with its cause label (`codex_gateway_http_rejections_total{cause}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection(pub &'static str);

/// An error a client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after: Option<Duration>,
    /// `x-should-retry: false` where retrying cannot help.
    pub should_retry: Option<bool>,
    /// The rejection cause metrics count this error under, if it is one of
    /// the gateway's own load-shedding or limit rejections.
    pub counted_as: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
            should_retry: None,
            counted_as: None,
        }
    }

    /// A 400 `invalid_request_error` naming the offending parameter.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
            .param(param)
            .code("invalid_request_error")
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message).code("not_found")
    }

    pub fn model_not_found(model: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .param("model")
        .code("model_not_found")
    }

    pub fn method_not_allowed(allowed: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("Method not allowed; use {allowed}."),
        )
        .code("method_not_allowed")
    }

    pub fn param(mut self, p: impl Into<String>) -> ApiError {
        self.param = Some(p.into());
        self
    }

    pub fn code(mut self, c: &'static str) -> ApiError {
        self.code = Some(c);
        self
    }

    /// Counts this error in metrics as a rejection with `cause`.
    pub fn counted_as(mut self, cause: &'static str) -> ApiError {
        self.counted_as = Some(cause);
        self
    }

    /// The answer to a WebSocket handshake on `/v1/responses`: 426, the
    /// status Codex CLI takes as "use HTTP" for its Responses transport.
    pub fn websocket_refused() -> ApiError {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "invalid_request_error",
            "WebSocket is not supported on /v1/responses: send the request as an HTTP POST \
             (with \"stream\": true for Server-Sent Events).",
        )
        .code("websocket_not_supported")
    }

    pub fn retry_after(mut self, d: Duration) -> ApiError {
        self.retry_after = Some(d);
        self
    }

    /// The JSON envelope, also used as the `data:` of an SSE error frame.
    pub fn body_json(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    pub fn into_response(self) -> Response<ApiBody> {
        let body = serde_json::to_vec(&self.body_json()).expect("json values serialize");
        let mut res = Response::new(ApiBody::Body(Full::new(Bytes::from(body))));
        *res.status_mut() = self.status;
        // Lets the metrics layer count the gateway's own rejections by cause.
        if let Some(cause) = self.counted_as {
            res.extensions_mut().insert(Rejection(cause));
        }
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(d) = self.retry_after {
            // Whole seconds, rounded up, never 0: clients treat 0 as "now".
            let secs = d.as_millis().div_ceil(1000).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
        }
        if let Some(retry) = self.should_retry {
            headers.insert(
                "x-should-retry",
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        res
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> ApiError {
        let (status, kind, code) = match f.kind {
            FailureKind::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "worker_not_ready",
            ),
            FailureKind::Overloaded => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "overloaded",
            ),
            FailureKind::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            FailureKind::QuotaExceeded => (
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "insufficient_quota",
            ),
            // The worker's credentials, not the client's: a 401 would tell
            // the client its own key is wrong. 503 as for a worker that is
            // not ready, with a code that says what the operator must do.
            FailureKind::LoginRequired => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "worker_login_required",
            ),
            FailureKind::BadRequest => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "upstream_bad_request",
            ),
            FailureKind::ContextLengthExceeded => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "context_length_exceeded",
            ),
            // The wording OpenAI uses when a prompt is refused on policy.
            FailureKind::PolicyRefused => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "content_policy_violation",
            ),
            FailureKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", "timeout"),
            FailureKind::WorkerGone => (StatusCode::BAD_GATEWAY, "api_error", "worker_gone"),
            FailureKind::SlowClient => (StatusCode::BAD_GATEWAY, "api_error", "stream_overflow"),
            FailureKind::HostToolRefused => {
                (StatusCode::BAD_GATEWAY, "api_error", "host_tool_refused")
            }
            FailureKind::Upstream => (StatusCode::BAD_GATEWAY, "api_error", "upstream_error"),
        };
        let mut e = ApiError::new(status, kind, f.message).code(code);
        e.counted_as = match f.kind {
            FailureKind::NotReady => Some("not_ready"),
            FailureKind::Overloaded => Some("overload"),
            // The account's quota or the provider's rate limit: alerts watch these.
            FailureKind::QuotaExceeded => Some("quota"),
            FailureKind::RateLimited => Some("upstream_rate_limit"),
            FailureKind::LoginRequired => Some("login_required"),
            _ => None,
        };
        e.retry_after = f.retry_after;
        // Retrying soon cannot help: the quota resets when it resets, and a
        // login needs an operator (another worker was tried already).
        if matches!(
            f.kind,
            FailureKind::QuotaExceeded | FailureKind::LoginRequired
        ) {
            e.should_retry = Some(false);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_four_fields_openai_clients_read() {
        let e = ApiError::invalid("temperature", "temperature must be between 0 and 2");
        let v = e.body_json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "temperature");
        assert_eq!(v["error"]["message"], "temperature must be between 0 and 2");
        assert!(v["error"].get("code").is_some());
    }

    #[test]
    fn quota_and_provider_rate_limits_are_counted_for_the_alerts() {
        use crate::core::{Failure, FailureKind};
        let quota = ApiError::from(Failure::new(FailureKind::QuotaExceeded, "no quota"));
        assert_eq!(quota.counted_as, Some("quota"));
        let limited = ApiError::from(Failure::new(FailureKind::RateLimited, "slow down"));
        assert_eq!(limited.counted_as, Some("upstream_rate_limit"));
        let other = ApiError::from(Failure::new(FailureKind::Upstream, "boom"));
        assert_eq!(other.counted_as, None);
    }

    #[test]
    fn retry_after_is_rounded_up_and_never_zero() {
        let res = ApiError::from(
            Failure::new(FailureKind::NotReady, "x").with_retry_after(Duration::from_millis(1)),
        )
        .into_response();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "1");
        let res = ApiError::from(
            Failure::new(FailureKind::RateLimited, "x")
                .with_retry_after(Duration::from_millis(2100)),
        )
        .into_response();
        assert_eq!(res.headers()["retry-after"], "3");
    }

    #[test]
    fn load_shedding_rejections_carry_their_metrics_cause() {
        let res = ApiError::from(Failure::new(FailureKind::Overloaded, "x")).into_response();
        assert_eq!(
            res.extensions().get::<Rejection>(),
            Some(&Rejection("overload"))
        );
        let res = ApiError::from(Failure::new(FailureKind::NotReady, "x")).into_response();
        assert_eq!(
            res.extensions().get::<Rejection>(),
            Some(&Rejection("not_ready"))
        );
        // A bad request is the client's mistake, not a rejection by the gateway.
        let res = ApiError::invalid("n", "bad").into_response();
        assert_eq!(res.extensions().get::<Rejection>(), None);
        let res = ApiError::from(Failure::new(FailureKind::Upstream, "x")).into_response();
        assert_eq!(res.extensions().get::<Rejection>(), None);
    }

    #[test]
    fn a_refused_host_tool_is_a_bad_gateway_with_its_own_code() {
        let e = ApiError::from(Failure::new(FailureKind::HostToolRefused, "stopped"));
        let v = e.body_json();
        assert_eq!(v["error"]["code"], "host_tool_refused");
        assert_eq!(v["error"]["type"], "api_error");
        assert_eq!(e.into_response().status(), 502);
    }

    #[test]
    fn a_policy_refusal_is_the_clients_request_to_change() {
        let e = ApiError::from(Failure::new(FailureKind::PolicyRefused, "refused"));
        let v = e.body_json();
        assert_eq!(v["error"]["code"], "content_policy_violation");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(e.into_response().status(), 400);
    }

    #[test]
    fn a_refused_worker_login_is_a_503_that_is_not_the_clients_key() {
        let res = ApiError::from(Failure::new(FailureKind::LoginRequired, "x")).into_response();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["x-should-retry"], "false");
        assert_eq!(
            res.extensions().get::<Rejection>(),
            Some(&Rejection("login_required"))
        );
        let e = ApiError::from(Failure::new(FailureKind::LoginRequired, "x"));
        assert_eq!(e.body_json()["error"]["code"], "worker_login_required");
    }

    #[test]
    fn quota_errors_say_retrying_cannot_help() {
        let res = ApiError::from(Failure::new(FailureKind::QuotaExceeded, "x")).into_response();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["x-should-retry"], "false");
    }
}
