"""The OpenVINO engine: the network converted once, compiled for the CPU.

Like the ONNX engine (engines.py) it stands in for the transformers model
wherever a task calls it (``pipe.model(**features)`` returning the same
output class and named outputs), so the tasks, the heads after the network
and the agreement gate treat it as they treat torch. The network is
converted with ``openvino.convert_model`` from the float32 torch module
(no ONNX exporter needed: the extra is the ``openvino`` package alone),
saved as OpenVINO IR under ``--cache-dir`` (keyed like the ONNX export, by
the model files' sizes and times and the library versions, so a changed
model is converted again) and compiled once per precision hint the CPU
offers: ``f32`` always, ``bf16`` where the CPU does bfloat16. Each compiled
model is a candidate the gate verifies and times against torch float32
(``choose_openvino``). Needs ``pip install 'inferserve[openvino]'``.
Measurements: docs/design.md#openvino.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
from typing import Any

from ..ipc import PrecisionReport
from .engines import ExportedNetwork, TracedNetwork, serves, traced_network
from .errors import ModelLoadError

log = logging.getLogger("inferserve.worker")

# OpenVINO's precision hints and the torch dtype names they stand for.
HINT_DTYPES = {"f32": "float32", "bf16": "bfloat16"}


def openvino_available(task: str, pipe: Any) -> bool:
    """Whether OpenVINO is installed and could run this task's network (one
    forward pass, no generation loop)."""
    return importlib.util.find_spec("openvino") is not None and serves(task, pipe)


def cpu_precision_hints(core: Any) -> list[str]:
    """The hints worth timing on this CPU: f32, and bf16 where the CPU has it."""
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return ["f32", "bf16"] if "BF16" in capabilities else ["f32"]


def compile_options(hint: str, threads: int) -> dict[str, Any]:
    """One stream of ``threads`` (--num-threads) threads, as torch gets: the
    worker computes one batch at a time. Threads not pinned to cores: they
    share the cores with the front-end process, and a pinned thread waits
    for its core where an unpinned one moves (docs/design.md#openvino)."""
    return {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}


def openvino_models(pipe: Any, task: str, model_dir: str, cache_dir: str, threads: int,
                    hints: list[str] | None = None) -> dict[str, OpenVinoModel]:
    """The pipeline's (float32 torch) network compiled once per hint (all
    the CPU offers when ``hints`` is None), converted first if not cached."""
    try:
        import openvino
    except ImportError as exc:
        raise ModelLoadError("--engine openvino needs OpenVINO: pip install 'inferserve[openvino]'") from exc
    traced = traced_network(pipe, task, "openvino")
    model, inputs, outputs, output_class = traced.model, traced.inputs, traced.outputs, traced.output_class
    path = os.path.join(cache_dir, "openvino", cache_key(traced, model_dir, task) + ".xml")
    if not os.path.isfile(path):
        _convert(traced, path)
    core = openvino.Core()
    network = core.read_model(path)
    compiled = {}
    for hint in hints or cpu_precision_hints(core):
        compiled[hint] = OpenVinoModel(core.compile_model(network, "CPU", compile_options(hint, threads)),
                                       model.config, output_class, inputs, outputs, hint)
    log.info("openvino engine: %s (inputs %s, outputs %s, hints %s, %d threads)",
             path, inputs, outputs, list(compiled), threads)
    return compiled


def cache_key(network: TracedNetwork, model_dir: str, task: str) -> str:
    """The ONNX export's key (model files, task, names, torch and
    transformers versions) with OpenVINO's version."""
    import openvino

    stamp = f"{network.cache_key(model_dir, task)}\n{openvino.__version__}"
    return hashlib.sha256(stamp.encode()).hexdigest()[:24]


class OpenVinoModel(ExportedNetwork):
    """An OpenVINO compiled model (CPU, its precision hint)."""

    def __init__(self, compiled: Any, config: Any, output_class: type, inputs: list[str], outputs: list[str],
                 hint: str) -> None:
        super().__init__(config, output_class, inputs, outputs)
        # One request, reused: the worker computes one batch at a time.
        self._request = compiled.create_infer_request()
        self.hint = hint  # what it computes in; float32 goes in and comes out

    def _run(self, feed: dict[str, Any]) -> list[Any]:
        results = self._request.infer(feed)  # copies the outputs: the next call reuses the buffers
        return [results[index] for index in range(len(self._outputs))]


def choose_openvino(pipe: Any, task: str, candidates: dict[str, OpenVinoModel], gate: Any, calibration: Any,
                    to_beat: float | None, requested: str = "auto") -> PrecisionReport | None:
    """Verify every candidate against torch float32 (the gate) and time it
    on the calibration set; swap in the fastest that passes and, with
    ``to_beat`` (the speed-up over float32 torch of what serves now), is
    faster than that too. None (and nothing swapped) if none qualifies."""
    from .precision import verify_engine

    serving = pipe.model
    best: tuple[str, PrecisionReport] | None = None
    for hint, candidate in candidates.items():
        report = verify_engine(pipe, task, candidate, gate, must_be_faster=to_beat is not None,
                               calibration=calibration)
        pipe.model = serving  # verify_engine swaps a candidate in; the fastest is chosen below
        if report is None:
            log.info("openvino %s: not kept (see above)", hint)
            continue
        log.info("openvino %s: %s", hint, report.reason)
        if best is None or (report.speedup or 0.0) > (best[1].speedup or 0.0):
            best = (hint, report)
    if best is None:
        return None
    hint, report = best
    if to_beat is not None and (report.speedup or 0.0) <= to_beat:
        log.info("openvino %s: %.2fx torch float32's speed does not beat the current choice's %.2fx: not used",
                 hint, report.speedup or 0.0, to_beat)
        return None
    pipe.model = candidates[hint]
    return dataclasses.replace(report, dtype=HINT_DTYPES[hint], requested=requested, engine="openvino",
                               precision_hint=hint,
                               reason=f"openvino, precision hint {hint}: {report.reason}")


def _convert(network: TracedNetwork, path: str) -> None:
    """openvino.convert_model from the torch module (traced with the probe,
    every input's batch and length dynamic), saved as IR in float32."""
    import openvino

    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path[:-len('.xml')]}.{os.getpid()}.tmp"
    log.info("converting the model to OpenVINO (once; cached in %s)", os.path.dirname(path))
    root = logging.getLogger()
    # convert_model sets the root logger to ERROR (and adds a filter) and puts it back only when it
    # succeeds: after a failure every later warning of this process, the fallback's first, went unseen.
    logger_state = root.level, list(root.filters), list(root.handlers)
    try:
        network = openvino.convert_model(
            network.positional(), example_input=network.example(),
            input=[(name, openvino.PartialShape([-1, -1]), openvino.Type.i64) for name in network.inputs])
        # Kept in float32: the precision is the compile-time hint's choice.
        openvino.save_model(network, partial + ".xml", compress_to_fp16=False)
    except Exception as exc:  # noqa: BLE001 - converters fail in many ways; torch still serves
        raise ModelLoadError(f"OpenVINO conversion failed: {exc}") from exc
    finally:
        root.setLevel(logger_state[0])
        root.filters[:], root.handlers[:] = logger_state[1], logger_state[2]
    # The weights first, then the graph whose presence marks the cache entry
    # complete: a concurrent worker never reads half of one.
    os.replace(partial + ".bin", path[:-len(".xml")] + ".bin")
    os.replace(partial + ".xml", path)


def openvino_candidates(pipe: Any, task: str, spec: Any, threads: int, device: str) -> dict[str, OpenVinoModel]:
    """The compiled candidates ``spec`` (a ModelSpec) asks for: under
    --engine openvino every hint its --dtype allows; under --engine auto the
    same where OpenVINO is installed and the model is on the CPU. A task or
    model OpenVINO cannot run leaves torch serving, logged. Built from the
    float32 torch network, before any reduced precision replaces it."""
    hints = {"auto": None, "float32": ["f32"], "bfloat16": ["bf16"]}.get(spec.dtype, [])
    from .engines import default_cache_dir

    cache_dir = spec.cache_dir or default_cache_dir()
    if spec.engine == "openvino":
        if device != "cpu":
            raise ModelLoadError(f"--engine openvino runs on the CPU; it cannot serve --device {device}")
        if hints == []:
            raise ModelLoadError(f"--engine openvino computes in float32 or bfloat16, not --dtype {spec.dtype}")
        if importlib.util.find_spec("openvino") is None:
            raise ModelLoadError("--engine openvino needs OpenVINO: pip install 'inferserve[openvino]'")
        if not serves(task, pipe):
            log.warning("--engine openvino does not serve %s (a generation loop): serving with torch", task)
            return {}
    elif spec.engine != "auto" or device != "cpu" or hints == [] or not openvino_available(task, pipe):
        return {}
    try:
        return openvino_models(pipe, task, spec.model, cache_dir, threads, hints)
    except Exception as exc:  # noqa: BLE001 - a model OpenVINO cannot convert or compile: torch serves it
        log.warning("--engine %s: OpenVINO cannot run this model, serving with torch (%s: %s)",
                    spec.engine, type(exc).__name__, exc)
        return {}
