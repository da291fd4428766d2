"""The one error type of the local stack: its message says what went wrong and what to do next."""


class StackError(RuntimeError):
    """A service could not be started, reached or stopped; `str(err)` is written for the user."""
