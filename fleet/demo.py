"""`make demo` / `fleet demo`: the whole loop on one machine, visibly learning.

1. `fleet up` (Kafka, MLflow, DB).
2. Version 1, if the registry has no production model: scripted demonstrations of each task ×
   embodiment, behaviour-cloned into the VLA, published and promoted.
3. The learner (`fleet learner run --preset demo`) and the dashboard (`fleet dashboard`) as
   background services (stopped by `fleet down`), an admin user with a fresh random password.
4. A simulated fleet on Ray that acts, gets corrected by the scripted supervisor, streams to
   Kafka and hot-reloads every version the learner promotes; a live table shows success rate and
   interventions per version, versions published and which robot runs which version.
5. `demo/learning_curve.png`: success and interventions per episode over fleet time, per version.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.defaults import DEFAULT_EMBODIMENTS
from fleet.naming import version_number
from fleet.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """What `make demo` runs."""

    robots: int = 4  # simulated robots (Ray actors)
    tasks: tuple[str, ...] = ("pick", "push")  # tasks the fleet works on (and version 1 is trained on)
    embodiments: tuple[str, ...] = DEFAULT_EMBODIMENTS  # embodiments of the fleet
    # Deployment conditions the fleet and the learner's gate run in (fleet.sim.scenarios). Version 1 learns from
    # demonstrations in the nominal conditions; a scenario with a new task also seeds it with that task's few demos.
    scenario: str = "nominal"
    # Version 1 is the recipe's pre-training stage on scripted demos. Measured with 300 demos per pair on
    # 6 pairs, front camera only: mean success 3% after 2.5k steps, 20% after 5k, 62% after 10k; with the
    # wrist camera 85% after 10k (bench/cameras.py). 100 demos per pair and 4k steps (~7 min here with both
    # cameras) start the demo's fleet at ~64% autonomous success, with room to learn.
    demos_per_pair: int = 100  # scripted demonstrations per task × embodiment for version 1
    bc_steps: int = 4000  # pre-training (behaviour-cloning) steps for version 1
    minutes: float = 15.0  # fleet time
    learner_preset: str = "demo"  # learner preset (see learner/config.py)
    dashboard: bool = True  # start the dashboard too
    out: Path = field(default_factory=lambda: Path("demo"))  # where the learning curve goes

    def __post_init__(self) -> None:
        if self.robots < 1 or self.minutes <= 0 or self.bc_steps < 1:
            raise ValueError("DemoConfig: robots, minutes and bc_steps must be positive")
        from fleet.sim.scenarios import get_scenario

        get_scenario(self.scenario)  # an unknown name fails before anything starts

    @property
    def fleet_tasks(self) -> tuple[str, ...]:
        """What the fleet works on: the demo's tasks the scenario has, else the scenario's own (a new task)."""
        from fleet.sim.scenarios import get_scenario

        scenario = get_scenario(self.scenario)
        return tuple(t for t in self.tasks if t in scenario.tasks) or scenario.tasks

    def seed_demos(self) -> dict[str, int]:
        """Demonstrations per task x embodiment version 1 learns from: the demo's tasks, and a new task's few."""
        from fleet.sim.scenarios import get_scenario

        scenario = get_scenario(self.scenario)
        counts = dict.fromkeys(self.tasks, self.demos_per_pair)
        if scenario.demos_per_pair is not None:
            counts.update(dict.fromkeys(scenario.tasks, scenario.demos_per_pair))
        return counts


def ensure_version_one(settings: Settings, config: DemoConfig) -> str:
    """The production version, creating version 1 (demos → behaviour cloning → registry) if none.

    A production version no trusted key signed (a home from before versions were signed) counts as none: robots
    would refuse it, so a signed one is trained and promoted in its place.
    """
    from fleet.registry import Registry, publish_model
    from fleet.signing import SignatureError

    registry = Registry(settings)
    current = registry.version_for_alias("production")
    if current is not None:
        try:
            registry.verify(current)
        except SignatureError as err:
            print(f"production v{current.version} cannot run on robots ({err}); training a signed version in its place")
        else:
            log.info("production model exists: v%s", current.version)
            return current.version

    from fleet.episodes import EpisodeStore
    from fleet.policy.checkpoint import load_checkpoint
    from fleet.recipe.train import StageConfig, run_stage
    from fleet.sim.rollout import collect_demos

    store = EpisodeStore(settings.home / "demos")
    wanted = config.seed_demos()
    for task, count in wanted.items():
        for embodiment in config.embodiments:
            have = sum(1 for _, e in store.list() if e.startswith(f"{task}-{embodiment}-"))
            if have < count:
                print(f"collecting {count} scripted demos: {task} × {embodiment}")
                collect_demos(store, task=task, embodiment=embodiment, episodes=count, seed=0)
    print(f"pre-training version 1 on {len(store.list())} demos ({config.bc_steps} steps)")
    stage = StageConfig(
        stage="pretrain", demos=store.root, run_dir=settings.home / "train" / "v1-pretrain", steps=config.bc_steps,
        tasks=tuple(wanted), embodiments=config.embodiments, tracking_uri=settings.tracking_uri,
    )  # fmt: skip
    model = load_checkpoint(run_stage(stage).checkpoint)
    info = publish_model(
        registry, model, parent_version=None, actor="demo",
        tags={"origin": "behaviour cloning on scripted demos", "demos": str(len(store.list()))},
    )  # fmt: skip
    registry.promote(info.version, actor="demo", role="admin", reason="version 1 from demonstrations")
    return info.version


def start_service(settings: Settings, name: str, argv: list[str]) -> int:
    """A background fleet service that `fleet down` stops (pid file in the run dir)."""
    from fleet.stack.process import ManagedProcess

    proc = ManagedProcess(
        name, [sys.executable, "-m", "fleet", *argv], settings.run_dir, settings.log_dir / f"{name}.log"
    )
    return proc.start()


def _admin_password(settings: Settings) -> str | None:
    """Create the `admin` dashboard user with a random password, once; returns it (None if it existed)."""
    password = secrets.token_urlsafe(12)
    result = subprocess.run(
        [sys.executable, "-m", "fleet", "users", "add", "--username", "admin", "--role", "admin", "--password-stdin"],
        input=password, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return password if result.returncode == 0 else None


Event = tuple[float, str, bool, int]  # an episode: (finished at, version, success, intervention steps)


def summarize(statuses: list[dict[str, Any]], events: list[Event]) -> dict[str, Any]:
    """Per-version success rate and interventions per episode over every episode that ran (`events`: a robot's
    report carries only its latest episodes, so the demo collects them as they come), and the rollout state."""
    # "autonomous" = solved without any supervisor step: what the policy can do on its own
    per_version: dict[str, list[tuple[bool, int]]] = defaultdict(list)
    for _finished, version, success, interventions in events:
        per_version[version].append((success, interventions))
    rollout: dict[str, int] = defaultdict(int)
    for status in statuses:
        rollout[str(status["version"])] += 1
    return {
        "versions": {
            v: {
                "episodes": len(rows),
                "success": sum(s for s, _ in rows) / len(rows),
                "autonomous_success": sum(s and i == 0 for s, i in rows) / len(rows),
                "interventions_per_episode": sum(i for _, i in rows) / len(rows),
            }
            for v, rows in sorted(per_version.items(), key=lambda kv: version_number(kv[0]) or 0)
        },
        "rollout": dict(rollout),
        "episodes": len(events),
    }


def collect(events: dict[tuple[str, float], Event], statuses: list[dict[str, Any]]) -> list[Event]:
    """Add the robots' latest episodes to `events` (keyed by robot and finish time, so a report seen twice counts
    once); every episode so far, in order."""
    for status in statuses:
        for v, success, interventions, _steps, finished, *_ in status.get("recent", []):
            events[(status["robot_id"], finished)] = (finished, str(v), bool(success), int(interventions))
    return sorted(events.values())


def _table(summary: dict[str, Any], elapsed_s: float, minutes: float) -> Any:
    from rich.table import Table

    table = Table(title=f"fleet demo — {elapsed_s / 60:.1f} / {minutes:.0f} min, {summary['episodes']} episodes")
    columns = ("version", "episodes", "success", "autonomous success", "interventions / episode", "robots on it")
    for column in columns:
        table.add_column(column, justify="right")
    for version, row in summary["versions"].items():
        table.add_row(
            f"v{version}", str(row["episodes"]), f"{row['success']:.0%}", f"{row['autonomous_success']:.0%}",
            f"{row['interventions_per_episode']:.1f}",
            str(summary["rollout"].get(version, 0)),
        )  # fmt: skip
    return table


def _trailing_mean(values: Any, window: int) -> Any:
    import numpy as np

    sums = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (sums[idx] - sums[lo]) / (idx - lo)


def plot_learning_curve(events: list[Event], path: Path, *, window: int = 20) -> Path:
    """Rolling success rate and interventions per episode over fleet time, coloured by version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    events = sorted(events)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    if events:
        t0 = events[0][0]
        minutes = np.array([(t - t0) / 60 for t, *_ in events])
        success = np.array([s for _, _, s, _ in events], dtype=float)
        interventions = np.array([i for *_, i in events], dtype=float)
        autonomous = success * (interventions == 0)
        ax1.plot(minutes, _trailing_mean(success, window), color="tab:blue", label="success (with help)")
        ax1.plot(minutes, _trailing_mean(autonomous, window), color="tab:green", label="autonomous success")
        ax1.legend(loc="lower right", fontsize=8)
        ax2.plot(minutes, _trailing_mean(interventions, window), color="tab:red")
        for version in sorted({v for _, v, _, _ in events}, key=lambda v: int(v) if v.isdigit() else 0):
            first = next(m for m, (_, v, _, _) in zip(minutes, events, strict=True) if v == version)
            for ax in (ax1, ax2):
                ax.axvline(first, color="grey", lw=0.6, ls=":")
            ax1.text(first, 1.02, f"v{version}", fontsize=8, transform=ax1.get_xaxis_transform())
    ax1.set_ylabel(f"success (rolling {window})")
    ax1.set_ylim(0, 1.05)
    ax2.set_ylabel("intervention steps / episode")
    ax2.set_xlabel("fleet time (min)")
    fig.suptitle("fleet: online post-training from corrections and rewards")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(config: DemoConfig) -> dict[str, Any]:
    from rich.console import Console
    from rich.live import Live

    from actors.sim_fleet import FleetConfig, run_fleet
    from fleet.stack import launcher

    console = Console()
    settings = Settings()
    for row in launcher.up(settings, progress=True, log=lambda m: console.print(f"[dim]{m}[/dim]")):
        console.print(row.line())
    version = ensure_version_one(settings, config)
    console.print(f"production model: v{version}")

    start_service(settings, "recorder", ["record"])
    learner = ["learner", "run", "--preset", config.learner_preset, "--demos", str(settings.home / "demos")]
    start_service(settings, "learner", [*learner, "--scenario", config.scenario])
    if config.dashboard:
        password = _admin_password(settings)
        start_service(settings, "dashboard", ["dashboard"])
        console.print(f"dashboard: {settings.dashboard_url}  (user admin" + (f", password {password})" if password
                      else ", password as set before)"))  # fmt: skip

    # The terminal shows the live table, the dashboard's address and real errors (a robot that fails raises in
    # this process); the robots' own output (Ray worker lines, Kafka client warnings, download progress bars) goes
    # to Ray's log files.
    os.environ.setdefault("FLEET_RAY_LOG_TO_DRIVER", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the robots inherit it
    console.print("[dim]robots' logs: /tmp/ray/session_latest/logs/; services': " + str(settings.log_dir) + "[/dim]")
    events: dict[tuple[str, float], Event] = {}
    started = time.monotonic()
    fleet_config = FleetConfig(
        n=config.robots, tasks=config.fleet_tasks, embodiments=config.embodiments, duration_s=config.minutes * 60,
        poll_interval_s=10.0, scenario=config.scenario,
    )  # fmt: skip
    with Live(console=console, refresh_per_second=2) as live:

        def progress(statuses: list[dict[str, Any]]) -> None:
            summary = summarize(statuses, collect(events, statuses))
            live.update(_table(summary, time.monotonic() - started, config.minutes))

        results = run_fleet(settings, fleet_config, on_progress=progress)
    summary = summarize(results, collect(events, results))
    curve = plot_learning_curve(list(events.values()), config.out / "learning_curve.png")
    (config.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    console.print(_table(summary, config.minutes * 60, config.minutes))
    console.print(f"learning curve: {curve}; the stack, learner and dashboard keep running: `fleet down` stops them")
    return summary
