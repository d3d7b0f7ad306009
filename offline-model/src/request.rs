//! Reading a Responses API request the way the triggers need it.
//!
//! Codex sends its own preamble before the conversation: the catalog's base instructions as
//! the first `developer` message, a second `developer` message (developer instructions and
//! the permissions block), and a `user` message holding `<environment_context>`. The helpers
//! here pick the parts a test cares about out of that.

use serde_json::Value;

/// The `input` array of a request (empty when absent or not an array).
pub(crate) fn input(body: &Value) -> &[Value] {
    body.get("input")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn item_type(item: &Value) -> &str {
    item.get("type").and_then(Value::as_str).unwrap_or("")
}

fn role(item: &Value) -> &str {
    item.get("role").and_then(Value::as_str).unwrap_or("")
}

/// Whether `item` is a `message` (an item without `type` but with a `role` counts too,
/// as the Responses API accepts that shorthand).
fn is_message(item: &Value) -> bool {
    match item.get("type").and_then(Value::as_str) {
        Some(t) => t == "message",
        None => item.get("role").is_some(),
    }
}

/// The text of a message: its text parts (`input_text`, `output_text`, `text`) joined by
/// `\n`, or the content itself when it is a plain string.
pub(crate) fn message_text(item: &Value) -> String {
    match item.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| {
                matches!(
                    item_type(p),
                    "input_text" | "output_text" | "text" | "summary_text"
                )
            })
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The last `message` item with role `user`.
pub(crate) fn last_user_message(body: &Value) -> Option<&Value> {
    input(body)
        .iter()
        .rev()
        .find(|item| is_message(item) && role(item) == "user")
}

/// "The prompt": the text of the last user message (empty when there is none).
pub(crate) fn prompt(body: &Value) -> String {
    last_user_message(body)
        .map(message_text)
        .unwrap_or_default()
}

/// The text of a `function_call_output`'s `output`, which is a string or a list of
/// content items.
fn output_text(item: &Value) -> String {
    match item.get("output") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn call_id(item: &Value) -> &str {
    item.get("call_id").and_then(Value::as_str).unwrap_or("")
}

fn is_call_output(item: &Value) -> bool {
    matches!(
        item_type(item),
        "function_call_output" | "custom_tool_call_output"
    )
}

/// The tool outputs at the end of `input`: `(call_id, output)` for every
/// `function_call_output` or `custom_tool_call_output` in the run of calls and outputs
/// that ends the input. Empty unless the very last item is such an output.
pub(crate) fn trailing_tool_outputs(body: &Value) -> Vec<(String, String)> {
    let items = input(body);
    if !items.last().is_some_and(is_call_output) {
        return Vec::new();
    }
    let mut outputs: Vec<(String, String)> = items
        .iter()
        .rev()
        .take_while(|item| {
            is_call_output(item) || matches!(item_type(item), "function_call" | "custom_tool_call")
        })
        .filter(|item| is_call_output(item))
        .map(|item| (call_id(item).to_owned(), output_text(item)))
        .collect();
    outputs.reverse();
    outputs
}

/// Characters (Unicode scalar values) of all text in `input`: message text parts,
/// function-call arguments and function-call outputs. Drives `usage.input_tokens`.
pub(crate) fn input_chars(body: &Value) -> usize {
    input(body)
        .iter()
        .map(|item| match item_type(item) {
            "function_call" => item
                .get("arguments")
                .and_then(Value::as_str)
                .map_or(0, |a| a.chars().count()),
            "custom_tool_call" => item
                .get("input")
                .and_then(Value::as_str)
                .map_or(0, |a| a.chars().count()),
            "function_call_output" | "custom_tool_call_output" => output_text(item).chars().count(),
            _ if is_message(item) => message_text(item).chars().count(),
            _ => 0,
        })
        .sum()
}

/// Tool names offered to the model, sorted: the request's `tools`, and the `tools` of
/// every `additional_tools` input item (codex's "responses lite" models, e.g. the bundled
/// `gpt-6-sol`, get their tools that way, with an empty top-level `tools`). A namespace
/// contributes `ns.name` for each of its tools; a tool without a name (a hosted tool)
/// contributes its `type`.
pub(crate) fn tool_names(body: &Value) -> Vec<String> {
    let additional = input(body)
        .iter()
        .filter(|item| item_type(item) == "additional_tools")
        .filter_map(|item| item.get("tools"));
    let mut names = Vec::new();
    for tools in body.get("tools").into_iter().chain(additional) {
        for tool in tools.as_array().into_iter().flatten() {
            let name = tool.get("name").and_then(Value::as_str);
            if item_type(tool) == "namespace" {
                let ns = name.unwrap_or("");
                for inner in tool
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(inner) = inner.get("name").and_then(Value::as_str) {
                        names.push(format!("{ns}.{inner}"));
                    }
                }
            } else if let Some(name) = name {
                names.push(name.to_owned());
            } else {
                names.push(item_type(tool).to_owned());
            }
        }
    }
    names.sort();
    names
}

/// Texts of all `developer`/`system` messages except the first (codex's base instructions).
pub(crate) fn instructions(body: &Value) -> Vec<String> {
    input(body)
        .iter()
        .filter(|item| is_message(item) && matches!(role(item), "developer" | "system"))
        .skip(1)
        .map(message_text)
        .collect()
}

/// The conversation without codex's preamble, one line per item: `user: TEXT`,
/// `assistant: TEXT` (messages whose text starts with `<` are codex's own and skipped),
/// `call NAME ARGS` and `output CALL_ID: TEXT`.
pub(crate) fn history(body: &Value) -> Vec<String> {
    input(body)
        .iter()
        .filter_map(|item| match item_type(item) {
            "function_call" => {
                let name = item.get("name").and_then(Value::as_str).unwrap_or("");
                let args = item.get("arguments").and_then(Value::as_str).unwrap_or("");
                Some(match item.get("namespace").and_then(Value::as_str) {
                    Some(ns) => format!("call {ns}.{name} {args}"),
                    None => format!("call {name} {args}"),
                })
            }
            "custom_tool_call" => {
                let name = item.get("name").and_then(Value::as_str).unwrap_or("");
                let input = item.get("input").and_then(Value::as_str).unwrap_or("");
                Some(format!("custom {name} {input}"))
            }
            "function_call_output" | "custom_tool_call_output" => {
                Some(format!("output {}: {}", call_id(item), output_text(item)))
            }
            _ if is_message(item) && matches!(role(item), "user" | "assistant") => {
                let text = message_text(item);
                (!text.starts_with('<')).then(|| format!("{}: {text}", role(item)))
            }
            _ => None,
        })
        .collect()
}

/// The `image_url` of each `input_image` part of the last user message.
pub(crate) fn images(body: &Value) -> Vec<String> {
    let Some(Value::Array(parts)) = last_user_message(body).and_then(|m| m.get("content")) else {
        return Vec::new();
    };
    parts
        .iter()
        .filter(|p| item_type(p) == "input_image")
        .map(|p| match p.get("image_url") {
            Some(Value::String(url)) => url.clone(),
            // Some clients nest it as {"url": …}.
            Some(other) => other
                .get("url")
                .and_then(Value::as_str)
                .map_or_else(|| other.to_string(), str::to_owned),
            None => String::new(),
        })
        .collect()
}

/// `text.format`, when the request has one.
pub(crate) fn text_format(body: &Value) -> Option<&Value> {
    body.get("text").and_then(|t| t.get("format"))
}

/// `reasoning.effort`, when the request has one.
pub(crate) fn effort(body: &Value) -> Option<&str> {
    body.get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(role: &str, text: &str) -> Value {
        json!({"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]})
    }

    #[test]
    fn prompt_is_the_last_user_message() {
        let body = json!({"input": [
            msg("developer", "base"),
            msg("user", "<environment_context>x</environment_context>"),
            msg("user", "first"),
            msg("assistant", "reply"),
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "second"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                {"type": "input_text", "text": "part"}
            ]},
        ]});
        assert_eq!(prompt(&body), "second\npart");
        assert_eq!(prompt(&json!({"input": []})), "");
    }

    #[test]
    fn trailing_outputs_only_when_the_input_ends_with_one() {
        let body = json!({"input": [
            msg("user", "go"),
            {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
        ]});
        assert_eq!(
            trailing_tool_outputs(&body),
            vec![("c1".into(), "one".into()), ("c2".into(), "two".into())]
        );
        let body = json!({"input": [
            {"type": "function_call_output", "call_id": "c1", "output": "old"},
            msg("user", "new question"),
        ]});
        assert!(trailing_tool_outputs(&body).is_empty());
    }

    #[test]
    fn tool_names_flatten_namespaces_and_sort() {
        let body = json!({"tools": [
            {"type": "function", "name": "weather"},
            {"type": "namespace", "name": "crm", "tools": [{"type": "function", "name": "find"}]},
            {"type": "web_search"},
            {"type": "function", "name": "lookup"},
        ]});
        assert_eq!(
            tool_names(&body),
            ["crm.find", "lookup", "weather", "web_search"]
        );
        let lite = json!({"tools": [], "input": [
            {"type": "additional_tools", "role": "developer", "tools": [
                {"type": "namespace", "name": "functions", "tools": [
                    {"type": "custom", "name": "exec"}, {"type": "function", "name": "lookup"}]}]},
            msg("user", "hi"),
        ]});
        assert_eq!(tool_names(&lite), ["functions.exec", "functions.lookup"]);
    }

    #[test]
    fn history_skips_codex_preamble() {
        let body = json!({"input": [
            msg("developer", "base"),
            msg("developer", "dev"),
            msg("user", "<environment_context>x</environment_context>"),
            msg("user", "hi"),
            {"type": "function_call", "call_id": "c1", "name": "f", "namespace": "ns", "arguments": "{\"a\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
            msg("assistant", "ok"),
        ]});
        assert_eq!(
            history(&body),
            [
                "user: hi",
                "call ns.f {\"a\":1}",
                "output c1: done",
                "assistant: ok"
            ]
        );
        assert_eq!(instructions(&body), ["dev"]);
        // base(4) + dev(3) + env(44) + hi(2) + args(7) + done(4) + ok(2)
        assert_eq!(input_chars(&body), 4 + 3 + 44 + 2 + 7 + 4 + 2);
    }
}
