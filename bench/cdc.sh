#!/usr/bin/env bash
# cdc-sync benchmark, side by side in one run on private MariaDB servers:
#  1. apply rate for a binlog backlog of single-row and 100-row transactions: direct transport,
#     Kafka transport (tansu broker), and a native MariaDB replica of the same source (baseline);
#  2. replication lag (age of the newest row on the target) under paced single-row writes.
# Writes bench/cdc-results.md. Knobs: SINGLE (100000 rows), BATCHED (100000 rows),
# LAG_SECONDS (60), RATE (2000 writes/s), NO_KAFKA=1 to skip the Kafka transport.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strangler/target}"
PATH="$HOME/.cargo/bin:$PATH"
OUT="${OUT:-bench/cdc-results.md}"
args=(--single "${SINGLE:-100000}" --batched "${BATCHED:-100000}" --lag-seconds "${LAG_SECONDS:-60}" --rate "${RATE:-2000}")
[ -n "${NO_KAFKA:-}" ] && args+=(--no-kafka)
if [ -z "${NO_KAFKA:-}" ] && ! command -v tansu >/dev/null; then
  cargo install tansu --locked --features dynostore,postgres
fi
cargo build --release -q -p cdc-sync --example cdc_bench
tmp=$(mktemp)
"$CARGO_TARGET_DIR/release/examples/cdc_bench" "${args[@]}" | tee "$tmp"
{
  cat "$tmp"
  printf '\nMachine: %s cores, %s; run %s with `bench/cdc.sh` (%s).\n' \
    "$(nproc)" "$(uname -r)" "$(date -u +%Y-%m-%dT%H:%MZ)" "${args[*]}"
} >"$OUT"
rm -f "$tmp"
echo "wrote $OUT"
