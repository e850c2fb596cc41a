"""The tasks a worker serves, behind the protocols in ``base``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from typing import Any

from ...ipc import FromWorker, ModelFacts, RequestKind
from .base import BatchTask, DirectTask, StreamTask

log = logging.getLogger("inferserve.worker")


@dataclass
class TaskSet:
    """What one loaded model serves, by request kind."""

    name: str  # the model's task, for messages
    batch: dict[RequestKind, BatchTask] = field(default_factory=dict)
    stream: StreamTask | None = None
    # Answered as read, without a batch: /tokenize and /decode.
    direct: dict[RequestKind, DirectTask] = field(default_factory=dict)
    # What the front-end answers about the model (/info's fields), sent in WorkerReady.
    facts: ModelFacts = field(default_factory=ModelFacts)

    def warmup(self) -> None:
        for task in self.batch.values():
            task.warmup()


def build_tasks(
    pipe: Any, task: str, model_dir: str, truncate: bool, send: Callable[[FromWorker], None],
    long_inputs: str | None = None,
) -> TaskSet:
    """The tasks of a loaded pipeline: the pipeline's own, and what its task adds."""
    from .pipeline import PipelineTask

    # A cross-encoder (text-ranking) runs through the text-classification
    # pipeline, a sparse encoder through fill-mask's (its MLM head).
    pipeline_task = {"text-ranking": "text-classification", "sparse-embedding": "fill-mask"}.get(task, task)
    pipeline = PipelineTask(pipe, pipeline_task, truncate=truncate)
    tasks = TaskSet(name=task, batch={RequestKind.PIPELINE: pipeline},
                    facts=ModelFacts(max_input_length=pipeline.max_tokens))
    prompts: dict[str, str] = {}
    if task == "feature-extraction":
        from .embeddings import SentenceEmbeddingTask
        from .token_embeddings import TokenEmbeddingTask

        embedder = SentenceEmbeddingTask(pipe, model_dir, truncate=truncate, long_inputs=long_inputs)
        log.info("sentence embeddings: %s pooling, %d heads, normalize=%s, max %s tokens",
                 embedder.pooling_name, len(embedder.chain.heads), embedder.chain.normalizes, embedder.max_tokens)
        tasks.batch[RequestKind.EMBED] = embedder
        tasks.batch[RequestKind.EMBED_ALL] = TokenEmbeddingTask(embedder)
        tasks.facts = replace(tasks.facts, embedding_dimension=embedder.dimension, max_input_length=embedder.max_tokens,
                              pooling=embedder.pooling_name, sentence_transformers=embedder.sentence_transformers)
        prompts = embedder.prompts
    if task == "sparse-embedding":
        from .sparse import SparseEmbeddingTask

        embedder = SparseEmbeddingTask(pipe, model_dir, truncate=truncate, long_inputs=long_inputs)
        log.info("sparse embeddings: SPLADE %s pooling over %d terms", embedder.chain.splade, embedder.dimension)
        tasks.batch[RequestKind.EMBED_SPARSE] = embedder
        tasks.facts = replace(tasks.facts, max_input_length=embedder.max_tokens, pooling=embedder.pooling_name,
                              sentence_transformers=True, sparse=True)
        prompts = embedder.prompts
    if task in ("feature-extraction", "sparse-embedding"):
        from .similarity import SimilarityTask

        tasks.batch[RequestKind.SIMILARITY] = SimilarityTask(embedder)
        tasks.facts = replace(tasks.facts, similarity_fn_name=embedder.chain.similarity_fn_name,
                              long_inputs=embedder.long_inputs)  # an embedder's: error, truncate or chunk
    if task in ("text-classification", "text-ranking"):  # /info: TEI's classifier / reranker
        labels = getattr(pipe.model.config, "id2label", None) or {}
        tasks.facts = replace(tasks.facts, id2label={int(i): str(label) for i, label in labels.items()})
    if getattr(pipe, "tokenizer", None) is not None:
        from .tokenization import TokenizerTask

        tokenizer = TokenizerTask(pipe.tokenizer, prompts)
        tasks.direct = {RequestKind.TOKENIZE: tokenizer, RequestKind.DECODE: tokenizer}
    if task in ("text-classification", "text-ranking"):
        from .predict import PredictTask

        tasks.batch[RequestKind.PREDICT] = PredictTask(pipe, truncate=truncate)
    if task == "text-ranking":
        from ..st_chain.cross_encoder import read_activation
        from .rerank import RerankTask

        activation = read_activation(model_dir, len(tasks.facts.id2label or {}) or 1)
        tasks.batch[RequestKind.RERANK] = RerankTask(pipe, truncate=truncate, activation=activation)
    if task == "text-generation":
        from .streaming import StreamingTask

        tasks.stream = StreamingTask(pipe, pipeline.parse_params, send)
    return tasks
