//! Request bodies against the running gateway: an oversized body written
//! whole before reading still gets its 413, and the bodies held at once stay
//! within `PROXY_UPLOAD_BUDGET_BYTES`. `docs/security.md` ("Uploads") has
//! the threat and the memory figures.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn post_head(len: usize) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {len}\r\n\r\n"
    )
    .into_bytes()
}

async fn read_answer(s: &mut TcpStream) -> (u16, Value, String) {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("answer within 20 s")
        .expect("answer read to the end");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head[9..12].parse().unwrap();
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, json, head.to_owned())
}

/// What Python's urllib and httpx do: write the whole request, then read.
/// A 17 MiB body against the 16 MiB limit used to end in a broken pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_written_whole_before_reading_still_gets_the_413() {
    let h = Harness::start().await;
    let len = 17 * 1024 * 1024;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let mut request = post_head(len);
    request.resize(request.len() + len, b'a');
    s.write_all(&request)
        .await
        .expect("the whole body can be written (no reset)");
    let (status, json, head) = read_answer(&mut s).await;
    assert_eq!(status, 413, "{head}");
    assert_eq!(json["error"]["code"], "request_too_large");
    assert!(head.contains("x-request-id: req_"), "{head}");
    h.stop().await;
}

/// With a 1 MiB budget, a body that holds it makes the next wait, then get
/// 429 `overloaded` with Retry-After; once it is done, bodies get in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_beyond_the_upload_budget_wait_then_get_429() {
    let h = Harness::start_with(&[
        ("PROXY_UPLOAD_BUDGET_BYTES", "1048576"),
        ("PROXY_MAX_BODY_BYTES", "1048576"),
    ])
    .await;
    let body = serde_json::to_vec(&Harness::chat("x", false)).unwrap();

    // Declares 1 MiB and sends half: it holds the whole budget meanwhile.
    let mut holder = TcpStream::connect(h.addr).await.unwrap();
    holder.write_all(&post_head(1 << 20)).await.unwrap();
    holder.write_all(&vec![b' '; 1 << 19]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&[post_head(body.len()), body.clone()].concat())
        .await
        .unwrap();
    let (status, json, head) = read_answer(&mut s).await;
    let waited = started.elapsed();
    assert_eq!(status, 429, "{head} {json}");
    assert_eq!(json["error"]["code"], "overloaded");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(
        waited >= Duration::from_secs(4),
        "it waited first: {waited:?}"
    );

    // The holder finishes: its body is read, answered, and given back.
    let mut rest = vec![b' '; (1 << 20) - (1 << 19) - body.len()];
    rest.extend_from_slice(&body);
    holder.write_all(&rest).await.unwrap();
    let (status, json, _) = read_answer(&mut holder).await;
    assert_eq!(status, 200, "{json}");
    let r = h
        .post("/v1/chat/completions", &Harness::chat("again", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    h.stop().await;
}
