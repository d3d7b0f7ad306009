//! Routes the common lines, notifications and answers, without decoding them.
//!
//! Most of what codex writes during a turn is notifications for one thread
//! (`{"method":"item/agentMessage/delta","params":{"threadId":…,"delta":…}}`).
//! Decoding one with serde took three passes over its bytes: the envelope
//! (every member's value skipped and checked), `params` again for its
//! `threadId`, and the subscriber's own decode of `params`; plus a copy of
//! `params` and two `String`s. This finds `method`, `params` and
//! `params.threadId` in one pass that only looks for the bytes that end a
//! string or a container, and leaves the checking to the one decode that
//! needs the values: the subscriber's. Those bytes are found through bit
//! masks of the line, 64 bytes at a time ([`blocks`]): stepping over a
//! string or a container is a few mask operations per block instead of a
//! look at every byte.
//!
//! The same pass finds a response's `id` and `result`, so an answer to
//! one of our requests is handed to its caller without a decode either.
//!
//! It accepts only the plain cases: a JSON object with a `method` string and
//! a `params` object (whose `threadId`, if there, is a string), and no `id`,
//! `result` or `error` (a line with an `id` and a `method` is a request codex
//! waits on: it must never pass for a notification); or one with an integer
//! `id` and a `result`, and no `method`, `params` or `error`. Method and
//! thread id must be ASCII without escapes, keys without escapes, and no
//! member may come twice. Anything else returns `None`, and the caller takes
//! the decoding path ([`Incoming::parse`](super::message::Incoming::parse)),
//! which handles every case. What this does not check is the JSON inside
//! the values it skips: a notification whose params or a response whose
//! result is malformed is routed, and its reader's decode rejects it.

mod blocks;
#[cfg(test)]
mod bytewise;

use std::ops::Range;

use blocks::{Blocks, BLOCK};

/// Where a line's parts are, for the two kinds that take the fast route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scanned {
    /// A notification: its method's text (without quotes), its `params`
    /// object (braces included), and the thread `params.threadId` names,
    /// if it names one.
    Notification {
        method: Range<usize>,
        params: Range<usize>,
        thread_id: Option<Range<usize>>,
    },
    /// A successful response to one of our requests (our ids are integers).
    Response { id: i64, result: Range<usize> },
}

/// See the module docs.
pub(super) fn scan(line: &[u8]) -> Option<Scanned> {
    walk(line, Blocks::new(line))
}

fn walk(line: &[u8], step: impl Step) -> Option<Scanned> {
    let mut c = Cursor {
        b: line,
        i: 0,
        step,
    };
    let (mut id, mut method, mut params, mut thread_id, mut result) =
        (None, None, None, None, None);
    c.object(|c, key| match key {
        // An error answer is rare: the decoder reads it.
        b"error" => None,
        b"id" => once(&mut id, c.value()?),
        b"result" => once(&mut result, c.value()?),
        b"method" => once(&mut method, c.plain_string()?),
        b"params" => {
            c.ws();
            let start = c.i;
            c.object(|c, key| match key {
                b"threadId" => once(&mut thread_id, c.plain_string()?),
                _ => c.skip_value(),
            })?;
            once(&mut params, start..c.i)
        }
        _ => c.skip_value(),
    })?;
    c.ws();
    if c.i != line.len() || c.step.stray_backslash() {
        return None;
    }
    match (id, method, params, result) {
        (None, Some(method), Some(params), None) => Some(Scanned::Notification {
            method,
            params,
            thread_id,
        }),
        (Some(id), None, None, Some(result)) => {
            let id = std::str::from_utf8(&line[id]).ok()?.parse().ok()?;
            Some(Scanned::Response { id, result })
        }
        // A request codex waits on (`id` and `method`), or anything odd.
        _ => None,
    }
}

/// Records a member's place; a member named twice is not the plain case.
fn once(slot: &mut Option<Range<usize>>, found: Range<usize>) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(found);
            Some(())
        }
    }
}

/// How the walker steps over a string or a container: by the line's
/// block masks ([`Blocks`]), or, as the tests' reference, a byte at a time.
trait Step {
    /// The string whose opening quote is at `at`: the place of its closing
    /// quote, and whether it holds a backslash.
    fn string(&mut self, line: &[u8], at: usize) -> Option<(usize, bool)>;
    /// The container whose opening bracket is at `at`: the place after its
    /// closing bracket.
    fn container(&mut self, line: &[u8], at: usize) -> Option<usize>;
    /// Whether the line had a backslash outside a string anywhere.
    fn stray_backslash(&mut self) -> bool;
}

impl Step for Blocks<'_> {
    fn string(&mut self, line: &[u8], at: usize) -> Option<(usize, bool)> {
        let mut from = at + 1;
        let mut backslash = false;
        while from < line.len() {
            let (block, m) = self.at(from);
            let ahead = !0u64 << (from - block);
            let quotes = m.quotes & ahead;
            if quotes != 0 {
                let end = quotes.trailing_zeros();
                let before_end = (1u64 << end) - 1;
                backslash |= m.backslashes & ahead & before_end != 0;
                return Some((block + end as usize, backslash));
            }
            backslash |= m.backslashes & ahead != 0;
            from = block + BLOCK;
        }
        None
    }

    fn container(&mut self, line: &[u8], at: usize) -> Option<usize> {
        let mut depth = 0usize;
        let mut from = at;
        while from < line.len() {
            let (block, m) = self.at(from);
            let mut brackets = (m.opens | m.closes) & (!0u64 << (from - block));
            while brackets != 0 {
                let bit = brackets & brackets.wrapping_neg();
                if m.opens & bit != 0 {
                    depth += 1;
                } else {
                    // `checked_sub`: a close before the opening bracket
                    // counts is not a container.
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(block + bit.trailing_zeros() as usize + 1);
                    }
                }
                brackets ^= bit;
            }
            from = block + BLOCK;
        }
        None
    }

    fn stray_backslash(&mut self) -> bool {
        Blocks::stray_backslash(self)
    }
}

struct Cursor<'a, S> {
    b: &'a [u8],
    i: usize,
    step: S,
}

impl<S: Step> Cursor<'_, S> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// An object's members: `member` is called at each value with its key
    /// and must step over the value. Keys with an escape are refused.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.ws();
        if self.peek()? != b'{' {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            let (key, escaped) = self.string()?;
            if escaped {
                return None;
            }
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            let b = self.b;
            member(self, &b[key])?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Any value: its place.
    fn value(&mut self) -> Option<Range<usize>> {
        self.ws();
        let start = self.i;
        self.skip_value()?;
        Some(start..self.i)
    }

    /// A string value without escapes and ASCII only: its text's place.
    fn plain_string(&mut self) -> Option<Range<usize>> {
        self.ws();
        let (text, escaped) = self.string()?;
        (!escaped && self.b[text.clone()].is_ascii()).then_some(text)
    }

    /// A string at the cursor: its text's place (between the quotes) and
    /// whether it holds an escape.
    fn string(&mut self) -> Option<(Range<usize>, bool)> {
        if self.peek()? != b'"' {
            return None;
        }
        let (end, escaped) = self.step.string(self.b, self.i)?;
        let text = self.i + 1..end;
        self.i = end + 1;
        Some((text, escaped))
    }

    /// Steps over any value: a string, a container, or a number or literal
    /// up to the next delimiter.
    fn skip_value(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                self.i = self.step.container(self.b, self.i)?;
                Some(())
            }
            _ => {
                // Only the bytes of numbers and literals: a quote or a
                // backslash here would put the masks' idea of where strings
                // are out of step with this walk.
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.')
                ) {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread's notification: method, params, thread id.
    fn parts(line: &str) -> Option<(&str, &str, &str)> {
        match scan(line.as_bytes())? {
            Scanned::Notification {
                method,
                params,
                thread_id: Some(thread_id),
            } => Some((&line[method], &line[params], &line[thread_id])),
            _ => None,
        }
    }

    #[test]
    fn a_thread_notification_is_found_in_any_member_order() {
        let params = r#"{"turnId":"u1","item":{"text":"a \"quoted\" {brace} [x]","n":[1,{"threadId":"inner"}],"ok":true,"none":null},"threadId":"t1","delta":"d"}"#;
        let line = format!(r#"{{"params":{params},"jsonrpc":"2.0","method":"item/completed"}}"#);
        assert_eq!(parts(&line), Some(("item/completed", params, "t1")));
        // Whitespace anywhere JSON allows it.
        let spaced = " { \"method\" : \"m\" ,\t\"params\" : { \"threadId\" : \"t2\" } } \r";
        assert_eq!(
            parts(spaced),
            Some(("m", "{ \"threadId\" : \"t2\" }", "t2"))
        );
    }

    #[test]
    fn a_request_codex_waits_on_never_passes_for_a_notification() {
        for line in [
            // Its id may come last.
            r#"{"method":"item/tool/call","params":{"threadId":"t1"},"id":7}"#,
            r#"{"id":"s-1","method":"item/tool/call","params":{"threadId":"t1"}}"#,
            r#"{"method":"m","params":{"threadId":"t1"},"error":{}}"#,
            r#"{"method":"m","params":{"threadId":"t1"},"result":null}"#,
        ] {
            assert_eq!(scan(line.as_bytes()), None, "{line}");
        }
    }

    #[test]
    fn an_answer_is_found_with_its_id_and_result() {
        let line = r#"{"result":{"thread":{"id":"t1","turns":[]}},"jsonrpc":"2.0","id":42}"#;
        let Some(Scanned::Response { id, result }) = scan(line.as_bytes()) else {
            panic!("not an answer");
        };
        assert_eq!(
            (id, &line[result]),
            (42, r#"{"thread":{"id":"t1","turns":[]}}"#)
        );
        let null = r#"{"id":-3,"result":null}"#;
        assert!(matches!(
            scan(null.as_bytes()),
            Some(Scanned::Response { id: -3, .. })
        ));
        for line in [
            // An error, a string or odd id, no result, or a method too: the decoder's.
            r#"{"id":1,"error":{"code":-32600,"message":"no"}}"#,
            r#"{"id":"a","result":{}}"#,
            r#"{"id":1.5,"result":{}}"#,
            r#"{"id":null,"result":{}}"#,
            r#"{"id":1}"#,
            r#"{"id":1,"result":{},"result":{}}"#,
            r#"{"id":1,"id":2,"result":{}}"#,
            r#"{"id":1,"result":{},"method":"m"}"#,
            r#"{"id":1,"result":{},"params":{}}"#,
        ] {
            assert_eq!(scan(line.as_bytes()), None, "{line}");
        }
    }

    #[test]
    fn a_notification_without_a_thread_is_found_for_the_hook() {
        let line =
            r#"{"method":"account/rateLimits/updated","params":{"rateLimits":{"primary":null}}}"#;
        let Some(Scanned::Notification {
            method,
            params,
            thread_id: None,
        }) = scan(line.as_bytes())
        else {
            panic!("not a thread-less notification");
        };
        assert_eq!(&line[method], "account/rateLimits/updated");
        assert_eq!(&line[params], r#"{"rateLimits":{"primary":null}}"#);
    }

    #[test]
    fn anything_but_the_plain_case_is_left_to_the_decoder() {
        for line in [
            r#"{"method":"m","params":{"threadId":null}}"#,
            r#"{"method":"m"}"#,
            r#"{"params":{"threadId":"t1"}}"#,
            // Escapes the decoder would read differently.
            r#"{"method":"m\u0031","params":{"threadId":"t1"}}"#,
            r#"{"method":"m","params":{"threadId":"t\"1"}}"#,
            r#"{"method":"m","params":{"thread\u0049d":"t2","threadId":"t1"}}"#,
            r#"{"m\u0065thod":"m","params":{"threadId":"t1"}}"#,
            // Named twice.
            r#"{"method":"m","params":{"threadId":"t1","threadId":"t2"}}"#,
            r#"{"method":"m","method":"n","params":{"threadId":"t1"}}"#,
            // Not ASCII.
            "{\"method\":\"m\",\"params\":{\"threadId\":\"t\u{e9}\"}}",
            // Not an object, cut short, or more after it.
            r#"["method","params"]"#,
            r#"{"method":"m","params":{"threadId":"t1"}"#,
            r#"{"method":"m","params":{"threadId":"t1","x":[1,2}}"#,
            r#"{"method":"m","params":{"threadId":"t1"}} {}"#,
            r#"{"method":"m","params":{"threadId":"t1","x":}}"#,
            r#"{"method":"m","params":{"threadId":"t1","x":"open}}"#,
            r#"{"method":"m","params":{"threadId":"t1","x":"ends in \"#,
            // A quote or a backslash in a number or literal.
            r#"{"method":"m","params":{"threadId":"t1","x":1"}}"#,
            r#"{"method":"m","params":{"threadId":"t1","x":1\}}"#,
            r#"{"method":"m","params":{"threadId":"t1"},"x":tr"ue"}"#,
            "",
            "{",
            "\"",
        ] {
            assert_eq!(parts(line), None, "{line}");
        }
    }

    /// Lines like codex's, long enough to span blocks, with escapes,
    /// brackets and quotes inside strings, and members in any order.
    const TEMPLATES: [&str; 5] = [
        r#"{"method":"item/agentMessage/delta","params":{"threadId":"thread-1","turnId":"turn-1","itemId":"msg-1","delta":"a \"{[\\\\\"]}\" b\\"},"emittedAtMs":1764500000000}"#,
        r#"{"method":"item/completed","params":{"item":{"type":"agentMessage","id":"msg-1","text":"line one\nline \\\"two\\\" {x} [y]\\\\","phase":null,"startedAtMs":1,"completedAtMs":2},"threadId":"thread-1","turnId":"turn-1","completedAtMs":2},"emittedAtMs":3}"#,
        r#"{"id":42,"result":{"thread":{"id":"t1","turns":[{"items":[{"text":"\\\\\\\\"},[],{}]}],"cwd":"/tmp/x \"y\""}},"jsonrpc":"2.0"}"#,
        r#"{"params":{"tokenUsage":{"total":{"totalTokens":20,"inputTokens":-1.5e3},"last":[true,false,null]},"threadId":"thread-2"},"method":"thread/tokenUsage/updated"}"#,
        r#"{"method":"item/tool/call","params":{"threadId":"t1","arguments":"{\"a\":[1,2]}"},"id":7}"#,
    ];

    /// A small deterministic generator (xorshift), so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// The block masks read every line as the byte-at-a-time steps do:
    /// the same answer for any valid line, and never an answer the
    /// byte-at-a-time reading would not give (on a broken line the masks
    /// may refuse what it accepted: a backslash outside a string, a quote
    /// in a number). Lines are shifted against the 64-byte blocks and
    /// mutated with the bytes that matter.
    #[test]
    fn the_block_masks_read_lines_as_the_bytewise_steps_do() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut valid, mut routed) = (0, 0);
        for round in 0..40_000 {
            let template = TEMPLATES[round % TEMPLATES.len()];
            let mut line = vec![b' '; rng.below(70)];
            line.extend_from_slice(template.as_bytes());
            for _ in 0..rng.below(4) {
                let at = rng.below(line.len() + 1);
                let byte = b"\"\\{}[]:, a1"[rng.below(11)];
                match rng.below(3) {
                    0 => line.insert(at, byte),
                    1 if at < line.len() => {
                        line.remove(at);
                    }
                    _ if at < line.len() => line[at] = byte,
                    _ => {}
                }
            }
            let masks = scan(&line);
            let bytewise = walk(&line, bytewise::Bytewise);
            let shown = String::from_utf8_lossy(&line);
            if serde_json::from_slice::<serde::de::IgnoredAny>(&line).is_ok() {
                valid += 1;
                assert_eq!(masks, bytewise, "{shown}");
            } else if masks.is_some() {
                assert_eq!(masks, bytewise, "{shown}");
            }
            routed += usize::from(masks.is_some());
        }
        // The mutations leave enough lines valid, and routed, to mean something.
        assert!(
            valid > 10_000 && routed > 10_000,
            "{valid} valid, {routed} routed"
        );
    }

    #[test]
    fn every_prefix_of_a_line_is_refused_without_a_panic() {
        let line = r#"{"method":"item/agentMessage/delta","params":{"threadId":"t1","x":["a\\b",{"y":"\"}"}],"delta":"hi"}}"#;
        assert!(parts(line).is_some());
        for end in 0..line.len() {
            assert_eq!(parts(&line[..end]), None, "{}", &line[..end]);
        }
    }
}
