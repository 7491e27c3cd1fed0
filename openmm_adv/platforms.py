"""Which OpenMM platforms run on this machine, checked before a command does any work."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["available_platforms", "check_platform"]

#: Platforms that need a device and a driver: registered is not enough, a Context must start.
_DEVICE_PLATFORMS = ("CUDA", "OpenCL", "HIP")


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms registered in this process."""
    import openmm

    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


@lru_cache(maxsize=None)
def _start_failure(name: str) -> str | None:
    """Why a one-particle Context cannot be created on platform ``name``, or None when it can."""
    import openmm

    from ._errors import first_line

    system = openmm.System()
    system.addParticle(1.0)
    integrator = openmm.VerletIntegrator(0.001)
    try:
        context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(name))
    except Exception as exc:  # OpenMMException: no device, no driver, a broken installation
        return first_line(exc)
    del context
    return None


def check_platform(name: str, where: str = "platform") -> str:
    """Return ``name`` when OpenMM can run on that platform here, else raise ``ValueError``
    naming the platforms that are available.

    A device platform (CUDA, OpenCL, HIP) is also started once (a one-particle Context), since
    a registered CUDA platform on a machine without a GPU fails only when used.
    """
    names = available_platforms()
    usable = [n for n in names if n not in _DEVICE_PLATFORMS or _start_failure(n) is None]
    if name not in names:
        raise ValueError(f"{where}: OpenMM platform {name!r} is not available on this machine; use one of "
                         f"{', '.join(usable)}")
    if name in _DEVICE_PLATFORMS:
        failure = _start_failure(name)
        if failure is not None:
            raise ValueError(f"{where}: OpenMM platform {name!r} is installed but cannot start here ({failure}); "
                             f"use one of {', '.join(usable)}")
    return name
