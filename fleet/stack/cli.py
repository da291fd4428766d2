"""`fleet up`, `fleet down`, `fleet status`: the local stack from the command line."""

from __future__ import annotations

import logging
import time

import typer

from fleet.settings import get_settings
from fleet.stack.errors import StackError


def _fail(err: Exception) -> typer.Exit:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _quiet_clients() -> None:
    # kafka-python logs every refused connection while a broker is down; status answers that itself.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def up(
    timeout: float = typer.Option(90.0, help="Seconds to wait for every service to become healthy."),
    kafka_brokers: int | None = typer.Option(
        None,
        min=1,
        max=9,
        help="Kafka brokers to start (3: a cluster keeping each topic on 3 brokers, any one may die). Default: "
        "FLEET_KAFKA_BROKERS (1). Export FLEET_KAFKA_BROKERS for the other commands too (`fleet down`, status).",
    ),
) -> None:
    """Start the local stack (Kafka KRaft node(s), MLflow server, database migrations); idempotent."""
    from fleet.stack import launcher

    _quiet_clients()
    settings = get_settings()
    if kafka_brokers is not None:
        settings = settings.model_copy(update={"kafka_brokers": kafka_brokers})
    started = time.monotonic()
    try:
        rows = launcher.up(settings, timeout_s=timeout, progress=True)
    except StackError as err:
        raise _fail(err) from None
    for row in rows:
        typer.echo(row.line())
    typer.echo(f"stack healthy in {time.monotonic() - started:.1f} s (state in {settings.home})")


def down() -> None:
    """Stop every local service started by `fleet up`; leaves no process behind."""
    from fleet.stack import launcher

    launcher.down(get_settings())


def status() -> None:
    """One line per service; exits non-zero when any is down."""
    from fleet.stack import launcher

    _quiet_clients()
    rows = launcher.status(get_settings())
    for row in rows:
        typer.echo(row.line())
    if not all(row.up for row in rows):
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
