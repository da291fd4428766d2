"""`fleet demos collect`, `fleet train pretrain|posttrain`, `fleet eval`: the recipe as commands.

Thin wrappers: parse options, set torch threads and logging, call `main(config)` of `demos`, `train`
or `evaluate`. Register them on the root app with `register(app)` (or add `demos_app`, `train_app`
and `eval_command` one by one).

    fleet demos collect --tasks pick,push,place --embodiments panda,kuka --episodes 300
    fleet train pretrain --preset default
    fleet train posttrain --task pick --demos 50 --init .fleet/run/pretrain/checkpoints/step_00010000
    fleet eval --checkpoint .fleet/run/posttrain-pick/checkpoints/step_00000200 --tasks pick --gif docs/rollouts
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import typer

from fleet.defaults import DEFAULT_EMBODIMENTS, DEFAULT_TASKS, PRETRAIN_LANGUAGE
from fleet.recipe.evaluate import EXECUTE_STEPS
from fleet.sim.scenarios import SCENARIO_NAMES

demos_app = typer.Typer(help="Scripted demonstrations: collect them into an episode store.", no_args_is_help=True)
train_app = typer.Typer(help="Train the VLA: pre-train on all demos, post-train on one task.", no_args_is_help=True)

TasksOption = typer.Option(",".join(DEFAULT_TASKS), "--tasks", help="Comma-separated task ids.")
EmbodimentsOption = typer.Option(",".join(DEFAULT_EMBODIMENTS), "--embodiments", help="Comma-separated embodiment ids.")
PresetOption = typer.Option("default", "--preset", help="Training preset: debug (2 steps, tiny model) or default.")
StepsOption = typer.Option(None, "--steps", help="Override the preset's total optimizer steps.")
DemoStoreOption = typer.Option(None, "--demos-dir", help="Demo episode store [default: <FLEET_HOME>/demos].")
RunDirOption = typer.Option(None, "--run-dir", help="Checkpoints go here; re-running resumes from the newest.")
RegisterOption = typer.Option(False, "--register", help="Publish the result as a registry version (candidate).")
PromoteOption = typer.Option(False, "--promote", help="Publish and point `production` at the new version.")
ThreadsOption = typer.Option(2, "--threads", help="Torch CPU threads.")
NoMlflowOption = typer.Option(False, "--no-mlflow", help="Do not log the run to MLflow.")
HeadOption = typer.Option(None, "--head", help="Action head: flow (default) or discrete.")
DemoOutOption = typer.Option(None, "--out", help="Episode store [default: <FLEET_HOME>/demos].")
InitOption = typer.Option(..., "--init", help="Pre-trained checkpoint directory to start from.")
CheckpointOption = typer.Option(None, "--checkpoint", help="Checkpoint directory to evaluate.")
EvalOutOption = typer.Option(None, "--out", help="Results JSON [default: <FLEET_HOME>/eval/<name>.json].")
GifOption = typer.Option(None, "--gif", help="Save one rollout GIF per task x embodiment here.")


def _split(value: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    if not items:
        raise typer.BadParameter("give at least one comma-separated value")
    return items


def _home() -> Path:
    from fleet.settings import get_settings

    return get_settings().home


def _fail(err: Exception) -> typer.Exit:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _head(value: str | None) -> str | None:
    if value is not None and value not in ("flow", "discrete"):
        raise typer.BadParameter(f"--head must be flow or discrete, got {value!r}")
    return value


@demos_app.command("collect")
def collect(
    tasks: str = TasksOption,
    embodiments: str = EmbodimentsOption,
    episodes: int = typer.Option(50, "--episodes", help="Successful demonstrations per task x embodiment."),
    out: Path | None = DemoOutOption,
    seed: int = typer.Option(0, "--seed", help="First env seed of every task x embodiment."),
    noise: float = typer.Option(0.0, "--noise", help="Expert action noise (std), for more varied demos."),
) -> None:
    """Run the scripted expert on every task x embodiment and store the successful episodes."""
    from fleet.recipe.demos import DemoConfig, main

    try:
        config = DemoConfig(out=out or _home() / "demos", tasks=_split(tasks), embodiments=_split(embodiments),
                            episodes=episodes, seed=seed, noise_std=noise)  # fmt: skip
        written = main(config)
    except (KeyError, ValueError, RuntimeError) as err:
        raise _fail(err) from None
    typer.echo(f"wrote {written} demonstrations to {config.out}")


@demos_app.command("import-lerobot")
def import_lerobot(
    dataset: str = typer.Argument(..., help="A LeRobotDataset v3 directory."),
    embodiment: str = typer.Option(..., "--embodiment", help="Fleet's arm its states and actions are for."),
    task: str = typer.Option(..., "--task", help="Fleet's task id of its episodes (its tasks become instructions)."),
    camera: list[str] = typer.Option(  # noqa: B008 - typer's documented way of a repeated option
        ..., "--camera", help="FLEET_CAMERA=VIDEO_KEY, once per camera, e.g. front=observation.images.top."
    ),
    state: str = typer.Option("observation.state", "--state", help="The state (proprio) feature."),
    action: str = typer.Option("action", "--action", help="The action feature."),
    reward: str = typer.Option("next.reward", "--reward", help="The reward feature, or none (success at the end)."),
    intervention: str = typer.Option("is_intervention", "--intervention", help="Human-step flags, or none."),
    out: Path | None = DemoOutOption,
) -> None:
    """Turn a LeRobot dataset into demonstrations for the recipe and the learner's replay."""
    from fleet.episodes import EpisodeStore
    from fleet.export.lerobot import FeatureMap, read_dataset

    try:
        pairs = [c.split("=", 1) for c in camera]
        if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
            raise ValueError(f"--camera takes FLEET_CAMERA=VIDEO_KEY, got {camera}")
        mapping = FeatureMap(embodiment=embodiment, task=task, cameras=dict(pairs), state=state, action=action,
                             reward=None if reward == "none" else reward,
                             intervention=None if intervention == "none" else intervention)  # fmt: skip
        store = EpisodeStore(out or _home() / "demos")
        written = len([store.write(episode) for episode in read_dataset(Path(dataset), mapping)])
    except (KeyError, ValueError, FileNotFoundError) as err:
        raise _fail(err) from None
    typer.echo(f"imported {written} demonstrations into {store.root}")


def _run_stage(config_kwargs: dict, threads: int) -> None:
    import logging

    import torch

    from fleet.recipe.train import StageConfig, run_stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    try:
        result = run_stage(StageConfig(**config_kwargs))
    except (KeyError, ValueError, FileNotFoundError) as err:
        raise _fail(err) from None
    out = {
        "checkpoint": str(result.checkpoint),
        "episodes": result.episodes,
        "mlflow_run_id": result.mlflow_run_id,
        "version": result.version.version if result.version else None,
        "aliases": result.version.aliases if result.version else None,
        **result.stats.to_log_dict(),
    }
    typer.echo(json.dumps(out, indent=1))


@train_app.command("pretrain")
def pretrain_command(
    preset: str = PresetOption,
    steps: int | None = StepsOption,
    head: str | None = HeadOption,
    demos_dir: Path | None = DemoStoreOption,
    run_dir: Path | None = RunDirOption,
    tasks: str | None = typer.Option(None, "--tasks", help="Only these tasks [default: all in the store]."),
    embodiments: str | None = typer.Option(None, "--embodiments", help="Only these embodiments [default: all]."),
    seed: int = typer.Option(0, "--seed", help="Training seed."),
    paraphrases: int = typer.Option(
        PRETRAIN_LANGUAGE["paraphrases"],
        "--paraphrases",
        help="Also say each demo's instruction this many other ways (training phrasings only; 0: its own words).",
    ),
    instruction_noise: float = typer.Option(
        PRETRAIN_LANGUAGE["instruction_noise"],
        "--instruction-noise",
        help="Gaussian noise on the instruction embedding in training.",
    ),
    proprio_noise: float | None = typer.Option(
        None, "--proprio-noise", help="Gaussian noise (std, proprio units) on the proprioception in training [0]."
    ),
    colour_lexicon: bool = typer.Option(
        PRETRAIN_LANGUAGE["colour_lexicon"],
        "--colour-lexicon/--no-colour-lexicon",
        help="Ground colour names by hue (the shipped colour lexicon and an image channel).",
    ),
    register: bool = RegisterOption,
    promote: bool = PromoteOption,
    no_mlflow: bool = NoMlflowOption,
    threads: int = ThreadsOption,
) -> None:
    """Stage 1: multi-task, multi-embodiment pre-training on the demo store (resumes from --run-dir)."""
    home = _home()
    _run_stage(
        dict(
            stage="pretrain", demos=demos_dir or home / "demos", run_dir=run_dir or home / "run" / "pretrain",
            preset=preset, steps=steps, head=_head(head), tasks=_split(tasks) if tasks else None,
            embodiments=_split(embodiments) if embodiments else None, seed=seed, log_mlflow=not no_mlflow,
            register=register or promote, promote=promote, actor=f"cli:{getpass.getuser()}",
            paraphrases=paraphrases, instruction_noise=instruction_noise, proprio_noise=proprio_noise,
            colour_lexicon=colour_lexicon,
        ),
        threads,
    )  # fmt: skip


@train_app.command("posttrain")
def posttrain_command(
    task: str = typer.Option(..., "--task", help="Task to post-train on."),
    init: Path = InitOption,
    demos: int = typer.Option(50, "--demos", help="Demonstrations of the task (spread across embodiments)."),
    preset: str = PresetOption,
    steps: int | None = StepsOption,
    head: str | None = typer.Option(None, "--head", help="Checked against --init's head (post-training keeps it)."),
    demos_dir: Path | None = DemoStoreOption,
    run_dir: Path | None = RunDirOption,
    embodiments: str | None = typer.Option(None, "--embodiments", help="Only these embodiments [default: all]."),
    seed: int = typer.Option(0, "--seed", help="Training seed."),
    register: bool = RegisterOption,
    promote: bool = PromoteOption,
    no_mlflow: bool = NoMlflowOption,
    threads: int = ThreadsOption,
) -> None:
    """Stage 2: post-train a pre-trained checkpoint on N demonstrations of one task."""
    home = _home()
    _run_stage(
        dict(
            stage="posttrain", demos=demos_dir or home / "demos", run_dir=run_dir or home / "run" / f"posttrain-{task}",
            preset=preset, steps=steps, head=_head(head), task=task, num_demos=demos, init=init,
            embodiments=_split(embodiments) if embodiments else None, seed=seed, log_mlflow=not no_mlflow,
            register=register or promote, promote=promote, actor=f"cli:{getpass.getuser()}",
        ),
        threads,
    )  # fmt: skip


def eval_command(
    checkpoint: Path | None = CheckpointOption,
    version: str | None = typer.Option(None, "--version", help="Registry version to evaluate instead."),
    tasks: str | None = typer.Option(None, "--tasks", help="Comma-separated task ids [default: the scenario's]."),
    embodiments: str = EmbodimentsOption,
    scenario: str = typer.Option(
        "nominal",
        "--scenario",
        help=f"Deployment conditions: {SCENARIO_NAMES} (fleet.sim.scenarios).",
    ),
    episodes: int = typer.Option(20, "--episodes", help="Episodes per task x embodiment."),
    seed: int = typer.Option(100_000, "--seed", help="Env seed of the first episode."),
    execute_steps: int = typer.Option(
        EXECUTE_STEPS, "--execute-steps", help="Actions run per chunk before re-planning (the robots' schedule)."
    ),
    out: Path | None = EvalOutOption,
    gif: Path | None = GifOption,
    threads: int = ThreadsOption,
    instructions: str | None = typer.Option(
        None,
        "--instructions",
        help="Say the instructions another way: held-out (phrasings never trained on), held-out-colours (other "
        "colour names), held-out-object (the target painted a colour no demonstration had) or a JSON file "
        '{"phrasings": {task: [templates]}, "color_words": {colour: [words]}, "new_object": {"name", "rgb"}}.',
    ),
) -> None:
    """Success rate per task x embodiment (seeded, deterministic), as a table and a JSON file."""
    import torch

    from fleet.recipe.evaluate import EvalConfig, main
    from fleet.sim.scenarios import get_scenario

    torch.set_num_threads(threads)
    name = f"version-{version}" if version else (checkpoint.name if checkpoint else "eval")
    try:
        conditions = get_scenario(scenario)
        config = EvalConfig(
            checkpoint=checkpoint, version=version, tasks=_split(tasks) if tasks else conditions.tasks,
            embodiments=_split(embodiments), scenario=conditions.name,
            episodes=episodes, seed=seed, execute_steps=execute_steps,
            out=out or _home() / "eval" / f"{name}.json", gif_dir=gif, instructions=instructions,
        )  # fmt: skip
        main(config)
    except (KeyError, ValueError) as err:
        raise _fail(err) from None
    typer.echo(f"results: {config.out}")


def register(app: typer.Typer) -> None:
    """Add `demos`, `train` and `eval` to the root `fleet` app."""
    app.add_typer(demos_app, name="demos")
    app.add_typer(train_app, name="train")
    app.command("eval")(eval_command)
