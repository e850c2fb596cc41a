"""Execution engines: what runs the network's forward pass.

``torch`` (the default) runs the transformers model eagerly. ``onnx`` exports
it once with torch's ONNX exporter (cached by model, task and versions) and
runs it with ONNX Runtime; it stands in for the torch model wherever a task
calls it (``pipe.model(**features)`` returning the same named outputs), and
is kept only if its outputs agree with torch float32's on the calibration
set (the precision gate). Generation and encoder-decoder models stay on
torch. Needs ``pip install 'inferserve[onnx]'``. Measurements:
docs/design.md#engines.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any

from .errors import ModelLoadError

log = logging.getLogger("inferserve.worker")

# Tasks whose whole forward pass is one call of the network (no generate loop).
_ONNX_TASKS = frozenset({"feature-extraction", "fill-mask", "text-classification", "text-ranking",
                         "token-classification", "zero-shot-classification", "question-answering",
                         "sparse-embedding"})


def default_cache_dir() -> str:
    return os.environ.get("INFERSERVE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "inferserve")


def onnx_available(task: str, pipe: Any) -> bool:
    """Whether --engine onnx could serve this pipeline here (ONNX Runtime and
    the exporter installed, a task of one forward pass)."""
    import importlib.util

    installed = all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnxscript"))
    return installed and serves(task, pipe)


def onnx_model(pipe: Any, task: str, model_dir: str, cache_dir: str, threads: int) -> Any:
    """The pipeline's network as an ONNX Runtime session (exported if not cached)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelLoadError("--engine onnx needs ONNX Runtime: pip install 'inferserve[onnx]'") from exc
    network = traced_network(pipe, task, "onnx")
    path = os.path.join(cache_dir, "onnx", network.cache_key(model_dir, task) + ".onnx")
    if not os.path.isfile(path):
        _export(network, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    log.info("onnx engine: %s (inputs %s, outputs %s)", path, network.inputs, network.outputs)
    return OnnxRuntimeModel(session, network.model.config, network.output_class, network.inputs, network.outputs)


class ExportedNetwork:
    """An exported engine's network, called like the torch model it replaces:
    named torch tensors in, a ModelOutput with the same named float32 outputs
    back. Subclasses run the feed (``_run``)."""

    def __init__(self, config: Any, output_class: type, inputs: list[str], outputs: list[str]) -> None:
        import torch

        self._inputs = inputs
        self._outputs = outputs
        self._output_class = output_class
        self.config = config
        self.device = torch.device("cpu")
        self.dtype = torch.float32  # what goes in and comes out
        self.pooler = None

    def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None) -> Any:
        import torch

        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if given.get("token_type_ids") is None and "token_type_ids" in self._inputs:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        if given.get("attention_mask") is None and "attention_mask" in self._inputs:
            given["attention_mask"] = torch.ones_like(input_ids)
        results = self._run({name: given[name].cpu().numpy() for name in self._inputs})
        return self._output_class(**{name: torch.from_numpy(value).float()
                                     for name, value in zip(self._outputs, results)})

    __call__ = forward

    def _run(self, feed: dict[str, Any]) -> list[Any]:
        raise NotImplementedError

    def to(self, *args: Any, **kwargs: Any) -> ExportedNetwork:
        return self  # the engine runs what was exported (CPU, its own precision)

    def eval(self) -> ExportedNetwork:
        return self


class OnnxRuntimeModel(ExportedNetwork):
    """An ONNX Runtime session (float32, CPU)."""

    def __init__(self, session: Any, config: Any, output_class: type, inputs: list[str], outputs: list[str]) -> None:
        super().__init__(config, output_class, inputs, outputs)
        self._session = session

    def _run(self, feed: dict[str, Any]) -> list[Any]:
        return self._session.run(self._outputs, feed)


def serves(task: str, pipe: Any) -> bool:
    """Whether an exported engine can run this task's network (one forward
    pass; not a generation loop)."""
    return task in _ONNX_TASKS and not getattr(pipe.model.config, "is_encoder_decoder", False)


@dataclass(frozen=True)
class TracedNetwork:
    """What an engine export needs of the pipeline's float32 torch network:
    the network, a probe batch, its input and output names, its output class."""

    model: Any
    probe: dict[str, Any]
    inputs: list[str]
    outputs: list[str]
    output_class: type

    def cache_key(self, model_dir: str, task: str) -> str:
        return _cache_key(model_dir, task, self.inputs, self.outputs)

    def example(self) -> tuple[Any, ...]:
        """The probe batch, by position (as ``positional`` takes it)."""
        return tuple(self.probe[name] for name in self.inputs)

    def positional(self) -> Any:
        """The network as an exporter traces it: inputs by position, the
        outputs a tuple in ``outputs``' order."""
        import torch

        inputs, outputs = self.inputs, self.outputs
        # A decoder would build its key/value cache inside the trace (OpenVINO cannot convert that);
        # one forward pass needs none.
        options = {"use_cache": False} if "use_cache" in inspect.signature(self.model.forward).parameters else {}

        class _Named(torch.nn.Module):
            def __init__(self, network: Any) -> None:
                super().__init__()
                self.network = network

            def forward(self, input_ids: Any, attention_mask: Any = None,
                        token_type_ids: Any = None) -> tuple[Any, ...]:
                given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
                result = self.network(**{name: given[name] for name in inputs}, **options)
                return tuple(result[name] for name in outputs)

        return _Named(self.model).eval()


def traced_network(pipe: Any, task: str, engine: str) -> TracedNetwork:
    """The pipeline's network, probed once, for ``engine`` (onnx, openvino) to export."""
    if not serves(task, pipe):
        raise ModelLoadError(f"--engine {engine} does not serve {task} (a generation loop); use --engine torch")
    probe = _probe_features(pipe)
    outputs, output_class = _outputs_of(pipe.model, probe)
    return TracedNetwork(pipe.model, probe, list(probe), outputs, output_class)


def _probe_features(pipe: Any) -> dict[str, Any]:
    encoded = pipe.tokenizer(["hello world", "a second, longer probe sentence"], padding=True, return_tensors="pt")
    accepted = set(inspect.signature(pipe.model.forward).parameters)
    # In the order of the export wrapper's arguments.
    return {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded and k in accepted}


def _outputs_of(model: Any, features: dict[str, Any]) -> tuple[list[str], type]:
    """The names of the tensors the model answers with, and its output class."""
    import torch

    with torch.inference_mode():
        output = model(**features)
    return [name for name, value in output.items() if isinstance(value, torch.Tensor)], type(output)


def _cache_key(model_dir: str, task: str, inputs: list[str], outputs: list[str]) -> str:
    import torch
    import transformers

    stamp = [os.path.abspath(model_dir), task, *inputs, *outputs, torch.__version__, transformers.__version__]
    for name in sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []:
        full = os.path.join(model_dir, name)
        if os.path.isfile(full):
            stamp.append(f"{name}:{os.path.getsize(full)}:{int(os.path.getmtime(full))}")
    return hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:24]


def _export(network: TracedNetwork, path: str) -> None:
    """torch's dynamo-based ONNX exporter (the TorchScript one mis-traced
    transformers 5's attention masks: docs/design.md#engines)."""
    import torch

    inputs, outputs = network.inputs, network.outputs
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {name: {0: batch, 1: length} for name in inputs}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{os.getpid()}.tmp"
    log.info("exporting the model to ONNX (once; cached in %s)", os.path.dirname(path))
    try:
        torch.onnx.export(network.positional(), network.example(), partial,
                          input_names=inputs, output_names=outputs, dynamo=True, dynamic_shapes=shapes,
                          external_data=False)
    except Exception as exc:  # noqa: BLE001 - exporters fail in many ways; torch still serves
        raise ModelLoadError(f"ONNX export failed: {exc}") from exc
    os.replace(partial, path)  # atomic: a concurrent worker never reads half a file
