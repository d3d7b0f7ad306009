//! [`Run`]: the n turns of one request, merged and shaped.
//!
//! Every dialect, streamed or not, reads the same sequence of [`RunEvent`]s,
//! so they cannot disagree about content, tool calls, finish reasons or
//! usage. The run is generic over its [`TurnSource`], so this policy is
//! unit-tested with scripted turns (see the tests at the end). Tool calls are shaped here for the output mode:
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
use crate::config::ToolsConfig;
use crate::core::{Failure, FailureKind, ToolCall, TurnEvent, TurnSource, TurnStream, Usage};

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
    /// A piece of the choice's reasoning summary.
    Reasoning(usize, String),
    /// Boxed, as `Error` is: both are rare, and inline they made every
    /// event (a text delta mostly) 120 bytes, in the run's queue too.
    ToolCall(usize, Box<ToolCall>),
    Finish(usize, Finish),
    /// Summed over all choices; once, after every choice finished.
    Usage(Usage),
    /// The run failed; the last event.
    Error(Box<ApiError>),
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
    /// The client sent `tools`: in obsidian-xml mode a call is then also
    /// given as `tool_calls`, so an SDK client that landed on the XML mode
    /// still sees its calls (the XML stays in the content for Obsidian).
    pub client_tools: bool,
    /// The tool the request's `tool_choice` names: a call to it is the
    /// answer by construction (LangChain's and pydantic-ai's structured
    /// output through a tool), and such clients never send its result, so
    /// its turn is released at once instead of parked until it expires.
    pub final_tool: Option<String>,
}

impl ToolPolicy {
    /// The operator's switches, narrowed by what the request asks
    /// (`parallel_tool_calls: false` turns parallel calls off).
    pub fn new(
        operator: &ToolsConfig,
        mode: OutputMode,
        parallel_requested: Option<bool>,
        schemas: HashMap<String, Value>,
    ) -> ToolPolicy {
        ToolPolicy {
            mode,
            parallel: operator.parallel && parallel_requested != Some(false),
            grace: operator.grace,
            stop_after_tools: operator.stop_after_tools,
            burst: operator.burst,
            suppress_tail: operator.suppress_tail,
            block_max: operator.block_max,
            client_tools: !schemas.is_empty(),
            schemas,
            final_tool: None,
        }
    }
}

struct Choice<T> {
    /// The turn, polled in place (`TurnSource::poll_next`): a choice that
    /// ends while its turn has nothing to say (the tool-call grace timer)
    /// simply stops polling it, and still has it to park.
    turn: Option<T>,
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
    /// The turn completed on its own with text only, all of it shown: the
    /// thread's history is what the client saw, so it may be continued.
    reusable: bool,
    /// The text shown, kept while the choice may be reusable.
    said: String,
    /// The turn delivered its last event (`Finished`): nothing left to drain.
    ended: bool,
    /// Cut by `stop` or `max_tokens` and left running until this instant,
    /// read only for the usage codex reports at its end (see `Run::cut_usage_wait`).
    draining_until: Option<Instant>,
}

impl<T> Choice<T> {
    /// Still read although the client's choice is over: a cut turn whose
    /// usage is awaited.
    fn draining(&self) -> bool {
        self.draining_until.is_some()
    }
}

/// The merged, shaped events of a request's turns.
pub struct Run<T: TurnSource = TurnStream> {
    choices: Vec<Choice<T>>,
    policy: ToolPolicy,
    queue: VecDeque<RunEvent>,
    usage: Option<Usage>,
    next: usize,
    ended: bool,
    /// The whole request's deadline (`PROXY_TIMEOUT_MS`).
    deadline: Option<Instant>,
    /// The timer of the nearest of those deadlines, kept between waits and
    /// moved only when that deadline changes: a `timeout_at` per wait put a
    /// timer into tokio's wheel (a lock) and took it out again per event.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When false, turns left running by a departed client finish in the
    /// background instead of being interrupted (`PROXY_KILL_ON_DISCONNECT=false`).
    interrupt_on_drop: bool,
    /// How long a turn cut by `stop` or `max_tokens` keeps running so that
    /// its usage, which codex reports only when the model's response ends,
    /// can be reported (`PROXY_CUT_USAGE_WAIT_MS`). Zero: interrupted at the
    /// cut, and its tokens are not counted (codex never learns them).
    cut_usage_wait: Duration,
}

impl<T: TurnSource> Run<T> {
    pub fn new(
        turns: Vec<T>,
        stop: Vec<String>,
        max_tokens: Option<u64>,
        policy: ToolPolicy,
    ) -> Run<T> {
        let choices = turns
            .into_iter()
            .map(|t| Choice {
                turn: Some(t),
                shaper: TextShaper::new(stop.clone(), max_tokens),
                aggregator: ToolCallAggregator::new(),
                finished: false,
                calls: 0,
                blocks: 0,
                tail: String::new(),
                stop_at: None,
                parked: false,
                shown: Vec::new(),
                reusable: false,
                said: String::new(),
                ended: false,
                draining_until: None,
            })
            .collect();
        Run {
            choices,
            policy,
            queue: VecDeque::new(),
            usage: None,
            next: 0,
            ended: false,
            deadline: None,
            timer: None,
            interrupt_on_drop: true,
            cut_usage_wait: Duration::ZERO,
        }
    }

    pub fn cut_usage_wait(mut self, wait: Duration) -> Run<T> {
        self.cut_usage_wait = wait;
        self
    }

    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Run<T> {
        self.deadline = deadline;
        self
    }

    pub fn interrupt_on_drop(mut self, interrupt: bool) -> Run<T> {
        self.interrupt_on_drop = interrupt;
        self
    }

    pub fn choices(&self) -> usize {
        self.choices.len()
    }

    /// The turns of choices that ended on structured tool calls the worker
    /// now waits for; the caller may keep them for continuation. Call after
    /// the run has ended.
    pub fn take_parked(&mut self) -> Vec<(T, Vec<String>)> {
        self.choices
            .iter_mut()
            .filter(|c| c.parked)
            .filter_map(|c| Some((c.turn.take()?, std::mem::take(&mut c.shown))))
            .collect()
    }

    /// The turn of a single-choice run whose turn completed on its own with
    /// text only, and the text the client saw: its thread holds exactly the
    /// conversation the client has. Call after the run has ended.
    pub fn take_reusable(&mut self) -> Option<(T, String)> {
        let [choice] = self.choices.as_mut_slice() else {
            return None;
        };
        if !choice.reusable {
            return None;
        }
        let turn = choice.turn.take()?;
        Some((turn, std::mem::take(&mut choice.said)))
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
            if self.choices.iter().all(|c| c.finished && !c.draining()) {
                self.ended = true;
                // Always sent, so the response has its usage object even when
                // the worker reported none yet (a turn paused on a tool call
                // reports its usage only after the call's result).
                return Some(RunEvent::Usage(self.usage.unwrap_or_default()));
            }
            let wake = self
                .choices
                .iter()
                .filter_map(|c| {
                    if c.finished {
                        c.draining_until
                    } else {
                        c.stop_at
                    }
                })
                .min();
            let limit = match (wake, self.deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let polled = match limit {
                Some(at) => {
                    let mut timer = match self.timer.take() {
                        Some(mut timer) => {
                            if timer.deadline() != at {
                                timer.as_mut().reset(at);
                            }
                            timer
                        }
                        None => Box::pin(tokio::time::sleep_until(at)),
                    };
                    // As `timeout_at`: the events first, then the timer.
                    let polled = poll_fn(|cx| match self.poll_any(cx) {
                        Poll::Ready(event) => Poll::Ready(Some(event)),
                        Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
                    })
                    .await;
                    self.timer = Some(timer);
                    polled
                }
                None => Some(poll_fn(|cx| self.poll_any(cx)).await),
            };
            match polled {
                Some((index, event)) => self.on_event(index, event),
                None => self.on_timer(),
            }
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        let overdue = self.deadline.is_some_and(|d| d <= now);
        if overdue && self.choices.iter().any(|c| !c.finished) {
            self.fail(ApiError::from(Failure::new(
                FailureKind::Timeout,
                "The request took longer than PROXY_TIMEOUT_MS allows.",
            )));
            return;
        }
        for i in 0..self.choices.len() {
            let c = &self.choices[i];
            if !c.finished && c.stop_at.is_some_and(|t| t <= now) {
                self.end_on_tools(i);
            }
            let c = &self.choices[i];
            if c.draining_until.is_some_and(|t| overdue || t <= now) {
                // The answer is complete; only its usage is missing. Better a
                // response without that turn's tokens than one that never ends.
                tracing::warn!(
                    "a turn cut by stop or max_tokens did not end within PROXY_CUT_USAGE_WAIT_MS; \
                     its tokens are not reported"
                );
                self.stop_draining(i);
            }
        }
    }

    /// Polls the unfinished choices fairly, starting after the last one served.
    fn poll_any(&mut self, cx: &mut Context<'_>) -> Poll<(usize, Option<TurnEvent>)> {
        let n = self.choices.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let choice = &mut self.choices[i];
            if choice.finished && !choice.draining() {
                continue;
            }
            let Some(turn) = &mut choice.turn else {
                continue;
            };
            if let Poll::Ready(event) = turn.poll_next(cx) {
                self.next = (i + 1) % n;
                return Poll::Ready((i, event));
            }
        }
        Poll::Pending
    }

    fn on_event(&mut self, i: usize, event: Option<TurnEvent>) {
        if self.choices[i].draining() {
            self.on_drained_event(i, event);
            return;
        }
        match event {
            Some(TurnEvent::TextDelta(t)) => {
                let segments = self.choices[i].aggregator.ingest_delta(&t);
                self.on_segments(i, segments);
            }
            Some(TurnEvent::ToolCall(call)) => self.on_structured_call(i, *call),
            Some(TurnEvent::ReasoningDelta(t)) => {
                if !self.choices[i].finished {
                    self.queue.push_back(RunEvent::Reasoning(i, t));
                }
            }
            Some(TurnEvent::Usage(u)) => self.add_usage(*u),
            Some(TurnEvent::Finished) => {
                // The turn is over: a cut found by the flush below has
                // nothing left to drain.
                self.choices[i].ended = true;
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
                self.choices[i].reusable = finish == Finish::Stop && cut.is_none();
                self.finish(i, finish);
            }
            Some(TurnEvent::Failed(f)) => self.fail(ApiError::from(*f)),
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

    /// An event of a turn cut for the client: only its usage matters now.
    fn on_drained_event(&mut self, i: usize, event: Option<TurnEvent>) {
        match event {
            Some(TurnEvent::Usage(u)) => self.add_usage(*u),
            Some(TurnEvent::TextDelta(_)) | Some(TurnEvent::ReasoningDelta(_)) => {}
            // A call would wait for a result no client sends; codex reports
            // the turn's usage only after it. An ended or failed turn has
            // nothing more to say.
            Some(TurnEvent::ToolCall(_))
            | Some(TurnEvent::Finished)
            | Some(TurnEvent::Failed(_))
            | None => self.stop_draining(i),
        }
    }

    fn add_usage(&mut self, u: Usage) {
        let acc = self.usage.get_or_insert_with(Usage::default);
        acc.input_tokens += u.input_tokens;
        acc.cached_input_tokens += u.cached_input_tokens;
        acc.output_tokens += u.output_tokens;
        acc.reasoning_output_tokens += u.reasoning_output_tokens;
        acc.total_tokens += u.total_tokens;
    }

    /// Stops reading a cut turn; dropping it interrupts it unless it ended.
    fn stop_draining(&mut self, i: usize) {
        let c = &mut self.choices[i];
        c.draining_until = None;
        c.turn = None;
    }

    /// A call the worker waits on (codex dynamic tool).
    fn on_structured_call(&mut self, i: usize, call: ToolCall) {
        let call_name = call.name.clone();
        let text_before = self.flush(i);
        if text_before.is_some() {
            // The call came after the cut: the turn now waits for a result
            // no client will send, so there is no usage to wait for.
            self.stop_draining(i);
            return;
        }
        if self.choices[i].finished {
            return;
        }
        match self.policy.mode {
            OutputMode::OpenaiJson => {
                self.choices[i].shown.push(call.call_id.clone());
                self.queue.push_back(RunEvent::ToolCall(i, Box::new(call)));
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
                if self.policy.client_tools {
                    self.queue.push_back(RunEvent::ToolCall(i, Box::new(call)));
                }
            }
        }
        let is_final = self.policy.final_tool.as_deref() == Some(call_name.as_str());
        let choice = &mut self.choices[i];
        choice.calls += 1;
        // The worker now waits for the client's result, which comes in the
        // client's next request: keep the turn (openai-json clients answer
        // by tool_call_id; XML clients answer in text, so nothing to keep;
        // an SDK client answering the `tool_calls` of XML mode by id is
        // rebuilt from its history, like any follow-up without a parked turn).
        choice.parked = self.policy.mode == OutputMode::OpenaiJson && !is_final;
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
                let id = format!("call_{}", crate::api::ids::short_id());
                let arguments = call.arguments.to_string();
                self.queue.push_back(RunEvent::ToolCall(
                    i,
                    Box::new(ToolCall {
                        call_id: id,
                        name: call.name,
                        arguments,
                    }),
                ));
            }
            (OutputMode::ObsidianXml, Some(call)) if self.policy.client_tools => {
                // Obsidian reads the block itself; SDK clients read tool_calls.
                self.queue.push_back(RunEvent::Text(i, raw));
                self.queue.push_back(RunEvent::ToolCall(
                    i,
                    Box::new(ToolCall {
                        call_id: format!("call_{}", crate::api::ids::short_id()),
                        name: call.name,
                        arguments: call.arguments.to_string(),
                    }),
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
            self.choices[i].said.push_str(&emit);
            self.queue.push_back(RunEvent::Text(i, emit));
        }
        if let Some(cut) = cut {
            self.finish_cut(i, cut);
        }
    }

    /// Releases text held back by the shaper; `Some` if that ended the choice.
    fn flush(&mut self, i: usize) -> Option<Cut> {
        let (rest, cut) = self.choices[i].shaper.finish();
        if !rest.is_empty() {
            self.choices[i].said.push_str(&rest);
            self.queue.push_back(RunEvent::Text(i, rest));
        }
        if let Some(c) = cut {
            if !self.choices[i].finished {
                self.finish_cut(i, c);
            }
        }
        cut
    }

    /// Ends a choice at a `stop` or `max_tokens` cut. Codex has no such
    /// limits, so its turn is still going: it is kept and read until it ends
    /// (for at most `cut_usage_wait`), because codex reports a turn's tokens
    /// only at its end, and an interrupted turn never.
    fn finish_cut(&mut self, i: usize, cut: Cut) {
        let finish = match cut {
            Cut::Stop => Finish::Stop,
            Cut::Length => Finish::Length,
        };
        let c = &mut self.choices[i];
        if self.cut_usage_wait.is_zero() || c.ended || c.turn.is_none() {
            self.finish(i, finish);
            return;
        }
        c.draining_until = Some(Instant::now() + self.cut_usage_wait);
        c.finished = true;
        c.stop_at = None;
        self.queue.push_back(RunEvent::Finish(i, finish));
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
        if !choice.parked && !choice.reusable {
            choice.turn = None;
        }
        self.queue.push_back(RunEvent::Finish(i, finish));
    }

    fn fail(&mut self, e: ApiError) {
        for c in &mut self.choices {
            c.finished = true;
            c.parked = false;
            c.reusable = false;
            c.draining_until = None;
            c.turn = None;
        }
        self.queue.push_back(RunEvent::Error(Box::new(e)));
        self.ended = true;
    }
}

impl<T: TurnSource> Drop for Run<T> {
    fn drop(&mut self) {
        if self.interrupt_on_drop {
            return; // dropping each turn interrupts it
        }
        for choice in self
            .choices
            .iter_mut()
            .filter(|c| !c.finished || c.draining())
        {
            if let Some(turn) = choice.turn.take() {
                turn.detach();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The shaping policy, with scripted turns and paused time: no worker,
    //! no real sleeps.

    use std::collections::VecDeque;
    use std::sync::Arc;

    use super::*;

    /// A turn that yields each event the given ms after the one before
    /// (counted from the first poll that waits for it).
    struct Scripted {
        steps: VecDeque<(u64, TurnEvent)>,
        due: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl TurnSource for Scripted {
        fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
            let Some((ms, _)) = self.steps.front() else {
                return Poll::Ready(None);
            };
            let ms = *ms;
            let due = self.due.get_or_insert_with(|| {
                Box::pin(tokio::time::sleep_until(
                    Instant::now() + Duration::from_millis(ms),
                ))
            });
            std::task::ready!(due.as_mut().poll(cx));
            self.due = None;
            Poll::Ready(self.steps.pop_front().map(|(_, e)| e))
        }
    }

    fn turn(steps: Vec<(u64, TurnEvent)>) -> Scripted {
        Scripted {
            steps: steps.into(),
            due: None,
        }
    }

    fn text(t: &str) -> TurnEvent {
        TurnEvent::TextDelta(t.into())
    }

    fn call(id: &str) -> TurnEvent {
        TurnEvent::ToolCall(Box::new(ToolCall {
            call_id: id.into(),
            name: "lookup".into(),
            arguments: r#"{"q":"x"}"#.into(),
        }))
    }

    fn block(name: &str) -> String {
        format!("<use_tool>\n<name>{name}</name>\n<q>x</q>\n</use_tool>")
    }

    fn policy(mode: OutputMode) -> ToolPolicy {
        ToolPolicy {
            mode,
            parallel: false,
            grace: Duration::from_millis(300),
            stop_after_tools: false,
            burst: true,
            suppress_tail: false,
            block_max: 0,
            schemas: HashMap::new(),
            client_tools: false,
            final_tool: None,
        }
    }

    fn run(turns: Vec<Scripted>, policy: ToolPolicy) -> Run<Scripted> {
        Run::new(turns, Vec::new(), None, policy)
    }

    /// Every event with the (paused) time it came at, in ms since the start.
    async fn drain(run: &mut Run<Scripted>) -> Vec<(u64, RunEvent)> {
        let start = Instant::now();
        let mut out = Vec::new();
        while let Some(e) = run.next().await {
            out.push((start.elapsed().as_millis() as u64, e));
        }
        out
    }

    fn texts(events: &[(u64, RunEvent)], choice: usize) -> String {
        events
            .iter()
            .filter_map(|(_, e)| match e {
                RunEvent::Text(i, t) if *i == choice => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    fn finish(events: &[(u64, RunEvent)], choice: usize) -> Option<(u64, Finish)> {
        events.iter().find_map(|(at, e)| match e {
            RunEvent::Finish(i, f) if *i == choice => Some((*at, *f)),
            _ => None,
        })
    }

    fn calls(events: &[(u64, RunEvent)]) -> Vec<String> {
        events
            .iter()
            .filter_map(|(_, e)| match e {
                RunEvent::ToolCall(_, c) => Some(c.call_id.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_turn_that_completed_with_all_its_text_shown_is_reusable() {
        let text = |t: &str| TurnEvent::TextDelta(t.into());
        // Completed on its own: the thread holds what the client saw.
        let mut r = run(
            vec![turn(vec![
                (1, text("Hello")),
                (1, text(" there")),
                (1, TurnEvent::Finished),
            ])],
            policy(OutputMode::OpenaiJson),
        );
        drain(&mut r).await;
        let (_, said) = r.take_reusable().expect("reusable");
        assert_eq!(said, "Hello there");
        // Cut by a stop sequence: the thread holds more than the client saw.
        let mut r = Run::new(
            vec![turn(vec![
                (1, text("Hello STOP there")),
                (1, TurnEvent::Finished),
            ])],
            vec!["STOP".into()],
            None,
            policy(OutputMode::OpenaiJson),
        );
        drain(&mut r).await;
        assert!(r.take_reusable().is_none());
        // Ended on a tool call: that is the parked-turn path.
        let mut r = run(
            vec![turn(vec![(1, call("c1")), (1, TurnEvent::Finished)])],
            policy(OutputMode::OpenaiJson),
        );
        drain(&mut r).await;
        assert!(r.take_reusable().is_none());
        // Two choices: no single thread to continue.
        let mut r = run(
            vec![
                turn(vec![(1, text("a")), (1, TurnEvent::Finished)]),
                turn(vec![(1, text("b")), (1, TurnEvent::Finished)]),
            ],
            policy(OutputMode::OpenaiJson),
        );
        drain(&mut r).await;
        assert!(r.take_reusable().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_calls_are_gathered_for_the_grace_period_then_parked() {
        let mut p = policy(OutputMode::OpenaiJson);
        p.parallel = true;
        let mut r = run(
            vec![turn(vec![
                (10, call("c1")),
                (100, call("c2")),
                (10_000, TurnEvent::Finished),
            ])],
            p,
        );
        let events = drain(&mut r).await;
        assert_eq!(calls(&events), ["c1", "c2"]);
        // The choice ends `grace` after the first call, not at the turn's end.
        assert_eq!(finish(&events, 0), Some((310, Finish::ToolCalls)));
        let parked = r.take_parked();
        assert_eq!(parked.len(), 1, "the waiting turn is kept for continuation");
        assert_eq!(parked[0].1, ["c1", "c2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_parallel_calls_the_first_call_ends_the_response() {
        let mut r = run(
            vec![turn(vec![
                (10, call("c1")),
                (5, call("c2")),
                (10, TurnEvent::Finished),
            ])],
            policy(OutputMode::OpenaiJson),
        );
        let events = drain(&mut r).await;
        assert_eq!(calls(&events), ["c1"]);
        assert_eq!(finish(&events, 0), Some((10, Finish::ToolCalls)));
        assert_eq!(r.take_parked()[0].1, ["c1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_to_the_tool_that_tool_choice_names_is_final_and_not_parked() {
        let mut p = policy(OutputMode::OpenaiJson);
        p.final_tool = Some("lookup".into());
        let mut r = run(vec![turn(vec![(10, call("c1"))])], p.clone());
        let events = drain(&mut r).await;
        assert_eq!(calls(&events), ["c1"]);
        assert_eq!(finish(&events, 0).map(|f| f.1), Some(Finish::ToolCalls));
        assert!(r.take_parked().is_empty(), "released, not parked");
        // Another tool named: the call waits for its result as usual.
        p.final_tool = Some("other".into());
        let mut r = run(vec![turn(vec![(10, call("c1"))])], p);
        drain(&mut r).await;
        assert_eq!(r.take_parked().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn obsidian_mode_renders_calls_as_text_and_parks_nothing() {
        let mut r = run(
            vec![turn(vec![(10, text("Let me look. ")), (10, call("c1"))])],
            policy(OutputMode::ObsidianXml),
        );
        let events = drain(&mut r).await;
        let shown = texts(&events, 0);
        assert!(shown.starts_with("Let me look. <use_tool>"), "{shown}");
        assert!(shown.contains("<name>lookup</name>"), "{shown}");
        assert!(calls(&events).is_empty());
        assert_eq!(finish(&events, 0).map(|f| f.1), Some(Finish::ToolCalls));
        assert!(r.take_parked().is_empty(), "XML clients answer in text");
    }

    #[tokio::test(start_paused = true)]
    async fn obsidian_mode_gives_calls_as_tool_calls_too_when_the_client_sent_tools() {
        let mut p = policy(OutputMode::ObsidianXml);
        p.client_tools = true;
        let mut r = run(
            vec![turn(vec![(10, text("Let me look. ")), (10, call("c1"))])],
            p.clone(),
        );
        let events = drain(&mut r).await;
        assert!(texts(&events, 0).contains("<name>lookup</name>"));
        assert_eq!(calls(&events), ["c1"]);
        assert_eq!(finish(&events, 0).map(|f| f.1), Some(Finish::ToolCalls));
        assert!(r.take_parked().is_empty());

        // A block the model wrote as text: the block stays, a call is added.
        let mut r = run(
            vec![turn(vec![
                (1, text(&block("search"))),
                (1, TurnEvent::Finished),
            ])],
            p,
        );
        let events = drain(&mut r).await;
        assert!(texts(&events, 0).contains("<name>search</name>"));
        let names: Vec<_> = events
            .iter()
            .filter_map(|(_, e)| match e {
                RunEvent::ToolCall(_, c) => Some(c.name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["search"]);
    }

    #[tokio::test(start_paused = true)]
    async fn textual_blocks_become_calls_in_openai_json_mode() {
        let b = block("search");
        let (a, z) = b.split_at(15);
        let mut r = run(
            vec![turn(vec![
                (1, text("Sure. ")),
                (1, text(a)),
                (1, text(z)),
                (1, TurnEvent::Finished),
            ])],
            policy(OutputMode::OpenaiJson),
        );
        let events = drain(&mut r).await;
        assert_eq!(
            texts(&events, 0),
            "Sure. ",
            "the split block is never leaked as text"
        );
        let names: Vec<_> = events
            .iter()
            .filter_map(|(_, e)| match e {
                RunEvent::ToolCall(_, c) => Some((c.name.clone(), c.arguments.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(names, [("search".to_owned(), r#"{"q":"x"}"#.to_owned())]);
        assert_eq!(finish(&events, 0).map(|f| f.1), Some(Finish::ToolCalls));
        assert!(r.take_parked().is_empty(), "codex waits on nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn stop_after_tools_burst_waits_for_more_blocks_first_stops_at_once() {
        let steps = || {
            turn(vec![
                (10, text(&block("a"))),
                (100, text(&block("b"))),
                (1_000, text(&block("c"))),
                (10, TurnEvent::Finished),
            ])
        };
        let mut p = policy(OutputMode::ObsidianXml);
        p.stop_after_tools = true;
        p.burst = true;
        let events = drain(&mut run(vec![steps()], p.clone())).await;
        let shown = texts(&events, 0);
        assert!(shown.contains("<name>a</name>") && shown.contains("<name>b</name>"));
        assert!(
            !shown.contains("<name>c</name>"),
            "c came after the grace: {shown}"
        );
        assert_eq!(finish(&events, 0), Some((310, Finish::ToolCalls)));

        p.burst = false;
        let events = drain(&mut run(vec![steps()], p)).await;
        let shown = texts(&events, 0);
        assert!(shown.contains("<name>a</name>") && !shown.contains("<name>b</name>"));
        assert_eq!(finish(&events, 0), Some((10, Finish::ToolCalls)));
    }

    #[tokio::test(start_paused = true)]
    async fn tail_after_the_last_block_is_suppressed_but_text_between_blocks_is_not() {
        let mut p = policy(OutputMode::ObsidianXml);
        p.suppress_tail = true;
        let mut r = run(
            vec![turn(vec![
                (1, text(&block("a"))),
                (1, text(" between ")),
                (1, text(&block("b"))),
                (1, text(" trailing chatter")),
                (1, TurnEvent::Finished),
            ])],
            p,
        );
        let events = drain(&mut r).await;
        let shown = texts(&events, 0);
        assert!(shown.contains(" between "), "{shown}");
        assert!(!shown.contains("trailing"), "{shown}");
    }

    #[tokio::test(start_paused = true)]
    async fn block_max_ends_the_response_with_the_blocks_it_has() {
        let mut p = policy(OutputMode::ObsidianXml);
        p.block_max = 1;
        let mut r = run(
            vec![turn(vec![
                (1, text(&block("a"))),
                (1, text(&block("b"))),
                (1, TurnEvent::Finished),
            ])],
            p,
        );
        let events = drain(&mut r).await;
        let shown = texts(&events, 0);
        assert!(shown.contains("<name>a</name>") && !shown.contains("<name>b</name>"));
        assert_eq!(finish(&events, 0).map(|f| f.1), Some(Finish::ToolCalls));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_sequence_split_across_deltas_is_never_leaked() {
        let mut r = Run::new(
            vec![turn(vec![
                (1, text("one two ST")),
                (1, text("OP three")),
                (1, TurnEvent::Finished),
            ])],
            vec!["STOP".into()],
            None,
            policy(OutputMode::OpenaiJson),
        );
        let events = drain(&mut r).await;
        assert_eq!(texts(&events, 0), "one two ");
        assert_eq!(finish(&events, 0).map(|f| f.1), Some(Finish::Stop));
    }

    #[tokio::test(start_paused = true)]
    async fn max_tokens_cuts_the_text_and_finishes_with_length() {
        let mut r = Run::new(
            vec![turn(vec![
                (1, text("abcdefgh")),
                (1, text("ijklmnop")),
                (1, TurnEvent::Finished),
            ])],
            Vec::new(),
            Some(3),
            policy(OutputMode::OpenaiJson),
        );
        let events = drain(&mut r).await;
        // 3 tokens ≈ 12 characters.
        assert_eq!(texts(&events, 0), "abcdefghijkl");
        assert_eq!(finish(&events, 0).map(|f| f.1), Some(Finish::Length));
    }

    /// A scripted turn that records whether it was dropped (interrupted)
    /// before its last event.
    struct Watched {
        inner: Scripted,
        interrupted: Arc<std::sync::atomic::AtomicBool>,
    }

    impl TurnSource for Watched {
        fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
            self.inner.poll_next(cx)
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            if !self.inner.steps.is_empty() {
                self.interrupted
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    fn watched(steps: Vec<(u64, TurnEvent)>) -> (Watched, Arc<std::sync::atomic::AtomicBool>) {
        let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = Watched {
            inner: turn(steps),
            interrupted: interrupted.clone(),
        };
        (w, interrupted)
    }

    fn usage_of(events: &[(u64, RunEvent)]) -> Option<(u64, Usage)> {
        events.iter().find_map(|(at, e)| match e {
            RunEvent::Usage(u) => Some((*at, *u)),
            _ => None,
        })
    }

    fn tokens(n: u64) -> TurnEvent {
        TurnEvent::Usage(Box::new(Usage {
            input_tokens: n,
            output_tokens: n,
            total_tokens: 2 * n,
            ..Usage::default()
        }))
    }

    async fn drain_watched(run: &mut Run<Watched>) -> Vec<(u64, RunEvent)> {
        let start = Instant::now();
        let mut out = Vec::new();
        while let Some(e) = run.next().await {
            out.push((start.elapsed().as_millis() as u64, e));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_turn_runs_on_until_codex_reports_its_usage() {
        let (t, interrupted) = watched(vec![
            (1, text("Hello STOP and the rest")),
            (500, text(" of a long answer")),
            (500, tokens(7)),
            (0, TurnEvent::Finished),
        ]);
        let mut r = Run::new(
            vec![t],
            vec!["STOP".into()],
            None,
            policy(OutputMode::OpenaiJson),
        )
        .cut_usage_wait(Duration::from_secs(30));
        let events = drain_watched(&mut r).await;
        assert_eq!(texts_of(&events), "Hello ");
        // The client's answer ends at the cut, its usage when codex reports it.
        assert_eq!(finish_of(&events), Some((1, Finish::Stop)));
        let (at, usage) = usage_of(&events).expect("usage");
        assert_eq!((at, usage.output_tokens, usage.total_tokens), (1001, 7, 14));
        assert!(!interrupted.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_turn_that_outlasts_the_wait_is_interrupted_without_its_tokens() {
        let (t, interrupted) = watched(vec![
            (1, text("abcdefghijklmnop")),
            (60_000, tokens(7)),
            (0, TurnEvent::Finished),
        ]);
        let mut r = Run::new(vec![t], Vec::new(), Some(2), policy(OutputMode::OpenaiJson))
            .cut_usage_wait(Duration::from_secs(5));
        let events = drain_watched(&mut r).await;
        assert_eq!(texts_of(&events), "abcdefgh");
        assert_eq!(finish_of(&events), Some((1, Finish::Length)));
        assert_eq!(usage_of(&events), Some((5001, Usage::default())));
        assert!(interrupted.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_wait_a_cut_turn_is_interrupted_at_the_cut() {
        let (t, interrupted) = watched(vec![
            (1, text("Hello STOP")),
            (500, tokens(7)),
            (0, TurnEvent::Finished),
        ]);
        let mut r = Run::new(
            vec![t],
            vec!["STOP".into()],
            None,
            policy(OutputMode::OpenaiJson),
        );
        let events = drain_watched(&mut r).await;
        assert_eq!(usage_of(&events), Some((1, Usage::default())));
        assert!(interrupted.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_turn_that_then_calls_a_tool_is_released_at_once() {
        // The call waits for a result no client sends; codex would report
        // the usage only after it, so waiting is pointless.
        let (t, interrupted) = watched(vec![
            (1, text("Hello STOP")),
            (10, call("c1")),
            (60_000, tokens(7)),
            (0, TurnEvent::Finished),
        ]);
        let mut r = Run::new(
            vec![t],
            vec!["STOP".into()],
            None,
            policy(OutputMode::OpenaiJson),
        )
        .cut_usage_wait(Duration::from_secs(30));
        let events = drain_watched(&mut r).await;
        assert_eq!(usage_of(&events), Some((11, Usage::default())));
        assert!(calls(&events).is_empty());
        assert!(interrupted.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_deadline_ends_the_wait_for_a_cut_turns_usage_without_an_error() {
        let (t, _) = watched(vec![
            (1, text("Hello STOP")),
            (60_000, tokens(7)),
            (0, TurnEvent::Finished),
        ]);
        let mut r = Run::new(
            vec![t],
            vec!["STOP".into()],
            None,
            policy(OutputMode::OpenaiJson),
        )
        .cut_usage_wait(Duration::from_secs(30))
        .with_deadline(Some(Instant::now() + Duration::from_secs(2)));
        let events = drain_watched(&mut r).await;
        assert!(!events.iter().any(|(_, e)| matches!(e, RunEvent::Error(_))));
        assert_eq!(usage_of(&events), Some((2000, Usage::default())));
    }

    fn texts_of(events: &[(u64, RunEvent)]) -> String {
        texts(events, 0)
    }

    fn finish_of(events: &[(u64, RunEvent)]) -> Option<(u64, Finish)> {
        finish(events, 0)
    }

    #[tokio::test(start_paused = true)]
    async fn choices_are_served_fairly_and_usage_is_summed_once_at_the_end() {
        let usage = |n| {
            TurnEvent::Usage(Box::new(Usage {
                input_tokens: n,
                output_tokens: n,
                total_tokens: 2 * n,
                ..Usage::default()
            }))
        };
        // Choice 0 has a backlog of instant deltas; choice 1's one delta is
        // also ready at once and must not wait for the whole backlog.
        let busy: Vec<_> = (0..50).map(|i| (0, text(&format!("{i} ")))).collect();
        let mut steps0 = busy;
        steps0.extend([(0, usage(2)), (0, TurnEvent::Finished)]);
        let mut r = run(
            vec![
                turn(steps0),
                turn(vec![
                    (0, text("hello")),
                    (0, usage(3)),
                    (0, TurnEvent::Finished),
                ]),
            ],
            policy(OutputMode::OpenaiJson),
        );
        let events = drain(&mut r).await;
        let first_of_1 = events
            .iter()
            .position(|(_, e)| matches!(e, RunEvent::Text(1, _)))
            .unwrap();
        assert!(first_of_1 <= 2, "choice 1 served at position {first_of_1}");
        let usages: Vec<_> = events
            .iter()
            .filter_map(|(_, e)| match e {
                RunEvent::Usage(u) => Some(*u),
                _ => None,
            })
            .collect();
        assert_eq!(usages.len(), 1);
        assert_eq!((usages[0].input_tokens, usages[0].total_tokens), (5, 10));
        assert!(matches!(events.last(), Some((_, RunEvent::Usage(_)))));
        assert_eq!(finish(&events, 0).map(|f| f.1), Some(Finish::Stop));
        assert_eq!(finish(&events, 1).map(|f| f.1), Some(Finish::Stop));
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_deadline_fails_the_run_with_a_timeout() {
        let mut r = run(
            vec![turn(vec![
                (10, text("slow")),
                (60_000, TurnEvent::Finished),
            ])],
            policy(OutputMode::OpenaiJson),
        )
        .with_deadline(Some(Instant::now() + Duration::from_secs(5)));
        let events = drain(&mut r).await;
        let (at, last) = events.last().unwrap();
        assert_eq!(*at, 5_000);
        let RunEvent::Error(e) = last else {
            panic!("{last:?}")
        };
        assert_eq!((e.status.as_u16(), e.code), (504, Some("timeout")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_vanished_turn_fails_the_whole_run() {
        let mut r = run(
            vec![
                turn(vec![(1, text("ok")), (1_000, TurnEvent::Finished)]),
                turn(vec![(5, text("partial"))]),
            ],
            policy(OutputMode::OpenaiJson),
        );
        let events = drain(&mut r).await;
        let RunEvent::Error(e) = &events.last().unwrap().1 else {
            panic!("{events:?}")
        };
        assert_eq!(e.code, Some("upstream_error"));
        assert!(r.take_parked().is_empty());
    }
}
