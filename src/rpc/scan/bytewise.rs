//! The scan's string and container steps a byte at a time, as they were
//! before the block masks (`blocks.rs`): the reference the masks are
//! tested against. The walker over members, and its step over a number or
//! literal (narrowed with the masks to refuse a quote or backslash there),
//! are shared; tests in `scan.rs` pin those refusals.

use super::Step;

pub(super) struct Bytewise;

impl Step for Bytewise {
    fn string(&mut self, line: &[u8], at: usize) -> Option<(usize, bool)> {
        let (mut i, mut escaped) = (at + 1, false);
        loop {
            match *line.get(i)? {
                b'"' => return Some((i, escaped)),
                // A backslash and the byte it escapes.
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                _ => i += 1,
            }
        }
    }

    fn container(&mut self, line: &[u8], at: usize) -> Option<usize> {
        let (mut i, mut depth) = (at, 0usize);
        loop {
            match *line.get(i)? {
                b'"' => {
                    i = self.string(line, i)?.0;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// Read a byte at a time, a backslash outside a string is one more byte.
    fn stray_backslash(&mut self) -> bool {
        false
    }
}
