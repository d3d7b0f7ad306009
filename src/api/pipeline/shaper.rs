//! Stop sequences and length limits, applied by the gateway.
//!
//! Codex has no per-turn `stop` or `max_tokens`, so the gateway cuts the
//! text itself: at the first stop sequence (held back across deltas while a
//! partial match is possible, so a stop sequence is never leaked), or at the
//! length limit. Tokens are approximated as 4 characters each (OpenAI's rule
//! of thumb); the usage figures still come from the worker.

/// Why a shaper ended a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    Stop,
    Length,
}

#[derive(Debug, Clone)]
pub(crate) struct TextShaper {
    stop: Vec<String>,
    max_chars: Option<usize>,
    emitted_chars: usize,
    held: String,
    cut: Option<Cut>,
}

/// Characters per token in the length approximation.
pub(crate) const CHARS_PER_TOKEN: u64 = 4;

impl TextShaper {
    pub(crate) fn new(stop: Vec<String>, max_tokens: Option<u64>) -> TextShaper {
        let max_chars = max_tokens
            .map(|t| usize::try_from(t.saturating_mul(CHARS_PER_TOKEN)).unwrap_or(usize::MAX));
        TextShaper {
            stop,
            max_chars,
            emitted_chars: 0,
            held: String::new(),
            cut: None,
        }
    }

    /// Takes a delta; returns the text to emit now and whether the choice is cut.
    pub(crate) fn push(&mut self, delta: &str) -> (String, Option<Cut>) {
        if self.cut.is_some() {
            return (String::new(), self.cut);
        }
        let mut emit = if self.stop.is_empty() {
            // Nothing to hold back: the delta goes out as it came.
            delta.to_owned()
        } else {
            self.held.push_str(delta);
            if let Some(pos) = self.earliest_stop() {
                let emit = self.held[..pos].to_owned();
                self.held.clear();
                self.cut = Some(Cut::Stop);
                emit
            } else {
                let keep = self.partial_stop_suffix();
                let split = self.held.len() - keep;
                let emit = self.held[..split].to_owned();
                self.held.drain(..split);
                emit
            }
        };
        self.apply_length(&mut emit);
        (emit, self.cut)
    }

    /// At the end of the turn: whatever was held back for a possible stop sequence.
    pub(crate) fn finish(&mut self) -> (String, Option<Cut>) {
        if self.cut.is_some() {
            return (String::new(), self.cut);
        }
        let mut emit = std::mem::take(&mut self.held);
        self.apply_length(&mut emit);
        (emit, self.cut)
    }

    fn apply_length(&mut self, emit: &mut String) {
        let Some(max) = self.max_chars else { return };
        let chars = emit.chars().count();
        if self.emitted_chars + chars > max {
            let allowed = max - self.emitted_chars;
            let byte_end = emit
                .char_indices()
                .nth(allowed)
                .map(|(i, _)| i)
                .unwrap_or(emit.len());
            emit.truncate(byte_end);
            self.emitted_chars = max;
            self.held.clear();
            self.cut = Some(Cut::Length);
        } else {
            self.emitted_chars += chars;
            if self.emitted_chars == max && self.cut.is_none() && !emit.is_empty() {
                // Exactly at the limit: anything more would exceed it.
                self.cut = Some(Cut::Length);
            }
        }
    }

    fn earliest_stop(&self) -> Option<usize> {
        self.stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
    }

    /// Length in bytes of the longest suffix of `held` that starts some stop sequence.
    fn partial_stop_suffix(&self) -> usize {
        let mut best = 0;
        for s in &self.stop {
            for (i, _) in self.held.char_indices() {
                let suffix = &self.held[i..];
                if suffix.len() < s.len() && s.starts_with(suffix) {
                    best = best.max(suffix.len());
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sequence_split_across_deltas_is_never_leaked() {
        let mut s = TextShaper::new(vec!["END".into()], None);
        assert_eq!(s.push("hello E"), ("hello ".into(), None));
        assert_eq!(s.push("N"), (String::new(), None));
        assert_eq!(s.push("D and more"), (String::new(), Some(Cut::Stop)));
        assert_eq!(s.push("later"), (String::new(), Some(Cut::Stop)));
    }

    #[test]
    fn a_false_partial_match_is_released() {
        let mut s = TextShaper::new(vec!["END".into()], None);
        assert_eq!(s.push("an E"), ("an ".into(), None));
        assert_eq!(s.push("lephant"), ("Elephant".into(), None));
        assert_eq!(s.push(" E"), (" ".into(), None));
        assert_eq!(s.finish(), ("E".into(), None));
    }

    #[test]
    fn length_cut_respects_character_boundaries() {
        let mut s = TextShaper::new(vec![], Some(1)); // 4 characters
        assert_eq!(s.push("é"), ("é".into(), None));
        assert_eq!(s.push("ßü漢字"), ("ßü漢".into(), Some(Cut::Length)));
        assert_eq!(s.finish(), (String::new(), Some(Cut::Length)));
    }
}
