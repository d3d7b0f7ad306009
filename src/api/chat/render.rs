//! [`ChatRenderer`]: OpenAI's chat shapes, streamed chunks or the one
//! `chat.completion` object, both built from the pipeline's [`RunEvent`]s.

use codex_sse::SseEvent;
use serde::Serialize;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::pipeline::{Finish, Renderer, RunEvent};
use crate::core::{ToolCall, Usage};
use crate::reasoning_format::ReasoningFormat;

/// What every chunk of one response shares.
#[derive(Debug, Clone)]
pub struct ChatMeta {
    pub id: String,
    pub created: u64,
    /// The model name as the client asked for it.
    pub model: String,
    pub system_fingerprint: String,
    pub include_usage: bool,
    /// The request used the deprecated `functions` field.
    pub legacy_functions: bool,
    /// How the reasoning summary is shown (`PROXY_REASONING_FORMAT`).
    pub reasoning: ReasoningFormat,
}

pub(crate) fn usage_json(u: &Usage) -> Value {
    serde_json::to_value(UsageBody::of(u)).expect("numbers encode")
}

/// Renders one chat response: chunks when streaming, else the accumulated
/// `chat.completion`.
pub struct ChatRenderer {
    meta: ChatMeta,
    /// The text every chunk of this response starts with, up to the
    /// choice's index (`{"id":…,"choices":[{"index":`), rendered on the
    /// first delta; see [`ChatRenderer::delta_chunk`].
    prefix: Option<Vec<u8>>,
    streaming: bool,
    /// Tool calls emitted so far per choice (their `index` in `delta.tool_calls`).
    calls: Vec<usize>,
    /// The non-streamed answer, per choice.
    collected: Vec<ChoiceAcc>,
    /// Per choice: a `<think>` was streamed and not yet closed.
    thinking: Vec<bool>,
    usage: Usage,
    /// Boxed: rare, and inline it was a third of the renderer.
    error: Option<Box<ApiError>>,
}

impl Renderer for ChatRenderer {
    const DONE_MARKER: bool = true;

    fn opening(&mut self) -> Vec<SseEvent> {
        (0..self.calls.len())
            .map(|i| self.fast_chunk(i, fixed_delta(ROLE_DELTA), None))
            .collect()
    }

    fn event(&mut self, event: &RunEvent) -> Vec<SseEvent> {
        if self.streaming {
            if let Some(chunk) = self.delta_chunk(event) {
                return vec![chunk];
            }
            return self.render(event).iter().map(to_event).collect();
        }
        match event {
            RunEvent::Text(i, t) => self.collected[*i].content.push_str(t),
            RunEvent::Reasoning(i, t) => self.collected[*i].reasoning.push_str(t),
            RunEvent::ToolCall(i, c) => self.collected[*i].calls.push((**c).clone()),
            RunEvent::Finish(i, f) => self.collected[*i].finish = Some(*f),
            RunEvent::Usage(u) => self.usage = *u,
            RunEvent::Error(e) => {
                self.error.get_or_insert_with(|| e.clone());
            }
        }
        Vec::new()
    }

    fn closing(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }

    type Collected = Completion;

    fn collected(self) -> Result<Completion, ApiError> {
        match self.error {
            Some(e) => Err(*e),
            None => Ok(Completion::new(self.meta, self.collected, &self.usage)),
        }
    }
}

/// Appends `v` as compact JSON: serde_json's own escaping, so the text is
/// what a `Value` holding it would serialize to.
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("strings and numbers serialize");
}

fn to_event(v: &Value) -> SseEvent {
    SseEvent::json(v).expect("json values serialize")
}

impl ChatRenderer {
    pub fn new(meta: ChatMeta, choices: usize, streaming: bool) -> ChatRenderer {
        ChatRenderer {
            meta,
            prefix: None,
            streaming,
            calls: vec![0; choices],
            collected: (0..choices).map(|_| ChoiceAcc::default()).collect(),
            thinking: vec![false; choices],
            usage: Usage::default(),
            error: None,
        }
    }

    /// A text or reasoning delta, the chunks a response is mostly made of,
    /// and a choice's finish, written without building a `Value` (see
    /// [`ChatRenderer::fast_chunk`]). `None` for every other event, and for
    /// one that must first close a `<think>`.
    fn delta_chunk(&mut self, event: &RunEvent) -> Option<SseEvent> {
        let (i, key, text) = match event {
            RunEvent::Text(i, text) if !self.thinking[*i] => (*i, "content", text),
            RunEvent::Reasoning(i, text) if self.meta.reasoning == ReasoningFormat::Field => {
                (*i, "reasoning_content", text)
            }
            RunEvent::Finish(i, finish) if !self.thinking[*i] => {
                let reason = finish_reason(*finish, self.meta.legacy_functions);
                return Some(self.fast_chunk(*i, fixed_delta(b"{}"), Some(reason)));
            }
            _ => return None,
        };
        // The delta is written straight into the chunk: no buffer of its own.
        let delta = (text.len() + key.len() + 8, |out: &mut Vec<u8>| {
            out.extend_from_slice(b"{\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            write_json(out, text.as_str());
            out.push(b'}');
        });
        Some(self.fast_chunk(i, delta, None))
    }

    /// One chunk of choice `i`, written without building a `Value`: the
    /// fixed prefix (rendered once per response), the choice index, the
    /// delta (its length hint and a writer of its compact JSON), the finish
    /// reason, the fixed tail. Byte for byte what [`ChatRenderer::choice`]
    /// renders (a unit test compares them).
    fn fast_chunk(
        &mut self,
        i: usize,
        (delta_len, write_delta): (usize, impl FnOnce(&mut Vec<u8>)),
        finish: Option<&str>,
    ) -> SseEvent {
        let prefix = self.prefix.get_or_insert_with(|| {
            let mut p = Vec::with_capacity(192);
            p.extend_from_slice(b"{\"id\":");
            write_json(&mut p, &self.meta.id);
            p.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
            write_json(&mut p, &self.meta.created);
            p.extend_from_slice(b",\"model\":");
            write_json(&mut p, &self.meta.model);
            p.extend_from_slice(b",\"system_fingerprint\":");
            write_json(&mut p, &self.meta.system_fingerprint);
            p.extend_from_slice(b",\"choices\":[{\"index\":");
            p
        });
        let mut out = Vec::with_capacity(prefix.len() + delta_len + 96);
        out.extend_from_slice(prefix);
        write_json(&mut out, &i);
        out.extend_from_slice(b",\"delta\":");
        write_delta(&mut out);
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(reason) => write_json(&mut out, reason),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]");
        if self.meta.include_usage {
            out.extend_from_slice(b",\"usage\":null");
        }
        out.push(b'}');
        // Compact JSON holds no line break, so this is one `data:` line.
        SseEvent::data(out)
    }

    fn chunk(&self, choices: Value) -> Value {
        let mut c = json!({
            "id": self.meta.id,
            "object": "chat.completion.chunk",
            "created": self.meta.created,
            "model": self.meta.model,
            "system_fingerprint": self.meta.system_fingerprint,
            "choices": choices,
        });
        if self.meta.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    fn choice(&self, index: usize, delta: Value, finish: Option<&str>) -> Value {
        self.chunk(
            json!([{ "index": index, "delta": delta, "logprobs": null, "finish_reason": finish }]),
        )
    }

    /// The first chunk of each choice: the assistant role, empty content
    /// (the `Value` rendering, for tests; [`ROLE_DELTA`] is what is sent).
    #[cfg(test)]
    fn role(&self, index: usize) -> Value {
        self.choice(
            index,
            json!({"role": "assistant", "content": "", "refusal": null}),
            None,
        )
    }

    /// Chunks for one event; an error becomes `{"error": ...}`. A
    /// `<think>` still open is closed before anything else of its choice.
    fn render(&mut self, event: &RunEvent) -> Vec<Value> {
        let choice = match event {
            RunEvent::Text(i, _) | RunEvent::ToolCall(i, _) | RunEvent::Finish(i, _) => Some(*i),
            _ => None,
        };
        let mut out = Vec::new();
        if let Some(i) = choice.filter(|i| self.thinking[*i]) {
            self.thinking[i] = false;
            out.push(self.choice(i, json!({"content": "</think>"}), None));
        }
        out.extend(self.render_event(event));
        out
    }

    fn render_event(&mut self, event: &RunEvent) -> Vec<Value> {
        match event {
            RunEvent::Text(i, text) => vec![self.choice(*i, json!({"content": text}), None)],
            RunEvent::Reasoning(i, text) => match self.meta.reasoning {
                ReasoningFormat::Field => {
                    vec![self.choice(*i, json!({"reasoning_content": text}), None)]
                }
                ReasoningFormat::ThinkTags => {
                    let open = if std::mem::replace(&mut self.thinking[*i], true) {
                        ""
                    } else {
                        "<think>"
                    };
                    vec![self.choice(*i, json!({"content": format!("{open}{text}")}), None)]
                }
                ReasoningFormat::Off => Vec::new(),
            },
            RunEvent::ToolCall(i, call) => {
                let k = self.calls[*i];
                self.calls[*i] += 1;
                // Arguments stream as fragments, each cut on a character
                // boundary; `id`, `type` and `name` ride on the first only.
                fragments(&call.arguments, ARGUMENT_FRAGMENT_BYTES)
                    .enumerate()
                    .map(|(n, args)| {
                        let delta = match (self.meta.legacy_functions, n) {
                            (true, 0) => json!({"function_call": {"name": call.name, "arguments": args}}),
                            (true, _) => json!({"function_call": {"arguments": args}}),
                            (false, 0) => json!({"tool_calls": [{
                                "index": k, "id": call.call_id, "type": "function",
                                "function": {"name": call.name, "arguments": args}
                            }]}),
                            (false, _) => json!({"tool_calls": [{"index": k, "function": {"arguments": args}}]}),
                        };
                        self.choice(*i, delta, None)
                    })
                    .collect()
            }
            RunEvent::Finish(i, finish) => {
                let reason = finish_reason(*finish, self.meta.legacy_functions);
                vec![self.choice(*i, json!({}), Some(reason))]
            }
            RunEvent::Usage(u) if self.meta.include_usage => {
                let mut c = self.chunk(json!([]));
                c["usage"] = usage_json(u);
                vec![c]
            }
            RunEvent::Usage(_) => Vec::new(),
            RunEvent::Error(e) => vec![e.body_json()],
        }
    }
}

/// The delta of a choice's first chunk: the assistant role, empty content.
const ROLE_DELTA: &[u8] = br#"{"role":"assistant","content":"","refusal":null}"#;

/// A delta that is fixed text, for [`ChatRenderer::fast_chunk`].
fn fixed_delta(delta: &'static [u8]) -> (usize, impl FnOnce(&mut Vec<u8>)) {
    (delta.len(), move |out: &mut Vec<u8>| {
        out.extend_from_slice(delta)
    })
}

/// A finish as the chat API names it (`function_call` for the legacy API's
/// tool calls).
fn finish_reason(finish: Finish, legacy_functions: bool) -> &'static str {
    match (finish, legacy_functions) {
        (Finish::ToolCalls, true) => "function_call",
        (f, _) => f.as_str(),
    }
}

/// Largest piece of a tool call's arguments in one chunk.
pub(crate) const ARGUMENT_FRAGMENT_BYTES: usize = 4096;

/// Splits `s` into pieces of at most `max` bytes without splitting a
/// character; an empty string is one empty piece.
pub(crate) fn fragments(s: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = s;
    let mut first = true;
    std::iter::from_fn(move || {
        if rest.is_empty() && !first {
            return None;
        }
        first = false;
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

// === non-streamed ===

#[derive(Default, Clone)]
struct ChoiceAcc {
    content: String,
    reasoning: String,
    calls: Vec<ToolCall>,
    finish: Option<Finish>,
}

/// The `chat.completion` object, serialized from typed fields: building
/// it as a `Value` (a map per object, each key hashed and allocated) was a
/// tenth of a plain completion's CPU. Key order and text are those of the
/// `Value` rendering ([`completion`], kept for the test that compares them).
#[derive(Serialize)]
pub struct Completion {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    system_fingerprint: String,
    choices: Vec<CompletionChoice>,
    usage: UsageBody,
    service_tier: &'static str,
}

#[derive(Serialize)]
struct CompletionChoice {
    index: usize,
    message: CompletionMessage,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct CompletionMessage {
    role: &'static str,
    content: Option<String>,
    refusal: Option<()>,
    annotations: [(); 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallBody>>,
}

#[derive(Serialize)]
struct FunctionBody {
    name: String,
    arguments: String,
}

#[derive(Serialize)]
struct ToolCallBody {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionBody,
}

/// A response's `usage` object, the one shape both the typed completion and
/// [`usage_json`] (chunks, the legacy completions API) write.
#[derive(Serialize)]
struct UsageBody {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl UsageBody {
    fn of(u: &Usage) -> UsageBody {
        UsageBody {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.input_tokens + u.output_tokens,
            prompt_tokens_details: PromptDetails {
                cached_tokens: u.cached_input_tokens,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: u.reasoning_output_tokens,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

impl Completion {
    fn new(meta: ChatMeta, choices: Vec<ChoiceAcc>, u: &Usage) -> Completion {
        let choices = choices
            .into_iter()
            .enumerate()
            .map(|(index, c)| {
                let mut reason = c.finish.unwrap_or(Finish::Stop).as_str();
                let mut content = c.content;
                let mut reasoning_content = None;
                if !c.reasoning.is_empty() {
                    match meta.reasoning {
                        ReasoningFormat::ThinkTags => {
                            content = format!("<think>{}</think>{content}", c.reasoning);
                        }
                        ReasoningFormat::Field => reasoning_content = Some(c.reasoning),
                        ReasoningFormat::Off => {}
                    }
                }
                let (mut function_call, mut tool_calls) = (None, None);
                if !c.calls.is_empty() {
                    if meta.legacy_functions {
                        let call = c.calls.into_iter().next().expect("not empty");
                        function_call = Some(FunctionBody {
                            name: call.name,
                            arguments: call.arguments,
                        });
                        reason = "function_call";
                    } else {
                        tool_calls = Some(
                            c.calls
                                .into_iter()
                                .map(|call| ToolCallBody {
                                    id: call.call_id,
                                    kind: "function",
                                    function: FunctionBody {
                                        name: call.name,
                                        arguments: call.arguments,
                                    },
                                })
                                .collect(),
                        );
                    }
                }
                let calls = function_call.is_some() || tool_calls.is_some();
                CompletionChoice {
                    index,
                    message: CompletionMessage {
                        role: "assistant",
                        content: (!content.is_empty() || !calls).then_some(content),
                        refusal: None,
                        annotations: [],
                        reasoning_content,
                        function_call,
                        tool_calls,
                    },
                    logprobs: None,
                    finish_reason: reason,
                }
            })
            .collect();
        Completion {
            id: meta.id,
            object: "chat.completion",
            created: meta.created,
            model: meta.model,
            system_fingerprint: meta.system_fingerprint,
            choices,
            usage: UsageBody::of(u),
            service_tier: "default",
        }
    }
}

/// The `chat.completion` object as a `Value`: what [`Completion`] must
/// serialize to, byte for byte.
#[cfg(test)]
fn completion(meta: &ChatMeta, choices: Vec<ChoiceAcc>, usage: &Usage) -> Value {
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            let finish = c.finish.unwrap_or(Finish::Stop);
            let mut content = c.content;
            if !c.reasoning.is_empty() && meta.reasoning == ReasoningFormat::ThinkTags {
                content = format!("<think>{}</think>{content}", c.reasoning);
            }
            let mut message = json!({
                "role": "assistant",
                "content": if content.is_empty() && !c.calls.is_empty() { Value::Null } else { Value::String(content) },
                "refusal": null,
                "annotations": [],
            });
            if !c.reasoning.is_empty() && meta.reasoning == ReasoningFormat::Field {
                message["reasoning_content"] = json!(c.reasoning);
            }
            let mut reason = finish.as_str();
            if !c.calls.is_empty() {
                if meta.legacy_functions {
                    let call = &c.calls[0];
                    message["function_call"] = json!({"name": call.name, "arguments": call.arguments});
                    reason = "function_call";
                } else {
                    message["tool_calls"] = c
                        .calls
                        .iter()
                        .map(|call| {
                            json!({"id": call.call_id, "type": "function",
                                   "function": {"name": call.name, "arguments": call.arguments}})
                        })
                        .collect();
                }
            }
            json!({"index": index, "message": message, "logprobs": null, "finish_reason": reason})
        })
        .collect();
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": meta.system_fingerprint,
        "choices": choices,
        "usage": usage_json(usage),
        "service_tier": "default",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(include_usage: bool, reasoning: ReasoningFormat) -> ChatMeta {
        ChatMeta {
            id: "chatcmpl-\"q\"\u{1}é".into(),
            created: 1_700_000_000,
            model: "gpt-5 \\ 🎉".into(),
            system_fingerprint: "fp_x".into(),
            include_usage,
            legacy_functions: false,
            reasoning,
        }
    }

    #[test]
    fn delta_chunks_are_byte_for_byte_the_value_rendering() {
        let texts = [
            "",
            "hello",
            "quote \" backslash \\ slash /",
            "line\nbreak\r\ttab \u{0}\u{1f}\u{7f}",
            "漢字 🎉 \u{2028}\u{2029}",
            "</script><think>",
        ];
        for include_usage in [false, true] {
            for format in [ReasoningFormat::Field, ReasoningFormat::ThinkTags] {
                for i in [0, 3] {
                    for text in texts {
                        let mut r = ChatRenderer::new(meta(include_usage, format), 4, true);
                        let slow = |r: &ChatRenderer, key: &str| {
                            to_event(&r.choice(i, json!({ key: text }), None)).to_bytes()
                        };
                        let fast = r
                            .delta_chunk(&RunEvent::Text(i, text.into()))
                            .expect("a text delta takes the fast path");
                        assert_eq!(fast.to_bytes(), slow(&r, "content"));
                        let reasoning = r.delta_chunk(&RunEvent::Reasoning(i, text.into()));
                        match format {
                            ReasoningFormat::Field => assert_eq!(
                                reasoning.expect("fast path").to_bytes(),
                                slow(&r, "reasoning_content")
                            ),
                            _ => assert!(reasoning.is_none()),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn role_and_finish_chunks_are_byte_for_byte_the_value_rendering() {
        for include_usage in [false, true] {
            for legacy in [false, true] {
                let mut m = meta(include_usage, ReasoningFormat::Field);
                m.legacy_functions = legacy;
                let mut r = ChatRenderer::new(m, 2, true);
                let opening: Vec<_> = r.opening().iter().map(SseEvent::to_bytes).collect();
                let roles: Vec<_> = (0..2).map(|i| to_event(&r.role(i)).to_bytes()).collect();
                assert_eq!(opening, roles);
                for finish in [Finish::Stop, Finish::Length, Finish::ToolCalls] {
                    let fast = r.event(&RunEvent::Finish(1, finish));
                    let reason = finish_reason(finish, legacy);
                    let slow = to_event(&r.choice(1, json!({}), Some(reason)));
                    assert_eq!(fast.len(), 1);
                    assert_eq!(fast[0].to_bytes(), slow.to_bytes());
                }
            }
        }
    }

    #[test]
    fn a_completion_is_byte_for_byte_the_value_rendering() {
        let call = |n: usize| ToolCall {
            call_id: format!("call_{n}"),
            name: format!("tool_{n}"),
            arguments: format!("{{\"n\":{n},\"q\":\"a \\\" b\"}}"),
        };
        let choice = |content: &str, reasoning: &str, calls: Vec<ToolCall>, finish| ChoiceAcc {
            content: content.into(),
            reasoning: reasoning.into(),
            calls,
            finish,
        };
        let choices = vec![
            choice("hello \"there\"\n漢字", "", vec![], Some(Finish::Stop)),
            choice(
                "",
                "thought",
                vec![call(1), call(2)],
                Some(Finish::ToolCalls),
            ),
            choice("partial", "why", vec![call(3)], None),
            choice("", "", vec![], Some(Finish::Length)),
        ];
        let usage = Usage {
            input_tokens: 12,
            cached_input_tokens: 3,
            output_tokens: 8,
            reasoning_output_tokens: 2,
            total_tokens: 20,
        };
        for format in [
            ReasoningFormat::Field,
            ReasoningFormat::ThinkTags,
            ReasoningFormat::Off,
        ] {
            for legacy in [false, true] {
                let mut m = meta(false, format);
                m.legacy_functions = legacy;
                let typed = Completion::new(m.clone(), choices.clone(), &usage);
                let value = completion(&m, choices.clone(), &usage);
                assert_eq!(
                    String::from_utf8(serde_json::to_vec(&typed).unwrap()).unwrap(),
                    String::from_utf8(serde_json::to_vec(&value).unwrap()).unwrap(),
                    "{format:?} legacy={legacy}"
                );
            }
        }
    }

    #[test]
    fn fragments_never_split_a_character_and_rejoin_exactly() {
        let s = "é".repeat(5000) + "漢字🎉" + &"x".repeat(3);
        let parts: Vec<&str> = fragments(&s, 4096).collect();
        assert!(parts.len() > 2);
        assert!(parts.iter().all(|p| p.len() <= 4096 && !p.is_empty()));
        assert_eq!(parts.concat(), s);
        assert_eq!(fragments("", 4096).collect::<Vec<_>>(), vec![""]);
        assert_eq!(fragments("{}", 4096).collect::<Vec<_>>(), vec!["{}"]);
    }
}
