//! The binary and the server as an operator meets them: start-up
//! validation, h2c, and a worker that cannot start.

mod support;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use codex_completions_api::app;
use codex_completions_api::config::{Config, Env};
use codex_completions_api::worker::WorkerPhase;
use http_body_util::{BodyExt, Full};
use support::Harness;

const BIN: &str = env!("CARGO_BIN_EXE_codex-completions-api");

#[test]
fn a_bad_value_stops_start_up_with_one_line_and_exit_code_2() {
    let out = Command::new(BIN)
        .env("PORT", "eleven")
        .env("CODEX_BIN", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("PORT"), "{stderr}");

    // Beyond loopback without a key: refused, naming what to set.
    let out = Command::new(BIN)
        .env("PROXY_HOST", "0.0.0.0")
        .env("PORT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PROXY_API_KEY"));

    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for var in [
        "PORT",
        "PROXY_API_KEY",
        "CODEX_BIN",
        "WORKER_RESTART_MAX",
        "PROXY_OUTPUT_MODE",
    ] {
        assert!(text.contains(var), "--help lacks {var}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served() {
    let h = Harness::start().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let res = client
        .get(h.url("/healthz").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let req = h.post_request("/v1/chat/completions", &Harness::chat("over h2", true));
    let res = client.request(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("\"content\":\" h2\"") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_keeps_failing_stays_down_and_readiness_says_why() {
    let vars = [
        ("CODEX_BIN", "/bin/false"),
        ("WORKER_RESTART_MAX", "3"),
        ("WORKER_BACKOFF_INITIAL_MS", "10"),
        ("WORKER_BACKOFF_MAX_MS", "20"),
    ];
    let config = Config::from_env(&Env::new(move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (handles_tx, handles_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app::run(
        config,
        listener,
        async move {
            let _ = stop_rx.await;
        },
        move |h| {
            let _ = handles_tx.send(h);
        },
    ));
    let handles = handles_rx.await.unwrap();
    let mut worker = handles.worker.clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while worker.status().phase != WorkerPhase::Stopped {
            worker.changed().await;
        }
    })
    .await
    .expect("the worker gives up");
    let status = handles.worker.status();
    assert_eq!(status.starts, 3);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let res = client
        .get(format!("http://{addr}/readyz").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("gave up after 3"),
        "{body}"
    );
    // API requests get a clean 503 with Retry-After, not a hang.
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            Harness::chat("x", false).to_string(),
        )))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn sigusr1_and_sigusr2_switch_maintenance_on_and_off() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .env("PORT", port.to_string())
        // No real worker needed: maintenance answers before the API does.
        .env("CODEX_BIN", "/bin/false")
        .env("WORKER_RESTART_MAX", "1")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |path: &str| support::get_blocking(port, path);
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
    };
    let wait_for = |want: &dyn Fn(&str) -> bool| {
        for _ in 0..100 {
            if let Some((_, body)) = get("/v1/models") {
                if want(&body) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    assert!(
        wait_for(&|b: &str| b.contains("worker_not_ready")),
        "gateway up, worker down"
    );
    signal("-USR1");
    assert!(
        wait_for(&|b: &str| b.contains("\"code\":\"maintenance\"")),
        "SIGUSR1 turns maintenance on"
    );
    assert!(get("/readyz").unwrap().1.contains("maintenance"));
    signal("-USR2");
    assert!(
        wait_for(&|b: &str| b.contains("worker_not_ready")),
        "SIGUSR2 turns it off"
    );
    signal("-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn sighup_replaces_every_worker_of_the_pool_one_at_a_time() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sighup-{:016x}", rand::random::<u64>()));
    let home = dir.join("codex-home");
    // Starting a worker needs no model: the handshake stays inside codex.
    codex_offline_model::write_codex_home(&home, "http://127.0.0.1:9/v1").unwrap();
    let mut child = Command::new(BIN)
        .env("PORT", port.to_string())
        .env("CODEX_BIN", support::codex_bin())
        .env("CODEX_HOME", &home)
        .env("PROXY_STATE_DIR", dir.join("state"))
        .env("WORKER_POOL_SIZE", "2")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let workers = || -> Option<Vec<serde_json::Value>> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(
            s,
            "GET /admin/workers HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let body: serde_json::Value = serde_json::from_str(out.split("\r\n\r\n").nth(1)?).ok()?;
        body["workers"].as_array().cloned()
    };
    let wait_for = |what: &str, want: &dyn Fn(&[serde_json::Value]) -> bool| {
        for _ in 0..600 {
            if workers().is_some_and(|w| want(&w)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("not {what} within 30 s: {:?}", workers());
    };
    let ready = |w: &[serde_json::Value]| w.len() == 2 && w.iter().all(|w| w["ready"] == true);
    wait_for("ready", &ready);
    let pids: Vec<_> = workers()
        .unwrap()
        .iter()
        .map(|w| w["pid"].clone())
        .collect();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    wait_for("replaced", &|w| {
        ready(w)
            && w.iter()
                .all(|w| w["recycles"] == 1 && w["draining"] == false)
    });
    let after = workers().unwrap();
    for (w, old) in after.iter().zip(&pids) {
        assert_ne!(&w["pid"], old, "{after:?}");
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
