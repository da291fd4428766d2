"""What a fleet, its version 1, the learner's gate and an evaluation work on unless told otherwise: one place to
change it (a light module, so command lines can show it without importing the simulator)."""

from __future__ import annotations

from typing import Any

DEFAULT_TASKS: tuple[str, ...] = ("pick", "push", "place")  # fleet.sim.tasks.TASKS ids
DEFAULT_EMBODIMENTS: tuple[str, ...] = ("panda", "kuka")  # fleet.embodiments ids

# Pre-training for language (`fleet train pretrain`'s and the demo's defaults, as the shipped version 1 was made:
# fleet/assets/version-one/provenance.json). With them version 1 keeps its own phrasings (0.958 against 0.919 without)
# and carries over to held-out phrasings, other colour names and a new-coloured object (bench/results/language.json).
PRETRAIN_LANGUAGE: dict[str, Any] = {"paraphrases": 8, "instruction_noise": 0.02, "colour_lexicon": True}
