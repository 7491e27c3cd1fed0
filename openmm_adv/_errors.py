"""Small helpers for error messages, and errors the command line catches without importing torch."""


class LoopBusyError(RuntimeError):
    """Another process holds the run folder's lock."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (TorchScript messages start blank)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def torchscript_message(exc: BaseException) -> str:
    """TorchScript's complaint in one line: its first line and, when it names one, the source
    line it points at (``File "...", line N: code``).

    A compilation error's first line is often generic ("Arguments for call are not valid."); the
    place it marks with ``<--- HERE`` is what tells a user what to change.
    """
    lines = str(exc).splitlines()
    message = first_line(exc)
    where = next((line.strip() for line in lines if line.strip().startswith('File "')), None)
    marker = next((k for k, line in enumerate(lines) if "<--- HERE" in line), None)
    code = lines[marker - 1].strip() if marker is not None and marker > 0 else None
    if where is not None:
        message += f" ({where}" + (f": {code}" if code else "") + ")"
    return message
