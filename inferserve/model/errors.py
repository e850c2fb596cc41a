"""The worker's exception types. ``InputRejected`` and ``ParametersRejected``
are the client's fault (answered 422); ``ModelLoadError`` stops start-up."""


class InputRejected(Exception):
    """The model or pipeline rejected an input (422)."""


class ParametersRejected(Exception):
    """The task does not take the request's parameters (422)."""


class ModelLoadError(Exception):
    """The model cannot be loaded; the message is safe to log."""


def too_long(tokens: int, limit: int, what: str = "input is") -> InputRejected:
    """The one wording of "longer than the model takes" (TEI's sense of it)."""
    return InputRejected(f"{what} {tokens} tokens long; the model takes at most {limit}")
