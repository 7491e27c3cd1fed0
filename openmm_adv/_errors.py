"""Small helpers for error messages."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (TorchScript messages start blank)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
