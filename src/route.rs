//! Which route a request is for, decided once from its path.
//!
//! The stack's first `map_request` puts a [`Route`] into every request's
//! extensions; the metrics label, the maintenance and auth exemptions, the
//! access policy (route rules, rate-limit buckets) and the API's router all
//! read it, so a path is matched in exactly one place.
//!
//! The route depends on the path only, never the method: `POST /metrics` is
//! still the metrics route (exempt from auth and maintenance, counted under
//! `/metrics`), and only the router turns the method into a 404 or a 405
//! ([`Route::accepts`]).

use http::Method;

/// A route this gateway knows, or [`Route::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/healthz`: liveness.
    Healthz,
    /// `/readyz`: readiness.
    Readyz,
    /// `/metrics`: Prometheus exposition.
    Metrics,
    /// `/v1/models`.
    ListModels,
    /// `/v1/models/{id}`.
    GetModel,
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/completions` (legacy text completions).
    Completions,
    /// `/v1/responses`.
    Responses,
    /// `/v1/responses/{id}` and `/v1/responses/{id}/input_items`.
    StoredResponse,
    /// `/api/tags` (Ollama: the model list).
    OllamaTags,
    /// `/api/version` (Ollama).
    OllamaVersion,
    /// `/api/chat` (Ollama chat).
    OllamaChat,
    /// `/api/generate` (Ollama one-prompt generation).
    OllamaGenerate,
    /// `/v1/usage`: token usage per key, model and hour.
    Usage,
    /// `/admin/maintenance`.
    AdminMaintenance,
    /// `/admin/workers`: the pool, one row per worker.
    AdminWorkers,
    /// `/admin/workers/restart`: a rolling restart (all, or one worker).
    AdminWorkersRestart,
    /// Any other `/admin/...` path: no handler, but admin all the same.
    Admin,
    /// Anything else.
    Unknown,
}

/// What a route does with a request's method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodMatch {
    /// The route serves this method.
    Served,
    /// 405, with the method to name in `Allow`.
    NotAllowed(&'static str),
    /// 404: this method on this path is simply not something the gateway has.
    NotFound,
}

const MODELS_PREFIX: &str = "/v1/models/";
const RESPONSES_PREFIX: &str = "/v1/responses/";

impl Route {
    /// The route of a request path (the query is not part of it).
    pub fn of(path: &str) -> Route {
        match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/v1/models" => Route::ListModels,
            "/v1/chat/completions" => Route::ChatCompletions,
            "/v1/completions" => Route::Completions,
            "/v1/responses" => Route::Responses,
            "/api/tags" => Route::OllamaTags,
            "/api/version" => Route::OllamaVersion,
            "/api/chat" => Route::OllamaChat,
            "/api/generate" => Route::OllamaGenerate,
            "/v1/usage" => Route::Usage,
            "/admin/maintenance" => Route::AdminMaintenance,
            "/admin/workers" => Route::AdminWorkers,
            "/admin/workers/restart" => Route::AdminWorkersRestart,
            p if p.starts_with(MODELS_PREFIX) => Route::GetModel,
            p if p.starts_with(RESPONSES_PREFIX) => Route::StoredResponse,
            p if p.starts_with("/admin/") => Route::Admin,
            _ => Route::Unknown,
        }
    }

    /// The bounded name used as the metrics `route` label and as the key of
    /// a route rule (`PROXY_CONFIG`). Every `/admin/*` path shares `/admin`,
    /// every model `/v1/models/{id}`.
    pub fn label(self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::ListModels => "/v1/models",
            Route::GetModel => "/v1/models/{id}",
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Responses => "/v1/responses",
            Route::StoredResponse => "/v1/responses/{id}",
            Route::OllamaTags => "/api/tags",
            Route::OllamaVersion => "/api/version",
            Route::OllamaChat => "/api/chat",
            Route::OllamaGenerate => "/api/generate",
            Route::Usage => "/v1/usage",
            Route::AdminMaintenance
            | Route::AdminWorkers
            | Route::AdminWorkersRestart
            | Route::Admin => "/admin",
            Route::Unknown => "other",
        }
    }

    /// Probes and metrics answer even in maintenance and without a key
    /// (orchestrators restart what they cannot probe; `/metrics` has its own
    /// token), and are never rate limited.
    pub fn is_probe_or_metrics(self) -> bool {
        matches!(self, Route::Healthz | Route::Readyz | Route::Metrics)
    }

    /// The Ollama API (`/api/...`): its own shapes, errors included.
    pub fn is_ollama(self) -> bool {
        matches!(
            self,
            Route::OllamaTags | Route::OllamaVersion | Route::OllamaChat | Route::OllamaGenerate
        )
    }

    /// `/admin/*`: exempt from maintenance (it is how maintenance is switched
    /// off) and served to admin callers only.
    pub fn is_admin(self) -> bool {
        matches!(
            self,
            Route::AdminMaintenance
                | Route::AdminWorkers
                | Route::AdminWorkersRestart
                | Route::Admin
        )
    }

    /// Whether the route needs a key when keys exist and no route rule says
    /// otherwise: never for probes and metrics, for the model routes (and
    /// Ollama's model list and version) only with `PROXY_PROTECT_MODELS`,
    /// always for the rest.
    pub fn needs_key_by_default(self, protect_models: bool) -> bool {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics => false,
            Route::ListModels | Route::GetModel | Route::OllamaTags | Route::OllamaVersion => {
                protect_models
            }
            _ => true,
        }
    }

    /// The model id of a [`Route::GetModel`] path.
    pub fn model_id(path: &str) -> Option<&str> {
        path.strip_prefix(MODELS_PREFIX)
    }

    /// Whether the route serves `method`.
    pub fn accepts(self, method: &Method) -> MethodMatch {
        let get = *method == Method::GET;
        let head = *method == Method::HEAD;
        let post = *method == Method::POST;
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::ListModels
            | Route::OllamaTags
            | Route::OllamaVersion
                if get || head =>
            {
                MethodMatch::Served
            }
            Route::Healthz
            | Route::Readyz
            | Route::ListModels
            | Route::OllamaTags
            | Route::OllamaVersion => MethodMatch::NotAllowed("GET"),
            Route::ChatCompletions
            | Route::Completions
            | Route::Responses
            | Route::OllamaChat
            | Route::OllamaGenerate
                if post =>
            {
                MethodMatch::Served
            }
            Route::ChatCompletions
            | Route::Completions
            | Route::Responses
            | Route::OllamaChat
            | Route::OllamaGenerate => MethodMatch::NotAllowed("POST"),
            Route::Metrics | Route::GetModel | Route::Usage if get => MethodMatch::Served,
            Route::Usage => MethodMatch::NotAllowed("GET"),
            // Which of the two a path serves, the handler says (input_items: GET only).
            Route::StoredResponse if get || *method == Method::DELETE => MethodMatch::Served,
            Route::StoredResponse => MethodMatch::NotAllowed("GET, DELETE"),
            Route::AdminMaintenance if get || post => MethodMatch::Served,
            Route::AdminWorkers if get => MethodMatch::Served,
            Route::AdminWorkers => MethodMatch::NotAllowed("GET"),
            Route::AdminWorkersRestart if post => MethodMatch::Served,
            Route::AdminWorkersRestart => MethodMatch::NotAllowed("POST"),
            Route::Metrics | Route::GetModel | Route::AdminMaintenance => MethodMatch::NotFound,
            Route::Admin | Route::Unknown => MethodMatch::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METHODS: [Method; 6] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ];

    /// Paths, their route, their metrics label, the methods served, and
    /// what other methods get: a 405 naming this method, or a 404 (`None`).
    #[allow(clippy::type_complexity)]
    const TABLE: &[(&str, Route, &str, &[&str], Option<&str>)] = &[
        (
            "/healthz",
            Route::Healthz,
            "/healthz",
            &["GET", "HEAD"],
            Some("GET"),
        ),
        (
            "/readyz",
            Route::Readyz,
            "/readyz",
            &["GET", "HEAD"],
            Some("GET"),
        ),
        ("/metrics", Route::Metrics, "/metrics", &["GET"], None),
        (
            "/v1/models",
            Route::ListModels,
            "/v1/models",
            &["GET", "HEAD"],
            Some("GET"),
        ),
        (
            "/v1/models/gpt-5",
            Route::GetModel,
            "/v1/models/{id}",
            &["GET"],
            None,
        ),
        (
            "/v1/models/a/b",
            Route::GetModel,
            "/v1/models/{id}",
            &["GET"],
            None,
        ),
        (
            "/v1/chat/completions",
            Route::ChatCompletions,
            "/v1/chat/completions",
            &["POST"],
            Some("POST"),
        ),
        (
            "/v1/completions",
            Route::Completions,
            "/v1/completions",
            &["POST"],
            Some("POST"),
        ),
        (
            "/v1/responses",
            Route::Responses,
            "/v1/responses",
            &["POST"],
            Some("POST"),
        ),
        (
            "/v1/responses/resp_1",
            Route::StoredResponse,
            "/v1/responses/{id}",
            &["GET", "DELETE"],
            Some("GET, DELETE"),
        ),
        (
            "/v1/responses/resp_1/input_items",
            Route::StoredResponse,
            "/v1/responses/{id}",
            &["GET", "DELETE"],
            Some("GET, DELETE"),
        ),
        (
            "/v1/usage",
            Route::Usage,
            "/v1/usage",
            &["GET"],
            Some("GET"),
        ),
        (
            "/admin/maintenance",
            Route::AdminMaintenance,
            "/admin",
            &["GET", "POST"],
            None,
        ),
        (
            "/api/tags",
            Route::OllamaTags,
            "/api/tags",
            &["GET", "HEAD"],
            Some("GET"),
        ),
        (
            "/api/version",
            Route::OllamaVersion,
            "/api/version",
            &["GET", "HEAD"],
            Some("GET"),
        ),
        (
            "/api/chat",
            Route::OllamaChat,
            "/api/chat",
            &["POST"],
            Some("POST"),
        ),
        (
            "/api/generate",
            Route::OllamaGenerate,
            "/api/generate",
            &["POST"],
            Some("POST"),
        ),
        ("/api/show", Route::Unknown, "other", &[], None),
        ("/admin/other", Route::Admin, "/admin", &[], None),
        (
            "/admin/workers",
            Route::AdminWorkers,
            "/admin",
            &["GET"],
            Some("GET"),
        ),
        (
            "/admin/workers/restart",
            Route::AdminWorkersRestart,
            "/admin",
            &["POST"],
            Some("POST"),
        ),
        ("/admin", Route::Unknown, "other", &[], None),
        ("/", Route::Unknown, "other", &[], None),
        ("/v1/completions/x", Route::Unknown, "other", &[], None),
        ("/healthz/", Route::Unknown, "other", &[], None),
        ("/v1/chat/completions/x", Route::Unknown, "other", &[], None),
    ];

    #[test]
    fn every_path_has_one_route_and_its_metrics_label() {
        for (path, route, label, _, _) in TABLE {
            assert_eq!(Route::of(path), *route, "{path}");
            assert_eq!(route.label(), *label, "{path}");
        }
        assert_eq!(Route::model_id("/v1/models/gpt-5"), Some("gpt-5"));
    }

    #[test]
    fn each_route_serves_its_methods_and_refuses_the_rest_as_before() {
        for (path, route, _, served, allow) in TABLE {
            for method in &METHODS {
                let expected = match allow {
                    _ if served.contains(&method.as_str()) => MethodMatch::Served,
                    Some(allow) => MethodMatch::NotAllowed(allow),
                    None => MethodMatch::NotFound,
                };
                assert_eq!(route.accepts(method), expected, "{method} {path}");
            }
        }
    }

    #[test]
    fn probes_metrics_and_admin_are_told_apart() {
        for (path, route, _, _, _) in TABLE {
            assert_eq!(
                route.is_probe_or_metrics(),
                matches!(*path, "/healthz" | "/readyz" | "/metrics"),
                "{path}"
            );
            assert_eq!(route.is_admin(), path.starts_with("/admin/"), "{path}");
            let models = matches!(
                route,
                Route::ListModels | Route::GetModel | Route::OllamaTags | Route::OllamaVersion
            );
            assert_eq!(
                route.needs_key_by_default(false),
                !(route.is_probe_or_metrics() || models),
                "{path}"
            );
            assert_eq!(
                route.needs_key_by_default(true),
                !route.is_probe_or_metrics(),
                "{path}"
            );
        }
    }
}
