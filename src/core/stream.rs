//! [`TurnStream`]: one turn's events, and the cleanup when it goes away.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use serde_json::Value;

use super::failure::{Failure, FailureKind};
use super::turn::{ToolCall, TurnEvent, Usage};
use crate::protocol::{
    self, AgentMessageDeltaNotification, DynamicToolCallParams, ErrorNotification,
    ItemNotification, ThreadIdParams, ThreadUnsubscribe, TokenUsageUpdatedNotification,
    TurnCompletedNotification, TurnInterrupt, TurnInterruptParams,
};
use crate::rpc::{RequestId, RpcClient, SubscriptionEnd, ThreadEvent, ThreadSubscription};

/// The events of one turn, in order. Ends after `Finished` or `Failed`.
pub struct TurnStream {
    subscription: ThreadSubscription,
    cleanup: TurnCleanup,
    idle_timeout: Option<Duration>,
    queue: VecDeque<TurnEvent>,
    /// Agent-message items that streamed deltas; a completed item that did
    /// not (the provider sent no deltas) is emitted whole.
    streamed_items: HashSet<String>,
    usage: Option<Usage>,
    error: Option<Failure>,
    /// `item/tool/call` requests not yet answered.
    pending_calls: Vec<(RequestId, String)>,
    done: bool,
    /// One of the worker's turn slots; released when the stream goes, or
    /// while the turn is parked waiting for a client's tool results.
    slot: Option<super::service::TurnSlot>,
}

impl TurnStream {
    pub(super) fn new(
        subscription: ThreadSubscription,
        cleanup: TurnCleanup,
        idle_timeout: Option<Duration>,
        slot: super::service::TurnSlot,
    ) -> TurnStream {
        TurnStream {
            subscription,
            cleanup,
            idle_timeout,
            queue: VecDeque::new(),
            streamed_items: HashSet::new(),
            usage: None,
            error: None,
            pending_calls: Vec::new(),
            done: false,
            slot: Some(slot),
        }
    }

    pub fn thread_id(&self) -> &str {
        self.subscription.thread_id()
    }

    /// Gives the turn slot back while the turn waits for a client (a paused
    /// turn costs the worker no model time); [`CodexCore::resume`] takes one again.
    ///
    /// [`CodexCore::resume`]: super::CodexCore::resume
    pub fn release_slot(&mut self) {
        self.slot = None;
    }

    pub(super) fn set_slot(&mut self, slot: super::service::TurnSlot) {
        self.slot = Some(slot);
    }

    /// Answers a pending tool call with the client's result, so the turn goes
    /// on. `false` when no such call is pending or the worker is gone.
    pub async fn answer_tool_call(&mut self, call_id: &str, output: &str) -> bool {
        let Some(pos) = self.pending_calls.iter().position(|(_, c)| c == call_id) else {
            return false;
        };
        let (id, _) = self.pending_calls.remove(pos);
        let result = serde_json::json!({
            "contentItems": [{"type": "inputText", "text": output}],
            "success": true,
        });
        self.subscription
            .client()
            .respond(&id, Ok(result))
            .await
            .is_ok()
    }

    /// The next event; `None` after the last one.
    pub async fn next(&mut self) -> Option<TurnEvent> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                if matches!(event, TurnEvent::Finished | TurnEvent::Failed(_)) {
                    self.queue.clear();
                    self.done = true;
                    self.cleanup.finished = true;
                }
                return Some(event);
            }
            if self.done {
                return None;
            }
            let received = match self.idle_timeout {
                Some(limit) => match tokio::time::timeout(limit, self.subscription.recv()).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.fail(Failure::new(
                            FailureKind::Timeout,
                            format!("The model sent nothing for {} ms.", limit.as_millis()),
                        ));
                        continue;
                    }
                },
                None => self.subscription.recv().await,
            };
            match received {
                Ok(ThreadEvent::Notification { method, params }) => {
                    self.on_notification(&method, params)
                }
                Ok(ThreadEvent::Request(req)) => self.on_tool_call(req.id, req.params),
                Err(SubscriptionEnd::Overflow) => self.fail(Failure::new(
                    FailureKind::SlowClient,
                    "The client read the stream too slowly; the turn was stopped.",
                )),
                Err(SubscriptionEnd::WorkerGone(why)) => {
                    self.cleanup.finished = true; // nothing left to interrupt
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

    fn fail(&mut self, failure: Failure) {
        self.queue.push_back(TurnEvent::Failed(failure));
    }

    fn on_notification(&mut self, method: &str, params: Value) {
        match method {
            protocol::AGENT_MESSAGE_DELTA => {
                if let Ok(n) = serde_json::from_value::<AgentMessageDeltaNotification>(params) {
                    self.streamed_items.insert(n.item_id);
                    if !n.delta.is_empty() {
                        self.queue.push_back(TurnEvent::TextDelta(n.delta));
                    }
                }
            }
            protocol::ITEM_COMPLETED => {
                let Ok(n) = serde_json::from_value::<ItemNotification>(params) else {
                    return;
                };
                let item = &n.item;
                if item.get("type").and_then(Value::as_str) != Some("agentMessage") {
                    return;
                }
                let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
                if !self.streamed_items.contains(id) {
                    if let Some(text) = item
                        .get("text")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    {
                        self.queue.push_back(TurnEvent::TextDelta(text.to_owned()));
                    }
                }
            }
            protocol::TOKEN_USAGE_UPDATED => {
                if let Ok(n) = serde_json::from_value::<TokenUsageUpdatedNotification>(params) {
                    // The thread is this request's own, so its total is the turn's usage.
                    let t = n.token_usage.total;
                    let clamp = |v: i64| u64::try_from(v).unwrap_or(0);
                    self.usage = Some(Usage {
                        input_tokens: clamp(t.input_tokens),
                        cached_input_tokens: clamp(t.cached_input_tokens),
                        output_tokens: clamp(t.output_tokens),
                        reasoning_output_tokens: clamp(t.reasoning_output_tokens),
                        total_tokens: clamp(t.total_tokens),
                    });
                }
            }
            protocol::ERROR => {
                if let Ok(n) = serde_json::from_value::<ErrorNotification>(params) {
                    if !n.will_retry {
                        self.error = Some(Failure::from_turn_error(&n.error));
                    }
                }
            }
            protocol::TURN_COMPLETED => {
                let Ok(n) = serde_json::from_value::<TurnCompletedNotification>(params) else {
                    return;
                };
                self.cleanup.finished = true;
                match n.turn.status.as_deref() {
                    Some("completed") => {
                        if let Some(usage) = self.usage {
                            self.queue.push_back(TurnEvent::Usage(usage));
                        }
                        self.queue.push_back(TurnEvent::Finished);
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
                self.queue.push_back(TurnEvent::ToolCall(ToolCall {
                    call_id: call.call_id,
                    name,
                    arguments,
                }));
            }
            Err(e) => {
                tracing::warn!(error = %e, "malformed item/tool/call from the worker");
                let client = self.subscription.client().clone();
                tokio::spawn(async move {
                    let _ = client
                        .respond(&id, Err((-32602, "malformed tool call".into())))
                        .await;
                });
            }
        }
    }
}

impl Drop for TurnStream {
    fn drop(&mut self) {
        // Tool calls still pending mean the worker waits on us: the turn is not
        // over, whatever `finished` says, so the cleanup must interrupt it.
        if !self.pending_calls.is_empty() {
            self.cleanup.finished = false;
        }
    }
}

/// Releases a thread when dropped: interrupts its turn if it has not ended,
/// then unsubscribes so the worker unloads the thread.
pub(super) struct TurnCleanup {
    client: RpcClient,
    thread_id: String,
    turn_id: Option<String>,
    pub(super) finished: bool,
}

impl TurnCleanup {
    pub(super) fn new(client: RpcClient, thread_id: String) -> TurnCleanup {
        TurnCleanup {
            client,
            thread_id,
            turn_id: None,
            finished: false,
        }
    }

    pub(super) fn set_turn(&mut self, turn_id: String) {
        self.turn_id = Some(turn_id);
    }
}

impl Drop for TurnCleanup {
    fn drop(&mut self) {
        if self.client.is_closed() {
            return;
        }
        let client = self.client.clone();
        let thread_id = std::mem::take(&mut self.thread_id);
        let interrupt = (!self.finished).then(|| self.turn_id.take()).flatten();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Some(turn_id) = interrupt {
                let params = TurnInterruptParams { thread_id: thread_id.clone(), turn_id };
                match client.call::<TurnInterrupt>(&params).await {
                    Ok(_) => tracing::debug!(%thread_id, "interrupted an abandoned turn"),
                    Err(e) => tracing::debug!(%thread_id, error = %e, "interrupt failed (turn may have ended)"),
                }
            }
            if let Err(e) = client.call::<ThreadUnsubscribe>(&ThreadIdParams { thread_id }).await {
                tracing::debug!(error = %e, "thread/unsubscribe failed");
            }
        });
    }
}
