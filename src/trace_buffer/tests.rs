//! The buffer against scripted channel lines (no worker): which lines a
//! request's file gets, its name, redaction, and pruning through the buffer.

use std::time::Duration;

use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use super::*;

fn buffer(
    dir: &std::path::Path,
    include_content: bool,
    max_files: usize,
) -> (TraceBuffer, Registry) {
    let mut registry = Registry::default();
    let b = TraceBuffer::new(
        TraceConfig {
            dir: dir.to_path_buf(),
            max_age: Duration::from_secs(3600),
            max_files,
            include_content,
        },
        &mut registry,
    );
    (b, registry)
}

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("trace-buffer-{:016x}", rand::random::<u64>()))
}

fn line(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

/// One request's traffic as codex exchanges it, plus another thread's
/// notification that must not land in this request's file.
fn request(b: &TraceBuffer, id: &str, thread: &str) {
    let id: Arc<str> = id.into();
    b.open(&id);
    CURRENT.sync_scope(Some(id.clone()), || {
        b.on_line(Direction::Out, &line(json!({"id": 7, "method": "thread/start", "params": {"model": "m", "developerInstructions": "be terse"}})));
    });
    b.on_line(
        Direction::In,
        &line(json!({"id": 7, "result": {"thread": {"id": thread}}})),
    );
    CURRENT.sync_scope(Some(id.clone()), || {
        b.on_line(Direction::Out, &line(json!({"id": 8, "method": "turn/start", "params": {"threadId": thread, "input": [{"type": "text", "text": "my question"}]}})));
    });
    b.on_line(Direction::In, &line(json!({"method": "item/agentMessage/delta", "params": {"threadId": thread, "delta": "the answer"}})));
    b.on_line(Direction::In, &line(json!({"method": "item/agentMessage/delta", "params": {"threadId": "someone-else", "delta": "not mine"}})));
    b.on_line(Direction::In, &line(json!({"id": 0, "method": "item/tool/call", "params": {"threadId": thread, "arguments": {"q": 1}}})));
    // Our answer to the worker's request, sent from no request's scope.
    b.on_line(
        Direction::Out,
        &line(json!({"id": 0, "result": {"contentItems": [], "success": true}})),
    );
    b.on_line(Direction::In, &line(json!({"method": "thread/tokenUsage/updated", "params": {"threadId": thread, "tokenUsage": {"last": {"inputTokens": 12}}}})));
    b.on_line(
        Direction::In,
        &line(json!({"method": "turn/completed", "params": {"threadId": thread}})),
    );
    b.finish(&id);
}

fn traces(dir: &std::path::Path) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let v = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_request_gets_one_file_with_its_own_lines_in_order() {
    let dir = scratch();
    let (b, _registry) = buffer(&dir, false, 100);
    request(&b, "req_one", "thr_1");
    let files = traces(&dir);
    assert_eq!(files.len(), 1);
    let (name, doc) = &files[0];
    assert!(name.ends_with("Z-req_one.json"), "{name}");
    assert_eq!(
        name.len(),
        "20261129T213402.123Z-req_one.json".len(),
        "{name}"
    );
    assert_eq!(doc["request_id"], "req_one");
    let methods: Vec<String> = doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["dir"].as_str().unwrap(),
                l["message"]["method"].as_str().unwrap_or("(answer)")
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            "to_worker thread/start",
            "from_worker (answer)",
            "to_worker turn/start",
            "from_worker item/agentMessage/delta",
            "from_worker item/tool/call",
            "to_worker (answer)",
            "from_worker thread/tokenUsage/updated",
            "from_worker turn/completed",
        ]
    );
    assert!(doc["lines"][0]["at_ms"].as_u64().unwrap() > 0);
    // Nothing is left behind for the finished request.
    let routes = b.inner.routes.lock().unwrap();
    assert!(
        routes.recordings.is_empty()
            && routes.threads.is_empty()
            && routes.calls.is_empty()
            && routes.worker_requests.is_empty()
    );
    drop(routes);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn content_is_redacted_by_default_and_kept_when_asked() {
    let dir = scratch();
    let (b, _r) = buffer(&dir, false, 100);
    request(&b, "req_redacted", "thr_2");
    let text = std::fs::read_to_string(
        std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    for content in ["be terse", "my question", "the answer", "\"q\""] {
        assert!(!text.contains(content), "{content} in the trace");
    }
    assert!(
        text.contains("[redacted, 10 chars]"),
        "the answer is marked as redacted"
    );
    assert!(text.contains("\"inputTokens\": 12"), "counts stay");
    std::fs::remove_dir_all(&dir).unwrap();

    let dir = scratch();
    let (b, _r) = buffer(&dir, true, 100);
    request(&b, "req_full", "thr_3");
    let text = std::fs::read_to_string(
        std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    assert!(text.contains("my question") && text.contains("the answer"));
    assert!(text.contains("\"content_included\": true"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_file_count_is_capped_and_pruning_is_counted() {
    let dir = scratch();
    let (b, registry) = buffer(&dir, false, 2);
    for i in 0..4 {
        request(&b, &format!("req_{i}"), &format!("thr_{i}"));
        // Distinct modification times, so "oldest" is well defined.
        std::thread::sleep(Duration::from_millis(15));
    }
    let names: Vec<String> = traces(&dir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[0].ends_with("req_2.json") && names[1].ends_with("req_3.json"),
        "{names:?}"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("trace_files_written_total 4"), "{text}");
    assert!(
        text.contains("trace_files_pruned_total{reason=\"count\"} 2"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_line_sent_outside_the_request_inside_its_scope_is_not_its_own() {
    let dir = scratch();
    let (b, _r) = buffer(&dir, false, 100);
    let id: Arc<str> = "req_refill".into();
    b.open(&id);
    CURRENT.sync_scope(Some(id.clone()), || {
        b.on_line(
            Direction::Out,
            &line(json!({"id": 3, "method": "turn/start", "params": {"threadId": "t1"}})),
        );
        // The warm thread the turn's start refills, for a later request.
        super::outside_request(|| {
            b.on_line(
                Direction::Out,
                &line(json!({"id": 4, "method": "thread/start", "params": {}})),
            );
        });
    });
    b.on_line(Direction::In, &line(json!({"id": 3, "result": {}})));
    b.on_line(
        Direction::In,
        &line(json!({"id": 4, "result": {"thread": {"id": "t2"}}})),
    );
    b.finish(&id);
    let files = traces(&dir);
    assert_eq!(files.len(), 1);
    let methods_and_ids: Vec<String> = files[0].1["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["message"]["method"].as_str().unwrap_or("answer"),
                l["message"]["id"]
            )
        })
        .collect();
    assert_eq!(methods_and_ids, ["turn/start 3", "answer 3"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lines_outside_any_request_are_not_kept() {
    let dir = scratch();
    let (b, _r) = buffer(&dir, false, 100);
    b.on_line(
        Direction::Out,
        &line(json!({"id": 1, "method": "initialize", "params": {}})),
    );
    b.on_line(Direction::In, &line(json!({"id": 1, "result": {}})));
    b.on_line(
        Direction::In,
        &line(json!({"method": "x", "params": {"threadId": "t"}})),
    );
    let routes = b.inner.routes.lock().unwrap();
    assert!(routes.calls.is_empty() && routes.recordings.is_empty());
    drop(routes);
    assert!(!dir.exists(), "nothing written");
}
