"""The `fleet` command line: one console script, a sub-command per job.

Commands stay thin: they parse arguments, set up logging and call a `main(config)`-style
function of the module that does the work. Heavy imports (torch, ray, mlflow) happen inside
commands, so `fleet --help` stays fast.
"""

from __future__ import annotations

import typer

from actors.cli import app as robots_app
from dashboards.cli import register as register_dashboard
from fleet.models_cli import app as models_app
from fleet.stack.cli import register as register_stack
from learner.cli import app as learner_app

app = typer.Typer(
    name="fleet",
    help="Online post-training of VLA robot policies across a robot fleet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

register_stack(app)
# Area sub-commands register themselves here (each in its own module, imports kept lazy).
app.add_typer(models_app, name="models")
app.add_typer(robots_app, name="robots")
app.add_typer(learner_app, name="learner")
register_dashboard(app)
