"""Uncertainty-driven dynamics (Kulichenko et al., Nat. Comput. Sci. 3, 230, 2023).

Langevin MD on ``E = committee mean + A [exp(-sigma^2 / (N_atoms B^2)) - 1]`` with
``sigma^2`` the members' energy variance (:func:`~openmm_adv.udd_force.udd_bias_force`): the
bias rewards disagreement up to a depth ``A``. All seeds run as replicas in one Context, as in
:class:`~openmm_adv.samplers.md.CommitteeMDSampler`.
"""

from __future__ import annotations

import time

import numpy as np

from ..models.committee import Committee
from ..udd_force import udd_bias_force
from .candidates import Candidates
from .md import CommitteeMDSampler
from ._replicas import check_seeds, score_frames

__all__ = ["UDDSampler"]


class UDDSampler(CommitteeMDSampler):
    """Uncertainty-driven dynamics from every seed; every physical frame is a candidate.

    Parameters
    ----------
    A : float
        Bias depth in kJ/mol (default 10 kJ/mol, about 4 kT at 300 K).
    B : float, optional
        Energy scale in kJ/mol per atom^0.5. ``None`` (default) chooses it per call from the
        seeds: ``sqrt(N_atoms) B = B_auto_factor x RMS(seed energy std)``, i.e. the bias
        saturates at ``B_auto_factor`` times the committee's typical disagreement on the data.
        That keeps the bias's strength the same as the committee improves from generation to
        generation (its disagreement on the data shrinks); pass a number to fix B instead.
    B_auto_factor : float
    n_members_in_denominator : bool
        apax's convention: divide ``sigma^2`` by ``M N_atoms B^2``.
    metric : str
        The uncertainty the candidates carry (default ``force_variance``).
    lower, upper : float, optional
        Optional trust window on ``metric`` (default: none, all physical frames).
    temperature, timestep, n_steps, report_interval, friction, system, batch_size, geometry_check,
    platform, platform_properties, backend, use_cuda_graphs, scoring_batch_size, progress
        As for :class:`~openmm_adv.samplers.md.CommitteeMDSampler`.

    Notes
    -----
    Cost: ``n_force_evaluations`` = replicas x steps run + one per scored frame (+ one per seed
    when B is chosen automatically). The UDD force needs only first derivatives, so a step costs
    what a committee-MD step costs. ``info``: ``step``, ``replica``, ``bias`` (kJ/mol) and
    ``energy_std`` (kJ/mol) per candidate, ``A``, ``B``, ``n_exploded``, ``n_unphysical``.
    """

    name = "udd"

    def __init__(
        self,
        A: float = 10.0,
        B: float | None = None,
        B_auto_factor: float = 3.0,
        n_members_in_denominator: bool = False,
        temperature=300.0,
        timestep=0.0005,
        n_steps: int = 2000,
        report_interval: int = 50,
        friction=1.0,
        metric: str = "force_variance",
        lower: float | None = None,
        upper: float | None = None,
        system=None,
        batch_size: int | None = None,
        geometry_check=None,
        platform="CPU",
        platform_properties: dict | None = None,
        backend: str = "torch",
        use_cuda_graphs: bool = False,
        scoring_batch_size: int = 256,
        progress: bool = True,
    ):
        super().__init__(
            temperature=temperature, timestep=timestep, n_steps=n_steps, report_interval=report_interval,
            friction=friction, lower=lower, upper=upper, metric=metric, system=system, batch_size=batch_size,
            geometry_check=geometry_check, platform=platform, platform_properties=platform_properties,
            backend=backend, use_cuda_graphs=use_cuda_graphs, scoring_batch_size=scoring_batch_size,
            progress=progress,
        )
        if not A >= 0:
            raise ValueError(f"A must be >= 0 kJ/mol, got {A}")
        if B is not None and not B > 0:
            raise ValueError(f"B must be > 0, got {B}")
        if not B_auto_factor > 0:
            raise ValueError(f"B_auto_factor must be > 0, got {B_auto_factor}")
        self.A = float(A)
        self.B = None if B is None else float(B)
        self.B_auto_factor = float(B_auto_factor)
        self.n_members_in_denominator = bool(n_members_in_denominator)
        self.options.update(A=self.A, B=self.B, B_auto_factor=self.B_auto_factor,
                            n_members_in_denominator=self.n_members_in_denominator)

    def choose_B(self, committee: Committee, seeds: np.ndarray) -> float:
        """``B`` for these seeds (the fixed one, or the automatic rule)."""
        if self.B is not None:
            return self.B
        variance = committee.energies(seeds).var(axis=1)
        rms_std = float(np.sqrt(np.mean(variance)))
        rms_std = max(rms_std, 1e-6)  # members that agree exactly: any small scale will do
        return self.B_auto_factor * rms_std / np.sqrt(committee.n_atoms)

    def sample(self, committee: Committee, seeds, rng: np.random.Generator | None = None) -> Candidates:
        """Run UDD from every seed ``[S, N, 3]`` (nm); return the physical frames (in the window)."""
        start = time.perf_counter()
        rng = np.random.default_rng() if rng is None else rng
        seeds = check_seeds(seeds, committee.n_atoms)
        B = self.choose_B(committee, seeds)
        n_evals = 0 if self.B is not None else len(seeds)
        run = self._run_md(committee, seeds, rng, lambda n: udd_bias_force(
            committee, self.A, B, n_replicas=n, n_members_in_denominator=self.n_members_in_denominator,
            backend=self.backend, use_cuda_graphs=self.use_cuda_graphs))
        frames = run["frames"]
        energies, u, variance = score_frames(committee, frames, self.metric, self.scoring_batch_size)
        n_evals += run["n_evals"] + len(frames)
        scale = committee.n_atoms * B**2 * (committee.n_members if self.n_members_in_denominator else 1)
        bias = self.A * (np.exp(-variance / scale) - 1.0)
        return self._window_candidates(run, energies, u, n_evals, start, {
            "bias": bias, "energy_std": np.sqrt(variance), "A": self.A, "B": float(B),
        })

