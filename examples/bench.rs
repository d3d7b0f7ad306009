//! Load generator and reporter for the gateway: latency overhead, throughput
//! and memory, printed as markdown (run it through `scripts/bench`, which
//! builds everything in release mode and writes `docs/benchmarks.md`).
//!
//! ```text
//! bench [--quick] [--skip-real] [--skip-memory]
//! bench --check [--write-baseline]
//! bench --compare GATEWAY_BIN_A GATEWAY_BIN_B
//! bench --memory
//! bench --latency
//! bench --open-loop
//! ```
//!
//! `--check` measures only the gateway's CPU µs per completion (streamed at
//! 1 and 64 connections, plain at 16; the median of three windows each),
//! prints them next to `bench/baseline.json` and exits 1 when one is more
//! than 15 % above its baseline; `--write-baseline` records the figures as
//! the new baseline instead. CPU per completion, read from `/proc`, is the
//! steadiest figure on a shared machine; throughput and latency are not
//! compared. `--compare` runs the same figures on two gateway binaries in
//! alternating windows, for a before/after of one change on a busy machine
//! (`BENCH_GATEWAY_ENV_A` / `_B` give one side extra environment, to compare
//! settings of one binary). `--memory` runs only the memory part (idle,
//! streams held open, 1 s and 15 s after closing them) on the gateway binary
//! found as below, with `BENCH_GATEWAY_ENV`. `--latency` runs only the
//! added latency at one stream (gateway − direct, p50 and p99) on that
//! gateway: `BENCH_LATENCY_ROUNDS` rounds (default 5) of 3 s on each path,
//! each with the machine's steal time. It takes about 40 s, where the full
//! run takes two minutes, for trying what moves the tail. `--open-loop` does
//! the same at a fixed offered rate instead (`BENCH_OPEN_RATE` requests/s,
//! default 1,000; 1 s warm-up and 3 s per path and round), where every
//! request meets a gateway that has gone idle since the last one. Open-loop
//! requests are evenly spaced, or with `BENCH_OPEN_ARRIVALS=poisson` a
//! Poisson process of the same rate.
//!
//! What it measures, all over loopback:
//!
//! * **latency** of a streamed chat completion, from sending the request to
//!   the first SSE `data:` frame carrying content ("first") and to the end of
//!   the body ("end"), p50/p99, at 1, 16 and 64 concurrent streams (closed
//!   loop, one keep-alive connection per stream). The same turns are also run
//!   by a **direct JSON-RPC client** on a worker of the same kind (spawned
//!   with the gateway's own command line, same `initialize` and
//!   `thread/start` params, `thread/unsubscribe` afterwards), timed to the
//!   first `item/agentMessage/delta` and to `turn/completed`. The gateway's
//!   overhead is gateway − direct. Once with `examples/fake_worker` (answers
//!   at once) and once with the real Codex CLI and the offline model.
//! * **overhead at a fixed rate** (open loop, 1,000 requests/s and 80 % of
//!   the measured maximum), gateway and direct.
//! * **throughput**: streamed completions/s with the fake worker, closed loop
//!   at 64/128/256 connections, with CPU time per completion of the gateway,
//!   the worker and this load generator, read from `/proc`.
//! * **memory**: the gateway's VmRSS idle and with streams held open (a slow
//!   fake worker, `FAKE_WORKER_DELAY_MS`) → KiB per open stream.
//!
//! The gateway runs as its own release process (so `/proc/<pid>` is its
//! alone); this load generator uses one thread, so on a 2-core machine it
//! competes with the gateway and the worker for the CPU, as a co-located
//! client would. Binaries are found next to this example
//! (`target/release/{codex-completions-api,offline-model,examples/fake_worker}`);
//! override with `BENCH_GATEWAY_BIN`, `BENCH_FAKE_WORKER`, `BENCH_OFFLINE_MODEL`.
//! The real CLI comes from `CODEX_BIN` or `./.tools/codex` (`scripts/install-codex.sh`).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use codex_completions_api::config::{Config, Env};
use codex_completions_api::protocol::{
    ClientInfo, InitializeCapabilities, InitializeParams, ThreadStartParams, OPT_OUT_NOTIFICATIONS,
};
use codex_completions_api::worker::{worker_command, HOST_TOOL_FEATURES};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const PROMPT: &str = "Say hello in a few words.";
/// Deltas per fake turn (the fake worker's default, set explicitly).
const FAKE_DELTAS: &str = "8";
/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = Opts {
        quick: args.iter().any(|a| a == "--quick"),
        skip_real: args.iter().any(|a| a == "--skip-real"),
        skip_memory: args.iter().any(|a| a == "--skip-memory"),
    };
    let check = args.iter().any(|a| a == "--check");
    let write_baseline = args.iter().any(|a| a == "--write-baseline");
    let comparing = args.first().is_some_and(|a| a == "--compare");
    let memory_only = args.iter().any(|a| a == "--memory");
    let latency_only = args.iter().any(|a| a == "--latency");
    let open_loop_only = args.iter().any(|a| a == "--open-loop");
    if let Some(bad) = args.iter().filter(|_| !comparing).find(|a| {
        !matches!(
            a.as_str(),
            "--quick"
                | "--skip-real"
                | "--skip-memory"
                | "--check"
                | "--write-baseline"
                | "--memory"
                | "--latency"
                | "--open-loop"
        )
    }) {
        eprintln!(
            "bench: unknown argument {bad}\nusage: bench [--quick] [--skip-real] [--skip-memory]\n       bench --check [--write-baseline]\n       bench --compare GATEWAY_BIN_A GATEWAY_BIN_B\n       bench --memory\n       bench --latency\n       bench --open-loop"
        );
        std::process::exit(2);
    }
    // One thread for the whole load generator: on a small machine the
    // client's CPU share stays bounded and comparable between runs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(i) = args.iter().position(|a| a == "--compare") {
        let (Some(a), Some(b)) = (args.get(i + 1), args.get(i + 2)) else {
            eprintln!("usage: bench --compare GATEWAY_BIN_A GATEWAY_BIN_B");
            std::process::exit(2);
        };
        let report = rt.block_on(compare(PathBuf::from(a), PathBuf::from(b)))?;
        print!("{report}");
        return Ok(());
    }
    if memory_only {
        let paths = Paths::find()?;
        let m = rt.block_on(memory(&paths, &opts))?;
        let mut out = String::new();
        writeln!(
            out,
            "Gateway `{}`, extra environment: `{}`.\n",
            paths.gateway.display(),
            std::env::var("BENCH_GATEWAY_ENV").unwrap_or_default()
        )?;
        memory_table(&mut out, &m, None)?;
        print!("{out}");
        return Ok(());
    }
    if latency_only || open_loop_only {
        let rate = open_loop_only.then(|| env_count("BENCH_OPEN_RATE", 1000) as f64);
        print!("{}", rt.block_on(latency_rounds(rate))?);
        return Ok(());
    }
    if check || write_baseline {
        let (report, ok) = rt.block_on(check_cpu(write_baseline))?;
        print!("{report}");
        std::process::exit(if ok { 0 } else { 1 });
    }
    let report = rt.block_on(run(opts))?;
    print!("{report}");
    Ok(())
}

#[derive(Clone, Copy)]
struct Opts {
    quick: bool,
    skip_real: bool,
    skip_memory: bool,
}

impl Opts {
    /// A measuring window, shortened with `--quick`.
    fn secs(&self, s: f64) -> Duration {
        Duration::from_secs_f64(if self.quick { s / 4.0 } else { s })
    }
}

struct Paths {
    gateway: PathBuf,
    fake_worker: PathBuf,
    offline_model: PathBuf,
    codex: Option<PathBuf>,
    /// Scratch space: worker cwd, CODEX_HOME, logs.
    scratch: PathBuf,
}

impl Paths {
    /// The environment that points a gateway (or the direct client) at the
    /// instant fake worker.
    fn fake_worker_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "CODEX_BIN".to_owned(),
                self.fake_worker.display().to_string(),
            ),
            ("FAKE_WORKER_DELTAS".to_owned(), FAKE_DELTAS.to_owned()),
        ]
    }

    fn find() -> Result<Paths, BoxError> {
        let exe = std::env::current_exe()?;
        let examples = exe.parent().ok_or("no exe dir")?.to_path_buf();
        let release = examples.parent().ok_or("no target dir")?.to_path_buf();
        let pick = |var: &str, default: PathBuf| {
            std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
        };
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let codex = std::env::var_os("CODEX_BIN").map(PathBuf::from).or_else(|| {
            let local = root.join(".tools/codex/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex");
            local.is_file().then_some(local)
        });
        let scratch = release.join("bench-scratch");
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        let paths = Paths {
            gateway: pick("BENCH_GATEWAY_BIN", release.join("codex-completions-api")),
            fake_worker: pick("BENCH_FAKE_WORKER", examples.join("fake_worker")),
            offline_model: pick("BENCH_OFFLINE_MODEL", release.join("offline-model")),
            codex,
            scratch,
        };
        for p in [&paths.gateway, &paths.fake_worker] {
            if !p.is_file() {
                return Err(format!("{} not found: build with scripts/bench", p.display()).into());
            }
        }
        Ok(paths)
    }
}

async fn run(opts: Opts) -> Result<String, BoxError> {
    let paths = Paths::find()?;
    let mut out = String::new();
    let load_start = loadavg();
    let steal_start = steal_ticks();
    let started = Instant::now();

    // === fake worker: latency, fixed rate, throughput ===
    progress("fake worker: starting the gateway and a direct worker");
    let fake_env = paths.fake_worker_env();
    let gateway = Gateway::start(&paths, &fake_env, "gateway-fake").await?;
    let direct = Direct::start(&paths, &fake_env, None, "direct-fake").await?;
    let gw = Target::Gateway(gateway.addr);
    let dt = Target::Direct(direct.clone());
    // Warm both paths (allocator pools, connection set-up, lazy statics).
    closed_loop(&gw, 16, Duration::ZERO, opts.secs(1.0)).await;
    closed_loop(&dt, 16, Duration::ZERO, opts.secs(1.0)).await;
    let rss_warm = proc_status(gateway.pid);

    let mut latency_fake = Vec::new();
    for conc in [1, 16, 64] {
        progress(&format!("fake worker: {conc} concurrent streams"));
        let g = measured_closed_loop(&gw, gateway.pid, conc, opts.secs(0.5), opts.secs(3.0)).await;
        let d = closed_loop(&dt, conc, opts.secs(0.5), opts.secs(3.0)).await;
        latency_fake.push((conc, g, d));
    }

    let mut fixed = Vec::new();
    progress("fake worker: open loop at 1000 requests/s");
    let g = measured_open_loop(&gw, gateway.pid, 1000.0, opts.secs(1.0), opts.secs(5.0)).await;
    let d = open_loop(&dt, 1000.0, opts.secs(1.0), opts.secs(5.0)).await;
    fixed.push((1000.0, g, d));

    let mut throughput = Vec::new();
    for conc in [64, 128, 256] {
        progress(&format!("fake worker: throughput, {conc} connections"));
        let run =
            measured_closed_loop(&gw, gateway.pid, conc, opts.secs(1.0), opts.secs(5.0)).await;
        throughput.push((conc, run));
    }
    let plain_target = Target::GatewayPlain(gateway.addr);
    let mut plain = Vec::new();
    for conc in [1, 16, 64] {
        progress(&format!(
            "fake worker: plain throughput, {conc} connections"
        ));
        let run = measured_closed_loop(
            &plain_target,
            gateway.pid,
            conc,
            opts.secs(1.0),
            opts.secs(4.0),
        )
        .await;
        plain.push((conc, run));
    }
    let best = throughput
        .iter()
        .map(|(_, r)| r.rate())
        .fold(0.0_f64, f64::max);
    let rate80 = (best * 0.8 / 100.0).floor() * 100.0;
    if rate80 >= 100.0 {
        progress(&format!(
            "fake worker: open loop at {rate80} requests/s (80 % of max)"
        ));
        let g = measured_open_loop(&gw, gateway.pid, rate80, opts.secs(1.0), opts.secs(5.0)).await;
        let d = open_loop(&dt, rate80, opts.secs(1.0), opts.secs(5.0)).await;
        fixed.push((rate80, g, d));
    }
    let rss_after_load = proc_status(gateway.pid);
    gateway.stop().await;
    direct.stop().await;

    // === memory with streams held open ===
    let memory = if opts.skip_memory {
        None
    } else {
        progress("memory: slow fake worker, streams held open");
        Some(memory(&paths, &opts).await?)
    };

    // === real CLI + offline model ===
    let real = if opts.skip_real {
        Err("skipped (--skip-real)".to_owned())
    } else {
        match &paths.codex {
            None => Err(
                "not run: no Codex CLI (set CODEX_BIN or run scripts/install-codex.sh)".to_owned(),
            ),
            Some(codex) => real_cli(&paths, codex, &opts)
                .await
                .map_err(|e| format!("failed: {e}")),
        }
    };

    // === report ===
    let load_end = loadavg();
    let steal_end = steal_ticks();
    writeln!(out, "## Results\n")?;
    let extra = extra_gateway_env();
    if !extra.is_empty() {
        let list: Vec<String> = extra.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        writeln!(
            out,
            "Extra gateway environment (`BENCH_GATEWAY_ENV`): {}.\n",
            list.join(", ")
        )?;
    }
    writeln!(
        out,
        "Run took {:.0} s. Load average (1/5/15 min) at start: {load_start}; at end: {load_end}. \
        Steal (the hypervisor running something else while this machine's CPUs wanted to run): \
        {:.1} % of CPU time over the run.\n",
        started.elapsed().as_secs_f64(),
        steal_percent(steal_start, steal_end)
    )?;
    writeln!(out, "Latency columns: **first** = request sent → first SSE `data:` frame with content \
        (direct: → first `item/agentMessage/delta`); **end** = → end of the SSE body after `[DONE]` \
        (direct: → `turn/completed`). Times in ms. \"overhead\" rows are gateway − direct at the same \
        percentile (a difference of percentiles, not a percentile of differences).\n")?;

    writeln!(
        out,
        "### a) Latency, fake worker (instant, {FAKE_DELTAS} deltas per turn), closed loop\n"
    )?;
    latency_table(&mut out, &latency_fake)?;

    writeln!(
        out,
        "\n### Overhead at a fixed offered rate, fake worker (open loop)\n"
    )?;
    writeln!(out, "Requests are started on a schedule ({}, paced by a thread of their own) by up to \
        {OPEN_LOOP_WORKERS} client tasks, whatever the earlier ones are doing; latency is timed from the \
        moment each request is sent.\n", Arrivals::from_env().describe())?;
    fixed_table(&mut out, &fixed)?;

    writeln!(out, "\n### b) Throughput, fake worker, closed loop\n")?;
    writeln!(out, "Streamed chat completions:\n")?;
    throughput_table(&mut out, &throughput)?;
    writeln!(
        out,
        "\nPlain (non-streamed) chat completions, same fake worker:\n"
    )?;
    throughput_table(&mut out, &plain)?;

    writeln!(
        out,
        "\n### c) Memory (gateway process, `/proc/<pid>/status`)\n"
    )?;
    match &memory {
        Some(memory) => memory_table(&mut out, memory, Some((rss_warm, rss_after_load)))?,
        None => writeln!(out, "Skipped (--skip-memory).")?,
    }

    writeln!(
        out,
        "\n### a) Latency, real Codex CLI + offline model, closed loop\n\n\
         At 1 stream the gateway's and the direct client's requests alternate, one each \
         in turn, so the CLI's drift between runs cancels out. At 16 and 64 the gateway's \
         and the direct client's streams run at the same time (16 + 16, 64 + 64), each \
         side against its own codex process, so both meet the same machine and the same \
         model; the latencies are those of twice the load a row names.\n"
    )?;
    match &real {
        Ok(rows) => latency_table(&mut out, rows)?,
        Err(why) => writeln!(out, "Real CLI run {why}.")?,
    }

    writeln!(out, "\n### Goals\n")?;
    goals_table(&mut out, &fixed, &throughput, memory.as_ref())?;
    Ok(out)
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// === measurements ===

/// One request's timings.
#[derive(Debug, Clone, Copy)]
struct Sample {
    first: Duration,
    end: Duration,
}

/// The outcome of one load run.
#[derive(Default)]
struct RunStats {
    samples: Vec<Sample>,
    errors: u64,
    first_error: Option<String>,
    /// Requests that ended inside the measuring window.
    completed: u64,
    window: Duration,
    /// Open loop: requests sent more than 5 ms after their scheduled time
    /// (the schedule ticks in whole ms; more than that means the load
    /// generator itself fell behind).
    late: u64,
    cpu: Option<CpuDelta>,
}

impl RunStats {
    fn rate(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64().max(1e-9)
    }

    fn pct(&self, p: f64, end: bool) -> Option<Duration> {
        let mut v: Vec<Duration> = self
            .samples
            .iter()
            .map(|s| if end { s.end } else { s.first })
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1])
    }

    fn merge(&mut self, other: RunStats) {
        self.samples.extend(other.samples);
        self.errors += other.errors;
        self.completed += other.completed;
        self.late += other.late;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Where requests go.
#[derive(Clone)]
enum Target {
    /// Streamed chat completions.
    Gateway(SocketAddr),
    /// Plain (`"stream": false`) chat completions.
    GatewayPlain(SocketAddr),
    Direct(Arc<Direct>),
}

/// What one client task holds: a keep-alive connection, or the shared channel.
enum Session {
    Http(HttpConn),
    HttpPlain(HttpConn),
    Rpc(Arc<Direct>),
}

impl Target {
    async fn session(&self) -> Result<Session, BoxError> {
        Ok(match self {
            Target::Gateway(addr) => Session::Http(HttpConn::connect(*addr).await?),
            Target::GatewayPlain(addr) => Session::HttpPlain(HttpConn::connect(*addr).await?),
            Target::Direct(d) => Session::Rpc(d.clone()),
        })
    }
}

impl Session {
    async fn once(&mut self) -> Result<Sample, String> {
        let fut = async {
            match self {
                Session::Http(c) => c.stream_completion().await,
                Session::HttpPlain(c) => c.plain_completion().await,
                Session::Rpc(d) => d.turn().await,
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
    }
}

/// `conc` tasks, each sending one request after the other for
/// `warmup + window`; only requests started after the warm-up are timed.
async fn closed_loop(target: &Target, conc: usize, warmup: Duration, window: Duration) -> RunStats {
    let mut sessions = Vec::with_capacity(conc);
    for _ in 0..conc {
        match target.session().await {
            Ok(s) => sessions.push(s),
            Err(e) => {
                return RunStats {
                    errors: 1,
                    first_error: Some(format!("connect: {e}")),
                    window,
                    ..Default::default()
                }
            }
        }
    }
    let start = Instant::now();
    let from = start + warmup;
    let until = from + window;
    let mut set = JoinSet::new();
    for mut session in sessions {
        let target = target.clone();
        set.spawn(async move {
            let mut stats = RunStats::default();
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                match session.once().await {
                    Ok(s) => {
                        if t0 >= from {
                            stats.samples.push(s);
                        }
                        let done = t0 + s.end;
                        if done >= from && done < until {
                            stats.completed += 1;
                        }
                    }
                    Err(e) => {
                        stats.errors += 1;
                        stats.first_error.get_or_insert(e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if let Ok(s) = target.session().await {
                            session = s;
                        }
                    }
                }
            }
            stats
        });
    }
    let mut total = RunStats {
        window,
        ..Default::default()
    };
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            total.merge(r);
        }
    }
    total
}

/// One session on each target, their requests taking turns (a, b, a, b,
/// ...) for `window` after `warmup`: a paired comparison at one stream.
/// Each side's rate is over its own share of the window.
async fn alternating(
    a: &Target,
    b: &Target,
    warmup: Duration,
    window: Duration,
) -> (RunStats, RunStats) {
    let mut stats: [RunStats; 2] = std::array::from_fn(|_| RunStats {
        window: window / 2,
        ..Default::default()
    });
    let targets = [a, b];
    let mut sessions = Vec::new();
    for (t, s) in targets.iter().zip(stats.iter_mut()) {
        match t.session().await {
            Ok(session) => sessions.push(Some(session)),
            Err(e) => {
                s.errors += 1;
                s.first_error = Some(format!("connect: {e}"));
                sessions.push(None);
            }
        }
    }
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + window);
    'run: loop {
        for i in 0..2 {
            let t0 = Instant::now();
            if t0 >= until {
                break 'run;
            }
            let Some(session) = sessions[i].as_mut() else {
                break 'run;
            };
            match session.once().await {
                Ok(sample) => {
                    if t0 >= from {
                        stats[i].samples.push(sample);
                        stats[i].completed += 1;
                    }
                }
                Err(e) => {
                    stats[i].errors += 1;
                    stats[i].first_error.get_or_insert(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    sessions[i] = targets[i].session().await.ok();
                }
            }
        }
    }
    let [sa, sb] = stats;
    (sa, sb)
}

/// A closed-loop run on the gateway with the CPU it used.
async fn measured_closed_loop(
    target: &Target,
    pid: u32,
    conc: usize,
    warmup: Duration,
    window: Duration,
) -> RunStats {
    let before = CpuSnapshot::take(pid);
    let mut run = closed_loop(target, conc, warmup, window).await;
    run.cpu = Some(CpuSnapshot::take(pid).minus(&before));
    run
}

/// An open-loop run on the gateway with the CPU it used.
async fn measured_open_loop(
    target: &Target,
    pid: u32,
    rate: f64,
    warmup: Duration,
    window: Duration,
) -> RunStats {
    let before = CpuSnapshot::take(pid);
    let mut run = open_loop(target, rate, warmup, window).await;
    run.cpu = Some(CpuSnapshot::take(pid).minus(&before));
    run
}

/// Client tasks available to an open-loop run.
const OPEN_LOOP_WORKERS: usize = 256;

/// How an open-loop run spaces its requests (`BENCH_OPEN_ARRIVALS`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Arrivals {
    /// One interval apart, as wrk2 sends them (the default).
    Even,
    /// A Poisson process: exponential gaps of the same mean, so requests
    /// sometimes arrive together, as independent clients' do.
    Poisson,
}

impl Arrivals {
    fn from_env() -> Arrivals {
        match std::env::var("BENCH_OPEN_ARRIVALS").as_deref() {
            Ok("poisson") => Arrivals::Poisson,
            _ => Arrivals::Even,
        }
    }

    fn gap(self, rate: f64) -> Duration {
        match self {
            Arrivals::Even => Duration::from_secs_f64(1.0 / rate),
            // Inverse transform; `1 - u` is in (0, 1], so the log is finite.
            Arrivals::Poisson => {
                Duration::from_secs_f64(-(1.0 - rand::random::<f64>()).ln() / rate)
            }
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Arrivals::Even => "evenly spaced",
            Arrivals::Poisson => "Poisson arrivals",
        }
    }
}

/// Requests started on a schedule at `rate`/s, spaced as [`Arrivals`] says;
/// timed from when each is sent.
async fn open_loop(target: &Target, rate: f64, warmup: Duration, window: Duration) -> RunStats {
    let (tx, rx) = mpsc::channel::<(Instant, bool)>(100_000);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut set = JoinSet::new();
    for _ in 0..OPEN_LOOP_WORKERS {
        let target = target.clone();
        let rx = rx.clone();
        set.spawn(async move {
            let mut stats = RunStats::default();
            let mut session: Option<Session> = None;
            loop {
                let job = rx.lock().await.recv().await;
                let Some((due, timed)) = job else { break };
                if session.is_none() {
                    session = target.session().await.ok();
                }
                let Some(s) = session.as_mut() else {
                    stats.errors += 1;
                    stats.first_error.get_or_insert("connect failed".into());
                    continue;
                };
                let sent = Instant::now();
                if timed && sent.duration_since(due) > Duration::from_millis(5) {
                    stats.late += 1;
                }
                match s.once().await {
                    Ok(sample) if timed => {
                        stats.samples.push(sample);
                        stats.completed += 1;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        stats.errors += 1;
                        stats.first_error.get_or_insert(e);
                        session = None;
                    }
                }
            }
            stats
        });
    }
    // The schedule runs on a thread of its own, not on tokio's timer. That
    // timer ticks in whole milliseconds: a `sleep_until` woke up to 1 ms late
    // and the requests due by then went out together. At 1,000/s that was two
    // requests at once most of the time (in a `perf` trace of the gateway, 727
    // of 1,050 `epoll_wait` returns with two or more events were two
    // requests), a burstier load than the rate says. A thread's sleep is
    // precise to tens of µs, so requests go out when they are due.
    let arrivals = Arrivals::from_env();
    let pacer = std::thread::spawn(move || {
        let start = Instant::now();
        let (from, end) = (start + warmup, start + warmup + window);
        let mut due = start;
        loop {
            due += arrivals.gap(rate);
            if due >= end {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if tx.blocking_send((due, due >= from)).is_err() {
                break;
            }
        }
    });
    let mut stats = RunStats {
        window,
        ..Default::default()
    };
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            stats.merge(r);
        }
    }
    // Done: the workers ended because the pacer dropped its sender.
    let _ = pacer.join();
    stats
}

// === HTTP client ===

/// One keep-alive HTTP/1.1 connection to the gateway.
struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
}

fn chat_body(stream: bool) -> Bytes {
    Bytes::from(
        json!({
            "model": "codex-offline",
            "stream": stream,
            "messages": [{"role": "user", "content": PROMPT}]
        })
        .to_string(),
    )
}

impl HttpConn {
    async fn connect(addr: SocketAddr) -> Result<HttpConn, BoxError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpConn { sender })
    }

    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        self.sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())
    }

    fn chat_request() -> Request<Full<Bytes>> {
        Self::request(true)
    }

    fn request(stream: bool) -> Request<Full<Bytes>> {
        Request::post("/v1/chat/completions")
            .header(header::HOST, "127.0.0.1")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(chat_body(stream)))
            .expect("valid request")
    }

    /// One plain completion, read whole; "first" and "end" are both the
    /// end of the body.
    async fn plain_completion(&mut self) -> Result<Sample, String> {
        let t0 = Instant::now();
        let res = self.send(Self::request(false)).await?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let end = t0.elapsed();
        if status != StatusCode::OK || find(&body, b"\"chat.completion\"").is_none() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(Sample { first: end, end })
    }

    /// One streamed completion, read to its end.
    async fn stream_completion(&mut self) -> Result<Sample, String> {
        let t0 = Instant::now();
        let res = self.send(Self::chat_request()).await?;
        let status = res.status();
        let mut body = res.into_body();
        if status != StatusCode::OK {
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&text)));
        }
        let mut scan = SseScan::default();
        let mut first = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(data) = frame.data_ref() {
                scan.push(data)?;
                if first.is_none() && scan.content > 0 {
                    first = Some(t0.elapsed());
                }
            }
        }
        let end = t0.elapsed();
        match first {
            Some(first) if scan.done => Ok(Sample { first, end }),
            _ => Err(format!(
                "stream ended without content or [DONE] ({} content frames)",
                scan.content
            )),
        }
    }

    /// Opens a completion and returns once its first content frame arrived,
    /// handing back the still-open body.
    async fn open_stream(&mut self) -> Result<hyper::body::Incoming, String> {
        let res = self.send(Self::chat_request()).await?;
        if res.status() != StatusCode::OK {
            return Err(format!("HTTP {}", res.status()));
        }
        let mut body = res.into_body();
        let mut scan = SseScan::default();
        while scan.content == 0 {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        scan.push(data)?;
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("stream ended before any content".into()),
            }
        }
        Ok(body)
    }

    async fn get(&mut self, path: &str) -> Result<StatusCode, String> {
        let req = Request::get(path)
            .header(header::HOST, "127.0.0.1")
            .body(Full::default())
            .expect("valid request");
        let res = self.send(req).await?;
        let status = res.status();
        let _ = res.into_body().collect().await;
        Ok(status)
    }
}

/// Counts SSE frames without parsing JSON: a chunk whose `content` is not
/// empty, `[DONE]`, and error frames.
#[derive(Default)]
struct SseScan {
    buf: BytesMut,
    content: usize,
    done: bool,
}

impl SseScan {
    fn push(&mut self, data: &Bytes) -> Result<(), String> {
        self.buf.extend_from_slice(data);
        while let Some(pos) = find(&self.buf, b"\n\n") {
            let frame = self.buf.split_to(pos + 2);
            let Some(payload) = frame.strip_prefix(b"data: ") else {
                continue; // a comment (keep-alive)
            };
            if payload.starts_with(b"[DONE]") {
                self.done = true;
            } else if payload.starts_with(b"{\"error\"") {
                return Err(format!("error frame: {}", String::from_utf8_lossy(payload)));
            } else if let Some(i) = find(payload, b"\"content\":\"") {
                if payload.get(i + 11) != Some(&b'"') {
                    self.content += 1;
                }
            }
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// === gateway process ===

/// The release gateway binary, running on a loopback port.
struct Gateway {
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl Gateway {
    async fn start(
        paths: &Paths,
        env: &[(String, String)],
        name: &str,
    ) -> Result<Gateway, BoxError> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let workdir = paths.scratch.join(format!("{name}-work"));
        std::fs::create_dir_all(&workdir)?;
        let log = std::fs::File::create(paths.scratch.join(format!("{name}.log")))?;
        let mut cmd = Command::new(&paths.gateway);
        // The caller's own gateway settings (a key, a rate limit, a log
        // filter) must not leak into the measured configuration.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("PROXY_")
                || k.starts_with("WORKER_")
                || k == "RUST_LOG"
                || k == "CODEX_HOME"
            {
                cmd.env_remove(&key);
            }
        }
        cmd.env("PORT", port.to_string())
            .env("PROXY_HOST", "127.0.0.1")
            .env("PROXY_CODEX_WORKDIR", &workdir)
            // No request limits in the way of the load: the turn concurrency
            // cap (default 32) set high, rate limiting and the per-client
            // stream limit off (their defaults).
            .env("WORKER_MAX_CONCURRENCY", "100000")
            .env("PROXY_RATE_LIMIT_ENABLED", "false")
            .env("PROXY_SSE_MAX_CONCURRENCY", "0")
            .env("PROXY_SHUTDOWN_DRAIN_MS", "2000")
            .env("WORKER_SHUTDOWN_GRACE_MS", "1000")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_gateway_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd.spawn()?;
        let pid = child.id().ok_or("gateway exited at once")?;
        let gateway = Gateway { child, pid, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = HttpConn::connect(addr).await {
                if c.get("/readyz").await == Ok(StatusCode::OK) {
                    return Ok(gateway);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "gateway not ready within 30 s; see {}",
                    paths.scratch.join(format!("{name}.log")).display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (graceful: drains, then stops its worker), SIGKILL after 10 s.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// `BENCH_GATEWAY_ENV="K=V,K2=V2"`: extra environment for every measured
/// gateway, for experiments (`TOKIO_WORKER_THREADS=1`, `LD_PRELOAD=...`,
/// `RUST_LOG=warn`); the report prints it. Separated by `;` instead when
/// a value has commas (`_RJEM_MALLOC_CONF=narenas:1,dirty_decay_ms:1000`).
fn extra_gateway_env() -> Vec<(String, String)> {
    env_list("BENCH_GATEWAY_ENV")
}

fn env_list(name: &str) -> Vec<(String, String)> {
    let text = std::env::var(name).unwrap_or_default();
    let sep = if text.contains(';') { ';' } else { ',' };
    text.split(sep)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// A positive count from the environment (`BENCH_*_ROUNDS`), or `default`.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

// === direct JSON-RPC client ===

/// A worker spawned by the bench itself and driven over its stdio, the
/// baseline the gateway's overhead is measured against.
struct Direct {
    child: tokio::sync::Mutex<Option<Child>>,
    out: mpsc::Sender<Vec<u8>>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>,
    threads: Mutex<HashMap<String, mpsc::UnboundedSender<(String, Value)>>>,
    thread_params: Value,
}

impl Direct {
    /// Spawns the worker with exactly the gateway's command line and does its handshake.
    async fn start(
        paths: &Paths,
        env: &[(String, String)],
        codex_home: Option<&Path>,
        name: &str,
    ) -> Result<Arc<Direct>, BoxError> {
        let workdir = paths.scratch.join(format!("{name}-work"));
        std::fs::create_dir_all(&workdir)?;
        let mut vars: HashMap<String, String> = env.iter().cloned().collect();
        if let Some(home) = codex_home {
            vars.insert("CODEX_HOME".into(), home.display().to_string());
        }
        let lookup = vars.clone();
        let config = Config::from_env(&Env::new(move |k| lookup.get(k).cloned()))?;
        let mut cmd = worker_command(&config.worker, &workdir).await?;
        cmd.envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log_path = paths.scratch.join(format!("{name}.log"));
        tokio::spawn(async move {
            // Drained so the worker never blocks on a full stderr pipe.
            let mut log = tokio::fs::File::create(log_path).await.ok();
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(f) = log.as_mut() {
                    let _ = f.write_all(format!("{line}\n").as_bytes()).await;
                }
            }
        });

        let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(4096);
        tokio::spawn(async move {
            let mut stdin = tokio::io::BufWriter::new(stdin);
            while let Some(line) = out_rx.recv().await {
                if stdin.write_all(&line).await.is_err() {
                    return;
                }
                // Write what else is queued, then flush once.
                while let Ok(line) = out_rx.try_recv() {
                    if stdin.write_all(&line).await.is_err() {
                        return;
                    }
                }
                if stdin.flush().await.is_err() {
                    return;
                }
            }
        });

        let thread_config: serde_json::Map<String, Value> = HOST_TOOL_FEATURES
            .iter()
            .map(|f| (format!("features.{f}"), json!(false)))
            .chain([
                ("agents.enabled".to_owned(), json!(false)),
                ("web_search".to_owned(), json!("disabled")),
            ])
            .collect();
        let thread_params = serde_json::to_value(ThreadStartParams {
            model: Some("codex-offline".into()),
            model_provider: config.worker.model_provider.clone(),
            cwd: Some(workdir.display().to_string()),
            approval_policy: Some("never".into()),
            sandbox: Some(config.worker.sandbox.as_str().into()),
            developer_instructions: None,
            ephemeral: Some(true),
            config: Some(thread_config),
            dynamic_tools: None,
            environments: (!config.worker.enable_codex_tools).then(Vec::new),
        })?;

        let direct = Arc::new(Direct {
            child: tokio::sync::Mutex::new(Some(child)),
            out,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            threads: Mutex::new(HashMap::new()),
            thread_params,
        });
        tokio::spawn(read_loop(direct.clone(), stdout));

        let init = InitializeParams {
            client_info: ClientInfo {
                name: "codex-completions-api".into(),
                title: Some("Codex Completions API".into()),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            capabilities: Some(InitializeCapabilities {
                experimental_api: true,
                opt_out_notification_methods: Some(
                    OPT_OUT_NOTIFICATIONS
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ),
            }),
        };
        tokio::time::timeout(
            Duration::from_secs(30),
            direct.call("initialize", serde_json::to_value(init)?),
        )
        .await
        .map_err(|_| "worker: no initialize answer in 30 s")??;
        direct.send(json!({"method": "initialized"})).await?;
        direct.call("model/list", json!({})).await?;
        Ok(direct)
    }

    async fn send(&self, msg: Value) -> Result<(), String> {
        let mut line = serde_json::to_vec(&msg).expect("json");
        line.push(b'\n');
        self.out
            .send(line)
            .await
            .map_err(|_| "worker stdin closed".to_owned())
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("lock").insert(id, tx);
        self.send(json!({"id": id, "method": method, "params": params}))
            .await?;
        rx.await.map_err(|_| "worker gone".to_owned())?
    }

    /// One turn on a fresh ephemeral thread, as the gateway runs it.
    async fn turn(self: &Arc<Self>) -> Result<Sample, String> {
        let t0 = Instant::now();
        let thread = self
            .call("thread/start", self.thread_params.clone())
            .await?;
        let thread_id = thread["thread"]["id"]
            .as_str()
            .ok_or("thread/start: no thread id")?
            .to_owned();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.threads
            .lock()
            .expect("lock")
            .insert(thread_id.clone(), tx);
        let input = json!([{"type": "text", "text": PROMPT, "text_elements": []}]);
        let outcome = async {
            self.call("turn/start", json!({"threadId": thread_id, "input": input}))
                .await?;
            let mut first = None;
            loop {
                let (method, params) = rx.recv().await.ok_or("worker gone")?;
                match method.as_str() {
                    "item/agentMessage/delta" => {
                        first.get_or_insert_with(|| t0.elapsed());
                    }
                    "turn/completed" => {
                        let status = params["turn"]["status"].as_str().unwrap_or("?");
                        if status != "completed" {
                            return Err(format!(
                                "turn ended {status}: {}",
                                params["turn"]["error"]
                            ));
                        }
                        let end = t0.elapsed();
                        return first
                            .map(|first| Sample { first, end })
                            .ok_or_else(|| "turn completed without a delta".to_owned());
                    }
                    _ => {}
                }
            }
        }
        .await;
        self.threads.lock().expect("lock").remove(&thread_id);
        // Released in the background, as the gateway does after a stream ends.
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me
                .call("thread/unsubscribe", json!({"threadId": thread_id}))
                .await;
        });
        outcome
    }

    async fn stop(&self) {
        let child = self.child.lock().await.take();
        if let Some(mut child) = child {
            // Closing stdin is codex's shutdown signal; the writer holds it,
            // so kill after a short grace instead of waiting on it.
            if tokio::time::timeout(Duration::from_millis(200), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

async fn read_loop(direct: Arc<Direct>, stdout: tokio::process::ChildStdout) {
    let mut lines = BufReader::with_capacity(64 * 1024, stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(mut msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = msg.get("id").and_then(Value::as_u64);
        match (method, id) {
            (None, Some(id)) => {
                let tx = direct.pending.lock().expect("lock").remove(&id);
                if let Some(tx) = tx {
                    let result = match msg.get_mut("error") {
                        Some(err) => Err(err.to_string()),
                        None => Ok(msg.get_mut("result").map(Value::take).unwrap_or_default()),
                    };
                    let _ = tx.send(result);
                }
            }
            (Some(_), Some(_)) => {
                // A server request (approval, tool call): none are expected here.
                let id = msg["id"].clone();
                let _ = direct
                    .send(json!({"id": id, "error": {"code": -32601, "message": "not supported by the bench"}}))
                    .await;
            }
            (Some(method), None) => {
                let params = msg.get_mut("params").map(Value::take).unwrap_or_default();
                let Some(thread) = params.get("threadId").and_then(Value::as_str) else {
                    continue;
                };
                let tx = direct.threads.lock().expect("lock").get(thread).cloned();
                if let Some(tx) = tx {
                    let _ = tx.send((method, params));
                }
            }
            (None, None) => {}
        }
    }
    // Fail whoever still waits.
    direct.pending.lock().expect("lock").clear();
    direct.threads.lock().expect("lock").clear();
}

// === /proc ===

/// VmRSS and RssAnon in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Rss {
    rss_kib: u64,
    anon_kib: u64,
}

fn proc_status(pid: u32) -> Rss {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
    }
}

/// utime + stime of a process, in clock ticks.
fn proc_cpu_ticks(pid: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 2..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// The pids whose parent is `ppid`.
fn children(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if parent == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

/// The machine's `cpu` line of `/proc/stat`: user, nice, system, idle,
/// iowait, irq, softirq, steal (then guest time, already in user and nice),
/// in ticks; empty if it cannot be read.
fn cpu_line() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect()
}

/// Busy and total ticks of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let v = cpu_line();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The machine's steal time so far (time the hypervisor ran something else
/// while a virtual CPU wanted to run) and all time, in ticks.
fn steal_ticks() -> (u64, u64) {
    let v = cpu_line();
    (v.get(7).copied().unwrap_or(0), v.iter().take(8).sum())
}

/// Steal as a share of all CPU time between two [`steal_ticks`] readings.
fn steal_percent(from: (u64, u64), to: (u64, u64)) -> f64 {
    to.0.saturating_sub(from.0) as f64 * 100.0 / to.1.saturating_sub(from.1).max(1) as f64
}

#[derive(Debug, Clone, Copy)]
struct CpuSnapshot {
    gateway: u64,
    worker: u64,
    client: u64,
    machine_busy: u64,
    machine_total: u64,
    at: Instant,
}

/// CPU used during a run, in clock ticks (USER_HZ, 100/s on Linux).
#[derive(Debug, Clone, Copy)]
struct CpuDelta {
    gateway: u64,
    worker: u64,
    client: u64,
    /// Busy ticks of every other process on the machine.
    others: u64,
    /// Ticks the machine had (cores × elapsed).
    total: u64,
    elapsed: Duration,
}

impl CpuSnapshot {
    /// The gateway, its worker (its child process), and this process. The
    /// direct worker idles during gateway runs; it would count under "others".
    fn take(gateway: u32) -> CpuSnapshot {
        let worker = children(gateway)
            .iter()
            .map(|p| proc_cpu_ticks(&p.to_string()))
            .sum();
        let (busy, total) = machine_ticks();
        CpuSnapshot {
            gateway: proc_cpu_ticks(&gateway.to_string()),
            worker,
            client: proc_cpu_ticks("self"),
            machine_busy: busy,
            machine_total: total,
            at: Instant::now(),
        }
    }

    fn minus(&self, before: &CpuSnapshot) -> CpuDelta {
        let gateway = self.gateway.saturating_sub(before.gateway);
        let worker = self.worker.saturating_sub(before.worker);
        let client = self.client.saturating_sub(before.client);
        let busy = self.machine_busy.saturating_sub(before.machine_busy);
        CpuDelta {
            gateway,
            worker,
            client,
            others: busy.saturating_sub(gateway + worker + client),
            total: self.machine_total.saturating_sub(before.machine_total),
            elapsed: self.at.duration_since(before.at),
        }
    }
}

// === memory ===

struct MemoryReport {
    idle: Rss,
    /// (open streams, RSS with them open), 0.5 s after the last opened
    points: Vec<(usize, Rss)>,
    /// The same, 2.5 s after: past jemalloc's 1 s decay of what opening
    /// them freed (the requests' read buffers, their futures).
    settled: Vec<(usize, Rss)>,
    after_close: Rss,
    /// 15 s after closing them: what the allocator gave back.
    after_settle: Rss,
    errors: u64,
    first_error: Option<String>,
    /// How much of bench/symbol-order.txt the binary has (idle RSS depends on it).
    layout: String,
}

async fn memory(paths: &Paths, opts: &Opts) -> Result<MemoryReport, BoxError> {
    let mut env = paths.fake_worker_env();
    // Slow enough that no stream ends during the measurement.
    env.push(("FAKE_WORKER_DELAY_MS".to_owned(), "600000".to_owned()));
    let gateway = Gateway::start(paths, &env, "gateway-memory").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = proc_status(gateway.pid);
    let steps: &[usize] = if opts.quick { &[50, 200] } else { &[100, 1000] };
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let mut held = JoinSet::new();
    let mut points = Vec::new();
    let mut settled = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut open = 0;
    for &target in steps {
        let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(target);
        for _ in open..target {
            let ready_tx = ready_tx.clone();
            let mut close_rx = close_rx.clone();
            let addr = gateway.addr;
            held.spawn(async move {
                let opened = async {
                    let mut conn = HttpConn::connect(addr).await.map_err(|e| e.to_string())?;
                    let body = conn.open_stream().await?;
                    Ok::<_, String>((conn, body))
                }
                .await;
                match opened {
                    Ok(kept) => {
                        let _ = ready_tx.send(Ok(())).await;
                        let _ = close_rx.wait_for(|close| *close).await;
                        drop(kept);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e)).await;
                    }
                }
            });
        }
        drop(ready_tx);
        // Each new stream reports once (and then keeps its sender while held).
        for _ in open..target {
            if let Some(Err(e)) = ready_rx.recv().await {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
        open = target;
        tokio::time::sleep(Duration::from_millis(500)).await;
        points.push((target, proc_status(gateway.pid)));
        tokio::time::sleep(Duration::from_secs(2)).await;
        settled.push((target, proc_status(gateway.pid)));
    }
    let _ = close_tx.send(true);
    while held.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_close = proc_status(gateway.pid);
    tokio::time::sleep(Duration::from_secs(14)).await;
    let after_settle = proc_status(gateway.pid);
    gateway.stop().await;
    Ok(MemoryReport {
        idle,
        points,
        settled,
        after_close,
        after_settle,
        errors,
        first_error,
        layout: code_layout(&paths.gateway),
    })
}

/// How many of the functions bench/symbol-order.txt lists the gateway binary
/// has, and whether they are laid out in that order: the idle RSS above holds
/// for a binary linked that way (build.rs). A list made by another compiler,
/// or before much of the code changed, matches fewer of its symbols (then run
/// scripts/symbol-order again); a binary linked without the list has them in
/// the compiler's order.
fn code_layout(gateway: &Path) -> String {
    let list = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/symbol-order.txt");
    let Ok(listed) = std::fs::read_to_string(list) else {
        return "bench/symbol-order.txt not found".to_owned();
    };
    let symbols = match std::process::Command::new("nm")
        .arg("--defined-only")
        .arg(gateway)
        .output()
    {
        Ok(out) if out.status.success() => out.stdout,
        _ => return "not checked (`nm` could not read the binary)".to_owned(),
    };
    let symbols = String::from_utf8_lossy(&symbols);
    // "<address> <kind> <name>"
    let address: std::collections::HashMap<&str, u64> = symbols
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = u64::from_str_radix(fields.next()?, 16).ok()?;
            Some((fields.nth(1)?, address))
        })
        .collect();
    let listed: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    let found: Vec<u64> = listed
        .iter()
        .filter_map(|name| address.get(name).copied())
        .collect();
    let in_order = found.windows(2).all(|pair| pair[0] < pair[1]);
    format!(
        "{} of the {} functions bench/symbol-order.txt lists are in the binary, {}",
        found.len(),
        listed.len(),
        if in_order {
            "in the listed order"
        } else {
            "**not** in the listed order (linked without build.rs's layout)"
        }
    )
}

// === real CLI ===

async fn real_cli(
    paths: &Paths,
    codex: &Path,
    opts: &Opts,
) -> Result<Vec<(usize, RunStats, RunStats)>, BoxError> {
    if !paths.offline_model.is_file() {
        return Err(format!("{} not found", paths.offline_model.display()).into());
    }
    let home = paths.scratch.join("codex-home");
    progress("real CLI: starting the offline model");
    let mut model = Command::new(&paths.offline_model)
        .args(["--port", "0", "--codex-home"])
        .arg(&home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = model.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let listening = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| "offline model did not start")??
        .unwrap_or_default();
    let Some(base_url) = listening
        .strip_prefix("offline-model listening on ")
        .map(str::trim)
    else {
        return Err(format!("offline model said: {listening}").into());
    };
    // The direct worker gets its own CODEX_HOME (same config), so the two
    // codex processes never share state databases.
    let home_direct = paths.scratch.join("codex-home-direct");
    codex_offline_model::write_codex_home(&home_direct, base_url)?;
    let env = vec![
        ("CODEX_BIN".to_owned(), codex.display().to_string()),
        ("CODEX_HOME".to_owned(), home.display().to_string()),
        (
            codex_offline_model::API_KEY_ENV.to_owned(),
            codex_offline_model::API_KEY.to_owned(),
        ),
    ];
    progress("real CLI: starting the gateway and a direct worker");
    let gateway = Gateway::start(paths, &env, "gateway-real").await?;
    let direct = Direct::start(paths, &env, Some(&home_direct), "direct-real").await?;
    let gw = Target::Gateway(gateway.addr);
    let dt = Target::Direct(direct.clone());
    closed_loop(&gw, 4, Duration::ZERO, opts.secs(1.0)).await;
    closed_loop(&dt, 4, Duration::ZERO, opts.secs(1.0)).await;
    let mut rows = Vec::new();
    // Real turns take 20 ms to seconds: longer windows at higher concurrency
    // keep the sample counts usable.
    for (conc, window) in [(1, 4.0), (16, 5.0), (64, 8.0)] {
        progress(&format!("real CLI: {conc} concurrent streams"));
        let (g, d) = if conc == 1 {
            // One stream: gateway and direct requests alternate, so the
            // CLI's drift between two separate runs (±10 ms on a ~45 ms
            // turn) does not pass for the gateway's overhead.
            alternating(&gw, &dt, opts.secs(1.0), opts.secs(2.0 * window)).await
        } else {
            // Both sides at once: run one after the other, the two
            // windows met a different machine (the CLI's turn times drift
            // by a third between runs here), which read as hundreds of ms
            // of overhead either way.
            tokio::join!(
                closed_loop(&gw, conc, opts.secs(1.0), opts.secs(window)),
                closed_loop(&dt, conc, opts.secs(1.0), opts.secs(window)),
            )
        };
        rows.push((conc, g, d));
    }
    gateway.stop().await;
    direct.stop().await;
    let _ = model.kill().await;
    Ok(rows)
}

// === report ===

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.3}", d.as_secs_f64() * 1e3))
        .unwrap_or_else(|| "–".into())
}

fn diff(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:+.3}", (a.as_secs_f64() - b.as_secs_f64()) * 1e3),
        _ => "–".into(),
    }
}

fn errors(r: &RunStats) -> String {
    match &r.first_error {
        Some(e) if r.errors > 0 => {
            let e: String = e.chars().take(80).collect();
            format!("{} ({})", r.errors, e.replace('|', "/"))
        }
        _ => r.errors.to_string(),
    }
}

fn latency_table(out: &mut String, rows: &[(usize, RunStats, RunStats)]) -> std::fmt::Result {
    writeln!(out, "| streams | path | requests | completions/s | first p50 | first p99 | end p50 | end p99 | gateway CPU µs per completion | errors |")?;
    writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for (conc, g, d) in rows {
        for (name, r) in [("gateway", g), ("direct JSON-RPC", d)] {
            let cpu = r
                .cpu
                .map(|c| format!("{:.0}", cpu_per_completion(r, &c).0))
                .unwrap_or_default();
            writeln!(
                out,
                "| {conc} | {name} | {} | {:.0} | {} | {} | {} | {} | {cpu} | {} |",
                r.samples.len(),
                r.rate(),
                ms(r.pct(0.5, false)),
                ms(r.pct(0.99, false)),
                ms(r.pct(0.5, true)),
                ms(r.pct(0.99, true)),
                errors(r)
            )?;
        }
        writeln!(
            out,
            "| {conc} | **overhead** | | | **{}** | **{}** | **{}** | **{}** | | |",
            diff(g.pct(0.5, false), d.pct(0.5, false)),
            diff(g.pct(0.99, false), d.pct(0.99, false)),
            diff(g.pct(0.5, true), d.pct(0.5, true)),
            diff(g.pct(0.99, true), d.pct(0.99, true)),
        )?;
    }
    Ok(())
}

fn fixed_table(out: &mut String, rows: &[(f64, RunStats, RunStats)]) -> std::fmt::Result {
    writeln!(out, "| offered/s | path | achieved/s | sent >5 ms late | first p50 | first p99 | end p50 | end p99 | gateway CPU µs per completion | errors |")?;
    writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for (rate, g, d) in rows {
        for (name, r) in [("gateway", g), ("direct JSON-RPC", d)] {
            let cpu = r
                .cpu
                .map(|c| format!("{:.0}", cpu_per_completion(r, &c).0))
                .unwrap_or_default();
            writeln!(
                out,
                "| {rate:.0} | {name} | {:.0} | {} | {} | {} | {} | {} | {cpu} | {} |",
                r.rate(),
                r.late,
                ms(r.pct(0.5, false)),
                ms(r.pct(0.99, false)),
                ms(r.pct(0.5, true)),
                ms(r.pct(0.99, true)),
                errors(r)
            )?;
        }
        writeln!(
            out,
            "| {rate:.0} | **overhead** | | | **{}** | **{}** | **{}** | **{}** | | |",
            diff(g.pct(0.5, false), d.pct(0.5, false)),
            diff(g.pct(0.99, false), d.pct(0.99, false)),
            diff(g.pct(0.5, true), d.pct(0.5, true)),
            diff(g.pct(0.99, true), d.pct(0.99, true)),
        )?;
    }
    Ok(())
}

fn throughput_table(out: &mut String, rows: &[(usize, RunStats)]) -> std::fmt::Result {
    writeln!(out, "| connections | completions/s | end p50 | end p99 | CPU µs per completion: gateway | worker | load generator | other processes (% of machine) | errors |")?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for (conc, r) in rows {
        let (g, w, c, o) = match r.cpu {
            Some(cpu) => {
                let (g, w, c) = cpu_per_completion(r, &cpu);
                let others = 100.0 * cpu.others as f64 / cpu.total.max(1) as f64;
                (
                    format!("{g:.0}"),
                    format!("{w:.0}"),
                    format!("{c:.0}"),
                    format!("{others:.0} %"),
                )
            }
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        writeln!(
            out,
            "| {conc} | **{:.0}** | {} | {} | {g} | {w} | {c} | {o} | {} |",
            r.rate(),
            ms(r.pct(0.5, true)),
            ms(r.pct(0.99, true)),
            errors(r)
        )?;
    }
    Ok(())
}

/// CPU µs per completion of the gateway, its worker and the load generator.
/// The CPU was read around the whole run (warm-up included) and `/proc`
/// ticks are 10 ms, so completions are scaled to the same span.
fn cpu_per_completion(r: &RunStats, cpu: &CpuDelta) -> (f64, f64, f64) {
    let n = (r.completed as f64 * (cpu.elapsed.as_secs_f64() / r.window.as_secs_f64())).max(1.0);
    let us = |t: u64| t as f64 * 10_000.0 / n;
    (us(cpu.gateway), us(cpu.worker), us(cpu.client))
}

/// `load`: RSS of the fake-worker gateway after warm-up and after all the
/// load runs, when there were any.
fn memory_table(out: &mut String, m: &MemoryReport, load: Option<(Rss, Rss)>) -> std::fmt::Result {
    let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
    writeln!(out, "| gateway state | VmRSS MiB | RssAnon MiB |")?;
    writeln!(out, "|---|---:|---:|")?;
    writeln!(
        out,
        "| idle, fresh (worker ready, no request yet) | **{}** | {} |",
        mib(m.idle.rss_kib),
        mib(m.idle.anon_kib)
    )?;
    for (n, r) in &m.points {
        writeln!(
            out,
            "| {n} streams open | {} | {} |",
            mib(r.rss_kib),
            mib(r.anon_kib)
        )?;
    }
    writeln!(
        out,
        "| 1 s after closing them | {} | {} |",
        mib(m.after_close.rss_kib),
        mib(m.after_close.anon_kib)
    )?;
    writeln!(
        out,
        "| 15 s after closing them | **{}** | {} |",
        mib(m.after_settle.rss_kib),
        mib(m.after_settle.anon_kib)
    )?;
    if let Some((warm, after_load)) = load {
        writeln!(
            out,
            "| (fake-worker gateway) after warm-up | {} | {} |",
            mib(warm.rss_kib),
            mib(warm.anon_kib)
        )?;
        writeln!(
            out,
            "| (fake-worker gateway) after all load runs | {} | {} |",
            mib(after_load.rss_kib),
            mib(after_load.anon_kib)
        )?;
    }
    if let (Some((n1, r1)), Some((n2, r2))) = (m.points.first(), m.points.last()) {
        if n2 > n1 {
            let marginal = r2.rss_kib.saturating_sub(r1.rss_kib) as f64 / (n2 - n1) as f64;
            let average = r2.rss_kib.saturating_sub(m.idle.rss_kib) as f64 / *n2 as f64;
            let settled = match (m.settled.first(), m.settled.last()) {
                (Some((_, s1)), Some((_, s2))) => {
                    s2.rss_kib.saturating_sub(s1.rss_kib) as f64 / (n2 - n1) as f64
                }
                _ => f64::NAN,
            };
            writeln!(
                out,
                "\nPer open stream: **{marginal:.1} KiB** (marginal, {n1} → {n2} streams, read 0.5 s \
                 after the last opened); {settled:.1} KiB read 2.5 s after, once jemalloc's 1 s decay \
                 has returned what opening them freed; {average:.1} KiB averaged over {n2} streams \
                 from idle (at 0.5 s). Each stream is a keep-alive connection with a turn in progress \
                 (slow fake worker, `FAKE_WORKER_DELAY_MS=600000`), its first content frame already \
                 read by the client."
            )?;
        }
    }
    writeln!(out, "\nCode layout: {}.", m.layout)?;
    if m.errors > 0 {
        writeln!(
            out,
            "\n{} streams failed to open: {}",
            m.errors,
            m.first_error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

fn goals_table(
    out: &mut String,
    fixed: &[(f64, RunStats, RunStats)],
    throughput: &[(usize, RunStats)],
    m: Option<&MemoryReport>,
) -> std::fmt::Result {
    let yes = |ok: bool| if ok { "yes" } else { "**no**" };
    writeln!(out, "| goal | measured | met |")?;
    writeln!(out, "|---|---|---|")?;
    if let Some((_, g, d)) = fixed.iter().find(|(r, _, _)| *r == 1000.0) {
        let over = |end| match (g.pct(0.99, end), d.pct(0.99, end)) {
            (Some(a), Some(b)) => Some(a.as_secs_f64() * 1e3 - b.as_secs_f64() * 1e3),
            _ => None,
        };
        for (label, end) in [("first content", false), ("end of stream", true)] {
            let o = over(end);
            writeln!(
                out,
                "| overhead p99 < 1 ms at 1,000 req/s ({label}) | {} ms | {} |",
                o.map(|o| format!("{o:+.3}")).unwrap_or_else(|| "–".into()),
                yes(o.is_some_and(|o| o < 1.0) && g.errors == 0)
            )?;
        }
    }
    let best = throughput.iter().map(|(_, r)| r.rate()).fold(0.0, f64::max);
    writeln!(
        out,
        "| ≥ 5,000 streamed completions/s (instant worker, 2 cores) | {best:.0}/s | {} |",
        yes(best >= 5000.0)
    )?;
    let Some(m) = m else { return Ok(()) };
    let idle_mb = m.idle.rss_kib as f64 / 1000.0;
    writeln!(
        out,
        "| < 30 MB RSS idle | {idle_mb:.1} MB ({:.1} MiB) | {} |",
        m.idle.rss_kib as f64 / 1024.0,
        yes(idle_mb < 30.0)
    )?;
    if let (Some((n1, r1)), Some((n2, r2))) = (m.points.first(), m.points.last()) {
        if n2 > n1 {
            let marginal = r2.rss_kib.saturating_sub(r1.rss_kib) as f64 / (n2 - n1) as f64;
            writeln!(
                out,
                "| < 64 KiB per open stream | {marginal:.1} KiB | {} |",
                yes(marginal < 64.0)
            )?;
        }
    }
    Ok(())
}

// === --check: CPU per completion against the committed baseline ===

/// The figures `--check` compares: (key, target kind, connections).
const CHECK_FIGURES: &[(&str, bool, usize)] = &[
    ("streamed_1_connection", true, 1),
    ("streamed_64_connections", true, 64),
    ("plain_16_connections", false, 16),
];

/// A figure may be this much above its baseline before `--check` fails.
const CHECK_TOLERANCE: f64 = 0.15;

fn baseline_path() -> PathBuf {
    std::env::var_os("BENCH_BASELINE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/baseline.json"))
}

/// Measures the gateway's CPU µs per completion for [`CHECK_FIGURES`] (the
/// median of three windows each) and compares it with the baseline, or
/// writes it as the new baseline. Returns the report and whether it passed.
async fn check_cpu(write_baseline: bool) -> Result<(String, bool), BoxError> {
    let paths = Paths::find()?;
    let fake_env = paths.fake_worker_env();
    progress("check: starting the gateway on the fake worker");
    let gateway = Gateway::start(&paths, &fake_env, "gateway-check").await?;
    let streamed = Target::Gateway(gateway.addr);
    let plain = Target::GatewayPlain(gateway.addr);
    closed_loop(&streamed, 16, Duration::ZERO, Duration::from_secs(1)).await;
    closed_loop(&plain, 16, Duration::ZERO, Duration::from_secs(1)).await;

    let mut measured: Vec<(&str, f64, f64)> = Vec::new();
    for &(key, stream, conc) in CHECK_FIGURES {
        progress(&format!("check: {key}"));
        let target = if stream { &streamed } else { &plain };
        let mut cpu = Vec::new();
        let mut rate = Vec::new();
        for _ in 0..3 {
            let run = measured_closed_loop(
                target,
                gateway.pid,
                conc,
                Duration::from_millis(300),
                Duration::from_secs(3),
            )
            .await;
            if run.errors > 0 {
                gateway.stop().await;
                return Err(format!("{key}: {}", errors(&run)).into());
            }
            let c = run.cpu.expect("measured");
            cpu.push(cpu_per_completion(&run, &c).0);
            rate.push(run.rate());
        }
        cpu.sort_by(f64::total_cmp);
        rate.sort_by(f64::total_cmp);
        measured.push((key, cpu[1], rate[1]));
    }
    gateway.stop().await;

    let path = baseline_path();
    let mut out = String::new();
    if write_baseline {
        let figures: serde_json::Map<String, Value> = measured
            .iter()
            .map(|(k, cpu, _)| ((*k).to_owned(), json!(cpu.round())))
            .collect();
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let doc = json!({
            "about": "gateway CPU µs per completion (fake worker, 8 deltas), median of three 3 s windows; written by `scripts/bench --check --write-baseline`, compared by `scripts/bench --check` (fails above +15 %)",
            "commit": commit,
            "cpu_us_per_completion": figures,
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
        writeln!(out, "Wrote {}.", path.display())?;
    }
    let baseline: Option<Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut ok = true;
    writeln!(out, "| figure | completions/s | gateway CPU µs per completion | baseline | change | within +15 % |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---|")?;
    for (key, cpu, rate) in &measured {
        let base = baseline
            .as_ref()
            .and_then(|b| b["cpu_us_per_completion"][*key].as_f64());
        let (base_s, change, pass) = match base {
            Some(b) if b > 0.0 => {
                let change = cpu / b - 1.0;
                let pass = change <= CHECK_TOLERANCE;
                (
                    format!("{b:.0}"),
                    format!("{:+.0} %", change * 100.0),
                    if pass { "yes" } else { "**no**" },
                )
            }
            _ => ("–".into(), "–".into(), "no baseline"),
        };
        ok &= pass != "**no**";
        writeln!(
            out,
            "| {key} | {rate:.0} | {cpu:.0} | {base_s} | {change} | {pass} |"
        )?;
    }
    if baseline.is_none() {
        writeln!(
            out,
            "\nNo baseline at {}; nothing compared.",
            path.display()
        )?;
    }
    Ok((out, ok))
}

// === --latency: the added latency at one stream, in rounds ===

/// `--latency` and `--open-loop`: the added latency, round by round and over
/// all rounds, with the gateway's CPU per completion; at one stream closed
/// loop, or with `open_rate`, in an open loop at that many requests/s.
async fn latency_rounds(open_rate: Option<f64>) -> Result<String, BoxError> {
    let rounds = env_count("BENCH_LATENCY_ROUNDS", 5);
    let paths = Paths::find()?;
    let env = paths.fake_worker_env();
    progress("latency: starting the gateway and a direct worker");
    let gateway = Gateway::start(&paths, &env, "gateway-latency").await?;
    let direct = Direct::start(&paths, &env, None, "direct-latency").await?;
    let (gw, dt) = (
        Target::Gateway(gateway.addr),
        Target::Direct(direct.clone()),
    );
    closed_loop(&gw, 16, Duration::ZERO, Duration::from_secs(1)).await;
    closed_loop(&dt, 16, Duration::ZERO, Duration::from_secs(1)).await;
    let mut out = String::new();
    let load = match open_rate {
        None => "one stream, closed loop".to_owned(),
        Some(rate) => format!(
            "open loop at {rate} requests/s, {}",
            Arrivals::from_env().describe()
        ),
    };
    writeln!(
        out,
        "Gateway `{}`, extra environment: `{}`; {load}; {rounds} rounds of 3 s per path; load average {}.\n",
        paths.gateway.display(),
        std::env::var("BENCH_GATEWAY_ENV").unwrap_or_default(),
        loadavg()
    )?;
    writeln!(out, "| round | gateway p50 | gateway p99 | direct p50 | direct p99 | **added p50** | **added p99** | gateway CPU µs per completion | steal during the gateway's window (and its warm-up) |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let (mut all_g, mut all_d) = (RunStats::default(), RunStats::default());
    let row = |out: &mut String, name: &str, g: &RunStats, d: &RunStats, cpu: &str, steal: &str| {
        writeln!(
            out,
            "| {name} | {} | {} | {} | {} | **{}** | **{}** | {cpu} | {steal} |",
            ms(g.pct(0.5, true)),
            ms(g.pct(0.99, true)),
            ms(d.pct(0.5, true)),
            ms(d.pct(0.99, true)),
            diff(g.pct(0.5, true), d.pct(0.5, true)),
            diff(g.pct(0.99, true), d.pct(0.99, true)),
        )
    };
    for round in 1..=rounds {
        progress(&format!("latency: round {round} of {rounds}"));
        let steal_start = steal_ticks();
        let (warmup, window) = match open_rate {
            None => (Duration::from_millis(500), Duration::from_secs(3)),
            Some(_) => (Duration::from_secs(1), Duration::from_secs(3)),
        };
        let g = match open_rate {
            None => measured_closed_loop(&gw, gateway.pid, 1, warmup, window).await,
            Some(rate) => measured_open_loop(&gw, gateway.pid, rate, warmup, window).await,
        };
        let steal = format!("{:.1} %", steal_percent(steal_start, steal_ticks()));
        let d = match open_rate {
            None => closed_loop(&dt, 1, warmup, window).await,
            Some(rate) => open_loop(&dt, rate, warmup, window).await,
        };
        let cpu = g.cpu.as_ref().map_or(String::new(), |c| {
            format!("{:.0}", cpu_per_completion(&g, c).0)
        });
        row(&mut out, &round.to_string(), &g, &d, &cpu, &steal)?;
        all_g.merge(g);
        all_d.merge(d);
    }
    row(&mut out, "all", &all_g, &all_d, "", "")?;
    writeln!(
        out,
        "\nErrors: gateway {}, direct {}. Load average at the end: {}.",
        errors(&all_g),
        errors(&all_d),
        loadavg()
    )?;
    gateway.stop().await;
    direct.stop().await;
    Ok(out)
}

// === --compare: two gateway binaries, interleaved ===

/// Runs [`CHECK_FIGURES`] on two gateway binaries at once, in alternating
/// 2 s windows (A, B, A, B, ...), seven rounds each: both see the same
/// machine, so on a shared machine the paired ratio is far steadier than
/// two separate `--check` runs. Reports median CPU µs per completion of
/// each and the median of the per-round ratios B/A.
async fn compare(a: PathBuf, b: PathBuf) -> Result<String, BoxError> {
    let mut pa = Paths::find()?;
    pa.gateway = a.clone();
    let mut pb = Paths::find()?;
    pb.gateway = b.clone();
    // `BENCH_GATEWAY_ENV_A` / `_B`: environment for one side only (the
    // same binary twice with different settings).
    let env = |p: &Paths, side: &str| {
        let mut env = p.fake_worker_env();
        env.extend(env_list(&format!("BENCH_GATEWAY_ENV_{side}")));
        env
    };
    // `BENCH_COMPARE_ROUNDS`: more rounds for a small difference on a busy machine.
    let rounds = env_count("BENCH_COMPARE_ROUNDS", 7);
    progress("compare: starting both gateways");
    let ga = Gateway::start(&pa, &env(&pa, "A"), "gateway-a").await?;
    let gb = Gateway::start(&pb, &env(&pb, "B"), "gateway-b").await?;
    for g in [&ga, &gb] {
        closed_loop(
            &Target::Gateway(g.addr),
            16,
            Duration::ZERO,
            Duration::from_secs(1),
        )
        .await;
        closed_loop(
            &Target::GatewayPlain(g.addr),
            16,
            Duration::ZERO,
            Duration::from_secs(1),
        )
        .await;
    }
    let mut out = String::new();
    writeln!(
        out,
        "A = `{}` {}, B = `{}` {}; {rounds} alternating 2 s windows per figure; load average {}.\n",
        a.display(),
        std::env::var("BENCH_GATEWAY_ENV_A").unwrap_or_default(),
        b.display(),
        std::env::var("BENCH_GATEWAY_ENV_B").unwrap_or_default(),
        loadavg()
    )?;
    writeln!(out, "| figure | A µs/completion | B µs/completion | B/A (median of rounds) | A completions/s | B completions/s |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    // The latency of every round, per side and figure, for a second table:
    // alternating windows make tails comparable on a busy machine too.
    let mut latencies = Vec::new();
    for &(key, stream, conc) in CHECK_FIGURES {
        progress(&format!("compare: {key}"));
        let (mut ca, mut cb, mut ratio, mut ra, mut rb) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut la, mut lb) = (RunStats::default(), RunStats::default());
        for _ in 0..rounds {
            let one = |g: &Gateway| {
                let target = if stream {
                    Target::Gateway(g.addr)
                } else {
                    Target::GatewayPlain(g.addr)
                };
                let pid = g.pid;
                async move {
                    let run = measured_closed_loop(
                        &target,
                        pid,
                        conc,
                        Duration::from_millis(200),
                        Duration::from_secs(2),
                    )
                    .await;
                    let c = run.cpu.expect("measured");
                    (cpu_per_completion(&run, &c).0, run.rate(), run)
                }
            };
            let (x, xr, xl) = one(&ga).await;
            let (y, yr, yl) = one(&gb).await;
            la.merge(xl);
            lb.merge(yl);
            ca.push(x);
            cb.push(y);
            ratio.push(y / x.max(1.0));
            ra.push(xr);
            rb.push(yr);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        writeln!(
            out,
            "| {key} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} |",
            med(&mut ca),
            med(&mut cb),
            med(&mut ratio),
            med(&mut ra),
            med(&mut rb)
        )?;
        latencies.push((key, la, lb));
    }
    writeln!(
        out,
        "\nEnd of body (ms), all rounds together:\n\n| figure | A p50 | A p99 | A p99.9 | B p50 | B p99 | B p99.9 |\n|---|---:|---:|---:|---:|---:|---:|"
    )?;
    for (key, la, lb) in &latencies {
        let ms = |r: &RunStats, p: f64| r.pct(p, true).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        writeln!(
            out,
            "| {key} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            ms(la, 0.5),
            ms(la, 0.99),
            ms(la, 0.999),
            ms(lb, 0.5),
            ms(lb, 0.99),
            ms(lb, 0.999)
        )?;
    }
    writeln!(out, "\nLoad average at the end: {}.", loadavg())?;
    ga.stop().await;
    gb.stop().await;
    Ok(out)
}
