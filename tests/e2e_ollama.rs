//! The Ollama API end to end through the real CLI: `/api/tags`,
//! `/api/version`, `/api/chat` and `/api/generate`, streamed as NDJSON (the
//! default) and not, with Ollama's error shape.

mod support;

use serde_json::{json, Value};
use support::Harness;

fn lines(r: &support::Reply) -> Vec<Value> {
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_chat_and_generate_streamed_and_not() {
    let h = Harness::start().await;
    let tags = h.get("/api/tags").await.json();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"codex-offline:latest"), "{tags}");
    assert!(h.get("/api/version").await.json()["version"].is_string());

    // Streamed by default: NDJSON, text pieces then one done object.
    let r = h
        .post(
            "/api/chat",
            &json!({"model": "codex-offline:latest", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "[[words 3]]"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let objs = lines(&r);
    let (last, pieces) = objs.split_last().unwrap();
    assert!(pieces.len() >= 2, "{objs:?}");
    assert!(pieces
        .iter()
        .all(|o| o["done"] == false && o["model"] == "codex-offline:latest"));
    let text: String = pieces
        .iter()
        .map(|o| o["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "w1 w2 w3");
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert!(last["eval_count"].as_u64() > Some(0), "{last}");
    assert!(last["prompt_eval_count"].as_u64() > Some(0), "{last}");
    assert!(last["created_at"].as_str().unwrap().ends_with('Z'));

    // Not streamed: one object; history reaches the model.
    let r = h
        .post(
            "/api/chat",
            &json!({"model": "codex-offline", "stream": false, "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "one"},
                {"role": "user", "content": "[[history]]"}]}),
        )
        .await;
    assert_eq!(r.headers["content-type"], "application/json");
    let v = r.json();
    assert_eq!(
        v["message"]["content"],
        "HISTORY: user: first | assistant: one | user: [[history]]"
    );
    assert_eq!(v["message"]["role"], "assistant");
    assert_eq!(v["done"], true);

    // Generate: system + prompt, num_predict cutting the answer.
    let v = h
        .post(
            "/api/generate",
            &json!({"model": "codex-offline", "prompt": "[[words 40]]", "stream": false,
                    "options": {"num_predict": 3}}),
        )
        .await
        .json();
    let text = v["response"].as_str().unwrap();
    assert!(text.starts_with("w1") && text.len() < 40, "{v}");
    assert_eq!(v["done_reason"], "length");
    let r = h
        .post(
            "/api/generate",
            &json!({"model": "codex-offline", "prompt": "hello there", "system": "sys"}),
        )
        .await;
    let objs = lines(&r);
    let text: String = objs.iter().filter_map(|o| o["response"].as_str()).collect();
    assert_eq!(text, "ECHO: hello there");
    assert_eq!(objs.last().unwrap()["done"], true);

    // A `format` schema reaches the model as its output schema.
    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}},
                        "required": ["ok"], "additionalProperties": false});
    let v = h
        .post(
            "/api/generate",
            &json!({"model": "codex-offline", "prompt": "[[format]]", "stream": false,
                    "format": schema}),
        )
        .await
        .json();
    let text = v["response"].as_str().unwrap();
    assert!(
        text.starts_with("FORMAT: {") && text.contains("\"ok\""),
        "{v}"
    );

    // An empty prompt loads the model and runs nothing.
    let v = h
        .post("/api/generate", &json!({"model": "codex-offline"}))
        .await
        .json();
    assert_eq!(
        (v["done"].clone(), v["done_reason"].clone()),
        (json!(true), json!("load"))
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_errors_are_a_bare_message_with_the_status() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/api/chat",
            &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"].as_str().unwrap().contains("nope"),
        "{}",
        r.text()
    );
    let r = h
        .post(
            "/api/generate",
            &json!({"model": "codex-offline", "prompt": 3}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string(), "{}", r.text());
    // A provider failure keeps its status, in Ollama's shape.
    let r = h
        .post(
            "/api/chat",
            &json!({"model": "codex-offline", "messages": [{"role": "user", "content": "[[error 429]]"}]}),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());
    let r = h.get("/api/chat").await;
    assert_eq!(r.status, 405);
    assert!(r.json()["error"].is_string());
    h.stop().await;
}

/// The layers' rejections (a missing or wrong key, rate limits, maintenance)
/// reach Ollama clients in Ollama's shape too, with their status and headers;
/// the OpenAI routes keep OpenAI's envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_rejections_on_the_ollama_routes_are_a_bare_message() {
    let h = Harness::start_with(&[
        ("PROXY_API_KEY", "sk-test"),
        ("PROXY_RATE_LIMIT_ENABLED", "true"),
        ("PROXY_RATE_LIMIT_MAX", "1"),
        ("PROXY_RATE_LIMIT_WINDOW_MS", "60000"),
    ])
    .await;
    let chat = json!({"model": "codex-offline", "stream": false,
                      "messages": [{"role": "user", "content": "hi"}]});
    let with_key = |key: &str| {
        let mut req = h.post_request("/api/chat", &chat);
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        req
    };
    // No key, then a wrong one: 401.
    let r = h.post("/api/chat", &chat).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());
    let r = h.send(with_key("sk-wrong")).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].is_string(), "{}", r.text());
    // The OpenAI routes keep the envelope.
    let r = h.post("/v1/chat/completions", &chat).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"]["message"].is_string(), "{}", r.text());

    // One request a minute: the second is limited, with its Retry-After.
    let r = h.send(with_key("sk-test")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = h.send(with_key("sk-test")).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    let message = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "{}", r.text());

    // Maintenance: 503 with the operator's message as the error.
    h.handles.maintenance.enable();
    let r = h.send(with_key("sk-test")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|m| m.contains("maintenance")),
        "{}",
        r.text()
    );
    h.stop().await;
}
