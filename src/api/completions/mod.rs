//! `POST /v1/completions` (legacy text completions): a parser that turns the
//! `prompt` into a one-message conversation and a renderer of
//! `text_completion` objects, around the shared pipeline.

mod render;
mod request;

pub use render::CompletionsRenderer;
pub use request::CompletionsRequest;

use bytes::Bytes;
use http::Response;

use super::error::ApiError;
use super::{ids, pipeline, ApiBody, ApiState, Client};

pub async fn handle(
    state: &ApiState,
    client: &Client,
    body: Bytes,
) -> Result<Response<ApiBody>, ApiError> {
    let req = CompletionsRequest::parse(&body)?;
    let renderer = CompletionsRenderer::new(
        render::Meta {
            id: format!("cmpl-{}", ids::short_id()),
            created: ids::unix_now(),
            model: req.conversation.model.clone(),
            system_fingerprint: ids::system_fingerprint(),
            include_usage: req.include_usage,
            echo: req.echo.clone(),
        },
        req.conversation.n as usize,
        req.conversation.stream,
    );
    // One prompt, one answer: nothing to continue, so the thread is
    // released after the response. Tool calls do not exist in this
    // dialect, so the output mode never applies.
    pipeline::respond(
        state,
        client,
        req.conversation,
        pipeline::Lineage::default(),
        client.output_mode,
        renderer,
    )
    .await
}
