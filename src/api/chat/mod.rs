//! `POST /v1/chat/completions`.

mod request;
mod response;
mod run;
mod shaper;
mod translate;

pub use request::{ChatRequest, Message, Role};
pub use response::{aggregate, ChatMeta, ChunkRenderer};
pub use run::{ChatRun, Finish, RunEvent, ToolPolicy};
pub use translate::to_turn_request;

use std::time::Duration;

use bytes::Bytes;
use codex_sse::{EventStream, SseEvent};
use futures_util::future::try_join_all;
use futures_util::stream;
use http::Response;

use super::error::ApiError;
use super::models::resolve;
use super::{continuation, json_response, ApiBody, ApiState, Client};

/// How long a streamed request waits for its first event before the 200 and
/// the SSE headers go out. A failure inside this window (a provider 429, a
/// bad request) still gets its proper HTTP status; after it, failures arrive
/// as an error frame.
const STREAM_COMMIT_WINDOW: Duration = Duration::from_millis(1500);

pub async fn handle(
    state: &ApiState,
    client: &Client,
    body: Bytes,
) -> Result<Response<ApiBody>, ApiError> {
    let mut req = ChatRequest::parse(&body)?;
    inline_remote_images(state, &mut req).await?;
    let Prepared {
        mut run,
        parking,
        permit,
        mut observer,
    } = prepare(state, client, &req, client.output_mode).await?;
    let meta = ChatMeta {
        id: super::ids::completion_id(),
        created: super::ids::unix_now(),
        model: req.model.clone(),
        system_fingerprint: super::ids::system_fingerprint(),
        include_usage: req.include_usage,
        legacy_functions: req.legacy_functions,
    };
    if !req.stream {
        let completion = aggregate(&mut run, &meta, observer).await?;
        if let Some(p) = parking {
            p.park(&mut run);
        }
        return Ok(json_response(http::StatusCode::OK, &completion));
    }
    let first = first_event(&mut run, &mut observer).await?;
    let events = chunk_stream(run, meta, first, observer, permit, parking);
    Ok(Response::new(ApiBody::Events(EventStream::new(events))))
}

/// Replaces http(s) image URLs with inline data URLs (the pinned CLI accepts
/// only those), or refuses them when the operator has not enabled fetching.
pub(crate) async fn inline_remote_images(
    state: &ApiState,
    req: &mut ChatRequest,
) -> Result<(), ApiError> {
    for (i, message) in req.messages.iter_mut().enumerate() {
        for (j, part) in message.parts.iter_mut().enumerate() {
            let request::Part::Image(url) = part else {
                continue;
            };
            if url.starts_with("data:") {
                continue;
            }
            let param = format!("messages[{i}].content[{j}].image_url.url");
            let Some(fetcher) = &state.images else {
                return Err(ApiError::invalid(
                    param,
                    "Remote image URLs are not fetched by this gateway (PROXY_FETCH_IMAGE_URLS is off); \
                     send the image inline as a data:image/...;base64 URL.",
                )
                .code("unsupported_image_url"));
            };
            *url = fetcher.inline(url, &param).await?;
        }
    }
    Ok(())
}

/// A request's turns, started (or resumed) and ready to be read.
pub(crate) struct Prepared {
    pub(crate) run: ChatRun,
    /// Where the run's paused turn goes when the response ends on tool calls.
    pub(crate) parking: Option<Parking>,
    /// The client's stream slot, held until the stream ends.
    pub(crate) permit: Option<codex_rate_limit::ConcurrencyPermit>,
    pub(crate) observer: Observer,
}

/// Everything between a validated request and its events: the stream slot,
/// model resolution, continuation or fresh threads, and the tool policy.
/// Shared by chat completions and the Responses API.
pub(crate) async fn prepare(
    state: &ApiState,
    client: &Client,
    req: &ChatRequest,
    mode: codex_output_mode::OutputMode,
) -> Result<Prepared, ApiError> {
    // Held for the whole stream: moved into the event stream by the caller.
    let permit = match (&state.stream_limit, &client.id) {
        (Some(limit), Some(id)) if req.stream => Some(limit.try_acquire(id).map_err(|e| {
            ApiError::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "Too many concurrent streams for this client (limit {}).",
                    e.max_per_key
                ),
            )
            .code("too_many_streams")
        })?),
        _ => None,
    };
    let models = state.core.models().map_err(ApiError::from)?;
    let resolved = resolve(&models, &state.aliases, &req.model)?;
    let effort = req.reasoning_effort.clone().or(resolved.effort);

    // A request that brings the results of calls a live turn waits on
    // continues that turn; anything else starts fresh threads.
    let continued = match (req.n, continuation::results_of(req)) {
        (1, Some(results)) => resume(state, &results).await?,
        _ => None,
    };
    let turns = match continued {
        Some(turn) => vec![turn],
        None => {
            let turn = to_turn_request(req, resolved.model, effort);
            // One thread per choice, in parallel. If one fails to start, the
            // others are dropped here, which releases their threads.
            try_join_all((0..req.n).map(|_| state.core.start_turn(turn.clone())))
                .await
                .map_err(ApiError::from)?
        }
    };
    let policy = ToolPolicy {
        mode,
        parallel: state.tools.parallel && req.parallel_tool_calls != Some(false),
        grace: state.tools.grace,
        stop_after_tools: state.tools.stop_after_tools,
        burst: state.tools.burst,
        suppress_tail: state.tools.suppress_tail,
        block_max: state.tools.block_max,
        schemas: req
            .tools
            .iter()
            .map(|t| (t.name.clone(), t.parameters.clone()))
            .collect(),
    };
    let run = ChatRun::new(turns, req.stop.clone(), req.max_tokens)
        .with_policy(policy)
        .with_deadline(
            state
                .request_timeout
                .map(|t| tokio::time::Instant::from_std(client.started) + t),
        )
        .interrupt_on_drop(state.kill_on_disconnect);
    // Legacy `functions` clients answer with a `function` message that has no
    // call id to match, so their turns are never parked.
    let parking = (req.n == 1 && !req.legacy_functions).then(|| Parking {
        store: state.continuations.clone(),
        model: req.model.clone(),
        messages: req.messages.clone(),
    });
    let observer = Observer {
        metrics: state.metrics.clone(),
        started: client.started,
        stream: req.stream,
        seen_first: false,
    };
    Ok(Prepared {
        run,
        parking,
        permit,
        observer,
    })
}

/// Waits up to the commit window for the first event: a failure inside it
/// becomes a proper HTTP error instead of an error frame. `None`: nothing yet.
pub(crate) async fn first_event(
    run: &mut ChatRun,
    observer: &mut Observer,
) -> Result<Option<Option<RunEvent>>, ApiError> {
    match tokio::time::timeout(STREAM_COMMIT_WINDOW, run.next()).await {
        Ok(Some(RunEvent::Error(e))) => Err(e),
        Ok(first) => {
            if let Some(e) = &first {
                observer.see(e);
            }
            Ok(Some(first))
        }
        Err(_) => Ok(None),
    }
}

/// Takes the parked turn these results answer and hands it the results.
async fn resume(
    state: &ApiState,
    results: &continuation::Results,
) -> Result<Option<crate::core::TurnStream>, ApiError> {
    let Some(mut turn) = state.continuations.take(results) else {
        return Ok(None);
    };
    state.core.resume(&mut turn).await.map_err(ApiError::from)?;
    for (call_id, output) in &results.outputs {
        if !turn.answer_tool_call(call_id, output).await {
            // Not a call this turn waits on: rebuild instead (dropping the turn interrupts it).
            return Ok(None);
        }
    }
    tracing::debug!(
        thread = turn.thread_id(),
        calls = results.outputs.len(),
        "continuing a turn with tool results"
    );
    Ok(Some(turn))
}

/// Where a response that ends on tool calls leaves its turn.
pub(crate) struct Parking {
    store: std::sync::Arc<continuation::Continuations>,
    model: String,
    messages: Vec<Message>,
}

impl Parking {
    pub(crate) fn park(self, run: &mut ChatRun) {
        for (turn, calls) in run.take_parked() {
            self.store.park(&self.model, &self.messages, turn, calls);
        }
    }
}

/// Records time to first token and token usage as run events pass.
pub struct Observer {
    metrics: Option<crate::telemetry::GatewayMetrics>,
    started: std::time::Instant,
    stream: bool,
    seen_first: bool,
}

impl Observer {
    pub fn see(&mut self, event: &RunEvent) {
        let Some(m) = &self.metrics else { return };
        match event {
            RunEvent::Text(..) | RunEvent::ToolCall(..) if !self.seen_first => {
                self.seen_first = true;
                m.record_first_token(self.stream, self.started.elapsed());
            }
            RunEvent::Usage(u) => m.record_usage(u),
            _ => {}
        }
    }
}

/// The SSE events of a streamed response: role chunks, then one chunk per
/// run event, pulled only as fast as the client reads.
fn chunk_stream(
    run: ChatRun,
    meta: ChatMeta,
    first: Option<Option<RunEvent>>,
    observer: Observer,
    permit: Option<codex_rate_limit::ConcurrencyPermit>,
    parking: Option<Parking>,
) -> impl futures_util::Stream<Item = SseEvent> + Send {
    let mut renderer = ChunkRenderer::new(meta, run.choices());
    let mut opening: Vec<serde_json::Value> =
        (0..run.choices()).map(|i| renderer.role(i)).collect();
    // `first` is what the commit window saw: an event, the end, or nothing yet.
    let ended = match first {
        Some(Some(event)) => {
            opening.extend(renderer.render(&event));
            false
        }
        Some(None) => true,
        None => false,
    };
    let head = stream::iter(opening.into_iter().map(|v| to_event(&v)));
    // The permit lives in the stream's state, so the client's slot frees
    // when the stream ends or the client goes away.
    let state = (run, renderer, ended, observer, permit, parking);
    let tail = stream::unfold(
        state,
        |(mut run, mut renderer, done, mut observer, permit, mut parking)| async move {
            let event = if done { None } else { run.next().await };
            let Some(event) = event else {
                // The response is complete: a turn waiting on its tool calls
                // stays for the client's next request.
                if let Some(p) = parking.take() {
                    p.park(&mut run);
                }
                return None;
            };
            observer.see(&event);
            let frames: Vec<SseEvent> = renderer.render(&event).iter().map(to_event).collect();
            Some((
                stream::iter(frames),
                (run, renderer, false, observer, permit, parking),
            ))
        },
    );
    futures_util::StreamExt::chain(head, futures_util::StreamExt::flatten(tail))
}

fn to_event(v: &serde_json::Value) -> SseEvent {
    SseEvent::json(v).expect("json values serialize")
}
