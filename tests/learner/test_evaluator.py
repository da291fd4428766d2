"""The evaluator: the gate's episodes in a worker process give the inline scores, without blocking the caller."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from fleet.policy.checkpoint import save_checkpoint
from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel
from learner.evaluator import Evaluator, Pending
from learner.gate import GateConfig
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder

GATE = GateConfig(tasks=("pick",), embodiments=("panda",), episodes=2, max_steps=8)


def _checkpoint(tmp_path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    directory = tmp_path / f"model-{seed}"
    save_checkpoint(VLAModel(debug_model_config(text_encoder=FAKE_ENCODER)), directory)
    return directory


def _wait(evaluator: Evaluator, model_dir: Path, gate: GateConfig, deadline_s: float = 120.0) -> tuple[object, int]:
    pending, deadline = 0, time.monotonic() + deadline_s
    while True:
        try:
            return evaluator.score(model_dir, gate), pending
        except Pending:
            pending += 1
            assert time.monotonic() < deadline, "the worker never answered"
            time.sleep(0.1)


@pytest.mark.timeout(300)
def test_the_worker_scores_as_the_inline_gate_does_and_the_caller_never_waits(tmp_path: Path) -> None:
    model_dir = _checkpoint(tmp_path, 0)
    inline = Evaluator(HashEmbedder, process=False).score(model_dir, GATE)
    evaluator = Evaluator(HashEmbedder)
    try:
        started = time.monotonic()
        with pytest.raises(Pending):
            evaluator.score(model_dir, GATE)
        assert time.monotonic() - started < 5.0  # handed over, not run here (the worker takes longer to start)
        result, pending = _wait(evaluator, model_dir, GATE)
        assert pending >= 1 and result.success == inline.success  # type: ignore[attr-defined]
        # One job at a time: a second request waits for the first, then gets its own.
        other = GateConfig(tasks=("pick",), embodiments=("panda",), episodes=1, max_steps=8, seed_offset=5_000_000)
        with pytest.raises(Pending):
            evaluator.score(model_dir, other)
        with pytest.raises(Pending, match="busy"):
            evaluator.score(_checkpoint(tmp_path, 1), GATE)
        assert _wait(evaluator, model_dir, other)[0].success.keys() == {("pick", "panda")}  # type: ignore[attr-defined]
    finally:
        evaluator.close()


@pytest.mark.timeout(300)
def test_a_bad_checkpoint_is_the_callers_error_and_the_worker_goes_on(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    evaluator = Evaluator(HashEmbedder)
    try:
        with pytest.raises(Pending):
            evaluator.score(bad, GATE)
        with pytest.raises(Exception) as error:
            _wait(evaluator, bad, GATE)
        assert not isinstance(error.value, Pending)
        assert _wait(evaluator, _checkpoint(tmp_path, 0), GATE)[0] is not None
    finally:
        evaluator.close()
