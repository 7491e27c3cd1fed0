"""openmm-adv: uncertainty-based adversarial sampling for NN-potential committees in OpenMM."""

__version__ = "0.1.0"
