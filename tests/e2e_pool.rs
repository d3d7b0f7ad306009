//! A pool of real codex workers (`WORKER_POOL_SIZE`): placement, crash
//! isolation, rolling restarts and recycling, with the offline model.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::Harness;

/// One pool at a time: three pools of real workers at once on two cores
/// would make the timing of every test depend on the others.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until `/admin/workers` satisfies `done` (30 s at most).
async fn wait_workers(h: &Harness, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let r = h.get("/admin/workers").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let workers = r.json()["workers"].as_array().unwrap().clone();
        if done(&workers) {
            return workers;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not {what} after 30 s: {workers:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A getter for `/admin/workers` that owns its client (for a spawned task).
fn reqwest_like_get(
    url: String,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Value>> + Send>> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    move || {
        let client = client.clone();
        let url = url.clone();
        Box::pin(async move {
            let res = client.get(url.parse().unwrap()).await.unwrap();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&body).unwrap();
            v["workers"].as_array().unwrap().clone()
        })
    }
}

fn all_ready(workers: &[Value]) -> bool {
    workers
        .iter()
        .all(|w| w["ready"] == true && w["draining"] == false)
}

/// The SSE data frames of a finished stream: `[DONE]` last, and no error frame.
fn assert_clean_stream(text: &str) {
    let data = support::sse_data(text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_spreads_turns_reports_each_worker_and_a_killed_worker_fails_only_its_streams() {
    let _serial = SERIAL.lock().await;
    let h =
        Harness::start_with(&[("WORKER_POOL_SIZE", "3"), ("PROXY_ENABLE_METRICS", "true")]).await;
    let workers = wait_workers(&h, "all ready", all_ready).await;
    assert_eq!(workers.len(), 3);
    let r = h.get("/readyz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["workers_ready"], 3, "{}", r.text());
    assert_eq!(r.json()["workers"], 3);
    let pids: Vec<u64> = workers.iter().map(|w| w["pid"].as_u64().unwrap()).collect();
    assert!(pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2]);

    // Six streams mid-body: two per worker (each goes to the least loaded).
    let mut bodies = Vec::new();
    for i in 0..6 {
        let res = h
            .open(h.post_request(
                "/v1/chat/completions",
                &Harness::chat(&format!("[[slow 600]] pool {i} a b c d e f g h"), true),
            ))
            .await;
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        let head = support::read_until(&mut body, "ECHO").await;
        bodies.push((head, body));
    }
    let loaded = wait_workers(&h, "loaded", |w| {
        w.iter().all(|w| w["turns_in_flight"] == 2)
    })
    .await;
    assert!(
        loaded.iter().all(|w| w["turns_started"] == 2),
        "{loaded:#?}"
    );
    let metrics = h.get("/metrics").await.text();
    for i in 0..3 {
        assert!(
            metrics.contains(&format!(
                "codex_gateway_worker_turns_in_flight{{worker=\"{i}\"}} 2"
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!("codex_gateway_worker_ready{{worker=\"{i}\"}} 1")),
            "{metrics}"
        );
    }

    // Worker 1 dies mid-stream: its two streams end with a clean error
    // frame, the other four finish their answers. A watcher times the
    // replacement from just before the kill to the new process being ready.
    let old_pid = pids[1];
    let url = h.url("/admin/workers");
    let killed_at = Instant::now();
    let watcher = tokio::spawn(async move {
        let client = reqwest_like_get(url);
        loop {
            let workers = client().await;
            let w = &workers[1];
            if w["ready"] == true && w["pid"].as_u64() != Some(old_pid) {
                return killed_at.elapsed();
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "{workers:#?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    std::process::Command::new("kill")
        .args(["-9", &pids[1].to_string()])
        .status()
        .unwrap();
    let (mut gone, mut finished) = (0, 0);
    for (head, mut body) in bodies {
        let text = head + &support::read_all(&mut body).await;
        let data = support::sse_data(&text);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
        if text.contains("\"error\"") {
            let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
            assert_eq!(error["error"]["code"], "worker_gone", "{text}");
            gone += 1;
        } else {
            assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
            finished += 1;
        }
    }
    assert_eq!((gone, finished), (2, 4));

    // The others go on while it comes back; then all three serve again.
    for i in 0..4 {
        let r = h
            .post(
                "/v1/chat/completions",
                &Harness::chat(&format!("after {i}"), false),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let replaced_in = watcher.await.unwrap();
    println!("worker 1 replaced and ready {replaced_in:?} after kill -9");
    // The goal is under 1 s; a codex start takes ~0.1-0.3 s here even with
    // other test binaries running. The one retry seen after a kill (below)
    // adds WORKER_BACKOFF_INITIAL_MS (100 ms in the harness), still inside.
    assert!(
        replaced_in < Duration::from_secs(1),
        "replacement took {replaced_in:?}"
    );
    let workers = wait_workers(&h, "all ready again", all_ready).await;
    // At least one restart: a first start right after the kill may fail
    // and be retried (seen once in three runs; the others share its CODEX_HOME).
    assert!(workers[1]["restarts"].as_u64() >= Some(1), "{workers:#?}");
    assert_ne!(workers[1]["pid"].as_u64().unwrap(), pids[1]);
    assert_eq!(workers[0]["restarts"], 0);
    assert_eq!(workers[2]["restarts"], 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_16_streams_fails_no_request() {
    let _serial = SERIAL.lock().await;
    let h = Harness::start_with(&[("WORKER_POOL_SIZE", "3")]).await;
    let before = wait_workers(&h, "all ready", all_ready).await;
    let old_pids: Vec<u64> = before.iter().map(|w| w["pid"].as_u64().unwrap()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let h = Arc::new(h);
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..16 {
        let h = h.clone();
        let stop = stop.clone();
        clients.spawn(async move {
            let mut done = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let reply = h
                    .try_send(h.post_request(
                        "/v1/chat/completions",
                        &Harness::chat(&format!("[[slow 40]] roll {c} {done} a b c d"), true),
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("client {c} request {done}: {e}"));
                assert_eq!(reply.status, 200, "client {c}: {}", reply.text());
                assert_clean_stream(&reply.text());
                done += 1;
            }
            done
        });
    }
    // Load on every worker first.
    wait_workers(&h, "loaded", |w| {
        w.iter().all(|w| w["turns_started"].as_u64() > Some(0))
    })
    .await;

    let r = h
        .send(h.post_request("/admin/workers/restart", &json!({})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["queued"], 3);
    let after = wait_workers(&h, "all replaced", |w| {
        w.iter().all(|w| w["recycles"] == 1) && all_ready(w)
    })
    .await;
    // Keep the load on a little past the last replacement.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    while let Some(done) = clients.join_next().await {
        total += done.expect("a client failed a request");
    }
    for (w, old) in after.iter().zip(&old_pids) {
        assert_ne!(w["pid"].as_u64().unwrap(), *old, "{after:#?}");
        // A recycle is not a crash: no failure counted, no backoff.
        assert_eq!(w["consecutive_failures"], 0, "{after:#?}");
    }
    println!("rolling restart of 3 workers under 16 streams: {total} requests, none failed");
    assert!(total >= 32, "only {total} requests ran");
    let h = Arc::into_inner(h).expect("clients done");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_recycled_after_max_turns_and_over_max_rss_without_failures() {
    let _serial = SERIAL.lock().await;
    let h = Harness::start_with(&[("WORKER_POOL_SIZE", "2"), ("WORKER_MAX_TURNS", "3")]).await;
    wait_workers(&h, "all ready", all_ready).await;
    for i in 0..12 {
        let r = h
            .post(
                "/v1/chat/completions",
                &Harness::chat(&format!("turn {i}"), i % 2 == 0),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!r.text().contains("\"error\""), "{}", r.text());
    }
    let workers = wait_workers(&h, "recycled", |w| {
        all_ready(w) && w.iter().all(|w| w["recycles"].as_u64() >= Some(1))
    })
    .await;
    assert!(
        workers
            .iter()
            .all(|w| w["turns_started"].as_u64() < Some(3)),
        "{workers:#?}"
    );
    h.stop().await;

    // A limit below what any codex process uses: every worker is recycled
    // in turn, and requests are still served by the other one.
    let h = Harness::start_with(&[("WORKER_POOL_SIZE", "2"), ("WORKER_MAX_RSS_MB", "1")]).await;
    wait_workers(&h, "recycled for memory", |w| {
        w.iter().all(|w| w["recycles"].as_u64() >= Some(1))
    })
    .await;
    for i in 0..6 {
        let r = h
            .post(
                "/v1/chat/completions",
                &Harness::chat(&format!("rss {i}"), false),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    h.stop().await;
}

/// The codex homes of a pool whose workers all talk to `model`; worker
/// `needs_login`'s provider wants an OpenAI login (`requires_openai_auth`)
/// and its home has none.
fn pool_homes(
    dir: &std::path::Path,
    model: &codex_offline_model::OfflineModel,
    n: usize,
    needs_login: Option<usize>,
) -> Vec<std::path::PathBuf> {
    (0..n)
        .map(|i| {
            let home = dir.join(format!("home-{i}"));
            codex_offline_model::write_codex_home(&home, &model.base_url()).unwrap();
            if needs_login == Some(i) {
                let config = home.join("config.toml");
                let text = std::fs::read_to_string(&config).unwrap();
                let patched = text.replace(
                    "[model_providers.offline]\n",
                    "[model_providers.offline]\nrequires_openai_auth = true\n",
                );
                assert_ne!(patched, text, "no provider table in {}", config.display());
                std::fs::write(&config, patched).unwrap();
            }
            home.canonicalize().unwrap()
        })
        .collect()
}

/// The codex homes of a pool whose workers each have their own account:
/// the provider wants an OpenAI login (`requires_openai_auth`, no
/// `env_key`), and home `i` holds an API-key login with key `sk-login-i`,
/// which codex sends as its bearer token (measured), so the model tells
/// the workers apart and can fail one account.
fn login_homes(
    dir: &std::path::Path,
    model: &codex_offline_model::OfflineModel,
    n: usize,
) -> Vec<std::path::PathBuf> {
    (0..n)
        .map(|i| {
            let home = dir.join(format!("home-{i}"));
            codex_offline_model::write_codex_home(&home, &model.base_url()).unwrap();
            let config = home.join("config.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            let patched = text
                .replace(
                    "[model_providers.offline]\n",
                    "[model_providers.offline]\nrequires_openai_auth = true\n",
                )
                .lines()
                .filter(|l| !l.starts_with("env_key"))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(patched.contains("requires_openai_auth"), "{patched}");
            std::fs::write(&config, patched + "\n").unwrap();
            // What `codex login --with-api-key` writes (measured).
            std::fs::write(
                home.join("auth.json"),
                json!({"auth_mode": "apikey", "OPENAI_API_KEY": format!("sk-login-{i}")})
                    .to_string(),
            )
            .unwrap();
            home.canonicalize().unwrap()
        })
        .collect()
}

/// `codex login --with-api-key` for `home`, with `key` on stdin, as an operator runs it.
fn codex_login(home: &std::path::Path, key: &str) {
    let mut login = std::process::Command::new(support::codex_bin())
        .args(["login", "--with-api-key"])
        .env("CODEX_HOME", home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    login
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{key}\n").as_bytes())
        .unwrap();
    assert!(login.wait().unwrap().success());
}

/// The value of the sample `name` (labels included, e.g.
/// `codex_gateway_worker_login_required{worker="0"}`) on `/metrics`.
async fn metric(h: &Harness, name: &str) -> f64 {
    let text = h.get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// `/readyz` of a pool of two: 200, one worker ready, and `worker` listed as
/// waiting for a login with the command that gives it one.
async fn assert_one_serves_while_waiting_for_login(h: &Harness, worker: u64, command: &str) {
    let r = h.get("/readyz").await;
    assert_eq!(r.status, 200, "one worker still serves: {}", r.text());
    let ready = r.json();
    assert_eq!(ready["workers_ready"], 1, "{ready}");
    assert_eq!(ready["login_required"][0]["worker"], worker, "{ready}");
    assert!(
        ready["login_required"][0]["action"]
            .as_str()
            .unwrap()
            .contains(command),
        "{ready}"
    );
}

fn homes_env(homes: &[std::path::PathBuf]) -> String {
    homes
        .iter()
        .map(|h| h.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_out_of_quota_is_routed_around_and_all_out_of_quota_is_429_with_the_reset_time() {
    let _serial = SERIAL.lock().await;
    // Two accounts (workers sharing a CODEX_HOME share its quota).
    let model = codex_offline_model::OfflineModel::start(0).await.unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-pool-quota-{:016x}", rand::random::<u64>()));
    let homes = login_homes(&dir, &model, 2);
    let h = Harness::start_with(&[
        ("WORKER_POOL_SIZE", "2"),
        ("WORKER_CODEX_HOMES", &homes_env(&homes)),
        ("PROXY_ENABLE_METRICS", "true"),
    ])
    .await;
    wait_workers(&h, "all ready", all_ready).await;

    // Worker 0's account runs out of quota (the model answers its key 429
    // usage_limit_reached, resetting in 120 s). The first request goes to
    // worker 0 (idle pool: the lowest index), fails there before any output,
    // and is served by worker 1: the client sees a normal stream.
    model.exhaust("sk-login-0", 120);
    let r = h
        .post("/v1/chat/completions", &Harness::chat("q1 a b", true))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_clean_stream(&r.text());
    assert!(r.text().contains("ECHO:"), "{}", r.text());
    assert_eq!(model.requests_with_key("sk-login-0"), 1);
    assert_eq!(model.requests_with_key("sk-login-1"), 1);
    assert_eq!(
        metric(&h, "codex_gateway_turn_retries_total{reason=\"quota\"}").await,
        1.0
    );
    assert_eq!(
        metric(&h, "codex_gateway_worker_quota_exhausted{worker=\"0\"}").await,
        1.0
    );
    assert_eq!(
        metric(&h, "codex_gateway_worker_quota_exhausted{worker=\"1\"}").await,
        0.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let resets = metric(
        &h,
        "codex_gateway_worker_quota_resets_at_seconds{worker=\"0\"}",
    )
    .await;
    assert!(
        (now + 100.0..=now + 121.0).contains(&resets),
        "{resets} vs {now}"
    );
    assert_eq!(
        metric(
            &h,
            "codex_gateway_worker_quota_resets_at_seconds{worker=\"1\"}"
        )
        .await,
        0.0
    );

    let workers = wait_workers(&h, "one out of quota", |w| {
        w.iter().filter(|w| !w["quota_resets_at"].is_null()).count() == 1
    })
    .await;
    let out = workers
        .iter()
        .position(|w| !w["quota_resets_at"].is_null())
        .unwrap();
    assert_eq!(out, 0, "{workers:#?}");
    let other = 1 - out;
    assert!(workers[out]["action"]
        .as_str()
        .unwrap()
        .contains("out of quota until"));
    let started = |w: &[Value], i: usize| w[i]["turns_started"].as_u64().unwrap();
    let (out_before, other_before) = (started(&workers, out), started(&workers, other));
    let r = h.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["workers_ready"], 1, "{}", r.text());
    assert_eq!(r.json()["workers_out_of_quota"], 1, "{}", r.text());

    // The other worker carries every new turn, streamed or not.
    for i in 0..6 {
        let r = h
            .post(
                "/v1/chat/completions",
                &Harness::chat(&format!("routed {i}"), i % 2 == 0),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!r.text().contains("\"error\""), "{}", r.text());
    }
    let workers = h.get("/admin/workers").await.json()["workers"].clone();
    let workers = workers.as_array().unwrap();
    assert_eq!(started(workers, out), out_before, "{workers:#?}");
    assert_eq!(started(workers, other), other_before + 6, "{workers:#?}");
    // Counted where the turns ran: the model saw only worker 1's key.
    assert_eq!(model.requests_with_key("sk-login-0"), 1);
    assert_eq!(model.requests_with_key("sk-login-1"), 7);

    // The other account runs out too: with nowhere left to retry, the
    // client gets 429 insufficient_quota with the reset time, and so does
    // every request after it, never a 502 or 503.
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("[[quota 90]] q2", true),
        )
        .await;
    // Streamed too: codex fails the turn before any output, so the status is still free.
    assert_eq!(r.status, 429, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("usage limit"), "{message}");
    assert!(message.contains("quota resets at 20"), "{message}");
    assert_eq!(r.json()["error"]["type"], "insufficient_quota");
    assert_eq!(
        metric(&h, "codex_gateway_turn_retries_total{reason=\"quota\"}").await,
        1.0
    );
    assert_eq!(
        r.json()["error"]["code"],
        "insufficient_quota",
        "{}",
        r.text()
    );
    wait_workers(&h, "both out of quota", |w| {
        w.iter().all(|w| !w["quota_resets_at"].is_null())
    })
    .await;
    for stream in [false, true] {
        let r = h
            .post("/v1/chat/completions", &Harness::chat("anyone?", stream))
            .await;
        assert_eq!(r.status, 429, "{}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["code"], "insufficient_quota", "{e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("all 2 Codex workers are out of quota; the earliest resets at 20"),
            "{message}"
        );
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((60..=90).contains(&retry), "retry-after {retry}: {message}");
    }
    let r = h.get("/readyz").await;
    assert_eq!(r.status, 200, "out of quota is not down: {}", r.text());
    assert_eq!(r.json()["workers_ready"], 0);
    assert_eq!(r.json()["workers_out_of_quota"], 2);
    assert!(r.json()["quota_resets_at"].as_u64().is_some());
    h.stop().await;
    model.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sharing_a_codex_home_share_its_quota() {
    let _serial = SERIAL.lock().await;
    let h = Harness::start_with(&[("WORKER_POOL_SIZE", "2")]).await;
    wait_workers(&h, "all ready", all_ready).await;
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("[[quota 60]] q", false),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    // One account behind both: neither takes the next turn.
    let workers = wait_workers(&h, "both out of quota", |w| {
        w.iter().all(|w| !w["quota_resets_at"].is_null())
    })
    .await;
    assert_eq!(workers[0]["quota_resets_at"], workers[1]["quota_resets_at"]);
    let r = h
        .post("/v1/chat/completions", &Harness::chat("next", false))
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "insufficient_quota");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_its_login_is_not_ready_says_what_to_run_and_starts_once_logged_in() {
    let _serial = SERIAL.lock().await;
    let model = codex_offline_model::OfflineModel::start(0).await.unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-pool-login-{:016x}", rand::random::<u64>()));
    let homes = pool_homes(&dir, &model, 2, Some(1));
    let h = Harness::start_with(&[
        ("WORKER_POOL_SIZE", "2"),
        ("WORKER_CODEX_HOMES", &homes_env(&homes)),
    ])
    .await;
    let command = format!("CODEX_HOME={} codex login", homes[1].display());

    let workers = wait_workers(&h, "worker 1 waiting for a login", |w| {
        w[0]["ready"] == true && w[1]["phase"] == "login_required"
    })
    .await;
    assert_eq!(workers[1]["ready"], false, "{workers:#?}");
    assert_eq!(workers[1]["login"]["requires_openai_auth"], true);
    assert!(workers[1]["login"]["account"].is_null());
    let action = workers[1]["action"].as_str().unwrap();
    assert!(action.contains(&command), "{action}");
    assert_eq!(workers[0]["login"]["requires_openai_auth"], false);
    assert!(workers[0]["action"].is_null(), "{workers:#?}");

    assert_one_serves_while_waiting_for_login(&h, 1, &command).await;
    // Every turn goes to the worker that can run it.
    for i in 0..3 {
        let r = h
            .post(
                "/v1/chat/completions",
                &Harness::chat(&format!("in {i}"), false),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let workers = h.get("/admin/workers").await.json()["workers"].clone();
    assert_eq!(workers[0]["turns_started"], 3, "{workers:#?}");
    assert_eq!(workers[1]["turns_started"], 0, "{workers:#?}");

    // The operator runs the command the gateway showed; the worker restarts
    // by itself and is ready with the new login.
    let mut login = std::process::Command::new(support::codex_bin())
        .args(["login", "--with-api-key"])
        .env("CODEX_HOME", &homes[1])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    login
        .stdin
        .take()
        .unwrap()
        .write_all(b"sk-offline-login\n")
        .unwrap();
    assert!(login.wait().unwrap().success());
    let workers = wait_workers(&h, "worker 1 logged in", all_ready).await;
    assert_eq!(workers[1]["login"]["account"], "apiKey", "{workers:#?}");
    assert_eq!(h.get("/readyz").await.json()["workers_ready"], 2);
    h.stop().await;
    model.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_worker_without_its_login_makes_the_gateway_unready_with_the_command_to_run() {
    let _serial = SERIAL.lock().await;
    let model = codex_offline_model::OfflineModel::start(0).await.unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-pool-login1-{:016x}", rand::random::<u64>()));
    let homes = pool_homes(&dir, &model, 1, Some(0));
    let h = Harness::start_unready(
        &[("WORKER_CODEX_HOMES", &homes_env(&homes))],
        &codex_offline_model::HomeOptions::default(),
    )
    .await;
    let command = format!("CODEX_HOME={} codex login", homes[0].display());
    wait_workers(&h, "waiting for a login", |w| {
        w[0]["phase"] == "login_required"
    })
    .await;
    let r = h.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.text());
    let reason = r.json()["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains(&command), "{reason}");
    let r = h
        .post("/v1/chat/completions", &Harness::chat("hello", false))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "worker_login_required");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&command),
        "{}",
        r.text()
    );
    h.stop().await;
    model.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_refused_mid_run_takes_its_worker_out_the_request_is_served_by_another_and_a_new_login_brings_it_back(
) {
    let _serial = SERIAL.lock().await;
    let model = codex_offline_model::OfflineModel::start(0).await.unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-pool-expired-{:016x}", rand::random::<u64>()));
    let homes = login_homes(&dir, &model, 2);
    let h = Harness::start_with(&[
        ("WORKER_POOL_SIZE", "2"),
        ("WORKER_CODEX_HOMES", &homes_env(&homes)),
        ("PROXY_ENABLE_METRICS", "true"),
    ])
    .await;
    let workers = wait_workers(&h, "all ready", all_ready).await;
    assert_eq!(workers[0]["login"]["account"], "apiKey", "{workers:#?}");
    let r = h
        .post("/v1/chat/completions", &Harness::chat("before", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(model.requests_with_key("sk-login-0"), 1);

    // Worker 0's login is revoked while it runs: the provider answers its
    // key 401. The next request goes to worker 0 (idle pool: the lowest
    // index), fails there before any output, and is served by worker 1.
    model.revoke("sk-login-0");
    let r = h
        .post("/v1/chat/completions", &Harness::chat("during", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "ECHO: during",
        "{}",
        r.text()
    );
    assert_eq!(
        model.requests_with_key("sk-login-0"),
        2,
        "tried on worker 0"
    );
    assert_eq!(
        model.requests_with_key("sk-login-1"),
        1,
        "served by worker 1"
    );

    // Worker 0 is reported as waiting for a login, with the command to run.
    let command = format!("CODEX_HOME={} codex login", homes[0].display());
    let workers = wait_workers(&h, "worker 0 waiting for a login", |w| {
        w[0]["phase"] == "login_required" && w[1]["ready"] == true
    })
    .await;
    assert_eq!(workers[0]["ready"], false, "{workers:#?}");
    let action = workers[0]["action"].as_str().unwrap();
    assert!(action.contains(&command), "{action}");
    assert!(action.contains("login rejected"), "{action}");
    assert!(workers[1]["action"].is_null(), "{workers:#?}");
    assert_one_serves_while_waiting_for_login(&h, 0, &command).await;
    assert_eq!(
        metric(&h, "codex_gateway_worker_login_required{worker=\"0\"}").await,
        1.0
    );
    assert_eq!(
        metric(&h, "codex_gateway_worker_login_required{worker=\"1\"}").await,
        0.0
    );
    assert_eq!(
        metric(&h, "codex_gateway_turn_retries_total{reason=\"login\"}").await,
        1.0
    );

    // Later requests go to the healthy worker only, streamed or not.
    for i in 0..4 {
        let r = h
            .post(
                "/v1/chat/completions",
                &Harness::chat(&format!("after {i}"), i % 2 == 0),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!r.text().contains("\"error\""), "{}", r.text());
    }
    assert_eq!(model.requests_with_key("sk-login-0"), 2);
    assert_eq!(model.requests_with_key("sk-login-1"), 5);

    // The operator logs worker 0 in again, with a new key: the gateway
    // notices the saved login, restarts the worker, and it serves again.
    codex_login(&homes[0], "sk-login-0-new");
    let workers = wait_workers(&h, "worker 0 logged in again", all_ready).await;
    assert!(workers[0]["restarts"].as_u64() >= Some(1), "{workers:#?}");
    assert_eq!(h.get("/readyz").await.json()["workers_ready"], 2);
    let r = h
        .post("/v1/chat/completions", &Harness::chat("back", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        model.requests_with_key("sk-login-0-new"),
        1,
        "worker 0 again"
    );
    h.stop().await;
    model.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_worker_whose_key_is_refused_answers_503_worker_login_required_until_restarted() {
    let _serial = SERIAL.lock().await;
    // The harness's provider takes its key from `env_key`: no login to run.
    let h = Harness::start().await;
    for stream in [false, true] {
        let r = h
            .post(
                "/v1/chat/completions",
                &Harness::chat("[[unauthorized]] hi", stream),
            )
            .await;
        assert_eq!(r.status, 503, "{}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["code"], "worker_login_required", "{e}");
        assert_eq!(e["error"]["type"], "service_unavailable", "{e}");
        assert_eq!(r.headers["x-should-retry"], "false");
        // Nothing of the provider's answer (its URL) reaches the client.
        let message = e["error"]["message"].as_str().unwrap();
        assert!(!message.contains("127.0.0.1"), "{message}");
    }
    // Only the first reached the model: the worker was out after it.
    assert_eq!(h.model.requests().len(), 1);
    let workers = wait_workers(&h, "waiting for a good key", |w| {
        w[0]["phase"] == "login_required"
    })
    .await;
    let action = workers[0]["action"].as_str().unwrap();
    assert!(action.contains("env_key"), "{action}");
    assert!(action.contains("POST /admin/workers/restart"), "{action}");
    let r = h.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("credentials rejected"),
        "{}",
        r.text()
    );

    // The key is good again (the trigger was one request's): the operator
    // restarts the worker and it serves.
    let r = h
        .send(h.post_request("/admin/workers/restart", &json!({})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_workers(&h, "ready again", all_ready).await;
    let r = h
        .post("/v1/chat/completions", &Harness::chat("hello", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    h.stop().await;
}
