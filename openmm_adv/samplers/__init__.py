"""Samplers: each proposes geometries for labelling and reports what that cost."""

from .attack import Attack, AttackResult, AttackSampler
from .candidates import Candidates
from .integrators import attack_integrator, reset_attack_integrator

__all__ = ["Attack", "AttackResult", "AttackSampler", "Candidates", "attack_integrator", "reset_attack_integrator"]
