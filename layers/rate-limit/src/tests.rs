//! Layer-level tests on governor's fake clock: no real time passes.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use governor::clock::FakeRelativeClock;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, Service, ServiceExt};

use crate::{Limiter, Quota, RateKey, RateLimitLayer, RateLimited, ResponseBody};

type Req = Request<Full<Bytes>>;

/// Bucket = `x-key` header; quota = `x-max` requests (default 3) per `x-window-ms` (default 1 s).
fn policy(req: &Req) -> Option<RateKey> {
    let h = |name: &str| req.headers().get(name)?.to_str().ok();
    let key = h("x-key")?;
    let max = h("x-max").map_or(3, |v| v.parse().unwrap());
    let window = h("x-window-ms").map_or(1000, |v| v.parse().unwrap());
    Some(RateKey::new(
        key,
        Quota::new(max, Duration::from_millis(window)),
    ))
}

fn req(key: &str) -> Req {
    Request::builder()
        .header("x-key", key)
        .body(Full::default())
        .unwrap()
}

fn req_with(key: &str, max: u32, window_ms: u64) -> Req {
    Request::builder()
        .header("x-key", key)
        .header("x-max", max.to_string())
        .header("x-window-ms", window_ms.to_string())
        .body(Full::default())
        .unwrap()
}

type Res = Response<ResponseBody<Full<Bytes>>>;
type Svc = BoxCloneService<Req, Res, Infallible>;

/// A rate-limited echo service on a fake clock, and a count of the calls that reached it.
fn setup() -> (Svc, FakeRelativeClock, Arc<AtomicUsize>) {
    let clock = FakeRelativeClock::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let inner = service_fn(move |_req: Req| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) }
    });
    let layer = RateLimitLayer::with_limiter(
        policy as fn(&Req) -> Option<RateKey>,
        Limiter::with_clock(clock.clone()),
    );
    (BoxCloneService::new(layer.layer(inner)), clock, calls)
}

async fn send(svc: &Svc, req: Req) -> Res {
    svc.clone().oneshot(req).await.unwrap()
}

fn header<'a, B>(res: &'a Response<B>, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn allows_the_burst_then_answers_openai_429_without_calling_inner() {
    let (svc, _clock, calls) = setup();
    for remaining in ["2", "1", "0"] {
        let res = send(&svc, req("alice")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "x-ratelimit-limit-requests"), "3");
        assert_eq!(header(&res, "x-ratelimit-remaining-requests"), remaining);
    }
    let res = send(&svc, req("alice")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "rejected request reached inner"
    );
    assert_eq!(header(&res, "content-type"), "application/json");
    // Next cell in 333.33 ms -> 1 s; bucket full after 1 s.
    assert_eq!(header(&res, "retry-after"), "1");
    assert_eq!(header(&res, "x-ratelimit-limit-requests"), "3");
    assert_eq!(header(&res, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&res, "x-ratelimit-reset-requests"), "1s");
    let marker = *res.extensions().get::<RateLimited>().expect("marker");
    assert_eq!(marker.retry_after, Duration::from_nanos(333_333_333));

    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        &br#"{"error":{"message":"Rate limit reached for requests. Retry after 1 s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#[..]
    );
}

#[tokio::test]
async fn replenishes_one_request_per_window_over_max() {
    let (svc, clock, _) = setup();
    for _ in 0..3 {
        assert_eq!(send(&svc, req("a")).await.status(), StatusCode::OK);
    }
    clock.advance(Duration::from_millis(300));
    assert_eq!(
        send(&svc, req("a")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    clock.advance(Duration::from_millis(40));
    let res = send(&svc, req("a")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(
        send(&svc, req("a")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    clock.advance(Duration::from_secs(5));
    let res = send(&svc, req("a")).await;
    assert_eq!(header(&res, "x-ratelimit-remaining-requests"), "2");
    assert_eq!(header(&res, "x-ratelimit-reset-requests"), "334ms");
}

#[tokio::test]
async fn retry_after_rounds_up_whole_seconds() {
    let (svc, clock, _) = setup();
    let one_per_90s = || req_with("slow", 1, 90_000);
    assert_eq!(send(&svc, one_per_90s()).await.status(), StatusCode::OK);
    let res = send(&svc, one_per_90s()).await;
    assert_eq!(header(&res, "retry-after"), "90");
    assert_eq!(header(&res, "x-ratelimit-reset-requests"), "1m30s");

    clock.advance(Duration::from_millis(89_500));
    let res = send(&svc, one_per_90s()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), "1");
    assert_eq!(header(&res, "x-ratelimit-reset-requests"), "500ms");
}

#[tokio::test]
async fn unclassified_requests_pass_untouched() {
    let (svc, _, calls) = setup();
    for _ in 0..10 {
        let res = send(&svc, Request::new(Full::default())).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("x-ratelimit-limit-requests").is_none());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn keys_and_quotas_are_separate_buckets() {
    let (svc, _, _) = setup();
    for _ in 0..3 {
        send(&svc, req("a")).await;
    }
    assert_eq!(
        send(&svc, req("a")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another key has its own bucket.
    assert_eq!(send(&svc, req("b")).await.status(), StatusCode::OK);
    // The same key under another quota (say a per-route limit) has its own bucket too.
    let res = send(&svc, req_with("a", 10, 1000)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-ratelimit-limit-requests"), "10");
    assert_eq!(header(&res, "x-ratelimit-remaining-requests"), "9");
}

#[tokio::test]
async fn clones_of_the_stack_share_one_limiter() {
    let (svc, _, _) = setup();
    // hyper clones the service per connection: each request on a fresh clone.
    let clones: Vec<_> = (0..4).map(|_| svc.clone()).collect();
    let mut statuses = Vec::new();
    for c in clones {
        statuses.push(c.oneshot(req("shared")).await.unwrap().status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn a_zero_quota_refuses_everything() {
    let (svc, _, calls) = setup();
    let res = send(&svc, req_with("blocked", 0, 60_000)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), "60");
    assert_eq!(header(&res, "x-ratelimit-limit-requests"), "0");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn inner_errors_and_readiness_pass_through() {
    use tower_test::mock;
    let (mock, mut handle) = mock::pair::<Req, Response<Full<Bytes>>>();
    let layer = RateLimitLayer::with_limiter(
        policy as fn(&Req) -> Option<RateKey>,
        Limiter::with_clock(FakeRelativeClock::default()),
    );
    let mut svc = layer.layer(mock);

    handle.allow(0);
    assert!(
        futures_poll_ready(&mut svc).is_pending(),
        "readiness must follow inner"
    );
    handle.allow(1);
    svc.ready().await.unwrap();
    let fut = svc.call(req("x"));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("upstream down");
    let err = fut.await.unwrap_err();
    assert_eq!(err.to_string(), "upstream down");
}

fn futures_poll_ready<S: Service<Req>>(svc: &mut S) -> std::task::Poll<Result<(), S::Error>> {
    let waker = std::task::Waker::noop();
    svc.poll_ready(&mut std::task::Context::from_waker(waker))
}

// === memory bound ===

fn key(i: usize) -> RateKey {
    RateKey::new(format!("client-{i}"), Quota::per_minute(10))
}

#[test]
fn many_distinct_keys_stay_under_the_cap() {
    let cap = 10_000;
    let limiter = Limiter::with_clock(FakeRelativeClock::default()).max_keys(cap);
    for i in 0..200_000 {
        assert!(limiter.check(&key(i)).is_ok());
        assert!(
            limiter.len() <= cap,
            "{} entries after key {i}",
            limiter.len()
        );
    }
    assert!(limiter.len() >= cap - cap / 10, "evicted more than needed");
}

#[test]
fn idle_entries_are_evicted_first_and_all_at_once() {
    let clock = FakeRelativeClock::default();
    let limiter = Limiter::with_clock(clock.clone()).max_keys(1_000);
    for i in 0..1_000 {
        limiter.check(&key(i)).unwrap();
    }
    assert_eq!(limiter.len(), 1_000);
    // 10/min: a single request is replenished after 6 s; after 20 s every bucket is full.
    clock.advance(Duration::from_secs(20));
    limiter.check(&key(1_000_000)).unwrap();
    assert_eq!(limiter.len(), 1, "idle entries must all go, busy ones stay");
}

#[test]
fn hard_eviction_keeps_exhausted_keys_and_drops_those_closest_to_idle() {
    let clock = FakeRelativeClock::default();
    let limiter = Limiter::with_clock(clock.clone()).max_keys(100);
    let abuser = RateKey::new("abuser", Quota::per_minute(2));
    limiter.check(&abuser).unwrap();
    limiter.check(&abuser).unwrap();
    assert!(limiter.check(&abuser).is_err());

    // Rotating keys with a short quota: each is idle again within 100 ms.
    for i in 0..1_000 {
        limiter
            .check(&RateKey::new(format!("rot-{i}"), Quota::per_second(10)))
            .unwrap();
        clock.advance(Duration::from_micros(10));
    }
    assert!(limiter.len() <= 100);
    assert!(
        limiter.check(&abuser).is_err(),
        "eviction forgot a key that is still limited"
    );
}

#[test]
fn quotas_nobody_uses_are_dropped() {
    let clock = FakeRelativeClock::default();
    let limiter = Limiter::with_clock(clock.clone()).max_keys(10);
    for max in 1..=50 {
        limiter
            .check(&RateKey::new("k", Quota::new(max, Duration::from_secs(1))))
            .unwrap();
    }
    assert!(limiter.len() <= 10);
    assert!(limiter.quotas() <= 10, "{} quotas kept", limiter.quotas());
    clock.advance(Duration::from_secs(10));
    for i in 0..11 {
        limiter
            .check(&RateKey::new(format!("n{i}"), Quota::per_second(5)))
            .unwrap();
    }
    assert!(limiter.len() <= 10);
    // Every old quota went idle and was evicted with its last key.
    assert_eq!(limiter.quotas(), 1);
    assert!(format!("{limiter:?}").contains("max_keys: 10"));
}
