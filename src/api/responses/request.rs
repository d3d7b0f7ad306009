//! A `POST /v1/responses` body → the same validated [`ChatRequest`] the chat
//! endpoint uses, so both run through one pipeline.
//!
//! `input` (a string or a list of items: messages, `function_call`,
//! `function_call_output`) becomes the message list; `instructions` becomes a
//! system message; `max_output_tokens`, `reasoning.effort`, `text.format`,
//! `tools`, `tool_choice` and `parallel_tool_calls` map to their chat
//! counterparts. The gateway keeps no response store, so
//! `previous_response_id` is refused with a 400 rather than silently ignored.

use serde_json::{json, Map, Value};

use crate::api::chat::ChatRequest;
use crate::api::error::ApiError;

/// The request plus what only the Responses output needs.
#[derive(Debug, Clone)]
pub(super) struct ResponsesRequest {
    pub(super) chat: ChatRequest,
    pub(super) instructions: Option<String>,
    /// The request's tools, echoed in the response object.
    pub(super) tools: Value,
}

pub(super) fn parse(body: &[u8]) -> Result<ResponsesRequest, ApiError> {
    let obj = crate::api::json_object(body)?;
    if obj
        .get("previous_response_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::invalid(
            "previous_response_id",
            "This gateway keeps no response store; send the whole conversation in `input`.",
        )
        .code("unsupported_parameter"));
    }
    let instructions = match obj.get("instructions") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "instructions",
                "`instructions` must be a string",
            ))
        }
    };
    let mut messages = Vec::new();
    if let Some(i) = &instructions {
        messages.push(json!({"role": "system", "content": i}));
    }
    match obj.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                messages.push(item_to_message(i, item)?);
            }
        }
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "input",
                "Missing required parameter: 'input'.",
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "input",
                "`input` must be a string or an array of items",
            ))
        }
    }
    // Merge consecutive function calls into one assistant message, as chat has them.
    let messages = merge_calls(messages);

    let mut chat = Map::new();
    chat.insert(
        "model".into(),
        obj.get("model").cloned().unwrap_or(Value::Null),
    );
    chat.insert("messages".into(), Value::Array(messages));
    for key in [
        "stream",
        "temperature",
        "top_p",
        "user",
        "parallel_tool_calls",
    ] {
        if let Some(v) = obj.get(key) {
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = obj.get("max_output_tokens") {
        chat.insert("max_completion_tokens".into(), v.clone());
    }
    if let Some(effort) = obj.get("reasoning").and_then(|r| r.get("effort")) {
        chat.insert("reasoning_effort".into(), effort.clone());
    }
    if let Some(format) = obj
        .get("text")
        .and_then(|t| t.get("format"))
        .filter(|f| !f.is_null())
    {
        let rf = match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => json!({"type": "json_schema", "json_schema": {
                "name": format.get("name").cloned().unwrap_or(json!("response")),
                "schema": format.get("schema").cloned().unwrap_or(Value::Null)
            }}),
            _ => format.clone(),
        };
        chat.insert("response_format".into(), rf);
    }
    let tools = obj.get("tools").cloned().unwrap_or_else(|| json!([]));
    if let Value::Array(items) = &tools {
        // Responses tools are flat ({type, name, parameters}); chat nests them under `function`.
        let chat_tools: Vec<Value> = items
            .iter()
            .map(|t| match t.get("type").and_then(Value::as_str) {
                Some("function") => json!({"type": "function", "function": {
                    "name": t.get("name").cloned().unwrap_or(Value::Null),
                    "description": t.get("description").cloned().unwrap_or(json!("")),
                    "parameters": t.get("parameters").cloned().unwrap_or(Value::Null),
                }}),
                _ => t.clone(),
            })
            .collect();
        chat.insert("tools".into(), Value::Array(chat_tools));
    } else if !tools.is_null() {
        return Err(ApiError::invalid("tools", "`tools` must be an array"));
    }
    if let Some(choice) = obj.get("tool_choice") {
        let c = match choice {
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
                json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or(Value::Null)}})
            }
            other => other.clone(),
        };
        chat.insert("tool_choice".into(), c);
    }
    let chat = ChatRequest::from_object(&chat).map_err(rename_param)?;
    Ok(ResponsesRequest {
        chat,
        instructions,
        tools: if tools.is_null() { json!([]) } else { tools },
    })
}

/// Chat parameter names in errors become the Responses API's.
fn rename_param(mut e: ApiError) -> ApiError {
    if let Some(p) = &e.param {
        let renamed = if let Some(rest) = p.strip_prefix("messages") {
            format!("input{rest}")
        } else if p == "max_completion_tokens" {
            "max_output_tokens".into()
        } else if p == "reasoning_effort" {
            "reasoning.effort".into()
        } else {
            p.clone()
        };
        e.param = Some(renamed);
    }
    e
}

fn item_to_message(i: usize, item: &Value) -> Result<Value, ApiError> {
    let bad = |msg: &str| ApiError::invalid(format!("input[{i}]"), msg.to_owned());
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "message" => {
            let role = item
                .get("role")
                .cloned()
                .ok_or_else(|| bad("message items need a `role`"))?;
            let content = match item.get("content") {
                Some(Value::String(s)) => json!(s),
                Some(Value::Array(parts)) => Value::Array(
                    parts
                        .iter()
                        .map(|p| match p.get("type").and_then(Value::as_str) {
                            Some("input_text" | "output_text" | "text") => {
                                json!({"type": "text", "text": p.get("text").cloned().unwrap_or(Value::Null)})
                            }
                            Some("input_image") => json!({"type": "image_url", "image_url": {
                                "url": p.get("image_url").cloned().unwrap_or(Value::Null)
                            }}),
                            _ => p.clone(),
                        })
                        .collect(),
                ),
                _ => return Err(bad("message items need `content`")),
            };
            Ok(json!({"role": role, "content": content}))
        }
        "function_call" => Ok(
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": item.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": item.get("arguments").cloned().unwrap_or(json!("{}"))
                }
            }]}),
        ),
        "function_call_output" => Ok(json!({
            "role": "tool",
            "tool_call_id": item.get("call_id").cloned().unwrap_or(Value::Null),
            "content": match item.get("output") {
                Some(Value::String(s)) => json!(s),
                Some(other) => json!(other.to_string()),
                None => json!(""),
            }
        })),
        other => Err(bad(&format!("input item type `{other}` is not supported"))),
    }
}

fn merge_calls(messages: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(messages.len());
    for m in messages {
        let is_call = m.get("tool_calls").is_some();
        if is_call {
            if let Some(prev) = out.last_mut().filter(|p| p.get("tool_calls").is_some()) {
                let calls = m["tool_calls"].as_array().cloned().unwrap_or_default();
                if let Some(arr) = prev["tool_calls"].as_array_mut() {
                    arr.extend(calls);
                }
                continue;
            }
        }
        out.push(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_items_become_the_chat_conversation() {
        let r = parse(
            json!({
                "model": "m", "instructions": "Be brief.",
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                    {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                    {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": "sun"},
                    {"type": "function_call_output", "call_id": "c2", "output": "rain"}
                ],
                "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
                "max_output_tokens": 20, "reasoning": {"effort": "high"}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let c = &r.chat;
        assert_eq!(
            c.messages.len(),
            5,
            "system, user, one assistant with two calls, two tool results"
        );
        assert_eq!(c.messages[2].tool_calls.len(), 2);
        assert_eq!(c.tools[0].name, "w");
        assert_eq!(c.max_tokens, Some(20));
        assert_eq!(c.reasoning_effort.as_deref(), Some("high"));
    }

    #[test]
    fn errors_name_responses_parameters() {
        let e = parse(br#"{"model": "m", "input": "x", "max_output_tokens": -1}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_output_tokens"));
        let e = parse(br#"{"model": "m"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        let e = parse(br#"{"model": "m", "input": "x", "previous_response_id": "resp_1"}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("previous_response_id"));
    }
}
