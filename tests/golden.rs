//! Golden SSE transcripts: each `fixtures/golden/<name>.request.json` is sent
//! to the real gateway (real Codex CLI, offline model) and the streamed body
//! must equal `fixtures/golden/<name>.sse` byte for byte, after the ids and
//! times that change from run to run are normalised (see [`normalise`]).
//!
//! The point is to notice *any* change in what clients receive: key order,
//! escaping, chunk boundaries, the role/finish/usage/[DONE] framing. Keep-alive
//! comments are switched off (`PROXY_SSE_KEEPALIVE_MS=0`) so the bytes do not
//! depend on timing.
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the `.sse` files from
//! what the gateway sends now (after the same structural checks a reviewer
//! would make: role chunk first, one finish chunk per choice, `[DONE]` last).
//! Read the diff before committing it: an update blesses whatever the gateway
//! does.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use support::Harness;

/// Every case this suite must have; a missing or extra fixture fails the test.
const CASES: &[&str] = &[
    "chat_simple",
    "history",
    "usage",
    "stop_sequence",
    "length_cut",
    "image",
    "error_mid_stream",
    "tool_call_openai_json",
    "tool_call_obsidian_xml",
    "use_tool_text_openai_json",
    "use_tool_text_obsidian_xml",
];

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden")
}

/// Replaces what differs between runs: completion ids (`chatcmpl-GOLDEN`),
/// `created` (0), tool call ids in `"id":"call_…"` fields (`call_GOLDEN_<n>`,
/// numbered by first appearance, so the same id keeps its number), and the
/// prompt's share of the usage.
///
/// Tool call ids: the gateway makes them up for `<use_tool>` blocks, and the
/// offline model's `call_N` depend on a per-server counter. Ids inside text
/// content are the client's own and stay.
///
/// Usage: codex puts an `<environment_context>` (working directory, shell,
/// timezone) before the prompt, so `prompt_tokens` depends on the machine
/// and on `CARGO_TARGET_DIR`. It becomes 0 and `total_tokens` loses the same
/// amount, so the golden still shows `total = prompt + completion`;
/// `completion_tokens` (one per model delta) stays exact.
fn normalise(body: &str) -> String {
    let body = replace_field_values(body, "\"id\":\"chatcmpl-", |_| "GOLDEN".to_owned());
    let body = replace_number(&body, "\"created\":", |_| 0);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let body = replace_field_values(&body, "\"id\":\"call_", |id| {
        let next = seen.len() + 1;
        let n = *seen.entry(id.to_owned()).or_insert(next);
        format!("GOLDEN_{n}")
    });
    let mut prompt = Vec::new();
    let body = replace_number(&body, "\"prompt_tokens\":", |p| {
        assert!(p > 0, "a prompt has tokens");
        prompt.push(p);
        0
    });
    let mut prompt = prompt.into_iter();
    replace_number(&body, "\"total_tokens\":", |t| {
        let p = prompt.next().expect("prompt_tokens before total_tokens");
        t.checked_sub(p).expect("total_tokens >= prompt_tokens")
    })
}

/// Replaces the rest of each string value that starts with `prefix` (up to
/// its closing quote) with `f(rest)`.
fn replace_field_values(body: &str, prefix: &str, mut f: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find(prefix) {
        let value_start = at + prefix.len();
        out.push_str(&rest[..value_start]);
        let tail = &rest[value_start..];
        let end = tail.find('"').expect("a closed string");
        out.push_str(&f(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Replaces the number after each `key` with `f(number)`.
fn replace_number(body: &str, key: &str, mut f: impl FnMut(u64) -> u64) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find(key) {
        out.push_str(&rest[..at + key.len()]);
        let tail = &rest[at + key.len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = tail[..digits].parse().expect("a whole number");
        out.push_str(&f(n).to_string());
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// What OpenAI's streams look like, checked on every transcript (also before
/// an update writes one): only `data:` frames (no comments, no `event:`),
/// `[DONE]` once and last, one role chunk first per choice, one finish chunk
/// per choice unless the stream ends in an error frame, nothing but a usage
/// chunk after the last finish, one id for all chunks.
fn check_shape(name: &str, body: &str, n: usize) {
    assert!(body.ends_with("\n\n"), "{name}: body must end a frame");
    let frames: Vec<&str> = body[..body.len() - 2].split("\n\n").collect();
    for f in &frames {
        assert!(
            f.starts_with("data: ") && !f.contains('\n'),
            "{name}: not a single data line: {f:?}"
        );
    }
    let data: Vec<&str> = frames.iter().map(|f| &f["data: ".len()..]).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{name}: [DONE] last");
    assert_eq!(
        data.iter().filter(|d| **d == "[DONE]").count(),
        1,
        "{name}: one [DONE]"
    );
    let values: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{name}: {e}: {d}")))
        .collect();
    let errored = values.last().is_some_and(|v| v.get("error").is_some());
    let chunks = if errored {
        &values[..values.len() - 1]
    } else {
        &values[..]
    };
    assert!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "{name}: an error frame is the last frame before [DONE]"
    );
    for c in chunks {
        assert_eq!(c["object"], "chat.completion.chunk", "{name}: {c}");
        assert_eq!(c["id"], chunks[0]["id"], "{name}: one id");
    }
    for i in 0..n {
        let of_choice: Vec<&Value> = chunks
            .iter()
            .filter(|c| {
                c["choices"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|x| x["index"] == i))
            })
            .collect();
        assert_eq!(
            of_choice[0]["choices"][0]["delta"]["role"], "assistant",
            "{name}: choice {i} starts with the role chunk"
        );
        assert_eq!(
            of_choice
                .iter()
                .filter(|c| c["choices"][0]["delta"].get("role").is_some())
                .count(),
            1,
            "{name}: one role chunk for choice {i}"
        );
        let finishes: Vec<usize> = of_choice
            .iter()
            .enumerate()
            .filter(|(_, c)| !c["choices"][0]["finish_reason"].is_null())
            .map(|(k, _)| k)
            .collect();
        if errored {
            assert!(finishes.len() <= 1, "{name}: choice {i}: {finishes:?}");
        } else {
            assert_eq!(
                finishes,
                vec![of_choice.len() - 1],
                "{name}: choice {i} ends with exactly one finish chunk"
            );
        }
    }
    if let Some(usage_at) = chunks.iter().position(|c| c["usage"].is_object()) {
        assert_eq!(usage_at, chunks.len() - 1, "{name}: usage chunk is last");
        assert_eq!(chunks[usage_at]["choices"], serde_json::json!([]));
    }
}

/// A fixture request: `{"headers": {...}, "body": {...}}`.
fn load_request(path: &Path) -> (Vec<(String, String)>, Value) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let headers = v["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().expect("header values are strings").into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (headers, v["body"].clone())
}

/// The first line where two transcripts part, for a readable failure.
fn first_difference(expected: &str, got: &str) -> String {
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    for i in 0..e.len().max(g.len()) {
        let (a, b) = (e.get(i).copied(), g.get(i).copied());
        if a != b {
            return format!("line {}:\n  expected: {a:?}\n  got:      {b:?}", i + 1);
        }
    }
    "no line differs (line endings?)".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_transcripts() {
    let dir = golden_dir();
    let found: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("fixtures/golden")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".request.json").map(str::to_owned)
        })
        .collect();
    let wanted: BTreeSet<String> = CASES.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        found, wanted,
        "fixtures/golden holds exactly the listed cases"
    );

    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let h = Harness::start_with(&[("PROXY_SSE_KEEPALIVE_MS", "0")]).await;
    let mut failures = Vec::new();
    for name in CASES {
        let (headers, body) = load_request(&dir.join(format!("{name}.request.json")));
        let mut req =
            Request::post(h.url("/v1/chat/completions")).header("content-type", "application/json");
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let reply = h.send(req).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(reply.headers["content-type"], "text/event-stream", "{name}");
        let got = normalise(&reply.text());
        let n = body["n"].as_u64().unwrap_or(1) as usize;
        check_shape(name, &got, n);
        let sse = dir.join(format!("{name}.sse"));
        if update {
            std::fs::write(&sse, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&sse).unwrap_or_else(|e| {
            panic!("{sse:?}: {e} (UPDATE_GOLDEN=1 writes it)");
        });
        check_shape(name, &expected, n);
        if got != expected {
            failures.push(format!("{name}: {}", first_difference(&expected, &got)));
        }
    }
    h.stop().await;
    assert!(
        failures.is_empty(),
        "transcripts differ from fixtures/golden (UPDATE_GOLDEN=1 rewrites them; review the diff):\n{}",
        failures.join("\n")
    );
}

#[test]
fn normalise_replaces_only_run_dependent_values() {
    let raw = concat!(
        "data: {\"id\":\"chatcmpl-abc123\",\"created\":1712345678,\"choices\":[{\"delta\":",
        "{\"tool_calls\":[{\"index\":0,\"id\":\"call_Zx9\",\"type\":\"function\"}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-abc123\",\"created\":1712345679,\"choices\":[{\"delta\":",
        "{\"tool_calls\":[{\"index\":1,\"id\":\"call_7\"},{\"id\":\"call_Zx9\"}],",
        "\"content\":\"output call_1: x\"}}]}\n\n",
        "data: {\"usage\":{\"prompt_tokens\":224,\"completion_tokens\":5,\"total_tokens\":229}}\n\n"
    );
    let want = concat!(
        "data: {\"id\":\"chatcmpl-GOLDEN\",\"created\":0,\"choices\":[{\"delta\":",
        "{\"tool_calls\":[{\"index\":0,\"id\":\"call_GOLDEN_1\",\"type\":\"function\"}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-GOLDEN\",\"created\":0,\"choices\":[{\"delta\":",
        "{\"tool_calls\":[{\"index\":1,\"id\":\"call_GOLDEN_2\"},{\"id\":\"call_GOLDEN_1\"}],",
        "\"content\":\"output call_1: x\"}}]}\n\n",
        "data: {\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":5,\"total_tokens\":5}}\n\n"
    );
    assert_eq!(normalise(raw), want);
}
