#!/usr/bin/env bash
# Proxy benchmark, everything side by side in one run on loopback against the same upstream:
#  1. added latency at a fixed request rate, open loop: oha -q with latency correction, then our
#     paced_load (Poisson arrivals timed by spinning, servers at real-time priority):
#     direct vs strangler-proxy vs bare Pingora vs nginx vs haproxy;
#  2. saturated throughput with one worker thread each (wrk), one target at a time, then
#     strangler-proxy head to head with bare Pingora (both loaded at the same time);
#  3. flag evaluation cost with 1,000 flags (criterion);
#  4. 100 config reloads during sustained load: failed requests.
# Writes bench/proxy-results.md. Knobs: RATE (5000), DURATION (10 s), CONNS (64), ROUNDS (5
# saturated rounds), LAT_ROUNDS (5 fixed-rate rounds of each generator), H2H_ROUNDS (5
# head-to-head rounds), ARRIVALS (poisson or even, for paced_load), PACED_RT (1: the servers run
# SCHED_FIFO during the paced rounds; 0: no change of priority).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strangler/target}"
PATH="$HOME/.cargo/bin:$PATH"
RATE="${RATE:-5000}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-64}"
OUT="${OUT:-bench/proxy-results.md}"

for tool in wrk nginx haproxy; do
  command -v "$tool" >/dev/null || { apt-get install -y -qq wrk nginx haproxy >/dev/null; break; }
done
command -v oha >/dev/null || cargo install oha --locked
cargo build --release -q -p strangler-proxy --bins --example bare_pingora --example bare_pingora_mimalloc --example paced_load
REL="$CARGO_TARGET_DIR/release"

# With two or more cores, load generators run on CPU 0 and every server on CPU 1, so the
# measured process competes with the same neighbours in every case.
if [ "$(nproc)" -ge 2 ]; then LOADGEN="taskset -c 0"; SERVER="taskset -c 1"; else LOADGEN=""; SERVER=""; fi

UP=19100; STR=19101; STRADM=19102; BARE=19103; NGX=19104; HAP=19105; BAREMI=19106
. bench/proxy-common.sh
ports_free $UP $STR $STRADM $BARE $NGX $HAP $BAREMI
start_upstream
mkdir -p "$work/ngx"
# nginx as a plain reverse proxy, one worker, keep-alive to the upstream.
cat >"$work/ngx/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $work/ngx/nginx.pid; error_log $work/ngx/error.log;
events { worker_connections 4096; }
http { access_log off; upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
$SERVER nginx -c "$work/ngx/nginx.conf" -p "$work/ngx" & pids+=($!)
declare -A PID=([nginx]=$!)
# haproxy, one thread.
cat >"$work/haproxy.cfg" <<HAP
global
  nbthread 1
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind 127.0.0.1:$HAP
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$UP
HAP
$SERVER haproxy -f "$work/haproxy.cfg" -db & pids+=($!)
PID[haproxy]=$!
# Bare Pingora: fixed peer, one thread.
$SERVER "$REL/examples/bare_pingora" "127.0.0.1:$BARE" "127.0.0.1:$UP" 1 >"$work/bare.log" 2>&1 & pids+=($!)
PID[bare_pingora]=$!
# The same with mimalloc, the allocator strangler-proxy ships with.
$SERVER "$REL/examples/bare_pingora_mimalloc" "127.0.0.1:$BAREMI" "127.0.0.1:$UP" 1 >"$work/baremi.log" 2>&1 & pids+=($!)
PID[bare_pingora_mimalloc]=$!
write_flags
write_config 0
RUST_LOG=warn $SERVER "$REL/strangler-proxy" --config "$work/proxy.toml" >"$work/proxy.log" 2>&1 & pids+=($!)
STRANGLER_PID=$!
PID[strangler]=$!
for p in $UP $NGX $HAP $BARE $BAREMI $STR $STRADM; do wait_port "$p"; done
sleep 1

# oha JSON → "p50_ms p99_ms success_rate requests"
oha_run() {
  $LOADGEN oha --no-tui --output-format json -z "${DURATION}s" -q "$RATE" -c 50 --latency-correction "$@" 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; s=d["summary"]
print("%.3f %.3f %.4f %d" % (p["p50"]*1000, p["p99"]*1000, s["successRate"], sum(d.get("statusCodeDistribution",{}).values())))'
}
# One saturated wrk run against a URL (its report on stdout), and the requests a report counts.
wrk_load() { $LOADGEN wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "x-user-id: u1" "$1"; }
answered() { awk '/requests in/ {print $1}' <<<"$1"; }
# CPU ticks (user + system) of a process and its children (nginx's worker).
ticks() { local t=0 p; for p in $1 $(pgrep -P "$1" || true); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
# µs of CPU per request from two tick readings and a request count.
cpu_per_request() { python3 -c "import sys; print('%.1f' % ((int(sys.argv[2]) - int(sys.argv[1])) / $(getconf CLK_TCK) * 1e6 / max(int(sys.argv[3]), 1)))" "$@"; }
# "req/s cpu-µs-per-request" of one saturated wrk run against target $1.
wrk_cpu() {
  local pid=${PID[$1]:-} before out rps n
  [ -n "$pid" ] && before=$(ticks "$pid")
  out=$(wrk_load "${URL[$1]}")
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  n=$(answered "$out")
  echo "$rps $([ -n "$pid" ] && cpu_per_request "$before" "$(ticks "$pid")" "$n" || echo -)"
}

declare -A URL=(
  [direct]="http://127.0.0.1:$UP/bench"
  [strangler]="http://127.0.0.1:$STR/bench"
  [bare_pingora]="http://127.0.0.1:$BARE/bench"
  [bare_pingora_mimalloc]="http://127.0.0.1:$BAREMI/bench"
  [nginx]="http://127.0.0.1:$NGX/bench"
  [haproxy]="http://127.0.0.1:$HAP/bench"
)
order=(direct strangler bare_pingora bare_pingora_mimalloc nginx haproxy)
declare -A LAT RPS P99S LCPUS
# Latency rounds interleave the targets too: one run's p99 is at the mercy of a neighbour's burst.
# The proxy's CPU time per request at this rate is taken too: at a fixed rate the tail follows it
# (oha releases its requests in bursts, one per timer tick, and a burst waits for the CPU).
LAT_ROUNDS="${LAT_ROUNDS:-5}"
# One fixed-rate round against target $1: runs the generator command "${@:2}" with the target's
# URL appended; prints its output (answered requests in the 4th field) and the target's CPU
# µs per request last.
fixed_rate_round() {
  local t=$1 pid=${PID[$1]:-} before="" out cpu="-"
  shift
  [ -n "$pid" ] && before=$(ticks "$pid")
  out=$("$@" "${URL[$t]}")
  [ -n "$pid" ] && cpu=$(cpu_per_request "$before" "$(ticks "$pid")" "$(awk '{print $4}' <<<"$out")")
  echo "$out $cpu"
}
for r in $(seq 1 "$LAT_ROUNDS"); do
  for t in "${order[@]}"; do
    [ -n "${PROFILE:-}" ] && break 2
    echo "latency at $RATE req/s, round $r: $t" >&2
    read -r p50 p99 ok _ cpu <<<"$(fixed_rate_round "$t" oha_run -H "x-user-id: u1")"
    LAT[$t]="${LAT[$t]:-} $p50/$p99/$ok"
    P99S[$t]="${P99S[$t]:-} $p99"
    LCPUS[$t]="${LCPUS[$t]:-} $cpu"
  done
done
# The same rate again from paced_load: arrivals at random (Poisson) or evenly spaced, released by
# a generator spinning on the clock rather than in oha's bursts of ~5 per 1 ms timer tick, with
# the generator's own stalls kept out of the latency. Every server runs at real-time priority
# (SCHED_FIFO 1, all threads, nginx workers too) meanwhile, so that the VM's other processes
# (container daemons, message brokers, kernel threads) do not preempt it; the host's own
# preemption of the VM remains. oha's table above keeps the normal priority of earlier readings.
ARRIVALS="${ARRIVALS:-poisson}"
PACED_RT="${PACED_RT:-1}"
# set_server_policy POLICY PRIORITY: chrt's policy flag (-f or -o) for every server and its children.
set_server_policy() {
  [ "$PACED_RT" = 1 ] || return 0
  local p
  for p in "${pids[@]}" $(for p in "${pids[@]}"; do pgrep -P "$p" || true; done); do
    chrt -a "$1" -p "$2" "$p"
  done
}
# paced_load at the bench's rate; prints "p50 p99 success answered p99.9 max generator-late".
paced_run() {
  nice -n -20 $LOADGEN "$REL/examples/paced_load" --arrivals "$ARRIVALS" -q "$RATE" -z "$DURATION" \
    -c 50 -H "x-user-id: u1" "$@"
}
declare -A PLAT PP99S PCPUS PLATE PP999
set_server_policy -f 1
for r in $(seq 1 "$LAT_ROUNDS"); do
  for t in "${order[@]}"; do
    [ -n "${PROFILE:-}" ] && break 2
    echo "paced latency at $RATE req/s, round $r: $t" >&2
    read -r p50 p99 ok _ p999 _ late cpu <<<"$(fixed_rate_round "$t" paced_run)"
    PLAT[$t]="${PLAT[$t]:-} $p50/$p99/$ok"
    PP99S[$t]="${PP99S[$t]:-} $p99"
    PP999[$t]="${PP999[$t]:-} $p999"
    PLATE[$t]="${PLATE[$t]:-} $late"
    PCPUS[$t]="${PCPUS[$t]:-} $cpu"
  done
done
set_server_policy -o 0
# "median-p50 median-p99 lowest-success" of a target's rounds.
lat_summary() {
  python3 -c 'import statistics,sys
r=[x.split("/") for x in sys.argv[1:]]
print("%.3f %.3f %.4f" % (statistics.median(float(a) for a,_,_ in r), statistics.median(float(b) for _,b,_ in r), min(float(c) for _,_,c in r)))' $1
}
if [ -n "${PROFILE:-}" ]; then
  # PROFILE=file: a CPU profile of strangler-proxy at saturation instead of the full run.
  perf record -F 999 -g -o "$PROFILE" -p "$STRANGLER_PID" -- sleep "$DURATION" >/dev/null 2>&1 &
  perf_pid=$!
  wrk_load "${URL[strangler]}" >/dev/null
  wait "$perf_pid"
  exit 0
fi
# Rounds interleave the targets so a noisy neighbour hurts all of them alike; the median counts.
ROUNDS="${ROUNDS:-5}"
declare -A ALL CPUS CPU
for r in $(seq 1 "$ROUNDS"); do
  for t in "${order[@]}"; do
    echo "saturated throughput, round $r: $t" >&2
    read -r rps cpu <<<"$(wrk_cpu "$t")"
    ALL[$t]="${ALL[$t]:-} $rps"
    CPUS[$t]="${CPUS[$t]:-} $cpu"
  done
done
median3() { python3 -c "import statistics,sys; print('%.3f' % statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
median() { python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:] if x != '-']; print(('%.1f' % statistics.median(v)) if v else '-')" "$@"; }
for t in "${order[@]}"; do
  RPS[$t]=$(median ${ALL[$t]} | cut -d. -f1)
  CPU[$t]=$(median ${CPUS[$t]})
done

# Head to head: strangler-proxy and one baseline saturated at the same time, each by its own
# wrk, both on the servers' CPU. The scheduler gives the two processes the same CPU time, so
# the ratio of the requests they answer is the inverse ratio of their costs per request, and a
# slow spell of a shared machine (which makes one-at-a-time rounds swing by ±20 %) weighs on
# both at once. "strangler-requests other-requests strangler-cpu-µs other-cpu-µs" of a round.
h2h_round() {
  local o=$1 s0 o0 w1 w2 ns no
  s0=$(ticks "${PID[strangler]}"); o0=$(ticks "${PID[$o]}")
  wrk_load "${URL[strangler]}" >"$work/h2h-s.out" &
  w1=$!
  wrk_load "${URL[$o]}" >"$work/h2h-o.out" &
  w2=$!
  wait "$w1" "$w2"
  ns=$(answered "$(cat "$work/h2h-s.out")"); no=$(answered "$(cat "$work/h2h-o.out")")
  echo "$ns $no $(cpu_per_request "$s0" "$(ticks "${PID[strangler]}")" "$ns") $(cpu_per_request "$o0" "$(ticks "${PID[$o]}")" "$no")"
}
H2H_ROUNDS="${H2H_ROUNDS:-5}"
h2h_pairs=(bare_pingora bare_pingora_mimalloc)
declare -A H2H
for r in $(seq 1 "$H2H_ROUNDS"); do
  for o in "${h2h_pairs[@]}"; do
    echo "head to head, round $r: strangler and $o" >&2
    H2H[$o]="${H2H[$o]:-} $(h2h_round "$o" | tr ' ' /)"
  done
done

# 100 config rewrites under load, each applied at once through the admin API; the file watcher
# (its default 500 ms interval, as deployed) reloads many of them on its own as well.
echo "100 reloads under load" >&2
$LOADGEN oha --no-tui --output-format json -z 25s -q 2000 -c 32 -H "x-user-id: u1" "${URL[strangler]}" >"$work/reload.json" 2>/dev/null &
load=$!
sleep 1
for i in $(seq 1 100); do
  write_config "$i"
  curl -s -o /dev/null -X POST "http://127.0.0.1:$STRADM/admin/reload"
  sleep 0.2
done
wait "$load"
RELOAD=$(python3 -c 'import json; d=json.load(open("'"$work/reload.json"'")); c=d.get("statusCodeDistribution",{}); e=d.get("errorDistribution",{})
# Requests oha cut at its own deadline were in flight, not failed: counted apart.
ok=c.get("200",0); cut=sum(v for k,v in e.items() if "deadline" in k)
print(ok, sum(c.values())-ok+sum(e.values())-cut, cut, json.dumps(e).replace(" ", "_"))')
VERSION=$(curl -s "http://127.0.0.1:$STRADM/metrics" | awk '/^strangler_config_version/ {print $2}')

echo "flag evaluation (criterion)" >&2
CRIT=$(cargo bench -q -p flags --bench evaluate 2>/dev/null | awk '/^evaluate/ {name=$0} /time:/ {gsub(/\[|\]/,""); print name ": " $4 " " $5}')

ratio() { python3 -c "print('%.2f' % ($1/$2))"; }
read -r d50 d99 _ <<<"$(lat_summary "${LAT[direct]}")"
{
  echo "# strangler-proxy benchmark results"
  echo
  echo "Run: \`bash bench/proxy.sh\` (RATE=$RATE req/s, ${DURATION} s per measurement, wrk -t1 -c$CONNS)."
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)."
  echo "Everything on loopback, the same nginx upstream (one worker, 33-byte JSON), every proxy with one worker thread;"
  echo "load generators pinned to CPU 0, upstream and proxies to CPU 1 (\`taskset\`) when there are two cores;"
  echo "this machine is shared and noisy: compare the ratios of one run, not absolute numbers across runs."
  echo
  echo "## Added latency at a fixed rate ($RATE req/s, open loop, oha --latency-correction; median of $LAT_ROUNDS interleaved rounds)"
  echo
  echo "| target | p50 ms | p99 ms | p99 of each round, ms | p99 added vs direct, ms | CPU µs/request at this rate (median) | success (lowest) |"
  echo "|---|---|---|---|---|---|---|"
  for t in "${order[@]}"; do
    read -r p50 p99 ok <<<"$(lat_summary "${LAT[$t]}")"
    echo "| $t | $p50 | $p99 |${P99S[$t]} | $(python3 -c "print('%.3f' % ($p99-$d99))") | $(median ${LCPUS[$t]}) | $ok |"
  done
  echo
  # Paired by round: both ran within seconds of each other, so a slow spell of the machine
  # weighs on both.
  python3 - ${P99S[strangler]} -- ${P99S[bare_pingora]} <<'PY'
import statistics, sys
a = sys.argv[1:]; i = a.index("--"); s, b = [float(x) for x in a[:i]], [float(x) for x in a[i+1:]]
d = [x - y for x, y in zip(s, b)]
print("strangler p99 minus bare Pingora p99, round by round: %s ms; median **%+.3f ms**." % (" ".join("%+.3f" % x for x in d), statistics.median(d)))
PY
  echo
  echo "## Added latency at a fixed rate, paced ($RATE req/s, $ARRIVALS arrivals from paced_load; servers at real-time priority: $([ "$PACED_RT" = 1 ] && echo yes || echo no); median of $LAT_ROUNDS interleaved rounds)"
  echo
  echo "Latency from each request's due time (waits for a free connection count); a request the generator"
  echo "itself noticed over 50 µs late (it was off its CPU) is timed from when it was noticed, and counted as"
  echo "generator-late."
  echo
  echo "| target | p50 ms | p99 ms | p99 of each round, ms | p99 added vs direct, ms | p99.9 ms (median) | generator-late requests (median) | CPU µs/request (median) | success (lowest) |"
  echo "|---|---|---|---|---|---|---|---|---|"
  read -r _ pd99 _ <<<"$(lat_summary "${PLAT[direct]}")"
  for t in "${order[@]}"; do
    read -r p50 p99 ok <<<"$(lat_summary "${PLAT[$t]}")"
    echo "| $t | $p50 | $p99 |${PP99S[$t]} | $(python3 -c "print('%.3f' % ($p99-$pd99))") | $(median3 ${PP999[$t]}) | $(median ${PLATE[$t]} | cut -d. -f1) | $(median ${PCPUS[$t]}) | $ok |"
  done
  echo
  python3 - ${PP99S[strangler]} -- ${PP99S[direct]} -- ${PP99S[bare_pingora]} <<'PY'
import statistics, sys
a = " ".join(sys.argv[1:]).split(" -- ")
s, d, b = ([float(x) for x in part.split()] for part in a)
for name, other in (("direct", d), ("bare Pingora", b)):
    diff = [x - y for x, y in zip(s, other)]
    print("strangler p99 minus %s p99, round by round: %s ms; median **%+.3f ms**.  " % (name, " ".join("%+.3f" % x for x in diff), statistics.median(diff)))
PY
  echo
  echo "## Saturated throughput (wrk, one thread, $CONNS connections; median of $ROUNDS interleaved rounds)"
  echo
  echo "CPU per request: the proxy process's user + system time over the requests it answered"
  echo "(nginx: master and worker); steadier than req/s on a shared machine."
  echo
  echo "| target | req/s (median) | rounds | strangler ÷ target | CPU µs/request (median) | target CPU ÷ strangler CPU |"
  echo "|---|---|---|---|---|---|"
  for t in "${order[@]}"; do
    cpu_ratio="-"
    if [ "${CPU[$t]}" != "-" ] && [ "${CPU[strangler]}" != "-" ]; then cpu_ratio=$(ratio "${CPU[$t]}" "${CPU[strangler]}"); fi
    echo "| $t | ${RPS[$t]} | ${ALL[$t]} | $(ratio "${RPS[strangler]}" "${RPS[$t]}") | ${CPU[$t]} | $cpu_ratio |"
  done
  echo
  # The goal's ratio, exactly and paired by round as for the p99 above.
  python3 - ${ALL[strangler]} -- ${ALL[bare_pingora]} <<'PY'
import statistics, sys
a = sys.argv[1:]; i = a.index("--"); s, b = [float(x) for x in a[:i]], [float(x) for x in a[i+1:]]
r = [x / y for x, y in zip(s, b)]
print("strangler ÷ bare Pingora in req/s: %.3f (ratio of the medians); round by round: %s; median **%.3f**." % (statistics.median(s) / statistics.median(b), " ".join("%.3f" % x for x in r), statistics.median(r)))
PY
  echo
  echo "## Head to head: saturated at the same time (wrk, one thread, $CONNS connections each; $H2H_ROUNDS rounds)"
  echo
  echo "strangler-proxy and one baseline loaded together for ${DURATION} s, both pinned to the servers' CPU: each"
  echo "gets the same CPU time from the scheduler, so the ratio of the requests they answered is the inverse"
  echo "of the ratio of their costs per request, and a slow spell of the machine hits both at once (the rounds above take turns"
  echo "instead). Each proxy's CPU time is printed to show that the shares were equal."
  echo
  echo "| baseline | strangler ÷ baseline, requests answered (median) | each round | CPU µs/request, strangler / baseline (median) | CPU seconds per round, strangler / baseline (median) |"
  echo "|---|---|---|---|---|"
  for o in "${h2h_pairs[@]}"; do
    python3 - "$o" ${H2H[$o]} <<'PY'
import statistics, sys
name, rounds = sys.argv[1], [[float(v) for v in r.split("/")] for r in sys.argv[2:]]
ratios = [s / o for s, o, _, _ in rounds]
med = statistics.median
print("| %s | **%.3f** | %s | %.1f / %.1f | %.2f / %.2f |" % (
    name, med(ratios), " ".join("%.3f" % r for r in ratios),
    med(r[2] for r in rounds), med(r[3] for r in rounds),
    med(r[0] * r[2] / 1e6 for r in rounds), med(r[1] * r[3] / 1e6 for r in rounds)))
PY
  done
  echo
  echo "## Flag evaluation with 1,000 flags loaded (criterion, median of the confidence interval)"
  echo
  echo '```'
  echo "$CRIT"
  echo '```'
  echo
  echo "## 100 config reloads during sustained load (2,000 req/s for 25 s)"
  echo
  read -r rok rfail rcut rerrors <<<"$RELOAD"
  echo "Requests answered 200: $rok; failed or non-200: $rfail; cut by oha's deadline while in flight: $rcut;"
  echo "config version after the run: $VERSION (each rewrite reloaded through the admin API, and many of them"
  echo "once more by the file watcher). Errors as oha reports them: \`$rerrors\` (oha counts requests"
  echo "still in flight when its deadline hits as \"aborted due to deadline\": cut by the load tool, not failed by the proxy)."
} >"$OUT"
cat "$OUT"
