"""An OpenMM ``System`` as the ground truth (the project's default: the system's force field)."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

import numpy as np
import openmm
from openmm import unit

from .base import Oracle

if TYPE_CHECKING:
    from ..systems.base import MolecularSystem

__all__ = ["OpenMMOracle"]

_FORCE_UNIT = unit.kilojoule_per_mole / unit.nanometer


class OpenMMOracle(Oracle):
    """Energies and forces of an OpenMM ``System``.

    Parameters
    ----------
    system : openmm.System
        The ground-truth potential. Positions are taken as they come (virtual sites are
        recomputed from them); a periodic system uses its default box vectors.
    platform : str
        OpenMM platform. ``"Reference"`` (double precision) is exact but slow; ``"CPU"`` is
        faster in mixed precision.
    platform_properties : dict, optional
        E.g. ``{"Precision": "double"}`` for CUDA, ``{"Threads": "1"}`` for CPU.
    name : str
        Provenance name of the labels.

    Notes
    -----
    The ``Context`` is created on first use in each process and is never pickled: an oracle
    sent to a worker process carries the ``System`` (as XML) and builds its own ``Context``.
    """

    _transient = ("_context", "_integrator")

    def __init__(self, system: openmm.System, platform: str = "Reference",
                 platform_properties: dict | None = None, name: str = "openmm"):
        if not isinstance(system, openmm.System):
            raise TypeError(f"system must be an openmm.System, got {type(system).__name__}")
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        if platform not in names:
            raise ValueError(f"OpenMM platform {platform!r} is not available; choose one of {names}")
        super().__init__(name, system.getNumParticles())
        self.system = system
        self.platform = platform
        self.platform_properties = {str(k): str(v) for k, v in (platform_properties or {}).items()}
        # What a worker of a process pool gets; in this process the CPU platform's own default
        # (all cores, or OPENMM_CPU_THREADS) applies unless "Threads" is given.
        self.threads = int(self.platform_properties.get("Threads", 1)) if platform == "CPU" else 1

    @classmethod
    def from_molecular_system(cls, system: "MolecularSystem", platform: str = "Reference",
                              platform_properties: dict | None = None, name: str = "openmm") -> "OpenMMOracle":
        """The ground truth of a :class:`~openmm_adv.systems.base.MolecularSystem`.

        Parameters
        ----------
        system : MolecularSystem
            Its ``create_reference_system()`` supplies the potential.
        platform, platform_properties, name
            As for :class:`OpenMMOracle`.
        """
        if not hasattr(system, "create_reference_system"):
            raise TypeError(
                f"expected an openmm_adv MolecularSystem (e.g. openmm_adv.systems.alanine_dipeptide()), "
                f"got {type(system).__name__}; for a bare openmm.System use OpenMMOracle(system)"
            )
        return cls(system.create_reference_system(), platform, platform_properties, name)

    def _get_context(self) -> openmm.Context:
        if self._context is None:
            # The integrator is never stepped; a Context just needs one. Both are kept on self:
            # a Context outliving its System or integrator crashes OpenMM.
            self._integrator = openmm.VerletIntegrator(0.001)
            self._context = openmm.Context(
                self.system, self._integrator, openmm.Platform.getPlatformByName(self.platform),
                self.platform_properties,
            )
        return self._context

    def _energy_forces(self, positions_nm: np.ndarray) -> tuple[float, np.ndarray]:
        context = self._get_context()
        context.setPositions(positions_nm)
        context.computeVirtualSites()
        state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = state.getForces(asNumpy=True).value_in_unit(_FORCE_UNIT)
        return energy, np.asarray(forces)

    def descriptor(self) -> dict:
        """The oracle's identity: a hash of the serialized ``System`` (its forces and their
        parameters; the OpenMM version that wrote it is left out). Platform and precision are
        not part of it: they change labels by rounding only."""
        xml = re.sub(r'\sopenmmVersion="[^"]*"', "", openmm.XmlSerializer.serialize(self.system))
        return {"kind": "openmm", "n_particles": int(self.system.getNumParticles()),
                "system_sha256": hashlib.sha256(xml.encode()).hexdigest()[:16]}

    def __getstate__(self):
        state = super().__getstate__()
        # openmm.System pickles through XML too; doing it here makes the format explicit.
        state["system"] = openmm.XmlSerializer.serialize(self.system)
        return state

    def __setstate__(self, state):
        state = dict(state)
        state["system"] = openmm.XmlSerializer.deserialize(state["system"])
        super().__setstate__(state)

    def __repr__(self) -> str:
        return f"OpenMMOracle(name={self.name!r}, n_atoms={self.n_atoms}, platform={self.platform!r})"
