//! Chat completions in OpenAI's shapes, end to end through the real CLI:
//! faithful translation, gateway-applied limits, n > 1, provider errors,
//! disconnects.

mod support;

use std::time::{Duration, Instant};

use codex_completions_api::protocol::{ThreadLoadedList, ThreadLoadedListParams};
use serde_json::{json, Value};
use support::{read_until, Harness};

fn content(r: &support::Reply) -> String {
    let v = r.json();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {v}"))
        .to_owned()
}

fn chat(messages: Value) -> Value {
    json!({"model": "codex-offline", "messages": messages})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_model_as_instructions_and_real_history() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/chat/completions",
            &chat(json!([
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "[[instructions]]"}
            ])),
        )
        .await;
    let text = content(&r);
    assert!(
        text.contains("You are terse.") && text.contains("Answer in French."),
        "{text}"
    );

    let r = h
        .post(
            "/v1/chat/completions",
            &chat(json!([
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"},
                {"role": "assistant", "content": "second answer"},
                {"role": "user", "content": "[[history]]"}
            ])),
        )
        .await;
    assert_eq!(
        content(&r),
        "HISTORY: user: first question | assistant: first answer | user: second question | \
         assistant: second answer | user: [[history]]"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_effort_and_output_schema_are_forwarded() {
    let h = Harness::start().await;
    // 1x1 PNG.
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
    let r = h
        .post(
            "/v1/chat/completions",
            &chat(json!([{"role": "user", "content": [
                {"type": "text", "text": "[[images]]"},
                {"type": "image_url", "image_url": {"url": png}}
            ]}])),
        )
        .await;
    assert!(content(&r).starts_with("IMAGES: 1"), "{}", content(&r));
    let r = h
        .post(
            "/v1/chat/completions",
            &chat(json!([{"role": "user", "content": [
                {"type": "text", "text": "[[images]]"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
            ]}])),
        )
        .await;
    // The pinned CLI accepts only inline images (measured: `turn/start` and
    // `thread/inject_items` both refuse remote URLs), and the gateway does not
    // fetch URLs on a client's behalf: a clear 400 naming the part.
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["error"]["param"],
        "messages[0].content[1].image_url.url"
    );

    let mut req = chat(json!([{"role": "user", "content": "[[effort]]"}]));
    req["model"] = json!("codex-offline-high");
    assert_eq!(
        content(&h.post("/v1/chat/completions", &req).await),
        "EFFORT: high"
    );
    let mut req = chat(json!([{"role": "user", "content": "[[effort]]"}]));
    req["reasoning_effort"] = json!("low");
    assert_eq!(
        content(&h.post("/v1/chat/completions", &req).await),
        "EFFORT: low"
    );

    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false});
    let mut req = chat(json!([{"role": "user", "content": "[[format]]"}]));
    req["response_format"] =
        json!({"type": "json_schema", "json_schema": {"name": "r", "schema": schema}});
    let text = content(&h.post("/v1/chat/completions", &req).await);
    assert!(
        text.contains("json_schema") && text.contains("\"ok\""),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sequences_length_and_n_are_applied() {
    let h = Harness::start().await;
    let mut req = Harness::chat("[[words 20]]", false);
    req["stop"] = json!(["w5"]);
    let r = h.post("/v1/chat/completions", &req).await;
    assert_eq!(content(&r), "w1 w2 w3 w4 ");
    assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");

    let mut req = Harness::chat("[[words 50]]", false);
    req["max_tokens"] = json!(3); // ~12 characters
    let r = h.post("/v1/chat/completions", &req).await;
    assert_eq!(content(&r).chars().count(), 12, "{}", content(&r));
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");

    let mut req = Harness::chat("two of us", false);
    req["n"] = json!(2);
    let r = h.post("/v1/chat/completions", &req).await;
    let v = r.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["content"], "ECHO: two of us");
    }

    let mut req = Harness::chat("two streams", true);
    req["n"] = json!(2);
    let r = h.post("/v1/chat/completions", &req).await;
    let chunks: Vec<Value> = r
        .sse_data()
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    for i in 0..2 {
        let mine: Vec<&Value> = chunks
            .iter()
            .filter(|c| c["choices"][0]["index"] == i)
            .collect();
        assert_eq!(mine[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = mine
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "ECHO: two streams");
        assert_eq!(
            mine.iter()
                .filter(|c| !c["choices"][0]["finish_reason"].is_null())
                .count(),
            1
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_map_to_openai_statuses() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("[[error 429]]", false),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("[[error 500]]", false),
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_error");
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("[[error 400]]", false),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_bad_request");
    // A stream the provider breaks off: the SDK sees an error frame, then [DONE].
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("[[break 2]] a b c d e", true),
        )
        .await;
    let data = r.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    let err: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "upstream_error", "{err}");
    // The worker's own credentials are bad: not the client's fault (no
    // 401), and the worker needs a login (last: it takes no turns after).
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("[[error 401]]", false),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "worker_login_required");
    h.stop().await;
}

/// Loaded threads and how many of them are running a turn. Codex keeps an
/// unsubscribed idle thread loaded for about a minute (measured) before
/// unloading it, so "released" means: no active thread, and the gateway holds
/// no subscription.
async fn thread_census(h: &Harness) -> (usize, usize) {
    let (client, _) = h.handles.worker.ready().unwrap();
    // Codex answers -32001 "Server overloaded" while its queue drains after a
    // storm: ask again rather than fail.
    let ids = loop {
        match client
            .call::<ThreadLoadedList>(&ThreadLoadedListParams::default())
            .await
        {
            Ok(list) => break list.data,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut active = 0;
    for id in &ids {
        let v = loop {
            match client.request("thread/read", json!({"threadId": id})).await {
                Ok(v) => break v,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        if v["thread"]["status"]["type"] == "active" {
            active += 1;
        }
    }
    (ids.len(), active)
}

async fn until_released(h: &Harness, within: Duration) -> (Duration, usize) {
    let started = Instant::now();
    loop {
        let (loaded, active) = thread_census(h).await;
        let (client, _) = h.handles.worker.ready().unwrap();
        if active == 0 && client.subscribed_threads() == 0 && client.pending_requests() <= 1 {
            return (started.elapsed(), loaded);
        }
        assert!(
            started.elapsed() < within,
            "{active} active threads, {} subscriptions after {within:?}",
            client.subscribed_threads()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_interrupts_its_turn() {
    let h = Harness::start().await;
    let res = h
        .open(h.post_request(
            "/v1/chat/completions",
            &Harness::chat("[[slow 300]] a b c d e f g h", true),
        ))
        .await;
    let mut body = res.into_body();
    read_until(&mut body, "ECHO").await;
    let dropped_before = h.model.dropped_streams();
    drop(body);
    let started = Instant::now();
    while h.model.dropped_streams() == dropped_before {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the model stream was not cancelled within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    until_released(&h, Duration::from_secs(1)).await;
    // A non-streamed request abandoned while waiting is interrupted too.
    let pending = h.post_request(
        "/v1/chat/completions",
        &Harness::chat("[[slow 300]] x y z w", false),
    );
    let waiting = tokio::spawn({
        let url = h.url("/");
        let _ = url;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        async move { client.request(pending).await }
    });
    // Abort once the turn has reached the model: a fixed pause could abort
    // before codex opened the model's stream on a loaded machine, and then
    // there is no stream to see dropped.
    let started = Instant::now();
    while h.model.open_streams() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the waiting request's turn never reached the model"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dropped_before = h.model.dropped_streams();
    waiting.abort();
    let started = Instant::now();
    while h.model.dropped_streams() == dropped_before {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the waiting request's turn was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    until_released(&h, Duration::from_secs(1)).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cancelled_requests_leave_no_threads_or_turns_behind() {
    let h = Harness::start_with(&[("WORKER_MAX_CONCURRENCY", "64")]).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u64 {
        // Cancelled at a pseudo-random point between 0 and 60 ms: before the
        // thread exists, while it starts, mid-stream, or after the end.
        let delay = Duration::from_millis((i * 7919) % 61);
        let stream = i % 2 == 0;
        let req = h.post_request(
            "/v1/chat/completions",
            &Harness::chat(&format!("[[slow 5]] cancel {i} a b c"), stream),
        );
        let client = client.clone();
        tasks.spawn(async move {
            let _ = tokio::time::timeout(delay, async {
                if let Ok(res) = client.request(req).await {
                    let _ = http_body_util::BodyExt::collect(res.into_body()).await;
                }
            })
            .await;
        });
        while tasks.len() >= 32 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let (settle, loaded) = until_released(&h, Duration::from_secs(30)).await;
    let status = h.get("/healthz").await.json();
    let pid = status["worker"]["pid"].as_u64().unwrap();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    println!(
        "1000 cancelled requests in {elapsed:?}; no active turn and no subscription {settle:?} later; \
         {loaded} idle threads still loaded by codex (it unloads idle ones after about a minute); worker {rss}"
    );
    assert_eq!(status["worker"]["starts"], 1, "the worker never restarted");
    // And the gateway still serves.
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("after the storm", false),
        )
        .await;
    assert_eq!(content(&r), "ECHO: after the storm");
    h.stop().await;
}

/// Serves one PNG (and one non-image) on loopback for the fetch tests.
async fn image_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                // A real 1x1 PNG: codex drops images it cannot decode.
                let png = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==",
                )
                .unwrap();
                let (ctype, body): (&str, Vec<u8>) = if head.starts_with("GET /cat.png") {
                    ("image/png", png)
                } else {
                    ("text/html", b"<html>not an image</html>".to_vec())
                };
                let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_image_urls_are_fetched_and_inlined_when_the_operator_allows_it() {
    let server = image_server().await;
    let image = |path: &str| {
        chat(json!([{"role": "user", "content": [
            {"type": "text", "text": "[[images]]"},
            {"type": "image_url", "image_url": {"url": format!("http://{server}{path}")}}
        ]}]))
    };
    let h = Harness::start_with(&[
        ("PROXY_FETCH_IMAGE_URLS", "true"),
        ("PROXY_FETCH_IMAGE_ALLOW_PRIVATE", "true"),
    ])
    .await;
    let r = h.post("/v1/chat/completions", &image("/cat.png")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The model received the bytes inline, as a real image input.
    assert!(
        content(&r).starts_with("IMAGES: 1 data:image/png;base64,iVBORw0KGgo"),
        "{}",
        content(&r)
    );
    let r = h.post("/v1/chat/completions", &image("/page.html")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_image_url");
    h.stop().await;

    // Without the private-address switch, loopback is refused: no SSRF by default.
    let h = Harness::start_with(&[("PROXY_FETCH_IMAGE_URLS", "true")]).await;
    let r = h.post("/v1/chat/completions", &image("/cat.png")).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("public"));
    h.stop().await;
}
