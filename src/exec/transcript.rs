//! A [`TurnRequest`] → what one `codex exec` reads: a prompt on stdin and
//! image files.
//!
//! `codex exec` takes one user message. The app-server backend injects a
//! conversation's earlier messages as real Responses items; exec cannot, so
//! they are given as a transcript ahead of the new message (the format is
//! documented in `docs/app-server-migration/backends.md`):
//!
//! ```text
//! <conversation_history>
//! <message role="user">
//! one
//! </message>
//! <message role="assistant">
//! uno
//! </message>
//! <function_call name="w" call_id="call_1">{}</function_call>
//! <function_call_output call_id="call_1">sunny</function_call_output>
//! </conversation_history>
//!
//! two
//! ```
//!
//! With no history the prompt is exactly the new message's text parts,
//! joined by `\n` (what the model receives from app-server too). Images,
//! earlier ones first, become files; a history image is named in the
//! transcript as `[image N]`, N counting from 1 in attachment order (codex
//! labels attached images `[Image #N]` in the same order). No escaping:
//! every byte of the transcript comes from the same client, which already
//! controls the whole conversation, including its system prompt.

use base64::Engine;
use serde_json::Value;

use crate::core::TurnRequest;
use crate::protocol::UserInput;

/// One image for `--image`: the decoded bytes and a file extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub bytes: Vec<u8>,
    pub extension: &'static str,
}

/// The prompt and the images of one exec turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub text: String,
    pub images: Vec<ImageFile>,
}

/// Builds the prompt. Fails (a message for the client) on an image that is
/// not an inline `data:` URL: the API inlines remote ones before this.
pub fn prompt(req: &TurnRequest) -> Result<Prompt, String> {
    let mut images = Vec::new();
    let mut text = String::new();
    if !req.history.is_empty() {
        text.push_str("<conversation_history>\n");
        for item in &req.history {
            history_item(item, &mut text, &mut images)?;
        }
        text.push_str("</conversation_history>\n");
        if !req.input.is_empty() {
            text.push('\n');
        }
    }
    let mut parts = Vec::new();
    for input in &req.input {
        match input {
            UserInput::Text { text, .. } => parts.push(text.as_str()),
            UserInput::Image { url } => images.push(decode(url)?),
        }
    }
    text.push_str(&parts.join("\n"));
    Ok(Prompt { text, images })
}

fn history_item(item: &Value, out: &mut String, images: &mut Vec<ImageFile>) -> Result<(), String> {
    let str_of = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default();
    match str_of("type") {
        "message" => {
            let role = str_of("role");
            out.push_str(&format!("<message role=\"{role}\">\n"));
            let mut pieces = Vec::new();
            for part in item
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match part.get("type").and_then(Value::as_str) {
                    Some("input_image") => {
                        let url = part
                            .get("image_url")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        images.push(decode(url)?);
                        pieces.push(format!("[image {}]", images.len()));
                    }
                    _ => pieces.push(
                        part.get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                }
            }
            out.push_str(&pieces.join("\n"));
            out.push_str("\n</message>\n");
        }
        "function_call" => out.push_str(&format!(
            "<function_call name=\"{}\" call_id=\"{}\">{}</function_call>\n",
            str_of("name"),
            str_of("call_id"),
            str_of("arguments")
        )),
        "function_call_output" => out.push_str(&format!(
            "<function_call_output call_id=\"{}\">{}</function_call_output>\n",
            str_of("call_id"),
            str_of("output")
        )),
        // The translator makes only the three kinds above.
        other => {
            return Err(format!(
                "history item `{other}` cannot be sent to codex exec"
            ))
        }
    }
    Ok(())
}

/// `data:image/png;base64,...` → the bytes and an extension codex reads the
/// format from.
fn decode(url: &str) -> Result<ImageFile, String> {
    let rest = url
        .strip_prefix("data:")
        .ok_or("only inline data: image URLs reach codex exec")?;
    let (meta, data) = rest.split_once(',').ok_or("a data: URL without a comma")?;
    let mime = meta.split(';').next().unwrap_or_default();
    if !meta.ends_with(";base64") {
        return Err("image data: URLs must be base64".into());
    }
    let extension = match mime {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => return Err(format!("image type `{other}` is not supported")),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("the image is not valid base64: {e}"))?;
    Ok(ImageFile { bytes, extension })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const PNG: &str = "data:image/png;base64,iVBORw0KGgo=";

    #[test]
    fn without_history_the_prompt_is_the_new_message_alone() {
        let req = TurnRequest {
            input: vec![UserInput::text("hello"), UserInput::text("there")],
            ..TurnRequest::default()
        };
        let p = prompt(&req).unwrap();
        assert_eq!(p.text, "hello\nthere");
        assert!(p.images.is_empty());
    }

    #[test]
    fn history_becomes_a_transcript_before_the_new_message() {
        let req = TurnRequest {
            history: vec![
                json!({"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "one"},
                    {"type": "input_image", "image_url": PNG}]}),
                json!({"type": "message", "role": "assistant", "content": [
                    {"type": "output_text", "text": "uno"}]}),
                json!({"type": "function_call", "call_id": "call_1", "name": "w", "arguments": "{}"}),
                json!({"type": "function_call_output", "call_id": "call_1", "output": "sunny"}),
            ],
            input: vec![UserInput::text("two"), UserInput::Image { url: PNG.into() }],
            ..TurnRequest::default()
        };
        let p = prompt(&req).unwrap();
        assert_eq!(
            p.text,
            "<conversation_history>\n\
             <message role=\"user\">\none\n[image 1]\n</message>\n\
             <message role=\"assistant\">\nuno\n</message>\n\
             <function_call name=\"w\" call_id=\"call_1\">{}</function_call>\n\
             <function_call_output call_id=\"call_1\">sunny</function_call_output>\n\
             </conversation_history>\n\ntwo"
        );
        assert_eq!(p.images.len(), 2, "the history's image, then the new one");
        assert_eq!(p.images[0].extension, "png");
        assert_eq!(&p.images[0].bytes[..4], b"\x89PNG");
    }

    #[test]
    fn a_remote_or_unknown_image_is_refused() {
        for url in ["https://example.com/a.png", "data:text/plain;base64,aGk="] {
            let req = TurnRequest {
                input: vec![UserInput::Image { url: url.into() }],
                ..TurnRequest::default()
            };
            assert!(prompt(&req).is_err(), "{url}");
        }
    }
}
