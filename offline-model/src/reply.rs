//! Deciding what the model answers, from the request alone.
//!
//! Precedence, first match wins:
//! 1. The input ends with `function_call_output`/`custom_tool_call_output` item(s): `TOOL RESULT <call_id>: <output>`
//!    (one line per trailing output). Triggers are ignored, so an agent loop whose prompt
//!    holds `[[call …]]` terminates after one round trip.
//! 2. The FIRST well-formed trigger in the prompt (by position) decides the reply. When it
//!    is a `[[call …]]` or `[[custom …]]`, every such trigger in the prompt becomes one
//!    `function_call` or `custom_tool_call`.
//! 3. No trigger: `ECHO: <prompt>`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::request;
use crate::trigger::{self, Trigger};

/// What the model answers to one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// An assistant message, streamed as word deltas.
    Text {
        /// The full text.
        text: String,
        /// Pause before each delta (`[[slow MS]]`).
        delay: Option<Duration>,
        /// Drop the connection after this many deltas, without `response.completed`
        /// (`[[break N]]`).
        break_after: Option<usize>,
        /// A reasoning summary streamed before the text (`[[reason SUMMARY]]`).
        reasoning: Option<String>,
    },
    /// One `function_call` or `custom_tool_call` output item per call, no text.
    Calls(Vec<Call>),
    /// A non-2xx HTTP response with an OpenAI error body (`[[error STATUS]]`).
    Error(u16),
    /// 429 `usage_limit_reached`, the limit resetting in this many seconds (`[[quota SECONDS]]`).
    Quota(u64),
    /// 401 as for a revoked key or an expired login (`[[unauthorized]]`).
    Unauthorized,
}

/// A tool call the model makes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Call {
    /// A `function_call` with JSON arguments.
    Function {
        namespace: Option<String>,
        name: String,
        arguments: Map<String, Value>,
    },
    /// A `custom_tool_call` (a freeform tool) with raw text input.
    Custom { name: String, input: String },
}

impl Reply {
    fn text(text: impl Into<String>) -> Self {
        Reply::Text {
            text: text.into(),
            delay: None,
            break_after: None,
            reasoning: None,
        }
    }
}

/// Decides the reply to a `POST /v1/responses` body.
pub(crate) fn decide(body: &Value) -> Reply {
    let outputs = request::trailing_tool_outputs(body);
    if !outputs.is_empty() {
        let lines: Vec<String> = outputs
            .iter()
            .map(|(id, output)| format!("TOOL RESULT {id}: {output}"))
            .collect();
        return Reply::text(lines.join("\n"));
    }

    let prompt = request::prompt(body);
    let echo = format!("ECHO: {prompt}");
    let triggers = trigger::scan(&prompt);
    let Some(first) = triggers.first() else {
        return Reply::text(echo);
    };
    match first {
        Trigger::Call { .. } | Trigger::Custom { .. } => Reply::Calls(
            triggers
                .into_iter()
                .filter_map(|t| match t {
                    Trigger::Call {
                        namespace,
                        name,
                        arguments,
                    } => Some(Call::Function {
                        namespace,
                        name,
                        arguments,
                    }),
                    Trigger::Custom { name, input } => Some(Call::Custom { name, input }),
                    _ => None,
                })
                .collect(),
        ),
        Trigger::Error(status) => Reply::Error(*status),
        Trigger::Quota(secs) => Reply::Quota(*secs),
        Trigger::Unauthorized => Reply::Unauthorized,
        Trigger::Break(n) => Reply::Text {
            text: echo,
            delay: None,
            break_after: Some(*n),
            reasoning: None,
        },
        Trigger::Slow(ms) => Reply::Text {
            text: echo,
            delay: Some(Duration::from_millis(*ms)),
            break_after: None,
            reasoning: None,
        },
        Trigger::Reason(summary) => Reply::Text {
            text: echo,
            delay: None,
            break_after: None,
            reasoning: Some(summary.clone()),
        },
        Trigger::Words(n) => Reply::text(
            (1..=*n)
                .map(|i| format!("w{i}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Trigger::Tools => Reply::text(format!("TOOLS: {}", request::tool_names(body).join(","))),
        Trigger::Instructions => Reply::text(format!(
            "INSTRUCTIONS: {}",
            request::instructions(body).join("\n---\n")
        )),
        Trigger::History => Reply::text(format!("HISTORY: {}", request::history(body).join(" | "))),
        Trigger::Images => {
            let urls = request::images(body);
            let mut text = format!("IMAGES: {}", urls.len());
            for url in &urls {
                text.push(' ');
                text.push_str(&shorten_url(url));
            }
            Reply::text(text)
        }
        Trigger::Format => Reply::text(match request::text_format(body) {
            Some(format) => format!("FORMAT: {format}"),
            None => "FORMAT: none".to_owned(),
        }),
        Trigger::Effort => Reply::text(format!(
            "EFFORT: {}",
            request::effort(body).unwrap_or("none")
        )),
        Trigger::Json => Reply::text(r#"{"ok":true}"#),
        Trigger::Text(text) => Reply::text(text.clone()),
    }
}

/// Data URLs are cut to their first 40 characters; other URLs are kept whole.
fn shorten_url(url: &str) -> String {
    if url.starts_with("data:") {
        url.chars().take(40).collect()
    } else {
        url.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_prompt(prompt: &str) -> Value {
        json!({"input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "base"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]},
        ]})
    }

    fn text_of(reply: Reply) -> String {
        match reply {
            Reply::Text { text, .. } => text,
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn echo_without_trigger() {
        assert_eq!(
            text_of(decide(&with_prompt("héllo  world"))),
            "ECHO: héllo  world"
        );
    }

    #[test]
    fn first_trigger_by_position_wins() {
        assert_eq!(
            text_of(decide(&with_prompt("[[words 2]] [[json]]"))),
            "w1 w2"
        );
        assert_eq!(
            text_of(decide(&with_prompt("[[json]] [[words 2]]"))),
            r#"{"ok":true}"#
        );
        assert_eq!(
            decide(&with_prompt("x [[error 503]] [[words 1]]")),
            Reply::Error(503)
        );
        // A trigger inside [[text …]] is part of the text.
        assert_eq!(
            text_of(decide(&with_prompt("[[text a [[call f]] b]]"))),
            "a [[call f]] b"
        );
    }

    #[test]
    fn every_call_in_the_prompt_becomes_a_call() {
        let Reply::Calls(calls) = decide(&with_prompt(
            r#"[[call a {"x": 1}]] text [[words 3]] [[call ns.b]]"#,
        )) else {
            panic!("expected calls")
        };
        let mut x = Map::new();
        x.insert("x".into(), json!(1));
        assert_eq!(
            calls,
            [
                Call::Function {
                    namespace: None,
                    name: "a".into(),
                    arguments: x
                },
                Call::Function {
                    namespace: Some("ns".into()),
                    name: "b".into(),
                    arguments: Map::new()
                }
            ]
        );
    }

    #[test]
    fn custom_and_function_calls_mix_in_one_reply() {
        let Reply::Calls(calls) = decide(&with_prompt(
            r#"[[custom apply_patch "*** Begin Patch\n*** End Patch"]] [[call f]]"#,
        )) else {
            panic!("expected calls")
        };
        assert_eq!(
            calls,
            [
                Call::Custom {
                    name: "apply_patch".into(),
                    input: "*** Begin Patch\n*** End Patch".into()
                },
                Call::Function {
                    namespace: None,
                    name: "f".into(),
                    arguments: Map::new()
                }
            ]
        );
    }

    #[test]
    fn tool_output_wins_over_triggers() {
        let body = json!({"input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "[[call f {}]]"}]},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        ]});
        assert_eq!(text_of(decide(&body)), "TOOL RESULT call_1: 42");
        let body = json!({"input": [
            {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "p"},
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": "refused"},
        ]});
        assert_eq!(text_of(decide(&body)), "TOOL RESULT call_2: refused");
    }

    #[test]
    fn slow_and_break_echo_the_prompt() {
        assert_eq!(
            decide(&with_prompt("[[slow 250]]")),
            Reply::Text {
                text: "ECHO: [[slow 250]]".into(),
                delay: Some(Duration::from_millis(250)),
                break_after: None,
                reasoning: None
            }
        );
        assert_eq!(
            decide(&with_prompt("[[break 2]]")),
            Reply::Text {
                text: "ECHO: [[break 2]]".into(),
                delay: None,
                break_after: Some(2),
                reasoning: None
            }
        );
        assert_eq!(
            decide(&with_prompt("[[reason Weigh it.]] hi")),
            Reply::Text {
                text: "ECHO: [[reason Weigh it.]] hi".into(),
                delay: None,
                break_after: None,
                reasoning: Some("Weigh it.".into())
            }
        );
    }

    #[test]
    fn request_introspection_replies() {
        let body = json!({
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "base"}]},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be brief"}]},
                {"type": "message", "role": "system", "content": "sys"},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "[[images]]"},
                    {"type": "input_image", "image_url": format!("data:image/png;base64,{}", "A".repeat(100))},
                    {"type": "input_image", "image_url": "https://example.com/cat.png"},
                ]},
            ],
            "text": {"format": {"type": "json_schema", "name": "s", "strict": true}},
            "reasoning": {"effort": "high", "summary": "auto"},
        });
        assert_eq!(
            text_of(decide(&body)),
            "IMAGES: 2 data:image/png;base64,AAAAAAAAAAAAAAAAAA https://example.com/cat.png"
        );
        let mut b = body.clone();
        b["input"][3]["content"][0]["text"] = json!("[[instructions]]");
        assert_eq!(text_of(decide(&b)), "INSTRUCTIONS: be brief\n---\nsys");
        b["input"][3]["content"][0]["text"] = json!("[[format]]");
        // Compared as JSON: key order depends on whether serde_json's
        // `preserve_order` is unified into the build (the gateway enables it).
        let format = text_of(decide(&b));
        let format: serde_json::Value =
            serde_json::from_str(format.strip_prefix("FORMAT: ").unwrap()).unwrap();
        assert_eq!(
            format,
            json!({"type": "json_schema", "name": "s", "strict": true})
        );
        b["input"][3]["content"][0]["text"] = json!("[[effort]]");
        assert_eq!(text_of(decide(&b)), "EFFORT: high");
        assert_eq!(text_of(decide(&with_prompt("[[effort]]"))), "EFFORT: none");
        assert_eq!(text_of(decide(&with_prompt("[[format]]"))), "FORMAT: none");
        assert_eq!(text_of(decide(&with_prompt("[[tools]]"))), "TOOLS: ");
    }
}
