"""The limit: the bare transformers pipeline in one process, no HTTP.

A long-lived helper, so the orchestrator can interleave its measurements
with the server's (this box is noisy: side-by-side rounds keep ratios
honest). It loads the model once, prints ``{"ready": true, ...}``, then
answers one JSON line per command on stdin:

    sweep SECONDS [reverse]  items/s of pipeline(texts, batch_size=b) for b in 1,8,16,32 (or 32..1)
    limit B SECONDS          items/s at batch size B
    single N                 median latency (ms) of N pipeline(text) calls

With --mode embed it measures sentence embeddings (forward + pooling)
instead. --dtype loads the weights in that precision (float32, float16,
bfloat16; auto keeps the checkpoint's); outputs in a reduced precision are
cast to float32 before they leave torch, as a server must for JSON.

    python -m bench.raw --model DIR --task fill-mask --texts texts.json --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

DTYPES = ("auto", "float32", "float16", "bfloat16")


def torch_dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def as_float32(outputs):
    """Floating tensors of a model's outputs (a tensor, dict/ModelOutput or
    tuple) in float32: numpy has no bfloat16."""
    import torch

    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() and outputs.dtype != torch.float32 else outputs
    if isinstance(outputs, dict):  # ModelOutput too
        for key in list(outputs.keys()):
            outputs[key] = as_float32(outputs[key])
        return outputs
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(as_float32(o) for o in outputs)
    return outputs


class RawPipeline:
    def __init__(self, model: str, task: str, texts: list[str], device: str = "cpu", dtype: str = "auto") -> None:
        import torch
        import transformers

        transformers.utils.logging.disable_progress_bar()
        wanted = torch_dtype(dtype)
        self.pipe = transformers.pipeline(task, model=model, device=device, dtype=wanted)
        if wanted != "auto" and self.pipe.model.dtype != wanted:
            self.pipe.model.to(wanted)
        if self.pipe.model.dtype != torch.float32:
            forward = self.pipe._forward
            self.pipe._forward = lambda *a, **k: as_float32(forward(*a, **k))
        self.dtype = str(self.pipe.model.dtype).removeprefix("torch.")
        self.texts = texts
        self.warm_up()

    def warm_up(self) -> None:
        for text in self.texts[:8]:
            self.pipe(text)

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


class RawEmbedder(RawPipeline):
    """Sentence embeddings the plain way: tokenize the batch, forward, mean-pool
    over the attention mask, L2-normalise (all-MiniLM-L6-v2's recipe)."""

    def __init__(self, model: str, task: str, texts: list[str], device: str = "cpu", dtype: str = "auto") -> None:
        import torch
        import transformers

        self.torch = torch
        self.device = device
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model)
        wanted = torch_dtype(dtype)
        self.model = transformers.AutoModel.from_pretrained(model, dtype=wanted).to(device).eval()
        if wanted != "auto":
            self.model.to(wanted)
        self.dtype = str(self.model.dtype).removeprefix("torch.")
        self.texts = texts
        self.pipe = self._embed
        self.warm_up()

    def _embed(self, texts, batch_size: int = 1):
        torch = self.torch
        texts = [texts] if isinstance(texts, str) else texts
        out = []
        for start in range(0, len(texts), batch_size):
            encoded = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                     max_length=256, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
            out.extend(pooled.float().cpu().numpy())
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--texts", required=True, help="JSON file: list of input texts")
    p.add_argument("--mode", choices=("pipeline", "embed"), default="pipeline")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=DTYPES, default="auto")
    args = p.parse_args()
    with open(args.texts) as f:
        raw = (RawEmbedder if args.mode == "embed" else RawPipeline)(args.model, args.task, json.load(f),
                                                                      args.device, args.dtype)
    print(json.dumps({"ready": True, "dtype": raw.dtype, "device": args.device}), flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "sweep":
            sizes = (32, 16, 8, 1) if rest[1:] == ["reverse"] else (1, 8, 16, 32)
            result = {b: raw.limit(b, float(rest[0])) for b in sizes}
        elif command == "limit":
            result = raw.limit(int(rest[0]), float(rest[1]))
        elif command == "single":
            result = raw.single(int(rest[0]))
        else:
            result = None
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
