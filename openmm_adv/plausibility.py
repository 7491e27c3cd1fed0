"""How far above the lowest label a label may lie before it is refused as implausible."""

from __future__ import annotations

import numpy as np

__all__ = ["SAMPLING_KT", "default_max_label_energy"]

#: kJ/mol: the attack's default sampling temperature (5 kcal/mol, about 2500 K).
SAMPLING_KT = 20.9


def default_max_label_energy(n_atoms: int, kT: float = SAMPLING_KT) -> float | None:
    """The default cap on a label's energy above the lowest label (kJ/mol), or None for
    systems with no vibrations (one- and two-particle toys).

    A molecule of N atoms in the harmonic approximation holds a potential energy above its
    minimum that follows a Gamma distribution of shape ``k = (3N - 6) / 2`` and scale kT. The
    cap is its mean plus three standard deviations at the attack's default sampling
    temperature, ``kT (k + 3 sqrt(k))``: geometries above it are out of reach of the default
    samplers unless bonds break or atoms collide, and a label there spends the fit on what
    no simulation visits. It scales with the molecule: ammonia 171, ethanol 422, alanine
    dipeptide 970 kJ/mol.
    """
    k = (3 * int(n_atoms) - 6) / 2
    if k <= 0:
        return None
    return float(kT * (k + 3 * np.sqrt(k)))
