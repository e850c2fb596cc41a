"""Worker starts from a helper process that has already imported the worker wing.

A fresh interpreter spends seconds importing torch and transformers
before it can load a model; a restart after a crash paid that again. The
helper (multiprocess's forkserver) imports them once, at server start, and
every worker start or restart is a fork of it: the worker begins with the
imports done. The helper touches no device: it imports modules and nothing
else, so CUDA is initialised only in the forked worker (torch initialises it
lazily, on first use), which keeps forking safe on GPUs.

The front-end names the modules as strings and never imports them itself.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import multiprocess
from multiprocess import forkserver

log = logging.getLogger("inferserve")

# What the helper imports: the worker's entry point, the model wing it runs
# and the libraries underneath (a module that fails to import is skipped
# by the forkserver; the worker then imports it itself).
WORKER_PRELOAD = (
    "torch",
    "transformers",
    "transformers.pipelines",
    "inferserve.worker",
    "inferserve.model.engines",
    "inferserve.model.loading",
    "inferserve.model.precision",
    "inferserve.model.tasks",
    "inferserve.model.serve_loop",
)
# Imported too when a model may run on ONNX Runtime (--engine auto or onnx);
# skipped where not installed.
ONNX_PRELOAD = ("onnxruntime",)


class PreloadedStarts:
    """The helper process workers fork from: ``start`` it with the server,
    hand ``context`` to the worker supervisors, ``stop`` it after them."""

    def __init__(self, modules: tuple[str, ...] = WORKER_PRELOAD) -> None:
        self._modules = modules
        self.context: Any = None

    def start(self) -> None:
        """Start the helper (its imports run in the background: the first
        worker start waits for them, later ones do not)."""
        context = multiprocess.get_context("forkserver")
        context.set_forkserver_preload(list(self._modules))
        forkserver.ensure_running()
        self.context = context
        log.info("worker starts fork from a preloaded helper (process %s)", self.pid)

    @property
    def pid(self) -> int | None:
        return forkserver._forkserver._forkserver_pid  # multiprocess keeps no public accessor

    def stop(self) -> None:
        """End the helper (call after the workers are stopped). Blocking."""
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)  # its own exit waits for every worker's copy of its pipe
        except ProcessLookupError:
            pass
        forkserver._forkserver._stop()
        self.context = None


def forget_helper() -> None:
    """In a forked worker: close its copy of the helper's liveness pipe, so
    the helper ends with the front-end even while workers run (the workers
    then end too: they die with their parent, see ``worker._die_with_parent``)."""
    alive_fd = forkserver._forkserver._forkserver_alive_fd
    if alive_fd is not None:
        try:
            os.close(alive_fd)
        except OSError:
            pass
        forkserver._forkserver._forkserver_alive_fd = None
