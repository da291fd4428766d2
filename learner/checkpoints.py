"""The learner's own checkpoints: model weights + the stream position they correspond to.

    <run_dir>/checkpoints/update_00000012/
        model/config.json, model/model.safetensors   the VLA checkpoint (fleet.policy.checkpoint; what is published)
        optimizer/optimizer.safetensors, optimizer/optimizer.json   AdamW state (moments, step), so a restart
                                         continues the optimizer instead of starting it cold (never published)
        training/                        the raw trained weights, when `model/` holds their moving average
                                         (`RLlibConfig.ema_decay`): a restart trains on from these
        pending.msgpack                  messages consumed but not yet in replay (wire bytes, never pickle)
        learner_state.json               written last: a directory without it is ignored

Durability: every file of a checkpoint, then the state file, then the directories are fsynced before the offsets
are committed to Kafka, so after a power loss the newest checkpoint on disk is at least as new as the committed
offsets. The newest `keep` checkpoints stay; a restart takes the newest one that reads back whole (`restore`) and
moves a torn or unreadable one aside as `broken-<name>` instead of crash-looping on it.

`learner_state.json` holds the consumed offsets (`next` offset per topic/partition, where a restart
resumes), this version's data window (`first..last` offsets per topic/partition since the
previous checkpoint), the corrections count, the parent version and, once published, the
registry version (and, before that, the eval-gate tags, so a publication retried after a registry
outage does not evaluate again). Offsets are committed to Kafka only after this file exists, so a
restart always resumes from the checkpoint, never past it: no data is lost and none is trained twice.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from safetensors.numpy import load_file

from fleet.durable import atomic_write, fsync_path, fsync_tree
from fleet.policy.checkpoint import OPTIMIZER_FILE, load_checkpoint, load_optimizer, save_checkpoint, save_optimizer
from fleet.policy.model import VLAModel
from fleet.schemas import Message, decode, encode

log = logging.getLogger(__name__)

STATE_FILE = "learner_state.json"
PENDING_FILE = "pending.msgpack"
MODEL_DIR = "model"
OPTIMIZER_DIR = "optimizer"
TRAINING_DIR = "training"
Offsets = dict[str, dict[str, int]]  # topic -> partition (str, JSON keys) -> offset
Window = dict[str, dict[str, list[int]]]  # topic -> partition -> [first, last]


@dataclass
class LearnerState:
    """Where a learner checkpoint stands in the stream and the registry."""

    updates: int  # gradient updates done so far (over the learner's whole life)
    offsets: Offsets  # next offset to consume per topic/partition
    window: Window  # offsets consumed since the previous checkpoint: this version's data
    correction_ids: int  # corrections consumed in the window
    episodes: int  # fleet episodes that entered replay in the window
    parent_version: str | None  # registry version these weights descend from
    published_version: str | None = None  # registry version of this checkpoint, once published
    gate: dict[str, str] = field(default_factory=dict)  # eval tags, once evaluated (before publishing)
    gate_signature: str = ""  # the episodes `gate` was scored on (EvalGate.signature); others are scored again
    created_at: float = 0.0  # wall clock of the checkpoint


def save(
    root: Path,
    model: VLAModel,
    state: LearnerState,
    pending: list[Message],
    *,
    learners: Any = None,
    module_id: str = "",
    training: VLAModel | None = None,
    keep: int = 3,
) -> tuple[Path, str]:
    """Write a complete checkpoint directory; returns it and the weights' sha256. Keeps the newest `keep`.

    `model` is what gets published; `training`, when given, the raw weights training continues from.

    `learners` (an RLlib `LearnerGroup`) adds the optimizer state of `module_id`, written before the
    state file marks the checkpoint complete, so a complete checkpoint always has its optimizer.
    """
    directory = root / f"update_{state.updates:08d}"
    sha = save_checkpoint(model, directory / MODEL_DIR, metadata={"updates": state.updates})
    if training is not None:
        save_checkpoint(training, directory / TRAINING_DIR, metadata={"updates": state.updates})
    if learners is not None:
        target = directory / OPTIMIZER_DIR
        # Data-parallel learners hold identical state and each writes it: remote learners need the run
        # directory on storage they share with this process (as RLlib's own checkpoints do).
        for result in learners.foreach_learner(
            lambda learner: save_optimizer(learner.get_optimizer(module_id), target)
        ):
            if not result.ok:
                raise RuntimeError(f"saving the optimizer state to {target} failed: {result.get()}")
    atomic_write(directory / PENDING_FILE, msgpack.packb([encode(m) for m in pending], use_bin_type=True))
    fsync_tree(directory)  # everything the state file vouches for is on disk before it is written
    write_state(directory, state)
    fsync_path(root)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return directory, sha


def load_optimizers(learners: Any, directory: Path, *, module_id: str) -> bool:
    """Load a checkpoint's optimizer state into every learner of the group; False when it has none."""
    source = directory / OPTIMIZER_DIR
    if not (source / OPTIMIZER_FILE).is_file():
        return False
    learners.foreach_learner(lambda learner: load_optimizer(learner.get_optimizer(module_id), source))
    return True


def training_weights(directory: Path) -> VLAModel | None:
    """The raw trained weights of a checkpoint whose `model/` is their moving average; None when it has none."""
    source = directory / TRAINING_DIR
    return load_checkpoint(source) if source.is_dir() else None


def write_state(directory: Path, state: LearnerState) -> None:
    atomic_write(directory / STATE_FILE, (json.dumps(asdict(state), indent=1) + "\n").encode())


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("update_*") if (p / STATE_FILE).is_file())


def load_state(directory: Path) -> tuple[LearnerState, list[Message]]:
    raw = json.loads((directory / STATE_FILE).read_text())
    state = LearnerState(**raw)
    pending_path = directory / PENDING_FILE
    items = msgpack.unpackb(pending_path.read_bytes(), raw=False) if pending_path.is_file() else []
    return state, [decode(bytes(item)) for item in items]


@dataclass
class Resumed:
    """A checkpoint that read back whole: where training goes on from."""

    directory: Path
    state: LearnerState
    pending: list[Message]
    model: VLAModel  # the published weights (the moving average, when training keeps one)
    training: VLAModel | None  # the raw trained weights, when `model` is their moving average


def restore(root: Path) -> Resumed | None:
    """The newest complete checkpoint under `root` that reads back whole; None when there is none at all.

    A checkpoint whose state, waiting messages, weights (their sha256 is in the config) or optimizer state does
    not read back (a torn write, a bad disk) is moved aside as `broken-<name>`, with an error in the log, and the
    one before it is tried: the learner then re-reads the stream from that checkpoint's offsets (the consumer seeks
    there), so nothing is lost and nothing is trained twice. Raises when checkpoints exist and none is readable:
    starting from scratch then would silently throw the run away.
    """
    found = list_checkpoints(root)
    for directory in reversed(found):
        try:
            state, pending = load_state(directory)
            model = load_checkpoint(directory / MODEL_DIR)
            training = training_weights(directory)
            if (directory / OPTIMIZER_DIR / OPTIMIZER_FILE).is_file():
                load_file(directory / OPTIMIZER_DIR / OPTIMIZER_FILE)  # readable whole, or the resume would fail later
        except Exception as e:  # noqa: BLE001 - whatever a torn file raises (JSON, msgpack, safetensors, checkpoint)
            aside = directory.with_name(f"broken-{directory.name}")
            log.error(
                "learner: checkpoint %s is unreadable (%s: %s); moved aside to %s, trying the one before",
                directory.name, type(e).__name__, e, aside.name,
            )  # fmt: skip
            shutil.rmtree(aside, ignore_errors=True)
            directory.rename(aside)
            continue
        return Resumed(directory, state, pending, model, training)
    if found:
        raise RuntimeError(f"none of the {len(found)} learner checkpoints in {root} is readable (see the log)")
    return None
