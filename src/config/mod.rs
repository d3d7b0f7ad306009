//! Configuration from environment variables, parsed once into typed groups.
//!
//! The names are the ones users of the earlier Node.js proxy know. Every
//! variable is declared once in [`VARIABLES`], the only source of defaults
//! and of `--help` (and, through it, of the table in `docs/configuration.md`).
//!
//! [`Config::from_env`] reads each variable exactly once and hands each group
//! to its owner, in the owner's own type: [`ServeConfig`] (the server),
//! [`AccessPolicy`] (keys and route files read and checked here, once),
//! [`ApiConfig`] (the API), [`MaintenanceConfig`] (the maintenance layer),
//! [`CoreConfig`] (the core) and [`WorkerConfig`] (the supervisor). This
//! module only parses; it imports the owners' types, never the API's
//! handlers (see `config/api.rs`).

mod api;
mod env;

use std::path::PathBuf;

use codex_maintenance::MaintenanceConfig;
use codex_rate_limit::Quota;

use crate::access::{AccessConfig, AccessPolicy, Secret};
use crate::backend::{BackendConfig, BackendKind};
use crate::core::CoreConfig;
use crate::server::ServeConfig;
use crate::trace_buffer::TraceConfig;
use crate::worker::{PoolConfig, SandboxMode, WorkerConfig};

pub use crate::reasoning_format::ReasoningFormat;
pub use api::{Aliases, ApiConfig, ConversationConfig, ImageFetchConfig, ToolsConfig};
pub use env::{ConfigError, Env, Variable};

/// Every variable, in the order `--help` prints them.
pub const VARIABLES: &[Variable] = &[
    Variable { name: "PORT", default: "11435", help: "TCP port to listen on" },
    Variable { name: "PROXY_HOST", default: "127.0.0.1", help: "address to bind; anything but loopback requires PROXY_API_KEY (or PROXY_ALLOW_UNAUTHENTICATED=true)" },
    Variable { name: "PROXY_API_KEY", default: "", help: "bearer key(s) clients must present; several separated by commas" },
    Variable { name: "PROXY_API_KEYS_FILE", default: "", help: "TOML file of named keys with optional per-key rate limits (see docs/configuration.md)" },
    Variable { name: "PROXY_ALLOW_UNAUTHENTICATED", default: "false", help: "allow listening beyond loopback with no key configured" },
    Variable { name: "PROXY_PROTECT_MODELS", default: "false", help: "require a key for GET /v1/models too" },
    Variable { name: "PROXY_BACKEND", default: "", help: "what runs turns: app-server (when unset) | exec, one `codex exec --json` process per turn, no app-server started without a canary (see docs/app-server-migration/)" },
    Variable { name: "PROXY_USE_APP_SERVER", default: "", help: "the plan's name for the switch: true = PROXY_BACKEND=app-server, false = exec; must agree with PROXY_BACKEND when both are set" },
    Variable { name: "PROXY_BACKEND_CANARY_PERCENT", default: "0", help: "share (0-100) of new conversations sent to the other backend, sticky per conversation" },
    Variable { name: "CODEX_BIN", default: "", help: "path of the native codex binary (default: ./.tools/codex install, then `codex` on PATH)" },
    Variable { name: "CODEX_HOME", default: "", help: "codex state and config.toml directory, passed to the worker as given (default: codex's own ~/.codex)" },
    Variable { name: "PROXY_CODEX_WORKDIR", default: "", help: "working directory of the worker and its threads (default: a private temp dir)" },
    Variable { name: "PROXY_SANDBOX_MODE", default: "read-only", help: "codex sandbox: read-only | workspace-write | danger-full-access" },
    Variable { name: "PROXY_ENABLE_CODEX_TOOLS", default: "false", help: "DANGER: let the model use codex's own tools (shell, file viewing, ...) on this host" },
    Variable { name: "PROXY_MODEL_PROVIDER", default: "", help: "codex model provider id for threads (default: the worker's configured provider)" },
    Variable { name: "PROXY_MAX_BODY_BYTES", default: "16777216", help: "largest accepted request body; larger gets 413" },
    Variable { name: "PROXY_UPLOAD_BUDGET_BYTES", default: "67108864", help: "request bodies held at once may take this many bytes in all; beyond, 429 overloaded (raised to PROXY_MAX_BODY_BYTES if below)" },
    Variable { name: "PROXY_HEADER_TIMEOUT_MS", default: "10000", help: "time a client has to send request headers; also how long a connection may sit with no request in flight" },
    Variable { name: "PROXY_SHUTDOWN_DRAIN_MS", default: "30000", help: "on SIGTERM/SIGINT, how long in-flight requests and streams may finish" },
    Variable { name: "PROXY_LOG_FORMAT", default: "text", help: "text | json" },
    Variable { name: "PROXY_USAGE_LEDGER", default: "true", help: "record token usage per key, model and hour in usage.sqlite3 under PROXY_STATE_DIR (GET /v1/usage)" },
    Variable { name: "PROXY_USAGE_RETENTION_DAYS", default: "400", help: "usage older than this many days is deleted" },
    Variable { name: "PROXY_TRACE_BUFFER", default: "false", help: "write each request's JSON-RPC traffic with the worker to PROXY_TRACE_DIR (docs/runbooks/trace-buffer.md)" },
    Variable { name: "PROXY_TRACE_DIR", default: "", help: "directory of the trace files, {timestamp}-{requestId}.json (default: trace-buffer under PROXY_STATE_DIR)" },
    Variable { name: "PROXY_TRACE_MAX_AGE_MS", default: "86400000", help: "trace files older than this are removed" },
    Variable { name: "PROXY_TRACE_MAX_FILES", default: "100", help: "at most this many trace files are kept (the oldest go first)" },
    Variable { name: "PROXY_TRACE_INCLUDE_CONTENT", default: "false", help: "keep message text and image data in traces (secrets are always removed)" },
    Variable { name: "PROXY_MODEL_ALIASES", default: "", help: "extra model names, e.g. codex-5=gpt-5-codex,codex-5-high=gpt-5-codex-high" },
    Variable { name: "PROXY_OUTPUT_MODE", default: "obsidian-xml", help: "how tool calls reach clients: obsidian-xml | openai-json (per request: x-proxy-output-mode; per key or route: the keys and route files)" },
    Variable { name: "PROXY_REASONING_FORMAT", default: "field", help: "how chat clients get reasoning summaries: field (reasoning_content) | think-tags | off (per request: x-proxy-reasoning-format; per key or route: the keys and route files)" },
    Variable { name: "PROXY_SSE_KEEPALIVE_MS", default: "15000", help: "SSE comment sent after this much silence (0 disables)" },
    Variable { name: "PROXY_STREAM_IDLE_TIMEOUT_MS", default: "300000", help: "a turn whose worker stays silent this long fails with 504 (0 disables)" },
    Variable { name: "PROXY_ENABLE_CORS", default: "true", help: "answer CORS preflights and add CORS headers (to requests that carry `Origin`)" },
    Variable { name: "PROXY_CORS_ALLOWED_ORIGINS", default: "*", help: "comma-separated origins, or *" },
    Variable { name: "PROXY_MAINTENANCE_MODE", default: "false", help: "start in maintenance mode (503 for API requests)" },
    Variable { name: "PROXY_MAINTENANCE_RETRY_AFTER_S", default: "30", help: "Retry-After sent while in maintenance" },
    Variable { name: "PROXY_MAINTENANCE_MESSAGE", default: "The service is under maintenance. Please retry later.", help: "message sent while in maintenance" },
    Variable { name: "PROXY_RATE_LIMIT_ENABLED", default: "false", help: "limit requests per key (or per client address without keys)" },
    Variable { name: "PROXY_RATE_LIMIT_WINDOW_MS", default: "60000", help: "rate-limit window" },
    Variable { name: "PROXY_RATE_LIMIT_MAX", default: "60", help: "requests per window and key" },
    Variable { name: "PROXY_TRUST_PROXY", default: "false", help: "take the client address from X-Forwarded-For (only behind a trusted proxy)" },
    Variable { name: "PROXY_TRUSTED_PROXY_HOPS", default: "1", help: "trusted proxies in front of the gateway that each append to X-Forwarded-For; the client is that many entries from the right" },
    Variable { name: "PROXY_CONFIG", default: "", help: "TOML file with per-route auth and rate limits (see docs/configuration.md)" },
    Variable { name: "PROXY_SSE_MAX_CONCURRENCY", default: "0", help: "concurrent streams per key (or client address); 0 = unlimited" },
    Variable { name: "WORKER_MAX_CONCURRENCY", default: "32", help: "turns running on each worker at once (the gateway runs this × WORKER_POOL_SIZE, exec turns included)" },
    Variable { name: "WORKER_QUEUE_MAX", default: "64", help: "requests waiting for a turn slot; beyond it 429 with Retry-After" },
    Variable { name: "WORKER_QUEUE_TIMEOUT_MS", default: "10000", help: "longest wait for a turn slot before 429" },
    Variable { name: "PROXY_TIMEOUT_MS", default: "600000", help: "longest a whole request may take before 504 (0 disables)" },
    Variable { name: "PROXY_KILL_ON_DISCONNECT", default: "true", help: "interrupt the turn when the client disconnects" },
    Variable { name: "PROXY_CUT_USAGE_WAIT_MS", default: "30000", help: "how long a turn cut by stop or max_tokens keeps running so its token usage can be reported (0: interrupt at the cut, tokens unreported)" },
    Variable { name: "PROXY_ENABLE_PARALLEL_TOOL_CALLS", default: "false", help: "allow several tool calls in one response (else one per response)" },
    Variable { name: "PROXY_STOP_AFTER_TOOLS", default: "false", help: "end a response once the model wrote <use_tool> blocks" },
    Variable { name: "PROXY_STOP_AFTER_TOOLS_MODE", default: "burst", help: "first: stop at the first block; burst: after a burst of blocks" },
    Variable { name: "PROXY_STOP_AFTER_TOOLS_GRACE_MS", default: "300", help: "how long to wait for more tool calls after one" },
    Variable { name: "PROXY_SUPPRESS_TAIL_AFTER_TOOLS", default: "false", help: "drop assistant text after the last tool call" },
    Variable { name: "PROXY_TOOL_BLOCK_MAX", default: "0", help: "most tool calls per response (0 = unlimited)" },
    Variable { name: "PROXY_TOOL_CONTINUATION_TTL_MS", default: "300000", help: "how long a turn waiting for tool results is kept for the client's next request" },
    Variable { name: "PROXY_TOOL_CONTINUATION_MAX", default: "256", help: "most turns kept waiting for tool results" },
    Variable { name: "PROXY_STATE_DIR", default: ".codex-api", help: "directory of the gateway's own state (the response store); empty keeps it in memory only" },
    Variable { name: "PROXY_RESPONSE_STORE", default: "true", help: "keep Responses API responses (`store`, default true) for GET /v1/responses/{id} and previous_response_id; false: nothing is kept and previous_response_id is refused" },
    Variable { name: "PROXY_RESPONSE_STORE_TTL", default: "2592000", help: "seconds a stored response stays retrievable and continuable" },
    Variable { name: "PROXY_RESPONSE_STORE_MAX_MB", default: "1024", help: "size cap of the response store; over it the oldest responses go" },
    Variable { name: "PROXY_THREAD_CACHE_MAX", default: "128", help: "codex threads kept loaded between a conversation's requests (0: every request starts a fresh thread)" },
    Variable { name: "PROXY_WARM_THREADS", default: "1", help: "codex threads started ahead of demand per worker and per set of thread settings (model, instructions, tools), so a new conversation skips thread/start (0: none)" },
    Variable { name: "PROXY_THREAD_IDLE_TTL_MS", default: "600000", help: "a kept thread unused this long is unloaded" },
    Variable { name: "PROXY_FETCH_IMAGE_URLS", default: "false", help: "download http(s) image URLs and inline them (the CLI takes only data: URLs); off: 400" },
    Variable { name: "PROXY_FETCH_IMAGE_ALLOW_PRIVATE", default: "false", help: "let image fetches reach loopback/private addresses (server-side request forgery risk)" },
    Variable { name: "PROXY_FETCH_IMAGE_MAX_BYTES", default: "10485760", help: "largest image fetched" },
    Variable { name: "PROXY_FETCH_IMAGE_TIMEOUT_MS", default: "10000", help: "deadline of one image fetch" },
    Variable { name: "PROXY_ENABLE_METRICS", default: "false", help: "serve Prometheus metrics on GET /metrics" },
    Variable { name: "PROXY_METRICS_TOKEN", default: "", help: "bearer token for /metrics from non-loopback clients" },
    Variable { name: "WORKER_LOG_LEVEL", default: "warn", help: "RUST_LOG filter for the worker's own log (its stderr becomes gateway log events)" },
    Variable { name: "WORKER_BACKOFF_INITIAL_MS", default: "500", help: "backoff spacing of worker starts after repeated quick failures (counted from the previous start; a worker that ran longer restarts at once)" },
    Variable { name: "WORKER_BACKOFF_MAX_MS", default: "5000", help: "largest restart delay" },
    Variable { name: "WORKER_RESTART_MAX", default: "25", help: "consecutive failed starts before the worker stays down" },
    Variable { name: "WORKER_HEALTHY_RESET_MS", default: "30000", help: "a worker ready this long resets the failure count" },
    Variable { name: "WORKER_STARTUP_TIMEOUT_MS", default: "8000", help: "spawn until the `initialize` answer" },
    Variable { name: "WORKER_HANDSHAKE_TIMEOUT_MS", default: "15000", help: "spawn until ready (initialize, initialized, model/list)" },
    Variable { name: "WORKER_SHUTDOWN_GRACE_MS", default: "5000", help: "time the worker gets to exit after its stdin closes before it is killed" },
    Variable { name: "WORKER_REQUEST_TIMEOUT_MS", default: "120000", help: "deadline for each JSON-RPC request to the worker" },
    Variable { name: "WORKER_POOL_SIZE", default: "1", help: "codex worker processes; a new turn goes to the ready one with the fewest turns in flight" },
    Variable { name: "WORKER_CODEX_HOMES", default: "", help: "one CODEX_HOME per worker, separated by commas (as many as WORKER_POOL_SIZE); default: CODEX_HOME for all" },
    Variable { name: "WORKER_MAX_TURNS", default: "0", help: "a worker that has started this many turns is drained and replaced (0: never)" },
    Variable { name: "WORKER_MAX_RSS_MB", default: "0", help: "a worker whose resident memory passes this is drained and replaced (0: never)" },
    Variable { name: "WORKER_DRAIN_TIMEOUT_MS", default: "60000", help: "how long a worker being replaced may finish its turns before it is stopped anyway" },
    Variable { name: "PROXY_REDIS_URL", default: "", help: "redis:// URL shared by every replica: rate limits, stream caps, the maintenance switch and stored responses become fleet-wide (empty: each replica on its own)" },
    Variable { name: "PROXY_REDIS_FAILURE", default: "open", help: "when Redis is unreachable: open (each replica applies its own limits) or closed (503 for limited requests)" },
    Variable { name: "PROXY_REDIS_PREFIX", default: "codex:", help: "prefix of every Redis key (several gateways on one Redis)" },
    Variable { name: "PROXY_REPLICA_ID", default: "", help: "this replica's name ([a-z0-9-], at most 63: a pod name fits): sent as x-codex-replica and inside response ids, for the balancer's conversation routing" },
];

/// Everything the gateway reads at start, grouped by who uses it.
#[derive(Debug, Clone)]
pub struct Config {
    /// `PROXY_LOG_FORMAT=json`: read by the binary, which sets up logging
    /// before anything else runs.
    pub log_json: bool,
    pub serve: ServeConfig,
    /// The keys (environment and keys file), route rules, quotas, trust and
    /// CORS settings, with the files already read. `Debug` prints no secret.
    pub access: AccessPolicy,
    pub api: ApiConfig,
    pub maintenance: MaintenanceConfig,
    /// The core's settings. `cwd` (the worker's directory may be a private
    /// one made at start) and `in_flight` (a gauge registered at start) are
    /// filled in by `app::run`.
    pub core: CoreConfig,
    pub worker: WorkerConfig,
    /// The JSON-RPC trace buffer, when `PROXY_TRACE_BUFFER=true`.
    pub trace: Option<TraceConfig>,
    /// The usage ledger, unless `PROXY_USAGE_LEDGER=false`.
    pub usage: Option<UsageConfig>,
    /// Several replicas: shared state in Redis and this replica's name.
    pub fleet: FleetConfig,
    /// Which backend runs turns, and the canary share of the other.
    pub backend: BackendConfig,
}

/// `PROXY_REDIS_*` and `PROXY_REPLICA_ID`: what replicas share and how this one is named.
#[derive(Debug, Clone, Default)]
pub struct FleetConfig {
    /// `PROXY_REDIS_URL`; `None`: limits and maintenance are this replica's own.
    pub redis_url: Option<String>,
    pub failure: codex_rate_limit::FailureMode,
    pub prefix: String,
    /// `PROXY_REPLICA_ID`, checked to be a safe id fragment and header value.
    pub replica: Option<String>,
}

/// `PROXY_USAGE_*`: where the ledger lives and how long it keeps hours.
#[derive(Debug, Clone)]
pub struct UsageConfig {
    /// `PROXY_STATE_DIR`; `None`: in memory only.
    pub state_dir: Option<PathBuf>,
    pub retention: std::time::Duration,
}

impl Config {
    /// Reads the process environment.
    pub fn from_process_env() -> Result<Config, ConfigError> {
        Config::from_env(&Env::new(|k| std::env::var(k).ok()))
    }

    /// Parses every variable once, reads the keys and route files, and
    /// refuses a configuration that would expose the worker.
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Config, ConfigError> {
        let backend = backend(env)?;
        let serve = serve(env)?;
        let access = AccessPolicy::load(access(env)?).map_err(|e| ConfigError {
            variable: e.variable,
            message: e.message,
        })?;
        access
            .check_exposure(serve.host)
            .map_err(|message| ConfigError {
                variable: "PROXY_HOST",
                message,
            })?;
        let worker = worker(env)?;
        Ok(Config {
            log_json: env.parse_with("PROXY_LOG_FORMAT", |v| match v {
                "text" => Ok(false),
                "json" => Ok(true),
                other => Err(format!("`{other}` is not text or json")),
            })?,
            serve,
            access,
            api: api(env)?,
            maintenance: MaintenanceConfig {
                enabled: env.flag("PROXY_MAINTENANCE_MODE")?,
                retry_after_secs: env.parse(
                    "PROXY_MAINTENANCE_RETRY_AFTER_S",
                    "a whole number of seconds",
                )?,
                message: env.raw("PROXY_MAINTENANCE_MESSAGE"),
            },
            core: core(env, &worker)?,
            worker,
            trace: trace(env)?,
            usage: usage(env)?,
            fleet: fleet(env)?,
            backend,
        })
    }
}

fn fleet<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<FleetConfig, ConfigError> {
    let redis_url = env.opt("PROXY_REDIS_URL");
    if let Some(url) = &redis_url {
        redis::Client::open(url.as_str()).map_err(|e| ConfigError {
            variable: "PROXY_REDIS_URL",
            message: format!("not a Redis URL ({e})"),
        })?;
    }
    let replica = env.opt("PROXY_REPLICA_ID");
    if let Some(id) = &replica {
        let ok = !id.is_empty()
            && id.len() <= 63
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(ConfigError {
                variable: "PROXY_REPLICA_ID",
                message: format!("`{id}` must be at most 63 of a-z, 0-9 and -"),
            });
        }
    }
    Ok(FleetConfig {
        redis_url,
        failure: env.parse_with("PROXY_REDIS_FAILURE", |v| v.parse())?,
        prefix: env.raw("PROXY_REDIS_PREFIX"),
        replica,
    })
}

/// `PROXY_BACKEND`, with `PROXY_USE_APP_SERVER` as its alias: either names
/// the default backend; both set and disagreeing is refused.
fn backend<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<BackendConfig, ConfigError> {
    let named: Option<BackendKind> = match env.opt("PROXY_BACKEND") {
        Some(_) => Some(env.parse("PROXY_BACKEND", "app-server or exec")?),
        None => None,
    };
    let alias = match env.opt("PROXY_USE_APP_SERVER") {
        Some(_) => Some(match env.flag("PROXY_USE_APP_SERVER")? {
            true => BackendKind::AppServer,
            false => BackendKind::Exec,
        }),
        None => None,
    };
    let default = match (named, alias) {
        (Some(a), Some(b)) if a != b => {
            return Err(ConfigError {
                variable: "PROXY_BACKEND",
                message: format!(
                    "PROXY_BACKEND={} and PROXY_USE_APP_SERVER={} disagree; set one of them",
                    a.as_str(),
                    b == BackendKind::AppServer
                ),
            })
        }
        (Some(kind), _) | (None, Some(kind)) => kind,
        (None, None) => BackendKind::AppServer,
    };
    let canary_percent: u8 = env.parse(
        "PROXY_BACKEND_CANARY_PERCENT",
        "a whole number from 0 to 100",
    )?;
    if canary_percent > 100 {
        return Err(ConfigError {
            variable: "PROXY_BACKEND_CANARY_PERCENT",
            message: format!("`{canary_percent}` is not a whole number from 0 to 100"),
        });
    }
    Ok(BackendConfig {
        default,
        canary_percent,
    })
}

fn usage<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Option<UsageConfig>, ConfigError> {
    if !env.flag("PROXY_USAGE_LEDGER")? {
        return Ok(None);
    }
    let days: u64 = env.parse("PROXY_USAGE_RETENTION_DAYS", "a whole number of days")?;
    Ok(Some(UsageConfig {
        state_dir: env.opt("PROXY_STATE_DIR").map(PathBuf::from),
        retention: std::time::Duration::from_secs(days.saturating_mul(86_400)),
    }))
}

fn trace<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Option<TraceConfig>, ConfigError> {
    if !env.flag("PROXY_TRACE_BUFFER")? {
        return Ok(None);
    }
    let dir = match env.opt("PROXY_TRACE_DIR") {
        Some(dir) => PathBuf::from(dir),
        // A gateway whose state lives in memory still writes traces to disk:
        // to the default state directory's.
        None => Some(env.raw("PROXY_STATE_DIR"))
            .filter(|d| !d.trim().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".codex-api"))
            .join("trace-buffer"),
    };
    Ok(Some(TraceConfig {
        dir,
        max_age: env.nonzero_millis("PROXY_TRACE_MAX_AGE_MS")?,
        max_files: env.positive("PROXY_TRACE_MAX_FILES", "a whole number")?,
        include_content: env.flag("PROXY_TRACE_INCLUDE_CONTENT")?,
    }))
}

fn serve<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<ServeConfig, ConfigError> {
    Ok(ServeConfig {
        host: env.parse("PROXY_HOST", "an IP address")?,
        port: env.parse("PORT", "a port number (0-65535)")?,
        header_timeout: env.nonzero_millis("PROXY_HEADER_TIMEOUT_MS")?,
        drain_timeout: env.millis("PROXY_SHUTDOWN_DRAIN_MS")?,
    })
}

fn access<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<AccessConfig, ConfigError> {
    let window = env.nonzero_millis("PROXY_RATE_LIMIT_WINDOW_MS")?;
    let max: u32 = env.parse("PROXY_RATE_LIMIT_MAX", "a whole number")?;
    Ok(AccessConfig {
        api_keys: env.list("PROXY_API_KEY").into_iter().map(Secret).collect(),
        keys_file: env.opt("PROXY_API_KEYS_FILE").map(PathBuf::from),
        route_file: env.opt("PROXY_CONFIG").map(PathBuf::from),
        allow_unauthenticated: env.flag("PROXY_ALLOW_UNAUTHENTICATED")?,
        protect_models: env.flag("PROXY_PROTECT_MODELS")?,
        rate_limit: env
            .flag("PROXY_RATE_LIMIT_ENABLED")?
            .then(|| Quota::new(max, window)),
        rate_limit_window: window,
        trust_proxy: env.flag("PROXY_TRUST_PROXY")?,
        proxy_hops: {
            let hops: usize = env.parse("PROXY_TRUSTED_PROXY_HOPS", "a whole number")?;
            if hops == 0 {
                return Err(ConfigError {
                    variable: "PROXY_TRUSTED_PROXY_HOPS",
                    message:
                        "must be above 0 (to ignore X-Forwarded-For, leave PROXY_TRUST_PROXY off)"
                            .into(),
                });
            }
            hops
        },
        metrics_token: env.opt("PROXY_METRICS_TOKEN").map(Secret),
        cors: env
            .flag("PROXY_ENABLE_CORS")?
            .then(|| env.list("PROXY_CORS_ALLOWED_ORIGINS")),
    })
}

fn api<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<ApiConfig, ConfigError> {
    Ok(ApiConfig {
        aliases: env.parse_with("PROXY_MODEL_ALIASES", Aliases::parse)?,
        output_mode: env.parse_with("PROXY_OUTPUT_MODE", |v| {
            v.parse::<codex_output_mode::OutputMode>()
                .map_err(|e| e.to_string())
        })?,
        reasoning_format: env
            .parse_with("PROXY_REASONING_FORMAT", |v| v.parse::<ReasoningFormat>())?,
        max_body_bytes: env.positive("PROXY_MAX_BODY_BYTES", "a byte count")?,
        upload_budget_bytes: env.parse("PROXY_UPLOAD_BUDGET_BYTES", "a byte count")?,
        sse_keepalive: env.millis("PROXY_SSE_KEEPALIVE_MS")?,
        stream_limit: env.parse("PROXY_SSE_MAX_CONCURRENCY", "a whole number")?,
        request_timeout: env.limit_millis("PROXY_TIMEOUT_MS")?,
        kill_on_disconnect: env.flag("PROXY_KILL_ON_DISCONNECT")?,
        cut_usage_wait: env.millis("PROXY_CUT_USAGE_WAIT_MS")?,
        tools: ToolsConfig {
            parallel: env.flag("PROXY_ENABLE_PARALLEL_TOOL_CALLS")?,
            stop_after_tools: env.flag("PROXY_STOP_AFTER_TOOLS")?,
            burst: env.parse_with("PROXY_STOP_AFTER_TOOLS_MODE", |v| match v {
                "burst" => Ok(true),
                "first" => Ok(false),
                other => Err(format!("`{other}` is not first or burst")),
            })?,
            grace: env.millis("PROXY_STOP_AFTER_TOOLS_GRACE_MS")?,
            suppress_tail: env.flag("PROXY_SUPPRESS_TAIL_AFTER_TOOLS")?,
            block_max: env.parse("PROXY_TOOL_BLOCK_MAX", "a whole number")?,
            continuation_ttl: env.nonzero_millis("PROXY_TOOL_CONTINUATION_TTL_MS")?,
            continuation_max: env.parse("PROXY_TOOL_CONTINUATION_MAX", "a whole number")?,
        },
        conversations: ConversationConfig {
            state_dir: Some(env.raw("PROXY_STATE_DIR"))
                .filter(|d| !d.trim().is_empty())
                .map(std::path::PathBuf::from),
            store: env.flag("PROXY_RESPONSE_STORE")?,
            store_ttl: match env
                .parse::<u64>("PROXY_RESPONSE_STORE_TTL", "a whole number of seconds")?
            {
                0 => {
                    return Err(ConfigError {
                        variable: "PROXY_RESPONSE_STORE_TTL",
                        message: "must be above 0 (PROXY_RESPONSE_STORE=false keeps nothing)"
                            .into(),
                    })
                }
                secs => std::time::Duration::from_secs(secs),
            },
            store_max_bytes: env
                .parse::<u64>("PROXY_RESPONSE_STORE_MAX_MB", "a whole number of MiB")?
                .saturating_mul(1024 * 1024),
            thread_cache_max: env.parse("PROXY_THREAD_CACHE_MAX", "a whole number")?,
            thread_idle_ttl: env.nonzero_millis("PROXY_THREAD_IDLE_TTL_MS")?,
        },
        // The fetch settings are read only when fetching is on.
        image_fetch: match env.flag("PROXY_FETCH_IMAGE_URLS")? {
            false => None,
            true => Some(ImageFetchConfig {
                allow_private: env.flag("PROXY_FETCH_IMAGE_ALLOW_PRIVATE")?,
                max_bytes: env.parse("PROXY_FETCH_IMAGE_MAX_BYTES", "a byte count")?,
                timeout: env.nonzero_millis("PROXY_FETCH_IMAGE_TIMEOUT_MS")?,
            }),
        },
        serve_metrics: env.flag("PROXY_ENABLE_METRICS")?,
    })
}

fn core<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    worker: &WorkerConfig,
) -> Result<CoreConfig, ConfigError> {
    Ok(CoreConfig {
        // Decided at start (see `Config::core`).
        cwd: String::new(),
        // The thread settings repeat the worker's: codex takes them per
        // thread as well as on its command line (see `core::thread_config`).
        sandbox: worker.sandbox,
        enable_codex_tools: worker.enable_codex_tools,
        model_provider: worker.model_provider.clone(),
        idle_timeout: env.limit_millis("PROXY_STREAM_IDLE_TIMEOUT_MS")?,
        max_concurrency: env.positive("WORKER_MAX_CONCURRENCY", "a whole number")?,
        queue_max: env.parse("WORKER_QUEUE_MAX", "a whole number")?,
        queue_timeout: env.millis("WORKER_QUEUE_TIMEOUT_MS")?,
        in_flight: None,
        warm_threads: env.parse("PROXY_WARM_THREADS", "a whole number")?,
    })
}

fn worker<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<WorkerConfig, ConfigError> {
    let backoff_initial = env.millis("WORKER_BACKOFF_INITIAL_MS")?;
    let backoff_max = env.millis("WORKER_BACKOFF_MAX_MS")?;
    if backoff_max < backoff_initial {
        return Err(ConfigError {
            variable: "WORKER_BACKOFF_MAX_MS",
            message: "must not be below WORKER_BACKOFF_INITIAL_MS".into(),
        });
    }
    Ok(WorkerConfig {
        codex_bin: env
            .opt("CODEX_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(default_codex_bin),
        // The worker runs in its own working directory: relative paths
        // are resolved against the gateway's, where the operator meant them.
        codex_home: env.opt("CODEX_HOME").map(absolute),
        workdir: env.opt("PROXY_CODEX_WORKDIR").map(absolute),
        sandbox: env.parse_with("PROXY_SANDBOX_MODE", str::parse::<SandboxMode>)?,
        enable_codex_tools: env.flag("PROXY_ENABLE_CODEX_TOOLS")?,
        model_provider: env.opt("PROXY_MODEL_PROVIDER"),
        log_filter: env.raw("WORKER_LOG_LEVEL"),
        backoff_initial,
        backoff_max,
        restart_max: env.parse("WORKER_RESTART_MAX", "a whole number")?,
        healthy_reset: env.millis("WORKER_HEALTHY_RESET_MS")?,
        startup_timeout: env.nonzero_millis("WORKER_STARTUP_TIMEOUT_MS")?,
        handshake_timeout: env.nonzero_millis("WORKER_HANDSHAKE_TIMEOUT_MS")?,
        shutdown_grace: env.millis("WORKER_SHUTDOWN_GRACE_MS")?,
        request_timeout: env.nonzero_millis("WORKER_REQUEST_TIMEOUT_MS")?,
        pool: pool(env)?,
    })
}

fn pool<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<PoolConfig, ConfigError> {
    let size = env.positive("WORKER_POOL_SIZE", "a whole number")?;
    if size > 64 {
        return Err(ConfigError {
            variable: "WORKER_POOL_SIZE",
            message: format!("{size} workers is more than the 64 allowed"),
        });
    }
    let codex_homes: Vec<PathBuf> = env
        .list("WORKER_CODEX_HOMES")
        .into_iter()
        .map(absolute)
        .collect();
    if !codex_homes.is_empty() && codex_homes.len() != size {
        return Err(ConfigError {
            variable: "WORKER_CODEX_HOMES",
            message: format!(
                "names {} directories for WORKER_POOL_SIZE={size} workers; give one per worker",
                codex_homes.len()
            ),
        });
    }
    Ok(PoolConfig {
        size,
        codex_homes,
        max_turns: env.parse("WORKER_MAX_TURNS", "a whole number")?,
        max_rss_mb: env.parse("WORKER_MAX_RSS_MB", "a whole number of megabytes")?,
        drain_timeout: env.nonzero_millis("WORKER_DRAIN_TIMEOUT_MS")?,
    })
}

fn absolute(p: String) -> PathBuf {
    std::path::absolute(&p).unwrap_or_else(|_| PathBuf::from(p))
}

/// The project-local install made by `scripts/install-codex.sh`, else `codex` on PATH.
fn default_codex_bin() -> PathBuf {
    let local = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.tools/codex/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
    ));
    if local.is_file() {
        local
    } else {
        PathBuf::from("codex")
    }
}

/// The text of `--help`.
pub fn help_text() -> String {
    let mut out = String::from(
        "codex-completions-api: an OpenAI-compatible HTTP API in front of `codex app-server`.\n\n\
         USAGE: codex-completions-api [--help | --version]\n\n\
         Configuration is read from environment variables:\n\n",
    );
    for v in VARIABLES {
        let default = if v.default.is_empty() {
            "(unset)"
        } else {
            v.default
        };
        out.push_str(&format!(
            "  {:<34} default {:<14} {}\n",
            v.name, default, v.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    use codex_output_mode::OutputMode;

    use crate::route::Route;

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(&Env::new(move |k| map.get(k).cloned()))
    }

    fn default_of(name: &str) -> &'static str {
        VARIABLES.iter().find(|v| v.name == name).unwrap().default
    }

    fn default_ms(name: &str) -> Duration {
        Duration::from_millis(default_of(name).parse().unwrap())
    }

    fn default_n(name: &str) -> usize {
        default_of(name).parse().unwrap()
    }

    #[test]
    fn defaults_come_from_the_table_into_each_group() {
        let c = env(&[]).unwrap();
        // serve
        assert_eq!(c.serve.addr().to_string(), "127.0.0.1:11435");
        assert_eq!(
            c.serve.header_timeout,
            default_ms("PROXY_HEADER_TIMEOUT_MS")
        );
        assert_eq!(c.serve.drain_timeout, default_ms("PROXY_SHUTDOWN_DRAIN_MS"));
        assert!(!c.log_json);
        // access
        assert!(c.access.keys.is_empty() && c.access.routes.is_empty());
        assert_eq!(
            c.access.default_quota, None,
            "rate limits are off by default"
        );
        assert!(!c.access.protect_models && !c.access.trust_proxy);
        assert!(!c.access.allow_unauthenticated && c.access.metrics_token.is_none());
        assert_eq!(c.access.cors, Some(vec!["*".to_owned()]));
        // api
        assert!(c.api.aliases.0.is_empty());
        assert_eq!(c.api.output_mode, OutputMode::ObsidianXml);
        assert_eq!(c.api.max_body_bytes, 16 * 1024 * 1024);
        assert_eq!(c.api.sse_keepalive, default_ms("PROXY_SSE_KEEPALIVE_MS"));
        assert_eq!(c.api.stream_limit, 0);
        assert_eq!(c.api.request_timeout, Some(default_ms("PROXY_TIMEOUT_MS")));
        assert!(c.api.kill_on_disconnect);
        let tools = &c.api.tools;
        assert!(!tools.parallel && !tools.stop_after_tools && !tools.suppress_tail);
        assert!(tools.burst, "PROXY_STOP_AFTER_TOOLS_MODE defaults to burst");
        assert_eq!(tools.grace, default_ms("PROXY_STOP_AFTER_TOOLS_GRACE_MS"));
        assert_eq!(tools.block_max, default_n("PROXY_TOOL_BLOCK_MAX"));
        assert_eq!(
            tools.continuation_ttl,
            default_ms("PROXY_TOOL_CONTINUATION_TTL_MS")
        );
        assert_eq!(
            tools.continuation_max,
            default_n("PROXY_TOOL_CONTINUATION_MAX")
        );
        assert!(c.api.image_fetch.is_none() && !c.api.serve_metrics);
        // maintenance
        assert!(!c.maintenance.enabled);
        assert_eq!(c.maintenance.retry_after_secs, 30);
        assert_eq!(
            c.maintenance.message,
            default_of("PROXY_MAINTENANCE_MESSAGE")
        );
        // core
        assert_eq!(c.core.sandbox, SandboxMode::ReadOnly);
        assert!(!c.core.enable_codex_tools);
        assert_eq!(
            c.core.idle_timeout,
            Some(default_ms("PROXY_STREAM_IDLE_TIMEOUT_MS"))
        );
        assert_eq!(c.core.max_concurrency, default_n("WORKER_MAX_CONCURRENCY"));
        assert_eq!(c.core.queue_max, default_n("WORKER_QUEUE_MAX"));
        assert_eq!(c.core.queue_timeout, default_ms("WORKER_QUEUE_TIMEOUT_MS"));
        // worker: the Node proxy's values
        assert_eq!(c.worker.sandbox, SandboxMode::ReadOnly);
        assert_eq!(c.worker.backoff_initial, Duration::from_millis(500));
        assert_eq!(c.worker.backoff_max, Duration::from_millis(5000));
        assert_eq!(c.worker.restart_max, 25);
        assert_eq!(
            c.worker.healthy_reset,
            default_ms("WORKER_HEALTHY_RESET_MS")
        );
        assert_eq!(c.worker.startup_timeout, Duration::from_millis(8000));
        assert_eq!(c.worker.handshake_timeout, Duration::from_millis(15000));
        assert_eq!(c.worker.shutdown_grace, Duration::from_millis(5000));
        assert_eq!(c.worker.request_timeout, Duration::from_millis(120000));
        assert_eq!(c.worker.log_filter, "warn");
        assert!(!c.worker.enable_codex_tools);
    }

    #[test]
    fn the_pool_defaults_to_one_worker_and_checks_its_homes() {
        let c = env(&[]).unwrap();
        assert_eq!(c.worker.pool.size, 1);
        assert!(c.worker.pool.codex_homes.is_empty());
        assert_eq!((c.worker.pool.max_turns, c.worker.pool.max_rss_mb), (0, 0));
        let c = env(&[
            ("WORKER_POOL_SIZE", "2"),
            ("CODEX_HOME", "/srv/shared"),
            ("WORKER_CODEX_HOMES", "/srv/a, /srv/b"),
        ])
        .unwrap();
        assert_eq!(
            c.worker.for_member(1).codex_home,
            Some(PathBuf::from("/srv/b"))
        );
        let e = env(&[("WORKER_POOL_SIZE", "3"), ("WORKER_CODEX_HOMES", "/a,/b")]).unwrap_err();
        assert_eq!(e.variable, "WORKER_CODEX_HOMES");
        assert_eq!(
            env(&[("WORKER_POOL_SIZE", "0")]).unwrap_err().variable,
            "WORKER_POOL_SIZE"
        );
        assert_eq!(
            env(&[("WORKER_POOL_SIZE", "65")]).unwrap_err().variable,
            "WORKER_POOL_SIZE"
        );
    }

    #[test]
    fn fleet_settings_are_checked() {
        let c = env(&[]).unwrap();
        assert_eq!(c.fleet.redis_url, None, "one replica on its own by default");
        assert_eq!(c.fleet.failure, codex_rate_limit::FailureMode::Open);
        let c = env(&[
            ("PROXY_REDIS_URL", "redis://redis:6379/"),
            ("PROXY_REDIS_FAILURE", "closed"),
            ("PROXY_REPLICA_ID", "codex-completions-api-7d9f8b6c5-abcde"),
        ])
        .unwrap();
        assert_eq!(c.fleet.failure, codex_rate_limit::FailureMode::Closed);
        assert_eq!(c.fleet.prefix, "codex:");
        for (var, bad) in [
            ("PROXY_REDIS_URL", "http://redis/"),
            ("PROXY_REDIS_FAILURE", "maybe"),
            // It goes into ids and a header: nothing that could break either.
            ("PROXY_REPLICA_ID", "GW_1"),
            ("PROXY_REPLICA_ID", "gw 1"),
        ] {
            assert_eq!(env(&[(var, bad)]).unwrap_err().variable, var, "{var}={bad}");
        }
    }

    #[test]
    fn the_backend_is_named_by_proxy_backend_or_its_alias_and_both_must_agree() {
        use crate::backend::BackendKind::{AppServer, Exec};
        let kind = |vars: &[(&str, &str)]| env(vars).map(|c| c.backend.default);
        assert_eq!(kind(&[]).unwrap(), AppServer);
        assert_eq!(kind(&[("PROXY_BACKEND", "exec")]).unwrap(), Exec);
        assert_eq!(kind(&[("PROXY_USE_APP_SERVER", "false")]).unwrap(), Exec);
        assert_eq!(
            kind(&[("PROXY_USE_APP_SERVER", "true")]).unwrap(),
            AppServer
        );
        assert_eq!(
            kind(&[("PROXY_BACKEND", "exec"), ("PROXY_USE_APP_SERVER", "false")]).unwrap(),
            Exec
        );
        let e = kind(&[("PROXY_BACKEND", "exec"), ("PROXY_USE_APP_SERVER", "true")]).unwrap_err();
        assert_eq!(e.variable, "PROXY_BACKEND");
        assert!(e.to_string().contains("disagree"), "{e}");
        let c = env(&[("PROXY_BACKEND_CANARY_PERCENT", "10")]).unwrap();
        assert_eq!(c.backend.canary_percent, 10);
        assert!(c.backend.needs_exec());
    }

    #[test]
    fn values_are_parsed_into_their_types_once() {
        let c = env(&[
            ("PROXY_MODEL_ALIASES", "codex-5=gpt-5-codex, fast=gpt-5-low"),
            ("PROXY_OUTPUT_MODE", "openai-json"),
            ("PROXY_TIMEOUT_MS", "0"),
            ("PROXY_STREAM_IDLE_TIMEOUT_MS", "0"),
            ("PROXY_ENABLE_CORS", "false"),
            ("PROXY_RATE_LIMIT_ENABLED", "true"),
            ("PROXY_RATE_LIMIT_MAX", "7"),
            ("PROXY_RATE_LIMIT_WINDOW_MS", "1000"),
            ("PROXY_SANDBOX_MODE", "workspace-write"),
            ("PROXY_STOP_AFTER_TOOLS_MODE", "first"),
            ("PROXY_FETCH_IMAGE_URLS", "true"),
            ("PROXY_TRUST_PROXY", "yes"),
            ("PROXY_METRICS_TOKEN", "scrape-me"),
        ])
        .unwrap();
        assert_eq!(
            c.api.aliases.0.get("fast").map(String::as_str),
            Some("gpt-5-low")
        );
        assert_eq!(c.api.output_mode, OutputMode::OpenaiJson);
        assert_eq!((c.api.request_timeout, c.core.idle_timeout), (None, None));
        assert_eq!(c.access.cors, None);
        assert_eq!(
            c.access.default_quota,
            Some(Quota::new(7, Duration::from_secs(1)))
        );
        assert!(c.access.trust_proxy);
        assert_eq!(c.access.metrics_token, Some(Secret("scrape-me".into())));
        // One variable, read once, handed to both owners that need it.
        assert_eq!(c.worker.sandbox, SandboxMode::WorkspaceWrite);
        assert_eq!(c.core.sandbox, SandboxMode::WorkspaceWrite);
        assert!(!c.api.tools.burst);
        let fetch = c.api.image_fetch.unwrap();
        assert_eq!(fetch.max_bytes, default_n("PROXY_FETCH_IMAGE_MAX_BYTES"));
        assert!(!fetch.allow_private);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let e = env(&[("PORT", "eleven")]).unwrap_err();
        assert_eq!(e.variable, "PORT");
        assert!(e.to_string().starts_with("invalid PORT: `eleven`"), "{e}");
        for (name, value) in [
            ("WORKER_RESTART_MAX", "-1"),
            ("PROXY_SANDBOX_MODE", "yolo"),
            ("WORKER_REQUEST_TIMEOUT_MS", "0"),
            ("PROXY_PROTECT_MODELS", "maybe"),
            ("PROXY_MODEL_ALIASES", "nonsense"),
            ("PROXY_OUTPUT_MODE", "yaml"),
            ("PROXY_LOG_FORMAT", "xml"),
            ("PROXY_STOP_AFTER_TOOLS_MODE", "sometimes"),
            ("PROXY_MAX_BODY_BYTES", "0"),
            ("WORKER_MAX_CONCURRENCY", "0"),
            ("PROXY_RATE_LIMIT_WINDOW_MS", "0"),
            ("PROXY_USE_APP_SERVER", "maybe"),
            ("PROXY_BACKEND", "exec-server"),
            ("PROXY_BACKEND_CANARY_PERCENT", "101"),
            ("PROXY_HOST", "localhost"),
            ("PROXY_RESPONSE_STORE_TTL", "0"),
            ("PROXY_THREAD_IDLE_TTL_MS", "0"),
            ("PROXY_THREAD_CACHE_MAX", "-1"),
        ] {
            let e = env(&[(name, value)]).unwrap_err();
            assert_eq!(e.variable, name, "{name}={value}: {e}");
            assert!(
                e.to_string().starts_with(&format!("invalid {name}: ")),
                "{e}"
            );
        }
        assert_eq!(
            env(&[
                ("WORKER_BACKOFF_INITIAL_MS", "900"),
                ("WORKER_BACKOFF_MAX_MS", "800")
            ])
            .unwrap_err()
            .variable,
            "WORKER_BACKOFF_MAX_MS"
        );
    }

    #[test]
    fn keys_are_split_and_never_printed() {
        let c = env(&[("PROXY_API_KEY", "sk-one, sk-two,")]).unwrap();
        let names: Vec<_> = c.access.keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["key-1", "key-2"]);
        assert_eq!(c.access.keys[1].secret.0, "sk-two");
        assert!(
            c.access.is_admin("key-1"),
            "PROXY_API_KEY keys may administer"
        );
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("sk-one") && !debug.contains("sk-two"),
            "{debug}"
        );
    }

    /// A file in a fresh directory of its own, for one test.
    fn file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!(
            "codex-config-test-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn the_keys_and_route_files_are_read_here_and_their_mistakes_named() {
        let keys = file(
            "keys.toml",
            "[[keys]]\nname = \"app\"\nkey = \"sk-app\"\nrate_limit_max = 5\n",
        );
        let routes = file("routes.toml", "[routes.\"/v1/models\"]\nauth = true\n");
        let c = env(&[
            ("PROXY_API_KEY", "sk-op"),
            ("PROXY_API_KEYS_FILE", &keys),
            ("PROXY_CONFIG", &routes),
        ])
        .unwrap();
        let names: Vec<_> = c.access.keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["key-1", "app"]);
        assert!(!c.access.is_admin("app"));
        assert!(c.access.requires_auth(Route::ListModels));

        let e = env(&[("PROXY_API_KEYS_FILE", "/nonexistent/keys.toml")]).unwrap_err();
        assert_eq!(e.variable, "PROXY_API_KEYS_FILE");
        assert!(e.message.contains("/nonexistent/keys.toml"), "{e}");
        let dup = file("dup.toml", "[[keys]]\nname = \"key-1\"\nkey = \"sk-x\"\n");
        let e = env(&[("PROXY_API_KEY", "sk-op"), ("PROXY_API_KEYS_FILE", &dup)]).unwrap_err();
        assert_eq!(e.variable, "PROXY_API_KEYS_FILE");
        assert!(e.message.contains("appears twice"), "{e}");
        let bad = file("routes.toml", "[routes.\"/nope\"]\nauth = false\n");
        let e = env(&[("PROXY_CONFIG", &bad)]).unwrap_err();
        assert_eq!(e.variable, "PROXY_CONFIG");
        assert!(e.message.contains("/nope"), "{e}");
    }

    #[test]
    fn beyond_loopback_a_key_is_required() {
        let e = env(&[("PROXY_HOST", "0.0.0.0")]).unwrap_err();
        assert_eq!(e.variable, "PROXY_HOST");
        assert!(e.message.contains("PROXY_API_KEY"), "{e}");
        // An empty keys file is no key.
        let empty = file("keys.toml", "");
        let e = env(&[("PROXY_HOST", "0.0.0.0"), ("PROXY_API_KEYS_FILE", &empty)]);
        assert_eq!(e.unwrap_err().variable, "PROXY_HOST");
        assert!(env(&[("PROXY_HOST", "0.0.0.0"), ("PROXY_API_KEY", "sk-1")]).is_ok());
        assert!(env(&[
            ("PROXY_HOST", "0.0.0.0"),
            ("PROXY_ALLOW_UNAUTHENTICATED", "true")
        ])
        .is_ok());
        assert!(env(&[("PROXY_HOST", "::1")]).is_ok());
    }

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let help = help_text();
        for v in VARIABLES {
            assert!(help.contains(v.name), "{} missing", v.name);
        }
        assert!(help.contains("11435"));
    }

    /// `docs/configuration.md` carries a table generated from `--help`:
    /// same variables, same order, same defaults, same help texts.
    #[test]
    fn the_documented_table_is_the_variable_table() {
        let doc = include_str!("../../docs/configuration.md");
        let rows: Vec<(String, String, String)> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| {
                let (name, rest) = l.split_once("` | ")?;
                let (default, help) = rest.split_once(" | ")?;
                let default = match default {
                    "*(unset)*" => "",
                    d => d.trim_matches('`'),
                };
                let help = help.strip_suffix(" |")?.replace("\\|", "|");
                Some((name.to_owned(), default.to_owned(), help))
            })
            .filter(|(name, _, _)| VARIABLES.iter().any(|v| v.name == name))
            .collect();
        let table: Vec<(String, String, String)> = VARIABLES
            .iter()
            .map(|v| (v.name.to_owned(), v.default.to_owned(), v.help.to_owned()))
            .collect();
        for (row, var) in rows.iter().zip(&table) {
            assert_eq!(row, var, "regenerate the table in docs/configuration.md");
        }
        assert_eq!(
            rows.len(),
            table.len(),
            "docs/configuration.md lacks variables"
        );
    }
}
