//! The HTTP surface of the offline model, driven by a plain hyper client.

mod common;

use std::time::{Duration, Instant};

use codex_offline_model::OfflineModel;
use common::{call, codex_like, parse_sse, send, text, types};
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{json, Value};

#[tokio::test]
async fn echo_streams_the_full_event_sequence() {
    let model = OfflineModel::start(0).await.unwrap();
    let (status, headers, body) = call(
        model.addr(),
        "POST",
        "/v1/responses",
        Some(&codex_like("héllo  wörld ✓")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = parse_sse(&body);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(text(&events), "ECHO: héllo  wörld ✓");
    let done = &events[10]["item"];
    assert_eq!(done["type"], "message");
    assert_eq!(done["content"][0]["text"], "ECHO: héllo  wörld ✓");
    let item_id = events[2]["item"]["id"].as_str().unwrap();
    assert!(item_id.starts_with("msg_"), "{item_id}");
    assert!(events[4..8].iter().all(|e| e["item_id"] == item_id));

    // input: 50 + 9 + 44 + 14 = 117 chars -> ceil(117 / 4) = 30 tokens; output: 4 deltas.
    let usage = &events[11]["response"]["usage"];
    assert_eq!(usage["input_tokens"], 30);
    assert_eq!(usage["output_tokens"], 4);
    assert_eq!(usage["total_tokens"], 34);
    assert_eq!(events[11]["response"]["status"], "completed");

    // The request was recorded, and is served back on /v1/_requests.
    assert_eq!(model.requests(), vec![codex_like("héllo  wörld ✓")]);
    let (status, _, body) = call(model.addr(), "GET", "/v1/_requests", None).await;
    assert_eq!(status, StatusCode::OK);
    let recorded: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(recorded, json!([codex_like("héllo  wörld ✓")]));
    model.shutdown().await;
}

#[tokio::test]
async fn health_models_and_unknown_routes() {
    let model = OfflineModel::start(0).await.unwrap();
    assert_eq!(
        model.base_url(),
        format!("http://127.0.0.1:{}/v1", model.addr().port())
    );
    let (status, _, _) = call(model.addr(), "GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = call(model.addr(), "GET", "/v1/models", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"codex-offline\""), "{body}");
    let (status, headers, body) = call(model.addr(), "GET", "/v1/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/json");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "not_found");
    let (status, _, _) = call(model.addr(), "GET", "/v1/responses", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // A body that is not JSON is refused and not recorded.
    let req = http::Request::post(format!("http://{}/v1/responses", model.addr()))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\x28\xb5\x2f\xfd",
        )))
        .unwrap();
    let res = common::client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(model.requests().is_empty());
    model.shutdown().await;
}

#[tokio::test]
async fn quota_trigger_answers_like_an_exhausted_account() {
    let model = OfflineModel::start(0).await.unwrap();
    let (status, headers, body) = call(
        model.addr(),
        "POST",
        "/v1/responses",
        Some(&codex_like("x [[quota 90]]")),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["type"], "usage_limit_reached");
    assert_eq!(err["error"]["resets_in_seconds"], 90);
    let resets_at = err["error"]["resets_at"].as_u64().unwrap();
    assert_eq!(headers["x-codex-primary-used-percent"], "100");
    assert_eq!(
        headers["x-codex-primary-reset-at"].to_str().unwrap(),
        resets_at.to_string()
    );
    model.shutdown().await;
}

/// A `POST /v1/responses` as codex sends it, with `Authorization: Bearer KEY`.
async fn as_key(model: &OfflineModel, key: &str, prompt: &str) -> (StatusCode, Value) {
    let req = http::Request::post(format!("http://{}/v1/responses", model.addr()))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            codex_like(prompt).to_string(),
        )))
        .unwrap();
    let res = common::client().request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, value)
}

#[tokio::test]
async fn unauthorized_trigger_and_a_revoked_key_answer_like_an_expired_login() {
    let model = OfflineModel::start(0).await.unwrap();
    let (status, _, body) = call(
        model.addr(),
        "POST",
        "/v1/responses",
        Some(&codex_like("x [[unauthorized]]")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "token_invalidated");
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert_eq!(err["status"], 401);

    // One account's credential goes bad while the other's stays good; the
    // model counts what each key sent, refused requests included.
    let (status, _) = as_key(&model, "sk-a", "hello").await;
    assert_eq!(status, StatusCode::OK);
    model.revoke("sk-a");
    let (status, err) = as_key(&model, "sk-a", "hello again").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["code"], "token_invalidated");
    let (status, _) = as_key(&model, "sk-b", "hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(model.requests_with_key("sk-a"), 2);
    assert_eq!(model.requests_with_key("sk-b"), 1);
    assert_eq!(model.requests_with_key("sk-c"), 0);

    // Out of quota per account, until restored.
    model.exhaust("sk-b", 90);
    let (status, err) = as_key(&model, "sk-b", "more").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(err["error"]["type"], "usage_limit_reached");
    let secs = err["error"]["resets_in_seconds"].as_u64().unwrap();
    assert!((89..=90).contains(&secs), "{err}");
    model.restore("sk-a");
    model.restore("sk-b");
    assert_eq!(as_key(&model, "sk-a", "back").await.0, StatusCode::OK);
    assert_eq!(as_key(&model, "sk-b", "back").await.0, StatusCode::OK);

    let (_, _, stats) = call(model.addr(), "GET", "/v1/_stats", None).await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["requests_by_key"], json!({"sk-a": 3, "sk-b": 3}));
    model.shutdown().await;
}

#[tokio::test]
async fn error_trigger_returns_openai_error_with_retry_after_for_429() {
    let model = OfflineModel::start(0).await.unwrap();
    let (status, headers, body) = call(
        model.addr(),
        "POST",
        "/v1/responses",
        Some(&codex_like("x [[error 429]]")),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["content-type"], "application/json");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    assert_eq!(err["error"]["param"], Value::Null);
    assert!(err["error"]["message"].as_str().unwrap().contains("429"));

    for (status, code) in [
        (400, "invalid_request"),
        (401, "invalid_api_key"),
        (500, "server_error"),
    ] {
        let (got, headers, body) = call(
            model.addr(),
            "POST",
            "/v1/responses",
            Some(&codex_like(&format!("[[error {status}]]"))),
        )
        .await;
        assert_eq!(got.as_u16(), status);
        assert!(headers.get("retry-after").is_none());
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["error"]["code"], code);
    }
    model.shutdown().await;
}

#[tokio::test]
async fn calls_then_tool_result() {
    let model = OfflineModel::start(0).await.unwrap();
    let prompt = r#"[[call lookup {"id": "A ]] 1"}]] then [[call crm.find]]"#;
    let (_, _, body) = call(
        model.addr(),
        "POST",
        "/v1/responses",
        Some(&codex_like(prompt)),
    )
    .await;
    let events = parse_sse(&body);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.output_item.done",
            "response.output_item.added",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(text(&events), "");
    let first = &events[3]["item"];
    let second = &events[5]["item"];
    assert_eq!(first["type"], "function_call");
    assert_eq!(first["name"], "lookup");
    assert_eq!(first["arguments"], r#"{"id":"A ]] 1"}"#);
    assert!(first.get("namespace").is_none());
    assert_eq!(
        (second["namespace"].as_str(), second["name"].as_str()),
        (Some("crm"), Some("find"))
    );
    let (id1, id2) = (
        first["call_id"].as_str().unwrap(),
        second["call_id"].as_str().unwrap(),
    );
    assert!(id1.starts_with("call_") && id2.starts_with("call_") && id1 != id2);

    // Codex's follow-up: the same prompt, then the calls and their outputs.
    let mut follow_up = codex_like(prompt);
    let input = follow_up["input"].as_array_mut().unwrap();
    input.push(first.clone());
    input.push(second.clone());
    input.push(json!({"type": "function_call_output", "call_id": id1, "output": "ticket open"}));
    input.push(json!({"type": "function_call_output", "call_id": id2, "output": "alice"}));
    let (_, _, body) = call(model.addr(), "POST", "/v1/responses", Some(&follow_up)).await;
    let events = parse_sse(&body);
    assert_eq!(
        text(&events),
        format!("TOOL RESULT {id1}: ticket open\nTOOL RESULT {id2}: alice")
    );
    assert_eq!(events.last().unwrap()["type"], "response.completed");
    model.shutdown().await;
}

#[tokio::test]
async fn introspection_triggers_see_the_request() {
    let model = OfflineModel::start(0).await.unwrap();
    let ask = |prompt: &'static str| {
        let addr = model.addr();
        async move {
            let (_, _, body) = call(addr, "POST", "/v1/responses", Some(&codex_like(prompt))).await;
            text(&parse_sse(&body))
        }
    };
    assert_eq!(ask("[[tools]]").await, "TOOLS: lookup,weather");
    assert_eq!(ask("[[instructions]]").await, "INSTRUCTIONS: Be brief.");
    assert_eq!(ask("[[effort]]").await, "EFFORT: low");
    assert_eq!(ask("[[format]]").await, "FORMAT: none");
    assert_eq!(ask("[[history]]").await, "HISTORY: user: [[history]]");
    assert_eq!(ask("[[json]]").await, r#"{"ok":true}"#);
    assert_eq!(ask("[[words 4]]").await, "w1 w2 w3 w4");
    assert_eq!(
        ask("[[text <use_tool>\n<name>x</name>\n</use_tool>]]").await,
        "<use_tool>\n<name>x</name>\n</use_tool>"
    );
    model.shutdown().await;
}

#[tokio::test]
async fn break_drops_the_connection_after_n_deltas() {
    let model = OfflineModel::start(0).await.unwrap();
    let res = send(
        model.addr(),
        "POST",
        "/v1/responses",
        Some(&codex_like("a b c d e [[break 2]]")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut received = String::new();
    // The body must fail (connection closed mid-body), not end cleanly.
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                received.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap())
            }
            Some(Err(_)) => break,
            None => panic!("the stream ended cleanly: {received}"),
        }
    }
    let events = parse_sse(&received);
    assert_eq!(text(&events), "ECHO: a");
    assert!(!types(&events).iter().any(|t| t == "response.completed"));
    // The model ended it on purpose: not a client disconnect.
    assert_eq!(model.dropped_streams(), 0);
    model.shutdown().await;
}

#[tokio::test]
async fn slow_paces_deltas_and_a_client_hangup_is_seen() {
    let model = OfflineModel::start(0).await.unwrap();
    // Paced: three deltas, 40 ms before each.
    let started = Instant::now();
    let (_, _, body) = call(
        model.addr(),
        "POST",
        "/v1/responses",
        Some(&codex_like("[[slow 40]] x")),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(120),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(text(&parse_sse(&body)), "ECHO: [[slow 40]] x");

    // A long stream stays open while other requests are served, and dropping it is seen.
    let res = send(
        model.addr(),
        "POST",
        "/v1/responses",
        Some(&codex_like("[[slow 60000]]")),
    )
    .await;
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(std::str::from_utf8(first.data_ref().unwrap())
        .unwrap()
        .contains("response.created"));
    let (_, _, other) = call(
        model.addr(),
        "POST",
        "/v1/responses",
        Some(&codex_like("meanwhile")),
    )
    .await;
    assert_eq!(text(&parse_sse(&other)), "ECHO: meanwhile");
    assert_eq!(model.open_streams(), 1);
    assert_eq!(model.dropped_streams(), 0);
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while model.dropped_streams() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(model.dropped_streams(), 1);
    assert_eq!(model.open_streams(), 0);
    let (_, _, stats) = call(model.addr(), "GET", "/v1/_stats", None).await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        stats,
        json!({"requests": 3, "open_streams": 0, "dropped_streams": 1, "requests_by_key": {}})
    );
    model.shutdown().await;
}

#[tokio::test]
async fn non_streaming_request_gets_the_final_response_object() {
    let model = OfflineModel::start(0).await.unwrap();
    let mut body = codex_like("plain");
    body["stream"] = json!(false);
    let (status, headers, text) = call(model.addr(), "POST", "/v1/responses", Some(&body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let response: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(response["object"], "response");
    assert_eq!(response["output"][0]["content"][0]["text"], "ECHO: plain");
    assert_eq!(response["usage"]["output_tokens"], 2);
    model.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_a_stream_that_is_still_open() {
    let model = OfflineModel::start(0).await.unwrap();
    let addr = model.addr();
    let res = send(
        addr,
        "POST",
        "/v1/responses",
        Some(&codex_like("[[slow 60000]]")),
    )
    .await;
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    let started = Instant::now();
    model.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // The stream is cut, not completed.
    let rest = body.collect().await;
    assert!(rest.is_err(), "stream completed after shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}
