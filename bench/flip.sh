#!/usr/bin/env bash
# Flip-to-effect benchmark (issue: release control): three strangler-proxy replicas under steady
# load, one route flipped between the monolith and its service FLIPS times; for each flip the time
# from "change accepted" to "every replica routes the new way", and every failed request. Two runs
# side by side: the embedded MySQL flag store (poll POLL_MS) and LaunchDarkly's streaming protocol
# served by a local stand-in (the real SDK in each replica). Writes bench/flip-results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strangler/target}"
PATH="$HOME/.cargo/bin:$PATH"
FLIPS="${FLIPS:-100}"
POLL_MS="${POLL_MS:-20}"
OUT="${OUT:-bench/flip-results.md}"
cargo build --release -q -p strangler-proxy --bins --example flip_latency
table=$("$CARGO_TARGET_DIR/release/examples/flip_latency" "$FLIPS" "$POLL_MS")
{
  echo "# Flip-to-effect across 3 proxy replicas"
  echo
  echo "Run by \`bench/flip.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, shared machine; replicas,"
  echo "load loops, probes and MariaDB on the same cores). A flip counts from the moment the change"
  echo "is accepted (the admin API answered, or the LaunchDarkly stand-in sent the patch) until a"
  echo "probe request on every replica is served by the new side. Load: 4 request loops per replica"
  echo "throughout. Goal: p99 <= 100 ms with the embedded store, no failed request."
  echo
  echo "$table"
  echo
  echo "The replica whose admin API took the change applies it before answering; the other two"
  echo "see it on their next poll of the flag table (every $POLL_MS ms), so the embedded store's"
  echo "flip time is bounded by the poll interval plus one query. LaunchDarkly pushes each change"
  echo "down the open streams (LaunchDarkly publishes ~200 ms for its own service, network included)."
} > "$OUT"
cat "$OUT"
