#!/usr/bin/env bash
# Installs the pinned Codex CLI (version in ./CODEX_VERSION) from npm into
# ./.tools/codex, and prints the path of its native binary. Idempotent: a
# matching install is reused. The npm package ships the Linux binary inside
# an optional dependency; we run that binary directly, never the node wrapper
# (the wrapper adds ~60 ms start-up and an extra process to supervise).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(tr -d '[:space:]' < "$root/CODEX_VERSION")"
prefix="${CODEX_INSTALL_DIR:-$root/.tools/codex}"

case "$(uname -m)" in
  x86_64) triple=x86_64-unknown-linux-musl; pkg=codex-linux-x64 ;;
  aarch64) triple=aarch64-unknown-linux-musl; pkg=codex-linux-arm64 ;;
  *) echo "install-codex: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
bin="$prefix/node_modules/@openai/$pkg/vendor/$triple/bin/codex"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "$bin"
  exit 0
fi

mkdir -p "$prefix"
echo "install-codex: installing @openai/codex@$version into $prefix" >&2
# --no-save/--no-package-lock keep the install self-contained; --include=optional
# because the platform binary is an optional dependency.
npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund \
  --include=optional "@openai/codex@$version" >&2
if [ ! -x "$bin" ]; then
  echo "install-codex: native binary not found at $bin" >&2
  exit 1
fi
"$bin" --version >&2
echo "$bin"
