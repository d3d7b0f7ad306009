//! `codex exec --json` lines → the core's [`TurnEvent`]s.
//!
//! Measured on 0.171.0 against the offline model: one JSON object per line,
//! `thread.started`, `turn.started`, then `item.started` / `item.updated` /
//! `item.completed` (`item.type`: `agent_message` with its whole `text`,
//! `reasoning`, and host actions such as `command_execution`), and the end:
//! `turn.completed` with `usage` (`input_tokens`, `cached_input_tokens`,
//! `output_tokens`, `reasoning_output_tokens`; no total) or `error` +
//! `turn.failed` with `error.message`. exec sends no text deltas: an
//! agent message arrives whole, as one delta here. Errors carry only a
//! message (no `codexErrorInfo`), so they are classified by it.

use std::time::Duration;

use serde_json::Value;

use crate::core::{Failure, FailureKind, TurnEvent, Usage};

/// Item types that stay inside the conversation. Anything else (shell
/// commands, file changes, MCP and web search calls, and whatever a later
/// CLI adds) acts on the host and fails the turn unless host tools are on.
const CONVERSATION_ITEMS: &[&str] = &["agent_message", "reasoning", "todo_list", "error"];

/// What one line means for the turn.
#[derive(Debug, PartialEq)]
pub(super) enum Line {
    /// Events for the reader, in order.
    Events(Vec<TurnEvent>),
    /// Codex started a host action: fail and kill the turn.
    HostItem(String),
    /// Nothing for the reader (bookkeeping, a line that is not JSON).
    Nothing,
}

/// Maps one stdout line.
pub(super) fn map_line(line: &str) -> Line {
    let Ok(event) = serde_json::from_str::<Value>(line) else {
        return Line::Nothing;
    };
    let str_at = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    match event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        kind @ ("item.started" | "item.updated" | "item.completed") => {
            let item = event.get("item").cloned().unwrap_or_default();
            let item_type = str_at(&item, "type").unwrap_or_default();
            if !CONVERSATION_ITEMS.contains(&item_type.as_str()) {
                return Line::HostItem(item_type);
            }
            if kind != "item.completed" {
                return Line::Nothing;
            }
            let text = str_at(&item, "text").filter(|t| !t.is_empty());
            match (item_type.as_str(), text) {
                ("agent_message", Some(text)) => Line::Events(vec![TurnEvent::TextDelta(text)]),
                ("reasoning", Some(text)) => Line::Events(vec![TurnEvent::ReasoningDelta(text)]),
                _ => Line::Nothing,
            }
        }
        "turn.completed" => {
            let u = event.get("usage").cloned().unwrap_or_default();
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            let usage = Usage {
                input_tokens: n("input_tokens"),
                cached_input_tokens: n("cached_input_tokens"),
                output_tokens: n("output_tokens"),
                reasoning_output_tokens: n("reasoning_output_tokens"),
                // exec reports no total; app-server's is input + output.
                total_tokens: n("input_tokens") + n("output_tokens"),
            };
            Line::Events(vec![TurnEvent::Usage(Box::new(usage)), TurnEvent::Finished])
        }
        "turn.failed" => {
            let message = event
                .get("error")
                .and_then(|e| str_at(e, "message"))
                .unwrap_or_else(|| "codex exec failed the turn".into());
            Line::Events(vec![TurnEvent::Failed(Box::new(classify(&message)))])
        }
        _ => Line::Nothing,
    }
}

/// Classifies an exec error message into the failure classes the app-server
/// path derives from `codexErrorInfo`, so both backends answer a provider
/// error with the same status. The messages are codex's (measured):
/// `exceeded retry limit, last status: 429 Too Many Requests`; a provider
/// 400 as the provider's JSON error body; `stream disconnected before
/// completion: ...`; a 5xx as a generic "high demand" line; a provider 401
/// as `unexpected status 401 Unauthorized: <body>, url: <provider url>`.
pub fn classify(message: &str) -> Failure {
    let lower = message.to_ascii_lowercase();
    if lower.contains("401 unauthorized") {
        // The CLI's credentials, not the client's; and the message names the
        // provider's URL, which stays out of the client's answer.
        tracing::error!(message, "the model provider refused the exec backend's Codex credentials; log the CLI in again (codex login)");
        return Failure::login_rejected();
    }
    let kind = if lower.contains("usage limit") || lower.contains("quota") {
        FailureKind::QuotaExceeded
    } else if lower.contains("429") || lower.contains("too many requests") {
        FailureKind::RateLimited
    } else if lower.contains("context window") || lower.contains("context_length_exceeded") {
        FailureKind::ContextLengthExceeded
    } else if serde_json::from_str::<Value>(message).is_ok_and(|v| v.get("error").is_some())
        || lower.contains("400 bad request")
    {
        FailureKind::BadRequest
    } else {
        FailureKind::Upstream
    };
    let failure = Failure::new(kind, message);
    match failure.kind {
        FailureKind::RateLimited => failure.with_retry_after(Duration::from_secs(1)),
        _ => failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_is_the_workers_not_the_clients_and_hides_the_provider_url() {
        // As codex exec 0.171.0 prints it (tests/parity.rs `provider_401`).
        let f = classify(
            "unexpected status 401 Unauthorized: Your authentication token has been \
             invalidated. Please try signing in again., url: http://127.0.0.1:33133/v1/responses",
        );
        assert_eq!(f.kind, FailureKind::LoginRequired);
        assert!(!f.message.contains("http://"), "{}", f.message);
    }

    #[test]
    fn a_whole_message_and_the_usage_end_the_turn() {
        assert_eq!(
            map_line(
                r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"w1 w2"}}"#
            ),
            Line::Events(vec![TurnEvent::TextDelta("w1 w2".into())])
        );
        assert_eq!(
            map_line(
                r#"{"type":"turn.completed","usage":{"input_tokens":208,"cached_input_tokens":8,"cache_write_input_tokens":0,"output_tokens":3,"reasoning_output_tokens":1}}"#
            ),
            Line::Events(vec![
                TurnEvent::Usage(Box::new(Usage {
                    input_tokens: 208,
                    cached_input_tokens: 8,
                    output_tokens: 3,
                    reasoning_output_tokens: 1,
                    total_tokens: 211,
                })),
                TurnEvent::Finished
            ])
        );
        assert_eq!(map_line(r#"{"type":"turn.started"}"#), Line::Nothing);
        assert_eq!(map_line("WARNING: not json"), Line::Nothing);
    }

    #[test]
    fn a_host_action_is_refused_when_it_starts() {
        assert_eq!(
            map_line(
                r#"{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"ls"}}"#
            ),
            Line::HostItem("command_execution".into())
        );
        assert_eq!(
            map_line(r#"{"type":"item.started","item":{"type":"something_new"}}"#),
            Line::HostItem("something_new".into()),
            "an item type nobody classified is refused, not passed"
        );
    }

    #[test]
    fn provider_errors_are_classified_like_the_app_server_path() {
        let failed = |m: &str| {
            let line = serde_json::json!({"type": "turn.failed", "error": {"message": m}});
            match map_line(&line.to_string()) {
                Line::Events(e) => match &e[..] {
                    [TurnEvent::Failed(f)] => f.kind,
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            failed("exceeded retry limit, last status: 429 Too Many Requests"),
            FailureKind::RateLimited
        );
        assert_eq!(
            failed(
                r#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":"invalid_request"}}"#
            ),
            FailureKind::BadRequest
        );
        assert_eq!(
            failed("stream disconnected before completion: Transport error"),
            FailureKind::Upstream
        );
        assert_eq!(
            failed("We’re currently experiencing high demand, which may cause temporary errors."),
            FailureKind::Upstream
        );
    }
}
