//! The worker's settings (the `worker` group of [`Config`](crate::config::Config)).

use std::path::PathBuf;
use std::time::Duration;

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

impl std::str::FromStr for SandboxMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SandboxMode, String> {
        match s {
            "read-only" => Ok(SandboxMode::ReadOnly),
            "workspace-write" => Ok(SandboxMode::WorkspaceWrite),
            "danger-full-access" => Ok(SandboxMode::DangerFullAccess),
            other => Err(format!(
                "`{other}` is not read-only, workspace-write or danger-full-access"
            )),
        }
    }
}

/// How the worker is started and supervised.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub codex_bin: PathBuf,
    pub codex_home: Option<PathBuf>,
    /// The worker's working directory; `None`: a private one made at start.
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
    /// Deadline of each JSON-RPC request to the worker.
    pub request_timeout: Duration,
    pub pool: PoolConfig,
}

/// How many workers run and when one is replaced (see `worker::pool`).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// `WORKER_POOL_SIZE`, at least 1.
    pub size: usize,
    /// `WORKER_CODEX_HOMES`: empty, or one per worker.
    pub codex_homes: Vec<PathBuf>,
    /// Turns a worker process starts before it is recycled (0: never).
    pub max_turns: u64,
    /// Resident memory, MB, past which a worker is recycled (0: never).
    pub max_rss_mb: u64,
    /// Longest a draining worker may take to finish its turns.
    pub drain_timeout: Duration,
}

impl WorkerConfig {
    /// The settings of worker `index`: its own `CODEX_HOME` when the pool names one.
    pub fn for_member(&self, index: usize) -> WorkerConfig {
        let mut c = self.clone();
        if let Some(home) = self.pool.codex_homes.get(index) {
            c.codex_home = Some(home.clone());
        }
        c
    }
}
