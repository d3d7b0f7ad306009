//! The chaos suite: the gateway attacked with bad input and misbehaving
//! clients, against the real Codex CLI and the offline model. Effects are
//! counted where they happen (at the model, in the worker), not in the
//! gateway's own gauges.
//!
//! `cargo test --test chaos` runs the short version (CI); `scripts/chaos`
//! runs the full one (`CHAOS_SCALE=full`) and prints the figures that
//! `docs/security.md` quotes.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use support::Harness;

const KEY: &str = "sk-chaos-test";

fn full() -> bool {
    std::env::var("CHAOS_SCALE").is_ok_and(|v| v == "full")
}

/// A deterministic pseudo-random sequence (no external RNG needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// One bad request: what it is, and the request.
struct Case {
    what: String,
    req: Request<Full<Bytes>>,
}

fn post(h: &Harness, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(h.url(path))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(body.into()))
        .unwrap()
}

fn with(base: &Value, key: &str, value: Value) -> Value {
    let mut v = base.clone();
    v[key] = value;
    v
}

fn bad_cases(h: &Harness) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |what: String, req| cases.push(Case { what, req });
    let chat = json!({"model": codex_offline_model::MODEL_ID, "messages": [{"role": "user", "content": "hi"}]});
    let resp = json!({"model": codex_offline_model::MODEL_ID, "input": "hi"});
    let endpoints = [("/v1/chat/completions", &chat), ("/v1/responses", &resp)];

    // Bodies that are not a JSON object, or not JSON at all.
    let raw: Vec<Bytes> = vec![
        Bytes::new(),
        Bytes::from_static(b"{"),
        Bytes::from_static(b"[1]"),
        Bytes::from_static(b"null"),
        Bytes::from_static(b"42"),
        Bytes::from_static(b"\"text\""),
        Bytes::from_static(b"{\"model\":"),
        Bytes::from_static(b"\xff\xfe{}"),
        Bytes::from_static(b"{} trailing"),
        Bytes::from("[".repeat(10_000)),
        Bytes::from_static(b"{\"model\": 1e999}"),
        Bytes::from_static(b"{}"),
    ];
    for (path, _) in endpoints {
        for body in &raw {
            add(
                format!(
                    "{path} body {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(20)])
                ),
                post(h, path, body.clone()),
            );
        }
    }

    // Wrong types and out-of-range values, one parameter at a time.
    let chat_params: Vec<(&str, Vec<Value>)> = vec![
        ("model", vec![json!(1), json!(""), json!([]), json!({})]),
        (
            "messages",
            vec![json!("hi"), json!([]), json!({}), json!([1]), json!([null])],
        ),
        ("stream", vec![json!("yes"), json!(1), json!({})]),
        (
            "n",
            vec![json!(0), json!(9), json!(-1), json!(1.5), json!("2")],
        ),
        (
            "max_tokens",
            vec![json!(0), json!(-5), json!("10"), json!(1.5)],
        ),
        (
            "max_completion_tokens",
            vec![json!(0), json!(-1), json!([])],
        ),
        (
            "stop",
            vec![
                json!(7),
                json!([1]),
                json!(["a", "b", "c", "d", "e"]),
                json!({}),
            ],
        ),
        ("temperature", vec![json!(3), json!(-0.1), json!("hot")]),
        ("top_p", vec![json!(1.5), json!(-1), json!("x")]),
        ("presence_penalty", vec![json!(3), json!("x")]),
        ("frequency_penalty", vec![json!(-3), json!([])]),
        ("seed", vec![json!(1.5), json!("s")]),
        ("user", vec![json!(1), json!({})]),
        ("reasoning_effort", vec![json!("max"), json!(3)]),
        (
            "response_format",
            vec![
                json!({"type": "xml"}),
                json!({"type": "json_schema"}),
                json!("json"),
            ],
        ),
        (
            "tools",
            vec![
                json!({}),
                json!([{"type": "retrieval"}]),
                json!([{"type": "function"}]),
                json!([{"type": "function", "function": {"name": "bad name"}}]),
                json!([{"type": "function", "function": {"name": "f", "parameters": 3}}]),
                json!([{"type": "function", "function": {"name": "exec_command"}}]),
            ],
        ),
        (
            "tool_choice",
            vec![
                json!("sometimes"),
                json!(3),
                json!({"type": "function", "function": {"name": "nope"}}),
                json!("required"),
            ],
        ),
        ("parallel_tool_calls", vec![json!("no"), json!(0)]),
        (
            "stream_options",
            vec![json!("x"), json!({"include_usage": 1})],
        ),
        ("functions", vec![json!({}), json!([{"name": ""}])]),
    ];
    for (param, values) in &chat_params {
        for v in values {
            add(
                format!("chat {param}={v}"),
                post(
                    h,
                    "/v1/chat/completions",
                    with(&chat, param, v.clone()).to_string(),
                ),
            );
        }
    }
    let messages = vec![
        json!([{"role": "wizard", "content": "x"}]),
        json!([{"content": "x"}]),
        json!([{"role": "user"}]),
        json!([{"role": "user", "content": 5}]),
        json!([{"role": "user", "content": [{"type": "audio"}]}]),
        json!([{"role": "user", "content": [{"text": "no type"}]}]),
        json!([{"role": "user", "content": [{"type": "text"}]}]),
        json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]),
        json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]),
        json!([{"role": "user", "content": [{"type": "image_url"}]}]),
        json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]),
        json!([{"role": "tool", "content": "x"}]),
        json!([{"role": "assistant", "content": null, "tool_calls": [{"type": "function"}]}]),
        json!([{"role": "assistant", "content": null, "tool_calls": "x"}]),
        json!([{"role": "assistant", "content": null, "function_call": {}}]),
    ];
    for m in messages {
        add(
            format!("chat messages={m}"),
            post(
                h,
                "/v1/chat/completions",
                with(&chat, "messages", m).to_string(),
            ),
        );
    }
    let resp_params: Vec<(&str, Vec<Value>)> = vec![
        (
            "input",
            vec![
                json!(5),
                json!([]),
                json!(null),
                json!({}),
                json!([5]),
                json!([{"type": "message"}]),
                json!([{"role": "user"}]),
                json!([{"role": "wizard", "content": "x"}]),
                json!([{"type": "function_call"}]),
                json!([{"type": "function_call_output"}]),
                json!([{"type": "reasoning"}]),
                json!([{"role": "user", "content": [{"type": "input_audio"}]}]),
                json!([{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]),
            ],
        ),
        ("instructions", vec![json!(5), json!([])]),
        ("max_output_tokens", vec![json!(0), json!(-1), json!("9")]),
        (
            "reasoning",
            vec![json!({"effort": "max"}), json!({"effort": 5})],
        ),
        (
            "text",
            vec![
                json!({"format": {"type": "xml"}}),
                json!({"format": {"type": "json_schema"}}),
            ],
        ),
        (
            "tools",
            vec![
                json!({}),
                json!([{"type": "web_search"}]),
                json!([{"type": "function", "name": "bad name"}]),
                json!([{"type": "function", "name": "apply_patch"}]),
            ],
        ),
        (
            "tool_choice",
            vec![
                json!("sometimes"),
                json!({"type": "function", "name": "nope"}),
            ],
        ),
        ("previous_response_id", vec![json!("resp_1")]),
        ("stream", vec![json!("yes")]),
        ("temperature", vec![json!(9)]),
        ("model", vec![json!(null), json!(3)]),
    ];
    for (param, values) in &resp_params {
        for v in values {
            add(
                format!("responses {param}={v}"),
                post(
                    h,
                    "/v1/responses",
                    with(&resp, param, v.clone()).to_string(),
                ),
            );
        }
    }
    // Unknown models, streamed or not.
    for (path, base) in endpoints {
        for stream in [false, true] {
            let v = with(
                &with(base, "model", json!("no-such-model")),
                "stream",
                json!(stream),
            );
            add(
                format!("{path} unknown model stream={stream}"),
                post(h, path, v.to_string()),
            );
        }
    }
    // Oversized bodies (the harness caps bodies at 64 KiB).
    let big = with(
        &chat,
        "messages",
        json!([{"role": "user", "content": "x".repeat(100_000)}]),
    );
    add(
        "oversized chat body".into(),
        post(h, "/v1/chat/completions", big.to_string()),
    );
    let big = with(&resp, "input", json!("y".repeat(100_000)));
    add(
        "oversized responses body".into(),
        post(h, "/v1/responses", big.to_string()),
    );
    // Keys.
    for auth in [
        None,
        Some("Bearer sk-wrong"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
        Some("sk-chaos-test"),
    ] {
        let mut b =
            Request::post(h.url("/v1/chat/completions")).header("content-type", "application/json");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        add(
            format!("auth {auth:?}"),
            b.body(Full::new(Bytes::from(chat.to_string()))).unwrap(),
        );
    }
    // Methods and routes.
    for (method, path) in [
        ("GET", "/v1/chat/completions"),
        ("PUT", "/v1/chat/completions"),
        ("DELETE", "/v1/responses"),
        ("POST", "/v1/models"),
        ("GET", "/v1/nope"),
        ("POST", "/v2/chat/completions"),
        ("GET", "/v1/models/no-such-model"),
        ("PATCH", "/healthz"),
    ] {
        add(
            format!("{method} {path}"),
            Request::builder()
                .method(method)
                .uri(h.url(path))
                .header("authorization", format!("Bearer {KEY}"))
                .body(Full::default())
                .unwrap(),
        );
    }
    // A bad output mode header.
    for mode in ["yaml", "xml"] {
        let mut req = post(h, "/v1/chat/completions", chat.to_string());
        req.headers_mut()
            .insert("x-proxy-output-mode", mode.parse().unwrap());
        add(format!("output mode {mode:?}"), req);
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_always_gets_a_4xx_envelope() {
    let h = Harness::start_with(&[("PROXY_API_KEY", KEY), ("PROXY_MAX_BODY_BYTES", "65536")]).await;
    let cases = bad_cases(&h);
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let total = cases.len();
    let mut failures = Vec::new();
    for case in cases {
        let reply = match tokio::time::timeout(Duration::from_secs(10), h.try_send(case.req)).await
        {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                failures.push(format!("{}: {e}", case.what));
                continue;
            }
            Err(_) => {
                failures.push(format!("{}: no answer within 10 s", case.what));
                continue;
            }
        };
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let error = &body["error"];
        let ok = reply.status.is_client_error()
            && error["message"].as_str().is_some_and(|m| !m.is_empty())
            && error["type"].is_string()
            && error.get("param").is_some()
            && error.get("code").is_some()
            && reply.headers.contains_key("x-request-id");
        if !ok {
            failures.push(format!(
                "{}: {} {}",
                case.what,
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
    }
    println!(
        "bad inputs: {total} cases, {} not answered with a 4xx envelope",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    // Nothing reached the model.
    assert!(h.model.requests().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_disconnect_leave_no_turn_running_at_the_model() {
    let limit = 8;
    let h = Harness::start_with(&[
        ("WORKER_MAX_CONCURRENCY", "8"),
        ("WORKER_QUEUE_MAX", "1000"),
        ("WORKER_QUEUE_TIMEOUT_MS", "60000"),
    ])
    .await;
    let n: u64 = if full() { 1000 } else { 150 };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let mut rng = Lcg(7);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        // Each model stream would take about 4.8 s (12 deltas, 400 ms apart);
        // every client leaves within 1.5 s: before the thread exists, while
        // it starts, or mid-stream.
        let delay = Duration::from_millis(rng.next(1500));
        let req = h.post_request(
            "/v1/chat/completions",
            &Harness::chat(
                &format!("[[slow 200]] storm {i} a b c d e f g h"),
                i % 2 == 0,
            ),
        );
        let client = client.clone();
        tasks.spawn(async move {
            let _ = tokio::time::timeout(delay, async {
                if let Ok(res) = client.request(req).await {
                    let _ = res.into_body().collect().await;
                }
            })
            .await;
        });
        while tasks.len() >= 16 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    let storm = started.elapsed();
    // Let the last interrupts land.
    let settle = Instant::now();
    while h.model.open_streams() > 0 && settle.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = h.model.requests().len();
    let dropped = h.model.dropped_streams();
    let completed = requests.saturating_sub(dropped);
    let peak = h.model.peak_open_streams();
    println!(
        "disconnect storm: {n} clients gone within 1.5 s in {storm:?}; model saw {requests} streams, \
         {dropped} hung up, {completed} ran to the end for nobody, {} still open after {:?}; \
         peak concurrent model streams {peak} (limit {limit})",
        h.model.open_streams(),
        settle.elapsed()
    );
    assert_eq!(h.model.open_streams(), 0, "model streams still running");
    assert_eq!(
        completed, 0,
        "turns ran their full length for clients that were gone"
    );
    assert!(
        peak <= limit,
        "{peak} model streams at once with WORKER_MAX_CONCURRENCY={limit}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_kills_mid_stream_end_every_stream_cleanly_and_recover_fast() {
    let h = Harness::start_with(&[
        // A kill is a failure; many in a row must not exhaust the restarts.
        ("WORKER_RESTART_MAX", "1000"),
        ("WORKER_HEALTHY_RESET_MS", "200"),
        // The shipped backoff, not the harness's quicker one: what operators get.
        ("WORKER_BACKOFF_INITIAL_MS", "500"),
        ("WORKER_BACKOFF_MAX_MS", "5000"),
    ])
    .await;
    let kills = if full() { 100 } else { 5 };
    let mut recoveries = Vec::new();
    for round in 0..kills {
        h.handles.worker.wait_ready().await.expect("ready");
        // Streams mid-body when the worker dies.
        let mut bodies = Vec::new();
        for i in 0..3 {
            let res = h
                .open(h.post_request(
                    "/v1/chat/completions",
                    &Harness::chat(&format!("[[slow 100]] kill {round} {i} a b c d e f"), true),
                ))
                .await;
            assert_eq!(res.status(), 200);
            let mut body = res.into_body();
            support::read_until(&mut body, "ECHO").await;
            bodies.push(body);
        }
        let pid = h.handles.worker.status().pid.expect("pid");
        let killed = Instant::now();
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        for mut body in bodies {
            let rest = support::read_all(&mut body).await;
            let data = support::sse_data(&rest);
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{rest}");
            let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
            assert_eq!(error["error"]["code"], "worker_gone", "{rest}");
        }
        // Readiness back: measured from the kill to the first 200 of /readyz.
        loop {
            if h.get("/readyz").await.status == 200 {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "not ready 30 s after kill {round}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        recoveries.push(killed.elapsed());
    }
    recoveries.sort();
    let median = recoveries[recoveries.len() / 2];
    let max = *recoveries.last().unwrap();
    println!("worker kills: {kills} kills mid-stream (3 streams each, all ended with worker_gone + [DONE]); readiness back after median {median:?}, max {max:?}");
    // And it serves.
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("after the kills", false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A worker that ran restarts at once: the typical kill is back within
    // 1 s. The slowest one is held to a looser bound: its time is mostly
    // the CLI's own start, which on two cores shared with the rest of the
    // suite has taken 1.01 and 1.14 s once each; a restart held back by
    // the backoff (growing to 5 s) still fails both bounds.
    assert!(
        median < Duration::from_secs(1),
        "readiness took {median:?} (median) after a kill"
    );
    assert!(
        max < Duration::from_secs(3),
        "readiness took {max:?} after a kill"
    );
    h.stop().await;
}
