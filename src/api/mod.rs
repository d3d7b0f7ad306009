//! The HTTP API: OpenAI wire shapes in and out, validation, routing.
//!
//! [`Api`] is the innermost service of the stack. It turns requests into
//! typed core calls and core results into OpenAI JSON or SSE events; it does
//! not know JSON-RPC method names.

mod admin;
pub mod chat;
pub mod completions;
pub mod conversation;
pub mod error;
mod health;
pub mod ids;
pub mod images;
mod metrics_endpoint;
pub mod models;
pub mod ollama;
mod params;
pub mod pipeline;
pub mod responses;
pub mod tools;
pub mod upload;
mod usage;

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

use crate::caller::Caller;
use crate::config::{ApiConfig, ToolsConfig};
use crate::core::CodexCore;
use crate::route::{MethodMatch, Route};
use crate::telemetry::GatewayMetrics;
use error::ApiError;
use models::Aliases;

/// What the API hands the SSE layer: a JSON body or a stream of events.
pub type ApiBody = codex_sse::Payload<Full<Bytes>>;

/// State shared by every request.
pub struct ApiState {
    pub core: CodexCore,
    /// Which backend runs a request's turns (`crate::backend`): app-server
    /// through `core`, or exec.
    pub backends: crate::backend::Backends,
    pub aliases: Aliases,
    pub max_body_bytes: usize,
    /// Bytes all request bodies held at once may take (`PROXY_UPLOAD_BUDGET_BYTES`).
    pub uploads: upload::UploadBudget,
    pub maintenance: Option<MaintenanceHandle>,
    /// The fleet's maintenance switch in Redis (`PROXY_REDIS_URL`): the admin
    /// call switches every replica through it.
    pub fleet_switch: Option<codex_maintenance::FleetSwitch>,
    /// `PROXY_REPLICA_ID`: tags the Responses ids this replica makes.
    pub replica: Option<std::sync::Arc<str>>,
    pub metrics: Option<GatewayMetrics>,
    /// `GET /v1/usage` reads it; `None` with `PROXY_USAGE_LEDGER=false`.
    pub usage: Option<crate::usage::UsageLedger>,
    /// What `GET /metrics` encodes; `None` when metrics are off.
    pub registry: Option<Arc<prometheus_client::registry::Registry>>,
    /// The bearer token `/metrics` accepts from non-loopback clients.
    pub metrics_token: Option<crate::access::Secret>,
    /// Per-client limit on concurrent streams (`PROXY_SSE_MAX_CONCURRENCY`).
    pub stream_limit: Option<codex_rate_limit::KeyedConcurrency>,
    /// Longest a whole chat request may take (`PROXY_TIMEOUT_MS`).
    pub request_timeout: Option<std::time::Duration>,
    /// Interrupt turns whose client went away (`PROXY_KILL_ON_DISCONNECT`).
    pub kill_on_disconnect: bool,
    /// How long a turn cut by `stop`/`max_tokens` runs on so codex can
    /// report its usage (`PROXY_CUT_USAGE_WAIT_MS`).
    pub cut_usage_wait: std::time::Duration,
    /// Operator switches for tool calls.
    pub tools: ToolsConfig,
    /// Fetches http(s) image URLs when the operator allows it.
    pub images: Option<images::ImageFetcher>,
    /// Turns paused on tool calls, for the client's next request.
    pub continuations: Arc<crate::core::ParkedTurns>,
    /// Threads kept loaded between a conversation's requests.
    pub threads: Arc<crate::core::LiveThreads>,
    /// Stored Responses API responses; `None` with `PROXY_RESPONSE_STORE=false`.
    pub responses: Option<crate::store::ResponseStore>,
    draining: Arc<AtomicBool>,
}

impl ApiState {
    /// The state for `config`; what is attached at run time (maintenance
    /// handle, metrics, the `/metrics` registry and token) starts empty.
    /// Fails if the image fetcher cannot load the system's CA roots or the
    /// response store cannot be opened.
    pub fn new(core: CodexCore, config: &ApiConfig) -> Result<ApiState, String> {
        let c = &config.conversations;
        let responses = match (c.store, &c.state_dir) {
            (false, _) => None,
            (true, Some(dir)) => Some(crate::store::ResponseStore::open(
                &dir.join("responses.sqlite3"),
                c.store_ttl,
                c.store_max_bytes,
            )),
            (true, None) => Some(crate::store::ResponseStore::in_memory(
                c.store_ttl,
                c.store_max_bytes,
            )),
        }
        .transpose()
        .map_err(|e| e.to_string())?;
        Ok(ApiState {
            core,
            backends: crate::backend::Backends::default(),
            aliases: config.aliases.clone(),
            max_body_bytes: config.max_body_bytes,
            uploads: upload::UploadBudget::new(config.upload_budget_bytes, config.max_body_bytes),
            maintenance: None,
            fleet_switch: None,
            replica: None,
            metrics: None,
            usage: None,
            registry: None,
            metrics_token: None,
            stream_limit: (config.stream_limit > 0)
                .then(|| codex_rate_limit::KeyedConcurrency::new(config.stream_limit)),
            request_timeout: config.request_timeout,
            kill_on_disconnect: config.kill_on_disconnect,
            cut_usage_wait: config.cut_usage_wait,
            tools: config.tools.clone(),
            images: config
                .image_fetch
                .clone()
                .map(images::ImageFetcher::new)
                .transpose()?,
            continuations: Arc::new(crate::core::ParkedTurns::new(
                config.tools.continuation_ttl,
                config.tools.continuation_max,
            )),
            threads: Arc::new(crate::core::LiveThreads::new(
                c.thread_cache_max,
                c.thread_idle_ttl,
                crate::core::ThreadMetrics::default(),
            )),
            responses,
            draining: Arc::new(AtomicBool::new(false)),
        })
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
    // The stack decided the route; an `Api` called on its own decides here.
    let route = req
        .extensions()
        .get::<Route>()
        .copied()
        .unwrap_or_else(|| Route::of(req.uri().path()));
    if route == Route::Responses && wants_websocket(&req) {
        return Err(ApiError::websocket_refused());
    }
    if route.is_ollama() {
        // Ollama clients read `{"error": "message"}`, whatever went wrong.
        // Boxed, as the other dialects' handlers below: this future is
        // as large as its largest branch and is moved into a box per
        // request, so the branches chat does not take stay out of it.
        return Ok(Box::pin(ollama_route(state, route, req))
            .await
            .unwrap_or_else(ollama::error_response));
    }
    match route.accepts(req.method()) {
        MethodMatch::Served => {}
        MethodMatch::NotAllowed(allow) => return Err(ApiError::method_not_allowed(allow)),
        MethodMatch::NotFound => {
            return Err(ApiError::not_found(format!(
                "Unknown request URL: {} {}.",
                req.method(),
                req.uri().path()
            )))
        }
    }
    match route {
        Route::Healthz => Ok(health::healthz(state)),
        Route::Readyz => Ok(health::readyz(state)),
        Route::Metrics => metrics_endpoint::serve(state, &req),
        Route::AdminMaintenance => {
            let caller = admin::authorize(&req)?;
            let body = if req.method() == Method::POST {
                Some(read_body(req, 64 * 1024, &state.uploads).await?)
            } else {
                None
            };
            admin::maintenance(state, &caller, body).await
        }
        Route::AdminWorkers => {
            admin::authorize(&req)?;
            Ok(admin::workers(state))
        }
        Route::AdminWorkersRestart => {
            let caller = admin::authorize(&req)?;
            let body = read_body(req, 64 * 1024, &state.uploads).await?;
            admin::restart_workers(state, &caller, &body)
        }
        Route::ListModels => {
            let models = state.backends.models(&state.core).map_err(ApiError::from)?;
            Ok(json_response(
                StatusCode::OK,
                &models::list_json(&models, &state.aliases, ids::unix_now()),
            ))
        }
        Route::GetModel => {
            let id = Route::model_id(req.uri().path()).unwrap_or_default();
            let models = state.backends.models(&state.core).map_err(ApiError::from)?;
            models::resolve(&models, &state.aliases, id)?;
            Ok(json_response(
                StatusCode::OK,
                &models::model_object(id, ids::unix_now()),
            ))
        }
        Route::Responses => {
            let client = Client::of(&req)?;
            let body = read_body(req, state.max_body_bytes, &state.uploads).await?;
            Box::pin(responses::handle(state, &client, body)).await
        }
        Route::StoredResponse => {
            let client = Client::of(&req)?;
            responses::handle_stored(
                state,
                &client,
                req.method(),
                req.uri().path(),
                req.uri().query(),
            )
            .await
        }
        Route::Usage => {
            let query = req.uri().query().map(str::to_owned);
            usage::serve(state, query, req.extensions().get::<Caller>().cloned()).await
        }
        Route::ChatCompletions => {
            let client = Client::of(&req)?;
            let body = read_body(req, state.max_body_bytes, &state.uploads).await?;
            chat::handle(state, &client, body).await
        }
        Route::Completions => {
            let client = Client::of(&req)?;
            let body = read_body(req, state.max_body_bytes, &state.uploads).await?;
            Box::pin(completions::handle(state, &client, body)).await
        }
        // `accepts` serves nothing on these; Ollama's are answered above.
        Route::Admin
        | Route::Unknown
        | Route::OllamaTags
        | Route::OllamaVersion
        | Route::OllamaChat
        | Route::OllamaGenerate => Err(ApiError::not_found(format!(
            "Unknown request URL: {} {}.",
            req.method(),
            req.uri().path()
        ))),
    }
}

/// The Ollama routes, whose errors the caller renders in Ollama's shape.
async fn ollama_route<B>(
    state: &ApiState,
    route: Route,
    req: Request<B>,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match route.accepts(req.method()) {
        MethodMatch::Served => {}
        MethodMatch::NotAllowed(allow) => return Err(ApiError::method_not_allowed(allow)),
        MethodMatch::NotFound => return Err(ApiError::not_found("404 page not found")),
    }
    let endpoint = match route {
        Route::OllamaTags => return ollama::tags(state),
        Route::OllamaVersion => return Ok(ollama::version()),
        Route::OllamaGenerate => ollama::Endpoint::Generate,
        _ => ollama::Endpoint::Chat,
    };
    let client = Client::of(&req)?;
    let body = read_body(req, state.max_body_bytes, &state.uploads).await?;
    ollama::handle(state, &client, endpoint, body).await
}

/// A WebSocket handshake (`Upgrade: websocket`). Codex CLI pointed at this
/// gateway tries the Responses WebSocket transport first; it must learn at
/// once that only HTTP is served, so it falls back instead of retrying.
fn wants_websocket<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Who is calling, as the chat and responses handlers need it: the
/// [`Caller`]'s client id and the request's [`OutputMode`] extension.
///
/// [`OutputMode`]: codex_output_mode::OutputMode
#[derive(Debug, Clone)]
pub struct Client {
    /// `key:<name>` with a key, else `ip:<address>`; `None` when unknown.
    pub id: Option<String>,
    /// Whose conversations and stored responses: the key's name, `""` on a
    /// gateway without keys (where every caller shares them).
    pub owner: String,
    pub output_mode: codex_output_mode::OutputMode,
    /// How chat shows reasoning: the `x-proxy-reasoning-format` header,
    /// else the default the stack decided (key, route, environment).
    pub reasoning_format: crate::reasoning_format::ReasoningFormat,
    pub started: std::time::Instant,
    /// The request's access-log note (model, tokens), when the stack has one.
    pub note: Option<crate::access_log::AccessNote>,
}

impl Client {
    /// A header naming no reasoning format is a 400, like a bad output mode.
    fn of<B>(req: &Request<B>) -> Result<Client, ApiError> {
        let reasoning_format = match req
            .headers()
            .get(crate::reasoning_format::ReasoningFormat::HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .filter(|v| !v.trim().is_empty())
        {
            Some(v) => v.parse().map_err(|e: String| {
                ApiError::invalid(crate::reasoning_format::ReasoningFormat::HEADER.as_str(), e)
                    .code("invalid_reasoning_format")
            })?,
            None => req
                .extensions()
                .get::<crate::reasoning_format::ReasoningFormat>()
                .copied()
                .unwrap_or_default(),
        };
        Ok(Client {
            reasoning_format,
            id: req
                .extensions()
                .get::<Caller>()
                .and_then(|c| c.client.clone()),
            owner: req
                .extensions()
                .get::<Caller>()
                .and_then(|c| c.key.clone())
                .unwrap_or_default(),
            output_mode: req
                .extensions()
                .get::<codex_output_mode::OutputMode>()
                .copied()
                .unwrap_or_default(),
            started: std::time::Instant::now(),
            note: req
                .extensions()
                .get::<crate::access_log::AccessNote>()
                .cloned(),
        })
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

pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<ApiBody> {
    let body = serde_json::to_vec(value).expect("response bodies serialize");
    let mut res = Response::new(ApiBody::Body(Full::new(Bytes::from(body))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
