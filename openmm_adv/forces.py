"""OpenMM ``Force`` objects built from a committee.

Every builder works for ``n_replicas`` non-interacting copies of the molecule placed one after
another in a single OpenMM ``System`` (particle ``r * N + i`` is atom ``i`` of replica ``r``),
so B geometries are evaluated in one batched model call. Energies are in kJ/mol; the
uncertainty force's "energy" is the uncertainty metric itself (times ``scale``), so it can be a
collective variable of ``CustomCVForce`` or ``openmm.app.Metadynamics``.

Backends: ``"torch"`` (openmm-torch ``TorchForce``; runs on Reference, CPU and CUDA, with CUDA
graphs on request) and ``"python"`` (``openmm.PythonForce``; for committees that cannot be
TorchScripted, slower).

Domain: these forces compute the committee's raw values everywhere, including geometries out of
its domain (:meth:`Committee.domain_check`), where the uncertainty can be small for no good
reason (0 with every atom beyond the cutoff). A force has to stay finite and smooth for the
integrator, so no flag or ``inf`` is folded into it; the domain is applied where geometries are
judged: :meth:`Committee.uncertainty` and ``evaluate_in_batches`` (``inf``), the selector (never
"confident"), the loop (which re-scores every candidate with ``evaluate_in_batches``) and
:class:`openmm_adv.reporter.UncertaintyReporter` (flags them during MD).
"""

from __future__ import annotations

import math
import warnings
from typing import Tuple

import numpy as np
import openmm
import torch
from torch import Tensor, nn

from ._errors import first_line
from ._torch import require_openmmtorch
from .models.committee import Committee
from .models.uncertainty import check_metric, with_uncertainty
from .units import thermal_energy
from .velocities import set_velocities_to_temperature

__all__ = [
    "adversarial_force",
    "mean_energy_force",
    "uncertainty_force",
    "AdversarialModule",
    "MeanEnergyModule",
    "UncertaintyModule",
    "objective_normalisation",
    "set_velocities_to_temperature",
    "UncertaintyForceWarning",
]

OBJECTIVES = ("log", "linear")


class UncertaintyForceWarning(UserWarning):
    """The uncertainty force heats the system through ``Context.setVelocitiesToTemperature``."""


_UNCERTAINTY_FORCE_WARNING = (
    "the uncertainty force's energy is the committee uncertainty, not a physical energy. In a Context whose "
    "integrator's velocities lag by half a step (LangevinMiddleIntegrator, VerletIntegrator), "
    "context.setVelocitiesToTemperature shifts the velocities with the forces of EVERY force group, this one "
    "included even when the integrator leaves its group out, and heats the system where the committee is unsure "
    "(alanine dipeptide, 300 K, 2 fs: 290 kJ/mol of kinetic energy instead of 82 in the C7ax minimum, 3.5e4 at a "
    "strained geometry). To monitor it, put it in its own force group, leave that group out with "
    "integrator.setIntegrationForceGroups({0}), and set velocities with "
    "openmm_adv.forces.set_velocities_to_temperature(context, T), which shifts them with the integrated groups "
    "only (or set them before this force is added); to log the uncertainty during MD, openmm_adv.reporter.UncertaintyReporter "
    "needs no force at all. (As the collective variable of a bias, e.g. app.Metadynamics, it is safe.)"
)


class _Replicas(nn.Module):
    def __init__(self, potential: nn.Module, n_replicas: int):
        super().__init__()
        if n_replicas < 1:
            raise ValueError(f"n_replicas must be >= 1, got {n_replicas}")
        # Committees saved before single-model uncertainties get the shared interface.
        self.potential = with_uncertainty(potential)
        self.n_replicas = int(n_replicas)
        self.n_atoms = int(potential.n_atoms)

    def _split(self, positions: Tensor) -> Tensor:
        expected = self.n_replicas * self.n_atoms
        if positions.dim() != 2 or positions.shape[0] != expected:
            raise ValueError(
                "the force expects " + str(expected) + " particles (" + str(self.n_replicas) + " replicas x "
                + str(self.n_atoms) + " atoms) but got positions of shape " + str(positions.shape)
            )
        return positions.reshape(self.n_replicas, self.n_atoms, 3)


class MeanEnergyModule(_Replicas):
    """Energy = sum over replicas of the committee-mean energy."""

    def forward(self, positions: Tensor) -> Tensor:
        return self.potential(self._split(positions)).mean(dim=1).sum()


class UncertaintyModule(_Replicas):
    """Energy = ``scale`` * sum over replicas of the uncertainty metric."""

    def __init__(self, potential: nn.Module, n_replicas: int, metric: str, scale: float):
        super().__init__(potential, n_replicas)
        self.metric = check_metric(metric)
        self.scale = float(scale)

    def forward(self, positions: Tensor) -> Tensor:
        u = self.potential.energies_forces_uncertainty(self._split(positions), self.metric, True)[2]
        return self.scale * u.sum()


class AdversarialModule(_Replicas):
    """Energy = minus the adversarial objective, summed over replicas.

    With ``objective="linear"`` (the paper): ``L = U exp(-(E - E_ref)/kT) / Z`` and the energy
    is ``-L`` (in the metric's units). With ``objective="log"``: the energy is
    ``-kT log L = -kT log U + (E - E_ref) + kT log Z`` in kJ/mol, whose gradient does not vanish
    far from the data. ``E`` is the committee-mean energy.
    """

    def __init__(
        self,
        potential: nn.Module,
        n_replicas: int,
        metric: str,
        kT: float,
        energy_reference: float,
        log_partition: float,
        objective: str,
    ):
        super().__init__(potential, n_replicas)
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; use one of {OBJECTIVES}")
        self.metric = check_metric(metric)
        self.kT = float(kT)
        self.energy_reference = float(energy_reference)
        self.log_partition = float(log_partition)
        self.log_objective = objective == "log"

    @torch.jit.export
    def replica_values(self, replicas: Tensor, create_graph: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
        """Per replica: log of the objective, uncertainty and committee-mean energy (each ``[B]``).

        ``create_graph=False`` is enough to monitor values; the force needs ``True``.
        """
        energies, forces, u = self.potential.energies_forces_uncertainty(replicas, self.metric, create_graph)
        mean_energy = energies.mean(dim=1)
        log_l = torch.log(u + 1e-30) - (mean_energy - self.energy_reference) / self.kT - self.log_partition
        return log_l, u, mean_energy

    def forward(self, positions: Tensor) -> Tensor:
        log_l, u, mean_energy = self.replica_values(self._split(positions), True)
        if self.log_objective:
            return -self.kT * log_l.sum()
        return -torch.exp(log_l).sum()


def objective_normalisation(training_energies, kT: float) -> tuple[float, float]:
    """``(E_ref, log Z)`` for the adversarial objective from training-set energies (kJ/mol).

    ``Z = mean_i exp(-(E_i - E_ref)/kT)`` with ``E_ref = min E_i``, evaluated stably.
    """
    e = np.asarray(training_energies, dtype=np.float64)
    if e.size == 0 or not np.isfinite(e).all():
        raise ValueError("training energies for the objective's normalisation must be finite and non-empty")
    e_ref = float(e.min())
    a = -(e - e_ref) / kT
    log_z = float(np.log(np.mean(np.exp(a - a.max()))) + a.max())
    return e_ref, log_z


# ---------------------------------------------------------------------- backends
def _torch_force(module: nn.Module, committee: Committee, use_cuda_graphs: bool) -> openmm.Force:
    openmmtorch = require_openmmtorch()
    if not committee.is_scripted:
        module.potential = with_uncertainty(committee.scripted())
    try:
        scripted = torch.jit.script(module)
    except Exception as exc:
        raise ValueError(
            "the committee force cannot be compiled to TorchScript; use backend='python'. "
            f"TorchScript said: {first_line(exc)}"
        ) from exc
    force = openmmtorch.TorchForce(scripted)
    force.setUsesPeriodicBoundaryConditions(False)
    if use_cuda_graphs:
        force.setProperty("useCUDAGraphs", "true")
    return force


class _PythonComputation:
    """Energy and forces of an eager module, for ``openmm.PythonForce``."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, state: openmm.State):
        xyz = state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)
        positions = torch.tensor(np.asarray(xyz), dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():
            energy = self.module(positions)
            (gradient,) = torch.autograd.grad(energy, positions)
        return float(energy.detach()), -gradient.detach().numpy()


def _python_force(module: nn.Module) -> openmm.Force:
    return openmm.PythonForce(_PythonComputation(module))


def _build(module: nn.Module, committee: Committee, backend: str, force_group: int, use_cuda_graphs: bool) -> openmm.Force:
    if not 0 <= force_group <= 31:
        raise ValueError(f"force_group must be in 0..31, got {force_group}")
    if backend == "torch":
        force = _torch_force(module, committee, use_cuda_graphs)
    elif backend == "python":
        force = _python_force(module)
    else:
        raise ValueError(f"unknown backend {backend!r}; use 'torch' (TorchForce) or 'python' (PythonForce)")
    force.setForceGroup(force_group)
    return force


# ---------------------------------------------------------------------- public builders
def mean_energy_force(
    committee: Committee,
    n_replicas: int = 1,
    force_group: int = 0,
    backend: str = "torch",
    use_cuda_graphs: bool = False,
) -> openmm.Force:
    """A force whose energy is the committee-mean energy (for MD on the committee).

    Parameters
    ----------
    committee : Committee
    n_replicas : int
        Number of non-interacting copies of the molecule in the System.
    force_group : int
    backend : {"torch", "python"}
    use_cuda_graphs : bool
        Capture the model in CUDA graphs (TorchForce on the CUDA platform only).
    """
    module = MeanEnergyModule(committee.potential, n_replicas)
    return _build(module, committee, backend, force_group, use_cuda_graphs)


def uncertainty_force(
    committee: Committee,
    metric: str = "force_variance",
    n_replicas: int = 1,
    scale: float = 1.0,
    force_group: int = 0,
    backend: str = "torch",
    use_cuda_graphs: bool = False,
) -> openmm.Force:
    """A force whose energy is ``scale`` times the committee uncertainty (summed over replicas).

    Use it as a collective variable: ``CustomCVForce`` / ``openmm.app.BiasVariable``.
    ``metric`` is one of ``force_variance``, ``max_force_deviation``, ``energy_std``.

    Warns
    -----
    UncertaintyForceWarning
        Always: in a Context with a leapfrog integrator, ``Context.setVelocitiesToTemperature``
        shifts the velocities with this force's gradient, whatever its force group, and heats
        the system. Use :func:`set_velocities_to_temperature` instead, or
        :class:`~openmm_adv.reporter.UncertaintyReporter` to monitor MD without a force.
    """
    warnings.warn(_UNCERTAINTY_FORCE_WARNING, UncertaintyForceWarning, stacklevel=2)
    committee.check_metric(metric)
    module = UncertaintyModule(committee.potential, n_replicas, metric, scale)
    return _build(module, committee, backend, force_group, use_cuda_graphs)


def adversarial_force(
    committee: Committee,
    kT,
    objective: str = "log",
    metric: str = "force_variance",
    training_energies=None,
    n_replicas: int = 1,
    force_group: int = 0,
    backend: str = "torch",
    use_cuda_graphs: bool = False,
) -> tuple[openmm.Force, AdversarialModule]:
    """A force whose energy is minus the adversarial objective, and its eager module.

    Parameters
    ----------
    committee : Committee
    kT : float or openmm.unit.Quantity
        Sampling temperature as an energy (kJ/mol) or a temperature (K).
    objective : {"log", "linear"}
        ``U exp(-E/kT)/Z`` (``linear``, the paper's) or its logarithm times kT (``log``).
    training_energies : array_like, optional
        Energies that define ``E_ref`` and ``Z``; defaults to the committee's metadata
        ``training_energies``, else ``E_ref = 0`` and ``log Z = 0``.

    Returns
    -------
    force : openmm.Force
    module : AdversarialModule
        The same objective evaluated in Python (``replica_values``), e.g. to track the best
        iterate of an attack.
    """
    kT = thermal_energy(kT)
    committee.check_metric(metric)
    if training_energies is None:
        training_energies = committee.metadata.get("training_energies")
    e_ref, log_z = objective_normalisation(training_energies, kT) if training_energies is not None else (0.0, 0.0)
    module = AdversarialModule(committee.potential, n_replicas, metric, kT, e_ref, log_z, objective)
    force = _build(module, committee, backend, force_group, use_cuda_graphs)
    return force, module
