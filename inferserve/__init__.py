"""inferserve: one Hugging Face model behind HTTP, with dynamic batching."""

__version__ = "0.1.0"
