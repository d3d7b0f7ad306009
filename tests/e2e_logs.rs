//! The log as an operator reads it: the real binary, its stderr captured,
//! the real Codex CLI and the offline model. One access-log line per
//! request; no secret at any level; no line repeated on every turn or probe.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use codex_offline_model::OfflineModel;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_codex-completions-api");

/// The gateway binary with the offline model, its stderr kept line by line.
struct Gateway {
    child: Child,
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
    _model: OfflineModel,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Gateway {
    async fn start(env: &[(&str, &str)]) -> Gateway {
        let model = OfflineModel::start(0).await.expect("offline model");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("logs-{:016x}", rand::random::<u64>()));
        let home = dir.join("codex-home");
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        codex_offline_model::write_codex_home(&home, &model.base_url()).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &dir)
            .env("PORT", "0")
            .env("CODEX_HOME", &home)
            .env("CODEX_BIN", support::codex_bin())
            .env("PROXY_CODEX_WORKDIR", &work)
            .env("PROXY_STATE_DIR", dir.join("state"))
            .env(
                codex_offline_model::API_KEY_ENV,
                codex_offline_model::API_KEY,
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("gateway binary");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("listening") {
                        if let Some(addr) = listening_addr(&line) {
                            let _ = addr_tx.send(addr);
                        }
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway says where it listens");
        let gw = Gateway {
            child,
            addr,
            lines,
            _model: model,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        for _ in 0..300 {
            if gw.get("/readyz", None).await.0 == 200 {
                return gw;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("not ready: {:?}", gw.lines());
    }

    /// A chat completion request, with key `auth` if any.
    async fn chat(&self, auth: Option<&str>, body: &Value) -> (u16, String, String) {
        self.request("POST", "/v1/chat/completions", auth, Some(body))
            .await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String, String) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path))
            .header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", format!("Bearer {a}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let res = self
            .client
            .request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let text = String::from_utf8_lossy(&res.into_body().collect().await.unwrap().to_bytes())
            .into_owned();
        (status, id, text)
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> (u16, String, String) {
        self.request("GET", path, auth, None).await
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Stops the gateway (SIGTERM) and returns every line it wrote.
    fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        // The reader thread ends with the pipe; give it its last lines.
        std::thread::sleep(Duration::from_millis(100));
        self.lines()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn listening_addr(line: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        return v["fields"]["addr"].as_str().map(str::to_owned);
    }
    let at = line.find("addr=")?;
    Some(line[at + 5..].split_whitespace().next()?.to_owned())
}

fn access_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect()
}

fn chat(prompt: &str, stream: bool) -> Value {
    json!({
        "model": codex_offline_model::MODEL_ID,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
    })
}

const SECRET: &str = "sk-gateway-Secret-7f3a9c";
const WRONG: &str = "sk-wrong-Guess-51be02";

/// Every request gets exactly one access line with its id, route, status,
/// key name, model and tokens; and no secret appears in any line, even at
/// `trace` for the gateway and the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_access_line_per_request_and_no_secret_at_any_level() {
    let gw = Gateway::start(&[
        ("PROXY_API_KEY", SECRET),
        ("PROXY_LOG_FORMAT", "json"),
        ("RUST_LOG", "trace"),
        ("WORKER_LOG_LEVEL", "trace"),
    ])
    .await;
    let (ok, ok_id, body) = gw.chat(Some(SECRET), &chat("hello there", false)).await;
    assert_eq!(ok, 200, "{body}");
    let usage: Value = serde_json::from_str::<Value>(&body).unwrap()["usage"].clone();
    let (streamed, streamed_id, text) = gw.chat(Some(SECRET), &chat("stream please", true)).await;
    assert_eq!(streamed, 200);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let (denied, denied_id, _) = gw.chat(Some(WRONG), &chat("hi", false)).await;
    assert_eq!(denied, 401);
    let (bad, bad_id, _) = gw
        .chat(
            Some(SECRET),
            &json!({"model": codex_offline_model::MODEL_ID}),
        )
        .await;
    assert_eq!(bad, 400);
    let lines = gw.stop();

    let access = access_lines(&lines);
    let line_of = |id: &str| -> Value {
        let found: Vec<&Value> = access
            .iter()
            .filter(|v| v["fields"]["request_id"] == id)
            .collect();
        assert_eq!(found.len(), 1, "one access line for {id}: {found:?}");
        found[0].clone()
    };
    let ok_line = line_of(&ok_id);
    assert_eq!(ok_line["level"], "INFO");
    let f = &ok_line["fields"];
    assert_eq!(f["route"], "/v1/chat/completions");
    assert_eq!(f["method"], "POST");
    assert_eq!(f["status"], 200);
    assert_eq!(f["model"], codex_offline_model::MODEL_ID);
    // The default name of the single PROXY_API_KEY key, never its secret.
    assert!(f["key"].as_str().is_some_and(|k| k != "-"), "{f}");
    assert_eq!(f["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(f["completion_tokens"], usage["completion_tokens"]);
    assert!(f["completion_tokens"].as_u64().unwrap() > 0, "{f}");
    assert_eq!(f["completed"], true);
    assert!(f["duration_ms"].is_u64());

    let s = &line_of(&streamed_id)["fields"];
    assert_eq!(s["status"], 200);
    assert_eq!(s["completed"], true);
    assert!(s["completion_tokens"].as_u64().unwrap() > 0, "{s}");

    let d = &line_of(&denied_id)["fields"];
    assert_eq!(d["status"], 401);
    assert_eq!(d["key"], "-");
    assert_eq!(line_of(&bad_id)["fields"]["status"], 400);

    // A line logged while the request is handled carries its id in its span.
    let started: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "started processing request")
        .collect();
    let in_request = started
        .iter()
        .find(|v| v["span"]["request_id"] == ok_id.as_str())
        .unwrap_or_else(|| panic!("no line inside {ok_id}: {started:#?}"));
    assert_eq!(in_request["span"]["name"], "request");
    assert_eq!(in_request["span"]["path"], "/v1/chat/completions");
    assert_eq!(in_request["spans"][0]["request_id"], ok_id.as_str());
    // Every line is one JSON object with the keys operators parse.
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["timestamp", "level", "fields", "target"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
    }

    // The worker's trace lines did reach the log (so the check below covers them).
    assert!(
        lines.iter().any(|l| l.contains("codex_worker")),
        "worker lines are forwarded"
    );
    for secret in [SECRET, WRONG, codex_offline_model::API_KEY] {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} leaked: {leaks:#?}");
    }
    let bearer: Vec<&String> = lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().contains("bearer "))
        .collect();
    assert!(bearer.is_empty(), "an auth header leaked: {bearer:#?}");
}

/// The text log: a line logged while a request is handled names the request
/// (method, path, id) before its message; `warn` for `access` drops the info
/// access lines, keeping the access line of a 5xx; timestamps are UTC with
/// microseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_inside_a_request_carry_its_id_and_rust_log_filters_access() {
    let gw = Gateway::start(&[(
        "RUST_LOG",
        // The gateway says where it listens at info; `access` is at warn.
        "warn,codex_completions_api=info,tower_http=debug",
    )])
    .await;
    let (status, id, body) = gw.chat(None, &chat("hi", false)).await;
    assert_eq!(status, 200, "{body}");
    let (failed, failed_id, _) = gw.chat(None, &chat("[[unauthorized]] hi", false)).await;
    assert_eq!(failed, 503);
    let lines = gw.stop();
    let prefix = format!(
        "request{{method=POST path=/v1/chat/completions request_id={id}}}: tower_http::trace::on_request: started processing request"
    );
    let started = lines
        .iter()
        .find(|l| l.contains(&prefix))
        .unwrap_or_else(|| panic!("no line inside {id}: {lines:#?}"));
    // `2026-11-30T08:31:11.861900Z DEBUG request{…`
    let (stamp, rest) = started.split_once(' ').unwrap();
    assert_eq!(stamp.len(), 27, "{started}");
    assert!(stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T' && stamp.as_bytes()[19] == b'.');
    assert!(rest.starts_with("DEBUG request{"), "{started}");
    let access: Vec<&String> = lines.iter().filter(|l| l.contains(" access: ")).collect();
    assert_eq!(
        access.len(),
        1,
        "only the 5xx's access line at warn: {access:#?}"
    );
    assert!(
        access[0].contains(" WARN access: request request_id="),
        "{}",
        access[0]
    );
    assert!(
        access[0].contains(&format!("request_id={failed_id} ")),
        "{}",
        access[0]
    );
    assert!(access[0].contains(" status=503 "), "{}", access[0]);
}

/// `RUST_LOG=…,access=off` drops every access line (a rejection's too) and
/// nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_off_drops_every_access_line() {
    let gw = Gateway::start(&[
        ("PROXY_API_KEY", SECRET),
        ("PROXY_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,access=off"),
    ])
    .await;
    let (ok, _, _) = gw.chat(Some(SECRET), &chat("hi", false)).await;
    assert_eq!(ok, 200);
    let (denied, _, _) = gw.chat(Some(WRONG), &chat("hi", false)).await;
    assert_eq!(denied, 401);
    let lines = gw.stop();
    assert!(access_lines(&lines).is_empty(), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:#?}");
}

/// At the default level the log has no line per turn or per probe: three
/// turns and a burst of probes leave the start-up lines, one access line per
/// API request, and nothing that repeats with each turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_log_does_not_repeat_per_turn_or_per_probe() {
    let gw = Gateway::start(&[]).await;
    let before = gw.lines().len();
    for i in 0..3 {
        let (status, _, body) = gw.chat(None, &chat(&format!("turn {i}"), i % 2 == 0)).await;
        assert_eq!(status, 200, "{body}");
    }
    for _ in 0..10 {
        assert_eq!(gw.get("/readyz", None).await.0, 200);
        assert_eq!(gw.get("/healthz", None).await.0, 200);
    }
    // The turns' lines are written once their bodies end; wait for the third.
    for _ in 0..50 {
        if gw.lines()[before..]
            .iter()
            .filter(|l| l.contains("access"))
            .count()
            >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during: Vec<String> = gw.lines()[before..].to_vec();
    let access = during.iter().filter(|l| l.contains(" access:")).count();
    assert_eq!(
        access, 3,
        "one access line per turn, none per probe: {during:#?}"
    );
    assert_eq!(during.len(), 3, "nothing else per turn: {during:#?}");
    gw.stop();
}

/// A worker whose credentials the provider refuses mid-run says so once, at
/// error, with what to do, and without the provider's URL or answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_one_error_line_saying_what_to_do() {
    let gw = Gateway::start(&[]).await;
    for _ in 0..3 {
        let (status, _, body) = gw.chat(None, &chat("[[unauthorized]] hi", false)).await;
        assert_eq!(status, 503, "{body}");
    }
    let mut found = Vec::new();
    for _ in 0..100 {
        found = gw
            .lines()
            .into_iter()
            .filter(|l| l.contains("out of rotation until it has a valid login"))
            .collect();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = gw.stop();
    assert_eq!(found.len(), 1, "{lines:#?}");
    let line = &found[0];
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("credentials rejected"), "{line}");
    assert!(line.contains("POST /admin/workers/restart"), "{line}");
    assert!(!line.contains("127.0.0.1"), "{line}");
    let refused = lines
        .iter()
        .filter(|l| l.contains("refused the worker's credentials"))
        .count();
    assert_eq!(refused, 1, "{lines:#?}");
}
