"""The learner's update rule without the real-time fleet: can it lift version 1 given far more updates?

bench/online.py runs the real loop, where the learner makes ~1-2 updates/s beside 4 real-time robots on 2
cores (~1,000 updates in 10 minutes of fleet time). This probe takes the robots' clock and the 2 shared cores
out of the question. In rounds, it

1. runs the learner's current weights (their moving average, what the learner publishes) on `--episodes`
   episodes of each task × embodiment, as fast as the simulator goes, on the robots' chunk schedule
   (`ChunkedController`) under the simulated human (`ExpertSupervisor`: takes over when progress stalls),
2. puts them in the learner's replay (`ReplayBuffer`, the `online` preset's mixing, with the demonstrations
   version 1 was trained on),
3. makes `--updates` updates with the learner's engine (`VLALearner`: the `online` preset's optimizer, batch
   size and moving average; `--lr` overrides its learning rate), and
4. scores the moving average on the learner's gate (the `online` preset: 10 held-out episodes per pair).

`--label all` also labels every step the policy drove with the expert's action (DAgger: all a supervisor
could say, not only its takeovers); `--no-autonomous` trains on demonstrations and corrections only.

Writes research/learning_probe/learning_probe.json and .png (or `--out`). Commands that produced the committed results
(written to /tmp, copied to research/learning_probe/learning_probe.json and learning_probe_detach.json with their
plots):

    .venv/bin/python -m research.learning_probe --rounds 4 --episodes 5 --updates 500 --cache /tmp/online-v2 \
        --out /tmp/dag/probe-default.json
    .venv/bin/python -m research.learning_probe --rounds 4 --episodes 5 --updates 500 --detach-value \
        --cache /tmp/online-v2 --out /tmp/dag/probe-detach.json

and (session 9) the DAgger run, copied to research/learning_probe/learning_probe_dagger.json and .png:

    .venv/bin/python -m research.learning_probe --rounds 3 --episodes 20 --updates 500 --label all \
        --cache /tmp/online-v2 --out /tmp/s9/probe-dagger.json

and (session 10) the wrist-camera version 1 (research/cameras.py), copied to
research/learning_probe/learning_probe_wrist.json and .png: gate 0.783 -> 0.833 -> 0.833 -> 0.80 over 1,500 updates
on 120 supervised episodes per round, flat within the gate's noise, while the real loop's versions drift down to
0.65-0.73 over 2,500-3,000 updates
(bench/online.py):

    .venv/bin/python -m research.learning_probe --rounds 3 --episodes 20 --updates 500 --cache /tmp/online-v3 \
        --out /tmp/s10/probe.json

and (session 11) the real loop's scale: 780 supervised episodes per round (2,340 in all, as many as 4 real-time
robots run in 20 minutes) and 3,000 updates (as many as the online learner makes in those 20 minutes), copied to
research/learning_probe/learning_probe_scale.json and .png. It ran on the replay returns from before c4d1a12 (autonomous
steps before a takeover count as failures). Gate 0.783 -> 0.833 -> 0.867 -> 0.817: no drift at the real loop's
scale of data and updates, unlike the real loop's versions (0.65-0.73 after 2,500-3,000 updates):

    PYTHONPATH=. .venv/bin/python -m research.learning_probe --rounds 3 --episodes 130 --updates 1000 \
        --out /tmp/s11/probe-scale.json

and (session 11, after c4d1a12) the same scale with every round also scored on 50 other held-out episodes per pair
(300), copied to research/learning_probe/learning_probe_eval.json and .png. Gate 0.783 -> 0.783 -> 0.833 -> 0.833,
the 300 episodes 0.790 -> 0.783 -> 0.763 -> 0.783: the weights do not get better, and the gate's +5 points are its
noise:

    PYTHONPATH=. .venv/bin/python -m research.learning_probe --rounds 3 --episodes 130 --updates 1000 \
        --eval-episodes 50 --out /tmp/s11/probe-eval.json

Per pair the 300 episodes show a trade, not a standstill: kuka gains (pick/kuka 0.84 -> 0.94-0.98) and panda losses
(push/panda 0.70 -> 0.54-0.62, place/panda 0.74 -> 0.60-0.72) cancel. Trained on demonstrations and takeover
corrections only (`--no-autonomous`, copied to research/learning_probe/learning_probe_eval_corrections.json and
.png) the panda losses come faster: 0.790 -> 0.747 -> 0.723, pick/panda 0.86 -> 0.72 -> 0.58, kuka still up; so the
takeover corrections are what hurts the panda policy:

    PYTHONPATH=. .venv/bin/python -m research.learning_probe --rounds 2 --episodes 130 --updates 1000 \
        --eval-episodes 50 --no-autonomous --out /tmp/s11/probe-eval-corr.json

What they say: 2,000 updates (twice what the online learner makes in 10 minutes of fleet time) on 120
supervised episodes leave the gate where version 1 started (0.733 -> 0.683-0.767; detached value 0.75-0.80,
within the gate's noise of ~0.06), so the learner's throughput beside the robots is not what holds the fleet
back. Also measured with an earlier copy of this loop (session 8 note): 5,500 updates on 330 episodes, flat
(0.68-0.78); `--label all` (expert labels on every step) *lowers* the gate to 0.42-0.58 (the committed DAgger
run, 120 labelled episodes per round so not an over-fit of a small buffer: 0.733 -> 0.483, 0.433, 0.367, worst
on kuka and push; the policy's own success while collecting 0.61 -> 0.21 -> 0.18). Read step by step, the
expert's labels on the policy's states switch at its hard thresholds (close only within 8 mm, where version 1
closes 1.1-1.7 cm off the cube even when it succeeds), but that is not the main cause: the same run with the
expert patched (scratch copies) to align within 2 cm (`fleet.sim.experts.ALIGN`) collapses about the same
(0.467 after 1,500 updates), also with a 4 cm close / seal window (0.417), and push, which has no grasp, drops
first (0.6 -> 0.2 in 500 updates). What does stop it: the same run with each labelled row's loss on its own
step's action only (the chunk's later steps masked; a scratch patch of `ReplayBuffer._collate`) stays level,
0.733 -> 0.60 -> 0.65 -> 0.717, the policy's own success 0.61 -> 0.48 -> 0.60. So the harm is in the chunk
targets: labels[t+1..t+7] are the expert's reactions to where the *policy* went, not a plan the expert would
follow, and the robots execute chunk steps 2-3 (`EXECUTE_STEPS` / `PREFETCH_STEPS`). Takeover corrections do
not have this problem (the expert drove those steps, so their chunks are its own trajectory). Pre-training version
1 on the learner's RECAP returns instead of the discounted return-to-go gives a weaker version 1 (0.506 vs
0.644 on 30 held-out episodes per pair) that does not learn either.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.online import CACHE

ROOT = Path(__file__).resolve().parents[1]
WIDE_SEEDS = 2_000_000  # first seed of the wide eval: far above the learner's gate blocks (version 500 reaches it)


class Supervised:
    """`rollout()`'s policy / supervisor / takeover rule for a chunked policy under the simulated human.

    The takeover rule runs the controller once per step (as the robot runtime does, the chunk keeps running
    under a takeover) and asks the supervisor; with `label_all`, `labels` keeps the expert's action for every
    step (`--label all`).
    """

    def __init__(self, controller: Any, supervisor: Any, *, label_all: bool = False) -> None:
        self.controller, self.supervisor, self.label_all = controller, supervisor, label_all
        self.labels: list[np.ndarray] = []
        self._policy = self._human = None

    def takeover(self, _env: Any, obs: Any, _t: int) -> bool:
        self._policy = np.asarray(self.controller(obs), dtype=np.float32)
        self._human = self.supervisor.step(obs, self._policy)
        if self.label_all:
            human = self._human if self._human is not None else self.supervisor.expert(obs)
            self.labels.append(np.asarray(human, dtype=np.float32))
        return self._human is not None

    def policy(self, _obs: Any) -> np.ndarray:
        return self._policy

    def human(self, _obs: Any) -> np.ndarray:
        return self._human


def collect(model: Any, pairs: list[tuple[str, str]], envs: dict, episodes: int, seed: int, *, label_all: bool):
    """`episodes` supervised episodes per pair; returns them and their autonomous successes / intervention steps."""
    from actors.supervisor import ExpertSupervisor
    from fleet.policy.language import default_embedder
    from fleet.policy.policy import VLAPolicy
    from fleet.recipe.evaluate import EXECUTE_STEPS, PREFETCH_STEPS, ChunkedController
    from fleet.sim.rollout import rollout

    out, autonomous, interventions = [], [], []
    for i in range(episodes):
        for task, embodiment in pairs:
            env = envs[(task, embodiment)]
            policy = VLAPolicy(model, embedder=default_embedder(), seed=seed + i)
            controller = ChunkedController(policy, execute_steps=EXECUTE_STEPS, prefetch_steps=PREFETCH_STEPS)
            run = Supervised(controller, ExpertSupervisor(env), label_all=label_all)
            episode = rollout(
                env, run.policy, seed=seed + i, robot_id="probe", supervisor=run.human, takeover=run.takeover
            )
            autonomous.append(bool(episode.meta.success) and episode.meta.interventions == 0)
            interventions.append(episode.meta.interventions)
            if label_all:  # every step the expert's action, all weighted as interventions
                labels = np.clip(np.asarray(run.labels, dtype=np.float32), -1.0, 1.0)
                episode = dataclasses.replace(
                    episode, actions=labels, intervention=np.ones(episode.meta.length, dtype=np.bool_)
                )
            out.append(episode)
    if not out:
        return out, None, None
    return out, float(np.mean(autonomous)), float(np.mean(interventions))


def wide_eval(gate: Any, episodes: int) -> Any:
    """An EvalGate of `episodes` per pair on seeds the learner's gate never uses (WIDE_SEEDS+): what a version is really
    worth, on a larger sample than the gate's."""
    from learner.gate import EvalGate

    return EvalGate(dataclasses.replace(gate, episodes=episodes, seed_offset=WIDE_SEEDS))


def studied_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `studied_policy` reads: --checkpoint, --threads and --cache."""
    parser.add_argument("--checkpoint", type=Path, default=None, help="a fleet-vla checkpoint (default: version 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=CACHE)


def studied_policy(checkpoint: Path | None, cache: Path, threads: int) -> tuple[Path, Any, list[tuple[str, str]]]:
    """What a probe of one version studies (research/failures.py, research/servo.py): `checkpoint`, or else
    bench/online.py's cached version 1, as a seeded `VLAPolicy`, and the online gate's task × embodiment pairs.
    Returns (checkpoint directory, policy, pairs)."""
    import torch

    from bench.online import V1_BC_STEPS, V1_DEMOS, version_one
    from fleet.policy.checkpoint import load_checkpoint
    from fleet.policy.language import default_embedder
    from fleet.policy.policy import VLAPolicy
    from learner.config import PRESETS
    from learner.gate import EvalGate

    torch.set_num_threads(threads)
    gate = PRESETS["online"].gate
    checkpoint = checkpoint or version_one(cache, gate.tasks, gate.embodiments, V1_DEMOS, V1_BC_STEPS)
    policy = VLAPolicy(load_checkpoint(checkpoint), embedder=default_embedder(), seed=0)
    return checkpoint, policy, EvalGate(gate).pairs()


def plot(result: dict[str, Any], path: Path) -> None:
    from bench.figures import pyplot, save_figure

    plt = pyplot()

    rows = result["rounds"]
    fig, ax = plt.subplots(figsize=(7, 4))
    updates = [r["updates"] for r in rows]
    ax.plot(updates, [r["gate_mean"] for r in rows], marker="o", label="gate (held-out, autonomous)")
    if rows[0].get("eval_mean") is not None:
        n = result["config"]["eval_episodes_per_pair"]
        ax.plot(updates, [r["eval_mean"] for r in rows], marker="s", label=f"{n} other held-out episodes per pair")
    per_round = result["config"]["updates_per_round"]  # a round collects with the weights of the round before
    collected = [(r["updates"] - per_round, r["collect_autonomous_success"]) for r in rows[1:] if r["episodes"]]
    if collected:
        ax.plot(*zip(*collected, strict=True), marker=".", label="collected episodes (under the supervisor)")
    ax.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="learner updates", ylabel="autonomous success", ylim=(-0.02, 1.02))
    c = result["config"]
    ax.set_title(f"learning probe: lr {c['lr']}, label {c['label']}, autonomous {c['autonomous']}", fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=5, help="supervised episodes per task × embodiment per round")
    parser.add_argument("--updates", type=int, default=500, help="learner updates per round")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the online preset's)")
    parser.add_argument("--label", choices=("takeover", "all"), default="takeover")
    parser.add_argument("--no-autonomous", dest="autonomous", action="store_false")
    parser.add_argument(
        "--detach-value", action="store_true", help="the value loss trains the value head only, not the shared trunk"
    )
    parser.add_argument(
        "--eval-episodes", type=int, default=0,
        help="also score each round on this many other held-out episodes per pair (0: the gate only)",
    )  # fmt: skip
    parser.add_argument("--demos", type=int, default=300, help="demos per pair of version 1 (as bench/online.py)")
    parser.add_argument("--bc-steps", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (nothing else runs beside it)")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=ROOT / "research" / "learning_probe" / "learning_probe.json")
    args = parser.parse_args()

    import torch

    from bench.online import version_one
    from fleet.policy.checkpoint import load_checkpoint
    from fleet.policy.language import default_embedder
    from fleet.sim import make_env
    from learner.config import PRESETS
    from learner.gate import EvalGate
    from learner.replay import ReplayBuffer
    from learner.rllib import VLALearner

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    preset = PRESETS["online"]
    rllib = preset.rllib if args.lr is None else dataclasses.replace(preset.rllib, lr=args.lr)
    tasks, embodiments = preset.gate.tasks, preset.gate.embodiments
    v1 = version_one(args.cache, tasks, embodiments, args.demos, args.bc_steps)
    model = load_checkpoint(v1)
    engine = VLALearner(rllib, model_config=model.config.with_(value_detach_trunk=args.detach_value))
    engine.set_state_dict(model.state_dict())  # the moving average starts there too
    replay = ReplayBuffer(
        dataclasses.replace(preset.replay, autonomous=args.autonomous), model.config, embedder=default_embedder()
    )
    replay.add_demos(args.cache / "demos")
    gate, rng = EvalGate(preset.gate), np.random.default_rng(0)
    wide = wide_eval(preset.gate, max(1, args.eval_episodes))
    pairs = gate.pairs()
    envs = {p: make_env(*p, seed=7, image_size=model.config.image_size) for p in pairs}
    rows: list[dict[str, Any]] = []

    def record(round_: int, collected: tuple[float | None, float | None], seconds: dict[str, float]) -> None:
        model = engine.to_model(ema=True)
        score = gate.evaluate(model, embedder=default_embedder())
        evaluation = wide.evaluate(model, embedder=default_embedder()) if args.eval_episodes else None
        rows.append({
            "eval_mean": None if evaluation is None else round(evaluation.mean, 3),
            "eval": {} if evaluation is None else {f"{t}/{e}": v for (t, e), v in evaluation.success.items()},
            "round": round_, "updates": round_ * args.updates, "episodes": round_ * args.episodes * len(pairs),
            "collect_autonomous_success": None if collected[0] is None else round(collected[0], 3),
            "interventions_per_episode": None if collected[1] is None else round(collected[1], 2),
            "gate_mean": round(score.mean, 3), "gate": {f"{t}/{e}": v for (t, e), v in score.success.items()},
            "replay": replay.sizes(), "seconds": {**seconds, "gate": round(score.seconds, 1),
                        "eval": None if evaluation is None else round(evaluation.seconds, 1)},
        })  # fmt: skip
        keys = ("round", "updates", "gate_mean", "eval_mean", "collect_autonomous_success")
        print(json.dumps({k: rows[-1][k] for k in keys}))

    record(0, (None, None), {})
    for r in range(1, args.rounds + 1):
        t0 = time.monotonic()
        episodes, success, interventions = collect(
            engine.to_model(ema=True), pairs, envs, args.episodes, seed=5_000_000 + 1_000 * r,
            label_all=args.label == "all",
        )  # fmt: skip
        for episode in episodes:
            replay.add_episode(episode)
        t1 = time.monotonic()
        for _ in range(args.updates):
            engine.update(replay.sample(preset.batch_size, rng))
        record(r, (success, interventions), {"collect": round(t1 - t0, 1), "update": round(time.monotonic() - t1, 1)})
    for env in envs.values():
        env.close()
    result = {
        "benchmark": "learning_probe",
        "command": " ".join(["research/learning_probe.py", *sys.argv[1:]]),
        "config": {"rounds": args.rounds, "episodes_per_pair": args.episodes, "updates_per_round": args.updates,
                   "lr": rllib.lr, "ema_decay": rllib.ema_decay, "batch_size": preset.batch_size,
                   "label": args.label, "autonomous": args.autonomous, "detach_value": args.detach_value,
                   "pairs": [f"{t}/{e}" for t, e in pairs],
                   "gate_episodes_per_pair": preset.gate.episodes, "eval_episodes_per_pair": args.eval_episodes,
                   "v1": str(v1)},
        "initial_gate": rows[0]["gate_mean"],
        "final_gate": rows[-1]["gate_mean"],
        "best_gate": max(r["gate_mean"] for r in rows),
        "rounds": rows,
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("initial_gate", "final_gate", "best_gate", "seconds")}))


if __name__ == "__main__":
    main()
