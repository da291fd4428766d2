"""`fleet models ...`: list, inspect, promote, roll back, pin and unpin model versions; `fleet models canary ...`
runs a version on a share of the fleet first and promotes or rolls it back on the live A/B (`fleet.rollout`).

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


canary_app = typer.Typer(
    help="Canary rollouts: run a version on a share of the fleet, compare it live, promote or roll back.",
    no_args_is_help=True,
)
app.add_typer(canary_app, name="canary")


def _known_robots(registry, active_minutes: float) -> list[str]:  # noqa: ANN001
    """Robots seen in the last `active_minutes` (the robots table the dashboard keeps from heartbeats)."""
    from datetime import timedelta

    from sqlalchemy import select

    from fleet.db.models import Robot

    if registry.sessions is None:
        return []
    since = datetime.now(UTC) - timedelta(minutes=active_minutes)
    with registry.sessions() as session:
        return list(session.scalars(select(Robot.id).where(Robot.last_seen_at >= since, Robot.in_rotation)).all())


RobotsOption = typer.Option([], "--robot", help="A robot to put on canary (repeatable).")


@canary_app.command("start")
def canary_start(
    version: str = typer.Argument(..., help="Version to run on the canary robots."),
    fraction: float = typer.Option(0.0, "--fraction", help="Share of the fleet (of robots seen recently) in [0, 1]."),
    robots: list[str] = RobotsOption,
    active_minutes: float = typer.Option(10.0, "--active-minutes", help="Robots seen this recently make the fleet."),
    reason: str = ReasonOption,
) -> None:
    """Run VERSION on a share of the fleet (the rest stays on production) until it is promoted or rolled back."""
    from fleet.canary import Cohort

    registry = _registry()
    known = _known_robots(registry, active_minutes)
    try:
        cohort = Cohort.for_fleet(version, fraction=fraction, robots=robots, known=known)
    except ValueError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    info = _run(lambda: registry.start_canary(version, cohort, actor=_actor(), role="admin", reason=reason))
    _announce(info, "canary_started", "canary", reason)
    members = [r for r in known if cohort.includes(r)] + [r for r in cohort.robots if r not in known]
    typer.echo(f"canary -> v{info.version} on {len(members)} robot(s): {', '.join(sorted(members)) or '-'}")


def _controller(registry):  # noqa: ANN001, ANN202
    from fleet.rollout import CanaryController

    if registry.sessions is None:
        typer.secho("error: the canary A/B reads episodes from the fleet DB; set FLEET_DATABASE_URL", err=True)
        raise typer.Exit(code=1)
    return CanaryController(registry, registry.sessions, announce=_announce, actor=_actor())


def _print_status(status) -> None:  # noqa: ANN001
    if status is None:
        typer.echo("no canary running")
        return
    typer.echo(f"canary v{status.version} against production v{status.production or '-'}"
               f" since {status.started_at or '?'} on {', '.join(status.tasks) or 'no shared task yet'}")  # fmt: skip
    typer.echo(
        f"{'metric':<20} {'canary':>8} {'n':>5} {'production':>10} {'n':>5}  {'difference [always-valid 95%]':<32}"
    )
    for c in status.comparisons:
        typer.echo(
            f"{c.metric:<20} {c.canary_mean:>8.3f} {c.canary_n:>5} {c.production_mean:>10.3f} {c.production_n:>5}"
            f"  {c.diff:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}] {c.verdict}"
        )
    typer.echo(f"decision: {status.decision.action} ({status.decision.reason})")


@canary_app.command("status")
def canary_status(as_json: bool = typer.Option(False, "--json", help="Print the status as JSON.")) -> None:
    """The running canary's live A/B against production, and what the controller would decide now."""
    status = _run(lambda: _controller(_registry()).status())
    if as_json:
        typer.echo(json.dumps(status.to_dict() if status else None, indent=2))
    else:
        _print_status(status)


@canary_app.command("promote")
def canary_promote(reason: str = ReasonOption) -> None:
    """End the rollout now: production -> the canary version (a human decision: allowed while pinned)."""
    info = _run(lambda: _registry().end_canary("promote", actor=_actor(), role="admin", reason=reason))
    _announce(info, "promoted", "production", reason)
    typer.echo(f"production -> v{info.version}")


@canary_app.command("rollback")
def canary_rollback(reason: str = ReasonOption) -> None:
    """End the rollout now: every canary robot returns to production."""
    info = _run(lambda: _registry().end_canary("rollback", actor=_actor(), role="admin", reason=reason))
    _announce(info, "canary_ended", "canary", reason)
    typer.echo(f"canary v{info.version} rolled back; its robots return to production")


@canary_app.command("watch")
def canary_watch(
    interval: float = typer.Option(15.0, "--interval", help="Seconds between looks."),
    once: bool = typer.Option(False, "--once", help="Look once, act, and exit."),
) -> None:
    """Run the controller: promote or roll back the running canary as soon as the A/B decides (audited)."""
    import time

    controller = _controller(_registry())
    while True:
        status = _run(controller.step)
        _print_status(status)
        if once:
            return
        time.sleep(interval)


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
