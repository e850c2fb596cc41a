"""Which asyncio event loop the front-end runs on: uvloop where installed.

Why: on a small box the front-end shares the cores with the worker it
feeds. uvloop (libuv under asyncio's interface) runs the same aiohttp server
with fewer system calls a request: 9% less front-end CPU a request at
concurrency 64, 23% less at concurrency 1 (docs/design.md#event-loop).
Everything the front-end uses of the loop (TCP, pipe readers, signals,
timers, executors) is asyncio's interface, which both loops implement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LOOPS = ("auto", "asyncio", "uvloop")


class LoopUnavailable(RuntimeError):
    """``--loop uvloop`` where uvloop is not installed."""


def loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loop's name and a factory for ``asyncio.Runner``. ``auto``: uvloop
    where it imports (not on Windows), else asyncio's own."""
    if choice not in LOOPS:
        raise ValueError(f"unknown event loop {choice!r}: one of {', '.join(LOOPS)}")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError as exc:
            if choice == "uvloop":
                raise LoopUnavailable("--loop uvloop: uvloop is not installed (pip install uvloop)") from exc
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop
