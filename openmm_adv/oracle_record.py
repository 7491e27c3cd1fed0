"""Which oracle labelled a dataset, and the rule that keeps one oracle per dataset.

Two oracles disagree by a constant (each has its own energy zero: GFN2-xTB total energies lie
about 1e5 kJ/mol below Amber's) and by their physics, and a committee trained on both learns
neither. A dataset therefore records the descriptor of the oracle that labelled it
(:meth:`openmm_adv.oracles.Oracle.descriptor`, stored as JSON in the HDF5 file) and refuses
labels of another one unless mixing is asked for. The record of a dataset labelled on purpose
by several oracles is ``{"kind": "mixed", "oracles": [...]}``.

A file written before records existed says nothing (``None``, "unknown"). Before labels enter
one, :func:`check_oracle` relabels its lowest-energy frame with the new oracle (one oracle
call) and compares; when they agree, the file adopts the oracle's record.
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np

from ._errors import first_line

__all__ = ["MIXED", "OracleMismatchError", "check_oracle", "describe", "descriptor_of", "merge_records", "normalise",
           "probe_oracle"]

MIXED = "mixed"

#: A relabelled frame reproduces its stored label when the energies differ by less than
#: ``ENERGY_TOLERANCE + ENERGY_RTOL * |E|`` (kJ/mol) and the forces by an RMS below
#: ``FORCE_TOLERANCE + FORCE_RTOL * RMS(F)`` (kJ/mol/nm): room for mixed precision and SCF
#: convergence, far below what separates two oracles (Amber and GFN2-xTB: 1e5 kJ/mol).
ENERGY_TOLERANCE, ENERGY_RTOL = 1.0, 1e-5
FORCE_TOLERANCE, FORCE_RTOL = 1.0, 0.01

_FIX = ("keep one oracle per dataset: label with the oracle that made those labels, or use data this oracle "
        "labelled (a new file; 'openmm-adv init' makes a first one), or mix on purpose with --allow-mixed-oracles "
        "(config: oracle.allow_mixed: true)")


class OracleMismatchError(ValueError):
    """Labels of one oracle were about to enter a dataset labelled by another."""


def normalise(record: dict | None) -> dict | None:
    """The record as JSON reads it back (sorted keys, tuples as lists, other objects as text),
    so records compare equal whether fresh from an oracle or read from a file."""
    if record is None:
        return None
    return json.loads(json.dumps(record, sort_keys=True, default=str))


def descriptor_of(oracle) -> dict:
    """The oracle's :meth:`~openmm_adv.oracles.Oracle.descriptor`, normalised; an object that
    only looks like an oracle (a ``compute`` and a ``name``) is known by its class and name."""
    describe_oracle = getattr(oracle, "descriptor", None)
    if describe_oracle is not None:
        return normalise(describe_oracle())
    cls = type(oracle)
    return normalise({"kind": f"{cls.__module__}.{cls.__qualname__}", "name": getattr(oracle, "name", None)})


def describe(record: dict | None) -> str:
    """A record in words: ``xtb (charge 0, electronic_temperature 300.0, method GFN2-xTB, ...)``."""
    if record is None:
        return "an unrecorded oracle"
    if record.get("kind") == MIXED:
        return "mixed oracles (" + "; ".join(describe(r) for r in record["oracles"]) + ")"
    details = ", ".join(f"{key} {value}" for key, value in sorted(record.items()) if key != "kind")
    return f"{record.get('kind')} ({details})" if details else str(record.get("kind"))


def _members(record: dict) -> list[dict]:
    return list(record["oracles"]) if record.get("kind") == MIXED else [record]


def merge_records(existing: dict | None, new: dict | None, allow_mixed: bool = False,
                  where: str = "the dataset") -> dict | None:
    """The record of a dataset labelled by ``existing`` once labels of ``new`` enter it.

    An unknown side (None) takes the other's record: nothing says they differ. ``new`` may
    itself be mixed (what :func:`check_oracle` returns when mixing was allowed).

    Raises
    ------
    OracleMismatchError
        When the oracles differ and ``allow_mixed`` is false; the message names both and the fix.
    """
    existing, new = normalise(existing), normalise(new)
    if new is None:
        return existing
    if existing is None:
        return new
    known = _members(existing)
    missing = [member for member in _members(new) if member not in known]
    if not missing:
        return existing
    if not allow_mixed:
        raise OracleMismatchError(f"{where} holds labels of {describe(existing)}, these labels come from "
                                  f"{describe(new)}: two oracles give one dataset two energy zeros; {_FIX}")
    return {"kind": MIXED, "oracles": known + missing}


def probe_oracle(oracle, data, where: str = "the dataset", labeller=None) -> tuple[bool, str]:
    """Relabel the lowest-energy frame of ``data`` with ``oracle`` and compare with its label.

    ``labeller`` (an :class:`~openmm_adv.executors.Labeller`) runs the probe as it runs labels,
    so a probe that hangs times out like a label would; without one it runs in this process.

    Returns
    -------
    agrees : bool
        False only when the oracle labelled the frame and the labels differ beyond the
        tolerances (:data:`ENERGY_TOLERANCE` ...). An oracle that fails on the frame cannot
        tell, which counts as agreeing.
    detail : str
        What was compared, in words.
    """
    k = int(np.argmin(data.energies))
    name = getattr(oracle, "name", type(oracle).__name__)
    try:
        frame = np.asarray(data.positions[k], dtype=np.float64)[None]
        if labeller is None:
            labels = oracle.compute(frame)
        else:
            got = {}
            labeller.run(oracle, frame, lambda i, result, seconds: got.__setitem__(i, result))
            labels = got[0]
        failure = labels.errors[0] if not bool(labels.ok[0]) else None
        if failure is None and not (np.isfinite(labels.energies[0]) and np.isfinite(labels.forces[0]).all()):
            failure = "non-finite energy or forces"
    except Exception as exc:  # an oracle that raises is the loop's to record, not the probe's to crash on
        failure = f"{type(exc).__name__}: {first_line(exc)}"
    if failure is not None:
        return True, f"{name} failed on frame {k} of {where} ({failure}), so its labels were not compared"
    stored_e, new_e = float(data.energies[k]), float(labels.energies[0])
    force_rms = float(np.sqrt(np.mean(np.square(data.forces[k]))))
    force_diff = float(np.sqrt(np.mean(np.square(labels.forces[0] - data.forces[k]))))
    agrees = (abs(new_e - stored_e) <= ENERGY_TOLERANCE + ENERGY_RTOL * abs(stored_e)
              and force_diff <= FORCE_TOLERANCE + FORCE_RTOL * force_rms)
    detail = (f"frame {k} of {where} (its lowest energy) has energy {stored_e:.6g} kJ/mol there and {new_e:.6g} "
              f"from {name}, forces differing by RMS {force_diff:.3g} kJ/mol/nm")
    return agrees, detail


def check_oracle(oracle, data, where: str = "the dataset", allow_mixed: bool = False,
                 echo: Callable[[str], None] | None = None, labeller=None) -> dict | None:
    """The oracle record ``data`` gets when labels of ``oracle`` join it; call it before
    labelling, so that a refusal costs no oracle work beyond one probe.

    ``data`` (a :class:`~openmm_adv.data.Dataset`) with a record is compared by record; one
    without a record but with frames is probed (:func:`probe_oracle`: one oracle call).

    Raises
    ------
    OracleMismatchError
        When the records differ, or the probe finds other labels, and ``allow_mixed`` is false.
    """
    descriptor = descriptor_of(oracle)
    if data.oracle_record is None and len(data):
        agrees, detail = probe_oracle(oracle, data, where, labeller)
        if not agrees and not allow_mixed:
            raise OracleMismatchError(f"{where} records no oracle and its labels are not this oracle's: {detail}; {_FIX}")
        if not agrees:
            if echo is not None:
                echo(f"note: mixing oracles as asked: {detail}")
            return {"kind": MIXED, "oracles": [{"kind": "unknown"}, descriptor]}
        if echo is not None and "not compared" in detail:
            echo(f"note: {detail}")
    return merge_records(data.oracle_record, descriptor, allow_mixed, where)
