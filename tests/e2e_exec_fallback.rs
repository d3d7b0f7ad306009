//! Exec as an independent fallback (issue 15): a CLI release whose
//! `codex app-server` is broken still serves through `PROXY_BACKEND=exec`,
//! which starts no app-server at all. The broken release is the real CLI
//! behind a wrapper that fails `app-server` and logs every subcommand, so the
//! test counts, at the process level, that exec never started one. The
//! contrast: the same binary on the app-server backend is not ready.
//!
//! Also here: one turn budget for both backends (a canary split cannot run
//! more turns than `WORKER_MAX_CONCURRENCY` × pool size).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use codex_completions_api::worker::WorkerPhase;
use codex_offline_model::HomeOptions;
use serde_json::{json, Value};
use support::{read_all, Harness};

const MODEL: &str = codex_offline_model::MODEL_ID;

/// A `codex` whose `app-server` exits 1 (a release that broke it) and that
/// runs the real CLI for anything else. Each call's subcommand is appended
/// to the returned log.
fn broken_app_server_codex(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let log = dir.join("invocations.log");
    let bin = dir.join("codex");
    let script = format!(
        r#"#!/bin/sh
# The first argument that is neither an option nor an option's value.
sub=""; skip=0
for a in "$@"; do
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  case "$a" in
    -c|--config|--enable|--disable) skip=1 ;;
    --version) sub="--version"; break ;;
    -*) ;;
    *) sub="$a"; break ;;
  esac
done
echo "$sub" >> '{log}'
if [ "$sub" = app-server ]; then
  echo "error: app-server is broken in this build" >&2
  exit 1
fi
exec '{real}' "$@"
"#,
        log = log.display(),
        real = support::codex_bin().display(),
    );
    std::fs::write(&bin, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (bin, log)
}

fn subcommands(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn wrapper_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("broken-{:016x}", rand::random::<u64>()))
}

/// Polls `GET /admin/workers` until `done` holds (30 s at most).
async fn admin_workers_until(h: &Harness, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = h.get("/admin/workers").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "never: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_serves_everything_when_app_server_is_broken_and_starts_none() {
    let dir = wrapper_dir();
    let (bin, log) = broken_app_server_codex(&dir);
    let h = Harness::start_with(&[
        ("PROXY_BACKEND", "exec"),
        ("CODEX_BIN", bin.to_str().unwrap()),
        ("PROXY_ENABLE_METRICS", "true"),
    ])
    .await;

    let r = h.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ready = r.json();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["backend"], "exec");
    assert_eq!(ready["workers"], 0, "no worker: {ready}");
    assert_eq!(ready["worker"], Value::Null);
    assert_eq!(ready["exec"]["ready"], true);
    assert!(
        ready["exec"]["codex_version"]
            .as_str()
            .is_some_and(|v| v.contains(codex_completions_api::protocol::pinned_codex_version())),
        "{ready}"
    );
    let r = h.get("/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["worker_ready"], true, "{}", r.text());
    let metrics = h.get("/metrics").await.text();
    assert!(
        metrics.lines().any(|l| l == "codex_gateway_exec_ready 1"),
        "{metrics}"
    );

    // The models come from the CLI (`codex debug models`): the test
    // catalog's one model and its efforts, as app-server lists them.
    let r = h.get("/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        [
            MODEL.to_owned(),
            format!("{MODEL}-low"),
            format!("{MODEL}-medium"),
            format!("{MODEL}-high")
        ]
    );
    assert_eq!(h.get(&format!("/v1/models/{MODEL}-high")).await.status, 200);
    assert_eq!(h.get("/v1/models/gpt-nope").await.status, 404);

    // Chat, plain and streamed, and the Responses API.
    let r = h
        .post("/v1/chat/completions", &Harness::chat("Hello there", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "ECHO: Hello there"
    );
    let mut res = h
        .open(h.post_request("/v1/chat/completions", &Harness::chat("[[words 3]]", true)))
        .await;
    assert_eq!(res.status(), 200);
    let text = read_all(res.body_mut()).await;
    let frames = support::sse_data(&text);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"), "{text}");
    let streamed: String = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(streamed, "w1 w2 w3");
    let r = h
        .post("/v1/responses", &json!({"model": MODEL, "input": "Hi"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["output"][0]["content"][0]["text"], "ECHO: Hi");

    // The admin view says exec, not an empty or failed pool.
    let workers = h.get("/admin/workers").await.json();
    assert_eq!(workers["backend"], "exec");
    assert_eq!(workers["size"], 0);
    assert_eq!(workers["exec"]["ready"], true, "{workers}");
    let probes = workers["exec"]["probes"].as_u64().unwrap();

    // A restart checks the CLI again (lockdown and models); one worker
    // cannot be named, as there is none.
    let r = h.post("/admin/workers/restart", &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["exec_probe"], true);
    let after = admin_workers_until(&h, |w| w["exec"]["probes"].as_u64() > Some(probes)).await;
    assert_eq!(after["exec"]["ready"], true, "{after}");
    assert_eq!(h.get("/readyz").await.status, 200);
    let r = h
        .post("/admin/workers/restart", &json!({"worker": 0}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "worker");

    h.stop().await;
    let calls = subcommands(&log);
    assert!(
        !calls.iter().any(|c| c == "app-server"),
        "an app-server was started: {calls:?}"
    );
    // Two probes (start, restart), each `--version`, the lockdown's two
    // questions and the models; three turns.
    assert_eq!(
        calls.iter().filter(|c| *c == "--version").count(),
        2,
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| *c == "exec").count(),
        3,
        "{calls:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_broken_cli_leaves_an_app_server_gateway_unready() {
    let dir = wrapper_dir();
    let (bin, log) = broken_app_server_codex(&dir);
    let h = Harness::start_unready(
        &[
            ("CODEX_BIN", bin.to_str().unwrap()),
            ("WORKER_RESTART_MAX", "2"),
            ("WORKER_BACKOFF_INITIAL_MS", "10"),
            ("WORKER_BACKOFF_MAX_MS", "20"),
        ],
        &HomeOptions::default(),
    )
    .await;
    let mut worker = h.handles.worker.clone();
    tokio::time::timeout(Duration::from_secs(30), async {
        while worker.status().phase != WorkerPhase::Stopped {
            worker.changed().await;
        }
    })
    .await
    .expect("the gateway gives up on the broken app-server");
    let r = h.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["backend"], "app-server");
    assert!(
        r.json()["reason"]
            .as_str()
            .is_some_and(|m| m.contains("gave up after 2")),
        "{}",
        r.text()
    );
    let r = h
        .post("/v1/chat/completions", &Harness::chat("Hello", false))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(h.get("/v1/models").await.status, 503);
    h.stop().await;
    let started = subcommands(&log)
        .iter()
        .filter(|c| *c == "app-server")
        .count();
    assert_eq!(started, 2, "the broken app-server was tried, then given up");
    let _ = std::fs::remove_dir_all(dir);
}

/// The 429 both backends answer at the limit.
fn assert_overloaded(r: &support::Reply) {
    assert_eq!(r.status, 429, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], "overloaded", "{e}");
    assert_eq!(e["type"], "rate_limit_error", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_split_shares_one_turn_limit() {
    // Every conversation goes to exec (100 %), except those exec cannot
    // serve (client tools): they stay on app-server. One slot, no queue.
    let h = Harness::start_with(&[
        ("PROXY_BACKEND_CANARY_PERCENT", "100"),
        ("WORKER_MAX_CONCURRENCY", "1"),
        ("WORKER_QUEUE_MAX", "0"),
    ])
    .await;
    let with_tools = |prompt: &str| {
        json!({"model": MODEL, "messages": [{"role": "user", "content": prompt}],
               "tools": [{"type": "function", "function": {"name": "lookup"}}]})
    };
    let wait_for_model = || async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while h.model.open_streams() == 0 {
            assert!(
                Instant::now() < deadline,
                "the first turn never reached the model"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    // An exec turn holds the slot: an app-server turn is refused.
    let first = Harness::chat("[[slow 300]] on exec", false);
    let slow = h.post("/v1/chat/completions", &first);
    let second = async {
        wait_for_model().await;
        h.post("/v1/chat/completions", &with_tools("on app-server"))
            .await
    };
    let (slow, second) = tokio::join!(slow, second);
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert_overloaded(&second);

    // And the other way round.
    let first = with_tools("[[slow 300]] on app-server");
    let slow = h.post("/v1/chat/completions", &first);
    let second = async {
        wait_for_model().await;
        h.post("/v1/chat/completions", &Harness::chat("on exec", false))
            .await
    };
    let (slow, second) = tokio::join!(slow, second);
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert_overloaded(&second);

    // Both free again.
    let r = h
        .post("/v1/chat/completions", &Harness::chat("after", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = h.get("/readyz").await.json();
    assert_eq!(r["exec"]["turn_slots"], 1, "{r}");
    assert_eq!(r["exec"]["turns_in_flight"], 0, "{r}");
    h.stop().await;
}

/// `GET /v1/models` ids.
async fn model_ids(h: &Harness) -> Vec<String> {
    let r = h.get("/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_lists_the_same_models_as_app_server_from_the_bundled_catalog() {
    // codex's own catalog: hidden models, priorities out of file order and
    // per-model efforts, where `codex debug models` and `model/list` could
    // part ways.
    let bundled = HomeOptions {
        bundled_models: true,
        ..HomeOptions::default()
    };
    let h = Harness::start_with_home(&[], &bundled).await;
    let app_server = model_ids(&h).await;
    h.stop().await;
    let h = Harness::start_with_home(&[("PROXY_BACKEND", "exec")], &bundled).await;
    let exec = model_ids(&h).await;
    h.stop().await;
    assert!(app_server.len() > 10, "{app_server:?}");
    assert_eq!(exec, app_server);
}

#[test]
fn sighup_has_an_exec_gateway_check_its_cli_again() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = wrapper_dir();
    let home = dir.join("codex-home");
    // The probe needs no model: it only asks the CLI.
    codex_offline_model::write_codex_home(&home, "http://127.0.0.1:9/v1").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_codex-completions-api"))
        .env("PORT", port.to_string())
        .env("CODEX_BIN", support::codex_bin())
        .env("CODEX_HOME", &home)
        .env("PROXY_BACKEND", "exec")
        .env("PROXY_STATE_DIR", dir.join("state"))
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let exec = || -> Option<Value> {
        let (_, body) = support::get_blocking(port, "/admin/workers")?;
        let body: Value = serde_json::from_str(&body).ok()?;
        Some(body["exec"].clone())
    };
    let wait_for = |what: &str, want: &dyn Fn(&Value) -> bool| {
        for _ in 0..600 {
            if exec().is_some_and(|e| want(&e)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("not {what} within 30 s: {:?}", exec());
    };
    wait_for("ready", &|e| e["ready"] == true && e["probes"] == 1);
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
    };
    signal("-HUP");
    wait_for("probed again", &|e| e["ready"] == true && e["probes"] == 2);
    signal("-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(dir);
}
