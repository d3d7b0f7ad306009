//! [`TurnStream`]: one turn's events, and what happens when it goes away.
//!
//! The turn's lifecycle is one [`TurnState`]; dropping the stream acts on
//! it alone. A turn codex still runs (or that waits on client tool calls) is
//! interrupted, and its slot is held until codex confirms the end, so the
//! concurrency limit counts every turn that may still call the model. A
//! turn codex ended is only unsubscribed. A worker that went away leaves
//! nothing to release.
//!
//! A fresh turn (not a continuation, which belongs to its worker's thread)
//! whose worker turns out to be out of quota or to have lost its login gets
//! one more start on another ready worker, if that failure is the first
//! event the reader would see: see [`TurnStream::poll_next`].
//!
//! Unless codex's host tools are enabled, a turn in which codex starts an
//! item that acts on the host (`host_items`) fails with `HostToolRefused`,
//! and the drop that follows interrupts it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::failure::{Failure, FailureKind};
use super::host_items::acts_on_host;
use super::slot::TurnSlot;
use super::source::{EventQueue, TurnSource};
use super::threads::IdleThread;
use super::turn::{ToolCall, TurnEvent, Usage};
use crate::protocol::{
    self, DynamicToolCallParams, ErrorNotification, ReasoningSummaryPartAddedNotification,
    TokenUsageUpdatedNotification, TurnInterrupt, TurnInterruptParams,
};
use crate::rpc::{
    RequestId, RpcClient, RpcError, SubscriptionEnd, ThreadEvent, ThreadSubscription,
};

/// How long a released turn's slot waits for codex to confirm the interrupt
/// (measured: ~2 ms) before it is given back anyway.
const INTERRUPT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the turn is, as codex sees it. The one source of truth for what
/// dropping the stream must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TurnState {
    /// Codex runs the turn, or waits on client tool calls: interrupt on drop.
    Running,
    /// Codex sent `turn/completed`: only the thread is left to release.
    Ended,
    /// The worker's channel closed: nothing is left to release.
    WorkerGone,
}

/// The two fields a delta notification is read for (of
/// [`protocol::AgentMessageDeltaNotification`] and
/// [`protocol::ReasoningSummaryTextDeltaNotification`]), the item id
/// borrowed from the line where it needs no unescaping; the other fields are
/// skipped unread. One is read per token, so it allocates only the delta.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeltaView<'a> {
    #[serde(borrow)]
    item_id: Cow<'a, str>,
    delta: String,
}

/// `item/started` and `item/completed`, read only as far as the turn needs:
/// the item's type and id, and (raw, parsed only when used) the text and
/// summary of the whole-item fallbacks. The rest is skipped unread: an
/// agent message's `item/completed` repeats the whole answer, which used to
/// be built into a `Value` tree per item.
#[derive(Deserialize)]
struct ItemView<'a> {
    #[serde(borrow)]
    item: ItemFields<'a>,
}

#[derive(Deserialize)]
struct ItemFields<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    summary: Option<&'a RawValue>,
}

/// `turn/completed`, without the turn's items (codex repeats them there).
#[derive(Deserialize)]
struct TurnEndView<'a> {
    #[serde(borrow)]
    turn: TurnEndFields<'a>,
}

#[derive(Deserialize)]
struct TurnEndFields<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(default)]
    error: Option<protocol::TurnError>,
}

/// A notification's params, deserialized straight from the worker's text.
fn decode<T: DeserializeOwned>(params: &str) -> serde_json::Result<T> {
    serde_json::from_str(params)
}

/// The events of one turn, in order. Ends after `Finished` or `Failed`.
pub struct TurnStream {
    subscription: Option<ThreadSubscription>,
    turn_id: String,
    state: TurnState,
    idle_timeout: Option<Duration>,
    /// The idle timer, kept between waits (see `poll_next`); made at the
    /// first wait.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the current wait for an event runs out of `idle_timeout`: set
    /// by the wait's first `Pending`, cleared when an event arrives or the
    /// turn is parked.
    wait_end: Option<Instant>,
    queue: EventQueue,
    /// Agent-message items that streamed deltas; a completed item that did
    /// not (the provider sent no deltas) is emitted whole.
    /// Item ids from codex, looked up per delta (foldhash: see `rpc::client::State`).
    streamed_items: HashSet<String, foldhash::fast::RandomState>,
    usage: Option<Usage>,
    error: Option<Failure>,
    /// `item/tool/call` requests codex waits on, with their call ids.
    pending_calls: Vec<(RequestId, String)>,
    /// One of the worker's turn slots; `None` while parked.
    slot: Option<TurnSlot>,
    /// Fail the turn when codex starts an item that acts on the host.
    refuse_host_items: bool,
    /// The thread's token total before this turn (a continued thread's
    /// earlier turns): codex reports thread totals, a response its own.
    usage_base: Usage,
    /// The thread's total as last reported.
    usage_total: Usage,
    /// Turns the thread ran before this one.
    earlier_turns: u32,
    /// The turn ended with `turn/completed` status `completed`.
    completed: bool,
    /// What a fresh turn needs to start again elsewhere; `None` for a
    /// continuation, in a pool of one, and once used. Boxed, like
    /// `restarting`: rarely there, and the stream is moved around whole.
    retry: Option<Retry>,
    /// An event went to the reader: from then on the turn is the answer.
    delivered: bool,
    /// The start of the same turn on another worker, and the failure that
    /// caused it (delivered if that start fails). A task, so a reader that
    /// stops waiting (the stream's commit window) and comes back finds it.
    restarting: Option<Box<Restarting>>,
}

/// The start of a turn on another worker, and the failure that caused it.
struct Restarting {
    task: Restart,
    failure: Failure,
}

/// A fresh turn's second chance (see [`TurnStream::poll_next`]): given why the
/// turn failed and the worker it failed on, starts the same turn on another
/// ready worker, or answers `None` when there is none. Made by the core, which
/// knows the pool and holds the request; the stream only decides when.
pub(super) type Retry =
    Box<dyn FnOnce(FailureKind, Option<usize>) -> Option<Restart> + Send + Sync>;

/// A turn starting on another worker.
pub(super) type Restart = tokio::task::JoinHandle<Result<TurnStream, Failure>>;

impl TurnStream {
    pub(super) fn new(
        subscription: ThreadSubscription,
        turn_id: String,
        idle_timeout: Option<Duration>,
        slot: TurnSlot,
        refuse_host_items: bool,
    ) -> TurnStream {
        TurnStream {
            subscription: Some(subscription),
            turn_id,
            state: TurnState::Running,
            idle_timeout,
            idle: None,
            wait_end: None,
            queue: EventQueue::default(),
            streamed_items: HashSet::default(),
            usage: None,
            error: None,
            pending_calls: Vec::new(),
            slot: Some(slot),
            refuse_host_items,
            usage_base: Usage::default(),
            usage_total: Usage::default(),
            earlier_turns: 0,
            completed: false,
            retry: None,
            delivered: false,
            restarting: None,
        }
    }

    /// A fresh turn that may start again on another worker once.
    pub(super) fn with_retry(mut self, retry: Option<Retry>) -> TurnStream {
        self.retry = retry;
        self
    }

    /// A turn on a thread that already ran `turns` turns adding up to `total`.
    pub(super) fn continuing(mut self, total: Usage, turns: u32) -> TurnStream {
        self.usage_base = total;
        self.usage_total = total;
        self.earlier_turns = turns;
        self
    }

    /// The thread of a turn that completed and was read to its end, for the
    /// conversation's next turn ([`LiveThreads`]). Anything else (a failed,
    /// interrupted or unfinished turn, whose history no longer matches what
    /// the client saw) is released as if dropped: `None`.
    ///
    /// [`LiveThreads`]: super::LiveThreads
    pub fn into_idle(mut self) -> Option<IdleThread> {
        if !(self.completed && self.queue.delivered_end() && self.state == TurnState::Ended) {
            return None;
        }
        let subscription = self.subscription.take()?;
        // The slot and the subscription go now; codex keeps the thread.
        self.slot = None;
        let client = subscription.client().clone();
        let thread_id = subscription.thread_id().to_owned();
        drop(subscription);
        Some(IdleThread {
            client,
            thread_id,
            usage_total: self.usage_total,
            turns: self.earlier_turns + 1,
        })
    }

    /// The channel of the worker process that runs this turn.
    pub(super) fn client(&self) -> Option<&crate::rpc::RpcClient> {
        self.subscription.as_ref().map(ThreadSubscription::client)
    }

    pub fn thread_id(&self) -> &str {
        self.subscription
            .as_ref()
            .map(ThreadSubscription::thread_id)
            .unwrap_or_default()
    }

    /// The call ids codex waits on.
    pub fn pending_calls(&self) -> impl Iterator<Item = &str> {
        self.pending_calls.iter().map(|(_, id)| id.as_str())
    }

    /// Pauses a turn that waits on client tool calls, for the client's next
    /// request. `shown` are the call ids the response showed the client; the
    /// turn is continued only by a request that answers all of them. The
    /// slot is given back: a paused turn costs the worker no model time.
    ///
    /// A turn that does not wait on calls cannot be parked: `None`, and the
    /// turn is released as if dropped.
    pub fn park(mut self, shown: Vec<String>) -> Option<ParkedTurn> {
        if self.state != TurnState::Running || self.pending_calls.is_empty() || shown.is_empty() {
            return None;
        }
        self.slot = None;
        // A wait the run began before it ended the choice is over: the
        // turn's next wait starts when it resumes, with its own idle limit.
        self.wait_end = None;
        Some(ParkedTurn { turn: self, shown })
    }

    /// Takes a slot again and answers the calls; see [`CodexCore::resume`].
    ///
    /// [`CodexCore::resume`]: super::CodexCore::resume
    pub(super) async fn answer(&mut self, slot: TurnSlot, outputs: &[(String, String)]) -> bool {
        self.slot = Some(slot);
        for (call_id, output) in outputs {
            let Some(pos) = self.pending_calls.iter().position(|(_, c)| c == call_id) else {
                return false;
            };
            let (id, _) = self.pending_calls.remove(pos);
            let result = serde_json::json!({
                "contentItems": [{"type": "inputText", "text": output}],
                "success": true,
            });
            let Some(sub) = &self.subscription else {
                return false;
            };
            if sub.client().respond(&id, Ok(result)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Whether every id in `call_ids` is a call codex waits on.
    pub(super) fn waits_on_all<'a>(&self, mut call_ids: impl Iterator<Item = &'a str>) -> bool {
        call_ids.all(|id| self.pending_calls.iter().any(|(_, c)| c == id))
    }

    /// The next event as a poll; `Ready(None)` after the last one (as a
    /// future: [`TurnSource::next`]).
    ///
    /// A fresh turn whose first event would be a failure of its worker's
    /// account (out of quota, or the login refused: the worker is marked
    /// already and takes no new turns) starts again on another ready
    /// worker instead, once, and its events are this stream's. "First"
    /// means nothing of the turn has reached the reader: a streamed
    /// response may have sent its headers and opening frame, which are the
    /// same whoever answers, but no text, tool call or usage.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
        loop {
            if let Some(restarting) = &mut self.restarting {
                let started = ready!(Pin::new(&mut restarting.task).poll(cx));
                let failure = restarting.failure.clone();
                self.restarting = None;
                match started {
                    Ok(Ok(stream)) => {
                        // The failed turn's thread is released by its drop.
                        *self = stream;
                        continue;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e.message, "the retry on another worker did not start");
                        self.delivered = true;
                        return Poll::Ready(Some(TurnEvent::Failed(Box::new(failure))));
                    }
                    Err(_) => {
                        self.delivered = true;
                        return Poll::Ready(Some(TurnEvent::Failed(Box::new(failure))));
                    }
                }
            }
            if let Some(event) = self.queue.pop() {
                if let TurnEvent::Failed(failure) = &event {
                    if !self.delivered && self.restart_elsewhere(failure) {
                        continue;
                    }
                }
                self.delivered = true;
                return Poll::Ready(Some(event));
            }
            if self.queue.delivered_end() {
                return Poll::Ready(None);
            }
            let Some(subscription) = self.subscription.as_mut() else {
                return Poll::Ready(None);
            };
            let received = match subscription.poll_recv(cx) {
                Poll::Ready(received) => {
                    // The wait (if there was one) is over.
                    self.wait_end = None;
                    received
                }
                Poll::Pending => {
                    let Some(limit) = self.idle_timeout else {
                        return Poll::Pending;
                    };
                    // One timer per stream, set for an earlier wait's end and
                    // moved on only when it goes off before this wait's end
                    // (at most once per `limit`): a `timeout` per wait put a
                    // timer into tokio's wheel and took it out again for
                    // every notification. The clock is read only when a wait
                    // begins (its first `Pending`), not for an event that is
                    // already there.
                    let end = *self.wait_end.get_or_insert_with(|| {
                        // As `timeout`: a limit past the clock's range is a
                        // deadline far away, not an overflow.
                        let now = Instant::now();
                        now.checked_add(limit)
                            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
                    });
                    let timer = self.idle.get_or_insert_with(|| Box::pin(sleep_until(end)));
                    loop {
                        ready!(timer.as_mut().poll(cx));
                        if Instant::now() >= end {
                            break;
                        }
                        timer.as_mut().reset(end);
                    }
                    self.wait_end = None;
                    self.fail(Failure::new(
                        FailureKind::Timeout,
                        format!("The model sent nothing for {} ms.", limit.as_millis()),
                    ));
                    continue;
                }
            };
            match received {
                Ok(ThreadEvent::Notification(n)) => self.on_notification(n.method(), n.params()),
                Ok(ThreadEvent::Request(req)) => self.on_tool_call(req.id, req.params),
                Err(SubscriptionEnd::Overflow) => self.fail(Failure::new(
                    FailureKind::SlowClient,
                    "The client read the stream too slowly; the turn was stopped.",
                )),
                Err(SubscriptionEnd::WorkerGone(why)) => {
                    self.state = TurnState::WorkerGone;
                    self.fail(
                        Failure::new(
                            FailureKind::WorkerGone,
                            format!("The Codex worker went away: {why}"),
                        )
                        .with_retry_after(Duration::from_secs(1)),
                    )
                }
            }
        }
    }

    /// Starts this turn again on another worker if it may (see
    /// [`TurnStream::poll_next`]): `true` when a start is under way.
    fn restart_elsewhere(&mut self, failure: &Failure) -> bool {
        let retriable = matches!(
            failure.kind,
            FailureKind::QuotaExceeded | FailureKind::LoginRequired
        );
        // Only a turn codex ended: nothing of it runs on the old worker.
        if !retriable || self.state != TurnState::Ended {
            return false;
        }
        let Some(retry) = self.retry.take() else {
            return false;
        };
        let from = self
            .slot
            .as_ref()
            .and_then(TurnSlot::lease)
            .map(|l| l.worker());
        // The failed turn's slot goes first: the new start takes its own,
        // and with one slot left it must not wait on this one. The turn has
        // ended, so the slot guards nothing any more either way.
        self.slot = None;
        let Some(task) = retry(failure.kind, from) else {
            return false;
        };
        self.restarting = Some(Box::new(Restarting {
            task,
            failure: failure.clone(),
        }));
        true
    }

    fn fail(&mut self, mut failure: Failure) {
        let lease = self.slot.as_ref().and_then(TurnSlot::lease);
        match failure.kind {
            // The worker's account is out of quota: the pool stops placing
            // new turns on it, and the client learns when it resets.
            FailureKind::QuotaExceeded => {
                if let Some(lease) = lease {
                    failure = failure.resetting_at(lease.usage_limit_reached());
                }
            }
            // The provider refused the worker's credentials: the worker
            // goes `login_required` until it has a new login.
            FailureKind::LoginRequired => {
                if let (Some(lease), Some(sub)) = (lease, &self.subscription) {
                    lease.login_rejected(sub.client());
                }
            }
            _ => {}
        }
        self.queue.push(TurnEvent::Failed(Box::new(failure)));
    }

    /// Marks an item as streamed, allocating its id only the first time.
    fn streamed(&mut self, item_id: &str) {
        if !self.streamed_items.contains(item_id) {
            self.streamed_items.insert(item_id.to_owned());
        }
    }

    fn on_notification(&mut self, method: &str, params: &str) {
        match method {
            protocol::AGENT_MESSAGE_DELTA => {
                if let Ok(n) = serde_json::from_str::<DeltaView<'_>>(params) {
                    self.streamed(&n.item_id);
                    if !n.delta.is_empty() {
                        self.queue.push(TurnEvent::TextDelta(n.delta));
                    }
                }
            }
            protocol::REASONING_SUMMARY_TEXT_DELTA => {
                if let Ok(n) = serde_json::from_str::<DeltaView<'_>>(params) {
                    self.streamed(&n.item_id);
                    if !n.delta.is_empty() {
                        self.queue.push(TurnEvent::ReasoningDelta(n.delta));
                    }
                }
            }
            protocol::REASONING_SUMMARY_PART_ADDED => {
                if let Ok(n) = decode::<ReasoningSummaryPartAddedNotification>(params) {
                    // Parts are paragraphs of one summary.
                    if n.summary_index > 0 {
                        self.queue.push(TurnEvent::ReasoningDelta("\n\n".into()));
                    }
                }
            }
            protocol::ITEM_STARTED => {
                if let Ok(n) = serde_json::from_str::<ItemView<'_>>(params) {
                    self.refuse_host_item(&n.item.kind);
                }
            }
            protocol::ITEM_COMPLETED => {
                let Ok(n) = serde_json::from_str::<ItemView<'_>>(params) else {
                    return;
                };
                let item = &n.item;
                // Started and completed are both looked at: the refusal must
                // not depend on codex announcing an item before running it.
                if self.refuse_host_item(&item.kind) {
                    return;
                }
                if self.streamed_items.contains(item.id.as_ref()) {
                    return;
                }
                match item.kind.as_ref() {
                    "reasoning" => {
                        // A summary that arrived whole, without deltas.
                        let parts: Vec<Value> = item
                            .summary
                            .and_then(|raw| serde_json::from_str(raw.get()).ok())
                            .unwrap_or_default();
                        let parts: Vec<&str> = parts
                            .iter()
                            .filter_map(Value::as_str)
                            .filter(|t| !t.is_empty())
                            .collect();
                        if !parts.is_empty() {
                            self.queue
                                .push(TurnEvent::ReasoningDelta(parts.join("\n\n")));
                        }
                    }
                    "agentMessage" => {
                        // A message that arrived whole, without deltas.
                        if let Some(text) = item
                            .text
                            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
                            .filter(|t| !t.is_empty())
                        {
                            self.queue.push(TurnEvent::TextDelta(text));
                        }
                    }
                    _ => {}
                }
            }
            protocol::TOKEN_USAGE_UPDATED => {
                if let Ok(n) = decode::<TokenUsageUpdatedNotification>(params) {
                    // Codex reports the thread's total; this turn's usage is
                    // what it added to the total the thread came with.
                    let t = n.token_usage.total;
                    let clamp = |v: i64| u64::try_from(v).unwrap_or(0);
                    let total = Usage {
                        input_tokens: clamp(t.input_tokens),
                        cached_input_tokens: clamp(t.cached_input_tokens),
                        output_tokens: clamp(t.output_tokens),
                        reasoning_output_tokens: clamp(t.reasoning_output_tokens),
                        total_tokens: clamp(t.total_tokens),
                    };
                    self.usage_total = total;
                    self.usage = Some(total.since(&self.usage_base));
                }
            }
            protocol::ERROR => {
                if let Ok(n) = decode::<ErrorNotification>(params) {
                    if !n.will_retry {
                        self.error = Some(Failure::from_turn_error(&n.error));
                    }
                }
            }
            protocol::TURN_COMPLETED => {
                let Ok(n) = serde_json::from_str::<TurnEndView<'_>>(params) else {
                    return;
                };
                if n.turn.id != self.turn_id {
                    // An earlier turn of a continued thread: not ours.
                    return;
                }
                self.state = TurnState::Ended;
                // Codex answered or cancelled every call of an ended turn.
                self.pending_calls.clear();
                match n.turn.status.as_deref() {
                    Some("completed") => {
                        self.completed = true;
                        if let Some(usage) = self.usage {
                            self.queue.push(TurnEvent::Usage(Box::new(usage)));
                        }
                        self.queue.push(TurnEvent::Finished);
                    }
                    status => {
                        let failure = n
                            .turn
                            .error
                            .as_ref()
                            .map(Failure::from_turn_error)
                            .or_else(|| self.error.take())
                            .unwrap_or_else(|| {
                                Failure::new(
                                    FailureKind::Upstream,
                                    format!(
                                        "The turn ended with status {}.",
                                        status.unwrap_or("unknown")
                                    ),
                                )
                            });
                        self.fail(failure);
                    }
                }
            }
            _ => {}
        }
    }

    /// Fails the turn when `item` acts on the host and that is not allowed.
    /// The turn stays `Running`, so the drop after the failure interrupts it.
    fn refuse_host_item(&mut self, kind: &str) -> bool {
        if !self.refuse_host_items || !acts_on_host(kind) {
            return false;
        }
        tracing::warn!(
            thread = self.thread_id(),
            item = kind,
            "codex started a host tool; stopping the turn"
        );
        self.fail(Failure::new(
            FailureKind::HostToolRefused,
            format!(
                "The model tried to use one of Codex's own tools that act on the server \
                 ({kind}); they are disabled on this gateway, so the response was stopped."
            ),
        ));
        true
    }

    fn on_tool_call(&mut self, id: RequestId, params: Value) {
        match serde_json::from_value::<DynamicToolCallParams>(params) {
            Ok(call) => {
                let name = match &call.namespace {
                    Some(ns) => format!("{ns}.{}", call.tool),
                    None => call.tool,
                };
                let arguments = match &call.arguments {
                    Value::Null => "{}".to_owned(),
                    v => v.to_string(),
                };
                self.pending_calls.push((id, call.call_id.clone()));
                self.queue.push(TurnEvent::ToolCall(Box::new(ToolCall {
                    call_id: call.call_id,
                    name,
                    arguments,
                })));
            }
            Err(e) => {
                tracing::warn!(error = %e, "malformed item/tool/call from the worker");
                if let Some(sub) = &self.subscription {
                    let client = sub.client().clone();
                    tokio::spawn(async move {
                        let _ = client
                            .respond(&id, Err((-32602, "malformed tool call".into())))
                            .await;
                    });
                }
            }
        }
    }
}

/// A turn that waits on client tool calls and holds no slot.
pub struct ParkedTurn {
    pub(super) turn: TurnStream,
    /// The call ids the client was shown; a continuation answers them all.
    pub(super) shown: Vec<String>,
}

impl ParkedTurn {
    pub fn thread_id(&self) -> &str {
        self.turn.thread_id()
    }

    /// Whether `answered` covers every call the client was shown.
    pub fn answered_by<'a>(&self, answered: impl IntoIterator<Item = &'a str> + Clone) -> bool {
        self.shown
            .iter()
            .all(|c| answered.clone().into_iter().any(|a| a == c))
    }
}

impl TurnSource for TurnStream {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
        TurnStream::poll_next(self, cx)
    }

    /// Reads the turn to its end in the background (bounded by the turn's
    /// own end, its idle timeout, or the worker's exit). A tool call nobody
    /// will answer would wait forever: the turn is released there, which
    /// interrupts it.
    fn detach(mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Nobody reads it: a failed start is not worth another one.
        self.retry = None;
        runtime.spawn(async move {
            while let Some(event) = self.next().await {
                if matches!(event, TurnEvent::ToolCall(_)) {
                    break;
                }
            }
        });
    }
}

impl Drop for TurnStream {
    fn drop(&mut self) {
        let Some(subscription) = self.subscription.take() else {
            return;
        };
        if self.state == TurnState::WorkerGone || subscription.client().is_closed() {
            return;
        }
        if self.state != TurnState::Running {
            // The turn ended (the common case): its slot goes back now and
            // the thread is released with one detached request; no task.
            drop(self.slot.take());
            let client = subscription.client().clone();
            let thread_id = subscription.thread_id().to_owned();
            drop(subscription);
            super::threads::unsubscribe_detached(&client, thread_id);
            return;
        }
        // A turn that may still run is interrupted by a task of its own, and
        // keeps its slot until codex confirms the end.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let turn_id = self.turn_id.clone();
            runtime.spawn(release(subscription, turn_id, self.slot.take()));
        }
    }
}

/// Interrupts a turn codex may still run, waits (boundedly) for codex to
/// confirm its end while still holding its slot, then unsubscribes so the
/// worker unloads the thread.
///
/// Right after `turn/start` answers, codex may not have registered the turn
/// as active yet and refuses the interrupt ("no active turn"), although the
/// turn is about to call the model (measured in a disconnect storm: such
/// turns ran to their end for nobody). So a refused interrupt is retried,
/// with a short growing pause, until codex accepts it or the thread shows
/// the turn ended.
async fn release(mut subscription: ThreadSubscription, turn_id: String, slot: Option<TurnSlot>) {
    let client: RpcClient = subscription.client().clone();
    let thread_id = subscription.thread_id().to_owned();
    {
        let deadline = tokio::time::Instant::now() + INTERRUPT_CONFIRM_TIMEOUT;
        let params = TurnInterruptParams {
            thread_id: thread_id.clone(),
            turn_id,
        };
        let mut pause = Duration::from_millis(5);
        loop {
            match client.call::<TurnInterrupt>(&params).await {
                Ok(_) => {
                    tracing::debug!(%thread_id, "interrupted an abandoned turn");
                    // Holding the slot until codex confirms keeps the limit honest.
                    if slot.is_some()
                        && tokio::time::timeout_at(deadline, wait_for_turn_end(&mut subscription))
                            .await
                            .is_err()
                    {
                        tracing::warn!(%thread_id, "codex did not confirm an interrupt in time");
                    }
                    break;
                }
                Err(RpcError::Remote { message, .. }) => {
                    // Not active (yet, or any more): the thread's events tell which.
                    let ended = tokio::time::timeout(pause, wait_for_turn_end(&mut subscription))
                        .await
                        .is_ok();
                    if ended {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        tracing::warn!(%thread_id, %message, "could not interrupt an abandoned turn");
                        break;
                    }
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) => {
                    tracing::debug!(%thread_id, error = %e, "interrupt failed");
                    break;
                }
            }
        }
    }
    drop(slot);
    drop(subscription);
    super::threads::unsubscribe_detached(&client, thread_id);
}

/// Reads the thread until `turn/completed`. A tool call that races the
/// interrupt still gets an answer (every server request does): a failure.
async fn wait_for_turn_end(subscription: &mut ThreadSubscription) {
    loop {
        match subscription.recv().await {
            Ok(ThreadEvent::Notification(n)) if n.method() == protocol::TURN_COMPLETED => return,
            Ok(ThreadEvent::Request(req)) => {
                let client = subscription.client().clone();
                let _ = client
                    .respond(&req.id, Err((-32000, "the turn was interrupted".into())))
                    .await;
            }
            Ok(ThreadEvent::Notification(_)) => {}
            Err(_) => return,
        }
    }
}
