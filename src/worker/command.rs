//! The command line that starts the worker.

use std::path::Path;

use tokio::process::Command;

use super::config::{SandboxMode, WorkerConfig};
use super::host_tools::{lock_down, Lockdown};

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
/// `code_mode_host` does not take code mode's `exec` from the model (the
/// catalog does, see `host_tools`), but without it a forced `exec` runs no
/// JavaScript: no host process keeps spinning after the turn.
pub const HOST_TOOL_FEATURES: &[&str] = &[
    "shell_tool",
    "unified_exec",
    "view_image",
    "goals",
    "memories",
    "code_mode_host",
];

/// Builds `codex app-server` with the gateway's settings as `-c`/`--disable`
/// overrides; the operator's `config.toml` is never rewritten. Unless host
/// tools are enabled, first asks codex for what must be locked down (see
/// `host_tools`), and fails rather than start a worker that would offer them.
pub async fn worker_command(config: &WorkerConfig, workdir: &Path) -> Result<Command, String> {
    let lockdown = match config.enable_codex_tools {
        true => None,
        false => Some(lock_down(config, workdir).await?),
    };
    Ok(command(config, workdir, lockdown.as_ref()))
}

/// The same safety overrides for a one-shot `codex exec` (the exec backend,
/// `crate::exec`): asks codex for what must be locked down, like
/// [`worker_command`], and returns the arguments that go before `exec`'s own.
pub async fn safety_args(config: &WorkerConfig, workdir: &Path) -> Result<Vec<String>, String> {
    let lockdown = match config.enable_codex_tools {
        true => None,
        false => Some(lock_down(config, workdir).await?),
    };
    Ok(overrides(config, lockdown.as_ref()))
}

fn command(config: &WorkerConfig, workdir: &Path, lockdown: Option<&Lockdown>) -> Command {
    let mut cmd = Command::new(&config.codex_bin);
    cmd.arg("app-server");
    cmd.args(overrides(config, lockdown));
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

/// The `-c`/`--disable` overrides every codex process the gateway starts
/// gets: approvals never, the operator's sandbox, no remote features, and
/// (unless host tools are on) no host tools, with the locked-down catalog.
fn overrides(config: &WorkerConfig, lockdown: Option<&Lockdown>) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut pair = |flag: &str, value: String| args.extend([flag.to_owned(), value]);
    pair("-c", "approval_policy=\"never\"".into());
    pair(
        "-c",
        format!("sandbox_mode=\"{}\"", config.sandbox.as_str()),
    );
    if config.sandbox == SandboxMode::WorkspaceWrite {
        // Codex's workspace-write also opens the system temporary directory
        // (and so a CODEX_HOME under it); only the working directory is meant.
        pair(
            "-c",
            "sandbox_workspace_write.exclude_slash_tmp=true".into(),
        );
        pair(
            "-c",
            "sandbox_workspace_write.exclude_tmpdir_env_var=true".into(),
        );
    }
    pair("-c", "check_for_update_on_startup=false".into());
    for feature in ALWAYS_DISABLED_FEATURES {
        pair("--disable", (*feature).into());
    }
    if !config.enable_codex_tools {
        for feature in HOST_TOOL_FEATURES {
            pair("--disable", (*feature).into());
        }
        pair("-c", "agents.enabled=false".into());
        pair("-c", "web_search=\"disabled\"".into());
    }
    if let Some(lockdown) = lockdown {
        // A TOML string: JSON's escapes are a subset of TOML's.
        let path = serde_json::Value::from(lockdown.catalog.to_string_lossy()).to_string();
        pair("-c", format!("model_catalog_json={path}"));
        for server in &lockdown.mcp_servers {
            pair("-c", format!("mcp_servers.{server}.enabled=false"));
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{Config, Env};

    fn worker_config(vars: &[(&str, &str)]) -> WorkerConfig {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = Env::new(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()));
        Config::from_env(&env).expect("config").worker
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// `flag value` appears as consecutive arguments.
    fn has(args: &[String], flag: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn without_host_tools_the_worker_gets_the_stripped_catalog_and_no_mcp_servers() {
        let lockdown = Lockdown {
            catalog: PathBuf::from("/srv/codex home/codex-completions-api-models.json"),
            mcp_servers: vec!["docs".into(), "search-2".into()],
        };
        let cmd = command(&worker_config(&[]), Path::new("/w"), Some(&lockdown));
        let a = args(&cmd);
        assert!(
            has(
                &a,
                "-c",
                "model_catalog_json=\"/srv/codex home/codex-completions-api-models.json\""
            ),
            "{a:?}"
        );
        assert!(has(&a, "-c", "mcp_servers.docs.enabled=false"), "{a:?}");
        assert!(has(&a, "-c", "mcp_servers.search-2.enabled=false"), "{a:?}");
        // A forced code-mode `exec` finds no JavaScript host to run in.
        assert!(has(&a, "--disable", "code_mode_host"), "{a:?}");
    }

    #[test]
    fn with_host_tools_enabled_nothing_is_locked_down() {
        let config = worker_config(&[("PROXY_ENABLE_CODEX_TOOLS", "true")]);
        let a = args(&command(&config, Path::new("/w"), None));
        assert!(
            !a.iter().any(|x| x.starts_with("model_catalog_json")),
            "{a:?}"
        );
        assert!(!a.iter().any(|x| x.starts_with("mcp_servers")), "{a:?}");
        assert!(!has(&a, "--disable", "code_mode_host"), "{a:?}");
    }

    #[test]
    fn workspace_write_is_the_working_directory_only() {
        let config = worker_config(&[("PROXY_SANDBOX_MODE", "workspace-write")]);
        let a = args(&command(&config, Path::new("/w"), None));
        assert!(
            has(&a, "-c", "sandbox_workspace_write.exclude_slash_tmp=true"),
            "{a:?}"
        );
        assert!(
            has(
                &a,
                "-c",
                "sandbox_workspace_write.exclude_tmpdir_env_var=true"
            ),
            "{a:?}"
        );
        let a = args(&command(&worker_config(&[]), Path::new("/w"), None));
        assert!(
            !a.iter().any(|x| x.starts_with("sandbox_workspace_write")),
            "{a:?}"
        );
    }
}
