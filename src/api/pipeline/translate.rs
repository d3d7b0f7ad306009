//! A [`Conversation`] → the core's typed [`TurnRequest`].
//!
//! System and developer messages become the thread's developer instructions;
//! earlier messages become real conversation history (raw Responses items
//! injected with `thread/inject_items`), not a flattened text blob; the last
//! user message is the turn's input. When the conversation ends with tool
//! results, the whole conversation is history and the turn has no new input
//! (measured: codex then calls the model at once, with the tool output last).

use serde_json::{json, Value};

use crate::api::conversation::{Conversation, Message, Part, ResponseFormat, Role, ToolChoice};
use crate::core::TurnRequest;
use crate::protocol::{DynamicToolSpec, UserInput};

/// Builds the turn for one choice. `model` and `effort` are already resolved.
pub fn to_turn_request(req: &Conversation, model: String, effort: Option<String>) -> TurnRequest {
    let conversation: Vec<&Message> = req
        .messages
        .iter()
        .filter(|m| !matches!(m.role, Role::System | Role::Developer))
        .collect();
    let (history, input): (&[&Message], Vec<UserInput>) = match conversation.split_last() {
        Some((last, before)) if last.role == Role::User => (before, user_input(last)),
        _ => (&conversation[..], Vec::new()),
    };
    TurnRequest {
        model,
        effort,
        instructions: instructions(req),
        history: history.iter().flat_map(|m| history_items(m)).collect(),
        input,
        tools: tools(req),
        output_schema: match &req.response_format {
            ResponseFormat::JsonSchema(schema) => Some(schema.clone()),
            _ => None,
        },
    }
}

/// The thread's developer instructions: system and developer messages,
/// joined, with what `response_format: json_object` and `tool_choice` add.
pub(super) fn instructions(req: &Conversation) -> Option<String> {
    let mut instructions: Vec<String> = req
        .messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
        .map(Message::text)
        .filter(|t| !t.is_empty())
        .collect();
    if req.response_format == ResponseFormat::JsonObject {
        instructions.push("Respond with one valid JSON object and nothing else.".into());
    }
    match &req.tool_choice {
        ToolChoice::Required => {
            instructions.push("You must call one of the provided tools in this turn.".into())
        }
        ToolChoice::Function(name) => {
            instructions.push(format!("You must call the `{name}` tool in this turn."))
        }
        ToolChoice::Auto | ToolChoice::None => {}
    }
    (!instructions.is_empty()).then(|| instructions.join("\n\n"))
}

/// The client's tools as codex dynamic tools; `tool_choice: none` hides
/// them from the model entirely.
pub(super) fn tools(req: &Conversation) -> Vec<DynamicToolSpec> {
    if req.tool_choice == ToolChoice::None {
        return Vec::new();
    }
    req.tools
        .iter()
        .filter(|t| match &req.tool_choice {
            ToolChoice::Function(name) => &t.name == name,
            _ => true,
        })
        .map(|t| DynamicToolSpec {
            kind: "function".into(),
            name: t.name.clone(),
            description: t.description.clone(),
            input_schema: t.parameters.clone(),
        })
        .collect()
}

fn user_input(m: &Message) -> Vec<UserInput> {
    m.parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => UserInput::text(t.clone()),
            Part::Image(image) => UserInput::Image {
                url: image.url.clone(),
            },
        })
        .collect()
}

/// One chat message as Responses items.
fn history_items(m: &Message) -> Vec<Value> {
    match m.role {
        Role::User => {
            let content: Vec<Value> = m
                .parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => json!({"type": "input_text", "text": t}),
                    Part::Image(image) => json!({"type": "input_image", "image_url": image.url}),
                })
                .collect();
            vec![json!({"type": "message", "role": "user", "content": content})]
        }
        Role::Assistant => {
            let mut items = Vec::new();
            let text = m.text();
            if !text.is_empty() {
                items.push(json!({
                    "type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": text}]
                }));
            }
            for call in &m.tool_calls {
                items.push(json!({
                    "type": "function_call", "call_id": call.id, "name": call.name, "arguments": call.arguments
                }));
            }
            items
        }
        Role::Tool => vec![json!({
            "type": "function_call_output",
            "call_id": m.tool_call_id.clone().unwrap_or_default(),
            "output": m.text(),
        })],
        Role::System | Role::Developer => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::chat::ChatRequest;

    #[test]
    fn system_becomes_instructions_history_is_itemised_last_user_is_input() {
        let req = ChatRequest::parse(
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "one"},
                    {"role": "assistant", "content": "uno"},
                    {"role": "user", "content": "two"}
                ]
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
        .conversation;
        let t = to_turn_request(&req, "m".into(), None);
        assert_eq!(t.instructions.as_deref(), Some("Be terse."));
        assert_eq!(t.history.len(), 2);
        assert_eq!(t.history[0]["role"], "user");
        assert_eq!(t.history[1]["content"][0]["type"], "output_text");
        assert_eq!(t.input, vec![UserInput::text("two")]);
    }

    #[test]
    fn a_conversation_ending_in_tool_results_has_no_new_input() {
        let req = ChatRequest::parse(
            json!({
                "model": "m",
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
                ],
                "tools": [{"type": "function", "function": {"name": "w"}}]
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
        .conversation;
        let t = to_turn_request(&req, "m".into(), None);
        assert!(t.input.is_empty());
        assert_eq!(t.history[1]["type"], "function_call");
        assert_eq!(
            t.history[2],
            json!({"type": "function_call_output", "call_id": "call_1", "output": "sunny"})
        );
        assert_eq!(t.tools[0].name, "w");
    }
}
