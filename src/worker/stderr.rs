//! The worker's stderr, as gateway log events.
//!
//! codex logs some warnings on every turn (`Unknown model … is used. This
//! will use fallback model metadata.` for a model outside its catalog: one
//! line per request, hundreds per hour). A warning is worth one line, not
//! one per turn: a message seen before (timestamp aside) is logged again at
//! `debug`, so it is still there for whoever turns the level up. The memory
//! of seen messages is bounded and starts over when full, so a warning comes
//! back now and then in a long run instead of never.

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::ChildStderr;
use tracing::Level;

/// Distinct messages remembered before the memory starts over.
const REMEMBERED: usize = 256;

/// Decides the level of each stderr line.
#[derive(Debug, Default)]
pub(super) struct StderrLevels {
    seen: std::collections::HashSet<String>,
}

impl StderrLevels {
    pub(super) fn level(&mut self, line: &str) -> Level {
        let level = if line.contains("ERROR") {
            Level::ERROR
        } else if line.contains("WARN") {
            Level::WARN
        } else {
            return Level::DEBUG;
        };
        if self.seen.len() >= REMEMBERED {
            self.seen.clear();
        }
        if self.seen.insert(message_of(line).to_owned()) {
            level
        } else {
            Level::DEBUG
        }
    }
}

/// The line without codex's leading timestamp (`2026-11-29T21:40:00.1Z  WARN …`).
fn message_of(line: &str) -> &str {
    let line = line.trim();
    match line.split_once(char::is_whitespace) {
        Some((first, rest)) if first.starts_with(|c: char| c.is_ascii_digit()) => rest.trim_start(),
        _ => line,
    }
}

/// Worker stderr lines become tracing events carrying the worker's pid.
pub(super) async fn forward_stderr(stderr: ChildStderr, pid: Option<u32>) {
    let mut lines = BufReader::new(stderr).lines();
    let mut levels = StderrLevels::default();
    let pid = pid.unwrap_or(0);
    while let Ok(Some(line)) = lines.next_line().await {
        match levels.level(&line) {
            Level::ERROR => tracing::error!(target: "codex_worker", pid, "{line}"),
            Level::WARN => tracing::warn!(target: "codex_worker", pid, "{line}"),
            _ => tracing::debug!(target: "codex_worker", pid, "{line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNKNOWN: &str = "WARN codex_core::models_manager::manager: Unknown model gpt-x is used. \
                           This will use fallback model metadata.";

    #[test]
    fn a_warning_repeated_on_every_turn_is_a_warning_once() {
        let mut levels = StderrLevels::default();
        let at = |t: &str| format!("2026-11-29T21:40:0{t}.123456Z  {UNKNOWN}");
        assert_eq!(levels.level(&at("1")), Level::WARN);
        assert_eq!(levels.level(&at("2")), Level::DEBUG);
        assert_eq!(levels.level(&at("3")), Level::DEBUG);
        // A different warning is still a warning.
        assert_eq!(
            levels.level("2026-11-29T21:40:04Z  WARN codex_core: something else"),
            Level::WARN
        );
        assert_eq!(
            levels.level("2026-11-29T21:40:05Z  ERROR codex_core: boom"),
            Level::ERROR
        );
        assert_eq!(
            levels.level("2026-11-29T21:40:05Z  INFO codex_core: fine"),
            Level::DEBUG
        );
    }

    #[test]
    fn the_memory_is_bounded_and_starts_over() {
        let mut levels = StderrLevels::default();
        assert_eq!(levels.level(UNKNOWN), Level::WARN);
        for i in 0..REMEMBERED {
            levels.level(&format!("WARN other {i}"));
        }
        assert!(levels.seen.len() <= REMEMBERED);
        assert_eq!(
            levels.level(UNKNOWN),
            Level::WARN,
            "forgotten once the memory is full"
        );
    }
}
