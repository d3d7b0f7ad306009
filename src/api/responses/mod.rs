//! `POST /v1/responses`: the OpenAI Responses API, its parser and renderer
//! around the shared pipeline (tool calls as `function_call` items,
//! continuation by `call_id`), and the stored responses:
//! `previous_response_id`, `GET`/`DELETE /v1/responses/{id}` and
//! `GET /v1/responses/{id}/input_items`.

mod render;
mod request;
mod stored;

pub use stored::handle as handle_stored;

use bytes::Bytes;
use codex_output_mode::OutputMode;
use http::Response;

use super::error::ApiError;
use super::pipeline::{Lineage, NextHead, Parent};
use super::{ids, pipeline, ApiBody, ApiState, Client};
use crate::store::Chain;
use render::{Recording, ResponsesRenderer};

pub async fn handle(
    state: &ApiState,
    client: &Client,
    body: Bytes,
) -> Result<Response<ApiBody>, ApiError> {
    let req = request::parse(&body)?;
    // A replica's ids carry its name, so the balancer can route a
    // `previous_response_id` back to it (docs/operations.md, "Several replicas").
    let id = match &state.replica {
        Some(replica) => format!("resp_{replica}_{}", ids::short_id()),
        None => format!("resp_{}", ids::short_id()),
    };
    let mut conversation = req.conversation.clone();
    let mut lineage = Lineage {
        owner: client.owner.clone(),
        ..Lineage::default()
    };
    if let Some(previous) = &req.previous_response_id {
        // The conversation so far, then this request's own messages: what
        // a rebuilt thread is given, and what tool results are matched
        // against. A live thread that holds `previous` gets only the new.
        let store = state.responses.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "previous_response_id",
                "This gateway keeps no responses (PROXY_RESPONSE_STORE=false); \
                 send the whole conversation in `input`.",
            )
            .code("unsupported_parameter")
        })?;
        let chain = match store.chain(&client.owner, previous).await {
            Ok(Chain::Complete(chain)) => chain,
            Ok(Chain::NotFound) => return Err(previous_not_found(previous)),
            Ok(Chain::Broken { missing }) => {
                return Err(ApiError::not_found(format!(
                    "Previous response with id '{previous}' cannot be continued: \
                     an earlier response of its conversation ('{missing}') was deleted or expired."
                ))
                .param("previous_response_id")
                .code("previous_response_not_found"))
            }
            Err(e) => return Err(store_error(e)),
        };
        let history = request::history_of(&chain)?;
        // The request's instructions (a system message first) stay first;
        // the stored conversation goes between them and the new input.
        let instructions = usize::from(req.instructions.is_some());
        let new_from = instructions + history.len();
        conversation
            .messages
            .splice(instructions..instructions, history);
        lineage.parent = Some(Parent {
            head: previous.clone(),
            new_from,
        });
    }
    let recording = match (&state.responses, req.store) {
        (Some(store), true) => {
            lineage.next = Some(NextHead::Named(id.clone()));
            Some(Recording {
                store: store.clone(),
                owner: client.owner.clone(),
                input_items: req.input_items.clone(),
            })
        }
        _ => None,
    };
    let renderer = ResponsesRenderer::new(&req, id, recording);
    // Responses clients read `function_call` items: always the structured mode.
    pipeline::respond(
        state,
        client,
        conversation,
        lineage,
        OutputMode::OpenaiJson,
        renderer,
    )
    .await
}

fn previous_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Previous response with id '{id}' not found."))
        .param("previous_response_id")
        .code("previous_response_not_found")
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "response store failed");
    ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "The response store failed; see the gateway's log.",
    )
}
