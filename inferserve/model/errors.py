"""The worker's exception types. ``InputRejected`` and ``ParametersRejected``
are the client's fault (answered 422); ``ModelLoadError`` stops start-up."""


class InputRejected(Exception):
    """The model or pipeline rejected an input (422)."""


class ParametersRejected(Exception):
    """The task does not take the request's parameters (422)."""


class ModelLoadError(Exception):
    """The model cannot be loaded; the message is safe to log."""
