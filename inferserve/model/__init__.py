"""The worker wing: everything here runs in the model (worker) process,
which owns the device. Knows nothing of HTTP; imports torch and
transformers only inside functions the worker calls."""
