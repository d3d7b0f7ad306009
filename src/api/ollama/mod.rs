//! The Ollama API (`/api/tags`, `/api/version`, `/api/chat`,
//! `/api/generate`): a parser and a renderer around the shared pipeline,
//! so Ollama clients reach the same models as OpenAI ones.
//!
//! Ollama's shapes differ from OpenAI's in three ways clients notice:
//! streams are newline-delimited JSON and are the default; errors are
//! `{"error": "message"}` (with the same statuses); model names carry a
//! tag (`codex-offline:latest`).

mod rejections;
mod render;
mod request;

pub use rejections::{OllamaRejections, OllamaRejectionsLayer};
pub use render::{Endpoint, OllamaRenderer};
pub use request::OllamaRequest;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{json_response, models, pipeline, ApiBody, ApiState, Client};

/// The Ollama version `/api/version` reports. Clients compare it to decide
/// which features to use; this is the API level the gateway's shapes follow.
pub const OLLAMA_VERSION: &str = "0.12.0";

/// `POST /api/chat` or `POST /api/generate`.
pub async fn handle(
    state: &ApiState,
    client: &Client,
    endpoint: Endpoint,
    body: Bytes,
) -> Result<Response<ApiBody>, ApiError> {
    let (req, model) = match endpoint {
        Endpoint::Chat => OllamaRequest::chat(&body)?,
        Endpoint::Generate => OllamaRequest::generate(&body)?,
    };
    let Some(req) = req else {
        // A load request still names a model that must exist.
        let models = state.backends.models(&state.core).map_err(ApiError::from)?;
        models::resolve(&models, &state.aliases, request::strip_latest(&model))?;
        return Ok(json_response(
            StatusCode::OK,
            &render::loaded(endpoint, &model),
        ));
    };
    let conversation = req.conversation;
    let stream = conversation.stream;
    let renderer = OllamaRenderer::new(endpoint, req.model, client.started, stream);
    // Chat carries its whole history, as OpenAI chat does; generate is one
    // exchange with nothing to continue.
    let lineage = if endpoint == Endpoint::Chat {
        pipeline::history_lineage(state, client, &conversation)
    } else {
        pipeline::Lineage::default()
    };
    let res = pipeline::respond(
        state,
        client,
        conversation,
        lineage,
        client.output_mode,
        renderer,
    )
    .await?;
    Ok(res.map(|body| match body {
        ApiBody::Events(events) => ApiBody::Events(events.ndjson()),
        body => body,
    }))
}

/// `GET /api/tags`: every model name, tagged `latest`.
pub fn tags(state: &ApiState) -> Result<Response<ApiBody>, ApiError> {
    let models = state.backends.models(&state.core).map_err(ApiError::from)?;
    let modified_at = render::rfc3339_now();
    let list: Vec<Value> = models::listed_names(&models, &state.aliases)
        .iter()
        .map(|name| {
            let tagged = format!("{name}:latest");
            json!({
                "name": tagged, "model": tagged, "modified_at": modified_at,
                "size": 0, "digest": digest(name),
                "details": {"parent_model": "", "format": "", "family": "codex",
                            "families": ["codex"], "parameter_size": "",
                            "quantization_level": ""},
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"models": list})))
}

/// A 64-hex-digit digest per name, the same on every call of one build
/// (clients show and compare it; there are no weights here to hash).
fn digest(name: &str) -> String {
    use std::hash::{Hash, Hasher};
    (0u8..4)
        .map(|i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (i, name).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// `GET /api/version`.
pub fn version() -> Response<ApiBody> {
    json_response(StatusCode::OK, &json!({"version": OLLAMA_VERSION}))
}

/// An error as Ollama answers it: the same status and headers, the body
/// `{"error": "message"}`.
pub fn error_response(e: ApiError) -> Response<ApiBody> {
    let body = serde_json::to_vec(&render::error_json(&e)).expect("json values serialize");
    let mut res = e.into_response();
    *res.body_mut() = ApiBody::Body(Full::new(Bytes::from(body)));
    res
}
