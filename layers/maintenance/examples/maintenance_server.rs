//! A plain hyper server behind `MaintenanceLayer`, switched over HTTP.
//!
//! ```text
//! cargo run -p codex-maintenance --example maintenance_server
//! curl -i http://127.0.0.1:PORT/v1/models                        # 200
//! curl -i -X POST http://127.0.0.1:PORT/admin/maintenance/on     # 200 {"maintenance":true}
//! curl -i http://127.0.0.1:PORT/v1/models                        # 503, Retry-After: 30
//! curl -i http://127.0.0.1:PORT/healthz                          # 200: probes are exempt
//! curl -i -X POST http://127.0.0.1:PORT/admin/maintenance/off    # 200 {"maintenance":false}
//! ```
//!
//! The admin routes are exempt from maintenance (or it could never be turned
//! off) and, in this example, unauthenticated: put them behind auth, or on
//! another listener, in anything real. Listens on 127.0.0.1:$PORT (an
//! ephemeral port when unset). Ctrl-C stops accepting and gives open
//! connections 10 s to finish.

use std::convert::Infallible;

use bytes::Bytes;
use codex_layer_example_server::BoxError;
use codex_maintenance::{MaintenanceConfig, MaintenanceHandle, MaintenanceLayer};
use http::{header::CONTENT_TYPE, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::{service_fn, ServiceBuilder};

fn is_exempt(request: &Request<Incoming>) -> bool {
    let path = request.uri().path();
    path == "/healthz" || path.starts_with("/admin/")
}

async fn route(
    handle: MaintenanceHandle,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let switch = match (request.method(), request.uri().path()) {
        (&Method::POST, "/admin/maintenance/on") => Some(true),
        (&Method::POST, "/admin/maintenance/off") => Some(false),
        (_, path) if path.starts_with("/admin/") => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return Ok(response);
        }
        _ => None,
    };
    let response = match switch {
        Some(enabled) => {
            handle.set(enabled);
            let body = format!("{{\"maintenance\":{}}}\n", handle.is_enabled());
            Response::builder()
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("static parts are valid")
        }
        None => Response::new(Full::new(Bytes::from_static(b"served\n"))),
    };
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (layer, handle) = MaintenanceLayer::pair(MaintenanceConfig::default());

    let service = ServiceBuilder::new()
        .layer(layer.exempt(is_exempt))
        .service(service_fn(move |request| route(handle.clone(), request)));

    let listener = codex_layer_example_server::bind_from_env_or_args(0).await?;
    codex_layer_example_server::serve(listener, service).await;
    Ok(())
}
