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

use std::{convert::Infallible, error::Error, pin::pin, time::Duration};

use bytes::Bytes;
use codex_maintenance::{MaintenanceConfig, MaintenanceHandle, MaintenanceLayer};
use http::{header::CONTENT_TYPE, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
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
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(0), |p| p.parse())?;
    let (layer, handle) = MaintenanceLayer::pair(MaintenanceConfig::default());

    let service = ServiceBuilder::new()
        .layer(layer.exempt(is_exempt))
        .service(service_fn(move |request| route(handle.clone(), request)));

    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);

    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let graceful = GracefulShutdown::new();
    let mut ctrl_c = pin!(tokio::signal::ctrl_c());

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        eprintln!("accept error: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(service.clone());
                let connection = server.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        eprintln!("connection error: {error}");
                    }
                });
            }
            _ = ctrl_c.as_mut() => break,
        }
    }

    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => eprintln!("drain deadline passed"),
    }
    Ok(())
}
