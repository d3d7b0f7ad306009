//! The exec backend (`PROXY_BACKEND=exec`, issue 15) through the real CLI:
//! one `codex exec --json` per turn behind the same API. What a client
//! notices: the same answers, statuses and error shapes as app-server, the
//! history and images reaching the model, a clear 400 for what exec cannot
//! do, and a disconnect that stops the process and its model stream.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{read_until, Harness};

const MODEL: &str = codex_offline_model::MODEL_ID;
const PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

async fn exec_gateway(extra: &[(&str, &str)]) -> Harness {
    let mut env = vec![("PROXY_BACKEND", "exec")];
    env.extend_from_slice(extra);
    Harness::start_with(&env).await
}

fn content(r: &support::Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `codex exec` processes of `h`'s gateway (it runs in this test process;
/// other tests' gateways run here too, each with its own `CODEX_HOME`).
fn exec_processes(h: &Harness) -> Vec<String> {
    let home = h.dir.join("codex-home").display().to_string();
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .replace('\0', " ");
        if ppid == Some(me) && cmdline.contains(" exec --json") && cmdline.contains(&home) {
            found.push(cmdline);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_completion_runs_on_codex_exec_with_usage_and_the_same_answer() {
    let h = exec_gateway(&[]).await;
    let r = h
        .post("/v1/chat/completions", &Harness::chat("Hello there", false))
        .await;
    assert_eq!(content(&r), "ECHO: Hello there");
    let body = r.json();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(usage["completion_tokens"], 3, "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + 3
    );
    // The model saw exec's request, under the worker's lockdown: no host tools.
    let request = h.model.requests().pop().unwrap();
    let tools: Vec<&str> = request["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(tools, ["request_user_input"], "{tools:?}");

    // Streamed: exec sends a message whole, so one content chunk, then the end.
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "stream": true, "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "[[words 3]]"}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let frames = r.sse_data();
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "w1 w2 w3");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_prompt_history_images_and_schema_reach_the_model() {
    let h = exec_gateway(&[]).await;
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "[[instructions]]"}]}),
        )
        .await;
    assert!(
        content(&r).starts_with("INSTRUCTIONS: Be terse.\n<permissions instructions>"),
        "{}",
        content(&r)
    );

    // History goes as the documented transcript ahead of the new message.
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "messages": [
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "uno"},
                {"role": "user", "content": "two"}]}),
        )
        .await;
    assert_eq!(
        content(&r),
        "ECHO: <conversation_history>\n<message role=\"user\">\none\n</message>\n\
         <message role=\"assistant\">\nuno\n</message>\n</conversation_history>\n\ntwo"
    );

    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "[[images]]"},
                {"type": "image_url", "image_url": {"url": PNG}}]}]}),
        )
        .await;
    assert!(
        content(&r).starts_with("IMAGES: 1 data:image/png;base64,iVBORw0KGgo"),
        "{}",
        content(&r)
    );

    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}},
                        "required": ["ok"], "additionalProperties": false});
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "[[format]]"}],
                    "response_format": {"type": "json_schema",
                        "json_schema": {"name": "answer", "schema": schema}}}),
        )
        .await;
    let said = content(&r);
    assert!(said.starts_with("FORMAT: {"), "{said}");
    assert!(said.contains(r#""required":["ok"]"#), "{said}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_get_the_same_statuses_and_tools_get_a_clear_400() {
    let h = exec_gateway(&[]).await;
    for (trigger, status, kind) in [
        ("[[error 429]]", 429, "rate_limit_error"),
        ("[[error 400]]", 400, "invalid_request_error"),
        ("[[error 500]]", 502, "api_error"),
    ] {
        let r = h
            .post("/v1/chat/completions", &Harness::chat(trigger, false))
            .await;
        assert_eq!(r.status, status, "{trigger}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], kind, "{trigger}: {}", r.text());
        if status == 429 {
            assert!(r.headers.contains_key("retry-after"));
        }
    }
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"type": "function", "function": {"name": "lookup"}}]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], "unsupported_on_backend");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("client tools") && message.contains("exec"),
        "{message}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_the_exec_process_and_its_model_stream() {
    let h = exec_gateway(&[]).await;
    let res = h
        .open(h.post_request(
            "/v1/chat/completions",
            &Harness::chat("[[slow 2000]] a b c d e f g h", true),
        ))
        .await;
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    // The 200 goes out after the commit window; the model stream is open.
    let _ = read_until(&mut body, "chat.completion.chunk").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.model.open_streams() == 0 {
        assert!(Instant::now() < deadline, "the model never saw the request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(exec_processes(&h).len(), 1, "{:?}", exec_processes(&h));
    drop(body);
    while h.model.open_streams() > 0 || !exec_processes(&h).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still running after the client left: {:?}",
            exec_processes(&h)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        h.model.dropped_streams(),
        1,
        "the model stream was cut, not finished"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded_like_the_workers() {
    // One slot, no queue: a second turn while one runs is shed with 429.
    let h = exec_gateway(&[("WORKER_MAX_CONCURRENCY", "1"), ("WORKER_QUEUE_MAX", "0")]).await;
    let first = Harness::chat("[[slow 300]] a b c", false);
    let slow = h.post("/v1/chat/completions", &first);
    let second = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while h.model.open_streams() == 0 {
            assert!(
                Instant::now() < deadline,
                "the first turn never reached the model"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.post("/v1/chat/completions", &Harness::chat("second", false))
            .await
    };
    let (slow, second) = tokio::join!(slow, second);
    assert_eq!(second.status, 429, "{}", second.text());
    assert_eq!(content(&slow), "ECHO: [[slow 300]] a b c");
    h.stop().await;
}

/// `codex_gateway_backend_requests_total` per (backend, canary) label pair.
async fn backend_requests(h: &Harness) -> std::collections::BTreeMap<String, u64> {
    let text = h.get("/metrics").await.text();
    text.lines()
        .filter_map(|l| l.strip_prefix("codex_gateway_backend_requests_total{"))
        .filter_map(|l| {
            let (labels, n) = l.split_once("} ")?;
            Some((labels.to_owned(), n.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_share_keeps_each_conversation_on_one_backend() {
    let h = Harness::start_with(&[
        ("PROXY_BACKEND_CANARY_PERCENT", "50"),
        ("PROXY_ENABLE_METRICS", "true"),
    ])
    .await;
    // Which counter one request moved.
    let served_by = |before: &std::collections::BTreeMap<String, u64>,
                     after: &std::collections::BTreeMap<String, u64>| {
        let moved: Vec<&String> = after
            .iter()
            .filter(|(k, n)| before.get(*k).copied().unwrap_or(0) < **n)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(moved.len(), 1, "{before:?} → {after:?}");
        moved[0].clone()
    };
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..8 {
        let first = format!("conversation {i}");
        let before = backend_requests(&h).await;
        let r = h
            .post("/v1/chat/completions", &Harness::chat(&first, false))
            .await;
        let answer = content(&r);
        let one = served_by(&before, &backend_requests(&h).await);
        let before = backend_requests(&h).await;
        let follow_up = json!({"model": MODEL, "messages": [
            {"role": "user", "content": first},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "and then?"}]});
        let r = h.post("/v1/chat/completions", &follow_up).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let two = served_by(&before, &backend_requests(&h).await);
        assert_eq!(one, two, "conversation {i} changed backend");
        seen.insert(one);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            r#"backend="app-server",canary="false""#,
            r#"backend="exec",canary="true""#
        ],
        "both backends served conversations"
    );
    // A request exec cannot serve is never canaried there: every one of
    // these conversations runs on app-server, tools and all.
    for i in 0..8 {
        let r = h
            .post(
                "/v1/chat/completions",
                &json!({"model": MODEL, "messages": [{"role": "user", "content": format!("conversation {i}")}],
                        "tools": [{"type": "function", "function": {"name": "lookup"}}]}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_response_id_continues_from_the_store_as_a_transcript() {
    let h = exec_gateway(&[]).await;
    let first = h
        .post("/v1/responses", &json!({"model": MODEL, "input": "one"}))
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let second = h
        .post(
            "/v1/responses",
            &json!({"model": MODEL, "input": "two", "previous_response_id": id}),
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.text());
    let text = second.json()["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        text,
        "ECHO: <conversation_history>\n<message role=\"user\">\none\n</message>\n\
         <message role=\"assistant\">\nECHO: one\n</message>\n</conversation_history>\n\ntwo"
    );
    h.stop().await;
}
