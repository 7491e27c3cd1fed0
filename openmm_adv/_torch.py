"""Import order and threading for torch + openmm-torch, in one place."""

from __future__ import annotations

import os

import torch  # must precede openmmtorch, or libnvrtc.so.12 is not found

__all__ = ["configure_threads", "openmmtorch"]

try:
    import contextlib
    import io

    # openmmtorch 1.5 imports the deprecated ``simtk.openmm`` alias, which prints a warning on
    # every run; the alias works, so the line is only noise for users.
    with contextlib.redirect_stderr(io.StringIO()):
        import openmmtorch
except ImportError as exc:  # pragma: no cover - depends on the install
    openmmtorch = None
    _IMPORT_ERROR = exc
else:
    _IMPORT_ERROR = None


def _reload_torch_plugins() -> list[str]:
    """Load openmm-torch's platform plugins if ``import openmm`` ran before ``import torch``.

    OpenMM loads its plugins when it is imported; openmm-torch's need libtorch (and, for the
    PyPI wheel, libnvrtc.so.12) already loaded, so a user script that imports openmm first gets
    no TorchForce kernels. Retrying those plugins now that torch is loaded fixes that.
    """
    import re
    import tempfile

    import openmm

    reloaded = []
    for failure in openmm.Platform.getPluginLoadFailures():
        match = re.match(r"Error loading library (\S*libOpenMMTorch\w+\.(?:so|dylib|dll)):", failure)
        if match is None or "OpenCL" in match.group(1) or not os.path.exists(match.group(1)):
            continue
        # loadPluginsFromDirectory both loads and initialises (registers kernels); a directory
        # holding only this library retries it alone.
        with tempfile.TemporaryDirectory() as tmp:
            os.symlink(match.group(1), os.path.join(tmp, os.path.basename(match.group(1))))
            try:
                reloaded += openmm.Platform.loadPluginsFromDirectory(tmp)
            except Exception:  # pragma: no cover - still broken: TorchForce will say so
                pass
    return reloaded


if openmmtorch is not None:
    _reload_torch_plugins()


def require_openmmtorch():
    if openmmtorch is None:
        raise ImportError(
            "openmm-torch could not be imported, so the 'torch' force backend is unavailable "
            f"({_IMPORT_ERROR}); install openmmtorch==1.5 with torch 2.9.x, or use backend='python'"
        )
    return openmmtorch


def configure_threads(n_threads: int | None = None) -> int:
    """Set torch's intra-op threads deliberately.

    Small molecules gain nothing from many threads and on 2-core machines the default made a
    22-atom double-backward step 25x slower. ``None`` reads ``OPENMM_ADV_THREADS`` and falls back
    to 1.
    """
    if n_threads is None:
        n_threads = int(os.environ.get("OPENMM_ADV_THREADS", "1"))
    if n_threads < 1:
        raise ValueError(f"thread count must be >= 1, got {n_threads}")
    torch.set_num_threads(n_threads)
    return n_threads
