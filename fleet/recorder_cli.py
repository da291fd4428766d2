"""`fleet record`: run the recorder until Ctrl-C / SIGTERM (register with `register(app)` in fleet/cli.py)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from fleet.recorder import GROUP_ID, RecorderConfig


def main(config: RecorderConfig, *, database_url: str | None, stop: threading.Event | None = None) -> int:
    """Run a recorder until `stop` is set; returns the number of episodes recorded."""
    from fleet.recorder import Recorder
    from fleet.recorder_db import SqlEpisodeIndex
    from fleet.settings import get_settings
    from fleet.transport import KafkaTransport, TransportConfig, ensure_topics

    stop = stop or threading.Event()
    transport_config = TransportConfig.from_settings(get_settings(), client_id="fleet-recorder")
    ensure_topics(transport_config)
    index = None
    if database_url is not None:
        from fleet.db import make_engine, session_factory
        from fleet.db.migrate import prepare

        prepare(database_url, migrate=get_settings().database_migrate)
        index = SqlEpisodeIndex(session_factory(make_engine(database_url)))
    transport = KafkaTransport(transport_config, create_topics=False)
    recorder = Recorder(config, transport=transport, index=index)
    try:
        recorder.run(stop.is_set)
    finally:
        recorder.close()
        transport.close()
    return recorder.episodes_recorded


def record(
    group: Annotated[
        str, typer.Option(help="Kafka consumer group; replicas in one group share the partitions.")
    ] = GROUP_ID,
    store: Annotated[Path | None, typer.Option(help="Episode store root [default: $FLEET_HOME/episodes].")] = None,
    no_db: Annotated[bool, typer.Option("--no-db", help="Write the episode store only, no DB metadata.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Consume fleet.trajectories and record every finished episode in the episode store and the DB."""
    from fleet.observability import configure_logging, serve_metrics
    from fleet.settings import get_settings
    from fleet.transport import TransportError

    settings = get_settings()
    configure_logging("recorder", logging.DEBUG if verbose else logging.INFO, json=settings.log_format == "json")
    overrides: dict[str, object] = {"group_id": group}
    if store is not None:
        overrides["store_dir"] = store
    config = RecorderConfig.from_settings(settings, **overrides)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    metrics = serve_metrics(settings.metrics_port_recorder, settings.metrics_bind_host, service="recorder")
    try:
        episodes = main(config, database_url=None if no_db else settings.db_url, stop=stop)
    except TransportError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    finally:
        if metrics is not None:
            metrics.close()
    typer.echo(f"recorder stopped after recording {episodes} episodes into {config.store_dir}")


def register(app: typer.Typer) -> None:
    """Add `fleet record` to the `fleet` CLI."""
    app.command("record")(record)


if __name__ == "__main__":  # `python -m fleet.recorder_cli` runs the recorder without the fleet CLI
    typer.run(record)
