//! The HTTP API: OpenAI wire shapes in and out, validation, routing.
//!
//! [`Api`] is the innermost service of the stack. It turns requests into
//! typed core calls and core results into OpenAI JSON or SSE events; it does
//! not know JSON-RPC method names.

mod admin;
pub mod chat;
pub mod continuation;
pub mod error;
mod health;
pub mod ids;
pub mod images;
mod metrics_endpoint;
pub mod models;
pub mod responses;
pub mod tools;
pub mod upload;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use codex_maintenance::MaintenanceHandle;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;

use crate::access::AccessPolicy;
use crate::core::CodexCore;
use crate::telemetry::GatewayMetrics;
use error::ApiError;
use models::Aliases;

/// What the API hands the SSE layer: a JSON body or a stream of events.
pub type ApiBody = codex_sse::Payload<Full<Bytes>>;

/// The route a request matched, with a bounded set of names (metrics labels).
pub fn route_name(path: &str) -> &'static str {
    match path {
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/v1/models" => "/v1/models",
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/responses" => "/v1/responses",
        p if p.starts_with("/v1/models/") => "/v1/models/{id}",
        p if p.starts_with("/admin/") => "/admin",
        _ => "other",
    }
}

/// State shared by every request.
pub struct ApiState {
    pub core: CodexCore,
    pub aliases: Aliases,
    pub max_body_bytes: usize,
    /// Bytes all request bodies held at once may take (`PROXY_UPLOAD_BUDGET_BYTES`).
    pub uploads: upload::UploadBudget,
    pub maintenance: Option<MaintenanceHandle>,
    pub access: Arc<AccessPolicy>,
    pub metrics: Option<GatewayMetrics>,
    /// What `GET /metrics` encodes; `None` when metrics are off.
    pub registry: Option<Arc<prometheus_client::registry::Registry>>,
    pub metrics_token: Option<String>,
    /// Per-client limit on concurrent streams (`PROXY_SSE_MAX_CONCURRENCY`).
    pub stream_limit: Option<codex_rate_limit::KeyedConcurrency>,
    pub trust_proxy: bool,
    /// Longest a whole chat request may take (`PROXY_TIMEOUT_MS`).
    pub request_timeout: Option<std::time::Duration>,
    /// Interrupt turns whose client went away (`PROXY_KILL_ON_DISCONNECT`).
    pub kill_on_disconnect: bool,
    /// Operator switches for tool calls.
    pub tools: crate::config::ToolsConfig,
    /// Fetches http(s) image URLs when the operator allows it.
    pub images: Option<images::ImageFetcher>,
    /// Turns paused on tool calls, for the client's next request.
    pub continuations: Arc<continuation::Continuations>,
    draining: Arc<AtomicBool>,
}

impl ApiState {
    pub fn new(core: CodexCore, aliases: Aliases, max_body_bytes: usize) -> ApiState {
        ApiState {
            core,
            aliases,
            max_body_bytes,
            uploads: upload::UploadBudget::new(upload::DEFAULT_BUDGET_BYTES, max_body_bytes),
            maintenance: None,
            access: Arc::new(AccessPolicy::default()),
            metrics: None,
            registry: None,
            metrics_token: None,
            stream_limit: None,
            trust_proxy: false,
            request_timeout: None,
            kill_on_disconnect: true,
            tools: crate::config::ToolsConfig::default(),
            images: None,
            continuations: Arc::new(continuation::Continuations::new(
                std::time::Duration::from_secs(300),
                256,
            )),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag `serve` sets when shutdown starts (readiness turns false).
    pub fn draining_flag(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The API service.
#[derive(Clone)]
pub struct Api {
    state: Arc<ApiState>,
}

impl Api {
    pub fn new(state: Arc<ApiState>) -> Api {
        Api { state }
    }
}

impl<B> tower::Service<Request<B>> for Api
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ApiBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            Ok(route(&state, req)
                .await
                .unwrap_or_else(|e| e.into_response()))
        })
    }
}

async fn route<B>(state: &ApiState, req: Request<B>) -> Result<Response<ApiBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (path.as_str(), &method) {
        ("/healthz", &Method::GET | &Method::HEAD) => Ok(health::healthz(state)),
        ("/readyz", &Method::GET | &Method::HEAD) => Ok(health::readyz(state)),
        ("/metrics", &Method::GET) => metrics_endpoint::serve(state, &req),
        ("/admin/maintenance", &Method::GET | &Method::POST) => {
            let caller = admin::authorize(state, &req)?;
            let body = if method == Method::POST {
                Some(read_body(req, 64 * 1024, &state.uploads).await?)
            } else {
                None
            };
            admin::maintenance(state, &caller, body)
        }
        ("/v1/models", &Method::GET | &Method::HEAD) => {
            let models = state.core.models().map_err(ApiError::from)?;
            Ok(json_response(
                StatusCode::OK,
                &models::list_json(&models, &state.aliases, ids::unix_now()),
            ))
        }
        (p, &Method::GET) if p.starts_with("/v1/models/") => {
            let id = &p["/v1/models/".len()..];
            let models = state.core.models().map_err(ApiError::from)?;
            models::resolve(&models, &state.aliases, id)?;
            Ok(json_response(
                StatusCode::OK,
                &models::model_object(id, ids::unix_now()),
            ))
        }
        ("/v1/responses", &Method::POST) => {
            let client = Client::of(state, &req);
            let body = read_body(req, state.max_body_bytes, &state.uploads).await?;
            responses::handle(state, &client, body).await
        }
        ("/v1/chat/completions", &Method::POST) => {
            let client = Client::of(state, &req);
            let body = read_body(req, state.max_body_bytes, &state.uploads).await?;
            chat::handle(state, &client, body).await
        }
        ("/healthz" | "/readyz" | "/v1/models", _) => Err(ApiError::method_not_allowed("GET")),
        ("/v1/chat/completions" | "/v1/responses", _) => Err(ApiError::method_not_allowed("POST")),
        _ => Err(ApiError::not_found(format!(
            "Unknown request URL: {method} {path}."
        ))),
    }
}

/// Who is calling, as the handlers need it.
#[derive(Debug, Clone)]
pub struct Client {
    /// `key:<name>` with a key, else `ip:<address>`; `None` when unknown.
    pub id: Option<String>,
    pub output_mode: codex_output_mode::OutputMode,
    pub started: std::time::Instant,
}

impl Client {
    fn of<B>(state: &ApiState, req: &Request<B>) -> Client {
        let id = match req.extensions().get::<codex_auth::AuthenticatedKey>() {
            Some(key) => Some(format!("key:{}", key.name())),
            None => crate::stack::client_ip(req, state.trust_proxy).map(|ip| format!("ip:{ip}")),
        };
        Client {
            id,
            output_mode: req
                .extensions()
                .get::<codex_output_mode::OutputMode>()
                .copied()
                .unwrap_or_default(),
            started: std::time::Instant::now(),
        }
    }
}

/// Parses a request body that must be a JSON object (400 otherwise).
pub(crate) fn json_object(
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("We could not parse the JSON body of your request: {e}."),
        )
        .code("invalid_json")
    })?;
    match value {
        serde_json::Value::Object(obj) => Ok(obj),
        _ => Err(ApiError::invalid(
            "body",
            "The request body must be a JSON object.",
        )),
    }
}

pub use upload::read_body;

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ApiBody> {
    let body = serde_json::to_vec(value).expect("json values serialize");
    let mut res = Response::new(ApiBody::Body(Full::new(Bytes::from(body))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
