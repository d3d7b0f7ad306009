//! `POST /v1/completions` (legacy text completions) end to end: the same
//! pipeline as chat, with `text_completion` objects, streamed and not.

mod support;

use serde_json::{json, Value};
use support::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_completions_streamed_and_not() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/completions",
            &json!({"model": "codex-offline", "prompt": "Say this is a test"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["choices"][0]["text"], "ECHO: Say this is a test");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["logprobs"].is_null());
    assert!(v["usage"]["prompt_tokens"].as_u64() > Some(0));

    // A list of one prompt, `echo`, and `max_tokens` cutting the answer.
    let v = h
        .post(
            "/v1/completions",
            &json!({"model": "codex-offline", "prompt": ["[[words 40]]"], "max_tokens": 3, "echo": true}),
        )
        .await
        .json();
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("[[words 40]]w1"), "{v}");
    assert!(text.len() < "[[words 40]]".len() + 40, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    let r = h
        .post(
            "/v1/completions",
            &json!({"model": "codex-offline", "prompt": "stream this", "stream": true,
                    "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let data = r.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "ECHO: stream this");
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["choices"][0]["finish_reason"], "stop");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["completion_tokens"].as_u64() > Some(0));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_completion_errors_are_openai_shaped() {
    let h = Harness::start().await;
    for (body, param) in [
        (json!({"model": "codex-offline"}), "prompt"),
        (
            json!({"model": "codex-offline", "prompt": ["a", "b"]}),
            "prompt",
        ),
        (
            json!({"model": "codex-offline", "prompt": "x", "logprobs": 1}),
            "logprobs",
        ),
    ] {
        let r = h.post("/v1/completions", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param);
    }
    let r = h
        .post("/v1/completions", &json!({"model": "nope", "prompt": "x"}))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    // A provider failure: the same mapping as chat.
    let r = h
        .post(
            "/v1/completions",
            &json!({"model": "codex-offline", "prompt": "[[error 429]]"}),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(h.get("/v1/completions").await.status, 405);
    h.stop().await;
}
