"""The pipelines inferserve writes itself, for the tasks transformers 5
dropped (question answering, seq2seq): on the engine floor beside loading,
which builds them; the tasks drive them like any transformers pipeline."""
