//! OpenAI's error envelope, `{"error":{"message","type","param","code"}}`, in OpenAI's
//! field order (a `serde_json::Value` would sort the keys).

use bytes::Bytes;

/// The JSON body of an error response; `param` is always `null` here.
pub(crate) fn error_body(message: &str, kind: &str, code: &str) -> Bytes {
    let json = |s: &str| serde_json::Value::from(s).to_string();
    Bytes::from(format!(
        r#"{{"error":{{"message":{},"type":{},"param":null,"code":{}}}}}"#,
        json(message),
        json(kind),
        json(code),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_openai_order_and_are_escaped() {
        assert_eq!(
            error_body("say \"hi\"", "requests", "rate_limit_exceeded"),
            &br#"{"error":{"message":"say \"hi\"","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#[..]
        );
    }
}
