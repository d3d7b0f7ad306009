//! `/v1/responses` end to end: text, streaming events, function calls and
//! continuation by `call_id`.

mod support;

use serde_json::json;
use support::{sse_events as events, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_responses_streamed_and_not() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "codex-offline", "input": "hello", "instructions": "Be kind."}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], "ECHO: hello");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);

    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "codex-offline", "input": "stream this", "stream": true}),
        )
        .await;
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let evs = events(&r.text());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    assert!(!r.text().contains("[DONE]"));
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "ECHO: stream this");
    let seqs: Vec<u64> = evs
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let done = &evs.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], "ECHO: stream this");

    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "codex-offline", "input": "x", "previous_response_id": "resp_unknown"}),
        )
        .await;
    // An id this gateway never stored: OpenAI's 404, naming the parameter.
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["param"], "previous_response_id");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_and_their_outputs() {
    let h = Harness::start().await;
    let tools = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let first = json!({"model": "codex-offline", "tools": tools, "input": [
        {"role": "user", "content": "[[call get_weather {\"city\": \"Paris\"}]]"}
    ]});
    let v = h.post("/v1/responses", &first).await.json();
    let call = v["output"][0].clone();
    assert_eq!(call["type"], "function_call", "{v}");
    assert_eq!(call["name"], "get_weather");
    let mut second = first.clone();
    second["input"].as_array_mut().unwrap().extend([
        call.clone(),
        json!({"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}),
    ]);
    let v = h.post("/v1/responses", &second).await.json();
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        format!("TOOL RESULT {}: sunny", call["call_id"].as_str().unwrap())
    );
    h.stop().await;
}
