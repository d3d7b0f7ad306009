//! A fake `codex app-server` that answers at once, for benchmarking the gateway.
//!
//! ```text
//! fake_worker app-server [-c key=value | --disable feature | ...]   # extra args are ignored
//! fake_worker debug models | mcp list --json                          # what the gateway asks before a start
//! ```
//!
//! It speaks the slice of the app-server protocol the gateway uses (one JSON
//! object per line on stdin/stdout, no `"jsonrpc"` field, a top-level
//! `emittedAtMs` on every notification, like codex 0.171.0):
//! `initialize`, `model/list` (one model, `codex-offline`, efforts
//! low/medium/high), `thread/start`, `thread/inject_items`, `turn/start`,
//! `turn/interrupt`, `thread/unsubscribe`, `thread/loaded/list`. Notifications
//! from the client (`initialized`) and answers to server requests are ignored;
//! unknown methods get codex's `-32600`. It exits on stdin EOF.
//!
//! A turn emits, after the `turn/start` answer: `turn/started`, `item/started`
//! (agentMessage), N × `item/agentMessage/delta`, `item/completed`,
//! `thread/tokenUsage/updated`, `turn/completed` (status `completed`).
//!
//! Environment:
//! * `FAKE_WORKER_DELTAS` — N, the number of deltas per turn (default 8);
//! * `FAKE_WORKER_DELAY_MS` — pause between deltas (default 0). With a pause,
//!   the first delta still goes out at once (so a client sees its first byte
//!   immediately) and the rest follow on a timer thread; `turn/interrupt`
//!   then ends the turn with status `interrupted`, as codex does. This is the
//!   "slow model" used to hold many streams open.
//!
//! Plain std I/O: one thread reads stdin and answers inline into a
//! `BufWriter`, flushed whenever no further input is already buffered, so a
//! burst of requests is answered with one write.

#![forbid(unsafe_code)]

use std::collections::{BinaryHeap, HashSet};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};

/// The one model the fake lists.
const MODEL: &str = "codex-offline";
/// The words the deltas cycle through.
const WORDS: &[&str] = &[
    "Hello", " from", " the", " fake", " worker", ",", " a", " quick", " reply", ".",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The gateway asks codex for its model catalog and MCP servers before it
    // starts the worker (the host-tool lockdown): answer as a codex with one
    // model and no MCP servers would.
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["debug", "models", ..] => {
            println!(r#"{{"models":[{{"slug":"fake-model"}}]}}"#);
            return;
        }
        ["mcp", "list", ..] => {
            println!("[]");
            return;
        }
        ["app-server", ..] => {}
        _ => {
            eprintln!("usage: fake_worker app-server [-c key=value | --disable feature]...");
            std::process::exit(2);
        }
    }
    let deltas = env_u64("FAKE_WORKER_DELTAS", 8).max(1) as usize;
    let delay = Duration::from_millis(env_u64("FAKE_WORKER_DELAY_MS", 0));

    let out = Arc::new(Mutex::new(Out {
        w: BufWriter::with_capacity(64 * 1024, io::stdout()),
        active: HashSet::new(),
    }));
    let timer = (!delay.is_zero()).then(|| spawn_timer(out.clone(), delay));
    let mut worker = Worker {
        out,
        timer,
        deltas,
        ids: AtomicU64::new(1),
        loaded: HashSet::new(),
    };

    let mut input = BufReader::with_capacity(64 * 1024, io::stdin().lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Ok(msg) = serde_json::from_slice::<Incoming>(&line) {
            worker.handle(msg);
        }
        // Flush once per batch: only when nothing more is already waiting.
        if input.buffer().is_empty() {
            let mut out = worker.out.lock().expect("stdout lock");
            if out.w.flush().is_err() {
                break;
            }
        }
    }
    if let Ok(mut out) = worker.out.lock() {
        let _ = out.w.flush();
    };
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Stdout and the turns still streaming on the timer thread, under one lock
/// so an interrupt and a pending delta can never interleave.
struct Out {
    w: BufWriter<io::Stdout>,
    active: HashSet<String>,
}

// Lines are written with `write!` rather than built as `serde_json::Value`s:
// every id here is plain ASCII made by this program and every text a
// constant, so nothing needs escaping, and the fake stays cheap enough that
// a throughput run measures the gateway rather than the fake.
impl Out {
    fn result(&mut self, id: &Value, result: std::fmt::Arguments<'_>) {
        let _ = writeln!(self.w, "{{\"id\":{id},\"result\":{result}}}");
    }

    fn error(&mut self, id: &Value, message: &str) {
        let line = json!({"id": id, "error": {"code": -32600, "message": message}});
        let _ = writeln!(self.w, "{line}");
    }

    fn notify(&mut self, method: &str, params: std::fmt::Arguments<'_>) {
        let _ = writeln!(
            self.w,
            "{{\"method\":\"{method}\",\"params\":{params},\"emittedAtMs\":{}}}",
            now_ms()
        );
    }
}

/// One turn's stream, as far as it has got.
struct Turn {
    thread_id: String,
    turn_id: String,
    item_id: String,
    /// Deltas already sent.
    sent: usize,
    total: usize,
    started_ms: u64,
}

impl Turn {
    fn delta(&mut self, out: &mut Out) {
        let word = WORDS[self.sent % WORDS.len()];
        self.sent += 1;
        out.notify(
            "item/agentMessage/delta",
            format_args!(
                "{{\"threadId\":\"{}\",\"turnId\":\"{}\",\"itemId\":\"{}\",\"delta\":\"{word}\"}}",
                self.thread_id, self.turn_id, self.item_id
            ),
        );
    }

    fn item(&self, completed_ms: u64) -> String {
        let text: String = (0..self.total).map(|i| WORDS[i % WORDS.len()]).collect();
        format!(
            "{{\"type\":\"agentMessage\",\"id\":\"{}\",\"text\":\"{text}\",\"phase\":null,\"startedAtMs\":{},\"completedAtMs\":{completed_ms}}}",
            self.item_id, self.started_ms
        )
    }

    /// `item/completed`, `thread/tokenUsage/updated`, `turn/completed`.
    fn finish(&self, out: &mut Out) {
        let now = now_ms();
        let item = self.item(now);
        let (thread, turn) = (&self.thread_id, &self.turn_id);
        out.notify(
            "item/completed",
            format_args!(
                "{{\"item\":{item},\"threadId\":\"{thread}\",\"turnId\":\"{turn}\",\"completedAtMs\":{now}}}"
            ),
        );
        let n = self.total;
        let usage = format!(
            "{{\"totalTokens\":{},\"inputTokens\":12,\"cachedInputTokens\":0,\"cacheWriteInputTokens\":0,\"outputTokens\":{n},\"reasoningOutputTokens\":0}}",
            12 + n
        );
        out.notify(
            "thread/tokenUsage/updated",
            format_args!(
                "{{\"threadId\":\"{thread}\",\"turnId\":\"{turn}\",\"tokenUsage\":{{\"total\":{usage},\"last\":{usage},\"modelContextWindow\":121600}}}}"
            ),
        );
        out.notify(
            "turn/completed",
            format_args!(
                "{{\"threadId\":\"{thread}\",\"turn\":{{\"id\":\"{turn}\",\"items\":[{item}],\"itemsView\":\"summary\",\"status\":\"completed\",\"error\":null,\"startedAt\":{},\"completedAt\":{},\"durationMs\":{}}}}}",
                self.started_ms / 1000,
                now / 1000,
                now.saturating_sub(self.started_ms)
            ),
        );
    }
}

/// What the fake reads from a line; unknown fields are skipped unparsed.
#[derive(Deserialize)]
struct Incoming {
    id: Option<Value>,
    method: Option<String>,
    params: Option<Params>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Params {
    thread_id: Option<String>,
    turn_id: Option<String>,
    cwd: Option<String>,
}

struct Worker {
    out: Arc<Mutex<Out>>,
    /// Where slow turns go after their first delta (`FAKE_WORKER_DELAY_MS` > 0).
    timer: Option<mpsc::Sender<Turn>>,
    deltas: usize,
    ids: AtomicU64,
    loaded: HashSet<String>,
}

impl Worker {
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}-{:012x}", self.ids.fetch_add(1, Ordering::Relaxed))
    }

    fn handle(&mut self, msg: Incoming) {
        let (Some(method), Some(id)) = (msg.method, msg.id) else {
            return; // a notification (`initialized`) or an answer to a server request
        };
        let params = msg.params.unwrap_or_default();
        let thread_id = params.thread_id.unwrap_or_default();
        let out = self.out.clone();
        let mut out = out.lock().expect("stdout lock");
        match method.as_str() {
            "initialize" => out.result(
                &id,
                format_args!(
                    "{{\"userAgent\":\"fake_worker/0.171.0\",\"codexHome\":\"/nonexistent\",\"platformFamily\":\"unix\",\"platformOs\":\"linux\"}}"
                ),
            ),
            "model/list" => out.result(&id, format_args!("{}", model_list())),
            "thread/start" => {
                let thread_id = self.id("thread");
                self.loaded.insert(thread_id.clone());
                let cwd = Value::from(params.cwd);
                let thread = format!(
                    "{{\"id\":\"{thread_id}\",\"ephemeral\":true,\"path\":null,\"modelProvider\":\"offline\",\"model\":\"{MODEL}\",\"status\":{{\"type\":\"idle\"}},\"cwd\":{cwd},\"cliVersion\":\"0.171.0\",\"source\":\"vscode\",\"turns\":[]}}"
                );
                out.result(
                    &id,
                    format_args!(
                        "{{\"thread\":{thread},\"model\":\"{MODEL}\",\"modelProvider\":\"offline\",\"approvalPolicy\":\"never\",\"sandbox\":{{\"type\":\"readOnly\",\"networkAccess\":false}},\"reasoningEffort\":null}}"
                    ),
                );
                out.notify("thread/started", format_args!("{{\"thread\":{thread}}}"));
            }
            "thread/inject_items" | "thread/unsubscribe" | "turn/start"
                if !self.loaded.contains(&thread_id) =>
            {
                out.error(&id, &format!("invalid thread id: {thread_id}"))
            }
            "thread/inject_items" => out.result(&id, format_args!("{{}}")),
            "thread/unsubscribe" => {
                self.loaded.remove(&thread_id);
                out.result(&id, format_args!("{{\"status\":\"unsubscribed\"}}"));
            }
            "thread/loaded/list" => {
                let data = json!(self.loaded.iter().collect::<Vec<_>>());
                out.result(&id, format_args!("{{\"data\":{data},\"nextCursor\":null}}"));
            }
            "turn/start" => {
                let turn_id = self.id("turn");
                let started_ms = now_ms();
                let turn_json = format!(
                    "{{\"id\":\"{turn_id}\",\"items\":[],\"itemsView\":\"notLoaded\",\"status\":\"inProgress\",\"error\":null,\"startedAt\":null,\"completedAt\":null,\"durationMs\":null}}"
                );
                out.result(&id, format_args!("{{\"turn\":{turn_json}}}"));
                let mut turn = Turn {
                    thread_id: thread_id.clone(),
                    turn_id: turn_id.clone(),
                    item_id: self.id("msg"),
                    sent: 0,
                    total: self.deltas,
                    started_ms,
                };
                out.notify(
                    "turn/started",
                    format_args!("{{\"threadId\":\"{thread_id}\",\"turn\":{turn_json}}}"),
                );
                out.notify(
                    "item/started",
                    format_args!(
                        "{{\"item\":{{\"type\":\"agentMessage\",\"id\":\"{}\",\"text\":\"\",\"phase\":null,\"startedAtMs\":{started_ms},\"completedAtMs\":null}},\"threadId\":\"{thread_id}\",\"turnId\":\"{turn_id}\",\"startedAtMs\":{started_ms}}}",
                        turn.item_id
                    ),
                );
                turn.delta(&mut out);
                match &self.timer {
                    Some(timer) if turn.sent < turn.total => {
                        out.active.insert(turn_id);
                        let _ = timer.send(turn);
                    }
                    _ => {
                        while turn.sent < turn.total {
                            turn.delta(&mut out);
                        }
                        turn.finish(&mut out);
                    }
                }
            }
            "turn/interrupt" => {
                let turn_id = params.turn_id.unwrap_or_default();
                if out.active.remove(&turn_id) {
                    out.result(&id, format_args!("{{}}"));
                    out.notify(
                        "turn/completed",
                        format_args!(
                            "{{\"threadId\":\"{thread_id}\",\"turn\":{{\"id\":\"{turn_id}\",\"items\":[],\"itemsView\":\"summary\",\"status\":\"interrupted\",\"error\":null}}}}"
                        ),
                    );
                } else {
                    out.error(&id, "no active turn to interrupt");
                }
            }
            other => out.error(&id, &format!("Invalid request: unknown variant `{other}`")),
        }
    }
}

fn model_list() -> Value {
    let efforts: Vec<Value> = ["low", "medium", "high"]
        .iter()
        .map(|e| json!({"reasoningEffort": e, "description": format!("{e} reasoning effort")}))
        .collect();
    json!({"data": [{
        "id": MODEL, "model": MODEL, "upgrade": null, "displayName": "Codex Offline",
        "description": "Fake worker model (examples/fake_worker.rs).", "hidden": false,
        "supportedReasoningEfforts": efforts, "defaultReasoningEffort": "medium",
        "inputModalities": ["text", "image"], "supportsPersonality": false, "isDefault": true
    }], "nextCursor": null})
}

// === slow mode ===

/// A turn waiting for its next delta, ordered soonest first.
struct Due(Instant, Turn);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.cmp(&self.0) // BinaryHeap is a max-heap: reverse for soonest first
    }
}

/// One thread sends every slow turn's later deltas: no thread per stream.
fn spawn_timer(out: Arc<Mutex<Out>>, delay: Duration) -> mpsc::Sender<Turn> {
    let (tx, rx) = mpsc::channel::<Turn>();
    std::thread::spawn(move || {
        let mut heap: BinaryHeap<Due> = BinaryHeap::new();
        loop {
            let wait = heap
                .peek()
                .map(|Due(at, _)| at.saturating_duration_since(Instant::now()));
            let incoming = match wait {
                Some(wait) => rx.recv_timeout(wait),
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match incoming {
                Ok(turn) => heap.push(Due(Instant::now() + delay, turn)),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            let mut out = out.lock().expect("stdout lock");
            while heap.peek().is_some_and(|Due(at, _)| *at <= now) {
                let Due(_, mut turn) = heap.pop().expect("peeked");
                if !out.active.contains(&turn.turn_id) {
                    continue; // interrupted
                }
                turn.delta(&mut out);
                if turn.sent < turn.total {
                    heap.push(Due(now + delay, turn));
                } else {
                    out.active.remove(&turn.turn_id);
                    turn.finish(&mut out);
                }
            }
            let _ = out.w.flush();
        }
    });
    tx
}
