#!/usr/bin/env bash
# Installs the Debian tools the operations tests run, where they are missing:
#   - prometheus (prometheus + promtool): alert rules checked and unit-tested,
#     the WorkerDown drill on a real Prometheus (tests/prometheus.rs);
#   - systemd (systemd-analyze): the unit file verified (tests/deploy.rs);
#   - redis-server and haproxy: the shared Redis backend of the rate-limit layer
#     (layers/rate-limit/tests/redis.rs) and three replicas behind HAProxy running
#     deploy/haproxy/haproxy.cfg (tests/fleet.rs);
#   - from PyPI, into .tools/ops-venv: kubernetes-validate (carries the
#     Kubernetes JSON schemas: validates deploy/kubernetes/ offline) and
#     check-jsonschema (carries the compose-spec schema: deploy/docker-compose.yml).
# Needs root with apt-get when a Debian package is missing; idempotent.
set -euo pipefail

missing=()
need() { # need BINARY PACKAGE
  [ -x "$1" ] || missing+=("$2")
}
need /usr/bin/promtool prometheus
need /usr/bin/prometheus prometheus
need /usr/bin/systemd-analyze systemd
need /usr/bin/redis-server redis-server
need /usr/sbin/haproxy haproxy
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)

if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  command -v apt-get >/dev/null 2>&1 || { echo "install-ops-tools: need ${pkgs[*]} but apt-get is not available" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "install-ops-tools: need ${pkgs[*]}; installing needs root (apt-get)" >&2; exit 1; }
  echo "install-ops-tools: installing ${pkgs[*]} (apt-get)..." >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/ops-venv"
pins=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0)
if ! "$venv/bin/python" -c 'import kubernetes_validate, check_jsonschema' 2>/dev/null \
   || [ "$(cat "$venv/.pins" 2>/dev/null)" != "${pins[*]}" ]; then
  echo "install-ops-tools: installing ${pins[*]} into .tools/ops-venv (pip)..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}" >&2
  echo "${pins[*]}" > "$venv/.pins"
fi

# Debian's packages enable and start Prometheus, Redis and HAProxy services; the
# tests run their own on free ports and need nothing from them.
promtool --version 2>&1 | head -1 >&2
