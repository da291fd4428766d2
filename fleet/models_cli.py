"""`fleet models ...`: list, inspect, promote, roll back, pin and unpin model versions.

Each change is written to the audit log (actor `cli:<os user>`) and announced on `fleet.models`.
"""

from __future__ import annotations

import getpass
import json
import logging
from datetime import UTC, datetime

import typer

app = typer.Typer(
    help="Model versions in the registry: list, show, promote, rollback, pin, unpin.", no_args_is_help=True
)

ReasonOption = typer.Option(..., "--reason", "-r", prompt="Reason (goes to the audit log)", help="Why (audit log).")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _registry():  # noqa: ANN202 - lazy import keeps `fleet --help` fast
    from fleet.registry import Registry
    from fleet.settings import get_settings

    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    return Registry(get_settings())


def _run(fn):  # noqa: ANN001, ANN202
    from fleet.registry import RegistryError

    try:
        return fn()
    except RegistryError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None


def _announce(info, event: str, alias: str | None, reason: str) -> None:  # noqa: ANN001
    from fleet.registry import announce

    if not announce(_registry().settings, info, event=event, alias=alias, actor=_actor(), reason=reason):
        typer.secho("warning: Kafka did not take the model event; robots converge by polling the alias", err=True)


@app.command("list")
def list_versions() -> None:
    """Every version with its aliases, parent, gate result and mean eval success."""
    registry = _registry()
    versions = _run(registry.list_versions)
    pinned = _run(registry.is_pinned)
    typer.echo(f"{'version':>7}  {'aliases':<22} {'parent':>6}  {'gate':<5} {'eval':>6}  created")
    for v in versions:
        aliases = ",".join(v.aliases) + (" (pinned)" if pinned and "production" in v.aliases else "")
        mean = v.eval_metrics.get("mean")
        created = datetime.fromtimestamp(v.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        gate = {True: "pass", False: "fail", None: "-"}[v.gate_passed]
        typer.echo(
            f"{v.version:>7}  {aliases:<22} {v.parent_version or '-':>6}  {gate:<5} "
            f"{'-' if mean is None else f'{mean:.2f}':>6}  {created}"
        )


@app.command("show")
def show(version: str = typer.Argument(..., help="Version number.")) -> None:
    """All tags and lineage of one version, as JSON."""
    v = _run(lambda: _registry().get_version(version))
    typer.echo(json.dumps({"version": v.version, "aliases": v.aliases, "run_id": v.run_id, "source": v.source,
                           "tags": v.tags}, indent=2))  # fmt: skip


@app.command("promote")
def promote(version: str = typer.Argument(..., help="Version to serve."), reason: str = ReasonOption) -> None:
    """Point `production` at VERSION (a human decision: allowed while pinned; the pin stays)."""
    info = _run(lambda: _registry().promote(version, actor=_actor(), role="admin", reason=reason))
    _announce(info, "promoted", "production", reason)
    typer.echo(f"production -> v{info.version}")


@app.command("rollback")
def rollback(
    to: str | None = typer.Option(None, "--to", help="Version to roll back to (default: the previous production)."),
    reason: str = ReasonOption,
) -> None:
    """Point `production` at an older version and pin it, so the learner cannot override it."""
    info = _run(lambda: _registry().rollback(to, actor=_actor(), role="admin", reason=reason))
    _announce(info, "rolled_back", "production", reason)
    typer.echo(f"production -> v{info.version} (pinned)")


@app.command("pin")
def pin(reason: str = ReasonOption) -> None:
    """Pin production: the learner publishes candidates but never promotes."""
    registry = _registry()
    _run(lambda: registry.pin(actor=_actor(), role="admin", reason=reason))
    typer.echo("production pinned")


@app.command("unpin")
def unpin(reason: str = ReasonOption) -> None:
    """Unpin production: gated automatic promotion resumes."""
    registry = _registry()
    _run(lambda: registry.unpin(actor=_actor(), role="admin", reason=reason))
    typer.echo("production unpinned")


@app.command("setup-users")
def setup_users_command() -> None:
    """As the MLflow admin (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD): create the learner's experiment,
    the registered model and one MLflow user per service whose password is in the environment
    (MLFLOW_LEARNER_PASSWORD, MLFLOW_DASHBOARD_PASSWORD, MLFLOW_ROBOTS_PASSWORD), each with only the permissions
    it uses (fleet.stack.mlflow_auth). Running it again sets the passwords again (rotation)."""
    import os

    from fleet.registry import EXPERIMENT
    from fleet.settings import get_settings
    from fleet.stack.mlflow_auth import SERVICE_PERMISSIONS, setup_users

    settings = get_settings()
    passwords = {s: os.environ[f"MLFLOW_{s.upper()}_PASSWORD"] for s in SERVICE_PERMISSIONS
                 if os.environ.get(f"MLFLOW_{s.upper()}_PASSWORD")}  # fmt: skip
    if not passwords:
        typer.secho("no MLFLOW_<SERVICE>_PASSWORD in the environment: nothing to set up", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    granted = setup_users(settings.tracking_uri, passwords, experiment=EXPERIMENT, model_name=settings.model_name)
    for service, permissions in granted.items():
        typer.echo(f"{service}: " + ", ".join(f"{kind} {p}" for kind, p in permissions.items()))
