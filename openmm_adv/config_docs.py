"""One line of help per config key, printed by ``openmm-adv config KIND`` beside each default.

Keyed by config class and field; a subclass finds the lines of its bases. A test checks that
every key of every command's config has its line.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass

import yaml

__all__ = ["KEY_HELP", "help_for", "commented_yaml"]

_DYNAMICS = {
    "temperature": "thermostat temperature (K)",
    "timestep": "MD time step (ps); no constraints, so 0.0005 for hydrogens",
    "n_steps": "MD steps per seed",
    "report_interval": "steps between the frames kept as candidates",
    "friction": "Langevin friction (1/ps)",
    "metric": "uncertainty metric of the candidates: force_variance (every method), max_force_deviation or energy_std (committees), gmm_error or gmm_nll (gmm), aleatoric_variance (evidential)",
    "platform": "OpenMM platform: Reference, CPU or CUDA",
}
_METADYNAMICS = {
    "height": "initial Gaussian height (kJ/mol)",
    "bias_factor": "well-tempered bias factor (> 1)",
    "frequency": "steps between Gaussian depositions",
    "n_walkers": "walkers sharing one bias, batched in one Context (null: one per seed)",
    "walker_temperatures": "walker k runs at walker_temperatures[k % len] in K, e.g. [300, 500] (null: all at temperature)",
}

KEY_HELP: dict[str, dict[str, str]] = {
    "SystemConfig": {
        "name": "a shipped system (alanine_dipeptide, ammonia, double_well, mueller_brown; null: alanine_dipeptide) or a label for your files (null: the file's stem)",
        "structure": "your molecule: PDB, PDBx/mmCIF, xyz/extxyz, or any file mdtraj reads with its topology",
        "forcefield": "OpenMM force-field XMLs (e.g. [amber14-all.xml]): the reference potential and 'openmm' oracle",
        "system_xml": "or a serialized OpenMM System of the structure's atoms: the reference potential",
        "charge": "total charge for xtb (null: the extxyz header's, else 0)",
        "multiplicity": "spin multiplicity 2S+1 for xtb (null: the extxyz header's, else 1)",
        "cvs": "collective variables: name: {dihedral: [a, b, c, d]} | {distance: [a, b]} | {coordinate: a, axis: x}",
    },
    "DataConfig": {
        "path": "labelled dataset (.h5 or labelled extxyz); default = the shipped alanine dipeptide frames",
        "max_frames": "use a random subset of this many frames (null: all)",
        "seed": "random seed of that subset",
    },
    "OracleConfig": {
        "kind": "ground truth: openmm (the system's force field), xtb (GFN2-xTB), ase (a calculator), analytic (toys)",
        "options": "oracle options, e.g. {platform: CPU} for openmm, {method: GFN2-xTB, threads: 1} for xtb",
        "workers": "label with this many workers: local processes, or dask workers with executor.kind dask",
        "timeout": "seconds one structure may take; a hang is recorded as a failure and its worker killed (null: no limit)",
        "executor": "where the workers run: a local process pool (the default) or a dask cluster",
        "allow_mixed": "let labels of another oracle join a dataset labelled by this one (normally refused)",
    },
    "ExecutorConfig": {
        "kind": "process (a pool of processes on this machine) or dask (a dask.distributed cluster; pip install 'openmm-adv[dask]')",
        "cluster": "dask: local (LocalCluster), address (a running scheduler), or slurm, pbs, sge, lsf, htcondor, moab, oar (dask-jobqueue)",
        "address": "dask scheduler address for cluster: address, e.g. tcp://host:8786",
        "threads_per_worker": "threads of each LocalCluster worker (jobqueue: cores/processes in options)",
        "retries": "reruns of a task whose worker died before it is recorded as failed",
        "options": "keyword arguments of LocalCluster or the jobqueue cluster (cores, memory, queue, account, walltime, ...)",
    },
    "ModelConfig": {
        "architecture": "painn (equivariant), schnet, mlp (2D toys), or from_committee (your own; null: from_committee for a non-built-in committee, else painn)",
        "committee": "committee file whose architecture from_committee trains (null: the loop's initial_committee)",
        "n_members": "committee size (1 for a single-model uncertainty)",
        "n_features": "feature width (null: the architecture's default)",
        "n_rbf": "radial basis functions (null: default)",
        "n_interactions": "message-passing blocks (null: default)",
        "cutoff": "interaction cutoff (nm; null: default)",
        "neighbor_list": "painn pairs: auto, all_pairs or cutoff (null: auto)",
        "hidden": "hidden width of mlp members (null: default)",
        "prior": "bonded (harmonic bonds/angles fitted first, members learn the rest) or none; null: bonded for painn",
        "seed": "initial weights' random seed",
        "uncertainty": "ensemble (the members' disagreement) or one model's: gmm (Gaussian mixture on its features), mve or evidential (likelihood-trained heads); the last three need n_members 1 and painn",
        "gmm_components": "Gaussian-mixture components (gmm)",
        "gmm_alpha": "conformal miscoverage of the gmm_error bound, calibrated on the validation split (gmm)",
        "head_epochs": "epochs of likelihood training of the mve or evidential head",
    },
    "TrainingSection": {
        "epochs": "epochs of training from scratch",
        "batch_size": "structures per optimiser step",
        "learning_rate": "Adam learning rate",
        "force_weight": "weight of the normalised force error in the loss",
        "energy_weight": "weight of the normalised energy error in the loss",
        "final_energy_weight": "energy weight for the last final_fraction of the epochs (null: energy_weight)",
        "final_fraction": "fraction of the epochs that use final_energy_weight",
        "energy_scale": "model output scale from the energy spread (energy_std) or the RMS force (force_rms)",
        "validation_fraction": "share of the data held out for early stopping and reports",
        "split_seed": "random seed of the validation split (fixed for a whole loop)",
        "patience": "epochs without validation improvement before stopping (plateau: before lowering the rate)",
        "bootstrap": "members train on bootstrap resamples (their disagreement is the uncertainty)",
        "lr_schedule": "learning-rate schedule: plateau or cosine",
        "min_learning_rate": "lowest learning rate of the schedule",
        "ema_decay": "exponential moving average of the weights (null: off)",
        "keep_best": "keep the best validation state (false: the last epoch's)",
        "warm_start_epochs": "in a loop, fine-tune the previous committee for this many epochs (null: retrain)",
        "warm_start_learning_rate": "learning rate of that fine-tuning (null: learning_rate)",
    },
    "AttackConfig": {
        "kT": "sampling temperature of the Boltzmann factor (kJ/mol; 20.9 = 5 kcal/mol)",
        "n_steps": "ascent steps",
        "step_size": "optimiser step (nm)",
        "optimizer": "adam or gradient (plain ascent)",
        "objective": "log or linear uncertainty in the objective",
        "metric": "uncertainty metric: force_variance, max_force_deviation or energy_std",
        "batch_size": "replicas attacked together in one OpenMM Context",
        "max_step": "largest move of any atom per step (nm)",
        "max_displacement": "largest distance of any atom from its seed (nm)",
        "report_interval": "steps between the geometries kept as candidates",
        "platform": "OpenMM platform: Reference, CPU or CUDA",
        "use_cuda_graphs": "capture the TorchForce in CUDA graphs (CUDA only)",
    },
    "TorsionAttackConfig": {
        "kT": "sampling temperature (kJ/mol)",
        "n_steps": "ascent steps on the torsion angles",
        "step_size": "optimiser step (rad)",
        "max_step": "largest turn of any angle per step (rad)",
        "max_turn": "largest turn of any angle from its seed (rad; null: unbounded)",
        "torsions": "rotatable (every rotatable bond), cvs (the system's dihedral CVs) or a list of [a, b, c, d]",
        "metric": "uncertainty metric",
        "batch_size": "replicas attacked together",
        "report_interval": "steps between the geometries kept as candidates",
        "novelty_weight": "weight of the CV-novelty term (0: off)",
        "novelty_bandwidth": "kernel width of the novelty density (rad for dihedrals, nm for distances)",
        "novelty_cap": "largest novelty, far from every labelled point (.inf: unbounded)",
        "spread": "count the batch's other replicas as labelled, so replicas spread out",
        "seeds": "uniform (the loop's draw) or frontier (labelled frames where the CV density is lowest)",
        "frontier_bandwidth": "kernel width of the frontier density (null: novelty_bandwidth)",
        "jitter": "Gaussian displacement per coordinate added to each found geometry (nm; 0: none)",
        "refine_steps": "Cartesian attack steps after the torsion steps (0: none)",
        "refine_kT": "kT of that refinement (kJ/mol)",
        "refine_step_size": "step of that refinement (nm)",
        "clash_factor": "atoms 3+ bonds apart closer than this times their vdW radii sum clash",
        "platform": "OpenMM platform: Reference, CPU or CUDA",
    },
    "_DynamicsConfig": _DYNAMICS,
    "CommitteeMDConfig": {
        "lower": "keep frames whose metric is at least this (null: no lower bound)",
        "upper": "keep frames whose metric is below this (null: no upper bound)",
        "use_cuda_graphs": "capture the TorchForce in CUDA graphs (CUDA only)",
    },
    "_MetadynamicsCommon": _METADYNAMICS,
    "MetadynamicsConfig": {
        "cvs": "names of the system's CVs to bias (1 to 3)",
        "width": "Gaussian width (rad for dihedrals, nm otherwise)",
    },
    "UncertaintyMetadynamicsConfig": {
        "cv_metric": "the uncertainty metric used as the CV (gmm_nll with log_cv false: the GMM-CV sampler)",
        "log_cv": "bias the log of the uncertainty",
        "width": "Gaussian width in CV units (null: from the seeds' spread)",
    },
    "UDDConfig": {
        "A": "depth of the uncertainty bias (kJ/mol)",
        "B": "uncertainty scale of the bias (null: from the seeds' energy spread)",
        "B_auto_factor": "multiplier of that automatic B",
        "lower": "keep frames whose metric is at least this",
        "upper": "keep frames whose metric is below this",
    },
    "RandomDisplacementConfig": {
        "sigma": "Gaussian displacement per coordinate (nm)",
        "n_per_seed": "displaced copies per seed",
        "metric": "uncertainty metric of the candidates",
    },
    "ReferenceMDConfig": {
        "report_interval": "steps between the frames kept as candidates",
        "equilibration": "steps run before the first frame is kept",
    },
    "SelectionConfig": {
        "lower": "keep candidates with uncertainty at least this (metric units; null: none)",
        "upper": "keep candidates with uncertainty below this (null: none)",
        "percentile_lower": "keep candidates above this percentile of the training set's uncertainties",
        "percentile_upper": "keep candidates below this percentile of the training set's uncertainties",
        "min_rmsd": "drop candidates closer than this (nm, aligned RMSD) to the data or to each other",
        "max_selected": "label at most this many per generation",
        "energy_cap": "drop candidates whose committee energy is this far above the data's lowest (kJ/mol)",
        "rank_by": "which survive the cap: uncertainty (most uncertain) or spread (evenly spaced)",
        "physical_filter": "drop broken bonds, clashes and non-finite geometries",
    },
    "LoopConfig": {
        "generations": "sample-label-retrain rounds",
        "seeds": "seed geometries drawn from the data per generation",
        "seed": "random seed of every choice in the run",
        "final_training": "retrain once more on the last generation's labels",
        "threads": "torch threads (null: 1, or $OPENMM_ADV_THREADS)",
        "max_label_energy": "refuse labels this far above or below the dataset's lowest (kJ/mol; null: the molecule's default; .inf: off)",
    },
    "LoopRunConfig": {
        "system": "the molecule",
        "initial_data": "labelled data the loop starts from",
        "initial_committee": "a trained committee to start from (null: train one on initial_data)",
        "oracle": "ground truth that labels the selected geometries",
        "model": "committee architecture",
        "training": "trainer settings",
        "samplers": "samplers by kind, each with its settings (see the sampler sections' keys)",
        "selection": "which candidates get labelled",
        "loop": "loop control",
    },
    "LabelRunConfig": {
        "input": "frames to label: extxyz, an openmm-adv dataset, or a trajectory mdtraj reads",
        "output": "dataset (.h5) the labels are appended to",
        "system": "the molecule",
        "oracle": "ground truth",
        "sampler": "provenance tag of these frames",
        "generation": "provenance generation of these frames",
        "max_label_energy": "refuse labels this far above or below the dataset's lowest (kJ/mol; null: the molecule's default; .inf: off)",
    },
    "TrainRunConfig": {
        "output": "committee file to write (.pt, TorchScript with metadata)",
        "data": "training data",
        "system": "the molecule",
        "model": "committee architecture",
        "training": "trainer settings",
        "seed": "random seed of the members' data and weights",
        "threads": "torch threads (null: 1, or $OPENMM_ADV_THREADS)",
    },
    "AttackRunConfig": {
        "output": "extxyz file of the selected geometries (unlabelled)",
        "committee": "committee file (default: the shipped one)",
        "seeds": "data the seeds are drawn from",
        "n_seeds": "seed geometries = replicas",
        "system": "the molecule",
        "attack": "attack settings",
        "selection": "which candidates are written",
        "threads": "torch threads (null: 1, or $OPENMM_ADV_THREADS)",
    },
    "MDRunConfig": {
        "output": "folder for trajectory.dcd, state.csv, uncertainty.csv, to_label.extxyz, summary.json",
        "committee": "committee file (default: the shipped alanine dipeptide one)",
        "system": "the molecule",
        "start": "structure, trajectory or dataset whose last frame starts the run (null: the system's structure)",
        "temperature": "Langevin temperature (K)",
        "timestep_fs": "time step (fs); no constraints, keep 0.5 or less with hydrogens",
        "n_steps": "MD steps",
        "report_interval": "steps between reports (trajectory, logs, uncertainty, geometry check)",
        "friction": "Langevin friction (1/ps)",
        "platform": "OpenMM platform: Reference, CPU or CUDA",
        "metric": "uncertainty metric logged: force_variance, max_force_deviation or energy_std",
        "threshold": "flag frames above this uncertainty for labelling (metric units; null: none)",
        "percentile": "or flag frames above this percentile of training_data's uncertainties",
        "training_data": "the committee's training data (.h5), for percentile",
        "stop_after": "stop after this many flagged reports in a row (null: never)",
        "seed": "random seed of velocities and thermostat",
        "threads": "torch threads (null: 1, or $OPENMM_ADV_THREADS)",
    },
    "InitMDConfig": {
        "timestep_fs": "MD time step (fs); no constraints, keep 0.5 or less with hydrogens",
        "interval": "steps between kept frames",
        "equilibration_steps": "steps before the first kept frame",
        "friction": "Langevin friction (1/ps)",
    },
    "InitRunConfig": {
        "output": "new dataset to write (.h5)",
        "system": "the molecule",
        "oracle": "ground truth that labels the frames",
        "method": "auto, md (reference force field), displacements (normal modes at temperature) or import",
        "n_frames": "frames to label (import: evenly spaced through the file)",
        "temperature": "temperature of the MD or of the normal-mode displacements (K)",
        "minimise": "relax the structure first (reference force field, else the oracle)",
        "md": "settings of method md",
        "input": "trajectory, extxyz or dataset to import frames from",
        "use_file_labels": "keep the energies and forces the input file carries",
        "max_label_energy": "refuse labels this far above the lowest (kJ/mol; null: the molecule's default)",
        "seed": "random seed",
    },
}


def help_for(cls, name: str) -> str | None:
    """The help line of key ``name`` of config class ``cls`` (or of one of its bases)."""
    for klass in cls.__mro__:
        line = KEY_HELP.get(klass.__name__, {}).get(name)
        if line:
            return line
    return None


def commented_yaml(instance, indent: int = 0) -> str:
    """YAML of a config instance, each key followed by its help line as a comment."""
    lines = []
    pad = "  " * indent
    for f in fields(instance):
        value = getattr(instance, f.name)
        comment = help_for(type(instance), f.name)
        suffix = f"  # {comment}" if comment else ""
        if is_dataclass(value):
            lines.append(f"{pad}{f.name}:{suffix}")
            lines.append(commented_yaml(value, indent + 1))
        elif isinstance(value, dict) and value and all(is_dataclass(v) for v in value.values()):
            lines.append(f"{pad}{f.name}:{suffix}")
            for key, section in value.items():
                lines.append(f"{pad}  {key}:  # settings of {key}")
                lines.append(commented_yaml(section, indent + 2))
        else:
            text = yaml.safe_dump({f.name: _plain(value)}, default_flow_style=True, width=10**6).strip()
            lines.append(f"{pad}{text[1:-1]}{suffix}")
    return "\n".join(lines)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
