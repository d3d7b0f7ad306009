//! Parsing and validating a `POST /v1/responses` body into the neutral
//! [`Conversation`], plus what only the Responses renderer echoes back.
//!
//! `input` (a string or a list of items: messages, `function_call`,
//! `function_call_output`) becomes the conversation's messages;
//! `instructions` a system message; `max_output_tokens`,
//! `reasoning.effort`, `text.format`, `tools` (flat function definitions),
//! `tool_choice` and `parallel_tool_calls` their neutral counterparts.
//! Errors name the Responses API's own parameters. `previous_response_id`
//! and `store` are read here; the handler loads the conversation they name.

use serde_json::{json, Map, Value};

use crate::api::params::Member;

use crate::api::conversation::{
    AssistantToolCall, Conversation, ImageRef, Message, Part, ResponseFormat, Role, ToolChoice,
};
use crate::api::error::ApiError;
use crate::api::params::{self, opt_bool, opt_str, opt_uint};

/// A validated Responses request: the conversation, and what the response
/// object echoes.
#[derive(Debug, Clone)]
pub(super) struct ResponsesRequest {
    pub(super) conversation: Conversation,
    pub(super) instructions: Option<String>,
    /// The request's tools as sent, echoed in the response object.
    pub(super) tools: Value,
    /// `reasoning.summary` asked for summaries (`auto`, `concise`,
    /// `detailed`): only then are reasoning items sent, as OpenAI does.
    pub(super) reasoning_summary: bool,
    pub(super) previous_response_id: Option<String>,
    /// Keep the response (`store`, default true as OpenAI's).
    pub(super) store: bool,
    /// The request's input as items (a string input becomes a user
    /// message), for the store and `GET /v1/responses/{id}/input_items`.
    pub(super) input_items: Vec<Value>,
}

pub(super) fn parse(body: &[u8]) -> Result<ResponsesRequest, ApiError> {
    let obj = crate::api::json_object(body)?;
    let previous_response_id = opt_str(&obj, "previous_response_id")?;
    if previous_response_id.as_deref() == Some("") {
        return Err(ApiError::invalid(
            "previous_response_id",
            "`previous_response_id` must not be empty",
        ));
    }
    let store = opt_bool(&obj, "store")?.unwrap_or(true);
    let instructions = match obj.member("instructions") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "instructions",
                "`instructions` must be a string",
            ))
        }
    };
    let model = params::model(&obj)?;
    let mut messages = Vec::new();
    if let Some(i) = &instructions {
        messages.push(Message {
            role: Role::System,
            parts: vec![Part::Text(i.clone())],
            tool_calls: Vec::new(),
            tool_call_id: None,
        });
    }
    let input_items = match obj.member("input") {
        Some(Value::String(s)) => {
            messages.push(Message {
                role: Role::User,
                parts: vec![Part::Text(s.clone())],
                tool_calls: Vec::new(),
                tool_call_id: None,
            });
            vec![json!({"type": "message", "role": "user",
                        "content": [{"type": "input_text", "text": s}]})]
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                push_item(&mut messages, i, item)?;
            }
            items.clone()
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
    };
    let stream = opt_bool(&obj, "stream")?.unwrap_or(false);
    params::range(&obj, "temperature", 0.0, 2.0)?;
    params::range(&obj, "top_p", 0.0, 1.0)?;
    opt_str(&obj, "user")?;
    let parallel_tool_calls = opt_bool(&obj, "parallel_tool_calls")?;
    let max_tokens = opt_uint(&obj, "max_output_tokens")?;
    if max_tokens == Some(0) {
        return Err(ApiError::invalid(
            "max_output_tokens",
            "`max_output_tokens` must be at least 1",
        ));
    }
    let effort = match obj.member("reasoning") {
        Some(Value::Object(r)) => opt_str(r, "effort").map_err(|e| e.param("reasoning.effort"))?,
        _ => None,
    };
    let reasoning_effort = params::effort(effort, "reasoning.effort")?;
    let summary = match obj.member("reasoning") {
        Some(Value::Object(r)) => opt_str(r, "summary")
            .map_err(|e| e.param("reasoning.summary"))?
            .or(opt_str(r, "generate_summary").map_err(|e| e.param("reasoning.summary"))?),
        _ => None,
    };
    let reasoning_summary = match summary.as_deref() {
        None | Some("none") => false,
        Some("auto" | "concise" | "detailed") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "reasoning.summary",
                format!("`reasoning.summary` must be `auto`, `concise`, `detailed` or `none`, not `{other}`"),
            ))
        }
    };
    let response_format = parse_text_format(&obj)?;

    let tools_value = obj.member("tools").cloned().unwrap_or(Value::Null);
    let tools = match &tools_value {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let param = format!("tools[{i}]");
                if t.member("type").and_then(Value::as_str) != Some("function") {
                    return Err(ApiError::invalid(
                        format!("{param}.type"),
                        "only `function` tools are supported",
                    ));
                }
                params::function_tool(&param, t)
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(ApiError::invalid("tools", "`tools` must be an array")),
    };
    let tool_choice = match obj.member("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(v) => params::tool_choice("tool_choice", v, &tools)?,
    };
    Ok(ResponsesRequest {
        conversation: Conversation {
            model,
            messages,
            stream,
            n: 1,
            max_tokens,
            stop: Vec::new(),
            reasoning_effort,
            response_format,
            tools,
            tool_choice,
            parallel_tool_calls,
            calls_have_ids: true,
        },
        instructions,
        reasoning_summary,
        tools: if tools_value.is_null() {
            json!([])
        } else {
            tools_value
        },
        previous_response_id,
        store,
        input_items: with_item_ids(input_items),
    })
}

/// Input items as the store keeps them: each with an `id` (kept when the
/// client sent one), as `input_items` lists them.
fn with_item_ids(items: Vec<Value>) -> Vec<Value> {
    items
        .into_iter()
        .map(|mut item| {
            if let Value::Object(map) = &mut item {
                if !map.contains_key("id") {
                    let prefix = match map.member("type").and_then(Value::as_str) {
                        Some("function_call") => "fc",
                        Some("function_call_output") => "fco",
                        _ => "msg",
                    };
                    map.insert(
                        "id".into(),
                        json!(format!("{prefix}_{}", crate::api::ids::short_id())),
                    );
                }
                if !map.contains_key("type") {
                    map.insert("type".into(), json!("message"));
                }
                // OpenAI lists a message's content as parts, whichever form
                // the client sent.
                if map.member("type") == Some(&json!("message")) {
                    if let Some(Value::String(text)) = map.member("content") {
                        let kind = if map.member("role") == Some(&json!("assistant")) {
                            "output_text"
                        } else {
                            "input_text"
                        };
                        let parts = json!([{"type": kind, "text": text}]);
                        map.insert("content".into(), parts);
                    }
                }
            }
            item
        })
        .collect()
}

/// The messages of a stored conversation: each response's input items and
/// output items, oldest first, read the way a request's `input` is.
pub(super) fn history_of(chain: &[crate::store::StoredResponse]) -> Result<Vec<Message>, ApiError> {
    let mut messages = Vec::new();
    for r in chain {
        let inputs = r.input_items.as_array().map(Vec::as_slice).unwrap_or(&[]);
        // Output items other than messages and calls (none today) carry
        // nothing a rebuilt conversation could replay.
        let outputs = r.response["output"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|item| matches!(item["type"].as_str(), Some("message" | "function_call")));
        for (i, item) in inputs.iter().chain(outputs).enumerate() {
            push_item(&mut messages, i, item).map_err(|e| {
                ApiError::new(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    format!(
                        "Stored response {} could not be read back: {}",
                        r.id, e.message
                    ),
                )
            })?;
        }
    }
    Ok(messages)
}

/// `text.format`: `text`, `json_object`, or `json_schema` with its schema inline.
fn parse_text_format(obj: &Map<String, Value>) -> Result<ResponseFormat, ApiError> {
    let Some(format) = obj
        .member("text")
        .and_then(|t| t.member("format"))
        .filter(|f| !f.is_null())
    else {
        return Ok(ResponseFormat::Text);
    };
    match format.member("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let schema = format
                .member("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    ApiError::invalid("text.format.schema", "`schema` must be an object")
                })?;
            Ok(ResponseFormat::JsonSchema(schema.clone()))
        }
        _ => Err(ApiError::invalid(
            "text.format.type",
            "`text.format.type` must be `text`, `json_object` or `json_schema`",
        )),
    }
}

/// Appends input item `i`. Consecutive `function_call` items become one
/// assistant message with several calls, as a conversation has them.
fn push_item(messages: &mut Vec<Message>, i: usize, item: &Value) -> Result<(), ApiError> {
    let p = |field: &str| format!("input[{i}].{field}");
    let bad = |msg: &str| ApiError::invalid(format!("input[{i}]"), msg.to_owned());
    let kind = item
        .member("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "message" => {
            let role = match item.member("role") {
                None => return Err(bad("message items need a `role`")),
                Some(r) => match r.as_str() {
                    Some("system") => Role::System,
                    Some("developer") => Role::Developer,
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some(other) => {
                        return Err(ApiError::invalid(
                            p("role"),
                            format!("Invalid value: '{other}'. Supported values are: 'system', 'developer', 'user', 'assistant'."),
                        ))
                    }
                    None => {
                        return Err(ApiError::invalid(p("role"), "`role` must be a string"))
                    }
                },
            };
            let parts = match item.member("content") {
                Some(Value::String(s)) => vec![Part::Text(s.clone())],
                Some(Value::Array(parts)) => parts
                    .iter()
                    .enumerate()
                    .map(|(j, part)| parse_part(&format!("input[{i}].content[{j}]"), part))
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err(bad("message items need `content`")),
            };
            params::content_fits_role(&role, &parts, &p("content"))?;
            messages.push(Message {
                role,
                parts,
                tool_calls: Vec::new(),
                tool_call_id: None,
            });
        }
        "function_call" => {
            let id = item.member("call_id").and_then(Value::as_str);
            let name = item.member("name").and_then(Value::as_str);
            let (Some(id), Some(name)) = (id, name) else {
                return Err(bad("function_call items need `call_id` and `name`"));
            };
            let call = AssistantToolCall {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments: item
                    .member("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("{}")
                    .to_owned(),
            };
            match messages.last_mut() {
                Some(prev) if prev.role == Role::Assistant && !prev.tool_calls.is_empty() => {
                    prev.tool_calls.push(call)
                }
                _ => messages.push(Message {
                    role: Role::Assistant,
                    parts: Vec::new(),
                    tool_calls: vec![call],
                    tool_call_id: None,
                }),
            }
        }
        "function_call_output" => {
            let call_id = item
                .member("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid(
                        p("call_id"),
                        "function_call_output items need a string `call_id`",
                    )
                })?;
            let output = match item.member("output") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            messages.push(Message {
                role: Role::Tool,
                parts: vec![Part::Text(output)],
                tool_calls: Vec::new(),
                tool_call_id: Some(call_id.to_owned()),
            });
        }
        // Clients replay the reasoning items of earlier responses (the
        // Vercel AI SDK and openai-agents do with store: false); a summary is
        // not model input, and codex keeps its own reasoning per thread.
        "reasoning" => {
            if !item.member("summary").is_some_and(Value::is_array) {
                return Err(bad("reasoning items need a `summary` array"));
            }
        }
        other => return Err(bad(&format!("input item type `{other}` is not supported"))),
    }
    Ok(())
}

fn parse_part(param: &str, part: &Value) -> Result<Part, ApiError> {
    match part.member("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => part
            .member("text")
            .and_then(Value::as_str)
            .map(|t| Part::Text(t.to_owned()))
            .ok_or_else(|| {
                ApiError::invalid(format!("{param}.text"), "text parts need a string `text`")
            }),
        Some("input_image") => {
            let param = format!("{param}.image_url");
            let url = part
                .member("image_url")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid(param.clone(), "image parts need a string `image_url`")
                })?;
            params::image_url(url, &param)?;
            Ok(Part::Image(ImageRef {
                url: url.to_owned(),
                param,
            }))
        }
        Some(other) => Err(ApiError::invalid(
            format!("{param}.type"),
            format!(
                "content part type `{other}` is not supported; use `input_text` or `input_image`"
            ),
        )),
        None => Err(ApiError::invalid(
            format!("{param}.type"),
            "each content part needs a `type`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(v: Value) -> Result<ResponsesRequest, ApiError> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn input_items_become_the_conversation() {
        let r = parse_json(json!({
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
        }))
        .unwrap();
        let c = &r.conversation;
        assert_eq!(
            c.messages.len(),
            5,
            "system, user, one assistant with two calls, two tool results"
        );
        assert_eq!(c.messages[0].role, Role::System);
        assert_eq!(c.messages[2].tool_calls.len(), 2);
        assert_eq!(c.messages[4].tool_call_id.as_deref(), Some("c2"));
        assert_eq!(c.tools[0].name, "w");
        assert_eq!(c.max_tokens, Some(20));
        assert_eq!(c.reasoning_effort.as_deref(), Some("high"));
        assert_eq!(r.instructions.as_deref(), Some("Be brief."));
    }

    #[test]
    fn store_defaults_to_true_and_input_items_get_ids() {
        let r = parse_json(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}))
            .unwrap();
        assert!(r.store);
        assert_eq!(r.previous_response_id.as_deref(), Some("resp_1"));
        assert_eq!(r.input_items.len(), 1);
        assert_eq!(r.input_items[0]["content"][0]["text"], "hi");
        assert!(r.input_items[0]["id"].as_str().unwrap().starts_with("msg_"));
        let r = parse_json(json!({"model": "m", "store": false, "input": [
            {"id": "mine", "role": "user", "content": "a"},
            {"type": "function_call_output", "call_id": "c", "output": "o"}
        ]}))
        .unwrap();
        assert!(!r.store);
        assert_eq!(r.input_items[0]["id"], "mine");
        assert_eq!(
            r.input_items[0]["content"],
            json!([{"type": "input_text", "text": "a"}])
        );
        assert!(r.input_items[1]["id"].as_str().unwrap().starts_with("fco_"));
    }

    #[test]
    fn a_stored_conversation_reads_back_as_its_messages() {
        let stored = |id: &str, input: Value, output: Value| crate::store::StoredResponse {
            id: id.into(),
            owner: String::new(),
            parent: None,
            created_at: 0,
            input_items: input,
            response: json!({"output": output}),
        };
        let chain = [
            stored(
                "r1",
                json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]}]),
                json!([{"type": "message", "id": "m", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": "a", "annotations": []}]}]),
            ),
            stored(
                "r2",
                json!([{"type": "message", "role": "user", "content": "q2"}]),
                json!([{"type": "function_call", "id": "fc", "call_id": "c1", "name": "f", "arguments": "{}"}]),
            ),
        ];
        let m = history_of(&chain).unwrap();
        let roles: Vec<_> = m.iter().map(|m| m.role.clone()).collect();
        assert_eq!(
            roles,
            [Role::User, Role::Assistant, Role::User, Role::Assistant]
        );
        assert_eq!(m[1].text(), "a");
        assert_eq!(m[3].tool_calls[0].id, "c1");
    }

    #[test]
    fn errors_name_responses_parameters() {
        let param = |v: Value| parse_json(v).unwrap_err().param;
        assert_eq!(
            param(json!({"model": "m", "input": "x", "max_output_tokens": -1})).as_deref(),
            Some("max_output_tokens")
        );
        assert_eq!(param(json!({"model": "m"})).as_deref(), Some("input"));
        assert_eq!(
            param(json!({"model": "m", "input": "x", "previous_response_id": 7})).as_deref(),
            Some("previous_response_id")
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "previous_response_id": ""})).as_deref(),
            Some("previous_response_id")
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "store": "yes"})).as_deref(),
            Some("store")
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "reasoning": {"effort": "max"}})).as_deref(),
            Some("reasoning.effort")
        );
        // Positions are the client's own, whatever `instructions` adds.
        assert_eq!(
            param(json!({"model": "m", "instructions": "x", "input": [
                {"role": "user", "content": "hi"},
                {"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}
            ]}))
            .as_deref(),
            Some("input[1].content[0].image_url")
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "bad name"}]}))
                .as_deref(),
            Some("tools[0].name")
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "tools": [
                {"type": "function", "name": "ok"}, {"type": "function", "name": "apply_patch"}]}))
            .as_deref(),
            Some("tools[1].name")
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}))
                .as_deref(),
            Some("text.format.type")
        );
    }
}
