//! Three gateway replicas (the real binary, each driving the real Codex CLI) behind a
//! real HAProxy running `deploy/haproxy/haproxy.cfg` as shipped, sharing a real
//! `redis-server` (`PROXY_REDIS_URL`); one offline model behind all three counts what
//! reaches it. `./scripts/test` installs haproxy and redis-server.
//!
//! One test, in steps that build on each other (starting the fleet is the cost):
//! the per-key limit holds fleet-wide; a 10-turn Responses conversation stays on one
//! thread; maintenance is switched for the fleet in one call; a replica killed under
//! 16 streams fails only its own streams (its plain requests not yet answered are
//! replayed elsewhere over the same pooled connections), leaves the rotation, and its conversation
//! continues elsewhere (chat from its history, Responses from the records shared in
//! Redis); with Redis stopped the fleet keeps serving (fails open).
//! Figures are printed (docs/operations.md, "Several replicas").

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codex_offline_model::OfflineModel;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_codex-completions-api");
const LIMIT_KEY: &str = "sk-fleet-limit";
const KEY: &str = "sk-fleet-main";
/// Per key, across the fleet: 120 requests, then one more every 10 s.
const QUOTA: u32 = 120;
const CHECK_INTER_MS: u64 = 500;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn codex_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CODEX_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        ".tools/codex/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
    )
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Reply {
    status: StatusCode,
    replica: Option<String>,
    body: Result<Bytes, String>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(self.body.as_ref().unwrap()).unwrap_or(Value::Null)
    }
}

async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    key: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut b = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
    let res = client
        .request(b.body(Full::new(body)).unwrap())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = res.status();
    let replica = res
        .headers()
        .get("x-codex-replica")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = tokio::time::timeout(Duration::from_secs(60), res.into_body().collect())
        .await
        .map_err(|_| "body timeout".to_owned())
        .and_then(|r| r.map(|c| c.to_bytes()).map_err(|e| format!("{e:?}")));
    Ok(Reply {
        status,
        replica,
        body,
    })
}

async fn wait_until(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ok().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_replica(name: &str, port: u16, redis_port: u16, home: &Path, dir: &Path) -> Proc {
    let work = dir.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Proc(
        Command::new(BIN)
            .env("PORT", port.to_string())
            .env("CODEX_HOME", home)
            .env("CODEX_BIN", codex_bin())
            .env(
                codex_offline_model::API_KEY_ENV,
                codex_offline_model::API_KEY,
            )
            .env("PROXY_CODEX_WORKDIR", &work)
            .env("PROXY_STATE_DIR", dir.join(format!("{name}-state")))
            .env("PROXY_API_KEY", format!("{LIMIT_KEY},{KEY}"))
            .env("PROXY_RATE_LIMIT_ENABLED", "true")
            // /v1/models needs the key, so its requests count in the key's bucket.
            .env("PROXY_PROTECT_MODELS", "true")
            .env("PROXY_RATE_LIMIT_MAX", QUOTA.to_string())
            .env(
                "PROXY_RATE_LIMIT_WINDOW_MS",
                (QUOTA as u64 * 10_000).to_string(),
            )
            .env("PROXY_SSE_MAX_CONCURRENCY", "32")
            .env(
                "PROXY_REDIS_URL",
                format!("redis://127.0.0.1:{redis_port}/"),
            )
            .env("PROXY_REDIS_FAILURE", "open")
            .env("PROXY_REPLICA_ID", name)
            .env("PROXY_ENABLE_METRICS", "true")
            .env("WORKER_MAX_CONCURRENCY", "16")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("gateway binary"),
    )
}

/// HAProxy's view of each server of a backend: name -> status (`UP`, `DOWN`, ...).
async fn haproxy_status(client: &HttpClient, stats: u16, backend: &str) -> HashMap<String, String> {
    let Ok(r) = send(
        client,
        Method::GET,
        &format!("http://127.0.0.1:{stats}/stats;csv"),
        "",
        None,
        &[],
    )
    .await
    else {
        return HashMap::new();
    };
    let text = String::from_utf8_lossy(r.body.as_ref().map(|b| &b[..]).unwrap_or(b"")).into_owned();
    text.lines()
        .filter(|l| l.starts_with(&format!("{backend},gw")))
        .filter_map(|l| {
            let f: Vec<_> = l.split(',').collect();
            Some((f.get(1)?.to_string(), f.get(17)?.to_string()))
        })
        .collect()
}

fn chat(messages: &[Value], stream: bool) -> Value {
    json!({"model": codex_offline_model::MODEL_ID, "stream": stream, "messages": messages})
}

fn cache_keys(model: &OfflineModel, marker: &str) -> Vec<String> {
    model
        .requests()
        .iter()
        .filter(|r| r.to_string().contains(marker))
        .filter_map(|r| {
            r.get("prompt_cache_key")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_haproxy_share_limits_threads_and_switches() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = OfflineModel::start(0).await.expect("offline model");
    let home = dir.join("codex-home");
    codex_offline_model::write_codex_home(&home, &model.base_url()).unwrap();
    // Pooled keep-alive connections, as the openai SDKs keep them: a replica dying
    // must not surface as a connection closed without a response on a reused one
    // (HAProxy's `retry-on empty-response` is what prevents that).
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let redis_port = free_port();
    let redis = Proc(
        Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server; ./scripts/test does it)"),
    );
    let names = ["gw1", "gw2", "gw3"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut replicas: Vec<Option<Proc>> = names
        .iter()
        .zip(&ports)
        .map(|(n, p)| Some(spawn_replica(n, *p, redis_port, &home, &dir)))
        .collect();
    let lb_port = free_port();
    let stats_port = free_port();
    let _haproxy = Proc(
        Command::new("haproxy")
            .arg("-f")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/haproxy.cfg"))
            .arg("-db")
            .env("HAPROXY_BIND", format!("127.0.0.1:{lb_port}"))
            .env("HAPROXY_STATS_BIND", format!("127.0.0.1:{stats_port}"))
            .env("HAPROXY_CHECK_INTER", format!("{CHECK_INTER_MS}ms"))
            .env("GW1_ADDR", format!("127.0.0.1:{}", ports[0]))
            .env("GW2_ADDR", format!("127.0.0.1:{}", ports[1]))
            .env("GW3_ADDR", format!("127.0.0.1:{}", ports[2]))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .expect("haproxy (apt-get install haproxy; ./scripts/test does it)"),
    );
    let lb = |path: &str| format!("http://127.0.0.1:{lb_port}{path}");
    let direct = |i: usize, path: &str| format!("http://127.0.0.1:{}{path}", ports[i]);

    wait_until(
        "all three replicas up in HAProxy",
        Duration::from_secs(60),
        async || {
            let s = haproxy_status(&client, stats_port, "gateways").await;
            s.len() == 3 && s.values().all(|v| v == "UP")
        },
    )
    .await;

    // --- 1. One key's quota is one quota, over the whole fleet. ---------------
    let started = Instant::now();
    let models_url = lb("/v1/models");
    // 48 in flight at a time: load on every replica at once, without queueing
    // hundreds of decisions behind one Redis connection on a 2-core host.
    let results: Vec<_> = futures_util::stream::iter(
        (0..3 * QUOTA).map(|_| send(&client, Method::GET, &models_url, LIMIT_KEY, None, &[])),
    )
    .buffer_unordered(48)
    .collect()
    .await;
    let elapsed = started.elapsed();
    let mut allowed: u32 = 0;
    let mut per_replica: HashMap<String, (u32, u32)> = HashMap::new();
    for r in results {
        let r = r.expect("answered");
        let e = per_replica
            .entry(r.replica.clone().unwrap_or_default())
            .or_default();
        match r.status {
            StatusCode::OK => {
                allowed += 1;
                e.0 += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => e.1 += 1,
            s => panic!("unexpected {s}"),
        }
    }
    // GCRA: the burst, plus one per 10 s that passed.
    let expected = QUOTA + (elapsed.as_secs() / 10) as u32;
    println!(
        "FIGURE limit: {} requests over 3 replicas in {elapsed:?}: {allowed} allowed (quota {QUOTA}, expected {expected}); per replica (allowed, refused): {per_replica:?}",
        3 * QUOTA
    );
    assert_eq!(
        per_replica.len(),
        3,
        "load spread over all replicas: {per_replica:?}"
    );
    assert!(per_replica.values().all(|(a, _)| *a > 0), "{per_replica:?}");
    let tolerance = (expected as f64 * 0.05).ceil() as u32;
    assert!(
        allowed.abs_diff(expected) <= tolerance,
        "fleet-wide limit: {allowed} allowed, expected {expected} ± 5 %"
    );

    // --- 2. A 10-turn Responses conversation through the balancer stays on one thread.
    let mut previous: Option<String> = None;
    let mut served_by = HashSet::new();
    for turn in 0..10 {
        let mut body = json!({
            "model": codex_offline_model::MODEL_ID,
            "input": format!("fleet-resp turn {turn}"),
        });
        if let Some(p) = &previous {
            body["previous_response_id"] = json!(p);
        }
        let r = send(
            &client,
            Method::POST,
            &lb("/v1/responses"),
            KEY,
            Some(&body),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, StatusCode::OK, "turn {turn}: {:?}", r.body);
        let id = r.json()["id"].as_str().unwrap().to_owned();
        served_by.insert(r.replica.clone().unwrap());
        assert!(
            id.starts_with(&format!("resp_{}_", r.replica.as_deref().unwrap())),
            "{id}"
        );
        previous = Some(id);
    }
    let keys: HashSet<_> = cache_keys(&model, "fleet-resp turn").into_iter().collect();
    println!(
        "FIGURE conversation: 10 turns served by {served_by:?}, {} thread(s) at the model",
        keys.len()
    );
    assert_eq!(served_by.len(), 1, "every turn on the replica of the first");
    assert_eq!(
        keys.len(),
        1,
        "one thread (prompt_cache_key) for all 10 turns"
    );

    // --- 3. Maintenance for the whole fleet in one call (on any replica). ----
    let on = send(
        &client,
        Method::POST,
        &lb("/admin/maintenance"),
        KEY,
        Some(&json!({"enabled": true})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(on.status, StatusCode::OK, "{:?}", on.body);
    assert_eq!(on.json()["scope"], "fleet");
    let switched = Instant::now();
    for i in 0..3 {
        wait_until(
            "every replica's /readyz follows",
            Duration::from_secs(5),
            async || {
                send(&client, Method::GET, &direct(i, "/readyz"), KEY, None, &[])
                    .await
                    .is_ok_and(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
            },
        )
        .await;
    }
    let readyz_followed = switched.elapsed();
    wait_until(
        "HAProxy takes the fleet out",
        Duration::from_secs(10),
        async || {
            haproxy_status(&client, stats_port, "gateways")
                .await
                .values()
                .all(|v| v.starts_with("DOWN"))
        },
    )
    .await;
    let r = send(&client, Method::GET, &lb("/v1/models"), KEY, None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json()["error"]["code"],
        "service_unavailable",
        "HAProxy's 503 in OpenAI's envelope"
    );
    let off = send(
        &client,
        Method::POST,
        &lb("/admin/maintenance"),
        KEY,
        Some(&json!({"enabled": false})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        off.status,
        StatusCode::OK,
        "the admin backend stays reachable: {:?}",
        off.body
    );
    wait_until(
        "the fleet back in rotation",
        Duration::from_secs(10),
        async || {
            let s = haproxy_status(&client, stats_port, "gateways").await;
            s.len() == 3 && s.values().all(|v| v == "UP")
        },
    )
    .await;
    println!("FIGURE maintenance: every /readyz 503 {readyz_followed:?} after one admin call; back in rotation {:?} after", switched.elapsed());

    // --- 4. A replica killed under 16 concurrent streams. ---------------------
    // A chat conversation pinned to gw2 by the echoed header, before the kill.
    let mut history = vec![json!({"role": "user", "content": "fleet-chat turn 0"})];
    for turn in 0..2 {
        let r = send(
            &client,
            Method::POST,
            &lb("/v1/chat/completions"),
            KEY,
            Some(&chat(&history, false)),
            &[("x-codex-replica", "gw2")],
        )
        .await
        .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.replica.as_deref(),
            Some("gw2"),
            "the echoed header routes"
        );
        history.push(r.json()["choices"][0]["message"].clone());
        history.push(json!({"role": "user", "content": format!("fleet-chat turn {}", turn + 1)}));
    }
    // And a Responses conversation on gw2 (the header routes Responses too).
    let first = send(
        &client,
        Method::POST,
        &lb("/v1/responses"),
        KEY,
        Some(&json!({"model": codex_offline_model::MODEL_ID, "input": "fleet-resp2 turn 0"})),
        &[("x-codex-replica", "gw2")],
    )
    .await
    .unwrap();
    assert_eq!(first.status, StatusCode::OK);
    let first_id = first.json()["id"].as_str().unwrap().to_owned();
    assert!(first_id.starts_with("resp_gw2_"), "{first_id}");
    let headed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let streams: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            let url = lb("/v1/chat/completions");
            let headed = headed.clone();
            tokio::spawn(async move {
                let body = chat(&[json!({"role": "user", "content": format!("fleet-stream {i} [[slow 300]] one two three four five six seven eight nine ten")})], true);
                // Spread evenly by the routing rule: 6, 5 and 5 streams per replica.
                let req = Request::post(url)
                    .header("x-codex-replica", ["gw1", "gw2", "gw3"][(i + 2) % 3])
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap();
                let res = client.request(req).await.expect("stream headers");
                headed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let replica = res.headers()["x-codex-replica"].to_str().unwrap().to_owned();
                let ok = res.status() == StatusCode::OK;
                let body = res.into_body().collect().await.map(|c| c.to_bytes());
                let complete = ok && body.is_ok_and(|b| String::from_utf8_lossy(&b).contains("data: [DONE]"));
                (replica, complete)
            })
        })
        .collect();
    wait_until(
        "16 streams under way",
        Duration::from_secs(30),
        async || headed.load(std::sync::atomic::Ordering::SeqCst) == 16,
    )
    .await;
    // And 3 plain (non-streamed) requests on gw2 that have not answered yet when it
    // dies: nothing of their responses is out, so HAProxy replays them elsewhere
    // (`retry-on empty-response`) over the same pooled connections.
    let plain_in_flight: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            let url = lb("/v1/chat/completions");
            tokio::spawn(async move {
                let body = chat(&[json!({"role": "user", "content": format!("fleet-plain {i} [[slow 300]] one two three four five six seven eight nine ten")})], false);
                send(&client, Method::POST, &url, KEY, Some(&body), &[("x-codex-replica", "gw2")]).await
            })
        })
        .collect();
    wait_until(
        "19 turns open at the model",
        Duration::from_secs(30),
        async || model.open_streams() >= 19,
    )
    .await;
    let killed = Instant::now();
    drop(replicas[1].take()); // SIGKILL gw2
    wait_until(
        "HAProxy marks gw2 down",
        Duration::from_secs(10),
        async || {
            haproxy_status(&client, stats_port, "gateways")
                .await
                .get("gw2")
                .is_some_and(|s| s.starts_with("DOWN"))
        },
    )
    .await;
    let out_after = killed.elapsed();
    let mut outcome: HashMap<String, (u32, u32)> = HashMap::new();
    for s in streams {
        let (replica, complete) = s.await.unwrap();
        let e = outcome.entry(replica).or_default();
        if complete {
            e.0 += 1
        } else {
            e.1 += 1
        }
    }
    for p in plain_in_flight {
        let r = p
            .await
            .unwrap()
            .expect("a plain request in flight on gw2 is answered, not dropped");
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_ne!(
            r.replica.as_deref(),
            Some("gw2"),
            "replayed on a live replica"
        );
        assert!(r.json()["choices"][0]["message"]["content"].is_string());
    }
    println!("FIGURE kill: gw2 out of rotation {out_after:?} after SIGKILL (check every {CHECK_INTER_MS} ms, fall 2); streams (complete, failed) per replica: {outcome:?}");
    assert_eq!(
        outcome.get("gw2"),
        Some(&(0, 5)),
        "gw2's 5 streams fail: {outcome:?}"
    );
    assert_eq!(
        outcome.values().map(|(c, _)| c).sum::<u32>(),
        11,
        "the other 11 complete: {outcome:?}"
    );
    for (replica, (complete, failed)) in &outcome {
        if replica == "gw2" {
            assert_eq!(*complete, 0, "gw2's streams end with it: {outcome:?}");
        } else {
            assert_eq!(
                *failed, 0,
                "only the killed replica's streams fail: {outcome:?}"
            );
        }
    }
    assert!(
        out_after <= Duration::from_millis(3 * CHECK_INTER_MS + 1500),
        "out of rotation within its checks: {out_after:?}"
    );
    // Nothing is sent to it any more, and the pinned conversation continues elsewhere.
    for _ in 0..6 {
        let r = send(&client, Method::GET, &lb("/v1/models"), KEY, None, &[])
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_ne!(r.replica.as_deref(), Some("gw2"));
    }
    let mut pinned = "gw2".to_owned();
    for turn in 2..5 {
        let r = send(
            &client,
            Method::POST,
            &lb("/v1/chat/completions"),
            KEY,
            Some(&chat(&history, false)),
            &[("x-codex-replica", &pinned)],
        )
        .await
        .unwrap();
        assert_eq!(
            r.status,
            StatusCode::OK,
            "turn {turn} after the kill: {:?}",
            r.body
        );
        pinned = r.replica.clone().unwrap();
        assert_ne!(pinned, "gw2");
        let reply = r.json()["choices"][0]["message"].clone();
        assert!(
            reply["content"]
                .as_str()
                .unwrap()
                .contains(&format!("fleet-chat turn {turn}")),
            "{reply}"
        );
        history.push(reply);
        history.push(json!({"role": "user", "content": format!("fleet-chat turn {}", turn + 1)}));
    }
    // gw2's Responses conversation: its follow-up is balanced elsewhere (the rule
    // naming gw2 is skipped) and rebuilt from the records shared in Redis.
    let next = send(&client, Method::POST, &lb("/v1/responses"), KEY, Some(&json!({"model": codex_offline_model::MODEL_ID, "previous_response_id": first_id, "input": "fleet-resp2 turn 1"})), &[])
        .await
        .unwrap();
    assert_eq!(
        next.status,
        StatusCode::OK,
        "rebuilt from the shared store: {:?}",
        next.body
    );
    assert_ne!(next.replica.as_deref(), Some("gw2"));
    let rebuilt = model
        .requests()
        .into_iter()
        .rfind(|r| r.to_string().contains("fleet-resp2 turn 1"))
        .unwrap();
    assert!(
        rebuilt.to_string().contains("fleet-resp2 turn 0"),
        "the whole conversation reached the model: {rebuilt}"
    );
    let chat_keys = cache_keys(&model, "fleet-chat turn");
    let distinct: Vec<_> = chat_keys.iter().fold(Vec::<&String>::new(), |mut v, k| {
        if v.last() != Some(&k) {
            v.push(k);
        }
        v
    });
    println!("FIGURE kill: chat conversation threads at the model, in order: {} (gw2's, then the rebuilt one)", distinct.len());
    assert_eq!(
        distinct.len(),
        2,
        "one thread on gw2, one rebuilt thread after: {chat_keys:?}"
    );

    // --- 5. Redis stopped: the fleet keeps serving (PROXY_REDIS_FAILURE=open). -
    drop(redis);
    for _ in 0..6 {
        let r = send(
            &client,
            Method::POST,
            &lb("/v1/chat/completions"),
            KEY,
            Some(&chat(
                &[json!({"role": "user", "content": "fleet-noredis"})],
                false,
            )),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, StatusCode::OK, "fails open: {:?}", r.body);
    }
    let mut redis_errors = 0.0;
    for i in [0, 2] {
        let m = send(&client, Method::GET, &direct(i, "/metrics"), KEY, None, &[])
            .await
            .unwrap();
        let text = String::from_utf8_lossy(m.body.as_ref().unwrap()).into_owned();
        redis_errors += text
            .lines()
            .filter(|l| {
                l.starts_with("codex_gateway_redis_errors_total{") && l.contains("mode=\"open\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    println!("FIGURE redis down: 6/6 requests served, {redis_errors} Redis failures counted");
    assert!(
        redis_errors >= 6.0,
        "each failed decision is counted: {redis_errors}"
    );
    let log = std::fs::read_to_string(dir.join("gw1.log")).unwrap()
        + &std::fs::read_to_string(dir.join("gw3.log")).unwrap();
    let lines = log.matches("redis unavailable").count();
    assert!(
        (1..=2).contains(&lines),
        "one rate-limited log line per replica, not one per request: {lines}"
    );
    drop(replicas);
    let _ = std::fs::remove_dir_all(&dir);
}
