"""The protocol between the front-end and a worker process: typed messages.

Every message is a frozen dataclass; ``common.transport`` carries them as
length-prefixed pickle frames over two one-way pipes. Many requests are in
flight at once, matched by ``request_id``. A request has one shape from the
HTTP parser to the worker: a ``Call`` (what is asked), wrapped in an
``InferRequest`` (which request, and until when).
"""

from __future__ import annotations

import enum
import operator
from dataclasses import dataclass, field, fields
from typing import Any, Callable, TypeVar, dataclass_transform

T = TypeVar("T")

# The most characters of an error message sent across the pipe: the client
# reads the gist; a traceback-sized str(exc) belongs in the worker's log.
MAX_ERROR_MESSAGE = 500


@dataclass_transform(frozen_default=True)
def message(cls: type[T]) -> type[T]:
    """A pipe message: a frozen slots dataclass, pickled by its fields."""
    return _pickled_by_fields(dataclass(frozen=True, slots=True)(cls))


def _pickled_by_fields(cls: type[T]) -> type[T]:
    """Pickle a frozen slots dataclass as a call of its constructor.

    Its default pickling stores a state tuple and restores it through a
    ``__setstate__`` that sets each field with ``object.__setattr__``; as a
    constructor call both sides are about twice as fast, and every message
    is pickled once and unpickled once on the path of each request.
    """
    names = tuple(f.name for f in fields(cls))
    # The call passes every field positionally, in order.
    assert all(f.init and not f.kw_only for f in fields(cls)), cls
    if len(names) > 1:
        values: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)
    else:  # attrgetter of one name returns the value itself, not a tuple
        values = lambda instance: tuple(getattr(instance, name) for name in names)  # noqa: E731

    def __reduce__(self: Any) -> tuple[type, tuple[Any, ...]]:
        return (type(self), values(self))

    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls


class Outcome(enum.Enum):
    """How the worker finished a request; the front-end maps it to HTTP."""

    OK = "ok"
    INVALID_INPUT = "invalid_input"  # the model/pipeline rejected this input
    INVALID_PARAMETERS = "invalid_parameters"  # the pipeline rejected `parameters`
    DEADLINE_EXCEEDED = "deadline_exceeded"  # dropped before compute: too late
    INTERNAL = "internal"  # our bug or a device failure


class RequestKind(enum.Enum):
    PIPELINE = "pipeline"  # the transformers pipeline's own output
    EMBED = "embed"  # one pooled sentence embedding per input
    STREAM = "stream"  # text generation, one StreamChunk per token, then the result
    RERANK = "rerank"  # a cross-encoder's score of (query, text) for each text, sorted
    PREDICT = "predict"  # a sequence classifier's score of every label, per text or text pair
    EMBED_ALL = "embed_all"  # TEI /embed_all: every token's vector, per input
    TOKENIZE = "tokenize"  # TEI /tokenize: params add_special_tokens, prompt_name
    DECODE = "decode"  # TEI /decode: inputs are token-id lists; params skip_special_tokens
    EMBED_SPARSE = "embed_sparse"  # TEI /embed_sparse: a SPLADE model's non-zero weights per input
    SIMILARITY = "similarity"  # TEI /similarity: inputs are (source, *sentences); one score per sentence


class AnswerShape(str, enum.Enum):
    """Whose wire shape the worker answers in. A str, so that ``== "openai"``
    still holds where a worker compares it."""

    TEI = "tei"  # TEI's (and the HF Inference API's): a list of vectors or ranks
    OPENAI = "openai"  # OpenAI's embeddings object
    COHERE = "cohere"  # Cohere's (and Jina's) rerank object


@message
class EmbedOptions:
    normalize: bool | None = None  # None: as the model's config says
    dimensions: int | None = None  # keep the first N dimensions
    response: AnswerShape = AnswerShape.TEI  # TEI (a list of vectors) or OPENAI
    encoding_format: str = "float"  # openai: "float" or "base64"
    model_name: str = ""  # openai: echoed as "model"
    truncate: bool | None = None  # over-long inputs: truncate, or 422; None: --no-truncate decides
    truncation_direction: str = "right"  # "right" keeps the start, "left" the end
    prompt_name: str | None = None  # a key of the model's sentence-transformers "prompts"


@message
class RerankOptions:
    """A rerank request's query and answer options; its texts are ``Call.inputs``."""

    query: str
    raw_scores: bool = False  # the logit itself, not its sigmoid
    return_text: bool = False  # TEI return_text / Cohere return_documents
    top_n: int | None = None  # keep the n best (None: all)
    response: AnswerShape = AnswerShape.TEI  # TEI (a list of ranks) or COHERE (Cohere's and Jina's object)
    model_name: str = ""  # cohere: echoed as "model"
    truncate: bool | None = None  # None: as --no-truncate says
    truncate_left: bool = False  # truncate the start of the pair, not its end
    api_version: str = "2"  # cohere: meta.api_version.version


# ---- front-end -> worker -------------------------------------------------


@message
class Call:
    """What one HTTP request asks of the model, as the parser builds it."""

    kind: RequestKind
    inputs: tuple[Any, ...]
    params: dict[str, Any] = field(default_factory=dict)
    # True when the client sent one input (not a list): answer with one output.
    single: bool = False
    embed: EmbedOptions | None = None
    rerank: RerankOptions | None = None


@message
class InferRequest:
    request_id: int
    call: Call
    # Absolute time.monotonic() deadline; CLOCK_MONOTONIC is shared by all
    # processes on the host, so both sides read the same clock.
    deadline: float


@message
class CancelRequest:
    request_id: int


@message
class StopWorker:
    """Finish what is queued, then exit."""


# ---- worker -> front-end -------------------------------------------------


@message
class InferResult:
    request_id: int
    outcome: Outcome
    # OK: the JSON-encoded output, ready to write to the socket (the worker
    # encodes so that the event loop never serialises model outputs).
    body: bytes = b""
    message: str = ""
    batch_size: int = 0
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    # The report of the batch that computed this answer, when the worker
    # sends it along instead of as a message of its own (one frame fewer).
    batch: BatchReport | None = None


@message
class StreamChunk:
    """One generated token of a streaming request; its InferResult ends it."""

    request_id: int
    index: int
    token_id: int
    text: str  # what this token adds to the decoded text (may be "")


@message
class BatchReport:
    """One per model batch actually run: lets the front-end count batches."""

    size: int
    padded_tokens: int
    compute_ms: float
    tokens: int = 0  # the inputs' own tokens: tokens / padded_tokens is the padding efficiency


@message
class PrecisionReport:
    """The precision the worker chose at start-up, and how well it agrees
    with float32 on the calibration set (None where not measured)."""

    dtype: str
    requested: str
    reason: str
    min_cosine: float | None = None
    max_prob_diff: float | None = None
    speedup: float | None = None  # float32's time / this precision's, on the calibration set
    # "measured" at this start, or "remembered" from an earlier measurement
    # (model/choice_cache.py: agreement re-checked, speed not re-timed), made at measured_at (UTC, ISO 8601).
    chosen: str = "measured"
    measured_at: str | None = None
    # Set where another engine serves: its name (openvino) and the precision hint it was compiled with.
    engine: str | None = None
    precision_hint: str | None = None


@message
class CostReport:
    """The worker's fitted cost of one forward pass over n inputs padded to
    L tokens: fixed_ms + per_token_ms * n*L + per_token_squared_ms * n*L*L."""

    fixed_ms: float
    per_token_ms: float
    per_token_squared_ms: float
    measured: bool  # False: the default guess (the model could not be timed)
    samples: int = 0  # grid points timed at warm-up
    seconds: float = 0.0  # how long timing them took
    remembered: bool = False  # True: read back from the remembered choice, not timed at this start


@message
class ModelFacts:
    """What the loaded model is, as the front-end answers about it: the
    worker's ``TaskSet.facts``, sent in ``WorkerReady.facts``."""

    embedding_dimension: int | None = None  # set when the model serves /embed
    # What /info reports in TEI's shape: the most tokens one input may have,
    # the pooling of /embed (TEI's names: mean, cls, ...), a classifier's
    # labels, and whether the model directory is a sentence-transformers one
    # (then POST / answers as /embed does).
    max_input_length: int | None = None
    pooling: str | None = None
    id2label: dict[int, str] | None = None
    sentence_transformers: bool = False
    # A sentence-transformers model's: whether it is a sparse encoder
    # (/embed_sparse, not /embed), its similarity_fn_name (/similarity), and
    # what --long-inputs does with an input past its limit.
    sparse: bool = False
    similarity_fn_name: str | None = None
    long_inputs: str | None = None


@message
class WorkerReady:
    model: str
    task: str
    device: str
    dtype: str
    load_seconds: float
    facts: ModelFacts = ModelFacts()
    precision: PrecisionReport | None = None
    engine: str = "torch"  # what runs the forward pass (model/engines.py)
    cost_model: CostReport | None = None  # what the batcher prices batches with (model/cost_model.py)


@message
class WorkerFailed:
    """The worker could not start (e.g. the model does not load)."""

    message: str


ToWorker = InferRequest | CancelRequest | StopWorker
FromWorker = InferResult | StreamChunk | BatchReport | WorkerReady | WorkerFailed
