//! The `offline-model` binary: readiness line, CODEX_HOME, health, and SIGTERM.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn prints_ready_line_writes_codex_home_and_exits_on_sigterm() {
    let home =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bin-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let mut child = Command::new(env!("CARGO_BIN_EXE_offline-model"))
        .args(["--port", "0", "--codex-home"])
        .arg(&home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("no ready line")
        .unwrap()
        .unwrap();
    let base_url = line
        .strip_prefix("offline-model listening on ")
        .unwrap_or_else(|| panic!("unexpected line: {line}"));
    let port: u16 = base_url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/v1"))
        .unwrap_or_else(|| panic!("unexpected url: {base_url}"))
        .parse()
        .unwrap();
    assert_ne!(port, 0);

    // The CODEX_HOME points codex at this very server.
    let config = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(
        config.contains(&format!("base_url = \"{base_url}\"")),
        "{config}"
    );
    assert!(home.join(codex_offline_model::CATALOG_FILE).exists());

    let addr = ([127, 0, 0, 1], port).into();
    let (status, _, _) = common::call(addr, "GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("did not exit on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test]
async fn rejects_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_offline-model"))
        .args(["--port", "not-a-port"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: offline-model"));
}
