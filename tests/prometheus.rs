//! The operator's monitoring, proven: the alert rules pass `promtool`'s
//! check and their unit tests; the Grafana dashboard queries only metrics a
//! live gateway serves; and the WorkerDown drill: a real Prometheus
//! (Debian's `prometheus` package, which `scripts/test` installs) scrapes a
//! real gateway, the worker is killed and kept down, `CodexWorkerDown`
//! fires (seen through Prometheus' own API), the worker comes back and the
//! alert resolves.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::Harness;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is not installed: `apt-get install prometheus` (./scripts/test does)");
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn http_get(url: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    match client.get(url.parse().unwrap()).await {
        Ok(res) => {
            let status = res.status().as_u16();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(_) => (0, String::new()),
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = Path::new(ROOT).join("deploy/prometheus");
    let check = Command::new(tool("promtool"))
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = Command::new(tool("promtool"))
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
fn every_alert_has_a_runbook_page() {
    let alerts =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus/alerts.yml")).unwrap();
    let names = alerts
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let urls: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
        .collect();
    assert_eq!(urls.len(), names, "one runbook_url per alert");
    let index = std::fs::read_to_string(Path::new(ROOT).join("docs/runbooks/README.md")).unwrap();
    for url in urls {
        let page = Path::new(ROOT).join(url);
        assert!(page.is_file(), "{url} is missing");
        let file = page.file_name().unwrap().to_str().unwrap();
        assert!(
            index.contains(file),
            "docs/runbooks/README.md does not list {file}"
        );
    }
    for line in alerts
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert: "))
    {
        assert!(
            index.contains(line),
            "docs/runbooks/README.md does not list {line}"
        );
    }
}

/// The metric names in a PromQL expression (`codex_gateway_…`).
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("codex_gateway_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // The bare prefix is prose ("every metric starts with codex_gateway_").
        if end > "codex_gateway_".len() {
            into.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
}

fn strings_under(v: &Value, keys: &[&str], out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if keys.contains(&k.as_str()) => out.push(s.clone()),
                    _ => strings_under(v, keys, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| strings_under(i, keys, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_query_is_served() {
    let key = "sk-dashboard-test";
    let h = Harness::start_with(&[("PROXY_ENABLE_METRICS", "true"), ("PROXY_API_KEY", key)]).await;
    // Traffic that makes every family have a series: a streamed completion
    // (tokens, first token, streams), a rejection.
    let mut req = h.post_request("/v1/chat/completions", &Harness::chat("metrics", true));
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    assert_eq!(h.send(req).await.status, 200);
    assert_eq!(
        h.post("/v1/chat/completions", &Harness::chat("no key", false))
            .await
            .status,
        401
    );
    let metrics = h.get("/metrics").await.text();
    let served: BTreeSet<String> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();

    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(Path::new(ROOT).join("deploy/grafana/dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    strings_under(&dashboard, &["expr", "query"], &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let alerts =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus/alerts.yml")).unwrap();
    let mut queried = BTreeSet::new();
    for e in &exprs {
        metric_names(e, &mut queried);
    }
    let from_dashboard = queried.len();
    metric_names(&alerts, &mut queried);
    assert!(from_dashboard >= 10, "{queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|m| !served.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "queried but not served: {missing:?}\n{metrics}"
    );
    h.stop().await;
}

/// A Prometheus server on a free port, stopped on drop.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(dir: &Path, target: &str, rules: &str) -> Prometheus {
        std::fs::write(dir.join("alerts.yml"), rules).unwrap();
        // Short intervals keep the drill to seconds.
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n\
                 rule_files: [alerts.yml]\n\
                 scrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(tool("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let up = Instant::now();
        while http_get(&format!("{}/-/ready", p.url)).await.0 != 200 {
            assert!(
                up.elapsed() < Duration::from_secs(30),
                "prometheus did not start: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    /// The state of `name` in /api/v1/alerts: "pending", "firing", or None.
    async fn alert(&self, name: &str) -> Option<String> {
        let (status, body) = http_get(&format!("{}/api/v1/alerts", self.url)).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .map(|a| a["state"].as_str().unwrap().to_owned())
    }

    async fn wait_for(
        &self,
        name: &str,
        want: Option<&str>,
        within: Duration,
    ) -> Vec<Option<String>> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let state = self.alert(name).await;
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            if state.as_deref() == want {
                return seen;
            }
            assert!(
                start.elapsed() < within,
                "{name} never became {want:?}; states seen: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_down_drill_fires_and_resolves_on_a_real_prometheus() {
    let dir = scratch("drill");
    // A CODEX_BIN whose app-server refuses to start while the flag exists:
    // the worker stays down as long as the drill wants.
    let flag = dir.join("worker-down");
    let wrapper = dir.join("codex");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = app-server ] && [ -e '{}' ]; then echo 'drill: worker kept down' >&2; exit 1; fi\nexec '{}' \"$@\"\n",
            flag.display(),
            support::codex_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let h = Harness::start_with(&[
        ("CODEX_BIN", wrapper.to_str().unwrap()),
        ("PROXY_ENABLE_METRICS", "true"),
        ("WORKER_RESTART_MAX", "1000"),
        ("WORKER_BACKOFF_INITIAL_MS", "100"),
        ("WORKER_BACKOFF_MAX_MS", "200"),
    ])
    .await;

    // The shipped rule, its hold time shortened from 1m for the drill.
    let shipped =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus/alerts.yml")).unwrap();
    let rule = "expr: max without (worker) (codex_gateway_worker_ready) == 0\n        for: 1m";
    assert!(
        shipped.contains(rule),
        "the WorkerDown rule changed; update the drill"
    );
    let rules = shipped.replace(
        rule,
        "expr: max without (worker) (codex_gateway_worker_ready) == 0\n        for: 2s",
    );
    let prom = Prometheus::start(&dir, &h.addr.to_string(), &rules).await;

    // Scraped and healthy: the target is up, no WorkerDown.
    let start = Instant::now();
    loop {
        let (_, body) = http_get(&format!(
            "{}/api/v1/query?query=codex_gateway_worker_ready",
            prom.url
        ))
        .await;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if v["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never scraped: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(prom.alert("CodexWorkerDown").await, None);

    // The incident: the worker dies and cannot come back.
    std::fs::write(&flag, "").unwrap();
    let pid = h.handles.worker.status().pid.unwrap();
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let seen = prom
        .wait_for("CodexWorkerDown", Some("firing"), Duration::from_secs(30))
        .await;
    assert!(
        seen.contains(&Some("pending".into())),
        "pending before firing (the hold time): {seen:?}"
    );
    assert_eq!(h.get("/readyz").await.status, 503);

    // Recovery: the cause is removed, the supervisor's next start succeeds.
    std::fs::remove_file(&flag).unwrap();
    tokio::time::timeout(Duration::from_secs(30), h.handles.worker.wait_ready())
        .await
        .expect("the worker comes back")
        .expect("ready");
    prom.wait_for("CodexWorkerDown", None, Duration::from_secs(30))
        .await;
    let r = h
        .post(
            "/v1/chat/completions",
            &Harness::chat("after the drill", false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    drop(prom);
    h.stop().await;
}
