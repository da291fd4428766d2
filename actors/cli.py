"""`fleet robots run`: the simulated fleet on Ray, following the registry's production alias."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import typer

from fleet.defaults import DEFAULT_EMBODIMENTS
from fleet.sim.scenarios import SCENARIO_NAMES

app = typer.Typer(help="The simulated robot fleet (Ray actors).", no_args_is_help=True)


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@app.command("run")
def run(
    n: int = typer.Option(4, "--n", help="Number of simulated robots (one Ray actor each)."),
    tasks: str | None = typer.Option(
        None, help="Comma-separated task ids, spread over the robots [default: the scenario's]."
    ),
    scenario: str = typer.Option("nominal", help=f"Deployment conditions of the robots' scenes: {SCENARIO_NAMES}."),
    embodiments: str = typer.Option(
        ",".join(DEFAULT_EMBODIMENTS), help="Comma-separated embodiments, spread over the robots."
    ),
    episodes: int | None = typer.Option(None, help="Episodes per robot (default: run for --duration)."),
    duration: float | None = typer.Option(None, help="Seconds to run (default: forever when --episodes unset)."),
    realtime: bool = typer.Option(False, help="Tick at the control rate instead of as fast as the sim runs."),
    address: str | None = typer.Option(
        None,
        "--ray-address",
        "--address",
        help="Ray cluster to join (host:port or auto; default: RAY_ADDRESS, else a local Ray node). Robots spread "
        "over its nodes; one lost is started again on the others.",
    ),
    seed: int = typer.Option(0, help="Base seed; robot i uses seed + i."),
    rotate_tasks: bool = typer.Option(
        False, help="Each robot works through every task its arm can do, one episode each (covers the whole grid)."
    ),
    supervision: str = typer.Option(
        "takeover",
        help="Who watches the robots: takeover (the scripted expert takes over a robot that stalls), "
        "stop (a stalled episode is ended as a failure, no takeover) or off.",
    ),
    takeover_rules: str = typer.Option(
        "stall",
        help="When the scripted expert takes over: stall (no progress for 1 s), regress (heading away from "
        "the goal), deviate (moving otherwise than the expert would for 3 steps), misaligned (low and off to the "
        "side of the target for 3 steps, e.g. coming down beside the cube), struggling (drives whole episodes of a "
        "task the robot has been failing, as often as it fails), comma-separated; each "
        "correction records which fired.",
    ),
    correct_in_place: bool = typer.Option(
        False, help="The expert lines a misaligned approach up from where the tool is instead of starting over."
    ),
    drive_below: float = typer.Option(
        1.0,
        help="struggling: drive no whole episode once the robot succeeds on its own in this share of its last "
        "episodes of the task (1.0: as long as it fails at all); the other rules still take over.",
    ),
) -> None:
    """Run N simulated robots that act with the production model, stream to Kafka and hot-reload."""
    from actors.robot import NoProductionModel
    from actors.sim_fleet import FleetConfig, run_fleet
    from fleet.observability import configure_logging, serve_metrics
    from fleet.settings import get_settings

    settings = get_settings()
    configure_logging("robots", logging.INFO, json=settings.log_format == "json")
    if episodes is None and duration is None:
        duration = 10**9
    try:
        from fleet.sim.scenarios import get_scenario

        conditions = get_scenario(scenario)
        config = FleetConfig(
            n=n, tasks=_split(tasks) if tasks else conditions.tasks, scenario=conditions.name,
            embodiments=_split(embodiments), episodes=episodes, duration_s=duration,
            realtime=realtime, address=address, seed=seed, rotate_tasks=rotate_tasks, supervision=supervision,
            takeover_rules=_split(takeover_rules), correct_in_place=correct_in_place, drive_below=drive_below,
        )  # fmt: skip
    except (KeyError, ValueError) as err:
        typer.secho(f"error: {err.args[0] if isinstance(err, KeyError) else err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None

    terminal, last_line = sys.stdout.isatty(), [0.0]

    def progress(statuses: list[dict]) -> None:
        done = sum(s["episodes"] for s in statuses)
        versions = sorted({str(s["version"]) for s in statuses})
        line = f"{done} episodes, versions running: {', '.join(versions)}"
        if terminal:  # one line, rewritten in place
            typer.echo(f"\r{line}", nl=False)
        elif time.monotonic() - last_line[0] >= 30.0:  # a log file (a background service): a line now and then
            last_line[0] = time.monotonic()
            typer.echo(line)

    metrics = serve_metrics(settings.metrics_port_robots, settings.metrics_bind_host, service="robots")
    try:
        results = run_fleet(settings, config, on_progress=progress)
    except (NoProductionModel, ValueError, KeyError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    except Exception as err:  # Ray wraps actor start-up errors
        cause = getattr(err, "cause", None) or err
        typer.secho(f"error: {cause}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    finally:
        if metrics is not None:
            metrics.close()
    typer.echo("")
    for r in results:
        typer.echo(
            f"{r['robot_id']:<8} {r['task']:<6} {r['embodiment']:<6} v{r['version']}  "
            f"{r['successes']}/{r['episodes']} success, {r['interventions']} intervention steps"
            + (f", restarted {r['restarts']}x" if r.get("restarts") else "")
            + (" (lost: kept dying, given up)" if r.get("state") == "lost" else "")
        )
    if any(r.get("state") == "lost" for r in results):
        raise typer.Exit(code=1)  # the others ran to the end, but a script must see that a robot did not


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, help="Port (openpi's default)."),
    max_batch: int = typer.Option(16, help="Requests answered by one batched forward at most."),
    batch_wait_ms: float = typer.Option(2.0, help="How long the first request of a batch waits for others."),
    certfile: str | None = typer.Option(None, help="TLS certificate file (wss://); production needs it."),
    keyfile: str | None = typer.Option(None, help="The TLS certificate's private key file."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without tokens (refused in production)."),
) -> None:
    """Serve the production version over openpi's websocket protocol (hot-reloaded as robots do)."""
    from actors.robot import NoProductionModel
    from actors.serve import ServeConfig
    from actors.serve import serve as run_server
    from fleet.observability import configure_logging
    from fleet.settings import get_settings

    settings = get_settings()
    configure_logging("serve", logging.INFO, json=settings.log_format == "json")
    try:
        tls = {"certfile": Path(certfile) if certfile else None, "keyfile": Path(keyfile) if keyfile else None}
        config = ServeConfig(host=host, port=port, max_batch=max_batch, batch_wait_ms=batch_wait_ms, **tls)
        scheme = "wss" if certfile else "ws"
        run_server(
            settings, config, auth=not no_auth, on_ready=lambda at: typer.echo(f"serving on {scheme}://{host}:{at}")
        )
    except (NoProductionModel, ValueError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        pass
