//! [`OllamaRenderer`]: Ollama's `/api/chat` and `/api/generate` answers,
//! streamed as NDJSON or whole, from the pipeline's [`RunEvent`]s.
//!
//! A stream is one object per piece of text (`done: false`) and a last one
//! (`done: true`) carrying `done_reason`, the durations and the token
//! counts. The counts arrive after the text ends, so the last object is
//! written by `closing`, not on `Finish`.

use std::time::Instant;

use codex_sse::SseEvent;
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::pipeline::{Finish, Renderer, RunEvent};
use crate::core::{ToolCall, Usage};

/// Which endpoint's shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/api/chat`: `message: {role, content, thinking, tool_calls}`.
    Chat,
    /// `/api/generate`: `response` (and `thinking`).
    Generate,
}

pub struct OllamaRenderer {
    endpoint: Endpoint,
    model: String,
    started: Instant,
    streaming: bool,
    text: String,
    thinking: String,
    calls: Vec<ToolCall>,
    finish: Option<Finish>,
    usage: Usage,
    first_token: Option<Instant>,
    /// Boxed: rare, and inline it was a third of the renderer.
    error: Option<Box<ApiError>>,
}

impl OllamaRenderer {
    pub fn new(endpoint: Endpoint, model: String, started: Instant, streaming: bool) -> Self {
        OllamaRenderer {
            endpoint,
            model,
            started,
            streaming,
            text: String::new(),
            thinking: String::new(),
            calls: Vec::new(),
            finish: None,
            usage: Usage::default(),
            first_token: None,
            error: None,
        }
    }

    /// One object: `text`, `thinking` and `calls` as this endpoint shows them.
    fn object(&self, text: &str, thinking: &str, calls: &[ToolCall], done: bool) -> Value {
        let mut o = Map::new();
        o.insert("model".into(), json!(self.model));
        o.insert("created_at".into(), json!(rfc3339_now()));
        match self.endpoint {
            Endpoint::Chat => {
                let mut m = json!({"role": "assistant", "content": text});
                if !thinking.is_empty() {
                    m["thinking"] = json!(thinking);
                }
                if !calls.is_empty() {
                    m["tool_calls"] = calls.iter().map(tool_call).collect();
                }
                o.insert("message".into(), m);
            }
            Endpoint::Generate => {
                o.insert("response".into(), json!(text));
                if !thinking.is_empty() {
                    o.insert("thinking".into(), json!(thinking));
                }
            }
        }
        o.insert("done".into(), json!(done));
        if done {
            let now = Instant::now();
            let total = now.duration_since(self.started).as_nanos() as u64;
            let first = self.first_token.unwrap_or(now);
            let eval = now.duration_since(first).as_nanos() as u64;
            let done_reason = match self.finish {
                Some(Finish::Length) => "length",
                _ => "stop",
            };
            o.insert("done_reason".into(), json!(done_reason));
            o.insert("total_duration".into(), json!(total));
            o.insert("load_duration".into(), json!(0));
            o.insert("prompt_eval_count".into(), json!(self.usage.input_tokens));
            o.insert(
                "prompt_eval_duration".into(),
                json!(total.saturating_sub(eval)),
            );
            o.insert("eval_count".into(), json!(self.usage.output_tokens));
            o.insert("eval_duration".into(), json!(eval));
        }
        Value::Object(o)
    }

    fn frame(v: &Value) -> Vec<SseEvent> {
        vec![SseEvent::json(v).expect("json values serialize")]
    }
}

/// A call as Ollama shows it: arguments as an object, not JSON text.
fn tool_call(c: &ToolCall) -> Value {
    let arguments: Value =
        serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!(c.arguments));
    json!({"function": {"name": c.name, "arguments": arguments}})
}

/// The body of an Ollama error: `{"error": "message"}`.
pub(super) fn error_json(e: &ApiError) -> Value {
    json!({"error": e.message})
}

impl Renderer for OllamaRenderer {
    const DONE_MARKER: bool = false;

    fn opening(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }

    fn event(&mut self, event: &RunEvent) -> Vec<SseEvent> {
        match event {
            RunEvent::Text(_, t) => {
                self.first_token.get_or_insert_with(Instant::now);
                self.text.push_str(t);
                if self.streaming && !t.is_empty() {
                    return Self::frame(&self.object(t, "", &[], false));
                }
            }
            RunEvent::Reasoning(_, t) => {
                self.thinking.push_str(t);
                if self.streaming && !t.is_empty() {
                    return Self::frame(&self.object("", t, &[], false));
                }
            }
            RunEvent::ToolCall(_, c) => {
                self.first_token.get_or_insert_with(Instant::now);
                self.calls.push((**c).clone());
                if self.streaming && self.endpoint == Endpoint::Chat {
                    return Self::frame(&self.object("", "", std::slice::from_ref(c), false));
                }
            }
            RunEvent::Finish(_, f) => self.finish = Some(*f),
            RunEvent::Usage(u) => self.usage = *u,
            RunEvent::Error(e) => {
                self.error.get_or_insert_with(|| e.clone());
                if self.streaming {
                    // Ollama clients raise on a line holding `error`.
                    return Self::frame(&error_json(e));
                }
            }
        }
        Vec::new()
    }

    fn closing(&mut self) -> Vec<SseEvent> {
        if self.error.is_some() {
            return Vec::new();
        }
        Self::frame(&self.object("", "", &[], true))
    }

    type Collected = Value;

    fn collected(self) -> Result<Value, ApiError> {
        if let Some(e) = self.error {
            return Err(*e);
        }
        Ok(self.object(&self.text, &self.thinking, &self.calls, true))
    }
}

/// What Ollama answers a request with nothing to run (no messages, an
/// empty prompt: a client loading the model): done at once.
pub(super) fn loaded(endpoint: Endpoint, model: &str) -> Value {
    let mut o = json!({"model": model, "created_at": rfc3339_now(), "done": true,
                       "done_reason": "load"});
    match endpoint {
        Endpoint::Chat => o["message"] = json!({"role": "assistant", "content": ""}),
        Endpoint::Generate => o["response"] = json!(""),
    }
    o
}

/// Now as RFC 3339 in UTC with nanoseconds, as Ollama writes `created_at`.
pub(super) fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_nanos())
}

fn rfc3339(secs: u64, nanos: u32) -> String {
    let t = crate::calendar::Utc::of(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_709_251_199, 5), "2024-02-29T23:59:59.000000005Z");
    }

    fn streamed(endpoint: Endpoint, events: &[RunEvent]) -> Vec<Value> {
        let mut r = OllamaRenderer::new(endpoint, "m:latest".into(), Instant::now(), true);
        let mut frames = r.opening();
        for e in events {
            frames.extend(r.event(e));
        }
        frames.extend(r.closing());
        frames
            .iter()
            .map(|f| serde_json::from_slice(&f.to_ndjson_line().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn a_stream_is_text_pieces_then_one_done_object_with_counts() {
        let usage = Usage {
            input_tokens: 11,
            output_tokens: 3,
            ..Usage::default()
        };
        let lines = streamed(
            Endpoint::Chat,
            &[
                RunEvent::Text(0, "Hel".into()),
                RunEvent::Text(0, "lo".into()),
                RunEvent::Finish(0, Finish::Length),
                RunEvent::Usage(usage),
            ],
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["message"]["content"], "Hel");
        assert_eq!(lines[0]["done"], false);
        assert_eq!(lines[0]["model"], "m:latest");
        let last = &lines[2];
        assert_eq!(last["done"], true);
        assert_eq!(last["done_reason"], "length");
        assert_eq!(
            (
                last["prompt_eval_count"].as_u64(),
                last["eval_count"].as_u64()
            ),
            (Some(11), Some(3))
        );
        assert!(last["total_duration"].is_u64());
    }

    #[test]
    fn generate_answers_in_response_and_errors_are_bare_messages() {
        let lines = streamed(
            Endpoint::Generate,
            &[
                RunEvent::Text(0, "x".into()),
                RunEvent::Error(Box::new(ApiError::invalid("p", "boom"))),
            ],
        );
        assert_eq!(lines[0]["response"], "x");
        assert_eq!(lines[1], json!({"error": "boom"}));
        assert_eq!(lines.len(), 2, "no done object after an error");
    }

    #[test]
    fn collected_chat_carries_tool_calls_with_object_arguments() {
        let mut r = OllamaRenderer::new(Endpoint::Chat, "m".into(), Instant::now(), false);
        r.event(&RunEvent::ToolCall(
            0,
            Box::new(ToolCall {
                call_id: "c".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into(),
            }),
        ));
        r.event(&RunEvent::Finish(0, Finish::ToolCalls));
        let v = r.collected().unwrap();
        assert_eq!(
            v["message"]["tool_calls"],
            json!([{"function": {"name": "f", "arguments": {"a": 1}}}])
        );
        assert_eq!(v["done_reason"], "stop");
    }
}
