//! Parsing and validating a `POST /v1/chat/completions` body into the
//! neutral [`Conversation`], plus what only the chat renderer needs.
//!
//! Validation works on the raw JSON so every rejection can name its `param`
//! the way OpenAI does; unknown fields are accepted and ignored, since
//! clients send many.

use serde_json::{Map, Value};

use crate::api::conversation::{
    AssistantToolCall, Conversation, FunctionTool, ImageRef, Message, Part, ResponseFormat, Role,
    ToolChoice, MAX_N,
};
use crate::api::error::ApiError;
use crate::api::params::Member;
use crate::api::params::{self, opt_bool, opt_str, opt_uint};

/// A validated chat request: the conversation, and how the answer is shaped.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub conversation: Conversation,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// The request used the deprecated `functions` field: calls render as
    /// `function_call`.
    pub legacy_functions: bool,
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
        Self::from_object(&crate::api::json_object(body)?)
    }

    pub(crate) fn from_object(obj: &Map<String, Value>) -> Result<ChatRequest, ApiError> {
        let model = params::model(obj)?;
        let messages = match obj.member("messages") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, m)| parse_message(i, m))
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => {
                return Err(ApiError::invalid(
                    "messages",
                    "`messages` must contain at least one message",
                ))
            }
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(
                    "messages",
                    "Missing required parameter: 'messages'.",
                ))
            }
            Some(_) => return Err(ApiError::invalid("messages", "`messages` must be an array")),
        };
        let stream = opt_bool(obj, "stream")?.unwrap_or(false);
        let include_usage = match obj.member("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => opt_bool(o, "include_usage")
                .map_err(|e| e.param("stream_options.include_usage"))?
                .unwrap_or(false),
            Some(_) => {
                return Err(ApiError::invalid(
                    "stream_options",
                    "`stream_options` must be an object",
                ))
            }
        };
        let n = opt_uint(obj, "n")?.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(ApiError::invalid(
                "n",
                format!("`n` must be between 1 and {MAX_N}"),
            ));
        }
        let max_tokens = match opt_uint(obj, "max_completion_tokens")? {
            Some(v) => Some(v),
            None => opt_uint(obj, "max_tokens")?,
        };
        if max_tokens == Some(0) {
            let p = if obj.contains_key("max_completion_tokens") {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(ApiError::invalid(p, format!("`{p}` must be at least 1")));
        }
        let stop = match obj.member("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) if items.len() <= 4 => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ApiError::invalid("stop", "`stop` must be a string or an array of strings")
                })?,
            Some(Value::Array(_)) => {
                return Err(ApiError::invalid(
                    "stop",
                    "`stop` may hold at most 4 sequences",
                ))
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "stop",
                    "`stop` must be a string or an array of strings",
                ))
            }
        };
        let stop = stop.into_iter().filter(|s| !s.is_empty()).collect();
        params::sampling(obj)?;

        let mut reasoning_effort = opt_str(obj, "reasoning_effort")?;
        if reasoning_effort.is_none() {
            if let Some(Value::Object(r)) = obj.member("reasoning") {
                reasoning_effort = opt_str(r, "effort").map_err(|e| e.param("reasoning.effort"))?;
            }
        }
        let reasoning_effort = params::effort(reasoning_effort, "reasoning_effort")?;
        let response_format = parse_response_format(obj.member("response_format"))?;
        let (tools, legacy_functions) = parse_tools(obj)?;
        let tool_choice = parse_tool_choice(obj, &tools)?;
        let parallel_tool_calls = opt_bool(obj, "parallel_tool_calls")?;
        Ok(ChatRequest {
            conversation: Conversation {
                model,
                messages,
                stream,
                n: n as u32,
                max_tokens,
                stop,
                reasoning_effort,
                response_format,
                tools,
                tool_choice,
                parallel_tool_calls,
                calls_have_ids: !legacy_functions,
            },
            include_usage,
            legacy_functions,
        })
    }
}

fn parse_message(i: usize, m: &Value) -> Result<Message, ApiError> {
    let p = |field: &str| format!("messages[{i}].{field}");
    let Value::Object(obj) = m else {
        return Err(ApiError::invalid(
            format!("messages[{i}]"),
            "each message must be an object",
        ));
    };
    let role = match obj.member("role").and_then(Value::as_str) {
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") | Some("function") => Role::Tool,
        Some(other) => {
            return Err(ApiError::invalid(
                p("role"),
                format!("Invalid value: '{other}'. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool'."),
            ))
        }
        None => return Err(ApiError::invalid(p("role"), "each message needs a string `role`")),
    };
    let parts = match obj.member("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![Part::Text(s.clone())],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(j, part)| parse_part(&format!("messages[{i}].content[{j}]"), part))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                p("content"),
                "`content` must be a string or an array of content parts",
            ))
        }
    };
    params::content_fits_role(&role, &parts, &p("content"))?;
    let mut tool_calls = Vec::new();
    if let Some(calls) = obj.member("tool_calls").filter(|v| !v.is_null()) {
        let Value::Array(calls) = calls else {
            return Err(ApiError::invalid(
                p("tool_calls"),
                "`tool_calls` must be an array",
            ));
        };
        for (j, call) in calls.iter().enumerate() {
            let q = format!("messages[{i}].tool_calls[{j}]");
            let id = call.member("id").and_then(Value::as_str);
            let f = call.member("function");
            let name = f.and_then(|f| f.member("name")).and_then(Value::as_str);
            let args = f
                .and_then(|f| f.member("arguments"))
                .and_then(Value::as_str)
                .unwrap_or("{}");
            match (id, name) {
                (Some(id), Some(name)) => tool_calls.push(AssistantToolCall {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    arguments: args.to_owned(),
                }),
                _ => {
                    return Err(ApiError::invalid(
                        q,
                        "each tool call needs `id` and `function.name`",
                    ))
                }
            }
        }
    }
    if let Some(fc) = obj.member("function_call").filter(|v| !v.is_null()) {
        // The deprecated single call; its id is synthesised from the name so the
        // matching `function` message can find it.
        let name = fc.member("name").and_then(Value::as_str).ok_or_else(|| {
            ApiError::invalid(p("function_call"), "`function_call` needs a `name`")
        })?;
        let args = fc
            .member("arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        tool_calls.push(AssistantToolCall {
            id: format!("call_{name}"),
            name: name.into(),
            arguments: args.into(),
        });
    }
    let tool_call_id = match (role.clone(), obj.member("tool_call_id"), obj.member("name")) {
        (Role::Tool, Some(Value::String(id)), _) => Some(id.clone()),
        (Role::Tool, _, Some(Value::String(name)))
            if obj.member("role").and_then(Value::as_str) == Some("function") =>
        {
            Some(format!("call_{name}"))
        }
        (Role::Tool, _, _) => {
            return Err(ApiError::invalid(
                p("tool_call_id"),
                "tool messages need a string `tool_call_id`",
            ))
        }
        _ => None,
    };
    Ok(Message {
        role,
        parts,
        tool_calls,
        tool_call_id,
    })
}

fn parse_part(param: &str, part: &Value) -> Result<Part, ApiError> {
    match part.member("type").and_then(Value::as_str) {
        Some("text") | Some("input_text") | Some("output_text") => part
            .member("text")
            .and_then(Value::as_str)
            .map(|t| Part::Text(t.to_owned()))
            .ok_or_else(|| {
                ApiError::invalid(format!("{param}.text"), "text parts need a string `text`")
            }),
        Some("image_url") => {
            let url = match part.member("image_url") {
                Some(Value::String(u)) => Some(u.as_str()),
                Some(Value::Object(o)) => o.member("url").and_then(Value::as_str),
                _ => None,
            }
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("{param}.image_url"),
                    "image parts need `image_url.url`",
                )
            })?;
            let param = format!("{param}.image_url.url");
            params::image_url(url, &param)?;
            Ok(Part::Image(ImageRef {
                url: url.to_owned(),
                param,
            }))
        }
        Some(other) => Err(ApiError::invalid(
            format!("{param}.type"),
            format!("content part type `{other}` is not supported; use `text` or `image_url`"),
        )),
        None => Err(ApiError::invalid(
            format!("{param}.type"),
            "each content part needs a `type`",
        )),
    }
}

fn parse_response_format(v: Option<&Value>) -> Result<ResponseFormat, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(ResponseFormat::Text);
    };
    match v.member("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let schema = v
                .member("json_schema")
                .and_then(|s| s.member("schema"))
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "response_format.json_schema.schema",
                        "`json_schema.schema` must be an object",
                    )
                })?;
            Ok(ResponseFormat::JsonSchema(schema.clone()))
        }
        _ => Err(ApiError::invalid(
            "response_format.type",
            "`response_format.type` must be `text`, `json_object` or `json_schema`",
        )),
    }
}

fn parse_tools(obj: &Map<String, Value>) -> Result<(Vec<FunctionTool>, bool), ApiError> {
    let mut tools = Vec::new();
    let mut legacy = false;
    match obj.member("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, t) in items.iter().enumerate() {
                let param = format!("tools[{i}]");
                if t.member("type").and_then(Value::as_str) != Some("function") {
                    return Err(ApiError::invalid(
                        format!("{param}.type"),
                        "only `function` tools are supported",
                    ));
                }
                let f = t
                    .member("function")
                    .filter(|f| f.is_object())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("{param}.function"),
                            "`function` must be an object",
                        )
                    })?;
                tools.push(params::function_tool(&format!("{param}.function"), f)?);
            }
        }
        Some(_) => return Err(ApiError::invalid("tools", "`tools` must be an array")),
    }
    match obj.member("functions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            legacy = !items.is_empty();
            for (i, f) in items.iter().enumerate() {
                tools.push(params::function_tool(&format!("functions[{i}]"), f)?);
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "functions",
                "`functions` must be an array",
            ))
        }
    }
    Ok((tools, legacy))
}

fn parse_tool_choice(
    obj: &Map<String, Value>,
    tools: &[FunctionTool],
) -> Result<ToolChoice, ApiError> {
    match (obj.member("tool_choice"), obj.member("function_call")) {
        (Some(v), _) if !v.is_null() => params::tool_choice("tool_choice", v, tools),
        (_, Some(v)) if !v.is_null() => params::tool_choice("function_call", v, tools),
        _ => Ok(ToolChoice::Auto),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<Conversation, ApiError> {
        ChatRequest::parse(v.to_string().as_bytes()).map(|r| r.conversation)
    }

    #[test]
    fn accepts_a_minimal_request_and_ignores_unknown_fields() {
        let r = parse(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {}, "x_vendor": 1
        }))
        .unwrap();
        assert_eq!(r.model, "m");
        assert_eq!(r.messages[0].text(), "hi");
        assert_eq!(r.n, 1);
        assert!(!r.stream);
    }

    #[test]
    fn wrong_types_and_ranges_name_the_param() {
        let base = |extra: serde_json::Value| {
            let mut v =
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            parse(v).unwrap_err()
        };
        assert_eq!(
            base(serde_json::json!({"temperature": 3})).param.as_deref(),
            Some("temperature")
        );
        assert_eq!(
            base(serde_json::json!({"temperature": "hot"}))
                .param
                .as_deref(),
            Some("temperature")
        );
        assert_eq!(
            base(serde_json::json!({"stream": "yes"})).param.as_deref(),
            Some("stream")
        );
        assert_eq!(
            base(serde_json::json!({"n": 0})).param.as_deref(),
            Some("n")
        );
        assert_eq!(
            base(serde_json::json!({"max_tokens": -5})).param.as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            base(serde_json::json!({"stop": 7})).param.as_deref(),
            Some("stop")
        );
        assert_eq!(
            base(serde_json::json!({"messages": []})).param.as_deref(),
            Some("messages")
        );
        assert_eq!(
            base(serde_json::json!({"messages": [{"role": "wizard", "content": "x"}]}))
                .param
                .as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            base(serde_json::json!({"stream_options": {"include_usage": 1}}))
                .param
                .as_deref(),
            Some("stream_options.include_usage")
        );
    }

    #[test]
    fn malformed_json_is_a_400() {
        let e = ChatRequest::parse(b"{not json").unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.code, Some("invalid_json"));
        assert_eq!(ChatRequest::parse(b"[1]").unwrap_err().status, 400);
    }

    #[test]
    fn parts_tools_and_legacy_functions() {
        let r = parse(serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]},
                {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}},
                {"role": "function", "name": "f", "content": "42"}
            ],
            "functions": [{"name": "f", "parameters": {"type": "object"}}]
        }))
        .unwrap();
        assert_eq!(
            r.messages[0].parts[1],
            Part::Image(ImageRef {
                url: "data:image/png;base64,AAAA".into(),
                param: "messages[0].content[1].image_url.url".into()
            })
        );
        assert!(!r.calls_have_ids, "legacy functions answer by name");
        assert_eq!(r.tools[0].name, "f");
        assert_eq!(r.messages[2].tool_call_id.as_deref(), Some("call_f"));
    }

    #[test]
    fn invalid_tools_and_images_name_their_param() {
        let with = |extra: serde_json::Value| {
            let mut v =
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            parse(v).unwrap_err()
        };
        let e = with(serde_json::json!({"tools": [{"type": "retrieval"}]}));
        assert_eq!(
            (e.status.as_u16(), e.param.as_deref()),
            (400, Some("tools[0].type"))
        );
        let e = with(
            serde_json::json!({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}),
        );
        assert_eq!(e.param.as_deref(), Some("tools[0].function.name"));
        let e = with(
            serde_json::json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}),
        );
        assert_eq!(e.param.as_deref(), Some("tools[0].function.parameters"));
        let e = with(
            serde_json::json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
        );
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let e = with(
            serde_json::json!({"tools": [{"type": "function", "function": {"name": "exec_command"}}]}),
        );
        assert_eq!(
            (e.param.as_deref(), e.code),
            (Some("tools[0].function.name"), Some("reserved_tool_name"))
        );
        let e =
            with(serde_json::json!({"functions": [{"name": "f"}, {"name": "request_user_input"}]}));
        assert_eq!(e.param.as_deref(), Some("functions[1].name"));
        let e = with(serde_json::json!({"tool_choice": "required"}));
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let e = with(serde_json::json!({"messages": [{"role": "tool", "content": "x"}]}));
        assert_eq!(e.param.as_deref(), Some("messages[0].tool_call_id"));
        let e = with(
            serde_json::json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
        );
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].content[0].image_url.url")
        );
        let e = with(
            serde_json::json!({"messages": [{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]}),
        );
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
    }
}
