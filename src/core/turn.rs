//! The typed request and events of one turn.

use serde_json::Value;

use crate::protocol::{DynamicToolSpec, UserInput};

/// What the API handlers ask the core to run.
#[derive(Debug, Clone, Default)]
pub struct TurnRequest {
    /// A model id the worker listed.
    pub model: String,
    /// `low` | `medium` | `high` | `xhigh`, if requested.
    pub effort: Option<String>,
    /// System and developer messages, joined.
    pub instructions: Option<String>,
    /// Earlier conversation as raw Responses items, injected before the turn.
    pub history: Vec<Value>,
    /// The new user input of this turn.
    pub input: Vec<UserInput>,
    /// Client tools, offered to the model as codex dynamic tools.
    pub tools: Vec<DynamicToolSpec>,
    /// JSON schema the final message must follow.
    pub output_schema: Option<Value>,
}

/// A call the model made to a client tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub call_id: String,
    pub name: String,
    /// The arguments as a JSON text, as OpenAI clients expect them.
    pub arguments: String,
}

/// Token accounting of the whole turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_output_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    /// What this total added to an earlier total of the same thread.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_sub(earlier.input_tokens),
            cached_input_tokens: self
                .cached_input_tokens
                .saturating_sub(earlier.cached_input_tokens),
            output_tokens: self.output_tokens.saturating_sub(earlier.output_tokens),
            reasoning_output_tokens: self
                .reasoning_output_tokens
                .saturating_sub(earlier.reasoning_output_tokens),
            total_tokens: self.total_tokens.saturating_sub(earlier.total_tokens),
        }
    }
}

/// What a turn yields, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// A piece of the assistant's text.
    TextDelta(String),
    /// A piece of the model's reasoning summary (parts after the first
    /// start with a blank line). Comes before the text it led to.
    ReasoningDelta(String),
    /// The model called a client tool; the worker waits for its result.
    /// (This, `Usage` and `Failed` are boxed: once per turn at most, and
    /// inline they made every text delta 72 bytes instead of 32, in each
    /// stream's queues.)
    ToolCall(Box<ToolCall>),
    /// Token usage (sent once, just before the end).
    Usage(Box<Usage>),
    /// The turn ended normally. Always the last event unless `Failed` is.
    /// (The API decides the finish reason: a continued turn's tool calls
    /// belong to earlier responses.)
    Finished,
    /// The turn failed; always the last event.
    Failed(Box<super::Failure>),
}
