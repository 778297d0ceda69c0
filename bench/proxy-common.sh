# Shared by the proxy benchmarks (sourced, not run): the work folder and its cleanup, port
# checks, the nginx upstream, and strangler-proxy's bench route and flags.
# Needs UP, STR, STRADM (ports) and SERVER (a CPU pinning prefix, may be empty).

work=$(mktemp -d)
pids=()
# kill -9: Pingora outlives SIGTERM for a long while (graceful shutdown). The children go first:
# an nginx worker whose master is killed stays behind, still listening on the port; and the
# master is stopped before, or it starts a new worker in place of the killed one.
cleanup() {
  for p in "${pids[@]}"; do
    kill -STOP "$p" 2>/dev/null || true
    pkill -9 -P "$p" 2>/dev/null || true
    kill -9 "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Refuses to measure whatever already listens on one of the ports (a leftover of another run).
ports_free() {
  local p
  for p in "$@"; do
    if (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null; then
      echo "port $p is already in use: stop what listens there first" >&2
      exit 1
    fi
  done
}
wait_port() { for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# The upstream: nginx answering a small JSON body, one worker.
start_upstream() {
  mkdir -p "$work/up"
  cat >"$work/up/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $work/up/nginx.pid; error_log $work/up/error.log;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$UP;
  location / { default_type application/json; return 200 '{"status":"ok","items":[1,2,3]}'; } } }
NGX
  $SERVER nginx -c "$work/up/nginx.conf" -p "$work/up" &
  pids+=($!)
}

# strangler-proxy, one thread: the bench path is a canary route at 50% (both sides are the
# same upstream), so every request is matched, keyed, evaluated and bucketed. Argument: a
# suffix for a second route, so that each rewrite is a real change.
write_flags() {
  cat >"$work/flags.json" <<'FLAGS'
{"flags":{"route.bench":{"key":"route.bench","version":1,"on":true,"salt":"s","variations":["monolith","service","shadow"],"offVariation":0,
 "fallthrough":{"rollout":{"variations":[{"variation":1,"weight":50000},{"variation":0,"weight":50000}]}}}}}
FLAGS
}
write_config() {
  cat >"$work/proxy.toml" <<CFG
listen = "127.0.0.1:$STR"
admin_listen = "127.0.0.1:$STRADM"
threads = 1
upgrade_sock = "$work/upgrade.sock"
[flags]
source = "file"
path = "$work/flags.json"
[user_key]
header = "x-user-id"
[upstreams.monolith]
backends = ["127.0.0.1:$UP"]
[upstreams.svc]
backends = ["127.0.0.1:$UP"]
[[routes]]
name = "bench"
prefix = "/bench"
flag = "route.bench"
service = "svc"
[[routes]]
name = "extra-$1"
path = "/extra/$1"
flag = "route.bench"
service = "svc"
CFG
}
