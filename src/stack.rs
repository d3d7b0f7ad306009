//! The one place the layer stack is assembled, outermost first.
//!
//! Each layer has a line saying why it sits where it does. The request
//! extensions the layers insert and read:
//!
//! | extension | inserted by | read by |
//! |---|---|---|
//! | `PeerAddr` | `server::serve` | the `Caller` map (client address, loopback) |
//! | `Route` | the first `map_request`, from the path | metrics label, maintenance and auth exemptions, the `Caller` map, the API's router |
//! | `RequestId` | request-id layer | tracing, echoed as `x-request-id`, the access log |
//! | `AccessNote` | access log | written by the `Caller` map (key name) and the pipeline (model, tokens) |
//! | `AuthenticatedKey` | auth | the `Caller` map |
//! | `Caller` | the `map_request` under auth | rate limit (bucket, quota), `/admin/*`, `/metrics`, the API handlers (stream limit) |
//! | `ReasoningFormat` | the `map_request` under auth (the caller's key, else route, else `PROXY_REASONING_FORMAT`) | `api::Client`, which lets `x-proxy-reasoning-format` override it |
//! | `OutputMode` | output mode (header, else the caller's key or route in `AccessPolicy`, else `PROXY_OUTPUT_MODE`) | the chat handler, for the pipeline's tool-call rendering |
//!
//! Rejections are responses (hyper drops the connection on `Err`), each
//! marked in the response extensions so metrics counts them by cause.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codex_auth::{ApiKey, AuthRejected, KeySet, RequireAuthLayer};
use codex_maintenance::{MaintenanceLayer, MaintenanceRejected};
use codex_metrics::{HttpMetrics, MetricsLayer};
use codex_output_mode::{OutputMode, OutputModeLayer, OutputModeRejected};
use codex_rate_limit::{
    ConcurrencyExceeded, LimiterUnavailable, RateKey, RateLimitLayer, RateLimited,
};
use codex_sse::SseLayer;
use http::{header, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::access::AccessPolicy;
use crate::access_log::{AccessLogLayer, AccessNote};
use crate::api::error::Rejection;
use crate::api::Api;
use crate::caller::Caller;
use crate::cors::CorsForBrowsersLayer;
use crate::reasoning_format::ReasoningFormat;
use crate::route::Route;
use crate::trace_buffer::{TraceBuffer, TraceScopeLayer};
use crate::usage::UsageLedger;

/// The body type at the hyper boundary, erased once here.
pub type BoxBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The whole stack as hyper sees it.
pub type GatewayService = BoxCloneSyncService<Request<Incoming>, Response<BoxBody>, Infallible>;

/// What the stack needs besides the API service.
pub struct StackConfig {
    /// The keys, which routes need one, the rate limits, trust and CORS.
    pub access: Arc<AccessPolicy>,
    pub maintenance: MaintenanceLayer,
    pub http_metrics: HttpMetrics,
    /// The default output mode (`PROXY_OUTPUT_MODE`).
    pub output_mode: OutputMode,
    /// The default reasoning format (`PROXY_REASONING_FORMAT`).
    pub reasoning_format: ReasoningFormat,
    pub sse_keepalive: Duration,
    /// `PROXY_TRACE_BUFFER`: each request's JSON-RPC lines to a file.
    pub trace_buffer: Option<TraceBuffer>,
    /// Each request's usage, per key, model and hour (`PROXY_USAGE_LEDGER`).
    pub usage: Option<UsageLedger>,
    /// Fleet-wide rate limits in Redis (`PROXY_REDIS_URL`), else in-process.
    pub shared_limits: Option<codex_rate_limit::RedisLimits>,
    /// `PROXY_REPLICA_ID`, sent as `x-codex-replica` on every response.
    pub replica: Option<Arc<str>>,
}

/// The request's route, put into its extensions by the first `map_request`.
/// Every request gets one, so `Route::Unknown` is only a fallback.
fn route_of<B>(req: &Request<B>) -> Route {
    req.extensions()
        .get::<Route>()
        .copied()
        .unwrap_or(Route::Unknown)
}

pub fn build(api: Api, config: StackConfig) -> GatewayService {
    let keys = KeySet::new(
        config
            .access
            .keys
            .iter()
            .map(|k| ApiKey::new(k.name.as_str(), k.secret.0.clone()))
            .collect(),
    );
    let auth_exempt = {
        let access = config.access.clone();
        move |req: &Request<Incoming>| {
            // Browsers send preflights without credentials.
            req.method() == Method::OPTIONS || !access.requires_auth(route_of(req))
        }
    };
    let identify = {
        let access = config.access.clone();
        let reasoning_default = config.reasoning_format;
        move |mut req: Request<Incoming>| {
            let caller = Caller::of(&req, &access);
            if let (Some(note), Some(key)) = (req.extensions().get::<AccessNote>(), &caller.key) {
                note.set_key(key);
            }
            // The request's header, if any, is applied by the API (`Client`).
            let reasoning = access
                .reasoning_format(caller.route, caller.key.as_deref())
                .unwrap_or(reasoning_default);
            req.extensions_mut().insert(reasoning);
            req.extensions_mut().insert(caller);
            req
        }
    };
    let rate_policy = {
        let access = config.access.clone();
        move |req: &Request<Incoming>| -> Option<RateKey> {
            let caller = req.extensions().get::<Caller>()?;
            let (bucket, quota) = access.rate_key(
                caller.route,
                caller.client.as_deref()?,
                caller.key.as_deref(),
            )?;
            Some(RateKey::new(bucket, quota))
        }
    };
    let mode_policy = {
        let access = config.access.clone();
        move |req: &Request<Incoming>| -> Option<OutputMode> {
            let caller = req.extensions().get::<Caller>()?;
            access.output_mode(caller.route, caller.key.as_deref())
        }
    };
    let rejection_cause = |parts: &http::response::Parts| -> Option<&'static str> {
        let ext = &parts.extensions;
        if ext.get::<AuthRejected>().is_some() {
            Some("auth")
        } else if ext.get::<MaintenanceRejected>().is_some() {
            Some("maintenance")
        } else if ext.get::<RateLimited>().is_some() {
            Some("rate_limit")
        } else if ext.get::<LimiterUnavailable>().is_some() {
            Some("rate_limit_unavailable")
        } else if ext.get::<ConcurrencyExceeded>().is_some() {
            Some("stream_limit")
        } else if ext.get::<OutputModeRejected>().is_some() {
            Some("bad_output_mode")
        } else if let Some(Rejection(cause)) = ext.get::<Rejection>() {
            // The API's own rejections carry their cause (`ApiError::counted_as`).
            Some(*cause)
        } else {
            None
        }
    };
    let x_request_id = HeaderName::from_static("x-request-id");
    let replica = config
        .replica
        .as_deref()
        .and_then(|r| HeaderValue::from_str(r).ok());

    let service = ServiceBuilder::new()
        // Which replica answered, on every response (rejections too): what a
        // client echoes so the balancer keeps its conversation here.
        .map_response(move |mut res: Response<BoxBody>| {
            if let Some(r) = &replica {
                res.headers_mut().insert(X_CODEX_REPLICA, r.clone());
            }
            res
        })
        // Erase the body type once, at the hyper boundary.
        .map_response(erase_body)
        // The route is decided once, from the path, before anything needs it
        // (metrics label, exemptions, access policy, router).
        .map_request(|mut req: Request<Incoming>| {
            let route = Route::of(req.uri().path());
            req.extensions_mut().insert(route);
            req
        })
        // Secrets are marked before anything can log a header.
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::PROXY_AUTHORIZATION, header::COOKIE]))
        // Every request gets an id early, so every log line and the response carry it.
        .layer(SetRequestIdLayer::new(x_request_id.clone(), RandomRequestId))
        .layer(PropagateRequestIdLayer::new(x_request_id))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<Incoming>| {
            let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        })
        // A 5xx is already an OpenAI error the client got and has its access-log
        // line (below); a second event per failure only floods the log (a
        // probe's 503 every few seconds while the worker is down).
        .on_failure(()))
        // One line per request, rejections included, written when the body
        // ends; the layers below fill in the key name, model and tokens.
        .layer(AccessLogLayer::new(config.usage))
        // Needs the request id; everything the request sends to the worker
        // below runs in its trace scope (absent unless PROXY_TRACE_BUFFER).
        .layer(TraceScopeLayer::new(config.trace_buffer))
        // Outside every rejecting layer, so it counts each rejection by cause,
        // and outside the SSE layer, so a stream's duration ends with its body.
        .layer(MetricsLayer::new(config.http_metrics).route_label(|req: &Request<Incoming>| route_of(req).label()).rejection_cause(rejection_cause))
        // The rejections below answer in OpenAI's envelope; on the Ollama
        // routes they are rewritten into Ollama's `{"error": "…"}` (outside
        // CORS, whose inner body must be `Default`; inside metrics, which
        // reads only the status and the rejection marks this keeps).
        .layer(crate::api::ollama::OllamaRejectionsLayer)
        // Preflights are answered before auth (browsers send them without keys),
        // and rejections below still carry CORS headers so browsers can read them.
        // Only requests with `Origin` (and OPTIONS) take part: the others' answers
        // stay small (see `cors`).
        .option_layer(config.access.cors.clone().map(cors_layer))
        // The cheapest rejection first: in maintenance nothing else needs to run.
        .layer(config.maintenance.exempt(|req: &Request<Incoming>| { let route = route_of(req); route.is_probe_or_metrics() || route.is_admin() }))
        // Who is calling; the key's identity goes into extensions.
        .layer(RequireAuthLayer::new(keys).exempt(auth_exempt))
        // The caller (key, client id, admin, loopback) decided once, right
        // after auth, for everything below.
        .map_request(identify)
        // Keyed by that identity (or the client address), so needs auth first.
        // Fleet-wide in Redis when configured (`PROXY_REDIS_URL`).
        .layer(RateLimitLayer::new(rate_policy).shared(config.shared_limits))
        // A bad x-proxy-output-mode is a 400 before any work starts; without
        // the header the caller's key, then its route, set the default, so
        // it sits below the map that decides the caller.
        .layer(OutputModeLayer::new(config.output_mode).default_by(mode_policy))
        // Turns the API's event streams into SSE bytes with keep-alives.
        .layer(SseLayer::new().keep_alive(config.sse_keepalive))
        .service(api);
    BoxCloneSyncService::new(service)
}

/// The replica that answered (`PROXY_REPLICA_ID`).
pub const X_CODEX_REPLICA: HeaderName = HeaderName::from_static("x-codex-replica");

/// Boxes a response body (see where `build` calls it).
fn erase_body<B>(res: Response<B>) -> Response<BoxBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    res.map(|b| b.map_err(Into::into).boxed_unsync())
}

fn cors_layer(origins: Vec<String>) -> CorsForBrowsersLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let cors = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        // Browser OpenAI clients send x-stainless-* and openai-* headers (the
        // set changes with SDK versions): mirror whatever the preflight asks
        // for. Safe because credentials are bearer keys, not cookies.
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("retry-after"),
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ])
        .max_age(Duration::from_secs(600))
        // Answers differ by whether `Origin` was sent (`CorsForBrowsers`), and
        // preflights' by the headers they ask for.
        .vary([header::ORIGIN, header::ACCESS_CONTROL_REQUEST_HEADERS]);
    CorsForBrowsersLayer::new(cors)
}

#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id: u128 = rand::random();
        // `req_` and 32 hex digits, as `format!("req_{id:032x}")` wrote them.
        let mut text = String::with_capacity(4 + 32);
        text.push_str("req_");
        crate::api::ids::push_lower_hex(&mut text, &id.to_be_bytes());
        HeaderValue::try_from(text).ok().map(RequestId::new)
    }
}
