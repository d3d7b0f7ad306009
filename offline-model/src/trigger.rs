//! Triggers: `[[…]]` commands a test writes into its prompt to steer the model.
//!
//! The scanner walks the prompt left to right and yields every well-formed trigger in the
//! order it appears. Anything between `[[` and `]]` that is not a well-formed trigger
//! (unknown keyword, bad number, invalid JSON) is ordinary prompt text.

use serde_json::{Map, Value};

/// Upper bound for `[[words N]]` and `[[break N]]`, so a typo cannot exhaust memory.
pub(crate) const MAX_COUNT: usize = 100_000;
/// Upper bound for `[[slow MS]]` (10 minutes).
pub(crate) const MAX_SLOW_MS: u64 = 600_000;
/// Upper bound for `[[quota SECONDS]]` (a week, the longest window codex reports).
pub(crate) const MAX_QUOTA_SECS: u64 = 7 * 24 * 3600;

/// One parsed trigger.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Trigger {
    /// `[[call NAME ARGS_JSON]]`; `NAME` may be `namespace.name`.
    Call {
        /// The tool namespace, from `ns.name`.
        namespace: Option<String>,
        /// The tool name.
        name: String,
        /// The arguments object (`{}` when omitted).
        arguments: Map<String, Value>,
    },
    /// `[[custom NAME "INPUT"]]`: a freeform (custom) tool call whose input is the JSON
    /// string INPUT, e.g. codex's `apply_patch` with a patch body or `exec` with JavaScript.
    Custom {
        /// The tool name.
        name: String,
        /// The raw input text.
        input: String,
    },
    /// `[[error STATUS]]`, STATUS in 400..=599.
    Error(u16),
    /// `[[quota SECONDS]]`: the account's usage limit is reached, resetting in SECONDS.
    Quota(u64),
    /// `[[unauthorized]]`: the credential was revoked or its login expired (HTTP 401).
    Unauthorized,
    /// `[[break N]]`.
    Break(usize),
    /// `[[slow MS]]`.
    Slow(u64),
    /// `[[words N]]`.
    Words(usize),
    /// `[[tools]]`.
    Tools,
    /// `[[instructions]]`.
    Instructions,
    /// `[[history]]`.
    History,
    /// `[[images]]`.
    Images,
    /// `[[format]]`.
    Format,
    /// `[[effort]]`.
    Effort,
    /// `[[json]]`.
    Json,
    /// `[[text TEXT]]`: TEXT runs to the LAST `]]` of the prompt.
    Text(String),
    /// `[[reason SUMMARY]]`: SUMMARY runs to the NEXT `]]`; the reply reasons first.
    Reason(String),
}

/// All triggers in `prompt`, in the order they appear.
pub(crate) fn scan(prompt: &str) -> Vec<Trigger> {
    let mut found = Vec::new();
    let mut pos = 0;
    while let Some(offset) = prompt[pos..].find("[[") {
        let start = pos + offset;
        match parse_at(prompt, start + 2) {
            Some((trigger, end)) => {
                found.push(trigger);
                pos = end;
            }
            None => pos = start + 2,
        }
    }
    found
}

/// Parses the trigger whose keyword starts at `at` (just after `[[`). Returns the trigger
/// and the byte offset just past its closing `]]`.
fn parse_at(prompt: &str, at: usize) -> Option<(Trigger, usize)> {
    let rest = &prompt[at..];
    let keyword_len = rest
        .find(|c: char| !c.is_ascii_lowercase())
        .unwrap_or(rest.len());
    let keyword = &rest[..keyword_len];
    let args_at = at + keyword_len;
    let unit = |t: Trigger| close(prompt, skip_ws(prompt, args_at)).map(|end| (t, end));
    match keyword {
        "call" => parse_call(prompt, args_at),
        "custom" => parse_custom(prompt, args_at),
        "error" => parse_number(prompt, args_at).and_then(|(n, end)| {
            u16::try_from(n)
                .ok()
                .filter(|s| (400..=599).contains(s))
                .map(|s| (Trigger::Error(s), end))
        }),
        "quota" => parse_number(prompt, args_at)
            .filter(|(secs, _)| *secs <= MAX_QUOTA_SECS)
            .map(|(secs, end)| (Trigger::Quota(secs), end)),
        "break" => count(prompt, args_at).map(|(n, end)| (Trigger::Break(n), end)),
        "words" => count(prompt, args_at).map(|(n, end)| (Trigger::Words(n), end)),
        "slow" => parse_number(prompt, args_at)
            .filter(|(ms, _)| *ms <= MAX_SLOW_MS)
            .map(|(ms, end)| (Trigger::Slow(ms), end)),
        "unauthorized" => unit(Trigger::Unauthorized),
        "tools" => unit(Trigger::Tools),
        "instructions" => unit(Trigger::Instructions),
        "history" => unit(Trigger::History),
        "images" => unit(Trigger::Images),
        "format" => unit(Trigger::Format),
        "effort" => unit(Trigger::Effort),
        "json" => unit(Trigger::Json),
        "text" => parse_text(prompt, args_at),
        "reason" => parse_reason(prompt, args_at),
        _ => None,
    }
}

fn skip_ws(s: &str, at: usize) -> usize {
    at + (s[at..].len() - s[at..].trim_start().len())
}

/// Expects `]]` at `at`; returns the offset past it.
fn close(s: &str, at: usize) -> Option<usize> {
    s[at..].starts_with("]]").then_some(at + 2)
}

/// ` N]]` with at least one whitespace before N.
fn parse_number(s: &str, at: usize) -> Option<(u64, usize)> {
    let digits_at = skip_ws(s, at);
    if digits_at == at {
        return None;
    }
    let len = s[digits_at..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(s.len() - digits_at);
    let n = s[digits_at..digits_at + len].parse().ok()?;
    close(s, skip_ws(s, digits_at + len)).map(|end| (n, end))
}

fn count(s: &str, at: usize) -> Option<(usize, usize)> {
    parse_number(s, at)
        .and_then(|(n, end)| usize::try_from(n).ok().map(|n| (n, end)))
        .filter(|(n, _)| *n <= MAX_COUNT)
}

/// ` NAME]]` or ` NAME {json object}]]`. The JSON is read by a JSON parser, so `]]` or
/// spaces inside its strings do not end the trigger.
fn parse_call(s: &str, at: usize) -> Option<(Trigger, usize)> {
    let name_at = skip_ws(s, at);
    if name_at == at {
        return None;
    }
    let name_len = s[name_at..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .unwrap_or(s.len() - name_at);
    let full_name = &s[name_at..name_at + name_len];
    let (namespace, name) = match full_name.rsplit_once('.') {
        Some((ns, name)) => (Some(ns.to_owned()), name),
        None => (None, full_name),
    };
    if name.is_empty() || namespace.as_deref() == Some("") {
        return None;
    }
    let args_at = skip_ws(s, name_at + name_len);
    let (arguments, after_args) = if s[args_at..].starts_with('{') {
        let mut stream = serde_json::Deserializer::from_str(&s[args_at..]).into_iter::<Value>();
        let Some(Ok(Value::Object(map))) = stream.next() else {
            return None;
        };
        (map, args_at + stream.byte_offset())
    } else {
        (Map::new(), args_at)
    };
    let end = close(s, skip_ws(s, after_args))?;
    Some((
        Trigger::Call {
            namespace,
            name: name.to_owned(),
            arguments,
        },
        end,
    ))
}

/// ` NAME "INPUT"]]`: INPUT is a JSON string (so it may hold newlines as `\n`, quotes and
/// `]]`); a missing or non-string input is malformed.
fn parse_custom(s: &str, at: usize) -> Option<(Trigger, usize)> {
    let name_at = skip_ws(s, at);
    if name_at == at {
        return None;
    }
    let name_len = s[name_at..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
        .unwrap_or(s.len() - name_at);
    if name_len == 0 {
        return None;
    }
    let input_at = skip_ws(s, name_at + name_len);
    if !s[input_at..].starts_with('"') {
        return None;
    }
    let mut stream = serde_json::Deserializer::from_str(&s[input_at..]).into_iter::<String>();
    let Some(Ok(input)) = stream.next() else {
        return None;
    };
    let end = close(s, skip_ws(s, input_at + stream.byte_offset()))?;
    Some((
        Trigger::Custom {
            name: s[name_at..name_at + name_len].to_owned(),
            input,
        },
        end,
    ))
}

/// ` TEXT]]`: one separating whitespace character, then everything up to the last `]]`.
fn parse_text(s: &str, at: usize) -> Option<(Trigger, usize)> {
    let rest = &s[at..];
    let text_at = match rest.chars().next() {
        Some(c) if c.is_whitespace() => at + c.len_utf8(),
        Some(']') => at,
        _ => return None,
    };
    let end = s[text_at..].rfind("]]")? + text_at;
    Some((Trigger::Text(s[text_at..end].to_owned()), end + 2))
}

/// ` SUMMARY]]`: one separating whitespace character, then a non-empty text up to the
/// next `]]` (so the rest of the prompt, other triggers included, stays outside it).
fn parse_reason(s: &str, at: usize) -> Option<(Trigger, usize)> {
    let c = s[at..].chars().next().filter(|c| c.is_whitespace())?;
    let text_at = at + c.len_utf8();
    let end = s[text_at..].find("]]")? + text_at;
    let summary = &s[text_at..end];
    if summary.trim().is_empty() {
        return None;
    }
    Some((Trigger::Reason(summary.to_owned()), end + 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(ns: Option<&str>, name: &str, args: Value) -> Trigger {
        let Value::Object(arguments) = args else {
            panic!("not an object")
        };
        Trigger::Call {
            namespace: ns.map(str::to_owned),
            name: name.to_owned(),
            arguments,
        }
    }

    #[test]
    fn reason_takes_its_summary_up_to_the_next_closing_brackets() {
        assert_eq!(
            scan("[[reason Think it over.]] then [[words 2]]"),
            [Trigger::Reason("Think it over.".into()), Trigger::Words(2)]
        );
        assert!(scan("[[reason ]] [[reason]] [[reason x").is_empty());
    }

    #[test]
    fn finds_triggers_in_order() {
        assert_eq!(
            scan("a [[words 3]] b [[tools]] [[error 429]] [[slow 20]] [[break 2]] [[quota 60]] [[unauthorized]]"),
            [
                Trigger::Words(3),
                Trigger::Tools,
                Trigger::Error(429),
                Trigger::Slow(20),
                Trigger::Break(2),
                Trigger::Quota(60),
                Trigger::Unauthorized
            ]
        );
        assert_eq!(
            scan("[[instructions]][[history]][[images]][[format]][[effort]][[json]]"),
            [
                Trigger::Instructions,
                Trigger::History,
                Trigger::Images,
                Trigger::Format,
                Trigger::Effort,
                Trigger::Json
            ]
        );
    }

    #[test]
    fn malformed_triggers_are_plain_text() {
        assert!(
            scan("[[nope]] [[words]] [[words x]] [[error 200]] [[error 99999]] [[words3]]")
                .is_empty()
        );
        assert!(scan("[[call]] [[call f {bad json}]] [[call f {\"a\":1} trailing]]").is_empty());
        assert!(scan("[[words 100001]] [[slow 600001]] [[ tools]]").is_empty());
        assert!(scan("[[quota]] [[quota x]] [[quota 604801]]").is_empty());
        assert!(scan("[[unauthorized 1]] [[unauthorized").is_empty());
        // An unclosed trigger does not hide a later one.
        assert_eq!(scan("[[words 2 [[json]]"), [Trigger::Json]);
    }

    #[test]
    fn call_arguments_are_parsed_as_json() {
        assert_eq!(
            scan(r#"do [[call lookup_ticket {"id": "A ]] B", "n": [1, [2]]}]] now"#),
            [call(
                None,
                "lookup_ticket",
                json!({"id": "A ]] B", "n": [1, [2]]})
            )]
        );
        assert_eq!(
            scan("[[call crm.find_customer]] [[call weather  { } ]]"),
            [
                call(Some("crm"), "find_customer", json!({})),
                call(None, "weather", json!({}))
            ]
        );
    }

    #[test]
    fn custom_input_is_a_json_string() {
        assert_eq!(
            scan(
                r#"[[custom apply_patch "*** Begin Patch\n*** End Patch ]]\n"]] [[custom exec "1"]]"#
            ),
            [
                Trigger::Custom {
                    name: "apply_patch".into(),
                    input: "*** Begin Patch\n*** End Patch ]]\n".into()
                },
                Trigger::Custom {
                    name: "exec".into(),
                    input: "1".into()
                }
            ]
        );
        assert!(
            scan(r#"[[custom]] [[custom exec]] [[custom exec {"a":1}]] [[custom ns.x "a"]]"#)
                .is_empty()
        );
    }

    #[test]
    fn text_runs_to_the_last_closing_brackets() {
        assert_eq!(
            scan("say [[text <use_tool>\n{\"a\": [[1]]}\n</use_tool>]] please"),
            [Trigger::Text(
                "<use_tool>\n{\"a\": [[1]]}\n</use_tool>".into()
            )]
        );
        assert_eq!(scan("[[text]]"), [Trigger::Text(String::new())]);
        assert_eq!(
            scan("[[text  two spaces]]"),
            [Trigger::Text(" two spaces".into())]
        );
    }

    #[test]
    fn multibyte_text_around_triggers_is_safe() {
        assert_eq!(
            scan("héllo [[wörds 2]] 日本 [[words 2]]"),
            [Trigger::Words(2)]
        );
        assert_eq!(scan("[[text 日本語]]"), [Trigger::Text("日本語".into())]);
    }
}
