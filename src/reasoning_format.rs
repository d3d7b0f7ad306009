//! [`ReasoningFormat`]: how a chat client gets the model's reasoning summary.
//!
//! Chosen per request by the `x-proxy-reasoning-format` header, else by the
//! calling key's `reasoning_format` (keys file), else the route's (route
//! file), else `PROXY_REASONING_FORMAT`. The stack puts the default in the
//! request's extensions; [`Client`](crate::api::Client) applies the header.
//! A module of its own at the bottom of the crate: the configuration, the
//! access policy (keys and routes), the stack and the API all name it, and
//! none of them should import another for it.

use std::fmt;
use std::str::FromStr;

use http::HeaderName;

/// How reasoning summaries reach a chat client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ReasoningFormat {
    /// A `reasoning_content` field next to `content` (deltas and the final
    /// message): what Open WebUI, Cline/Roo, Obsidian and
    /// `@ai-sdk/openai-compatible` read. The default.
    #[default]
    Field,
    /// `<think>…</think>` at the start of `content`, for clients that read
    /// only `content`.
    ThinkTags,
    /// Not sent.
    Off,
}

impl ReasoningFormat {
    /// The request header that overrides the default.
    pub const HEADER: HeaderName = HeaderName::from_static("x-proxy-reasoning-format");

    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningFormat::Field => "field",
            ReasoningFormat::ThinkTags => "think-tags",
            ReasoningFormat::Off => "off",
        }
    }
}

impl fmt::Display for ReasoningFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReasoningFormat {
    type Err = String;

    /// Parses `field`, `think-tags` or `off`, ignoring ASCII case and
    /// surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        [
            ReasoningFormat::Field,
            ReasoningFormat::ThinkTags,
            ReasoningFormat::Off,
        ]
        .into_iter()
        .find(|f| f.as_str().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            format!("Unknown reasoning format `{name}`; expected `field`, `think-tags` or `off`.")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_case_insensitively_and_others_are_refused() {
        assert_eq!(" Think-Tags ".parse(), Ok(ReasoningFormat::ThinkTags));
        assert_eq!("off".parse(), Ok(ReasoningFormat::Off));
        assert_eq!("FIELD".parse(), Ok(ReasoningFormat::Field));
        assert!("xml"
            .parse::<ReasoningFormat>()
            .unwrap_err()
            .contains("`xml`"));
    }
}
