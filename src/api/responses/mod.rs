//! `POST /v1/responses`: the OpenAI Responses API, its parser and renderer
//! around the shared pipeline (tool calls as `function_call` items,
//! continuation by `call_id`).

mod render;
mod request;

use bytes::Bytes;
use codex_output_mode::OutputMode;
use http::Response;

use super::error::ApiError;
use super::{pipeline, ApiBody, ApiState, Client};
use render::ResponsesRenderer;

pub async fn handle(
    state: &ApiState,
    client: &Client,
    body: Bytes,
) -> Result<Response<ApiBody>, ApiError> {
    let req = request::parse(&body)?;
    let renderer = ResponsesRenderer::new(&req);
    // Responses clients read `function_call` items: always the structured mode.
    pipeline::respond(
        state,
        client,
        req.conversation,
        OutputMode::OpenaiJson,
        renderer,
    )
    .await
}
