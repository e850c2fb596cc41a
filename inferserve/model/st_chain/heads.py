"""The modules after the pooling: Dense (any number, with their activation),
LayerNorm and Normalize, as one torch module on the model's device.

They run in float32 whatever the transformer's precision (a few small
matrices; exact vectors). Weights come from the module folder's
``model.safetensors`` or legacy ``pytorch_model.bin``; an activation is a
``torch.nn`` class named by its import path, as sentence-transformers
stores it (nothing outside ``torch.nn`` is imported).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

from ..errors import ModelLoadError
from .reader import HeadSpec


class Heads(torch.nn.Module):
    """Every head but a final Normalize, which the client's ``normalize`` governs."""

    def __init__(self, layers: list[torch.nn.Module]) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.layers(pooled)


class _Normalize(torch.nn.Module):
    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(vectors, p=2, dim=1)


def build_heads(specs: tuple[HeadSpec, ...], device: Any) -> Heads | None:
    """The heads to run after pooling (a final Normalize left out), or None if none."""
    if specs and specs[-1].kind == "normalize":
        specs = specs[:-1]
    if not specs:
        return None
    layers = [_build(spec) for spec in specs]
    return Heads(layers).to(device=device, dtype=torch.float32).eval()


def output_dimension(specs: tuple[HeadSpec, ...], pooled: int) -> int:
    for spec in specs:
        if spec.kind == "dense":
            pooled = int(spec.get("out_features"))
    return pooled


def _build(spec: HeadSpec) -> torch.nn.Module:
    if spec.kind == "normalize":
        return _Normalize()
    if spec.kind == "layer_norm":
        norm = torch.nn.LayerNorm(int(spec.get("dimension")))
        norm.load_state_dict(_strip(_weights(spec.path), "norm."))
        return norm
    linear = torch.nn.Linear(int(spec.get("in_features")), int(spec.get("out_features")),
                             bias=bool(spec.get("bias", True)))
    linear.load_state_dict(_strip(_weights(spec.path), "linear."))
    return torch.nn.Sequential(linear, activation_module(spec.get("activation_function"), spec.path))


def activation_module(path: str | None, where: str) -> torch.nn.Module:
    """The ``torch.nn`` activation class named by ``path`` (none: the identity)."""
    if not path:
        return torch.nn.Identity()
    module_name, _, name = str(path).rpartition(".")
    if not module_name.startswith("torch.nn"):
        raise ModelLoadError(f"{where}: activation {path!r} is not a torch.nn module")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"{where}: unknown activation {path!r}") from exc
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ModelLoadError(f"{where}: activation {path!r} is not a torch.nn module")
    return cls()


def _weights(folder: str) -> dict[str, torch.Tensor]:
    safetensors = os.path.join(folder, "model.safetensors")
    if os.path.isfile(safetensors):
        from safetensors.torch import load_file

        return load_file(safetensors)
    legacy = os.path.join(folder, "pytorch_model.bin")
    if os.path.isfile(legacy):
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise ModelLoadError(f"{folder}: no model.safetensors or pytorch_model.bin")


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key.removeprefix(prefix): value for key, value in state.items()}
