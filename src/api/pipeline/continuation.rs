//! Which parked turn a request continues: the key a turn is parked under,
//! and the tool results a request brings.
//!
//! A response that ends on structured tool calls leaves its turn parked
//! (`core::ParkedTurns`). The client's next request continues that turn if
//! it carries the results of exactly those calls (matched by call id) on top
//! of the same conversation: same model, same messages before the calls.
//! Anything else rebuilds the conversation on a fresh thread.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use crate::api::conversation::{Conversation, Message, Role};

/// What a request that continues a turn brings.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    /// The key its turn would be parked under.
    pub key: u64,
    /// `(call_id, output)` in the request's order.
    pub outputs: Vec<(String, String)>,
}

impl Results {
    pub fn call_ids(&self) -> impl Iterator<Item = &str> + Clone {
        self.outputs.iter().map(|(id, _)| id.as_str())
    }
}

/// The conversation's share of a park key, hashed when the request arrives:
/// the calls a response ends on are only known at its end, and keeping the
/// hash instead of a copy of the messages (images inlined as data URLs can
/// be megabytes) costs nothing to hold.
#[derive(Clone)]
pub struct ConversationKey(DefaultHasher);

impl ConversationKey {
    pub fn of(req: &Conversation) -> ConversationKey {
        ConversationKey::over(&req.model, &req.messages)
    }

    fn over(model: &str, messages: &[Message]) -> ConversationKey {
        let mut h = DefaultHasher::new();
        model.hash(&mut h);
        messages.hash(&mut h);
        ConversationKey(h)
    }

    /// The key of a turn this conversation's response ended with `calls` on.
    pub fn with_calls(&self, calls: &[String]) -> u64 {
        let mut h = self.0.clone();
        calls.hash(&mut h);
        h.finish()
    }
}

/// The results a request brings for the calls of its last assistant
/// message, if it ends with tool messages.
pub fn results_of(req: &Conversation) -> Option<Results> {
    let last_assistant = req
        .messages
        .iter()
        .rposition(|m| m.role == Role::Assistant && !m.tool_calls.is_empty())?;
    let trailing = &req.messages[last_assistant + 1..];
    if trailing.is_empty() || trailing.iter().any(|m| m.role != Role::Tool) {
        return None;
    }
    let calls: Vec<String> = req.messages[last_assistant]
        .tool_calls
        .iter()
        .map(|c| c.id.clone())
        .collect();
    let outputs = trailing
        .iter()
        .map(|m| (m.tool_call_id.clone().unwrap_or_default(), m.text()))
        .collect();
    Some(Results {
        key: ConversationKey::over(&req.model, &req.messages[..last_assistant]).with_calls(&calls),
        outputs,
    })
}

/// The key of a parked turn this request moves on from: its last assistant
/// message made tool calls, but the request does not end with their results
/// (the client wrote something else, or treated a call as its final answer).
/// Nobody will continue that turn, so it is released now, not at expiry.
pub(super) fn abandoned_key(req: &Conversation) -> Option<u64> {
    if results_of(req).is_some() {
        return None;
    }
    let last_assistant = req
        .messages
        .iter()
        .rposition(|m| m.role == Role::Assistant && !m.tool_calls.is_empty())?;
    let calls: Vec<String> = req.messages[last_assistant]
        .tool_calls
        .iter()
        .map(|c| c.id.clone())
        .collect();
    Some(ConversationKey::over(&req.model, &req.messages[..last_assistant]).with_calls(&calls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::chat::ChatRequest;
    use serde_json::json;

    fn conv(messages: serde_json::Value) -> Conversation {
        ChatRequest::parse(
            json!({"model": "m", "messages": messages, "tools": [{"type": "function", "function": {"name": "w"}}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
        .conversation
    }

    #[test]
    fn the_results_request_finds_the_key_its_calls_were_parked_under() {
        let first = conv(json!([{"role": "user", "content": "weather?"}]));
        let parked = ConversationKey::of(&first).with_calls(&["call_1".into(), "call_2".into()]);
        let next = conv(json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
            {"role": "tool", "tool_call_id": "call_1", "content": "sun"}
        ]));
        let results = results_of(&next).expect("ends with tool results");
        assert_eq!(results.key, parked);
        assert_eq!(
            results.outputs,
            vec![
                ("call_2".into(), "rain".into()),
                ("call_1".into(), "sun".into())
            ]
        );
        // A different conversation before the calls is a different key.
        let other = conv(json!([
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sun"}
        ]));
        assert_ne!(results_of(&other).unwrap().key, parked);
    }

    #[test]
    fn a_request_that_moves_on_from_calls_names_the_turn_it_abandons() {
        let first = conv(json!([{"role": "user", "content": "weather?"}]));
        let parked = ConversationKey::of(&first).with_calls(&["call_1".into()]);
        let call = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]});
        let moved_on = conv(json!([
            {"role": "user", "content": "weather?"}, call,
            {"role": "user", "content": "never mind"}
        ]));
        assert_eq!(abandoned_key(&moved_on), Some(parked));
        // Continuing it, or a conversation without calls, abandons nothing.
        let continued = conv(json!([
            {"role": "user", "content": "weather?"}, call,
            {"role": "tool", "tool_call_id": "call_1", "content": "sun"}
        ]));
        assert_eq!(abandoned_key(&continued), None);
        assert_eq!(abandoned_key(&first), None);
    }

    #[test]
    fn a_request_that_does_not_end_with_tool_results_continues_nothing() {
        assert_eq!(
            results_of(&conv(json!([{"role": "user", "content": "hi"}]))),
            None
        );
        assert_eq!(
            results_of(&conv(json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sun"},
                {"role": "user", "content": "and tomorrow?"}
            ]))),
            None
        );
    }
}
