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
use super::{json_response, ApiBody, ApiState};

/// How long a streamed request waits for its first event before the 200 and
/// the SSE headers go out. A failure inside this window (a provider 429, a
/// bad request) still gets its proper HTTP status; after it, failures arrive
/// as an error frame.
const STREAM_COMMIT_WINDOW: Duration = Duration::from_millis(1500);

pub async fn handle(state: &ApiState, body: Bytes) -> Result<Response<ApiBody>, ApiError> {
    let req = ChatRequest::parse(&body)?;
    let models = state.core.models().map_err(ApiError::from)?;
    let resolved = resolve(&models, &state.aliases, &req.model)?;
    let effort = req.reasoning_effort.clone().or(resolved.effort);
    let turn = to_turn_request(&req, resolved.model, effort);

    // One thread per choice, in parallel. If one fails to start, the others
    // are dropped here, which releases their threads.
    let turns = try_join_all((0..req.n).map(|_| state.core.start_turn(turn.clone())))
        .await
        .map_err(ApiError::from)?;
    let mut run = ChatRun::new(turns, req.stop.clone(), req.max_tokens);
    let meta = ChatMeta {
        id: super::ids::completion_id(),
        created: super::ids::unix_now(),
        model: req.model.clone(),
        system_fingerprint: super::ids::system_fingerprint(),
        include_usage: req.include_usage,
        legacy_functions: req.legacy_functions,
    };

    if !req.stream {
        let completion = aggregate(run, &meta).await?;
        return Ok(json_response(http::StatusCode::OK, &completion));
    }

    let first = match tokio::time::timeout(STREAM_COMMIT_WINDOW, run.next()).await {
        Ok(Some(RunEvent::Error(e))) => return Err(e),
        Ok(first) => Some(first),
        Err(_) => None,
    };
    let events = chunk_stream(run, meta, first);
    Ok(Response::new(ApiBody::Events(EventStream::new(events))))
}

/// The SSE events of a streamed response: role chunks, then one chunk per
/// run event, pulled only as fast as the client reads.
fn chunk_stream(
    run: ChatRun,
    meta: ChatMeta,
    first: Option<Option<RunEvent>>,
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
    let tail = stream::unfold(
        (run, renderer, ended),
        |(mut run, mut renderer, done)| async move {
            if done {
                return None;
            }
            let event = run.next().await?;
            let frames: Vec<SseEvent> = renderer.render(&event).iter().map(to_event).collect();
            Some((stream::iter(frames), (run, renderer, false)))
        },
    );
    futures_util::StreamExt::chain(head, futures_util::StreamExt::flatten(tail))
}

fn to_event(v: &serde_json::Value) -> SseEvent {
    SseEvent::json(v).expect("json values serialize")
}
