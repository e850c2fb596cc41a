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
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

LOOPS = ("auto", "asyncio", "uvloop")


class LoopUnavailable(RuntimeError):
    """``--loop uvloop`` where uvloop is not installed."""


def loop_factory(choice: str) -> tuple[str, LoopFactory]:
    """The loop's name and a factory of it (for ``run_on``). ``auto``: uvloop
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


def run_on(new_loop: LoopFactory, main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a loop from ``new_loop``: through
    ``asyncio.Runner`` (Python 3.11 on), else by hand as ``asyncio.run`` does."""
    if hasattr(asyncio, "Runner"):
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(main)
    loop = new_loop()  # Python 3.10
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
