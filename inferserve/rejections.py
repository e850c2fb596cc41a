"""Client-caused failures the worker reports as 422 (no torch import here, so
the front-end can import the worker module without loading torch)."""


class InputRejected(Exception):
    """The pipeline rejected an input (the client's fault: 422)."""


class ParametersRejected(Exception):
    """The pipeline rejected the request's parameters (422)."""
