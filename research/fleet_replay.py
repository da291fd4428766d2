"""The learner's update rule on the data one online arm's fleet really sent, offline: iterate on the learner's design
without running robots.

`bench/online.py` keeps each run's Kafka log (`<cache>/runs/<scenario>-<arm>-<repeat>-seed<n>/kafka`). This probe
starts a broker on a copy of it, reads every trajectory segment, correction, reward and review the way the learner
does (`learner.ingest.Ingest` into a `ReplayBuffer`, version 1's demonstrations beside them), then trains the
learner's engine from version 1 (the `online` preset, `--freeze`, `--lr`) with the replay settings of `--variant`,
scoring the moving average every `--every` updates on `--episodes` held-out episodes per pair of the scenario (seeds
2,000,000+, the gate's rules). The same data and seeds for every variant: their differences are the rule's.

Variants (changes to the preset's `ReplayConfig`):
  default            the online preset as the arm ran it
  no-demos           no demonstrations of version 1 in replay (the fleet's data alone)
  corrections-first  interventions up to 80% of the offline part (preset: uniform, capped at 50%)
  no-autonomous      corrections and demonstrations only (HG-DAgger)
  no-corrections     the fleet's autonomous steps and the demonstrations (no takeover's steps imitated)
  corrections-only   the takeovers' steps alone (no demonstrations, no autonomous steps)
  online-half        half of each batch from the fleet's steps (preset: a quarter)
  no-recoveries      takeovers that began mid-episode dropped (as if rejected in review); whole episodes the
                     operator drove ("struggling") kept

    python -m research.fleet_replay --run ~/.cache/fleet/bench-online/cameras-2/runs/high-start-full-1-seed20013 \
        --v1 research/online/v1-10k-flow4 --v1-demos ~/.cache/fleet/bench-online/cameras-2/demos \
        --variant default --updates 6000 --every 2000 --out research/fleet_replay/default.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SEEDS = 2_000_000
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no-demos": {},  # demonstrations are left out below, not by a replay setting
    "corrections-first": {"max_intervention_fraction": 0.8},
    "no-autonomous": {"autonomous": False},
    "no-corrections": {"intervention_fraction": 0.0},
    "corrections-only": {"autonomous": False},  # and no demonstrations (below)
    "online-half": {"online_fraction": 0.5},
    "no-recoveries": {},  # the mid-episode takeovers are dropped below, not by a replay setting
}


def read_stream(kafka_dir: Path, ingest: Any) -> int:
    """Start a broker on a copy of `kafka_dir` and hand every message of the learner's topics to `ingest`."""
    from fleet.schemas import SchemaError, decode
    from fleet.settings import Settings
    from fleet.stack.launcher import kafka_only
    from fleet.stack.process import isolated_env
    from fleet.transport import KafkaTransport, TransportConfig
    from learner.service import TOPICS

    home = Path(tempfile.mkdtemp(prefix="fleet-replay-"))
    shutil.copytree(kafka_dir, home / "kafka")
    env = isolated_env(home)
    settings = Settings(home=home, kafka_port=int(env["FLEET_KAFKA_PORT"]),
                        kafka_controller_port=int(env["FLEET_KAFKA_CONTROLLER_PORT"]))  # fmt: skip
    try:
        with kafka_only(settings, timeout_s=120):
            config = TransportConfig.from_settings(settings, client_id="fleet-replay")
            transport = KafkaTransport(config, create_topics=False)
            consumer = transport.consumer(group_id="fleet-replay", topics=TOPICS)  # a new group: from the beginning
            handled, idle, give_up = 0, 0, time.monotonic() + 300
            while (idle < 10 or not handled) and time.monotonic() < give_up:  # ten empty polls after data: all read
                records = consumer.poll(timeout_s=1.0, max_records=500)
                idle = 0 if records else idle + 1
                for record in records:
                    try:
                        ingest.handle(decode(record.value))
                        handled += 1
                    except SchemaError:
                        continue
            consumer.close()
            transport.close()
            return handled
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _recovery(episode: Any, t: int) -> bool:
    """Step `t` of a stored episode belongs to a takeover that began after the episode's first step."""
    if episode is None or not episode.intervention[t]:
        return False
    return not episode.intervention[0]  # whole-episode drives start at step 0; a mid-episode takeover never does


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a kept run: the folder holding kafka/")
    parser.add_argument("--v1", type=Path, required=True)
    parser.add_argument("--v1-demos", type=Path, default=None)
    parser.add_argument("--max-demos", type=int, default=300, help="version 1's demonstrations in replay (the arm's)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="default")
    parser.add_argument("--scenario", default="high-start")
    parser.add_argument("--tasks", default="pick,push,place")
    parser.add_argument("--embodiments", default="panda,kuka")
    parser.add_argument("--freeze", default="perception", choices=("none", "encoder", "perception"))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--updates", type=int, default=6000)
    parser.add_argument("--every", type=int, default=2000)
    parser.add_argument("--episodes", type=int, default=20, help="held-out episodes per pair per score")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    from fleet.policy.checkpoint import load_checkpoint
    from fleet.policy.language import default_embedder
    from learner.config import PRESETS
    from learner.features import FrozenFeatures
    from learner.gate import EvalGate, GateConfig
    from learner.ingest import Ingest
    from learner.replay import ReplayBuffer
    from learner.rllib import VLALearner

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    preset = PRESETS["online"]
    model = load_checkpoint(args.v1)
    rllib = dataclasses.replace(preset.rllib, freeze=args.freeze, lr=args.lr)
    engine = VLALearner(rllib, model_config=model.config)
    engine.set_state_dict(model.state_dict())
    embedder = default_embedder()
    features = FrozenFeatures(model, args.freeze) if args.freeze != "none" else None
    replay_config = dataclasses.replace(preset.replay, **VARIANTS[args.variant])
    replay = ReplayBuffer(replay_config, model.config, embedder=embedder, features=features)
    demos = 0
    if args.v1_demos is not None and args.variant not in ("no-demos", "corrections-only"):
        demos = replay.add_demos(args.v1_demos, limit=args.max_demos)
    ingest = Ingest(replay)
    messages = read_stream(args.run / "kafka", ingest)
    if args.variant == "no-recoveries":  # one pass over every step (rejecting each correction would be one each)
        dropped = replay.drop_where(lambda key, t: _recovery(replay.episode(*key), t))
        print(f"dropped {dropped} steps of mid-episode takeovers", flush=True)
    print(f"replay: {replay.sizes()} ({messages} messages, {ingest.episodes_added} fleet episodes, {demos} demos)",
          flush=True)  # fmt: skip
    tasks, embodiments = tuple(args.tasks.split(",")), tuple(args.embodiments.split(","))
    gate = EvalGate(GateConfig(tasks=tasks, embodiments=embodiments, scenario=args.scenario, episodes=args.episodes,
                               seed_offset=SEEDS))  # fmt: skip
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []

    def score(updates: int) -> None:
        result = gate.evaluate(engine.to_model(ema=True), embedder=embedder)
        rows.append({"updates": updates, "mean": round(result.mean, 3),
                     "success": {f"{t}/{e}": round(v, 3) for (t, e), v in result.success.items()}})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    score(0)
    done = 0
    while done < args.updates:
        for _ in range(min(args.every, args.updates - done)):
            engine.update(replay.sample(preset.batch_size, rng))
            done += 1
        score(done)
    engine.shutdown()
    result = {
        "probe": "fleet_replay",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "replay": replay.sizes(),
        "fleet_episodes": ingest.episodes_added,
        "rows": rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
