"""Does a version act as well with cheaper inference? Two knobs: the flow-matching steps (the action expert
integrates its velocity field with `VLAConfig.flow_steps` Euler steps; on this CPU ten were ~70% of one chunk's
inference) and how many actions of a chunk run before re-planning (`EXECUTE_STEPS`: 2 means a chunk every 2 control
steps, 5 a second per robot). Scores one checkpoint, its weights unchanged, for each combination with the gate's
rules on the same held-out seeds (paired), per scenario.

    PYTHONPATH=. .venv/bin/python -m research.flow_steps --v1 <checkpoint> --steps 10,5,3 --execute 2 \
        --scenarios high-start,nominal --episodes 40 --out flow_steps.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--v1", type=Path, required=True)
    parser.add_argument("--steps", default="10,5,3")
    parser.add_argument("--execute", default="2", help="actions run per chunk before re-planning, comma-separated")
    parser.add_argument("--scenarios", default="high-start,nominal")
    parser.add_argument("--tasks", default="pick,push,place")
    parser.add_argument("--embodiments", default="panda,kuka")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    from fleet.policy.checkpoint import load_checkpoint
    from fleet.policy.language import default_embedder
    from fleet.policy.model import VLAModel
    from learner import gate
    from research.scenario_scan import held_out_score

    torch.set_num_threads(args.threads)
    base, embedder = load_checkpoint(args.v1), default_embedder()
    out: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    for scenario in args.scenarios.split(","):
        for steps, execute in ((int(s), int(e)) for s in args.steps.split(",") for e in args.execute.split(",")):
            gate.EXECUTE_STEPS = execute  # the gate's chunk schedule (a module constant, shared with the robots)
            model = VLAModel(dataclasses.replace(base.config, flow_steps=steps))
            model.load_state_dict(base.state_dict())
            key = f"{scenario}/{steps}" if execute == 2 else f"{scenario}/{steps}/execute{execute}"
            out[key] = held_out_score(model.eval(), embedder, scenario, args)
            print(key, json.dumps(out[key]), flush=True)
            args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
