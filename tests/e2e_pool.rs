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
    // frame, the other four finish their answers.
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
