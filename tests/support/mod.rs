//! End-to-end harness: the real gateway (in-process, on 127.0.0.1:0) driving
//! the real pinned Codex CLI, which talks to the project's offline model.
//! Only the model is fake.

#![allow(dead_code, unreachable_pub)] // a module shared by test binaries, each using part of it

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use bytes::Bytes;
use codex_completions_api::app::{self, GatewayHandles};
use codex_completions_api::config::{Config, Env};
use codex_offline_model::OfflineModel;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Harness {
    pub model: OfflineModel,
    pub addr: SocketAddr,
    pub handles: GatewayHandles,
    pub dir: PathBuf,
    client: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `data:` payloads of an SSE body, in order (`[DONE]` included).
    pub fn sse_data(&self) -> Vec<String> {
        sse_data(&self.text())
    }
}

/// The named events of an SSE body (`event:` name, `data:` parsed as JSON,
/// `Null` when it is not JSON), in order: the Responses API's stream.
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|frame| {
            let mut name = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (name, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The codex binary: `CODEX_BIN`, else the project-local install.
pub fn codex_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CODEX_BIN") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/codex/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex");
    assert!(
        local.is_file(),
        "the pinned Codex CLI is not installed: run ./scripts/install-codex.sh (the test command does)"
    );
    local
}

static API_KEY_ENV: Once = Once::new();

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(&[]).await
    }

    /// Starts the offline model and the gateway with extra environment variables.
    pub async fn start_with(env: &[(&str, &str)]) -> Harness {
        Harness::start_with_home(env, &codex_offline_model::HomeOptions::default()).await
    }

    /// [`Harness::start_with`] with a `CODEX_HOME` written with `home_options` (codex's bundled
    /// models, extra config).
    pub async fn start_with_home(
        env: &[(&str, &str)],
        home_options: &codex_offline_model::HomeOptions,
    ) -> Harness {
        let h = Harness::start_unready(env, home_options).await;
        // The worker, or with PROXY_BACKEND=exec alone the exec backend.
        tokio::time::timeout(Duration::from_secs(30), h.handles.wait_ready())
            .await
            .expect("gateway ready within 30 s")
            .expect("gateway ready");
        h
    }

    /// [`Harness::start_with_home`] without waiting for the worker: for the
    /// probe tests, which watch readiness from the start.
    pub async fn start_unready(
        env: &[(&str, &str)],
        home_options: &codex_offline_model::HomeOptions,
    ) -> Harness {
        // The worker inherits the process environment; codex reads the
        // offline provider's key from it.
        API_KEY_ENV.call_once(|| {
            std::env::set_var(
                codex_offline_model::API_KEY_ENV,
                codex_offline_model::API_KEY,
            )
        });
        let model = OfflineModel::start(0).await.expect("offline model");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("e2e-{:016x}", rand::random::<u64>()));
        let home = dir.join("codex-home");
        let workdir = dir.join("work");
        std::fs::create_dir_all(&workdir).unwrap();
        codex_offline_model::write_codex_home_with(&home, &model.base_url(), home_options)
            .expect("codex home");

        let mut vars: HashMap<String, String> = HashMap::new();
        vars.insert("CODEX_HOME".into(), home.display().to_string());
        vars.insert("CODEX_BIN".into(), codex_bin().display().to_string());
        vars.insert("PROXY_CODEX_WORKDIR".into(), workdir.display().to_string());
        vars.insert("WORKER_BACKOFF_INITIAL_MS".into(), "100".into());
        vars.insert(
            "PROXY_STATE_DIR".into(),
            dir.join("state").display().to_string(),
        );
        vars.insert("WORKER_BACKOFF_MAX_MS".into(), "500".into());
        for (k, v) in env {
            vars.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_env(&Env::new(move |k| vars.get(k).cloned())).expect("config");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let (handles_tx, handles_rx) = oneshot::channel();
        let task = tokio::spawn(app::run(
            config,
            listener,
            async move {
                let _ = rx.await;
            },
            move |h| {
                let _ = handles_tx.send(h);
            },
        ));
        let handles = handles_rx.await.expect("gateway started");
        let client = Client::builder(TokioExecutor::new()).build_http();
        Harness {
            model,
            addr,
            handles,
            dir,
            client,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let res = self.open(req).await;
        let (parts, body) = res.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(60), body.collect())
            .await
            .expect("body within 60 s")
            .expect("body")
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// Sends and reads the whole answer; a dropped connection or a broken
    /// body is an `Err` naming what happened, not a panic.
    pub async fn try_send(&self, req: Request<Full<Bytes>>) -> Result<Reply, String> {
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("no response: {e:?}"))?;
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body broken: {e:?}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends and returns the response with its body still streaming.
    pub async fn open(&self, req: Request<Full<Bytes>>) -> http::Response<Incoming> {
        tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .expect("response within 60 s")
            .expect("response")
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(self.url(path)).body(Full::default()).unwrap())
            .await
    }

    pub fn post_request(&self, path: &str, body: &Value) -> Request<Full<Bytes>> {
        Request::post(self.url(path))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.post_request(path, body)).await
    }

    /// A one-message chat request for the offline model.
    pub fn chat(prompt: &str, stream: bool) -> Value {
        serde_json::json!({
            "model": codex_offline_model::MODEL_ID,
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}]
        })
    }

    /// Starts graceful shutdown (the same path as SIGTERM) without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down and waits for the gateway (and its worker) to stop.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("gateway stops within 30 s")
                .expect("join")
                .expect("run");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// `GET path` on a gateway running as its own process (the real binary, as
/// started by a test), on a fresh connection and without a runtime, so a
/// test can poll it from plain threads and closures: the status and the
/// body, or `None` while nothing answers.
pub fn get_blocking(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Reads an SSE response body to its end, collecting the text.
pub async fn read_all(body: &mut Incoming) -> String {
    let mut out = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .expect("frame in 30 s")
    {
        if let Ok(data) = frame.expect("frame").into_data() {
            out.extend_from_slice(&data);
        }
    }
    String::from_utf8(out).unwrap()
}

/// Reads until `needle` has appeared in the body.
pub async fn read_until(body: &mut Incoming, needle: &str) -> String {
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("frame in 30 s")
            .unwrap_or_else(|| {
                panic!(
                    "body ended before {needle:?}: {}",
                    String::from_utf8_lossy(&out)
                )
            })
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
        let text = String::from_utf8_lossy(&out);
        if text.contains(needle) {
            return text.into_owned();
        }
    }
}
