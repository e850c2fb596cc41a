"""The limit: the bare transformers pipeline in one process, no HTTP.

A long-lived helper, so the orchestrator can interleave its measurements
with the server's (this box is noisy: side-by-side rounds keep ratios
honest). It loads the model once, prints ``{"ready": true, ...}``, then
answers one JSON line per command on stdin:

    sweep SECONDS [reverse]  items/s of pipeline(texts, batch_size=b) for b in 1,8,16,32 (or 32..1)
    limit B SECONDS          items/s at batch size B
    ordered B SECONDS ORDER  items/s and padding efficiency at batch size B over the first 4B
                             texts in arrival order or sorted by length (ORDER: arrival, length)
    single N                 median latency (ms) of N pipeline(text) calls
    agree [N]                how far the outputs over the first N texts (all) move from a float32 torch copy's

With --mode embed it measures sentence embeddings (forward + pooling)
instead. --dtype loads the weights in that precision (float32, float16,
bfloat16; auto keeps the checkpoint's); outputs in a reduced precision are
cast to float32 before they leave torch, as a server must for JSON.

--engine onnx builds the pipeline as torch does, then replaces its network
with ONNX Runtime through inferserve.model.engines.onnx_model, the server's
own code (exported once, cached under --cache-dir, default the server's;
float32 only). For feature-extraction the pooler is dropped first, as the
server does (inferserve.model.loading.drop_unused_pooler), so the raw helper
and the server run the same exported file. --engine openvino does the same
through inferserve.model.openvino_engine.openvino_models (converted from the
float32 torch network, cached); --dtype float32 compiles it with the f32
precision hint, bfloat16 with bf16.

``agree`` answers {"min_cosine", "max_prob_diff", "texts"}: per text, the
cosine between this helper's outputs and a float32 torch copy's (loaded for
the command, then dropped) over its real tokens: the network's first output
(last hidden state or logits) in pipeline mode, the pooled vector in embed
mode; for fill-mask also the largest change of any softmax probability. The
float32 torch helper is its own reference: 1.0 without a second copy.

    python -m bench.raw --model DIR --task fill-mask --texts texts.json --dtype bfloat16
    python -m bench.raw --model DIR --task feature-extraction --texts texts.json --mode embed --engine onnx
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import statistics
import sys
import time
import types

DTYPES = ("auto", "float32", "float16", "bfloat16")
ENGINES = ("torch", "onnx", "openvino")
OPENVINO_HINTS = {"auto": "f32", "float32": "f32", "bfloat16": "bf16"}
SOFTMAX_TASKS = ("fill-mask", "text-classification", "token-classification")


def parse_variant(text: str) -> tuple[str, str]:
    """``DTYPE[:ENGINE]`` (float32:onnx, bfloat16) as (dtype, engine)."""
    dtype, _, engine = text.partition(":")
    engine = engine or "torch"
    if dtype not in DTYPES or engine not in ENGINES:
        raise ValueError(f"{text!r}: expected DTYPE[:ENGINE], DTYPE one of {', '.join(DTYPES)}, "
                         f"ENGINE one of {', '.join(ENGINES)}")
    if engine == "onnx" and dtype not in ("auto", "float32"):
        raise ValueError(f"{text!r}: --engine {engine} runs float32")
    if engine == "openvino" and dtype not in OPENVINO_HINTS:
        raise ValueError(f"{text!r}: --engine openvino runs float32 or bfloat16")
    return dtype, engine


def variant_key(text: str) -> str:
    """The canonical name of a raw variant: float32:torch, float32:onnx."""
    return ":".join(parse_variant(text))


def onnx_network(pipe, task: str, model: str, cache_dir: str | None):
    """The server's ONNX Runtime stand-in for ``pipe.model`` (same code,
    same cache, same thread count as a worker on this box)."""
    import torch

    from inferserve.model.engines import default_cache_dir, onnx_model
    from inferserve.model.loading import drop_unused_pooler

    if task == "feature-extraction":
        drop_unused_pooler(pipe)  # as the server does: the same exported graph
    return onnx_model(pipe, task, model, cache_dir or default_cache_dir(), torch.get_num_threads())


def openvino_network(pipe, task: str, model: str, cache_dir: str | None, dtype: str):
    """The server's OpenVINO stand-in for ``pipe.model`` (a float32 torch
    network), compiled with the hint ``dtype`` names."""
    import torch

    from inferserve.model.engines import default_cache_dir
    from inferserve.model.loading import drop_unused_pooler
    from inferserve.model.openvino_engine import openvino_models

    if task == "feature-extraction":
        drop_unused_pooler(pipe)  # as the server does: the same converted graph
    hint = OPENVINO_HINTS[dtype]
    return openvino_models(pipe, task, model, cache_dir or default_cache_dir(), torch.get_num_threads(), [hint])[hint]


def first(items: list, count: int) -> list:
    """The first ``count`` of ``items``, cycling when there are fewer."""
    return (items * (1 + count // len(items)))[:count]


def ordered_limit(limit, items: list, lengths: list[int], batch_size: int, seconds: float, order: str) -> dict:
    """``limit(batch_size, seconds, items)`` (items/s over whole batches) of
    ``items`` as they come (``arrival``) or sorted by their token counts
    ``lengths`` (``length``), with the padding efficiency of its batches:
    real tokens over tokens padded to each batch's longest."""
    if order == "length":
        ranked = sorted(range(len(items)), key=lengths.__getitem__)
        items, lengths = [items[i] for i in ranked], [lengths[i] for i in ranked]
    batches = [lengths[i:i + batch_size] for i in range(0, len(lengths), batch_size)]
    return {"items_s": limit(batch_size, seconds, items),
            "padding_efficiency": sum(lengths) / sum(len(b) * max(b) for b in batches), "order": order}


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


def _first_output(output):
    first = output[0] if isinstance(output, (tuple, list)) else next(iter(output.values()))
    return first.float()


def _accepted(network, encoded) -> dict:
    accepted = set(inspect.signature(network.forward).parameters)
    return {k: v for k, v in encoded.items() if k in accepted}


def compare(reference, output, mask, softmax: bool) -> tuple[list[float], list[float]]:
    """Per row: cosine over the real tokens (or the whole row), and the
    largest softmax probability change."""
    import torch

    cosines, changes = [], []
    for row in range(reference.shape[0]):
        ref, out = reference[row].double(), output[row].double()
        if mask is not None and ref.dim() >= 2 and ref.shape[0] == mask.shape[1]:
            keep = mask[row].bool()
            ref, out = ref[keep], out[keep]
        cosines.append(float(torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0)))
        if softmax:
            changes.append(float((ref.softmax(dim=-1) - out.softmax(dim=-1)).abs().max()))
    return cosines, changes


class RawPipeline:
    def __init__(self, model: str, task: str, texts: list[str], device: str = "cpu", dtype: str = "auto",
                 engine: str = "torch", cache_dir: str | None = None) -> None:
        import torch
        import transformers

        transformers.utils.logging.disable_progress_bar()
        self.model_dir, self.task, self.device, self.engine = model, task, device, engine
        # OpenVINO converts the float32 network; the dtype picks its precision hint.
        wanted = torch_dtype("float32" if engine == "openvino" else dtype)
        self.pipe = transformers.pipeline(task, model=model, device=device, dtype=wanted)
        if task == "fill-mask":  # long inputs (bench passages) truncated to the model's limit, as the server does
            limit = min(self.pipe.tokenizer.model_max_length, self.pipe.model.config.max_position_embeddings)
            self.pipe._preprocess_params.setdefault("tokenizer_kwargs", {"truncation": True, "max_length": limit})
        if wanted != "auto" and self.pipe.model.dtype != wanted:
            self.pipe.model.to(wanted)
        if engine == "onnx":
            self.pipe.model = onnx_network(self.pipe, task, model, cache_dir)
        if engine == "openvino":
            self.pipe.model = openvino_network(self.pipe, task, model, cache_dir, dtype)
        if self.pipe.model.dtype != torch.float32:
            forward = self.pipe._forward
            self.pipe._forward = lambda *a, **k: as_float32(forward(*a, **k))
        self.dtype = str(self.pipe.model.dtype).removeprefix("torch.")
        if engine == "openvino":
            self.dtype = "bfloat16" if OPENVINO_HINTS[dtype] == "bf16" else "float32"
        self.texts = texts
        self.warm_up()

    def is_reference(self) -> bool:
        return self.engine == "torch" and self.dtype == "float32"

    def agree(self, count: int | None = None, batch_size: int = 32) -> dict:
        """Outputs over the first ``count`` texts (all) against a float32 torch copy's."""
        import torch
        import transformers

        texts = self.texts[:count]
        softmax = self.task in SOFTMAX_TASKS
        if self.is_reference():
            return {"min_cosine": 1.0, "max_prob_diff": 0.0 if softmax else None, "texts": len(texts),
                    "reference": "itself"}
        reference = transformers.pipeline(self.task, model=self.model_dir, device=self.device,
                                          dtype=torch.float32).model
        cosines, changes = [], []
        for start in range(0, len(texts), batch_size):
            encoded = self.pipe.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                          return_tensors="pt").to(self.device)
            with torch.inference_mode():
                expected = _first_output(reference(**_accepted(reference, encoded)))
                got = _first_output(self.pipe.model(**_accepted(self.pipe.model, encoded)))
            c, p = compare(expected, got, encoded.get("attention_mask"), softmax)
            cosines += c
            changes += p
        return {"min_cosine": min(cosines), "max_prob_diff": max(changes) if softmax else None,
                "texts": len(texts), "reference": "float32 torch"}

    def warm_up(self) -> None:
        for text in self.texts[:8]:
            self.pipe(text)

    def limit(self, batch_size: int, seconds: float, texts: list[str] | None = None) -> float:
        """Items/s over the first 4 x B of ``texts`` (the helper's)."""
        chunk = first(texts or self.texts, 4 * batch_size)
        self.pipe(chunk[:batch_size], batch_size=batch_size)  # warm this shape
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            self.pipe(chunk, batch_size=batch_size)
            done += len(chunk)
        return done / (time.perf_counter() - started)

    def ordered(self, batch_size: int, seconds: float, order: str) -> dict:
        """The limit over the first 4 x B texts as they come (``arrival``)
        or sorted by their token count (``length``): mixed-length inputs
        padded to their batch's longest, or to a near neighbour's length."""
        tokenizer = getattr(self, "tokenizer", None) or self.pipe.tokenizer
        chunk = first(self.texts, 4 * batch_size)
        network = getattr(self, "model", None) or self.pipe.model
        limit = min(tokenizer.model_max_length, 256 if isinstance(self, RawEmbedder) else 512,
                    getattr(network.config, "max_position_embeddings", 512))
        lengths = [min(len(ids), limit) for ids in tokenizer(chunk)["input_ids"]]
        return ordered_limit(self.limit, chunk, lengths, batch_size, seconds, order)

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

    def __init__(self, model: str, task: str, texts: list[str], device: str = "cpu", dtype: str = "auto",
                 engine: str = "torch", cache_dir: str | None = None) -> None:
        import torch
        import transformers

        transformers.utils.logging.disable_progress_bar()
        self.torch = torch
        self.model_dir, self.task, self.device, self.engine = model, task, device, engine
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model)
        wanted = torch_dtype("float32" if engine == "openvino" else dtype)
        self.model = self._load(wanted)
        if engine == "onnx":
            # The server's feature-extraction pipeline holds the same
            # AutoModel and tokenizer; onnx_model reads just these two.
            network = onnx_network(types.SimpleNamespace(model=self.model, tokenizer=self.tokenizer,
                                                         preprocess=self._preprocess, forward=self._forward_raw),
                                   "feature-extraction", model, cache_dir)
            self.model = network
        if engine == "openvino":
            self.model = openvino_network(types.SimpleNamespace(model=self.model, tokenizer=self.tokenizer,
                                                                preprocess=self._preprocess,
                                                                forward=self._forward_raw),
                                          "feature-extraction", model, cache_dir, dtype)
        self.dtype = str(self.model.dtype).removeprefix("torch.")
        if engine == "openvino":
            self.dtype = "bfloat16" if OPENVINO_HINTS[dtype] == "bf16" else "float32"
        self.texts = texts
        self.pipe = self._embed
        self.warm_up()

    def _load(self, wanted):
        import transformers

        model = transformers.AutoModel.from_pretrained(self.model_dir, dtype=wanted).to(self.device).eval()
        if wanted != "auto":
            model.to(wanted)
        return model

    def _preprocess(self, text: str):
        return self.tokenizer(text, return_tensors="pt").to(self.device)

    def _forward_raw(self, features):
        return self.model(**features)

    def agree(self, count: int | None = None, batch_size: int = 32) -> dict:
        """Pooled vectors over the first ``count`` texts (all) against a float32 torch copy's."""
        texts = self.texts[:count]
        if self.is_reference():
            return {"min_cosine": 1.0, "max_prob_diff": None, "texts": len(texts), "reference": "itself"}
        mine = self._embed(texts, batch_size)
        network, self.model = self.model, self._load(self.torch.float32)
        try:
            expected = self._embed(texts, batch_size)
        finally:
            self.model = network
        cosines = [float(a @ b / ((a @ a) ** 0.5 * (b @ b) ** 0.5))
                   for a, b in ((a.astype("float64"), b.astype("float64")) for a, b in zip(expected, mine))]
        return {"min_cosine": min(cosines), "max_prob_diff": None, "texts": len(texts), "reference": "float32 torch"}

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
    p.add_argument("--mode", choices=("pipeline", "embed", "st"), default="pipeline",
                   help="st: the sentence-transformers model's own encode() (bench/raw_st.py)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=DTYPES, default="auto")
    p.add_argument("--engine", choices=ENGINES, default="torch",
                   help="onnx: ONNX Runtime through inferserve.model.engines.onnx_model (float32); openvino: "
                        "inferserve.model.openvino_engine (hint f32, or bf16 with --dtype bfloat16)")
    p.add_argument("--cache-dir", default=None, help="exported engines (default: the server's, ~/.cache/inferserve)")
    args = p.parse_args()
    try:
        parse_variant(f"{args.dtype}:{args.engine}")
    except ValueError as exc:
        p.error(str(exc))
    # stdout carries the JSON lines only: the ONNX exporter prints its progress.
    with open(args.texts) as f, contextlib.redirect_stdout(sys.stderr):
        raw = _raw_class(args.mode)(args.model, args.task, json.load(f), args.device, args.dtype, args.engine,
                                    args.cache_dir)
    print(json.dumps({"ready": True, "dtype": raw.dtype, "engine": args.engine, "device": args.device}), flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        with contextlib.redirect_stdout(sys.stderr):
            result = run_command(raw, command, rest)
        print(json.dumps(result), flush=True)


def _raw_class(mode: str) -> type[RawPipeline]:
    if mode == "st":
        from bench.raw_st import RawSentenceTransformer

        return RawSentenceTransformer
    return RawEmbedder if mode == "embed" else RawPipeline


def run_command(raw: RawPipeline, command: str, rest: list[str]):
    if command == "sweep":
        sizes = (32, 16, 8, 1) if rest[1:] == ["reverse"] else (1, 8, 16, 32)
        return {b: raw.limit(b, float(rest[0])) for b in sizes}
    if command == "limit":
        return raw.limit(int(rest[0]), float(rest[1]))
    if command == "ordered":
        return raw.ordered(int(rest[0]), float(rest[1]), rest[2])
    if command == "single":
        return raw.single(int(rest[0]))
    if command == "agree":
        return raw.agree(int(rest[0]) if rest else None)
    return None

if __name__ == "__main__":
    main()
