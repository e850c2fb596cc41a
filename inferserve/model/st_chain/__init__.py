"""A sentence-transformers model directory, read as the chain it declares.

``reader`` turns ``modules.json`` (and the files it points at) into a typed
description; ``pooling``, ``heads`` and ``splade`` compute what each module
computes, on the device, batched, the way sentence-transformers does.
"""
