//! `GET /v1/models` and model-name resolution.
//!
//! Names a client may use: the worker's model ids, `<id>-<effort>` where the
//! model advertises that reasoning effort, and operator aliases
//! (`PROXY_MODEL_ALIASES`, e.g. the Node proxy's `codex-5=gpt-5-codex`).

use serde_json::{json, Value};

use super::error::ApiError;
use crate::protocol::Model;

/// Efforts recognised as a model-name suffix.
const EFFORTS: &[&str] = &["minimal", "low", "medium", "high", "xhigh"];

/// A model name resolved to what the worker needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub model: String,
    pub effort: Option<String>,
}

pub use crate::config::Aliases;

/// Resolves a requested name against the worker's list.
pub fn resolve(models: &[Model], aliases: &Aliases, name: &str) -> Result<Resolved, ApiError> {
    let target = aliases.0.get(name).map(String::as_str).unwrap_or(name);
    if let Some(m) = models.iter().find(|m| m.id == target) {
        return Ok(Resolved {
            model: m.model.clone(),
            effort: None,
        });
    }
    if let Some((base, effort)) = target.rsplit_once('-') {
        if EFFORTS.contains(&effort) {
            if let Some(m) = models.iter().find(|m| m.id == base) {
                if m.supported_reasoning_efforts
                    .iter()
                    .any(|e| e.reasoning_effort == effort)
                {
                    return Ok(Resolved {
                        model: m.model.clone(),
                        effort: Some(effort.to_owned()),
                    });
                }
            }
        }
    }
    Err(ApiError::model_not_found(name))
}

/// Every name `resolve` accepts, in listing order.
pub fn listed_names(models: &[Model], aliases: &Aliases) -> Vec<String> {
    let mut names = Vec::new();
    for m in models.iter().filter(|m| !m.hidden) {
        names.push(m.id.clone());
        for e in &m.supported_reasoning_efforts {
            if EFFORTS.contains(&e.reasoning_effort.as_str()) {
                names.push(format!("{}-{}", m.id, e.reasoning_effort));
            }
        }
    }
    for alias in aliases.0.keys() {
        if resolve(models, aliases, alias).is_ok() && !names.contains(alias) {
            names.push(alias.clone());
        }
    }
    names
}

pub fn model_object(id: &str, created: u64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "codex"})
}

pub fn list_json(models: &[Model], aliases: &Aliases, created: u64) -> Value {
    let data: Vec<Value> = listed_names(models, aliases)
        .iter()
        .map(|id| model_object(id, created))
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ReasoningEffortOption;

    fn models() -> Vec<Model> {
        vec![Model {
            id: "gpt-x".into(),
            model: "gpt-x".into(),
            display_name: "X".into(),
            hidden: false,
            is_default: true,
            supported_reasoning_efforts: ["low", "high"]
                .iter()
                .map(|e| ReasoningEffortOption {
                    reasoning_effort: e.to_string(),
                    description: None,
                })
                .collect(),
            default_reasoning_effort: Some("low".into()),
        }]
    }

    #[test]
    fn ids_effort_variants_and_aliases_resolve() {
        let aliases = Aliases::parse("codex-5=gpt-x, codex-5-high=gpt-x-high").unwrap();
        let m = models();
        assert_eq!(
            resolve(&m, &aliases, "gpt-x").unwrap(),
            Resolved {
                model: "gpt-x".into(),
                effort: None
            }
        );
        assert_eq!(
            resolve(&m, &aliases, "gpt-x-high")
                .unwrap()
                .effort
                .as_deref(),
            Some("high")
        );
        assert_eq!(
            resolve(&m, &aliases, "codex-5-high")
                .unwrap()
                .effort
                .as_deref(),
            Some("high")
        );
        // `medium` is not advertised by this model.
        let e = resolve(&m, &aliases, "gpt-x-medium").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (404, Some("model_not_found")));
        assert!(resolve(&m, &aliases, "nope").is_err());
        assert_eq!(
            listed_names(&m, &aliases),
            vec![
                "gpt-x",
                "gpt-x-low",
                "gpt-x-high",
                "codex-5",
                "codex-5-high"
            ]
        );
    }

    #[test]
    fn bad_alias_specs_are_rejected() {
        assert!(Aliases::parse("nonsense").is_err());
        assert!(Aliases::parse("a=").is_err());
        assert!(Aliases::parse("").unwrap().0.is_empty());
    }
}
