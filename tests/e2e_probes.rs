//! The probes as an orchestrator sees them, through the worker's three bad
//! days: it crashes, it starts slowly, it never answers the handshake. The
//! real Codex CLI and the offline model; the slow and the silent worker are
//! shell wrappers around it (`sleep` before `exec`, or `exec sleep`), so
//! the gateway's own pre-start questions to codex still get real answers.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use codex_completions_api::worker::WorkerPhase;
use codex_offline_model::HomeOptions;
use serde_json::Value;
use support::Harness;

/// A CODEX_BIN that runs `app_server` for `codex app-server` and the real
/// codex for everything else (`debug models`, `mcp list`).
fn wrapper(name: &str, app_server: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("probe-{name}-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("codex");
    let real = support::codex_bin();
    let script = format!(
        "#!/bin/sh\nREAL='{}'\nif [ \"$1\" = app-server ]; then\n{app_server}\nfi\nexec \"$REAL\" \"$@\"\n",
        real.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

async fn readyz(h: &Harness) -> (u16, Value) {
    let r = h.get("/readyz").await;
    (r.status.as_u16(), r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_worker_makes_readiness_false_within_a_second_then_recovers() {
    let h = Harness::start().await;
    assert_eq!(readyz(&h).await.0, 200);
    let pid = h
        .handles
        .worker
        .status()
        .pid
        .expect("a ready worker has a pid");
    let killed = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let mut not_ready = None;
    while killed.elapsed() < Duration::from_secs(5) {
        let (status, body) = readyz(&h).await;
        if status == 503 {
            not_ready = Some((killed.elapsed(), body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (after, body) = not_ready.expect("readiness goes false after the crash");
    assert!(
        after < Duration::from_secs(1),
        "readiness false {after:?} after the crash"
    );
    assert_eq!(body["status"], "not_ready", "{body}");
    // Liveness stays true: the process is fine, the orchestrator must not kill it.
    assert_eq!(h.get("/healthz").await.status, 200);

    tokio::time::timeout(Duration::from_secs(30), h.handles.worker.wait_ready())
        .await
        .expect("back within 30 s")
        .expect("ready again");
    assert_eq!(readyz(&h).await.0, 200);
    assert_ne!(h.handles.worker.status().pid, Some(pid), "a new worker");
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("after the crash", false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_start_is_not_ready_but_alive_until_the_worker_answers() {
    let slow = wrapper("slow", "sleep 2");
    let h = Harness::start_unready(
        &[("CODEX_BIN", slow.to_str().unwrap())],
        &HomeOptions::default(),
    )
    .await;
    let (status, body) = readyz(&h).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("starting") || r.contains("handshaking")),
        "{body}"
    );
    assert_eq!(h.get("/healthz").await.status, 200, "alive while starting");
    // An API request meanwhile is a quick 503 with Retry-After, not a hang.
    let r = h
        .post("/v1/chat/completions", &Harness::chat("too early", false))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        r.json()["error"]["code"],
        "worker_not_ready",
        "{}",
        r.text()
    );

    tokio::time::timeout(Duration::from_secs(30), h.handles.worker.wait_ready())
        .await
        .expect("ready within 30 s")
        .expect("ready");
    assert_eq!(readyz(&h).await.0, 200);
    assert_eq!(
        h.handles.worker.status().starts,
        1,
        "no restart for a slow start"
    );
    let r = h
        .post("/v1/chat/completions", &Harness::chat("now", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_answers_the_handshake_is_stopped_and_readiness_says_why() {
    let silent = wrapper("silent", "exec sleep 600");
    let h = Harness::start_unready(
        &[
            ("CODEX_BIN", silent.to_str().unwrap()),
            // Generous: the same limit bounds the lockdown's `codex debug
            // models` (the real CLI, run before the worker), which took over
            // 300 ms on a loaded machine and failed the start for that reason
            // instead of the silent `initialize` this test is about.
            ("WORKER_STARTUP_TIMEOUT_MS", "2000"),
            ("WORKER_HANDSHAKE_TIMEOUT_MS", "3000"),
            ("WORKER_SHUTDOWN_GRACE_MS", "100"),
            ("WORKER_RESTART_MAX", "2"),
            ("WORKER_BACKOFF_INITIAL_MS", "10"),
            ("WORKER_BACKOFF_MAX_MS", "20"),
        ],
        &HomeOptions::default(),
    )
    .await;
    let mut worker = h.handles.worker.clone();
    let mut pids = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let s = worker.status();
            if let Some(pid) = s.pid {
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
            if s.phase == WorkerPhase::Stopped {
                break;
            }
            worker.changed().await;
        }
    })
    .await
    .expect("the gateway gives up on a silent worker");
    let (status, body) = readyz(&h).await;
    assert_eq!(status, 503);
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("gave up after 2") && reason.contains("initialize"),
        "{body}"
    );
    assert_eq!(h.get("/healthz").await.status, 200);
    // Every silent worker was stopped, not left behind.
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in pids {
        assert!(!alive(pid), "worker {pid} still runs");
    }
    h.stop().await;
}
