//! The pipeline: the order of things for every dialect.
//!
//! A dialect's parser hands over a [`Conversation`] and a [`Renderer`];
//! [`respond`] does the rest, streamed or not: the client's stream slot,
//! remote images, the model, continuing a parked turn or starting fresh
//! ones, the [`Run`] that merges and shapes their events, the commit window
//! of a stream, metrics, and parking the turns a response ends on. It never
//! names a dialect: adding one means a parser and a renderer, nothing here.
//!
//! Files: `run.rs` merges and shapes turn events (tool-call policy, stop
//! sequences and `max_tokens` via `shaper.rs`); `translate.rs` builds the
//! core's `TurnRequest`; `continuation.rs` decides which parked turn a
//! request continues; `render.rs` is the renderer contract.

mod continuation;
mod lineage;
mod render;
mod run;
mod shaper;
mod translate;

pub use continuation::{results_of, ConversationKey, Results};
pub use lineage::{shape_of, Fingerprint, Lineage, NextHead, Parent};
pub use render::Renderer;
pub use run::{Finish, Run, RunEvent, ToolPolicy};
pub use translate::to_turn_request;

use std::sync::Arc;
use std::time::Duration;

use codex_output_mode::OutputMode;
use codex_sse::{EventStream, SseEvent};
use futures_util::future::try_join_all;
use futures_util::{stream, StreamExt};
use http::Response;

use super::conversation::{Conversation, Part, ToolChoice};
use super::error::ApiError;
use super::models::resolve;
use super::{json_response, ApiBody, ApiState, Client};
use crate::backend::{unsupported, BackendKind, Needs, Turn};
use crate::core::{Continuation, FailureKind, LiveThreads, ParkedTurns, Taken, TurnStream};

/// How long a streamed request waits for its first event before the 200 and
/// the SSE headers go out. A failure inside this window (a provider 429, a
/// bad request) still gets its proper HTTP status; after it, failures arrive
/// as an error frame.
const STREAM_COMMIT_WINDOW: Duration = Duration::from_millis(1500);

/// Answers one conversation request in the renderer's dialect. `lineage`
/// says where the request sits in its conversation (`Lineage::default()`:
/// nowhere, a fresh thread released after the response).
pub async fn respond<R: Renderer>(
    state: &ApiState,
    client: &Client,
    mut conversation: Conversation,
    lineage: Lineage,
    mode: OutputMode,
    mut renderer: R,
) -> Result<Response<ApiBody>, ApiError> {
    // Boxed and only when there is one: it is rare, and its state would
    // otherwise be part of every request's future.
    if has_remote_images(&conversation) {
        Box::pin(inline_remote_images(state, &mut conversation)).await?;
    }
    let Prepared {
        mut run,
        parking,
        keeping,
        permit,
        mut observer,
    } = prepare(state, client, &conversation, lineage, mode).await?;
    if !conversation.stream {
        while let Some(event) = run.next().await {
            observer.see(&event);
            renderer.event(&event);
        }
        if let Some(p) = parking {
            p.park(&mut run);
        }
        if let Some(k) = keeping {
            k.keep(&mut run);
        }
        if let Some(record) = renderer.finished() {
            record.await;
        }
        return Ok(json_response(http::StatusCode::OK, &renderer.collected()?));
    }
    let first = first_event(&mut run, &mut observer).await?;
    let mut head = renderer.opening();
    if let Some(Some(event)) = &first {
        head.extend(renderer.event(event));
    }
    let streaming = Streaming {
        run,
        renderer,
        observer,
        parking,
        keeping,
        _permit: permit,
        closed: false,
    };
    let events = stream::iter(head).chain(streaming.into_events());
    Ok(Response::new(ApiBody::Events(
        EventStream::new(events).done_marker(R::DONE_MARKER),
    )))
}

/// The lineage of a request that carries its whole history (chat, Ollama
/// chat): it continues the head its history ends with. Nothing to
/// fingerprint when threads are not kept or the request asks for several
/// answers (each on a thread of its own).
pub fn history_lineage(state: &ApiState, client: &Client, conversation: &Conversation) -> Lineage {
    if state.threads.enabled() && conversation.n == 1 {
        lineage::of_history(&client.owner, &conversation.messages)
    } else {
        Lineage::default()
    }
}

/// A streamed response after its head: pulled one event at a time, only as
/// fast as the client reads.
struct Streaming<R> {
    run: Run<Turn>,
    renderer: R,
    observer: Observer,
    parking: Option<Parking>,
    keeping: Option<Keeping>,
    /// The client's stream slot: it lives in the stream's state, so the
    /// slot frees when the stream ends or the client goes away.
    _permit: Option<codex_rate_limit::ConcurrencyPermit>,
    closed: bool,
}

impl<R: Renderer> Streaming<R> {
    fn into_events(self) -> impl futures_util::Stream<Item = SseEvent> + Send {
        // Boxed: `unfold` moves its state into each step's future and back
        // out, per event; a box moves as a pointer, the state (~1 KB: run,
        // renderer, observer) stays put.
        stream::unfold(Box::new(self), |mut s| async move {
            if s.closed {
                return None;
            }
            let frames = match s.run.next().await {
                Some(event) => {
                    s.observer.see(&event);
                    s.renderer.event(&event)
                }
                None => {
                    // The response is complete: a turn waiting on its tool
                    // calls stays for the client's next request, a completed
                    // one's thread for the conversation's next turn.
                    if let Some(p) = s.parking.take() {
                        p.park(&mut s.run);
                    }
                    if let Some(k) = s.keeping.take() {
                        k.keep(&mut s.run);
                    }
                    s.closed = true;
                    let frames = s.renderer.closing();
                    // Recorded before the client sees the end, so a
                    // follow-up sent at once finds it.
                    if let Some(record) = s.renderer.finished() {
                        record.await;
                    }
                    frames
                }
            };
            Some((stream::iter(frames), s))
        })
        .flatten()
    }
}

/// Whether any image part is a URL to fetch rather than inline data.
fn has_remote_images(conversation: &Conversation) -> bool {
    conversation.messages.iter().any(|m| {
        m.parts
            .iter()
            .any(|p| matches!(p, Part::Image(image) if image.is_remote()))
    })
}

/// Replaces http(s) image URLs with inline data URLs (the pinned CLI accepts
/// only those), or refuses them when the operator has not enabled fetching.
async fn inline_remote_images(
    state: &ApiState,
    conversation: &mut Conversation,
) -> Result<(), ApiError> {
    for message in &mut conversation.messages {
        for part in &mut message.parts {
            let Part::Image(image) = part else {
                continue;
            };
            if !image.is_remote() {
                continue;
            }
            let Some(fetcher) = &state.images else {
                return Err(ApiError::invalid(
                    image.param.clone(),
                    "Remote image URLs are not fetched by this gateway (PROXY_FETCH_IMAGE_URLS is off); \
                     send the image inline as a data:image/...;base64 URL.",
                )
                .code("unsupported_image_url"));
            };
            image.url = fetcher.inline(&image.url, &image.param).await?;
        }
    }
    Ok(())
}

/// A request's turns, started (or resumed) and ready to be read.
struct Prepared {
    run: Run<Turn>,
    /// Where the run's paused turn goes when the response ends on tool calls.
    parking: Option<Parking>,
    /// Where the run's thread goes when the response completes cleanly.
    keeping: Option<Keeping>,
    /// The client's stream slot, held until the stream ends.
    permit: Option<codex_rate_limit::ConcurrencyPermit>,
    observer: Observer,
}

/// Everything between a validated request and its events: the stream slot,
/// model resolution, continuation or fresh threads, and the tool policy.
async fn prepare(
    state: &ApiState,
    client: &Client,
    req: &Conversation,
    lineage: Lineage,
    mode: OutputMode,
) -> Result<Prepared, ApiError> {
    // Held for the whole stream: moved into the event stream by the caller.
    let permit = match (&state.stream_limit, &client.id) {
        // Boxed, like the other rare waits below, to keep them out of the
        // state of every request's future.
        (Some(limit), Some(id)) if req.stream => {
            Some(Box::pin(limit.acquire(id)).await.map_err(|e| {
                match e {
                    codex_rate_limit::AcquireError::Exceeded(e) => ApiError::new(
                        http::StatusCode::TOO_MANY_REQUESTS,
                        "rate_limit_error",
                        format!(
                            "Too many concurrent streams for this client (limit {}).",
                            e.max_per_key
                        ),
                    )
                    .code("too_many_streams")
                    .counted_as("stream_limit"),
                    // PROXY_REDIS_FAILURE=closed and Redis cannot count the streams.
                    codex_rate_limit::AcquireError::Unavailable(_) => ApiError::new(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        "The stream limiter is unavailable. Please retry shortly.",
                    )
                    .code("rate_limiter_unavailable")
                    .counted_as("rate_limit_unavailable"),
                }
            })?)
        }
        _ => None,
    };
    let models = state.backends.models(&state.core).map_err(ApiError::from)?;
    let resolved = resolve(&models, &state.aliases, &req.model)?;
    if let Some(note) = &client.note {
        note.set_model(&resolved.model);
    }
    let effort = req.reasoning_effort.clone().or(resolved.effort);
    // The thread's settings, without building the history (which a
    // continued or resumed turn never needs).
    let instructions = translate::instructions(req);
    let tools = translate::tools(req);
    let shape = shape_of(&resolved.model, instructions.as_deref(), &tools);
    // Which backend runs this conversation (sticky per conversation, see
    // `crate::backend`); what exec cannot do is refused before anything runs.
    let results = results_of(req);
    let needs = Needs {
        client_tools: !tools.is_empty(),
    };
    let backend = state
        .backends
        .choose(|| (&client.owner, conversation_root(req)), &needs)
        .kind;
    if backend == BackendKind::Exec {
        if let Some(feature) = unsupported(&needs) {
            return Err(unsupported_on_exec(feature));
        }
    }
    let app_server = backend == BackendKind::AppServer;
    // One answer, a conversation to name and a cache to keep it in: the
    // thread stays for the next turn (app-server only: exec keeps no thread).
    let keeping = match (&lineage.next, req.n) {
        (Some(next), 1) if app_server && state.threads.enabled() => Some(Keeping {
            threads: state.threads.clone(),
            owner: lineage.owner.clone(),
            shape,
            next: next.clone(),
        }),
        _ => None,
    };

    // A turn parked on calls this request answers with something else is
    // released now rather than held until it expires.
    if let Some(key) = continuation::abandoned_key(req) {
        drop(state.continuations.take(key, std::iter::empty()));
    }
    // A request that brings the results of calls a parked turn waits on
    // continues that turn; one that continues a head a live thread holds
    // gets a turn on that thread; anything else starts fresh threads.
    let continued = match (req.n, results) {
        (1, Some(results)) if app_server => Box::pin(resume(state, &results)).await?,
        _ => None,
    };
    let continued = match (continued, &lineage.parent, &keeping) {
        (Some(turn), _, _) => Some(turn),
        (None, Some(parent), Some(_)) => {
            let thread = ThreadFor {
                owner: &lineage.owner,
                parent,
                shape,
                model: &resolved.model,
                effort: effort.as_ref(),
            };
            Box::pin(continue_live(state, req, thread)).await?
        }
        _ => None,
    };
    let turns = match continued {
        Some(turn) => vec![state.backends.app_server(turn)],
        None => {
            let whole = to_turn_request(req, resolved.model.clone(), effort.clone());
            // One thread (or exec process) per choice, in parallel. If one
            // fails to start, the others are dropped here, which releases them.
            try_join_all((0..req.n).map(|_| {
                state
                    .backends
                    .start_turn(&state.core, backend, whole.clone())
            }))
            .await
            .map_err(ApiError::from)?
        }
    };
    let mut policy = ToolPolicy::new(
        &state.tools,
        mode,
        req.parallel_tool_calls,
        req.tools
            .iter()
            .map(|t| (t.name.clone(), t.parameters.clone()))
            .collect(),
    );
    if let ToolChoice::Function(name) = &req.tool_choice {
        policy.final_tool = Some(name.clone());
    }
    let run = Run::new(turns, req.stop.clone(), req.max_tokens, policy)
        .with_deadline(
            state
                .request_timeout
                .map(|t| tokio::time::Instant::from_std(client.started) + t),
        )
        .interrupt_on_drop(state.kill_on_disconnect)
        .cut_usage_wait(state.cut_usage_wait);
    // A client that answers calls by function name cannot be matched to a
    // parked turn, and n > 1 has no single turn to continue.
    let parking = (app_server && req.n == 1 && req.calls_have_ids).then(|| Parking {
        store: state.continuations.clone(),
        key: ConversationKey::of(req),
    });
    let observer = Observer {
        metrics: state.metrics.clone(),
        key: client.owner.clone(),
        model: resolved.model.clone(),
        note: client.note.clone(),
        started: client.started,
        stream: req.stream,
        seen_first: false,
    };
    Ok(Prepared {
        run,
        parking,
        keeping,
        permit,
        observer,
    })
}

/// What identifies a conversation across its requests for the backend
/// choice: its first user message (every later request resends or rebuilds
/// it). Hashed with the owner by the caller.
fn conversation_root(req: &Conversation) -> String {
    req.messages
        .iter()
        .find(|m| m.role == super::conversation::Role::User)
        .map(|m| m.text())
        .unwrap_or_default()
}

/// The 400 for a feature the exec backend cannot serve.
fn unsupported_on_exec(feature: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::BAD_REQUEST,
        "invalid_request_error",
        format!(
            "{feature} is not supported on the exec backend (PROXY_BACKEND=exec); \
             see docs/app-server-migration/backends.md."
        ),
    )
    .code("unsupported_on_backend")
}

/// Waits up to the commit window for the first event: a failure inside it
/// becomes a proper HTTP error instead of an error frame. `None`: nothing yet.
async fn first_event(
    run: &mut Run<Turn>,
    observer: &mut Observer,
) -> Result<Option<Option<RunEvent>>, ApiError> {
    match tokio::time::timeout(STREAM_COMMIT_WINDOW, run.next()).await {
        Ok(Some(RunEvent::Error(e))) => Err(*e),
        Ok(first) => {
            if let Some(e) = &first {
                observer.see(e);
            }
            Ok(Some(first))
        }
        Err(_) => Ok(None),
    }
}

/// A new turn on the live thread that holds `parent`, carrying only the
/// messages after it. `None` (counted as a fork or a rebuild) when no
/// thread holds it for this owner and shape, or the worker that held it
/// went away: the caller starts a fresh thread with the whole history.
async fn continue_live(
    state: &ApiState,
    req: &Conversation,
    wanted: ThreadFor<'_>,
) -> Result<Option<TurnStream>, ApiError> {
    let ThreadFor {
        owner,
        parent,
        shape,
        model,
        effort,
    } = wanted;
    let threads = &state.threads;
    let thread = match threads.take(&parent.head, owner, shape) {
        Taken::Thread(thread) => thread,
        Taken::MovedOn => {
            threads.count_continuation(Continuation::Forked);
            return Ok(None);
        }
        Taken::None => {
            threads.count_continuation(Continuation::Rebuilt);
            return Ok(None);
        }
    };
    let new = Conversation {
        messages: req.messages[parent.new_from.min(req.messages.len())..].to_vec(),
        ..req.clone_without_messages()
    };
    // Only the new messages: the thread already has the model,
    // instructions and tools (same shape) and the history.
    let turn = to_turn_request(&new, model.to_owned(), effort.cloned());
    let thread_id = thread.thread_id().to_owned();
    match state.core.continue_thread(thread, turn).await {
        Ok(stream) => {
            threads.count_continuation(Continuation::Reused);
            tracing::debug!(thread = %thread_id, head = %parent.head, "continuing a live thread");
            Ok(Some(stream))
        }
        // Load shedding and a worker that is not ready answer as they would
        // for a fresh thread; anything else (the worker went away, codex no
        // longer knows the thread) leaves the conversation to be rebuilt.
        Err(f) if matches!(f.kind, FailureKind::Overloaded | FailureKind::NotReady) => {
            Err(ApiError::from(f))
        }
        Err(f) => {
            tracing::debug!(thread = %thread_id, error = %f.message, "a kept thread could not continue; rebuilding");
            threads.count_continuation(Continuation::Rebuilt);
            Ok(None)
        }
    }
}

/// The live thread a request asks for.
struct ThreadFor<'a> {
    owner: &'a str,
    parent: &'a Parent,
    shape: u64,
    model: &'a str,
    effort: Option<&'a String>,
}

/// Takes the parked turn these results answer and continues it with them.
async fn resume(state: &ApiState, results: &Results) -> Result<Option<TurnStream>, ApiError> {
    let Some(parked) = state.continuations.take(results.key, results.call_ids()) else {
        return Ok(None);
    };
    state
        .core
        .resume(parked, &results.outputs)
        .await
        .map_err(ApiError::from)
}

/// Where a response that ends on tool calls leaves its turn.
struct Parking {
    store: Arc<ParkedTurns>,
    key: ConversationKey,
}

impl Parking {
    fn park(self, run: &mut Run<Turn>) {
        for (turn, shown) in run.take_parked() {
            let key = self.key.with_calls(&shown);
            // A turn that no longer waits on calls is released instead.
            if let Some(parked) = turn.park(shown) {
                self.store.park(key, parked);
            }
        }
    }
}

/// Where a response's thread goes when its turn completes cleanly: the
/// live-thread cache, under the head the response makes.
struct Keeping {
    threads: Arc<LiveThreads>,
    owner: String,
    shape: u64,
    next: NextHead,
}

impl Keeping {
    fn keep(self, run: &mut Run<Turn>) {
        let Some((turn, said)) = run.take_reusable() else {
            return;
        };
        if let Some(thread) = turn.into_idle() {
            let head = self.next.name(&said);
            self.threads.keep(head, self.owner, self.shape, thread);
        }
    }
}

/// Records time to first token and token usage as run events pass.
struct Observer {
    metrics: Option<crate::telemetry::GatewayMetrics>,
    /// The key name and the resolved model, the token counters' labels.
    key: String,
    model: String,
    /// The access-log line's tokens.
    note: Option<crate::access_log::AccessNote>,
    started: std::time::Instant,
    stream: bool,
    seen_first: bool,
}

impl Observer {
    fn see(&mut self, event: &RunEvent) {
        if let (Some(note), RunEvent::Usage(u)) = (&self.note, event) {
            note.add_usage(u);
        }
        let Some(m) = &self.metrics else { return };
        match event {
            RunEvent::Text(..) | RunEvent::ToolCall(..) if !self.seen_first => {
                self.seen_first = true;
                m.record_first_token(self.stream, self.started.elapsed());
            }
            RunEvent::Usage(u) => m.record_usage(u, &self.key, &self.model),
            _ => {}
        }
    }
}
