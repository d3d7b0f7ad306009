//! Configured keys and the identity handed to inner services.
//!
//! A [`KeySet`] never answers "which key is it?" by walking the keys and
//! stopping at the first byte that differs: that would let a client learn a
//! secret one byte at a time from response times. Instead every secret is
//! stored zero-padded to one common width (the longest configured secret), the
//! presented key is padded to that same width, and it is compared against
//! *every* configured key with [`subtle`]. Lengths are compared in constant time
//! too, so `"abc"` never matches `"abc\0"`. The comparisons cost
//! `keys × width` whatever the presented key is, which key matches, or where a
//! mismatch starts. At most the longest secret's *length* could be inferred
//! from timing (copying the presented key stops there), never any content.

use std::{fmt, sync::Arc};

use subtle::{ConditionallySelectable, ConstantTimeEq};

/// One client credential: a display `name` (safe to log and to put in metrics)
/// and the bearer `secret` the client presents.
///
/// `Debug` prints `***` in place of the secret.
#[derive(Clone)]
pub struct ApiKey {
    name: Arc<str>,
    secret: Box<[u8]>,
}

impl ApiKey {
    /// A key called `name` whose bearer token is `secret`.
    pub fn new(name: impl Into<Arc<str>>, secret: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            secret: secret.into().into_bytes().into_boxed_slice(),
        }
    }

    /// The key's display name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("secret", &"***")
            .finish()
    }
}

/// The set of keys a [`RequireAuthLayer`](crate::RequireAuthLayer) accepts.
///
/// Cloning is cheap (one `Arc`), so the same set can back several layers.
/// Keys with an empty secret are dropped: an empty bearer token is treated as
/// "no key" by the layer, so such a key could never be used. If two keys share
/// a secret, the first one's name is reported. `Debug` shows names only.
#[derive(Clone)]
pub struct KeySet {
    inner: Arc<Inner>,
}

struct Inner {
    /// Length every stored secret is padded to: the longest secret.
    width: usize,
    entries: Box<[Entry]>,
}

struct Entry {
    name: Arc<str>,
    len: u64,
    padded: Box<[u8]>,
}

impl KeySet {
    /// Builds the set from `keys`.
    pub fn new(keys: Vec<ApiKey>) -> Self {
        keys.into_iter().collect()
    }

    /// Number of usable keys (those with a non-empty secret).
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// `true` when no key can authenticate, so every request is rejected.
    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    /// The configured key names, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.entries.iter().map(|e| &*e.name)
    }

    /// Returns the name of the key whose secret equals `presented`.
    ///
    /// Runs in time independent of the secrets' contents and of which key
    /// (if any) matches: see the module docs.
    pub fn lookup(&self, presented: impl AsRef<[u8]>) -> Option<Arc<str>> {
        let presented = presented.as_ref();
        let Inner { width, entries } = &*self.inner;

        let mut padded = vec![0u8; *width];
        let copied = presented.len().min(*width);
        padded[..copied].copy_from_slice(&presented[..copied]);
        let presented_len = presented.len() as u64;

        // 1-based index of the first matching entry, 0 for none. Updated with
        // a constant-time select so that every entry is always visited.
        let mut found = 0u64;
        for (index, entry) in (1u64..).zip(entries.iter()) {
            let hit = padded.as_slice().ct_eq(&entry.padded) & presented_len.ct_eq(&entry.len);
            let first = found.ct_eq(&0);
            found.conditional_assign(&index, hit & first);
        }

        // Only the final yes/no is observable, which the response reveals anyway.
        let index = usize::try_from(found).ok()?.checked_sub(1)?;
        Some(entries[index].name.clone())
    }
}

impl FromIterator<ApiKey> for KeySet {
    fn from_iter<I: IntoIterator<Item = ApiKey>>(keys: I) -> Self {
        let keys: Vec<ApiKey> = keys.into_iter().filter(|k| !k.secret.is_empty()).collect();
        let width = keys.iter().map(|k| k.secret.len()).max().unwrap_or(0);
        let entries = keys
            .into_iter()
            .map(|key| {
                let mut padded = vec![0u8; width].into_boxed_slice();
                padded[..key.secret.len()].copy_from_slice(&key.secret);
                Entry {
                    len: key.secret.len() as u64,
                    name: key.name,
                    padded,
                }
            })
            .collect();
        Self {
            inner: Arc::new(Inner { width, entries }),
        }
    }
}

impl From<Vec<ApiKey>> for KeySet {
    fn from(keys: Vec<ApiKey>) -> Self {
        Self::new(keys)
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("names", &self.names().collect::<Vec<_>>())
            .field("secrets", &"***")
            .finish()
    }
}

/// Request extension inserted by [`RequireAuth`](crate::RequireAuth) once a
/// request's key has been verified: which configured key it used.
///
/// Exempt requests carry none, and any `AuthenticatedKey` already present on
/// an incoming request is removed first, so downstream code can trust it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuthenticatedKey {
    /// The matching [`ApiKey`]'s name.
    pub name: Arc<str>,
}

impl AuthenticatedKey {
    /// The matching key's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> KeySet {
        KeySet::new(vec![
            ApiKey::new("short", "abc"),
            ApiKey::new("long", "abcdef-0123456789"),
            ApiKey::new("mid", "zzzzzz"),
        ])
    }

    #[test]
    fn each_key_finds_its_own_name_across_lengths() {
        let keys = set();
        assert_eq!(keys.lookup("abc").as_deref(), Some("short"));
        assert_eq!(keys.lookup("abcdef-0123456789").as_deref(), Some("long"));
        assert_eq!(keys.lookup("zzzzzz").as_deref(), Some("mid"));
    }

    #[test]
    fn prefixes_extensions_and_padding_do_not_match() {
        let keys = set();
        // A prefix of a longer key, and a shorter key extended.
        assert_eq!(keys.lookup("abcdef"), None);
        assert_eq!(keys.lookup("ab"), None);
        assert_eq!(keys.lookup("abcd"), None);
        // The stored padding must not be presentable.
        assert_eq!(keys.lookup(b"abc\0"), None);
        assert_eq!(keys.lookup(b"abc\0\0\0\0\0\0\0\0\0\0\0\0\0\0"), None);
        // Longer than every configured key, sharing the longest as prefix.
        assert_eq!(keys.lookup("abcdef-0123456789-and-more"), None);
        assert_eq!(keys.lookup(""), None);
        assert_eq!(keys.lookup("ABC"), None);
    }

    #[test]
    fn first_of_duplicate_secrets_wins_and_empty_secrets_are_dropped() {
        let keys = KeySet::new(vec![
            ApiKey::new("empty", ""),
            ApiKey::new("first", "same"),
            ApiKey::new("second", "same"),
        ]);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.names().collect::<Vec<_>>(), ["first", "second"]);
        assert_eq!(keys.lookup("same").as_deref(), Some("first"));
        assert_eq!(keys.lookup(""), None);
    }

    #[test]
    fn empty_set_matches_nothing() {
        let keys = KeySet::new(Vec::new());
        assert!(keys.is_empty());
        assert_eq!(keys.lookup("anything"), None);
    }

    #[test]
    fn debug_never_prints_secrets() {
        let key = ApiKey::new("ci", "sk-very-secret");
        let shown = format!("{key:?}");
        assert!(shown.contains("ci") && shown.contains("***"), "{shown}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");

        let keys = KeySet::new(vec![key, ApiKey::new("ops", "sk-other-secret")]);
        let shown = format!("{keys:?}");
        assert!(shown.contains("ci") && shown.contains("ops"), "{shown}");
        assert!(!shown.contains("sk-"), "{shown}");
        // The byte form of the secret must not leak either.
        assert!(!shown.contains("115, 107"), "{shown}");
    }
}
