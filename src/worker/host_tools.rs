//! What the worker's settings cannot switch off on their own: codex's code
//! mode, its `apply_patch`, and the operator's MCP servers.
//!
//! Measured on 0.169.0 (`docs/security.md`, "Host tools and code mode"): the
//! models of codex's catalog decide some tools themselves. Code-mode models
//! (`tool_mode`) get a JavaScript `exec` that runs in a host process, with
//! `apply_patch` nested in it, and see the client's tools only inside its
//! description; `apply_patch_tool_type` offers `apply_patch` to the others;
//! `experimental_supported_tools` adds clock and messaging tools (0.171.0's
//! default `gpt-6.2-sol` adds `send_message_to_user_async` there). No feature
//! switch removes them. What does is a catalog with those three fields
//! cleared: the client's tools become direct tools again and a forced call
//! gets `unsupported custom tool call`, the same answer whatever its input.
//! So before each start the worker's own catalog (`codex debug models`:
//! the operator's `model_catalog_json`, or the bundled one) is copied with
//! those fields cleared and passed to the worker as `model_catalog_json`.
//!
//! MCP servers configured in `CODEX_HOME` are started by the worker and
//! offered to the model (`list_mcp_resources`, `read_mcp_resource`, ...);
//! `codex mcp list --json` names them so that each can be disabled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::config::WorkerConfig;

/// The file written into `CODEX_HOME`, next to codex's own state.
pub(super) const CATALOG_FILE: &str = "codex-completions-api-models.json";

/// What the worker's command line must add to keep host tools away from the
/// model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lockdown {
    /// The catalog without host tools, for `-c model_catalog_json=…`.
    pub(super) catalog: PathBuf,
    /// Enabled MCP servers, each to be disabled with `-c mcp_servers.NAME.enabled=false`.
    pub(super) mcp_servers: Vec<String>,
}

/// Asks the worker's codex (same binary, home and directory) for its model
/// catalog and MCP servers, writes the catalog without host tools, and says
/// what to disable. Fails, rather than start a worker with its host tools,
/// when codex cannot answer in `startup_timeout`.
pub(super) async fn lock_down(config: &WorkerConfig, workdir: &Path) -> Result<Lockdown, String> {
    let limit = config.startup_timeout;
    // Both questions at once: each is a process start (~65 ms), and a
    // restart after a crash waits for them.
    let (models, servers) = tokio::join!(
        run_codex(
            config,
            workdir,
            "`codex debug models`",
            &["debug", "models"],
            limit
        ),
        run_codex(
            config,
            workdir,
            "`codex mcp list`",
            &["mcp", "list", "--json"],
            limit
        ),
    );
    let (models, servers) = (models?, servers?);
    let mut catalog: Value = serde_json::from_slice(&models)
        .map_err(|e| format!("`codex debug models` printed no catalog: {e}"))?;
    strip_host_tools(&mut catalog)?;
    let path = codex_home(config)?.join(CATALOG_FILE);
    if path.to_str().is_none() {
        return Err(format!("{} is not UTF-8", path.display()));
    }
    write_atomically(&path, &catalog)?;

    let mcp_servers = enabled_mcp_servers(&servers)?;
    Ok(Lockdown {
        catalog: path,
        mcp_servers,
    })
}

/// Clears, in every model of `catalog`, the fields that give it codex's own
/// tools. The catalog keeps its models, so `/v1/models` lists the same.
pub(super) fn strip_host_tools(catalog: &mut Value) -> Result<(), String> {
    let models = catalog
        .get_mut("models")
        .and_then(Value::as_array_mut)
        .ok_or("the model catalog has no `models` list")?;
    for model in models.iter_mut().filter_map(Value::as_object_mut) {
        model.insert("tool_mode".into(), Value::Null);
        model.insert("apply_patch_tool_type".into(), Value::Null);
        model.insert(
            "experimental_supported_tools".into(),
            Value::Array(Vec::new()),
        );
    }
    Ok(())
}

/// The names of the enabled servers in `codex mcp list --json`. A name that
/// cannot be written as a `-c` key path is refused: its server could not be
/// switched off.
pub(super) fn enabled_mcp_servers(json: &[u8]) -> Result<Vec<String>, String> {
    let list: Value = serde_json::from_slice(json)
        .map_err(|e| format!("`codex mcp list --json` printed no list: {e}"))?;
    let mut names = Vec::new();
    for server in list
        .as_array()
        .ok_or("`codex mcp list --json` is not a list")?
    {
        if server.get("enabled").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let name = server
            .get("name")
            .and_then(Value::as_str)
            .ok_or("an MCP server without a name")?;
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !plain {
            return Err(format!(
                "cannot disable the MCP server {name:?} (only letters, digits, `_` and `-` \
                 can be switched off): remove it from CODEX_HOME, or set PROXY_ENABLE_CODEX_TOOLS=true"
            ));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// Where the worker keeps its state: `CODEX_HOME`, else codex's default.
fn codex_home(config: &WorkerConfig) -> Result<PathBuf, String> {
    if let Some(home) = &config.codex_home {
        return Ok(home.clone());
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".codex"))
        .ok_or_else(|| "neither CODEX_HOME nor HOME is set".into())
}

/// A running worker may read the catalog at any time: it sees the old file
/// or the new one, never half of one.
fn write_atomically(path: &Path, value: &Value) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Unique per write, not only per process: two lockdowns computed at once (a
    // worker restarting while the exec backend re-probes, or workers of a pool
    // sharing a state directory) must not rename each other's half-written file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.{}.{n}.tmp", std::process::id()));
    let text = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Runs `codex ARGS` as the worker would run (binary, `CODEX_HOME`,
/// directory: a relative `model_catalog_json` is resolved against it) and
/// returns its standard output, or why it failed (named `what`). The exec
/// backend's probe runs its checks through this too.
pub async fn run_codex(
    config: &WorkerConfig,
    workdir: &Path,
    what: &str,
    args: &[&str],
    limit: Duration,
) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new(&config.codex_bin);
    cmd.args(args)
        .env("NO_COLOR", "1")
        .current_dir(workdir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(home) = &config.codex_home {
        cmd.env("CODEX_HOME", home);
    }
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| format!("{what} did not answer within {limit:?} (WORKER_STARTUP_TIMEOUT_MS)"))?
        .map_err(|e| format!("cannot run {}: {e}", config.codex_bin.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!("{what} failed ({}): {last}", out.status));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lockdowns_written_at_once_to_one_path_all_land_whole() {
        let dir = std::env::temp_dir().join(format!("host-tools-race-{}", std::process::id()));
        let path = dir.join("catalog.json");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|i| write_atomically(&path, &json!({"writer": t, "write": i})))
                        .filter(Result::is_err)
                        .count()
                })
            })
            .collect();
        let failed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let last: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(failed, 0, "no write lost its temporary file to another");
        assert!(
            last["writer"].is_u64(),
            "the file is one whole write: {last}"
        );
    }

    #[test]
    fn every_model_loses_the_fields_that_give_it_host_tools() {
        let mut catalog = json!({"models": [
            {"slug": "gpt-6-sol", "tool_mode": "code_mode_only", "apply_patch_tool_type": "freeform",
             "experimental_supported_tools": ["send_user_message_async", "clock"], "shell_type": "unified_exec"},
            {"slug": "gpt-5.5", "apply_patch_tool_type": "freeform", "experimental_supported_tools": []},
        ]});
        strip_host_tools(&mut catalog).unwrap();
        for model in catalog["models"].as_array().unwrap() {
            assert_eq!(model["tool_mode"], Value::Null, "{model}");
            assert_eq!(model["apply_patch_tool_type"], Value::Null, "{model}");
            assert_eq!(model["experimental_supported_tools"], json!([]), "{model}");
        }
        // Everything else, and the list itself, is the operator's.
        assert_eq!(catalog["models"][0]["slug"], "gpt-6-sol");
        assert_eq!(catalog["models"][0]["shell_type"], "unified_exec");
        assert!(strip_host_tools(&mut json!({"data": []})).is_err());
    }

    #[test]
    fn enabled_mcp_servers_are_named_and_odd_names_refused() {
        let list = json!([
            {"name": "docs", "enabled": true, "transport": {"type": "stdio", "command": "x"}},
            {"name": "off", "enabled": false},
            {"name": "remote-2_b", "enabled": true},
        ]);
        assert_eq!(
            enabled_mcp_servers(list.to_string().as_bytes()).unwrap(),
            ["docs", "remote-2_b"]
        );
        assert_eq!(enabled_mcp_servers(b"[]").unwrap(), Vec::<String>::new());
        let odd = json!([{"name": "a.b", "enabled": true}]);
        assert!(enabled_mcp_servers(odd.to_string().as_bytes()).is_err());
        assert!(enabled_mcp_servers(b"not json").is_err());
    }
}
