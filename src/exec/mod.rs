//! The exec backend: one `codex exec --json` process per turn.
//!
//! The fallback for when a CLI release breaks `app-server`, and an
//! independent reference to check the app-server path against
//! (`scripts/parity`). It takes the same [`TurnRequest`] and yields the same
//! [`TurnEvent`]s as the app-server core, so the API, the layers and both
//! output modes sit on top of it unchanged (`crate::backend` is the seam).
//!
//! Safety is the worker's: the same `-c`/`--disable` overrides
//! (`worker::safety_args`: approvals never, the operator's sandbox, host
//! tools off, the catalog without code mode, MCP servers disabled), computed
//! once at start, and a turn whose events show a host action is failed and
//! killed. Concurrency is bounded like the worker's (`WORKER_MAX_CONCURRENCY`
//! slots, `WORKER_QUEUE_MAX` waiters for `WORKER_QUEUE_TIMEOUT_MS`).
//!
//! What exec cannot do (client tools, live threads, parked tool calls) is
//! refused by the pipeline before a turn starts (`backend::unsupported`).
//!
//! Files: `transcript.rs` turns history and images into a prompt and files;
//! `events.rs` maps exec's JSONL to turn events; `turn.rs` is the process as
//! a turn.

mod events;
mod transcript;
mod turn;

pub use events::classify;
pub use transcript::{prompt, ImageFile, Prompt};
pub use turn::ExecTurn;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::core::{CoreConfig, Failure, FailureKind, TurnRequest, TurnSlots};
use crate::worker::WorkerConfig;
use turn::PrivateDir;

/// Longest `-c developer_instructions=…` argument: Linux caps one argument
/// at 128 KiB (`MAX_ARG_STRLEN`).
const MAX_INSTRUCTIONS_BYTES: usize = 100 * 1024;

/// Starts exec turns. Cheap to clone.
#[derive(Clone)]
pub struct ExecBackend {
    inner: Arc<Inner>,
}

struct Inner {
    codex_bin: PathBuf,
    codex_home: Option<PathBuf>,
    workdir: PathBuf,
    log_filter: String,
    model_provider: Option<String>,
    /// The worker's safety overrides, computed once at start.
    safety: Vec<String>,
    idle_timeout: Option<Duration>,
    refuse_host_items: bool,
    slots: TurnSlots,
}

impl ExecBackend {
    /// Asks codex what to lock down (as a worker start does) and fails
    /// rather than run turns with codex's host tools.
    pub async fn start(
        worker: &WorkerConfig,
        core: &CoreConfig,
        workdir: &Path,
    ) -> Result<ExecBackend, String> {
        let safety = crate::worker::safety_args(worker, workdir).await?;
        Ok(ExecBackend::with_safety(worker, core, workdir, safety))
    }

    fn with_safety(
        worker: &WorkerConfig,
        core: &CoreConfig,
        workdir: &Path,
        safety: Vec<String>,
    ) -> ExecBackend {
        ExecBackend {
            inner: Arc::new(Inner {
                codex_bin: worker.codex_bin.clone(),
                codex_home: worker.codex_home.clone(),
                workdir: workdir.to_owned(),
                log_filter: worker.log_filter.clone(),
                model_provider: core.model_provider.clone(),
                safety,
                idle_timeout: core.idle_timeout,
                refuse_host_items: !core.enable_codex_tools,
                slots: TurnSlots::new(
                    core.max_concurrency,
                    core.queue_max,
                    core.queue_timeout,
                    core.in_flight.clone(),
                ),
            }),
        }
    }

    /// Starts one turn: a slot, a private directory with the request's
    /// images and output schema, and the process with the prompt on stdin.
    pub async fn start_turn(&self, req: TurnRequest) -> Result<ExecTurn, Failure> {
        let prompt = prompt(&req).map_err(|m| Failure::new(FailureKind::BadRequest, m))?;
        if req.instructions.as_ref().map_or(0, String::len) > MAX_INSTRUCTIONS_BYTES {
            return Err(Failure::new(
                FailureKind::BadRequest,
                format!(
                    "System and developer messages over {MAX_INSTRUCTIONS_BYTES} bytes are not \
                     supported on the exec backend."
                ),
            ));
        }
        let slot = self.inner.slots.acquire().await?;
        let files = private_dir().map_err(upstream)?;
        let mut cmd = self.command(&req, &prompt, &files.0).map_err(upstream)?;
        let mut child = cmd.spawn().map_err(|e| {
            upstream(format!(
                "cannot start {}: {e}",
                self.inner.codex_bin.display()
            ))
        })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let text = prompt.text;
        // Written in the background: a long prompt must not wait for the
        // reader, and the pipe's close is exec's end of input.
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
        Ok(ExecTurn::new(
            child,
            self.inner.idle_timeout,
            self.inner.refuse_host_items,
            slot,
            files,
        ))
    }

    fn command(&self, req: &TurnRequest, prompt: &Prompt, dir: &Path) -> Result<Command, String> {
        let inner = &self.inner;
        let mut cmd = Command::new(&inner.codex_bin);
        cmd.args(&inner.safety);
        cmd.arg("exec");
        cmd.args(["--json", "--ephemeral", "--skip-git-repo-check"]);
        cmd.args(["--color", "never"]);
        cmd.arg("--model").arg(&req.model);
        // A TOML string: JSON's escapes are a subset of TOML's.
        let toml_str = |s: &str| serde_json::Value::from(s).to_string();
        if let Some(effort) = &req.effort {
            cmd.args([
                "-c",
                &format!("model_reasoning_effort={}", toml_str(effort)),
            ]);
        }
        if let Some(provider) = &inner.model_provider {
            cmd.args(["-c", &format!("model_provider={}", toml_str(provider))]);
        }
        if let Some(instructions) = &req.instructions {
            cmd.args([
                "-c",
                &format!("developer_instructions={}", toml_str(instructions)),
            ]);
        }
        for (i, image) in prompt.images.iter().enumerate() {
            let path = dir.join(format!("image-{}.{}", i + 1, image.extension));
            std::fs::write(&path, &image.bytes)
                .map_err(|e| format!("cannot write an image: {e}"))?;
            let mut flag = std::ffi::OsString::from("--image=");
            flag.push(&path);
            cmd.arg(flag);
        }
        if let Some(schema) = &req.output_schema {
            let path = dir.join("output-schema.json");
            std::fs::write(&path, schema.to_string())
                .map_err(|e| format!("cannot write the output schema: {e}"))?;
            cmd.arg("--output-schema").arg(&path);
        }
        // No prompt argument: exec reads it from stdin.
        cmd.env("NO_COLOR", "1").env("RUST_LOG", &inner.log_filter);
        if let Some(home) = &inner.codex_home {
            cmd.env("CODEX_HOME", home);
        }
        cmd.current_dir(&inner.workdir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own group, so a disconnect can kill all of it, and a Ctrl-C
            // on the gateway's terminal does not reach it directly.
            .process_group(0)
            .kill_on_drop(true);
        Ok(cmd)
    }
}

fn upstream(message: String) -> Failure {
    Failure::new(FailureKind::Upstream, message)
}

/// A fresh directory only this user can read: the request's images and
/// schema are the client's data.
fn private_dir() -> Result<PrivateDir, String> {
    use std::os::unix::fs::DirBuilderExt;
    let path = std::env::temp_dir().join(format!("codex-exec-{:016x}", rand::random::<u64>()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    Ok(PrivateDir(path))
}

/// A backend built without asking codex anything, for unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::config::{Config, Env};

    pub(crate) fn backend() -> ExecBackend {
        with_codex("/bin/codex")
    }

    /// A backend whose "codex" is `bin` (a script in tests).
    pub(crate) fn with_codex(bin: &str) -> ExecBackend {
        let bin = bin.to_owned();
        let env = Env::new(move |k| (k == "CODEX_BIN").then(|| bin.clone()));
        let c = Config::from_env(&env).expect("config");
        let safety = vec!["--disable".into(), "shell_tool".into()];
        ExecBackend::with_safety(&c.worker, &c.core, &std::env::temp_dir(), safety)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::backend;
    use super::*;
    use crate::protocol::UserInput;

    #[test]
    fn the_command_carries_the_safety_overrides_and_the_request() {
        let b = backend();
        let req = TurnRequest {
            model: "m".into(),
            effort: Some("high".into()),
            instructions: Some("Say \"hi\".".into()),
            input: vec![UserInput::text("x")],
            output_schema: Some(serde_json::json!({"type": "object"})),
            ..TurnRequest::default()
        };
        let dir = private_dir().unwrap();
        let p = prompt(&req).unwrap();
        let cmd = b.command(&req, &p, &dir.0).unwrap();
        let args: Vec<String> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            &args[..3],
            ["--disable", "shell_tool", "exec"],
            "safety before the subcommand"
        );
        assert!(args.contains(&"--json".to_owned()));
        assert!(args.contains(&r#"developer_instructions="Say \"hi\".""#.to_owned()));
        assert!(args.contains(&r#"model_reasoning_effort="high""#.to_owned()));
        let schema = args.iter().position(|a| a == "--output-schema").unwrap();
        assert!(std::fs::read_to_string(&args[schema + 1])
            .unwrap()
            .contains("object"));
        let mode = std::fs::metadata(&dir.0).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            mode.permissions().mode() & 0o777,
            0o700,
            "private to the gateway's user"
        );
        let path = dir.0.clone();
        drop(dir);
        assert!(!path.exists(), "removed with the turn");
    }

    /// A fake `codex` that runs `first` (shell), prints `lines` as its
    /// JSONL, then runs `then`.
    fn fake_codex(first: &str, lines: &str, then: &str) -> (ExecBackend, PrivateDir) {
        let dir = private_dir().unwrap();
        let path = dir.0.join("codex");
        let script =
            format!("#!/bin/sh\ncat > /dev/null\n{first}\nprintf '%s\\n' {lines}\n{then}\n");
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (
            super::tests_support::with_codex(path.to_str().unwrap()),
            dir,
        )
    }

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn a_host_action_fails_the_turn_and_the_drop_kills_the_process() {
        // A child started before the line (as a host action would be), so
        // only killing the group stops it.
        let (b, _dir) = fake_codex(
            "sleep 30 &",
            r#"'{"type":"item.started","item":{"type":"command_execution"}}'"#,
            "wait",
        );
        let mut turn = b.start_turn(TurnRequest::default()).await.unwrap();
        let pid = turn.pid().unwrap();
        match turn.next().await {
            Some(crate::core::TurnEvent::Failed(f)) => {
                assert_eq!(f.kind, FailureKind::HostToolRefused, "{f:?}")
            }
            other => panic!("{other:?}"),
        }
        assert!(alive(pid));
        drop(turn);
        // The process and what it started (the script's `sleep`): its group.
        for _ in 0..200 {
            if group(pid).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{:?} of codex exec {pid} still run after its turn was dropped",
            group(pid)
        );
    }

    /// Live processes of process group `pgid`.
    fn group(pgid: u32) -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    let rest: Vec<&str> = s
                        .rsplit_once(')')
                        .map(|(_, r)| r.split_whitespace().collect())
                        .unwrap_or_default();
                    // `state ppid pgrp`; a zombie is gone already.
                    rest.first() != Some(&"Z") && rest.get(2) == Some(&pgid.to_string().as_str())
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn a_process_that_ends_without_a_turn_event_fails_with_its_stderr() {
        let (b, _dir) = fake_codex(":", "'not json'", "echo 'Error: unknown model' >&2; exit 3");
        let mut turn = b.start_turn(TurnRequest::default()).await.unwrap();
        match turn.next().await {
            Some(crate::core::TurnEvent::Failed(f)) => {
                assert_eq!(f.kind, FailureKind::Upstream);
                assert!(f.message.contains("status 3"), "{}", f.message);
                assert!(f.message.contains("unknown model"), "{}", f.message);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(turn.next().await, None);
    }
}
