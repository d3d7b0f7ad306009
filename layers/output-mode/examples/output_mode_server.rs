//! A plain hyper server behind `OutputModeLayer`, echoing the chosen mode.
//!
//! ```text
//! cargo run -p codex-output-mode --example output_mode_server
//! curl -i http://127.0.0.1:PORT/                                        # 200 "obsidian-xml"
//! curl -i -H 'x-proxy-output-mode: OpenAI-JSON' http://127.0.0.1:PORT/  # 200 "openai-json"
//! curl -i -H 'x-proxy-output-mode: yaml' http://127.0.0.1:PORT/         # 400 invalid_output_mode
//! ```
//!
//! `OUTPUT_MODE` sets the default (`obsidian-xml` when unset). Listens on
//! 127.0.0.1:$PORT (an ephemeral port when unset). Ctrl-C stops accepting
//! and gives open connections 10 s to finish.

use std::convert::Infallible;

use bytes::Bytes;
use codex_layer_example_server::BoxError;
use codex_output_mode::{OutputMode, OutputModeLayer};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::ServiceBuilder;

async fn echo_mode(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The layer always inserts a mode on requests it lets through.
    let mode = request
        .extensions()
        .get::<OutputMode>()
        .copied()
        .unwrap_or_default();
    Ok(Response::new(Full::new(Bytes::from(format!("{mode}\n")))))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let default: OutputMode =
        std::env::var("OUTPUT_MODE").map_or(Ok(OutputMode::default()), |m| m.parse())?;

    let service = ServiceBuilder::new()
        .layer(OutputModeLayer::new(default))
        .service_fn(echo_mode);

    println!("default mode {default}");
    let listener = codex_layer_example_server::bind_from_env_or_args(0).await?;
    codex_layer_example_server::serve(listener, service).await;
    Ok(())
}
