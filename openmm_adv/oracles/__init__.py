"""Ground-truth oracles: positions ``[B, N, 3]`` (nm) -> energies (kJ/mol) and forces (kJ/mol/nm).

``oracle.compute(positions)`` labels a batch in this process; ``oracle.label(positions,
n_workers=4)`` does it in a process pool. Either way a structure that fails (an exception,
a non-converged SCF, non-finite results) is recorded in :class:`Labels` and the batch goes on.

Oracles: :class:`OpenMMOracle` (the system's force field, the default), :class:`XTBOracle`
(GFN2-xTB, needs tblite), :class:`ASEOracle` (any ASE calculator), :class:`AnalyticOracle`
(Python functions and the 2D toys); :func:`make_oracle` builds one from a config.

Importing this package loads OpenMM but not torch, tblite, ASE or sympy, so that worker
processes unpickling an oracle start quickly.
"""

from .analytic import AnalyticOracle
from .ase_oracle import ASEOracle
from .base import Labels, Oracle
from .factory import make_oracle
from .openmm_oracle import OpenMMOracle
from .xtb import XTBOracle

__all__ = ["ASEOracle", "AnalyticOracle", "Labels", "OpenMMOracle", "Oracle", "XTBOracle", "make_oracle"]
