"""Start a process's entry point by name, so the parent never imports it.

The front-end spawns workers with ``run_entry_point`` as the target and
``"inferserve.worker:worker_main"`` as its first argument: the spawned
child imports the worker module, the front-end only this one.
"""

from __future__ import annotations

import importlib
from typing import Any


def run_entry_point(target: str, *args: Any) -> Any:
    """Call ``module:function`` with ``args`` (in the spawned process)."""
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)(*args)
