"""Three inferserve replicas behind HAProxy (from apt), all on 127.0.0.1.

Measures 1 replica direct (10 s), then 3 replicas behind HAProxy under
closed-loop load at concurrency 64 while one replica is SIGKILLed (at 1/3
of the run) and another SIGTERMed, so drained (at 2/3): requests sent, 200s,
other codes and unanswered, which must be 0 (the scenario exits 1
otherwise), and the drained replica's exit code (0). The HAProxy
configuration it writes (bench/out/cluster-haproxy.cfg) is the one to copy.

    apt-get install -y haproxy && python -m bench cluster    # ~1 min
    python -m bench cluster --model /path/to/model --duration 60
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import threading
import time
from contextlib import ExitStack

from bench.harness import MODELS, OUT, Server, free_port, load, start_inferserve, write_bodies

SUMMARY = "3 replicas behind HAProxy, one SIGKILLed and one drained mid-run (~1 min; needs haproxy)"

# Health-checked on /ready (a draining replica turns 503 and leaves the pool);
# a request whose replica refused the connection, dropped it or answered 503
# is retried on another replica (L7 retries need the body buffered).
HAPROXY = """\
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
  bind 127.0.0.1:{port}
  default_backend replicas
backend replicas
  balance leastconn
  option httpchk GET /ready
  default-server inter 500ms fall 1 rise 2 on-marked-down shutdown-sessions
{servers}
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load behind HAProxy")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--model", default=None, help="model directory; default: a tiny random fill-mask model")


def run(args: argparse.Namespace) -> dict:
    if shutil.which("haproxy") is None:
        raise SystemExit("the cluster scenario needs haproxy: apt-get install -y haproxy")
    model = MODELS["tiny-fill-mask"]
    path = args.model or model.path()
    bodies = write_bodies("cluster", model.texts())
    events: list[str] = []
    with ExitStack() as stack:
        replicas = [stack.enter_context(start_inferserve(path, None, ["--graceful-timeout", "20"],
                                                         OUT / f"cluster-replica-{i}.log", args.server_root,
                                                         wait=False))
                    for i in range(3)]
        for replica in replicas:
            replica.wait_ready()
        port = free_port()
        config = OUT / "cluster-haproxy.cfg"
        config.write_text(HAPROXY.format(port=port, servers="\n".join(
            f"  server r{i} 127.0.0.1:{r.port} check" for i, r in enumerate(replicas))))
        stack.enter_context(Server(["haproxy", "-f", str(config)], port, OUT / "cluster-haproxy.log",
                                   stop_group=True))
        time.sleep(1.5)  # two health checks: the replicas are up

        print("one replica, direct ...", flush=True)
        one = load(replicas[0].url("/"), bodies, args.concurrency, 10, warmup=0, count_all=True)

        def kill_and_drain() -> None:
            time.sleep(args.duration / 3)
            os.kill(replicas[1].pid, signal.SIGKILL)
            events.append(f"r1 SIGKILLed at {args.duration / 3:.0f} s")
            time.sleep(args.duration / 3)
            replicas[2].process.send_signal(signal.SIGTERM)
            events.append(f"r2 SIGTERMed (draining) at {2 * args.duration / 3:.0f} s")

        print(f"three replicas behind haproxy; SIGKILL r1 at 1/3, SIGTERM r2 at 2/3 of {args.duration:g} s ...",
              flush=True)
        timeline = threading.Thread(target=kill_and_drain, daemon=True)
        timeline.start()
        three = load(f"http://127.0.0.1:{port}/", bodies, args.concurrency, args.duration, warmup=0, count_all=True)
        timeline.join()
        drain_exit = replicas[2].process.wait(60)
    other = sum(v for k, v in three["statuses"].items() if k != "200")
    print(f"1 replica:  {one['rps']:.1f} requests/s ({one['ok']} x 200)\n"
          f"3 replicas: {three['rps']:.1f} requests/s\n"
          f"sent {three['sent']}: 200={three['ok']} other={other} {three['statuses']} "
          f"unanswered={three['no_answer']}; drained replica exited {drain_exit}", flush=True)
    return {"one_replica": one, "three_replicas": three, "other_status": other, "drain_exit": drain_exit,
            "events": events, "duration": args.duration, "concurrency": args.concurrency,
            "failed": bool(other or three["no_answer"] or drain_exit != 0)}
