//! A plain hyper server behind `RequireAuthLayer`, with one key.
//!
//! ```text
//! API_KEY=sk-demo cargo run -p codex-auth --example auth_server
//! curl -i http://127.0.0.1:PORT/healthz                              # 200, no key needed
//! curl -i http://127.0.0.1:PORT/v1/models                            # 401 missing key
//! curl -i -H 'Authorization: Bearer nope' http://127.0.0.1:PORT/v1/models     # 401 incorrect key
//! curl -i -H 'Authorization: Bearer sk-demo' http://127.0.0.1:PORT/v1/models  # 200 "hello, demo"
//! ```
//!
//! Listens on 127.0.0.1:$PORT (an ephemeral port when unset). Ctrl-C stops
//! accepting and gives open connections 10 s to finish.

use std::convert::Infallible;

use bytes::Bytes;
use codex_auth::{ApiKey, AuthenticatedKey, KeySet, RequireAuthLayer};
use codex_layer_example_server::BoxError;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::ServiceBuilder;

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = match request.extensions().get::<AuthenticatedKey>() {
        Some(key) => format!("hello, {}\n", key.name()),
        None => "ok\n".to_owned(),
    };
    Ok(Response::new(Full::new(Bytes::from(text))))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let secret = std::env::var("API_KEY").unwrap_or_else(|_| "sk-demo".to_owned());
    let keys = KeySet::new(vec![ApiKey::new("demo", secret)]);

    let service = ServiceBuilder::new()
        .layer(
            RequireAuthLayer::new(keys)
                .exempt(|req: &Request<Incoming>| req.uri().path() == "/healthz"),
        )
        .service_fn(hello);

    let listener = codex_layer_example_server::bind_from_env_or_args(0).await?;
    codex_layer_example_server::serve(listener, service).await;
    Ok(())
}
