"""The raw limit of a sentence-transformers model: its own ``encode()``
(SentenceTransformer, or SparseEncoder for task sparse-embedding), what a
user runs without a server. bench.raw ``--mode st``; float32 torch only.
sentence-transformers is a bench and test dependency, never the server's."""

from __future__ import annotations

from bench.raw import RawPipeline


class RawSentenceTransformer(RawPipeline):
    def __init__(self, model: str, task: str, texts: list[str], device: str = "cpu", dtype: str = "auto",
                 engine: str = "torch", cache_dir: str | None = None) -> None:
        import transformers

        if engine != "torch" or dtype not in ("auto", "float32"):
            raise SystemExit("--mode st runs float32 torch only")
        transformers.utils.logging.disable_progress_bar()
        from sentence_transformers import SentenceTransformer, SparseEncoder

        self.model_dir, self.task, self.device, self.engine = model, task, device, engine
        encoder_class = SparseEncoder if task == "sparse-embedding" else SentenceTransformer
        self.encoder = encoder_class(model, device=device)
        self.dtype = "float32"
        self.texts = texts
        self.pipe = self._encode
        self.warm_up()

    def _encode(self, texts, batch_size: int = 1):
        return self.encoder.encode(texts, batch_size=batch_size, show_progress_bar=False)

    def agree(self, count: int | None = None, batch_size: int = 32) -> dict:
        return {"min_cosine": 1.0, "max_prob_diff": None, "texts": len(self.texts[:count]), "reference": "itself"}
