#!/usr/bin/env bash
# End-to-end load through strangler-proxy in the mix of Online Boutique's load generator (browse 10,
# cart 3, checkout 1) at a fixed rate, twice in one run on the same stack: every route on the
# monolith, then users/products/orders flipped to their services (after backfilling their tables).
# Writes bench/services-results.md. Knobs: RATE (500 req/s), SECS (30).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strangler/target}"
PATH="$HOME/.cargo/bin:$PATH"
RATE="${RATE:-500}"
SECS="${SECS:-30}"
OUT="${OUT:-bench/services-results.md}"
cargo build --release -q -p legacy-monolith -p testkit -p strangler-proxy -p cdc-sync \
  -p user-service -p product-service -p order-service -p notification-service --bins
cargo build --release -q -p testkit --example shop_load
bin="$CARGO_TARGET_DIR/release"
state=$(mktemp -d)
"$bin/strangler-dev" --bin-dir "$bin" --state-dir "$state" --monolith-db-port 0 --services-db-port 0 \
  --monolith-port 28080 --proxy-port 28000 --proxy-admin-port 28001 --cdc-port 29500 >"$state/up.log" 2>&1 &
stack=$!
trap 'kill -TERM $stack 2>/dev/null; wait $stack 2>/dev/null; rm -rf "$state"' EXIT
for _ in $(seq 600); do
  grep -q "Press Ctrl-C" "$state/up.log" && break
  kill -0 $stack 2>/dev/null || { cat "$state/up.log"; exit 1; }
  sleep 0.5
done
for t in shop.users shop.products shop.inventory; do
  "$bin/cdc-sync" backfill --table "$t" --config "$state/cdc-monolith-to-services.toml" >/dev/null 2>&1
done
echo "monolith mode…" >&2
"$bin/examples/shop_load" http://127.0.0.1:28000 "$RATE" "$SECS" >"$state/monolith.md"
for route in users.login products.list orders.list; do
  "$bin/stranglerctl" --url http://127.0.0.1:28001 flag set "$route" --mode service --reason "services benchmark" >/dev/null
done
sleep 2
echo "service mode…" >&2
"$bin/examples/shop_load" http://127.0.0.1:28000 "$RATE" "$SECS" >"$state/services.md"
{
  echo "# Shop load through strangler-proxy"
  echo
  echo "Run: \`bash bench/services.sh\` (RATE=$RATE req/s for $SECS s each, open loop; latency from when each"
  echo "request was due). Mix as Online Boutique's load generator: browse 10 (catalog pages, searches, product"
  echo "pages), cart 3 (stock checks), checkout 1 (a paid order, \`tok_visa\`). Same stack, same run: the"
  echo "whole stack of \`./dev up\` on this machine (two MariaDB servers, monolith, four services, cdc-sync,"
  echo "proxy, gateway simulator), load generator on the same 2 cores."
  echo
  echo "## Every route on the monolith"
  echo
  cat "$state/monolith.md"
  echo
  echo "## users, products and orders routed to their services"
  echo
  cat "$state/services.md"
  echo
  printf 'Business target: p95 < 200 ms end to end at 500 req/s.\n\nMachine: %s cores, %s; run %s.\n' \
    "$(nproc)" "$(uname -r)" "$(date -u +%Y-%m-%dT%H:%MZ)"
} >"$OUT"
echo "wrote $OUT"
