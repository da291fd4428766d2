"""How far can the learner's own update rule lift a version 1 on a deployment scenario, given ideal data?

Before asking the fleet to lift version 1 on a scenario (bench/online.py), this probe asks the easier question: with
the scenario's scripted demonstrations in replay (expert labels on the expert's own path: the most a supervisor's
steps can be worth) and no robots competing for the cores, where does the learner's engine (`VLALearner`, the
`online` preset with `--freeze`) take version 1 in `--updates` updates? If it cannot reach the issue's 0.85 here, no
fleet run will, and the scenario, the model or the update rule has to change first.

1. `--demos` scripted demonstrations per task x embodiment in `--scenario` (seeds 0.., cached under `--work`), plus
   version 1's own demonstrations (`--v1-demos`, optional) in the learner's demo buffer;
2. `--updates` updates of batch 32 with the online preset (its AdamW, warm-up, moving average) and `--freeze`;
3. every `--every` updates, the moving average is scored on `--episodes` held-out episodes per pair of the scenario
   (seeds 2,000,000+, the gate's rules: an episode that stalls fails).

    PYTHONPATH=. .venv/bin/python -m research.scenario_ceiling --v1 /tmp/v1probe/run/checkpoints/step_00004000 \
        --v1-demos /tmp/v1probe/demos --freeze perception --updates 3000 --every 1000 --out /tmp/sc/perception.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

WIDE_SEEDS = 2_000_000


def takeover_episodes(model: Any, embedder: Any, args: argparse.Namespace, tasks: tuple, embodiments: tuple) -> list:
    """`--demos` episodes per pair of version 1 in the scenario with the operator (`--takeovers`) stepping in."""
    episodes = [e for task in tasks for emb in embodiments for e in _pair_takeovers(model, embedder, args, task, emb)]
    taken = sum(int(e.intervention.sum()) for e in episodes)
    print(f"takeovers: {len(episodes)} episodes, {taken} operator steps", flush=True)
    return episodes


def _pair_takeovers(model: Any, embedder: Any, args: argparse.Namespace, task: str, embodiment: str) -> list:
    from actors.supervisor import ExpertSupervisor, SupervisorConfig
    from fleet.policy.policy import VLAPolicy
    from fleet.recipe.evaluate import ChunkedController
    from fleet.sim.registry import make_env
    from fleet.sim.rollout import rollout

    env = make_env(task, embodiment, seed=0, scenario=args.scenario)
    robot = ChunkedController(VLAPolicy(model, embedder=embedder, seed=0))
    rules = tuple(args.takeovers.split(","))
    config = SupervisorConfig(rules=rules, correct_in_place=not args.start_over, takeover_steps=args.takeover_steps,
                              deviation=args.deviation)  # fmt: skip
    operator = ExpertSupervisor(env, config)
    now: dict[str, Any] = {}

    def takeover(env_: Any, obs: Any, t: int) -> bool:  # the robot's action and the operator's, once per step
        if t == 0:
            robot.reset()
            operator.reset()
        now["policy"] = robot(obs)
        now["human"] = operator.step(obs, now["policy"])
        return now["human"] is not None

    try:
        return [rollout(env, lambda obs: now["policy"], seed=500_000 + k, robot_id="probe",
                        supervisor=lambda obs: now["human"], takeover=takeover) for k in range(args.demos)]  # fmt: skip
    finally:
        env.close()


def _spans(mask: np.ndarray) -> list[tuple[str, int, int]]:
    """(correction id, first step, steps) of each run of operator steps in an intervention mask."""
    spans, t = [], 0
    while t < len(mask):
        if mask[t]:
            start = t
            while t < len(mask) and mask[t]:
                t += 1
            spans.append((f"c{start}", start, t - start))
        else:
            t += 1
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--v1", type=Path, required=True, help="version 1's checkpoint directory")
    parser.add_argument("--v1-demos", type=Path, default=None, help="version 1's demo store (also in replay)")
    parser.add_argument("--scenario", default="far-reach")
    parser.add_argument("--tasks", default="pick,push,place")
    parser.add_argument("--embodiments", default="panda,kuka")
    parser.add_argument("--demos", type=int, default=50, help="scenario demos per task x embodiment")
    parser.add_argument("--freeze", default="perception", choices=("none", "encoder", "perception"))
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch", type=int, default=None, help="samples per update (default: the online preset's)")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=20, help="held-out episodes per pair per score")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--takeovers",
        default=None,
        help="instead of scripted demos: version 1's own episodes (seeds 500,000+) "
        "with the operator taking over by these rules (e.g. stall,deviate), only the takeovers' steps learnt",
    )
    parser.add_argument("--start-over", action="store_true", help="the operator starts over instead of in place")
    parser.add_argument("--takeover-steps", type=int, default=10, help="steps the operator drives per takeover")
    parser.add_argument(
        "--deviation", type=float, default=1.0, help="the deviate rule's threshold (tiny: drives from the start)"
    )
    parser.add_argument("--save", type=Path, default=None, help="write the final moving average's checkpoint here")
    parser.add_argument("--work", type=Path, default=Path("/tmp/scenario-ceiling"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    from fleet.episodes import EpisodeStore
    from fleet.policy.checkpoint import load_checkpoint, save_checkpoint
    from fleet.policy.language import default_embedder
    from fleet.sim.rollout import collect_demos
    from learner.config import PRESETS
    from learner.features import FrozenFeatures
    from learner.gate import EvalGate, GateConfig
    from learner.replay import ReplayBuffer
    from learner.rllib import VLALearner

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    tasks, embodiments = tuple(args.tasks.split(",")), tuple(args.embodiments.split(","))
    demo_dir = args.work / f"demos-{args.scenario}-{args.demos}"
    if not args.takeovers and not (demo_dir / ".done").exists():
        store = EpisodeStore(demo_dir)
        for task in tasks:
            for embodiment in embodiments:
                collect_demos(store, task=task, embodiment=embodiment, episodes=args.demos, scenario=args.scenario)
        (demo_dir / ".done").touch()
    preset = PRESETS["online"]
    rllib = dataclasses.replace(preset.rllib, freeze=args.freeze, **({} if args.lr is None else {"lr": args.lr}))
    model = load_checkpoint(args.v1)
    engine = VLALearner(rllib, model_config=model.config)
    engine.set_state_dict(model.state_dict())
    embedder = default_embedder()
    features = FrozenFeatures(model, args.freeze) if args.freeze != "none" else None
    replay_config = dataclasses.replace(preset.replay, autonomous=False) if args.takeovers else preset.replay
    replay = ReplayBuffer(replay_config, model.config, embedder=embedder, features=features)
    if args.takeovers:
        added = 0
        for episode in takeover_episodes(model, embedder, args, tasks, embodiments):
            added += replay.add_episode(episode, corrections=_spans(episode.intervention)) is not None
    else:
        added = replay.add_demos(demo_dir)
    if args.v1_demos is not None:
        added += replay.add_demos(args.v1_demos)
    gate = EvalGate(
        GateConfig(tasks=tasks, embodiments=embodiments, scenario=args.scenario, episodes=args.episodes,
                   seed_offset=WIDE_SEEDS)
    )  # fmt: skip
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []

    def score(updates: int, update_s: float) -> None:
        result = gate.evaluate(engine.to_model(ema=True), embedder=embedder)
        rows.append({"updates": updates, "mean": round(result.mean, 3), "update_s": round(update_s, 1),
                     "success": {f"{t}/{e}": round(v, 3) for (t, e), v in result.success.items()},
                     "eval_s": round(result.seconds, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    score(0, 0.0)
    done, spent = 0, 0.0
    while done < args.updates:
        t0 = time.monotonic()
        for _ in range(min(args.every, args.updates - done)):
            engine.update(replay.sample(args.batch or preset.batch_size, rng))
            done += 1
        spent += time.monotonic() - t0
        score(done, spent)
    result = {
        "probe": "scenario_ceiling",
        "config": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "demo_steps": replay.sizes(), "demos_added": added, "lr": rllib.lr},
        "rows": rows,
        "updates_per_s": round(done / spent, 2) if spent else None,
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    if args.save is not None:
        save_checkpoint(engine.to_model(ema=True), args.save)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    engine.shutdown()


if __name__ == "__main__":
    main()
