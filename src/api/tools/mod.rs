//! Tool calls in text: Obsidian Copilot's `<use_tool>` blocks.
//!
//! Some clients (Obsidian Copilot) describe their tools in the prompt and
//! read tool calls back as literal XML in the assistant's text:
//!
//! ```text
//! <use_tool>
//! <name>localSearch</name>
//! <query>piano lessons</query>
//! <salientTerms>["piano","lessons"]</salientTerms>
//! </use_tool>
//! ```
//!
//! [`xml`] renders structured calls in that canonical form and parses
//! blocks back; [`ToolCallAggregator`] finds blocks in streamed text.

mod aggregator;
pub mod xml;

pub use aggregator::{Segment, ToolCallAggregator};
