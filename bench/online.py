"""Online learning on the real loop, per deployment scenario: does the fleet's data make version 1 better?

Every arm run starts from the same version 1 (behaviour cloning on scripted demonstrations of the nominal scenes,
trained once and cached under ~/.cache/fleet/bench-online/cameras-<CAMERA_REVISION>/), on its own fresh local stack
(temporary FLEET_HOME, free ports: Kafka, MLflow, SQLite), with `--robots` real-time simulated robots on Ray in
`--scenario`'s conditions (`fleet.sim.scenarios`: conditions version 1's demonstrations did not cover) for
`--minutes` of fleet time. Each robot keeps its embodiment and works through the tasks (`FleetConfig.rotate_tasks`).
Each run has its own episode seeds (`FleetConfig.seed` from the arm and the repeat), so no two runs replay the same
episodes. The arms:

    frozen            version 1 for the whole run; the simulated operator corrects as usual (no learner)
    full              the operator corrects; `fleet learner run --preset online --scenario S` trains on the
                      corrections, the rewards and version 1's demonstrations, and gates and promotes its versions
    corrections_only  as full, the learner on corrections and demonstrations only (`--no-autonomous`)
    rewards_only      nobody corrects: a stalled episode ends as a failure (`supervision="stop"`); the learner has the
                      autonomous steps, their rewards and the demonstrations
    offline_demos     nobody corrects; the operator's steps are spent before the run instead, on scripted
                      demonstrations in the scenario (as many steps as `--offline-steps`, by default the mean
                      supervisor steps of this invocation's full runs), which the learner gets with version 1's

The operator is the scripted expert (`actors.supervisor`) with `--takeover-rules` and `--correct-in-place`.

`--time-scale k` runs the robots' clocks k times slower than the wall clock (`RobotConfig.time_scale`): on a machine
the robots share with the learner, four real-time robots take most of the CPU that robots with their own computers
would leave it. Every fleet-time figure (`--minutes`, `minutes_to_85`, the curves) is in the robots' time; the
learner's rates are per wall second.

What is reported per arm (`arms.<name>`, runs of one arm pooled; `runs` keeps each run):
- `final_success`, `final_ci95`: the version in production when the run ended, scored on `--final-episodes`
  held-out episodes per task x embodiment of the scenario (seeds FINAL_SEEDS+, which no robot, demo or gate uses;
  the gate's rules: an episode the operator would have taken over fails), pooled over the arm's runs (version 1's
  episodes once); Wilson 95% interval; `final_per_run` each run's. Every arm is scored on the same episodes, and
  version 1 once (`initial_success`).
- `fleet_first`, `fleet_last`: the fleet's autonomous success (no takeover) over the first and last 10% of the
  episodes (in order of starting); `interventions_first` / `interventions_last`: takeover steps per episode there.
- `minutes_to_85`: the first fleet minute at which the trailing `--window` episodes' autonomous success reached 0.85.
  Under the `struggling` rule the operator still drives 1 - r of a robot's episodes at its own success r, and those
  count as not autonomous, so the fleet's figure sits near r * r and this stays unset below r ~0.92;
  `minutes_to_final` is the fleet minute the final version was published (0 for version 1), what the learner took
  to make what the arm is scored on.
- `supervisor_steps`: the operator's steps (takeover steps on the fleet, plus demonstration steps for
  offline_demos); `rohe`: return on human effort as Fleet-DAgger (Hoque et al. 2022) defines it, the fleet's
  successes over 1 + the operator's steps (here per 1,000 steps), every success counted, the ones the operator
  helped to as well, as its benchmark counts them (BerkeleyAutomation/ifl_benchmark); `rohe_autonomous` counts only
  the episodes nobody took over.
- `learner_updates_per_s` and `learner_updates_per_s_baseline`: `bench/learner_speed.py` run in this invocation,
  `--baseline-seconds` per arm beside as many real-time robots: the arms' learner (its arm for `--freeze`, the gate in
  the evaluator's process) and the loop before the evaluator (its baseline arm), in one run on the same robots
  (`learner_speed` holds its JSON; `--speed-from` takes one such run instead). `learner_updates_per_s_fleet`: the
  learning arms' own `charts/updates_per_s` beside the fleet's robots, mean over their runs (another run, other
  robots: not a ratio's other side).

Writes bench/results/online.json and online.png (learning curves). `--runs-from` merges earlier invocations' runs
(session-sized pieces of one experiment) and re-scores nothing. Earlier versions of this bench (nominal scenes only,
replayed seeds, no held-out scoring of the final version) and their results are in git history before this file's
rewrite; their findings are in docs/research.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fleet.defaults import DEFAULT_TASKS
from fleet.sim.base import CAMERA_REVISION

if TYPE_CHECKING:
    from fleet.episodes import EpisodeStore
    from fleet.policy.config import VLAConfig
    from fleet.recipe.train import StageResult

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("frozen", "full", "corrections_only", "rewards_only", "offline_demos")
FINAL_SEEDS = 3_000_000  # held-out episodes the final versions are scored on (the gate uses 1,000,000+)
# Scripted demonstrations and version 1 are cached here, per camera revision (images from another one are stale).
CACHE = Path.home() / ".cache" / "fleet" / "bench-online" / f"cameras-{CAMERA_REVISION}"
V1_DEMOS = 300  # version 1's scripted demos per task × embodiment (cached as demos/ and v1*/; other counts: -d<n>)
V1_BC_STEPS = 20_000  # version 1's pre-training steps (session 17: 0.92 on 300 held-out episodes)
# (minutes since the fleet started at the episode's start, version, success, intervention steps)
Event = tuple[float, str, bool, int]


def _stack_env(home: Path) -> dict[str, str]:
    from fleet.stack.process import isolated_env

    metrics_off = ("FLEET_METRICS_PORT_LEARNER", "FLEET_METRICS_PORT_ROBOTS", "FLEET_METRICS_PORT_RECORDER")
    return {**isolated_env(home), **dict.fromkeys(metrics_off, "0")}


def version_one(cache: Path, tasks: tuple[str, ...], embodiments: tuple[str, ...], demos: int, steps: int) -> Path:
    """Version 1 every arm starts from: the recipe's pre-training stage on scripted demos (cached; re-runs reuse it).
    Each step count has its own run directory (the learning rate's cosine decay spans the whole run, so a longer
    run is not a resumed shorter one): v1/ for 10k steps, v1-<k>k/ otherwise, with -d<n> for n demos per pair
    other than V1_DEMOS."""
    run = ("v1" if steps == 10_000 else f"v1-{steps / 1000:g}k") + ("" if demos == V1_DEMOS else f"-d{demos}")
    return pretrain_cached(cache, tasks, embodiments, demos, steps, run=run).checkpoint


def sampled_with(checkpoint: Path, flow_steps: int) -> Path:
    """`checkpoint` with its config's `flow_steps` set (same weights; training does not depend on it), written once
    beside it as <name>-flow<k>/; the checkpoint itself when it already samples with `flow_steps`. Every arm, the
    learner's versions (they keep production's config) and the scoring then sample as the robots do."""
    import dataclasses

    from fleet.policy.checkpoint import load_checkpoint, save_checkpoint
    from fleet.policy.model import VLAModel

    model = load_checkpoint(checkpoint)
    if model.config.flow_steps == flow_steps:
        return checkpoint
    out = checkpoint.with_name(f"{checkpoint.name}-flow{flow_steps}")
    if not out.exists():
        resampled = VLAModel(dataclasses.replace(model.config, flow_steps=flow_steps))
        resampled.load_state_dict(model.state_dict())
        save_checkpoint(resampled, out)
    return out


def demo_dir(cache: Path, demos: int) -> Path:
    """Where `demos` scripted demos per pair are cached: demos/ for V1_DEMOS, demos-<n>/ for another count (a
    pre-training run and the learner train on every demo in the store, so each count has its own)."""
    return cache / ("demos" if demos == V1_DEMOS else f"demos-{demos}")


def pretrain_cached(
    cache: Path,
    tasks: tuple[str, ...],
    embodiments: tuple[str, ...],
    demos: int,
    steps: int,
    *,
    run: str = "v1",
    model: VLAConfig | None = None,
) -> StageResult:
    """The recipe's pre-training stage on `demos` scripted demos per pair, both cached under `cache` (`demo_dir` and
    <run>/); a re-run reuses the demos and resumes the run (nothing to do when it is done). `model` overrides the
    default architecture."""
    from fleet.recipe.train import StageConfig, run_stage

    store = cached_demos(cache, tasks, embodiments, demos)
    stage = StageConfig(
        stage="pretrain",
        demos=store.root,
        run_dir=cache / run,
        steps=steps,
        model=model,
        tasks=tasks,
        embodiments=embodiments,
        log_mlflow=False,
    )
    return run_stage(stage)


def cached_demos(cache: Path, tasks: tuple[str, ...], embodiments: tuple[str, ...], demos: int) -> EpisodeStore:
    """`demos` scripted demos per task × embodiment in `demo_dir(cache, demos)`, collected there when missing."""
    from fleet.episodes import EpisodeStore
    from fleet.recipe.demos import collect_demos_grid

    store = EpisodeStore(demo_dir(cache, demos))
    if len(store.list()) < demos * len(tasks) * len(embodiments):
        collect_demos_grid(store, tasks, embodiments, episodes=demos, seed=0)  # same seeds: replaces, never duplicates
    return store


LEARNER_CURVES = ("losses/action", "losses/value", "charts/mean_weight", "charts/mean_advantage",
                  "charts/autonomous_fraction", "charts/updates_per_s")  # fmt: skip


def learner_curves(registry: Any, points: int = 100) -> dict[str, list[list[float]]]:
    """The learner's training metrics as it logged them to MLflow ([update, value] pairs, ~`points` per key), kept
    before the arm's MLflow store is removed: why its versions moved on the gate is in these."""
    client = registry.client
    experiment = client.get_experiment_by_name("fleet-learner")
    where = "tags.`fleet.kind` = 'learner'"  # the training run (the experiment also holds one run per version)
    runs = client.search_runs([experiment.experiment_id], filter_string=where) if experiment is not None else []
    if not runs:
        return {}
    curves = {}
    for key in LEARNER_CURVES:
        history = sorted(client.get_metric_history(runs[0].info.run_id, key), key=lambda m: m.step)
        curves[key] = [[m.step, round(m.value, 4)] for m in history[:: max(1, len(history) // points)]]
    return curves


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score interval of a success rate (95% at z = 1.96): honest near 0 and 1, where the normal one is not."""
    if n <= 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, float(centre - half)), 3), round(min(1.0, float(centre + half)), 3)]


def run_seed(arm: str, repeat: int, base: int) -> int:
    """The fleet seed of one run: every arm and repeat gets its own episodes (robot i of a run uses seed + i)."""
    return base + 10_000 * (ARMS.index(arm) + 1) + 100 * repeat


def offline_demo_store(cache: Path, v1_demos: Path, args: argparse.Namespace, steps: int) -> tuple[Path, int, int]:
    """Version 1's demonstrations plus scripted ones in the scenario worth `steps` operator steps (round robin over the
    pairs, seeds 500,000+), in one store the learner reads; returns it, the scenario demos' steps and their count."""
    from fleet.episodes import EpisodeStore
    from fleet.sim.rollout import collect_demos

    with_v1 = args.learner_demos != 0  # --learner-demos 0: the learner reads the scenario's demonstrations only
    root = cache / f"offline-{args.scenario}-{steps}{'' if with_v1 else '-scenario-only'}"
    store = EpisodeStore(root)
    for robot in v1_demos.iterdir() if with_v1 else ():  # version 1's demonstrations, linked rather than copied
        link = root / robot.name
        if robot.is_dir() and not link.exists():
            root.mkdir(parents=True, exist_ok=True)
            link.symlink_to(robot.resolve(), target_is_directory=True)
    pairs = [(t, e) for t in args.tasks for e in args.embodiments]
    cached = [e.meta.length for e in store.iter_episodes(frames=False) if e.meta.robot_id.startswith("offline-")]
    spent, k = sum(cached), len(cached)  # a re-run with a larger budget tops the cached ones up
    lengths: list[int] = []  # a failed demonstration is not stored (the expert fails < 5% of seeds): 0 steps
    while spent + sum(lengths) < steps:
        task, embodiment = pairs[k % len(pairs)]
        collect_demos(
            store, task=task, embodiment=embodiment, episodes=1, seed=500_000 + k, scenario=args.scenario,
            robot_id=f"offline-{embodiment}", on_episode=lambda e: lengths.append(e.meta.length * e.meta.success),
        )  # fmt: skip
        k += 1
    return root, spent + sum(lengths), len(cached) + sum(1 for n in lengths if n)


def run_arm(
    arm: str, repeat: int, *, v1: Path, demos: Path, args: argparse.Namespace, extra_demos: int = 0
) -> dict[str, Any]:
    """One run of an arm on a fresh stack: the fleet's episodes in order of starting, the versions published, the
    learner's curves, and the production version's weights (copied out before the stack is removed).

    Every episode a robot starts runs to its end (the fleet stops robots between episodes), so ordering by
    start leaves no bias at either end; ordering by end would put the quick episodes (mostly successes) first.
    The learner's log is kept as <cache>/logs/<arm>-<repeat>.log.
    """
    import ray

    from actors.sim_fleet import FleetConfig, run_fleet
    from fleet.policy.checkpoint import load_checkpoint
    from fleet.registry import Registry, publish_model
    from fleet.settings import Settings
    from fleet.stack import launcher

    home = Path(tempfile.mkdtemp(prefix=f"fleet-online-{arm}-"))
    os.environ.update(_stack_env(home))
    settings = Settings()
    launcher.up(settings, log=lambda _m: None)
    learner = None
    events: dict[tuple[str, float], Event] = {}
    seed = run_seed(arm, repeat, args.seed)
    try:
        registry = Registry(settings)
        info = publish_model(registry, load_checkpoint(v1), parent_version=None, actor="bench")
        registry.promote(info.version, actor="bench", role="admin", reason="bench: version 1")
        if arm != "frozen":
            argv = [sys.executable, "-m", "fleet", "learner", "run", "--preset", "online", "--demos", str(demos)]
            argv += ["--scenario", args.scenario, "--log-level", "WARNING"]
            argv += ["--no-autonomous"] if arm == "corrections_only" else []
            argv += ["--lr", str(args.learner_lr)] if args.learner_lr is not None else []
            argv += ["--freeze", args.freeze] if args.freeze else []
            argv += ["--precision", args.learner_precision] if args.learner_precision else []
            argv += ["--gate-margin-se", str(args.gate_margin_se)] if args.gate_margin_se is not None else []
            # The cap is on version 1's share: every scenario demonstration of offline_demos is loaded beside it.
            argv += ["--max-demos", str(args.learner_demos + extra_demos)] if args.learner_demos is not None else []
            learner = subprocess.Popen(argv, stdout=open(home / "learner.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        fleet = FleetConfig(
            n=args.robots, tasks=tuple(args.tasks), embodiments=tuple(args.embodiments), scenario=args.scenario,
            duration_s=args.minutes * 60 * args.time_scale, realtime=True, time_scale=args.time_scale, seed=seed,
            rotate_tasks=True,
            supervision="stop" if arm in ("rewards_only", "offline_demos") else "takeover",
            takeover_rules=tuple(args.takeover_rules.split(",")), correct_in_place=args.correct_in_place,
            drive_below=args.drive_below,
        )  # fmt: skip
        started = time.time()
        minute = 60 * args.time_scale  # wall seconds per minute of fleet time

        def progress(statuses: list[dict[str, Any]]) -> None:
            for s in statuses:
                for version, success, interventions, _steps, finished, began, *_task in s.get("recent", []):
                    events[(s["robot_id"], finished)] = ((began - started) / minute, str(version), bool(success),
                                                         int(interventions))  # fmt: skip

        progress(run_fleet(settings, fleet, on_progress=progress))
        versions = [
            {"version": v.version, "minutes": round((v.created_at - started) / minute, 2),
             "gate_mean": v.eval_metrics.get("mean"), "gate_passed": v.gate_passed, "aliases": list(v.aliases),
             "confirm_mean": float(v.tags["confirm/mean"]) if "confirm/mean" in v.tags else None}
            for v in sorted(registry.list_versions(), key=lambda v: int(v.version))
        ]  # fmt: skip
        production = registry.version_for_alias("production")
        assert production is not None, "the registry lost its production alias"
        final = args.cache / "finals" / f"{args.scenario}-{arm}-{repeat}-v{production.version}"
        shutil.rmtree(final, ignore_errors=True)
        final = registry.download(production.version, final)  # the checkpoint directory inside it
        curves = learner_curves(registry) if learner is not None else {}
        print(f"  {arm}#{repeat}: {len(events)} episodes, production v{production.version}, "
              f"versions {[(v['version'], v['gate_mean']) for v in versions]}", flush=True)  # fmt: skip
    finally:
        if learner is not None:
            learner.terminate()
            try:
                learner.wait(timeout=120)
            except subprocess.TimeoutExpired:  # still loading its demonstrations (it reads the flag after)
                print(f"  {arm}#{repeat}: the learner did not stop within 120 s of SIGTERM; killed", flush=True)
                learner.kill()
                learner.wait()
            (args.cache / "logs").mkdir(parents=True, exist_ok=True)
            shutil.copy(home / "learner.log", args.cache / "logs" / f"{arm}-{repeat}.log")
        ray.shutdown()
        launcher.down(settings, log=lambda _m: None)
        if args.keep_stream:  # the run's Kafka log (every segment, correction, reward): offline probes replay it
            name = stream_name(
                args.scenario, arm, repeat, seed, args.freeze, args.learner_precision, args.gate_margin_se
            )
            kept = args.cache / "runs" / name
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(home / "kafka", kept / "kafka")
        shutil.rmtree(home, ignore_errors=True)  # the run's Kafka log, MLflow store, spool (~100 MB)
    return {"arm": arm, "repeat": repeat, "seed": seed, "events": sorted(events.values()), "versions": versions,
            "learner": curves, "production": production.version, "final_dir": str(final)}  # fmt: skip


def score(checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A version on the held-out episodes every arm is scored on (`--final-episodes` per pair, FINAL_SEEDS+)."""
    from fleet.policy.checkpoint import load_checkpoint
    from fleet.policy.language import default_embedder
    from learner.gate import EvalGate, GateConfig

    gate = EvalGate(GateConfig(
        tasks=tuple(args.tasks), embodiments=tuple(args.embodiments), scenario=args.scenario,
        episodes=args.final_episodes, seed_offset=FINAL_SEEDS,
    ))  # fmt: skip
    result = gate.evaluate(load_checkpoint(checkpoint), embedder=default_embedder())
    n = args.final_episodes * len(result.success)
    wins = int(round(sum(rate * args.final_episodes for rate in result.success.values())))
    return {"successes": wins, "episodes": n, "mean": round(wins / n, 3), "ci95": wilson(wins, n),
            "per_pair": {f"{t}/{e}": round(r, 3) for (t, e), r in result.success.items()},
            "seconds": round(result.seconds, 1)}  # fmt: skip


def rohe(fleet: dict[str, Any], supervisor_steps: int) -> dict[str, float | None]:
    """Return on human effort per 1,000 operator steps: `rohe` as Fleet-DAgger counts it (every success, the ones
    the operator helped to as well), `rohe_autonomous` with only the episodes nobody took over."""
    per = 1000 / (1 + supervisor_steps)
    everything = fleet.get("all_successes")
    return {"rohe": None if everything is None else round(per * everything, 2),
            "rohe_autonomous": round(per * fleet.get("successes", 0), 2)}  # fmt: skip


def fleet_summary(events: list[Event], window: int) -> dict[str, Any]:
    """The fleet's own curve of one run: success and takeover steps early and late, minutes to 0.85, per minute."""
    if not events:
        return {"episodes": 0}
    minutes = np.array([e[0] for e in events])
    autonomous = np.array([e[2] and e[3] == 0 for e in events], dtype=float)
    interventions = np.array([e[3] for e in events], dtype=float)
    tenth = max(1, len(events) // 10)
    w = max(1, min(window, len(events)))
    trailing = np.array([autonomous[max(0, i + 1 - w) : i + 1].mean() for i in range(len(events))])
    reached = [float(minutes[i]) for i in range(w - 1, len(events)) if trailing[i] >= 0.85]
    bins = np.floor(minutes).astype(int)
    return {
        "episodes": len(events),
        "fleet_first": round(float(autonomous[:tenth].mean()), 3),
        "fleet_last": round(float(autonomous[-tenth:].mean()), 3),
        "interventions_first": round(float(interventions[:tenth].mean()), 3),
        "interventions_last": round(float(interventions[-tenth:].mean()), 3),
        "minutes_to_85": round(reached[0], 2) if reached else None,
        "supervisor_steps": int(interventions.sum()),
        "successes": int(autonomous.sum()),
        "all_successes": int(sum(e[2] for e in events)),
        "per_minute": [{"minute": int(m), "success": round(float(autonomous[b].mean()), 3), "episodes": int(b.sum())}
                       for m in np.unique(bins) for b in [bins == m]],  # fmt: skip
        "curve": {"minutes": minutes.round(3).tolist(), "success": trailing.round(3).tolist(),
                  "autonomous": autonomous.astype(int).tolist(), "interventions": interventions.tolist()},
    }  # fmt: skip


def pool(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm's runs pooled: the final versions' held-out episodes together, the fleet's figures averaged."""

    def mean(key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return round(float(np.mean(values)), 3) if values else None

    # Runs that end on version 1 (frozen, or a learner that promoted nothing) score the same weights on the same
    # episodes: counted once, or the interval would shrink on duplicated episodes.
    scored = {"1" if r["production"] == "1" else str(i): r["final"] for i, r in enumerate(runs)}.values()
    wins, n = sum(f["successes"] for f in scored), sum(f["episodes"] for f in scored)
    steps = [r["supervisor_steps"] for r in runs]
    reached = [r["minutes_to_85"] for r in runs]
    published = [max(0.0, next(v["minutes"] for v in r["versions"] if v["version"] == r["production"])) for r in runs]
    return {
        "runs": len(runs),
        "final_success": round(wins / n, 3), "final_ci95": wilson(wins, n),
        "final_per_run": [r["final"]["mean"] for r in runs],
        "minutes_to_85": None if any(m is None for m in reached) else round(float(np.mean(reached)), 2),
        "minutes_to_final": round(float(np.mean(published)), 2),
        "interventions_first": mean("interventions_first"), "interventions_last": mean("interventions_last"),
        "fleet_first": mean("fleet_first"), "fleet_last": mean("fleet_last"),
        "supervisor_steps": round(float(np.mean(steps)), 1),
        "rohe": mean("rohe"), "rohe_autonomous": mean("rohe_autonomous"),
        "learner_updates_per_s": mean("learner_updates_per_s"),
    }  # fmt: skip


def stream_name(
    scenario: str, arm: str, repeat: int, seed: int, freeze: str | None, precision: str | None,
    margin_se: float | None = None,
) -> str:  # fmt: skip
    """The folder of a run's kept Kafka log under <cache>/runs/: the learner's settings in the name, so runs of two
    learners on the same seed do not overwrite each other (None: the `online` preset's)."""
    from learner.config import get_preset
    from learner.rllib import resolve_precision

    preset = get_preset("online").rllib
    resolved = resolve_precision(precision or preset.precision)  # type: ignore[arg-type]
    gate = "" if margin_se is None else f"-se{margin_se:g}"
    return f"{scenario}-{arm}-{repeat}-seed{seed}-{freeze or preset.freeze}-{resolved}{gate}"


def learner_rate(curves: dict[str, Any]) -> float | None:
    """The learner's mean updates per second over a run (its own `charts/updates_per_s`, logged as it trains)."""
    points = curves.get("charts/updates_per_s") or []
    return round(float(np.mean([v for _, v in points])), 3) if points else None


# bench/learner_speed.py's arm that runs the learning arms' engine (`--freeze`), the gate in the evaluator's process
SPEED_ARM = {"none": "single_pass", "encoder": "encoder", "perception": "perception"}


def speed_arm(args: argparse.Namespace) -> str:
    """bench/learner_speed.py's arm for this bench's learner (`--freeze` and `--learner-precision`, else the
    `online` preset's)."""
    from learner.config import get_preset
    from learner.rllib import resolve_precision

    preset = get_preset("online").rllib
    arm = SPEED_ARM[args.freeze or preset.freeze]
    if resolve_precision(args.learner_precision or preset.precision) == "bf16":
        if arm != "encoder":
            raise SystemExit(
                "bench/learner_speed.py measures bf16 with the image encoder frozen only (--freeze encoder)"
            )
        arm = "encoder_bf16"
    return arm


def learner_speed(v1: Path, args: argparse.Namespace) -> dict[str, Any]:
    """bench/learner_speed.py in one invocation beside as many real-time robots: its baseline arm (the loop before
    the evaluator) and the arm of this bench's learner (`--freeze`), so the two rates share robots and machine."""
    from bench import learner_speed as speed

    arm = speed_arm(args)
    out = Path(tempfile.mkdtemp(prefix="fleet-online-speed-")) / "speed.json"
    argv = ["--seconds", str(args.baseline_seconds), "--robots", str(args.robots),
            "--arms", f"baseline,{arm}", "--checkpoint", str(v1), "--scenario", args.scenario,
            "--out", str(out)]  # fmt: skip
    speed.main(argv)
    return json.loads(out.read_text())


def plot(result: dict[str, Any], path: Path) -> None:
    from bench.figures import pyplot, save_figure

    plt = pyplot()
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = {arm: f"C{i}" for i, arm in enumerate(ARMS)}
    w = result["config"]["window"]
    for run in result["runs"]:
        curve, colour = run["fleet"].get("curve"), colours[run["arm"]]
        if not curve:
            continue
        label = run["arm"] if run["repeat"] == 0 else None
        start = min(w, len(curve["minutes"])) - 1
        ax.plot(curve["minutes"][start:], curve["success"][start:], color=colour, label=label)
        per_ep = np.convolve(curve["interventions"], np.ones(w) / w, mode="valid") if curve["interventions"] else []
        bx.plot(curve["minutes"][len(curve["minutes"]) - len(per_ep) :], per_ep, color=colour, label=label)
    ax.axhline(0.85, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="fleet time (min)", ylabel=f"autonomous success (last {w} episodes)", ylim=(-0.02, 1.02))
    bx.set(xlabel="fleet time (min)", ylabel=f"takeover steps per episode (last {w})")
    ax.legend(fontsize=8)
    arms = list(result["arms"])
    finals = [result["arms"][a]["final_success"] for a in arms]
    errors = np.array([[f - result["arms"][a]["final_ci95"][0], result["arms"][a]["final_ci95"][1] - f]
                       for a, f in zip(arms, finals, strict=True)]).T  # fmt: skip
    cx.bar(arms, finals, yerr=errors if arms else None, color=[colours[a] for a in arms], capsize=4)
    cx.axhline(result["initial_success"]["mean"], color="grey", linestyle="--", linewidth=1, label="version 1")
    cx.set(ylabel="final version, held-out success (95% CI)", ylim=(0, 1))
    cx.legend(fontsize=8)
    cx.tick_params(axis="x", labelrotation=20)
    c = result["config"]
    fig.suptitle(f"online learning, scenario {c['scenario']} ({c['robots']} robots, {c['minutes']} min per run)")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="raised-bench")
    parser.add_argument("--robots", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=30.0, help="fleet time per run")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="wall seconds per fleet second (RobotConfig.time_scale)"
    )
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--repeats", default="full:2,frozen:2", help="runs per arm, arm:n (others: 1)")
    parser.add_argument("--tasks", nargs="+", default=None, help="the fleet's tasks (default: the scenario's)")
    parser.add_argument("--embodiments", nargs="+", default=["panda", "kuka"])
    parser.add_argument("--demos", type=int, default=V1_DEMOS, help="scripted demos per task × embodiment, version 1")
    parser.add_argument("--bc-steps", type=int, default=V1_BC_STEPS, help="pre-training steps of version 1")
    parser.add_argument("--v1", type=Path, default=None, help="version 1's checkpoint (default: pre-trained, cached)")
    parser.add_argument("--v1-demos", type=Path, default=None, help="--v1's demonstrations (the learner's too)")
    parser.add_argument("--flow-steps", type=int, default=None, help="version 1 sampling steps (default: VLAConfig)")
    parser.add_argument("--learner-lr", type=float, default=None, help="the learner's lr (default: the preset's)")
    parser.add_argument("--freeze", default=None, help="the learner's --freeze (default: the preset's)")
    parser.add_argument(
        "--gate-margin-se",
        type=float,
        default=None,
        help="the learner's --gate-margin-se (default: the preset's)",
    )
    parser.add_argument(
        "--learner-precision",
        default=None,
        choices=["fp32", "bf16", "auto"],
        help="the learner's --precision (default: the preset's)",
    )
    parser.add_argument(
        "--learner-demos",
        type=int,
        default=None,
        help="the learner's --max-demos: version 1's demonstrations it loads (default: all; 0: none)",
    )
    parser.add_argument("--takeover-rules", default="stall,struggling", help="what makes the operator take over")
    parser.add_argument("--correct-in-place", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--drive-below", type=float, default=1.0,
                        help="struggling drives no whole episode once a robot's own success reaches this")  # fmt: skip
    parser.add_argument("--offline-steps", type=int, default=None, help="offline_demos' budget (default: full's)")
    parser.add_argument("--final-episodes", type=int, default=50, help="held-out episodes per pair, final versions")
    parser.add_argument(
        "--baseline-seconds", type=float, default=300.0, help="learner_speed per arm (baseline, ours); 0: skip"
    )
    parser.add_argument(
        "--speed-from", type=Path, default=None, help="a bench/learner_speed.py result (same robots, --v1, scenario)"
    )
    parser.add_argument("--window", type=int, default=100, help="episodes in the trailing success mean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument(
        "--keep-stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep each run's Kafka log under <cache>/runs/ (the fleet's data, for offline probes)",
    )
    parser.add_argument("--runs-from", type=Path, nargs="+", default=[], help="earlier results whose runs to merge")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "online.json")
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    if unknown := sorted(set(arms) - set(ARMS)):
        parser.error(f"unknown arms {unknown}; choose from {list(ARMS)}")
    repeats = {arm: 1 for arm in arms} | {a: int(n) for a, n in (x.split(":") for x in args.repeats.split(",") if x)}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` / kill: still stop each run's stack
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    started = time.monotonic()
    from fleet.sim.scenarios import get_scenario

    args.tasks = args.tasks or list(get_scenario(args.scenario).tasks)
    tasks, embodiments = tuple(args.tasks), tuple(args.embodiments)
    if (args.v1 is None) != (args.v1_demos is None):
        parser.error("give --v1 and --v1-demos together (or neither: version 1 is pre-trained and cached)")
    # Version 1 is pre-trained on every task it ships with, whichever of them the scenario's fleet works on.
    v1 = args.v1 or version_one(args.cache, DEFAULT_TASKS, embodiments, args.demos, args.bc_steps)
    from fleet.policy.config import VLAConfig

    args.flow_steps = args.flow_steps or VLAConfig().flow_steps
    v1 = sampled_with(v1, args.flow_steps)  # a cached version 1 may predate the default
    demos = args.v1_demos or demo_dir(args.cache, args.demos)  # version 1's demonstrations, also the learner's
    runs: list[dict[str, Any]] = []
    initial: dict[str, Any] | None = None
    for path in args.runs_from:
        earlier = json.loads(path.read_text())
        # A frozen arm runs no learner and its version never changes, and robots, supervisor and simulator count
        # ticks, not seconds: its episodes are the same at any time scale, which only shares the CPU with a learner.
        keys = ["scenario", "robots", "minutes", "final_episodes"]
        keys += [] if all(r["arm"] == "frozen" for r in earlier["runs"]) else ["time_scale"]
        # Arms whose operator only stops a stalled robot never drive an episode (drive_below: 1.0 before it was one).
        keys += [] if all(r["arm"] in ("rewards_only", "offline_demos") for r in earlier["runs"]) else ["drive_below"]
        same = {k: earlier["config"].get(k, 1.0) for k in keys}
        if same != {k: vars(args)[k] for k in keys}:
            parser.error(f"--runs-from {path} was run with {same}; give the same options")
        for run in earlier["runs"]:  # one definition for every run, whenever it was made
            run.update(rohe(run["fleet"], run["supervisor_steps"]))
        runs += earlier["runs"]
        initial = initial or earlier["initial_success"]
    if initial is None:
        print(f"version 1 ({v1}) on {args.final_episodes} held-out episodes per pair of {args.scenario}", flush=True)
        initial = score(v1, args)
        print(f"  version 1: {initial['mean']} {initial['ci95']}", flush=True)
    if args.speed_from:
        speed = json.loads(args.speed_from.read_text())
        setting = {"robots": args.robots, "checkpoint": str(v1), "scenario": args.scenario}
        if (theirs := {k: speed.get(k) for k in setting}) != setting or "baseline" not in speed["arms"]:
            parser.error(f"--speed-from {args.speed_from} measured {theirs} (arms {list(speed['arms'])}); "
                         f"it needs {setting} and a baseline arm")  # fmt: skip
        speed["arms"] = {k: v for k, v in speed["arms"].items() if k in ("baseline", speed_arm(args))}
    else:
        speed = learner_speed(v1, args) if args.baseline_seconds > 0 else None
    speed_arms = speed["arms"] if speed else {}

    def write() -> dict[str, Any]:
        """The result so far (after every run, so a stopped invocation keeps the runs it finished)."""
        by_arm = {arm: pool([r for r in runs if r["arm"] == arm]) for arm in ARMS if any(r["arm"] == arm for r in runs)}
        rates = [r["learner_updates_per_s"] for r in runs if r["learner_updates_per_s"] is not None]
        result = {
            "benchmark": "online",
            "command": " ".join(["bench/online.py", *(sys.argv[1:] if argv is None else argv)]),
            "scenario": args.scenario,
            "repeats": {arm: s["runs"] for arm, s in by_arm.items()},
            "config": {"scenario": args.scenario, "robots": args.robots, "minutes": args.minutes,
                       "time_scale": args.time_scale, "tasks": tasks,
                       "embodiments": embodiments, "v1": str(v1), "demos_per_pair": args.demos,
                       "bc_steps": args.bc_steps, "flow_steps": args.flow_steps, "learner_lr": args.learner_lr,
                       "learner_precision": args.learner_precision, "gate_margin_se": args.gate_margin_se,
                       "freeze": args.freeze,
                       "learner_demos": args.learner_demos,
                       "takeover_rules": args.takeover_rules, "drive_below": args.drive_below,
                       "correct_in_place": args.correct_in_place, "final_episodes": args.final_episodes,
                       "window": args.window, "success": "autonomous (no takeover)"},
            "initial_success": initial,
            "arms": by_arm,
            "learner_updates_per_s": next((a["updates_per_s"] for n, a in speed_arms.items() if n != "baseline"), None),
            "learner_updates_per_s_baseline": speed_arms.get("baseline", {}).get("updates_per_s"),
            "learner_updates_per_s_fleet": round(float(np.mean(rates)), 3) if rates else None,
            "learner_speed": speed,
            "runs": runs,
            "seconds": round(time.monotonic() - started, 1),
        }  # fmt: skip
        for summary in by_arm.values():
            summary["initial_success"] = initial["mean"]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        plot(result, args.out.with_suffix(".png"))
        return result

    order = [a for a in arms if a != "offline_demos"] + (["offline_demos"] if "offline_demos" in arms else [])
    for arm in order:
        for repeat in range(repeats.get(arm, 1)):
            learner_demos = demos
            offline_steps = offline_episodes = 0
            if arm == "offline_demos":
                full_steps = [r["supervisor_steps"] for r in runs if r["arm"] == "full"]
                budget = args.offline_steps or (int(np.mean(full_steps)) if full_steps else None)
                if budget is None:
                    parser.error("offline_demos needs --offline-steps or a full run (this invocation or --runs-from)")
                learner_demos, offline_steps, offline_episodes = offline_demo_store(args.cache, demos, args, budget)
            print(f"{arm} #{repeat}: {args.robots} robots, {args.minutes} min, {args.scenario}", flush=True)
            run = run_arm(arm, repeat, v1=v1, demos=learner_demos, args=args, extra_demos=offline_episodes)
            fleet = fleet_summary(run["events"], args.window)
            final = initial if arm == "frozen" else score(Path(run["final_dir"]), args)
            steps = fleet.get("supervisor_steps", 0) + offline_steps
            runs.append({
                "arm": arm, "repeat": repeat, "seed": run["seed"], "time_scale": args.time_scale,
                "production": run["production"],
                "versions": run["versions"], "learner": run["learner"], "fleet": fleet, "final": final,
                **{k: fleet.get(k) for k in ("fleet_first", "fleet_last", "interventions_first", "interventions_last",
                                              "minutes_to_85")},
                "supervisor_steps": steps, "offline_demo_steps": offline_steps,
                **rohe(fleet, steps),
                "learner_updates_per_s": learner_rate(run["learner"]),
            })  # fmt: skip
            print(f"  final {final['mean']} {final['ci95']}, fleet {fleet.get('fleet_first')} -> "
                  f"{fleet.get('fleet_last')}, rohe {runs[-1]['rohe']}", flush=True)  # fmt: skip
            write()
    result = write()
    by_arm = result["arms"]
    brief = {arm: {k: s[k] for k in ("final_success", "final_ci95", "rohe", "interventions_first",
                                     "interventions_last")} for arm, s in by_arm.items()}  # fmt: skip
    print(
        json.dumps(
            {
                "initial": initial["mean"],
                "arms": brief,
                "updates_per_s": [result["learner_updates_per_s"], result["learner_updates_per_s_baseline"]],
            }
        )
    )


if __name__ == "__main__":
    main()
