//! [`CodexCore`]: starts threads and turns on the ready worker, and resumes
//! parked ones.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::failure::{Failure, FailureKind};
use super::finish::FinishOnDrop;
use super::slot::{TurnSlot, TurnSlots};
use super::stream::ParkedTurn;
use super::stream::{Restart, Retry, TurnStream};
use super::threads::IdleThread;
use super::turn::TurnRequest;
use super::warm::{WarmSlot, WarmThreads};
use crate::protocol::{
    DynamicToolSpec, Model, ThreadInjectItems, ThreadInjectItemsParams, ThreadStart, TurnStart,
    TurnStartParams,
};
use crate::rpc::RpcClient;
use crate::worker::SandboxMode;
use crate::worker::{Picked, WorkerPool, HOST_TOOL_FEATURES};

/// How the core sets up threads.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The thread's working directory.
    pub cwd: String,
    pub sandbox: SandboxMode,
    /// Let the model use codex's own host tools (off by default).
    pub enable_codex_tools: bool,
    pub model_provider: Option<String>,
    /// Longest silence from the worker before a turn fails (`None`: no limit).
    pub idle_timeout: Option<Duration>,
    /// Turns running at once (`WORKER_MAX_CONCURRENCY`).
    pub max_concurrency: usize,
    /// Requests that may wait for a slot (`WORKER_QUEUE_MAX`), and for how long.
    pub queue_max: usize,
    pub queue_timeout: Duration,
    /// Turns in flight, for the metrics endpoint.
    pub in_flight: Option<prometheus_client::metrics::gauge::Gauge>,
    /// Threads kept started ahead of demand per worker and per exact
    /// thread settings (`PROXY_WARM_THREADS`; 0: none, every turn starts
    /// its own thread).
    pub warm_threads: usize,
}

/// Runs API requests on the worker. Cheap to clone.
#[derive(Clone)]
pub struct CodexCore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The workers; a new turn goes to the least loaded ready one.
    pool: WorkerPool,
    config: CoreConfig,
    /// Per-thread overrides, built and encoded once.
    thread_config: Box<RawValue>,
    slots: TurnSlots,
    warm: WarmThreads,
}

impl CodexCore {
    pub fn new(pool: impl Into<WorkerPool>, config: CoreConfig) -> CodexCore {
        let thread_config =
            serde_json::value::to_raw_value(&thread_config(config.enable_codex_tools))
                .expect("a map of strings to JSON values encodes");
        let slots = TurnSlots::new(
            config.max_concurrency,
            config.queue_max,
            config.queue_timeout,
            config.in_flight.clone(),
        );
        let warm = WarmThreads::new(config.warm_threads);
        CodexCore {
            inner: Arc::new(Inner {
                pool: pool.into(),
                config,
                thread_config,
                slots,
                warm,
            }),
        }
    }

    pub fn pool(&self) -> &WorkerPool {
        &self.inner.pool
    }

    /// The turn slots, for the exec backend: one limit for both backends'
    /// turns, so a canary split cannot run more than it.
    pub(crate) fn turn_slots(&self) -> TurnSlots {
        self.inner.slots.clone()
    }

    /// The models a ready worker listed at its handshake.
    pub fn models(&self) -> Result<Arc<Vec<Model>>, Failure> {
        self.inner.pool.models().map_err(not_ready)
    }

    /// Starts one turn on a fresh ephemeral thread.
    ///
    /// The start is awaited in the caller's task; a caller that goes away
    /// while `turn/start` is in flight (a client that disconnects) hands the
    /// rest to a task of its own ([`FinishOnDrop`]), so the turn is not
    /// stranded: the finished stream finds nobody to take it and its drop
    /// interrupts the turn. Dropping the returned stream before the
    /// turn ends interrupts it too, and the thread is released either way.
    ///
    /// In a pool of more than one worker, the stream keeps a copy of the
    /// request, so that a turn whose worker turns out to be out of quota or
    /// without a valid login starts again on another (see
    /// [`TurnStream::poll_next`]); a pool of one has nowhere else to go.
    pub async fn start_turn(&self, req: TurnRequest) -> Result<TurnStream, Failure> {
        let picked = self.inner.pool.pick().map_err(not_ready)?;
        let retry = self.inner.pool.len() > 1;
        self.start_picked(picked, req, retry).await
    }

    /// A fresh turn's second start (the stream's [`Retry`]): the worker it
    /// failed on (`from`) is out of rotation already, so the pick finds
    /// another ready one, or none (`None`: the failure stands).
    fn restart_elsewhere(
        self,
        why: FailureKind,
        from: Option<usize>,
        req: TurnRequest,
    ) -> Option<Restart> {
        let picked = self.inner.pool.pick().ok()?;
        let quota = why == FailureKind::QuotaExceeded;
        self.inner.pool.count_retry(quota);
        tracing::info!(
            from,
            to = picked.lease.worker(),
            reason = if quota { "quota" } else { "login" },
            "retrying a turn on another worker before anything reached the client"
        );
        Some(tokio::spawn(crate::trace_buffer::carry(async move {
            self.start_picked(picked, req, false).await
        })))
    }

    /// [`CodexCore::start_turn`] on the worker already picked.
    pub(super) async fn start_picked(
        &self,
        picked: Picked,
        req: TurnRequest,
        retry: bool,
    ) -> Result<TurnStream, Failure> {
        let retry = retry.then(|| {
            let (core, req) = (self.clone(), req.clone());
            Box::new(move |why, from| core.restart_elsewhere(why, from, req)) as Retry
        });
        let client = picked.client;
        let slot = self
            .inner
            .slots
            .acquire()
            .await?
            .with_lease(Some(picked.lease));
        let core = self.clone();
        FinishOnDrop::new(async move {
            core.start_on(client, slot, req)
                .await
                .map(|s| s.with_retry(retry))
        })
        .await
    }

    async fn start_on(
        &self,
        client: RpcClient,
        slot: TurnSlot,
        req: TurnRequest,
    ) -> Result<TurnStream, Failure> {
        let config = &self.inner.config;
        let params = ThreadStartView {
            model: &req.model,
            model_provider: config.model_provider.as_deref(),
            cwd: &config.cwd,
            approval_policy: "never",
            sandbox: config.sandbox.as_str(),
            developer_instructions: req.instructions.as_deref(),
            ephemeral: true,
            config: &self.inner.thread_config,
            dynamic_tools: &req.tools,
            // No environment for codex's own tools: a forced `apply_patch`
            // then fails before it reads the file it names, whatever the path
            // (measured), should the model still reach one.
            environments: (!config.enable_codex_tools).then_some(&[]),
        };
        let params = serde_json::value::to_raw_value(&params).map_err(|e| {
            Failure::new(
                FailureKind::Upstream,
                format!("The thread settings could not be encoded: {e}"),
            )
        })?;
        // A thread started ahead for these exact settings saves a round
        // trip; the one that replaces it starts along with this turn.
        let warm = &self.inner.warm;
        let warm_slot = warm.enabled().then(|| warm.slot(&client, &params));
        let thread_id = match warm_slot.as_ref().and_then(|w| warm.take(w)) {
            Some(thread_id) => thread_id,
            None => {
                client
                    .call_raw::<ThreadStart>(&params)
                    .await
                    .map_err(|e| Failure::from_rpc(&e))?
                    .thread
                    .id
            }
        };
        let refill = warm_slot.map(|w| (w, params));
        self.turn_on(client, slot, thread_id, req, None, refill)
            .await
    }

    /// Starts the next turn of a conversation on the thread that holds it
    /// (taken from `LiveThreads`): only the new messages go to codex. Runs
    /// in the caller's task, handed to a task of its own if the caller goes
    /// away, for the same reason as [`CodexCore::start_turn`].
    /// The request's model, instructions and tools are the thread's already
    /// (the caller matched them); its history and input are what is new.
    pub async fn continue_thread(
        &self,
        thread: IdleThread,
        req: TurnRequest,
    ) -> Result<TurnStream, Failure> {
        // The thread lives in one worker process: the turn goes there (its
        // own client), whatever the others' load. Gone with its process:
        // the caller rebuilds the conversation on another worker.
        if thread.is_gone() {
            return Err(Failure::new(
                FailureKind::WorkerGone,
                "The worker that held this conversation went away.",
            ));
        }
        // Its account is out of quota or its login was refused: another
        // worker rebuilds the conversation instead (the same answer as for
        // a worker that went away).
        if !self.inner.pool.can_continue_on(&thread.client) {
            return Err(Failure::new(
                FailureKind::WorkerGone,
                "The worker that holds this conversation cannot take turns now.",
            ));
        }
        let slot = self.inner.slots.acquire().await?;
        let (thread_client, thread_id, total, turns) = thread.into_parts();
        let slot = slot.with_lease(self.inner.pool.lease_for(&thread_client));
        let core = self.clone();
        FinishOnDrop::new(async move {
            core.turn_on(
                thread_client,
                slot,
                thread_id,
                req,
                Some((total, turns)),
                None,
            )
            .await
        })
        .await
    }

    /// Injects the request's history into `thread_id` and starts its turn.
    /// `continuing`: the thread's earlier token total and turn count.
    /// `refill`: a warm thread to start for the next request with these
    /// thread settings, sent right after `turn/start` in the same write
    /// (after: the line this turn waits for goes first).
    async fn turn_on(
        &self,
        client: RpcClient,
        slot: TurnSlot,
        thread_id: String,
        req: TurnRequest,
        continuing: Option<(crate::core::Usage, u32)>,
        refill: Option<(WarmSlot, Box<serde_json::value::RawValue>)>,
    ) -> Result<TurnStream, Failure> {
        let config = &self.inner.config;
        let subscription = client.subscribe(&thread_id);
        // Until the turn exists, a failure releases the thread here; after
        // it, the stream's drop does.
        let unsubscribe = super::threads::unsubscribe_detached;
        if !req.history.is_empty() {
            let params = ThreadInjectItemsParams {
                thread_id: thread_id.clone(),
                items: req.history,
            };
            if let Err(e) = client.call::<ThreadInjectItems>(&params).await {
                drop(subscription);
                unsubscribe(&client, thread_id);
                return Err(Failure::from_rpc(&e));
            }
        }
        let params = TurnStartParams {
            thread_id: thread_id.clone(),
            input: req.input,
            effort: req.effort,
            output_schema: req.output_schema,
        };
        if let Some((warm_slot, thread_params)) = refill {
            // Deferred: it rides right after this turn's `turn/start`.
            self.inner.warm.refill(&warm_slot, &client, &thread_params);
        }
        match client.call::<TurnStart>(&params).await {
            Ok(turn) => {
                let stream = TurnStream::new(
                    subscription,
                    turn.turn.id,
                    config.idle_timeout,
                    slot,
                    !config.enable_codex_tools,
                );
                Ok(match continuing {
                    Some((total, turns)) => stream.continuing(total, turns),
                    None => stream,
                })
            }
            Err(e) => {
                drop(subscription);
                unsubscribe(&client, thread_id);
                Err(Failure::from_rpc(&e))
            }
        }
    }

    /// Continues a parked turn with the client's tool results
    /// (`(call_id, output)` pairs): takes a turn slot again and answers the
    /// calls codex waits on. `Ok(None)` when the results do not answer calls
    /// this turn waits on, or the worker is gone: the turn is dropped
    /// (interrupted) and the caller starts afresh.
    pub async fn resume(
        &self,
        parked: ParkedTurn,
        outputs: &[(String, String)],
    ) -> Result<Option<TurnStream>, Failure> {
        let mut turn = parked.turn;
        if !turn.waits_on_all(outputs.iter().map(|(id, _)| id.as_str())) {
            return Ok(None);
        }
        // A worker out of quota or without a valid login would fail the
        // turn once it calls the model with the results: the caller starts
        // afresh on a picked worker instead.
        if turn
            .client()
            .is_some_and(|c| !self.inner.pool.can_continue_on(c))
        {
            return Ok(None);
        }
        // Back to the worker that holds the parked turn (its own client).
        let lease = turn.client().and_then(|c| self.inner.pool.lease_for(c));
        let slot = self.inner.slots.acquire().await?.with_lease(lease);
        if !turn.answer(slot, outputs).await {
            return Ok(None);
        }
        tracing::debug!(
            thread = turn.thread_id(),
            calls = outputs.len(),
            "continuing a turn with tool results"
        );
        Ok(Some(turn))
    }
}

#[cfg(test)]
impl CodexCore {
    /// Turn slots free now.
    pub(super) fn free_slots(&self) -> usize {
        self.inner.slots.available()
    }

    /// Warm threads ready now.
    pub(super) fn warm_ready(&self) -> usize {
        self.inner.warm.ready()
    }

    pub(super) fn inner_config(&self) -> CoreConfig {
        self.inner.config.clone()
    }
}

fn not_ready(e: crate::worker::NotReady) -> Failure {
    if let Some(at) = e.quota_resets_at {
        // Every worker that could take the turn is out of quota: the
        // client's to wait for (429 `insufficient_quota`), not an outage.
        let now = crate::calendar::unix_now();
        return Failure::new(
            FailureKind::QuotaExceeded,
            format!("You exceeded your current quota: {}.", e.reason),
        )
        .with_retry_after(Duration::from_secs(at.saturating_sub(now).max(1)));
    }
    if e.phase == crate::worker::WorkerPhase::LoginRequired {
        // No worker that could take the turn has a login: the operator's
        // to fix (the reason names the command), not a restart to wait for.
        return Failure::new(
            FailureKind::LoginRequired,
            format!("The Codex worker cannot take requests: {}", e.reason),
        );
    }
    Failure::new(
        FailureKind::NotReady,
        format!("The Codex worker is not ready: {}", e.reason),
    )
    .with_retry_after(Duration::from_secs(2))
}

/// `thread/start`'s params as [`ThreadStartParams`] encodes them (same
/// members, order and omissions: a test holds the two to the same bytes),
/// borrowed from the request and the core instead of cloned per turn: the
/// request's tools and instructions can be large, and the config map is
/// encoded once.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThreadStartView<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_provider: Option<&'a str>,
    cwd: &'a str,
    approval_policy: &'a str,
    sandbox: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    developer_instructions: Option<&'a str>,
    ephemeral: bool,
    config: &'a RawValue,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    dynamic_tools: &'a [DynamicToolSpec],
    #[serde(skip_serializing_if = "Option::is_none")]
    environments: Option<&'a [Value; 0]>,
}

/// Per-thread config overrides. Codex's host tools are switched off here
/// (the form measured to remove them from the model's tool list) as well as
/// on the worker's command line.
fn thread_config(enable_codex_tools: bool) -> Map<String, Value> {
    let mut map = Map::new();
    if !enable_codex_tools {
        for feature in HOST_TOOL_FEATURES {
            map.insert(format!("features.{feature}"), json!(false));
        }
        map.insert("agents.enabled".into(), json!(false));
        map.insert("web_search".into(), json!("disabled"));
    }
    map
}

#[cfg(test)]
mod thread_start_view {
    use super::*;
    use crate::protocol::ThreadStartParams;

    /// The view writes what the protocol type writes, for each optional
    /// member present and absent.
    #[test]
    fn encodes_as_the_protocol_type_does() {
        let tool = DynamicToolSpec {
            kind: "function".into(),
            name: "lookup".into(),
            description: "Looks \"things\" up".into(),
            input_schema: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
        };
        for (tools, instructions, provider, codex_tools) in [
            (vec![], None, None, true),
            (
                vec![tool.clone()],
                Some("Be brief.\nAlways."),
                Some("offline"),
                false,
            ),
            (vec![tool.clone(), tool], Some(""), None, false),
        ] {
            let config = thread_config(codex_tools);
            let owned = ThreadStartParams {
                model: Some("gpt-5.1-codex".into()),
                model_provider: provider.map(Into::into),
                cwd: Some("/srv/work dir".into()),
                approval_policy: Some("never".into()),
                sandbox: Some(SandboxMode::ReadOnly.as_str().into()),
                developer_instructions: instructions.map(Into::into),
                ephemeral: Some(true),
                config: Some(config.clone()),
                dynamic_tools: (!tools.is_empty()).then(|| tools.clone()),
                environments: (!codex_tools).then(Vec::new),
            };
            let encoded_config = serde_json::value::to_raw_value(&config).unwrap();
            let view = ThreadStartView {
                model: "gpt-5.1-codex",
                model_provider: provider,
                cwd: "/srv/work dir",
                approval_policy: "never",
                sandbox: SandboxMode::ReadOnly.as_str(),
                developer_instructions: instructions,
                ephemeral: true,
                config: &encoded_config,
                dynamic_tools: &tools,
                environments: (!codex_tools).then_some(&[]),
            };
            assert_eq!(
                serde_json::to_string(&view).unwrap(),
                serde_json::to_string(&owned).unwrap()
            );
        }
    }
}
