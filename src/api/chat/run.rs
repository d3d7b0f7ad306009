//! [`ChatRun`]: the n turns of one chat request, merged and shaped.
//!
//! Both the streamed and the non-streamed response read the same sequence of
//! [`RunEvent`]s, so they cannot disagree about content, finish reasons or
//! usage.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use futures_util::stream::{self, Stream, StreamExt};

use super::shaper::{Cut, TextShaper};
use crate::api::error::ApiError;
use crate::core::{FinishReason, ToolCall, TurnEvent, TurnStream, Usage};

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

type Events = Pin<Box<dyn Stream<Item = TurnEvent> + Send>>;

struct Choice {
    /// Dropping it interrupts the turn (when it has not ended) and releases the thread.
    events: Option<Events>,
    shaper: TextShaper,
    finished: bool,
}

pub struct ChatRun {
    choices: Vec<Choice>,
    queue: std::collections::VecDeque<RunEvent>,
    usage: Option<Usage>,
    next: usize,
    ended: bool,
    /// The whole request's deadline (`PROXY_TIMEOUT_MS`).
    deadline: Option<tokio::time::Instant>,
    /// When false, turns left running by a departed client finish in the
    /// background instead of being interrupted (`PROXY_KILL_ON_DISCONNECT=false`).
    interrupt_on_drop: bool,
}

impl Drop for ChatRun {
    fn drop(&mut self) {
        if self.interrupt_on_drop {
            return; // dropping each turn's stream interrupts it
        }
        for choice in &mut self.choices {
            if let Some(mut events) = choice.events.take() {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    // Bounded by the turn's own end, its idle timeout, or the worker's exit.
                    rt.spawn(async move { while events.next().await.is_some() {} });
                }
            }
        }
    }
}

fn into_events(turn: TurnStream) -> Events {
    Box::pin(stream::unfold(turn, |mut turn| async move {
        turn.next().await.map(|e| (e, turn))
    }))
}

impl ChatRun {
    pub fn new(turns: Vec<TurnStream>, stop: Vec<String>, max_tokens: Option<u64>) -> ChatRun {
        let choices = turns
            .into_iter()
            .map(|t| Choice {
                events: Some(into_events(t)),
                shaper: TextShaper::new(stop.clone(), max_tokens),
                finished: false,
            })
            .collect();
        ChatRun {
            choices,
            queue: Default::default(),
            usage: None,
            next: 0,
            ended: false,
            deadline: None,
            interrupt_on_drop: true,
        }
    }

    pub fn with_deadline(mut self, deadline: Option<tokio::time::Instant>) -> ChatRun {
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
            let deadline = self.deadline;
            let next = poll_fn(|cx| self.poll_any(cx));
            let (index, event) = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, next).await {
                    Ok(e) => e,
                    Err(_) => {
                        self.fail(ApiError::from(crate::core::Failure::new(
                            crate::core::FailureKind::Timeout,
                            "The request took longer than PROXY_TIMEOUT_MS allows.",
                        )));
                        continue;
                    }
                },
                None => next.await,
            };
            self.on_event(index, event);
        }
    }

    /// Polls the unfinished choices fairly, starting after the last one served.
    fn poll_any(&mut self, cx: &mut std::task::Context<'_>) -> Poll<(usize, Option<TurnEvent>)> {
        let n = self.choices.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let Some(events) = self.choices[i].events.as_mut() else {
                continue;
            };
            if let Poll::Ready(e) = events.poll_next_unpin(cx) {
                self.next = (i + 1) % n;
                return Poll::Ready((i, e));
            }
        }
        Poll::Pending
    }

    fn on_event(&mut self, i: usize, event: Option<TurnEvent>) {
        match event {
            Some(TurnEvent::TextDelta(t)) => {
                let (emit, cut) = self.choices[i].shaper.push(&t);
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
            Some(TurnEvent::ToolCall(call)) => {
                self.flush(i);
                self.queue.push_back(RunEvent::ToolCall(i, call));
                // The worker now waits for the client's result, which arrives
                // in the client's next request: this response ends here.
                self.finish(i, Finish::ToolCalls);
            }
            Some(TurnEvent::Usage(u)) => {
                let acc = self.usage.get_or_insert_with(Usage::default);
                acc.input_tokens += u.input_tokens;
                acc.cached_input_tokens += u.cached_input_tokens;
                acc.output_tokens += u.output_tokens;
                acc.reasoning_output_tokens += u.reasoning_output_tokens;
                acc.total_tokens += u.total_tokens;
            }
            Some(TurnEvent::Finished(reason)) => {
                let cut = self.flush(i);
                let finish = match (cut, reason) {
                    (Some(Cut::Length), _) => Finish::Length,
                    (_, FinishReason::ToolCalls) => Finish::ToolCalls,
                    _ => Finish::Stop,
                };
                self.finish(i, finish);
            }
            Some(TurnEvent::Failed(f)) => self.fail(ApiError::from(f)),
            None => {
                if !self.choices[i].finished {
                    self.fail(ApiError::new(
                        http::StatusCode::BAD_GATEWAY,
                        "api_error",
                        "The turn ended without a result.",
                    ));
                }
            }
        }
    }

    fn flush(&mut self, i: usize) -> Option<Cut> {
        let (rest, cut) = self.choices[i].shaper.finish();
        if !rest.is_empty() {
            self.queue.push_back(RunEvent::Text(i, rest));
        }
        cut
    }

    fn finish(&mut self, i: usize, finish: Finish) {
        let choice = &mut self.choices[i];
        if choice.finished {
            return;
        }
        choice.finished = true;
        choice.events = None;
        self.queue.push_back(RunEvent::Finish(i, finish));
    }

    fn fail(&mut self, e: ApiError) {
        for c in &mut self.choices {
            c.finished = true;
            c.events = None;
        }
        self.queue.push_back(RunEvent::Error(e));
        self.ended = true;
    }
}
