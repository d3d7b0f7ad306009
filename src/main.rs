//! The `codex-completions-api` binary: reads the environment, serves until
//! SIGTERM or SIGINT (SIGHUP: a rolling restart of the workers).

use std::process::ExitCode;

use codex_completions_api::{app, config};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc malloc: measured cheaper per completion than
/// glibc and mimalloc (docs/benchmarks.md), and it gives memory back.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns on jemalloc's background thread, which returns freed pages to the
/// OS on its decay schedule (dirty pages after ~10 s) even when the gateway
/// is idle after a burst; without it, pages are purged only when the
/// gateway allocates again.
fn return_memory_when_idle() {
    #[cfg(not(target_env = "msvc"))]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("codex-completions-api: jemalloc background thread not started: {e}");
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
    init_tracing(config.log_json);
    return_memory_when_idle();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("codex-completions-api: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
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
        match app::run(config, listener, shutdown_signal(), on_start).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("codex-completions-api: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
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

async fn shutdown_signal() {
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
        eprintln!("codex-completions-api: second signal, exiting without waiting for the drain");
        std::process::exit(130);
    });
}
