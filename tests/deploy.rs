//! The deploy files, validated offline by the tools that own their formats:
//! `systemd-analyze verify` and `security` for the unit, the compose-spec
//! schema (check-jsonschema) for compose, the Kubernetes schemas
//! (kubernetes-validate, strict) for the manifests. Each check is also run
//! on a broken copy, so a validator that accepts anything fails the test.
//! `./scripts/install-ops-tools.sh` (run by `./scripts/test`) installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_codex-completions-api");

fn venv_tool(name: &str) -> PathBuf {
    let p = Path::new(ROOT).join(".tools/ops-venv/bin").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run ./scripts/install-ops-tools.sh (./scripts/test does)",
        p.display()
    );
    p
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{:016x}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap()
}

fn shown(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `systemd-analyze verify` needs ExecStart to exist: the unit is checked
/// with the binary this test was built with in its place.
fn unit_copy(dir: &Path, text: &str) -> PathBuf {
    let unit = text
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                format!("ExecStart={BIN}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("codex-completions-api.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_clean_and_keeps_its_hardening() {
    let dir = scratch("unit");
    let text = read("deploy/codex-completions-api.service");
    let unit = unit_copy(&dir, &text);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        shown(&out)
    );
    // Exposure score 0 (locked down) .. 10 (unprotected): at most 3.0.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=30"])
        .arg(&unit)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", shown(&out));
    for needed in [
        "LimitNOFILE=65536",
        "KillMode=mixed",
        "NoNewPrivileges=true",
    ] {
        assert!(text.contains(needed), "the unit lost {needed}");
    }

    // A misspelt directive is reported, so the check above can fail.
    let broken = unit_copy(&dir, &text.replace("LimitNOFILE=", "LimitNOFLIE="));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(
        shown(&out).contains("LimitNOFLIE"),
        "verify missed a bad key: {}",
        shown(&out)
    );
}

#[test]
fn compose_matches_the_compose_spec_and_gates_health_on_readiness() {
    let compose = read("deploy/docker-compose.yml");
    let check = |path: &Path| {
        Command::new(venv_tool("check-jsonschema"))
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = check(&Path::new(ROOT).join("deploy/docker-compose.yml"));
    assert!(out.status.success(), "{}", shown(&out));
    assert!(
        compose.contains("http://127.0.0.1:11435/readyz"),
        "the healthcheck probes /readyz"
    );
    let dir = scratch("compose");
    let broken = dir.join("docker-compose.yml");
    std::fs::write(
        &broken,
        compose.replace("    healthcheck:\n", "    healthcheck:\n      bogus: 1\n"),
    )
    .unwrap();
    assert!(
        !check(&broken).status.success(),
        "the schema check can fail"
    );
}

#[test]
fn kubernetes_manifests_validate_strictly_offline() {
    let dir = Path::new(ROOT).join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let kinds: Vec<String> = files
        .iter()
        .filter_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("kind: ").map(str::to_owned))
        })
        .collect();
    for kind in [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    // The schemas ship inside the package: no network is used.
    let validate = |files: &[PathBuf]| {
        Command::new(venv_tool("kubernetes-validate"))
            .args(["--strict", "--quiet"])
            .args(files)
            .output()
            .unwrap()
    };
    let out = validate(&files);
    assert!(out.status.success(), "{}", shown(&out));

    let tmp = scratch("k8s");
    let broken = tmp.join("deployment.yaml");
    std::fs::write(
        &broken,
        read("deploy/kubernetes/deployment.yaml").replace("readinessProbe:", "readinesProbe:"),
    )
    .unwrap();
    let out = validate(&[broken]);
    assert!(
        !out.status.success(),
        "strict validation can fail: {}",
        shown(&out)
    );
}

/// The fleet's manifests (deploy/kubernetes/fleet/): Redis, the fleet ConfigMap,
/// the HPA on turns in flight and the Ingress with its routing rule, strictly valid
/// offline like the base manifests.
#[test]
fn fleet_manifests_validate_strictly_offline() {
    let dir = Path::new(ROOT).join("deploy/kubernetes/fleet");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let kinds: Vec<String> = files
        .iter()
        .filter_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("kind: ").map(str::to_owned))
        })
        .collect();
    for kind in [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "Service",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let hpa = read("deploy/kubernetes/fleet/hpa.yaml");
    assert!(
        hpa.contains("name: codex_gateway_turns_in_flight"),
        "scales on turns in flight"
    );
    let ingress = read("deploy/kubernetes/fleet/ingress.yaml");
    assert!(ingress.contains("upstream-hash-by"), "the routing rule");
    let out = Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", shown(&out));
}

/// deploy/haproxy/haproxy.cfg is valid for Debian's HAProxy (tests/fleet.rs runs
/// it), and the check can fail.
#[test]
fn haproxy_config_is_valid() {
    let check = |path: &Path| {
        Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(path)
            .output()
            .expect("haproxy (./scripts/install-ops-tools.sh installs it)")
    };
    let cfg = Path::new(ROOT).join("deploy/haproxy/haproxy.cfg");
    let out = check(&cfg);
    assert!(out.status.success(), "{}", shown(&out));
    let tmp = scratch("haproxy");
    let broken = tmp.join("haproxy.cfg");
    std::fs::write(
        &broken,
        read("deploy/haproxy/haproxy.cfg").replace("use-server gw2", "use-server gw9"),
    )
    .unwrap();
    assert!(!check(&broken).status.success(), "the check can fail");
}

/// The pod's grace period outlasts what a shutdown takes: the preStop pause,
/// the drain, the worker's grace and a second.
#[test]
fn the_pods_grace_period_covers_the_drain() {
    let number_after = |text: &str, key: &str| -> u64 {
        let at = text.find(key).unwrap_or_else(|| panic!("{key} missing"));
        text[at + key.len()..]
            .trim_start_matches([':', ' ', '"'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let config = read("deploy/kubernetes/configmap.yaml");
    let grace_s = number_after(&deployment, "terminationGracePeriodSeconds");
    let pre_stop_s = number_after(&deployment, "command: [\"sleep\", \"");
    let drain_ms = number_after(&config, "PROXY_SHUTDOWN_DRAIN_MS");
    let worker_ms = number_after(&config, "WORKER_SHUTDOWN_GRACE_MS");
    assert!(
        pre_stop_s * 1000 + drain_ms + worker_ms + 1000 < grace_s * 1000,
        "{pre_stop_s} s + {drain_ms} ms + {worker_ms} ms + 1 s >= {grace_s} s"
    );
}
