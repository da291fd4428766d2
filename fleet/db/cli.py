"""`fleet db`: the schema and the services' roles, run as the database's owner (production: once per release)."""

from __future__ import annotations

import typer

app = typer.Typer(help="The fleet database: migrate the schema, grant each service's role its privileges.")


@app.command("upgrade")
def upgrade_command() -> None:
    """Migrate the schema to this release's head, then give each service's role (fleet_recorder, fleet_learner,
    fleet_dashboard, where they exist) exactly its privileges (`fleet.db.roles`)."""
    from fleet.db.migrate import current_revision, upgrade
    from fleet.db.roles import grant_service_roles
    from fleet.settings import get_settings

    url = get_settings().db_url
    upgrade(url)
    granted = grant_service_roles(url)
    typer.echo(f"database at revision {current_revision(url)}")
    for service, role in granted.items():
        typer.echo(f"  {service}: role {role}")
