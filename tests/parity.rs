//! The parity harness (issue 15): the same scenarios against both backends
//! (`codex app-server` and `codex exec --json`) through the real CLI and the
//! offline model, captured as transcripts (status, the headers that matter,
//! the body or SSE frames), normalised where the backends legitimately
//! differ, and compared: with each other, and with the transcripts stored
//! under `fixtures/parity/` for the pinned CLI version.
//!
//! Fails when the backends diverge on a scenario not marked as a known
//! difference, when a transcript differs from its stored fixture, or when a
//! scenario has no fixture (or a fixture no scenario). `PARITY_UPDATE=1`
//! (`scripts/parity --update`) rewrites the fixtures and the comparison
//! table in `docs/app-server-migration/comparison.md` instead.
//!
//! Normalisations, each with its reason:
//!
//! | what | becomes | why |
//! |---|---|---|
//! | `id`, `call_id`, `item_id`, `response_id` strings | `<id>` | minted per request (random or per-server counters) |
//! | `created`, `created_at`, `completed_at` | `<time>` | wall-clock |
//! | `prompt_tokens`, `input_tokens`, `total_tokens`, `cached_tokens` | `<n>` | the backends' preambles differ (exec adds its own environment context, history is a transcript), so the prompt the model counts differs; output tokens are kept |
//! | runs of text-only deltas (chat `delta.content`, Responses `response.output_text.delta`) | one delta with the joined text | exec sends a message whole, app-server word by word; the text is what a client sees |
//! | `sequence_number` | `<seq>` | counts the deltas, merged above |
//! | headers other than `content-type`, `cache-control`, `retry-after` | dropped | request ids, dates and lengths (which follow the ids) |

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::Harness;

const MODEL: &str = codex_offline_model::MODEL_ID;
const PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
const BACKENDS: [&str; 2] = ["app-server", "exec"];
const KEPT_HEADERS: &[&str] = &["content-type", "cache-control", "retry-after"];

/// One request of the fixed set.
struct Scenario {
    name: &'static str,
    path: &'static str,
    body: Value,
    /// Drop the response after its head instead of reading it.
    disconnect: bool,
    /// A difference between the backends that is expected, and why. The
    /// transcripts are still compared with their fixtures.
    differs: Option<&'static str>,
}

fn chat(messages: Value, extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": messages});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

fn scenarios() -> Vec<Scenario> {
    let s = |name, path, body| Scenario {
        name,
        path,
        body,
        disconnect: false,
        differs: None,
    };
    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}},
                        "required": ["ok"], "additionalProperties": false});
    vec![
        s(
            "plain",
            "/v1/chat/completions",
            chat(user("Hello there"), json!({})),
        ),
        s(
            "streamed",
            "/v1/chat/completions",
            chat(user("[[words 4]]"), json!({"stream": true})),
        ),
        s(
            "include_usage",
            "/v1/chat/completions",
            chat(
                user("[[words 3]]"),
                json!({"stream": true, "stream_options": {"include_usage": true}}),
            ),
        ),
        s(
            "system_and_history",
            "/v1/chat/completions",
            chat(
                json!([
                    {"role": "system", "content": "Answer in French."},
                    {"role": "user", "content": "What is the capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                    {"role": "user", "content": "[[instructions]]"}
                ]),
                json!({}),
            ),
        ),
        Scenario {
            differs: Some(
                "app-server injects history as Responses items, exec sends it as the documented \
                 transcript inside the one user message: the model sees one message, not three",
            ),
            ..s(
                "history_items",
                "/v1/chat/completions",
                chat(
                    json!([
                        {"role": "user", "content": "one"},
                        {"role": "assistant", "content": "uno"},
                        {"role": "user", "content": "[[history]]"}
                    ]),
                    json!({}),
                ),
            )
        },
        s(
            "image",
            "/v1/chat/completions",
            chat(
                json!([{"role": "user", "content": [
                    {"type": "text", "text": "[[images]]"},
                    {"type": "image_url", "image_url": {"url": PNG}}]}]),
                json!({}),
            ),
        ),
        s(
            "response_format",
            "/v1/chat/completions",
            chat(
                user("[[format]]"),
                json!({"response_format": {"type": "json_schema",
                       "json_schema": {"name": "answer", "schema": schema}}}),
            ),
        ),
        s(
            "stop",
            "/v1/chat/completions",
            chat(user("[[words 5]]"), json!({"stop": ["w3"]})),
        ),
        s(
            "n",
            "/v1/chat/completions",
            chat(user("Hello"), json!({"n": 2})),
        ),
        s(
            "provider_429",
            "/v1/chat/completions",
            chat(user("[[error 429]]"), json!({})),
        ),
        s(
            "provider_500",
            "/v1/chat/completions",
            chat(user("[[error 500]]"), json!({})),
        ),
        s(
            "provider_429_streamed",
            "/v1/chat/completions",
            chat(user("[[error 429]]"), json!({"stream": true})),
        ),
        Scenario {
            differs: Some(
                "a model stream cut after two words: app-server has streamed them, so the \
                 client gets 200, the partial text and an error frame; exec sends a message \
                 only whole, so nothing was sent and the failure is a plain 502",
            ),
            ..s(
                "stream_broken",
                "/v1/chat/completions",
                chat(user("[[break 2]] a b c"), json!({"stream": true})),
            )
        },
        s(
            "bad_request",
            "/v1/chat/completions",
            json!({"model": MODEL}),
        ),
        s(
            "responses_plain",
            "/v1/responses",
            json!({"model": MODEL, "input": "Hello there", "store": false}),
        ),
        s(
            "responses_streamed",
            "/v1/responses",
            json!({"model": MODEL, "input": "[[words 3]]", "stream": true, "store": false}),
        ),
        Scenario {
            disconnect: true,
            ..s(
                "disconnect",
                "/v1/chat/completions",
                chat(user("[[slow 3000]] a b c"), json!({"stream": true})),
            )
        },
        // Last: the provider refusing the credentials takes an app-server
        // worker out of rotation until it has a new login.
        s(
            "provider_401",
            "/v1/chat/completions",
            chat(user("[[unauthorized]]"), json!({})),
        ),
    ]
}

// === normalisation ===

fn normalise(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), &*v) {
                    ("id" | "call_id" | "item_id" | "response_id", Value::String(_)) => {
                        *v = json!("<id>")
                    }
                    ("created" | "created_at" | "completed_at", Value::Number(_)) => {
                        *v = json!("<time>")
                    }
                    (
                        "prompt_tokens" | "input_tokens" | "total_tokens" | "cached_tokens",
                        Value::Number(_),
                    ) => *v = json!("<n>"),
                    ("sequence_number", Value::Number(_)) => *v = json!("<seq>"),
                    _ => normalise(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// A chat chunk or Responses event that only adds text: (where, text).
fn text_delta(event: &str, data: &Value) -> Option<(String, String)> {
    if event == "response.output_text.delta" {
        let text = data["delta"].as_str()?.to_owned();
        return Some((format!("r{}", data["output_index"]), text));
    }
    let choices = data.get("choices")?.as_array()?;
    let [choice] = choices.as_slice() else {
        return None;
    };
    let delta = choice.get("delta")?.as_object()?;
    if delta.len() != 1
        || !choice["finish_reason"].is_null()
        || data.get("usage").is_some_and(|u| !u.is_null())
    {
        return None;
    }
    Some((
        format!("c{}", choice["index"]),
        delta.get("content")?.as_str()?.to_owned(),
    ))
}

/// SSE body → normalised lines, runs of text deltas merged.
fn sse_lines(text: &str) -> Vec<String> {
    let mut frames: Vec<(String, Value, Option<String>)> = Vec::new();
    for (event, data) in support::sse_events(text) {
        let raw = text_delta(&event, &data);
        let mut data = data;
        if let Some((at, piece)) = &raw {
            if let Some((_, prev, Some(prev_at))) = frames.last_mut() {
                if prev_at == at {
                    let field = if at.starts_with('r') {
                        &mut prev["delta"]
                    } else {
                        &mut prev["choices"][0]["delta"]["content"]
                    };
                    let joined = format!("{}{piece}", field.as_str().unwrap_or_default());
                    *field = json!(joined);
                    continue;
                }
            }
        }
        normalise(&mut data);
        frames.push((event, data, raw.map(|(at, _)| at)));
    }
    let mut lines: Vec<String> = frames
        .into_iter()
        .map(|(event, data, _)| match event.as_str() {
            "" => format!("data: {data}"),
            e => format!("event: {e} data: {data}"),
        })
        .collect();
    // `[DONE]` is not JSON: sse_events reads it as null.
    for l in &mut lines {
        if l == "data: null" {
            *l = "data: [DONE]".into();
        }
    }
    lines
}

// === capture ===

async fn capture(h: &Harness, s: &Scenario) -> String {
    let mut out = format!("POST {}\n{}\n", s.path, s.body);
    let req = h.post_request(s.path, &s.body);
    if s.disconnect {
        let res = h.open(req).await;
        out.push_str(&head(res.status().as_u16(), res.headers()));
        drop(res);
        // The client is gone: the model stream must be cut and nothing left.
        let deadline = Instant::now() + Duration::from_secs(30);
        while h.model.open_streams() > 0 || h.model.dropped_streams() == 0 {
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        out.push_str(&format!(
            "client disconnected after the head\nmodel streams open: {}, cut: {}\n",
            h.model.open_streams(),
            h.model.dropped_streams()
        ));
        return out;
    }
    let reply = h.send(req).await;
    out.push_str(&head(reply.status.as_u16(), &reply.headers));
    let is_sse = reply
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_sse {
        for line in sse_lines(&reply.text()) {
            out.push_str(&line);
            out.push('\n');
        }
    } else {
        let mut body: Value = serde_json::from_slice(&reply.body).unwrap_or(json!(reply.text()));
        normalise(&mut body);
        out.push_str(&serde_json::to_string_pretty(&body).unwrap());
        out.push('\n');
    }
    out
}

fn head(status: u16, headers: &http::HeaderMap) -> String {
    let mut out = format!("status: {status}\n");
    for name in KEPT_HEADERS {
        if let Some(v) = headers.get(*name) {
            out.push_str(&format!("{name}: {}\n", v.to_str().unwrap_or("?")));
        }
    }
    out
}

// === comparison ===

/// A line diff (longest common subsequence), `-` first, `+` second.
fn diff(first: &str, second: &str) -> String {
    let a: Vec<&str> = first.lines().collect();
    let b: Vec<&str> = second.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cli_version() -> String {
    std::fs::read_to_string(root().join("CODEX_VERSION"))
        .unwrap()
        .trim()
        .to_owned()
}

fn status_of(transcript: &str) -> String {
    transcript
        .lines()
        .find_map(|l| l.strip_prefix("status: "))
        .unwrap_or("?")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_answer_every_scenario_alike() {
    let scenarios = scenarios();
    // One gateway per backend, each with its own offline model, so the
    // model's counters (ids) run alike. Scenarios run one at a time: the
    // disconnect scenario counts the model's cut streams.
    let mut transcripts: BTreeMap<(&str, &str), String> = BTreeMap::new();
    for backend in BACKENDS {
        let h = Harness::start_with(&[("PROXY_BACKEND", backend)]).await;
        for s in &scenarios {
            transcripts.insert((backend, s.name), capture(&h, s).await);
        }
        h.stop().await;
    }

    let version = cli_version();
    let dir = root().join("fixtures/parity");
    let update = std::env::var("PARITY_UPDATE").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut table = String::new();
    for s in &scenarios {
        let first = &transcripts[&("app-server", s.name)];
        let second = &transcripts[&("exec", s.name)];
        let same = first == second;
        let verdict = match (same, s.differs) {
            (true, _) => "same".to_owned(),
            (false, Some(why)) => format!("differs (expected: {why})"),
            (false, None) => {
                failures.push(format!(
                    "scenario `{}`: the backends diverge (- app-server, + exec):\n{}",
                    s.name,
                    diff(first, second)
                ));
                "DIVERGES".to_owned()
            }
        };
        table.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {} |\n",
            s.name,
            s.path,
            status_of(first),
            status_of(second),
            verdict
        ));
        for backend in BACKENDS {
            let got = format!(
                "# codex-cli {version}, backend {backend}, scenario {}\n{}",
                s.name,
                transcripts[&(backend, s.name)]
            );
            let path = dir.join(backend).join(format!("{}.txt", s.name));
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(want) if want == got => {}
                Ok(want) => failures.push(format!(
                    "scenario `{}` on {backend} differs from {} (- stored, + now):\n{}",
                    s.name,
                    path.display(),
                    diff(&want, &got)
                )),
                Err(_) => failures.push(format!(
                    "scenario `{}` on {backend} has no stored transcript {} (run scripts/parity --update)",
                    s.name,
                    path.display()
                )),
            }
        }
    }
    // A stored transcript with no scenario: a scenario was dropped.
    for backend in BACKENDS {
        for entry in std::fs::read_dir(dir.join(backend))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".txt")
                .to_owned();
            if !scenarios.iter().any(|s| s.name == name) {
                failures.push(format!(
                    "stored transcript {backend}/{name}.txt has no scenario"
                ));
            }
        }
    }
    let doc = format!(
        "# Backend comparison (generated)\n\n\
         Written by `scripts/parity --update` (`tests/parity.rs`) with codex-cli {version}: \
         each scenario's normalised transcript on both backends, stored under \
         `fixtures/parity/`. The normalisations and their reasons are listed in \
         `tests/parity.rs`; `scripts/parity` fails on any row that says DIVERGES or on a \
         transcript that changed.\n\n\
         | scenario | path | app-server status | exec status | transcripts |\n\
         |---|---|---|---|---|\n{table}"
    );
    let doc_path = root().join("docs/app-server-migration/comparison.md");
    if update {
        std::fs::create_dir_all(doc_path.parent().unwrap()).unwrap();
        std::fs::write(&doc_path, doc).unwrap();
    } else if std::fs::read_to_string(&doc_path).ok().as_deref() != Some(doc.as_str()) {
        failures.push(format!(
            "{} is out of date (run scripts/parity --update)",
            doc_path.display()
        ));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn the_diff_marks_what_changed() {
    assert_eq!(diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c\n");
    let merged = sse_lines(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\n\
         data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" b\"},\"finish_reason\":null}]}\n\n\
         data: [DONE]\n\n",
    );
    assert_eq!(
        merged,
        [
            r#"data: {"choices":[{"index":0,"delta":{"content":"a b"},"finish_reason":null}]}"#,
            "data: [DONE]"
        ]
    );
}
