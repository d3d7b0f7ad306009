//! Conversations on live codex threads, end to end through the real CLI and
//! the offline model: `previous_response_id` and stored responses, chat
//! histories continued on their thread, forks, rebuilds after a worker
//! restart and after eviction, keys kept apart.
//!
//! What the model saw is read at the model (`OfflineModel::requests`): the
//! whole history each turn, and codex's `prompt_cache_key` (its thread id),
//! which stays the same for as long as a conversation stays on one thread.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::Harness;

const MODEL: &str = codex_offline_model::MODEL_ID;

/// The user and assistant texts of a model request, in order (codex's own
/// preamble, whose texts start with `<`, left out).
fn seen(request: &Value) -> Vec<String> {
    request["input"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message" && (i["role"] == "user" || i["role"] == "assistant"))
        .map(|i| {
            let text: String = i["content"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect();
            format!("{}: {text}", i["role"].as_str().unwrap())
        })
        .filter(|t| !t.contains(": <"))
        .collect()
}

fn cache_key(request: &Value) -> String {
    request["prompt_cache_key"]
        .as_str()
        .expect("codex sends a prompt_cache_key")
        .to_owned()
}

/// The number on a metrics line, 0 when absent.
async fn metric(h: &Harness, line_start: &str) -> f64 {
    let text = h.get("/metrics").await.text();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn with_key(mut req: Request<Full<Bytes>>, key: &str) -> Request<Full<Bytes>> {
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

async fn respond(h: &Harness, body: Value) -> Value {
    let r = h.post("/v1/responses", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn text_of(response: &Value) -> String {
    response["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_turn_responses_conversation_stays_on_one_thread_and_a_branch_forks() {
    let h = Harness::start_with(&[("PROXY_ENABLE_METRICS", "true")]).await;
    let mut ids = Vec::new();
    let mut previous: Option<String> = None;
    for turn in 1..=10 {
        let mut body = json!({
            "model": MODEL, "input": format!("turn {turn}"), "instructions": "Be brief."
        });
        if let Some(p) = &previous {
            body["previous_response_id"] = json!(p);
        }
        // Every third turn streamed: both paths keep the thread.
        let response = if turn % 3 == 0 {
            body["stream"] = json!(true);
            let r = h.post("/v1/responses", &body).await;
            assert_eq!(r.status, 200);
            let (_, done) = support::sse_events(&r.text())
                .into_iter()
                .find(|(name, _)| name == "response.completed")
                .expect("response.completed");
            done["response"].clone()
        } else {
            respond(&h, body).await
        };
        assert_eq!(text_of(&response), format!("ECHO: turn {turn}"));
        assert_eq!(response["previous_response_id"], json!(previous));
        if turn > 1 {
            // The earlier turns were in the provider's cache under the same key.
            assert!(
                response["usage"]["input_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap()
                    > 0,
                "turn {turn}: {}",
                response["usage"]
            );
        }
        let id = response["id"].as_str().unwrap().to_owned();
        ids.push(id.clone());
        previous = Some(id);
    }
    let requests = h.model.requests();
    assert_eq!(requests.len(), 10);
    for (i, r) in requests.iter().enumerate() {
        // The whole history each turn, in order.
        let mut expected = Vec::new();
        for t in 1..=i + 1 {
            expected.push(format!("user: turn {t}"));
            if t <= i {
                expected.push(format!("assistant: ECHO: turn {t}"));
            }
        }
        assert_eq!(seen(r), expected, "model request {}", i + 1);
    }
    let keys: HashSet<String> = requests.iter().map(cache_key).collect();
    assert_eq!(keys.len(), 1, "one thread for the conversation: {keys:?}");
    assert_eq!(
        metric(
            &h,
            "codex_gateway_conversation_continuations_total{outcome=\"reused\"}"
        )
        .await,
        9.0
    );

    // A branch from turn 5: the model sees turns 1-5 and the branch only,
    // on a thread of its own.
    let branch = respond(
        &h,
        json!({"model": MODEL, "input": "branch", "instructions": "Be brief.",
               "previous_response_id": ids[4]}),
    )
    .await;
    assert_eq!(text_of(&branch), "ECHO: branch");
    let requests = h.model.requests();
    let at_branch = &requests[10];
    let view = seen(at_branch);
    assert_eq!(view.len(), 11);
    assert_eq!(view[8], "user: turn 5");
    assert_eq!(view[10], "user: branch");
    assert_ne!(cache_key(at_branch), cache_key(&requests[0]));
    // The main line is undisturbed: turn 11 continues the original thread.
    let eleven = respond(
        &h,
        json!({"model": MODEL, "input": "turn 11", "instructions": "Be brief.",
               "previous_response_id": ids[9]}),
    )
    .await;
    assert_eq!(text_of(&eleven), "ECHO: turn 11");
    let requests = h.model.requests();
    assert_eq!(cache_key(&requests[11]), cache_key(&requests[0]));
    assert_eq!(seen(&requests[11]).len(), 21);
    assert_eq!(
        metric(
            &h,
            "codex_gateway_conversation_continuations_total{outcome=\"forked\"}"
        )
        .await,
        1.0
    );
    assert!(metric(&h, "codex_gateway_live_threads ").await >= 2.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_are_retrievable_deletable_and_private_to_their_key() {
    let h = Harness::start_with(&[("PROXY_API_KEY", "sk-alice,sk-bob")]).await;
    let post = |body: Value, key: &str| with_key(h.post_request("/v1/responses", &body), key);
    let get = |path: String, key: &str| {
        with_key(
            Request::get(h.url(&path)).body(Full::default()).unwrap(),
            key,
        )
    };
    let first = h
        .send(post(
            json!({"model": MODEL, "input": [{"role": "user", "content": "remember me"}]}),
            "sk-alice",
        ))
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(first["store"], true);

    let got = h.send(get(format!("/v1/responses/{id}"), "sk-alice")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), first, "retrieved exactly as answered");
    let items = h
        .send(get(format!("/v1/responses/{id}/input_items"), "sk-alice"))
        .await
        .json();
    assert_eq!(items["object"], "list");
    assert_eq!(
        items["data"][0]["content"],
        json!([{"type": "input_text", "text": "remember me"}])
    );
    assert!(items["data"][0]["id"].as_str().unwrap().starts_with("msg_"));

    // Another key: as if it never existed, for reading and for continuing.
    let theirs = h.send(get(format!("/v1/responses/{id}"), "sk-bob")).await;
    assert_eq!(theirs.status, 404);
    assert_eq!(theirs.json()["error"]["type"], "invalid_request_error");
    let cont = h
        .send(post(
            json!({"model": MODEL, "input": "more", "previous_response_id": id}),
            "sk-bob",
        ))
        .await;
    assert_eq!(cont.status, 404, "{}", cont.text());
    assert_eq!(cont.json()["error"]["param"], "previous_response_id");
    let del = h
        .send(with_key(
            Request::delete(h.url(&format!("/v1/responses/{id}")))
                .body(Full::default())
                .unwrap(),
            "sk-bob",
        ))
        .await;
    assert_eq!(del.status, 404);

    // store: false keeps nothing.
    let unstored = h
        .send(post(
            json!({"model": MODEL, "input": "forget me", "store": false}),
            "sk-alice",
        ))
        .await
        .json();
    assert_eq!(unstored["store"], false);
    let unstored_id = unstored["id"].as_str().unwrap();
    let gone = h
        .send(get(format!("/v1/responses/{unstored_id}"), "sk-alice"))
        .await;
    assert_eq!(gone.status, 404);

    // Deleted: gone for reading and continuing.
    let del = h
        .send(with_key(
            Request::delete(h.url(&format!("/v1/responses/{id}")))
                .body(Full::default())
                .unwrap(),
            "sk-alice",
        ))
        .await;
    assert_eq!(del.status, 200);
    assert_eq!(
        del.json(),
        json!({"id": id, "object": "response.deleted", "deleted": true})
    );
    let after = h.send(get(format!("/v1/responses/{id}"), "sk-alice")).await;
    assert_eq!(after.status, 404);
    let cont = h
        .send(post(
            json!({"model": MODEL, "input": "more", "previous_response_id": id}),
            "sk-alice",
        ))
        .await;
    assert_eq!(cont.status, 404);
    assert_eq!(cont.json()["error"]["code"], "previous_response_not_found");
    // Methods the routes do not serve.
    let put = h
        .send(with_key(
            Request::put(h.url(&format!("/v1/responses/{id}")))
                .body(Full::default())
                .unwrap(),
            "sk-alice",
        ))
        .await;
    assert_eq!(put.status, 405);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_results_by_previous_response_id_continue_the_waiting_turn() {
    let h = Harness::start().await;
    let tools = json!([{"type": "function", "name": "lookup",
                        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]);
    let first = respond(
        &h,
        json!({"model": MODEL, "tools": tools,
               "input": "find it [[call lookup {\"q\":\"x\"}]]"}),
    )
    .await;
    assert_eq!(first["output"][0]["type"], "function_call");
    let call_id = first["output"][0]["call_id"].as_str().unwrap().to_owned();
    let second = respond(
        &h,
        json!({"model": MODEL, "tools": tools, "previous_response_id": first["id"],
               "input": [{"type": "function_call_output", "call_id": call_id, "output": "42"}]}),
    )
    .await;
    assert_eq!(text_of(&second), format!("TOOL RESULT {call_id}: 42"));
    // The waiting turn went on (same thread), rather than a rebuild.
    let requests = h.model.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(cache_key(&requests[0]), cache_key(&requests[1]));
    // And the next turn continues that thread too.
    let third = respond(
        &h,
        json!({"model": MODEL, "tools": tools, "previous_response_id": second["id"],
               "input": "thanks"}),
    )
    .await;
    assert_eq!(text_of(&third), "ECHO: thanks");
    let requests = h.model.requests();
    assert_eq!(cache_key(&requests[2]), cache_key(&requests[0]));
    h.stop().await;
}

fn chat(messages: &[(&str, String)]) -> Value {
    json!({
        "model": MODEL,
        "messages": messages
            .iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect::<Vec<_>>()
    })
}

async fn chat_answer(h: &Harness, body: &Value) -> String {
    let r = h.post("/v1/chat/completions", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_turn_chat_continues_one_thread_and_an_edited_history_forks() {
    let h = Harness::start().await;
    let mut messages = vec![("system", "Be brief.".to_owned())];
    for turn in 1..=10 {
        messages.push(("user", format!("turn {turn}")));
        let mut body = chat(&messages);
        if turn % 4 == 0 {
            body["stream"] = json!(true);
            let r = h.post("/v1/chat/completions", &body).await;
            let text: String = r
                .sse_data()
                .iter()
                .filter(|d| *d != "[DONE]")
                .filter_map(|d| {
                    serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect();
            messages.push(("assistant", text));
        } else {
            messages.push(("assistant", chat_answer(&h, &body).await));
        }
        assert_eq!(messages.last().unwrap().1, format!("ECHO: turn {turn}"));
    }
    let requests = h.model.requests();
    let keys: HashSet<String> = requests.iter().map(cache_key).collect();
    assert_eq!(keys.len(), 1, "one thread for the chat: {keys:?}");
    assert_eq!(seen(&requests[9]).len(), 19);
    // The provider's cache held the earlier turns, and the response says so.
    let mut probe = messages.clone();
    probe.push(("user", "cached?".into()));
    let r = h.post("/v1/chat/completions", &chat(&probe)).await.json();
    assert!(
        r["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{}",
        r["usage"]
    );
    let requests = h.model.requests();
    assert_eq!(cache_key(&requests[10]), cache_key(&requests[0]));

    // An edited history (turn 3's answer changed): a fresh thread that
    // sees the edit; the original thread is left alone.
    let mut edited = messages.clone();
    edited[6].1 = "ECHO: something else".into();
    edited.push(("user", "after the edit".into()));
    assert_eq!(
        chat_answer(&h, &chat(&edited)).await,
        "ECHO: after the edit"
    );
    let requests = h.model.requests();
    let fork = &requests[11];
    assert_ne!(cache_key(fork), cache_key(&requests[0]));
    assert!(seen(fork).contains(&"assistant: ECHO: something else".to_owned()));
    // The probe took the thread on to its own head: turn 11 from the
    // history before the probe is a fork of that thread, on a new one.
    messages.push(("user", "turn 11".into()));
    assert_eq!(chat_answer(&h, &chat(&messages)).await, "ECHO: turn 11");
    assert_ne!(cache_key(&h.model.requests()[12]), cache_key(&requests[0]));

    // The same history sent twice at once: never one turn for both.
    messages.push(("assistant", "ECHO: turn 11".into()));
    messages.push(("user", "twice".into()));
    let body = chat(&messages);
    let (a, b) = tokio::join!(
        h.post("/v1/chat/completions", &body),
        h.post("/v1/chat/completions", &body)
    );
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    let requests = h.model.requests();
    let last_two: HashSet<String> = requests[13..].iter().map(cache_key).collect();
    assert_eq!(requests.len(), 15);
    assert_eq!(last_two.len(), 2, "two threads for two concurrent requests");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_after_a_worker_restart_and_after_eviction_are_rebuilt_correctly() {
    let h = Harness::start_with(&[
        ("PROXY_THREAD_CACHE_MAX", "1"),
        ("PROXY_ENABLE_METRICS", "true"),
        ("WORKER_HEALTHY_RESET_MS", "1000"),
    ])
    .await;
    // Conversation A, one turn; then B evicts A's thread (cache of one).
    let a1 = respond(&h, json!({"model": MODEL, "input": "alpha one"})).await;
    let b1 = respond(&h, json!({"model": MODEL, "input": "beta one"})).await;
    assert!(
        metric(
            &h,
            "codex_gateway_thread_evictions_total{reason=\"capacity\"}"
        )
        .await
            >= 1.0
    );
    let a2 = respond(
        &h,
        json!({"model": MODEL, "input": "alpha two", "previous_response_id": a1["id"]}),
    )
    .await;
    assert_eq!(text_of(&a2), "ECHO: alpha two");
    let requests = h.model.requests();
    assert_eq!(
        seen(&requests[2]),
        [
            "user: alpha one",
            "assistant: ECHO: alpha one",
            "user: alpha two"
        ]
    );
    assert_ne!(cache_key(&requests[2]), cache_key(&requests[0]));

    // The worker dies: every thread with it. Follow-ups are rebuilt from
    // the store (Responses) or from the request (chat).
    let pid = h.handles.worker.status().pid.expect("pid");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(30), h.handles.worker.wait_ready())
        .await
        .expect("ready again")
        .expect("ready");
    let b2 = respond(
        &h,
        json!({"model": MODEL, "input": "beta two", "previous_response_id": b1["id"]}),
    )
    .await;
    assert_eq!(text_of(&b2), "ECHO: beta two");
    let requests = h.model.requests();
    assert_eq!(
        seen(requests.last().unwrap()),
        [
            "user: beta one",
            "assistant: ECHO: beta one",
            "user: beta two"
        ]
    );
    assert!(
        metric(
            &h,
            "codex_gateway_conversation_continuations_total{outcome=\"rebuilt\"}"
        )
        .await
            >= 2.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_thread_cache_every_turn_is_a_new_thread_and_a_cache_miss() {
    // What every request got before conversations were kept: the contrast
    // the benchmark in docs/benchmarks.md measures.
    let h = Harness::start_with(&[("PROXY_THREAD_CACHE_MAX", "0")]).await;
    let mut messages = vec![];
    for turn in 1..=3 {
        messages.push(("user", format!("turn {turn}")));
        let r = h
            .post("/v1/chat/completions", &chat(&messages))
            .await
            .json();
        assert_eq!(
            r["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
            "a fresh thread is a new prompt-cache key"
        );
        let answer = r["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        messages.push(("assistant", answer));
    }
    let keys: HashSet<String> = h.model.requests().iter().map(cache_key).collect();
    assert_eq!(keys.len(), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_stay_on_one_thread_with_the_bundled_catalogs_code_mode_models() {
    // The catalog real users get (code mode, extra tools in the input), not
    // only the offline model's: a kept thread must work the same there.
    let home = codex_offline_model::HomeOptions {
        bundled_models: true,
        ..codex_offline_model::HomeOptions::default()
    };
    let h = Harness::start_with_home(&[], &home).await;
    for (i, model) in ["gpt-6-sol", "gpt-6.2-sol"].into_iter().enumerate() {
        let mut previous = Value::Null;
        for turn in 1..=3 {
            let response = respond(
                &h,
                json!({"model": model, "input": format!("{model} turn {turn}"),
                       "previous_response_id": previous}),
            )
            .await;
            let text: String = response["output"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| o["type"] == "message")
                .filter_map(|o| o["content"][0]["text"].as_str())
                .collect();
            assert_eq!(text, format!("ECHO: {model} turn {turn}"));
            previous = response["id"].clone();
        }
        let requests = h.model.requests();
        let mine = &requests[i * 3..i * 3 + 3];
        let keys: HashSet<String> = mine.iter().map(cache_key).collect();
        assert_eq!(keys.len(), 1, "{model}: one thread, {keys:?}");
        let last = seen(&mine[2]);
        assert_eq!(
            last,
            [
                format!("user: {model} turn 1"),
                format!("assistant: ECHO: {model} turn 1"),
                format!("user: {model} turn 2"),
                format!("assistant: ECHO: {model} turn 2"),
                format!("user: {model} turn 3"),
            ],
            "{model}"
        );
    }
    h.stop().await;
}
