//! Reading request bodies: a size limit per body, and a byte budget for all
//! the bodies the gateway holds at once.
//!
//! Bodies are read whole (the handlers parse JSON), so without a bound on
//! the total, twenty 15 MiB uploads at once took a fresh gateway to 291 MB.
//! [`UploadBudget`] is that bound (`PROXY_UPLOAD_BUDGET_BYTES`): a body
//! takes its share before it is read, by `Content-Length` when declared (all
//! of it up front, so uploads never hold half a share while waiting for the
//! rest), else chunk by chunk. A body that cannot get its share within
//! [`BUDGET_WAIT`] is refused with 429 `overloaded` and `Retry-After`, the
//! gateway's answer for every capacity limit. The share is given back when
//! the last copy of the returned [`Bytes`] is dropped, so it covers the
//! body for as long as a handler holds it.
//!
//! Whenever the answer goes out before the whole body was read (over the
//! limit, no budget, too slow), the connection is marked
//! [`LingerOnClose`]: the client may still be writing and must be able to
//! read the answer (see `server/io.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::error::ApiError;
use crate::server::LingerOnClose;

/// Longest a body waits for its share of the budget.
pub const BUDGET_WAIT: Duration = Duration::from_secs(5);
/// Longest a body may take to arrive once its head has: a client trickling
/// a body must not hold its share of the budget for ever.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes all request bodies held at once may take (module docs).
#[derive(Debug, Clone)]
pub struct UploadBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

impl UploadBudget {
    /// A budget of `total` bytes, raised to `max_body` if below it (a body
    /// the size limit allows must be able to fit).
    pub fn new(total: usize, max_body: usize) -> UploadBudget {
        let total = total.max(max_body).min(Semaphore::MAX_PERMITS);
        UploadBudget {
            permits: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not taken by a body right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    async fn take(&self, bytes: usize, until: Instant) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes).ok()?;
        tokio::time::timeout_at(until, self.permits.clone().acquire_many_owned(n))
            .await
            .ok()?
            .ok()
    }
}

/// A body's bytes with their share of the budget.
struct Held {
    data: Vec<u8>,
    _share: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// Reads the whole body, refusing more than `limit` bytes with a 413, and
/// holding it against `budget` (module docs).
pub async fn read_body<B>(
    req: Request<B>,
    limit: usize,
    budget: &UploadBudget,
) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let linger = req.extensions().get::<LingerOnClose>().cloned();
    // The answer goes out before the body was read: the connection lingers
    // for the client's writes, and the server marks the answer
    // `Connection: close` (see `server::connection`).
    let refuse = |e: ApiError| {
        if let Some(l) = &linger {
            l.linger();
        }
        e
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(refuse(too_large(limit)));
    }
    let declared = declared.map(|n| n as usize);
    let started = Instant::now();
    let mut share = match declared {
        Some(0) | None => None,
        Some(n) => Some(
            budget
                .take(n, started + BUDGET_WAIT)
                .await
                .ok_or_else(|| refuse(no_budget()))?,
        ),
    };
    // Exactly the declared size: no doubling as it grows, no second copy.
    let mut data = Vec::with_capacity(declared.unwrap_or(0));
    let mut body = std::pin::pin!(req.into_body());
    let deadline = started + BODY_READ_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(refuse(too_slow())),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                return Err(ApiError::invalid(
                    "body",
                    format!("Could not read the request body: {e}"),
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        if data.len() + chunk.len() > limit {
            return Err(refuse(too_large(limit)));
        }
        if declared.is_none() && !chunk.is_empty() {
            let more = budget
                .take(chunk.len(), Instant::now() + BUDGET_WAIT)
                .await
                .ok_or_else(|| refuse(no_budget()))?;
            match &mut share {
                Some(s) => s.merge(more),
                None => share = Some(more),
            }
        }
        data.extend_from_slice(&chunk);
    }
    Ok(match share {
        Some(share) if !data.is_empty() => Bytes::from_owner(Held {
            data,
            _share: share,
        }),
        _ => Bytes::from(data),
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        format!("The request body is larger than the {limit}-byte limit."),
    )
    .code("request_too_large")
    .counted_as("body_too_large")
}

fn no_budget() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "The gateway is receiving too many request bodies at once; retry shortly.",
    )
    .code("overloaded")
    .counted_as("overload")
    .retry_after(Duration::from_secs(1))
}

fn too_slow() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "invalid_request_error",
        format!(
            "The request body did not arrive within {} s.",
            BODY_READ_TIMEOUT.as_secs()
        ),
    )
    .code("body_timeout")
    .counted_as("body_timeout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http_body_util::{Full, StreamBody};

    fn request(body: &'static [u8], content_length: bool) -> Request<Full<Bytes>> {
        let mut req = Request::post("/").body(Full::new(Bytes::from_static(body)));
        if content_length {
            req = Request::post("/")
                .header("content-length", body.len())
                .body(Full::new(Bytes::from_static(body)));
        }
        let mut req = req.unwrap();
        req.extensions_mut().insert(LingerOnClose::default());
        req
    }

    #[tokio::test]
    async fn a_body_holds_its_share_until_the_last_copy_is_dropped() {
        let budget = UploadBudget::new(100, 10);
        let body = read_body(request(b"0123456789", true), 10, &budget)
            .await
            .unwrap();
        assert_eq!(&body[..], b"0123456789");
        assert_eq!(budget.available(), 90);
        let copy = body.slice(2..4);
        drop(body);
        assert_eq!(budget.available(), 90);
        drop(copy);
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_budget_a_body_waits_then_gets_429_overloaded() {
        let budget = UploadBudget::new(16, 10);
        let first = read_body(request(b"0123456789", true), 10, &budget)
            .await
            .unwrap();
        // 6 bytes left: a 10-byte body waits...
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { read_body(request(b"abcdefghij", true), 10, &budget).await }
        });
        tokio::time::sleep(BUDGET_WAIT / 2).await;
        assert!(!waiting.is_finished());
        // ...and gets in when the first is dropped.
        drop(first);
        assert_eq!(&waiting.await.unwrap().unwrap()[..], b"abcdefghij");

        // Without a release in time: 429 overloaded with Retry-After, and
        // the connection lingers (the body was not read).
        let _hold = read_body(request(b"0123456789", true), 10, &budget)
            .await
            .unwrap();
        let req = request(b"abcdefghij", true);
        let linger = req.extensions().get::<LingerOnClose>().unwrap().clone();
        let started = Instant::now();
        let err = read_body(req, 10, &budget).await.unwrap_err();
        assert_eq!(started.elapsed(), BUDGET_WAIT);
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.code, Some("overloaded"));
        assert!(err.retry_after.is_some());
        assert!(linger.is_set());
        assert_eq!(budget.available(), 6, "a refused body gives its share back");
    }

    #[tokio::test]
    async fn bodies_without_content_length_are_charged_as_they_arrive() {
        let budget = UploadBudget::new(100, 10);
        let chunks = futures_util::stream::iter([&b"abc"[..], b"def"].map(|c| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(c)))
        }));
        let req = Request::post("/").body(StreamBody::new(chunks)).unwrap();
        let body = read_body(req, 10, &budget).await.unwrap();
        assert_eq!(&body[..], b"abcdef");
        assert_eq!(budget.available(), 94);
        drop(body);
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_is_cut_off_and_gives_its_share_back() {
        let budget = UploadBudget::new(100, 10);
        // Declares 10 bytes, sends 3, then nothing.
        let chunks = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
            http_body::Frame::data(Bytes::from_static(b"abc")),
        )])
        .chain(futures_util::stream::pending());
        let mut req = Request::post("/")
            .header("content-length", "10")
            .body(StreamBody::new(chunks))
            .unwrap();
        let linger = LingerOnClose::default();
        req.extensions_mut().insert(linger.clone());
        let started = Instant::now();
        let err = read_body(req, 10, &budget).await.unwrap_err();
        assert_eq!(started.elapsed(), BODY_READ_TIMEOUT);
        assert_eq!(err.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(err.code, Some("body_timeout"));
        assert!(linger.is_set());
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test]
    async fn over_the_limit_is_413_by_header_or_by_count() {
        let budget = UploadBudget::new(100, 4);
        for declared in [true, false] {
            let err = read_body(request(b"0123456789", declared), 4, &budget)
                .await
                .unwrap_err();
            assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(err.code, Some("request_too_large"));
        }
        assert_eq!(budget.available(), 100);
        assert_eq!(
            UploadBudget::new(1, 16).total(),
            16,
            "raised to the body limit"
        );
    }
}
