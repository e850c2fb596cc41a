"""Whether a model named by a filesystem path is there: checked by the CLI
before any process starts and again by the worker (a config built in code
skips the CLI); a name that is not a path may be a hub id, which only the
worker's transformers can resolve."""

from __future__ import annotations

import os


def missing_local_model(model: str) -> str | None:
    """The error for a path-like ``model`` (absolute, ./, ../, ~) that does
    not exist; None where it exists or is not a path."""
    path = os.path.expanduser(model)
    if (os.path.isabs(path) or model.startswith(("./", "../", "~"))) and not os.path.exists(path):
        return f"no model at {model!r}: no such file or directory (README.md#get-a-model)"
    return None
