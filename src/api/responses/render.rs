//! [`ResponsesRenderer`]: Responses API objects and stream events from the
//! pipeline's run events.
//!
//! The streamed events and the final `response` object come from the same
//! accumulated state, so they always agree.

use std::future::Future;
use std::pin::Pin;

use codex_sse::SseEvent;
use serde_json::{json, Value};

use super::request::ResponsesRequest;
use crate::api::error::ApiError;
use crate::api::ids;
use crate::api::pipeline::{Finish, Renderer, RunEvent};
use crate::core::Usage;
use crate::store::{ResponseStore, StoredResponse};

pub(super) struct ResponsesRenderer {
    id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    tools: Value,
    max_output_tokens: Option<u64>,
    parallel_tool_calls: bool,
    output: Vec<Value>,
    /// Index in `output` of the message being streamed, if one is open.
    open_message: Option<usize>,
    /// Index in `output` of the reasoning item being streamed, if one is open.
    open_reasoning: Option<usize>,
    /// The request asked for reasoning summaries.
    summaries: bool,
    finish: Option<Finish>,
    usage: Usage,
    /// Boxed: rare, and inline it was a third of the renderer.
    error: Option<Box<ApiError>>,
    seq: u64,
    previous_response_id: Option<String>,
    store: bool,
    /// Where the finished response is kept, when it is.
    recording: Option<Recording>,
    streamed: bool,
}

/// What storing a response needs besides the response itself.
pub(super) struct Recording {
    pub(super) store: ResponseStore,
    pub(super) owner: String,
    pub(super) input_items: Vec<Value>,
}

impl Renderer for ResponsesRenderer {
    /// The Responses API ends with `response.completed`, not `[DONE]`.
    const DONE_MARKER: bool = false;

    fn opening(&mut self) -> Vec<SseEvent> {
        self.opening()
    }

    fn event(&mut self, event: &RunEvent) -> Vec<SseEvent> {
        self.ingest(event)
    }

    fn closing(&mut self) -> Vec<SseEvent> {
        self.closing()
    }

    fn finished(&mut self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let recording = self.recording.take()?;
        // A non-streamed failure is an HTTP error: the client never saw an id.
        if self.error.is_some() && !self.streamed {
            return None;
        }
        let _ = self.close_message();
        let record = StoredResponse {
            id: self.id.clone(),
            owner: recording.owner,
            parent: self.previous_response_id.clone(),
            created_at: self.created_at,
            input_items: Value::Array(recording.input_items),
            response: self.response(),
        };
        Some(Box::pin(async move {
            let id = record.id.clone();
            if let Err(e) = recording.store.put(record).await {
                tracing::warn!(response = %id, error = %e, "the response could not be stored");
            }
        }))
    }

    type Collected = Value;

    fn collected(mut self) -> Result<Value, ApiError> {
        if let Some(e) = self.error.take() {
            return Err(*e);
        }
        // Closes the open items; the events are for streams only.
        let _ = self.close_reasoning();
        let _ = self.close_message();
        Ok(self.response())
    }
}

/// The error's `code` as a string always: its type when it has no code.
fn error_code(e: &ApiError) -> &'static str {
    e.code.unwrap_or(e.kind)
}

impl ResponsesRenderer {
    pub(super) fn new(
        req: &ResponsesRequest,
        id: String,
        recording: Option<Recording>,
    ) -> ResponsesRenderer {
        ResponsesRenderer {
            id,
            created_at: ids::unix_now(),
            model: req.conversation.model.clone(),
            instructions: req.instructions.clone(),
            tools: req.tools.clone(),
            max_output_tokens: req.conversation.max_tokens,
            parallel_tool_calls: req.conversation.parallel_tool_calls.unwrap_or(true),
            output: Vec::new(),
            open_message: None,
            open_reasoning: None,
            summaries: req.reasoning_summary,
            finish: None,
            usage: Usage::default(),
            error: None,
            seq: 0,
            previous_response_id: req.previous_response_id.clone(),
            store: req.store,
            recording,
            streamed: false,
        }
    }

    fn status(&self) -> &'static str {
        match (&self.error, self.finish) {
            (Some(_), _) => "failed",
            (None, Some(Finish::Length)) => "incomplete",
            (None, Some(_)) => "completed",
            (None, None) => "in_progress",
        }
    }

    /// The `response` object as it stands.
    fn response(&self) -> Value {
        let status = self.status();
        let u = &self.usage;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": self.error.as_ref().map(|e| json!({"code": error_code(e), "message": e.message})),
            "incomplete_details": (status == "incomplete").then(|| json!({"reason": "max_output_tokens"})),
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "store": self.store,
            "tool_choice": "auto",
            "tools": self.tools,
            "usage": (status != "in_progress").then(|| json!({
                "input_tokens": u.input_tokens,
                "input_tokens_details": {"cached_tokens": u.cached_input_tokens},
                "output_tokens": u.output_tokens,
                "output_tokens_details": {"reasoning_tokens": u.reasoning_output_tokens},
                "total_tokens": u.input_tokens + u.output_tokens,
            })),
        })
    }

    fn event(&mut self, name: &'static str, mut data: Value) -> SseEvent {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        SseEvent::json(&data)
            .expect("json values serialize")
            .with_event(name)
    }

    /// `response.output_text.delta`, the event a response is mostly made
    /// of, written without building a `Value`; byte for byte what
    /// [`ResponsesRenderer::event`] renders (a unit test compares them).
    fn text_delta(&mut self, index: usize, text: &str) -> SseEvent {
        const NAME: &str = "response.output_text.delta";
        fn write<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
            serde_json::to_writer(out, v).expect("strings and numbers serialize");
        }
        let mut out = Vec::with_capacity(text.len() + 160);
        out.extend_from_slice(b"{\"item_id\":");
        write(&mut out, &self.output[index]["id"]);
        out.extend_from_slice(b",\"output_index\":");
        write(&mut out, &index);
        out.extend_from_slice(b",\"content_index\":0,\"delta\":");
        write(&mut out, text);
        out.extend_from_slice(b",\"type\":\"response.output_text.delta\",\"sequence_number\":");
        write(&mut out, &self.seq);
        out.push(b'}');
        self.seq += 1;
        // Compact JSON holds no line break, so this is one `data:` line.
        SseEvent::data(out).with_event(NAME)
    }

    /// `response.created` and `response.in_progress`.
    fn opening(&mut self) -> Vec<SseEvent> {
        self.streamed = true;
        let r = self.response();
        vec![
            self.event("response.created", json!({"response": r})),
            self.event("response.in_progress", json!({"response": r})),
        ]
    }

    /// The terminal event: `response.completed`, `.incomplete` or `.failed`.
    fn closing(&mut self) -> Vec<SseEvent> {
        let mut out = self.close_reasoning();
        out.extend(self.close_message());
        let name = match self.status() {
            "failed" => "response.failed",
            "incomplete" => "response.incomplete",
            _ => "response.completed",
        };
        let r = self.response();
        out.push(self.event(name, json!({"response": r})));
        out
    }

    /// Takes one run event; returns the stream events it produces. A
    /// reasoning item still open ends before the next item starts.
    fn ingest(&mut self, event: &RunEvent) -> Vec<SseEvent> {
        let mut out = match event {
            RunEvent::Text(..) | RunEvent::ToolCall(..) => self.close_reasoning(),
            _ => Vec::new(),
        };
        out.extend(self.ingest_event(event));
        out
    }

    fn ingest_event(&mut self, event: &RunEvent) -> Vec<SseEvent> {
        match event {
            RunEvent::Reasoning(_, text) if self.summaries => self.reasoning(text),
            RunEvent::Reasoning(..) => Vec::new(),
            RunEvent::Text(_, text) => {
                let mut out = Vec::new();
                let index = match self.open_message {
                    Some(i) => i,
                    None => {
                        let item = json!({
                            "type": "message", "id": format!("msg_{}", ids::short_id()),
                            "status": "in_progress", "role": "assistant", "content": []
                        });
                        self.output.push(item.clone());
                        let i = self.output.len() - 1;
                        self.open_message = Some(i);
                        out.push(self.event(
                            "response.output_item.added",
                            json!({"output_index": i, "item": item}),
                        ));
                        let item_id = self.output[i]["id"].clone();
                        out.push(self.event(
                            "response.content_part.added",
                            json!({"item_id": item_id, "output_index": i, "content_index": 0,
                                   "part": {"type": "output_text", "text": "", "annotations": []}}),
                        ));
                        self.output[i]["content"] =
                            json!([{"type": "output_text", "text": "", "annotations": []}]);
                        i
                    }
                };
                // Appended in place: re-joining the whole text per delta
                // made a long answer quadratic.
                match self.output[index].pointer_mut("/content/0/text") {
                    Some(Value::String(acc)) => acc.push_str(text),
                    _ => self.output[index]["content"][0]["text"] = json!(text),
                }
                out.push(self.text_delta(index, text));
                out
            }
            RunEvent::ToolCall(_, call) => {
                let mut out = self.close_message();
                let item = json!({
                    "type": "function_call", "id": format!("fc_{}", ids::short_id()),
                    "call_id": call.call_id, "name": call.name, "arguments": call.arguments, "status": "completed"
                });
                self.output.push(item.clone());
                let i = self.output.len() - 1;
                let mut added = item.clone();
                added["arguments"] = json!("");
                added["status"] = json!("in_progress");
                out.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": i, "item": added}),
                ));
                out.push(self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item["id"], "output_index": i, "delta": call.arguments}),
                ));
                out.push(self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": item["id"], "output_index": i, "arguments": call.arguments}),
                ));
                out.push(self.event(
                    "response.output_item.done",
                    json!({"output_index": i, "item": item}),
                ));
                out
            }
            RunEvent::Finish(_, finish) => {
                self.finish = Some(*finish);
                Vec::new()
            }
            RunEvent::Usage(u) => {
                self.usage = *u;
                Vec::new()
            }
            // The terminal `response.failed` follows in `closing`, once.
            // Strict clients (the Vercel AI SDK) refuse an error event whose
            // `code` or `message` is not a string: `code` falls back to the
            // error's type. The envelope rides along under `error` for
            // clients that read OpenAI's error object there.
            RunEvent::Error(e) => {
                self.error = Some(e.clone());
                let code = error_code(e);
                vec![self.event(
                    "error",
                    json!({
                        "code": code, "message": e.message, "param": e.param,
                        "error": {"type": e.kind, "code": code, "message": e.message, "param": e.param},
                    }),
                )]
            }
        }
    }

    /// A piece of the reasoning summary: opens a `reasoning` item with one
    /// `summary_text` part if none is open, then a summary delta.
    fn reasoning(&mut self, text: &str) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let index = match self.open_reasoning {
            Some(i) => i,
            None => {
                out.extend(self.close_message());
                let item = json!({
                    "type": "reasoning", "id": format!("rs_{}", ids::short_id()), "summary": []
                });
                self.output.push(item.clone());
                let i = self.output.len() - 1;
                self.open_reasoning = Some(i);
                out.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": i, "item": item}),
                ));
                let part = json!({"type": "summary_text", "text": ""});
                out.push(self.event(
                    "response.reasoning_summary_part.added",
                    json!({"item_id": self.output[i]["id"], "output_index": i,
                           "summary_index": 0, "part": part}),
                ));
                self.output[i]["summary"] = json!([part]);
                i
            }
        };
        let joined = format!(
            "{}{text}",
            self.output[index]["summary"][0]["text"]
                .as_str()
                .unwrap_or("")
        );
        self.output[index]["summary"][0]["text"] = json!(joined);
        let item_id = self.output[index]["id"].clone();
        out.push(self.event(
            "response.reasoning_summary_text.delta",
            json!({"item_id": item_id, "output_index": index, "summary_index": 0, "delta": text}),
        ));
        out
    }

    /// Closes the open reasoning item, if any.
    fn close_reasoning(&mut self) -> Vec<SseEvent> {
        let Some(i) = self.open_reasoning.take() else {
            return Vec::new();
        };
        let item = self.output[i].clone();
        let part = item["summary"][0].clone();
        vec![
            self.event(
                "response.reasoning_summary_text.done",
                json!({"item_id": item["id"], "output_index": i, "summary_index": 0, "text": part["text"]}),
            ),
            self.event(
                "response.reasoning_summary_part.done",
                json!({"item_id": item["id"], "output_index": i, "summary_index": 0, "part": part}),
            ),
            self.event(
                "response.output_item.done",
                json!({"output_index": i, "item": item}),
            ),
        ]
    }

    /// Closes the open message item, if any.
    fn close_message(&mut self) -> Vec<SseEvent> {
        let Some(i) = self.open_message.take() else {
            return Vec::new();
        };
        self.output[i]["status"] = json!("completed");
        let item = self.output[i].clone();
        let text = item["content"][0]["text"].clone();
        let part = item["content"][0].clone();
        vec![
            self.event(
                "response.output_text.done",
                json!({"item_id": item["id"], "output_index": i, "content_index": 0, "text": text}),
            ),
            self.event(
                "response.content_part.done",
                json!({"item_id": item["id"], "output_index": i, "content_index": 0, "part": part}),
            ),
            self.event(
                "response.output_item.done",
                json!({"output_index": i, "item": item}),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renderer() -> ResponsesRenderer {
        ResponsesRenderer {
            id: "resp_1".into(),
            created_at: 1,
            model: "m".into(),
            instructions: None,
            tools: json!([]),
            max_output_tokens: None,
            parallel_tool_calls: true,
            output: vec![json!({"type": "message", "id": "msg_\"x\"é", "content": []})],
            open_message: Some(0),
            open_reasoning: None,
            summaries: false,
            finish: None,
            usage: Usage::default(),
            error: None,
            seq: 41,
            previous_response_id: None,
            store: false,
            recording: None,
            streamed: true,
        }
    }

    #[test]
    fn a_text_delta_is_byte_for_byte_the_value_rendering() {
        for text in ["", "hi", "q\"\\/\n\r\t\u{0}\u{1f}", "漢字 🎉 \u{2028}"] {
            let mut fast = renderer();
            let mut slow = renderer();
            let item_id = slow.output[0]["id"].clone();
            let expected = slow.event(
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": text}),
            );
            assert_eq!(fast.text_delta(0, text).to_bytes(), expected.to_bytes());
            assert_eq!(fast.seq, slow.seq);
        }
    }
}
