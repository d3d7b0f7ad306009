//! The shared (Redis) backend against a real `redis-server` (Debian's `redis-server`
//! package; `./scripts/test` installs it): two limiters stand for two replicas.
#![cfg(feature = "redis")]

use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codex_rate_limit::redis_client::aio::{ConnectionManager, ConnectionManagerConfig};
use codex_rate_limit::{
    AcquireError, FailureMode, KeyedConcurrency, LimiterUnavailable, Quota, RateKey,
    RateLimitLayer, RateLimited, RedisLimits,
};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{service_fn, Layer, ServiceExt};

struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn redis_server() -> RedisServer {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect(
            "redis-server must be installed (apt-get install redis-server; ./scripts/test does it)",
        );
    let server = RedisServer { child, port };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server did not start on port {port}");
}

fn conn(port: u16) -> ConnectionManager {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, config).unwrap()
}

type Req = Request<Full<Bytes>>;

fn policy(req: &Req) -> Option<RateKey> {
    let key = req.headers().get("x-key")?.to_str().ok()?;
    Some(RateKey::new(key, Quota::per_minute(10)))
}

fn req(key: &str) -> Req {
    Request::builder()
        .header("x-key", key)
        .body(Full::default())
        .unwrap()
}

/// A "replica": the layer over a service that counts the requests it lets through.
fn replica(
    limits: RedisLimits,
    served: Arc<AtomicUsize>,
) -> impl tower::Service<
    Req,
    Response = Response<codex_rate_limit::ResponseBody<Full<Bytes>>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    RateLimitLayer::new(policy)
        .shared(Some(limits))
        .layer(service_fn(move |_req: Req| {
            served.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) }
        }))
}

#[tokio::test]
async fn a_key_is_limited_once_across_replicas() {
    let redis = redis_server().await;
    let served = Arc::new(AtomicUsize::new(0));
    let a = replica(
        RedisLimits::builder(conn(redis.port)).build(),
        served.clone(),
    );
    let b = replica(
        RedisLimits::builder(conn(redis.port)).build(),
        served.clone(),
    );

    let mut statuses = Vec::new();
    for i in 0..30 {
        let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
        let res = svc.oneshot(req("alice")).await.unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.extensions().get::<RateLimited>().is_some());
            let retry: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                (1..=6).contains(&retry),
                "one request per 6 s comes back: {retry}"
            );
        } else {
            assert_eq!(res.headers()["x-ratelimit-limit-requests"], "10");
        }
        statuses.push(res.status());
    }
    let allowed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(
        allowed, 10,
        "10 per minute across both replicas: {statuses:?}"
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        10,
        "refused requests never reach the service"
    );
    // Another key has its own bucket.
    let res = a.clone().oneshot(req("bob")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "9");
}

#[tokio::test]
async fn stream_slots_are_shared_released_and_expire_with_a_dead_replica() {
    let redis = redis_server().await;
    let lease = Duration::from_millis(900);
    let a = KeyedConcurrency::new(2).shared(Some(
        RedisLimits::builder(conn(redis.port)).lease(lease).build(),
    ));
    let b = KeyedConcurrency::new(2).shared(Some(
        RedisLimits::builder(conn(redis.port)).lease(lease).build(),
    ));

    let first = a.acquire("k").await.expect("first slot");
    let _second = b
        .acquire("k")
        .await
        .expect("second slot, on the other replica");
    assert!(matches!(
        a.acquire("k").await,
        Err(AcquireError::Exceeded(_))
    ));

    // Held past several lease times: refreshed while the stream lives.
    tokio::time::sleep(lease * 3).await;
    assert!(
        matches!(b.acquire("k").await, Err(AcquireError::Exceeded(_))),
        "live leases are refreshed, not expired"
    );

    // A stream that ends frees its slot for every replica.
    drop(first);
    let mut third = None;
    for _ in 0..100 {
        if let Ok(p) = b.acquire("k").await {
            third = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(third.is_some(), "the released slot is free again");

    // A replica that died leaves leases nobody refreshes: they stop counting.
    let mut raw = conn(redis.port);
    let _: i64 = redis::cmd("ZADD")
        .arg("codex:streams:dead")
        .arg(0)
        .arg("lease-of-a-dead-replica")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: i64 = redis::cmd("ZADD")
        .arg("codex:streams:dead")
        .arg(0)
        .arg("another")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _p = a
        .acquire("dead")
        .await
        .expect("expired leases do not count");
}

#[tokio::test]
async fn redis_down_fails_open_to_local_limits_or_closed_with_a_503() {
    // Nothing listens on this port.
    let port = free_port();
    let errors = Arc::new(AtomicUsize::new(0));
    let hook = {
        let errors = errors.clone();
        move |_op: codex_rate_limit::RedisOp, _mode: FailureMode, _e: &redis::RedisError| {
            errors.fetch_add(1, Ordering::SeqCst);
        }
    };

    let open = RedisLimits::builder(conn(port))
        .on_error(hook.clone())
        .build();
    let served = Arc::new(AtomicUsize::new(0));
    let svc = replica(open.clone(), served.clone());
    let mut ok = 0;
    for _ in 0..12 {
        match svc.clone().oneshot(req("alice")).await.unwrap().status() {
            StatusCode::OK => ok += 1,
            s => assert_eq!(s, StatusCode::TOO_MANY_REQUESTS),
        }
    }
    assert_eq!(ok, 10, "open: this replica's own limit still applies");
    assert_eq!(open.errors(), 12);
    let streams = KeyedConcurrency::new(1).shared(Some(open));
    let _p = streams.acquire("s").await.expect("open: local slot");
    assert!(matches!(
        streams.acquire("s").await,
        Err(AcquireError::Exceeded(_))
    ));

    let closed = RedisLimits::builder(conn(port))
        .failure(FailureMode::Closed)
        .on_error(hook)
        .build();
    let res = replica(closed.clone(), served.clone())
        .oneshot(req("carol"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.extensions().get::<LimiterUnavailable>().is_some());
    assert_eq!(res.headers()["retry-after"], "1");
    let streams = KeyedConcurrency::new(1).shared(Some(closed));
    assert_eq!(
        streams.acquire("s").await.unwrap_err(),
        AcquireError::Unavailable(LimiterUnavailable)
    );
    assert_eq!(served.load(Ordering::SeqCst), 10);
    assert_eq!(errors.load(Ordering::SeqCst), 12 + 2 + 1 + 1);
}
