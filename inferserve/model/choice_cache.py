"""The precision and engine choice, remembered across starts.

Timing float32 against the reduced precisions and engines costs seconds at
every start, and gives a different figure each time on a busy machine. The
choice is written under ``--cache-dir`` (``choices/KEY.json``), keyed by
what decides it: the model's files (names, sizes, modification times),
the versions of torch, transformers and the optional engines, the device
(the CPU's model and flags, or the GPU's name), and the request (task,
--dtype, --engine, the agreement gate, the thread count). A restart or a
second worker applies the remembered choice and re-runs only the agreement
check on the calibration outputs (no timing loops); a choice that no
longer agrees, or cannot be applied, is measured again.

The record is generic: an engine name, a dtype, the report, and room for
what other choices want stored beside them (``extra``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from ..common.config import ModelSpec
from ..ipc import PrecisionReport

log = logging.getLogger("inferserve.worker")

# Packages whose versions can change a choice (those not installed count as absent).
_VERSIONED = ("torch", "transformers", "onnxruntime", "openvino")
_FORMAT = 1  # bump when the record's meaning changes: old records are then ignored


@dataclass(frozen=True)
class Choice:
    """What a start chose: the engine running the forward pass, and the report."""

    engine: str
    precision: PrecisionReport
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


class ChoiceCache:
    """One model's remembered choice, for this machine, versions and request."""

    def __init__(self, spec: ModelSpec, task: str, device: str, threads: int) -> None:
        from .engines import default_cache_dir

        self._spec = spec
        self._task = task
        self._threads = threads
        self.key = choice_key(spec, task, device, threads)
        self.path = os.path.join(spec.cache_dir or default_cache_dir(), "choices", f"{self.key}.json")
        self._untrusted = False  # it was timed on a busy machine: nothing of this start is written

    def recall(self) -> Choice | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                record = json.load(f)
            if record.get("format") != _FORMAT:
                return None
            return Choice(record["engine"], PrecisionReport(**record["precision"]), record.get("extra") or {})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring the remembered precision choice %s (%s)", self.path, exc)
            return None

    def remember(self, choice: Choice) -> Choice:
        """Store a measured choice; returns it stamped with when it was measured."""
        stamped = dataclasses.replace(choice, precision=dataclasses.replace(
            choice.precision, chosen="measured", measured_at=_now()))
        self._write(stamped)
        return stamped

    def _write(self, choice: Choice) -> None:
        """Write the record, unless the timings it holds (the choice's, or the
        cost model's written beside it) were taken on a busy machine: timed
        while other work shared the cores (a slower engine looking faster, a
        cost model all fixed cost), they would be kept for good; the next
        start measures again instead."""
        busy = machine_busy()  # every write holds timings taken at this start
        if busy is not None or self._untrusted:
            if busy is not None and not self._untrusted:
                log.warning("the machine was busy while timing (%s): this choice is not remembered, "
                            "the next start measures again", busy)
            self._untrusted = True
            return
        precision = dataclasses.replace(choice.precision, chosen="measured")  # what a later start reads
        record = {"format": _FORMAT, "engine": choice.engine, "precision": dataclasses.asdict(precision),
                  "extra": choice.extra}
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            partial = f"{self.path}.{os.getpid()}.tmp"
            with open(partial, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
            os.replace(partial, self.path)  # atomic: two workers writing at once each leave a whole file
        except OSError as exc:
            log.warning("cannot remember the precision choice in %s (%s): the next start measures again",
                        self.path, exc)

    def remember_beside(self, choice: Choice, name: str, value: Any) -> Choice:
        """Store ``value`` (JSON) under ``extra[name]`` of the remembered choice,
        keeping when the choice itself was measured (the batch cost model
        is timed after warm-up, once the choice is made)."""
        updated = dataclasses.replace(choice, extra={**choice.extra, name: value})
        self._write(updated)
        return updated

    def reuse(self, pipe: Any, gate: Any, calibration: Any) -> Choice | None:
        """Apply the remembered choice to ``pipe`` if there is one and it still
        agrees with float32 torch on the calibration set; else None (nothing changed)."""
        choice = self.recall()
        if choice is None:
            return None
        try:
            candidate = self._candidate(pipe, choice)
        except Exception as exc:  # noqa: BLE001 - any failure: measure again
            log.warning("cannot apply the remembered choice (%s: %s): measuring again", type(exc).__name__, exc)
            return None
        if candidate is not None:
            from .precision import agrees

            if agrees(calibration, self._task, candidate, gate) is False:
                log.warning("the remembered choice (%s, %s) no longer agrees with float32: measuring again",
                            choice.engine, choice.precision.dtype)
                return None
            pipe.model = candidate
        log.info("precision and engine remembered from %s (measured %s): %s, %s",
                 self.path, choice.precision.measured_at, choice.engine, choice.precision.dtype)
        return dataclasses.replace(choice, precision=dataclasses.replace(choice.precision, chosen="remembered"))

    def _candidate(self, pipe: Any, choice: Choice) -> Any:
        """The model the choice runs (None: float32 torch, the model as loaded)."""
        import torch

        if choice.engine == "onnx":
            from .engines import default_cache_dir, onnx_model

            return onnx_model(pipe, self._task, self._spec.model, self._spec.cache_dir or default_cache_dir(),
                              self._threads)
        if choice.engine == "openvino":
            from .engines import default_cache_dir
            from .openvino_engine import openvino_models

            hint = choice.precision.precision_hint or "f32"
            return openvino_models(pipe, self._task, self._spec.model, self._spec.cache_dir or default_cache_dir(),
                                   self._threads, [hint])[hint]
        if choice.engine != "torch":
            raise ValueError(f"no way to rebuild engine {choice.engine!r} here")
        if choice.precision.dtype == "float32":
            return None
        # A copy: the float32 model stays the reference until the check passes.
        return copy.deepcopy(pipe.model).to(getattr(torch, choice.precision.dtype))


def machine_busy() -> str | None:
    """Why timings taken now are not worth keeping (more runnable work than
    1.5x the cores over the last minute), or None."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    return f"load average {load:.1f} on {cores} cores" if load > 1.5 * cores else None


def choice_key(spec: ModelSpec, task: str, device: str, threads: int) -> str:
    parts = {
        "format": _FORMAT,
        "model": _model_files(spec.model),
        "versions": {name: _version(name) for name in _VERSIONED},
        "device": _device_identity(device),
        "request": {"task": task, "dtype": spec.dtype, "engine": spec.engine, "min_cosine": spec.min_cosine,
                    "max_prob_diff": spec.max_prob_diff, "threads": threads},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _model_files(model: str) -> Any:
    """Every file under a model directory by name, size and modification
    time (a hub id, with no directory here, by its name only)."""
    if not os.path.isdir(model):
        return model
    files = []
    for root, dirs, names in os.walk(model):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            stat = os.stat(path)
            files.append((os.path.relpath(path, model), stat.st_size, stat.st_mtime_ns))
    return [os.path.abspath(model), files]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device_identity(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        return f"{torch.cuda.get_device_name(index)} {torch.cuda.get_device_capability(index)}"
    model_name, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and not model_name:
                    model_name = line.partition(":")[2].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.partition(":")[2].strip()
    except OSError:
        pass
    return f"{device} {model_name} {hashlib.sha256(flags.encode()).hexdigest()[:16]}"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
