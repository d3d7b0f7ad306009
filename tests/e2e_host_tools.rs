//! Codex's own host tools never reach a model through the gateway (issue 9,
//! part 1), checked through the real CLI with a `CODEX_HOME` like an
//! operator's: codex's bundled models (code mode, `apply_patch`) and, in one
//! test, an MCP server. Effects are counted where they happen: in the
//! requests the model receives, on the disk, and among the worker's
//! processes, not in the gateway's own gauges.
//!
//! The exec backend (`PROXY_BACKEND=exec`, issue 15) gets the same lockdown,
//! so the tests that apply to it run on both backends (`on_both_backends!`);
//! there the client's tool is left out of the request (exec refuses client
//! tools with 400) and the leftover processes are looked for by `CODEX_HOME`.

mod support;

use codex_offline_model::HomeOptions;
use serde_json::{json, Value};
use support::{Harness, Reply};

fn bundled_models() -> HomeOptions {
    HomeOptions {
        bundled_models: true,
        ..HomeOptions::default()
    }
}

/// A code-mode model of codex's bundled catalog, and one that is offered a
/// top-level `apply_patch`.
const CODE_MODE_MODEL: &str = "gpt-6-sol";
const PATCH_MODEL: &str = "gpt-5.5";
/// The bundled default since 0.171.0; its catalog entry adds
/// `send_message_to_user_async`, which no feature switch removes.
const DEFAULT_MODEL: &str = "gpt-6.2-sol";

/// The only tools a model may see besides the client's: `request_user_input`
/// reaches the gateway as a server request (answered there), not the host.
const ALLOWED_CODEX_TOOLS: &[&str] = &["request_user_input"];

/// Runs a test body, `async fn NAME(backend: &str)`, once per backend.
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn app_server() {
                super::$name("app-server").await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn exec() {
                super::$name("exec").await
            }
        }
    };
}

/// Whether `h` runs turns on `codex app-server`, which takes client tools.
fn takes_client_tools(h: &Harness) -> bool {
    !EXEC_GATEWAYS.lock().unwrap().contains(&h.addr)
}

/// The gateways started with `PROXY_BACKEND=exec`.
static EXEC_GATEWAYS: std::sync::Mutex<Vec<std::net::SocketAddr>> =
    std::sync::Mutex::new(Vec::new());

async fn start_on(backend: &str, options: &HomeOptions) -> Harness {
    let h = Harness::start_with_home(&[("PROXY_BACKEND", backend)], options).await;
    if backend == "exec" {
        EXEC_GATEWAYS.lock().unwrap().push(h.addr);
    }
    h
}

async fn ask(h: &Harness, model: &str, prompt: &str) -> Reply {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
    });
    if takes_client_tools(h) {
        body["tools"] = json!([{"type": "function", "function": {
            "name": "lookup", "description": "Looks a record up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
    }
    h.post("/v1/chat/completions", &body).await
}

/// Processes running with `h`'s `CODEX_HOME` (every codex process of the
/// gateway, and whatever they started) other than its app-server workers.
fn processes_of(h: &Harness) -> Vec<(u32, String)> {
    let home = format!("CODEX_HOME={}", h.dir.join("codex-home").display());
    let worker = h.handles.worker.status().pid;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if Some(pid) == worker {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == home.as_bytes()) {
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ");
            found.push((pid, cmdline));
        }
    }
    found
}

/// Every tool one model request offers, as `(name, type)`: the top-level
/// `tools` and those of `additional_tools` input items (codex's "responses
/// lite" models), namespaces flattened.
fn offered(body: &Value) -> Vec<(String, String)> {
    fn walk(tools: &Value, out: &mut Vec<(String, String)>) {
        for t in tools.as_array().into_iter().flatten() {
            let kind = t["type"].as_str().unwrap_or_default().to_owned();
            if kind == "namespace" {
                walk(&t["tools"], out);
            } else {
                let name = t["name"].as_str().unwrap_or(&kind).to_owned();
                out.push((name, kind));
            }
        }
    }
    let mut out = Vec::new();
    walk(&body["tools"], &mut out);
    for item in body["input"].as_array().into_iter().flatten() {
        if item["type"] == "additional_tools" {
            walk(&item["tools"], &mut out);
        }
    }
    out
}

/// The assistant's text with the model's call ids (`call_7`) masked, so two
/// answers compare equal when only the counter differs.
fn answer(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("call_") {
        out.push_str(&rest[..at]);
        out.push_str("call_N");
        rest = rest[at + 5..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// A patch for codex's `apply_patch`, as a `[[custom …]]` trigger.
fn patch_trigger(patch: &str) -> String {
    format!(
        "[[custom apply_patch {}]]",
        serde_json::to_string(patch).unwrap()
    )
}

/// Every process below `pid`, with its command line.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) {
                let cmdline = std::fs::read_to_string(format!("/proc/{child}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ");
                found.push((child, cmdline));
                parents.push(child);
            }
        }
    }
    found
}

on_both_backends!(
    every_listed_model_is_offered_the_clients_tools_and_nothing_that_acts_on_the_host
);
async fn every_listed_model_is_offered_the_clients_tools_and_nothing_that_acts_on_the_host(
    backend: &str,
) {
    let h = start_on(backend, &bundled_models()).await;
    let models = h.get("/v1/models").await.json();
    let ids: Vec<String> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        [CODE_MODE_MODEL, PATCH_MODEL, DEFAULT_MODEL]
            .iter()
            .all(|want| ids.iter().any(|m| m == want)),
        "the bundled catalog is listed: {ids:?}"
    );
    for id in &ids {
        let r = ask(&h, id, "hello").await;
        assert_eq!(answer(&r), "ECHO: hello", "{id}");
        let body = h.model.requests().pop().unwrap();
        // Listed ids may carry an effort suffix (`gpt-6-sol-high`).
        let slug = body["model"].as_str().unwrap();
        assert!(id.starts_with(slug), "{id} ran as {slug}");
        let tools = offered(&body);
        // The client's tool is a tool of its own, not a line in the
        // description of codex's JavaScript `exec`.
        assert_eq!(
            tools.contains(&("lookup".into(), "function".into())),
            takes_client_tools(&h),
            "{id}: {tools:?}"
        );
        let foreign: Vec<_> = tools
            .iter()
            .filter(|(name, _)| name != "lookup" && !ALLOWED_CODEX_TOOLS.contains(&name.as_str()))
            .collect();
        assert!(foreign.is_empty(), "{id} is offered {foreign:?}");
    }
    h.stop().await;
}

on_both_backends!(a_forced_apply_patch_reveals_nothing_about_host_files_and_writes_nothing);
async fn a_forced_apply_patch_reveals_nothing_about_host_files_and_writes_nothing(backend: &str) {
    let h = start_on(backend, &bundled_models()).await;
    let secret = h.dir.join("secret.txt");
    std::fs::write(&secret, "line one\n").unwrap();
    let missing = h.dir.join("missing.txt");
    let added = h.dir.join("work").join("added.txt");
    let update = |path: &std::path::Path, line: &str| {
        patch_trigger(&format!(
            "*** Begin Patch\n*** Update File: {}\n@@\n-{line}\n+changed\n*** End Patch\n",
            path.display()
        ))
    };
    let prompts = [
        update(&secret, "line one"),
        update(&secret, "a wrong guess"),
        update(&missing, "line one"),
        update(&h.dir, "line one"),
        patch_trigger(&format!(
            "*** Begin Patch\n*** Add File: {}\n+hi\n*** End Patch\n",
            added.display()
        )),
    ];
    // Codex dispatches a top-level `apply_patch` to a code-mode model too,
    // although it was never offered one.
    for model in [PATCH_MODEL, CODE_MODE_MODEL] {
        let mut answers = Vec::new();
        for prompt in &prompts {
            answers.push(answer(&ask(&h, model, prompt).await));
        }
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "{model}: the answers tell the paths apart: {answers:#?}"
        );
        assert!(
            answers[0].starts_with("TOOL RESULT call_N: "),
            "{answers:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "line one\n");
    assert!(!missing.exists() && !added.exists());
    h.stop().await;
}

on_both_backends!(the_default_models_message_tool_is_neither_offered_nor_run);
async fn the_default_models_message_tool_is_neither_offered_nor_run(backend: &str) {
    // gpt-6.2-sol's `send_message_to_user_async` would put text in front of
    // the user outside the answer; the lockdown's catalog clears it with the
    // other `experimental_supported_tools`, so codex treats a call to it like
    // a call to a tool that does not exist.
    let h = start_on(backend, &bundled_models()).await;
    let r = ask(&h, DEFAULT_MODEL, "hello").await;
    assert_eq!(answer(&r), "ECHO: hello");
    let tools = offered(&h.model.requests().pop().unwrap());
    assert!(
        tools.iter().all(|(name, _)| !name.contains("message")),
        "{tools:?}"
    );
    let r = ask(
        &h,
        DEFAULT_MODEL,
        r#"[[call send_message_to_user_async {"message":"psst"}]]"#,
    )
    .await;
    assert_eq!(
        answer(&r),
        "TOOL RESULT call_N: unsupported call: send_message_to_user_async"
    );
    assert!(!r.text().contains("psst"), "{}", r.text());
    h.stop().await;
}

on_both_backends!(a_forced_javascript_exec_leaves_no_process_of_the_worker_running);
async fn a_forced_javascript_exec_leaves_no_process_of_the_worker_running(backend: &str) {
    let h = start_on(backend, &bundled_models()).await;
    // Without the pragma codex would wait 30 s for the script before
    // answering; with it the turn ends at once and only the script is left.
    let spin = "// @exec: {\"yield_time_ms\": 100}\nwhile (true) {}";
    let prompt = format!("[[custom exec {}]]", serde_json::to_string(spin).unwrap());
    let r = ask(&h, CODE_MODE_MODEL, &prompt).await;
    assert!(
        answer(&r).starts_with("TOOL RESULT call_N: "),
        "{}",
        r.text()
    );
    // An exec gateway runs no worker (PROXY_BACKEND=exec starts none).
    if backend == "app-server" {
        let pid = h.handles.worker.status().pid.expect("worker pid");
        let left = descendants(pid);
        assert!(
            left.is_empty(),
            "processes of the worker outlive the turn: {left:?}"
        );
    }
    // An exec turn's process, and anything it started, is gone with the turn.
    let left = processes_of(&h);
    assert!(left.is_empty(), "processes outlive the turn: {left:?}");
    h.stop().await;
}

on_both_backends!(an_mcp_server_in_codex_home_is_neither_started_nor_offered);
async fn an_mcp_server_in_codex_home_is_neither_started_nor_offered(backend: &str) {
    let marker = std::env::temp_dir().join(format!("codex-e2e-mcp-{:016x}", rand::random::<u64>()));
    let options = HomeOptions {
        extra_config: format!(
            "[mcp_servers.probe]\ncommand = \"sh\"\nargs = [\"-c\", {}]\n",
            serde_json::to_string(&format!("echo started >> {}", marker.display())).unwrap()
        ),
        ..HomeOptions::default()
    };
    let h = start_on(backend, &options).await;
    let model = codex_offline_model::MODEL_ID;
    let r = ask(&h, model, "hello").await;
    assert_eq!(answer(&r), "ECHO: hello");
    let tools = offered(&h.model.requests()[0]);
    assert!(
        tools.iter().all(|(name, _)| !name.contains("mcp")),
        "{tools:?}"
    );
    let forced = answer(&ask(&h, model, "[[call list_mcp_resources {}]]").await);
    assert_eq!(
        forced,
        "TOOL RESULT call_N: unsupported call: list_mcp_resources"
    );
    let started = marker.exists();
    let _ = std::fs::remove_file(&marker);
    assert!(!started, "the worker started the MCP server");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_write_with_codex_tools_writes_only_in_the_working_directory() {
    let h = Harness::start_with_home(
        &[
            ("PROXY_ENABLE_CODEX_TOOLS", "true"),
            ("PROXY_SANDBOX_MODE", "workspace-write"),
        ],
        &bundled_models(),
    )
    .await;
    let add = |path: &std::path::Path| {
        patch_trigger(&format!(
            "*** Begin Patch\n*** Add File: {}\n+hi\n*** End Patch\n",
            path.display()
        ))
    };
    let inside = h.dir.join("work").join("inside.txt");
    let in_tmp = std::env::temp_dir().join(format!(
        "codex-e2e-outside-{:016x}.txt",
        rand::random::<u64>()
    ));
    let in_home = h.dir.join("codex-home").join("planted.txt");

    let ok = answer(&ask(&h, PATCH_MODEL, &add(&inside)).await);
    assert!(ok.contains("Success"), "{ok}");
    assert!(inside.exists());
    for outside in [&in_tmp, &in_home] {
        let refused = answer(&ask(&h, PATCH_MODEL, &add(outside)).await);
        let written = outside.exists();
        let _ = std::fs::remove_file(outside);
        assert!(!written, "{} was written: {refused}", outside.display());
        assert!(refused.contains("rejected"), "{refused}");
    }
    h.stop().await;
}
