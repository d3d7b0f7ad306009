//! The `codex app-server` bindings (`src/protocol`) against the pinned CLI.
//!
//! Codex's serde ignores unknown fields and fills in defaults, so a binding
//! that misspells a key we *send* is not rejected: the setting is silently
//! dropped. And a binding that insists on a field codex may omit or null fails
//! to decode a perfectly valid message, which surfaces as a dead turn. Both
//! only show up against the real schema, so this test reads the slice of it
//! that `scripts/check-protocol.sh` keeps in `fixtures/protocol/schema-subset.json`
//! (regenerated from the pinned binary) and checks:
//!
//! * what we send: a fully-populated value of every params type serializes to
//!   keys the schema declares, with every required one present and every
//!   value of the declared type (a small JSON-schema validator, below);
//! * what we read: the *smallest* message the schema allows (optional fields
//!   absent, nullable ones null) and the *fullest* one both decode into the
//!   binding;
//! * the canned answers the channel gives to server requests nobody takes;
//! * real lines captured from the pinned codex (`fixtures/protocol/samples`,
//!   redone with `fixtures/protocol/capture.py`) decode into the bindings, the
//!   bindings keep their values, params re-encode to the same line, and every
//!   binding field occurs on some captured line (a misspelt `#[serde(default)]`
//!   field would otherwise decode to its default forever);
//! * the pin itself: `PINNED_CODEX_VERSION`, `CODEX_VERSION` and the fixture agree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use codex_completions_api::protocol::*;
use codex_completions_api::rpc::{
    RequestId, ServerRequest, ServerRequestPolicy, DYNAMIC_TOOL_CALL,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// === the schema subset ===

struct Schema {
    doc: Value,
}

impl Schema {
    fn load() -> Schema {
        let path = root().join("fixtures/protocol/schema-subset.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run scripts/check-protocol.sh --update)",
                path.display()
            )
        });
        Schema {
            doc: serde_json::from_str(&text).expect("schema-subset.json is JSON"),
        }
    }

    fn def(&self, name: &str) -> &Value {
        self.doc["definitions"]
            .get(name)
            .unwrap_or_else(|| panic!("definition {name} is not in the schema subset"))
    }

    /// Follows `$ref`s to the schema they name.
    fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            s = self.def(r.strip_prefix("#/definitions/").expect("local $ref"));
        }
        s
    }

    /// `(params, response)` definition names of a client request or server request.
    fn request(&self, table: &str, method: &str) -> (&str, &str) {
        let entry = &self.doc[table][method];
        let name = |k: &str| {
            entry[k].as_str().unwrap_or_else(|| {
                panic!("`{method}` is not in {table} of the schema subset: removed or renamed upstream?")
            })
        };
        (name("params"), name("response"))
    }

    fn notification(&self, method: &str) -> &str {
        self.doc["notifications"][method].as_str().unwrap_or_else(|| {
            panic!("notification `{method}` is not in the schema subset: removed or renamed upstream?")
        })
    }

    // --- validation ---

    /// Errors of `v` against `s`; empty when it conforms.
    ///
    /// Stricter than JSON Schema in one way, on purpose: an object key the
    /// schema does not declare is an error unless `additionalProperties` says
    /// otherwise, because codex would silently ignore it.
    fn errors(&self, v: &Value, s: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        self.check(v, s, "$", false, &mut errs);
        errs
    }

    fn check(&self, v: &Value, s: &Value, path: &str, keys_checked: bool, errs: &mut Vec<String>) {
        match s {
            Value::Bool(true) => return,
            Value::Bool(false) => return errs.push(format!("{path}: no value is allowed here")),
            _ => {}
        }
        if s.get("$ref").is_some() {
            return self.check(v, self.resolve(s), path, keys_checked, errs);
        }
        let own_props = s.get("properties").and_then(Value::as_object);
        // Branches of a schema that also has `properties` only add to its object.
        let branch_keys_checked = keys_checked || own_props.is_some();
        for b in s
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.check(v, b, path, branch_keys_checked, errs);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = s.get(key).and_then(Value::as_array) {
                let mut best: Option<Vec<String>> = None;
                for b in branches {
                    let mut e = Vec::new();
                    self.check(v, b, path, branch_keys_checked, &mut e);
                    if e.is_empty() {
                        best = None;
                        break;
                    }
                    if best.as_ref().is_none_or(|x| e.len() < x.len()) {
                        best = Some(e);
                    }
                }
                if let Some(e) = best {
                    let names: Vec<String> = branches.iter().map(|b| self.describe(b)).collect();
                    errs.push(format!(
                        "{path}: {v} is none of {}; closest:",
                        names.join(" | ")
                    ));
                    errs.extend(e.into_iter().map(|e| format!("  {e}")));
                }
            }
        }
        if let Some(types) = s.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let ok = types.iter().any(|t| match *t {
                "null" => v.is_null(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                "array" => v.is_array(),
                "object" => v.is_object(),
                _ => false,
            });
            if !ok {
                return errs.push(format!("{path}: {v} is not of type {types:?}"));
            }
        }
        if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
            if !allowed.contains(v) {
                errs.push(format!("{path}: {v} is not one of {allowed:?}"));
            }
        }
        if let (Some(min), Some(text)) = (s.get("minLength").and_then(Value::as_u64), v.as_str()) {
            if (text.chars().count() as u64) < min {
                errs.push(format!("{path}: {v} is shorter than {min}"));
            }
        }
        if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
            for (i, x) in arr.iter().enumerate() {
                self.check(x, items, &format!("{path}[{i}]"), false, errs);
            }
        }
        let Some(obj) = v.as_object() else { return };
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().unwrap();
            if !obj.contains_key(req) {
                errs.push(format!("{path}: required property `{req}` is missing"));
            }
        }
        let empty = Map::new();
        let props = own_props.unwrap_or(&empty);
        for (k, x) in obj {
            if let Some(ps) = props.get(k) {
                self.check(x, ps, &format!("{path}.{k}"), false, errs);
            }
        }
        let declares_object = own_props.is_some() || s.get("additionalProperties").is_some();
        if keys_checked || !declares_object {
            return;
        }
        let branch_props = self.branch_properties(s);
        for (k, x) in obj {
            if props.contains_key(k) || branch_props.contains(k) {
                continue;
            }
            match s.get("additionalProperties") {
                Some(Value::Bool(true)) => {}
                Some(extra @ Value::Object(_)) => {
                    self.check(x, extra, &format!("{path}.{k}"), false, errs)
                }
                _ => errs.push(format!(
                    "{path}: `{k}` is not a property the schema declares"
                )),
            }
        }
    }

    /// A branch of a union, as a reader would name it.
    fn describe(&self, b: &Value) -> String {
        let b = self.resolve(b);
        if let Some(e) = b.get("enum").and_then(Value::as_array) {
            return e
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(" | ");
        }
        if let Some(t) = b.get("title").and_then(Value::as_str) {
            return t.to_owned();
        }
        b.get("type")
            .map_or_else(|| "{…}".to_owned(), Value::to_string)
    }

    /// Property names declared by the `allOf`/`anyOf`/`oneOf` branches of `s`.
    fn branch_properties(&self, s: &Value) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for key in ["allOf", "anyOf", "oneOf"] {
            for b in s.get(key).and_then(Value::as_array).into_iter().flatten() {
                let b = self.resolve(b);
                if let Some(p) = b.get("properties").and_then(Value::as_object) {
                    out.extend(p.keys().cloned());
                }
                out.extend(self.branch_properties(b));
            }
        }
        out
    }

    // --- generation ---

    /// The smallest value `s` allows: optional properties absent, null where
    /// null is allowed, empty arrays, the first enum value.
    fn minimal(&self, s: &Value) -> Value {
        self.generate(s, false, 0)
    }

    /// A value with every property present, non-null alternatives and
    /// one-element arrays, down to a depth where it falls back to `minimal`.
    fn full(&self, s: &Value) -> Value {
        self.generate(s, true, 0)
    }

    fn generate(&self, s: &Value, full: bool, depth: usize) -> Value {
        let full = full && depth < 8;
        let s = self.resolve(s);
        if s == &Value::Bool(true) || s.as_object().is_some_and(|o| o.is_empty()) {
            return json!({});
        }
        if let Some(first) = s
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return first.clone();
        }
        let own_props = s.get("properties").and_then(Value::as_object);
        let mut branch = None;
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(bs) = s.get(key).and_then(Value::as_array) {
                let non_null: Vec<&Value> = bs
                    .iter()
                    .filter(|b| !is_null_schema(self.resolve(b)))
                    .collect();
                if key != "allOf" && !full && own_props.is_none() && non_null.len() < bs.len() {
                    return Value::Null;
                }
                branch = non_null.first().map(|b| self.generate(b, full, depth + 1));
                if key == "allOf" && own_props.is_none() {
                    return branch.unwrap_or(Value::Null);
                }
            }
        }
        if let (Some(b), None) = (&branch, own_props) {
            return b.clone();
        }
        let types: Vec<&str> = match s.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec!["object"],
        };
        if !full && types.contains(&"null") {
            return Value::Null;
        }
        match types
            .iter()
            .copied()
            .find(|t| *t != "null")
            .unwrap_or("null")
        {
            "null" => Value::Null,
            "string" => json!("x"),
            "integer" | "number" => json!(0),
            "boolean" => json!(false),
            "array" if full => match s.get("items") {
                Some(items) => json!([self.generate(items, true, depth + 1)]),
                None => json!([]),
            },
            "array" => json!([]),
            _ => {
                let mut obj = match branch {
                    Some(Value::Object(b)) => b,
                    _ => Map::new(),
                };
                let required: BTreeSet<&str> = s
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                for (k, ps) in own_props.into_iter().flatten() {
                    if full || required.contains(k.as_str()) {
                        obj.insert(k.clone(), self.generate(ps, full, depth + 1));
                    }
                }
                Value::Object(obj)
            }
        }
    }
}

fn is_null_schema(s: &Value) -> bool {
    s.get("type") == Some(&json!("null"))
}

fn assert_conforms(schema: &Schema, def: &str, v: &Value, what: &str) {
    let errs = schema.errors(v, schema.def(def));
    assert!(
        errs.is_empty(),
        "{what} does not conform to {def}:\n{}\nvalue: {v:#}",
        errs.join("\n")
    );
}

fn type_name<T>() -> &'static str {
    std::any::type_name::<T>().rsplit("::").next().unwrap()
}

/// A value we send: every key declared, every required key present, types right.
fn sends<T: Serialize>(schema: &Schema, def: &str, value: &T) {
    let v = serde_json::to_value(value).unwrap();
    assert_no_nulls(&v, type_name::<T>());
    assert_conforms(
        schema,
        def,
        &v,
        &format!("a fully-populated {}", type_name::<T>()),
    );
}

/// "Fully populated" must mean it: an Option left `None` would hide its key.
fn assert_no_nulls(v: &Value, what: &str) {
    match v {
        Value::Null => panic!("the {what} test value leaves a field empty; populate it"),
        Value::Array(a) => a.iter().for_each(|x| assert_no_nulls(x, what)),
        Value::Object(o) => o.values().for_each(|x| assert_no_nulls(x, what)),
        _ => {}
    }
}

/// A message we read: the smallest and the fullest the schema allows both decode.
fn decodes<T: DeserializeOwned>(schema: &Schema, def: &str) {
    let s = schema.def(def);
    for (label, v) in [("minimal", schema.minimal(s)), ("full", schema.full(s))] {
        // The generator and the validator keep each other honest.
        assert_conforms(schema, def, &v, &format!("the generated {label} {def}"));
        if let Err(e) = serde_json::from_value::<T>(v.clone()) {
            panic!(
                "a valid {label} {def} does not decode into {}: {e}\n{v:#}",
                type_name::<T>()
            );
        }
    }
}

fn check_method<M: Method>(schema: &Schema, params: M::Params) {
    let (p, r) = schema.request("methods", M::NAME);
    sends(schema, p, &params);
    decodes::<M::Response>(schema, r);
}

// === what we send and read, per method ===

#[test]
fn initialize() {
    check_method::<Initialize>(
        &Schema::load(),
        InitializeParams {
            client_info: ClientInfo {
                name: "codex-completions-api".into(),
                title: Some("Codex Completions API".into()),
                version: "0.1.0".into(),
            },
            capabilities: Some(InitializeCapabilities {
                experimental_api: true,
                opt_out_notification_methods: Some(
                    OPT_OUT_NOTIFICATIONS
                        .iter()
                        .map(|m| m.to_string())
                        .collect(),
                ),
            }),
        },
    );
}

#[test]
fn thread_start() {
    let mut config = Map::new();
    config.insert("features.shell_tool".into(), json!(false));
    check_method::<ThreadStart>(
        &Schema::load(),
        ThreadStartParams {
            model: Some("gpt-5".into()),
            model_provider: Some("openai".into()),
            cwd: Some("/srv/work".into()),
            approval_policy: Some("never".into()),
            sandbox: Some("read-only".into()),
            developer_instructions: Some("Be brief.".into()),
            ephemeral: Some(true),
            config: Some(config),
            dynamic_tools: Some(vec![DynamicToolSpec {
                kind: "function".into(),
                name: "lookup".into(),
                description: "Looks a record up.".into(),
                input_schema: json!({"type": "object", "properties": {"id": {"type": "string"}}}),
            }]),
            environments: Some(vec![]),
        },
    );
}

#[test]
fn thread_inject_items() {
    check_method::<ThreadInjectItems>(
        &Schema::load(),
        ThreadInjectItemsParams {
            thread_id: "thr".into(),
            items: vec![json!({"type": "message", "role": "user",
                               "content": [{"type": "input_text", "text": "hi"}]})],
        },
    );
}

#[test]
fn thread_unsubscribe() {
    check_method::<ThreadUnsubscribe>(
        &Schema::load(),
        ThreadIdParams {
            thread_id: "thr".into(),
        },
    );
}

#[test]
fn thread_loaded_list() {
    check_method::<ThreadLoadedList>(
        &Schema::load(),
        ThreadLoadedListParams {
            cursor: Some("c".into()),
        },
    );
}

#[test]
fn turn_start() {
    check_method::<TurnStart>(
        &Schema::load(),
        TurnStartParams {
            thread_id: "thr".into(),
            input: vec![
                UserInput::Text {
                    text: "hello".into(),
                    text_elements: vec![
                        json!({"byteRange": {"start": 0, "end": 5}, "placeholder": "hello"}),
                    ],
                },
                UserInput::Image {
                    url: "data:image/png;base64,AAAA".into(),
                },
            ],
            effort: Some("low".into()),
            output_schema: Some(json!({"type": "object"})),
        },
    );
}

#[test]
fn turn_interrupt() {
    check_method::<TurnInterrupt>(
        &Schema::load(),
        TurnInterruptParams {
            thread_id: "thr".into(),
            turn_id: "turn".into(),
        },
    );
}

#[test]
fn model_list() {
    check_method::<ModelList>(
        &Schema::load(),
        ModelListParams {
            cursor: Some("c".into()),
            include_hidden: Some(true),
        },
    );
}

#[test]
fn a_wrong_params_binding_would_be_caught() {
    // The checks above are only worth something if they can fail: a misspelt
    // key, a missing required key and a wrong type are all reported.
    let schema = Schema::load();
    let s = schema.def("TurnInterruptParams");
    let errs = schema.errors(&json!({"threadId": "t", "turn_id": "u"}), s);
    assert!(
        errs.iter()
            .any(|e| e.contains("`turn_id` is not a property")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("`turnId` is missing")),
        "{errs:?}"
    );
    let errs = schema.errors(&json!({"threadId": 1, "turnId": "u"}), s);
    assert!(errs.iter().any(|e| e.contains("$.threadId")), "{errs:?}");
    // ...and a binding that demands a field codex may leave out would not decode.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Strict {
        #[serde(rename = "modelContextWindow")]
        window: i64,
    }
    let minimal = schema.minimal(schema.def("ThreadTokenUsage"));
    assert!(serde_json::from_value::<Strict>(minimal).is_err());
}

// === notifications ===

#[test]
fn notifications_decode() {
    let schema = Schema::load();
    decodes::<AgentMessageDeltaNotification>(&schema, schema.notification(AGENT_MESSAGE_DELTA));
    decodes::<ItemNotification>(&schema, schema.notification(ITEM_STARTED));
    decodes::<ItemNotification>(&schema, schema.notification(ITEM_COMPLETED));
    decodes::<TokenUsageUpdatedNotification>(&schema, schema.notification(TOKEN_USAGE_UPDATED));
    decodes::<TurnStartedNotification>(&schema, schema.notification(TURN_STARTED));
    decodes::<TurnCompletedNotification>(&schema, schema.notification(TURN_COMPLETED));
    decodes::<ErrorNotification>(&schema, schema.notification(ERROR));
    decodes::<ReasoningSummaryTextDeltaNotification>(
        &schema,
        schema.notification(REASONING_SUMMARY_TEXT_DELTA),
    );
    decodes::<ReasoningSummaryPartAddedNotification>(
        &schema,
        schema.notification(REASONING_SUMMARY_PART_ADDED),
    );
    decodes::<RateLimitsUpdatedNotification>(
        &schema,
        schema.notification(ACCOUNT_RATE_LIMITS_UPDATED),
    );
}

#[test]
fn account_read() {
    check_method::<AccountRead>(
        &Schema::load(),
        AccountReadParams {
            refresh_token: Some(false),
        },
    );
}

#[test]
fn opt_out_names_real_notifications_the_gateway_does_not_read() {
    let schema = Schema::load();
    let all: BTreeSet<&str> = schema.doc["allNotificationMethods"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let read = [
        AGENT_MESSAGE_DELTA,
        ITEM_STARTED,
        ITEM_COMPLETED,
        TOKEN_USAGE_UPDATED,
        TURN_STARTED,
        TURN_COMPLETED,
        ERROR,
        REASONING_SUMMARY_TEXT_DELTA,
        REASONING_SUMMARY_PART_ADDED,
        ACCOUNT_RATE_LIMITS_UPDATED,
    ];
    for m in read {
        assert!(
            all.contains(m),
            "the gateway reads `{m}`, which the pinned codex never sends"
        );
    }
    for m in OPT_OUT_NOTIFICATIONS {
        // A misspelt opt-out is silently ignored by codex.
        assert!(
            all.contains(m),
            "opt-out `{m}` is not a notification of the pinned codex"
        );
        assert!(!read.contains(m), "`{m}` is both read and opted out of");
    }
}

// === server requests ===

#[test]
fn dynamic_tool_call() {
    let schema = Schema::load();
    assert_eq!(DYNAMIC_TOOL_CALL, "item/tool/call");
    let (p, r) = schema.request("serverRequests", DYNAMIC_TOOL_CALL);
    decodes::<DynamicToolCallParams>(&schema, p);
    sends(
        &schema,
        r,
        &DynamicToolCallResponse {
            content_items: vec![DynamicToolCallOutputContentItem::InputText { text: "42".into() }],
            success: true,
        },
    );
}

#[test]
fn unclaimed_server_requests_get_answers_codex_accepts() {
    // Codex waits for an answer to each of these; one it cannot decode leaves
    // the turn hanging, so every canned answer must fit the response schema.
    let schema = Schema::load();
    let methods = schema.doc["serverRequests"].as_object().unwrap();
    assert!(methods.len() >= 5, "{methods:?}");
    let policy = ServerRequestPolicy;
    let mut wrong = BTreeMap::new();
    for method in methods.keys() {
        let (p, r) = schema.request("serverRequests", method);
        let req = ServerRequest {
            id: RequestId::Int(1),
            method: method.clone(),
            params: schema.full(schema.def(p)),
        };
        let problem = match policy.answer(&req) {
            Ok(answer) => {
                let errs = schema.errors(&answer, schema.def(r));
                (!errs.is_empty()).then(|| format!("{answer} is not a {r}:\n{}", errs.join("\n")))
            }
            Err((code, msg)) => Some(format!("error {code} {msg}; codex expects a {r}")),
        };
        if let Some(problem) = problem {
            wrong.insert(method.as_str(), problem);
        }
    }
    for (method, why) in KNOWN_BAD_ANSWERS {
        assert!(
            wrong.remove(method).is_some(),
            "the answer to `{method}` conforms now ({why}): remove it from KNOWN_BAD_ANSWERS"
        );
    }
    let report: Vec<String> = wrong.iter().map(|(m, e)| format!("`{m}`: {e}")).collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// Canned answers known not to fit the pinned schema, with why. Each one is a
/// bug in `src/rpc/server_requests.rs`; the test fails once it is fixed, so
/// the entry cannot outlive it.
const KNOWN_BAD_ANSWERS: &[(&str, &str)] = &[];

// === the pin ===

#[test]
fn pinned_version_matches_codex_version_file_and_fixture() {
    let file = std::fs::read_to_string(root().join("CODEX_VERSION")).unwrap();
    assert_eq!(PINNED_CODEX_VERSION, file);
    assert_eq!(pinned_codex_version(), file.trim());
    assert!(!pinned_codex_version().is_empty());
    let schema = Schema::load();
    assert_eq!(
        schema.doc["codexVersion"].as_str(),
        Some(pinned_codex_version()),
        "schema-subset.json was generated from another codex; run scripts/check-protocol.sh --update"
    );
}

// === captured samples ===

/// How a sample line of a bound method is checked: it decodes, and the
/// binding re-encodes it to the returned value.
type Check = fn(&Value) -> Result<Value, String>;

/// What we read: decodes, and what the binding keeps reads back as it came
/// (`carried_as_sent`).
fn decode<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let t: T =
        serde_json::from_value(v.clone()).map_err(|e| format!("{}: {e}", type_name::<T>()))?;
    let back = serde_json::to_value(&t).unwrap();
    let mut errs = Vec::new();
    carried_as_sent(v, &back, "$", &mut errs);
    if errs.is_empty() {
        Ok(back)
    } else {
        Err(format!(
            "{} changes values:\n  {}",
            type_name::<T>(),
            errs.join("\n  ")
        ))
    }
}

/// Every value the binding re-encodes equals the wire value at the same key.
/// Keys the wire lacks are left to the coverage check in the test.
fn carried_as_sent(wire: &Value, back: &Value, path: &str, errs: &mut Vec<String>) {
    match (wire, back) {
        (Value::Object(w), Value::Object(b)) => {
            for (k, bv) in b {
                if let Some(wv) = w.get(k) {
                    carried_as_sent(wv, bv, &format!("{path}.{k}"), errs);
                }
            }
        }
        (Value::Array(w), Value::Array(b)) if w.len() == b.len() => {
            for (i, (wv, bv)) in w.iter().zip(b).enumerate() {
                carried_as_sent(wv, bv, &format!("{path}[{i}]"), errs);
            }
        }
        _ if wire == back => {}
        _ => errs.push(format!("{path}: wire {wire}, binding {back}")),
    }
}

/// Key paths of a value (`turn.items[]`), for the coverage check.
fn key_paths(v: &Value, path: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                let p = format!("{path}.{k}");
                key_paths(x, &p, out);
                out.insert(p);
            }
        }
        Value::Array(a) => a
            .iter()
            .for_each(|x| key_paths(x, &format!("{path}[]"), out)),
        _ => {}
    }
}

/// Keys the capture sends although the gateway never does (plan mode is the
/// only way to make codex ask `item/tool/requestUserInput`).
const UNBOUND_SENT_KEYS: &[&str] = &["collaborationMode"];

/// Params we send: decoding and re-encoding keeps everything but `UNBOUND_SENT_KEYS`,
/// so a binding field named differently from the wire key is caught.
fn round_trip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let t: T =
        serde_json::from_value(v.clone()).map_err(|e| format!("{}: {e}", type_name::<T>()))?;
    let back = serde_json::to_value(&t).unwrap();
    let mut expected = v.clone();
    if let Some(o) = expected.as_object_mut() {
        UNBOUND_SENT_KEYS.iter().for_each(|k| drop(o.remove(*k)));
    }
    if back == expected {
        Ok(back)
    } else {
        Err(format!(
            "{} does not round-trip:\n  sent {expected}\n  back {back}",
            type_name::<T>()
        ))
    }
}

/// `(request or notification params, response result)` checks of each bound method.
fn bound() -> BTreeMap<&'static str, (Check, Option<Check>)> {
    fn method<M: Method>() -> (&'static str, (Check, Option<Check>))
    where
        M::Params: DeserializeOwned,
        M::Response: Serialize,
    {
        (
            M::NAME,
            (round_trip::<M::Params>, Some(decode::<M::Response>)),
        )
    }
    BTreeMap::from([
        method::<Initialize>(),
        method::<ThreadStart>(),
        method::<ThreadInjectItems>(),
        method::<ThreadUnsubscribe>(),
        method::<ThreadLoadedList>(),
        method::<TurnStart>(),
        method::<TurnInterrupt>(),
        method::<ModelList>(),
        method::<AccountRead>(),
        (
            ACCOUNT_RATE_LIMITS_UPDATED,
            (decode::<RateLimitsUpdatedNotification> as Check, None),
        ),
        (
            AGENT_MESSAGE_DELTA,
            (decode::<AgentMessageDeltaNotification> as Check, None),
        ),
        (ITEM_STARTED, (decode::<ItemNotification>, None)),
        (ITEM_COMPLETED, (decode::<ItemNotification>, None)),
        (
            TOKEN_USAGE_UPDATED,
            (decode::<TokenUsageUpdatedNotification>, None),
        ),
        (TURN_STARTED, (decode::<TurnStartedNotification>, None)),
        (TURN_COMPLETED, (decode::<TurnCompletedNotification>, None)),
        (ERROR, (decode::<ErrorNotification>, None)),
        (
            REASONING_SUMMARY_TEXT_DELTA,
            (decode::<ReasoningSummaryTextDeltaNotification>, None),
        ),
        (
            REASONING_SUMMARY_PART_ADDED,
            (decode::<ReasoningSummaryPartAddedNotification>, None),
        ),
        (
            DYNAMIC_TOOL_CALL,
            (
                decode::<DynamicToolCallParams>,
                Some(round_trip::<DynamicToolCallResponse>),
            ),
        ),
    ])
}

/// Every `samples/<method with / as .>.jsonl`, parsed: `(method, lines)`.
fn samples() -> Vec<(String, Vec<Value>)> {
    let dir = root().join("fixtures/protocol/samples");
    let mut out: Vec<(String, Vec<Value>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| {
            let method = p.file_stem().unwrap().to_str().unwrap().replace('.', "/");
            (method, read_lines(&p))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn read_lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}", p.display(), i + 1))
        })
        .collect()
}

#[test]
fn captured_lines_decode_into_the_bindings() {
    let bound = bound();
    let mut seen: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    // Per (method, params or result): key paths on the wire, key paths the binding writes.
    let mut paths: BTreeMap<(String, &str), [BTreeSet<String>; 2]> = BTreeMap::new();
    let mut failures = Vec::new();
    for (method, lines) in samples() {
        let Some((name, (on_params, on_result))) = bound.get_key_value(method.as_str()) else {
            continue;
        };
        let counts = seen.entry(name).or_default();
        for (i, line) in lines.iter().enumerate() {
            assert!(
                line.get("error").is_none(),
                "{method} sample {} is an error: {line}",
                i + 1
            );
            let (kind, wire, outcome) = if line.get("method").is_some() {
                counts.0 += 1;
                ("params", &line["params"], on_params(&line["params"]))
            } else {
                counts.1 += 1;
                let check = on_result.expect("a notification has no response");
                ("result", &line["result"], check(&line["result"]))
            };
            match outcome {
                Ok(back) => {
                    let [w, b] = paths.entry((method.clone(), kind)).or_default();
                    key_paths(wire, "$", w);
                    key_paths(&back, "$", b);
                }
                Err(e) => failures.push(format!("{method} line {}: {e}", i + 1)),
            }
        }
    }
    // A binding field whose wire name is misspelt decodes to its default on
    // every line; it shows up as a key the binding writes that no line has.
    for ((method, kind), [wire, back]) in &paths {
        let unseen: Vec<&String> = back.difference(wire).collect();
        if !unseen.is_empty() {
            failures.push(format!(
                "{method} {kind}: the binding has {unseen:?}, which no captured line carries \
                 (misnamed field, or rerun capture.py to cover it)"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (method, (_, result)) in &bound {
        let (params, results) = seen.get(method).copied().unwrap_or_default();
        assert!(
            params > 0,
            "no captured sample of `{method}`: rerun fixtures/protocol/capture.py"
        );
        assert!(
            result.is_none() || results > 0,
            "no captured response to `{method}`"
        );
    }
}

#[test]
fn captured_lines_conform_to_the_schema_subset() {
    // Samples and fixture come from the same pinned binary; if one is
    // regenerated without the other, or the validator above is too strict to
    // trust, this says so.
    let schema = Schema::load();
    let mut checked = 0;
    for (method, lines) in samples() {
        let (params_def, result_def) =
            if let Some(n) = schema.doc["notifications"][&method].as_str() {
                (n, None)
            } else if let Some(t) = ["methods", "serverRequests"]
                .into_iter()
                .find(|t| schema.doc[t].get(&method).is_some())
            {
                let (p, r) = schema.request(t, &method);
                (p, Some(r))
            } else {
                continue;
            };
        for (i, line) in lines.iter().enumerate() {
            let what = format!("samples/{method} line {}", i + 1);
            match (line.get("params"), line.get("result"), result_def) {
                (Some(p), _, _) => assert_conforms(&schema, params_def, p, &what),
                (None, Some(r), Some(def)) => assert_conforms(&schema, def, r, &what),
                _ => panic!("{what}: neither params nor result: {line}"),
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} sample lines checked");
}
