#!/usr/bin/env bash
# Drives the gateway with the official OpenAI SDKs (Python and Node).
#
#   tests/sdk/run.sh
#
# Needs python3 (with venv/pip), node/npm and cargo; everything else is
# installed here: the pinned Codex CLI (scripts/install-codex.sh), debug builds
# of the gateway and the offline model, a venv in .run/sdk-venv with
# tests/sdk/python/requirements.txt, and tests/sdk/node/node_modules from the
# committed package-lock.json. It then starts the offline model and the gateway
# on free loopback ports, waits for /readyz, runs pytest and `node --test`, and
# stops both servers whatever happens. Exit status: 0 only if both suites pass.
# Server logs: .run/sdk-offline-model.log, .run/sdk-gateway.log.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
run_dir="$root/.run"
mkdir -p "$run_dir"
say() { echo "sdk: $*" >&2; }

# --- tools -----------------------------------------------------------------
codex_bin="$(./scripts/install-codex.sh)"

say "building debug binaries..."
cargo build --quiet -p codex-completions-api -p codex-offline-model
# The default target dir, unless the caller moved it.
bin_dir="${CARGO_TARGET_DIR:-$root/target}/debug"

venv="$run_dir/sdk-venv"
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r tests/sdk/python/requirements.txt

node_dir="$root/tests/sdk/node"
want_openai="$(node -p "require('$node_dir/package.json').dependencies.openai")"
# Reinstall when any pinned package (openai, the Vercel AI SDK) is missing or
# at another version than package.json names.
stale="$(cd "$node_dir" && node -e "
  const deps = require('./package.json').dependencies;
  for (const [name, want] of Object.entries(deps)) {
    let have = '';
    try { have = require('./node_modules/' + name + '/package.json').version } catch {}
    if (have !== want) { console.log(name); break }
  }")"
if [ -n "$stale" ]; then
  say "npm ci in tests/sdk/node ($stale not as pinned)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# --- servers ---------------------------------------------------------------
pids=()
cleanup() {
  local status=$?
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  # Give them a moment to drain (the gateway stops its codex worker), then cut.
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

codex_home="$run_dir/sdk-codex-home"
model_log="$run_dir/sdk-offline-model.log"
gateway_log="$run_dir/sdk-gateway.log"

# The offline model picks its own port (--port 0) and prints it.
"$bin_dir/offline-model" --port 0 --codex-home "$codex_home" >"$model_log" 2>&1 &
pids+=($!)
model_url=""
for _ in $(seq 1 100); do
  model_url="$(sed -n 's/^offline-model listening on \(http[^ ]*\).*/\1/p' "$model_log" | head -n1)"
  [ -n "$model_url" ] && break
  kill -0 "${pids[0]}" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$model_url" ]; then
  say "the offline model did not start:"; cat "$model_log" >&2; exit 1
fi
say "offline model on $model_url"

port="$(free_port)"
api_key="sk-test-key"
# One route with a tight limit, so a test can watch the SDK honour Retry-After.
routes_file="$run_dir/sdk-routes.toml"
cat > "$routes_file" <<'TOML'
[routes."/v1/models/{id}"]
rate_limit_max = 1
rate_limit_window_ms = 2000
TOML
env CODEX_HOME="$codex_home" \
  OFFLINE_MODEL_API_KEY="sk-offline-dummy" \
  CODEX_BIN="$codex_bin" \
  PROXY_API_KEY="$api_key" \
  PROXY_OUTPUT_MODE=openai-json \
  PROXY_CONFIG="$routes_file" \
  PROXY_HOST=127.0.0.1 \
  PORT="$port" \
  PROXY_SHUTDOWN_DRAIN_MS=2000 \
  PROXY_STATE_DIR="$run_dir/state" \
  NO_COLOR=1 \
  "$bin_dir/codex-completions-api" >"$gateway_log" 2>&1 &
pids+=($!)

ready=0
for _ in $(seq 1 300); do
  if python3 - "$port" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1).read()
PY
  then ready=1; break; fi
  kill -0 "${pids[1]}" 2>/dev/null || break
  sleep 0.1
done
if [ "$ready" != 1 ]; then
  say "the gateway did not become ready on port $port:"; tail -n 50 "$gateway_log" >&2; exit 1
fi
say "gateway ready on http://127.0.0.1:$port"

export GATEWAY_BASE_URL="http://127.0.0.1:$port/v1"
export GATEWAY_API_KEY="$api_key"

# --- suites ----------------------------------------------------------------
failed=0
echo "=== Python: openai $("$venv/bin/python" -c 'import openai; print(openai.__version__)'), ollama $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("ollama"))') (pytest) ==="
"$venv/bin/python" -m pytest -p no:cacheprovider -q tests/sdk/python || failed=1

echo "=== Node: openai $want_openai (node --test) ==="
(cd "$node_dir" && node --test --test-reporter=tap openai-sdk.test.mjs ai-sdk.test.mjs) || failed=1

if [ "$failed" != 0 ]; then
  say "FAILED; last lines of $gateway_log:"
  tail -n 30 "$gateway_log" >&2
  exit 1
fi
say "both suites passed"
