//! `POST /v1/chat/completions`.

mod request;
mod response;
mod run;
mod shaper;
mod translate;

pub use request::ChatRequest;
pub use response::{aggregate, ChatMeta, ChunkRenderer};
pub use run::{ChatRun, Finish, RunEvent};
pub use translate::to_turn_request;

use std::time::Duration;

use bytes::Bytes;
use codex_sse::{EventStream, SseEvent};
use futures_util::future::try_join_all;
use futures_util::stream;
use http::Response;

use super::error::ApiError;
use super::models::resolve;
use super::{json_response, ApiBody, ApiState, Client};

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
    let req = ChatRequest::parse(&body)?;
    // Held for the whole stream: moved into the event stream below.
    let stream_permit = match (&state.stream_limit, &client.id) {
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
    let turn = to_turn_request(&req, resolved.model, effort);

    // One thread per choice, in parallel. If one fails to start, the others
    // are dropped here, which releases their threads.
    let turns = try_join_all((0..req.n).map(|_| state.core.start_turn(turn.clone())))
        .await
        .map_err(ApiError::from)?;
    let mut run = ChatRun::new(turns, req.stop.clone(), req.max_tokens)
        .with_deadline(
            state
                .request_timeout
                .map(|t| tokio::time::Instant::from_std(client.started) + t),
        )
        .interrupt_on_drop(state.kill_on_disconnect);
    let meta = ChatMeta {
        id: super::ids::completion_id(),
        created: super::ids::unix_now(),
        model: req.model.clone(),
        system_fingerprint: super::ids::system_fingerprint(),
        include_usage: req.include_usage,
        legacy_functions: req.legacy_functions,
    };

    let observer = Observer {
        metrics: state.metrics.clone(),
        started: client.started,
        stream: req.stream,
        seen_first: false,
    };
    if !req.stream {
        let completion = aggregate(run, &meta, observer).await?;
        return Ok(json_response(http::StatusCode::OK, &completion));
    }

    let mut observer = observer;
    let first = match tokio::time::timeout(STREAM_COMMIT_WINDOW, run.next()).await {
        Ok(Some(RunEvent::Error(e))) => return Err(e),
        Ok(first) => {
            if let Some(e) = &first {
                observer.see(e);
            }
            Some(first)
        }
        Err(_) => None,
    };
    let events = chunk_stream(run, meta, first, observer, stream_permit);
    Ok(Response::new(ApiBody::Events(EventStream::new(events))))
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
    let state = (run, renderer, ended, observer, permit);
    let tail = stream::unfold(
        state,
        |(mut run, mut renderer, done, mut observer, permit)| async move {
            if done {
                return None;
            }
            let event = run.next().await?;
            observer.see(&event);
            let frames: Vec<SseEvent> = renderer.render(&event).iter().map(to_event).collect();
            Some((
                stream::iter(frames),
                (run, renderer, false, observer, permit),
            ))
        },
    );
    futures_util::StreamExt::chain(head, futures_util::StreamExt::flatten(tail))
}

fn to_event(v: &serde_json::Value) -> SseEvent {
    SseEvent::json(v).expect("json values serialize")
}
