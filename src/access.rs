//! Who may call what, and how often: the keys file (`PROXY_API_KEYS_FILE`)
//! and the per-route file (`PROXY_CONFIG`), merged with the environment
//! ([`AccessConfig`]) into one [`AccessPolicy`], built once when the
//! configuration is read; the stack's exemptions, [`Caller`] and rate-limit
//! policy read it.
//!
//! [`Caller`]: crate::caller::Caller
//!
//! Keys file:
//! ```toml
//! [[keys]]
//! name = "obsidian"          # shows up in logs and metrics, never the secret
//! key = "sk-..."
//! admin = false               # may call /admin/* (default false)
//! rate_limit_max = 120        # optional per-key quota ...
//! rate_limit_window_ms = 60000
//! output_mode = "openai-json" # optional: this client's tool-call rendering
//! reasoning_format = "think-tags" # optional: field | think-tags | off
//! ```
//! Route file:
//! ```toml
//! [routes."/v1/chat/completions"]
//! auth = true                 # override whether a key is required
//! rate_limit_max = 30         # a route-specific quota, per client
//! rate_limit_window_ms = 60000
//! output_mode = "obsidian-xml" # optional default of this route
//! [routes."/v1/models"]
//! auth = false
//! rate_limit = false          # never limited
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use codex_output_mode::OutputMode;
use codex_rate_limit::Quota;
use serde::Deserialize;

use crate::reasoning_format::ReasoningFormat;
use crate::route::Route;

/// A string that never prints: API keys, the metrics token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// What the environment says about access (the `access` group, before the
/// files it names are read by [`AccessPolicy::load`]).
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// `PROXY_API_KEY`, in order; named `key-1`, `key-2`, ...
    pub api_keys: Vec<Secret>,
    pub keys_file: Option<PathBuf>,
    pub route_file: Option<PathBuf>,
    pub allow_unauthenticated: bool,
    pub protect_models: bool,
    /// `PROXY_RATE_LIMIT_*`, when enabled.
    pub rate_limit: Option<Quota>,
    /// The window of file quotas that name no `rate_limit_window_ms`.
    pub rate_limit_window: Duration,
    pub trust_proxy: bool,
    /// Trusted proxies that append to `X-Forwarded-For` (`PROXY_TRUSTED_PROXY_HOPS`).
    pub proxy_hops: usize,
    pub metrics_token: Option<Secret>,
    /// Origins allowed by CORS; `None` when CORS is off.
    pub cors: Option<Vec<String>>,
}

/// A keys or route file that cannot be used, naming its variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessError {
    pub variable: &'static str,
    pub message: String,
}

/// One API key and what it may do.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub name: String,
    pub secret: Secret,
    pub admin: bool,
    pub quota: Option<Quota>,
    /// How this client wants tool calls rendered when it sends no header.
    pub output_mode: Option<OutputMode>,
    /// How this client wants reasoning shown when it sends no header.
    pub reasoning_format: Option<ReasoningFormat>,
}

/// A route's overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteRule {
    pub auth: Option<bool>,
    /// `Some(None)`: never limited; `Some(Some(q))`: its own quota.
    pub rate_limit: Option<Option<Quota>>,
    /// The route's default output mode (below a key's own).
    pub output_mode: Option<OutputMode>,
    /// The route's default reasoning format (below a key's own).
    pub reasoning_format: Option<ReasoningFormat>,
}

/// Everything the edge of the stack needs to decide who may call what,
/// built once by [`AccessPolicy::load`].
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    pub keys: Vec<KeyEntry>,
    pub routes: HashMap<&'static str, RouteRule>,
    /// The environment default (`PROXY_RATE_LIMIT_*`), if enabled.
    pub default_quota: Option<Quota>,
    pub protect_models: bool,
    pub allow_unauthenticated: bool,
    /// Take the client address from `X-Forwarded-For` (see [`Caller`](crate::caller::Caller)).
    pub trust_proxy: bool,
    /// How many trusted proxies append to `X-Forwarded-For`: the client is
    /// that many entries from the right (entries further left are the
    /// client's own writing).
    pub proxy_hops: usize,
    /// The bearer token `/metrics` accepts from non-loopback clients.
    pub metrics_token: Option<Secret>,
    /// Origins allowed by CORS; `None` when CORS is off.
    pub cors: Option<Vec<String>>,
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
    output_mode: Option<String>,
    reasoning_format: Option<String>,
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
    output_mode: Option<String>,
    reasoning_format: Option<String>,
}

impl AccessPolicy {
    /// Reads the files `config` names and merges them with it: the one
    /// place the keys and route files are read and checked.
    pub fn load(config: AccessConfig) -> Result<AccessPolicy, AccessError> {
        let keys_error = |message| AccessError {
            variable: "PROXY_API_KEYS_FILE",
            message,
        };
        let window = config.rate_limit_window;
        let mut keys: Vec<KeyEntry> = config
            .api_keys
            .into_iter()
            .enumerate()
            // Keys from PROXY_API_KEY belong to the operator: they may administer.
            .map(|(i, secret)| KeyEntry {
                name: format!("key-{}", i + 1),
                secret,
                admin: true,
                quota: None,
                output_mode: None,
                reasoning_format: None,
            })
            .collect();
        if let Some(path) = &config.keys_file {
            keys.extend(
                read(path)
                    .and_then(|t| parse_keys_file(&t, window))
                    .map_err(keys_error)?,
            );
        }
        let mut names = std::collections::HashSet::new();
        for k in &keys {
            if !names.insert(k.name.as_str()) {
                return Err(keys_error(format!(
                    "the key name `{}` appears twice",
                    k.name
                )));
            }
        }
        let routes = match &config.route_file {
            Some(path) => read(path)
                .and_then(|t| parse_routes_file(&t, window))
                .map_err(|message| AccessError {
                    variable: "PROXY_CONFIG",
                    message,
                })?,
            None => HashMap::new(),
        };
        let key_quotas = keys
            .iter()
            .filter_map(|k| k.quota.map(|q| (k.name.clone(), q)))
            .collect();
        Ok(AccessPolicy {
            keys,
            routes,
            default_quota: config.rate_limit,
            protect_models: config.protect_models,
            allow_unauthenticated: config.allow_unauthenticated,
            trust_proxy: config.trust_proxy,
            proxy_hops: config.proxy_hops,
            metrics_token: config.metrics_token,
            cors: config.cors,
            key_quotas,
        })
    }

    /// Refuses to expose the worker to anyone who can reach the port:
    /// beyond loopback, some key must exist (an empty keys file does not
    /// count) unless `PROXY_ALLOW_UNAUTHENTICATED` accepts the risk.
    pub fn check_exposure(&self, host: IpAddr) -> Result<(), String> {
        if !host.is_loopback() && self.keys.is_empty() && !self.allow_unauthenticated {
            return Err(format!(
                "refusing to listen on {host} without an API key: set PROXY_API_KEY or \
                 PROXY_API_KEYS_FILE (or PROXY_ALLOW_UNAUTHENTICATED=true to accept the risk)"
            ));
        }
        Ok(())
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

    /// The output mode of a request that sends no `x-proxy-output-mode`:
    /// the key's, else the route's, else `None` (`PROXY_OUTPUT_MODE`). The
    /// key is the more specific: it names one client, a route names them all.
    pub fn output_mode(&self, route: Route, key_name: Option<&str>) -> Option<OutputMode> {
        let of_key = key_name
            .and_then(|n| self.keys.iter().find(|k| k.name == n))
            .and_then(|k| k.output_mode);
        of_key.or_else(|| self.routes.get(route.label()).and_then(|r| r.output_mode))
    }

    /// The reasoning format of a chat request without
    /// `x-proxy-reasoning-format`: the key's, else the route's, else `None`
    /// (`PROXY_REASONING_FORMAT`).
    pub fn reasoning_format(
        &self,
        route: Route,
        key_name: Option<&str>,
    ) -> Option<ReasoningFormat> {
        let of_key = key_name
            .and_then(|n| self.keys.iter().find(|k| k.name == n))
            .and_then(|k| k.reasoning_format);
        of_key.or_else(|| {
            self.routes
                .get(route.label())
                .and_then(|r| r.reasoning_format)
        })
    }

    pub fn is_admin(&self, key_name: &str) -> bool {
        self.keys.iter().any(|k| k.admin && k.name == key_name)
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
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

/// An `output_mode` of a file entry; `what` names the entry in the error.
fn output_mode(value: Option<String>, what: &str) -> Result<Option<OutputMode>, String> {
    value
        .map(|v| v.parse().map_err(|e| format!("{what}: {e}")))
        .transpose()
}

/// A `reasoning_format` of a file entry; `what` names the entry in the error.
fn reasoning_format(value: Option<String>, what: &str) -> Result<Option<ReasoningFormat>, String> {
    value
        .map(|v| v.parse().map_err(|e| format!("{what}: {e}")))
        .transpose()
}

fn parse_keys_file(text: &str, default_window: Duration) -> Result<Vec<KeyEntry>, String> {
    let file: KeysFile = toml::from_str(text).map_err(|e| e.to_string())?;
    file.keys
        .into_iter()
        .map(|k| {
            if k.name.trim().is_empty() || k.key.trim().is_empty() {
                return Err("every key needs a non-empty `name` and `key`".to_owned());
            }
            if k.rate_limit_window_ms == Some(0) {
                return Err(format!("key `{}` has rate_limit_window_ms = 0", k.name));
            }
            Ok(KeyEntry {
                output_mode: output_mode(k.output_mode, &format!("key `{}`", k.name))?,
                reasoning_format: reasoning_format(
                    k.reasoning_format,
                    &format!("key `{}`", k.name),
                )?,
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
    let file: RoutesFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for (path, r) in file.routes {
        let route = Route::of(&path);
        if route == Route::Unknown {
            return Err(format!("`{path}` is not a route this gateway serves"));
        }
        if r.rate_limit_window_ms == Some(0) {
            return Err(format!("route `{path}` has rate_limit_window_ms = 0"));
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
                output_mode: output_mode(r.output_mode, &format!("route `{path}`"))?,
                reasoning_format: reasoning_format(r.reasoning_format, &format!("route `{path}`"))?,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env};

    const MIN: Duration = Duration::from_secs(60);

    /// The policy of an empty environment with these files' contents.
    fn policy(keys: &str, routes: &str, default: Option<Quota>) -> AccessPolicy {
        let mut p = Config::from_env(&Env::new(|_| None)).unwrap().access;
        p.keys = parse_keys_file(keys, MIN).unwrap();
        p.key_quotas = p
            .keys
            .iter()
            .filter_map(|k| k.quota.map(|q| (k.name.clone(), q)))
            .collect();
        p.routes = parse_routes_file(routes, MIN).unwrap();
        p.default_quota = default;
        p
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
    fn the_output_mode_comes_from_the_key_then_the_route() {
        let p = policy(
            r#"
            [[keys]]
            name = "sdk"
            key = "sk-s"
            output_mode = "openai-json"
            [[keys]]
            name = "obsidian"
            key = "sk-o"
            "#,
            r#"
            [routes."/v1/responses"]
            output_mode = "openai-json"
            [routes."/v1/chat/completions"]
            output_mode = "obsidian-xml"
            "#,
            None,
        );
        let mode = |route, key| p.output_mode(route, key);
        assert_eq!(
            mode(Route::ChatCompletions, Some("sdk")),
            Some(OutputMode::OpenaiJson)
        );
        assert_eq!(
            mode(Route::ChatCompletions, Some("obsidian")),
            Some(OutputMode::ObsidianXml)
        );
        assert_eq!(
            mode(Route::Responses, Some("obsidian")),
            Some(OutputMode::OpenaiJson)
        );
        assert_eq!(mode(Route::ListModels, None), None);
        let err = parse_keys_file(
            "[[keys]]\nname = \"a\"\nkey = \"k\"\noutput_mode = \"yaml\"\n",
            MIN,
        )
        .unwrap_err();
        assert!(err.contains("key `a`") && err.contains("yaml"), "{err}");
        assert!(parse_routes_file(
            "[routes.\"/v1/chat/completions\"]\noutput_mode = \"x\"\n",
            MIN
        )
        .is_err());
    }

    #[test]
    fn without_keys_nothing_requires_auth() {
        let p = policy("", "", None);
        assert!(!p.requires_auth(Route::ChatCompletions));
        assert_eq!(p.rate_key(Route::ChatCompletions, "ip:1", None), None);
    }
}
