//! `POST /v1/responses`: the OpenAI Responses API over the same pipeline as
//! chat completions (one thread and turn per request, tool calls as
//! `function_call` items, continuation by `call_id`).

mod builder;
mod request;

use bytes::Bytes;
use codex_output_mode::OutputMode;
use codex_sse::{EventStream, SseEvent};
use futures_util::stream;
use http::Response;

use super::chat::{first_event, prepare, Prepared};
use super::error::ApiError;
use super::{json_response, ApiBody, ApiState, Client};
use builder::ResponseBuilder;

pub async fn handle(
    state: &ApiState,
    client: &Client,
    body: Bytes,
) -> Result<Response<ApiBody>, ApiError> {
    let mut req = request::parse(&body)?;
    super::chat::inline_remote_images(state, &mut req.chat)
        .await
        .map_err(|mut e| {
            e.param = e.param.map(|p| p.replacen("messages", "input", 1));
            e
        })?;
    // Responses clients read `function_call` items: always the structured mode.
    let Prepared {
        mut run,
        parking,
        permit,
        mut observer,
    } = prepare(state, client, &req.chat, OutputMode::OpenaiJson).await?;
    let mut builder = ResponseBuilder::new(&req);
    if !req.chat.stream {
        while let Some(event) = run.next().await {
            observer.see(&event);
            builder.ingest(&event);
        }
        if let Some(e) = builder.error() {
            return Err(e.clone());
        }
        // Closes the open message item; the events are for streams only.
        let _ = builder.closing();
        if let Some(p) = parking {
            p.park(&mut run);
        }
        return Ok(json_response(http::StatusCode::OK, &builder.response()));
    }

    let first = first_event(&mut run, &mut observer).await?;
    let mut opening = builder.opening();
    let ended = match first {
        Some(Some(event)) => {
            opening.extend(builder.ingest(&event));
            false
        }
        Some(None) => true,
        None => false,
    };
    let head = stream::iter(opening);
    let state = (run, builder, ended, observer, permit, parking);
    let tail = stream::unfold(
        state,
        |(mut run, mut builder, done, mut observer, permit, mut parking)| async move {
            if done {
                return None;
            }
            match run.next().await {
                Some(event) => {
                    observer.see(&event);
                    let frames = builder.ingest(&event);
                    Some((
                        stream::iter(frames),
                        (run, builder, false, observer, permit, parking),
                    ))
                }
                None => {
                    if let Some(p) = parking.take() {
                        p.park(&mut run);
                    }
                    let last = builder.closing();
                    Some((
                        stream::iter(last),
                        (run, builder, true, observer, permit, parking),
                    ))
                }
            }
        },
    );
    let events = futures_util::StreamExt::chain(head, futures_util::StreamExt::flatten(tail));
    // The Responses API ends with `response.completed`, not `[DONE]`.
    Ok(Response::new(ApiBody::Events(
        EventStream::new(events).done_marker(false),
    )))
}

fn named(name: &'static str, data: &serde_json::Value) -> SseEvent {
    SseEvent::json(data)
        .expect("json values serialize")
        .with_event(name)
}
