//! `POST /v1/chat/completions`: the chat parser and renderer around the
//! shared pipeline.

mod render;
mod request;

pub(crate) use render::usage_json;
pub use render::{ChatMeta, ChatRenderer};
pub use request::ChatRequest;

use bytes::Bytes;
use http::Response;

use super::error::ApiError;
use super::{ids, pipeline, ApiBody, ApiState, Client};

pub async fn handle(
    state: &ApiState,
    client: &Client,
    body: Bytes,
) -> Result<Response<ApiBody>, ApiError> {
    let req = ChatRequest::parse(&body)?;
    let conversation = req.conversation;
    let meta = ChatMeta {
        id: ids::completion_id(),
        created: ids::unix_now(),
        model: conversation.model.clone(),
        system_fingerprint: ids::system_fingerprint(),
        include_usage: req.include_usage,
        legacy_functions: req.legacy_functions,
        reasoning: client.reasoning_format,
    };
    let renderer = ChatRenderer::new(meta, conversation.n as usize, conversation.stream);
    // A chat request carries its whole history: it continues the thread
    // that answered the history up to its last assistant message, if one
    // still holds it.
    let lineage = pipeline::history_lineage(state, client, &conversation);
    pipeline::respond(
        state,
        client,
        conversation,
        lineage,
        client.output_mode,
        renderer,
    )
    .await
}
