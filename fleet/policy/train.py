"""Offline training of the VLA on stored episodes (pre-training / post-training on demonstrations), with resume.

Run (the `debug` preset trains 2 steps of a tiny model; `default` is the real run)::

    python -m fleet.policy.train --preset debug --episodes .fleet/episodes --run-dir runs/debug

A run directory holds `checkpoints/step_XXXXXXXX/`, each a full model checkpoint
(`fleet.policy.checkpoint`) plus `optimizer.safetensors` / `optimizer.json` and
`train_state.json` (written last: a directory without it is ignored). Training resumes from the
newest complete one. Batches, noise and augmentation at step s are drawn from generators seeded
with (seed, s), so N steps in one go and k + (N - k) steps across a restart give the same weights.
The online learner (learner/rllib.py) shares the model's losses, not this loop.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm  # type: ignore[import-untyped]

from fleet.episodes import Episode, EpisodeStore
from fleet.naming import lookup
from fleet.policy.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_optimizer,
    save_checkpoint,
    save_optimizer,
)
from fleet.policy.config import VLAConfig, debug_model_config
from fleet.policy.data import FAILURE_RETURN, VALUE_HORIZON, ChunkDataset, random_shift
from fleet.policy.language import InstructionEmbedder, default_embedder
from fleet.policy.model import VLAModel

TRAIN_STATE_FILE = "train_state.json"


@dataclass(frozen=True)
class TrainConfig:
    """One training run (offline, on stored episodes)."""

    name: str  # preset name, recorded in checkpoints
    model: VLAConfig = field(default_factory=VLAConfig)  # architecture to build (or to check a resumed run against)
    steps: int = 5_000  # total optimizer steps of the run (a resumed run continues up to this)
    batch_size: int = 64  # samples per step
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup_steps: int = 200  # linear warm-up, then cosine decay to 10% of lr
    grad_clip: float = 1.0  # max global gradient norm
    save_every: int = 1_000  # checkpoint period in steps (the last step is always saved)
    keep_checkpoints: int = 3  # newest checkpoints kept in the run directory
    seed: int = 0  # seeds model init, batch sampling, flow noise and augmentation
    value_horizon: int = VALUE_HORIZON  # value targets -(steps to success) / this, as the online learner's
    failure_return: float = FAILURE_RETURN  # value target of a failed episode's steps, as the online learner's
    shift_pad: int = 0  # random-shift augmentation in pixels (0 = off: with a fixed camera, shifts move the target)
    log_every: int = 50  # steps between progress-bar updates of the mean losses
    progress: bool = True  # show a tqdm progress bar
    init_checkpoint: str | None = None  # start a fresh run from these weights (post-training a pre-trained model)
    device: str = "cpu"  # where the model trains: "cpu", "cuda", "cuda:N", or "auto" (a GPU when there is one)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "save_every", "keep_checkpoints", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise ValueError("TrainConfig: lr and grad_clip must be positive, weight_decay >= 0")
        if self.warmup_steps < 0 or self.shift_pad < 0:
            raise ValueError("TrainConfig: warmup_steps and shift_pad must be >= 0")
        if self.value_horizon < 1 or self.failure_return >= -1.0:
            raise ValueError("TrainConfig: value_horizon must be >= 1 and failure_return < -1")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"TrainConfig.device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model"] = self.model.to_dict()
        return out


PRESETS: dict[str, TrainConfig] = {
    "debug": TrainConfig(
        name="debug",
        model=debug_model_config(),
        steps=2,
        batch_size=4,
        warmup_steps=0,
        save_every=2,
        log_every=1,
        shift_pad=2,
        progress=False,
    ),
    "default": TrainConfig(name="default"),
}


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    """A named preset with some fields replaced; KeyError with a did-you-mean hint on unknown names."""
    return replace(lookup(PRESETS, name, "training preset"), **overrides)


@dataclass
class TrainStats:
    """What a `train` call did."""

    step: int  # global step reached (counts steps of earlier runs when resumed)
    steps_run: int  # steps run by this call
    resumed_from: int  # step the call started from (0 for a fresh run)
    losses: dict[str, float]  # mean losses over the last log window
    history: list[dict[str, float]]  # one entry per log window: step + mean losses
    checkpoint: Path | None  # newest checkpoint directory
    seconds: float  # wall time of this call

    def to_log_dict(self) -> dict[str, float]:
        """Flat metrics, prefixed like the learner's (`losses/...`, `charts/...`)."""
        out = {f"losses/{k.split('/', 1)[-1]}": v for k, v in self.losses.items()}
        out["charts/step"] = float(self.step)
        out["charts/steps_per_second"] = self.steps_run / self.seconds if self.seconds > 0 else 0.0
        return out


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


ADAM_BETAS = (0.9, 0.95)  # AdamW's betas for pre-training, post-training and the online learner alike


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices and conv kernels only, none on biases, norms, embeddings and
    positional parameters; frozen parameters (requires_grad False) left out."""

    def decays(name: str, parameter: torch.Tensor) -> bool:
        return parameter.ndim >= 2 and "pos" not in name and "embedding" not in name

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]


def make_optimizer(model: VLAModel, config: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, betas=ADAM_BETAS)


def train_step(
    model: VLAModel,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    *,
    weights: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    grad_clip: float = 1.0,
) -> dict[str, float]:
    """One optimizer step on `model.loss(batch, weights=...)`; returns the scalar losses and the gradient norm."""
    model.train()
    out = model.loss(batch, weights=weights, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    out["loss/total"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    stats = {k: v.item() for k, v in out.items() if k.startswith("loss/")}
    stats["loss/grad_norm"] = float(grad_norm)
    return stats


def _step_generators(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    return np.random.default_rng([seed, step]), torch.Generator().manual_seed(seed * 1_000_003 + step)


def resolve_device(name: str) -> torch.device:
    """The torch device of `TrainConfig.device` ("auto": the first GPU when torch sees one, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"training device {name!r} asked for, but torch sees no GPU (use 'cpu' or 'auto')")
    return device


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    """The newest complete training checkpoint in a run directory (one with train_state.json), or None."""
    done = sorted((Path(run_dir) / "checkpoints").glob(f"step_*/{TRAIN_STATE_FILE}"))
    return done[-1].parent if done else None


def save_training_checkpoint(
    run_dir: Path, model: VLAModel, optimizer: torch.optim.Optimizer, step: int, config: TrainConfig
) -> Path:
    directory = run_dir / "checkpoints" / f"step_{step:08d}"
    if directory.exists():
        shutil.rmtree(directory)
    sha = save_checkpoint(model, directory, metadata={"step": step, "preset": config.name})
    save_optimizer(optimizer, directory)
    state = {"step": step, "weights_sha256": sha, "train_config": config.to_dict()}
    (directory / TRAIN_STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")  # written last: marks it complete
    finished = sorted((run_dir / "checkpoints").glob(f"step_*/{TRAIN_STATE_FILE}"))
    for old in finished[: -config.keep_checkpoints]:
        shutil.rmtree(old.parent, ignore_errors=True)
    return directory


def load_training_checkpoint(
    directory: Path, config: TrainConfig, device: torch.device | None = None
) -> tuple[VLAModel, torch.optim.Optimizer, int]:
    """Model, optimizer and step of a training checkpoint; CheckpointError if it is not for `config.model`."""
    state = json.loads((directory / TRAIN_STATE_FILE).read_text())
    model = load_checkpoint(directory, expected_sha256=state["weights_sha256"])
    if model.config != config.model:
        raise CheckpointError(
            f"{directory} was trained with a different model config; use a new --run-dir or the same preset"
        )
    model.to(device or "cpu")  # before the optimizer: its state is loaded onto the parameters' device
    optimizer = make_optimizer(model, config)
    load_optimizer(optimizer, directory)
    return model, optimizer, int(state["step"])


def train(
    config: TrainConfig,
    *,
    episodes: Sequence[Episode] | EpisodeStore,
    run_dir: Path | str,
    embedder: InstructionEmbedder | None = None,
    resume: bool = True,
    max_steps: int | None = None,
    instructions: Callable[[Episode], Sequence[str]] | None = None,
) -> TrainStats:
    """Train (or continue training) a VLA on `episodes`, checkpointing into `run_dir`.

    `max_steps` stops this call early (with a checkpoint) after that many steps; the schedule is
    still the one for `config.steps`, so a later call picks up exactly where this one stopped. `instructions`:
    the texts each episode's instruction is said in (instruction augmentation; `ChunkDataset`).
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    embedder = embedder if embedder is not None else default_embedder()
    episode_list = list(episodes.iter_episodes()) if isinstance(episodes, EpisodeStore) else list(episodes)
    dataset = ChunkDataset(
        episode_list,
        config.model,
        embedder=embedder,
        horizon=config.value_horizon,
        failure_return=config.failure_return,
        instructions=instructions,
        seed=config.seed,
    )

    device = resolve_device(config.device)
    latest = latest_checkpoint(run_dir) if resume else None
    if latest is not None:
        model, optimizer, start = load_training_checkpoint(latest, config, device)
    else:
        if config.init_checkpoint:
            model = load_checkpoint(config.init_checkpoint)
            if model.config != config.model:
                raise CheckpointError(
                    f"init_checkpoint {config.init_checkpoint} does not match the preset's model config"
                )
        else:
            with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
                torch.manual_seed(config.seed)
                model = VLAModel(config.model)
        model.to(device)
        optimizer = make_optimizer(model, config)
        start = 0

    history: list[dict[str, float]] = []
    window: list[dict[str, float]] = []
    checkpoint: Path | None = latest
    bar = tqdm(total=config.steps, initial=start, desc=f"train[{config.name}]", disable=not config.progress)
    stop = config.steps if max_steps is None else min(config.steps, start + max_steps)
    for step in range(start, stop):
        rng, generator = _step_generators(config.seed, step)
        batch = dataset.sample_batch(rng, config.batch_size)
        batch["images"] = random_shift(batch["images"], config.shift_pad, generator)
        if device.type != "cpu":  # flow noise is drawn on the model's device, from a generator living there
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            generator = torch.Generator(device).manual_seed(generator.initial_seed())
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        window.append(train_step(model, optimizer, batch, generator=generator, grad_clip=config.grad_clip))
        done = step + 1
        if done % config.log_every == 0 or done == stop:
            means = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            history.append({"step": float(done), **means})
            bar.set_postfix({k.split("/", 1)[-1]: f"{v:.4f}" for k, v in means.items() if k != "loss/grad_norm"})
            window = []
        if done % config.save_every == 0 or done == stop:
            checkpoint = save_training_checkpoint(run_dir, model, optimizer, done, config)
        bar.update(1)
    bar.close()
    return TrainStats(
        step=max(start, stop),
        steps_run=max(0, stop - start),
        resumed_from=start,
        losses={k: v for k, v in (history[-1] if history else {}).items() if k != "step"},
        history=history,
        checkpoint=checkpoint,
        seconds=time.perf_counter() - started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the fleet VLA on stored episodes.")
    parser.add_argument("--preset", default="default", help=f"one of {sorted(PRESETS)}")
    parser.add_argument("--episodes", required=True, type=Path, help="episode store root (fleet.episodes layout)")
    parser.add_argument("--run-dir", required=True, type=Path, help="checkpoints go here; resumes from the newest")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's total steps")
    parser.add_argument("--head", choices=["flow", "discrete"], default=None, help="override the action head")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: the preset's, cpu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = get_preset(args.preset)
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    if args.head is not None:
        config = replace(config, model=config.model.with_(action_head=args.head))
    if args.device is not None:
        config = replace(config, device=args.device)
    stats = train(config, episodes=EpisodeStore(args.episodes), run_dir=args.run_dir)
    print(json.dumps({"checkpoint": str(stats.checkpoint), **stats.to_log_dict()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
