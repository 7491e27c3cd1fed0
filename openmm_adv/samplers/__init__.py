"""Samplers: each proposes geometries for labelling and reports what that cost."""

from .attack import Attack, AttackResult, AttackSampler
from .candidates import Candidates
from .integrators import attack_integrator, reset_attack_integrator
from .md import CommitteeMDSampler
from .metadynamics import MetadynamicsSampler, UncertaintyMetadynamicsSampler, uncertainty_cv_force
from .random_displacement import RandomDisplacementSampler
from .reference import ReferenceMDSampler
from .torsion_attack import TorsionAttack, TorsionAttackSampler
from .udd import UDDSampler

__all__ = [
    "Attack",
    "AttackResult",
    "AttackSampler",
    "Candidates",
    "CommitteeMDSampler",
    "MetadynamicsSampler",
    "RandomDisplacementSampler",
    "ReferenceMDSampler",
    "TorsionAttack",
    "TorsionAttackSampler",
    "UDDSampler",
    "UncertaintyMetadynamicsSampler",
    "attack_integrator",
    "reset_attack_integrator",
    "uncertainty_cv_force",
]
