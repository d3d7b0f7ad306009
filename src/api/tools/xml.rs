//! Canonical `<use_tool>` rendering and parsing.
//!
//! Rendering: one tag per argument, in the order of the tool's JSON schema
//! `properties` (then any others alphabetically), so the same call always
//! renders the same bytes. Strings are XML-escaped text; numbers, booleans,
//! null, arrays and objects are compact JSON (escaped), which is how
//! Obsidian Copilot reads array parameters.
//! Parsing accepts that form and the older `<args>{json}</args>` form.

use serde_json::{Map, Value};

pub const OPEN: &str = "<use_tool>";
pub const CLOSE: &str = "</use_tool>";

/// Renders a call. `schema` is the tool's parameters schema, if known.
pub fn render(name: &str, arguments: &Value, schema: Option<&Value>) -> String {
    let mut out = String::from(OPEN);
    out.push_str("\n<name>");
    out.push_str(&escape(name));
    out.push_str("</name>\n");
    if let Value::Object(args) = arguments {
        for key in ordered_keys(args, schema) {
            if !is_tag_name(&key) {
                continue;
            }
            let value = &args[&key];
            let text = match value {
                Value::String(s) => escape(s),
                other => escape(&other.to_string()),
            };
            out.push_str(&format!("<{key}>{text}</{key}>\n"));
        }
    }
    out.push_str(CLOSE);
    out
}

fn ordered_keys(args: &Map<String, Value>, schema: Option<&Value>) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    if let Some(Value::Object(props)) = schema.and_then(|s| s.get("properties")) {
        keys.extend(props.keys().filter(|k| args.contains_key(*k)).cloned());
    }
    let mut rest: Vec<String> = args.keys().filter(|k| !keys.contains(k)).cloned().collect();
    rest.sort();
    keys.extend(rest);
    keys
}

fn is_tag_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A parsed block: the tool's name and its arguments as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: Value,
}

/// Parses one `<use_tool>…</use_tool>` block.
pub fn parse(block: &str) -> Option<ParsedCall> {
    let inner = block.trim().strip_prefix(OPEN)?.strip_suffix(CLOSE)?;
    let mut rest = inner;
    let mut name = None;
    let mut args = Map::new();
    while let Some(open_at) = rest.find('<') {
        let after = &rest[open_at + 1..];
        let tag_end = after.find('>')?;
        let tag = &after[..tag_end];
        if !is_tag_name(tag) {
            return None;
        }
        let body_start = &after[tag_end + 1..];
        let close = format!("</{tag}>");
        let close_at = body_start.find(&close)?;
        let raw = &body_start[..close_at];
        rest = &body_start[close_at + close.len()..];
        let text = unescape(raw.trim());
        match tag {
            "name" => name = Some(text),
            "args" | "arguments" => {
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text) {
                    args.extend(m);
                }
            }
            _ => {
                let value = match serde_json::from_str::<Value>(&text) {
                    Ok(
                        v @ (Value::Array(_)
                        | Value::Object(_)
                        | Value::Bool(_)
                        | Value::Null
                        | Value::Number(_)),
                    ) => v,
                    _ => Value::String(text),
                };
                args.insert(tag.to_owned(), value);
            }
        }
    }
    let name = name.filter(|n| !n.is_empty())?;
    Some(ParsedCall {
        name,
        arguments: Value::Object(args),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_in_schema_order_with_escaping_and_json_arrays() {
        let schema =
            json!({"type": "object", "properties": {"query": {}, "salientTerms": {}, "limit": {}}});
        let args =
            json!({"limit": 5, "salientTerms": ["a", "<b>"], "query": "x & y", "zeta": true});
        let xml = render("localSearch", &args, Some(&schema));
        assert_eq!(
            xml,
            "<use_tool>\n<name>localSearch</name>\n<query>x &amp; y</query>\n\
             <salientTerms>[&quot;a&quot;,&quot;&lt;b&gt;&quot;]</salientTerms>\n<limit>5</limit>\n\
             <zeta>true</zeta>\n</use_tool>"
        );
        let back = parse(&xml).unwrap();
        assert_eq!(back.name, "localSearch");
        assert_eq!(back.arguments, args);
    }

    #[test]
    fn parses_the_older_args_form_and_rejects_junk() {
        let p = parse("<use_tool><name>t</name><args>{\"a\": 1}</args></use_tool>").unwrap();
        assert_eq!(p.arguments, json!({"a": 1}));
        assert!(parse("<use_tool><args>{}</args></use_tool>").is_none());
        assert!(parse("<use_tool><name>t</name><open>never closed</use_tool>").is_none());
    }
}
