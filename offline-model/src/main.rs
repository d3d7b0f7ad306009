//! `offline-model --port N [--codex-home DIR]`: serves the offline model until SIGTERM/SIGINT.
//!
//! Scripts wait for the single stdout line `offline-model listening on http://…/v1`.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use codex_offline_model::{write_codex_home, OfflineModel};

const USAGE: &str = "usage: offline-model [--port N] [--codex-home DIR]";

struct Args {
    port: u16,
    codex_home: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        codex_home: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--port" => {
                let value = it.next().ok_or("--port needs a value")?;
                args.port = value.parse().map_err(|_| format!("bad port: {value}"))?;
            }
            "--codex-home" => {
                args.codex_home = Some(it.next().ok_or("--codex-home needs a value")?.into());
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("offline-model: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let model = match OfflineModel::start(args.port).await {
        Ok(model) => model,
        Err(err) => {
            eprintln!("offline-model: cannot bind 127.0.0.1:{}: {err}", args.port);
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = &args.codex_home {
        match write_codex_home(dir, &model.base_url()) {
            Ok(env) => {
                for (key, value) in env {
                    eprintln!("offline-model: codex needs {key}={value}");
                }
            }
            Err(err) => {
                eprintln!(
                    "offline-model: cannot write CODEX_HOME {}: {err}",
                    dir.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    println!("offline-model listening on {}", model.base_url());
    let _ = std::io::stdout().flush();

    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            eprintln!("offline-model: cannot watch SIGTERM: {err}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    model.shutdown().await;
    ExitCode::SUCCESS
}
