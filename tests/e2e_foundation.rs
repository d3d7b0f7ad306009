//! Foundation, end to end: the real gateway, the real pinned Codex CLI, the
//! offline model. Handshake, models, a first chat completion (streamed and
//! not), safety defaults, worker restarts, graceful shutdown, bad input.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::{read_all, read_until, sse_data, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_models_and_probes() {
    let h = Harness::start().await;
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let health = h.get("/healthz").await.json();
    assert_eq!(health["worker"]["phase"], "ready");
    assert!(health["worker"]["pid"].as_u64().unwrap() > 0);

    let models = h.get("/v1/models").await;
    assert_eq!(models.status, 200);
    let models = models.json();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"codex-offline"), "{ids:?}");
    assert!(ids.contains(&"codex-offline-high"), "{ids:?}");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(
        h.get("/v1/models/codex-offline").await.json()["id"],
        "codex-offline"
    );
    assert_eq!(h.get("/v1/models/nope").await.status, 404);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_non_streamed() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("Hello gateway", false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/json");
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "codex-offline");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "ECHO: Hello gateway");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_streamed() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("Stream me please", true),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let data = r.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let id = &chunks[0]["id"];
    assert!(chunks
        .iter()
        .all(|c| &c["id"] == id && c["object"] == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "ECHO: Stream me please");
    let content_chunks = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(content_chunks >= 2, "content arrives as several deltas");
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["choices"][0]["finish_reason"], "stop");
    assert!(
        std::ptr::eq(finishes[0], chunks.last().unwrap()),
        "nothing after the finish chunk"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_is_offered_only_the_clients_tools() {
    let h = Harness::start().await;
    let r = h
        .post("/v1/chat/completions", &Harness::chat("[[tools]]", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // What codex actually sent to the model, as recorded by the offline model.
    let sent = h.model.requests();
    let offered: Vec<String> = sent.last().unwrap()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    for forbidden in [
        "exec_command",
        "write_stdin",
        "shell",
        "local_shell",
        "view_image",
        "apply_patch",
        "web_search",
        "spawn_agent",
    ] {
        assert!(
            !offered.iter().any(|t| t == forbidden),
            "{forbidden} offered: {offered:?}"
        );
    }
    // `request_user_input` cannot be switched off in the pinned CLI; the
    // gateway answers it itself (next test). Nothing else is offered.
    assert!(
        offered.iter().all(|t| t == "request_user_input"),
        "{offered:?}"
    );
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        format!("TOOLS: {}", offered.join(","))
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_http_client_can_make_the_model_run_a_command_or_read_a_file() {
    let h = Harness::start().await;
    let secret = h.dir.join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-4242").unwrap();
    let marker = h.dir.join("pwned");
    let cmd = format!("cat {} && touch {}", secret.display(), marker.display());
    for tool in ["exec_command", "shell", "local_shell"] {
        let args = json!({"cmd": cmd, "command": ["bash", "-lc", cmd]});
        let prompt = format!("[[call {tool} {args}]]");
        let r = h
            .post("/v1/chat/completions", &Harness::chat(&prompt, false))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let content = r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(content.contains("unsupported call"), "{tool}: {content}");
    }
    assert!(!marker.exists(), "a command ran on the host");
    for request in h.model.requests() {
        assert!(
            !request.to_string().contains("TOP-SECRET-4242"),
            "file contents reached the model"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_for_a_human_is_answered_so_the_turn_finishes() {
    let h = Harness::start().await;
    let args = json!({"questions": [{"id": "q1", "header": "Pick", "question": "Which?", "options": [{"label": "a", "description": "a"}]}]});
    let prompt = format!("[[call request_user_input {args}]]");
    let started = Instant::now();
    let r = h
        .post("/v1/chat/completions", &Harness::chat(&prompt, false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let content = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(content.starts_with("TOOL RESULT"), "{content}");
    assert!(started.elapsed() < Duration::from_secs(20));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_noticed_restarted_and_serves_again() {
    let h = Harness::start_with(&[("WORKER_HEALTHY_RESET_MS", "1000")]).await;
    let pid = h.handles.worker.status().pid.expect("pid");
    let killed_at = Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    // Readiness turns false within 5 s.
    loop {
        let r = h.get("/readyz").await;
        if r.status == 503 {
            assert!(r.json()["reason"].as_str().unwrap().len() > 3);
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(5),
            "still ready 5 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(killed_at.elapsed() < Duration::from_secs(5));
    // A request meanwhile gets a clean 503 or is served by the new worker.
    let during = h
        .post("/v1/chat/completions", &Harness::chat("during", false))
        .await;
    assert!(
        during.status == 503 || during.status == 200,
        "{} {}",
        during.status,
        during.text()
    );
    if during.status == 503 {
        assert!(during.headers.contains_key("retry-after"));
        assert_eq!(during.json()["error"]["code"], "worker_not_ready");
    }
    tokio::time::timeout(Duration::from_secs(20), h.handles.worker.wait_ready())
        .await
        .unwrap()
        .unwrap();
    let status = h.handles.worker.status();
    assert_ne!(status.pid, Some(pid));
    assert_eq!(status.starts, 2);
    assert_eq!(h.get("/readyz").await.status, 200);
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("after restart", false),
        )
        .await;
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "ECHO: after restart"
    );
    // Ready for WORKER_HEALTHY_RESET_MS: the failure count is cleared, and
    // readiness says so.
    let mut failures = h.get("/readyz").await.json()["worker"]["consecutive_failures"].clone();
    let since = Instant::now();
    while failures != 0 && since.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        failures = h.get("/readyz").await.json()["worker"]["consecutive_failures"].clone();
    }
    assert_eq!(failures, 0, "the count is cleared after a healthy period");
    h.stop().await;
}

/// A worker killed again and again (each time after it had served for a few
/// seconds) comes back at once every time, with the production backoff, and
/// its crashes never count towards giving up: it had started fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_again_and_again_comes_back_at_once_every_time() {
    let h = Harness::start_with(&[
        ("WORKER_BACKOFF_INITIAL_MS", "500"),
        ("WORKER_BACKOFF_MAX_MS", "5000"),
        ("WORKER_RESTART_MAX", "3"),
    ])
    .await;
    let mut recoveries = Vec::new();
    for round in 1..=4 {
        // Serve for a while first: longer than the backoff of the 4th
        // failure in a row (≤ 4 s), shorter than WORKER_HEALTHY_RESET_MS.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let pid = h.handles.worker.status().pid.expect("pid");
        let killed_at = Instant::now();
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        loop {
            let r = h.get("/readyz").await;
            if r.status == 200 && r.json()["worker"]["pid"] != json!(pid) {
                break;
            }
            assert_ne!(
                r.json()["worker"]["phase"],
                "stopped",
                "gave up after kill {round}: {}",
                r.text()
            );
            assert!(
                killed_at.elapsed() < Duration::from_secs(10),
                "not ready 10 s after kill {round}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        recoveries.push(killed_at.elapsed());
    }
    println!("kill -9 → /readyz 200: {recoveries:?}");
    for (i, d) in recoveries.iter().enumerate() {
        assert!(
            *d < Duration::from_secs(2),
            "kill {} took {d:?} to recover",
            i + 1
        );
    }
    let r = h
        .post("/v1/chat/completions", &Harness::chat("still here", false))
        .await;
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "ECHO: still here"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_flight_when_the_worker_dies_ends_with_an_error_frame() {
    let h = Harness::start().await;
    let res = h
        .open(h.post_request(
            "/v1/chat/completions",
            &Harness::chat("[[slow 200]] one two three four five six", true),
        ))
        .await;
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    read_until(&mut body, "ECHO").await;
    let pid = h.handles.worker.status().pid.unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let rest = read_all(&mut body).await;
    let data = sse_data(&rest);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{rest}");
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "worker_gone", "{rest}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_stream_finish() {
    let mut h = Harness::start().await;
    let res = h
        .open(h.post_request(
            "/v1/chat/completions",
            &Harness::chat("[[slow 150]] alpha beta gamma delta", true),
        ))
        .await;
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    read_until(&mut body, "ECHO").await;
    h.begin_shutdown();
    // New connections are refused once the listener is gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(h.addr).await.is_err(),
        "still accepting during the drain"
    );
    let rest = read_all(&mut body).await;
    let data = sse_data(&rest);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(text.ends_with("delta"), "the stream was cut: {rest}");
    assert!(rest.contains("\"finish_reason\":\"stop\""));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_openai_shaped_errors() {
    let h = Harness::start_with(&[("PROXY_MAX_BODY_BYTES", "4096")]).await;
    let check = |r: &support::Reply, status: u16, param: Option<&str>| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.headers["content-type"], "application/json");
        let e = r.json();
        assert!(e["error"]["message"].as_str().unwrap().len() > 5, "{e}");
        assert!(e["error"]["type"].is_string(), "{e}");
        assert!(
            e["error"].get("code").is_some() && e["error"].get("param").is_some(),
            "{e}"
        );
        if let Some(p) = param {
            assert_eq!(e["error"]["param"], p, "{e}");
        }
        e
    };
    let raw = |body: &'static str| {
        Request::post(h.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    check(&h.send(raw("{not json")).await, 400, Some("body"));
    check(&h.send(raw("")).await, 400, Some("body"));
    check(&h.send(raw("[]")).await, 400, None);
    check(
        &h.post("/v1/chat/completions", &json!({"messages": []}))
            .await,
        400,
        Some("model"),
    );
    check(
        &h.post(
            "/v1/chat/completions",
            &json!({"model": "codex-offline", "messages": "hi"}),
        )
        .await,
        400,
        Some("messages"),
    );
    let mut bad = Harness::chat("x", false);
    bad["temperature"] = json!("warm");
    check(
        &h.post("/v1/chat/completions", &bad).await,
        400,
        Some("temperature"),
    );
    let mut unknown = Harness::chat("x", false);
    unknown["model"] = json!("gpt-nonexistent");
    let e = check(
        &h.post("/v1/chat/completions", &unknown).await,
        404,
        Some("model"),
    );
    assert_eq!(e["error"]["code"], "model_not_found");
    let big = Harness::chat(&"x".repeat(10_000), false);
    let e = check(&h.post("/v1/chat/completions", &big).await, 413, None);
    assert_eq!(e["error"]["code"], "request_too_large");
    check(&h.get("/v1/nothing-here").await, 404, None);
    check(&h.get("/v1/chat/completions").await, 405, None);
    // The server is still healthy after all of that.
    let ok = h
        .post("/v1/chat/completions", &Harness::chat("still fine", false))
        .await;
    assert_eq!(
        ok.json()["choices"][0]["message"]["content"],
        "ECHO: still fine"
    );
    h.stop().await;
}
