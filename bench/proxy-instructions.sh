#!/usr/bin/env bash
# CPU instructions per proxied request, counted by valgrind's callgrind: strangler-proxy (the
# same canary route as bench/proxy.sh, also with header case preserved) vs bare Pingora, with
# and without mimalloc. Instruction counts do not depend on what else the machine is doing, so
# the ratio is repeatable where req/s is not. Each proxy is warmed up, its counters zeroed,
# then N requests (oha, 8 connections, keep-alive) are counted across all its threads.
# Writes bench/proxy-instructions.md. Knobs: N (4000 requests).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strangler/target}"
PATH="$HOME/.cargo/bin:$PATH"
N="${N:-4000}"
OUT="${OUT:-bench/proxy-instructions.md}"

command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
command -v nginx >/dev/null || apt-get install -y -qq nginx >/dev/null
command -v oha >/dev/null || cargo install oha --locked
cargo build --release -q -p strangler-proxy --bins --example bare_pingora --example bare_pingora_mimalloc
REL="$CARGO_TARGET_DIR/release"

UP=19300; STR=19301; STRADM=19302; BARE=19303; BAREMI=19304
SERVER=""
. bench/proxy-common.sh
ports_free $UP $STR $STRADM $BARE $BAREMI
start_upstream
write_flags
write_config 0

# count NAME PORT CMD…: instructions per request of the proxy CMD listening on PORT.
declare -A IPR
count() {
  local name=$1 port=$2
  shift 2
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/$name.cg" "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_port "$port"
  oha --no-tui -n 300 -c 8 -H "x-user-id: u1" "http://127.0.0.1:$port/bench" >/dev/null 2>&1
  callgrind_control --zero "$pid" >/dev/null
  oha --no-tui -n "$N" -c 8 -H "x-user-id: u1" "http://127.0.0.1:$port/bench" >"$work/$name.oha" 2>&1
  grep -q "\[200\] $N responses" "$work/$name.oha" || { echo "$name: not all $N requests answered 200" >&2; cat "$work/$name.oha" >&2; exit 1; }
  callgrind_control --dump=requests "$pid" >/dev/null
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true # its ports are free before the next proxy starts
  local dump
  dump=$(ls "$work/$name.cg".* | head -1)
  callgrind_annotate --inclusive=no --threshold=100 "$dump" 2>/dev/null |
    grep -E '^ *[0-9,]+ ' | sed -E 's/ \[[^]]*\]$//' >"$work/$name.self"
  IPR[$name]=$(awk 'NR==1 {gsub(",","",$1); printf "%.0f", $1 / '"$N"'}' "$work/$name.self")
  echo "$name: ${IPR[$name]} instructions/request" >&2
}
count strangler "$STR" "$REL/strangler-proxy" --config "$work/proxy.toml"
# The same with header names kept in their original case (Pingora's one-at-a-time path).
{ echo "preserve_header_case = true"; cat "$work/proxy.toml"; } >"$work/proxy-case.toml"
count strangler_preserve_case "$STR" "$REL/strangler-proxy" --config "$work/proxy-case.toml"
count bare_pingora "$BARE" "$REL/examples/bare_pingora" "127.0.0.1:$BARE" "127.0.0.1:$UP" 1
count bare_pingora_mimalloc "$BAREMI" "$REL/examples/bare_pingora_mimalloc" "127.0.0.1:$BAREMI" "127.0.0.1:$UP" 1

{
  echo "# strangler-proxy: instructions per request"
  echo
  echo "Run: \`bash bench/proxy-instructions.sh\` ($N requests after 300 to warm up; oha, 8 connections;"
  echo "callgrind counts every thread of the proxy process). Machine: $(nproc) cores, $(date -u +%F)."
  echo "Same canary route, flags and upstream (nginx, 33-byte JSON) as \`bench/proxy.sh\`."
  echo
  echo "| proxy | instructions/request | bare Pingora ÷ proxy | bare Pingora with mimalloc ÷ proxy |"
  echo "|---|---:|---:|---:|"
  for t in strangler strangler_preserve_case bare_pingora bare_pingora_mimalloc; do
    echo "| $t | ${IPR[$t]} | $(python3 -c "print('%.2f' % (${IPR[bare_pingora]}/${IPR[$t]}))") | $(python3 -c "print('%.2f' % (${IPR[bare_pingora_mimalloc]}/${IPR[$t]}))") |"
  done
  echo
  echo "Where strangler-proxy spends more than bare Pingora with mimalloc (self instructions per request,"
  echo "the 20 largest differences):"
  echo
  echo '```'
  python3 - "$work/strangler.self" "$work/bare_pingora_mimalloc.self" "$N" <<'PY'
import re, sys
def load(f):
    d = {}
    for line in open(f):
        m = re.match(r'\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)', line)
        if m:
            d[m.group(2)] = int(m.group(1).replace(',', ''))
    return d
s, b, n = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
total = s.get('PROGRAM TOTALS', 0)
# Functions that only contain the whole run (thread start, runtime loop) are not costs.
rows = [(s.get(k, 0) - b.get(k, 0), k) for k in set(s) | set(b) if s.get(k, 0) < total * 0.9]
for d, k in sorted(rows, reverse=True)[:20]:
    print("%+7.0f  %s" % (d / n, k[:120]))
PY
  echo '```'
} >"$OUT"
echo "wrote $OUT" >&2
