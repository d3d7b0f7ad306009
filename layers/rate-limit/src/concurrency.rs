//! [`KeyedConcurrency`]: at most N requests in flight per key, e.g. open SSE streams.
//!
//! A request rate does not bound work that lasts: one client can open a hundred
//! completions streams under a generous per-minute quota. The gateway takes a permit per
//! streaming request and moves it into the response body, so the slot frees when the
//! stream ends or the client goes away (the body is dropped). Keys with no permit out are
//! removed, so memory follows the number of keys *in flight*, not keys ever seen.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use codex_layer_support::error_body;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;

/// Per-key limit on concurrent permits. Clones share the counts.
#[derive(Clone)]
pub struct KeyedConcurrency {
    inner: Arc<Inner>,
    /// Counts shared by every replica, when set; `inner` is then the fallback.
    #[cfg(feature = "redis")]
    shared: Option<crate::RedisLimits>,
}

struct Inner {
    max_per_key: usize,
    in_use: Mutex<HashMap<Arc<str>, usize>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.in_use.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyedConcurrency {
    /// Allows `max_per_key` permits per key at once (0 refuses every request).
    pub fn new(max_per_key: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_per_key,
                in_use: Mutex::new(HashMap::new()),
            }),
            #[cfg(feature = "redis")]
            shared: None,
        }
    }

    /// Counts each key's permits in Redis, across every replica (leases that expire
    /// when a replica dies); this replica's own counts remain the fallback of
    /// [`FailureMode::Open`](crate::FailureMode::Open).
    #[cfg(feature = "redis")]
    pub fn shared(self, shared: Option<crate::RedisLimits>) -> Self {
        Self { shared, ..self }
    }

    /// Takes a slot for `key`: in Redis when shared, else as [`try_acquire`](Self::try_acquire).
    #[cfg(feature = "redis")]
    pub async fn acquire(&self, key: &str) -> Result<ConcurrencyPermit, crate::AcquireError> {
        match &self.shared {
            Some(shared) => shared.acquire(key, self.inner.max_per_key, self).await,
            None => self.try_acquire(key).map_err(crate::AcquireError::Exceeded),
        }
    }

    /// The configured limit.
    pub fn max_per_key(&self) -> usize {
        self.inner.max_per_key
    }

    /// Takes a slot for `key`, released when the permit is dropped.
    pub fn try_acquire(&self, key: &str) -> Result<ConcurrencyPermit, ConcurrencyExceeded> {
        let max = self.inner.max_per_key;
        let exceeded = ConcurrencyExceeded { max_per_key: max };
        let mut in_use = self.inner.lock();
        let key = match in_use.get_key_value(key) {
            Some((_, &n)) if n >= max => return Err(exceeded),
            Some((k, _)) => Arc::clone(k),
            None if max == 0 => return Err(exceeded),
            None => Arc::from(key),
        };
        *in_use.entry(Arc::clone(&key)).or_insert(0) += 1;
        drop(in_use);
        Ok(ConcurrencyPermit {
            slot: Slot::Local(LocalSlot {
                owner: Arc::clone(&self.inner),
                key,
            }),
        })
    }

    /// Permits currently held for `key`.
    pub fn in_use(&self, key: &str) -> usize {
        self.inner.lock().get(key).copied().unwrap_or(0)
    }

    /// Number of keys holding at least one permit (the entries kept in memory).
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// `true` when no permit is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for KeyedConcurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedConcurrency")
            .field("max_per_key", &self.inner.max_per_key)
            .field("keys", &self.len())
            .finish()
    }
}

/// One slot of a key's concurrency; frees it on drop.
///
/// `Send + Sync + 'static`, so it can live inside a streaming response body.
pub struct ConcurrencyPermit {
    // Never read: the slot is released by its own `Drop`.
    #[allow(dead_code)]
    slot: Slot,
}

#[allow(dead_code)]
enum Slot {
    Local(LocalSlot),
    #[cfg(feature = "redis")]
    Shared(crate::redis::Lease),
}

struct LocalSlot {
    owner: Arc<Inner>,
    key: Arc<str>,
}

#[cfg(feature = "redis")]
impl ConcurrencyPermit {
    pub(crate) fn shared(lease: crate::redis::Lease) -> Self {
        Self {
            slot: Slot::Shared(lease),
        }
    }
}

impl Drop for LocalSlot {
    fn drop(&mut self) {
        let mut in_use = self.owner.lock();
        if let Some(n) = in_use.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                in_use.remove(&self.key);
            }
        }
    }
}

impl fmt::Debug for ConcurrencyPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key may be an API key.
        f.debug_struct("ConcurrencyPermit")
            .field("key", &"***")
            .finish()
    }
}

/// The key already holds `max_per_key` permits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcurrencyExceeded {
    /// The limit that was hit.
    pub max_per_key: usize,
}

impl ConcurrencyExceeded {
    /// A 429 in OpenAI's error format, with this value in its extensions.
    ///
    /// It carries no `Retry-After`: nobody knows when a stream will end, and OpenAI's
    /// SDKs fall back to exponential backoff without one.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let message = format!(
            "Too many concurrent requests for this key: at most {} at a time.",
            self.max_per_key
        );
        let body = error_body(&message, "requests", None, "rate_limit_exceeded");
        let mut res = Response::new(Full::new(body));
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res.extensions_mut().insert(*self);
        res
    }
}

impl fmt::Display for ConcurrencyExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "too many concurrent requests for this key (limit {})",
            self.max_per_key
        )
    }
}

impl std::error::Error for ConcurrencyExceeded {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_limited_per_key_and_released_on_drop() {
        let limit = KeyedConcurrency::new(2);
        let a1 = limit.try_acquire("a").unwrap();
        let _a2 = limit.try_acquire("a").unwrap();
        assert_eq!(
            limit.try_acquire("a").unwrap_err(),
            ConcurrencyExceeded { max_per_key: 2 }
        );
        // Another key is not affected.
        let _b = limit.try_acquire("b").unwrap();
        assert_eq!(limit.in_use("a"), 2);

        drop(a1);
        assert_eq!(limit.in_use("a"), 1);
        let _a3 = limit.try_acquire("a").expect("slot freed by drop");
    }

    #[test]
    fn keys_without_permits_are_forgotten() {
        let limit = KeyedConcurrency::new(1);
        for i in 0..10_000 {
            let _p = limit.try_acquire(&format!("key-{i}")).unwrap();
        }
        assert!(limit.is_empty());
        let held: Vec<_> = (0..3)
            .map(|i| limit.try_acquire(&format!("k{i}")).unwrap())
            .collect();
        assert_eq!(limit.len(), 3);
        drop(held);
        assert_eq!(limit.len(), 0);
    }

    #[test]
    fn clones_share_counts_and_zero_refuses_everything() {
        let limit = KeyedConcurrency::new(1);
        let other = limit.clone();
        let _p = limit.try_acquire("a").unwrap();
        assert!(other.try_acquire("a").is_err());

        assert!(KeyedConcurrency::new(0).try_acquire("a").is_err());
    }

    #[test]
    fn exceeded_is_an_openai_429() {
        let res = ConcurrencyExceeded { max_per_key: 3 }.to_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        assert!(res.extensions().get::<ConcurrencyExceeded>().is_some());
        let body: serde_json::Value =
            serde_json::from_slice(&futures_body(res.into_body())).unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "requests");
        assert!(body["error"]["param"].is_null());
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 3"));
    }

    fn futures_body(body: Full<Bytes>) -> Bytes {
        use http_body_util::BodyExt;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(body.collect())
            .unwrap()
            .to_bytes()
    }
}
