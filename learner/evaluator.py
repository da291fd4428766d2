"""Scores for the learner's gate, computed in a worker process so updates never wait on sim episodes.

The gate runs dozens of held-out sim episodes per version; on the learner's own thread that stopped training
for about a third of its wall time. `Evaluator.score` answers from finished work or hands the job to one
worker process (started once, at the given niceness, one torch thread) and raises `Pending`: the learner
trains on and asks again later (`LearnerService._try_publish`). The worker reads the checkpoint from disk and
returns success rates, so only a path, the frozen `GateConfig` and the rates cross the process boundary.

    evaluator = Evaluator(default_embedder)           # a worker process; Evaluator(..., process=False): inline
    try:
        result = evaluator.score(checkpoint_dir / "model", gate_config)
    except Pending:
        ...                                           # train, then ask again
    evaluator.close()

A worker dies with the learner (Linux parent-death signal), so a killed learner leaves no orphan simulating.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from fleet.policy.checkpoint import load_checkpoint
from fleet.policy.language import InstructionEmbedder
from learner.gate import EvalGate, GateConfig, GateResult

log = logging.getLogger(__name__)
EmbedderFactory = Callable[
    [], InstructionEmbedder
]  # importable (a class or module-level function): the worker calls it
_KEPT = 16  # finished scores kept until asked for (a publication asks for at most four)


class Pending(Exception):  # noqa: N818 - a state the caller waits out, not an error
    """The score is being computed in the worker; ask again later."""


class Evaluator:
    """Scores checkpoints on gates, in a worker process (`process=True`) or inline (see the module docstring)."""

    def __init__(self, embedder_factory: EmbedderFactory, *, process: bool = True, niceness: int = 0) -> None:
        self.embedder_factory = embedder_factory
        self.process = process
        self.niceness = niceness
        self._embedder: InstructionEmbedder | None = None
        self._executor: ProcessPoolExecutor | None = None
        self._running: tuple[tuple[str, str], Future[GateResult]] | None = None
        self._done: OrderedDict[tuple[str, str], GateResult] = OrderedDict()

    def score(self, model_dir: Path, gate: GateConfig) -> GateResult:
        """The checkpoint's result on `gate`; raises `Pending` while the worker computes it, and the worker's error
        (a bad checkpoint, a broken worker) once, when it failed."""
        if not self.process:
            if self._embedder is None:
                self._embedder = self.embedder_factory()
            return EvalGate(gate).evaluate(load_checkpoint(model_dir), embedder=self._embedder)
        key = (str(model_dir), EvalGate(gate).signature())
        self._collect()
        if key in self._done:
            return self._done.pop(key)
        if self._running is None:
            self._running = (key, self._pool().submit(_evaluate, str(model_dir), gate))
            log.info("evaluator: scoring %s on %d episodes per pair", model_dir, gate.episodes)
        raise Pending(f"{model_dir} is being scored" if self._running[0] == key else "the evaluator is busy")

    def _collect(self) -> None:
        if self._running is None or not self._running[1].done():
            return
        key, future = self._running
        self._running = None
        result = future.result()  # raises the worker's error to the caller, whose publication retries
        self._done[key] = result
        while len(self._done) > _KEPT:
            self._done.popitem(last=False)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),  # no forked copy of the learner's RLlib state
                initializer=_start_worker,
                initargs=(self.embedder_factory, self.niceness),
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._running = None


_worker_embedder: InstructionEmbedder | None = None


def _start_worker(embedder_factory: EmbedderFactory, niceness: int) -> None:
    import torch

    global _worker_embedder
    _die_with_parent()
    if niceness:
        os.nice(niceness)  # > 0: the learner's updates come first; the gate takes the cycles they leave
    torch.set_num_threads(1)
    _worker_embedder = embedder_factory()


def _die_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux prctl PR_SET_PDEATHSIG); elsewhere nothing."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except OSError:
        log.warning("evaluator: no parent-death signal on this system; an orphaned worker ends at its next job")


def _evaluate(model_dir: str, gate: GateConfig) -> GateResult:
    assert _worker_embedder is not None, "worker started without its initializer"
    return EvalGate(gate).evaluate(load_checkpoint(model_dir), embedder=_worker_embedder)
