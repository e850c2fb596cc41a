"""python -m bench SCENARIO [options]: run one benchmark scenario.

Every scenario writes all its measurements as JSON (--out, default
bench/out/SCENARIO.json); with --write it also renders them into its
section of bench/RESULTS.md (PEERS.md for peers, RESULTS-gpu.md for gpu),
which `python -m bench render FILE.json` does for any saved run. All load
targets 127.0.0.1 and is bounded in count and time. See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from bench import render
from bench.harness import OUT
from bench.machine import cpu_name
from bench.scenarios import (
    capacity, chaos, cluster, gpu, latency, mixed, passages, peers, precision, rerank, rerank_mixed, restart,
    throughput,
)

SCENARIOS = {"throughput": throughput, "latency": latency, "precision": precision, "peers": peers, "chaos": chaos,
             "capacity": capacity, "cluster": cluster, "gpu": gpu, "rerank": rerank, "passages": passages,
             "mixed": mixed, "restart": restart, "rerank-mixed": rerank_mixed}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, default=None,
                        help="every measurement as JSON here (default: bench/out/SCENARIO.json)")
    common.add_argument("--write", action="store_true",
                        help="also render the results into their Markdown section (see bench/render.py)")
    common.add_argument("--server-root", type=Path, default=None,
                        help="run `python -m inferserve` from this checkout (default: this one)")
    sub = p.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for name, module in SCENARIOS.items():
        # argparse formats help with %: mixed's "80% short queries" broke --help
        module.add_arguments(sub.add_parser(name, parents=[common], help=module.SUMMARY.replace("%", "%%"),
                                            description=module.__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    render.add_arguments(sub.add_parser("render", help="write a saved run's JSON into its Markdown section",
                                        description=render.__doc__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter))
    return p


def machine() -> dict:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"cpus": os.cpu_count(), "arch": platform.machine(), "cpu": cpu_name(), "python": platform.python_version(),
            **{package: version(package) for package in ("torch", "transformers", "aiohttp")}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.scenario == "render":
        render.main(args)
        return 0
    started = time.time()
    results = SCENARIOS[args.scenario].run(args)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    doc = {"scenario": args.scenario, "command": "python -m bench " + shlex.join(argv),
           "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
           "utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
           "seconds": round(time.time() - started, 1), "machine": machine(), "options": options, "results": results}
    out = args.out or OUT / f"{args.scenario}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out}")
    if args.write:
        print(f"wrote {render.write(doc)}")
    return 1 if results.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
