"""Latency of GET PATH, one request at a time, for a fixed time (a probe's
view while the server is loaded). Prints one JSON line. Loopback only.

    python -m bench.probe --url http://127.0.0.1:8000/health --seconds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

from bench.harness import require_loopback


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--delay", type=float, default=0.0, help="wait this long first (the load's warm-up)")
    args = p.parse_args()
    require_loopback(args.url)
    time.sleep(args.delay)
    latencies = []
    stop_at = time.monotonic() + args.seconds
    while time.monotonic() < stop_at:
        started = time.monotonic()
        with urllib.request.urlopen(args.url, timeout=5) as resp:
            resp.read()
        latencies.append((time.monotonic() - started) * 1000)
        time.sleep(args.interval)
    latencies.sort()
    print(json.dumps({
        "count": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }))


if __name__ == "__main__":
    main()
