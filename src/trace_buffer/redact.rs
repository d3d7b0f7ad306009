//! What a trace may hold: never a secret; message text and image data only
//! with `PROXY_TRACE_INCLUDE_CONTENT=true`.
//!
//! Secrets are found by the key that holds them (`apiKey`, `authorization`,
//! `access_token`, …; numbers such as token *counts* are kept) and by the
//! shape of the value (`Bearer …`, `sk-…`), wherever they sit. Content is
//! found by key (`text`, `delta`, `instructions`, `arguments`, …) and by
//! shape (`data:` URLs). A redacted value says what it was and how long, so
//! a trace still shows that a message was there.

use serde_json::{Map, Value};

/// Keys whose string or structured value is a secret, compared lowercase
/// without `_` and `-`.
const SECRET_KEYS: &[&str] = &[
    "apikey",
    "authorization",
    "proxyauthorization",
    "cookie",
    "setcookie",
    "password",
    "secret",
    "clientsecret",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "authtoken",
    "bearertoken",
    "sessiontoken",
    "httpheaders",
    "envhttpheaders",
    "env",
    "credentials",
    "tokens",
];

/// Keys whose value is what a user or the model said.
const CONTENT_KEYS: &[&str] = &[
    "text",
    "delta",
    "content",
    "instructions",
    "developerinstructions",
    "baseinstructions",
    "userinstructions",
    "arguments",
    "output",
    "contentitems",
    "summary",
    "summarytext",
    "prompt",
    "query",
    "aggregatedoutput",
];

fn normalized(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_secret_key(key: &str) -> bool {
    let k = normalized(key);
    SECRET_KEYS.contains(&k.as_str())
        || k.ends_with("apikey")
        || k.ends_with("secret")
        || k.ends_with("password")
}

fn is_secret_value(s: &str) -> bool {
    let t = s.trim_start();
    t.len() >= 7 && t[..7].eq_ignore_ascii_case("bearer ")
        || t.starts_with("sk-")
        || t.starts_with("Basic ")
}

/// Redacts `value` in place.
pub(crate) fn redact(value: &mut Value, include_content: bool) {
    match value {
        Value::Object(map) => redact_map(map, include_content),
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, include_content)),
        Value::String(s) => {
            if is_secret_value(s) {
                *value = Value::from("[redacted secret]");
            } else if !include_content && s.starts_with("data:") {
                *value = Value::from(format!("[redacted data URL, {} bytes]", s.len()));
            }
        }
        _ => {}
    }
}

fn redact_map(map: &mut Map<String, Value>, include_content: bool) {
    for (key, v) in map.iter_mut() {
        let scalar = matches!(v, Value::Number(_) | Value::Bool(_) | Value::Null);
        if is_secret_key(key) && !scalar {
            *v = Value::from("[redacted secret]");
        } else if !include_content && !scalar && CONTENT_KEYS.contains(&normalized(key).as_str()) {
            // A list of parts is redacted part by part, so its shape stays
            // visible; text or an object (tool arguments) goes whole.
            if v.is_array() {
                redact(v, include_content);
            } else {
                let len = match &*v {
                    Value::String(s) => s.chars().count(),
                    other => other.to_string().len(),
                };
                *v = Value::from(format!("[redacted, {len} chars]"));
            }
        } else {
            redact(v, include_content);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_go_whatever_the_content_setting() {
        for include_content in [false, true] {
            let mut v = json!({
                "params": {
                    "apiKey": "sk-live-123",
                    "env": {"OPENAI_API_KEY": "x"},
                    "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k"},
                    "account": {"tokens": {"access_token": "at", "refresh_token": "rt"}},
                    "note": "Bearer in-a-string",
                    "other": "sk-hidden-in-a-field",
                    "tokenUsage": {"inputTokens": 12, "outputTokens": 3},
                }
            });
            redact(&mut v, include_content);
            let s = v.to_string();
            for secret in [
                "sk-live-123",
                "OPENAI_API_KEY",
                "Bearer abc",
                "\"k\"",
                "\"at\"",
                "\"rt\"",
                "in-a-string",
                "sk-hidden",
            ] {
                assert!(!s.contains(secret), "{secret} in {s}");
            }
            // Counts are not secrets.
            assert_eq!(v["params"]["tokenUsage"]["inputTokens"], 12, "{s}");
        }
    }

    #[test]
    fn content_is_redacted_unless_asked_for() {
        let msg = json!({
            "method": "item/agentMessage/delta",
            "params": {"threadId": "t1", "delta": "the secret plan"},
            "input": [{"type": "text", "text": "user words"},
                      {"type": "image", "url": "data:image/png;base64,AAAA"}],
            "developerInstructions": "be nice",
        });
        let mut v = msg.clone();
        redact(&mut v, false);
        let s = v.to_string();
        for content in ["the secret plan", "user words", "AAAA", "be nice"] {
            assert!(!s.contains(content), "{content} in {s}");
        }
        assert_eq!(v["params"]["threadId"], "t1", "ids stay");
        assert_eq!(v["params"]["delta"], "[redacted, 15 chars]");
        assert_eq!(v["input"][0]["type"], "text", "shape stays");

        let mut v = msg.clone();
        redact(&mut v, true);
        assert_eq!(v, msg, "content kept when asked for");
    }
}
