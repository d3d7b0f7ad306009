//! What the exec backend knows about its CLI: the lockdown its turns run
//! under, the CLI's version and its model list, and whether the last check
//! of them passed (readiness).
//!
//! A probe is three questions to the CLI, none of them `app-server`:
//! `codex --version`, the worker's lockdown (`worker::safety_args`: `codex
//! debug models` and `codex mcp list`), and `codex <lockdown> debug models`,
//! the catalog exec's turns will see. It runs at start, on a rolling restart
//! (SIGHUP, `POST /admin/workers/restart`) and every [`PROBE_EVERY`]
//! (sooner after a failure), so a CLI upgraded in place is locked down
//! afresh and `/v1/models` follows it, as a worker restart does for
//! app-server.
//!
//! Readiness, `/v1/models` and turns all need the last probe to have
//! passed (as on app-server, where all three follow the workers): a load
//! balancer and a client see the same state. Until one has passed there is
//! no lockdown at all, so no turn can run without it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::calendar::unix_now;
use crate::protocol::{Model, ReasoningEffortOption};
use crate::worker::{run_codex, WorkerConfig};

/// How often a ready exec backend asks its CLI again.
pub const PROBE_EVERY: Duration = Duration::from_secs(300);
/// How soon after a failed probe the next one runs.
pub(super) const RETRY_EVERY: Duration = Duration::from_secs(10);

/// What a good probe found.
pub(super) struct Snapshot {
    /// The worker's `-c`/`--disable` overrides, before `exec`.
    pub safety: Vec<String>,
    pub models: Arc<Vec<Model>>,
    /// `codex --version`, e.g. `codex-cli 0.171.0`.
    pub codex_version: String,
    /// When it was taken (unix seconds).
    pub at: u64,
}

/// The probes so far.
#[derive(Default)]
pub(super) struct Health {
    /// The last good probe: turns run with its lockdown while ready.
    pub current: Option<Arc<Snapshot>>,
    /// Why the last probe failed; `None` after a good one.
    pub last_error: Option<String>,
    /// Probes run (good or not).
    pub probes: u32,
}

impl Health {
    /// Why the backend cannot take turns now (`None`: it can).
    pub(super) fn not_ready(&self) -> Option<String> {
        match (&self.current, &self.last_error) {
            (Some(_), None) => None,
            (_, Some(e)) => Some(format!("the exec backend's last check failed: {e}")),
            (None, None) => Some("the exec backend has not checked its CLI yet".into()),
        }
    }
}

/// The exec backend as `/readyz`, `/healthz` and `GET /admin/workers` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ExecStatus {
    pub ready: bool,
    /// Why not ready (`null` when ready).
    pub reason: Option<String>,
    pub codex_version: Option<String>,
    /// Models `/v1/models` lists from (before effort variants and aliases).
    pub models: usize,
    /// When the lockdown and models in use were read (unix seconds).
    pub checked_at: Option<u64>,
    pub probes: u32,
    pub last_error: Option<String>,
    /// The gateway's turn slots (shared with app-server turns) and how many
    /// are taken now.
    pub turn_slots: usize,
    pub turns_in_flight: usize,
}

/// Runs one probe.
pub(super) async fn probe(config: &WorkerConfig, workdir: &Path) -> Result<Snapshot, String> {
    let limit = config.startup_timeout;
    let (version, safety) = tokio::join!(
        run_codex(config, workdir, "`codex --version`", &["--version"], limit),
        crate::worker::safety_args(config, workdir),
    );
    let codex_version = String::from_utf8_lossy(&version?).trim().to_owned();
    let safety = safety?;
    // With the lockdown: the catalog exec's turns see (the locked-down copy
    // when host tools are off), so a listed model is one a turn can use.
    let mut args: Vec<&str> = safety.iter().map(String::as_str).collect();
    args.extend(["debug", "models"]);
    // The lockdown's overrides are long: the message names the subcommand.
    let out = run_codex(config, workdir, "`codex debug models`", &args, limit).await?;
    let catalog: Value = serde_json::from_slice(&out)
        .map_err(|e| format!("`codex debug models` printed no catalog: {e}"))?;
    Ok(Snapshot {
        safety,
        models: Arc::new(models_of(&catalog)?),
        codex_version,
        at: unix_now(),
    })
}

/// The models `codex debug models` lists, as app-server's `model/list`
/// (without `includeHidden`) gives them, measured on 0.171.0 with the
/// bundled catalog and a test one: only `visibility: "list"` models, in
/// `priority` order, the first one marked default. (`--bundled` is not
/// used: it ignores the operator's `model_catalog_json`, which
/// `model/list` honours.)
pub(super) fn models_of(catalog: &Value) -> Result<Vec<Model>, String> {
    let list = catalog
        .get("models")
        .and_then(Value::as_array)
        .ok_or("`codex debug models` printed no `models` list")?;
    let mut listed: Vec<(i64, Model)> = list
        .iter()
        .filter(|m| m.get("visibility").and_then(Value::as_str) == Some("list"))
        .filter_map(|m| {
            let slug = m.get("slug")?.as_str()?.to_owned();
            let text = |key: &str| m.get(key).and_then(Value::as_str).map(str::to_owned);
            let efforts = m
                .get("supported_reasoning_levels")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|l| {
                    Some(ReasoningEffortOption {
                        reasoning_effort: l.get("effort")?.as_str()?.to_owned(),
                        description: l
                            .get("description")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    })
                })
                .collect();
            let priority = m
                .get("priority")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MAX);
            Some((
                priority,
                Model {
                    id: slug.clone(),
                    display_name: text("display_name").unwrap_or_else(|| slug.clone()),
                    model: slug,
                    hidden: false,
                    is_default: false,
                    supported_reasoning_efforts: efforts,
                    default_reasoning_effort: text("default_reasoning_level"),
                },
            ))
        })
        .collect();
    // Stable: equal priorities keep the catalog's order.
    listed.sort_by_key(|(p, _)| *p);
    let mut models: Vec<Model> = listed.into_iter().map(|(_, m)| m).collect();
    if let Some(first) = models.first_mut() {
        first.is_default = true;
    }
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_model_list_is_app_servers_listed_models_in_priority_order() {
        // The shape of `codex debug models` (0.171.0), trimmed.
        let catalog = json!({"models": [
            {"slug": "b", "display_name": "B", "visibility": "list", "priority": 2,
             "default_reasoning_level": "low",
             "supported_reasoning_levels": [{"effort": "low", "description": "fast"}, {"effort": "high"}]},
            {"slug": "hidden", "visibility": "hide", "priority": 0, "supported_reasoning_levels": []},
            {"slug": "a", "display_name": "A", "visibility": "list", "priority": 1,
             "supported_reasoning_levels": []},
        ]});
        let models = models_of(&catalog).unwrap();
        let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "hidden ones left out, by priority");
        assert!(models[0].is_default && !models[1].is_default);
        let b = &models[1];
        assert_eq!(b.model, "b");
        assert_eq!(b.default_reasoning_effort.as_deref(), Some("low"));
        let efforts: Vec<&str> = b
            .supported_reasoning_efforts
            .iter()
            .map(|e| e.reasoning_effort.as_str())
            .collect();
        assert_eq!(efforts, ["low", "high"]);
        assert!(models_of(&json!({"data": []})).is_err());
    }

    #[test]
    fn readiness_needs_a_lockdown_and_a_passing_last_probe() {
        let mut h = Health::default();
        assert!(h.not_ready().unwrap().contains("not checked"));
        h.current = Some(Arc::new(Snapshot {
            safety: vec![],
            models: Arc::default(),
            codex_version: "codex-cli 0".into(),
            at: 0,
        }));
        assert_eq!(h.not_ready(), None);
        h.last_error = Some("`codex --version` failed".into());
        assert!(h.not_ready().unwrap().contains("--version"));
    }
}
