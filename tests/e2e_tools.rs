//! Tool calls end to end: client tools as real model tools, both output
//! modes, streaming rules, continuation of a paused turn, textual blocks.

mod support;

use http::Request;
use serde_json::{json, Value};
use support::Harness;

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather", "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}
    }})
}

fn tool_request(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "codex-offline", "stream": stream, "tools": [weather_tool()],
        "messages": [{"role": "user", "content": prompt}]
    })
}

async fn post_mode(h: &Harness, body: &Value, mode: &str) -> support::Reply {
    let req = Request::post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-proxy-output-mode", mode)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    h.send(req).await
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const THREAD_STARTS: &str =
    "codex_gateway_jsonrpc_calls_total{method=\"thread/start\",outcome=\"ok\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_loop_continues_the_same_turn_with_the_tool_result() {
    let h = Harness::start_with(&[
        ("PROXY_ENABLE_METRICS", "true"),
        // Each fresh turn starts its own thread and waits for it, so the
        // `thread/start` counts below are settled when a response is. With a
        // warm thread, a request takes one started earlier and refills it
        // after its own turn start: that refill's answer may be counted
        // after the metrics are read (3 of 13 runs in one window, then none
        // in about 100).
        ("PROXY_WARM_THREADS", "0"),
    ])
    .await;
    let first = tool_request(r#"[[call get_weather {"city": "Paris"}]]"#, false);
    let r = post_mode(&h, &first, "openai-json").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let call_id = call["id"].as_str().unwrap().to_owned();

    let starts_before = metric(&h.get("/metrics").await.text(), THREAD_STARTS);
    let mut second = first.clone();
    second["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": [call.clone()]}),
        json!({"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"}),
    ]);
    let r = post_mode(&h, &second, "openai-json").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        format!("TOOL RESULT {call_id}: sunny, 21 C")
    );
    assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");
    // The same turn went on: no new thread was started for the second request.
    let starts_after = metric(&h.get("/metrics").await.text(), THREAD_STARTS);
    assert_eq!(
        starts_after, starts_before,
        "continuation must not start a thread"
    );

    // The same results sent again (the parked turn is gone): rebuilt on a
    // fresh thread from the history, with the same answer.
    let r = post_mode(&h, &second, "openai-json").await;
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        format!("TOOL RESULT {call_id}: sunny, 21 C")
    );
    assert_eq!(
        metric(&h.get("/metrics").await.text(), THREAD_STARTS),
        starts_after + 1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_tool_calls_follow_openai_chunk_rules() {
    let h = Harness::start().await;
    let r = post_mode(
        &h,
        &tool_request(
            r#"[[call get_weather {"city": "Zürich", "unit": "C"}]]"#,
            true,
        ),
        "openai-json",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let data = r.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert!(!deltas.is_empty());
    assert_eq!(deltas[0][0]["index"], 0);
    assert_eq!(deltas[0][0]["type"], "function");
    assert_eq!(deltas[0][0]["function"]["name"], "get_weather");
    assert!(deltas[0][0]["id"].as_str().unwrap().starts_with("call_"));
    for d in &deltas[1..] {
        assert!(
            d[0].get("id").is_none() && d[0]["function"].get("name").is_none(),
            "{d}"
        );
    }
    let args: String = deltas
        .iter()
        .map(|d| d[0]["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Zürich", "unit": "C"})
    );
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["choices"][0]["finish_reason"], "tool_calls");
    assert!(
        std::ptr::eq(finishes[0], chunks.last().unwrap()),
        "nothing after the finish chunk"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obsidian_xml_mode_renders_calls_as_use_tool_blocks() {
    let h = Harness::start().await;
    // The default mode is obsidian-xml.
    let r = h
        .post(
            "/v1/chat/completions",
            &tool_request(
                r#"[[call get_weather {"unit": "C", "city": "Oslo & Bergen"}]]"#,
                false,
            ),
        )
        .await;
    let v = r.json();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        content,
        "<use_tool>\n<name>get_weather</name>\n<city>Oslo &amp; Bergen</city>\n<unit>C</unit>\n</use_tool>",
        "canonical: schema order, escaped"
    );
    // The client sent `tools`: the call is in `tool_calls` too, so an SDK
    // client that landed on the XML mode still sees it.
    let calls = &v["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["function"]["name"], "get_weather", "{v}");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"unit": "C", "city": "Oslo & Bergen"}));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    // An Obsidian-style exchange: tools described in the prompt, the model
    // writes the block as text, the client gets it verbatim in the content.
    let block = "<use_tool>\n<name>localSearch</name>\n<query>piano</query>\n<salientTerms>[\"piano\"]</salientTerms>\n</use_tool>";
    let prompt = format!("[[text Let me search. {block}]]");
    let r = h
        .post("/v1/chat/completions", &Harness::chat(&prompt, true))
        .await;
    let text: String = r
        .sse_data()
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, format!("Let me search. {block}"));
    // No `tools` in the request: the block stays text only, as Obsidian expects.
    assert!(
        !r.text().contains("tool_calls\":["),
        "a client without tools got tool_calls: {}",
        r.text()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn textual_blocks_become_tool_calls_in_openai_json_mode() {
    let h = Harness::start().await;
    let prompt = "[[text Looking. <use_tool><name>localSearch</name><query>piano &amp; violin</query><limit>3</limit></use_tool>]]";
    let r = post_mode(&h, &Harness::chat(prompt, false), "openai-json").await;
    let v = r.json();
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["content"], "Looking. ");
    assert_eq!(msg["tool_calls"][0]["function"]["name"], "localSearch");
    let args: Value = serde_json::from_str(
        msg["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args, json!({"query": "piano & violin", "limit": 3}));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_switches_stop_and_trim_after_tool_blocks() {
    let h = Harness::start_with(&[
        ("PROXY_STOP_AFTER_TOOLS", "true"),
        ("PROXY_STOP_AFTER_TOOLS_MODE", "first"),
    ])
    .await;
    let prompt = "[[text Sure. <use_tool><name>a</name></use_tool> then more text and <use_tool><name>b</name></use_tool>]]";
    let v = h
        .post("/v1/chat/completions", &Harness::chat(prompt, false))
        .await
        .json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Sure. <use_tool><name>a</name></use_tool>"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    h.stop().await;

    let h = Harness::start_with(&[
        ("PROXY_SUPPRESS_TAIL_AFTER_TOOLS", "true"),
        ("PROXY_TOOL_BLOCK_MAX", "2"),
    ])
    .await;
    let prompt = "[[text A <use_tool><name>a</name></use_tool> mid <use_tool><name>b</name></use_tool> tail <use_tool><name>c</name></use_tool> end]]";
    let v = h
        .post("/v1/chat/completions", &Harness::chat(prompt, false))
        .await
        .json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "A <use_tool><name>a</name></use_tool> mid <use_tool><name>b</name></use_tool>",
        "text between blocks kept, the tail and the third block dropped"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_calls_come_together_only_when_enabled() {
    let prompt = r#"[[call get_weather {"city": "Paris"}]] [[call get_weather {"city": "Rome"}]]"#;
    let h = Harness::start_with(&[("PROXY_ENABLE_PARALLEL_TOOL_CALLS", "true")]).await;
    let v = post_mode(&h, &tool_request(prompt, false), "openai-json")
        .await
        .json();
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{v}");
    let mut cities: Vec<String> = calls
        .iter()
        .map(|c| {
            serde_json::from_str::<Value>(c["function"]["arguments"].as_str().unwrap()).unwrap()
                ["city"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    cities.sort();
    assert_eq!(cities, ["Paris", "Rome"]);
    h.stop().await;

    // Default: one call per response; the other comes in the next response of the same turn.
    let h = Harness::start().await;
    let first = tool_request(prompt, false);
    let v = post_mode(&h, &first, "openai-json").await.json();
    let calls = v["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(calls.len(), 1, "{v}");
    let mut second = first.clone();
    second["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": calls.clone()}),
        json!({"role": "tool", "tool_call_id": calls[0]["id"], "content": "result one"}),
    ]);
    let v = post_mode(&h, &second, "openai-json").await.json();
    let next = v["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(next.len(), 1, "{v}");
    assert_ne!(next[0]["id"], calls[0]["id"]);
    let mut third = second.clone();
    third["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": next.clone()}),
        json!({"role": "tool", "tool_call_id": next[0]["id"], "content": "result two"}),
    ]);
    let v = post_mode(&h, &third, "openai-json").await.json();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        text.contains("result one") && text.contains("result two"),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_functions_and_tool_choice_none() {
    let h = Harness::start().await;
    let body = json!({
        "model": "codex-offline",
        "functions": [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "messages": [{"role": "user", "content": "[[call get_weather {\"city\": \"Lima\"}]]"}]
    });
    let v = post_mode(&h, &body, "openai-json").await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "function_call");
    assert_eq!(
        v["choices"][0]["message"]["function_call"]["name"],
        "get_weather"
    );

    let mut none = tool_request("[[tools]]", false);
    none["tool_choice"] = json!("none");
    let v = post_mode(&h, &none, "openai-json").await.json();
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("get_weather"));
    let v = post_mode(&h, &tool_request("[[tools]]", false), "openai-json")
        .await
        .json();
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("get_weather"));
    let bad = post_mode(&h, &tool_request("x", false), "yaml").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "x-proxy-output-mode");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_waiting_for_tool_results_holds_no_turn_slot() {
    let h =
        Harness::start_with(&[("WORKER_MAX_CONCURRENCY", "1"), ("WORKER_QUEUE_MAX", "0")]).await;
    let first = tool_request(r#"[[call get_weather {"city": "Lima"}]]"#, false);
    let v = post_mode(&h, &first, "openai-json").await.json();
    let call = v["choices"][0]["message"]["tool_calls"][0].clone();
    // The only slot is free while the first turn waits for its result.
    let other = h
        .post("/v1/chat/completions", &Harness::chat("meanwhile", false))
        .await;
    assert_eq!(other.status, 200, "{}", other.text());
    let mut second = first.clone();
    second["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": [call.clone()]}),
        json!({"role": "tool", "tool_call_id": call["id"], "content": "warm"}),
    ]);
    let v = post_mode(&h, &second, "openai-json").await.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("TOOL RESULT {}: warm", call["id"].as_str().unwrap())
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_mode_follows_the_key_then_the_route_and_the_header_wins() {
    let dir = std::env::temp_dir().join(format!("codex-e2e-modes-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        "[[keys]]\nname = \"sdk\"\nkey = \"sk-sdk\"\noutput_mode = \"openai-json\"\n\
         [[keys]]\nname = \"obsidian\"\nkey = \"sk-obsidian\"\n",
    )
    .unwrap();
    let routes = dir.join("routes.toml");
    std::fs::write(
        &routes,
        "[routes.\"/v1/chat/completions\"]\noutput_mode = \"obsidian-xml\"\n",
    )
    .unwrap();
    let h = Harness::start_with(&[
        ("PROXY_API_KEYS_FILE", keys.to_str().unwrap()),
        ("PROXY_CONFIG", routes.to_str().unwrap()),
        ("PROXY_OUTPUT_MODE", "openai-json"),
    ])
    .await;
    let ask = |key: &'static str, mode: Option<&'static str>| {
        let mut b = Request::post(h.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"));
        if let Some(m) = mode {
            b = b.header("x-proxy-output-mode", m);
        }
        let body = tool_request(r#"[[call get_weather {"city": "Oslo"}]]"#, false);
        h.send(
            b.body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap(),
        )
    };
    let content = |r: &support::Reply| r.json()["choices"][0]["message"]["content"].clone();
    // The key's mode: tool_calls only.
    let r = ask("sk-sdk", None).await;
    assert_eq!(content(&r), Value::Null, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    // No mode of its own: the route's (not PROXY_OUTPUT_MODE's) XML.
    let r = ask("sk-obsidian", None).await;
    assert!(
        content(&r)
            .as_str()
            .unwrap_or_default()
            .starts_with("<use_tool>"),
        "{}",
        r.text()
    );
    // The header beats the key.
    let r = ask("sk-sdk", Some("obsidian-xml")).await;
    assert!(
        content(&r)
            .as_str()
            .unwrap_or_default()
            .starts_with("<use_tool>"),
        "{}",
        r.text()
    );
    h.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_forced_by_tool_choice_is_final_and_its_turn_is_released_at_once() {
    // LangChain's with_structured_output(method="function_calling") names
    // the schema's tool in tool_choice and never sends the result back.
    const INTERRUPTS: &str =
        "codex_gateway_jsonrpc_calls_total{method=\"turn/interrupt\",outcome=\"ok\"}";
    let h = Harness::start_with(&[("PROXY_ENABLE_METRICS", "true")]).await;
    let mut body = tool_request(r#"[[call get_weather {"city": "Oslo"}]]"#, false);
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    let r = post_mode(&h, &body, "openai-json").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let call = r.json()["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather");
    // Not parked: the turn is interrupted now, not when the park expires.
    let mut released = false;
    for _ in 0..100 {
        if metric(&h.get("/metrics").await.text(), INTERRUPTS) >= 1.0 {
            released = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(released, "the forced call's turn is still held");
    // A client that does send the result still gets its answer (rebuilt).
    let call_id = call["id"].as_str().unwrap().to_owned();
    body["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": [call]}),
        json!({"role": "tool", "tool_call_id": call_id, "content": "cold"}),
    ]);
    body["tool_choice"] = json!("auto");
    let r = post_mode(&h, &body, "openai-json").await;
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        format!("TOOL RESULT {call_id}: cold")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_turn_the_next_request_moves_on_from_is_released_at_once() {
    const INTERRUPTS: &str =
        "codex_gateway_jsonrpc_calls_total{method=\"turn/interrupt\",outcome=\"ok\"}";
    let h = Harness::start_with(&[("PROXY_ENABLE_METRICS", "true")]).await;
    let mut body = tool_request(r#"[[call get_weather {"city": "Oslo"}]]"#, false);
    let r = post_mode(&h, &body, "openai-json").await;
    let call = r.json()["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather", "{}", r.text());
    let before = metric(&h.get("/metrics").await.text(), INTERRUPTS);
    // The client answers the call with a new question instead of its result.
    body["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": [call]}),
        json!({"role": "user", "content": "never mind"}),
    ]);
    let r = post_mode(&h, &body, "openai-json").await;
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "ECHO: never mind",
        "{}",
        r.text()
    );
    let mut released = false;
    for _ in 0..100 {
        if metric(&h.get("/metrics").await.text(), INTERRUPTS) > before {
            released = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(released, "the abandoned turn is still parked");
    h.stop().await;
}
