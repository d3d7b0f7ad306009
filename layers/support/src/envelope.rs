//! OpenAI's error envelope, `{"error":{"message","type","param","code"}}`.
//!
//! Serialized through a struct rather than `serde_json::json!` so the fields
//! come out in OpenAI's order whatever features `serde_json` is built with.

use bytes::Bytes;
use serde::Serialize;

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

/// The JSON body of an OpenAI-style error.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: &str) -> Bytes {
    let envelope = Envelope {
        error: ErrorObject {
            message,
            kind,
            param,
            code,
        },
    };
    let json = serde_json::to_vec(&envelope).expect("an envelope of strings always serializes");
    Bytes::from(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_openai_order_and_escape_the_message() {
        let body = error_body("say \"hi\"", "t", None, "c");
        assert_eq!(
            &body[..],
            br#"{"error":{"message":"say \"hi\"","type":"t","param":null,"code":"c"}}"#
        );
    }
}
