//! The headers and the 429 body a client sees, in OpenAI's formats.
//!
//! OpenAI clients (the official SDKs, LangChain, ...) read `x-ratelimit-*` and
//! `Retry-After` to pace themselves, so the names, the units and the duration format
//! (`"1s"`, `"6m0s"`, `"20ms"`) follow OpenAI's API rather than an IETF draft.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use codex_layer_support::error_body;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};

use crate::{RateLimitStatus, RateLimited};

/// `x-ratelimit-limit-requests`: the quota's `max`.
pub const X_RATELIMIT_LIMIT_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-limit-requests");
/// `x-ratelimit-remaining-requests`: requests that could still be made now.
pub const X_RATELIMIT_REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-requests");
/// `x-ratelimit-reset-requests`: time until the bucket is full again, e.g. `"1s"`, `"6ms"`.
pub const X_RATELIMIT_RESET_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-reset-requests");

/// Sets the three `x-ratelimit-*` headers, replacing any the inner service set.
pub(crate) fn insert_headers(headers: &mut HeaderMap, status: &RateLimitStatus) {
    headers.insert(X_RATELIMIT_LIMIT_REQUESTS, HeaderValue::from(status.limit));
    headers.insert(
        X_RATELIMIT_REMAINING_REQUESTS,
        HeaderValue::from(status.remaining),
    );
    headers.insert(
        X_RATELIMIT_RESET_REQUESTS,
        ascii_value(format_duration(status.reset)),
    );
}

/// The 429 for `limited`, with `RateLimited` in its extensions.
pub(crate) fn too_many_requests(limited: &RateLimited) -> Response<Bytes> {
    let secs = retry_after_secs(limited.retry_after);
    let body = error_body(
        &format!("Rate limit reached for requests. Retry after {secs} s."),
        "requests",
        None,
        "rate_limit_exceeded",
    );
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    insert_headers(headers, &limited.status);
    res.extensions_mut().insert(*limited);
    res
}

/// Whole seconds, rounded up, never 0: `Retry-After: 0` makes clients retry in a loop.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// OpenAI's (Go's) duration format at millisecond precision, rounded up:
/// `"6ms"`, `"1s"`, `"1.5s"`, `"6m0s"`, `"1h2m3s"`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        let frac = format!("{frac:03}");
        let _ = write!(out, ".{}", frac.trim_end_matches('0'));
    }
    out.push('s');
    out
}

fn ascii_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("durations format as ASCII digits and letters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_openai_format() {
        let ms = Duration::from_millis;
        assert_eq!(format_duration(ms(6)), "6ms");
        assert_eq!(format_duration(Duration::from_micros(1)), "1ms");
        assert_eq!(format_duration(ms(999)), "999ms");
        assert_eq!(format_duration(ms(1000)), "1s");
        assert_eq!(format_duration(ms(1500)), "1.5s");
        assert_eq!(format_duration(ms(59_948)), "59.948s");
        assert_eq!(format_duration(ms(360_000)), "6m0s");
        assert_eq!(format_duration(ms(3_723_000)), "1h2m3s");
        assert_eq!(format_duration(ms(3_600_000)), "1h0m0s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
