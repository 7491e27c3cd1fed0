"""Oracle functions that misbehave on purpose, importable by worker processes (a small module of
its own, so that a worker unpickling them imports nothing heavy)."""

import os
import time

import numpy as np


def harmonic(x):
    """E = sum |x|^2 (kJ/mol, nm), F = -2x."""
    return float(np.sum(x**2)), -2.0 * x


class Misbehaves:
    """``inner`` (default :func:`harmonic`), except on the structure whose first coordinate is
    ``trigger`` (any structure when None):

    - ``crash``: the worker process exits at once, the first time only (a marker file
      remembers across processes), as a segfaulting code or a lost node would;
    - ``crash_always``: it exits every time;
    - ``hang``: it sleeps for an hour, the first time only when ``marker`` is given.
    """

    def __init__(self, mode, trigger=None, marker=None, inner=harmonic):
        if mode not in ("crash", "crash_always", "hang"):
            raise ValueError(mode)
        self.mode, self.trigger, self.marker, self.inner = mode, trigger, None if marker is None else str(marker), inner

    def _first_time(self) -> bool:
        if self.marker is None:
            return True
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))  # atomic: one process wins
        except FileExistsError:
            return False
        return True

    def __call__(self, x):
        if self.trigger is None or x[0, 0] == self.trigger:
            if self.mode == "crash_always" or (self.mode == "crash" and self._first_time()):
                os._exit(3)
            if self.mode == "hang" and (self.marker is None or self._first_time()):
                time.sleep(3600)
        return self.inner(x)
