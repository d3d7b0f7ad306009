//! What the `codex-*` rejecting tower layers (auth, maintenance, output
//! mode) share: OpenAI's error envelope and the reject-or-forward response
//! future. Kept in its own small crate so each layer stays usable alone
//! without three copies of the same code.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod envelope;
mod future;

pub use envelope::error_body;
pub use future::RejectOr;
