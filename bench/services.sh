#!/usr/bin/env bash
# End-to-end load through strangler-proxy in the mix of Online Boutique's load generator (browse 10,
# cart 3, checkout 1) at fixed rates, on the shop's real size (1M users, 100k products, 2M orders
# by default), on the same stack in one run: every route on the monolith, then users/products/
# orders flipped to their services (after backfilling their tables). For each path and rate:
# p50/p95/p99 per endpoint, and where the CPU went (databases, proxy, services, monolith, load
# generator) with the databases' queries per request. Writes bench/services-results.md.
# Knobs: USERS, PRODUCTS, ORDERS, RATES ("100 300 500"), SECS (30), BUFFER_POOL_MB (sized to data).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strangler/target}"
PATH="$HOME/.cargo/bin:$PATH"
USERS="${USERS:-1000000}"
PRODUCTS="${PRODUCTS:-100000}"
ORDERS="${ORDERS:-2000000}"
RATES="${RATES:-100 300 500}"
SECS="${SECS:-30}"
OUT="${OUT:-bench/services-results.md}"
cargo build --release -q -p legacy-monolith -p testkit -p strangler-proxy -p cdc-sync \
  -p user-service -p product-service -p order-service -p notification-service --bins
cargo build --release -q -p testkit --example shop_load
bin="$CARGO_TARGET_DIR/release"
state=$(mktemp -d)
pool=()
[ -n "${BUFFER_POOL_MB:-}" ] && pool=(--buffer-pool-mb "$BUFFER_POOL_MB")
started=$(date +%s)
"$bin/strangler-dev" --bin-dir "$bin" --state-dir "$state" --monolith-db-port 0 --services-db-port 0 \
  --monolith-port 28080 --proxy-port 28000 --proxy-admin-port 28001 --cdc-port 29500 \
  --users "$USERS" --products "$PRODUCTS" --orders "$ORDERS" "${pool[@]}" >"$state/up.log" 2>&1 &
stack=$!
trap 'kill -TERM $stack 2>/dev/null; wait $stack 2>/dev/null; rm -rf "$state"' EXIT
until grep -q "Press Ctrl-C" "$state/up.log"; do
  kill -0 $stack 2>/dev/null || { cat "$state/up.log"; exit 1; }
  sleep 1
done
up=$(( $(date +%s) - started ))
pool_line=$(grep -m1 "buffer pool" "$state/up.log" || true)
backfill_started=$(date +%s)
for t in shop.users shop.products shop.inventory; do
  "$bin/cdc-sync" backfill --table "$t" --config "$state/cdc-monolith-to-services.toml" >/dev/null 2>&1
done
backfill=$(( $(date +%s) - backfill_started ))

# The processes of each kind, and the servers' ports (for their query counters).
db_port() { sed -n "s|.*\"$1\":\"mysql://[^@]*@127.0.0.1:\([0-9]*\).*|\1|p" "$state/stack.json"; }
ports="$(db_port monolith_db) $(db_port services_db)"
pids_of() {
  case "$1" in
    databases) for p in $ports; do pgrep -f -- "^[^ ]*mariadbd .*--port=$p( |\$)" || true; done ;;
    proxy) cat "$state/strangler-proxy.pid" ;;
    services) cat "$state"/{user,product,order,notification}-service.pid ;;
    monolith) cat "$state/legacy-monolith.pid" ;;
    cdc-sync) cat "$state"/cdc-*.pid ;;
  esac
}
ticks() { # CPU ticks (1/100 s) used so far by the given pids
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$(( t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat") ))
  done
  echo "$t"
}
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
questions() {
  local q=0 p
  for p in $ports; do
    q=$(( q + $(mariadb -h 127.0.0.1 -P "$p" -u root -N -e "SHOW GLOBAL STATUS LIKE 'Questions'" | awk '{print $2}') ))
  done
  echo "$q"
}
kinds="databases proxy services monolith cdc-sync"
cores=$(nproc)

# One run: the latency table into $1.md and one row of the CPU table into $1.cpu.
run() {
  local name=$1 rate=$2 k before=() after=() q0 q1 b0 b1 load_ticks
  for k in $kinds; do before+=("$(ticks $(pids_of "$k"))"); done
  q0=$(questions); b0=$(busy_ticks)
  # `times` in the subshell: the load generator's own CPU (its second line, the children's).
  ( "$bin/examples/shop_load" http://127.0.0.1:28000 "$rate" "$SECS" "$PRODUCTS" >"$state/$name.md"
    times >"$state/$name.times" )
  load_ticks=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%d", t * 100 }' "$state/$name.times")
  b1=$(busy_ticks); q1=$(questions)
  for k in $kinds; do after+=("$(ticks $(pids_of "$k"))"); done
  local row="| $name | $rate" i=0 span=$(( SECS * 100 * cores ))
  for k in $kinds; do
    row+=" | $(awk -v d=$(( after[i] - before[i] )) -v s="$span" 'BEGIN{printf "%.0f%%", 100*d/s}')"
    i=$(( i + 1 ))
  done
  local requests=$(( rate * SECS ))
  row+=" | $(awk -v d="$load_ticks" -v s="$span" 'BEGIN{printf "%.0f%%", 100*d/s}')"
  row+=" | $(awk -v d=$(( b1 - b0 )) -v s="$span" 'BEGIN{printf "%.0f%%", 100*d/s}')"
  row+=" | $(awk -v q=$(( q1 - q0 )) -v r="$requests" 'BEGIN{printf "%.1f", q/r}') |"
  echo "$row" >"$state/$name.cpu"
}

for rate in $RATES; do
  echo "monolith path at $rate req/s…" >&2
  run "monolith-$rate" "$rate"
done
for route in users.login products.list orders.list; do
  "$bin/stranglerctl" --url http://127.0.0.1:28001 flag set "$route" --mode service --reason "services benchmark" >/dev/null
done
sleep 2
for rate in $RATES; do
  echo "services path at $rate req/s…" >&2
  run "services-$rate" "$rate"
done

{
  echo "<!-- written by bench/services.sh; replace by running it again -->"
  echo
  echo "# Shop load through strangler-proxy at the shop's size"
  echo
  echo "Run: \`bash bench/services.sh\` with USERS=$USERS PRODUCTS=$PRODUCTS ORDERS=$ORDERS, RATES=\"$RATES\","
  echo "SECS=$SECS per run (open loop; latency counts from when each request was due, 10 s client"
  echo "timeout). Mix as Online Boutique's load generator: browse 10 (catalog pages, searches, product"
  echo "pages), cart 3 (stock checks), checkout 1 (a paid order, \`tok_visa\`); product pages, stock"
  echo "checks and orders spread over the whole catalog. The whole stack of \`./dev up\` on this machine"
  echo "(two MariaDB servers, monolith, four services, cdc-sync both ways, proxy, gateway simulator),"
  echo "load generator on the same cores. Stack up and seeded in ${up} s; users and catalog backfilled"
  echo "to the services in ${backfill} s. ${pool_line#starting MariaDB servers }"
  echo
  for path in monolith services; do
    if [ "$path" = monolith ]; then
      echo "## Every route on the monolith"
    else
      echo "## users, products and orders routed to their services"
    fi
    for rate in $RATES; do
      echo
      echo "### $rate req/s"
      echo
      cat "$state/$path-$rate.md"
    done
    echo
  done
  echo "## Where the CPU went"
  echo
  echo "Share of the machine's $cores cores over each run, per kind of process (from /proc), and the"
  echo "statements both database servers ran per request (\`SHOW GLOBAL STATUS\` Questions)."
  echo
  echo "| run | req/s | databases | proxy | services | monolith | cdc-sync | load generator | machine busy | queries / request |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for path in monolith services; do
    for rate in $RATES; do cat "$state/$path-$rate.cpu"; done
  done
  echo
  printf 'Business target: p95 < 200 ms end to end at 500 req/s.\n\nMachine: %s cores, %s; run %s.\n' \
    "$cores" "$(uname -r)" "$(date -u +%Y-%m-%dT%H:%MZ)"
} >"$OUT"
echo "wrote $OUT"
