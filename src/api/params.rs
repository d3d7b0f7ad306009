//! Validators the dialect parsers share. Each names the offending
//! parameter by the key it was given, so a parser's errors speak its own
//! dialect's names.

use serde_json::{Map, Value};

use super::error::ApiError;

/// A member looked up by comparing keys instead of hashing them. A
/// request's objects have a handful of members and are asked for dozens
/// that are absent; serde_json's map (an `IndexMap` under `preserve_order`)
/// hashes every key asked for with SipHash first (in maps of two members or
/// more), most of a lookup's cost.
/// Parsers read request JSON through this.
pub(crate) trait Member {
    fn member(&self, key: &str) -> Option<&Value>;
}

impl Member for Map<String, Value> {
    fn member(&self, key: &str) -> Option<&Value> {
        // With many members, hashing one key wins again.
        if self.len() > 32 {
            return self.get(key);
        }
        self.iter().find_map(|(k, v)| (k == key).then_some(v))
    }
}

impl Member for Value {
    /// As `Value::get` with a key: `None` unless an object.
    fn member(&self, key: &str) -> Option<&Value> {
        self.as_object()?.member(key)
    }
}

pub(crate) fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match obj.member(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be a boolean"))),
    }
}

pub(crate) fn opt_str(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match obj.member(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be a string"))),
    }
}

pub(crate) fn opt_uint(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match obj.member(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::invalid(key, format!("`{key}` must be a non-negative integer"))
        }),
    }
}

pub(crate) fn range(obj: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Result<(), ApiError> {
    match obj.member(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(()),
            Some(_) => Err(ApiError::invalid(
                key,
                format!("`{key}` must be between {lo} and {hi}"),
            )),
            None => Err(ApiError::invalid(key, format!("`{key}` must be a number"))),
        },
    }
}

/// The model name every dialect requires.
pub(crate) fn model(obj: &Map<String, Value>) -> Result<String, ApiError> {
    match obj.member("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => Ok(m.trim().to_owned()),
        None | Some(Value::Null) => Err(ApiError::invalid(
            "model",
            "you must provide a model parameter",
        )),
        Some(_) => Err(ApiError::invalid(
            "model",
            "`model` must be a non-empty string",
        )),
    }
}

/// The sampling parameters codex does not take: validated, then ignored.
pub(crate) fn sampling(obj: &Map<String, Value>) -> Result<(), ApiError> {
    range(obj, "temperature", 0.0, 2.0)?;
    range(obj, "top_p", 0.0, 1.0)?;
    range(obj, "presence_penalty", -2.0, 2.0)?;
    range(obj, "frequency_penalty", -2.0, 2.0)?;
    if let Some(v) = obj.member("seed").filter(|v| !v.is_null()) {
        if !v.is_i64() && !v.is_u64() {
            return Err(ApiError::invalid("seed", "`seed` must be an integer"));
        }
    }
    opt_str(obj, "user")?;
    Ok(())
}

/// A reasoning effort codex knows; `param` is the dialect's name for it.
pub(crate) fn effort(value: Option<String>, param: &str) -> Result<Option<String>, ApiError> {
    if let Some(e) = &value {
        if !matches!(
            e.as_str(),
            "none" | "minimal" | "low" | "medium" | "high" | "xhigh"
        ) {
            return Err(ApiError::invalid(
                param,
                format!("`{e}` is not one of none, minimal, low, medium, high, xhigh"),
            ));
        }
    }
    Ok(value)
}

/// OpenAI's rule for function names.
pub(crate) fn is_tool_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Validates an image URL; http(s) URLs are inlined or refused later by the pipeline.
pub(crate) fn image_url(url: &str, param: &str) -> Result<(), ApiError> {
    let remote = url.starts_with("https://") || url.starts_with("http://");
    if !remote && !url.starts_with("data:image/") {
        return Err(ApiError::invalid(
            param,
            "image URLs must be http(s) URLs or data:image/...;base64 URLs",
        ));
    }
    Ok(())
}

use super::conversation::{FunctionTool, Part, Role, ToolChoice};

/// Tool names codex keeps for its own tools. Measured against the pinned
/// CLI (a thread with a client tool of each name, the tools the model was
/// then offered): with the gateway's switches, a client `exec_command` or
/// `shell_command` is silently dropped, and `request_user_input` and
/// `apply_patch` are shadowed by codex's own; `write_stdin` and
/// `view_image` are codex's when PROXY_ENABLE_CODEX_TOOLS is on. A client
/// tool by one of these names would never reach the model as the client
/// defined it, so it is refused instead.
pub(crate) const RESERVED_TOOL_NAMES: &[&str] = &[
    "exec_command",
    "shell_command",
    "request_user_input",
    "apply_patch",
    "write_stdin",
    "view_image",
];

/// One function definition: `f` holds `name`, `description`, `parameters`
/// (chat nests it under `function`, the Responses API does not); `param`
/// is where it sits in the client's request.
pub(crate) fn function_tool(param: &str, f: &Value) -> Result<FunctionTool, ApiError> {
    let name = f
        .member("name")
        .and_then(Value::as_str)
        .filter(|n| is_tool_name(n))
        .ok_or_else(|| {
            ApiError::invalid(
                format!("{param}.name"),
                "function names must be 1-64 characters of a-z, A-Z, 0-9, _ and -",
            )
        })?;
    if RESERVED_TOOL_NAMES.contains(&name) {
        return Err(ApiError::invalid(
            format!("{param}.name"),
            format!(
                "`{name}` is the name of one of Codex's own tools, which would hide this one \
                 from the model; give the tool another name"
            ),
        )
        .code("reserved_tool_name"));
    }
    let parameters = match f.member("parameters") {
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{param}.parameters"),
                "`parameters` must be an object",
            ))
        }
    };
    let description = f
        .member("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(FunctionTool {
        name: name.to_owned(),
        description,
        parameters,
    })
}

/// `auto` | `none` | `required` | a named function (`{"function": {"name"}}`
/// in chat, `{"name"}` in the Responses API), checked against the tools.
pub(crate) fn tool_choice(
    param: &str,
    v: &Value,
    tools: &[FunctionTool],
) -> Result<ToolChoice, ApiError> {
    let choice = match v {
        Value::String(s) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => {
                return Err(ApiError::invalid(
                    param,
                    "must be `auto`, `none`, `required` or a named function",
                ))
            }
        },
        Value::Object(o) => {
            let name = o
                .member("function")
                .and_then(|f| f.member("name"))
                .or_else(|| o.member("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid(param, "a named tool choice needs `function.name`")
                })?;
            ToolChoice::Function(name.to_owned())
        }
        _ => return Err(ApiError::invalid(param, "must be a string or an object")),
    };
    if let ToolChoice::Function(name) = &choice {
        if !tools.iter().any(|t| &t.name == name) {
            return Err(ApiError::invalid(
                param,
                format!("tool `{name}` is not among the request's tools"),
            ));
        }
    }
    if matches!(choice, ToolChoice::Required) && tools.is_empty() {
        return Err(ApiError::invalid(
            param,
            "`required` needs at least one tool",
        ));
    }
    Ok(choice)
}

/// What every dialect requires of a message's content: only assistant
/// messages may be empty (they may hold just tool calls), and only user
/// messages carry images. `param` names the content in the client's request.
pub(crate) fn content_fits_role(role: &Role, parts: &[Part], param: &str) -> Result<(), ApiError> {
    if parts.is_empty() && *role != Role::Assistant {
        return Err(ApiError::invalid(
            param,
            "only assistant messages may omit `content`",
        ));
    }
    if *role != Role::User && parts.iter().any(|part| matches!(part, Part::Image(_))) {
        return Err(ApiError::invalid(
            param,
            "image parts are only allowed in user messages",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The same answers as serde_json's own lookup, small map or large.
    #[test]
    fn member_answers_as_get_does() {
        for n in [0usize, 3, 32, 33, 100] {
            let obj: Map<String, Value> = (0..n).map(|i| (format!("k{i}"), json!(i))).collect();
            for key in ["k0", "k2", "k31", "k32", "k99", "absent", ""] {
                assert_eq!(obj.member(key), obj.get(key), "{n} {key}");
            }
            let value = Value::Object(obj);
            assert_eq!(value.member("k2"), value.get("k2"));
        }
        for not_an_object in [json!(null), json!([{"k0": 1}]), json!("k0")] {
            assert_eq!(not_an_object.member("k0"), None);
        }
    }
}
