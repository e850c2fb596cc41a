"""The tasks a worker serves, behind the protocols in ``base``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from typing import Any

from ...ipc import FromWorker, RequestKind
from .base import BatchTask, StreamTask

log = logging.getLogger("inferserve.worker")


@dataclass
class TaskSet:
    """What one loaded model serves, by request kind."""

    name: str  # the model's task, for messages
    batch: dict[RequestKind, BatchTask] = field(default_factory=dict)
    stream: StreamTask | None = None
    embedding_dimension: int | None = None

    def warmup(self) -> None:
        for task in self.batch.values():
            task.warmup()


def build_tasks(
    pipe: Any, task: str, model_dir: str, truncate: bool, send: Callable[[FromWorker], None]
) -> TaskSet:
    """The tasks of a loaded pipeline: the pipeline's own, and what its task adds."""
    from .pipeline import PipelineTask

    pipeline = PipelineTask(pipe, task, truncate=truncate)
    tasks = TaskSet(name=task, batch={RequestKind.PIPELINE: pipeline})
    if task == "feature-extraction":
        from .embeddings import SentenceEmbeddingTask

        embedder = SentenceEmbeddingTask(pipe, model_dir, truncate=truncate)
        log.info("sentence embeddings: %s pooling, normalize=%s, max %d tokens",
                 embedder.config.mode, embedder.config.normalize, embedder.max_tokens)
        tasks.batch[RequestKind.EMBED] = embedder
        tasks.embedding_dimension = embedder.dimension
    if task == "text-generation":
        from .streaming import StreamingTask

        tasks.stream = StreamingTask(pipe, pipeline.parse_params, send)
    return tasks
