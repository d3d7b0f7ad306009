//! Routes the common lines, notifications and answers, without decoding them.
//!
//! Most of what codex writes during a turn is notifications for one thread
//! (`{"method":"item/agentMessage/delta","params":{"threadId":…,"delta":…}}`).
//! Decoding one with serde took three passes over its bytes: the envelope
//! (every member's value skipped and checked), `params` again for its
//! `threadId`, and the subscriber's own decode of `params`; plus a copy of
//! `params` and two `String`s. This finds `method`, `params` and
//! `params.threadId` in one pass that only looks for the bytes that end a
//! string or a container (a string's end is searched a word at a time, a
//! long one's with `memchr`), and leaves the checking to the one decode
//! that needs the values: the subscriber's.
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

use std::ops::Range;

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
    let mut c = Cursor { b: line, i: 0 };
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
    if c.i != line.len() {
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

/// The first `"` or `\\` at or after `at`. Keys and ids are short, and
/// `memchr` costs more to start than they take to read: the first 64 bytes
/// are read a word (8 bytes) at a time, the rest of a long text by `memchr`.
fn quote_or_backslash(b: &[u8], mut at: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let words_end = b.len().min(at.saturating_add(64));
    while let Some(word) = b.get(at..at + 8).filter(|_| at + 8 <= words_end) {
        let w = u64::from_le_bytes(word.try_into().ok()?);
        // A byte of `w ^ c` is zero where `w` has `c`; `(x - 1) & !x & 0x80`
        // marks zero bytes (exactly up to the first one: a borrow only
        // carries past a zero byte), so the lowest mark is the first hit.
        let q = w ^ (ONES * u64::from(b'"'));
        let s = w ^ (ONES * u64::from(b'\\'));
        let hits = ((q.wrapping_sub(ONES) & !q) | (s.wrapping_sub(ONES) & !s)) & HIGHS;
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    if words_end == b.len() {
        // The end of the line is near: its last few bytes.
        let k = b[at..].iter().position(|&c| c == b'"' || c == b'\\')?;
        return Some(at + k);
    }
    memchr::memchr2(b'"', b'\\', &b[at..]).map(|k| at + k)
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
        let start = self.i + 1;
        let mut at = start;
        let mut escaped = false;
        loop {
            at = quote_or_backslash(self.b, at)?;
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
            "",
            "{",
            "\"",
        ] {
            assert_eq!(parts(line), None, "{line}");
        }
    }

    #[test]
    fn the_first_quote_or_backslash_is_found_wherever_it_is() {
        for len in 0..150 {
            for hit in 0..len {
                for c in [b'"', b'\\'] {
                    let mut text = vec![b'a'; len];
                    // Bytes that differ from the targets by one bit or a borrow.
                    for (k, byte) in text.iter_mut().enumerate() {
                        *byte = [b'a', b'#', b'!', b']', 0x80, 0xff, b'\x01'][k % 7];
                    }
                    text[hit] = c;
                    if hit + 1 < len {
                        text[hit + 1] = b'"';
                    }
                    for from in 0..=hit {
                        assert_eq!(
                            quote_or_backslash(&text, from),
                            Some(hit),
                            "{len} {hit} {from}"
                        );
                    }
                }
            }
            assert_eq!(quote_or_backslash(&vec![b'a'; len], 0), None);
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
