"""The `fleet` command line: one console script, a sub-command per job.

Commands stay thin: they parse arguments, set up logging and call a `main(config)`-style
function of the module that does the work. Heavy imports (torch, ray, mlflow) happen inside
commands, so `fleet --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    import typer
    from typer.core import TyperGroup
except ModuleNotFoundError as err:  # a robot's `fleet[client]` install carries no services
    raise SystemExit(f"the fleet command runs fleet's services and needs pip install 'fleet[server]' ({err})") from err

from fleet.db.cli import app as db_app
from fleet.demo import DemoConfig
from fleet.export.cli import app as export_app
from fleet.models_cli import app as models_app
from fleet.recipe.cli import register as register_recipe
from fleet.recorder_cli import register as register_recorder
from fleet.sim.scenarios import SCENARIO_NAMES
from fleet.stack.cli import register as register_stack

# The services' sub-commands, by name: `fleet/` is the foundation every service imports, so it imports none of
# them; each is loaded when it runs (or when `fleet --help` lists it). name -> (module, attribute): a Typer app
# (a command group) or a function (one command).
SERVICE_COMMANDS: dict[str, tuple[str, str]] = {
    "robots": ("actors.cli", "app"),
    "serve": ("actors.cli", "serve"),
    "learner": ("learner.cli", "app"),
    "dashboard": ("dashboards.cli", "dashboard"),
    "users": ("dashboards.cli", "users_app"),
}


class _ServiceCommands(TyperGroup):
    """The root group: fleet's own commands plus `SERVICE_COMMANDS`, imported on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *SERVICE_COMMANDS})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in SERVICE_COMMANDS or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        module, attribute = SERVICE_COMMANDS[cmd_name]
        target = getattr(importlib.import_module(module), attribute)
        holder = typer.Typer()  # registered the way `add_typer` / `command` would have: a group stays a group
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=cmd_name)
        else:
            holder.command(cmd_name)(target)
        holder.command("_")(lambda: None)  # two entries, so Typer builds a group instead of collapsing to one
        command = typer.main.get_group(holder).commands[cmd_name]
        self.add_command(command, cmd_name)
        return command


app = typer.Typer(
    name="fleet",
    help="Online post-training of VLA robot policies across a robot fleet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=_ServiceCommands,
)

register_stack(app)
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
app.add_typer(export_app, name="export")
register_recorder(app)
register_recipe(app)


@app.command("demo")
def demo(
    robots: int | None = typer.Option(None, help="Simulated robots.", show_default=str(DemoConfig.robots)),
    minutes: float | None = typer.Option(
        None, help="Fleet time to run, on the wall clock.", show_default=f"{DemoConfig.minutes:g}"
    ),
    tasks: str | None = typer.Option(
        None,
        help="Comma-separated tasks version 1 knows; the fleet works on those the scenario has.",
        show_default=",".join(DemoConfig.tasks),
    ),
    embodiments: str | None = typer.Option(
        None, help="Comma-separated embodiments.", show_default=",".join(DemoConfig.embodiments)
    ),
    scenario: str | None = typer.Option(
        None,
        help=f"Deployment conditions of the fleet and the gate: {SCENARIO_NAMES}.",
        show_default=DemoConfig.scenario,
    ),
    takeover_rules: str | None = typer.Option(
        None,
        help="When the scripted operator takes over (as fleet robots run).",
        show_default=",".join(DemoConfig.takeover_rules),
    ),
    drive_below: float | None = typer.Option(
        None,
        help="The operator drives no whole episode once a robot succeeds this often on its own (as fleet robots run).",
        show_default=str(DemoConfig.drive_below),
    ),
    pretrain: bool = typer.Option(
        False, help="Pre-train version 1 here on freshly collected demos instead of using the shipped one."
    ),
    bc_steps: int | None = typer.Option(
        None, help="Behaviour-cloning steps for a version 1 pre-trained here.", show_default=str(DemoConfig.bc_steps)
    ),
    dashboard: bool = typer.Option(True, help="Start the dashboard too."),
) -> None:
    """The whole loop: stack, version 1, learner, dashboard, a simulated fleet; ends with a learning curve."""
    import logging

    from fleet.demo import main
    from fleet.observability import configure_logging
    from fleet.settings import get_settings
    from fleet.stack.errors import StackError

    settings = get_settings()
    configure_logging("demo", logging.WARNING, json=settings.log_format == "json")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    split = lambda v: tuple(x.strip() for x in v.split(",") if x.strip())  # noqa: E731
    given: dict[str, Any] = {
        "robots": robots, "minutes": minutes, "scenario": scenario, "bc_steps": bc_steps,
        "tasks": split(tasks) if tasks is not None else None,
        "embodiments": split(embodiments) if embodiments is not None else None,
        "takeover_rules": split(takeover_rules) if takeover_rules is not None else None, "drive_below": drive_below,
    }  # fmt: skip
    try:
        config = DemoConfig(dashboard=dashboard, pretrain=pretrain,
                            **{k: v for k, v in given.items() if v is not None})  # fmt: skip
    except (KeyError, ValueError) as err:
        typer.secho(f"error: {err.args[0] if isinstance(err, KeyError) else err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    try:
        main(config)
    except StackError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
