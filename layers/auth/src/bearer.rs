//! Extracting the bearer token from `Authorization`.
//!
//! Works on raw header bytes rather than `HeaderValue::to_str`, so a token
//! with non-ASCII bytes is simply a wrong key (401 "Incorrect API key") instead
//! of an error of its own. Public so that an endpoint with a token of its own
//! (a metrics scrape token, say) reads the header exactly as the layer does.

use http::{header::AUTHORIZATION, HeaderMap};

/// The token of an `Authorization: Bearer <token>` header.
///
/// The scheme is matched case-insensitively and surrounding whitespace is
/// ignored. `None` when the header is absent, uses another scheme, or carries
/// an empty token: all of which mean "no API key was provided". Compare the
/// result in constant time (e.g. `subtle::ConstantTimeEq`), as [`KeySet`] does.
///
/// ```
/// use codex_auth::bearer_token;
/// use http::{header::AUTHORIZATION, HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer  scrape-me "));
/// assert_eq!(bearer_token(&headers), Some(&b"scrape-me"[..]));
///
/// headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
/// assert_eq!(bearer_token(&headers), None);
/// ```
///
/// [`KeySet`]: crate::KeySet
pub fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes().trim_ascii();
    let split = value.iter().position(u8::is_ascii_whitespace)?;
    let (scheme, rest) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn token(value: &'static [u8]) -> Option<Vec<u8>> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        bearer_token(&headers).map(<[u8]>::to_vec)
    }

    #[test]
    fn scheme_is_case_insensitive_and_whitespace_trimmed() {
        assert_eq!(token(b"Bearer sk-1").as_deref(), Some(&b"sk-1"[..]));
        assert_eq!(token(b"bearer sk-1").as_deref(), Some(&b"sk-1"[..]));
        assert_eq!(token(b"BEARER \t sk-1  ").as_deref(), Some(&b"sk-1"[..]));
        assert_eq!(token(b"  Bearer sk-1").as_deref(), Some(&b"sk-1"[..]));
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_no_key() {
        assert_eq!(token(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(token(b"Bearer"), None);
        assert_eq!(token(b"Bearer    "), None);
        assert_eq!(token(b"Bearersk-1"), None);
        assert_eq!(token(b"sk-1"), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn non_ascii_tokens_are_passed_through_as_bytes() {
        assert_eq!(token(b"Bearer sk-\xff").as_deref(), Some(&b"sk-\xff"[..]));
    }
}
