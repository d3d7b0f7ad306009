//! Parsing Ollama's `POST /api/chat` and `POST /api/generate` bodies into
//! the neutral [`Conversation`].
//!
//! Each body is rewritten into the chat-completions object it means and
//! handed to the chat parser, so validation (roles, stop sequences, token
//! limits, tools, response formats) is the one chat already does and the
//! dialects cannot drift. What is Ollama's own is mapped here: `stream`
//! defaulting to true, `images` as bare base64, `format`, `options`, tool
//! calls with object arguments and tool results named by `tool_name`.

use serde_json::{json, Map, Value};

use crate::api::params::Member;

use crate::api::chat::ChatRequest;
use crate::api::conversation::Conversation;
use crate::api::error::ApiError;
use crate::api::params::opt_bool;

/// A validated `/api/chat` or `/api/generate` request.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaRequest {
    pub conversation: Conversation,
    /// The model name as the client sent it, echoed in every answer.
    pub model: String,
}

impl OllamaRequest {
    /// `POST /api/chat`: `messages` carry the whole history. `None`: no
    /// messages, which Ollama clients send to load a model; there is
    /// nothing to run. The model name as sent comes along either way.
    pub fn chat(body: &[u8]) -> Result<(Option<OllamaRequest>, String), ApiError> {
        let obj = crate::api::json_object(body)?;
        let model = model_name(&obj)?;
        let messages = match obj.member("messages") {
            Some(Value::Array(m)) if !m.is_empty() => m,
            None | Some(Value::Null) | Some(Value::Array(_)) => return Ok((None, model)),
            Some(_) => return Err(ApiError::invalid("messages", "`messages` must be an array")),
        };
        let mut chat = Vec::with_capacity(messages.len());
        // Ollama's tool results name the function, not a call id: each is
        // matched to the latest assistant message's call of that name.
        let mut open_calls: Vec<(String, String)> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            chat.push(message(i, m, &mut open_calls)?);
        }
        Ok((Some(OllamaRequest::build(&obj, Value::Array(chat))?), model))
    }

    /// `POST /api/generate`: a `prompt` (and optional `system`), one
    /// exchange. `None`: the prompt is empty (a model load, as for chat).
    pub fn generate(body: &[u8]) -> Result<(Option<OllamaRequest>, String), ApiError> {
        let obj = crate::api::json_object(body)?;
        let model = model_name(&obj)?;
        for field in ["suffix", "context"] {
            if obj.get(field).is_some_and(|v| !v.is_null()) {
                return Err(ApiError::invalid(
                    field,
                    format!("`{field}` is not supported by this gateway"),
                ));
            }
        }
        let prompt = match obj.member("prompt") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(ApiError::invalid("prompt", "`prompt` must be a string")),
        };
        if prompt.is_empty() {
            return Ok((None, model));
        }
        let mut messages = Vec::new();
        match obj.member("system") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if !s.is_empty() => {
                messages.push(json!({"role": "system", "content": s}))
            }
            Some(Value::String(_)) => {}
            Some(_) => return Err(ApiError::invalid("system", "`system` must be a string")),
        }
        let user = json!({"role": "user", "content": prompt, "images": obj.member("images")});
        messages.push(message(messages.len(), &user, &mut Vec::new())?);
        Ok((
            Some(OllamaRequest::build(&obj, Value::Array(messages))?),
            model,
        ))
    }

    fn build(obj: &Map<String, Value>, messages: Value) -> Result<OllamaRequest, ApiError> {
        let model = model_name(obj)?;
        let mut chat = Map::new();
        chat.insert("model".into(), json!(strip_latest(&model)));
        chat.insert("messages".into(), messages);
        // Ollama streams unless told otherwise.
        let stream = opt_bool(obj, "stream")?.unwrap_or(true);
        chat.insert("stream".into(), json!(stream));
        if let Some(format) = response_format(obj.member("format"))? {
            chat.insert("response_format".into(), format);
        }
        if let Some(tools) = obj.member("tools").filter(|v| !v.is_null()) {
            chat.insert("tools".into(), tools.clone());
        }
        options(obj.member("options"), &mut chat)?;
        let mut parsed = ChatRequest::from_object(&chat)?;
        // The gateway names its own call ids here, so a turn paused on
        // calls cannot be matched by the client's next request; it is
        // rebuilt from the history instead of parked.
        parsed.conversation.calls_have_ids = false;
        Ok(OllamaRequest {
            conversation: parsed.conversation,
            model,
        })
    }
}

/// The model as sent; required, as Ollama requires it.
fn model_name(obj: &Map<String, Value>) -> Result<String, ApiError> {
    match obj.member("model") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(ApiError::invalid("model", "model is required")),
        Some(_) => Err(ApiError::invalid("model", "`model` must be a string")),
    }
}

/// Ollama names carry a tag; every model here is its `latest`.
pub(super) fn strip_latest(model: &str) -> &str {
    model.strip_suffix(":latest").unwrap_or(model)
}

/// One Ollama message as a chat message.
fn message(i: usize, m: &Value, open_calls: &mut Vec<(String, String)>) -> Result<Value, ApiError> {
    let p = |field: &str| format!("messages[{i}].{field}");
    let Value::Object(m) = m else {
        return Err(ApiError::invalid(
            format!("messages[{i}]"),
            "each message must be an object",
        ));
    };
    let role = m.member("role").cloned().unwrap_or(Value::Null);
    let text = match m.member("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                p("content"),
                "`content` must be a string",
            ))
        }
    };
    let images = match m.member("images") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(j, img)| match img {
                Value::String(b64) if !b64.is_empty() => Ok(json!({
                    "type": "image_url",
                    "image_url": {"url": format!("data:{};base64,{b64}", image_type(b64))},
                })),
                _ => Err(ApiError::invalid(
                    p(&format!("images[{j}]")),
                    "each image must be a base64 string",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::invalid(p("images"), "`images` must be an array")),
    };
    let content = if images.is_empty() {
        json!(text)
    } else {
        let mut parts = vec![json!({"type": "text", "text": text})];
        parts.extend(images);
        Value::Array(parts)
    };
    let mut out = json!({"role": role, "content": content});
    match role.as_str() {
        Some("assistant") => {
            open_calls.clear();
            if let Some(calls) = m.member("tool_calls").filter(|v| !v.is_null()) {
                let Value::Array(calls) = calls else {
                    return Err(ApiError::invalid(
                        p("tool_calls"),
                        "`tool_calls` must be an array",
                    ));
                };
                let mut chat_calls = Vec::new();
                for (j, call) in calls.iter().enumerate() {
                    let f = call.member("function");
                    let name = f
                        .and_then(|f| f.member("name"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            ApiError::invalid(
                                p(&format!("tool_calls[{j}].function.name")),
                                "each tool call needs a function `name`",
                            )
                        })?;
                    // Ollama sends arguments as an object; chat as JSON text.
                    let arguments = match f.and_then(|f| f.member("arguments")) {
                        Some(Value::String(s)) => s.clone(),
                        None | Some(Value::Null) => "{}".to_owned(),
                        Some(v) => v.to_string(),
                    };
                    let id = format!("call_{i}_{j}");
                    open_calls.push((name.to_owned(), id.clone()));
                    chat_calls.push(json!({
                        "id": id, "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }));
                }
                out["tool_calls"] = Value::Array(chat_calls);
            }
        }
        Some("tool") => {
            let name = m.member("tool_name").and_then(Value::as_str);
            // The call of that name, else the oldest unanswered one.
            let at = name
                .and_then(|n| open_calls.iter().position(|(c, _)| c == n))
                .or_else(|| (!open_calls.is_empty()).then_some(0));
            let id = match at {
                Some(at) => open_calls.remove(at).1,
                None => format!("call_{}", name.unwrap_or("tool")),
            };
            out["tool_call_id"] = json!(id);
        }
        _ => {}
    }
    Ok(out)
}

/// The media type of a base64 image, from its first bytes (Ollama sends
/// none). PNG when unrecognised.
fn image_type(b64: &str) -> &'static str {
    if b64.starts_with("/9j/") {
        "image/jpeg"
    } else if b64.starts_with("R0lGOD") {
        "image/gif"
    } else if b64.starts_with("UklGR") {
        "image/webp"
    } else {
        "image/png"
    }
}

/// `format`: `"json"` or a JSON schema.
fn response_format(format: Option<&Value>) -> Result<Option<Value>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(json!({"type": "json_object"}))),
        Some(Value::Object(schema)) => Ok(Some(json!({
            "type": "json_schema",
            "json_schema": {"name": "format", "schema": schema},
        }))),
        Some(_) => Err(ApiError::invalid(
            "format",
            "`format` must be \"json\" or a JSON schema object",
        )),
    }
}

/// `options`: what the gateway can honour is mapped (`num_predict`, `stop`,
/// `temperature`, `top_p`, `seed`); the rest (`num_ctx`, `top_k`, …) tune a
/// local runner and are ignored, as Ollama ignores options it does not know.
fn options(options: Option<&Value>, chat: &mut Map<String, Value>) -> Result<(), ApiError> {
    let o = match options {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::invalid("options", "`options` must be an object")),
    };
    match o.member("num_predict") {
        None | Some(Value::Null) => {}
        // -1 (no limit) and -2 (fill the context) both mean no cap here.
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {
            chat.insert("max_tokens".into(), Value::Number(n.clone()));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "options.num_predict",
                "`num_predict` must be a positive integer or -1",
            ))
        }
    }
    for key in ["stop", "temperature", "top_p", "seed"] {
        if let Some(v) = o.get(key).filter(|v| !v.is_null()) {
            chat.insert(key.into(), v.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conversation::{Part, ResponseFormat, Role};

    fn chat(v: Value) -> Result<OllamaRequest, ApiError> {
        OllamaRequest::chat(v.to_string().as_bytes()).map(|(r, _)| r.expect("messages"))
    }

    #[test]
    fn chat_streams_by_default_and_maps_options_images_and_latest() {
        let r = chat(json!({
            "model": "m:latest",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "what is this", "images": ["iVBORw0KGgo="]},
            ],
            "format": "json",
            "options": {"num_predict": 7, "stop": ["\n\n"], "temperature": 0.2, "num_ctx": 4096},
        }))
        .unwrap();
        let c = &r.conversation;
        assert_eq!(r.model, "m:latest");
        assert_eq!(c.model, "m");
        assert!(c.stream);
        assert_eq!(c.max_tokens, Some(7));
        assert_eq!(c.stop, vec!["\n\n".to_owned()]);
        assert_eq!(c.response_format, ResponseFormat::JsonObject);
        assert_eq!(c.messages[0].role, Role::System);
        assert!(matches!(&c.messages[1].parts[1],
            Part::Image(img) if img.url == "data:image/png;base64,iVBORw0KGgo="));

        let r = chat(
            json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "x"}],
                            "options": {"num_predict": -1}}),
        )
        .unwrap();
        assert!(!r.conversation.stream);
        assert_eq!(r.conversation.max_tokens, None);
    }

    #[test]
    fn tool_results_named_by_function_answer_that_call() {
        let r = chat(json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "a", "arguments": {"x": 1}}},
                {"function": {"name": "b", "arguments": {}}},
            ]},
            {"role": "tool", "tool_name": "b", "content": "B"},
            {"role": "tool", "tool_name": "a", "content": "A"},
        ], "tools": [
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}},
        ]}))
        .unwrap();
        let m = &r.conversation.messages;
        let calls = &m[1].tool_calls;
        assert_eq!(calls[0].arguments, "{\"x\":1}");
        assert_eq!(m[2].tool_call_id.as_ref(), Some(&calls[1].id));
        assert_eq!(m[3].tool_call_id.as_ref(), Some(&calls[0].id));
        assert!(!r.conversation.calls_have_ids);
    }

    #[test]
    fn generate_puts_system_then_prompt_and_an_empty_prompt_runs_nothing() {
        let (r, _) = OllamaRequest::generate(
            json!({"model": "m", "prompt": "hi", "system": "sys", "format": {"type": "object"}})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let c = r.unwrap().conversation;
        assert_eq!(c.messages.len(), 2);
        assert_eq!(c.messages[1].text(), "hi");
        assert!(matches!(
            c.response_format,
            ResponseFormat::JsonSchema { .. }
        ));
        let (r, model) =
            OllamaRequest::generate(json!({"model": "m:latest"}).to_string().as_bytes()).unwrap();
        assert!(r.is_none());
        assert_eq!(model, "m:latest");
        let (r, _) =
            OllamaRequest::chat(json!({"model": "m", "messages": []}).to_string().as_bytes())
                .unwrap();
        assert!(r.is_none());
    }

    #[test]
    fn bad_fields_are_named() {
        let param = |v: Value| chat(v).unwrap_err().param;
        let hi = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(param(json!({"messages": hi})).as_deref(), Some("model"));
        assert_eq!(
            param(json!({"model": "m", "messages": hi, "format": 3})).as_deref(),
            Some("format")
        );
        assert_eq!(
            param(json!({"model": "m", "messages": hi, "options": {"num_predict": "x"}}))
                .as_deref(),
            Some("options.num_predict")
        );
        assert_eq!(
            param(
                json!({"model": "m", "messages": [{"role": "user", "content": "x", "images": [1]}]})
            )
            .as_deref(),
            Some("messages[0].images[0]")
        );
    }
}
