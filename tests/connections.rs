//! The server against connections that hold resources without using them,
//! over raw TCP: `server::serve` with a trivial service (no worker needed),
//! and the real binary with few file descriptors. `docs/security.md`
//! ("Idle connections") has the threat.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codex_completions_api::server::{serve, ServeConfig};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_codex-completions-api");
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// `serve` with a 300 ms header timeout; `/slow` answers after 1 s.
async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = ServeConfig {
        host: addr.ip(),
        port: addr.port(),
        header_timeout: Duration::from_millis(300),
        drain_timeout: Duration::from_secs(5),
    };
    tokio::spawn(async move {
        serve(listener, service, &config, async move {
            let _ = rx.await;
        })
        .await
    });
    (addr, tx)
}

/// Reads (and discards) until the server closes the connection; `None` if it
/// is still open after `limit`.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let res = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    res.ok().map(|_| started.elapsed())
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let (addr, _stop) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let after = closed_after(&mut s, Duration::from_secs(5)).await;
    assert!(after.is_some(), "a silent socket is still open after 5 s");
    assert!(after.unwrap() >= Duration::from_millis(250), "{after:?}");
}

#[tokio::test]
async fn a_slow_h2c_preface_is_closed_after_the_header_timeout() {
    let (addr, _stop) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Half the preface: hyper-util is still sniffing the protocol.
    s.write_all(&H2_PREFACE[..12]).await.unwrap();
    assert!(
        closed_after(&mut s, Duration::from_secs(5)).await.is_some(),
        "still open after 5 s"
    );
}

/// The server decides HTTP/1 or h2c by peeking at the first bytes; a `P`
/// alone could still be either, so it is read the old way. Either way the
/// request is served. (The pause only makes the split likely; the test
/// holds when the bytes arrive together too.)
#[tokio::test]
async fn a_request_whose_first_byte_arrives_alone_is_served_over_http1() {
    let (addr, _stop) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"UT /x HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answered within 5 s")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("ok"), "{out}");
}

#[tokio::test]
async fn an_h2c_preface_that_arrives_in_two_parts_is_served_over_http2() {
    let (addr, _stop) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&H2_PREFACE[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(&H2_PREFACE[5..]).await.unwrap();
    s.write_all(H2_SETTINGS).await.unwrap();
    // The server's first frame is its SETTINGS (type 4, stream 0).
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("a frame within 5 s")
        .unwrap();
    assert_eq!(head[3], 4, "not a SETTINGS frame: {head:?}");
    assert_eq!(&head[5..], &[0, 0, 0, 0], "not on stream 0: {head:?}");
}

#[tokio::test]
async fn an_h2c_preface_and_settings_then_silence_is_closed() {
    let (addr, _stop) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(H2_PREFACE).await.unwrap();
    s.write_all(H2_SETTINGS).await.unwrap();
    assert!(
        closed_after(&mut s, Duration::from_secs(5)).await.is_some(),
        "still open after 5 s"
    );
}

#[tokio::test]
async fn an_idle_h2c_connection_is_closed_but_a_long_request_is_not() {
    let (addr, _stop) = start().await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    // A request that outlasts the idle limit (1 s against 300 ms) is served.
    let req = Request::get(format!("http://{addr}/slow"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    // Then, with no stream open, the server closes the connection.
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(
        ended.is_ok(),
        "an idle h2c connection is still open after 5 s"
    );
}

/// The reported outage: with 64 file descriptors, 150 silent connections
/// took the gateway offline (probes timed out, a warning every 50 ms). Now
/// idle connections are closed to make room, probes answer, and it is one
/// warning. The header timeout is set to a minute so that only the shedding
/// can explain the recovery.
#[test]
fn out_of_file_descriptors_the_gateway_still_answers_probes_and_warns_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::env::temp_dir().join(format!("connections-{port}.log"));
    let mut child = Command::new("prlimit")
        .args(["--nofile=64:64", "--", BIN])
        .env("PORT", port.to_string())
        // No worker needed: /healthz answers without one.
        .env("CODEX_BIN", "/bin/false")
        .env("WORKER_RESTART_MAX", "1")
        .env("PROXY_HEADER_TIMEOUT_MS", "60000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("prlimit (util-linux) runs the gateway with 64 descriptors");
    let healthz = |timeout: Duration| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    let up = Instant::now();
    while healthz(Duration::from_secs(1)).is_none() {
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "gateway did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let silent: Vec<_> = (0..150)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let attacked = Instant::now();
    let mut answer = None;
    while answer.is_none() && attacked.elapsed() < Duration::from_secs(10) {
        answer = healthz(Duration::from_secs(2));
    }
    let waited = attacked.elapsed();
    drop(silent);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log).unwrap();

    let answer = answer.unwrap_or_else(|| panic!("/healthz did not answer within 10 s\n{log}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    println!("/healthz answered {waited:?} into the attack");
    let warnings = log.matches("accept failed").count();
    assert_eq!(warnings, 1, "'accept failed' lines:\n{log}");
}
