//! A deterministic fake of the OpenAI Responses API, for running `codex app-server` offline.
//!
//! Codex is pointed at it through a `CODEX_HOME` written by [`write_codex_home`]. The model
//! answers `ECHO: <prompt>` by default; `[[…]]` triggers in the prompt make it call tools,
//! fail with an HTTP status, stream slowly, drop the connection, or report what codex sent
//! it (tools, instructions, history, images, output format, reasoning effort). Every
//! trigger is listed in the crate's README.md.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use codex_offline_model::{write_codex_home, OfflineModel};
//!
//! let model = OfflineModel::start(0).await?;
//! let home = std::env::temp_dir().join(format!("codex-home-doc-{}", std::process::id()));
//! let env = write_codex_home(&home, &model.base_url())?;
//! assert_eq!(env[0].0, "OFFLINE_MODEL_API_KEY");
//! // Spawn `codex app-server` with CODEX_HOME=home plus `env`, run turns, then inspect
//! // what codex sent:
//! assert!(model.requests().is_empty());
//! model.shutdown().await;
//! # std::fs::remove_dir_all(&home)?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codex_home;
mod events;
mod reply;
mod request;
mod server;
mod trigger;

pub use codex_home::{
    catalog, write_codex_home, write_codex_home_with, HomeOptions, API_KEY, API_KEY_ENV,
    BASE_INSTRUCTIONS, CATALOG_FILE,
};
pub use server::OfflineModel;

/// The model slug of the catalog written by [`write_codex_home`].
pub const MODEL_ID: &str = "codex-offline";
