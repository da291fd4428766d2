"""`fleet export lerobot`: recorded episodes as a LeRobotDataset v3.0."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

app = typer.Typer(help="Recorded episodes in other tools' formats.", no_args_is_help=True)


@app.command("lerobot")
def lerobot(
    out: str = typer.Option(..., "--out", help="Directory of the dataset (replaced if it exists)."),
    store: str | None = typer.Option(None, "--store", help="Episode store [default: the recorder's]."),
    embodiment: str | None = typer.Option(None, "--embodiment", help="Export this arm's episodes (one per dataset)."),
    task: str | None = typer.Option(None, "--task", help="Only episodes of this task id."),
    since: str | None = typer.Option(None, "--since", help="Only episodes started at or after (ISO date or time)."),
) -> None:
    """Write recorded episodes (frames, proprio, actions, rewards, interventions, model versions, instructions as
    tasks) as a LeRobotDataset v3.0 that `lerobot`'s LeRobotDataset(root=DIR) loads."""
    from fleet.episodes import EpisodeStore
    from fleet.export.lerobot import export, select
    from fleet.settings import get_settings

    try:
        start = datetime.fromisoformat(since).timestamp() if since else None
        root = Path(store) if store else get_settings().episode_store
        kind, episodes = select(EpisodeStore(root).iter_episodes(), embodiment=embodiment, task=task, since=start)
        done = export(episodes, Path(out), embodiment=kind)
    except (ValueError, KeyError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"{done.episodes} episodes, {done.frames} frames, {done.tasks} tasks, cameras {list(done.cameras)} "
               f"-> {done.root}")  # fmt: skip
