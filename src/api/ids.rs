//! Response ids and timestamps.

use std::sync::LazyLock;

use rand::distr::Alphanumeric;
use rand::Rng;

/// `chatcmpl-` and 29 random alphanumerics, like OpenAI's.
pub fn completion_id() -> String {
    let mut id = String::with_capacity(9 + 29);
    id.push_str("chatcmpl-");
    id.extend(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(29)
            .map(char::from),
    );
    id
}

pub use crate::calendar::unix_now;

/// Identifies the backend configuration, as OpenAI's field does.
pub fn system_fingerprint() -> String {
    // Put together once: every completion carries it.
    static FINGERPRINT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "fp_codex_{}",
            crate::protocol::pinned_codex_version().replace('.', "_")
        )
    });
    FINGERPRINT.clone()
}

/// Appends `bytes` in lowercase hex, two digits each: ids and digests
/// written per request, without `core::fmt`.
pub fn push_lower_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 * bytes.len());
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// 24 random alphanumerics, for ids the gateway makes up (tool calls parsed from text).
pub fn short_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_what_format_writes() {
        for id in [
            0u128,
            1,
            0xabc,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            let mut text = String::new();
            push_lower_hex(&mut text, &id.to_be_bytes());
            assert_eq!(text, format!("{id:032x}"));
        }
    }

    #[test]
    fn ids_have_openai_shapes() {
        let id = completion_id();
        let suffix = id.strip_prefix("chatcmpl-").expect("prefix");
        assert_eq!(suffix.len(), 29);
        assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        assert_ne!(completion_id(), id);
        let fp = system_fingerprint();
        assert!(fp.starts_with("fp_codex_") && !fp.contains('.'), "{fp}");
    }
}
