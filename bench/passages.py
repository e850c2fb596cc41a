"""Real English text of mixed lengths, from a source every Python ships:
the docstrings of the standard library, read in a fixed order and cut into
passages of a chosen number of words (seeded: the same texts every run).

    passages(256)                 # 20-250 words each, uniform
    queries(256)                  # ~10 words each (8-12)
"""

from __future__ import annotations

import ast
import random
import sysconfig
from pathlib import Path

# A fixed list, not a directory walk: the same words whatever else is installed.
_MODULES = ("argparse", "asyncio/events", "collections/__init__", "concurrent/futures/_base", "csv", "datetime",
            "decimal", "difflib", "email/message", "fractions", "functools", "heapq", "http/client",
            "inspect", "ipaddress", "json/__init__", "logging/__init__", "pathlib", "pickle", "shutil",
            "statistics", "string", "subprocess", "tarfile", "textwrap", "threading", "typing", "unittest/case",
            "urllib/parse", "zipfile")


def words() -> list[str]:
    """Every docstring's words of the modules above, in order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found: list[str] = []
    for name in _MODULES:
        path = stdlib / f"{name}.py"
        if not path.exists():
            path = stdlib / name / "__init__.py"
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    found.extend(w for w in doc.split() if w.isprintable())
    if len(found) < 5000:
        raise RuntimeError(f"only {len(found)} docstring words under {stdlib}: is the standard library's source there?")
    return found


def cut(count: int, low: int, high: int, seed: int, mask: bool = False) -> list[str]:
    """``count`` passages of ``low``-``high`` words (uniform), taken in turn
    from the docstrings; with ``mask`` the third word is [MASK] (fill-mask)."""
    source = words()
    rng = random.Random(seed)
    texts, at = [], rng.randrange(len(source))
    for _ in range(count):
        n = rng.randint(low, high)
        if at + n > len(source):
            at = 0
        chunk = source[at:at + n]
        at += n
        if mask:  # early, so that truncation to a model's limit keeps it
            chunk[2] = "[MASK]"
        texts.append(" ".join(chunk))
    return texts


def passages(count: int, low: int = 20, high: int = 250, seed: int = 27, mask: bool = False) -> list[str]:
    return cut(count, low, high, seed, mask)


def queries(count: int, seed: int = 10, mask: bool = False) -> list[str]:
    return cut(count, 8, 12, seed, mask)
