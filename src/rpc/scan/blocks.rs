//! A line's structure, 64 bytes at a time, as bit masks.
//!
//! The scan needs three things from the bytes it steps over: where a
//! string ends, whether it held an escape, and where a container ends.
//! Reading them a byte at a time cost about 13 instructions per byte of
//! codex's lines. Here each 64-byte block is classified at once (16 bytes
//! per SSE2 compare on x86-64, a plain loop elsewhere) into one bit per
//! byte: quotes, backslashes, opening and closing brackets. Two carries
//! link a block to the next (the simdjson way): whether its first byte is
//! escaped, and whether it starts inside a string. Then
//!
//! - the escaped bytes are those after an odd run of backslashes, so a
//!   string's delimiters are the quotes that are not escaped;
//! - the bytes inside strings are the prefix XOR of those quotes;
//! - a container's brackets are the ones outside strings.
//!
//! A backslash outside a string is not JSON: the block records it, and
//! the scan leaves such a line to the decoder. With that, the masks read
//! a line exactly as the byte-at-a-time reading did (a test holds them to
//! it), for about 1.5 instructions per byte.

/// One block's bits, bit `k` for byte `start + k`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Masks {
    /// Quotes that delimit a string (not escaped).
    pub(super) quotes: u64,
    /// Every backslash.
    pub(super) backslashes: u64,
    /// `{` and `[` outside strings.
    pub(super) opens: u64,
    /// `}` and `]` outside strings.
    pub(super) closes: u64,
}

/// The line's blocks, classified in order as the scan moves forward.
pub(super) struct Blocks<'a> {
    line: &'a [u8],
    /// The first byte of the block held; `None` before the first.
    start: Option<usize>,
    held: Masks,
    /// Bit 0 set: the next block's first byte is escaped.
    escape_carry: u64,
    /// All ones: the next block starts inside a string.
    string_carry: u64,
    /// A block so far had a backslash outside a string.
    stray_backslash: bool,
}

pub(super) const BLOCK: usize = 64;

impl<'a> Blocks<'a> {
    pub(super) fn new(line: &'a [u8]) -> Self {
        Blocks {
            line,
            start: None,
            held: Masks::default(),
            escape_carry: 0,
            string_carry: 0,
            stray_backslash: false,
        }
    }

    /// The masks of the block holding byte `at` (`at < line.len()`), and
    /// that block's first byte. Blocks are classified in order, so `at`
    /// must not go back before the block last asked for.
    pub(super) fn at(&mut self, at: usize) -> (usize, Masks) {
        let want = at - at % BLOCK;
        loop {
            match self.start {
                Some(start) if start == want => return (start, self.held),
                Some(start) => {
                    // The walker's cursor never goes back, so neither do the
                    // blocks it asks for.
                    debug_assert!(start < want, "the scan only moves forward");
                    self.classify(start + BLOCK);
                }
                None => self.classify(0),
            }
        }
    }

    /// Whether any block up to the line's end has a backslash outside a
    /// string (classifying the blocks not yet asked for).
    pub(super) fn stray_backslash(&mut self) -> bool {
        if let Some(last) = self.line.len().checked_sub(1) {
            self.at(last);
        }
        self.stray_backslash
    }

    fn classify(&mut self, start: usize) {
        let bytes = &self.line[start..self.line.len().min(start + BLOCK)];
        let raw = if let Ok(full) = <&[u8; BLOCK]>::try_from(bytes) {
            raw_masks(full)
        } else {
            // The line's last, short block: padded with spaces, which
            // are none of the bytes looked for.
            let mut padded = [b' '; BLOCK];
            padded[..bytes.len()].copy_from_slice(bytes);
            raw_masks(&padded)
        };
        let escaped = escaped(raw.backslashes, &mut self.escape_carry);
        let quotes = raw.quotes & !escaped;
        let in_string = prefix_xor(quotes) ^ self.string_carry;
        // The top bit says whether the block ends inside a string.
        self.string_carry = 0u64.wrapping_sub(in_string >> 63);
        if raw.backslashes & !in_string != 0 {
            self.stray_backslash = true;
        }
        self.held = Masks {
            quotes,
            backslashes: raw.backslashes,
            opens: raw.opens & !in_string,
            closes: raw.closes & !in_string,
        };
        self.start = Some(start);
    }
}

/// The bytes escaped by a backslash: each one after an odd run of them.
/// `carry` brings in (bit 0) whether the block's first byte is escaped,
/// and takes out whether the next block's is.
fn escaped(backslashes: u64, carry: &mut u64) -> u64 {
    let mut escaped = *carry;
    *carry = 0;
    if backslashes == 0 {
        return escaped;
    }
    // In order, so that a backslash escaped by the one before it escapes
    // nothing itself: one step per backslash (at most 64 per block), and
    // blocks without any skip the loop.
    let mut left = backslashes;
    while left != 0 {
        let bit = left & left.wrapping_neg();
        if escaped & bit == 0 {
            if bit == 1 << 63 {
                *carry = 1;
            } else {
                escaped |= bit << 1;
            }
        }
        left ^= bit;
    }
    escaped
}

/// Bit `k` of the result is the XOR of bits `0..=k` of `x`: for a mask of
/// string delimiters, set from an opening quote up to (not including) its
/// closing one.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The block's bytes of each kind, before escapes and strings are known.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn raw_masks(block: &[u8; BLOCK]) -> Masks {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };
    let splat = |b: u8| set_splat_i8_m128i(b as i8);
    let (quote, backslash, open, close, lower) = (
        splat(b'"'),
        splat(b'\\'),
        splat(b'{'),
        splat(b'}'),
        splat(0x20),
    );
    let mask = |v, target| u64::from(move_mask_i8_m128i(cmp_eq_mask_i8_m128i(v, target)) as u16);
    let mut m = Masks::default();
    for (k, chunk) in block.chunks_exact(16).enumerate() {
        let v = load_unaligned_m128i(chunk.try_into().expect("16-byte chunks"));
        // `[` and `]` are `{` and `}` with the 0x20 bit clear.
        let folded = bitor_m128i(v, lower);
        let shift = 16 * k;
        m.quotes |= mask(v, quote) << shift;
        m.backslashes |= mask(v, backslash) << shift;
        m.opens |= mask(folded, open) << shift;
        m.closes |= mask(folded, close) << shift;
    }
    m
}

/// The block's bytes of each kind, before escapes and strings are known.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn raw_masks(block: &[u8; BLOCK]) -> Masks {
    raw_masks_bytewise(block)
}

/// The same, a byte at a time: the other targets' version, and the
/// reference the SSE2 one is tested against.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn raw_masks_bytewise(block: &[u8; BLOCK]) -> Masks {
    let mut m = Masks::default();
    for (k, &b) in block.iter().enumerate() {
        let bit = 1u64 << k;
        match b {
            b'"' => m.quotes |= bit,
            b'\\' => m.backslashes |= bit,
            b'{' | b'[' => m.opens |= bit,
            b'}' | b']' => m.closes |= bit,
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value at every position, next to every other kind.
    #[test]
    fn the_block_classifier_agrees_with_the_bytewise_one() {
        for value in 0..=255u8 {
            for at in 0..BLOCK {
                let mut block = [b'a'; BLOCK];
                for (k, b) in block.iter_mut().enumerate() {
                    *b = b"\"\\{}[]x\x80 ;"[k % 10];
                }
                block[at] = value;
                assert_eq!(
                    raw_masks(&block),
                    raw_masks_bytewise(&block),
                    "{value} at {at}"
                );
            }
        }
    }

    #[test]
    fn runs_of_backslashes_escape_by_parity_across_blocks() {
        // `\\` escapes the second backslash only; `\\\"` escapes the quote.
        let mut carry = 0;
        assert_eq!(escaped(0b0110, &mut carry), 0b0100);
        assert_eq!(escaped(0b0111, &mut carry), 0b1010);
        // A run ending on the last byte carries into the next block...
        assert_eq!(escaped(1 << 63, &mut carry), 0);
        assert_eq!(carry, 1);
        // ...whose first byte, a backslash, escapes nothing then.
        assert_eq!(escaped(0b1, &mut carry), 0b1);
        assert_eq!(carry, 0);
    }

    #[test]
    fn strings_span_blocks_and_brackets_inside_them_do_not_count() {
        // A string opened in the first block holds brackets in the second.
        let mut line = vec![b' '; 60];
        line.extend_from_slice(br#"["a{]\"b]", {}]"#);
        let mut blocks = Blocks::new(&line);
        let (start, first) = blocks.at(0);
        assert_eq!((start, first.opens, first.quotes), (0, 1 << 60, 1 << 61));
        let (start, second) = blocks.at(64);
        assert_eq!(start, 64);
        // The second block starts at byte 64: `]\"b]", {}]`, inside the string
        // until its closing quote.
        let bit = |i: usize| 1u64 << (i - 64);
        let text = &line[..];
        let pos = |c: u8, from: usize| from + text[from..].iter().position(|&b| b == c).unwrap();
        let closing_quote = pos(b'"', pos(b'b', 64));
        assert_eq!(second.quotes, bit(closing_quote));
        assert_eq!(second.opens, bit(pos(b'{', closing_quote)));
        assert_eq!(
            second.closes,
            bit(pos(b'}', closing_quote)) | bit(line.len() - 1)
        );
        assert!(!blocks.stray_backslash());
    }

    #[test]
    fn a_backslash_outside_a_string_is_noticed() {
        assert!(Blocks::new(br#"{"a":"\"", "b":\1}"#).stray_backslash());
        assert!(!Blocks::new(br#"{"a":"\\", "b":1}"#).stray_backslash());
        assert!(!Blocks::new(b"").stray_backslash());
    }
}
