//! Who may call what, and how often: the keys file (`PROXY_API_KEYS_FILE`)
//! and the per-route file (`PROXY_CONFIG`), merged with the environment
//! defaults into one [`AccessPolicy`] the stack's auth and rate-limit
//! closures read.
//!
//! Keys file:
//! ```toml
//! [[keys]]
//! name = "obsidian"          # shows up in logs and metrics, never the secret
//! key = "sk-..."
//! admin = false               # may call /admin/* (default false)
//! rate_limit_max = 120        # optional per-key quota ...
//! rate_limit_window_ms = 60000
//! ```
//! Route file:
//! ```toml
//! [routes."/v1/chat/completions"]
//! auth = true                 # override whether a key is required
//! rate_limit_max = 30         # a route-specific quota, per client
//! rate_limit_window_ms = 60000
//! [routes."/v1/models"]
//! auth = false
//! rate_limit = false          # never limited
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use codex_rate_limit::Quota;
use serde::Deserialize;

use crate::config::{Config, Secret};
use crate::route::Route;

/// One API key and what it may do.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub name: String,
    pub secret: Secret,
    pub admin: bool,
    pub quota: Option<Quota>,
}

/// A route's overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteRule {
    pub auth: Option<bool>,
    /// `Some(None)`: never limited; `Some(Some(q))`: its own quota.
    pub rate_limit: Option<Option<Quota>>,
}

/// Everything the auth and rate-limit layers need to decide, built once.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    pub keys: Vec<KeyEntry>,
    pub routes: HashMap<&'static str, RouteRule>,
    /// The environment default (`PROXY_RATE_LIMIT_*`), if enabled.
    pub default_quota: Option<Quota>,
    pub protect_models: bool,
    key_quotas: HashMap<String, Quota>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyFileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileEntry {
    name: String,
    key: String,
    #[serde(default)]
    admin: bool,
    rate_limit_max: Option<u32>,
    rate_limit_window_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    routes: HashMap<String, RouteFileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFileEntry {
    auth: Option<bool>,
    rate_limit: Option<bool>,
    rate_limit_max: Option<u32>,
    rate_limit_window_ms: Option<u64>,
}

impl AccessPolicy {
    /// Builds the policy from the configuration and the files it names.
    pub fn load(config: &Config) -> Result<AccessPolicy, String> {
        let default_window = config.rate_limit_window;
        let mut keys: Vec<KeyEntry> = config
            .api_keys
            .iter()
            // Keys from PROXY_API_KEY belong to the operator: they may administer.
            .map(|(name, secret)| KeyEntry {
                name: name.clone(),
                secret: secret.clone(),
                admin: true,
                quota: None,
            })
            .collect();
        if let Some(path) = &config.api_keys_file {
            keys.extend(parse_keys_file(
                &read(path, "PROXY_API_KEYS_FILE")?,
                default_window,
            )?);
        }
        let mut names = std::collections::HashSet::new();
        for k in &keys {
            if !names.insert(k.name.as_str()) {
                return Err(format!(
                    "PROXY_API_KEYS_FILE: the key name `{}` appears twice",
                    k.name
                ));
            }
        }
        let routes = match &config.route_config {
            Some(path) => parse_routes_file(&read(path, "PROXY_CONFIG")?, default_window)?,
            None => HashMap::new(),
        };
        let key_quotas = keys
            .iter()
            .filter_map(|k| k.quota.map(|q| (k.name.clone(), q)))
            .collect();
        Ok(AccessPolicy {
            keys,
            routes,
            default_quota: config
                .rate_limit_enabled
                .then(|| Quota::new(config.rate_limit_max, config.rate_limit_window)),
            protect_models: config.protect_models,
            key_quotas,
        })
    }

    /// Whether a request to `route` needs a key.
    pub fn requires_auth(&self, route: Route) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        match self.routes.get(route.label()).and_then(|r| r.auth) {
            Some(auth) => auth,
            None => route.needs_key_by_default(self.protect_models),
        }
    }

    /// The bucket and quota for a request to `route` from `client`
    /// (`key:<name>` or `ip:<address>`, see [`Caller`](crate::caller::Caller)).
    pub fn rate_key(
        &self,
        route: Route,
        client: &str,
        key_name: Option<&str>,
    ) -> Option<(String, Quota)> {
        if route.is_probe_or_metrics() {
            return None;
        }
        match self.routes.get(route.label()).and_then(|r| r.rate_limit) {
            Some(None) => None,
            Some(Some(q)) => Some((format!("{}|{client}", route.label()), q)),
            None => {
                let per_key = key_name.and_then(|n| self.key_quotas.get(n)).copied();
                per_key
                    .or(self.default_quota)
                    .map(|q| (client.to_owned(), q))
            }
        }
    }

    pub fn is_admin(&self, key_name: &str) -> bool {
        self.keys.iter().any(|k| k.admin && k.name == key_name)
    }
}

fn read(path: &Path, var: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{var}: cannot read {}: {e}", path.display()))
}

fn quota(max: Option<u32>, window_ms: Option<u64>, default_window: Duration) -> Option<Quota> {
    max.map(|m| {
        Quota::new(
            m,
            window_ms
                .map(Duration::from_millis)
                .unwrap_or(default_window),
        )
    })
}

fn parse_keys_file(text: &str, default_window: Duration) -> Result<Vec<KeyEntry>, String> {
    let file: KeysFile = toml::from_str(text).map_err(|e| format!("PROXY_API_KEYS_FILE: {e}"))?;
    file.keys
        .into_iter()
        .map(|k| {
            if k.name.trim().is_empty() || k.key.trim().is_empty() {
                return Err(
                    "PROXY_API_KEYS_FILE: every key needs a non-empty `name` and `key`".to_owned(),
                );
            }
            if k.rate_limit_window_ms == Some(0) {
                return Err(format!(
                    "PROXY_API_KEYS_FILE: key `{}` has rate_limit_window_ms = 0",
                    k.name
                ));
            }
            Ok(KeyEntry {
                quota: quota(k.rate_limit_max, k.rate_limit_window_ms, default_window),
                name: k.name,
                secret: Secret(k.key),
                admin: k.admin,
            })
        })
        .collect()
}

fn parse_routes_file(
    text: &str,
    default_window: Duration,
) -> Result<HashMap<&'static str, RouteRule>, String> {
    let file: RoutesFile = toml::from_str(text).map_err(|e| format!("PROXY_CONFIG: {e}"))?;
    let mut out = HashMap::new();
    for (path, r) in file.routes {
        let route = Route::of(&path);
        if route == Route::Unknown {
            return Err(format!(
                "PROXY_CONFIG: `{path}` is not a route this gateway serves"
            ));
        }
        if r.rate_limit_window_ms == Some(0) {
            return Err(format!(
                "PROXY_CONFIG: route `{path}` has rate_limit_window_ms = 0"
            ));
        }
        let rate_limit = match (
            r.rate_limit,
            quota(r.rate_limit_max, r.rate_limit_window_ms, default_window),
        ) {
            (Some(false), _) => Some(None),
            (_, Some(q)) => Some(Some(q)),
            (_, None) => None,
        };
        out.insert(
            route.label(),
            RouteRule {
                auth: r.auth,
                rate_limit,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn policy(keys: &str, routes: &str, default: Option<Quota>) -> AccessPolicy {
        let keys = parse_keys_file(keys, MIN).unwrap();
        let key_quotas = keys
            .iter()
            .filter_map(|k| k.quota.map(|q| (k.name.clone(), q)))
            .collect();
        AccessPolicy {
            keys,
            routes: parse_routes_file(routes, MIN).unwrap(),
            default_quota: default,
            protect_models: false,
            key_quotas,
        }
    }

    #[test]
    fn routes_override_auth_and_limits_keys_carry_quotas() {
        let p = policy(
            r#"
            [[keys]]
            name = "alice"
            key = "sk-a"
            rate_limit_max = 5
            [[keys]]
            name = "ops"
            key = "sk-o"
            admin = true
            "#,
            r#"
            [routes."/v1/models"]
            auth = true
            [routes."/v1/chat/completions"]
            rate_limit_max = 2
            rate_limit_window_ms = 1000
            [routes."/readyz"]
            rate_limit = false
            "#,
            Some(Quota::new(60, MIN)),
        );
        assert!(p.requires_auth(Route::ListModels));
        assert!(!p.requires_auth(Route::Healthz));
        assert!(p.requires_auth(Route::Responses));
        assert_eq!(
            p.rate_key(Route::ChatCompletions, "key:alice", Some("alice")),
            Some((
                "/v1/chat/completions|key:alice".into(),
                Quota::new(2, Duration::from_secs(1))
            ))
        );
        assert_eq!(
            p.rate_key(Route::ListModels, "key:alice", Some("alice")),
            Some(("key:alice".into(), Quota::new(5, MIN)))
        );
        assert_eq!(
            p.rate_key(Route::ListModels, "key:ops", Some("ops")),
            Some(("key:ops".into(), Quota::new(60, MIN)))
        );
        assert_eq!(p.rate_key(Route::Healthz, "ip:1.2.3.4", None), None);
        assert!(p.is_admin("ops") && !p.is_admin("alice"));
    }

    #[test]
    fn mistakes_in_the_files_are_reported() {
        assert!(parse_keys_file("[[keys]]\nname = \"a\"\n", MIN)
            .unwrap_err()
            .contains("key"));
        assert!(parse_keys_file("[[keys]]\nname = \"a\"\nkey = \"k\"\nextra = 1\n", MIN).is_err());
        assert!(parse_routes_file("[routes.\"/nope\"]\nauth = false\n", MIN)
            .unwrap_err()
            .contains("/nope"));
    }

    #[test]
    fn without_keys_nothing_requires_auth() {
        let p = policy("", "", None);
        assert!(!p.requires_auth(Route::ChatCompletions));
        assert_eq!(p.rate_key(Route::ChatCompletions, "ip:1", None), None);
    }
}
