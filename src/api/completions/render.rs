//! [`CompletionsRenderer`]: `text_completion` objects, streamed or whole,
//! from the pipeline's [`RunEvent`]s.

use codex_sse::SseEvent;
use serde_json::{json, Value};

use crate::api::chat::usage_json;
use crate::api::error::ApiError;
use crate::api::pipeline::{Finish, Renderer, RunEvent};
use crate::core::Usage;

/// What every object of one response shares.
#[derive(Debug, Clone)]
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub include_usage: bool,
    /// The prompt, sent before the completion (`echo`).
    pub echo: Option<String>,
}

pub struct CompletionsRenderer {
    meta: Meta,
    streaming: bool,
    text: Vec<String>,
    finish: Vec<Option<Finish>>,
    usage: Usage,
    /// Boxed: rare, and inline it was a third of the renderer.
    error: Option<Box<ApiError>>,
}

impl CompletionsRenderer {
    pub fn new(meta: Meta, choices: usize, streaming: bool) -> CompletionsRenderer {
        CompletionsRenderer {
            meta,
            streaming,
            text: vec![String::new(); choices],
            finish: vec![None; choices],
            usage: Usage::default(),
            error: None,
        }
    }

    fn object(&self, choices: Value) -> Value {
        json!({
            "id": self.meta.id,
            "object": "text_completion",
            "created": self.meta.created,
            "model": self.meta.model,
            "system_fingerprint": self.meta.system_fingerprint,
            "choices": choices,
        })
    }

    fn chunk(&self, index: usize, text: &str, finish: Option<Finish>) -> SseEvent {
        let c = self.object(json!([{
            "text": text, "index": index, "logprobs": null,
            "finish_reason": finish.map(completion_finish),
        }]));
        SseEvent::json(&c).expect("json values serialize")
    }
}

/// A legacy completion never ends on tool calls (it has no tools).
fn completion_finish(f: Finish) -> &'static str {
    match f {
        Finish::Length => "length",
        Finish::Stop | Finish::ToolCalls => "stop",
    }
}

impl Renderer for CompletionsRenderer {
    const DONE_MARKER: bool = true;

    fn opening(&mut self) -> Vec<SseEvent> {
        match &self.meta.echo {
            Some(prompt) => (0..self.text.len())
                .map(|i| self.chunk(i, prompt, None))
                .collect(),
            None => Vec::new(),
        }
    }

    fn event(&mut self, event: &RunEvent) -> Vec<SseEvent> {
        match event {
            RunEvent::Text(i, t) => {
                self.text[*i].push_str(t);
                if self.streaming {
                    return vec![self.chunk(*i, t, None)];
                }
            }
            RunEvent::Finish(i, f) => {
                self.finish[*i] = Some(*f);
                if self.streaming {
                    return vec![self.chunk(*i, "", Some(*f))];
                }
            }
            RunEvent::Usage(u) => {
                self.usage = *u;
                if self.streaming && self.meta.include_usage {
                    let mut c = self.object(json!([]));
                    c["usage"] = usage_json(u);
                    return vec![SseEvent::json(&c).expect("json values serialize")];
                }
            }
            RunEvent::Error(e) => {
                self.error.get_or_insert_with(|| e.clone());
                if self.streaming {
                    return vec![SseEvent::json(&e.body_json()).expect("json values serialize")];
                }
            }
            // No tools in this dialect; reasoning has no field here.
            RunEvent::ToolCall(..) | RunEvent::Reasoning(..) => {}
        }
        Vec::new()
    }

    fn closing(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }

    type Collected = Value;

    fn collected(self) -> Result<Value, ApiError> {
        if let Some(e) = self.error {
            return Err(*e);
        }
        let echo = self.meta.echo.clone().unwrap_or_default();
        let choices: Vec<Value> = self
            .text
            .iter()
            .zip(&self.finish)
            .enumerate()
            .map(|(index, (text, finish))| {
                json!({
                    "text": format!("{echo}{text}"), "index": index, "logprobs": null,
                    "finish_reason": completion_finish(finish.unwrap_or(Finish::Stop)),
                })
            })
            .collect();
        let mut v = self.object(json!(choices));
        let u = usage_json(&self.usage);
        v["usage"] = json!({
            "prompt_tokens": u["prompt_tokens"],
            "completion_tokens": u["completion_tokens"],
            "total_tokens": u["total_tokens"],
        });
        Ok(v)
    }
}
