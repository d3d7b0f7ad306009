//! The dialect-neutral conversation request every wire format parses into.
//!
//! Chat Completions and the Responses API (and the dialects after them)
//! each have a parser that validates their own JSON, naming parameters the
//! way their clients know them, and produces a [`Conversation`]. The
//! pipeline (`api::pipeline`) runs it without knowing which dialect it came
//! from; the dialect's renderer shapes the answer.

use serde_json::Value;

/// A validated request for one model answer (or `n` of them).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The model name as the client asked for it (aliases resolve later).
    pub model: String,
    pub messages: Vec<Message>,
    pub stream: bool,
    /// Independent answers to produce, each on its own thread.
    pub n: u32,
    /// Approximate output limit (see `pipeline::shaper`).
    pub max_tokens: Option<u64>,
    /// Stop sequences, none empty.
    pub stop: Vec<String>,
    pub reasoning_effort: Option<String>,
    pub response_format: ResponseFormat,
    pub tools: Vec<FunctionTool>,
    pub tool_choice: ToolChoice,
    pub parallel_tool_calls: Option<bool>,
    /// Whether the client answers tool calls by call id. Chat's deprecated
    /// `functions` answer by function name, so such a turn cannot be matched
    /// for continuation and is never parked.
    pub calls_have_ids: bool,
}

impl Conversation {
    /// Everything but the messages: the settings of a request, for a
    /// conversation built from part of its messages.
    pub fn clone_without_messages(&self) -> Conversation {
        Conversation {
            model: self.model.clone(),
            messages: Vec::new(),
            stream: self.stream,
            n: self.n,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            reasoning_effort: self.reasoning_effort.clone(),
            response_format: self.response_format.clone(),
            tools: self.tools.clone(),
            tool_choice: self.tool_choice.clone(),
            parallel_tool_calls: self.parallel_tool_calls,
            calls_have_ids: self.calls_have_ids,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Hash)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

/// One content part of a message.
#[derive(Debug, Clone, PartialEq, Hash)]
pub enum Part {
    Text(String),
    Image(ImageRef),
}

/// An image part: a data URL, or an http(s) URL the pipeline inlines or refuses.
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct ImageRef {
    pub url: String,
    /// Where the URL sits in the client's request, for error messages
    /// (`messages[1].content[0].image_url.url`, `input[0].content[1].image_url`).
    pub param: String,
}

impl ImageRef {
    /// A URL to fetch, not inline `data:` (the only form the pinned CLI takes).
    pub fn is_remote(&self) -> bool {
        !self.url.starts_with("data:")
    }
}

#[derive(Debug, Clone, PartialEq, Hash)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
    /// Calls an assistant message made.
    pub tool_calls: Vec<AssistantToolCall>,
    /// For `tool` messages: the call this answers.
    pub tool_call_id: Option<String>,
}

impl Message {
    /// The message's text parts joined.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            if let Part::Text(t) = part {
                out.push_str(t);
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Hash)]
pub struct AssistantToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A client tool, offered to the model as a function.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum ResponseFormat {
    #[default]
    Text,
    JsonObject,
    JsonSchema(Value),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum ToolChoice {
    #[default]
    Auto,
    None,
    Required,
    Function(String),
}

/// The most answers one request may ask for; each runs its own thread.
pub const MAX_N: u64 = 8;
