//! The seam between the pipeline and the two backends that run turns:
//! `codex app-server` ([`CodexCore`], the default) and `codex exec --json`
//! ([`ExecBackend`]).
//!
//! The pipeline asks [`Backends::choose`] which backend a request goes to,
//! then runs its turns through [`Backends::start_turn`] and reads each as a
//! [`Turn`]: one [`TurnSource`] whichever backend runs it. Everything above
//! (dialects, renderers, output modes, layers) is the same for both.
//!
//! `PROXY_BACKEND` names the default; `PROXY_BACKEND_CANARY_PERCENT` sends
//! that share of new conversations to the other one. The choice is a hash of
//! the conversation's owner and first message, so every request of one
//! conversation (the whole history resent, or rebuilt from a
//! `previous_response_id` chain) lands on the same backend: sticky without
//! state. A canary never sends a request to exec that exec cannot serve
//! ([`unsupported`]); with exec as the default such a request is refused
//! with 400 `unsupported_on_backend`.
//!
//! The default backend also answers `/v1/models` and readiness
//! ([`Backends::models`], [`Backends::not_ready`]): with `PROXY_BACKEND=exec`
//! and no canary share no `codex app-server` is started at all, so a CLI
//! release whose app-server is broken still serves through exec.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::core::{
    CodexCore, Failure, FailureKind, IdleThread, ParkedTurn, TurnEvent, TurnRequest, TurnSource,
    TurnStream,
};
use crate::exec::{ExecBackend, ExecTurn};
use crate::protocol::Model;

/// Which program runs a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    AppServer,
    Exec,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::AppServer => "app-server",
            BackendKind::Exec => "exec",
        }
    }

    fn other(self) -> BackendKind {
        match self {
            BackendKind::AppServer => BackendKind::Exec,
            BackendKind::Exec => BackendKind::AppServer,
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<BackendKind, String> {
        match s {
            "app-server" => Ok(BackendKind::AppServer),
            "exec" => Ok(BackendKind::Exec),
            other => Err(format!("`{other}` is not app-server or exec")),
        }
    }
}

/// `PROXY_BACKEND` (or `PROXY_USE_APP_SERVER`) and `PROXY_BACKEND_CANARY_PERCENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendConfig {
    pub default: BackendKind,
    /// Share of new conversations (0-100) sent to the other backend.
    pub canary_percent: u8,
}

impl Default for BackendConfig {
    fn default() -> BackendConfig {
        BackendConfig {
            default: BackendKind::AppServer,
            canary_percent: 0,
        }
    }
}

impl BackendConfig {
    /// Whether the exec backend must be started.
    pub fn needs_exec(&self) -> bool {
        self.default == BackendKind::Exec || self.canary_percent > 0
    }

    /// Whether the app-server worker pool must be started.
    pub fn needs_app_server(&self) -> bool {
        self.default == BackendKind::AppServer || self.canary_percent > 0
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub kind: BackendKind,
    /// Sent there by the canary share, not the default.
    pub canary: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    backend: &'static str,
    canary: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    backend: &'static str,
    kind: String,
}

/// Requests and failed turns per backend, so an operator moving traffic in
/// stages can watch both.
#[derive(Clone, Default)]
pub struct BackendMetrics {
    requests: Family<RequestLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
}

impl BackendMetrics {
    pub fn register(registry: &mut Registry) -> BackendMetrics {
        let m = BackendMetrics::default();
        registry.register(
            "backend_requests",
            "Requests by the backend that ran them (app-server, exec) and whether the canary share sent them",
            m.requests.clone(),
        );
        registry.register(
            "backend_turn_failures",
            "Turns that failed, by backend and failure class",
            m.failures.clone(),
        );
        m
    }
}

/// The backends a gateway runs: the app-server core's pool unless exec is
/// the default without a canary share (then the pool is empty), exec when
/// configured. The default one lists the models and answers readiness.
#[derive(Clone, Default)]
pub struct Backends {
    pub config: BackendConfig,
    pub exec: Option<ExecBackend>,
    pub metrics: Option<BackendMetrics>,
}

/// What a request asks for that exec cannot do: a feature name for the 400.
pub struct Needs {
    /// The request offers client tools (function calling): exec has no
    /// dynamic tools, so no call could reach the client or continue.
    pub client_tools: bool,
}

/// The feature exec cannot serve, if any.
pub fn unsupported(needs: &Needs) -> Option<&'static str> {
    // Tool results without tools are plain history (the transcript carries
    // them); with tools, the request is refused for the tools already.
    needs
        .client_tools
        .then_some("client tools (function calling)")
}

impl Backends {
    /// The exec backend when it is the default (it then lists the models
    /// and answers readiness).
    pub fn exec_default(&self) -> Option<&ExecBackend> {
        match self.config.default {
            BackendKind::Exec => self.exec.as_ref(),
            BackendKind::AppServer => None,
        }
    }

    /// The models clients may name: the default backend's list (the same
    /// CLI and `CODEX_HOME` give both backends the same one).
    pub fn models(&self, core: &CodexCore) -> Result<Arc<Vec<Model>>, Failure> {
        match self.exec_default() {
            Some(exec) => exec.models(),
            None => core.models(),
        }
    }

    /// Why the default backend cannot take a new turn now (`None`: it can).
    /// A canary backend that is down fails only its share of requests.
    pub fn not_ready(&self, core: &CodexCore) -> Option<String> {
        match self.exec_default() {
            Some(exec) => exec.not_ready(),
            None => {
                let pool = core.pool();
                (pool.serving_count() == 0).then(|| pool.not_ready().reason)
            }
        }
    }

    /// The backend for a conversation. `key` identifies the conversation
    /// stably across its requests (see the module doc).
    /// `key` is only computed when a canary share is configured.
    pub fn choose<K: Hash>(&self, key: impl FnOnce() -> K, needs: &Needs) -> Choice {
        let default = self.config.default;
        let canary = self.exec.is_some()
            && self.config.canary_percent > 0
            && bucket(key()) < u64::from(self.config.canary_percent)
            // An exec canary whose CLI check fails would only fail its
            // share: those conversations stay on the default meanwhile.
            && (default == BackendKind::Exec || self.exec.as_ref().is_some_and(|e| e.ready()));
        let mut choice = Choice {
            kind: if canary { default.other() } else { default },
            canary,
        };
        // The canary is the operator's experiment, not the client's: a
        // request exec cannot serve stays on app-server.
        if choice.canary && choice.kind == BackendKind::Exec && unsupported(needs).is_some() {
            choice = Choice {
                kind: BackendKind::AppServer,
                canary: false,
            };
        }
        if let Some(m) = &self.metrics {
            m.requests
                .get_or_create(&RequestLabels {
                    backend: choice.kind.as_str(),
                    canary: if choice.canary { "true" } else { "false" },
                })
                .inc();
        }
        choice
    }

    /// Starts one turn on `kind`.
    pub async fn start_turn(
        &self,
        core: &CodexCore,
        kind: BackendKind,
        req: TurnRequest,
    ) -> Result<Turn, Failure> {
        let started = match (kind, &self.exec) {
            (BackendKind::Exec, Some(exec)) => exec.start_turn(req).await.map(Inner::Exec),
            // An exec-only gateway starts no worker (`choose` never picks
            // app-server there; this keeps a stray call from an empty pool).
            _ if core.pool().is_empty() => Err(Failure::new(
                FailureKind::NotReady,
                "No Codex app-server worker runs on this gateway (PROXY_BACKEND=exec).",
            )),
            _ => core.start_turn(req).await.map(Inner::AppServer),
        };
        match started {
            Ok(inner) => Ok(Turn {
                inner,
                metrics: self.metrics.clone(),
            }),
            Err(f) => {
                self.count_failure(kind, &f);
                Err(f)
            }
        }
    }

    /// An app-server turn (continued on a live thread or resumed), as a [`Turn`].
    pub fn app_server(&self, stream: TurnStream) -> Turn {
        Turn {
            inner: Inner::AppServer(stream),
            metrics: self.metrics.clone(),
        }
    }

    fn count_failure(&self, kind: BackendKind, f: &Failure) {
        if let Some(m) = &self.metrics {
            count(m, kind, f);
        }
    }
}

fn count(m: &BackendMetrics, kind: BackendKind, f: &Failure) {
    m.failures
        .get_or_create(&FailureLabels {
            backend: kind.as_str(),
            kind: format!("{:?}", f.kind),
        })
        .inc();
}

/// 0..100, the same for the same key in every process of one build.
fn bucket(key: impl Hash) -> u64 {
    // SipHash with fixed keys: stable, unlike a `RandomState`.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    key.hash(&mut h);
    h.finish() % 100
}

// The app-server turn is the common one and is held inline, in the run's
// choice; the exec turn is small because its reader is boxed (see `ExecTurn`).
#[allow(clippy::large_enum_variant)]
enum Inner {
    AppServer(TurnStream),
    Exec(ExecTurn),
}

/// One turn, on whichever backend runs it.
pub struct Turn {
    inner: Inner,
    metrics: Option<BackendMetrics>,
}

impl Turn {
    pub fn backend(&self) -> BackendKind {
        match self.inner {
            Inner::AppServer(_) => BackendKind::AppServer,
            Inner::Exec(_) => BackendKind::Exec,
        }
    }

    /// See [`TurnStream::park`]; an exec turn never waits on calls.
    pub fn park(self, shown: Vec<String>) -> Option<ParkedTurn> {
        match self.inner {
            Inner::AppServer(s) => s.park(shown),
            Inner::Exec(_) => None,
        }
    }

    /// See [`TurnStream::into_idle`]; an exec process keeps no thread.
    pub fn into_idle(self) -> Option<IdleThread> {
        match self.inner {
            Inner::AppServer(s) => s.into_idle(),
            Inner::Exec(_) => None,
        }
    }
}

impl TurnSource for Turn {
    fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<TurnEvent>> {
        let event = std::task::ready!(match &mut self.inner {
            Inner::AppServer(s) => s.poll_next(cx),
            Inner::Exec(e) => e.poll_next(cx),
        });
        if let (Some(TurnEvent::Failed(f)), Some(m)) = (&event, &self.metrics) {
            count(m, self.backend(), f);
        }
        std::task::Poll::Ready(event)
    }

    fn detach(self) {
        match self.inner {
            Inner::AppServer(s) => s.detach(),
            Inner::Exec(e) => e.detach(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(client_tools: bool) -> Needs {
        Needs { client_tools }
    }

    #[test]
    fn the_canary_share_is_sticky_and_close_to_the_percentage() {
        let b = |percent| Backends {
            config: BackendConfig {
                default: BackendKind::AppServer,
                canary_percent: percent,
            },
            // Built without a process: `choose` only looks at its presence.
            exec: Some(crate::exec::tests_support::backend()),
            metrics: None,
        };
        let twenty = b(20);
        let to_exec = (0..1000)
            .filter(|i| twenty.choose(|| ("owner", i), &needs(false)).kind == BackendKind::Exec)
            .count();
        assert!((150..250).contains(&to_exec), "{to_exec} of 1000");
        for i in 0..50 {
            assert_eq!(
                twenty.choose(|| ("owner", i), &needs(false)),
                twenty.choose(|| ("owner", i), &needs(false)),
                "the same conversation, the same backend"
            );
        }
        assert!((0..200).all(|i| b(0).choose(|| i, &needs(false)).kind == BackendKind::AppServer));
        let all = b(100);
        assert!((0..200).all(|i| all.choose(|| i, &needs(false))
            == Choice {
                kind: BackendKind::Exec,
                canary: true
            }));
        assert!(
            (0..200).all(|i| all.choose(|| i, &needs(true)).kind == BackendKind::AppServer),
            "a request exec cannot serve is not canaried there"
        );
    }

    #[test]
    fn no_canary_goes_to_an_exec_backend_whose_cli_check_failed() {
        let unready = Backends {
            config: BackendConfig {
                default: BackendKind::AppServer,
                canary_percent: 100,
            },
            // Never probed: not ready.
            exec: Some(crate::exec::tests_support::unprobed(
                "/bin/false",
                &std::env::temp_dir(),
            )),
            metrics: None,
        };
        assert!(
            (0..200).all(|i| unready.choose(|| i, &needs(false))
                == Choice {
                    kind: BackendKind::AppServer,
                    canary: false
                }),
            "its share stays on the default backend"
        );
    }
}
