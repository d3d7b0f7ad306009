#!/usr/bin/env bash
# Checks the protocol bindings' schema slice against the pinned Codex CLI.
#
#   ./scripts/check-protocol.sh            # exit 0: no drift; exit 1: drift, diff on stdout
#   ./scripts/check-protocol.sh --update   # rewrite fixtures/protocol/schema-subset.json
#
# Regenerates the app-server JSON schema from the binary pinned in CODEX_VERSION
# (installed by scripts/install-codex.sh, or $CODEX_BIN if set) into a temp dir,
# cuts the definitions src/protocol binds (fixtures/protocol/schema_subset.py
# lists the methods) and compares with the committed fixture. The fixture is
# what tests/protocol_schema.rs checks the Rust types against, so after a pin
# bump: run with --update, then `cargo test --test protocol_schema`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fixture="$root/fixtures/protocol/schema-subset.json"
subset="$root/fixtures/protocol/schema_subset.py"

update=0
case "${1:-}" in
  "") ;;
  --update) update=1 ;;
  -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
  *) echo "check-protocol: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac

version="$(tr -d '[:space:]' < "$root/CODEX_VERSION")"
bin="${CODEX_BIN:-$("$root/scripts/install-codex.sh")}"
# The schema must come from the pinned binary, not whatever CODEX_BIN points at.
if ! "$bin" --version | grep -qF "$version"; then
  echo "check-protocol: $bin is not codex $version ($("$bin" --version))" >&2
  exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin" app-server generate-json-schema --experimental --out "$tmp/schema" >/dev/null
python3 "$subset" extract "$tmp/schema" "$version" > "$tmp/schema-subset.json"

if [ "$update" = 1 ]; then
  cp "$tmp/schema-subset.json" "$fixture"
  echo "check-protocol: wrote $fixture (codex $version)" >&2
  exit 0
fi
if [ ! -f "$fixture" ]; then
  echo "check-protocol: $fixture is missing; run with --update" >&2
  exit 1
fi
if python3 "$subset" compare "$fixture" "$tmp/schema-subset.json"; then
  echo "check-protocol: schema subset matches codex $version" >&2
else
  echo >&2
  echo "check-protocol: drift. Review the diff, fix src/protocol if a bound type changed," >&2
  echo "then run ./scripts/check-protocol.sh --update and cargo test --test protocol_schema." >&2
  exit 1
fi
