//! Operator layers end to end through the real gateway and the real CLI:
//! auth, maintenance at run time, rate limits, metrics, per-route rules,
//! stream and turn limits.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::{read_all, read_until, Harness};

fn with_key(
    h: &Harness,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(h.url(path))
        .header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(Full::new(
        body.map(|v| Bytes::from(v.to_string())).unwrap_or_default(),
    ))
    .unwrap()
}

fn write_file(h: &Harness, name: &str, text: &str) -> String {
    std::fs::create_dir_all(&h.dir).unwrap();
    let p = h.dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_auth_rejects_wrong_and_missing_keys() {
    let h = Harness::start_with(&[("PROXY_API_KEY", "sk-right,sk-second")]).await;
    let chat = Harness::chat("hi", false);
    let r = h
        .send(with_key(
            &h,
            "POST",
            "/v1/chat/completions",
            Some("sk-wrong"),
            Some(&chat),
        ))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = h
        .send(with_key(
            &h,
            "POST",
            "/v1/chat/completions",
            None,
            Some(&chat),
        ))
        .await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("API key"));
    for key in ["sk-right", "sk-second"] {
        let r = h
            .send(with_key(
                &h,
                "POST",
                "/v1/chat/completions",
                Some(key),
                Some(&chat),
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Probes and (by default) the model list need no key.
    assert_eq!(h.get("/healthz").await.status, 200);
    assert_eq!(h.get("/readyz").await.status, 200);
    assert_eq!(h.get("/v1/models").await.status, 200);
    h.stop().await;

    let h = Harness::start_with(&[
        ("PROXY_API_KEY", "sk-right"),
        ("PROXY_PROTECT_MODELS", "true"),
    ])
    .await;
    assert_eq!(h.get("/v1/models").await.status, 401);
    assert_eq!(
        h.send(with_key(&h, "GET", "/v1/models", Some("sk-right"), None))
            .await
            .status,
        200
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_switches_on_and_off_at_run_time() {
    let mut h = Harness::start_with(&[("PROXY_MAINTENANCE_RETRY_AFTER_S", "7")]).await;
    let keys = write_file(
        &h,
        "keys.toml",
        "[[keys]]\nname = \"ops\"\nkey = \"sk-ops\"\nadmin = true\n[[keys]]\nname = \"app\"\nkey = \"sk-app\"\n",
    );
    h.stop().await;
    h = Harness::start_with(&[
        ("PROXY_API_KEYS_FILE", &keys),
        ("PROXY_MAINTENANCE_RETRY_AFTER_S", "7"),
    ])
    .await;
    let chat = Harness::chat("hi", false);
    let on = json!({"enabled": true, "message": "Back at noon."});
    // Only admin keys may switch it.
    let r = h
        .send(with_key(
            &h,
            "POST",
            "/admin/maintenance",
            Some("sk-app"),
            Some(&on),
        ))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = h
        .send(with_key(
            &h,
            "POST",
            "/admin/maintenance",
            Some("sk-ops"),
            Some(&on),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["enabled"], true);
    assert!(h.handles.maintenance.is_enabled());

    let r = h
        .send(with_key(
            &h,
            "POST",
            "/v1/chat/completions",
            Some("sk-app"),
            Some(&chat),
        ))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "7");
    assert_eq!(r.json()["error"]["message"], "Back at noon.");
    assert_eq!(r.json()["error"]["code"], "maintenance");
    assert_eq!(h.get("/healthz").await.status, 200);
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.json()["reason"]
        .as_str()
        .unwrap()
        .contains("maintenance"));

    let off = json!({"enabled": false});
    let r = h
        .send(with_key(
            &h,
            "POST",
            "/admin/maintenance",
            Some("sk-ops"),
            Some(&off),
        ))
        .await;
    assert_eq!(r.status, 200);
    let r = h
        .send(with_key(
            &h,
            "POST",
            "/v1/chat/completions",
            Some("sk-app"),
            Some(&chat),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.get("/readyz").await.status, 200);
    // A malformed admin body is a 400, and changes nothing.
    let r = h
        .send(with_key(
            &h,
            "POST",
            "/admin/maintenance",
            Some("sk-ops"),
            Some(&json!({"enabled": "yes"})),
        ))
        .await;
    assert_eq!(r.status, 400);
    assert!(!h.handles.maintenance.is_enabled());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_rate_limit_gets_429_with_retry_after() {
    let h = Harness::start_with(&[
        ("PROXY_API_KEY", "sk-a,sk-b"),
        // So the model list is keyed by API key, not by client address.
        ("PROXY_PROTECT_MODELS", "true"),
        ("PROXY_RATE_LIMIT_ENABLED", "true"),
        ("PROXY_RATE_LIMIT_MAX", "3"),
        ("PROXY_RATE_LIMIT_WINDOW_MS", "3000"),
    ])
    .await;
    let models = |key| with_key(&h, "GET", "/v1/models", Some(key), None);
    for _ in 0..3 {
        let r = h.send(models("sk-a")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["x-ratelimit-limit-requests"], "3");
    }
    let r = h.send(models("sk-a")).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "retry-after {retry}");
    assert_eq!(r.headers["x-ratelimit-remaining-requests"], "0");
    assert!(r.headers.contains_key("x-ratelimit-reset-requests"));
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    // Another key has its own bucket; probes are never limited.
    assert_eq!(h.send(models("sk-b")).await.status, 200);
    for _ in 0..5 {
        assert_eq!(h.get("/healthz").await.status, 200);
    }
    // After Retry-After, the key is served again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let again = h.send(models("sk-a")).await;
    assert_eq!(
        again.status,
        200,
        "after {retry}s: {:?} {}",
        again.headers,
        again.text()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_a_client_cannot_dodge_its_limit_with_forwarded_for() {
    let h = Harness::start_with(&[
        ("PROXY_TRUST_PROXY", "true"),
        ("PROXY_RATE_LIMIT_ENABLED", "true"),
        ("PROXY_RATE_LIMIT_MAX", "5"),
        ("PROXY_RATE_LIMIT_WINDOW_MS", "60000"),
    ])
    .await;
    // The client writes a fresh first entry each time; the proxy appends the
    // address it really came from.
    let mut limited = 0;
    for i in 0..12 {
        let req = Request::get(h.url("/v1/models"))
            .header("x-forwarded-for", format!("10.9.8.{i}, 198.51.100.4"))
            .body(Full::default())
            .unwrap();
        if h.send(req).await.status == 429 {
            limited += 1;
        }
    }
    assert_eq!(limited, 7, "5 allowed, the other 7 limited");
    // Another client behind the same proxy has its own bucket.
    let req = Request::get(h.url("/v1/models"))
        .header("x-forwarded-for", "198.51.100.5")
        .body(Full::default())
        .unwrap();
    assert_eq!(h.send(req).await.status, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_rules_override_the_defaults() {
    let h0 = Harness::start().await;
    let routes = write_file(
        &h0,
        "routes.toml",
        "[routes.\"/v1/models\"]\nauth = true\nrate_limit_max = 1\nrate_limit_window_ms = 60000\n[routes.\"/v1/chat/completions\"]\nauth = false\n",
    );
    h0.stop().await;
    let h = Harness::start_with(&[("PROXY_API_KEY", "sk-k"), ("PROXY_CONFIG", &routes)]).await;
    // Chat is open by the route rule, models needs a key and allows one call a minute.
    let r = h
        .post("/v1/chat/completions", &Harness::chat("open route", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.get("/v1/models").await.status, 401);
    assert_eq!(
        h.send(with_key(&h, "GET", "/v1/models", Some("sk-k"), None))
            .await
            .status,
        200
    );
    assert_eq!(
        h.send(with_key(&h, "GET", "/v1/models", Some("sk-k"), None))
            .await
            .status,
        429
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_requests_flow() {
    let h =
        Harness::start_with(&[("PROXY_ENABLE_METRICS", "true"), ("PROXY_API_KEY", "sk-m")]).await;
    let scrape = || async {
        let r = h.get("/metrics").await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    };
    let value = |text: &str, prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = scrape().await;
    assert_eq!(value(&before, "codex_gateway_worker_ready"), 1.0);
    let chat_requests = "codex_gateway_http_requests_total{route=\"/v1/chat/completions\",method=\"POST\",status=\"200\"}";
    let n0 = value(&before, chat_requests);
    let stream = Harness::chat("count me", true);
    let r = h
        .send(with_key(
            &h,
            "POST",
            "/v1/chat/completions",
            Some("sk-m"),
            Some(&stream),
        ))
        .await;
    assert_eq!(r.status, 200);
    let r = h
        .send(with_key(
            &h,
            "POST",
            "/v1/chat/completions",
            Some("bad"),
            Some(&stream),
        ))
        .await;
    assert_eq!(r.status, 401);
    let after = scrape().await;
    assert_eq!(value(&after, chat_requests), n0 + 1.0, "{after}");
    assert!(
        value(
            &after,
            "codex_gateway_http_rejections_total{cause=\"auth\"}"
        ) >= 1.0,
        "{after}"
    );
    assert!(
        value(
            &after,
            "codex_gateway_tokens_total{kind=\"completion\",key=\"key-1\",model=\"codex-offline\"}"
        ) > 0.0,
        "{after}"
    );
    assert!(
        value(
            &after,
            "codex_gateway_time_to_first_token_seconds_count{stream=\"true\"}"
        ) >= 1.0,
        "{after}"
    );
    assert!(
        value(
            &after,
            "codex_gateway_jsonrpc_calls_total{method=\"turn/start\",outcome=\"ok\"}"
        ) >= 1.0,
        "{after}"
    );
    assert!(
        value(
            &after,
            "codex_gateway_http_request_duration_seconds_count{route=\"/v1/chat/completions\""
        ) >= 1.0
    );
    assert_eq!(
        value(&after, "codex_gateway_http_streams_open"),
        0.0,
        "the stream was counted closed"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_per_client_are_limited() {
    let h = Harness::start_with(&[
        ("PROXY_SSE_MAX_CONCURRENCY", "1"),
        ("PROXY_ENABLE_METRICS", "true"),
    ])
    .await;
    let slow = h
        .open(h.post_request(
            "/v1/chat/completions",
            &Harness::chat("[[slow 150]] a b c d", true),
        ))
        .await;
    assert_eq!(slow.status(), 200);
    let mut body = slow.into_body();
    read_until(&mut body, "ECHO").await;
    let second = h
        .post("/v1/chat/completions", &Harness::chat("second", true))
        .await;
    assert_eq!(second.status, 429, "{}", second.text());
    assert_eq!(second.json()["error"]["code"], "too_many_streams");
    let metrics = h.get("/metrics").await.text();
    assert!(
        metrics.contains("codex_gateway_http_rejections_total{cause=\"stream_limit\"} 1"),
        "{metrics}"
    );
    // Non-streamed requests are not streams.
    assert_eq!(
        h.post("/v1/chat/completions", &Harness::chat("plain", false))
            .await
            .status,
        200
    );
    read_all(&mut body).await;
    drop(body);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.post("/v1/chat/completions", &Harness::chat("third", true))
            .await
            .status,
        200
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_turn_limit_and_its_queue_requests_get_429() {
    let h =
        Harness::start_with(&[("WORKER_MAX_CONCURRENCY", "1"), ("WORKER_QUEUE_MAX", "0")]).await;
    let slow = h
        .open(h.post_request(
            "/v1/chat/completions",
            &Harness::chat("[[slow 200]] a b c", true),
        ))
        .await;
    let mut body = slow.into_body();
    read_until(&mut body, "ECHO").await;
    let started = Instant::now();
    let r = h
        .post("/v1/chat/completions", &Harness::chat("no room", false))
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "rejected at once, not queued"
    );
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(r.json()["error"]["code"], "overloaded");
    read_all(&mut body).await;
    h.stop().await;

    // With a queue, the second request waits for the slot instead.
    let h =
        Harness::start_with(&[("WORKER_MAX_CONCURRENCY", "1"), ("WORKER_QUEUE_MAX", "4")]).await;
    let first = h
        .open(h.post_request(
            "/v1/chat/completions",
            &Harness::chat("[[slow 100]] a b", true),
        ))
        .await;
    let mut body = first.into_body();
    read_until(&mut body, "ECHO").await;
    let r = h
        .post("/v1/chat/completions", &Harness::chat("queued", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "ECHO: queued");
    read_all(&mut body).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_off_by_default_and_a_token_opens_them() {
    let h = Harness::start().await;
    let r = h.get("/metrics").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    h.stop().await;
    // Loopback peers are let in (see `metrics_move_as_requests_flow`); the
    // token check itself is unit-tested in `api::metrics_endpoint`.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_turns_hit_the_request_and_idle_deadlines_with_504() {
    let h = Harness::start_with(&[("PROXY_TIMEOUT_MS", "400")]).await;
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("[[slow 150]] a b c d e f g h", false),
        )
        .await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "timeout");
    h.stop().await;

    let h = Harness::start_with(&[("PROXY_STREAM_IDLE_TIMEOUT_MS", "300")]).await;
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("[[slow 800]] a b c", false),
        )
        .await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sent nothing"));
    // Streamed: the deadline falls inside the commit window, before any
    // header went out, so the client still gets a proper 504.
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("[[slow 800]] a b c", true),
        )
        .await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "timeout");
    h.stop().await;
}
