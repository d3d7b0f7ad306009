//! Reasoning summaries end to end: the offline model's `[[reason …]]`
//! makes the real CLI stream a reasoning summary; chat shows it as
//! `reasoning_content`, `<think>` tags or not at all, Responses as a
//! `reasoning` item when `reasoning.summary` asks; usage counts it.

mod support;

use http::Request;
use serde_json::{json, Value};
use support::Harness;

const PROMPT: &str = "[[reason Weigh it.]] hi";
const ECHO: &str = "ECHO: [[reason Weigh it.]] hi";

async fn chat(h: &Harness, stream: bool, format: Option<&str>) -> support::Reply {
    let mut b =
        Request::post(h.url("/v1/chat/completions")).header("content-type", "application/json");
    if let Some(f) = format {
        b = b.header("x-proxy-reasoning-format", f);
    }
    let mut body = Harness::chat(PROMPT, stream);
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    h.send(
        b.body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap(),
    )
    .await
}

/// The joined `field` of every streamed delta, and the last usage.
fn streamed(r: &support::Reply, field: &str) -> (String, Value) {
    let mut text = String::new();
    let mut usage = Value::Null;
    for d in r.sse_data() {
        let Ok(c) = serde_json::from_str::<Value>(&d) else {
            continue;
        };
        if let Some(t) = c["choices"][0]["delta"][field].as_str() {
            text.push_str(t);
        }
        if !c["usage"].is_null() {
            usage = c["usage"].clone();
        }
    }
    (text, usage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_shows_reasoning_as_a_field_as_think_tags_or_not_at_all() {
    let h = Harness::start().await;
    // Default `field`, not streamed.
    let v = chat(&h, false, None).await.json();
    let m = &v["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], "Weigh it.", "{v}");
    assert_eq!(m["content"], ECHO);
    assert!(v["usage"]["completion_tokens_details"]["reasoning_tokens"].as_u64() > Some(0));
    // Streamed.
    let r = chat(&h, true, None).await;
    let (reasoning, usage) = streamed(&r, "reasoning_content");
    assert_eq!(reasoning, "Weigh it.", "{}", r.text());
    assert_eq!(streamed(&r, "content").0, ECHO);
    assert!(usage["completion_tokens_details"]["reasoning_tokens"].as_u64() > Some(0));

    // `think-tags`: in the content, before the answer, streamed or not.
    let want = format!("<think>Weigh it.</think>{ECHO}");
    let v = chat(&h, false, Some("think-tags")).await.json();
    assert_eq!(v["choices"][0]["message"]["content"], want.as_str());
    assert!(v["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());
    let r = chat(&h, true, Some("think-tags")).await;
    assert_eq!(streamed(&r, "content").0, want);
    assert_eq!(streamed(&r, "reasoning_content").0, "");

    // `off`.
    let v = chat(&h, false, Some("off")).await.json();
    assert_eq!(v["choices"][0]["message"]["content"], ECHO);
    assert!(v["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());
    let r = chat(&h, true, Some("OFF")).await;
    assert_eq!(streamed(&r, "content").0, ECHO);
    assert_eq!(streamed(&r, "reasoning_content").0, "");

    // A header naming no format is the client's mistake.
    let r = chat(&h, false, Some("xml")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "x-proxy-reasoning-format");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reasoning_format_follows_the_key_then_the_route() {
    let dir = std::env::temp_dir().join(format!("codex-e2e-reason-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        "[[keys]]\nname = \"webui\"\nkey = \"sk-webui\"\nreasoning_format = \"think-tags\"\n\
         [[keys]]\nname = \"plain\"\nkey = \"sk-plain\"\n",
    )
    .unwrap();
    let routes = dir.join("routes.toml");
    std::fs::write(
        &routes,
        "[routes.\"/v1/chat/completions\"]\nreasoning_format = \"off\"\n",
    )
    .unwrap();
    let h = Harness::start_with(&[
        ("PROXY_API_KEYS_FILE", keys.to_str().unwrap()),
        ("PROXY_CONFIG", routes.to_str().unwrap()),
    ])
    .await;
    let ask = |key: &'static str| {
        let body = Harness::chat(PROMPT, false);
        h.send(
            Request::post(h.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {key}"))
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    body.to_string(),
                )))
                .unwrap(),
        )
    };
    let v = ask("sk-webui").await.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("<think>Weigh it.</think>{ECHO}")
    );
    let v = ask("sk-plain").await.json();
    assert_eq!(
        v["choices"][0]["message"]["content"], ECHO,
        "the route's `off`"
    );
    assert!(v["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());
    h.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_give_a_reasoning_item_when_summaries_are_asked_for() {
    let h = Harness::start().await;
    let ask = |summary: Option<&str>, stream: bool| {
        let mut body = json!({"model": "codex-offline", "input": PROMPT, "stream": stream});
        if let Some(s) = summary {
            body["reasoning"] = json!({"summary": s});
        }
        h.send(h.post_request("/v1/responses", &body))
    };
    let v = ask(Some("auto"), false).await.json();
    assert_eq!(v["output"][0]["type"], "reasoning", "{v}");
    assert_eq!(v["output"][0]["summary"][0]["type"], "summary_text");
    assert_eq!(v["output"][0]["summary"][0]["text"], "Weigh it.");
    assert_eq!(v["output"][1]["content"][0]["text"], ECHO);
    assert!(v["usage"]["output_tokens_details"]["reasoning_tokens"].as_u64() > Some(0));
    // A client that replays the output, reasoning item included, as input.
    let mut input = vec![json!({"role": "user", "content": PROMPT})];
    input.extend(v["output"].as_array().unwrap().iter().cloned());
    input.push(json!({"role": "user", "content": "and then?"}));
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "codex-offline", "input": input, "store": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["output"][0]["content"][0]["text"],
        "ECHO: and then?"
    );

    let r = ask(Some("detailed"), true).await;
    let mut names = Vec::new();
    let mut delta = String::new();
    let mut last = Value::Null;
    for frame in r.text().split("\n\n") {
        let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let e: Value = serde_json::from_str(data).unwrap();
        let name = e["type"].as_str().unwrap().to_owned();
        if name == "response.reasoning_summary_text.delta" {
            delta.push_str(e["delta"].as_str().unwrap());
        }
        names.push(name);
        last = e;
    }
    assert_eq!(delta, "Weigh it.", "{}", r.text());
    let order = |n: &str| names.iter().position(|x| x == n).unwrap_or(usize::MAX);
    assert!(
        order("response.reasoning_summary_part.added")
            < order("response.reasoning_summary_text.done")
            && order("response.reasoning_summary_text.done") < order("response.output_text.delta"),
        "{names:?}"
    );
    assert_eq!(last["response"]["output"][0]["type"], "reasoning");

    // Not asked for: no reasoning item, the tokens are still counted.
    let v = ask(None, false).await.json();
    assert_eq!(v["output"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["output"][0]["type"], "message");
    assert!(v["usage"]["output_tokens_details"]["reasoning_tokens"].as_u64() > Some(0));
    let r = ask(Some("bogus"), false).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "reasoning.summary");
    h.stop().await;
}
