"""`fleet dashboard` and `fleet users add`: start the dashboard, bootstrap users.

Register in `fleet/cli.py` with::

    from dashboards.cli import register as register_dashboard
    register_dashboard(app)
"""

from __future__ import annotations

import sys

import typer

from fleet.settings import get_settings

users_app = typer.Typer(help="Dashboard users (viewer < reviewer < operator < admin).", no_args_is_help=True)


def dashboard(
    host: str | None = typer.Option(None, help="Interface to bind (default FLEET_HOST)."),
    port: int | None = typer.Option(None, help="Port (default FLEET_DASHBOARD_PORT)."),
    migrate: bool = typer.Option(True, help="Run database migrations (alembic upgrade head) before starting."),
) -> None:
    """Serve the dashboard (fleet, corrections, models, audit, training) and its JSON API."""
    import logging

    import uvicorn

    from dashboards.app import create_app
    from fleet.db.migrate import prepare
    from fleet.observability import configure_logging

    settings = get_settings()
    configure_logging("dashboard", logging.INFO, json=settings.log_format == "json")
    prepare(settings.db_url, migrate=migrate and settings.database_migrate)
    app = create_app(settings)
    # log_config=None: uvicorn's own loggers go through the handler above (JSON in production), not its own.
    uvicorn.run(
        app, host=host or settings.host, port=port or settings.dashboard_port, log_level="info", log_config=None
    )


def add_user(
    username: str = typer.Option(..., "--username", help="Login name."),
    role: str = typer.Option(..., "--role", help="viewer, reviewer, operator or admin."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin (scripts)."),
) -> None:
    """Create a dashboard user (e.g. the first admin). The password is prompted for, never defaulted."""
    from dashboards.errors import DashboardError

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        create_user_main(username=username, role=role, password=password)
    except DashboardError as e:
        typer.secho(f"error: {e.detail}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"user {username!r} created with role {role}")


def create_user_main(*, username: str, role: str, password: str, database_url: str | None = None) -> None:
    """What `fleet users add` does, callable from code: migrate, create, audit."""
    from dashboards import crud
    from dashboards.auth import Principal
    from fleet.db import make_engine, session_factory
    from fleet.db.migrate import upgrade

    url = database_url or get_settings().db_url
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            user = crud.create_user(session, username=username, password=password, role=role)
            cli = Principal(name="cli", role="admin", via="token")
            crud.audit(
                session,
                principal=cli,
                action="user.create",
                target=f"user:{user.username}",
                reason="fleet users add",
                details={"role": role},
            )
            session.commit()
    finally:
        engine.dispose()


users_app.command("add")(add_user)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
    app.add_typer(users_app, name="users")
