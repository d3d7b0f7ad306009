//! Parsing a `POST /v1/completions` body into the neutral [`Conversation`].
//!
//! The prompt becomes one user message; everything the chat dialect shares
//! (`model`, `stream`, `stream_options`, `n`, `max_tokens`, `stop`, the
//! sampling knobs) is validated by the chat parser on the same object, so
//! the two dialects cannot drift. Tools do not exist here.

use serde_json::{json, Map, Value};

use crate::api::params::Member;

use crate::api::chat::ChatRequest;
use crate::api::conversation::Conversation;
use crate::api::error::ApiError;
use crate::api::params::{opt_bool, opt_uint};

/// A validated legacy completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionsRequest {
    pub conversation: Conversation,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// The prompt, when `echo` asks for it before the completion.
    pub echo: Option<String>,
}

impl CompletionsRequest {
    pub fn parse(body: &[u8]) -> Result<CompletionsRequest, ApiError> {
        let mut obj = crate::api::json_object(body)?;
        let prompt = prompt(&obj)?;
        for field in [
            "messages",
            "tools",
            "functions",
            "tool_choice",
            "function_call",
        ] {
            if obj.get(field).is_some_and(|v| !v.is_null()) {
                return Err(ApiError::invalid(
                    field,
                    format!(
                        "`{field}` is not a parameter of /v1/completions; use /v1/chat/completions"
                    ),
                ));
            }
        }
        if let Some(best_of) = opt_uint(&obj, "best_of")? {
            let n = opt_uint(&obj, "n")?.unwrap_or(1);
            if best_of != n {
                return Err(ApiError::invalid(
                    "best_of",
                    "`best_of` is not supported (only equal to `n`): the gateway cannot rank answers",
                ));
            }
        }
        if obj.member("logprobs").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                "logprobs",
                "`logprobs` is not supported: the model's token probabilities are not available",
            ));
        }
        if obj.member("suffix").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                "suffix",
                "`suffix` (insertion) is not supported",
            ));
        }
        let echo = opt_bool(&obj, "echo")?
            .unwrap_or(false)
            .then(|| prompt.clone());
        obj.remove("prompt");
        obj.insert(
            "messages".into(),
            json!([{"role": "user", "content": prompt}]),
        );
        let chat = ChatRequest::from_object(&obj)?;
        Ok(CompletionsRequest {
            conversation: chat.conversation,
            include_usage: chat.include_usage,
            echo,
        })
    }
}

/// `prompt`: a string, or a list holding one string. Several prompts in one
/// request (a batch), and token-id prompts, are refused by name: each
/// prompt would be its own conversation.
fn prompt(obj: &Map<String, Value>) -> Result<String, ApiError> {
    match obj.member("prompt") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Array(items)) if items.len() == 1 => match &items[0] {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::String(_) => Err(ApiError::invalid("prompt", "`prompt` must not be empty")),
            _ => Err(ApiError::invalid(
                "prompt",
                "token-id prompts are not supported: send the prompt as text",
            )),
        },
        Some(Value::Array(items)) if items.is_empty() => {
            Err(ApiError::invalid("prompt", "`prompt` must not be empty"))
        }
        Some(Value::Array(_)) => Err(ApiError::invalid(
            "prompt",
            "one prompt per request: send each prompt of a batch as its own request",
        )),
        Some(Value::String(_)) => Err(ApiError::invalid("prompt", "`prompt` must not be empty")),
        None | Some(Value::Null) => Err(ApiError::invalid(
            "prompt",
            "Missing required parameter: 'prompt'.",
        )),
        Some(_) => Err(ApiError::invalid(
            "prompt",
            "`prompt` must be a string or a list of one string",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conversation::{Part, Role};

    fn parse(v: Value) -> Result<CompletionsRequest, ApiError> {
        CompletionsRequest::parse(v.to_string().as_bytes())
    }

    #[test]
    fn the_prompt_becomes_one_user_message_and_chat_settings_carry_over() {
        let r = parse(json!({"model": "m", "prompt": ["Say hi"], "max_tokens": 5,
                              "stop": "\n", "n": 2, "echo": true, "stream": true}))
        .unwrap();
        let c = &r.conversation;
        assert_eq!(c.messages.len(), 1);
        assert_eq!(c.messages[0].role, Role::User);
        assert_eq!(c.messages[0].parts, vec![Part::Text("Say hi".into())]);
        assert_eq!((c.max_tokens, c.n, c.stream), (Some(5), 2, true));
        assert_eq!(c.stop, vec!["\n".to_owned()]);
        assert_eq!(r.echo.as_deref(), Some("Say hi"));
    }

    #[test]
    fn what_the_dialect_cannot_do_is_refused_by_name() {
        let param = |v: Value| parse(v).unwrap_err().param;
        assert_eq!(param(json!({"model": "m"})).as_deref(), Some("prompt"));
        assert_eq!(
            param(json!({"model": "m", "prompt": ["a", "b"]})).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param(json!({"model": "m", "prompt": [[1, 2]]})).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param(json!({"model": "m", "prompt": "x", "logprobs": 2})).as_deref(),
            Some("logprobs")
        );
        assert_eq!(
            param(json!({"model": "m", "prompt": "x", "best_of": 3})).as_deref(),
            Some("best_of")
        );
        assert_eq!(
            param(json!({"model": "m", "prompt": "x", "tools": []})).as_deref(),
            Some("tools")
        );
        assert_eq!(
            param(json!({"model": "m", "prompt": "x", "max_tokens": 0})).as_deref(),
            Some("max_tokens")
        );
    }
}
