//! Configuration from environment variables.
//!
//! The names are the ones users of the earlier Node.js proxy know. Every
//! variable is declared once in [`VARIABLES`], which drives both parsing
//! defaults and `--help`, so the two cannot disagree.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One environment variable the gateway reads.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    /// The default as the operator would write it; empty when unset means "none".
    pub default: &'static str,
    pub help: &'static str,
}

/// Every variable, in the order `--help` prints them.
pub const VARIABLES: &[Variable] = &[
    Variable { name: "PORT", default: "11435", help: "TCP port to listen on" },
    Variable { name: "PROXY_HOST", default: "127.0.0.1", help: "address to bind; anything but loopback requires PROXY_API_KEY (or PROXY_ALLOW_UNAUTHENTICATED=true)" },
    Variable { name: "PROXY_API_KEY", default: "", help: "bearer key(s) clients must present; several separated by commas" },
    Variable { name: "PROXY_API_KEYS_FILE", default: "", help: "TOML file of named keys with optional per-key rate limits (see docs/configuration.md)" },
    Variable { name: "PROXY_ALLOW_UNAUTHENTICATED", default: "false", help: "allow listening beyond loopback with no key configured" },
    Variable { name: "PROXY_PROTECT_MODELS", default: "false", help: "require a key for GET /v1/models too" },
    Variable { name: "PROXY_USE_APP_SERVER", default: "true", help: "kept for compatibility with the Node proxy; this gateway always drives `codex app-server`" },
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
    Variable { name: "PROXY_MODEL_ALIASES", default: "", help: "extra model names, e.g. codex-5=gpt-5-codex,codex-5-high=gpt-5-codex-high" },
    Variable { name: "PROXY_OUTPUT_MODE", default: "obsidian-xml", help: "how tool calls reach clients: obsidian-xml | openai-json (per request: x-proxy-output-mode)" },
    Variable { name: "PROXY_SSE_KEEPALIVE_MS", default: "15000", help: "SSE comment sent after this much silence (0 disables)" },
    Variable { name: "PROXY_STREAM_IDLE_TIMEOUT_MS", default: "300000", help: "a turn whose worker stays silent this long fails with 504 (0 disables)" },
    Variable { name: "PROXY_ENABLE_CORS", default: "true", help: "answer CORS preflights and add CORS headers" },
    Variable { name: "PROXY_CORS_ALLOWED_ORIGINS", default: "*", help: "comma-separated origins, or *" },
    Variable { name: "PROXY_MAINTENANCE_MODE", default: "false", help: "start in maintenance mode (503 for API requests)" },
    Variable { name: "PROXY_MAINTENANCE_RETRY_AFTER_S", default: "30", help: "Retry-After sent while in maintenance" },
    Variable { name: "PROXY_MAINTENANCE_MESSAGE", default: "The service is under maintenance. Please retry later.", help: "message sent while in maintenance" },
    Variable { name: "PROXY_RATE_LIMIT_ENABLED", default: "false", help: "limit requests per key (or per client address without keys)" },
    Variable { name: "PROXY_RATE_LIMIT_WINDOW_MS", default: "60000", help: "rate-limit window" },
    Variable { name: "PROXY_RATE_LIMIT_MAX", default: "60", help: "requests per window and key" },
    Variable { name: "PROXY_TRUST_PROXY", default: "false", help: "take the client address from X-Forwarded-For (only behind a trusted proxy)" },
    Variable { name: "PROXY_CONFIG", default: "", help: "TOML file with per-route auth and rate limits (see docs/configuration.md)" },
    Variable { name: "PROXY_SSE_MAX_CONCURRENCY", default: "0", help: "concurrent streams per key (or client address); 0 = unlimited" },
    Variable { name: "WORKER_MAX_CONCURRENCY", default: "32", help: "turns running on the worker at once" },
    Variable { name: "WORKER_QUEUE_MAX", default: "64", help: "requests waiting for a turn slot; beyond it 429 with Retry-After" },
    Variable { name: "WORKER_QUEUE_TIMEOUT_MS", default: "10000", help: "longest wait for a turn slot before 429" },
    Variable { name: "PROXY_TIMEOUT_MS", default: "600000", help: "longest a whole request may take before 504 (0 disables)" },
    Variable { name: "PROXY_KILL_ON_DISCONNECT", default: "true", help: "interrupt the turn when the client disconnects" },
    Variable { name: "PROXY_ENABLE_PARALLEL_TOOL_CALLS", default: "false", help: "allow several tool calls in one response (else one per response)" },
    Variable { name: "PROXY_STOP_AFTER_TOOLS", default: "false", help: "end a response once the model wrote <use_tool> blocks" },
    Variable { name: "PROXY_STOP_AFTER_TOOLS_MODE", default: "burst", help: "first: stop at the first block; burst: after a burst of blocks" },
    Variable { name: "PROXY_STOP_AFTER_TOOLS_GRACE_MS", default: "300", help: "how long to wait for more tool calls after one" },
    Variable { name: "PROXY_SUPPRESS_TAIL_AFTER_TOOLS", default: "false", help: "drop assistant text after the last tool call" },
    Variable { name: "PROXY_TOOL_BLOCK_MAX", default: "0", help: "most tool calls per response (0 = unlimited)" },
    Variable { name: "PROXY_TOOL_CONTINUATION_TTL_MS", default: "300000", help: "how long a turn waiting for tool results is kept for the client's next request" },
    Variable { name: "PROXY_TOOL_CONTINUATION_MAX", default: "256", help: "most turns kept waiting for tool results" },
    Variable { name: "PROXY_FETCH_IMAGE_URLS", default: "false", help: "download http(s) image URLs and inline them (the CLI takes only data: URLs); off: 400" },
    Variable { name: "PROXY_FETCH_IMAGE_ALLOW_PRIVATE", default: "false", help: "let image fetches reach loopback/private addresses (server-side request forgery risk)" },
    Variable { name: "PROXY_FETCH_IMAGE_MAX_BYTES", default: "10485760", help: "largest image fetched" },
    Variable { name: "PROXY_FETCH_IMAGE_TIMEOUT_MS", default: "10000", help: "deadline of one image fetch" },
    Variable { name: "PROXY_ENABLE_METRICS", default: "false", help: "serve Prometheus metrics on GET /metrics" },
    Variable { name: "PROXY_METRICS_TOKEN", default: "", help: "bearer token for /metrics from non-loopback clients" },
    Variable { name: "WORKER_LOG_LEVEL", default: "warn", help: "RUST_LOG filter for the worker's own log (its stderr becomes gateway log events)" },
    Variable { name: "WORKER_BACKOFF_INITIAL_MS", default: "500", help: "first restart delay after the worker exits" },
    Variable { name: "WORKER_BACKOFF_MAX_MS", default: "5000", help: "largest restart delay" },
    Variable { name: "WORKER_RESTART_MAX", default: "25", help: "consecutive failed starts before the worker stays down" },
    Variable { name: "WORKER_HEALTHY_RESET_MS", default: "30000", help: "a worker ready this long resets the failure count" },
    Variable { name: "WORKER_STARTUP_TIMEOUT_MS", default: "8000", help: "spawn until the `initialize` answer" },
    Variable { name: "WORKER_HANDSHAKE_TIMEOUT_MS", default: "15000", help: "spawn until ready (initialize, initialized, model/list)" },
    Variable { name: "WORKER_SHUTDOWN_GRACE_MS", default: "5000", help: "time the worker gets to exit after its stdin closes before it is killed" },
    Variable { name: "WORKER_REQUEST_TIMEOUT_MS", default: "120000", help: "deadline for each JSON-RPC request to the worker" },
];

/// Operator switches for tool calls (defaults as the variables' defaults).
#[derive(Debug, Clone)]
pub struct ToolsConfig {
    pub parallel: bool,
    pub stop_after_tools: bool,
    pub burst: bool,
    pub grace: Duration,
    pub suppress_tail: bool,
    pub block_max: usize,
    pub continuation_ttl: Duration,
    pub continuation_max: usize,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            parallel: false,
            stop_after_tools: false,
            burst: true,
            grace: Duration::from_millis(300),
            suppress_tail: false,
            block_max: 0,
            continuation_ttl: Duration::from_secs(300),
            continuation_max: 256,
        }
    }
}

/// Sandbox modes codex accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    ReadOnly,
    WorkspaceWrite,
    DangerFullAccess,
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::ReadOnly => "read-only",
            SandboxMode::WorkspaceWrite => "workspace-write",
            SandboxMode::DangerFullAccess => "danger-full-access",
        }
    }
}

/// Worker supervision settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub codex_bin: PathBuf,
    pub codex_home: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub sandbox: SandboxMode,
    pub enable_codex_tools: bool,
    pub model_provider: Option<String>,
    pub log_filter: String,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub restart_max: u32,
    pub healthy_reset: Duration,
    pub startup_timeout: Duration,
    pub handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    pub request_timeout: Duration,
}

/// Everything the gateway reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// `(name, secret)`; `Debug` of the secret is redacted by [`Secret`].
    pub api_keys: Vec<(String, Secret)>,
    pub api_keys_file: Option<PathBuf>,
    pub allow_unauthenticated: bool,
    pub protect_models: bool,
    pub max_body_bytes: usize,
    pub upload_budget_bytes: usize,
    pub header_timeout: Duration,
    pub shutdown_drain: Duration,
    pub log_json: bool,
    pub model_aliases: String,
    pub output_mode: String,
    pub sse_keepalive: Duration,
    pub stream_idle_timeout: Option<Duration>,
    pub cors_enabled: bool,
    pub cors_origins: Vec<String>,
    pub maintenance: bool,
    pub maintenance_retry_after_s: u64,
    pub maintenance_message: String,
    pub rate_limit_enabled: bool,
    pub rate_limit_window: Duration,
    pub rate_limit_max: u32,
    pub trust_proxy: bool,
    pub route_config: Option<PathBuf>,
    pub sse_max_concurrency: usize,
    pub max_concurrency: usize,
    pub queue_max: usize,
    pub queue_timeout: Duration,
    pub request_timeout: Option<Duration>,
    pub kill_on_disconnect: bool,
    pub tools: ToolsConfig,
    /// `Some` when http(s) image URLs are fetched.
    pub image_fetch: Option<crate::api::images::ImageFetchConfig>,
    pub metrics_enabled: bool,
    pub metrics_token: Option<Secret>,
    pub worker: WorkerConfig,
}

/// A string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A configuration problem, reported as one line naming the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid {}: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads variables through a lookup function, so tests need no process env.
pub struct Env<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn new(lookup: F) -> Self {
        Env { lookup }
    }

    /// The value, or the declared default; blank counts as unset.
    pub fn raw(&self, name: &'static str) -> String {
        match (self.lookup)(name) {
            Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
            _ => declared(name).default.to_owned(),
        }
    }

    pub fn opt(&self, name: &'static str) -> Option<String> {
        Some(self.raw(name)).filter(|v| !v.is_empty())
    }

    pub fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        what: &str,
    ) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.raw(name);
        raw.parse::<T>().map_err(|e| ConfigError {
            variable: name,
            message: format!("`{raw}` is not {what} ({e})"),
        })
    }

    pub fn millis(&self, name: &'static str) -> Result<Duration, ConfigError> {
        self.parse::<u64>(name, "a whole number of milliseconds")
            .map(Duration::from_millis)
    }

    pub fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        let raw = self.raw(name);
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError {
                variable: name,
                message: format!("`{raw}` is not true or false"),
            }),
        }
    }
}

fn declared(name: &str) -> &'static Variable {
    VARIABLES
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("variable {name} is read but not declared in VARIABLES"))
}

impl Config {
    /// Reads the process environment.
    pub fn from_process_env() -> Result<Config, ConfigError> {
        Config::from_env(&Env::new(|k| std::env::var(k).ok()))
    }

    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Config, ConfigError> {
        let host: IpAddr = env.parse("PROXY_HOST", "an IP address")?;
        let port: u16 = env.parse("PORT", "a port number (0-65535)")?;
        let api_keys = env
            .opt("PROXY_API_KEY")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .enumerate()
                    .map(|(i, k)| (format!("key-{}", i + 1), Secret(k.to_owned())))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let sandbox = match env.raw("PROXY_SANDBOX_MODE").as_str() {
            "read-only" => SandboxMode::ReadOnly,
            "workspace-write" => SandboxMode::WorkspaceWrite,
            "danger-full-access" => SandboxMode::DangerFullAccess,
            other => {
                return Err(ConfigError {
                    variable: "PROXY_SANDBOX_MODE",
                    message: format!(
                        "`{other}` is not read-only, workspace-write or danger-full-access"
                    ),
                })
            }
        };
        let log_json = match env.raw("PROXY_LOG_FORMAT").as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(ConfigError {
                    variable: "PROXY_LOG_FORMAT",
                    message: format!("`{other}` is not text or json"),
                })
            }
        };
        if !env.flag("PROXY_USE_APP_SERVER")? {
            return Err(ConfigError {
                variable: "PROXY_USE_APP_SERVER",
                message: "this gateway only drives `codex app-server`; the `codex exec` mode of the Node proxy is not supported".into(),
            });
        }
        let max_body_bytes: usize = env.parse("PROXY_MAX_BODY_BYTES", "a byte count")?;
        if max_body_bytes == 0 {
            return Err(ConfigError {
                variable: "PROXY_MAX_BODY_BYTES",
                message: "must be above 0".into(),
            });
        }
        let restart_max: u32 = env.parse("WORKER_RESTART_MAX", "a whole number")?;
        let backoff_initial = env.millis("WORKER_BACKOFF_INITIAL_MS")?;
        let backoff_max = env.millis("WORKER_BACKOFF_MAX_MS")?;
        if backoff_max < backoff_initial {
            return Err(ConfigError {
                variable: "WORKER_BACKOFF_MAX_MS",
                message: "must not be below WORKER_BACKOFF_INITIAL_MS".into(),
            });
        }
        if let Err(e) = crate::api::models::Aliases::parse(&env.raw("PROXY_MODEL_ALIASES")) {
            return Err(ConfigError {
                variable: "PROXY_MODEL_ALIASES",
                message: e,
            });
        }
        if let Err(e) = env
            .raw("PROXY_OUTPUT_MODE")
            .parse::<codex_output_mode::OutputMode>()
        {
            return Err(ConfigError {
                variable: "PROXY_OUTPUT_MODE",
                message: e.to_string(),
            });
        }
        let config = Config {
            host,
            port,
            api_keys,
            api_keys_file: env.opt("PROXY_API_KEYS_FILE").map(PathBuf::from),
            allow_unauthenticated: env.flag("PROXY_ALLOW_UNAUTHENTICATED")?,
            protect_models: env.flag("PROXY_PROTECT_MODELS")?,
            max_body_bytes,
            upload_budget_bytes: env.parse("PROXY_UPLOAD_BUDGET_BYTES", "a byte count")?,
            header_timeout: nonzero(env, "PROXY_HEADER_TIMEOUT_MS")?,
            shutdown_drain: env.millis("PROXY_SHUTDOWN_DRAIN_MS")?,
            log_json,
            model_aliases: env.raw("PROXY_MODEL_ALIASES"),
            output_mode: env.raw("PROXY_OUTPUT_MODE"),
            sse_keepalive: env.millis("PROXY_SSE_KEEPALIVE_MS")?,
            stream_idle_timeout: Some(env.millis("PROXY_STREAM_IDLE_TIMEOUT_MS")?)
                .filter(|d| !d.is_zero()),
            cors_enabled: env.flag("PROXY_ENABLE_CORS")?,
            cors_origins: env
                .raw("PROXY_CORS_ALLOWED_ORIGINS")
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            maintenance: env.flag("PROXY_MAINTENANCE_MODE")?,
            maintenance_retry_after_s: env.parse(
                "PROXY_MAINTENANCE_RETRY_AFTER_S",
                "a whole number of seconds",
            )?,
            maintenance_message: env.raw("PROXY_MAINTENANCE_MESSAGE"),
            rate_limit_enabled: env.flag("PROXY_RATE_LIMIT_ENABLED")?,
            rate_limit_window: nonzero(env, "PROXY_RATE_LIMIT_WINDOW_MS")?,
            rate_limit_max: env.parse("PROXY_RATE_LIMIT_MAX", "a whole number")?,
            trust_proxy: env.flag("PROXY_TRUST_PROXY")?,
            route_config: env.opt("PROXY_CONFIG").map(PathBuf::from),
            sse_max_concurrency: env.parse("PROXY_SSE_MAX_CONCURRENCY", "a whole number")?,
            max_concurrency: {
                let n: usize = env.parse("WORKER_MAX_CONCURRENCY", "a whole number")?;
                if n == 0 {
                    return Err(ConfigError {
                        variable: "WORKER_MAX_CONCURRENCY",
                        message: "must be above 0".into(),
                    });
                }
                n
            },
            queue_max: env.parse("WORKER_QUEUE_MAX", "a whole number")?,
            queue_timeout: env.millis("WORKER_QUEUE_TIMEOUT_MS")?,
            request_timeout: Some(env.millis("PROXY_TIMEOUT_MS")?).filter(|d| !d.is_zero()),
            kill_on_disconnect: env.flag("PROXY_KILL_ON_DISCONNECT")?,
            tools: ToolsConfig {
                parallel: env.flag("PROXY_ENABLE_PARALLEL_TOOL_CALLS")?,
                stop_after_tools: env.flag("PROXY_STOP_AFTER_TOOLS")?,
                burst: match env.raw("PROXY_STOP_AFTER_TOOLS_MODE").as_str() {
                    "burst" => true,
                    "first" => false,
                    other => {
                        return Err(ConfigError {
                            variable: "PROXY_STOP_AFTER_TOOLS_MODE",
                            message: format!("`{other}` is not first or burst"),
                        })
                    }
                },
                grace: env.millis("PROXY_STOP_AFTER_TOOLS_GRACE_MS")?,
                suppress_tail: env.flag("PROXY_SUPPRESS_TAIL_AFTER_TOOLS")?,
                block_max: env.parse("PROXY_TOOL_BLOCK_MAX", "a whole number")?,
                continuation_ttl: nonzero(env, "PROXY_TOOL_CONTINUATION_TTL_MS")?,
                continuation_max: env.parse("PROXY_TOOL_CONTINUATION_MAX", "a whole number")?,
            },
            image_fetch: match env.flag("PROXY_FETCH_IMAGE_URLS")? {
                false => None,
                true => Some(crate::api::images::ImageFetchConfig {
                    allow_private: env.flag("PROXY_FETCH_IMAGE_ALLOW_PRIVATE")?,
                    max_bytes: env.parse("PROXY_FETCH_IMAGE_MAX_BYTES", "a byte count")?,
                    timeout: nonzero(env, "PROXY_FETCH_IMAGE_TIMEOUT_MS")?,
                }),
            },
            metrics_enabled: env.flag("PROXY_ENABLE_METRICS")?,
            metrics_token: env.opt("PROXY_METRICS_TOKEN").map(Secret),
            worker: WorkerConfig {
                codex_bin: env
                    .opt("CODEX_BIN")
                    .map(PathBuf::from)
                    .unwrap_or_else(default_codex_bin),
                // The worker runs in its own working directory: relative paths
                // are resolved against the gateway's, where the operator meant them.
                codex_home: env.opt("CODEX_HOME").map(absolute),
                workdir: env.opt("PROXY_CODEX_WORKDIR").map(absolute),
                sandbox,
                enable_codex_tools: env.flag("PROXY_ENABLE_CODEX_TOOLS")?,
                model_provider: env.opt("PROXY_MODEL_PROVIDER"),
                log_filter: env.raw("WORKER_LOG_LEVEL"),
                backoff_initial,
                backoff_max,
                restart_max,
                healthy_reset: env.millis("WORKER_HEALTHY_RESET_MS")?,
                startup_timeout: nonzero(env, "WORKER_STARTUP_TIMEOUT_MS")?,
                handshake_timeout: nonzero(env, "WORKER_HANDSHAKE_TIMEOUT_MS")?,
                shutdown_grace: env.millis("WORKER_SHUTDOWN_GRACE_MS")?,
                request_timeout: nonzero(env, "WORKER_REQUEST_TIMEOUT_MS")?,
            },
        };
        Ok(config)
    }
}

fn nonzero<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    name: &'static str,
) -> Result<Duration, ConfigError> {
    let d = env.millis(name)?;
    if d.is_zero() {
        return Err(ConfigError {
            variable: name,
            message: "must be above 0".into(),
        });
    }
    Ok(d)
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

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(&Env::new(move |k| map.get(k).cloned()))
    }

    #[test]
    fn defaults_match_the_node_proxy() {
        let c = env(&[]).unwrap();
        assert_eq!(c.port, 11435);
        assert_eq!(c.host.to_string(), "127.0.0.1");
        assert_eq!(c.worker.sandbox, SandboxMode::ReadOnly);
        assert_eq!(c.worker.backoff_initial, Duration::from_millis(500));
        assert_eq!(c.worker.backoff_max, Duration::from_millis(5000));
        assert_eq!(c.worker.restart_max, 25);
        assert_eq!(c.worker.startup_timeout, Duration::from_millis(8000));
        assert_eq!(c.worker.handshake_timeout, Duration::from_millis(15000));
        assert_eq!(c.worker.shutdown_grace, Duration::from_millis(5000));
        assert_eq!(c.worker.request_timeout, Duration::from_millis(120000));
        assert_eq!(c.max_body_bytes, 16 * 1024 * 1024);
        assert!(!c.worker.enable_codex_tools);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let e = env(&[("PORT", "eleven")]).unwrap_err();
        assert_eq!(e.variable, "PORT");
        assert!(e.to_string().starts_with("invalid PORT: `eleven`"), "{e}");
        assert_eq!(
            env(&[("WORKER_RESTART_MAX", "-1")]).unwrap_err().variable,
            "WORKER_RESTART_MAX"
        );
        assert_eq!(
            env(&[("PROXY_SANDBOX_MODE", "yolo")]).unwrap_err().variable,
            "PROXY_SANDBOX_MODE"
        );
        assert_eq!(
            env(&[("WORKER_REQUEST_TIMEOUT_MS", "0")])
                .unwrap_err()
                .variable,
            "WORKER_REQUEST_TIMEOUT_MS"
        );
        assert_eq!(
            env(&[
                ("WORKER_BACKOFF_INITIAL_MS", "900"),
                ("WORKER_BACKOFF_MAX_MS", "800")
            ])
            .unwrap_err()
            .variable,
            "WORKER_BACKOFF_MAX_MS"
        );
        assert_eq!(
            env(&[("PROXY_PROTECT_MODELS", "maybe")])
                .unwrap_err()
                .variable,
            "PROXY_PROTECT_MODELS"
        );
    }

    #[test]
    fn keys_are_split_and_never_printed() {
        let c = env(&[("PROXY_API_KEY", "sk-one, sk-two")]).unwrap();
        assert_eq!(c.api_keys.len(), 2);
        assert_eq!(c.api_keys[1].1 .0, "sk-two");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("sk-one") && !debug.contains("sk-two"),
            "{debug}"
        );
    }

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let help = help_text();
        for v in VARIABLES {
            assert!(help.contains(v.name), "{} missing", v.name);
        }
        assert!(help.contains("11435"));
    }
}
