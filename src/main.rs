//! The `codex-completions-api` binary: reads the environment, serves until
//! SIGTERM or SIGINT (SIGHUP: a rolling restart of the workers).

use std::process::ExitCode;

use codex_completions_api::log_format::{JsonLines, JsonSpanFields, PlainFields, UtcMicros};
use codex_completions_api::log_writer::LogWriter;
use codex_completions_api::{app, config};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc malloc: measured cheaper per completion than
/// glibc and mimalloc (docs/benchmarks.md), and it gives memory back.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Has jemalloc give freed memory back to the OS soon after a burst.
///
/// Its background thread returns freed pages on the decay schedule even
/// when the gateway is idle afterwards (without it, pages are purged only
/// when the gateway allocates again). The schedule is shortened from
/// jemalloc's 10 s to 1 s for dirty pages, and lazily-freed ("muzzy")
/// pages are returned at once: measured 15 s after 1,000 streams closed,
/// RSS 17 MiB instead of 25 (idle 13), with no CPU cost that showed in the
/// paired bench (docs/benchmarks.md). An operator's `_RJEM_MALLOC_CONF`
/// takes precedence over the schedule. The threads' caches are made smaller
/// at build time (`.cargo/config.toml`), for the same reason.
fn return_memory_when_idle() {
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    {
        use tikv_jemalloc_ctl::{Access, AsName};
        if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
            eprintln!("codex-completions-api: jemalloc background thread not started: {e}");
        }
        if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
            // `arenas.*`: arenas made later (one per thread set, lazily);
            // `arena.0.*`: the one the process has started with.
            let settings: [(&[u8], isize); 4] = [
                (b"arenas.dirty_decay_ms\0", 1000),
                (b"arena.0.dirty_decay_ms\0", 1000),
                (b"arenas.muzzy_decay_ms\0", 0),
                (b"arena.0.muzzy_decay_ms\0", 0),
            ];
            for (name, value) in settings {
                if let Err(e) = name.name().write(value) {
                    eprintln!("codex-completions-api: jemalloc decay not set: {e}");
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--help" | "-h") => {
            print!("{}", config::help_text());
            return ExitCode::SUCCESS;
        }
        Some("--version" | "-V") => {
            println!(
                "codex-completions-api {} (codex {})",
                env!("CARGO_PKG_VERSION"),
                codex_completions_api::protocol::pinned_codex_version()
            );
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("unknown argument `{other}`; see --help");
            return ExitCode::from(2);
        }
        None => {}
    }
    let config = match config::Config::from_process_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("codex-completions-api: {e}");
            return ExitCode::from(2);
        }
    };
    let log = init_tracing(config.log_json);
    return_memory_when_idle();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("codex-completions-api: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let on_signal = log.clone();
    let code = runtime.block_on(async move {
        let addr = config.serve.addr();
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("codex-completions-api: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let on_start = |handles: app::GatewayHandles| {
            tokio::spawn(maintenance_signals(handles.maintenance.clone()));
            tokio::spawn(restart_signal(handles));
        };
        match app::run(config, listener, shutdown_signal(on_signal), on_start).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("codex-completions-api: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // What the drain logged last is out before the process ends.
    log.flush();
    code
}

fn init_tracing(json: bool) -> LogWriter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Access lines batched: one costs the request a copy, not a system call.
    let log = LogWriter::stderr();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(log.clone())
        // The same timestamps and fields as the defaults, for less work per
        // line (log_format's docs).
        .with_timer(UtcMicros);
    if json {
        builder
            .json()
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines::new(UtcMicros))
            .init();
    } else {
        builder.fmt_fields(PlainFields).init();
    }
    // A panic's message comes after the lines logged before it.
    let hook = std::panic::take_hook();
    let flusher = log.clone();
    std::panic::set_hook(Box::new(move |info| {
        flusher.flush();
        hook(info);
    }));
    log
}

/// SIGUSR1 switches maintenance mode on, SIGUSR2 off: for operators who
/// would rather `kill -USR1` than call the admin endpoint.
async fn maintenance_signals(handle: codex_maintenance::MaintenanceHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut on), Ok(mut off)) = (
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            _ = on.recv() => { handle.enable(); tracing::warn!("maintenance mode on (SIGUSR1)"); }
            _ = off.recv() => { handle.disable(); tracing::warn!("maintenance mode off (SIGUSR2)"); }
        }
    }
}

/// SIGHUP: a rolling restart of every worker, one at a time (after a CLI
/// upgrade or a change to its config.toml), like `POST /admin/workers/restart`.
async fn restart_signal(handles: app::GatewayHandles) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        // The exec backend, if any, probes its CLI again (lockdown, models).
        let queued = handles.restart();
        tracing::warn!(
            queued,
            exec = handles.exec.is_some(),
            "rolling restart of the workers (SIGHUP)"
        );
    }
}

async fn shutdown_signal(log: LogWriter) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // A second signal during the drain means "now": exit at once. The worker
    // sees its stdin close when this process goes, and exits by itself.
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        log.flush();
        eprintln!("codex-completions-api: second signal, exiting without waiting for the drain");
        std::process::exit(130);
    });
}
