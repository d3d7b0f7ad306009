//! The worker's lifecycle state as the rest of the gateway sees it.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;

use super::account::Login;
use crate::protocol::Model;
use crate::rpc::RpcClient;

/// Where the worker is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerPhase {
    Starting,
    Handshaking,
    Ready,
    /// Up and handshaken, but its provider needs an OpenAI login it has not
    /// got: it takes no turns (`last_error` says what to run).
    LoginRequired,
    BackingOff,
    Stopped,
}

/// A snapshot of the worker. Cheap to clone (the client and models are shared).
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub phase: WorkerPhase,
    pub pid: Option<u32>,
    /// Processes started since the gateway started, the first one included.
    pub starts: u32,
    /// Failures since the worker last stayed ready for `WORKER_HEALTHY_RESET_MS`
    /// (what the restart backoff grows with); 0 again once it has.
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// The login codex reported at the last start (`account/read`).
    pub login: Option<Login>,
    #[serde(serialize_with = "unix_seconds")]
    pub since: SystemTime,
    #[serde(skip)]
    pub client: Option<RpcClient>,
    #[serde(skip)]
    pub models: Arc<Vec<Model>>,
}

fn unix_seconds<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

impl WorkerStatus {
    pub fn initial() -> WorkerStatus {
        WorkerStatus {
            phase: WorkerPhase::Starting,
            pid: None,
            starts: 0,
            consecutive_failures: 0,
            last_error: None,
            login: None,
            since: SystemTime::now(),
            client: None,
            models: Arc::new(Vec::new()),
        }
    }

    /// Ready means handshaken and the channel still open: a worker that just
    /// died may not have been reaped yet, but its channel closes at once.
    pub fn is_ready(&self) -> bool {
        self.phase == WorkerPhase::Ready && self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Why the worker cannot take requests now.
    pub fn not_ready_reason(&self) -> String {
        match self.phase {
            WorkerPhase::Ready if self.is_ready() => "ready".into(),
            WorkerPhase::Ready => "worker connection lost; restarting".into(),
            WorkerPhase::Starting => "worker is starting".into(),
            WorkerPhase::Handshaking => "worker is handshaking".into(),
            WorkerPhase::LoginRequired => self
                .last_error
                .clone()
                .unwrap_or_else(|| "worker is not logged in".into()),
            WorkerPhase::BackingOff => format!(
                "worker exited ({}); restarting after backoff",
                self.last_error.as_deref().unwrap_or("no reason given")
            ),
            WorkerPhase::Stopped => format!(
                "worker stopped: {}",
                self.last_error
                    .as_deref()
                    .unwrap_or("the gateway is shutting down")
            ),
        }
    }
}

/// The worker could not take a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub phase: WorkerPhase,
    pub reason: String,
    /// Set when the workers that could take the turn are all out of quota:
    /// the earliest reset (unix seconds).
    pub quota_resets_at: Option<u64>,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for NotReady {}

/// A read-only view of the worker, shared by every request.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    rx: watch::Receiver<WorkerStatus>,
}

impl WorkerHandle {
    pub fn new(rx: watch::Receiver<WorkerStatus>) -> WorkerHandle {
        WorkerHandle { rx }
    }

    pub fn status(&self) -> WorkerStatus {
        self.rx.borrow().clone()
    }

    /// The channel to use for one request, or why there is none.
    pub fn ready(&self) -> Result<(RpcClient, Arc<Vec<Model>>), NotReady> {
        let status = self.rx.borrow();
        match (&status.client, status.is_ready()) {
            (Some(client), true) => Ok((client.clone(), status.models.clone())),
            _ => Err(NotReady {
                phase: status.phase,
                reason: status.not_ready_reason(),
                quota_resets_at: None,
            }),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.rx.borrow().is_ready()
    }

    /// Why the worker cannot take a request now (its reason when ready is "ready").
    pub fn not_ready(&self) -> NotReady {
        let status = self.rx.borrow();
        NotReady {
            phase: status.phase,
            reason: status.not_ready_reason(),
            quota_resets_at: None,
        }
    }

    /// Whether `client` is the channel of this worker's current process.
    pub fn owns(&self, client: &RpcClient) -> bool {
        self.rx
            .borrow()
            .client
            .as_ref()
            .is_some_and(|c| c.same_channel(client))
    }

    /// Waits until the worker is ready (used by tests and start-up logging).
    pub async fn wait_ready(&self) -> Result<(), NotReady> {
        let mut rx = self.rx.clone();
        let res = rx
            .wait_for(|s| s.is_ready() || s.phase == WorkerPhase::Stopped)
            .await
            .map(|s| s.is_ready());
        match res {
            Ok(true) => Ok(()),
            _ => Err(NotReady {
                phase: WorkerPhase::Stopped,
                reason: self.status().not_ready_reason(),
                quota_resets_at: None,
            }),
        }
    }

    /// Resolves on every state change.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}
