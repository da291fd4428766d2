"""Canary rollout on a simulated fleet (issue #32): how fast the live A/B rolls back a worse version and promotes a
better one, how often it decides anything when both sides run the same version, and how fast canary robots are back
on production after a rollback.

Each phase starts its own stack (temporary FLEET_HOME, free ports: Kafka, MLflow, the DB), the recorder (`fleet
record`, which writes the episodes the controller reads) and a real-time simulated fleet on Ray (`--robots`, clocks
`--time-scale` times slower than the wall clock so the robots leave the recorder and the controller the CPU they
would have with their own computers; minutes below are fleet minutes).

* **regression**: production = `--better`, canary = `--worse` on `--fraction` of the robots; the product's
  `CanaryController` (`fleet.rollout`, default `CanaryPolicy`) looks every `--look-s` wall seconds. Reported:
  `regression_detect_minutes` from the canary's start to its automatic rollback, and `rollback_converge_s` per
  canary robot (the rollback call to that robot's swap back to production; robots keep the version they ran before
  loaded, so no download) with its p99.
* **improvement**: production = `--worse`, canary = `--better`: `improvement_detect_minutes` to the automatic
  promotion.
* **aa**: every robot on `--better` for `--aa-minutes`; then every cohort of `--fraction` of the robots (C(8, 2) = 28
  for 8 robots at 25%) replays the episodes in the order they finished, canary = the cohort's, production = the
  others', through the same `compare` / `decide` at the controller's look interval: `false_rollback_rate` (any
  rollback) and `false_decision_rate` (a promotion or rollback on a metric's verdict, i.e. before the policy's
  episode budget ends the rollout) over those A/A runs (the same version on both sides, robot-level assignment as in
  a rollout). Episodes are gathered from the robots' status at every look (a status holds a robot's last 200).

Both versions are scored on `--score-episodes` held-out episodes per task x embodiment first (the gate's rules,
seeds no phase uses), so the JSON says how far apart the versions the A/B had to tell apart really are. By default
`--worse` is `--better` with noise added to its action head (`sabotaged`: a checkpoint that loads and acts, badly).

Writes bench/results/canary.json. First choose the pair: a version and its sabotaged copies on the same held-out
episodes (`--calibrate`), e.g. the bf16 online series' full-1 final on raised-bench (v44 0.940 on 200 episodes;
action-head noise 0.16 -> 0.795, 0.2 -> 0.735):

    F=~/.cache/fleet/bench-online/cameras-2/finals
    .venv/bin/python -m bench.canary --calibrate 0.08,0.12,0.16,0.2 --score-episodes 50 --scenario raised-bench \
      --tasks pick place --better $F/raised-bench-full-0-v44/checkpoint --out /tmp/canary-calibration.json

bench/results/canary.json was made in two pieces (a whole run takes up to two hours of a machine left to it; the
second keeps the first's phases, `--phases-from`, and must be given the same other options):

    V=$F/raised-bench-full-0-v44
    OPTS="--robots 8 --fraction 0.25 --scenario raised-bench --tasks pick place --better $V/checkpoint \
      --worse sabotage:0.2 --improve-from $V/checkpoint-sabotage0.16 --improve-to $V/checkpoint"
    .venv/bin/python -m bench.canary $OPTS --phases regression,improvement --out /tmp/canary-ab.json
    .venv/bin/python -m bench.canary $OPTS --phases aa --phases-from /tmp/canary-ab.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
from bench.online import CACHE, score, wilson  # noqa: E402
from fleet.canary import CanaryPolicy, Cohort, EpisodeOutcome, compare, decide  # noqa: E402

FINALS = CACHE / "finals"


def sabotaged(checkpoint: Path, scale: float, seed: int = 0) -> Path:
    """`checkpoint` with Gaussian noise of `scale` times each action-head tensor's spread added (cached beside it as
    <name>-sabotage<scale>/): it loads, passes every check a robot makes, and acts worse."""
    import torch

    from fleet.policy.checkpoint import load_checkpoint, save_checkpoint

    out = checkpoint.with_name(f"{checkpoint.name}-sabotage{scale:g}")
    if not out.exists():
        model = load_checkpoint(checkpoint)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, tensor in model.named_parameters():
                if name.startswith("action_head.") and tensor.numel() > 1:
                    tensor.add_(torch.randn(tensor.shape, generator=generator) * tensor.std() * scale)
        save_checkpoint(model, out)
    return out


def _episodes(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every robot's finished episodes (robot, version, outcome, wall-clock finish), in the order they finished."""
    rows = [
        {"robot": s["robot_id"], "version": str(v), "success": bool(ok), "interventions": int(iv), "length": int(n),
         "finished": fin, "stratum": f"{task}/{s['embodiment']}"}
        for s in statuses for v, ok, iv, n, fin, _began, task in s["recent"]
    ]  # fmt: skip
    return sorted(rows, key=lambda r: r["finished"])


def run_phase(name: str, production: Path, canary: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    """One phase on a fresh stack; see the module docstring. `canary` None: every robot on `production`."""
    import ray

    from actors.sim_fleet import FleetConfig, start_fleet, wait_swapped
    from fleet.policy.checkpoint import load_checkpoint
    from fleet.registry import Registry, announce, publish_model
    from fleet.rollout import CanaryController
    from fleet.settings import Settings
    from fleet.stack import launcher
    from fleet.stack.process import isolated_env

    home = Path(tempfile.mkdtemp(prefix=f"fleet-canary-{name}-"))
    os.environ.update(isolated_env(home))
    settings = Settings()
    launcher.up(settings, log=lambda _m: None)
    log = open(home / "recorder.log", "wb")  # noqa: SIM115 - the recorder writes to it until the phase ends
    recorder = subprocess.Popen([sys.executable, "-m", "fleet", "record"], stdout=log, stderr=subprocess.STDOUT)
    minute = 60 * args.time_scale
    result: dict[str, Any] = {"phase": name}
    actors: list[Any] = []
    try:
        registry = Registry(settings)
        prod = publish_model(registry, load_checkpoint(production), parent_version=None, actor="bench")
        registry.promote(prod.version, actor="bench", role="admin", reason="bench: production")
        duration = (args.aa_minutes if canary is None else args.minutes) * minute
        fleet = FleetConfig(
            n=args.robots, tasks=tuple(args.tasks), embodiments=tuple(args.embodiments), scenario=args.scenario,
            duration_s=duration + 600, realtime=True, time_scale=args.time_scale, seed=args.seed + len(name),
            rotate_tasks=True, supervision="takeover", takeover_rules=("stall", "regress"), correct_in_place=True,
        )  # fmt: skip
        actors = start_fleet(settings, fleet)
        for a in actors:
            a.run.remote(None, duration + 600)
        ids = [robot.robot_id for robot in fleet.robots()]  # start_fleet returned: all on production
        seen: dict[tuple[str, float], dict[str, Any]] = {}  # a robot's status holds its last 200 episodes only

        def collect() -> list[dict[str, Any]]:
            statuses = ray.get([a.status.remote() for a in actors])
            seen.update({(e["robot"], e["finished"]): e for e in _episodes(statuses)})
            return statuses

        if canary is None:
            phase_end = time.time() + duration
            while time.time() < phase_end:
                time.sleep(min(args.look_s, max(phase_end - time.time(), 0.0)))
                collect()
        else:
            info = publish_model(registry, load_checkpoint(canary), parent_version=prod.version, actor="bench")
            cohort = Cohort.for_fleet(info.version, fraction=args.fraction, known=ids)
            on_canary = [i for i, robot in enumerate(ids) if cohort.includes(robot)]
            started = time.time()
            registry.start_canary(info.version, cohort, actor="bench", role="admin", reason=f"bench: {name}")
            announce(settings, info, event="canary_started", alias="canary", actor="bench", reason=name)
            controller = CanaryController(
                registry, registry.sessions, CanaryPolicy(),  # type: ignore[arg-type]
                announce=lambda v, event, alias, reason: announce(settings, v, event=event, alias=alias,
                                                                  actor="canary-controller", reason=reason),
            )  # fmt: skip
            looks = []
            decided = None
            while time.time() - started < duration:
                time.sleep(args.look_s)
                collect()
                status = controller.step()
                if status is None:  # ended by the controller in the previous look
                    break
                success = next((c for c in status.comparisons if c.metric == "autonomous_success"), None)
                looks.append({"minutes": round((time.time() - started) / minute, 2), "action": status.decision.action,
                              "success": None if success is None else
                              [success.canary_n, success.production_n, round(success.diff, 4), round(success.lo, 4),
                               round(success.hi, 4)]})  # fmt: skip
                if status.decision.action != "continue":
                    decided = (status.decision.action, status.decision.reason, time.time())
                    break
            result.update(versions={"production": prod.version, "canary": info.version},
                          canary_robots=[ids[i] for i in on_canary], looks=looks)  # fmt: skip
            if decided is not None:
                action, reason, at = decided
                result.update(decision=action, reason=reason, detect_minutes=round((at - started) / minute, 2))
                target = prod.version if action == "rollback" else info.version
                movers = [actors[i] for i in on_canary] if action == "rollback" else \
                    [a for i, a in enumerate(actors) if i not in on_canary]  # fmt: skip
                swaps = wait_swapped(movers, target, after=at, timeout_s=60)
                result["converge_s"] = [None if t is None else round(t - at, 3) for t in swaps]
            else:
                result.update(decision="none", detect_minutes=None)
        statuses = collect()
        result["episodes"] = sorted(seen.values(), key=lambda e: e["finished"])
        result["missed_ticks"] = sum(s["missed_ticks"] for s in statuses)
        result["ticks"] = sum(s["ticks"] for s in statuses)
        print(f"  {name}: {result.get('decision', 'aa')} after {result.get('detect_minutes')} fleet minutes, "
              f"{len(result['episodes'])} episodes", flush=True)  # fmt: skip
    finally:
        for a in actors:
            a.stop.remote()
        if actors:
            ray.get([a.close.remote() for a in actors], timeout=120)
        recorder.terminate()
        recorder.wait(timeout=60)
        log.close()
        ray.shutdown()
        launcher.down(settings, log=lambda _m: None)
        shutil.rmtree(home, ignore_errors=True)
    return result


def aa_runs(episodes: list[dict[str, Any]], robots: list[str], fraction: float, look_every: float,
            policy: CanaryPolicy) -> list[dict[str, Any]]:  # fmt: skip
    """Every cohort of round(fraction * robots) robots as an A/A rollout over the same episodes (see the docstring)."""
    take = max(1, round(fraction * len(robots)))
    start = episodes[0]["finished"] if episodes else 0.0
    runs = []
    for cohort in itertools.combinations(sorted(robots), take):
        outcomes: list[EpisodeOutcome] = []
        decision, at = None, None
        next_look = start + look_every
        for e in episodes:
            while e["finished"] > next_look and (decision is None or decision.action == "continue"):
                decision = decide(compare(outcomes, canary_version="c", production_version="p"), policy)
                at, next_look = next_look, next_look + look_every
            if decision is not None and decision.action != "continue":
                break
            version = "c" if e["robot"] in cohort else "p"
            outcomes.append(EpisodeOutcome(version, e["success"], e["interventions"], e["length"], e["stratum"]))
        if decision is None or decision.action == "continue":
            decision = decide(compare(outcomes, canary_version="c", production_version="p"), policy)
            at = episodes[-1]["finished"] if episodes else None
        runs.append({"cohort": list(cohort), "action": decision.action, "reason": decision.reason,
                     "at_budget": decision.at_budget,
                     "canary_episodes": sum(o.version == "c" for o in outcomes),
                     "at_s": None if at is None else round(at - start, 1)})  # fmt: skip
    return runs


def calibrate(better: Path, scales: list[float], args: argparse.Namespace) -> dict[str, Any]:
    """`better` and its sabotaged copies scored on the same held-out episodes (`--score-episodes` per pair)."""
    scoring = argparse.Namespace(**{**vars(args), "final_episodes": args.score_episodes})
    rows = {"better": score(better, scoring)}
    print(f"better: {rows['better']['mean']:.3f}", flush=True)
    for scale in scales:
        rows[f"sabotage:{scale:g}"] = score(sabotaged(better, scale), scoring)
        print(f"sabotage:{scale:g}: {rows[f'sabotage:{scale:g}']['mean']:.3f}", flush=True)
    return {"benchmark": "canary-calibration", "better": str(better), "scenario": args.scenario, "scores": rows}


def _setting(args: argparse.Namespace, checkpoints: dict[str, Path]) -> dict[str, Any]:
    """What results must share to be merged (`--phases-from`): the fleet, the rollout's look and the versions."""
    return {
        "robots": args.robots, "fraction": args.fraction, "scenario": args.scenario, "time_scale": args.time_scale,
        "look_s": args.look_s, "versions": {role: str(path) for role, path in checkpoints.items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--better",
        type=Path,
        default=FINALS / "high-start-full-0-v21" / "checkpoint",
        help="the better version (default: the final version of research/online/full-1, bench/online.py's full arm)",
    )
    parser.add_argument(
        "--worse",
        type=str,
        default="sabotage:0.5",
        help="a checkpoint, or sabotage:SCALE for --better with noise on its action head",
    )
    parser.add_argument("--improve-from", type=Path, default=None, help="production in the improvement phase "
                        "(default: --worse), for a gap other than the regression's")  # fmt: skip
    parser.add_argument("--improve-to", type=Path, default=None, help="its canary (default: --better)")
    parser.add_argument("--robots", type=int, default=8)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--scenario", default="high-start")
    parser.add_argument("--tasks", nargs="+", default=["pick", "push", "place"])
    parser.add_argument("--embodiments", nargs="+", default=["panda", "kuka"])
    parser.add_argument("--time-scale", type=float, default=2.0)
    parser.add_argument("--minutes", type=float, default=20.0, help="fleet minutes a rollout may run")
    parser.add_argument("--aa-minutes", type=float, default=20.0, help="fleet minutes of the A/A phase")
    parser.add_argument("--look-s", type=float, default=15.0, help="wall seconds between the controller's looks")
    parser.add_argument("--score-episodes", type=int, default=20, help="held-out episodes per pair per version")
    parser.add_argument("--phases", default="regression,improvement,aa")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "canary.json")
    parser.add_argument(
        "--phases-from",
        type=Path,
        nargs="+",
        default=[],
        help="earlier results (the same options) whose phases and held-out scores to keep: a phase found there is "
        "not run again, so the bench can run in session-sized pieces",
    )
    parser.add_argument(
        "--calibrate",
        default=None,
        help="only score --better and sabotage:SCALE for each of these comma-separated scales on the held-out "
        "episodes (to choose --worse), printed and written to --out",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    began = time.time()
    better = args.better
    if args.calibrate:
        calibration = calibrate(better, [float(x) for x in args.calibrate.split(",")], args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(calibration, indent=1) + "\n")
        return
    worse = (
        sabotaged(better, float(args.worse.split(":")[1])) if args.worse.startswith("sabotage:") else Path(args.worse)
    )
    improve_from, improve_to = args.improve_from or worse, args.improve_to or better
    scoring = argparse.Namespace(**{**vars(args), "final_episodes": args.score_episodes})
    checkpoints = {"better": better, "worse": worse, "improve_from": improve_from, "improve_to": improve_to}
    phases: dict[str, Any] = {}
    scored: dict[Path, dict[str, Any]] = {}
    mine = _setting(args, checkpoints)
    for earlier_path in args.phases_from:
        earlier = json.loads(earlier_path.read_text())
        if (theirs := {k: earlier.get(k) for k in mine}) != mine:
            parser.error(f"--phases-from {earlier_path} was run with {theirs}; give the same options ({mine})")
        phases.update(earlier["phases"])
        scored.update({Path(row["checkpoint"]): row for row in earlier["held_out"].values()})
    for path in checkpoints.values():
        scored[path] = scored.get(path) or score(path, scoring)
    scores = {role: {**scored[path], "checkpoint": str(path)} for role, path in checkpoints.items()}
    gap = scores["better"]["mean"] - scores["worse"]["mean"]
    improvement_gap = scores["improve_to"]["mean"] - scores["improve_from"]["mean"]
    print("held-out: " + ", ".join(f"{role} {row['mean']:.3f}" for role, row in scores.items()), flush=True)
    for name in [p for p in args.phases.split(",") if p not in phases]:
        production, canary = {
            "regression": (better, worse), "improvement": (improve_from, improve_to), "aa": (better, None),
        }[name]  # fmt: skip
        phases[name] = run_phase(name, production, canary, args)
    result: dict[str, Any] = {
        "benchmark": "canary", "command": "bench/canary.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        **mine,
        "policy": dataclasses.asdict(CanaryPolicy()),
        "held_out": scores, "held_out_gap": round(gap, 4), "improvement_gap": round(improvement_gap, 4),
        "phases": phases,
    }  # fmt: skip
    if "regression" in phases:
        result["regression_detect_minutes"] = phases["regression"].get("detect_minutes")
        converge = [t for t in phases["regression"].get("converge_s", []) if t is not None]
        result["rollback_converge_s"] = converge
        result["rollback_converge_p99_s"] = max(converge) if converge else None  # p99 of <= 100 robots: the max
    if "improvement" in phases:
        result["improvement_detect_minutes"] = phases["improvement"].get("detect_minutes")
    if "aa" in phases:
        episodes = phases["aa"]["episodes"]
        runs = aa_runs(episodes, sorted({e["robot"] for e in episodes}), args.fraction, args.look_s, CanaryPolicy())
        rollbacks = sum(r["action"] == "rollback" for r in runs)
        evidence = sum(r["action"] != "continue" and not r["at_budget"] for r in runs)  # a verdict or safety signal
        result.update(aa_runs=runs, false_rollback_rate=rollbacks / len(runs) if runs else None,
                      false_rollback_ci95=wilson(rollbacks, len(runs)),
                      false_decision_rate=evidence / len(runs) if runs else None)  # fmt: skip
    result["seconds"] = round(time.time() - began, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict | list)}))


if __name__ == "__main__":
    main()
