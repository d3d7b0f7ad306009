//! `GET /metrics`: Prometheus exposition, for loopback or a bearer token.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::{ApiBody, ApiState};
use crate::caller::Caller;

pub(super) fn serve<B>(state: &ApiState, req: &Request<B>) -> Result<Response<ApiBody>, ApiError> {
    let Some(registry) = &state.registry else {
        return Err(ApiError::not_found(
            "Metrics are off; set PROXY_ENABLE_METRICS=true.",
        ));
    };
    let from_loopback = req.extensions().get::<Caller>().is_some_and(|c| c.loopback);
    // The same parser as the auth layer's; `/metrics` is exempt from that
    // layer and checks its own token here.
    let presented = codex_auth::bearer_token(req.headers());
    let token_ok = match (&state.metrics_token, presented) {
        (Some(expected), Some(given)) => bool::from(expected.0.as_bytes().ct_eq(given)),
        _ => false,
    };
    if !from_loopback && !token_ok {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Metrics are served to loopback clients, or with the PROXY_METRICS_TOKEN bearer token.",
        )
        .code("invalid_api_key"));
    }
    // Read at scrape time: the switch has no event stream of its own.
    if let (Some(m), Some(maintenance)) = (&state.metrics, &state.maintenance) {
        m.set_maintenance(maintenance.is_enabled());
    }
    let text = codex_metrics::encode(registry);
    let mut res = Response::new(ApiBody::Body(Full::new(Bytes::from(text))));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codex_metrics::CONTENT_TYPE),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;
    use crate::access::Secret;
    use crate::config::{Config, Env};
    use crate::core::CodexCore;
    use crate::server::PeerAddr;
    use crate::worker::Supervisor;

    fn state(token: Option<&str>) -> ApiState {
        let config = Config::from_env(&Env::new(|_| None)).unwrap();
        let (_supervisor, worker) = Supervisor::new(config.worker.clone(), std::env::temp_dir());
        let core = CodexCore::new(worker, config.core.clone());
        let mut s = ApiState::new(core, &config.api).unwrap();
        s.registry = Some(Arc::new(prometheus_client::registry::Registry::default()));
        s.metrics_token = token.map(|t| Secret(t.to_owned()));
        s
    }

    fn from(peer: &str, bearer: Option<&str>) -> Request<()> {
        let mut req = Request::get("/metrics");
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        let mut req = req.body(()).unwrap();
        req.extensions_mut()
            .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
        let access = Config::from_env(&Env::new(|_| None)).unwrap().access;
        let caller = Caller::of(&req, &access);
        req.extensions_mut().insert(caller);
        req
    }

    #[test]
    fn remote_scrapers_need_the_token() {
        let s = state(Some("scrape-me"));
        assert!(
            serve(&s, &from("127.0.0.1:9", None)).is_ok(),
            "loopback is let in"
        );
        let e = serve(&s, &from("10.1.2.3:9", None)).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (401, Some("invalid_api_key")));
        assert!(serve(&s, &from("10.1.2.3:9", Some("wrong"))).is_err());
        assert!(serve(&s, &from("10.1.2.3:9", Some("scrape-me"))).is_ok());
        // Without a configured token, only loopback.
        assert!(serve(&state(None), &from("10.1.2.3:9", Some("anything"))).is_err());
    }
}
