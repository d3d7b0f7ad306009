//! Serde bindings for the parts of the `codex app-server` protocol this
//! gateway uses, for the CLI version pinned in `CODEX_VERSION`.
//!
//! Only data lives here, no logic. `fixtures/protocol/schema-subset.json`
//! holds the matching slice of the schema the pinned CLI generates; a test
//! checks these types against it and `scripts/check-protocol.sh` reports
//! drift when the pin moves.

mod methods;
mod notifications;

pub use methods::*;
pub use notifications::*;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A client→server request: its wire name, params and result types.
pub trait Method {
    const NAME: &'static str;
    type Params: Serialize + Send + Sync;
    type Response: DeserializeOwned;
}

/// The pinned Codex CLI version (the repository's `CODEX_VERSION` file).
pub const PINNED_CODEX_VERSION: &str = include_str!("../../CODEX_VERSION");

/// The pinned version without surrounding whitespace.
pub fn pinned_codex_version() -> &'static str {
    PINNED_CODEX_VERSION.trim()
}
