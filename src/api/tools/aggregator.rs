//! [`ToolCallAggregator`]: finds `<use_tool>` blocks in streamed text.
//!
//! Text is released as soon as it cannot be part of a block; a partial
//! `<use_tool` at the end of a delta, and a whole block until its
//! `</use_tool>` arrives, are held back, so a block split across deltas
//! is never emitted in pieces. One aggregator serves one choice.

use super::xml::{self, ParsedCall, CLOSE, OPEN};

/// What the aggregator releases, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Text(String),
    /// A complete block: its raw text and, if it parses, the call.
    Block {
        raw: String,
        call: Option<ParsedCall>,
    },
}

#[derive(Debug, Default)]
pub struct ToolCallAggregator {
    held: String,
}

impl ToolCallAggregator {
    pub fn new() -> ToolCallAggregator {
        ToolCallAggregator::default()
    }

    /// Takes a streamed delta.
    pub fn ingest_delta(&mut self, delta: &str) -> Vec<Segment> {
        self.held.push_str(delta);
        // Most deltas of most answers have no `<`: no block starts in them
        // and nothing can be a block's partial start, so all of it is
        // text, handed on whole without a search for `<use_tool>`.
        if memchr::memchr(b'<', self.held.as_bytes()).is_none() {
            return self.release_held();
        }
        let mut out = Vec::new();
        loop {
            match self.held.find(OPEN) {
                Some(start) => {
                    if start > 0 {
                        out.push(Segment::Text(self.held[..start].to_owned()));
                    }
                    match self.held[start..].find(CLOSE) {
                        Some(rel_end) => {
                            let end = start + rel_end + CLOSE.len();
                            let raw = self.held[start..end].to_owned();
                            let call = xml::parse(&raw);
                            out.push(Segment::Block { raw, call });
                            self.held.drain(..end);
                        }
                        None => {
                            // An open block: keep it (and nothing before it).
                            self.held.drain(..start);
                            break;
                        }
                    }
                }
                None => {
                    let keep = partial_open_suffix(&self.held);
                    let split = self.held.len() - keep;
                    if split > 0 {
                        out.push(Segment::Text(self.held[..split].to_owned()));
                        self.held.drain(..split);
                    }
                    break;
                }
            }
        }
        out
    }

    /// Takes a whole message (non-streamed) and flushes it.
    pub fn ingest_message(&mut self, text: &str) -> Vec<Segment> {
        let mut out = self.ingest_delta(text);
        out.extend(self.finish());
        out
    }

    /// At the end of the turn: whatever is held is plain text (an unclosed block stays text).
    pub fn finish(&mut self) -> Vec<Segment> {
        self.release_held()
    }

    /// Everything held, as one text segment (none when nothing is held).
    fn release_held(&mut self) -> Vec<Segment> {
        if self.held.is_empty() {
            Vec::new()
        } else {
            vec![Segment::Text(std::mem::take(&mut self.held))]
        }
    }

    /// Bytes held back, waiting for more deltas.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.len()
    }

    /// Forgets everything (a new turn on the same choice).
    pub fn reset_turn(&mut self) {
        self.held.clear();
    }
}

/// Bytes at the end of `s` that could start `<use_tool>`.
fn partial_open_suffix(s: &str) -> usize {
    (1..OPEN.len())
        .rev()
        .find(|&n| {
            s.len() >= n && s.is_char_boundary(s.len() - n) && OPEN.starts_with(&s[s.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(segs: &[Segment]) -> String {
        segs.iter()
            .map(|s| match s {
                Segment::Text(t) => t.clone(),
                Segment::Block { raw, .. } => format!("[{raw}]"),
            })
            .collect()
    }

    #[test]
    fn a_block_split_across_deltas_is_held_until_it_closes() {
        let mut a = ToolCallAggregator::new();
        assert_eq!(
            texts(&a.ingest_delta("Let me look. <use_")),
            "Let me look. "
        );
        assert_eq!(a.held(), 5);
        assert_eq!(texts(&a.ingest_delta("tool>\n<name>search</name>\n<q")), "");
        let out = a.ingest_delta("uery>piano</query>\n</use_tool> done");
        assert_eq!(out.len(), 2);
        match &out[0] {
            Segment::Block { call: Some(c), .. } => {
                assert_eq!(c.name, "search");
                assert_eq!(c.arguments, json!({"query": "piano"}));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[1], Segment::Text(" done".into()));
        a.ingest_delta("<use_t");
        assert_eq!(a.held(), 6);
        a.reset_turn();
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn plain_deltas_pass_through_whole_and_an_empty_one_yields_nothing() {
        let mut a = ToolCallAggregator::new();
        assert_eq!(
            a.ingest_delta("Hello, "),
            vec![Segment::Text("Hello, ".into())]
        );
        assert_eq!(a.ingest_delta(""), vec![]);
        assert_eq!(a.ingest_delta("wörld"), vec![Segment::Text("wörld".into())]);
        // Held text and a plain delta after it go out together.
        assert_eq!(texts(&a.ingest_delta("a <use")), "a ");
        assert_eq!(a.ingest_delta("r"), vec![Segment::Text("<user".into())]);
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn false_starts_and_multibyte_text_pass_through() {
        let mut a = ToolCallAggregator::new();
        assert_eq!(texts(&a.ingest_delta("a <b> ü <us")), "a <b> ü ");
        assert_eq!(texts(&a.ingest_delta("e this")), "<use this");
        assert_eq!(texts(&a.finish()), "");
        let mut b = ToolCallAggregator::new();
        let segs = b.ingest_message(
            "x<use_tool><name>a</name></use_tool><use_tool><name>b</name></use_tool>",
        );
        assert_eq!(
            segs.iter()
                .filter(|s| matches!(s, Segment::Block { .. }))
                .count(),
            2
        );
        // An unclosed block at the end is released as text.
        let mut c = ToolCallAggregator::new();
        c.ingest_delta("<use_tool><name>a</name>");
        assert_eq!(texts(&c.finish()), "<use_tool><name>a</name>");
    }
}
