//! Requests hyper rejects before any of the gateway's code runs still get the
//! OpenAI error envelope and an `x-request-id` (`docs/errors.md`), over raw
//! TCP against `server::serve`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use codex_completions_api::server::serve;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tower::service_fn(|_: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // The shipped defaults, as the binary would serve.
    let config = codex_completions_api::config::Config::from_env(
        &codex_completions_api::config::Env::new(|_| None),
    )
    .expect("default config")
    .serve;
    tokio::spawn(async move {
        serve(listener, service, &config, async move {
            let _ = rx.await;
        })
        .await
    });
    (addr, tx)
}

/// Writes the whole request, then reads the whole answer; the write must
/// succeed (a client that writes before it reads must not see a reset).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request)
        .await
        .expect("the whole request can be written");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer within 10 s")
        .expect("answer read to the end");
    String::from_utf8_lossy(&out).into_owned()
}

fn check(what: &str, answer: &str, status: u16, code: &str) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{what}: no head in {answer:?}"));
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status} ")),
        "{what}: {head}"
    );
    assert!(
        head.contains("\r\ncontent-type: application/json\r\n"),
        "{what}: {head}"
    );
    let id = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("{what}: no x-request-id in {head}"));
    assert!(id.starts_with("req_"), "{what}: {id}");
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body:?}"));
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{what}");
    assert!(v["error"]["param"].is_null(), "{what}");
    assert!(v["error"]["message"].as_str().unwrap().len() > 10, "{what}");
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_the_envelope_and_a_request_id() {
    let (addr, _stop) = start().await;
    let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "1 MiB header",
            [
                &b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: "[..],
                &vec![b'a'; 1 << 20],
                b"\r\n\r\n",
            ]
            .concat(),
            431,
            "headers_too_large",
        ),
        (
            "200 headers",
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}\r\n").into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            "invalid UTF-8 in the path",
            b"GET /v1/\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            400,
            "invalid_http_request",
        ),
        (
            "duplicate Content-Length",
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\
              content-length: 3\r\n\r\n{}"
                .to_vec(),
            400,
            "invalid_http_request",
        ),
        (
            "negative Content-Length",
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n{}"
                .to_vec(),
            400,
            "invalid_http_request",
        ),
        (
            "HTTP/9.9",
            b"GET /healthz HTTP/9.9\r\nhost: x\r\n\r\n".to_vec(),
            400,
            "invalid_http_request",
        ),
        (
            "70 KB URI",
            format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
            "uri_too_long",
        ),
    ];
    for (what, request, status, code) in cases {
        let answer = exchange(addr, &request).await;
        check(what, &answer, status, code);
    }
    // The gateway's own answers pass untouched.
    let ok = exchange(
        addr,
        b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nok"),
        "{ok}"
    );
}
