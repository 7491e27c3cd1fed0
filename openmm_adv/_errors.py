"""Small helpers for error messages, and errors the command line catches without importing torch."""


class LoopBusyError(RuntimeError):
    """Another process holds the run folder's lock."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (TorchScript messages start blank)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
