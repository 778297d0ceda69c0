#!/usr/bin/env bash
# The full migration drill: the dev stack (release build) seeded with USERS users and ORDERS
# orders, then strangler-drill moves `users` and then `orders` from the monolith through every
# phase to service-primary and back, under load, killing cdc-sync and each domain's service once.
# Writes bench/drill-results.md (the pause of each switch, writes held, time per phase, checks).
#   bench/drill.sh                         # 1M users, 2M orders
#   USERS=10000 ORDERS=20000 bench/drill.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strangler/target}"
USERS="${USERS:-1000000}"
ORDERS="${ORDERS:-2000000}"
WORKERS="${WORKERS:-8}"
DWELL="${DWELL:-10}"
OUT="${OUT:-bench/drill-results.md}"
work=$(mktemp -d)
state="$work/stack"

./dev up --state-dir "$state" --users "$USERS" --orders "$ORDERS" \
  --monolith-db-port 0 --services-db-port 0 --monolith-port 38080 --proxy-port 38000 \
  --proxy-admin-port 38001 --cdc-port 39500 >"$work/dev.log" 2>&1 &
stack=$!
trap 'kill -TERM $stack 2>/dev/null; wait $stack 2>/dev/null; rm -rf "$work"' EXIT
started=$(date +%s)
until [ -f "$state/stack.json" ]; do
  if ! kill -0 "$stack" 2>/dev/null; then
    cat "$work/dev.log" >&2
    tail -n 20 "$state"/logs/*.log >&2 2>/dev/null || true
    echo "the stack did not start" >&2
    exit 1
  fi
  if [ $(( $(date +%s) - started )) -gt 3600 ]; then echo "the stack was not up within an hour" >&2; exit 1; fi
  sleep 5
done
up=$(( $(date +%s) - started ))

status=0
"$CARGO_TARGET_DIR/release/strangler-drill" --stack "$state" --domain users --domain orders \
  --workers "$WORKERS" --dwell-secs "$DWELL" --gate-timeout-secs 600 --report "$work/report.md" || status=$?
if [ ! -f "$work/report.md" ]; then
  echo "the drill wrote no report (exit $status); $OUT is left as it was" >&2
  exit "$status"
fi
{
  echo "<!-- written by bench/drill.sh; replace by running it again -->"
  echo
  sed -n '1,2p' "$work/report.md"
  echo "Machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), release build;"
  echo "stack up (seeded, every process ready) in ${up} s. \`bench/drill.sh\` with USERS=$USERS ORDERS=$ORDERS"
  echo "WORKERS=$WORKERS DWELL=$DWELL; drill exit status $status."
  echo
  sed -n '3,$p' "$work/report.md"
} >"$OUT"
cat "$OUT"
exit "$status"
