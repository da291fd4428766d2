"""Run with FLEET_TASK_PLUGINS=tests.sim.toy_task (tests/sim/test_task_plugin.py): the plugin's task in the places a
task is used, none of which names it, printing one JSON line of what happened."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from fleet.episodes import EpisodeStore
from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel
from fleet.sim import TASKS, collect_demos, make_env
from learner.gate import EvalGate, GateConfig
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder


def main() -> None:
    import ray

    out: dict[str, object] = {"registered": "grasp" in TASKS}
    with tempfile.TemporaryDirectory() as tmp:  # the scripted expert (demos, supervisor) does the task
        store = EpisodeStore(Path(tmp))
        collect_demos(store, task="grasp", embodiment="panda", episodes=2, seed=0)
        out["demos"] = [store.read_meta(r, e).success for r, e in store.list()]
    torch.manual_seed(0)
    gate = EvalGate(GateConfig(tasks=("grasp",), embodiments=("panda",), episodes=1, max_steps=8))
    result = gate.evaluate(VLAModel(debug_model_config(text_encoder=FAKE_ENCODER)), embedder=HashEmbedder())
    out["gate"] = sorted(f"{t}/{e}" for t, e in result.success)

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

    @ray.remote
    def instruction_in_a_worker() -> str:  # a Ray worker process, as each simulated robot is
        env = make_env("grasp", "kuka", seed=3)
        obs, _ = env.reset(seed=3)
        env.close()
        return str(obs["instruction"])

    out["ray_worker"] = ray.get(instruction_in_a_worker.remote())
    ray.shutdown()
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
