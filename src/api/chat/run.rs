//! [`ChatRun`]: the n turns of one chat request, merged and shaped.
//!
//! Both the streamed and the non-streamed response read the same sequence of
//! [`RunEvent`]s, so they cannot disagree about content, tool calls, finish
//! reasons or usage. Tool calls are shaped here for the output mode:
//! structured calls become `tool_calls` (openai-json) or canonical
//! `<use_tool>` text (obsidian-xml), and `<use_tool>` blocks the model writes
//! as text become `tool_calls` in openai-json mode.

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use codex_output_mode::OutputMode;
use serde_json::Value;
use tokio::time::Instant;

use super::shaper::{Cut, TextShaper};
use crate::api::error::ApiError;
use crate::api::tools::{xml, Segment, ToolCallAggregator};
use crate::core::{Failure, FailureKind, ToolCall, TurnEvent, TurnStream, Usage};

/// How a choice ended, in OpenAI's `finish_reason` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Text(usize, String),
    ToolCall(usize, ToolCall),
    Finish(usize, Finish),
    /// Summed over all choices; once, after every choice finished.
    Usage(Usage),
    /// The run failed; the last event.
    Error(ApiError),
}

/// The operator's and the request's rules for tool calls.
#[derive(Debug, Clone)]
pub struct ToolPolicy {
    pub mode: OutputMode,
    /// More than one call per response (`PROXY_ENABLE_PARALLEL_TOOL_CALLS`
    /// and the request's `parallel_tool_calls`). Without it, calls the model
    /// made together reach the client one response at a time.
    pub parallel: bool,
    /// How long to wait for more calls after one (`PROXY_STOP_AFTER_TOOLS_GRACE_MS`).
    pub grace: Duration,
    /// End the response once the model wrote `<use_tool>` blocks (`PROXY_STOP_AFTER_TOOLS`).
    pub stop_after_tools: bool,
    /// `burst`: after a block, wait `grace` for more; `first`: stop at once.
    pub burst: bool,
    /// Drop text after the last block (`PROXY_SUPPRESS_TAIL_AFTER_TOOLS`).
    pub suppress_tail: bool,
    /// Most blocks per response, 0 = unlimited (`PROXY_TOOL_BLOCK_MAX`).
    pub block_max: usize,
    /// Parameter schemas by tool name, for canonical XML parameter order.
    pub schemas: HashMap<String, Value>,
}

impl Default for ToolPolicy {
    fn default() -> Self {
        ToolPolicy {
            mode: OutputMode::OpenaiJson,
            parallel: false,
            grace: Duration::from_millis(300),
            stop_after_tools: false,
            burst: false,
            suppress_tail: false,
            block_max: 0,
            schemas: HashMap::new(),
        }
    }
}

type Step = Pin<Box<dyn Future<Output = (TurnStream, Option<TurnEvent>)> + Send>>;

struct Choice {
    /// The turn while no read is in flight.
    turn: Option<TurnStream>,
    /// A read in flight (it owns the turn until it completes).
    step: Option<Step>,
    shaper: TextShaper,
    aggregator: ToolCallAggregator,
    finished: bool,
    calls: usize,
    blocks: usize,
    /// Text after a block, held while `suppress_tail` may drop it.
    tail: String,
    /// When set, the choice ends with `tool_calls` at this instant.
    stop_at: Option<Instant>,
    /// The worker waits on calls of this turn: keep it for continuation.
    parked: bool,
    /// Ids of the structured calls this response showed the client.
    shown: Vec<String>,
}

pub struct ChatRun {
    choices: Vec<Choice>,
    policy: ToolPolicy,
    queue: VecDeque<RunEvent>,
    usage: Option<Usage>,
    next: usize,
    ended: bool,
    /// The whole request's deadline (`PROXY_TIMEOUT_MS`).
    deadline: Option<Instant>,
    /// When false, turns left running by a departed client finish in the
    /// background instead of being interrupted (`PROXY_KILL_ON_DISCONNECT=false`).
    interrupt_on_drop: bool,
}

impl ChatRun {
    pub fn new(turns: Vec<TurnStream>, stop: Vec<String>, max_tokens: Option<u64>) -> ChatRun {
        let choices = turns
            .into_iter()
            .map(|t| Choice {
                turn: Some(t),
                step: None,
                shaper: TextShaper::new(stop.clone(), max_tokens),
                aggregator: ToolCallAggregator::new(),
                finished: false,
                calls: 0,
                blocks: 0,
                tail: String::new(),
                stop_at: None,
                parked: false,
                shown: Vec::new(),
            })
            .collect();
        ChatRun {
            choices,
            policy: ToolPolicy::default(),
            queue: VecDeque::new(),
            usage: None,
            next: 0,
            ended: false,
            deadline: None,
            interrupt_on_drop: true,
        }
    }

    pub fn with_policy(mut self, policy: ToolPolicy) -> ChatRun {
        self.policy = policy;
        self
    }

    pub fn with_deadline(mut self, deadline: Option<Instant>) -> ChatRun {
        self.deadline = deadline;
        self
    }

    pub fn interrupt_on_drop(mut self, interrupt: bool) -> ChatRun {
        self.interrupt_on_drop = interrupt;
        self
    }

    pub fn choices(&self) -> usize {
        self.choices.len()
    }

    /// The turns of choices that ended on structured tool calls the worker
    /// now waits for; the caller may keep them for continuation. Call after
    /// the run has ended.
    pub fn take_parked(&mut self) -> Vec<(TurnStream, Vec<String>)> {
        self.choices
            .iter_mut()
            .filter(|c| c.parked)
            .filter_map(|c| Some((c.turn.take()?, std::mem::take(&mut c.shown))))
            .collect()
    }

    /// The next event; `None` at the end.
    pub async fn next(&mut self) -> Option<RunEvent> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            if self.choices.iter().all(|c| c.finished) {
                self.ended = true;
                // Always sent, so the response has its usage object even when
                // the worker reported none yet (a turn paused on a tool call
                // reports its usage only after the call's result).
                return Some(RunEvent::Usage(self.usage.unwrap_or_default()));
            }
            let wake = self
                .choices
                .iter()
                .filter(|c| !c.finished)
                .filter_map(|c| c.stop_at)
                .min();
            let limit = match (wake, self.deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let next = poll_fn(|cx| self.poll_any(cx));
            let polled = match limit {
                Some(at) => tokio::time::timeout_at(at, next).await.ok(),
                None => Some(next.await),
            };
            match polled {
                Some((index, event)) => self.on_event(index, event),
                None => self.on_timer(),
            }
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| d <= now) {
            self.fail(ApiError::from(Failure::new(
                FailureKind::Timeout,
                "The request took longer than PROXY_TIMEOUT_MS allows.",
            )));
            return;
        }
        for i in 0..self.choices.len() {
            if !self.choices[i].finished && self.choices[i].stop_at.is_some_and(|t| t <= now) {
                self.end_on_tools(i);
            }
        }
    }

    /// Polls the unfinished choices fairly, starting after the last one served.
    fn poll_any(&mut self, cx: &mut Context<'_>) -> Poll<(usize, Option<TurnEvent>)> {
        let n = self.choices.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let choice = &mut self.choices[i];
            if choice.finished {
                continue;
            }
            if choice.step.is_none() {
                let Some(mut turn) = choice.turn.take() else {
                    continue;
                };
                choice.step = Some(Box::pin(async move {
                    let e = turn.next().await;
                    (turn, e)
                }));
            }
            if let Some(step) = choice.step.as_mut() {
                if let Poll::Ready((turn, event)) = step.as_mut().poll(cx) {
                    choice.step = None;
                    choice.turn = Some(turn);
                    self.next = (i + 1) % n;
                    return Poll::Ready((i, event));
                }
            }
        }
        Poll::Pending
    }

    fn on_event(&mut self, i: usize, event: Option<TurnEvent>) {
        match event {
            Some(TurnEvent::TextDelta(t)) => {
                let segments = self.choices[i].aggregator.ingest_delta(&t);
                self.on_segments(i, segments);
            }
            Some(TurnEvent::ToolCall(call)) => self.on_structured_call(i, call),
            Some(TurnEvent::Usage(u)) => {
                let acc = self.usage.get_or_insert_with(Usage::default);
                acc.input_tokens += u.input_tokens;
                acc.cached_input_tokens += u.cached_input_tokens;
                acc.output_tokens += u.output_tokens;
                acc.reasoning_output_tokens += u.reasoning_output_tokens;
                acc.total_tokens += u.total_tokens;
            }
            Some(TurnEvent::Finished) => {
                let segments = self.choices[i].aggregator.finish();
                self.on_segments(i, segments);
                if self.choices[i].finished {
                    return;
                }
                let cut = self.flush(i);
                let c = &self.choices[i];
                // This response's own calls decide (a continued turn made
                // earlier ones in earlier responses).
                let finish = match cut {
                    Some(Cut::Length) => Finish::Length,
                    _ if c.calls > 0 || c.blocks > 0 => Finish::ToolCalls,
                    _ => Finish::Stop,
                };
                self.finish(i, finish);
            }
            Some(TurnEvent::Failed(f)) => self.fail(ApiError::from(f)),
            None => {
                if !self.choices[i].finished {
                    self.fail(ApiError::from(Failure::new(
                        FailureKind::Upstream,
                        "The turn ended without a result.",
                    )));
                }
            }
        }
    }

    /// A call the worker waits on (codex dynamic tool).
    fn on_structured_call(&mut self, i: usize, call: ToolCall) {
        let text_before = self.flush(i);
        if text_before.is_some() || self.choices[i].finished {
            return;
        }
        match self.policy.mode {
            OutputMode::OpenaiJson => {
                self.choices[i].shown.push(call.call_id.clone());
                self.queue.push_back(RunEvent::ToolCall(i, call));
            }
            OutputMode::ObsidianXml => {
                let args: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
                let rendered = xml::render(&call.name, &args, self.policy.schemas.get(&call.name));
                let sep = if self.choices[i].calls > 0 || self.choices[i].blocks > 0 {
                    "\n"
                } else {
                    ""
                };
                self.queue
                    .push_back(RunEvent::Text(i, format!("{sep}{rendered}")));
            }
        }
        let choice = &mut self.choices[i];
        choice.calls += 1;
        // The worker now waits for the client's result, which comes in the
        // client's next request: keep the turn (openai-json clients answer
        // by tool_call_id; XML clients answer in text, so nothing to keep).
        choice.parked = self.policy.mode == OutputMode::OpenaiJson;
        if self.policy.parallel {
            choice
                .stop_at
                .get_or_insert_with(|| Instant::now() + self.policy.grace);
        } else {
            self.end_on_tools(i);
        }
    }

    fn on_segments(&mut self, i: usize, segments: Vec<Segment>) {
        for segment in segments {
            if self.choices[i].finished {
                return;
            }
            match segment {
                Segment::Text(t) => {
                    let c = &mut self.choices[i];
                    if c.blocks > 0
                        && (self.policy.suppress_tail
                            || (self.policy.stop_after_tools && self.policy.burst))
                    {
                        if self.policy.stop_after_tools && self.policy.burst && !t.trim().is_empty()
                        {
                            // The burst is over: the text after it is the tail.
                            self.end_on_tools(i);
                            return;
                        }
                        c.tail.push_str(&t);
                        continue;
                    }
                    self.emit_text(i, &t);
                }
                Segment::Block { raw, call } => self.on_block(i, raw, call),
            }
        }
    }

    fn on_block(&mut self, i: usize, raw: String, call: Option<xml::ParsedCall>) {
        let policy = &self.policy;
        let c = &mut self.choices[i];
        if policy.block_max > 0 && c.blocks >= policy.block_max {
            // Over the limit: the response ends with the blocks it has.
            self.end_on_tools(i);
            return;
        }
        c.blocks += 1;
        let tail = std::mem::take(&mut c.tail);
        if !tail.is_empty() {
            // Text between two blocks is not a tail.
            self.emit_text(i, &tail);
        }
        match (self.policy.mode, call) {
            (OutputMode::OpenaiJson, Some(call)) => {
                let id = format!("call_{}", super::super::ids::short_id());
                let arguments = call.arguments.to_string();
                self.queue.push_back(RunEvent::ToolCall(
                    i,
                    ToolCall {
                        call_id: id,
                        name: call.name,
                        arguments,
                    },
                ));
            }
            // Obsidian reads the block itself; an unparsable block stays text too.
            _ => self.queue.push_back(RunEvent::Text(i, raw)),
        }
        if self.policy.stop_after_tools {
            if self.policy.burst {
                let grace = self.policy.grace;
                self.choices[i]
                    .stop_at
                    .get_or_insert_with(|| Instant::now() + grace);
            } else {
                self.end_on_tools(i);
            }
        }
    }

    fn emit_text(&mut self, i: usize, t: &str) {
        let (emit, cut) = self.choices[i].shaper.push(t);
        if !emit.is_empty() {
            self.queue.push_back(RunEvent::Text(i, emit));
        }
        if let Some(cut) = cut {
            self.finish(
                i,
                if cut == Cut::Stop {
                    Finish::Stop
                } else {
                    Finish::Length
                },
            );
        }
    }

    /// Releases text held back by the shaper; `Some` if that ended the choice.
    fn flush(&mut self, i: usize) -> Option<Cut> {
        let (rest, cut) = self.choices[i].shaper.finish();
        if !rest.is_empty() {
            self.queue.push_back(RunEvent::Text(i, rest));
        }
        if let Some(c) = cut {
            if !self.choices[i].finished {
                self.finish(
                    i,
                    if c == Cut::Stop {
                        Finish::Stop
                    } else {
                        Finish::Length
                    },
                );
            }
        }
        cut
    }

    fn end_on_tools(&mut self, i: usize) {
        let choice = &mut self.choices[i];
        choice.tail.clear();
        self.finish(i, Finish::ToolCalls);
    }

    fn finish(&mut self, i: usize, finish: Finish) {
        let choice = &mut self.choices[i];
        if choice.finished {
            return;
        }
        choice.finished = true;
        choice.stop_at = None;
        // Dropping a turn interrupts it (unless it ended) and releases its
        // thread; a parked one is kept for `take_parked`.
        choice.step = None;
        if !choice.parked {
            choice.turn = None;
        }
        self.queue.push_back(RunEvent::Finish(i, finish));
    }

    fn fail(&mut self, e: ApiError) {
        for c in &mut self.choices {
            c.finished = true;
            c.parked = false;
            c.step = None;
            c.turn = None;
        }
        self.queue.push_back(RunEvent::Error(e));
        self.ended = true;
    }
}

impl Drop for ChatRun {
    fn drop(&mut self) {
        if self.interrupt_on_drop {
            return; // dropping each turn interrupts it
        }
        for choice in self.choices.iter_mut().filter(|c| !c.finished) {
            let turn = choice.turn.take();
            let step = choice.step.take();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                // Bounded by the turn's own end, its idle timeout, or the worker's exit.
                rt.spawn(async move {
                    let mut turn = match (turn, step) {
                        (Some(t), _) => t,
                        (None, Some(step)) => step.await.0,
                        (None, None) => return,
                    };
                    // A tool call nobody will answer would wait forever:
                    // stop there (dropping the turn interrupts it).
                    while let Some(event) = turn.next().await {
                        if matches!(event, TurnEvent::ToolCall(_)) {
                            break;
                        }
                    }
                });
            }
        }
    }
}
