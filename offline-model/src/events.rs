//! The Responses API streaming events for a reply, in the order OpenAI sends them.
//!
//! A text reply is `response.created`, `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta` × N,
//! `response.output_text.done`, `response.content_part.done`, `response.output_item.done`,
//! `response.completed`. Codex only strictly needs `output_item.done` + `completed`, but a
//! gateway's tests should see the same stream a real model produces. Tool calls
//! (`function_call`, `custom_tool_call`) are `output_item.added`/`output_item.done` per
//! call, then `response.completed`.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::reply::Call;

/// One step of a response stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// An SSE event, already framed (`event: …\ndata: …\n\n`).
    Event(Bytes),
    /// Wait before the next step.
    Pause(Duration),
    /// Drop the connection here, without `response.completed`.
    Abort,
}

/// Per-response facts shared by every event.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    /// `resp_N`.
    pub(crate) response_id: String,
    /// The model named in the request.
    pub(crate) model: String,
    /// Unix seconds.
    pub(crate) created_at: u64,
    /// `ceil(input chars / 4)`.
    pub(crate) input_tokens: u64,
    /// Input tokens a prompt cache would have held: see `server::PromptCache`.
    pub(crate) cached_tokens: u64,
}

/// Splits `text` into deltas at word boundaries: each delta is a word with the whitespace
/// that precedes it, so the deltas concatenate to exactly `text`. Splits only at `char`
/// boundaries, so a multi-byte character is never cut.
pub(crate) fn split_words(text: &str) -> Vec<&str> {
    let mut deltas = Vec::new();
    let mut start = 0;
    let mut prev_ws = true;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if ws && !prev_ws && i > start {
            deltas.push(&text[start..i]);
            start = i;
        }
        prev_ws = ws;
    }
    if start < text.len() {
        deltas.push(&text[start..]);
    }
    deltas
}

fn usage(meta: &Meta, output_tokens: u64) -> Value {
    usage_with_reasoning(meta, output_tokens, 0)
}

/// `output_tokens` counts the reasoning tokens too, as OpenAI's do.
fn usage_with_reasoning(meta: &Meta, output_tokens: u64, reasoning_tokens: u64) -> Value {
    json!({
        "input_tokens": meta.input_tokens,
        "input_tokens_details": {"cached_tokens": meta.cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": meta.input_tokens + output_tokens,
    })
}

/// A `reasoning` output item with one `summary_text` part.
fn reasoning_item(id: &str, summary: Option<&str>) -> Value {
    let summary: Vec<Value> = summary
        .map(|t| json!({"type": "summary_text", "text": t}))
        .into_iter()
        .collect();
    json!({"id": id, "type": "reasoning", "summary": summary})
}

/// The `response` object; `usage` is null until the response completes.
pub(crate) fn response(meta: &Meta, status: &str, output: Vec<Value>, usage: Value) -> Value {
    json!({
        "id": meta.response_id,
        "object": "response",
        "created_at": meta.created_at,
        "status": status,
        "model": meta.model,
        "output": output,
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "usage": usage,
    })
}

fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

/// A call's output item; `done` carries its arguments or input, `added` leaves them empty
/// (as a real stream does before the deltas).
fn call_item(id_number: u64, call: &Call, status: &str, done: bool) -> Value {
    match call {
        Call::Function {
            namespace,
            name,
            arguments,
        } => {
            let arguments = if done {
                Value::Object(arguments.clone()).to_string()
            } else {
                String::new()
            };
            let mut item = json!({
                "id": format!("fc_{id_number}"),
                "type": "function_call",
                "status": status,
                "call_id": format!("call_{id_number}"),
                "name": name,
                "arguments": arguments,
            });
            if let Some(ns) = namespace {
                item["namespace"] = json!(ns);
            }
            item
        }
        Call::Custom { name, input } => json!({
            "id": format!("ctc_{id_number}"),
            "type": "custom_tool_call",
            "status": status,
            "call_id": format!("call_{id_number}"),
            "name": name,
            "input": if done { input.as_str() } else { "" },
        }),
    }
}

/// Builds the framed events, numbering `sequence_number` from 0.
struct Events {
    steps: Vec<Step>,
    seq: u64,
}

impl Events {
    fn new() -> Self {
        Self {
            steps: Vec::new(),
            seq: 0,
        }
    }

    fn push(&mut self, ty: &str, mut data: Value) {
        data["type"] = json!(ty);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        self.steps.push(Step::Event(Bytes::from(format!(
            "event: {ty}\ndata: {data}\n\n"
        ))));
    }

    fn created(&mut self, meta: &Meta) {
        let r = response(meta, "in_progress", Vec::new(), Value::Null);
        self.push("response.created", json!({"response": r.clone()}));
        self.push("response.in_progress", json!({"response": r}));
    }
}

/// The stream of a text reply whose message item id is `msg_{id_number}`; with
/// `reasoning`, a `reasoning` item `rs_{id_number}` comes first (output index 0), its
/// summary streamed as word deltas.
pub(crate) fn text_stream(
    meta: &Meta,
    id_number: u64,
    text: &str,
    delay: Option<Duration>,
    break_after: Option<usize>,
    reasoning: Option<&str>,
) -> Vec<Step> {
    let item_id = format!("msg_{id_number}");
    let deltas = split_words(text);
    let mut ev = Events::new();
    ev.created(meta);
    let mut output = Vec::new();
    let mut reasoning_tokens = 0;
    if let Some(summary) = reasoning {
        let rs_id = format!("rs_{id_number}");
        ev.push(
            "response.output_item.added",
            json!({"output_index": 0, "item": reasoning_item(&rs_id, None)}),
        );
        ev.push(
            "response.reasoning_summary_part.added",
            json!({"item_id": rs_id, "output_index": 0, "summary_index": 0,
                   "part": {"type": "summary_text", "text": ""}}),
        );
        for delta in split_words(summary) {
            reasoning_tokens += 1;
            ev.push(
                "response.reasoning_summary_text.delta",
                json!({"item_id": rs_id, "output_index": 0, "summary_index": 0, "delta": delta}),
            );
        }
        ev.push(
            "response.reasoning_summary_text.done",
            json!({"item_id": rs_id, "output_index": 0, "summary_index": 0, "text": summary}),
        );
        ev.push(
            "response.reasoning_summary_part.done",
            json!({"item_id": rs_id, "output_index": 0, "summary_index": 0,
                   "part": {"type": "summary_text", "text": summary}}),
        );
        let done = reasoning_item(&rs_id, Some(summary));
        ev.push(
            "response.output_item.done",
            json!({"output_index": 0, "item": done.clone()}),
        );
        output.push(done);
    }
    let index = output.len();
    ev.push(
        "response.output_item.added",
        json!({"output_index": index, "item": message_item(&item_id, "in_progress", Vec::new())}),
    );
    ev.push(
        "response.content_part.added",
        json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": output_text_part("")}),
    );
    for (sent, delta) in deltas.iter().enumerate() {
        if break_after == Some(sent) {
            break;
        }
        if let Some(delay) = delay {
            ev.steps.push(Step::Pause(delay));
        }
        ev.push(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}),
        );
    }
    if break_after.is_some() {
        ev.steps.push(Step::Abort);
        return ev.steps;
    }
    ev.push(
        "response.output_text.done",
        json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
    );
    ev.push(
        "response.content_part.done",
        json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": output_text_part(text)}),
    );
    let done = message_item(&item_id, "completed", vec![output_text_part(text)]);
    ev.push(
        "response.output_item.done",
        json!({"output_index": index, "item": done.clone()}),
    );
    output.push(done);
    let r = response(
        meta,
        "completed",
        output,
        usage_with_reasoning(
            meta,
            deltas.len() as u64 + reasoning_tokens,
            reasoning_tokens,
        ),
    );
    ev.push("response.completed", json!({"response": r}));
    ev.steps
}

/// The final `output` of a text reply (for `stream: false`), and its output and
/// reasoning tokens.
pub(crate) fn text_output(
    id_number: u64,
    text: &str,
    reasoning: Option<&str>,
) -> (Vec<Value>, u64, u64) {
    let mut output = Vec::new();
    let reasoning_tokens = reasoning.map_or(0, |r| split_words(r).len() as u64);
    if let Some(summary) = reasoning {
        output.push(reasoning_item(&format!("rs_{id_number}"), Some(summary)));
    }
    output.push(message_item(
        &format!("msg_{id_number}"),
        "completed",
        vec![output_text_part(text)],
    ));
    (
        output,
        split_words(text).len() as u64 + reasoning_tokens,
        reasoning_tokens,
    )
}

/// The stream of a function-call reply; call `i` uses id number `first_id + i`
/// (`fc_N` item id, `call_N` call id).
pub(crate) fn calls_stream(meta: &Meta, first_id: u64, calls: &[Call]) -> Vec<Step> {
    let mut ev = Events::new();
    ev.created(meta);
    let (output, output_tokens) = calls_output(first_id, calls);
    for (index, (call, done)) in calls.iter().zip(&output).enumerate() {
        let n = first_id + index as u64;
        ev.push(
            "response.output_item.added",
            json!({"output_index": index, "item": call_item(n, call, "in_progress", false)}),
        );
        ev.push(
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        );
    }
    let r = response(meta, "completed", output, usage(meta, output_tokens));
    ev.push("response.completed", json!({"response": r}));
    ev.steps
}

/// The final `output` of a function-call reply; output tokens = one per call.
pub(crate) fn calls_output(first_id: u64, calls: &[Call]) -> (Vec<Value>, u64) {
    let output = calls
        .iter()
        .enumerate()
        .map(|(i, call)| call_item(first_id + i as u64, call, "completed", true))
        .collect();
    (output, calls.len() as u64)
}

/// `usage` for a final response (for `stream: false`).
pub(crate) fn final_usage(meta: &Meta, output_tokens: u64, reasoning_tokens: u64) -> Value {
    usage_with_reasoning(meta, output_tokens, reasoning_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            response_id: "resp_1".into(),
            model: "codex-offline".into(),
            created_at: 0,
            input_tokens: 3,
            cached_tokens: 0,
        }
    }

    fn events(steps: &[Step]) -> Vec<Value> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Event(b) => {
                    let s = std::str::from_utf8(b).unwrap();
                    let (head, data) = s.split_once("\ndata: ").unwrap();
                    let v: Value = serde_json::from_str(data.trim_end()).unwrap();
                    assert_eq!(head, format!("event: {}", v["type"].as_str().unwrap()));
                    assert!(s.ends_with("\n\n"));
                    Some(v)
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn deltas_concatenate_to_the_text() {
        for text in [
            "ECHO: hi  there",
            " lead",
            "trail ",
            "a\nb\tc",
            "",
            "   ",
            "日本 語 ✓ é",
        ] {
            assert_eq!(split_words(text).concat(), text, "{text:?}");
        }
        assert_eq!(split_words("ECHO: hi  there"), ["ECHO:", " hi", "  there"]);
        assert_eq!(split_words("日本 語"), ["日本", " 語"]);
        assert!(split_words("").is_empty());
    }

    #[test]
    fn a_reasoning_summary_streams_before_the_message_and_counts_as_reasoning_tokens() {
        let ev = events(&text_stream(
            &meta(),
            4,
            "ok",
            None,
            None,
            Some("Think twice."),
        ));
        let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            &types[2..9],
            [
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
            ]
        );
        assert_eq!(ev[2]["item"]["type"], "reasoning");
        assert_eq!(ev[2]["item"]["id"], "rs_4");
        assert_eq!(ev[9]["output_index"], 1, "the message comes second");
        let done = &ev.last().unwrap()["response"];
        assert_eq!(done["output"][0]["summary"][0]["text"], "Think twice.");
        assert_eq!(
            done["usage"]["output_tokens_details"]["reasoning_tokens"],
            2
        );
        assert_eq!(done["usage"]["output_tokens"], 3);
    }

    #[test]
    fn text_stream_is_the_full_realistic_sequence() {
        let ev = events(&text_stream(&meta(), 7, "ECHO: hi there", None, None, None));
        let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        for (i, e) in ev.iter().enumerate() {
            assert_eq!(e["sequence_number"], i);
        }
        assert_eq!(ev[2]["item"]["id"], "msg_7");
        assert_eq!(ev[9]["item"]["content"][0]["text"], "ECHO: hi there");
        let usage = &ev[10]["response"]["usage"];
        assert_eq!(usage["input_tokens"], 3);
        assert_eq!(usage["output_tokens"], 3);
        assert_eq!(usage["total_tokens"], 6);
        assert_eq!(usage["input_tokens_details"]["cached_tokens"], 0);
        assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 0);
        assert_eq!(ev[10]["response"]["id"], "resp_1");
    }

    #[test]
    fn break_stops_after_n_deltas_without_completed() {
        let steps = text_stream(&meta(), 1, "a b c d", None, Some(2), None);
        assert_eq!(steps.last(), Some(&Step::Abort));
        let ev = events(&steps);
        let deltas = ev
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .count();
        assert_eq!(deltas, 2);
        assert!(ev.iter().all(|e| e["type"] != "response.completed"));
    }

    #[test]
    fn slow_pauses_before_every_delta() {
        let d = Duration::from_millis(5);
        let steps = text_stream(&meta(), 1, "a b", Some(d), None, None);
        let pauses = steps.iter().filter(|s| **s == Step::Pause(d)).count();
        assert_eq!(pauses, 2);
    }

    #[test]
    fn calls_stream_has_one_item_per_call() {
        let mut args = serde_json::Map::new();
        args.insert("id".into(), json!("A 1"));
        let calls = [
            Call::Function {
                namespace: None,
                name: "lookup".into(),
                arguments: args,
            },
            Call::Function {
                namespace: Some("crm".into()),
                name: "find".into(),
                arguments: Default::default(),
            },
            Call::Custom {
                name: "apply_patch".into(),
                input: "*** Begin Patch\n*** End Patch\n".into(),
            },
        ];
        let ev = events(&calls_stream(&meta(), 4, &calls));
        let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.output_item.done",
                "response.output_item.added",
                "response.output_item.done",
                "response.output_item.added",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(ev[3]["item"]["call_id"], "call_4");
        assert_eq!(ev[3]["item"]["arguments"], r#"{"id":"A 1"}"#);
        assert_eq!(ev[5]["item"]["call_id"], "call_5");
        assert_eq!(ev[5]["item"]["namespace"], "crm");
        assert_eq!(ev[5]["output_index"], 1);
        // A freeform call carries raw text, not JSON arguments.
        assert_eq!(ev[6]["item"]["input"], "");
        assert_eq!(ev[7]["item"]["type"], "custom_tool_call");
        assert_eq!(ev[7]["item"]["call_id"], "call_6");
        assert_eq!(ev[7]["item"]["input"], "*** Begin Patch\n*** End Patch\n");
        assert_eq!(ev[8]["response"]["output"].as_array().unwrap().len(), 3);
    }
}
