//! [`OutputMode`]: how tool calls are rendered to the client.

use std::{fmt, str::FromStr};

/// How the gateway renders the model's tool calls in its responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OutputMode {
    /// Tool calls as `<use_tool>` XML blocks inside the assistant's text,
    /// for clients (such as Obsidian plugins) that parse tools from text.
    /// The default.
    #[default]
    ObsidianXml,
    /// Tool calls as OpenAI `tool_calls` JSON objects.
    OpenaiJson,
}

impl OutputMode {
    /// The wire name: `"obsidian-xml"` or `"openai-json"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ObsidianXml => "obsidian-xml",
            Self::OpenaiJson => "openai-json",
        }
    }
}

impl fmt::Display for OutputMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutputMode {
    type Err = UnknownOutputMode;

    /// Parses a wire name, ignoring ASCII case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        [Self::ObsidianXml, Self::OpenaiJson]
            .into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownOutputMode {
                value: name.to_owned(),
            })
    }
}

/// The error of parsing an [`OutputMode`]: the value was neither
/// `obsidian-xml` nor `openai-json`. Its `Display` is the message clients see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownOutputMode {
    value: String,
}

impl UnknownOutputMode {
    /// The rejected value, trimmed.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for UnknownOutputMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Unknown output mode `{}`; expected `obsidian-xml` or `openai-json`.",
            self.value
        )
    }
}

impl std::error::Error for UnknownOutputMode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_and_trimmed() {
        assert_eq!("obsidian-xml".parse(), Ok(OutputMode::ObsidianXml));
        assert_eq!(" OpenAI-JSON\t".parse(), Ok(OutputMode::OpenaiJson));
        assert_eq!("Obsidian-Xml".parse(), Ok(OutputMode::ObsidianXml));
    }

    #[test]
    fn round_trips_through_display() {
        for mode in [OutputMode::ObsidianXml, OutputMode::OpenaiJson] {
            assert_eq!(mode.to_string().parse(), Ok(mode));
            assert_eq!(mode.to_string(), mode.as_str());
        }
        assert_eq!(OutputMode::default(), OutputMode::ObsidianXml);
    }

    #[test]
    fn unknown_values_name_themselves_in_the_error() {
        let err = " xyz ".parse::<OutputMode>().unwrap_err();
        assert_eq!(err.value(), "xyz");
        assert_eq!(
            err.to_string(),
            "Unknown output mode `xyz`; expected `obsidian-xml` or `openai-json`."
        );
        assert!("openai_json".parse::<OutputMode>().is_err());
        assert!("".parse::<OutputMode>().is_err());
    }
}
