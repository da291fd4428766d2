"""How the learner judges a checkpoint against production before publishing it.

The gate (`GateConfig`): the checkpoint is scored on held-out episodes in the evaluator's worker process, against
production's score on the same episodes (its tags when it was scored the same way, else scored now, once per
version); it passes with a margin (`margin`, `beats`). With `confirm_episodes` a pass must hold on as many other
episodes too (`confirmation`). The episodes are the seed block named by production's version number
(`GateConfig.reseed_on_promotion`), so every production is judged on episodes no earlier promotion was chosen on.
Scores are kept in the checkpoint's state: a restarted learner does not score a checkpoint twice.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fleet.naming import version_number
from fleet.policy.checkpoint import load_checkpoint
from fleet.policy.model import VLAModel
from fleet.registry import VersionInfo
from fleet.registry_views import LearnerRegistry
from learner import checkpoints
from learner.checkpoints import MODEL_DIR, LearnerState
from learner.config import LearnerConfig
from learner.evaluator import Evaluator
from learner.gate import EvalGate, beats, confirmation, margin, seed_block

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What the gate said of one checkpoint."""

    mean: float  # its success on the gate's episodes
    production_mean: float | None  # production's on the same episodes (None: no production yet)
    passed: bool  # beat production by the margin (and on the confirmation's episodes, when asked for)
    signature: str  # the gate's episodes, as a version's `gate_config` tag records them


class Judge:
    """The gate and the confirmation against production (see the module docstring)."""

    def __init__(
        self, config: LearnerConfig, *, evaluator: Evaluator, registry: LearnerRegistry, versions_dir: Path
    ) -> None:
        self.config = config
        self.evaluator = evaluator
        self.registry = registry
        self.versions_dir = versions_dir  # registered versions downloaded (and verified) for scoring
        self.production_scores: dict[tuple[str, str], float] = {}  # (version, "eval/mean" | "confirm/mean")

    def judge(self, directory: Path, state: LearnerState, production: VersionInfo | None) -> Verdict:
        """Score the checkpoint at `directory` (once per production's episodes, kept in its state) against
        `production`. Raises `learner.evaluator.Pending` while the evaluator is still scoring."""
        episodes = self.gates(production)[0]
        signature = episodes.signature()
        if not state.gate or state.gate_signature != signature:
            state.gate = self.evaluator.score(directory / MODEL_DIR, episodes.config).tags()
            state.gate_signature = signature
            checkpoints.write_state(directory, state)
        mean = float(state.gate["eval/mean"])
        production_mean = self.production_mean(production)
        gate = self.config.gate
        needed = margin(gate, production_mean, gate.episodes * len(episodes.pairs()))
        passed = beats(mean, production_mean, min_success=gate.min_success, min_improvement=needed)
        if passed and gate.confirm_episodes and production is not None and production_mean is not None:
            passed = self.confirmed(directory, state, mean, production_mean, production)
        return Verdict(mean, production_mean, passed, signature)

    def confirmed(
        self, directory: Path, state: LearnerState, mean: float, production_mean: float, production: VersionInfo
    ) -> bool:
        """The confirmation stage (`GateConfig.confirm_episodes`): the candidate beat production on the gate's
        episodes; it must beat it on the confirmation's episodes too (by `confirm_improvement`). The candidate's
        confirmation score is kept in the checkpoint (and its version's tags as confirm/...)."""
        if "confirm/mean" not in state.gate:
            scores = self.evaluator.score(directory / MODEL_DIR, self.gates(production)[1].config).tags()
            state.gate.update({"confirm/" + k.removeprefix("eval/"): v for k, v in scores.items()})
            checkpoints.write_state(directory, state)
        gate = self.config.gate
        candidate = float(state.gate["confirm/mean"])
        incumbent = self.production_score(production, confirm=True)
        confirmed = beats(candidate, incumbent, min_success=gate.min_success, min_improvement=gate.confirm_improvement)
        log.info(
            "learner: confirmation %s: %.3f against production v%s's %.3f on the confirmation episodes",
            "passed" if confirmed else "failed", candidate, production.version, incumbent,
            extra={"version": production.version},
        )  # fmt: skip
        return confirmed

    def production_mean(self, production: VersionInfo | None) -> float | None:
        """Production's success on *this* gate: its tag when it was gated the same way, else evaluated now.

        A production version without comparable eval tags (version 1 from behaviour cloning, or a gate
        that changed) is run through the same held-out episodes, so a candidate must beat it fairly.
        """
        if production is None:
            return None
        return self.production_score(production, confirm=False)

    def production_score(self, production: VersionInfo, *, confirm: bool) -> float:
        """Production's mean on the gate's (or the confirmation's) episodes: its tag when it was scored the same
        way, else evaluated now (once per version)."""
        gates = self.gates(production)
        key, gate = ("confirm/mean", gates[1]) if confirm else ("eval/mean", gates[0])
        if production.tags.get("gate_config") == gates[0].signature() and key in production.tags:
            return float(production.tags[key])
        if (production.version, key) not in self.production_scores:
            score = self.evaluator.score(self.version_dir(production), gate.config).mean
            self.production_scores[(production.version, key)] = score
            log.info("learner: production v%s scores %.3f on %s", production.version, score, key.split("/")[0])
        return self.production_scores[(production.version, key)]

    def gates(self, production: VersionInfo | None) -> tuple[EvalGate, EvalGate]:
        """The gate and the confirmation that judge candidates against `production`: the episodes of the seed block
        named by its version number (`GateConfig.reseed_on_promotion`; block 0 without it, or without production)."""
        config = self.config.gate
        number = version_number(production.version) if production is not None else None
        gate = seed_block(config, int(number) if config.reseed_on_promotion and number is not None else 0)
        return EvalGate(gate), EvalGate(confirmation(gate))

    def version_dir(self, info: VersionInfo) -> Path:
        """A registered version's checkpoint under the run directory (for the evaluator), downloaded and verified
        against its signature once (as robots do: nothing is scored or trained on that a trusted key did not sign)."""
        target = self.versions_dir / info.version
        marker = target / ".verified"
        if not marker.is_file():
            signed = self.registry.verify(info)  # raises SignatureError on an unsigned or foreign version
            shutil.rmtree(target, ignore_errors=True)
            path = self.registry.download(info.version, target / "download")
            load_checkpoint(  # raises on a bad or foreign checkpoint
                path, expected_sha256=signed.weights_sha256, expected_config_sha256=signed.config_sha256
            )
            marker.write_text(str(path.relative_to(target)))
        return target / marker.read_text()

    def load_version(self, info: VersionInfo) -> VLAModel:
        """A registered version's weights, downloaded to a temporary directory and verified against its signature."""
        signed = self.registry.verify(info)
        with tempfile.TemporaryDirectory(prefix="fleet-learner-") as tmp:
            return load_checkpoint(
                self.registry.download(info.version, tmp),
                expected_sha256=signed.weights_sha256,
                expected_config_sha256=signed.config_sha256,
            )
