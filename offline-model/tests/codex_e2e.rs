//! End to end: the real `codex app-server` (the pinned CLI, CODEX_VERSION) against the offline model.
//!
//! The codex binary is found via `CODEX_BIN`, else at the path `scripts/install-codex.sh`
//! installs it to. When it is absent each test prints why and passes without running.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use codex_offline_model::{
    write_codex_home, write_codex_home_with, HomeOptions, OfflineModel, MODEL_ID,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const TIMEOUT: Duration = Duration::from_secs(15);

fn codex_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("CODEX_BIN") {
        return Some(bin.into());
    }
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/codex/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex");
    bin.exists().then_some(bin)
}

macro_rules! require_codex {
    () => {
        match codex_bin() {
            Some(bin) => bin,
            None => {
                eprintln!(
                    "SKIPPED: codex binary not found (set CODEX_BIN or run scripts/install-codex.sh)"
                );
                return;
            }
        }
    };
}

/// A fresh CODEX_HOME under the target dir (not /tmp, where codex warns about helper
/// binaries), removed on drop.
struct Home(PathBuf);

impl Home {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("codex-home-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Home(dir)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn codex_command(bin: &Path, home: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("CODEX_HOME", home)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("CODEX_API_KEY")
        .envs(env.iter().cloned())
        .current_dir(home)
        .kill_on_drop(true);
    cmd
}

/// A minimal JSON-lines client of `codex app-server`.
struct AppServer {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl AppServer {
    async fn spawn(bin: &Path, home: &Path, env: &[(String, String)]) -> Self {
        let mut child = codex_command(bin, home, env)
            .arg("app-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn codex app-server");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut server = AppServer {
            _child: child,
            stdin,
            lines,
            next_id: 0,
        };
        server
            .request(
                "initialize",
                json!({"clientInfo": {"name": "offline-model-test", "version": "0.0.1"},
                       "capabilities": {"experimentalApi": true}}),
            )
            .await;
        server.send(json!({"method": "initialized"})).await;
        server
    }

    async fn send(&mut self, msg: Value) {
        let mut line = msg.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(TIMEOUT, self.lines.next_line())
            .await
            .expect("timed out waiting for codex")
            .unwrap()
            .expect("codex closed stdout");
        serde_json::from_str(&line).unwrap()
    }

    /// Sends a request and returns its result, collecting what arrives meanwhile.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"id": id, "method": method, "params": params}))
            .await;
        loop {
            let msg = self.next().await;
            if msg.get("method").is_none() && msg["id"] == id {
                assert!(msg.get("error").is_none(), "{method} failed: {msg}");
                return msg["result"].clone();
            }
        }
    }

    async fn start_thread(&mut self, extra: Value) -> String {
        let mut params = json!({"ephemeral": true, "developerInstructions": "Be brief."});
        params
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let result = self.request("thread/start", params).await;
        result["thread"]["id"].as_str().unwrap().to_owned()
    }

    /// Runs one turn, answering every `item/tool/call` with `answer(params)`, and returns
    /// every notification and server request up to and including `turn/completed`.
    async fn turn(
        &mut self,
        thread: &str,
        text: &str,
        answer: impl Fn(&Value) -> String,
    ) -> Vec<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"id": id, "method": "turn/start", "params": {
            "threadId": thread, "input": [{"type": "text", "text": text}]}}))
            .await;
        let mut seen = Vec::new();
        loop {
            let msg = self.next().await;
            if msg["method"] == "item/tool/call" {
                let text = answer(&msg["params"]);
                self.send(json!({"id": msg["id"], "result": {
                    "contentItems": [{"type": "inputText", "text": text}], "success": true}}))
                    .await;
            }
            let done = msg["method"] == "turn/completed";
            if msg.get("method").is_some() {
                seen.push(msg);
            }
            if done {
                return seen;
            }
        }
    }
}

fn of_method<'a>(msgs: &'a [Value], method: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["method"] == method).collect()
}

fn completed_turn(msgs: &[Value]) -> &Value {
    &msgs.last().unwrap()["params"]["turn"]
}

#[tokio::test]
async fn strict_config_and_catalog_are_accepted() {
    let bin = require_codex!();
    let home = Home::new("strict");
    let env = write_codex_home(&home.0, "http://127.0.0.1:9/v1").unwrap();
    assert_eq!(
        env,
        [(
            "OFFLINE_MODEL_API_KEY".to_owned(),
            "sk-offline-dummy".to_owned()
        )]
    );
    let out = codex_command(&bin, &home.0, &env)
        .args(["app-server", "--strict-config", "--print-startup-config"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        printed["appServerVersion"],
        include_str!("../../CODEX_VERSION").trim()
    );

    // The catalog is what model/list reports: one model, three efforts, medium default.
    let mut app = AppServer::spawn(&bin, &home.0, &env).await;
    let models = app.request("model/list", json!({})).await;
    let data = models["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{models}");
    assert_eq!(data[0]["id"], MODEL_ID);
    assert_eq!(data[0]["displayName"], "Codex Offline");
    assert_eq!(data[0]["defaultReasoningEffort"], "medium");
    let efforts: Vec<&str> = data[0]["supportedReasoningEfforts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["reasoningEffort"]
                .as_str()
                .or_else(|| e.as_str())
                .unwrap()
        })
        .collect();
    assert_eq!(efforts, ["low", "medium", "high"]);
}

#[tokio::test]
async fn echo_turn_streams_deltas_and_completes() {
    let bin = require_codex!();
    let model = OfflineModel::start(0).await.unwrap();
    let home = Home::new("echo");
    let env = write_codex_home(&home.0, &model.base_url()).unwrap();
    let mut app = AppServer::spawn(&bin, &home.0, &env).await;
    let thread = app.start_thread(json!({})).await;
    let msgs = app
        .turn(&thread, "Hello offline model", |_| unreachable!())
        .await;

    let deltas: String = of_method(&msgs, "item/agentMessage/delta")
        .iter()
        .map(|m| m["params"]["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "ECHO: Hello offline model");
    assert_eq!(of_method(&msgs, "item/agentMessage/delta").len(), 4);
    let turn = completed_turn(&msgs);
    assert_eq!(turn["status"], "completed");
    assert_eq!(turn["items"][0]["text"], "ECHO: Hello offline model");
    let usage = &of_method(&msgs, "thread/tokenUsage/updated")[0]["params"]["tokenUsage"];
    assert_eq!(usage["last"]["outputTokens"], 4);
    assert_eq!(usage["modelContextWindow"], 121600);

    // What codex sent: the base instructions first, the prompt last, the dummy key.
    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["model"], MODEL_ID);
    assert_eq!(
        requests[0]["input"][0]["content"][0]["text"],
        codex_offline_model::BASE_INSTRUCTIONS
    );
    let input = requests[0]["input"].as_array().unwrap();
    assert_eq!(
        input.last().unwrap()["content"][0]["text"],
        "Hello offline model"
    );

    // A second turn sees the history through [[history]].
    let msgs = app.turn(&thread, "[[history]]", |_| unreachable!()).await;
    assert_eq!(
        completed_turn(&msgs)["items"][0]["text"],
        "HISTORY: user: Hello offline model | assistant: ECHO: Hello offline model | user: [[history]]"
    );
    model.shutdown().await;
}

#[tokio::test]
async fn call_trigger_drives_a_dynamic_tool_round_trip() {
    let bin = require_codex!();
    let model = OfflineModel::start(0).await.unwrap();
    let home = Home::new("tools");
    let env = write_codex_home(&home.0, &model.base_url()).unwrap();
    let mut app = AppServer::spawn(&bin, &home.0, &env).await;
    let thread = app
        .start_thread(json!({"dynamicTools": [{
            "type": "function", "name": "lookup_ticket", "description": "Fetch a ticket",
            "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}}}
        }]}))
        .await;
    let msgs = app
        .turn(
            &thread,
            r#"check [[call lookup_ticket {"id": "ABC-123"}]]"#,
            |params| {
                format!(
                    "ticket {} is open",
                    params["arguments"]["id"].as_str().unwrap()
                )
            },
        )
        .await;

    let calls = of_method(&msgs, "item/tool/call");
    assert_eq!(calls.len(), 1, "{msgs:#?}");
    let params = &calls[0]["params"];
    assert_eq!(params["tool"], "lookup_ticket");
    assert_eq!(params["arguments"], json!({"id": "ABC-123"}));
    let call_id = params["callId"].as_str().unwrap();
    assert!(call_id.starts_with("call_"));

    let turn = completed_turn(&msgs);
    assert_eq!(turn["status"], "completed");
    let last = turn["items"].as_array().unwrap().last().unwrap();
    assert_eq!(
        last["text"],
        format!("TOOL RESULT {call_id}: ticket ABC-123 is open")
    );
    // Two model requests: the call, then the answer from the tool output.
    assert_eq!(model.requests().len(), 2);

    // The dynamic tool reaches the model next to codex's own tools.
    let msgs = app.turn(&thread, "[[tools]]", |_| unreachable!()).await;
    let tools = completed_turn(&msgs)["items"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        tools.starts_with("TOOLS: ") && tools.contains("lookup_ticket"),
        "{tools}"
    );
    model.shutdown().await;
}

#[tokio::test]
async fn custom_trigger_reaches_codex_as_a_freeform_call_on_bundled_models() {
    let bin = require_codex!();
    let model = OfflineModel::start(0).await.unwrap();
    let home = Home::new("custom");
    let options = HomeOptions {
        bundled_models: true,
        ..HomeOptions::default()
    };
    let env = write_codex_home_with(&home.0, &model.base_url(), &options).unwrap();
    let out = codex_command(&bin, &home.0, &env)
        .args(["app-server", "--strict-config", "--print-startup-config"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut app = AppServer::spawn(&bin, &home.0, &env).await;
    let models = app.request("model/list", json!({})).await;
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-5.5"),
        "{models}"
    );
    // gpt-5.5 is offered codex's freeform `apply_patch`; a malformed patch is refused by
    // codex's parser, so nothing on the host is touched.
    let thread = app
        .start_thread(json!({"model": "gpt-5.5", "sandbox": "read-only"}))
        .await;
    let msgs = app.turn(&thread, "[[tools]]", |_| unreachable!()).await;
    let tools = completed_turn(&msgs)["items"][0]["text"].clone();
    assert!(tools.as_str().unwrap().contains("apply_patch"), "{tools}");
    let msgs = app
        .turn(
            &thread,
            r#"[[custom apply_patch "not a patch"]]"#,
            |_| unreachable!(),
        )
        .await;
    let turn = completed_turn(&msgs);
    assert_eq!(turn["status"], "completed");
    let text = turn["items"].as_array().unwrap().last().unwrap()["text"].clone();
    assert!(
        text.as_str().unwrap().starts_with("TOOL RESULT call_")
            && text.as_str().unwrap().contains("invalid patch"),
        "{text}"
    );
    // Codex sent the call back with its output as a `custom_tool_call_output`.
    let last = model.requests().pop().unwrap();
    let input = last["input"].as_array().unwrap();
    let call = input
        .iter()
        .find(|i| i["type"] == "custom_tool_call")
        .unwrap();
    assert_eq!(call["name"], "apply_patch");
    assert_eq!(call["input"], "not a patch");
    assert_eq!(input.last().unwrap()["type"], "custom_tool_call_output");
    model.shutdown().await;
}

#[tokio::test]
async fn break_and_error_fail_the_turn() {
    let bin = require_codex!();
    let model = OfflineModel::start(0).await.unwrap();
    let home = Home::new("fail");
    let env = write_codex_home(&home.0, &model.base_url()).unwrap();
    let mut app = AppServer::spawn(&bin, &home.0, &env).await;
    let thread = app.start_thread(json!({})).await;

    let msgs = app
        .turn(&thread, "one two three [[break 2]]", |_| unreachable!())
        .await;
    let deltas: String = of_method(&msgs, "item/agentMessage/delta")
        .iter()
        .map(|m| m["params"]["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "ECHO: one");
    let turn = completed_turn(&msgs);
    assert_eq!(turn["status"], "failed");
    assert!(
        turn["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stream disconnected"),
        "{turn}"
    );

    let msgs = app.turn(&thread, "[[error 429]]", |_| unreachable!()).await;
    let turn = completed_turn(&msgs);
    assert_eq!(turn["status"], "failed");
    assert_eq!(
        turn["error"]["codexErrorInfo"],
        json!({"responseTooManyFailedAttempts": {"httpStatusCode": 429}})
    );
    // No retries: exactly one model request per turn.
    assert_eq!(model.requests().len(), 2);

    // A login that went bad: codex reports the 401 as a failed HTTP
    // connection (not `unauthorized`), and its account is unchanged.
    let msgs = app
        .turn(&thread, "[[unauthorized]]", |_| unreachable!())
        .await;
    let turn = completed_turn(&msgs);
    assert_eq!(turn["status"], "failed");
    assert_eq!(
        turn["error"]["codexErrorInfo"],
        json!({"httpConnectionFailed": {"httpStatusCode": 401}}),
        "{turn}"
    );
    assert!(
        turn["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token_invalidated")
            || turn["error"]["message"]
                .as_str()
                .unwrap()
                .contains("authentication token"),
        "{turn}"
    );
    assert!(of_method(&msgs, "account/updated").is_empty());
    let account = app.request("account/read", json!({})).await;
    assert_eq!(account["requiresOpenaiAuth"], false, "{account}");

    // An exhausted account: codex reports the full window with its reset
    // time, then fails the turn as usageLimitExceeded.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let msgs = app.turn(&thread, "[[quota 120]]", |_| unreachable!()).await;
    assert_eq!(model.requests().len(), 4);
    let turn = completed_turn(&msgs);
    assert_eq!(turn["status"], "failed");
    assert_eq!(
        turn["error"]["codexErrorInfo"], "usageLimitExceeded",
        "{turn}"
    );
    let limits = of_method(&msgs, "account/rateLimits/updated");
    let primary = &limits.last().expect("a rate-limit snapshot")["params"]["rateLimits"]["primary"];
    assert_eq!(primary["usedPercent"], 100, "{primary}");
    let resets_at = primary["resetsAt"].as_u64().unwrap();
    assert!(
        (before + 119..=before + 121).contains(&resets_at),
        "{primary}"
    );
    model.shutdown().await;
}
