"""`fleet learner run`: the central learner as a command (register `learner.cli.app` as the `learner` sub-app).

fleet learner run --preset debug            # tiny model, publishes every 3 updates
fleet learner run --preset default --init production
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="learner", help="The central learner: stream -> replay -> RLlib -> gated versions.", no_args_is_help=True
)


@app.callback()
def _group() -> None:
    """Keeps `run` a sub-command even while it is the only one."""


@app.command("run")
def run(
    preset: Annotated[str, typer.Option(help="Named config: 'default' or 'debug'.")] = "default",
    init: Annotated[
        str | None, typer.Option(help="'production', 'scratch' or a checkpoint directory (default: the preset's).")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Where checkpoints go (default <FLEET_HOME>/learner/<preset>).")
    ] = None,
    demos: Annotated[Path | None, typer.Option(help="Episode store with demonstrations to mix in.")] = None,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Consume the fleet stream and publish gated model versions until Ctrl-C / SIGTERM."""
    from learner.config import get_preset
    from learner.service import main

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # the client logs every connection at INFO
    try:
        config = get_preset(preset)
    except KeyError as e:
        raise typer.BadParameter(str(e.args[0]), param_hint="--preset") from None
    changes: dict[str, object] = {}
    if init is not None:
        changes["init"] = init
    if run_dir is not None:
        changes["run_dir"] = run_dir
    if demos is not None:
        changes["demos"], changes["load_demos"] = demos, True
    main(dataclasses.replace(config, **changes))
