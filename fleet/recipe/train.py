"""Recipe stages 1 and 2: pre-train one VLA on every demonstration, post-train it on N demos of one task.

    ckpt = pretrain(StageConfig(stage="pretrain", demos=Path(".fleet/demos"), run_dir=Path("runs/pre")))
    ckpt = posttrain(StageConfig(stage="posttrain", demos=..., run_dir=Path("runs/pick"), task="pick",
                                 num_demos=50, init=ckpt))

Both wrap `fleet.policy.train.train` (so a re-run with the same run directory resumes from its newest
checkpoint) with the stage presets below. Post-training starts from the pre-trained weights and keeps
their architecture and action head. When the MLflow server (`Settings().tracking_uri`) answers, the
run is logged to experiment `fleet-recipe`: the config as params, `losses/*` per log window, the final
checkpoint's model files as the `checkpoint` artifact. `register` publishes the result as a registry
version (alias `candidate`), `promote` also points `production` at it.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fleet.recipe.demos import load_episodes, select_demos

if TYPE_CHECKING:
    from fleet.policy.config import VLAConfig
    from fleet.policy.language import InstructionEmbedder
    from fleet.policy.train import TrainConfig, TrainStats
    from fleet.registry import VersionInfo

log = logging.getLogger(__name__)

Stage = Literal["pretrain", "posttrain"]
EXPERIMENT = "fleet-recipe"

# Per stage and preset: fields replaced in `fleet.policy.train.PRESETS[preset]`. Measured on pick/push/place
# x panda/kuka (300 demos per pair): pre-training reaches 3% mean success at 2.5k steps, 20% at 5k,
# 40% at 7.5k, 62% at 10k (~17 min on 2 idle cores). Post-training on 50 demos of one task at lr 3e-4
# for 500 steps over-fits them (mean 62% -> 49%); 200 steps at 1e-4 keeps 62%.
STAGE_OVERRIDES: dict[Stage, dict[str, dict[str, Any]]] = {
    "pretrain": {
        "debug": {},
        "default": {"steps": 10_000, "batch_size": 32, "warmup_steps": 100, "save_every": 1_000, "log_every": 50},
    },
    "posttrain": {
        "debug": {},
        "default": {
            "steps": 200, "batch_size": 32, "lr": 1e-4, "warmup_steps": 20, "save_every": 100, "log_every": 25,
        },
    },
}  # fmt: skip


@dataclass(frozen=True)
class StageConfig:
    """One `fleet train pretrain|posttrain` run."""

    stage: Stage  # "pretrain" (every task/embodiment in the store) or "posttrain" (N demos of one task)
    demos: Path  # episode store with the scripted demonstrations
    run_dir: Path  # checkpoints go here; a re-run resumes from the newest complete one
    preset: str = "default"  # training preset: "debug" (2 steps, tiny model) or "default"
    steps: int | None = None  # override the stage preset's total optimizer steps
    head: Literal["flow", "discrete"] | None = None  # action head (pretrain); posttrain checks it against `init`
    model: VLAConfig | None = None  # override the preset's architecture (pretrain only; e.g. a test embedder)
    tasks: tuple[str, ...] | None = None  # pretrain: only these tasks (None = all in the store)
    embodiments: tuple[str, ...] | None = None  # only demos of these embodiments (None = all)
    task: str | None = None  # posttrain: the task to specialise on
    num_demos: int = 50  # posttrain: demos of `task`, spread across embodiments
    init: Path | None = None  # posttrain: the pre-trained checkpoint directory to start from
    seed: int = 0  # training seed (init, batches, noise, augmentation)
    log_mlflow: bool = True  # log the run to MLflow when the tracking server answers
    tracking_uri: str | None = None  # MLflow server; None = Settings().tracking_uri
    register: bool = False  # publish the final weights as a registry version (needs the stack)
    promote: bool = False  # also point `production` at that version (implies register)
    actor: str = "recipe"  # who promotes, for the audit log
    progress: bool = True  # show a tqdm progress bar
    # Instruction augmentation: each demo's instruction is also said in this many other ways in training (the
    # task's own phrasings and fleet/sim/language/training.json, same colours and sides); 0 = its own words only.
    paraphrases: int = 0
    instruction_noise: float | None = None  # pretrain: VLAConfig.instruction_noise (None = the preset's)
    proprio_noise: float | None = None  # pretrain: VLAConfig.proprio_noise (None = the preset's)
    # pretrain: ground colour names by hue (VLAConfig.colour_lexicon); the paraphrases then also name colours with
    # the lexicon's other names for them (fleet.sim.language.training_colour_names).
    colour_lexicon: bool = False

    def __post_init__(self) -> None:
        if self.stage not in STAGE_OVERRIDES:
            raise ValueError(f"StageConfig.stage must be 'pretrain' or 'posttrain', got {self.stage!r}")
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"StageConfig.steps must be positive, got {self.steps}")
        if self.paraphrases < 0:
            raise ValueError(f"StageConfig.paraphrases must be >= 0, got {self.paraphrases}")
        if self.stage == "posttrain":
            if not self.task or self.init is None:
                raise ValueError("post-training needs --task and --init (a pre-trained checkpoint directory)")
            if self.num_demos <= 0:
                raise ValueError(f"StageConfig.num_demos must be positive, got {self.num_demos}")
            if self.model is not None:
                raise ValueError("post-training keeps the architecture of --init; do not pass a model config")


@dataclass
class StageResult:
    """What a stage run produced."""

    checkpoint: Path  # final checkpoint directory (model files + optimizer + train_state.json)
    stats: TrainStats  # losses, steps, wall time of this call
    episodes: int  # demonstrations trained on
    mlflow_run_id: str | None  # MLflow run of this call, None when not logged
    version: VersionInfo | None  # registry version, when registered


def train_config(config: StageConfig) -> TrainConfig:
    """The `fleet.policy.train.TrainConfig` a stage runs with (preset + stage overrides + flags)."""
    from fleet.policy.checkpoint import load_checkpoint
    from fleet.policy.train import get_preset

    base = get_preset(config.preset)  # KeyError with a did-you-mean hint
    changes: dict[str, Any] = {**STAGE_OVERRIDES[config.stage].get(config.preset, {}), "seed": config.seed}
    changes["name"] = f"{config.stage}-{config.preset}"
    changes["progress"] = config.progress
    if config.steps is not None:
        changes["steps"] = config.steps
        changes["save_every"] = min(changes.get("save_every", base.save_every), config.steps)
        changes["warmup_steps"] = min(changes.get("warmup_steps", base.warmup_steps), config.steps // 4)
    if config.stage == "pretrain":
        model = config.model or base.model
        if config.head is not None:
            model = model.with_(action_head=config.head)
        if config.instruction_noise is not None:
            model = model.with_(instruction_noise=config.instruction_noise)
        if config.proprio_noise is not None:
            model = model.with_(proprio_noise=config.proprio_noise)
        if config.colour_lexicon:
            model = model.with_colour_lexicon()
    else:
        assert config.init is not None
        model = load_checkpoint(config.init).config
        if config.head is not None and config.head != model.action_head:
            raise ValueError(
                f"--init {config.init} has a {model.action_head!r} head; post-training keeps it (drop --head)"
            )
        changes["init_checkpoint"] = str(config.init)
    return replace(base, model=model, **changes)


def run_stage(config: StageConfig, *, embedder: InstructionEmbedder | None = None) -> StageResult:
    """Train one stage into `config.run_dir` (resuming), log it to MLflow, optionally register/promote it."""
    from fleet.episodes import EpisodeStore
    from fleet.policy.train import train
    from fleet.sim.language import paraphrased

    tc = train_config(config)
    store = EpisodeStore(config.demos)
    if config.stage == "pretrain":
        metas = select_demos(store, tasks=config.tasks, embodiments=config.embodiments)
    else:
        assert config.task is not None
        metas = select_demos(store, tasks=[config.task], embodiments=config.embodiments, per_task=config.num_demos)
    if not metas:
        raise ValueError(f"no successful demonstrations in {store.root}; run `fleet demos collect --out {store.root}`")
    episodes = load_episodes(store, metas)
    said = None
    if config.paraphrases:
        said = paraphrased(config.paraphrases, config.seed, colour_names=tc.model.colour_lexicon)
    stats = train(tc, episodes=episodes, run_dir=config.run_dir, embedder=embedder, instructions=said)
    if stats.checkpoint is None:
        raise RuntimeError(f"training wrote no checkpoint into {config.run_dir}")
    tracking = _reachable_tracking_uri(config) if config.log_mlflow else None
    run_id = _log_run(tracking, config, tc, stats, len(episodes)) if tracking else None
    version = _register(config, stats, run_id, len(episodes)) if (config.register or config.promote) else None
    return StageResult(stats.checkpoint, stats, len(episodes), run_id, version)


def pretrain(config: StageConfig, *, embedder: InstructionEmbedder | None = None) -> Path:
    """Stage 1: multi-task, multi-embodiment training on the demo store; the final checkpoint directory."""
    if config.stage != "pretrain":
        config = replace(config, stage="pretrain")
    return run_stage(config, embedder=embedder).checkpoint


def posttrain(config: StageConfig, *, embedder: InstructionEmbedder | None = None) -> Path:
    """Stage 2: N demos of one task from a pre-trained checkpoint; the final checkpoint directory."""
    if config.stage != "posttrain":
        config = replace(config, stage="posttrain")
    return run_stage(config, embedder=embedder).checkpoint


# ---- MLflow and the registry -----------------------------------------------------------------------


def _reachable_tracking_uri(config: StageConfig) -> str | None:
    from fleet.settings import Settings

    uri = config.tracking_uri or Settings().tracking_uri
    if not uri.startswith("http"):
        return uri  # a file or database store is always "reachable"
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=2.0) as response:
            if response.status == 200:
                return uri
    except OSError:
        pass
    log.warning("MLflow not reachable at %s: run not logged (start it with `fleet up`)", uri)
    return None


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, item, out)
    else:
        out[prefix] = str(value)[:500]


def _log_run(uri: str, config: StageConfig, tc: TrainConfig, stats: TrainStats, episodes: int) -> str:
    """One MLflow run per stage call: params, `losses/*` per log window, the model files as `checkpoint`."""
    from mlflow.entities import Metric, Param

    from fleet.mlflow_client import mlflow_client
    from fleet.policy.checkpoint import OPTIMIZER_FILE, OPTIMIZER_META_FILE

    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    tags = {"fleet.kind": config.stage, "fleet.run_dir": str(config.run_dir.resolve())}
    run = client.create_run(experiment_id, run_name=f"{config.stage}-{config.task or 'all'}-{tc.model.action_head}",
                            tags=tags)  # fmt: skip
    run_id = run.info.run_id
    params: dict[str, str] = {}
    _flatten("", tc.to_dict(), params)
    params.update({"recipe.demos": str(config.demos), "recipe.episodes": str(episodes),
                   "recipe.task": config.task or "", "recipe.resumed_from": str(stats.resumed_from)})  # fmt: skip
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"losses/{key.split('/', 1)[-1]}", value, now, int(entry["step"]))
        for entry in stats.history
        for key, value in entry.items()
        if key != "step"
    ]
    metrics += [Metric(k, v, now, stats.step) for k, v in stats.to_log_dict().items() if k.startswith("charts/")]
    items = sorted(params.items())
    for i in range(0, max(len(items), 1), 100):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
    for i in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[i : i + 500])
    assert stats.checkpoint is not None
    for file in sorted(stats.checkpoint.iterdir()):
        if file.is_file() and file.name not in (OPTIMIZER_FILE, OPTIMIZER_META_FILE):
            client.log_artifact(run_id, str(file), artifact_path="checkpoint")
    client.set_terminated(run_id)
    return run_id


def _register(config: StageConfig, stats: TrainStats, run_id: str | None, episodes: int) -> VersionInfo:
    from fleet.policy.checkpoint import load_checkpoint
    from fleet.registry import Registry, publish_model
    from fleet.settings import Settings

    assert stats.checkpoint is not None
    registry = Registry(Settings())
    tags = {
        "recipe.stage": config.stage,
        "recipe.task": config.task or "",
        "recipe.episodes": str(episodes),
        "recipe.step": str(stats.step),
        "recipe.run_id": run_id or "",
    }
    metrics = {k: v for k, v in stats.to_log_dict().items() if k.startswith("losses/")}
    info = publish_model(registry, load_checkpoint(stats.checkpoint), parent_version=None, tags=tags,
                         metrics=metrics, actor=config.actor)  # fmt: skip
    if config.promote:
        info = registry.promote(info.version, actor=config.actor, role="admin", reason=f"fleet train {config.stage}")
    return info
