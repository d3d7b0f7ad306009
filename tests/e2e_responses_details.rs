//! What strict Responses clients check beyond the happy path: the
//! WebSocket handshake Codex CLI tries first, the shape of streamed error
//! events (the Vercel AI SDK validates it), and one `item_id` per output
//! item across every event of that item.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use support::{sse_events as events, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_is_refused_at_once_and_http_still_serves() {
    let h = Harness::start().await;
    let handshake = http::Request::get(h.url("/v1/responses"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(http_body_util::Full::default())
        .unwrap();
    let r = h.send(handshake).await;
    assert_eq!(r.status, 426, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], "websocket_not_supported");
    assert!(e["message"].as_str().unwrap().contains("HTTP POST"), "{e}");
    // The fallback works on the same gateway.
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "codex-offline", "input": "hello"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    h.stop().await;
}

/// The real Codex CLI, pointed at the gateway as its OpenAI base URL, tries
/// the WebSocket transport, gets the 426 and falls back to HTTP POST on the
/// same path, counted by the gateway's own metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_codex_cli_falls_back_from_websocket_to_http_post() {
    let h = Harness::start_with(&[("PROXY_ENABLE_METRICS", "true")]).await;
    let client_home = h.dir.join("client-codex-home");
    let workdir = h.dir.join("client-work");
    std::fs::create_dir_all(&client_home).unwrap();
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::write(
        client_home.join("config.toml"),
        format!(
            "model = \"codex-offline\"\nopenai_base_url = \"{}\"\n",
            h.url("/v1")
        ),
    )
    .unwrap();
    let run = tokio::process::Command::new(support::codex_bin())
        .args(["exec", "--skip-git-repo-check", "hello"])
        .current_dir(&workdir)
        .env("CODEX_HOME", &client_home)
        .env("OPENAI_API_KEY", "sk-client")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(90), run)
        .await
        .expect("codex exec within 90 s")
        .expect("codex exec runs");
    let metrics = h.get("/metrics").await.text();
    let count = |method: &str, status: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("codex_gateway_http_requests_total{"))
            .filter(|l| l.contains("route=\"/v1/responses\""))
            .filter(|l| l.contains(&format!("method=\"{method}\"")))
            .filter(|l| status.is_empty() || l.contains(&format!("status=\"{status}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        count("GET", "426") >= 1,
        "no WebSocket attempt: {metrics}\n{log}"
    );
    assert!(count("POST", "") >= 1, "no HTTP fallback: {metrics}\n{log}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_failure_is_an_error_event_with_string_fields_then_response_failed() {
    let h = Harness::start().await;
    // Two deltas reach the client, then the model's stream breaks off.
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "codex-offline", "input": "[[break 2]] one two three", "stream": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let evs = events(&r.text());
    let seqs: Vec<u64> = evs
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().expect("sequence_number"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let (_, error) = evs
        .iter()
        .find(|(n, _)| n == "error")
        .unwrap_or_else(|| panic!("no error event: {}", r.text()));
    assert_eq!(error["type"], "error");
    for field in ["code", "message"] {
        assert!(error[field].is_string(), "{field}: {error}");
        assert!(error["error"][field].is_string(), "error.{field}: {error}");
    }
    assert!(error["error"]["type"].is_string(), "{error}");
    let (last, failed) = evs.last().unwrap();
    assert_eq!(last, "response.failed");
    assert_eq!(failed["response"]["status"], "failed");
    assert!(failed["response"]["error"]["code"].is_string(), "{failed}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_item_keeps_one_id_through_its_events() {
    let h = Harness::start().await;
    let tools = json!([
        {"type": "function", "name": "a", "parameters": {"type": "object", "properties": {}}},
        {"type": "function", "name": "b", "parameters": {"type": "object", "properties": {}}}
    ]);
    for input in ["say something", "[[call a {}]] [[call b {}]]"] {
        let r = h
            .post(
                "/v1/responses",
                &json!({"model": "codex-offline", "input": input, "stream": true, "tools": tools}),
            )
            .await;
        let evs = events(&r.text());
        // output_index -> every id any event of that item named.
        let mut ids: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for (_, d) in &evs {
            let Some(i) = d["output_index"].as_u64() else {
                continue;
            };
            let id = d["item_id"].as_str().or_else(|| d["item"]["id"].as_str());
            ids.entry(i)
                .or_default()
                .insert(id.expect("an id").to_owned());
        }
        let done = &evs.last().unwrap().1["response"]["output"];
        assert!(!ids.is_empty(), "{}", r.text());
        for (i, named) in &ids {
            assert_eq!(named.len(), 1, "item {i} has ids {named:?}");
            assert_eq!(
                done[*i as usize]["id"].as_str(),
                named.iter().next().map(String::as_str),
                "the final response names item {i} the same"
            );
        }
        let distinct: BTreeSet<_> = ids.values().flatten().collect();
        assert_eq!(distinct.len(), ids.len(), "two items share an id: {ids:?}");
    }
    h.stop().await;
}
