"""The learner's updates per second beside 4 real-time robots: today's loop against the faster ones, in one run.

Four robot processes act at 10 Hz for the whole run (PyBullet, front + wrist 64x64 cameras, the VLA on the
robots' chunk schedule: the CPU a real-time robot takes here), while the learner's loop runs in each arm in turn:

    baseline     the update and loop before the evaluator: a second, no-grad value forward per update and the
                 stock `nn.MultiheadAttention` (re-created here as `TwoPassModule`), and the gate on the
                 learner's thread, its episodes one at a time (`GateConfig.lanes` 1, as before the evaluator
                 batched them). The optimizer's later savings (fused AdamW, one foreach moving average, one
                 foreach norm for the clip and the finite check) are kept in every arm, the baseline's included.
    single_pass  one forward per update (advantages from the loss's own values), batch-first attention; the gate in
                 the evaluator's process
    encoder      + the image encoder frozen, its tokens cached at ingest (`--freeze encoder`)
    encoder_bf16 + the update's matmuls in bfloat16 (`--precision bf16`: autocast, fp32 weights and attention)
    perception   + all but the action expert and the value head frozen (`--freeze perception`)

Each arm: replay holds `--demos` scripted demonstrations per task x embodiment (real frames); updates of the
`online` preset (batch 32, AdamW, moving average); a checkpoint every 150 updates or 90 s (the preset's cadence)
scored on the preset's gate and confirmation (10 + 10 episodes per pair), one publication at a time as in
`LearnerService`. Reported per arm: updates, seconds, `updates_per_s`, `ratio` to baseline, versions scored and
the mean seconds from a checkpoint to its scores, the ingest seconds (features computed at ingest), and the robots'
ticks per second and late ticks (> 50 ms past due). The robots run at niceness -5, as the fleet's do.

With a random-init model (the default; `--checkpoint DIR` loads a trained one) episodes stall early, so the gate
is cheaper than with a trained version: the baseline's in-thread gate costs it less here than on the fleet. The
replay holds demonstrations only, all encoded once after the first batches: the fleet's learner also ingests ~40
new steps a second and encodes each the first time a batch samples it, which this bench leaves out (the online
arms' own rates, `bench/online.py`'s `learner_updates_per_s_fleet`, include it).

Writes bench/results/learner_speed.json. The committed results (2 cores with AMX, 4 robots, the online benchmark's
version 1 and scenario, the gate 10 + 10 episodes per pair of raised-bench):

    .venv/bin/python -m bench.learner_speed --checkpoint research/online/v1-20k-flow4 --scenario raised-bench \
        --seconds 300 --arms baseline,single_pass,encoder,encoder_bf16,perception

baseline 2.515 updates/s (5 versions scored, 21.3 s each on the learner's thread), single_pass 4.516 (1.80x),
encoder 8.831 (3.51x, the fp32 learner of the online arms' runs), encoder_bf16 10.905 (4.34x), perception 25.52
(10.15x); every arm with the evaluator scored 8-12 versions, ~24 s each. An earlier run of the same command on the
same machine (without encoder_bf16): baseline 2.515, single_pass 4.445, encoder 9.297 (3.70x), perception 30.31:
the arms vary 5-15% from run to run. Alone (no robots), one update costs ~180 ms (single_pass), 78 ms
(encoder), 69 ms (encoder_bf16), 22 ms (perception). On session 32's machine (its run in git
history): baseline 1.989, encoder 6.647 (3.34x). With a random-init model (`--seconds 300 --evaluator-niceness 0`):
0.114 / 0.642 / 1.063 / 2.959, no version scored by an arm with the evaluator within its 300 s
(`learner_speed_nice10.json` the same at niceness 10).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ARMS = ("baseline", "single_pass", "encoder", "encoder_bf16", "perception")
FREEZE = {"baseline": "none", "single_pass": "none", "encoder": "encoder", "encoder_bf16": "encoder",
          "perception": "perception"}  # fmt: skip
PRECISION = {"encoder_bf16": "bf16"}  # the others: fp32
PAIRS = (("pick", "panda"), ("push", "kuka"), ("place", "panda"), ("pick", "kuka"))  # one per robot
LATE_S = 0.05
ROBOT_NICENESS = -5
RESULTS = Path(__file__).parent / "results" / "learner_speed.json"


def _robot(index: int, checkpoint: str, stop: Any, ticks: Any, late: Any) -> None:
    """One real-time robot: the VLA on the chunk schedule in a PyBullet env at 10 Hz until `stop` is set."""
    from fleet.policy.checkpoint import load_checkpoint
    from fleet.policy.language import default_embedder
    from fleet.policy.policy import VLAPolicy
    from fleet.recipe.evaluate import ChunkedController
    from fleet.sim import make_env

    torch.set_num_threads(1)
    with contextlib.suppress(PermissionError):  # as the fleet's robots (RobotConfig.niceness): control loop first
        os.nice(ROBOT_NICENESS)
    task, embodiment = PAIRS[index % len(PAIRS)]
    env = make_env(task, embodiment, seed=index, image_size=64)
    policy = VLAPolicy(load_checkpoint(checkpoint), embedder=default_embedder(), seed=index)
    episode = 0
    due = time.monotonic()
    while not stop.is_set():
        controller = ChunkedController(policy)
        obs, _ = env.reset(seed=10_000 * index + episode)
        episode += 1
        for _ in range(env.max_steps):  # to the time limit, as a supervised robot's episode goes on after a stall
            if stop.is_set():
                break
            obs, _, terminated, truncated, _ = env.step(np.asarray(controller(obs), dtype=np.float32))
            due += 0.1
            now = time.monotonic()
            with ticks.get_lock():
                ticks.value += 1
            if now > due + LATE_S:
                with late.get_lock():
                    late.value += 1
                due = now  # a late robot does not try to catch up
            else:
                time.sleep(max(0.0, due - now))
            if terminated or truncated:
                break
    env.close()


def _engine(arm: str, model_config: Any) -> Any:
    """The arm's update engine (the `online` preset's optimizer); the baseline with its second value forward."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from fleet.policy.encoders import BatchFirstAttention
    from learner.config import get_preset
    from learner.rllib import VLALearner, VLARLModule, _model_batch, build_algorithm_config

    class TwoPassModule(VLARLModule):
        """The update before the evaluator: values for the advantages from a second, no-grad forward, and the stock
        attention (`BatchFirstAttention` computes the same from the same parameters, with fewer copies)."""

        def setup(self) -> None:
            super().setup()
            for module in self.vla.modules():
                if type(module) is BatchFirstAttention:
                    module.__class__ = torch.nn.MultiheadAttention

        def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            with torch.no_grad():
                self.vla.predict_value(_model_batch(batch))
            return super()._forward_train(batch, **kwargs)  # the loss's own forward, as every arm's

    precision = PRECISION.get(arm, "fp32")
    config = dataclasses.replace(get_preset("online").rllib, freeze=FREEZE[arm], precision=precision)  # type: ignore[arg-type]
    engine = VLALearner(config, model_config=model_config)
    if arm == "baseline":
        engine.group.shutdown()
        algo = build_algorithm_config(config, model_config)
        spec = algo.rl_module_spec
        algo.rl_module(rl_module_spec=RLModuleSpec(
            module_class=TwoPassModule, observation_space=spec.observation_space,
            action_space=spec.action_space, model_config=spec.model_config,
        ))  # fmt: skip
        engine.group = algo.build_learner_group()
    return engine


def run_arm(
    arm: str,
    model: Any,
    demos: list[Any],
    seconds: float,
    workdir: Path,
    *,
    niceness: int = 0,
    scenario: str = "nominal",
) -> dict[str, Any]:
    """The learner's loop for `seconds`: updates, and a scored checkpoint on the `online` preset's cadence."""
    from fleet.policy.checkpoint import save_checkpoint
    from fleet.policy.language import default_embedder
    from learner.cli import learner_config
    from learner.evaluator import Evaluator, Pending
    from learner.features import FrozenFeatures
    from learner.gate import confirmation
    from learner.replay import ReplayBuffer

    # The gate in the fleet's scenario, as `fleet learner run --scenario` sets it: its cost follows how long the
    # version's episodes run there (a version that fails runs to the stall or the time limit).
    preset = learner_config("online", scenario=scenario)
    engine = _engine(arm, model.config)
    engine.set_state_dict(model.state_dict())
    freeze = FREEZE[arm]
    started = time.monotonic()
    features = FrozenFeatures(model, freeze) if freeze != "none" else None  # type: ignore[arg-type]
    replay = ReplayBuffer(preset.replay, model.config, embedder=default_embedder(), features=features)
    for episode in demos:
        replay.add_episode(episode)
    ingest_s = time.monotonic() - started
    evaluator = Evaluator(default_embedder, process=arm != "baseline", niceness=niceness)
    # The gate before the evaluator ran a pair's episodes one after the other, one forward per chunk; the lanes that
    # batch them (`GateConfig.lanes`) came with the evaluator, so the baseline re-creates the gate without them.
    gate = dataclasses.replace(preset.gate, lanes=1) if arm == "baseline" else preset.gate
    rng = np.random.default_rng(0)
    updates = since = 0
    waiting: list[tuple[Path, Any]] = []  # the publication's (checkpoint, gate) scores still to come
    scored: list[float] = []  # seconds from each checkpoint to its last score
    start = last = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            engine.update(replay.sample(preset.batch_size, rng))
            updates += 1
            since += 1
            now = time.monotonic()
            if not waiting and (since >= preset.checkpoint_every_updates or now - last >= preset.checkpoint_every_s):
                directory = workdir / f"{arm}-{updates}"
                save_checkpoint(engine.to_model(ema=True), directory)
                waiting = [(directory, gate), (directory, confirmation(gate))]
                since, last = 0, now
            while waiting:
                try:
                    evaluator.score(*waiting[0])
                except Pending:
                    break
                waiting.pop(0)
                if not waiting:
                    scored.append(time.monotonic() - last)
        elapsed = time.monotonic() - start
    finally:
        evaluator.close()
        engine.shutdown()
    return {
        "updates": updates, "seconds": round(elapsed, 1), "updates_per_s": round(updates / elapsed, 3),
        "versions_scored": len(scored), "scoring_s": round(float(np.mean(scored)), 1) if scored else None,
        "ingest_s": round(ingest_s, 1), "replay_steps": len(replay), "freeze": freeze,
        "precision": PRECISION.get(arm, "fp32"),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="learner time per arm")
    parser.add_argument("--robots", type=int, default=4, help="real-time robot processes beside the learner")
    parser.add_argument("--demos", type=int, default=5, help="scripted demonstrations per task x embodiment in replay")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained version (default: random init)")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated, from " + ", ".join(ARMS))
    parser.add_argument("--scenario", default="nominal", help="the scenario the gate scores versions in")
    parser.add_argument("--evaluator-niceness", type=int, default=0, help="the evaluator worker's niceness")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    if unknown := sorted(set(arms) - set(ARMS)):
        parser.error(f"unknown arms {unknown}; choose from {list(ARMS)}")

    from fleet.episodes import EpisodeStore
    from fleet.policy.checkpoint import load_checkpoint, save_checkpoint
    from fleet.policy.config import VLAConfig
    from fleet.policy.model import VLAModel
    from fleet.recipe.demos import collect_demos_grid

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fleet-learner-speed-") as tmp:
        work = Path(tmp)
        if args.checkpoint is None:
            torch.manual_seed(0)
            save_checkpoint(VLAModel(VLAConfig()), work / "v1")
        checkpoint = args.checkpoint or work / "v1"
        model = load_checkpoint(checkpoint)
        store = EpisodeStore(work / "demos")
        collect_demos_grid(store, ("pick", "push", "place"), ("panda", "kuka"), args.demos)
        demos = list(store.iter_episodes())
        print(f"{len(demos)} demonstrations, {sum(e.meta.length for e in demos)} steps", flush=True)

        context = multiprocessing.get_context("spawn")
        stop, ticks, late = context.Event(), context.Value("l", 0), context.Value("l", 0)
        robots = [context.Process(target=_robot, args=(i, str(checkpoint), stop, ticks, late), daemon=True)
                  for i in range(args.robots)]  # fmt: skip
        for robot in robots:
            robot.start()
        time.sleep(20.0)  # the robots load torch, MiniLM and their scenes before the first arm's clock starts
        results: dict[str, Any] = {}
        try:
            for arm in arms:
                t0, l0, w0 = ticks.value, late.value, time.monotonic()
                results[arm] = run_arm(
                    arm, model, demos, args.seconds, work, niceness=args.evaluator_niceness, scenario=args.scenario
                )
                wall = time.monotonic() - w0
                results[arm]["robot_ticks_per_s"] = round((ticks.value - t0) / wall, 2)
                results[arm]["robot_late_ticks"] = late.value - l0
                print(arm, json.dumps(results[arm]), flush=True)
        finally:
            stop.set()
            for robot in robots:
                robot.join(timeout=30)
    base = results.get("baseline", {}).get("updates_per_s")
    for arm in results.values():
        arm["ratio"] = round(arm["updates_per_s"] / base, 2) if base else None
    out = {
        "robots": args.robots, "seconds_per_arm": args.seconds, "demos_per_pair": args.demos,
        "checkpoint": str(args.checkpoint) if args.checkpoint else "random init", "scenario": args.scenario,
        "torch_threads": 1,
        "evaluator_niceness": args.evaluator_niceness,
        "arms": results,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({a: r["ratio"] for a, r in results.items()}))


if __name__ == "__main__":
    main()
