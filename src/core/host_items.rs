//! Which of codex's thread items act on the gateway's host.
//!
//! With codex's host tools off (the default), the catalog and feature
//! switches already keep them from the model (`worker::host_tools`). This is
//! the defence that holds when those do not: a model list refreshed over the
//! network, a tool a later CLI adds. A turn in which codex starts one of
//! these items is failed and interrupted at once (`TurnStream`).

/// Item types (`ThreadItem.type` of the pinned schema) that run something on
/// the host or reach beyond the conversation: shell commands, patches,
/// MCP servers, web search, local images, image files, sub-agents.
const HOST_ITEMS: &[&str] = &[
    "commandExecution",
    "fileChange",
    "mcpToolCall",
    "webSearch",
    "imageView",
    "imageGeneration",
    "collabAgentToolCall",
];

/// Every other item type of the pinned schema. Both lists together must be
/// the schema's (test below), so a new kind of item in a CLI upgrade is a
/// decision, not a silent pass.
#[cfg(test)]
const CONVERSATION_ITEMS: &[&str] = &[
    "userMessage",
    "hookPrompt",
    "agentMessage",
    "functionCallOutput",
    "plan",
    "reasoning",
    "dynamicToolCall",
    "subAgentActivity",
    "sleep",
    "enteredReviewMode",
    "exitedReviewMode",
    "contextCompaction",
];

pub(super) fn acts_on_host(item_type: &str) -> bool {
    HOST_ITEMS.contains(&item_type)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    #[test]
    fn every_item_type_of_the_pinned_schema_is_classified() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/protocol/schema-subset.json"
        );
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let schema_types: BTreeSet<&str> = schema["definitions"]["ThreadItem"]["oneOf"]
            .as_array()
            .expect("ThreadItem variants")
            .iter()
            .flat_map(|v| v["properties"]["type"]["enum"].as_array().unwrap())
            .map(|t| t.as_str().unwrap())
            .collect();
        let classified: BTreeSet<&str> = HOST_ITEMS
            .iter()
            .chain(CONVERSATION_ITEMS)
            .copied()
            .collect();
        assert_eq!(classified, schema_types);
        assert!(!CONVERSATION_ITEMS.iter().any(|t| acts_on_host(t)));
    }
}
