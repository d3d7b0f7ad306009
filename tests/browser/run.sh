#!/usr/bin/env bash
# Cross-origin (CORS) test of the gateway in a real headless Chromium.
#
#   tests/browser/run.sh
#
# Needs root with apt (for Debian's chromium, installed here if /usr/bin/chromium
# is missing), node/npm, curl, python3 and cargo. Installs the pinned
# playwright-core (package-lock.json, `npm ci`), builds debug binaries of the
# gateway and the offline model, starts both on free loopback ports the way
# ./scripts/run does (PROXY_API_KEY=sk-browser-test, CODEX_HOME in
# .run/browser-codex-home), then runs cors.mjs: a page served from another
# origin calls the gateway with fetch and node asserts what it could read.
# Screenshot: .run/browser.png. Logs: .run/browser-offline-model.log,
# .run/browser-gateway.log, .run/browser-results.log. Everything started here
# is stopped on exit.
# Closing line: `browser: N passed, M failed`; exit status 0 only if all pass.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
here="$root/tests/browser"
run_dir="$root/.run"
mkdir -p "$run_dir"
say() { echo "browser: $*" >&2; }
fail() { say "$*"; exit 1; }

# --- tools -------------------------------------------------------------------
if [ ! -x /usr/bin/chromium ]; then
  command -v apt-get >/dev/null 2>&1 \
    || fail "/usr/bin/chromium is missing and apt-get is not available to install it"
  [ "$(id -u)" = 0 ] || fail "/usr/bin/chromium is missing and installing it needs root (apt-get)"
  say "installing Debian's chromium (apt-get)..."
  apt-get update -qq >&2 || fail "apt-get update failed; cannot install chromium"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2 \
    || fail "apt-get install chromium failed"
  [ -x /usr/bin/chromium ] || fail "chromium installed but /usr/bin/chromium is not there"
fi
say "$(/usr/bin/chromium --version 2>/dev/null || echo 'chromium (version unknown)')"

for tool in node npm curl python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is required but not installed"
done

want_pw="$(node -p "require('$here/package.json').dependencies['playwright-core']")"
have_pw="$(node -p "try { require('$here/node_modules/playwright-core/package.json').version } catch { '' }")"
if [ "$want_pw" != "$have_pw" ]; then
  say "npm ci in tests/browser (playwright-core $want_pw)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2) || fail "npm ci failed"
fi

codex_bin="$(./scripts/install-codex.sh)"
say "building debug binaries..."
cargo build --quiet -p codex-completions-api -p codex-offline-model
# The default target dir, unless the caller moved it.
bin_dir="${CARGO_TARGET_DIR:-$root/target}/debug"

# --- servers -----------------------------------------------------------------
pids=()
profile_dir="$(mktemp -d "${TMPDIR:-/tmp}/browser-profile.XXXXXX")"
cleanup() {
  local status=$?
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  # Let the gateway drain and stop its codex worker, then cut whatever is left.
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$profile_dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

codex_home="$run_dir/browser-codex-home"
model_log="$run_dir/browser-offline-model.log"
gateway_log="$run_dir/browser-gateway.log"

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
[ -n "$model_url" ] || { cat "$model_log" >&2; fail "the offline model did not start"; }
say "offline model on $model_url"

port="$(free_port)"
env CODEX_HOME="$codex_home" \
  OFFLINE_MODEL_API_KEY="sk-offline-dummy" \
  CODEX_BIN="$codex_bin" \
  PROXY_API_KEY="sk-browser-test" \
  PROXY_HOST=127.0.0.1 \
  PORT="$port" \
  PROXY_SHUTDOWN_DRAIN_MS=2000 \
  NO_COLOR=1 \
  "$bin_dir/codex-completions-api" >"$gateway_log" 2>&1 &
pids+=($!)
ready=0
for _ in $(seq 1 300); do
  if curl -fsS --max-time 1 "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "${pids[1]}" 2>/dev/null || break
  sleep 0.1
done
if [ "$ready" != 1 ]; then
  tail -n 50 "$gateway_log" >&2
  fail "the gateway did not become ready on port $port"
fi
say "gateway ready on http://127.0.0.1:$port"

# --- the browser -------------------------------------------------------------
rm -f "$run_dir/browser.png"
results="$run_dir/browser-results.log"
status=0
GATEWAY_URL="http://127.0.0.1:$port" \
  BROWSER_PROFILE_DIR="$profile_dir" \
  SCREENSHOT="$run_dir/browser.png" \
  node "$here/cors.mjs" >"$results" 2>&1 &
pids+=($!)
wait "${pids[2]}" || status=$?
if [ "$status" != 0 ]; then
  say "FAILED; last lines of $gateway_log:"
  tail -n 30 "$gateway_log" >&2
fi
# The checks' own report last, so its closing line ends the output.
cat "$results"
grep -q '^browser: [0-9]* passed, [0-9]* failed$' "$results" \
  || { say "cors.mjs ended (status $status) without its closing line"; [ "$status" != 0 ] || status=1; }
exit "$status"
