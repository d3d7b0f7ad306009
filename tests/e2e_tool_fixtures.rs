//! Tool-call flows from `fixtures/tool-calls/*.json`, end to end through the
//! real gateway, the pinned Codex CLI and the offline model.
//!
//! Each flow runs once non-streamed and once streamed (unless its `modes`
//! say otherwise), each on a fresh gateway with the flow's `env`. For every
//! step the response must match `expect`: the non-streamed
//! `choices[i].message` exactly, and the streamed chunks, checked as they
//! arrive (role first, `id`/`type`/`name` only on a call's first fragment,
//! indices in order, one finish per choice, `[DONE]` last) and reassembled
//! into the same message. Tool call ids are run-dependent, so fixtures name
//! them `call_GOLDEN_<n>` by first appearance; a later step's request may use
//! those names and gets the real ids. The fixture format is documented in
//! `fixtures/tool-calls/README.md`.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::{read_until, sse_data, Harness, Reply};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tool-calls")
}

// === fixtures ===

struct Flow {
    name: String,
    env: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    /// `false` = non-streamed, `true` = streamed.
    modes: Vec<bool>,
    /// Tool calls of one response, and the lines of a reply, may come in any
    /// order (codex dispatches parallel calls concurrently).
    any_order: bool,
    steps: Vec<Step>,
}

struct Step {
    request: Value,
    /// `"replace_model"`: the offline model goes away before this request.
    before: Option<String>,
    /// Stream until this text has arrived, then drop the response.
    disconnect_after: Option<String>,
    expect: Option<Value>,
    /// After the step, the gateway's `turns_in_flight` gauge must reach this.
    turns_in_flight: Option<u64>,
    /// Least number of `arguments` fragments each streamed call must arrive in.
    min_fragments: usize,
}

fn load(name: &str) -> Flow {
    let path = fixture_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let v = expand(v);
    let pairs = |v: &Value| -> Vec<(String, String)> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("string values").to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let modes = match v.get("modes") {
        None => vec![false, true],
        Some(Value::Array(m)) => m
            .iter()
            .map(|m| match m.as_str() {
                Some("non-stream") => false,
                Some("stream") => true,
                other => panic!("{name}: unknown mode {other:?}"),
            })
            .collect(),
        Some(other) => panic!("{name}: modes must be an array: {other}"),
    };
    let steps = v["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: steps"))
        .iter()
        .map(|s| Step {
            request: s["request"].clone(),
            before: s["before"].as_str().map(str::to_owned),
            disconnect_after: s["disconnect_after"].as_str().map(str::to_owned),
            expect: s.get("expect").cloned(),
            turns_in_flight: s["turns_in_flight"].as_u64(),
            min_fragments: s["min_fragments"].as_u64().unwrap_or(1) as usize,
        })
        .collect();
    Flow {
        name: name.to_owned(),
        env: pairs(&v["env"]),
        headers: pairs(&v["headers"]),
        modes,
        any_order: v["any_order"].as_bool().unwrap_or(false),
        steps,
    }
}

/// Expands the two directives that keep large fixtures small:
/// `{"$repeat": "unit", "times": N}` and `{"$concat": [string, ...]}`.
fn expand(v: Value) -> Value {
    match v {
        Value::Object(o) if o.contains_key("$repeat") => {
            let times = o["times"].as_u64().expect("$repeat needs times") as usize;
            match expand(o["$repeat"].clone()) {
                Value::String(unit) => Value::String(unit.repeat(times)),
                other => panic!("$repeat of a non-string: {other}"),
            }
        }
        Value::Object(o) if o.contains_key("$concat") => {
            let parts = o["$concat"].as_array().expect("$concat takes an array");
            Value::String(
                parts
                    .iter()
                    .map(|p| match expand(p.clone()) {
                        Value::String(s) => s,
                        other => panic!("$concat of a non-string: {other}"),
                    })
                    .collect(),
            )
        }
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, expand(v))).collect()),
        Value::Array(a) => Value::Array(a.into_iter().map(expand).collect()),
        other => other,
    }
}

// === ids ===

/// Real tool call ids and their `call_GOLDEN_<n>` names, by first appearance.
#[derive(Default)]
struct Ids {
    known: Vec<String>,
}

impl Ids {
    fn golden(&mut self, real: &str) -> String {
        let n = match self.known.iter().position(|k| k == real) {
            Some(i) => i + 1,
            None => {
                self.known.push(real.to_owned());
                self.known.len()
            }
        };
        format!("call_GOLDEN_{n}")
    }

    /// A request with `call_GOLDEN_<n>` strings replaced by the real ids.
    fn to_real(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => match s.strip_prefix("call_GOLDEN_") {
                Some(n) => {
                    let n: usize = n.parse().expect("call_GOLDEN_<n>");
                    Value::String(
                        self.known
                            .get(n - 1)
                            .unwrap_or_else(|| panic!("{s} was never seen"))
                            .clone(),
                    )
                }
                None => v.clone(),
            },
            Value::Array(a) => Value::Array(a.iter().map(|x| self.to_real(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), self.to_real(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Text with every known real id (as a whole word) replaced by its name,
    /// for model replies like `TOOL RESULT call_7: …`.
    fn in_text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        'outer: while !rest.is_empty() {
            for (i, real) in self.known.iter().enumerate() {
                if let Some(after) = rest.strip_prefix(real.as_str()) {
                    let whole = !after
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                    if whole {
                        out.push_str(&format!("call_GOLDEN_{}", i + 1));
                        rest = after;
                        continue 'outer;
                    }
                }
            }
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

// === running ===

async fn run(name: &str) {
    let flow = load(name);
    for &stream in &flow.modes {
        run_mode(&flow, stream).await;
    }
}

async fn run_mode(flow: &Flow, stream: bool) {
    let mode = if stream { "stream" } else { "non-stream" };
    let mut env: Vec<(&str, &str)> = vec![
        ("PROXY_SSE_KEEPALIVE_MS", "0"),
        ("PROXY_ENABLE_METRICS", "true"),
    ];
    env.extend(flow.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut h = Harness::start_with(&env).await;
    let mut ids = Ids::default();
    for (k, step) in flow.steps.iter().enumerate() {
        let ctx = format!("{} [{mode}] step {k}", flow.name);
        match step.before.as_deref() {
            None => {}
            Some("replace_model") => {
                // codex keeps the old address, where nothing listens any more.
                let fresh = codex_offline_model::OfflineModel::start(0).await.unwrap();
                std::mem::replace(&mut h.model, fresh).shutdown().await;
            }
            Some(other) => panic!("{ctx}: unknown `before`: {other}"),
        }
        let mut body = ids.to_real(&step.request);
        body["stream"] = json!(stream);
        let mut req =
            Request::post(h.url("/v1/chat/completions")).header("content-type", "application/json");
        for (k, v) in &flow.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        if let Some(needle) = &step.disconnect_after {
            assert!(stream, "{ctx}: disconnect_after needs the stream mode");
            let res = h.open(req).await;
            assert_eq!(res.status(), 200, "{ctx}");
            let mut res_body = res.into_body();
            read_until(&mut res_body, needle).await;
            drop(res_body);
        } else {
            let reply = h.send(req).await;
            if let Some(expect) = &step.expect {
                check(&ctx, &reply, expect, stream, step, flow, &mut ids);
            }
        }
        if let Some(n) = step.turns_in_flight {
            wait_turns_in_flight(&h, n, &ctx).await;
        }
    }
    h.stop().await;
}

/// Polls `codex_gateway_turns_in_flight` until it equals `want` (10 s at most).
async fn wait_turns_in_flight(h: &Harness, want: u64, ctx: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = h.get("/metrics").await.text();
        let now = text
            .lines()
            .find_map(|l| l.strip_prefix("codex_gateway_turns_in_flight "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{ctx}: no turns_in_flight gauge:\n{text}"));
        if now == want as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: turns_in_flight is {now}, not {want}, after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check(
    ctx: &str,
    reply: &Reply,
    expect: &Value,
    stream: bool,
    step: &Step,
    flow: &Flow,
    ids: &mut Ids,
) {
    let status = expect["status"].as_u64().unwrap_or(200);
    // A streamed failure after the commit window is a 200 with an error frame.
    let stream_status = expect["stream_status"].as_u64().unwrap_or(status);
    let want_status = if stream { stream_status } else { status };
    assert_eq!(
        reply.status.as_u16() as u64,
        want_status,
        "{ctx}: {}",
        reply.text()
    );
    if let Some(error) = expect.get("error") {
        let got = if reply.status == 200 {
            assert!(stream, "{ctx}: an error with 200 only happens mid-stream");
            let data = reply.sse_data();
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{ctx}");
            serde_json::from_str::<Value>(&data[data.len() - 2]).unwrap()
        } else {
            assert_eq!(reply.headers["content-type"], "application/json", "{ctx}");
            reply.json()
        };
        check_error(ctx, &got, error);
        return;
    }
    let choices = expect["choices"].as_array().expect("expect.choices");
    // Both modes come down to `(message with real ids, finish_reason)` per choice.
    let got: Vec<(Value, Value)> = if stream {
        reassemble(ctx, reply, choices.len(), step.min_fragments)
    } else {
        assert_eq!(reply.headers["content-type"], "application/json", "{ctx}");
        let v = reply.json();
        assert_eq!(v["object"], "chat.completion", "{ctx}");
        let got = v["choices"].as_array().expect("choices");
        assert_eq!(got.len(), choices.len(), "{ctx}: {v}");
        got.iter()
            .enumerate()
            .map(|(i, c)| {
                assert_eq!(c["index"], i, "{ctx}");
                (c["message"].clone(), c["finish_reason"].clone())
            })
            .collect()
    };
    for (i, (want, (message, finish))) in choices.iter().zip(got).enumerate() {
        let mut want_message = want["message"].clone();
        if stream {
            // A streamed message has no `refusal`/`annotations` deltas, and its
            // role chunk carries `content: ""` where the non-streamed one has null.
            let m = want_message.as_object_mut().unwrap();
            m.remove("refusal");
            m.remove("annotations");
            if m["content"].is_null() {
                m["content"] = json!("");
            }
        }
        let message = name_ids(ctx, message, &want_message, flow.any_order, ids);
        let (message, want_message) = if flow.any_order {
            (sort_lines(message), sort_lines(want_message))
        } else {
            (message, want_message)
        };
        assert_eq!(message, want_message, "{ctx}: choice {i} message");
        assert_eq!(
            finish, want["finish_reason"],
            "{ctx}: choice {i} finish_reason"
        );
    }
}

/// Replaces real call ids by their `call_GOLDEN_<n>` names, in the calls and
/// in the text. With `any_order`, the calls are first put in the expected
/// order (matched by name and arguments), so names follow the fixture.
fn name_ids(ctx: &str, mut message: Value, want: &Value, any_order: bool, ids: &mut Ids) -> Value {
    if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
        if any_order {
            let key = |c: &Value| {
                (
                    c["function"]["name"].clone(),
                    c["function"]["arguments"].clone(),
                )
            };
            let mut rest = std::mem::take(calls);
            for w in want["tool_calls"].as_array().into_iter().flatten() {
                if let Some(k) = rest.iter().position(|c| key(c) == key(w)) {
                    calls.push(rest.remove(k));
                }
            }
            calls.extend(rest);
        }
        for call in calls {
            let real = call["id"].as_str().expect("a call id").to_owned();
            assert!(real.starts_with("call_"), "{ctx}: {real}");
            call["id"] = json!(ids.golden(&real));
        }
    }
    if let Some(text) = message["content"].as_str() {
        message["content"] = json!(ids.in_text(text));
    }
    message
}

/// The content's lines sorted (for replies listing parallel results).
fn sort_lines(mut message: Value) -> Value {
    if let Some(text) = message["content"].as_str() {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        message["content"] = json!(lines.join("\n"));
    }
    message
}

fn check_error(ctx: &str, got: &Value, want: &Value) {
    let e = &got["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| m.len() > 5),
        "{ctx}: {got}"
    );
    assert!(e.get("param").is_some(), "{ctx}: {got}");
    assert_eq!(e["type"], want["type"], "{ctx}: {got}");
    assert_eq!(e["code"], want["code"], "{ctx}: {got}");
}

/// The streamed choices as `(message, finish_reason)` with the real ids,
/// checked on the way: role chunk first, a call's `id`, `type` and `name` on
/// its first fragment only, call indices in order, nothing after a finish.
/// Every fragment is a JSON string, so a split UTF-8 sequence could not even
/// be sent; the concatenation is compared with the fixture by the caller.
fn reassemble(ctx: &str, reply: &Reply, n: usize, min_fragments: usize) -> Vec<(Value, Value)> {
    assert_eq!(reply.headers["content-type"], "text/event-stream", "{ctx}");
    let text = std::str::from_utf8(&reply.body).expect("the stream is UTF-8");
    let data = sse_data(text);
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "{ctx}: {text}"
    );
    #[derive(Default)]
    struct Acc {
        role: Option<Value>,
        content: String,
        /// (id, name, fragments)
        calls: Vec<(String, String, Vec<String>)>,
        finish: Option<Value>,
    }
    let mut acc: Vec<Acc> = (0..n).map(|_| Acc::default()).collect();
    let mut chunk_id = None;
    for d in &data[..data.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap_or_else(|e| panic!("{ctx}: {e}: {d}"));
        assert!(c.get("error").is_none(), "{ctx}: error frame: {d}");
        assert_eq!(c["object"], "chat.completion.chunk", "{ctx}");
        assert_eq!(
            chunk_id.get_or_insert_with(|| c["id"].clone()),
            &c["id"],
            "{ctx}: one id"
        );
        for choice in c["choices"].as_array().expect("choices") {
            let i = choice["index"].as_u64().expect("index") as usize;
            let a = &mut acc[i];
            assert!(
                a.finish.is_none(),
                "{ctx}: choice {i} has a chunk after its finish: {d}"
            );
            let delta = &choice["delta"];
            if let Some(role) = delta.get("role") {
                assert!(a.role.is_none(), "{ctx}: a second role chunk");
                a.role = Some(role.clone());
            } else {
                assert!(
                    a.role.is_some(),
                    "{ctx}: choice {i} did not start with its role"
                );
            }
            if let Some(t) = delta["content"].as_str() {
                a.content.push_str(t);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let k = call["index"].as_u64().expect("tool call index") as usize;
                let args = call["function"]["arguments"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{ctx}: arguments must be a string: {call}"))
                    .to_owned();
                if k == a.calls.len() {
                    let id = call["id"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{ctx}: first fragment without id: {call}"));
                    assert_eq!(call["type"], "function", "{ctx}");
                    let name = call["function"]["name"]
                        .as_str()
                        .expect("first fragment has the name");
                    a.calls.push((id.to_owned(), name.to_owned(), vec![args]));
                } else {
                    assert!(
                        k + 1 == a.calls.len(),
                        "{ctx}: tool call index {k} out of order"
                    );
                    assert!(
                        call.get("id").is_none() && call["function"].get("name").is_none(),
                        "{ctx}: id and name ride on the first fragment only: {call}"
                    );
                    a.calls[k].2.push(args);
                }
            }
            if !choice["finish_reason"].is_null() {
                a.finish = Some(choice["finish_reason"].clone());
            }
        }
    }
    acc.into_iter()
        .enumerate()
        .map(|(i, a)| {
            assert_eq!(a.role, Some(json!("assistant")), "{ctx}: choice {i}");
            let mut message = json!({"role": "assistant", "content": a.content});
            if !a.calls.is_empty() {
                message["tool_calls"] = a
                    .calls
                    .iter()
                    .map(|(id, name, fragments)| {
                        assert!(
                            fragments.len() >= min_fragments,
                            "{ctx}: {id} came in {} fragments, expected at least {min_fragments}",
                            fragments.len()
                        );
                        json!({"id": id, "type": "function",
                               "function": {"name": name, "arguments": fragments.concat()}})
                    })
                    .collect();
            }
            let finish = a
                .finish
                .unwrap_or_else(|| panic!("{ctx}: choice {i} never finished"));
            (message, finish)
        })
        .collect()
}

// === the flows ===

/// Every fixture that must pass.
const FLOWS: &[&str] = &[
    "structured_round_trip",
    "parallel_calls",
    "parallel_off_one_call_per_response",
    "textual_blocks_openai_json",
    "textual_blocks_obsidian_xml",
    "big_arguments_structured",
    "big_arguments_textual",
    "big_arguments_obsidian_xml",
    "n2_calls_in_both_choices",
    "error_before_call",
    "error_after_call",
    "disconnect_while_call_pending",
    "abandoned_parked_call",
    // A 6000-delta `<use_tool>` block arriving in one burst: once failed with
    // `stream_overflow` (the turn's subscription buffer overflowed), now a
    // plain flow that keeps that fixed.
    "many_deltas_textual_block",
];

#[test]
fn every_fixture_is_run() {
    let found: BTreeSet<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    let listed: BTreeSet<String> = FLOWS.iter().map(|s| s.to_string()).collect();
    assert_eq!(found, listed);
    for name in &listed {
        let flow = load(name);
        assert!(!flow.steps.is_empty() && !flow.modes.is_empty(), "{name}");
    }
}

macro_rules! flows {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run(stringify!($name)).await;
        }
    )*};
}

flows!(
    structured_round_trip,
    parallel_calls,
    parallel_off_one_call_per_response,
    textual_blocks_openai_json,
    textual_blocks_obsidian_xml,
    big_arguments_structured,
    big_arguments_textual,
    big_arguments_obsidian_xml,
    n2_calls_in_both_choices,
    error_before_call,
    error_after_call,
    disconnect_while_call_pending,
    abandoned_parked_call,
    many_deltas_textual_block,
);

#[test]
fn expand_and_ids_helpers() {
    let v = expand(
        json!({"a": {"$concat": ["x", {"$repeat": {"$concat": ["é", "ß"]}, "times": 2}, "y"]}}),
    );
    assert_eq!(v, json!({"a": "xéßéßy"}));
    let mut ids = Ids::default();
    assert_eq!(ids.golden("call_1"), "call_GOLDEN_1");
    assert_eq!(ids.golden("call_12"), "call_GOLDEN_2");
    assert_eq!(ids.golden("call_1"), "call_GOLDEN_1");
    assert_eq!(
        ids.in_text("TOOL RESULT call_12: a\nTOOL RESULT call_1: call_123"),
        "TOOL RESULT call_GOLDEN_2: a\nTOOL RESULT call_GOLDEN_1: call_123"
    );
    assert_eq!(
        ids.to_real(&json!({"tool_call_id": "call_GOLDEN_2", "x": ["call_GOLDEN_1"]})),
        json!({"tool_call_id": "call_12", "x": ["call_1"]})
    );
}

#[test]
fn any_order_matches_calls_by_name_and_arguments() {
    let call = |id: &str, name: &str, args: &str| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}});
    let got = json!({"role": "assistant", "content": null,
        "tool_calls": [call("call_9", "b", "{}"), call("call_8", "a", "{}")]});
    let want = json!({"role": "assistant", "content": null,
        "tool_calls": [call("call_GOLDEN_1", "a", "{}"), call("call_GOLDEN_2", "b", "{}")]});
    let mut ids = Ids::default();
    assert_eq!(name_ids("t", got.clone(), &want, true, &mut ids), want);
    let mut ids = Ids::default();
    assert_ne!(name_ids("t", got, &want, false, &mut ids), want);
    assert_eq!(
        sort_lines(json!({"content": "b: 2\na: 1"})),
        json!({"content": "a: 1\nb: 2"})
    );
}
