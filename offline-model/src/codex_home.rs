//! Writes a `CODEX_HOME` that points `codex app-server` at an offline model.
//!
//! The config is the hermetic one measured in `codex-app-server.md` §1.2: every feature that
//! reaches the network or runs a login shell is switched off, retries are zero so a dead
//! model fails a turn in milliseconds, and a model catalog replaces the bundled OpenAI list
//! and the ~20 KB default prompt. Every key passes `codex app-server --strict-config`.

use std::io;
use std::path::Path;

use serde_json::json;

use crate::MODEL_ID;

/// File name of the model catalog written next to `config.toml`.
pub const CATALOG_FILE: &str = "codex-offline-catalog.json";

/// Name of the environment variable codex reads the (dummy) API key from.
pub const API_KEY_ENV: &str = "OFFLINE_MODEL_API_KEY";

/// The dummy key codex sends as `Authorization: Bearer …`.
pub const API_KEY: &str = "sk-offline-dummy";

/// The base instructions of the catalog model: codex sends them as the first `developer`
/// message of every request, instead of its default prompt.
pub const BASE_INSTRUCTIONS: &str = "You are Codex Offline, a deterministic test model.";

/// Variations of the `CODEX_HOME` that [`write_codex_home_with`] writes.
#[derive(Debug, Clone, Default)]
pub struct HomeOptions {
    /// Write no catalog and no default `model`: codex then serves the catalog bundled in
    /// its binary (`gpt-6-sol`, `gpt-5.5`, …, the models a real login gets), still through
    /// the offline provider, and `code_mode_host` is left at codex's default. This is what
    /// an operator's home looks like, so a test can see what codex does with its own
    /// models (code mode, `apply_patch`).
    pub bundled_models: bool,
    /// TOML appended to `config.toml`, e.g. an `[mcp_servers.NAME]` table.
    pub extra_config: String,
}

/// Writes `config.toml` and the model catalog for an offline model at `base_url` into
/// `dir` (created if missing), and returns the environment variables codex needs.
///
/// `base_url` is the provider base URL, e.g. `http://127.0.0.1:PORT/v1`; codex POSTs to
/// `{base_url}/responses`.
pub fn write_codex_home(dir: &Path, base_url: &str) -> io::Result<Vec<(String, String)>> {
    write_codex_home_with(dir, base_url, &HomeOptions::default())
}

/// [`write_codex_home`] with [`HomeOptions`].
pub fn write_codex_home_with(
    dir: &Path,
    base_url: &str,
    options: &HomeOptions,
) -> io::Result<Vec<(String, String)>> {
    std::fs::create_dir_all(dir)?;
    // codex resolves a relative `model_catalog_json` against its own cwd, not CODEX_HOME.
    let dir = dir.canonicalize()?;
    let mut config = if options.bundled_models {
        config_toml(base_url, None)
    } else {
        let catalog_path = dir.join(CATALOG_FILE);
        let catalog = serde_json::to_string_pretty(&catalog()).map_err(io::Error::other)?;
        std::fs::write(&catalog_path, catalog + "\n")?;
        let catalog_path = catalog_path.to_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "CODEX_HOME is not UTF-8")
        })?;
        config_toml(base_url, Some(catalog_path))
    };
    if !options.extra_config.is_empty() {
        config.push('\n');
        config.push_str(&options.extra_config);
        config.push('\n');
    }
    std::fs::write(dir.join("config.toml"), config)?;
    Ok(vec![(API_KEY_ENV.to_owned(), API_KEY.to_owned())])
}

/// The model catalog: one model, [`MODEL_ID`], with three reasoning levels.
pub fn catalog() -> serde_json::Value {
    let level = |effort: &str| json!({ "effort": effort, "description": format!("{effort} reasoning effort") });
    json!({
        "models": [{
            "slug": MODEL_ID,
            "display_name": "Codex Offline",
            "description": "Deterministic offline test model (codex-offline-model).",
            "default_reasoning_level": "medium",
            "supported_reasoning_levels": [level("low"), level("medium"), level("high")],
            // The same shell tool family the bundled models get, so a gateway test that
            // checks which host tools reach the model is testing the real default.
            "shell_type": "unified_exec",
            "visibility": "list",
            "supported_in_api": true,
            "priority": 0,
            "base_instructions": BASE_INSTRUCTIONS,
            "support_verbosity": false,
            "default_verbosity": null,
            "apply_patch_tool_type": null,
            "truncation_policy": { "mode": "bytes", "limit": 10000 },
            "supports_parallel_tool_calls": true,
            "context_window": 128000,
            "max_context_window": 128000,
            "effective_context_window_percent": 95,
            "experimental_supported_tools": [],
            "input_modalities": ["text", "image"]
        }]
    })
}

/// The hermetic `config.toml` for a provider named `offline`; without a catalog, codex's
/// bundled models and its default code-mode host.
fn config_toml(base_url: &str, catalog_path: Option<&str>) -> String {
    let (model, code_mode_host) = match catalog_path {
        Some(path) => (
            format!(
                "model = {}\nmodel_catalog_json = {}\n",
                toml_string(MODEL_ID),
                toml_string(path)
            ),
            "code_mode_host = false\n",
        ),
        None => (String::new(), ""),
    };
    format!(
        r#"# Written by codex-offline-model: codex app-server against a local fake model.
{model}model_provider = "offline"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false
web_search = "disabled"

[analytics]
enabled = false
[feedback]
enabled = false
[history]
persistence = "none"
[otel]
exporter = "none"
metrics_exporter = "none"
trace_exporter = "none"
log_user_prompt = false
[agents]
enabled = false
[skills.bundled]
enabled = false

[features]
# Essential: plugin sync reaches github.com and chatgpt.com.
plugins = false
# Essential: the shell snapshot runs `bash -lc`, sourcing the host's ~/.bashrc.
shell_snapshot = false
# Essential for tests: a dead model fails the turn instead of retrying forever.
unbounded_connection_retries = false
apps = false
remote_plugin = false
plugin_sharing = false
tool_suggest = false
api_key_model_discovery = false
image_generation = false
browser_use = false
browser_use_external = false
computer_use = false
in_app_browser = false
skill_search = false
skill_mcp_dependency_install = false
workspace_dependencies = false
daemon_auto_start = false
{code_mode_host}goals = false
memories = false
guardian_approval = false
enable_request_compression = false

[model_providers.offline]
name = "Codex offline model"
base_url = {base_url}
wire_api = "responses"
env_key = {env_key}
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 20000
supports_websockets = false
"#,
        base_url = toml_string(base_url),
        env_key = toml_string(API_KEY_ENV),
    )
}

/// A TOML basic string. JSON string escapes (`\"`, `\\`, `\n`, `\uXXXX`, …) are a subset
/// of TOML's, so serde_json's quoting is valid TOML.
fn toml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}
