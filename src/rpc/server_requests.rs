//! Answers to server→client requests that no subscriber takes.
//!
//! Codex waits forever for an answer to some of its requests (a dynamic tool
//! call has no server-side timeout), so every request must be answered. This
//! gateway is not a human at a terminal: approvals are denied, questions for a
//! human get no answers, and anything unknown gets a JSON-RPC error.

use serde_json::{json, Value};

use super::message::ServerRequest;

/// The method codex uses to ask the client to run a dynamic (client) tool.
pub const DYNAMIC_TOOL_CALL: &str = "item/tool/call";

/// Decides what the channel itself answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerRequestPolicy;

impl ServerRequestPolicy {
    /// Whether a request of this method belongs to the subscriber of its thread.
    pub fn routes_to_subscriber(&self, req: &ServerRequest) -> bool {
        req.method == DYNAMIC_TOOL_CALL && req.thread_id().is_some()
    }

    /// The answer the channel sends when no subscriber takes the request.
    pub fn answer(&self, req: &ServerRequest) -> Result<Value, (i64, String)> {
        match req.method.as_str() {
            // v2 approval requests.
            "item/commandExecution/requestApproval" | "item/fileChange/requestApproval" => {
                Ok(json!({ "decision": "decline" }))
            }
            // v1 approval requests.
            "execCommandApproval" | "applyPatchApproval" => Ok(json!({
                "decision": { "denied": { "rejection": "approvals are not available through this HTTP API" } }
            })),
            // Grants nothing beyond the sandbox the operator configured.
            "item/permissions/requestApproval" => Ok(json!({ "permissions": {} })),
            "mcpServer/elicitation/request" => Ok(json!({ "action": "decline" })),
            // `request_user_input` cannot be switched off in the pinned CLI; nobody
            // is there to answer, so the model gets no answers and carries on.
            "item/tool/requestUserInput" => Ok(json!({ "answers": {} })),
            DYNAMIC_TOOL_CALL => Ok(json!({
                "contentItems": [{
                    "type": "inputText",
                    "text": "tool call rejected: no client is waiting for this call"
                }],
                "success": false
            })),
            other => Err((
                -32601,
                format!("method `{other}` is not supported by this client"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::RequestId;

    fn req(method: &str) -> ServerRequest {
        ServerRequest {
            id: RequestId::Int(0),
            method: method.into(),
            params: json!({"threadId": "t"}),
        }
    }

    #[test]
    fn approvals_are_denied_and_questions_get_no_answers() {
        let p = ServerRequestPolicy;
        assert_eq!(
            p.answer(&req("item/commandExecution/requestApproval"))
                .unwrap(),
            json!({"decision":"decline"})
        );
        assert!(
            p.answer(&req("execCommandApproval")).unwrap()["decision"]["denied"]["rejection"]
                .is_string()
        );
        assert_eq!(
            p.answer(&req("item/tool/requestUserInput")).unwrap(),
            json!({"answers":{}})
        );
        assert_eq!(
            p.answer(&req("item/tool/call")).unwrap()["success"],
            json!(false)
        );
        assert_eq!(
            p.answer(&req("attestation/generate")).unwrap_err().0,
            -32601
        );
    }

    #[test]
    fn only_tool_calls_with_a_thread_are_routed() {
        let p = ServerRequestPolicy;
        assert!(p.routes_to_subscriber(&req("item/tool/call")));
        assert!(!p.routes_to_subscriber(&req("item/tool/requestUserInput")));
        let orphan = ServerRequest {
            id: RequestId::Int(1),
            method: "item/tool/call".into(),
            params: json!({}),
        };
        assert!(!p.routes_to_subscriber(&orphan));
    }
}
