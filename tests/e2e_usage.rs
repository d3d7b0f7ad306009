//! Usage accounting through the real CLI: each request's tokens (codex's
//! own accounting, as the response reported them) land in the ledger per
//! key, model and hour, and `GET /v1/usage` shows a key its own usage and
//! an admin key everyone's.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use support::Harness;

fn get(h: &Harness, path: &str, key: &str) -> Request<Full<Bytes>> {
    Request::get(h.url(path))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::default())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_recorded_per_key_and_model_and_each_key_sees_its_own() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("usage-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        "[[keys]]\nname = \"alice\"\nkey = \"sk-alice\"\n\n\
         [[keys]]\nname = \"bob\"\nkey = \"sk-bob\"\n\n\
         [[keys]]\nname = \"ops\"\nkey = \"sk-ops\"\nadmin = true\n",
    )
    .unwrap();
    let h = Harness::start_with(&[("PROXY_API_KEYS_FILE", keys.to_str().unwrap())]).await;
    let mut reported = std::collections::HashMap::new();
    for (key, prompt, stream) in [
        ("sk-alice", "one two three", false),
        ("sk-alice", "four", true),
        ("sk-bob", "five six", false),
    ] {
        let mut body = Harness::chat(prompt, stream);
        if stream {
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        let mut req = h.post_request("/v1/chat/completions", &body);
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        let r = h.send(req).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let usage = if stream {
            let last = r.sse_data().into_iter().rfind(|d| d != "[DONE]").unwrap();
            serde_json::from_str::<Value>(&last).unwrap()["usage"].clone()
        } else {
            r.json()["usage"].clone()
        };
        let total = usage["total_tokens"].as_u64().unwrap();
        assert!(total > 0, "{usage}");
        *reported.entry(key).or_insert(0) += total;
    }

    // The ledger is written off the request path: wait for the three rows.
    let mut all = Value::Null;
    for _ in 0..100 {
        all = h
            .send(get(&h, "/v1/usage?group_by=key,model", "sk-ops"))
            .await
            .json();
        let requests: u64 = all["data"]
            .as_array()
            .map(|rows| rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum())
            .unwrap_or(0);
        if requests == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = all["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{all}");
    let row = |name: &str| rows.iter().find(|r| r["key"] == name).unwrap().clone();
    assert_eq!(row("alice")["requests"], 2);
    assert_eq!(row("alice")["model"], codex_offline_model::MODEL_ID);
    assert_eq!(
        row("alice")["total_tokens"].as_u64().unwrap(),
        reported["sk-alice"]
    );
    assert_eq!(
        row("bob")["total_tokens"].as_u64().unwrap(),
        reported["sk-bob"]
    );

    // A key sees only its own; asking for another's is refused.
    let own = h
        .send(get(&h, "/v1/usage?group_by=key", "sk-bob"))
        .await
        .json();
    assert_eq!(own["data"].as_array().unwrap().len(), 1, "{own}");
    assert_eq!(own["data"][0]["key"], "bob");
    let other = h.send(get(&h, "/v1/usage?key=alice", "sk-bob")).await;
    assert_eq!(other.status, 403);
    assert_eq!(other.json()["error"]["type"], "permission_error");
    // Per hour: one hour, three requests.
    let hours = h
        .send(get(&h, "/v1/usage?group_by=hour", "sk-ops"))
        .await
        .json();
    assert_eq!(hours["data"][0]["requests"], 3, "{hours}");
    assert_eq!(hours["data"][0]["hour"].as_u64().unwrap() % 3600, 0);
    // Bad parameters are OpenAI-shaped 400s.
    let bad = h.send(get(&h, "/v1/usage?group_by=day", "sk-ops")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "group_by");
    let bad = h.send(get(&h, "/v1/usage?start=10&end=5", "sk-ops")).await;
    assert_eq!(bad.status, 400);
    // Without a key: 401.
    assert_eq!(
        h.send(
            Request::get(h.url("/v1/usage"))
                .body(Full::default())
                .unwrap()
        )
        .await
        .status,
        401
    );
    // The ledger is a file under the state directory.
    assert!(h.dir.join("state").join("usage.sqlite3").is_file());
    h.stop().await;
}

/// A response cut by `stop` or `max_tokens` reports the tokens the turn used
/// (codex's accounting, which comes only when the model's response ends),
/// not 0: the same as the uncut answer to the same prompt, whose turn the
/// cut one runs on to, and the ledger counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_cut_by_stop_or_max_tokens_report_the_tokens_used() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("usage-cut-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        "[[keys]]\nname = \"ops\"\nkey = \"sk-ops\"\nadmin = true\n",
    )
    .unwrap();
    let h = Harness::start_with(&[("PROXY_API_KEYS_FILE", keys.to_str().unwrap())]).await;
    let post = |path: &'static str, body: Value| {
        let mut req = h.post_request(path, &body);
        req.headers_mut()
            .insert("authorization", "Bearer sk-ops".parse().unwrap());
        h.send(req)
    };
    let prompt = "alpha beta STOP gamma delta";
    // "ECHO: alpha beta STOP gamma delta": six words, the offline model's
    // output tokens.
    let whole = post("/v1/chat/completions", Harness::chat(prompt, false)).await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    let whole = whole.json()["usage"].clone();
    assert_eq!(whole["completion_tokens"], 6, "{whole}");
    assert!(whole["prompt_tokens"].as_u64().unwrap() > 0, "{whole}");

    let mut body = Harness::chat(prompt, false);
    body["stop"] = serde_json::json!(["STOP"]);
    let cut = post("/v1/chat/completions", body).await;
    assert_eq!(cut.status, 200, "{}", cut.text());
    let cut = cut.json();
    assert_eq!(cut["choices"][0]["message"]["content"], "ECHO: alpha beta ");
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    assert_eq!(cut["usage"]["prompt_tokens"], whole["prompt_tokens"]);
    assert_eq!(cut["usage"]["completion_tokens"], 6, "{cut}");
    assert_eq!(cut["usage"]["total_tokens"], whole["total_tokens"]);

    // Streamed and cut by max_tokens: the usage chunk carries them too.
    let mut body = Harness::chat(prompt, true);
    body["max_tokens"] = serde_json::json!(1);
    body["stream_options"] = serde_json::json!({"include_usage": true});
    let streamed = post("/v1/chat/completions", body).await;
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let chunks: Vec<Value> = streamed
        .sse_data()
        .into_iter()
        .filter(|d| d != "[DONE]")
        .map(|d| serde_json::from_str(&d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "length"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 6, "{usage}");

    // The Responses API, cut by max_output_tokens (16 ≈ 64 characters, the
    // least OpenAI accepts) in a 21-word echo.
    let long: Vec<String> = (1..=20).map(|i| format!("word{i}")).collect();
    let r = post(
        "/v1/responses",
        serde_json::json!({
            "model": codex_offline_model::MODEL_ID,
            "input": long.join(" "),
            "max_output_tokens": 16,
            "store": false,
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = r.json();
    assert_eq!(r["status"], "incomplete", "{r}");
    assert_eq!(r["usage"]["output_tokens"], 21, "{r}");

    // The ledger holds what the responses reported: 4 requests, 3 × 6 + 21
    // output tokens.
    let mut rows = Value::Null;
    for _ in 0..100 {
        rows = h.send(get(&h, "/v1/usage", "sk-ops")).await.json();
        if rows["data"][0]["requests"] == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows["data"][0]["requests"], 4, "{rows}");
    assert_eq!(rows["data"][0]["completion_tokens"], 39, "{rows}");
    h.stop().await;
}

/// The ledger writes in batches off the request path: a request that ended
/// just before a graceful shutdown is still in the ledger file afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_the_last_requests_survives_a_graceful_shutdown() {
    let h = Harness::start().await;
    let mut total = 0;
    for stream in [false, true] {
        let mut body = Harness::chat("last words", stream);
        if stream {
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        let r = h.send(h.post_request("/v1/chat/completions", &body)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let usage = if stream {
            let last = r.sse_data().into_iter().rfind(|d| d != "[DONE]").unwrap();
            serde_json::from_str::<Value>(&last).unwrap()["usage"].clone()
        } else {
            r.json()["usage"].clone()
        };
        total += usage["total_tokens"].as_u64().unwrap();
    }
    // No `GET /v1/usage` (which would have the writer write first): stop at once.
    let file = h.dir.join("state").join("usage.sqlite3");
    h.stop().await;
    let db = rusqlite::Connection::open(&file).unwrap();
    let (requests, tokens): (i64, i64) = db
        .query_row(
            "SELECT SUM(requests), SUM(total_tokens) FROM usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((requests, tokens as u64), (2, total));
}
