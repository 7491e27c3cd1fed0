"""openmm-adv: uncertainty-based adversarial sampling for NN-potential committees in OpenMM.

The public API lives in the submodules: :mod:`openmm_adv.systems`, :mod:`openmm_adv.models`
(``Committee``), :mod:`openmm_adv.forces` (OpenMM force builders), :mod:`openmm_adv.samplers`
(``Attack``), :mod:`openmm_adv.train`, :mod:`openmm_adv.data`, :mod:`openmm_adv.reporter`
(``UncertaintyReporter`` for any ``app.Simulation``). Nothing is imported here, so
``import openmm_adv`` stays cheap.
"""

__version__ = "0.1.0"
