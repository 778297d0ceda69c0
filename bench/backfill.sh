#!/usr/bin/env bash
# Backfill and verify benchmark, side by side in one run on private MariaDB servers:
# `cdc-sync backfill` (through a running stream) vs `mysqldump --single-transaction | mysql`
# for `shop.users` seeded by `legacy-monolith seed`, then `cdc-sync verify` of the copy.
# Writes bench/backfill-results.md. Knob: USERS (2000000 rows, ~0.5 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strangler/target}"
PATH="$HOME/.cargo/bin:$PATH"
OUT="${OUT:-bench/backfill-results.md}"
command -v mysqldump >/dev/null || apt-get install -y -qq mariadb-client >/dev/null
cargo build --release -q -p legacy-monolith -p cdc-sync --bins --example backfill_bench
tmp=$(mktemp)
BIN_DIR="$CARGO_TARGET_DIR/release" "$CARGO_TARGET_DIR/release/examples/backfill_bench" "${USERS:-2000000}" | tee "$tmp"
{
  cat "$tmp"
  printf '\nMachine: %s cores, %s; run %s with `bench/backfill.sh` (USERS=%s).\n' \
    "$(nproc)" "$(uname -r)" "$(date -u +%Y-%m-%dT%H:%MZ)" "${USERS:-2000000}"
} >"$OUT"
rm -f "$tmp"
echo "wrote $OUT"
