"""How the server's OpenMP threads wait between parallel regions.

LibTorch's CPU kernels run on libgomp. Each thread that runs a model (one per Triton model instance, and one per
model) keeps its own team of ``INTRA_OP_THREAD_COUNT`` threads alive. Between the hundred-odd parallel regions of one
forward, a team's workers spin a while before they sleep on a futex; but as soon as all the teams of the process
together hold more threads than there are cores, libgomp cuts that spin to 100 iterations, and every region then
pays a futex wake-up. A token model and its ``_text`` model on 2 cores are already two teams of 2: measured on this
project's 2-core AMD EPYC, MiniLM's one-request ``compute_infer`` went from 5.1-5.4 ms (one model, as in process)
to 6.2-9.7 ms; ``OMP_WAIT_POLICY=PASSIVE`` in process, and a second live team in process, each cost the same.

``OMP_WAIT_POLICY=ACTIVE`` lifts the cut spin to 1,000 iterations (enough: 5.5-6.9 ms with two models), and
``GOMP_SPINCOUNT=300000`` keeps the ordinary spin at libgomp's own default (~3 ms) instead of ACTIVE's minutes of
busy waiting on an idle server. libgomp has no setting for the cut spin itself, so this pair is the whole lever;
the other is to keep the teams within the cores (``INTRA_OP_THREAD_COUNT`` x instances x models that run <= cores).
Every server tei-export starts gets the pair unless the user set either variable (theirs are kept) or turned it
off (``--no-omp-spin``, ``TEI_EXPORT_OMP_SPIN=0``)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import ServerError

OMP_SPIN_ENV = "TEI_EXPORT_OMP_SPIN"
SPIN_SETTINGS = (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "300000"))
_ON, _OFF = ("1", "on", "true", "yes"), ("0", "off", "false", "no")


@dataclass(frozen=True)
class OpenMPWait:
    """The OpenMP variables a server is started with (empty: libgomp's own defaults or the user's), and why."""

    settings: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    why: str = "default"

    @property
    def label(self) -> str:
        """What a report names: the variables set, or why none were."""
        return " ".join(f"{k}={v}" for k, v in self.settings) or self.why

    def describe(self) -> str:
        if self.settings:
            return (f"{self.label} (thread teams keep spinning when several models outnumber the cores; "
                    f"--no-omp-spin or ${OMP_SPIN_ENV}=0 turns it off)")
        return self.why

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        return {**env, **dict(self.settings)}


def choose_openmp_wait(spin: bool | None = None, env: Mapping[str, str] | None = None) -> OpenMPWait:
    """``spin`` (else ``$TEI_EXPORT_OMP_SPIN``, else on) -> :class:`OpenMPWait`. Values the user already set for
    either variable win: they are in the environment the server inherits."""
    env = env if env is not None else os.environ
    source = "--omp-spin/--no-omp-spin"
    if spin is None:
        value, source = env.get(OMP_SPIN_ENV, "on").strip().lower(), f"${OMP_SPIN_ENV}"
        if value not in _ON + _OFF:
            raise ServerError(f"{OMP_SPIN_ENV}={env[OMP_SPIN_ENV]!r} is neither on nor off",
                              fix=f"set {OMP_SPIN_ENV} to 1 or 0 (or unset it)", where=source)
        spin = value in _ON
    if not spin:
        return OpenMPWait((), f"libgomp's defaults (turned off by {source})")
    own = [f"{k}={env[k]}" for k, _ in SPIN_SETTINGS if k in env]
    if own:
        return OpenMPWait((), f"yours: {' '.join(own)} (from the environment)")
    return OpenMPWait(SPIN_SETTINGS)
