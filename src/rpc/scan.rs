//! Routes the common line, a thread's notification, without decoding it.
//!
//! Most of what codex writes during a turn is notifications for one thread
//! (`{"method":"item/agentMessage/delta","params":{"threadId":…,"delta":…}}`).
//! Decoding one with serde took three passes over its bytes: the envelope
//! (every member's value skipped and checked), `params` again for its
//! `threadId`, and the subscriber's own decode of `params`; plus a copy of
//! `params` and two `String`s. This finds `method`, `params` and
//! `params.threadId` in one pass that only looks for the bytes that end a
//! string or a container (strings are skipped with `memchr`), and leaves the
//! checking to the one decode that needs the values: the subscriber's.
//!
//! It accepts only the plain case: a JSON object with a `method` string and a
//! `params` object holding a `threadId` string, both ASCII and without
//! escapes, no key with an escape, no member named twice, and no `id`,
//! `result` or `error` (a line with an `id` is a request codex waits on: it
//! must never pass for a notification). Anything else returns `None`, and the
//! caller takes the decoding path ([`Incoming::parse`](super::message::Incoming::parse)),
//! which handles every case. What this does not check is the JSON inside the
//! values it skips: a notification whose params are malformed is routed, and
//! its subscriber's decode rejects it.

use std::ops::Range;

/// Where a thread notification's parts are in its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ThreadNotification {
    /// The method name's text, without its quotes.
    pub method: Range<usize>,
    /// The `params` object, braces included.
    pub params: Range<usize>,
    /// The thread id's text, without its quotes.
    pub thread_id: Range<usize>,
}

/// See the module docs.
pub(super) fn thread_notification(line: &[u8]) -> Option<ThreadNotification> {
    let mut c = Cursor { b: line, i: 0 };
    let (mut method, mut params, mut thread_id) = (None, None, None);
    c.object(|c, key| match key {
        b"id" | b"result" | b"error" => None,
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
    if c.i != line.len() {
        return None;
    }
    Some(ThreadNotification {
        method: method?,
        params: params?,
        thread_id: thread_id?,
    })
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

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
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
        let start = self.i + 1;
        let mut at = start;
        let mut escaped = false;
        loop {
            // Keys and ids are short: a plain loop finds their end sooner
            // than `memchr` gets going; a long text is left to `memchr`.
            let short = self.b.len().min(at + 24);
            while at < short && !matches!(self.b[at], b'"' | b'\\') {
                at += 1;
            }
            if at == short {
                at += memchr::memchr2(b'"', b'\\', &self.b[at..])?;
            }
            if self.b[at] == b'"' {
                self.i = at + 1;
                return Some((start..at, escaped));
            }
            // A backslash and the byte it escapes (`\"` does not end the string).
            escaped = true;
            at += 2;
            if at > self.b.len() {
                return None;
            }
        }
    }

    /// Steps over any value: strings by their quotes, containers by
    /// counting brackets outside strings, anything else up to the next
    /// delimiter.
    fn skip_value(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            b',' | b'}' | b']' | b':' => None,
            _ => {
                let start = self.i;
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
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

    fn parts(line: &str) -> Option<(&str, &str, &str)> {
        let n = thread_notification(line.as_bytes())?;
        Some((&line[n.method], &line[n.params], &line[n.thread_id]))
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
    fn what_a_request_or_a_response_could_be_is_left_to_the_decoder() {
        for line in [
            // A request codex waits on: its id may come last.
            r#"{"method":"item/tool/call","params":{"threadId":"t1"},"id":7}"#,
            r#"{"id":1,"result":{"threadId":"t1"}}"#,
            r#"{"method":"m","params":{"threadId":"t1"},"error":{}}"#,
            r#"{"method":"m","params":{"threadId":"t1"},"result":null}"#,
        ] {
            assert_eq!(parts(line), None, "{line}");
        }
    }

    #[test]
    fn anything_but_the_plain_case_is_left_to_the_decoder() {
        for line in [
            // No thread: the thread-less hook's.
            r#"{"method":"thread/started","params":{"thread":{"id":"t1"}}}"#,
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
            "",
            "{",
            "\"",
        ] {
            assert_eq!(parts(line), None, "{line}");
        }
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
