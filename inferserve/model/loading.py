"""Model loading: resolve device and task, build the pipeline, once."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..common.config import ModelSpec
from ..common.model_path import missing_local_model
from ..ipc import PrecisionReport
from .choice_cache import Choice, ChoiceCache
from .errors import ModelLoadError

log = logging.getLogger("inferserve.worker")

# Architecture-name suffix -> pipeline task, most specific first. Used when
# --task is omitted: transformers can only infer a task from the hub, which a
# local directory (or an offline machine) does not have.
_ARCHITECTURE_TASKS: tuple[tuple[str, str], ...] = (
    ("ForMaskedLM", "fill-mask"),
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("Model", "feature-extraction"),
)


@dataclass
class LoadedModel:
    pipeline: Any
    task: str
    device: str
    dtype: str
    precision: PrecisionReport
    engine: str = "torch"
    steps: dict[str, float] = field(default_factory=dict)
    # Where the choice is remembered, and what it holds beside (e.g. the cost model).
    choices: ChoiceCache | None = None
    choice: Choice | None = None


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {requested} asked for, but no CUDA device is visible")
    return requested


def _check_local_path(model: str) -> None:
    missing = missing_local_model(model)
    if missing is not None:
        raise ModelLoadError(missing)


def infer_task(model: str) -> str:
    """The pipeline task for a local model directory, from its config."""
    config_path = os.path.join(model, "config.json")
    if not os.path.isfile(config_path):
        raise ModelLoadError(
            f"cannot infer the task of {model!r} (no local config.json); pass --task"
        )
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    architectures = config.get("architectures") or []
    for arch in architectures:
        for suffix, task in _ARCHITECTURE_TASKS:
            if arch.endswith(suffix):
                return "text-ranking" if task == "text-classification" and _num_labels(config) == 1 else task
    raise ModelLoadError(f"cannot infer the task from architectures {architectures}; pass --task")


# Our tasks that load through another task's transformers pipeline.
_PIPELINE_OF_TASK = {"text-ranking": "text-classification", "sparse-embedding": "fill-mask"}


def _sentence_transformers_task(model: str, task: str) -> str:
    """Read a sentence-transformers directory's modules before any weight
    (an unknown module fails start-up at once, naming it); one ending in
    SPLADE pooling is a sparse encoder, whatever its architecture says."""
    if task not in ("feature-extraction", "fill-mask", "sparse-embedding") or not os.path.isfile(
            os.path.join(model, "modules.json")):
        return task
    from .st_chain.reader import read_chain

    chain = read_chain(model)
    if chain.sparse:
        return "sparse-embedding"
    if task == "sparse-embedding":
        raise ModelLoadError(f"{model!r} has no SpladePooling module: it is not a sparse encoder")
    return task


def _num_labels(config: dict[str, Any]) -> int:
    """A config.json's label count (transformers' default 2 when it names none).
    One label on a sequence classifier is a cross-encoder: task text-ranking."""
    if isinstance(config.get("num_labels"), int):
        return config["num_labels"]
    return len(config.get("id2label") or {}) or 2


def _served_by_us(task: str) -> bool:
    """Tasks that run on inferserve's own implementation: transformers 5
    removed their pipelines (question-answering and the seq2seq tasks), and
    one implementation keeps their outputs the same whatever is installed."""
    from .pipelines.base import own_task_family

    return own_task_family(task) is not None


def load_model(spec: ModelSpec) -> LoadedModel:
    steps: dict[str, float] = {}
    # Before the imports (seconds of them): a mistyped path or an unknown task fails at once.
    _check_local_path(spec.model)
    task = spec.task or infer_task(spec.model)
    task = _sentence_transformers_task(spec.model, task)

    started = time.perf_counter()
    import torch
    import transformers

    from .pipelines.build import build_own_pipeline
    from .precision import Calibration, Gate

    steps["import"] = time.perf_counter() - started
    transformers.utils.logging.disable_progress_bar()  # no tqdm bars in server logs
    log.info("imported torch %s, transformers %s in %.2fs",
             torch.__version__, transformers.__version__, steps["import"])

    # Set on purpose, so the worker's share of the cores is a decision (one
    # thread per core by default; lower it to leave room for other processes).
    threads = spec.num_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    log.info("torch intra-op threads: %d", threads)
    device = resolve_device(spec.device)

    started = time.perf_counter()
    try:
        # Loaded in float32: the reference any reduced precision is checked against.
        dtype = torch.float32
        if _served_by_us(task):
            pipe = build_own_pipeline(task, spec.model, device, dtype)
        else:
            # text-ranking (a cross-encoder) loads through the text-classification
            # pipeline, a sparse encoder (an MLM head) through fill-mask's.
            pipeline_task = _PIPELINE_OF_TASK.get(task, task)
            pipe = transformers.pipeline(pipeline_task, model=spec.model, device=device, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load {spec.model!r} for task {task!r}: {exc}") from exc
    steps["load"] = time.perf_counter() - started
    log.info("loaded %s (task %s) on %s in %.2fs", spec.model, task, device, steps["load"])
    if task == "feature-extraction" and drop_unused_pooler(pipe):
        log.info("feature-extraction: the model's pooler is not run (its output is never used)")
    started = time.perf_counter()
    gate = Gate(spec.min_cosine, spec.max_prob_diff)
    # One calibration (features, float32 answers, float32 timing) for every check below.
    from .st_chain.calibration import final_vectors

    # Judged on the vectors the client gets (a sentence-transformers chain's pooling and heads).
    calibration = Calibration(pipe, finish=final_vectors(spec.model, task, device))
    # A choice made at an earlier start (same files, versions, device, request) is reused untimed.
    choices = ChoiceCache(spec, task, device, threads)
    choice = choices.reuse(pipe, gate, calibration)
    if choice is None:
        choice = choices.remember(_measure_choice(pipe, task, spec, device, threads, gate, calibration))
    precision, engine = choice.precision, choice.engine
    if engine != "torch":
        # The engine computes the network on its own threads; what torch does
        # around it (padding, pooling) is small and runs on this thread, so no
        # idle torch pool thread spins against the engine's and the front-end
        # (docs/design.md#torch-threads-beside-an-engine).
        torch.set_num_threads(1)
        log.info("torch intra-op threads: 1 (%s computes the network on %d)", engine, threads)
    steps["precision"] = time.perf_counter() - started
    log.info("precision %s (asked: %s) in %.2fs: %s", precision.dtype, spec.dtype, steps["precision"], precision.reason)
    return LoadedModel(
        pipeline=pipe,
        task=task,
        device=str(pipe.device),
        # OpenVINO takes and gives float32; its precision hint is what it computes in.
        dtype=precision.dtype if engine == "openvino" else str(pipe.model.dtype).removeprefix("torch."),
        precision=precision,
        engine=engine,
        steps=steps,
        choices=choices,
        choice=choice,
    )


def _measure_choice(pipe: Any, task: str, spec: ModelSpec, device: str, threads: int, gate: Any,
                    calibration: Any) -> Choice:
    """Time the precisions and engines this device may run faster; keep the
    fastest that agrees with float32 torch (model/precision.py)."""
    from .openvino_engine import choose_openvino, openvino_candidates
    from .precision import choose_precision

    openvino = openvino_candidates(pipe, task, spec, threads, device)  # from the float32 network
    precision = _use_engine(pipe, task, spec, threads, gate, calibration) if spec.engine == "onnx" else None
    engine = "onnx" if precision is not None else "torch"
    if spec.engine == "openvino" and openvino:
        precision = choose_openvino(pipe, task, openvino, gate, calibration, None, spec.dtype)
        engine = "openvino" if precision is not None else "torch"
    if precision is None:
        precision = choose_precision(pipe, task, device, spec.dtype, gate, calibration=calibration)
    if spec.engine == "auto" and precision.dtype == "float32" and device == "cpu":
        faster = _try_faster_engine(pipe, task, spec, threads, gate, calibration)
        if faster is not None:
            precision, engine = faster, "onnx"
    if spec.engine == "auto" and openvino:
        faster = choose_openvino(pipe, task, openvino, gate, calibration, precision.speedup or 1.0, spec.dtype)
        if faster is not None:
            precision, engine = faster, "openvino"
    return Choice(engine, precision)


def _use_engine(pipe: Any, task: str, spec: ModelSpec, threads: int, gate: Any,
                calibration: Any) -> PrecisionReport | None:
    """Put another engine's model in the pipeline if it agrees with torch's."""
    from .engines import default_cache_dir, onnx_model
    from .precision import verify_engine

    if spec.dtype not in ("auto", "float32"):
        raise ModelLoadError(f"--engine {spec.engine} runs float32; it cannot serve --dtype {spec.dtype}")
    candidate = onnx_model(pipe, task, spec.model, spec.cache_dir or default_cache_dir(), threads)
    return verify_engine(pipe, task, candidate, gate, calibration=calibration)


def _try_faster_engine(pipe: Any, task: str, spec: ModelSpec, threads: int, gate: Any,
                       calibration: Any) -> PrecisionReport | None:
    """--engine auto: ONNX Runtime where it is installed, serves the task,
    agrees with torch and is faster on the calibration set; else None."""
    from .engines import default_cache_dir, onnx_available, onnx_model
    from .precision import verify_engine

    if not onnx_available(task, pipe):
        return None
    try:
        candidate = onnx_model(pipe, task, spec.model, spec.cache_dir or default_cache_dir(), threads)
        return verify_engine(pipe, task, candidate, gate, must_be_faster=True, calibration=calibration)
    except Exception as exc:  # noqa: BLE001 - an optional speed-up: any failure leaves torch serving
        log.warning("engine auto: keeping torch (%s: %s)", type(exc).__name__, exc)
        return None


def drop_unused_pooler(pipe: Any) -> bool:
    """Stop computing a base model's pooler for feature-extraction.

    The task answers with the last hidden state, yet a BERT-like model runs
    its pooler on every call (docs/design.md#pooler). A probe keeps it where
    the forward needs it or the hidden states would change. Returns whether
    it was dropped.
    """
    import torch

    model = pipe.model
    pooler = getattr(model, "pooler", None)
    if not isinstance(pooler, torch.nn.Module):
        return False
    probe = pipe.preprocess("hello world")
    with torch.inference_mode():
        expected = pipe.forward(probe)[0]
        model.pooler = None
        try:
            same = torch.equal(pipe.forward(probe)[0], expected)
        except Exception:  # noqa: BLE001 - this architecture calls it unconditionally
            same = False
    if not same:
        model.pooler = pooler
    return same
