//! The API's settings (the `api` group of [`Config`](super::Config)).
//!
//! Declared here rather than in `crate::api` so that the dependency runs one
//! way: the API reads its settings, the settings know nothing of the API
//! (which is rewritten more often than its knobs change). The other groups
//! live with their owners (`server`, `access`, `worker`, `core`), which sit
//! below the configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use codex_output_mode::OutputMode;

/// What the API handlers and the API's two layers (output mode, SSE) read.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Extra model names (`PROXY_MODEL_ALIASES`).
    pub aliases: Aliases,
    /// The output mode when a request sends no `x-proxy-output-mode`.
    pub output_mode: OutputMode,
    /// How chat shows reasoning when neither header, key nor route says.
    pub reasoning_format: crate::reasoning_format::ReasoningFormat,
    /// Largest accepted request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Bytes all request bodies held at once may take (`PROXY_UPLOAD_BUDGET_BYTES`).
    pub upload_budget_bytes: usize,
    /// SSE comment after this much silence (zero: none).
    pub sse_keepalive: Duration,
    /// Concurrent streams per client (`PROXY_SSE_MAX_CONCURRENCY`); 0 = unlimited.
    pub stream_limit: usize,
    /// Longest a whole request may take (`PROXY_TIMEOUT_MS`; `None`: no limit).
    pub request_timeout: Option<Duration>,
    /// Interrupt turns whose client went away.
    pub kill_on_disconnect: bool,
    /// How long a turn cut by `stop`/`max_tokens` runs on for its usage.
    pub cut_usage_wait: Duration,
    pub tools: ToolsConfig,
    pub conversations: ConversationConfig,
    /// `Some` when http(s) image URLs are fetched.
    pub image_fetch: Option<ImageFetchConfig>,
    /// Serve Prometheus metrics on `GET /metrics` (`PROXY_ENABLE_METRICS`).
    pub serve_metrics: bool,
}

/// Operator switches for tool calls.
#[derive(Debug, Clone)]
pub struct ToolsConfig {
    pub parallel: bool,
    pub stop_after_tools: bool,
    /// `PROXY_STOP_AFTER_TOOLS_MODE=burst` (else `first`).
    pub burst: bool,
    pub grace: Duration,
    pub suppress_tail: bool,
    /// Most `<use_tool>` blocks per response; 0 = unlimited.
    pub block_max: usize,
    pub continuation_ttl: Duration,
    pub continuation_max: usize,
}

/// Stored responses and live threads (`PROXY_RESPONSE_STORE*`,
/// `PROXY_THREAD_*`, `PROXY_STATE_DIR`).
#[derive(Debug, Clone)]
pub struct ConversationConfig {
    /// Where the response store's file lives; `None`: in memory only.
    pub state_dir: Option<std::path::PathBuf>,
    /// Keep responses at all.
    pub store: bool,
    pub store_ttl: Duration,
    pub store_max_bytes: u64,
    /// Threads kept loaded between requests; 0 = none.
    pub thread_cache_max: usize,
    pub thread_idle_ttl: Duration,
}

/// Settings for fetching remote images (`PROXY_FETCH_IMAGE_*`).
#[derive(Debug, Clone)]
pub struct ImageFetchConfig {
    pub allow_private: bool,
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Operator-defined model aliases, alias → target name (which may itself
/// carry an effort suffix); `api::models::resolve` applies them.
#[derive(Debug, Clone)]
pub struct Aliases(pub BTreeMap<String, String>);

impl Aliases {
    /// Parses `alias=target,alias2=target2`.
    pub fn parse(spec: &str) -> Result<Aliases, String> {
        let mut map = BTreeMap::new();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (alias, target) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not alias=model"))?;
            let (alias, target) = (alias.trim(), target.trim());
            if alias.is_empty() || target.is_empty() {
                return Err(format!("`{pair}` is not alias=model"));
            }
            map.insert(alias.to_owned(), target.to_owned());
        }
        Ok(Aliases(map))
    }
}
