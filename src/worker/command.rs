//! The command line that starts the worker.

use std::path::Path;

use tokio::process::Command;

use super::config::WorkerConfig;

/// Feature switches that keep a gateway's worker from reaching beyond what
/// the HTTP API needs: no plugin or app sync with remote services, no login
/// shell sourced at thread start, no hosted browser/computer tools, and fast
/// failure (instead of endless reconnects) when the model provider is down.
const ALWAYS_DISABLED_FEATURES: &[&str] = &[
    "plugins",
    "remote_plugin",
    "apps",
    "shell_snapshot",
    "unbounded_connection_retries",
    "browser_use",
    "browser_use_external",
    "computer_use",
    "image_generation",
    "tool_suggest",
    "skill_mcp_dependency_install",
];

/// Codex's own tools that act on this host. Off unless the operator opts in
/// with `PROXY_ENABLE_CODEX_TOOLS=true`. The same switches are also sent per
/// thread (see `core::thread_config`), which is the form measured to work.
pub const HOST_TOOL_FEATURES: &[&str] = &[
    "shell_tool",
    "unified_exec",
    "view_image",
    "goals",
    "memories",
];

/// Builds `codex app-server` with the gateway's settings as `-c`/`--disable`
/// overrides; the operator's `config.toml` is never rewritten.
pub fn worker_command(config: &WorkerConfig, workdir: &Path) -> Command {
    let mut cmd = Command::new(&config.codex_bin);
    cmd.arg("app-server");
    cmd.args(["-c", "approval_policy=\"never\""]);
    cmd.args([
        "-c",
        &format!("sandbox_mode=\"{}\"", config.sandbox.as_str()),
    ]);
    cmd.args(["-c", "check_for_update_on_startup=false"]);
    for feature in ALWAYS_DISABLED_FEATURES {
        cmd.args(["--disable", feature]);
    }
    if !config.enable_codex_tools {
        for feature in HOST_TOOL_FEATURES {
            cmd.args(["--disable", feature]);
        }
        cmd.args(["-c", "agents.enabled=false"]);
        cmd.args(["-c", "web_search=\"disabled\""]);
    }
    // The worker's log lines are re-emitted as tracing events: plain text,
    // at the level the operator chose for the worker.
    cmd.env("NO_COLOR", "1").env("RUST_LOG", &config.log_filter);
    if let Some(home) = &config.codex_home {
        cmd.env("CODEX_HOME", home);
    }
    cmd.current_dir(workdir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // The gateway decides when the worker stops (after streams drain), so
        // a Ctrl-C on the terminal must not reach the worker directly.
        .process_group(0)
        .kill_on_drop(true);
    cmd
}
