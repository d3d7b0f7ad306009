//! Response ids and timestamps.

use rand::distr::Alphanumeric;
use rand::Rng;

/// `chatcmpl-` and 29 random alphanumerics, like OpenAI's.
pub fn completion_id() -> String {
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(29)
        .map(char::from)
        .collect();
    format!("chatcmpl-{suffix}")
}

pub use crate::calendar::unix_now;

/// Identifies the backend configuration, as OpenAI's field does.
pub fn system_fingerprint() -> String {
    format!(
        "fp_codex_{}",
        crate::protocol::pinned_codex_version().replace('.', "_")
    )
}

/// 24 random alphanumerics, for ids the gateway makes up (tool calls parsed from text).
pub fn short_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}
