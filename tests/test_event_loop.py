"""The front-end's event loop: uvloop where installed, asyncio's otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from inferserve.frontend.event_loop import LoopUnavailable, loop_factory


def _loop_class(factory) -> type:
    loop = factory()
    try:
        return type(loop)
    finally:
        loop.close()


def test_auto_takes_uvloop_where_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    name, factory = loop_factory("auto")
    assert name == "uvloop" and issubclass(_loop_class(factory), uvloop.Loop)


def test_without_uvloop_auto_falls_back_to_asyncio_and_uvloop_is_refused(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    name, factory = loop_factory("auto")
    assert name == "asyncio" and _loop_class(factory) is type(asyncio.new_event_loop())
    with pytest.raises(LoopUnavailable, match="uvloop is not installed"):
        loop_factory("uvloop")


def test_asyncio_is_asyncio_even_with_uvloop_installed() -> None:
    name, factory = loop_factory("asyncio")
    assert name == "asyncio" and "uvloop" not in _loop_class(factory).__module__


def test_asking_for_a_missing_uvloop_is_one_line_and_exit_2(monkeypatch, capsys) -> None:
    from inferserve.__main__ import main

    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert main(["--loop", "uvloop"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "inferserve: cannot serve: --loop uvloop: uvloop is not installed (pip install uvloop)\n"


@pytest.mark.parametrize("choice", ["asyncio", "auto"])
def test_run_on_runs_a_coroutine_to_its_result_on_the_chosen_loop(choice: str) -> None:
    from inferserve.frontend.event_loop import run_on

    name, factory = loop_factory(choice)

    async def which_loop() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    assert ("uvloop" in run_on(factory, which_loop())) == (name == "uvloop")
