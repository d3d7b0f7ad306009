//! The HTTP server: routes, request recording, and the paced SSE body.
//!
//! Codex opens one HTTP/1.1 connection per in-flight model request, so every connection
//! is its own task and a slow stream never holds up another. Response bodies are lazy
//! streams: a `[[slow]]` pause is a timer inside the body, and when codex hangs up the body
//! is dropped with the connection, so nothing keeps running for a client that left.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::events::{self, Meta, Step};
use crate::reply::{self, Reply};
use crate::{request, MODEL_ID};

/// Request bodies above this are refused with 413 (images arrive inline as data URLs).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// How long [`OfflineModel::shutdown`] lets in-flight responses finish before dropping them.
const DRAIN: Duration = Duration::from_secs(1);

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// State shared by every connection.
#[derive(Debug, Default)]
struct Shared {
    /// Every parsed `POST /v1/responses` body, oldest first.
    requests: Mutex<Vec<Value>>,
    /// Numbers `resp_N`, `msg_N`, `fc_N`/`call_N`; one counter so ids never repeat.
    next_id: AtomicU64,
    /// SSE bodies being sent right now.
    open_streams: AtomicUsize,
    /// SSE bodies dropped before their last event (the client hung up), `[[break]]` aside.
    dropped_streams: AtomicUsize,
    /// The most SSE bodies open at once since the start.
    peak_open_streams: AtomicUsize,
    /// Input tokens of the last request under each `prompt_cache_key`.
    prompt_cache: Mutex<std::collections::HashMap<String, u64>>,
    /// Per API key (the `Authorization: Bearer` token): requests seen, and
    /// whether the account behind it was revoked or ran out of quota.
    accounts: Mutex<std::collections::HashMap<String, Account>>,
}

/// One credential as the model sees it (see [`OfflineModel::revoke`]).
#[derive(Debug, Default, Clone, Copy)]
struct Account {
    /// `POST /v1/responses` requests that carried this key, refused ones included.
    requests: usize,
    state: AccountState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum AccountState {
    #[default]
    Usable,
    /// Every request gets 401, as for a revoked key or an expired login.
    Revoked,
    /// Every request gets the `[[quota]]` 429 until this unix second.
    Exhausted { resets_at: u64 },
}

impl Shared {
    /// Reserves `n` consecutive ids and returns the first (ids start at 1).
    fn reserve(&self, n: u64) -> u64 {
        self.next_id.fetch_add(n, Ordering::Relaxed) + 1
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Account>> {
        self.accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a request under its key and says what its account allows.
    fn account_of(&self, key: Option<&str>) -> AccountState {
        let Some(key) = key else {
            return AccountState::Usable;
        };
        let mut accounts = self.accounts();
        let account = accounts.entry(key.to_owned()).or_default();
        account.requests += 1;
        if let AccountState::Exhausted { resets_at } = account.state {
            if resets_at <= unix_now() {
                account.state = AccountState::Usable;
            }
        }
        account.state
    }

    fn set_account(&self, key: &str, state: AccountState) {
        self.accounts().entry(key.to_owned()).or_default().state = state;
    }

    fn recorded(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// A running offline model: a fake of the OpenAI Responses API on `127.0.0.1`.
///
/// Dropping it stops the server too (in the background); [`OfflineModel::shutdown`] waits.
#[derive(Debug)]
pub struct OfflineModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl OfflineModel {
    /// Binds `127.0.0.1:port` (0 = ephemeral) and serves in a tokio task.
    pub async fn start(port: u16) -> io::Result<OfflineModel> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel::<()>();
        // A dropped sender counts as a stop signal, so a forgotten model does not linger.
        let task = tokio::spawn(serve(listener, shared.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(OfflineModel {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The provider base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request body received on `POST /v1/responses` (parsed JSON), oldest first.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.shared.recorded()
    }

    /// Number of SSE responses being streamed right now.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::SeqCst)
    }

    /// Number of SSE responses the client dropped before their last event (codex
    /// cancelling a turn, or a disconnect). A `[[break]]` does not count: the model ended it.
    pub fn dropped_streams(&self) -> usize {
        self.shared.dropped_streams.load(Ordering::SeqCst)
    }

    /// The most SSE responses streamed at the same time since the start: what
    /// a gateway's concurrency limit really let through to the model.
    pub fn peak_open_streams(&self) -> usize {
        self.shared.peak_open_streams.load(Ordering::SeqCst)
    }

    /// From now on every request with `Authorization: Bearer KEY` gets 401,
    /// as an OpenAI or ChatGPT backend answers a revoked key or an expired
    /// login: the credential of whoever uses it is no longer good, whatever
    /// the prompt. Requests with other keys are served as before.
    pub fn revoke(&self, key: &str) {
        self.shared.set_account(key, AccountState::Revoked);
    }

    /// From now on, for `secs` seconds, every request with
    /// `Authorization: Bearer KEY` gets the `[[quota SECONDS]]` answer (429
    /// `usage_limit_reached`, resetting `secs` from now): that account is out
    /// of quota, the others are not.
    pub fn exhaust(&self, key: &str, secs: u64) {
        let resets_at = unix_now() + secs;
        self.shared
            .set_account(key, AccountState::Exhausted { resets_at });
    }

    /// Makes KEY's account usable again (a new login, a quota reset).
    pub fn restore(&self, key: &str) {
        self.shared.set_account(key, AccountState::Usable);
    }

    /// How many `POST /v1/responses` requests carried `Authorization: Bearer
    /// KEY`, refused ones included: which worker (account) the model saw.
    pub fn requests_with_key(&self, key: &str) -> usize {
        self.shared.accounts().get(key).map_or(0, |a| a.requests)
    }

    /// Stops accepting, lets in-flight responses finish for up to a second, then drops
    /// what is left and returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Accepts connections until `shutdown` resolves, then drains for [`DRAIN`].
async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    // Dropping the JoinSet aborts connections that outlive the drain.
    let mut connections = JoinSet::new();
    // No `.timer()`: that would arm hyper's 30 s header-read timeout, which also closes idle
    // keep-alive connections, and a test that pauses 30 s between turns could then race a
    // pooled connection closing under codex. A loopback test fake has no slow-loris to fear.
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(route(req, shared).await) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        connections.spawn(graceful.watch(conn));
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    connections.shutdown().await;
}

async fn route(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/responses") => responses(req, shared).await,
        (&Method::GET, "/v1/_requests") => {
            json_response(StatusCode::OK, &Value::from(shared.recorded()))
        }
        (&Method::GET, "/healthz") => full(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/v1/_stats") => json_response(StatusCode::OK, &stats(&shared)),
        (&Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [
                {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "codex-offline-model"}
            ]}),
        ),
        (_, "/v1/responses" | "/v1/_requests" | "/v1/_stats" | "/healthz" | "/v1/models") => {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!(
                    "method {} not allowed on {}",
                    req.method(),
                    req.uri().path()
                ),
            )
        }
        (_, path) => error_response(StatusCode::NOT_FOUND, &format!("no route for {path}")),
    }
}

fn stats(shared: &Shared) -> Value {
    let by_key: serde_json::Map<String, Value> = shared
        .accounts()
        .iter()
        .map(|(k, a)| (k.clone(), Value::from(a.requests)))
        .collect();
    json!({
        "requests": shared.requests.lock().unwrap_or_else(|p| p.into_inner()).len(),
        "open_streams": shared.open_streams.load(Ordering::SeqCst),
        "dropped_streams": shared.dropped_streams.load(Ordering::SeqCst),
        "requests_by_key": by_key,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token of `Authorization: Bearer TOKEN`.
fn bearer(req: &Request<Incoming>) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// A prompt cache the way providers keep one: per `prompt_cache_key` (codex
/// sends its thread id), the input of the previous request under the same
/// key is cached, so a conversation that keeps its key reports the earlier
/// turns' tokens as `cached_tokens`, and one rebuilt under a new key reports
/// none. Deterministic: `min(previous input, this input)`.
fn cached_tokens(shared: &Shared, body: &Value, input_tokens: u64) -> u64 {
    let Some(key) = body.get("prompt_cache_key").and_then(Value::as_str) else {
        return 0;
    };
    let mut cache = shared
        .prompt_cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .insert(key.to_owned(), input_tokens)
        .map_or(0, |previous| previous.min(input_tokens))
}

async fn responses(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let key = bearer(&req);
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        Err(err) => {
            return error_response(StatusCode::BAD_REQUEST, &format!("reading body: {err}"))
        }
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(body @ Value::Object(_)) => body,
        Ok(_) => return error_response(StatusCode::BAD_REQUEST, "body is not a JSON object"),
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("body is not JSON (compressed?): {err}"),
            )
        }
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(body.clone());

    // The account behind the key decides before the prompt does.
    let reply = match shared.account_of(key.as_deref()) {
        AccountState::Revoked => Reply::Unauthorized,
        AccountState::Exhausted { resets_at } => {
            Reply::Quota(resets_at.saturating_sub(unix_now()).max(1))
        }
        AccountState::Usable => reply::decide(&body),
    };
    let input_tokens = request::input_chars(&body).div_ceil(4) as u64;
    let cached_tokens = cached_tokens(&shared, &body, input_tokens);
    let meta = Meta {
        response_id: format!("resp_{}", shared.reserve(1)),
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(MODEL_ID)
            .to_owned(),
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        input_tokens,
        cached_tokens,
    };
    let streaming = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    match reply {
        Reply::Error(status) => simulated_error(status),
        Reply::Quota(secs) => usage_limit_reached(secs),
        Reply::Unauthorized => token_invalidated(),
        Reply::Text {
            text,
            delay,
            break_after,
            reasoning,
        } => {
            let id = shared.reserve(1);
            if streaming {
                sse(
                    events::text_stream(&meta, id, &text, delay, break_after, reasoning.as_deref()),
                    shared,
                )
            } else if break_after.is_some() {
                aborted()
            } else {
                let (output, tokens, reasoning_tokens) =
                    events::text_output(id, &text, reasoning.as_deref());
                final_json(&meta, output, tokens, reasoning_tokens)
            }
        }
        Reply::Calls(calls) => {
            let first = shared.reserve(calls.len() as u64);
            if streaming {
                sse(events::calls_stream(&meta, first, &calls), shared)
            } else {
                let (output, tokens) = events::calls_output(first, &calls);
                final_json(&meta, output, tokens, 0)
            }
        }
    }
}

// === responses ===

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    full(status, "application/json", value.to_string())
}

fn error_body(status: StatusCode, message: &str) -> Value {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", "invalid_api_key"),
        403 => ("invalid_request_error", "forbidden"),
        404 => ("invalid_request_error", "not_found"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("requests", "rate_limit_exceeded"),
        400..=499 => ("invalid_request_error", "invalid_request"),
        _ => ("server_error", "server_error"),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &error_body(status, message))
}

/// The reply to `[[error STATUS]]`.
fn simulated_error(status: u16) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("error");
    let mut res = error_response(
        status,
        &format!("offline-model: simulated HTTP {} {reason}", status.as_u16()),
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

/// The reply to `[[unauthorized]]` and to a revoked key: 401 with the body
/// the ChatGPT backend sends for a login that is no longer valid (the
/// OpenAI API sends the same envelope with `invalid_api_key` for a revoked
/// key). Codex 0.171.0 fails the turn with `codexErrorInfo:
/// {"httpConnectionFailed":{"httpStatusCode":401}}`.
fn token_invalidated() -> Response<Body> {
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({
            "error": {
                "message": "Your authentication token has been invalidated. Please try signing in again.",
                "type": "invalid_request_error",
                "code": "token_invalidated",
                "param": null,
            },
            "status": 401,
        }),
    )
}

/// The reply to `[[quota SECONDS]]`: what the ChatGPT backend answers an
/// account whose usage limit is reached. Codex reads `error.type` and
/// `resets_at` (unix seconds) of a 429 body into `usageLimitExceeded` with the
/// reset time; the `x-codex-primary-*` headers are its rate-limit snapshot
/// (the window used up, resetting then).
fn usage_limit_reached(secs: u64) -> Response<Body> {
    let resets_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + secs;
    let mut res = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &serde_json::json!({"error": {
            "type": "usage_limit_reached",
            "code": "usage_limit_reached",
            "message": "offline-model: simulated usage limit reached",
            "param": null,
            "plan_type": "plus",
            "resets_at": resets_at,
            "resets_in_seconds": secs,
        }}),
    );
    let headers = res.headers_mut();
    for (name, value) in [
        ("x-codex-primary-used-percent", "100".to_owned()),
        ("x-codex-primary-window-minutes", "300".to_owned()),
        ("x-codex-primary-reset-at", resets_at.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    res
}

fn final_json(
    meta: &Meta,
    output: Vec<Value>,
    output_tokens: u64,
    reasoning_tokens: u64,
) -> Response<Body> {
    let usage = events::final_usage(meta, output_tokens, reasoning_tokens);
    json_response(
        StatusCode::OK,
        &events::response(meta, "completed", output, usage),
    )
}

fn abort_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "offline-model: [[break]] drops the connection",
    )
}

/// A response whose body fails at once, so hyper drops the connection.
fn aborted() -> Response<Body> {
    let body = StreamBody::new(stream::once(async { Err(abort_error()) }));
    let mut res = Response::new(BodyExt::boxed_unsync(body));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Counts an SSE body as open while it lives, and as dropped if it dies before its end.
struct StreamGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl StreamGuard {
    fn new(shared: Arc<Shared>) -> Self {
        let open = shared.open_streams.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_open_streams.fetch_max(open, Ordering::SeqCst);
        Self {
            shared,
            finished: false,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.dropped_streams.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An SSE response that plays `steps`: pauses are timers, `Abort` fails the body so hyper
/// closes the connection without the terminating chunk.
fn sse(steps: Vec<Step>, shared: Arc<Shared>) -> Response<Body> {
    let state = (steps.into_iter(), StreamGuard::new(shared));
    let frames = stream::unfold(state, |(mut steps, mut guard)| async move {
        loop {
            match steps.next()? {
                Step::Pause(d) => tokio::time::sleep(d).await,
                Step::Event(bytes) => {
                    guard.finished = steps.len() == 0;
                    return Some((Ok(Frame::data(bytes)), (steps, guard)));
                }
                Step::Abort => {
                    guard.finished = true;
                    // Hand hyper a `Pending` first: it flushes what it has buffered, so the
                    // client really receives the deltas before the connection drops.
                    tokio::task::yield_now().await;
                    return Some((Err(abort_error()), (Vec::new().into_iter(), guard)));
                }
            }
        }
    })
    .boxed();
    let mut res = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
