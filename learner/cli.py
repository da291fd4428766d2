"""`fleet learner run`: the central learner as a command (register `learner.cli.app` as the `learner` sub-app).

fleet learner run --preset debug            # tiny model, publishes every 3 updates
fleet learner run --preset default --init production
fleet learner run --preset online --lr 3e-4  # a preset with its learning rate changed
fleet learner run --freeze encoder            # image encoder fixed, its tokens cached at ingest (~2x the updates)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from learner.config import LearnerConfig

app = typer.Typer(
    name="learner", help="The central learner: stream -> replay -> RLlib -> gated versions.", no_args_is_help=True
)


@app.callback()
def _group() -> None:
    """Keeps `run` a sub-command even while it is the only one."""


@app.command("run")
def run(
    preset: Annotated[
        str, typer.Option(help="Named config (learner.config.PRESETS): default, demo, online, latency, debug.")
    ] = "default",
    init: Annotated[
        str | None, typer.Option(help="'production', 'scratch' or a checkpoint directory (default: the preset's).")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Where checkpoints go (default <FLEET_HOME>/learner/<preset>).")
    ] = None,
    demos: Annotated[Path | None, typer.Option(help="Episode store with demonstrations to mix in.")] = None,
    max_demos: Annotated[
        int | None,
        typer.Option(
            help="Load at most this many demonstrations, spread evenly over task x embodiment (each costs the "
            "learner's start-up a forward of its frames when perception is frozen). Default: all; 0: none, the "
            "fleet's own data alone."
        ),
    ] = None,
    autonomous: Annotated[
        bool, typer.Option(help="Train on autonomous fleet steps too (AWR); --no-autonomous: corrections only.")
    ] = True,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate (default: the preset's).")] = None,
    freeze: Annotated[
        str | None,
        typer.Option(
            help="Hold part of the VLA fixed and cache its output at ingest: 'none', 'encoder' (the image encoder) or "
            "'perception' (all but the action expert and value head). Default: the preset's."
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="The update's matmuls: 'fp32', 'bf16' (autocast; ~12% cheaper updates on CPUs with AMX, slower "
            "on CPUs without native bfloat16) or 'auto' (bf16 where the CPU has AMX or the GPU bf16). Default: the "
            "preset's."
        ),
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            help="Deployment conditions the gate scores in (fleet.sim.scenarios); the gate keeps the preset's tasks "
            "the scenario has, else takes the scenario's (a new task). Default: the preset's."
        ),
    ] = None,
    canary_fraction: Annotated[
        float | None,
        typer.Option(
            help="Send a version that beats production to a canary on this share of the robots (0-1) before it "
            "becomes production; the canary controller decides on the fleet's episodes. Default: the preset's."
        ),
    ] = None,
    paraphrases: Annotated[
        int | None,
        typer.Option(
            help="Instruction augmentation: train each episode in one of its instruction and up to this many "
            "paraphrases (the training phrase bank), drawn per episode. Default: the preset's."
        ),
    ] = None,
    gate_margin_se: Annotated[
        float | None,
        typer.Option(
            help="Let the gate's margin shrink to this many standard errors of the difference of two means at "
            "production's success rate where that is less than the preset's margin (near the top, a fixed margin "
            "asks more than the gate's episodes can show); 0: the preset's margin alone. Default: the preset's."
        ),
    ] = None,
    num_learners: Annotated[
        int | None,
        typer.Option(
            help="Data-parallel learners as Ray actors (DDP) on the Ray cluster (RAY_ADDRESS, else a local node); "
            "0: one learner in this process. Default: the preset's."
        ),
    ] = None,
    learner_node: Annotated[
        bool,
        typer.Option(
            help="Put the data-parallel learners on the node(s) offering the fleet_learner resource, which robots "
            "stay off (fleet.placement)."
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Consume the fleet stream and publish gated model versions until Ctrl-C / SIGTERM."""
    from fleet.observability import configure_logging, serve_metrics
    from fleet.settings import get_settings
    from learner.service import main

    config = learner_config(
        preset, init=init, run_dir=run_dir, demos=demos, max_demos=max_demos, autonomous=autonomous, lr=lr,
        freeze=freeze, precision=precision, scenario=scenario, canary_fraction=canary_fraction, paraphrases=paraphrases,
        gate_margin_se=gate_margin_se, num_learners=num_learners, learner_node=learner_node,
    )  # fmt: skip
    settings = get_settings()
    configure_logging("learner", log_level, json=settings.log_format == "json")
    metrics = serve_metrics(settings.metrics_port_learner, settings.metrics_bind_host, service="learner")
    try:
        main(config)
    finally:
        if metrics is not None:
            metrics.close()


def learner_config(
    preset: str,
    *,
    init: str | None = None,
    run_dir: Path | None = None,
    demos: Path | None = None,
    max_demos: int | None = None,
    autonomous: bool = True,
    lr: float | None = None,
    freeze: str | None = None,
    precision: str | None = None,
    scenario: str | None = None,
    canary_fraction: float | None = None,
    paraphrases: int | None = None,
    gate_margin_se: float | None = None,
    num_learners: int | None = None,
    learner_node: bool = False,
) -> LearnerConfig:
    """The preset with the command line's overrides; a bad preset or value is a `typer.BadParameter` naming it."""
    from learner.config import get_preset

    try:
        config = get_preset(preset)
    except KeyError as e:
        raise typer.BadParameter(str(e.args[0]), param_hint="--preset") from None
    changes: dict[str, Any] = {}
    if init is not None:
        changes["init"] = init
    if run_dir is not None:
        changes["run_dir"] = run_dir
    if demos is not None:
        changes["demos"], changes["load_demos"] = demos, True
    if max_demos == 0:  # the fleet's own data alone: demonstrations of other conditions can hold a scenario back
        changes["load_demos"] = False
    elif max_demos is not None:
        if max_demos < 1:
            raise typer.BadParameter("must be at least 0", param_hint="--max-demos")
        changes["max_demo_episodes"] = max_demos
    if canary_fraction is not None:
        if not 0.0 <= canary_fraction <= 1.0:
            raise typer.BadParameter("must be in [0, 1]", param_hint="--canary-fraction")
        changes["canary_fraction"] = canary_fraction
    replay = config.replay
    if not autonomous:
        replay = dataclasses.replace(replay, autonomous=False)
    if paraphrases is not None:
        if paraphrases < 0:
            raise typer.BadParameter("must be at least 0", param_hint="--paraphrases")
        replay = dataclasses.replace(replay, paraphrases=paraphrases)
    if replay != config.replay:
        changes["replay"] = replay
    rllib = config.rllib
    placement = {"num_learners": num_learners, "learner_node": learner_node or None}
    for option, value in (("lr", lr), ("freeze", freeze), ("precision", precision), *placement.items()):
        if value is not None:
            try:
                rllib = dataclasses.replace(rllib, **{option: value})  # type: ignore[arg-type]
            except ValueError as e:
                raise typer.BadParameter(str(e), param_hint=f"--{option.replace('_', '-')}") from None
    if rllib != config.rllib:
        changes["rllib"] = rllib
    if scenario is not None:
        from fleet.sim.scenarios import get_scenario

        try:
            conditions = get_scenario(scenario)
        except KeyError as e:
            raise typer.BadParameter(str(e.args[0]), param_hint="--scenario") from None
        tasks = tuple(t for t in config.gate.tasks if t in conditions.tasks) or conditions.tasks
        changes["gate"] = dataclasses.replace(config.gate, scenario=conditions.name, tasks=tasks)
    if gate_margin_se is not None:
        try:
            changes["gate"] = dataclasses.replace(changes.get("gate", config.gate), min_improvement_se=gate_margin_se)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--gate-margin-se") from None
    return dataclasses.replace(config, **changes)
