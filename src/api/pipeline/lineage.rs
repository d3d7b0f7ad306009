//! Where a request sits in a conversation, and which live thread it may
//! continue.
//!
//! A conversation's states are named by *heads*: a Responses response id,
//! or for a dialect whose requests carry the whole history (chat), the
//! fingerprint of that history. A dialect hands over a [`Lineage`]: whose
//! conversation it is, the head the request continues (with the index of
//! its first new message), and how the state after the response is to be
//! named. The pipeline looks the parent head up in `core::LiveThreads`: a
//! thread that holds it, started with the same model, instructions and
//! tools ([`shape_of`]), gets a new turn with only the new messages;
//! anything else starts a fresh thread with the whole history (a rebuild,
//! or a fork when the thread has moved past that head).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use ring::digest::{Context, SHA256};

use crate::api::conversation::{Message, Part, Role};
use crate::protocol::DynamicToolSpec;

/// A request's place in its conversation, decided by its dialect.
#[derive(Clone, Default)]
pub struct Lineage {
    /// Whose conversation: the key name (`""` on a gateway without keys).
    /// A head is only ever continued by its owner.
    pub owner: String,
    /// The head this request continues.
    pub parent: Option<Parent>,
    /// How the state after this response is named, when it may be
    /// continued. `None`: the thread is released after the response.
    pub next: Option<NextHead>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub head: String,
    /// Index in the conversation's messages of the first message the
    /// parent does not hold.
    pub new_from: usize,
}

#[derive(Clone)]
pub enum NextHead {
    /// Named up front (a response id).
    Named(String),
    /// The fingerprint of the conversation with the answer appended.
    Fingerprint(Fingerprint),
}

impl NextHead {
    /// The head's name once the answer is known.
    pub fn name(self, answer: &str) -> String {
        match self {
            NextHead::Named(id) => id,
            NextHead::Fingerprint(f) => f.with_answer(answer),
        }
    }
}

/// A running SHA-256 over an owner and a history's messages (system and
/// developer messages aside: they are the thread's instructions, part of
/// its shape). SHA-256 rather than the std hasher: stable across processes
/// and versions, so a later fleet of gateways can route on it, and a
/// collision (which would continue someone else's conversation) is out of
/// reach.
#[derive(Clone)]
pub struct Fingerprint(Context);

impl Fingerprint {
    pub fn new(owner: &str) -> Fingerprint {
        let mut ctx = Context::new(&SHA256);
        field(&mut ctx, b'o', owner.as_bytes());
        Fingerprint(ctx)
    }

    pub fn push(&mut self, m: &Message) {
        let ctx = &mut self.0;
        let role = match m.role {
            Role::System | Role::Developer => return,
            Role::User => b'u',
            Role::Assistant => b'a',
            Role::Tool => b't',
        };
        ctx.update(&[b'M', role]);
        // The text as a whole: a client may send one string or several
        // parts for the same content.
        field(ctx, b'x', m.text().as_bytes());
        for p in &m.parts {
            if let Part::Image(image) = p {
                field(ctx, b'i', image.url.as_bytes());
            }
        }
        for c in &m.tool_calls {
            field(ctx, b'c', c.id.as_bytes());
            field(ctx, b'n', c.name.as_bytes());
            field(ctx, b'g', c.arguments.as_bytes());
        }
        if let Some(id) = &m.tool_call_id {
            field(ctx, b'r', id.as_bytes());
        }
    }

    /// The head name of the history so far.
    pub fn head(&self) -> String {
        let digest = self.0.clone().finish();
        let mut name = String::with_capacity(5 + 32);
        name.push_str("chat_");
        crate::api::ids::push_lower_hex(&mut name, &digest.as_ref()[..16]);
        name
    }

    /// The head name of the history followed by an assistant answer.
    pub fn with_answer(&self, answer: &str) -> String {
        let mut next = self.clone();
        next.push(&Message {
            role: Role::Assistant,
            parts: vec![Part::Text(answer.to_owned())],
            tool_calls: Vec::new(),
            tool_call_id: None,
        });
        next.head()
    }
}

/// A length-prefixed field, so no two different histories hash the same
/// byte stream.
fn field(ctx: &mut Context, tag: u8, bytes: &[u8]) {
    ctx.update(&[tag]);
    ctx.update(&(bytes.len() as u64).to_le_bytes());
    ctx.update(bytes);
}

/// The lineage of a request that carries its whole history: it continues
/// the state that ends with its last assistant message when only user
/// messages follow it; its own state is the history plus the answer.
pub(super) fn of_history(owner: &str, messages: &[Message]) -> Lineage {
    let mut fp = Fingerprint::new(owner);
    let last_assistant = messages.iter().rposition(|m| m.role == Role::Assistant);
    let mut parent = None;
    for (i, m) in messages.iter().enumerate() {
        fp.push(m);
        if Some(i) == last_assistant {
            let rest = &messages[i + 1..];
            let only_users = rest
                .iter()
                .filter(|m| !matches!(m.role, Role::System | Role::Developer))
                .all(|m| m.role == Role::User);
            if only_users && rest.iter().any(|m| m.role == Role::User) {
                parent = Some(Parent {
                    head: fp.head(),
                    new_from: i + 1,
                });
            }
        }
    }
    Lineage {
        owner: owner.to_owned(),
        parent,
        next: Some(NextHead::Fingerprint(fp)),
    }
}

/// What a thread is started with and a turn cannot change: the model, the
/// instructions and the tools. A thread continues only requests of the
/// same shape. (Process-local, like the threads it describes.)
pub fn shape_of(model: &str, instructions: Option<&str>, tools: &[DynamicToolSpec]) -> u64 {
    let mut h = DefaultHasher::new();
    model.hash(&mut h);
    instructions.hash(&mut h);
    for t in tools {
        t.name.hash(&mut h);
        t.description.hash(&mut h);
        t.input_schema.to_string().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::chat::ChatRequest;
    use serde_json::json;

    fn messages(v: serde_json::Value) -> Vec<Message> {
        ChatRequest::parse(json!({"model": "m", "messages": v}).to_string().as_bytes())
            .unwrap()
            .conversation
            .messages
    }

    #[test]
    fn the_next_request_continues_the_head_this_answer_made() {
        let first = messages(json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "one"}
        ]));
        let l1 = of_history("alice", &first);
        assert_eq!(l1.parent, None);
        let head = l1.next.unwrap().name("uno");

        let second = messages(json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": [{"type": "text", "text": "uno"}]},
            {"role": "user", "content": "two"}
        ]));
        let l2 = of_history("alice", &second);
        assert_eq!(
            l2.parent,
            Some(Parent {
                head: head.clone(),
                new_from: 3
            })
        );
        // Another key with the same history is another conversation.
        assert_ne!(of_history("bob", &second).parent.unwrap().head, head);
    }

    #[test]
    fn a_head_is_the_first_half_of_the_sha256_in_lowercase_hex() {
        let fp = Fingerprint::new("a");
        let mut expected = Context::new(&SHA256);
        field(&mut expected, b'o', b"a");
        let digest = expected.finish();
        let hex: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(fp.head(), format!("chat_{hex}"));
    }

    #[test]
    fn an_edited_answer_or_tool_results_continue_nothing_known() {
        let l1 = of_history("a", &messages(json!([{"role": "user", "content": "one"}])));
        let head = l1.next.unwrap().name("uno");
        let edited = of_history(
            "a",
            &messages(json!([
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "UNO"},
                {"role": "user", "content": "two"}
            ])),
        );
        assert_ne!(edited.parent.unwrap().head, head);
        let tools = of_history(
            "a",
            &messages(json!([
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "r"}
            ])),
        );
        assert_eq!(tools.parent, None, "tool results are the parked-turn path");
    }

    #[test]
    fn the_shape_changes_with_model_instructions_and_tools() {
        let tool = |name: &str| DynamicToolSpec {
            kind: "function".into(),
            name: name.into(),
            description: String::new(),
            input_schema: json!({}),
        };
        let base = shape_of("m", Some("i"), &[tool("f")]);
        assert_eq!(base, shape_of("m", Some("i"), &[tool("f")]));
        assert_ne!(base, shape_of("m", Some("j"), &[tool("f")]));
        assert_ne!(base, shape_of("m2", Some("i"), &[tool("f")]));
        assert_ne!(base, shape_of("m", Some("i"), &[tool("g")]));
        assert_ne!(base, shape_of("m", None, &[tool("f")]));
    }
}
