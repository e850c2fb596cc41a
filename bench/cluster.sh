#!/usr/bin/env bash
# Three inferserve replicas behind HAProxy (from apt), all on 127.0.0.1.
# Measures 1 replica, then 3 replicas under closed-loop load at concurrency 64
# while one replica is SIGKILLed and another SIGTERMed (drained) mid-run, and
# prints requests sent, 200s, other codes and unanswered. Bounded in time.
#
#   apt-get install -y haproxy && bash bench/cluster.sh
#   MODEL=/path/to/model DURATION=30 bash bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v haproxy >/dev/null || { echo "needs haproxy: apt-get install -y haproxy" >&2; exit 2; }

DURATION=${DURATION:-30}
WORK=$(mktemp -d)
PORTS=(18101 18102 18103)
LB_PORT=18100
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export PYTHONPATH=$PWD HF_HUB_OFFLINE=1
MODEL=${MODEL:-$(python3 -c 'import sys; sys.path.insert(0, "bench"); from chaos import build_tiny_fill_mask, OUT; print(build_tiny_fill_mask(OUT / "models" / "tiny-fill-mask"))')}
python3 -c 'import json; json.dump([json.dumps({"inputs": f"cluster request {i} [MASK]"}) for i in range(256)], open("'"$WORK"'/bodies.json", "w"))'

for i in 0 1 2; do
  python3 -m inferserve --model "$MODEL" --host 127.0.0.1 --port "${PORTS[$i]}" --graceful-timeout 20 \
    > "$WORK/replica-$i.log" 2>&1 &
  PIDS+=($!)
done
for port in "${PORTS[@]}"; do
  for _ in $(seq 600); do curl -sf "127.0.0.1:$port/ready" >/dev/null && break; sleep 0.2; done
done

# Health-checked on /ready (a draining replica turns 503 and leaves the pool);
# a request whose replica refused the connection, dropped it or answered 503
# is retried on another replica (L7 retries need the body buffered).
cat > "$WORK/haproxy.cfg" <<CFG
global
  maxconn 2048
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout 503
  option http-buffer-request
frontend inferserve
  bind 127.0.0.1:$LB_PORT
  default_backend replicas
backend replicas
  balance leastconn
  option httpchk GET /ready
  default-server inter 500ms fall 1 rise 2 on-marked-down shutdown-sessions
  server r0 127.0.0.1:${PORTS[0]} check
  server r1 127.0.0.1:${PORTS[1]} check
  server r2 127.0.0.1:${PORTS[2]} check
CFG
haproxy -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
sleep 1.5

load() {  # load URL SECONDS -> one JSON line
  python3 bench/loadgen.py --url "$1" --bodies "$WORK/bodies.json" --concurrency 64 \
    --duration "$2" --warmup 0 --all
}

echo "one replica, direct:" >&2
ONE=$(load "http://127.0.0.1:${PORTS[0]}/" 10)
echo "three replicas behind haproxy; SIGKILL r1 at 1/3, SIGTERM r2 at 2/3 of ${DURATION}s:" >&2
( sleep "$(python3 -c "print($DURATION / 3)")"; kill -KILL "${PIDS[1]}"; echo "  killed r1 (SIGKILL)" >&2
  sleep "$(python3 -c "print($DURATION / 3)")"; kill -TERM "${PIDS[2]}"; echo "  draining r2 (SIGTERM)" >&2 ) &
THREE=$(load "http://127.0.0.1:$LB_PORT/" "$DURATION")
wait "${PIDS[2]}" 2>/dev/null; DRAIN_EXIT=$?

python3 - "$ONE" "$THREE" "$DRAIN_EXIT" <<'PY'
import json, sys
one, three, drain_exit = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
other = sum(v for k, v in three["statuses"].items() if k != "200")
print(f"1 replica:  {one['rps']:.1f} requests/s ({one['ok']} x 200)")
print(f"3 replicas: {three['rps']:.1f} requests/s")
print(f"sent {three['sent']}: 200={three['ok']} other={other} {three['statuses']} unanswered={three['no_answer']}; "
      f"drained replica exited {drain_exit}")
sys.exit(0 if other == 0 and three["no_answer"] == 0 and drain_exit == 0 else 1)
PY
