"""How much of each learner batch should come from the fleet's own steps? One fixed round of fleet data, several mixes.

research/learning_probe.py (session 11) found the learner's weights flat on 300 held-out episodes while the learner
took half of each batch from the fleet (`ReplayConfig.online_fraction` 0.5, as RLPD / HIL-SERL do for RL from
scratch). This bench asks whether that mix is the cause. It

1. runs version 1 (the cached bench/online.py version 1) on `--episodes` supervised episodes per task ×
   embodiment (the robots' chunk schedule under the simulated human, as the probe's first round; cached under
   `--cache`/replay-mix-<episodes>/ so every arm and re-run trains on the same episodes),
2. for each arm, starts the learner's engine (`VLALearner`, the `online` preset) at version 1 and makes
   `--updates` updates from a replay of version 1's demonstrations plus (except `demos`) those episodes,
   mixed with the arm's `online_fraction`,
3. scores the moving average every `--every` updates on `--eval-episodes` held-out episodes per pair (seeds
   2,000,000+, the probe's wide eval: 300 episodes, a standard error of ~0.023 on the mean).

Arms: `demos` (the demonstrations alone: does more behaviour cloning help by itself?) and `online=F` for each F in
`--fractions`. Writes research/replay_mix/replay_mix.json and .png (or `--out`).

Session 12's result (research/replay_mix/replay_mix.json) from version 1's 0.79, after 1,000 / 2,000 updates: demos
alone 0.807 / 0.84 (version 1 is not done learning from its demonstrations), online 0.5 0.797 / 0.77, online 0.25
0.823 / 0.857 (the scratch runs before it printed the same, but 0.83 for demos alone at 2,000). So the learner's
default became 0.25 (ReplayConfig). Three other weightings of the fleet's autonomous steps at 0.5 were tried with
a scratch copy of this loop and are not in the JSON: weight 1 for every autonomous step (plain BC on them) 0.77 /
0.78, weight 0 (they train the value head only) 0.777 / 0.773, weight 1 where the advantage is positive, else 0
0.833 / 0.783. Commands (scratch runs first, then this bench):

    PYTHONPATH=. .venv/bin/python -m research.learning_probe --rounds 2 --episodes 0 --updates 1000 \
        --eval-episodes 50 --out /tmp/s12/demo-only.json
    PYTHONPATH=. .venv/bin/python -m research.replay_mix --fractions 0.5 0.25

Session 14: should the corrections weigh more? An arm `F:I` also takes I of the offline rows from the fleet's
intervention steps (`ReplayConfig.intervention_fraction`; the default draws demonstrations and interventions alike,
and interventions are ~8% of those rows). At online 0.25, after 1,000 / 2,000 updates: the default 0.823 / 0.857
(the same numbers as session 12: the bench is deterministic), half the offline rows from interventions 0.793 /
0.777 (research/replay_mix/replay_mix_interventions.json), none 0.83 / 0.827 (a second run, printed to /tmp). Weighting
the corrections up makes version 1 worse; leaving them out changes nothing measurable. The human's takeovers
mostly finish a grasp the policy had lined up badly (one step that moves the tool over the cube, then descend and
lift, as in the demonstrations), so there is little in them that the demonstrations lack. Commands (the first
run's JSON and PNG copied to research/replay_mix/replay_mix_interventions.*):

    PYTHONPATH=. .venv/bin/python -m research.replay_mix --fractions 0.25 0.25:0.5 --no-demos-arm \
        --out /tmp/s14/mix.json
    PYTHONPATH=. .venv/bin/python -m research.replay_mix --fractions 0.25:0 --no-demos-arm --out /tmp/s14/mix0.json
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


def fleet_round(model: Any, pairs: list[tuple[str, str]], episodes: int, store_dir: Path) -> Path:
    """Version 1's supervised episodes (the probe's first round, same seeds), collected once into an EpisodeStore."""
    from fleet.episodes import EpisodeStore
    from fleet.sim import make_env
    from research.learning_probe import collect

    done = store_dir / "COMPLETE"
    if done.exists():
        return store_dir
    store = EpisodeStore(store_dir)
    envs = {p: make_env(*p, seed=7, image_size=model.config.image_size) for p in pairs}
    try:
        collected, success, interventions = collect(model, pairs, envs, episodes, seed=5_001_000, label_all=False)
    finally:
        for env in envs.values():
            env.close()
    for episode in collected:
        store.write(episode)
    done.write_text(json.dumps({"episodes": len(collected), "autonomous": success, "interventions": interventions}))
    return store_dir


def train_arm(
    name: str,
    fraction: float | None,
    model: Any,
    wide: Any,
    fleet: Path | None,
    args: argparse.Namespace,
    interventions: float | None = None,
) -> dict:
    """One arm: version 1 (`model`) + `--updates` updates at `fraction` (None: demonstrations only), with
    `interventions` of the offline rows from the fleet's intervention steps (None: uniform over demonstrations and
    interventions, `ReplayConfig.intervention_fraction`), scored on `wide` along the way."""
    from rich.progress import Progress

    from fleet.episodes import EpisodeStore
    from fleet.policy.language import default_embedder
    from learner.config import PRESETS
    from learner.replay import ReplayBuffer
    from learner.rllib import VLALearner

    preset = PRESETS["online"]
    engine = VLALearner(preset.rllib, model_config=model.config)
    engine.set_state_dict(model.state_dict())  # the moving average starts there too
    config = preset.replay if fraction is None else dataclasses.replace(preset.replay, online_fraction=fraction)
    config = dataclasses.replace(config, intervention_fraction=interventions)
    replay = ReplayBuffer(config, model.config, embedder=default_embedder())
    replay.add_demos(args.cache / "demos")
    for episode in EpisodeStore(fleet).iter_episodes() if fleet is not None else ():
        replay.add_episode(episode)
    rng, rows, started = np.random.default_rng(0), [], time.monotonic()
    with Progress() as progress:
        bar = progress.add_task(f"{name}: updates", total=args.updates)
        for update in range(1, args.updates + 1):
            engine.update(replay.sample(preset.batch_size, rng))
            progress.advance(bar)
            if update % args.every == 0:
                score = wide.evaluate(engine.to_model(ema=True), embedder=default_embedder())
                rows.append({
                    "updates": update, "eval_mean": round(score.mean, 3),
                    "eval": {f"{t}/{e}": v for (t, e), v in score.success.items()},
                    "seconds": round(time.monotonic() - started, 1),
                })  # fmt: skip
                print(json.dumps({"arm": name, **{k: rows[-1][k] for k in ("updates", "eval_mean")}}), flush=True)
    return {
        "online_fraction": fraction,
        "intervention_fraction": interventions,
        "replay": replay.sizes(),
        "rounds": rows,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    from bench.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, arm in result["arms"].items():
        points = [(0, result["initial_eval"]), *((r["updates"], r["eval_mean"]) for r in arm["rounds"])]
        ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    n = result["config"]["eval_episodes_per_pair"]
    ax.set(xlabel="learner updates", ylabel=f"autonomous success ({n} held-out episodes per pair)", ylim=(0.5, 1.0))
    ax.set_title("learner batch mix: share of rows from the fleet's own steps", fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--fractions",
        nargs="*",
        default=["0.5", "0.25"],
        help="arms: F (online fraction) or F:I (and I of the offline rows from interventions)",
    )
    parser.add_argument("--no-demos-arm", dest="demos_arm", action="store_false")
    parser.add_argument("--episodes", type=int, default=130, help="supervised episodes per pair in the fleet round")
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--every", type=int, default=1000, help="score every N updates")
    parser.add_argument("--eval-episodes", type=int, default=50, help="held-out episodes per pair per score")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=ROOT / "research" / "replay_mix" / "replay_mix.json")
    args = parser.parse_args()

    import torch

    from bench.online import V1_DEMOS, version_one
    from fleet.policy.checkpoint import load_checkpoint
    from fleet.policy.language import default_embedder
    from learner.config import PRESETS
    from learner.gate import EvalGate
    from research.learning_probe import wide_eval

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    gate = PRESETS["online"].gate
    v1 = version_one(args.cache, gate.tasks, gate.embodiments, V1_DEMOS, 10_000)
    model = load_checkpoint(v1)
    pairs = EvalGate(gate).pairs()
    wide = wide_eval(gate, args.eval_episodes)
    initial = wide.evaluate(model, embedder=default_embedder()).mean
    fleet = fleet_round(model, pairs, args.episodes, args.cache / f"replay-mix-{args.episodes}")
    arms = {"demos": train_arm("demos", None, model, wide, None, args)} if args.demos_arm else {}
    for spec in args.fractions:
        online, _, interventions = spec.partition(":")
        name = f"online={online}" + (f",interventions={interventions}" if interventions else "")
        share = float(interventions) if interventions else None
        arms[name] = train_arm(name, float(online), model, wide, fleet, args, share)
    result = {
        "benchmark": "replay_mix",
        "command": " ".join(["research/replay_mix.py", *sys.argv[1:]]),
        "config": {"episodes_per_pair": args.episodes, "updates": args.updates, "eval_episodes_per_pair":
                   args.eval_episodes, "fleet_round": json.loads((fleet / "COMPLETE").read_text()), "v1": str(v1)},
        "initial_eval": round(initial, 3),
        "arms": arms,
        "final_eval": {name: arm["rounds"][-1]["eval_mean"] for name, arm in arms.items() if arm["rounds"]},
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("initial_eval", "final_eval", "seconds")}))


if __name__ == "__main__":
    main()
