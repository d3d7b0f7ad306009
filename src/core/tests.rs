//! The core against an in-memory fake worker: how a thread's notifications
//! become turn events, and the turn lifecycle (interrupt, slots, park and
//! resume, the parked-turn store). Time is paused: no real sleeps.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::*;
use crate::protocol::UserInput;
use crate::rpc::fake::{pair, FakeWorker};
use crate::rpc::RpcClientConfig;
use crate::worker::SandboxMode;
use crate::worker::{WorkerHandle, WorkerPhase, WorkerStatus};

fn core_with(max_concurrency: usize, idle_timeout: Option<Duration>) -> (CodexCore, FakeWorker) {
    core_with_tools(max_concurrency, idle_timeout, false)
}

/// A core whose turns may (`true`) or may not use codex's host tools.
fn core_with_tools(
    max_concurrency: usize,
    idle_timeout: Option<Duration>,
    enable_codex_tools: bool,
) -> (CodexCore, FakeWorker) {
    core_from(max_concurrency, idle_timeout, enable_codex_tools, 0)
}

/// A core that keeps `warm_threads` started ahead per thread settings.
fn core_from(
    max_concurrency: usize,
    idle_timeout: Option<Duration>,
    enable_codex_tools: bool,
    warm_threads: usize,
) -> (CodexCore, FakeWorker) {
    let (client, worker) = pair(RpcClientConfig::new(Duration::from_secs(30)));
    let status = WorkerStatus {
        phase: WorkerPhase::Ready,
        client: Some(client),
        ..WorkerStatus::initial()
    };
    // The receiver keeps the last value after the sender goes.
    let (_tx, rx) = watch::channel(status);
    let core = CodexCore::new(
        WorkerHandle::new(rx),
        CoreConfig {
            cwd: "/tmp".into(),
            sandbox: SandboxMode::ReadOnly,
            enable_codex_tools,
            model_provider: None,
            idle_timeout,
            max_concurrency,
            queue_max: 0,
            queue_timeout: Duration::ZERO,
            in_flight: None,
            // The lifecycle tests play codex's side line by line with none;
            // warm threads have tests of their own.
            warm_threads,
        },
    );
    (core, worker)
}

fn request() -> TurnRequest {
    TurnRequest {
        model: "m".into(),
        input: vec![UserInput::text("hi")],
        ..TurnRequest::default()
    }
}

/// Plays codex's side of `thread/start` + `turn/start` for thread `t`, turn `u`.
async fn start(core: &CodexCore, worker: &mut FakeWorker, t: &str) -> TurnStream {
    let pending = tokio::spawn({
        let core = core.clone();
        async move { core.start_turn(request()).await }
    });
    answer_start(worker, t).await;
    pending.await.unwrap().expect("turn started")
}

/// The next message, skipping the unsubscribes of threads released earlier.
async fn read_skipping_unsubscribes(worker: &mut FakeWorker) -> Value {
    loop {
        let msg = worker.read().await;
        if msg["method"] != "thread/unsubscribe" {
            return msg;
        }
    }
}

/// Returns the `thread/start` params.
async fn answer_start(worker: &mut FakeWorker, t: &str) -> Value {
    let thread_start = read_skipping_unsubscribes(worker).await;
    assert_eq!(thread_start["method"], "thread/start");
    assert_eq!(thread_start["params"]["ephemeral"], true);
    worker
        .write(json!({"id": thread_start["id"], "result": {"thread": {"id": t}}}))
        .await;
    let turn_start = read_skipping_unsubscribes(worker).await;
    assert_eq!(turn_start["method"], "turn/start");
    assert_eq!(turn_start["params"]["threadId"], t);
    worker
        .write(json!({"id": turn_start["id"], "result": {"turn": {"id": format!("{t}-turn")}}}))
        .await;
    thread_start["params"].clone()
}

async fn notify(worker: &mut FakeWorker, method: &str, t: &str, extra: Value) {
    let mut params = json!({"threadId": t, "turnId": format!("{t}-turn")});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    worker
        .write(json!({"method": method, "params": params}))
        .await;
}

async fn complete(worker: &mut FakeWorker, t: &str, status: &str, error: Value) {
    worker
        .write(json!({"method": "turn/completed", "params": {"threadId": t,
            "turn": {"id": format!("{t}-turn"), "status": status, "error": error}}}))
        .await;
}

async fn tool_call(worker: &mut FakeWorker, t: &str, id: u64, call_id: &str) {
    worker
        .write(json!({"id": id, "method": "item/tool/call", "params": {
            "threadId": t, "turnId": format!("{t}-turn"), "callId": call_id,
            "tool": "lookup", "arguments": {"q": "x"}}}))
        .await;
}

#[tokio::test(start_paused = true)]
async fn notifications_become_turn_events_and_an_ended_turn_is_only_unsubscribed() {
    let (core, mut worker) = core_with(2, None);
    let mut turn = start(&core, &mut worker, "t1").await;
    let delta = |d: &str| json!({"itemId": "msg_1", "delta": d});
    notify(&mut worker, "item/agentMessage/delta", "t1", delta("Hel")).await;
    notify(&mut worker, "item/agentMessage/delta", "t1", delta("lo")).await;
    // The streamed item's completion repeats its text: not emitted twice.
    notify(
        &mut worker,
        "item/completed",
        "t1",
        json!({"item": {"type": "agentMessage", "id": "msg_1", "text": "Hello"}}),
    )
    .await;
    // An item that streamed no deltas arrives whole.
    notify(
        &mut worker,
        "item/completed",
        "t1",
        json!({"item": {"type": "agentMessage", "id": "msg_2", "text": " world"}}),
    )
    .await;
    notify(&mut worker, "thread/tokenUsage/updated", "t1", json!({"tokenUsage": {
        "total": {"totalTokens": 12, "inputTokens": 9, "cachedInputTokens": 1, "outputTokens": 3, "reasoningOutputTokens": 0},
        "last": {"totalTokens": 12, "inputTokens": 9, "cachedInputTokens": 1, "outputTokens": 3, "reasoningOutputTokens": 0}}})).await;
    complete(&mut worker, "t1", "completed", Value::Null).await;

    let mut events = Vec::new();
    while let Some(e) = turn.next().await {
        events.push(e);
    }
    assert_eq!(
        events,
        vec![
            TurnEvent::TextDelta("Hel".into()),
            TurnEvent::TextDelta("lo".into()),
            TurnEvent::TextDelta(" world".into()),
            TurnEvent::Usage(Box::new(Usage {
                input_tokens: 9,
                cached_input_tokens: 1,
                output_tokens: 3,
                reasoning_output_tokens: 0,
                total_tokens: 12
            })),
            TurnEvent::Finished,
        ]
    );
    drop(turn);
    // Given back at once, not when the release task gets to run: the next
    // request may need the slot right away.
    assert_eq!(core.free_slots(), 2);
    let next = worker.read().await;
    assert_eq!(
        next["method"], "thread/unsubscribe",
        "an ended turn is not interrupted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_turn_carries_the_classified_failure() {
    let (core, mut worker) = core_with(1, None);
    let mut turn = start(&core, &mut worker, "t1").await;
    complete(
        &mut worker,
        "t1",
        "failed",
        json!({"message": "slow down",
        "codexErrorInfo": {"responseStreamFailed": {"httpStatusCode": 429}}}),
    )
    .await;
    match turn.next().await {
        Some(TurnEvent::Failed(f)) => assert_eq!(f.kind, FailureKind::RateLimited),
        other => panic!("{other:?}"),
    }
    assert_eq!(turn.next().await, None);
}

/// `fut`, or a panic when it stalls (with time paused, at once): a refusal
/// that never comes fails the test instead of hanging it.
async fn soon<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("no event: the turn was not stopped")
}

#[tokio::test(start_paused = true)]
async fn a_turn_in_which_codex_starts_a_host_tool_fails_and_is_interrupted() {
    let (core, mut worker) = core_with(1, None);
    let mut turn = start(&core, &mut worker, "t1").await;
    notify(
        &mut worker,
        "item/agentMessage/delta",
        "t1",
        json!({"itemId": "m", "delta": "Sure"}),
    )
    .await;
    notify(
        &mut worker,
        "item/started",
        "t1",
        json!({"item": {"type": "fileChange", "id": "call_2", "status": "inProgress",
            "changes": [{"path": "/etc/hosts", "kind": {"type": "update"}, "diff": ""}]}}),
    )
    .await;
    assert_eq!(
        soon(turn.next()).await,
        Some(TurnEvent::TextDelta("Sure".into()))
    );
    match soon(turn.next()).await {
        Some(TurnEvent::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::HostToolRefused);
            assert!(f.message.contains("fileChange"), "{}", f.message);
            assert!(!f.message.contains("/etc/hosts"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(soon(turn.next()).await, None);
    // The reader drops the failed stream, as the API does: codex is told to stop.
    drop(turn);
    let interrupt = worker.read().await;
    assert_eq!(interrupt["method"], "turn/interrupt");
    assert_eq!(interrupt["params"]["turnId"], "t1-turn");
    worker
        .write(json!({"id": interrupt["id"], "result": {}}))
        .await;
    complete(&mut worker, "t1", "interrupted", Value::Null).await;
    assert_eq!(worker.read().await["method"], "thread/unsubscribe");
}

#[tokio::test(start_paused = true)]
async fn every_host_item_kind_is_refused_even_when_only_its_completion_arrives() {
    for kind in [
        "commandExecution",
        "mcpToolCall",
        "webSearch",
        "imageView",
        "imageGeneration",
        "collabAgentToolCall",
    ] {
        let (core, mut worker) = core_with(1, None);
        let mut turn = start(&core, &mut worker, "t1").await;
        notify(
            &mut worker,
            "item/completed",
            "t1",
            json!({"item": {"type": kind, "id": "x"}}),
        )
        .await;
        match soon(turn.next()).await {
            Some(TurnEvent::Failed(f)) => {
                assert_eq!(f.kind, FailureKind::HostToolRefused, "{kind}")
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn with_codex_tools_enabled_host_items_pass_and_threads_keep_their_environment() {
    let (core, mut worker) = core_with_tools(1, None, true);
    let pending = tokio::spawn({
        let core = core.clone();
        async move { core.start_turn(request()).await }
    });
    let params = answer_start(&mut worker, "t1").await;
    assert!(params.get("environments").is_none(), "{params}");
    let mut turn = pending.await.unwrap().unwrap();
    notify(
        &mut worker,
        "item/started",
        "t1",
        json!({"item": {"type": "commandExecution", "id": "c"}}),
    )
    .await;
    complete(&mut worker, "t1", "completed", Value::Null).await;
    assert_eq!(turn.next().await, Some(TurnEvent::Finished));
}

#[tokio::test(start_paused = true)]
async fn without_codex_tools_a_thread_has_no_environment_for_them() {
    let (core, mut worker) = core_with(1, None);
    let pending = tokio::spawn({
        let core = core.clone();
        async move { core.start_turn(request()).await }
    });
    let params = answer_start(&mut worker, "t1").await;
    assert_eq!(params["environments"], json!([]), "{params}");
    assert_eq!(
        params["config"]["features.code_mode_host"], false,
        "{params}"
    );
    pending.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_running_turn_is_interrupted_and_holds_its_slot_until_codex_confirms() {
    let (core, mut worker) = core_with(1, None);
    let turn = start(&core, &mut worker, "t1").await;
    assert_eq!(core.free_slots(), 0);
    drop(turn);
    let interrupt = worker.read().await;
    assert_eq!(interrupt["method"], "turn/interrupt");
    assert_eq!(
        interrupt["params"],
        json!({"threadId": "t1", "turnId": "t1-turn"})
    );
    worker
        .write(json!({"id": interrupt["id"], "result": {}}))
        .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(core.free_slots(), 0, "codex has not confirmed the end yet");
    complete(&mut worker, "t1", "interrupted", Value::Null).await;
    assert_eq!(worker.read().await["method"], "thread/unsubscribe");
    assert_eq!(core.free_slots(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_goes_away_during_turn_start_still_interrupts_its_turn() {
    let (core, mut worker) = core_with(1, None);
    let pending = tokio::spawn({
        let core = core.clone();
        async move { core.start_turn(request()).await }
    });
    let thread_start = worker.read().await;
    worker
        .write(json!({"id": thread_start["id"], "result": {"thread": {"id": "t1"}}}))
        .await;
    let turn_start = worker.read().await;
    // The client disconnects while `turn/start` is in flight.
    pending.abort();
    let _ = pending.await;
    worker
        .write(json!({"id": turn_start["id"], "result": {"turn": {"id": "t1-turn"}}}))
        .await;
    let interrupt = worker.read().await;
    assert_eq!(interrupt["method"], "turn/interrupt");
    assert_eq!(interrupt["params"]["turnId"], "t1-turn");
    assert_eq!(
        core.free_slots(),
        0,
        "the turn counts until codex says it ended"
    );
    worker
        .write(json!({"id": interrupt["id"], "result": {}}))
        .await;
    complete(&mut worker, "t1", "interrupted", Value::Null).await;
    assert_eq!(worker.read().await["method"], "thread/unsubscribe");
    assert_eq!(core.free_slots(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_idle_timeout_fails_the_turn_and_interrupts_it() {
    let (core, mut worker) = core_with(1, Some(Duration::from_secs(3)));
    let mut turn = start(&core, &mut worker, "t1").await;
    match turn.next().await {
        Some(TurnEvent::Failed(f)) => assert_eq!(f.kind, FailureKind::Timeout),
        other => panic!("{other:?}"),
    }
    drop(turn);
    assert_eq!(worker.read().await["method"], "turn/interrupt");
}

/// The idle limit counts from the start of each wait, though the stream
/// keeps one timer: a model that speaks every 2 s under a 3 s limit, or a
/// reader that comes back after a long pause, is not timed out; silence
/// for 3 s from the last wait is.
#[tokio::test(start_paused = true)]
async fn the_idle_limit_counts_from_each_wait_not_from_the_first() {
    let (core, mut worker) = core_with(1, Some(Duration::from_secs(3)));
    let mut turn = start(&core, &mut worker, "t1").await;
    let delta = |text: &str| json!({"itemId": "m1", "delta": text});
    for word in ["a", "b", "c", "d", "e"] {
        let reader = tokio::spawn(async move {
            let event = turn.next().await;
            (turn, event)
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        notify(&mut worker, "item/agentMessage/delta", "t1", delta(word)).await;
        let event;
        (turn, event) = reader.await.unwrap();
        assert!(
            matches!(&event, Some(TurnEvent::TextDelta(t)) if t == word),
            "{event:?}"
        );
    }
    // Nobody reads for 10 s; a wait that starts then has its own 3 s.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let reader = tokio::spawn(async move {
        let event = turn.next().await;
        (turn, event)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    notify(&mut worker, "item/agentMessage/delta", "t1", delta("f")).await;
    let (mut turn, event) = reader.await.unwrap();
    assert!(
        matches!(&event, Some(TurnEvent::TextDelta(t)) if t == "f"),
        "{event:?}"
    );
    // Then silence: the turn fails 3 s into the wait, not before.
    let waited = tokio::time::Instant::now();
    match turn.next().await {
        Some(TurnEvent::Failed(f)) => assert_eq!(f.kind, FailureKind::Timeout),
        other => panic!("{other:?}"),
    }
    assert_eq!(waited.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_parked_turn_frees_its_slot_and_resumes_with_the_clients_results() {
    let (core, mut worker) = core_with(1, None);
    let mut turn = start(&core, &mut worker, "t1").await;
    tool_call(&mut worker, "t1", 0, "call_1").await;
    match turn.next().await {
        Some(TurnEvent::ToolCall(c)) => {
            assert_eq!((c.call_id.as_str(), c.name.as_str()), ("call_1", "lookup"));
            assert_eq!(c.arguments, r#"{"q":"x"}"#);
        }
        other => panic!("{other:?}"),
    }
    let parked = turn.park(vec!["call_1".into()]).expect("waits on a call");
    assert_eq!(
        core.free_slots(),
        1,
        "a parked turn costs the worker nothing"
    );

    let mut turn = core
        .resume(parked, &[("call_1".into(), "42".into())])
        .await
        .unwrap()
        .expect("continued");
    assert_eq!(core.free_slots(), 0);
    let answer = worker.read().await;
    assert_eq!(answer["id"], 0);
    assert_eq!(
        answer["result"],
        json!({"contentItems": [{"type": "inputText", "text": "42"}], "success": true})
    );
    complete(&mut worker, "t1", "completed", Value::Null).await;
    assert_eq!(turn.next().await, Some(TurnEvent::Finished));
}

/// The run reads on after a call (the grace for more calls) and ends the
/// choice while that read waits; a client that takes longer than the idle
/// limit to run its tool still gets the whole limit once the turn resumes.
#[tokio::test(start_paused = true)]
async fn a_parked_turn_has_its_whole_idle_limit_again_when_it_resumes() {
    let (core, mut worker) = core_with(1, Some(Duration::from_secs(3)));
    let mut turn = start(&core, &mut worker, "t1").await;
    tool_call(&mut worker, "t1", 0, "call_1").await;
    assert!(matches!(turn.next().await, Some(TurnEvent::ToolCall(_))));
    let more = tokio::time::timeout(Duration::from_secs(1), turn.next()).await;
    assert!(more.is_err(), "no second call: {more:?}");
    let parked = turn.park(vec!["call_1".into()]).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut turn = core
        .resume(parked, &[("call_1".into(), "42".into())])
        .await
        .unwrap()
        .expect("continued");
    assert_eq!(worker.read().await["id"], 0, "the result went to codex");
    let reader = tokio::spawn(async move {
        let event = turn.next().await;
        (turn, event)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delta = json!({"itemId": "m1", "delta": "done"});
    notify(&mut worker, "item/agentMessage/delta", "t1", delta).await;
    let (_turn, event) = reader.await.unwrap();
    assert!(
        matches!(&event, Some(TurnEvent::TextDelta(t)) if t == "done"),
        "{event:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn results_for_calls_the_turn_does_not_wait_on_release_it() {
    let (core, mut worker) = core_with(1, None);
    let mut turn = start(&core, &mut worker, "t1").await;
    tool_call(&mut worker, "t1", 0, "call_1").await;
    assert!(matches!(turn.next().await, Some(TurnEvent::ToolCall(_))));
    let parked = turn.park(vec!["call_1".into()]).unwrap();
    let resumed = core
        .resume(parked, &[("call_9".into(), "?".into())])
        .await
        .unwrap();
    assert!(resumed.is_none(), "the caller rebuilds instead");
    assert_eq!(worker.read().await["method"], "turn/interrupt");
}

#[tokio::test(start_paused = true)]
async fn a_turn_that_waits_on_nothing_cannot_be_parked() {
    let (core, mut worker) = core_with(1, None);
    let turn = start(&core, &mut worker, "t1").await;
    assert!(turn.park(vec!["call_1".into()]).is_none());
}

/// The thread of the next `turn/interrupt` (answered), skipping unsubscribes.
async fn next_interrupt(worker: &mut FakeWorker) -> String {
    let msg = read_skipping_unsubscribes(worker).await;
    assert_eq!(msg["method"], "turn/interrupt", "{msg}");
    worker.write(json!({"id": msg["id"], "result": {}})).await;
    msg["params"]["threadId"].as_str().unwrap().to_owned()
}

/// A parked turn on thread `t`.
async fn parked(core: &CodexCore, worker: &mut FakeWorker, t: &str) -> ParkedTurn {
    let mut turn = start(core, worker, t).await;
    tool_call(worker, t, 0, "call_1").await;
    assert!(matches!(turn.next().await, Some(TurnEvent::ToolCall(_))));
    turn.park(vec!["call_1".into()]).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_store_expires_entries_and_evicts_the_oldest_when_full() {
    let (core, mut worker) = core_with(4, None);
    let store = ParkedTurns::new(Duration::from_secs(60), 2);
    let a = parked(&core, &mut worker, "a").await;
    store.park(1, a);
    tokio::time::advance(Duration::from_secs(10)).await;
    let b = parked(&core, &mut worker, "b").await;
    store.park(2, b);
    // Full: the entry closest to expiry (a) makes room, and is interrupted.
    let c = parked(&core, &mut worker, "c").await;
    store.park(3, c);
    assert_eq!(store.len(), 2);
    assert_eq!(next_interrupt(&mut worker).await, "a");
    assert!(store.take(1, ["call_1"]).is_none());
    // Results that do not cover the calls shown take nothing back, and
    // the client moved on: the turn is released.
    assert!(store.take(2, ["call_2"]).is_none());
    assert_eq!(next_interrupt(&mut worker).await, "b");
    assert_eq!(store.len(), 1);
    // An expired entry is not continued.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(store.take(3, ["call_1"]).is_none());
    assert_eq!(next_interrupt(&mut worker).await, "c");
    // The sweep releases what the client never came back for.
    let d = parked(&core, &mut worker, "d").await;
    store.park(4, d);
    tokio::time::advance(Duration::from_secs(61)).await;
    store.sweep();
    assert!(store.is_empty());
    assert_eq!(next_interrupt(&mut worker).await, "d");
}

#[tokio::test(start_paused = true)]
async fn a_live_entry_is_taken_once() {
    let (core, mut worker) = core_with(1, None);
    let store = ParkedTurns::new(Duration::from_secs(60), 8);
    let a = parked(&core, &mut worker, "a").await;
    store.park(7, a);
    let taken = store.take(7, ["call_1", "call_2"]).expect("covered");
    assert_eq!(taken.thread_id(), "a");
    assert!(store.take(7, ["call_1"]).is_none(), "taken once");
}

// === live threads ===

/// Plays codex's side of a `turn/start` on an existing thread `t`.
async fn answer_continue(worker: &mut FakeWorker, t: &str, turn: &str) -> Value {
    let turn_start = read_skipping_unsubscribes(worker).await;
    assert_eq!(
        turn_start["method"], "turn/start",
        "no new thread: {turn_start}"
    );
    assert_eq!(turn_start["params"]["threadId"], t);
    worker
        .write(json!({"id": turn_start["id"], "result": {"turn": {"id": turn}}}))
        .await;
    turn_start["params"].clone()
}

async fn usage(worker: &mut FakeWorker, t: &str, input: u64, output: u64) {
    let u = json!({"totalTokens": input + output, "inputTokens": input, "cachedInputTokens": 0,
                   "outputTokens": output, "reasoningOutputTokens": 0});
    notify(
        worker,
        "thread/tokenUsage/updated",
        t,
        json!({"tokenUsage": {"total": u, "last": u}}),
    )
    .await;
}

/// Nothing reaches the worker (time is paused: the wait ends at once).
async fn nothing_sent(worker: &mut FakeWorker) {
    assert!(
        tokio::time::timeout(Duration::from_millis(50), worker.read())
            .await
            .is_err(),
        "the worker got a message"
    );
}

#[tokio::test(start_paused = true)]
async fn a_completed_turn_keeps_its_thread_and_the_next_turn_reports_only_its_own_usage() {
    let (core, mut worker) = core_with(1, None);
    let mut first = start(&core, &mut worker, "t1").await;
    usage(&mut worker, "t1", 100, 10).await;
    complete(&mut worker, "t1", "completed", Value::Null).await;
    while first.next().await.is_some() {}
    let idle = first
        .into_idle()
        .expect("a completed turn leaves its thread");
    assert_eq!((idle.thread_id(), idle.turns()), ("t1", 1));
    // Kept: no unsubscribe, no interrupt, and the slot is free.
    nothing_sent(&mut worker).await;
    assert_eq!(core.free_slots(), 1);

    let pending = tokio::spawn({
        let core = core.clone();
        async move {
            core.continue_thread(
                idle,
                TurnRequest {
                    model: "m".into(),
                    input: vec![UserInput::text("next")],
                    ..TurnRequest::default()
                },
            )
            .await
        }
    });
    let params = answer_continue(&mut worker, "t1", "t1-turn2").await;
    assert_eq!(params["input"][0]["text"], "next");
    let mut second = pending.await.unwrap().expect("continued");
    // A late completion of the earlier turn is not this turn's end.
    complete(&mut worker, "t1", "completed", Value::Null).await;
    usage(&mut worker, "t1", 230, 25).await;
    worker
        .write(
            json!({"method": "turn/completed", "params": {"threadId": "t1",
            "turn": {"id": "t1-turn2", "status": "completed"}}}),
        )
        .await;
    let mut events = Vec::new();
    while let Some(e) = second.next().await {
        events.push(e);
    }
    assert_eq!(
        events,
        vec![
            TurnEvent::Usage(Box::new(Usage {
                input_tokens: 130,
                cached_input_tokens: 0,
                output_tokens: 15,
                reasoning_output_tokens: 0,
                total_tokens: 145
            })),
            TurnEvent::Finished
        ]
    );
    assert_eq!(second.into_idle().expect("kept again").turns(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_turn_leaves_no_thread_to_continue() {
    let (core, mut worker) = core_with(1, None);
    let mut turn = start(&core, &mut worker, "t1").await;
    complete(&mut worker, "t1", "failed", json!({"message": "boom"})).await;
    while turn.next().await.is_some() {}
    assert!(turn.into_idle().is_none());
    assert_eq!(worker.read().await["method"], "thread/unsubscribe");
}

fn idle(client: &crate::rpc::RpcClient, t: &str) -> IdleThread {
    IdleThread {
        client: client.clone(),
        thread_id: t.into(),
        usage_total: Usage::default(),
        turns: 1,
    }
}

#[tokio::test(start_paused = true)]
async fn live_threads_hand_a_head_to_its_owner_once_and_tell_forks_from_misses() {
    let (core, mut worker) = core_with(1, None);
    let client = core.pool().handle(0).ready().unwrap().0;
    let threads = LiveThreads::new(4, Duration::from_secs(60), ThreadMetrics::default());
    threads.keep("h1".into(), "alice".into(), 7, idle(&client, "t1"));
    // Another key, another shape: not theirs to continue, and left in place.
    assert!(matches!(threads.take("h1", "bob", 7), Taken::None));
    assert!(matches!(threads.take("h1", "alice", 8), Taken::None));
    let Taken::Thread(t) = threads.take("h1", "alice", 7) else {
        panic!("the owner continues its head")
    };
    assert_eq!(t.thread_id(), "t1");
    // Taken: a second request for the same head forks.
    assert!(matches!(threads.take("h1", "alice", 7), Taken::MovedOn));
    assert!(matches!(threads.take("never", "alice", 7), Taken::None));
    threads.keep("h2".into(), "alice".into(), 7, t);
    assert!(matches!(threads.take("h1", "alice", 7), Taken::MovedOn));
    assert_eq!(threads.len(), 1);
    nothing_sent(&mut worker).await;
    // Forgetting a head unloads its thread.
    threads.forget("h2");
    let msg = worker.read().await;
    assert_eq!(msg["method"], "thread/unsubscribe");
    assert_eq!(msg["params"]["threadId"], "t1");
}

#[tokio::test(start_paused = true)]
async fn live_threads_unload_the_least_recently_used_and_the_idle() {
    let (core, mut worker) = core_with(1, None);
    let client = core.pool().handle(0).ready().unwrap().0;
    let metrics = ThreadMetrics::default();
    let threads = LiveThreads::new(2, Duration::from_secs(60), metrics.clone());
    threads.keep("a".into(), String::new(), 0, idle(&client, "ta"));
    tokio::time::advance(Duration::from_secs(1)).await;
    threads.keep("b".into(), String::new(), 0, idle(&client, "tb"));
    tokio::time::advance(Duration::from_secs(1)).await;
    threads.keep("c".into(), String::new(), 0, idle(&client, "tc"));
    let msg = worker.read().await;
    assert_eq!(msg["params"]["threadId"], "ta", "the oldest goes first");
    assert_eq!(threads.len(), 2);
    // An evicted head is a miss (rebuild), not a fork.
    assert!(matches!(threads.take("a", "", 0), Taken::None));
    assert_eq!(metrics.live.get(), 2);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(threads.sweep(), 1, "b was idle 60 s");
    assert_eq!(worker.read().await["params"]["threadId"], "tb");
    assert_eq!(threads.len(), 1);
    let evicted: u64 = ["capacity", "idle"]
        .iter()
        .map(|r| {
            metrics
                .evictions
                .get_or_create(&EvictionLabels { reason: r })
                .get()
        })
        .sum();
    assert_eq!(evicted, 2);
}

/// A core over a pool of `n` fake workers.
fn pool_core(n: usize) -> (CodexCore, Vec<FakeWorker>) {
    let mut handles = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..n {
        let (client, worker) = pair(RpcClientConfig::new(Duration::from_secs(30)));
        let (tx, rx) = watch::channel(WorkerStatus {
            phase: WorkerPhase::Ready,
            client: Some(client),
            ..WorkerStatus::initial()
        });
        // The receiver keeps the last value after the sender goes.
        drop(tx);
        handles.push(WorkerHandle::new(rx));
        workers.push(worker);
    }
    let (single, _) = core_with(8, None);
    let config = single.inner_config();
    (
        CodexCore::new(crate::worker::WorkerPool::from_handles(handles), config),
        workers,
    )
}

fn in_flight(core: &CodexCore) -> Vec<usize> {
    core.pool()
        .views()
        .iter()
        .map(|v| v.turns_in_flight)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_pool_places_new_turns_on_the_least_loaded_worker_and_continuations_on_their_own() {
    let (core, mut w) = pool_core(2);
    // A tie goes to worker 0; the next turn to the idle worker 1.
    let mut first = start(&core, &mut w[0], "a1").await;
    let second = start(&core, &mut w[1], "b1").await;
    assert_eq!(in_flight(&core), [1, 1]);
    complete(&mut w[0], "a1", "completed", Value::Null).await;
    while first.next().await.is_some() {}
    let kept = first.into_idle().expect("kept");
    assert_eq!(in_flight(&core), [0, 1]);
    // Worker 0 is now the less loaded one.
    let third = start(&core, &mut w[0], "a2").await;
    drop(second);
    next_interrupt(&mut w[1]).await;
    // The slot (and the lease) go when codex confirms the end.
    complete(&mut w[1], "b1", "interrupted", Value::Null).await;
    soon(async {
        while in_flight(&core) != [1, 0] {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(w[1].read().await["method"], "thread/unsubscribe");
    // The kept thread lives in worker 0: its next turn goes there, though
    // worker 1 is idle.
    let pending = tokio::spawn({
        let core = core.clone();
        async move { core.continue_thread(kept, request()).await }
    });
    answer_continue(&mut w[0], "a1", "a1-turn2").await;
    let continued = pending.await.unwrap().expect("continued");
    nothing_sent(&mut w[1]).await;
    assert_eq!(in_flight(&core), [2, 0]);
    drop((third, continued));
}

#[tokio::test(start_paused = true)]
async fn two_threads_ending_on_the_same_head_keep_the_newer() {
    let (core, mut worker) = core_with(1, None);
    let client = core.pool().handle(0).ready().unwrap().0;
    let threads = LiveThreads::new(4, Duration::from_secs(60), ThreadMetrics::default());
    threads.keep("same".into(), String::new(), 0, idle(&client, "old"));
    threads.keep("same".into(), String::new(), 0, idle(&client, "new"));
    assert_eq!(threads.len(), 1);
    assert_eq!(worker.read().await["params"]["threadId"], "old");
    let Taken::Thread(t) = threads.take("same", "", 0) else {
        panic!("held")
    };
    assert_eq!(t.thread_id(), "new");
}

/// Every event of `turn`, read in a task of its own (a retry's start needs
/// the test to answer another worker meanwhile).
fn read_all(mut turn: TurnStream) -> tokio::task::JoinHandle<Vec<TurnEvent>> {
    tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = turn.next().await {
            events.push(e);
        }
        events
    })
}

fn usage_limit() -> Value {
    json!({"message": "You've hit your usage limit.", "codexErrorInfo": "usageLimitExceeded"})
}

#[tokio::test(start_paused = true)]
async fn a_fresh_turn_out_of_quota_starts_again_on_another_worker_before_the_reader_sees_it() {
    let (core, mut w) = pool_core(2);
    let turn = start(&core, &mut w[0], "a1").await;
    let reader = read_all(turn);
    complete(&mut w[0], "a1", "failed", usage_limit()).await;
    // The same request, on worker 1, and worker 0's thread released.
    let params = answer_start(&mut w[1], "b1").await;
    assert_eq!(params["model"], "m");
    notify(
        &mut w[1],
        "item/agentMessage/delta",
        "b1",
        json!({"itemId": "m1", "delta": "Hello"}),
    )
    .await;
    complete(&mut w[1], "b1", "completed", Value::Null).await;
    let events = soon(reader).await.unwrap();
    assert_eq!(
        events,
        [TurnEvent::TextDelta("Hello".into()), TurnEvent::Finished]
    );
    assert_eq!(w[0].read().await["method"], "thread/unsubscribe");
    let views = core.pool().views();
    assert!(views[0].quota_resets_at.is_some(), "worker 0 marked");
    assert!(views[1].quota_resets_at.is_none());
    assert_eq!(core.pool().retries(), (1, 0));
    // Each lease went with its turn.
    assert_eq!(in_flight(&core), [0, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_turn_that_already_gave_output_or_has_nowhere_to_go_reports_its_failure() {
    let (core, mut w) = pool_core(2);
    // Text reached the reader first: the answer is this turn's, failure included.
    let mut turn = start(&core, &mut w[0], "a1").await;
    notify(
        &mut w[0],
        "item/agentMessage/delta",
        "a1",
        json!({"itemId": "m1", "delta": "Hel"}),
    )
    .await;
    assert_eq!(
        soon(turn.next()).await,
        Some(TurnEvent::TextDelta("Hel".into()))
    );
    complete(&mut w[0], "a1", "failed", usage_limit()).await;
    match soon(turn.next()).await {
        Some(TurnEvent::Failed(f)) => assert_eq!(f.kind, FailureKind::QuotaExceeded),
        other => panic!("{other:?}"),
    }
    drop(turn);
    assert_eq!(w[0].read().await["method"], "thread/unsubscribe");
    nothing_sent(&mut w[1]).await;

    // Worker 0 is out of quota now; worker 1 runs out too: no one is left.
    let turn = start(&core, &mut w[1], "b1").await;
    let reader = read_all(turn);
    complete(&mut w[1], "b1", "failed", usage_limit()).await;
    let events = soon(reader).await.unwrap();
    assert!(
        matches!(&events[..], [TurnEvent::Failed(f)] if f.kind == FailureKind::QuotaExceeded),
        "{events:?}"
    );
    nothing_sent(&mut w[0]).await;
    assert_eq!(core.pool().retries(), (0, 0));

    // A pool of one keeps no copy of the request and has nowhere to go.
    let (core, mut worker) = core_with(1, None);
    let mut turn = start(&core, &mut worker, "t1").await;
    complete(
        &mut worker,
        "t1",
        "failed",
        json!({"message": "401", "codexErrorInfo": {"httpConnectionFailed": {"httpStatusCode": 401}}}),
    )
    .await;
    match soon(turn.next()).await {
        Some(TurnEvent::Failed(f)) => assert_eq!(f.kind, FailureKind::LoginRequired),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_kept_thread_on_a_worker_out_of_quota_is_left_for_a_rebuild_elsewhere() {
    let (core, mut w) = pool_core(2);
    let mut first = start(&core, &mut w[0], "a1").await;
    complete(&mut w[0], "a1", "completed", Value::Null).await;
    while first.next().await.is_some() {}
    let kept = first.into_idle().expect("kept");
    // Another conversation finds worker 0 out of quota (and is served by 1).
    let turn = start(&core, &mut w[0], "a2").await;
    let reader = read_all(turn);
    complete(&mut w[0], "a2", "failed", usage_limit()).await;
    answer_start(&mut w[1], "b1").await;
    complete(&mut w[1], "b1", "completed", Value::Null).await;
    soon(reader).await.unwrap();
    // The kept thread is not continued there: the caller rebuilds it.
    match core.continue_thread(kept, request()).await {
        Err(f) => assert_eq!(f.kind, FailureKind::WorkerGone, "{f:?}"),
        Ok(_) => panic!("continued on a worker out of quota"),
    }
    assert_eq!(w[0].read().await["method"], "thread/unsubscribe", "a2");
    assert_eq!(
        w[0].read().await["method"],
        "thread/unsubscribe",
        "a1 released"
    );
    nothing_sent(&mut w[0]).await;
}

#[tokio::test(start_paused = true)]
async fn tool_results_for_a_turn_parked_on_a_worker_out_of_quota_start_afresh() {
    let (core, mut w) = pool_core(2);
    let parked_turn = parked(&core, &mut w[0], "a1").await;
    // A fresh turn finds worker 0 out of quota (and is served by 1).
    let turn = start(&core, &mut w[0], "a2").await;
    let reader = read_all(turn);
    complete(&mut w[0], "a2", "failed", usage_limit()).await;
    answer_start(&mut w[1], "b1").await;
    complete(&mut w[1], "b1", "completed", Value::Null).await;
    soon(reader).await.unwrap();
    assert_eq!(w[0].read().await["method"], "thread/unsubscribe", "a2");
    // The results are not sent to worker 0, whose model call would fail:
    // the caller starts afresh, and the parked turn is interrupted.
    let outputs = [("call_1".to_owned(), "42".to_owned())];
    let resumed = core.resume(parked_turn, &outputs).await.expect("no error");
    assert!(resumed.is_none());
    assert_eq!(next_interrupt(&mut w[0]).await, "a1");
}

#[tokio::test(start_paused = true)]
async fn a_continuation_out_of_quota_stays_on_its_worker() {
    let (core, mut w) = pool_core(2);
    let mut first = start(&core, &mut w[0], "a1").await;
    complete(&mut w[0], "a1", "completed", Value::Null).await;
    while first.next().await.is_some() {}
    let kept = first.into_idle().expect("kept");
    let pending = tokio::spawn({
        let core = core.clone();
        async move { core.continue_thread(kept, request()).await }
    });
    answer_continue(&mut w[0], "a1", "a1-turn2").await;
    let continued = pending.await.unwrap().expect("continued");
    let reader = read_all(continued);
    w[0].write(
        json!({"method": "turn/completed", "params": {"threadId": "a1",
        "turn": {"id": "a1-turn2", "status": "failed", "error": usage_limit()}}}),
    )
    .await;
    let events = soon(reader).await.unwrap();
    assert!(
        matches!(&events[..], [TurnEvent::Failed(f)] if f.kind == FailureKind::QuotaExceeded),
        "{events:?}"
    );
    nothing_sent(&mut w[1]).await;
}

// === warm threads ===

/// Answers the `thread/start` of a warm thread (sent right after a
/// `turn/start`) with thread `w`; returns its params.
async fn answer_warm_start(worker: &mut FakeWorker, w: &str) -> Value {
    let start = read_skipping_unsubscribes(worker).await;
    assert_eq!(start["method"], "thread/start", "a warm thread is started");
    worker
        .write(json!({"id": start["id"], "result": {"thread": {"id": w}}}))
        .await;
    start["params"].clone()
}

/// Lets the reader task file the warm threads' answers (up to `n` ready).
async fn warm_ready_soon(core: &CodexCore, n: usize) {
    for _ in 0..100 {
        if core.warm_ready() == n {
            break;
        }
        tokio::task::yield_now().await;
    }
}

/// Runs a started turn to its end and drops it.
async fn finish(mut turn: TurnStream, worker: &mut FakeWorker, t: &str) {
    complete(worker, t, "completed", Value::Null).await;
    while let Some(event) = soon(turn.next()).await {
        if event == TurnEvent::Finished {
            break;
        }
    }
}

#[tokio::test]
async fn a_new_turn_with_the_same_settings_starts_on_a_warm_thread() {
    let (core, mut worker) = core_from(4, None, false, 1);
    // The first turn starts its own thread, and one more for the next turn.
    let turn = start(&core, &mut worker, "t1").await;
    let first_params = answer_warm_start(&mut worker, "w1").await;
    finish(turn, &mut worker, "t1").await;
    warm_ready_soon(&core, 1).await;
    assert_eq!(core.warm_ready(), 1);

    // The second goes straight to `turn/start` on the warm thread...
    let pending = tokio::spawn({
        let core = core.clone();
        async move { core.start_turn(request()).await }
    });
    let turn_start = read_skipping_unsubscribes(&mut worker).await;
    assert_eq!(turn_start["method"], "turn/start", "no thread/start first");
    assert_eq!(turn_start["params"]["threadId"], "w1");
    worker
        .write(json!({"id": turn_start["id"], "result": {"turn": {"id": "w1-turn"}}}))
        .await;
    let turn = pending.await.unwrap().expect("turn started");
    // ...and the thread that replaces it has the same settings.
    let refill_params = answer_warm_start(&mut worker, "w2").await;
    assert_eq!(refill_params, first_params);
    finish(turn, &mut worker, "w1").await;
}

#[tokio::test]
async fn other_settings_do_not_take_a_warm_thread() {
    let (core, mut worker) = core_from(4, None, false, 1);
    let turn = start(&core, &mut worker, "t1").await;
    answer_warm_start(&mut worker, "w1").await;
    finish(turn, &mut worker, "t1").await;
    // Other instructions: a thread of its own, and a warm one for them.
    let pending = tokio::spawn({
        let core = core.clone();
        async move {
            core.start_turn(TurnRequest {
                instructions: Some("be brief".into()),
                ..request()
            })
            .await
        }
    });
    let params = answer_start(&mut worker, "t2").await;
    assert_eq!(params["developerInstructions"], "be brief");
    let turn = pending.await.unwrap().expect("turn started");
    let warm = answer_warm_start(&mut worker, "w2").await;
    assert_eq!(warm["developerInstructions"], "be brief");
    finish(turn, &mut worker, "t2").await;
    warm_ready_soon(&core, 2).await;
    assert_eq!(core.warm_ready(), 2, "one warm thread per settings");
}

#[tokio::test]
async fn with_no_warm_threads_every_turn_starts_its_own() {
    let (core, mut worker) = core_with(4, None);
    for t in ["t1", "t2"] {
        let turn = start(&core, &mut worker, t).await;
        finish(turn, &mut worker, t).await;
    }
    // Only the last thread's release follows (the first one's rode along
    // with the second turn's start): no thread started ahead.
    let msg = worker.read().await;
    assert_eq!(msg["method"], "thread/unsubscribe");
    assert_eq!(msg["params"]["threadId"], "t2");
    nothing_sent(&mut worker).await;
}
