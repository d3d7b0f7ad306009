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
//! by each probe (`probe.rs`: at start, on a rolling restart, periodically),
//! and a turn whose events show a host action is failed and killed.
//! Concurrency is the core's: exec turns take the same turn slots as
//! app-server turns (`WORKER_MAX_CONCURRENCY` × `WORKER_POOL_SIZE`, with
//! `WORKER_QUEUE_MAX` waiters for `WORKER_QUEUE_TIMEOUT_MS`), so a canary
//! split never runs more turns than the limit.
//!
//! With `PROXY_BACKEND=exec` (and no canary) no `codex app-server` runs at
//! all: the probe gives `/v1/models` and readiness, so exec is a fallback
//! for a CLI release whose app-server is broken.
//!
//! What exec cannot do (client tools, live threads, parked tool calls) is
//! refused by the pipeline before a turn starts (`backend::unsupported`).
//!
//! Files: `transcript.rs` turns history and images into a prompt and files;
//! `events.rs` maps exec's JSONL to turn events; `turn.rs` is the process as
//! a turn; `probe.rs` asks the CLI for its version, lockdown and models.

mod events;
mod probe;
mod transcript;
mod turn;

pub use events::classify;
pub use probe::{ExecStatus, PROBE_EVERY};
pub use transcript::{prompt, ImageFile, Prompt};
pub use turn::ExecTurn;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::core::{CoreConfig, Failure, FailureKind, TurnRequest, TurnSlots};
use crate::protocol::Model;
use crate::worker::WorkerConfig;
use probe::{Health, Snapshot};
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
    idle_timeout: Option<Duration>,
    refuse_host_items: bool,
    /// The core's slots: one limit for both backends' turns.
    slots: TurnSlots,
    /// What a probe needs (binary, home, sandbox, timeouts).
    worker: WorkerConfig,
    /// The probes' results. Held only to read or swap them, never across
    /// an `.await`.
    health: Mutex<Health>,
    /// A probe is running: a second one (a restart during the first) is
    /// not started.
    probing: AtomicBool,
    /// 1 while ready (`exec_ready` on `/metrics`, set by each probe).
    ready_gauge: Gauge,
}

impl ExecBackend {
    /// A backend that has not asked its CLI anything yet: no turn runs
    /// until [`ExecBackend::probe`] has found the lockdown. `slots` are the
    /// core's ([`crate::core::CodexCore::turn_slots`]).
    pub(crate) fn new(
        worker: &WorkerConfig,
        core: &CoreConfig,
        workdir: &Path,
        slots: TurnSlots,
    ) -> ExecBackend {
        ExecBackend {
            inner: Arc::new(Inner {
                codex_bin: worker.codex_bin.clone(),
                codex_home: worker.codex_home.clone(),
                workdir: workdir.to_owned(),
                log_filter: worker.log_filter.clone(),
                model_provider: core.model_provider.clone(),
                idle_timeout: core.idle_timeout,
                refuse_host_items: !core.enable_codex_tools,
                slots,
                worker: worker.clone(),
                health: Mutex::new(Health::default()),
                probing: AtomicBool::new(false),
                ready_gauge: Gauge::default(),
            }),
        }
    }

    /// Asks the CLI for its version, the lockdown and the models
    /// (`probe.rs`), and keeps the answer: turns then run with that
    /// lockdown, `/v1/models` lists those models. A failure makes the
    /// backend not ready (503s) until a probe passes again; the last good
    /// answer stays for `GET /admin/workers` to show. `Ok(false)`: a probe
    /// was running already, this one did nothing.
    pub async fn probe(&self) -> Result<bool, String> {
        let inner = &self.inner;
        if inner.probing.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        // Cleared however the probe ends (a dropped future included), so a
        // later restart can probe again.
        struct Probing<'a>(&'a AtomicBool);
        impl Drop for Probing<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let probing = Probing(&inner.probing);
        let result = probe::probe(&inner.worker, &inner.workdir).await;
        drop(probing);
        let mut health = self.health();
        health.probes += 1;
        inner.ready_gauge.set(i64::from(result.is_ok()));
        match result {
            Ok(snapshot) => {
                tracing::info!(
                    codex_version = %snapshot.codex_version,
                    models = snapshot.models.len(),
                    "exec backend checked its CLI: locked down, models listed"
                );
                health.current = Some(Arc::new(snapshot));
                health.last_error = None;
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the exec backend's check of its CLI failed");
                health.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Registers `exec_ready`: 1 while the last probe passed (an
    /// exec-only gateway has no `worker_ready` to alert on).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "exec_ready",
            "1 while the exec backend's last check of its CLI passed",
            self.inner.ready_gauge.clone(),
        );
    }

    /// Starts a probe and returns at once (a rolling restart: SIGHUP, the
    /// admin endpoint). `GET /admin/workers` shows the result.
    pub fn probe_in_background(&self) {
        let backend = self.clone();
        tokio::spawn(async move {
            let _ = backend.probe().await;
        });
    }

    /// Probes every [`PROBE_EVERY`] (sooner after a failure) until `stop`.
    pub fn spawn_prober(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let backend = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = match backend.ready() {
                    true => probe::PROBE_EVERY,
                    false => probe::RETRY_EVERY,
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                let _ = backend.probe().await;
            }
        })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // A panic while holding it leaves plain data behind: still usable.
        self.inner.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.health().current.clone()
    }

    /// The last good probe's answer while the backend is ready; else the
    /// 503 an app-server gateway without a ready worker answers. Turns and
    /// `/v1/models` follow readiness, as they do on app-server: a load
    /// balancer and a client see the same state.
    fn usable(&self) -> Result<Arc<Snapshot>, Failure> {
        let health = self.health();
        match (health.not_ready(), &health.current) {
            (None, Some(s)) => Ok(s.clone()),
            (reason, _) => Err(not_ready(reason.unwrap_or_default())),
        }
    }

    /// Whether the last probe passed.
    pub fn ready(&self) -> bool {
        self.health().not_ready().is_none()
    }

    /// Why the backend cannot take turns now (`None`: it can).
    pub fn not_ready(&self) -> Option<String> {
        self.health().not_ready()
    }

    /// The models the last good probe listed (`/v1/models` in exec mode).
    pub fn models(&self) -> Result<Arc<Vec<Model>>, Failure> {
        self.usable().map(|s| s.models.clone())
    }

    /// For `/readyz`, `/healthz` and `GET /admin/workers`.
    pub fn status(&self) -> ExecStatus {
        let health = self.health();
        let reason = health.not_ready();
        let current = health.current.as_deref();
        ExecStatus {
            ready: reason.is_none(),
            reason,
            codex_version: current.map(|s| s.codex_version.clone()),
            models: current.map_or(0, |s| s.models.len()),
            checked_at: current.map(|s| s.at),
            probes: health.probes,
            last_error: health.last_error.clone(),
            turn_slots: self.inner.slots.max(),
            turns_in_flight: self.inner.slots.in_use(),
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
        // Not ready, no turn: above all, no lockdown known means never
        // running exec with codex's host tools.
        let snapshot = self.usable()?;
        let slot = self.inner.slots.acquire().await?;
        let files = private_dir().map_err(upstream)?;
        let mut cmd = self
            .command(&req, &prompt, &files.0, &snapshot.safety)
            .map_err(upstream)?;
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

    fn command(
        &self,
        req: &TurnRequest,
        prompt: &Prompt,
        dir: &Path,
        safety: &[String],
    ) -> Result<Command, String> {
        let inner = &self.inner;
        let mut cmd = Command::new(&inner.codex_bin);
        cmd.args(safety);
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

/// The same 503 an app-server gateway without a ready worker answers.
fn not_ready(reason: String) -> Failure {
    Failure::new(
        FailureKind::NotReady,
        format!("The Codex exec backend is not ready: {reason}"),
    )
    .with_retry_after(Duration::from_secs(2))
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
        let b = unprobed(bin, &std::env::temp_dir());
        b.health().current = Some(Arc::new(Snapshot {
            safety: vec!["--disable".into(), "shell_tool".into()],
            models: Arc::default(),
            codex_version: "codex-cli test".into(),
            at: 0,
        }));
        b
    }

    /// A backend that has not probed its "codex" (`bin`), with `home` as
    /// its `CODEX_HOME` (the lockdown writes its catalog there).
    pub(crate) fn unprobed(bin: &str, home: &Path) -> ExecBackend {
        let vars = [
            ("CODEX_BIN", bin.to_owned()),
            ("CODEX_HOME", home.display().to_string()),
        ];
        let env = Env::new(move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.clone())
        });
        let c = Config::from_env(&env).expect("config");
        let core = &c.core;
        let slots = TurnSlots::new(
            core.max_concurrency,
            core.queue_max,
            core.queue_timeout,
            None,
        );
        ExecBackend::new(&c.worker, core, &std::env::temp_dir(), slots)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::backend;
    use super::*;
    use crate::core::TurnSource;
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
        let safety = b.snapshot().unwrap().safety.clone();
        let cmd = b.command(&req, &p, &dir.0, &safety).unwrap();
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
    async fn a_host_action_fails_the_turn_and_the_end_comes_after_the_process_is_stopped() {
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
        // Reaped before the end was handed on; SIGKILLed, so a child that
        // was not its own may take a moment to go.
        assert!(!alive(pid), "codex exec {pid} outlived its turn's end");
        // What it started (the script's `sleep`): its group.
        for _ in 0..200 {
            if group(pid).is_empty() {
                drop(turn);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{:?} of codex exec {pid} still run after its turn ended",
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

    /// A fake `codex` that answers the probe's questions while `dir/broken`
    /// does not exist, and fails every call once it does.
    fn probed_codex() -> (PrivateDir, PathBuf) {
        let dir = private_dir().unwrap();
        let path = dir.0.join("codex");
        let broken = dir.0.join("broken");
        let catalog = r#"{"models":[{"slug":"m","display_name":"M","visibility":"list","priority":1,"supported_reasoning_levels":[{"effort":"high"}]}]}"#;
        let script = format!(
            "#!/bin/sh\n[ -e '{broken}' ] && {{ echo 'error: broken' >&2; exit 1; }}\n\
             for a in \"$@\"; do case \"$a\" in\n\
             --version) echo 'codex-cli 9.9.9'; exit 0 ;;\n\
             mcp) echo '[]'; exit 0 ;;\n\
             models) echo '{catalog}'; exit 0 ;;\n\
             esac; done\nexit 2\n",
            broken = broken.display(),
        );
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, broken)
    }

    #[tokio::test]
    async fn no_turn_before_a_good_probe_and_none_after_a_failed_one_until_one_passes() {
        let (dir, broken) = probed_codex();
        let b = super::tests_support::unprobed(dir.0.join("codex").to_str().unwrap(), &dir.0);
        // Not probed: no lockdown, so no turn and no models (503s).
        assert!(!b.ready());
        let f = b.start_turn(TurnRequest::default()).await.err().unwrap();
        assert_eq!(f.kind, FailureKind::NotReady, "{f:?}");
        assert_eq!(b.models().unwrap_err().kind, FailureKind::NotReady);

        assert_eq!(b.probe().await, Ok(true));
        assert!(b.ready());
        let models = b.models().unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].id, "m");
        let status = b.status();
        assert_eq!(status.codex_version.as_deref(), Some("codex-cli 9.9.9"));
        assert_eq!((status.probes, status.models), (1, 1));
        assert!(
            b.snapshot()
                .unwrap()
                .safety
                .iter()
                .any(|a| a.contains("model_catalog_json")),
            "the lockdown's catalog is in the turns' overrides"
        );

        // The CLI breaks (an upgrade in place): the next probe says so.
        std::fs::write(&broken, "").unwrap();
        let e = b.probe().await.unwrap_err();
        assert!(e.contains("--version") || e.contains("broken"), "{e}");
        assert!(!b.ready());
        assert!(b.not_ready().unwrap().contains("last check failed"));
        assert_eq!(b.models().unwrap_err().kind, FailureKind::NotReady);
        // Turns follow readiness (a 503, as without a ready worker).
        let f = b.start_turn(TurnRequest::default()).await.err().unwrap();
        assert_eq!(f.kind, FailureKind::NotReady, "{f:?}");
        assert!(f.message.contains("last check failed"), "{f:?}");
        // The last good answer is still shown.
        assert_eq!(b.status().codex_version.as_deref(), Some("codex-cli 9.9.9"));

        // Fixed again: ready again at the next probe.
        std::fs::remove_file(&broken).unwrap();
        assert_eq!(b.probe().await, Ok(true));
        assert!(b.ready());
        assert_eq!(b.status().probes, 3);
    }
}
