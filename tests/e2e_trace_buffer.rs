//! The JSON-RPC trace buffer through the real Codex CLI: a request's file
//! is named by its `x-request-id`, holds its traffic with the worker, and
//! holds neither its text nor any key.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::Harness;

fn trace_of(dir: &Path, request_id: &str) -> Option<Value> {
    let suffix = format!("-{request_id}.json");
    let entry = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))?;
    serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()
}

async fn wait_for_trace(dir: &Path, request_id: &str) -> Value {
    // The file is written on a blocking thread once the body has ended.
    for _ in 0..200 {
        if let Some(v) = trace_of(dir, request_id) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no trace for {request_id} in {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_leaves_a_redacted_trace_named_by_its_request_id() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("traces-{:016x}", rand::random::<u64>()));
    let key = "sk-trace-test-Key-0042";
    let h = Harness::start_with(&[
        ("PROXY_TRACE_BUFFER", "true"),
        ("PROXY_TRACE_DIR", dir.to_str().unwrap()),
        ("PROXY_TRACE_MAX_FILES", "2"),
        ("PROXY_API_KEY", key),
        ("PROXY_ENABLE_METRICS", "true"),
        // Each request starts its own thread, so its trace holds a
        // thread/start and its answer. With a warm thread it would hold
        // none: the thread it takes was started before it, and the one its
        // turn's start refills belongs to no request's trace (it once did,
        // and its answer could come after the trace was written).
        ("PROXY_WARM_THREADS", "0"),
    ])
    .await;
    let mut ids = Vec::new();
    for (i, stream) in [false, true, false].into_iter().enumerate() {
        let mut req = h.post_request(
            "/v1/chat/completions",
            &Harness::chat(&format!("confidential words {i}"), stream),
        );
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        let r = h.send(req).await;
        assert_eq!(r.status, 200, "{}", r.text());
        ids.push(r.headers["x-request-id"].to_str().unwrap().to_owned());
        wait_for_trace(&dir, ids.last().unwrap()).await;
    }
    let doc = wait_for_trace(&dir, &ids[2]).await;
    assert_eq!(doc["request_id"], ids[2].as_str());
    let methods: Vec<&str> = doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"]["method"].as_str())
        .collect();
    for m in [
        "thread/start",
        "turn/start",
        "item/agentMessage/delta",
        "turn/completed",
    ] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }
    // thread/start's answer (the thread id) is in it.
    assert!(doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["message"]["result"]["thread"]["id"].is_string()));
    let text = doc.to_string();
    assert!(
        !text.contains("confidential words"),
        "the prompt is redacted"
    );
    assert!(!text.contains(key), "no key");
    assert!(
        !text.contains(codex_offline_model::API_KEY),
        "no provider key"
    );

    // PROXY_TRACE_MAX_FILES=2: the first request's trace is gone.
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(trace_of(&dir, &ids[0]).is_none());
    let m = h.get("/metrics").await.text();
    assert!(
        m.contains("codex_gateway_trace_files_written_total 3"),
        "{m}"
    );
    assert!(
        m.contains("codex_gateway_trace_files_pruned_total{reason=\"count\"} 1"),
        "{m}"
    );
    h.stop().await;
}
