"""Does the policy steer by what it sees? Its response to a small offset at the point where the expert lines up.

research/failures.py found version 1's failures are stalls 1-4 cm off the cube: the tool comes down beside it and
does not correct. This measures why, per task × embodiment, on held-out seeds (the probes' wide eval):

- **servo gain**: the tool is put at the expert's line-up point (over the cube at hover height for pick and place,
  behind the block at hover height for push), then off by -2..+2 cm in x (and in y, but not for push, whose y is
  the approach), and held one step with the gripper as the expert would hold it. The slope of the policy's action
  (the mean of a fresh chunk's first two steps) over the offset, divided by the expert's slope: 1 steers like the
  expert, 0 ignores the offset.
- **encoder probe**: whether the offset is in the features at all. A ridge regression from the image encoder's
  keypoint token (all cameras), and one from the trunk's mean token, to the xy offset (uniform in ±3 cm), fitted
  on half the seeds; R² and mean error on the other half.

Session 17's result (research/servo/servo.json, version 1 pre-trained again with the wrist camera behind the hand,
looking past the fingertips): mean gain 0.15 (pick/place x 0.07-0.12, y 0.15-0.24; push/panda 0.26, push/kuka
0.05), keypoint R² 0.93-0.98 (push y 0.79-0.86). push/panda's wrist camera now sees the block past the closed
fingers (its R² from none to 0.96 / 0.86, its gain from 0.00 to 0.26), and the pair's success went 0.62 -> 0.90
(research/failures.py); elsewhere the policy still mostly comes down where it was heading.

Session 16's result (version 1 now 20k BC steps, the first wrist camera): mean gain 0.183 (pick/place x
0.22-0.34, y 0.09-0.29; push/kuka 0.03, push/panda 0.00), keypoint R² 0.97-0.99 as before (push/panda none).
Twice the steps on the same demonstrations do not teach the policy to steer either.

Session 15's result (version 1 at 10k steps): the encoder sees the offset and the action head does
not use it. The keypoint token gives the offset with held-out R² 0.97-0.99 (0.85 for push/kuka's y), the trunk's
mean token 0.88-0.97, yet the policy's gain is 0.18-0.24 on pick and place (x; y 0.11-0.15), 0.09 on push/kuka and
0.00 on push/panda (mean 0.147): it comes down where it was heading. Push on panda is blind besides: the expert
pushes with the fingers closed, and the wrist camera, 6 cm above the fingertips, then sees nothing but the two
fingers (R² below 0; research/servo/servo_wrist.png, row 3). Its 0.52-0.70 success is the worst pair's.

What moved the gain (scratch scripts in /tmp, not in the tree; wide eval = 50 held-out episodes per pair):
- Fine-tuning version 1 for 2,000 updates did not, whatever the data: 900 extra demonstrations that start at the
  line-up point ±3 cm (the expert's labels are then exactly these responses; push/kuka still answered +0.19 /
  -0.08 at -2 / +2 cm where the expert says ±0.66, and fitted even its own training frames with slope 0.29),
  random 1-2 step kicks mid-demonstration, or 3 cm Gaussian noise on the proprio's xy in training. Wide eval
  0.79-0.86 either way (the noisy proprio 0.813 / 0.86 after 1,000 / 2,000 updates, the demonstrations
  alone 0.807 / 0.84).
- Pre-training from scratch (10k steps) on the demonstrations plus those 900 line-up starts, with 2 cm noise on
  the proprio's xy, did: mean gain 0.369 (pick/place x 0.43-0.49, push/kuka 0.44; push/panda still 0.00) and wide
  eval 0.823 against version 1's 0.79 (push/kuka 0.88, place 0.86 / 0.84; push/panda 0.52). One run each: with
  ~0.023 standard error on the mean that is no proven gain in success, but the gain is 2.5x version 1's.
  At 20k steps the same recipe gives mean gain 0.475 (pick/place/push-kuka 0.47-0.56, push/panda 0.03) and wide
  eval 0.833, against 0.82 for 20k steps on the demonstrations alone: the gain triples, success barely moves.
- The same recipe with the panda's wrist camera 10 cm above the fingertips (at the hand, where the closed fingers
  fill only the middle of the view): wide eval 0.817, push/panda 0.68 but pick/panda 0.88 and place/panda 0.80
  (were 0.96 / 0.86), and the kuka pairs, whose images did not change, moved by up to 0.14 between the two runs
  (run-to-run noise of one pre-training). No measurable gain, so the camera stayed where it was until session 17,
  which moved it behind the hand (see above).
Command:

    PYTHONPATH=. .venv/bin/python -m research.servo
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OFFSETS = (-0.02, -0.01, 0.0, 0.01, 0.02)  # metres off the line-up point, for the gain
PROBE_RANGE = 0.03  # the probe's offsets are uniform in ± this, metres
RIDGE = 10.0  # the probe's ridge penalty (240 samples, half to fit, 256 keypoint features)


def lineup_point(state: Any) -> np.ndarray:
    """Where the expert lines the tool up before it comes down: over the target cube at hover height, or for push
    behind the block (the expert's start of the push) at hover height."""
    from fleet.sim.experts import HOVER, push_start

    if state.task == "push":
        return np.array([*push_start(state), HOVER])
    obj = state.objects[state.target]
    return np.array([obj.position[0], obj.position[1], obj.position[2] + HOVER])


def offset_observation(env: Any, expert: Any, seed: int, offset: np.ndarray) -> Any:
    """The observation with the tool `offset` (xyz, metres) off the line-up point of episode `seed`, after one step
    held still with the gripper as the expert wants it there (push on panda pushes with closed fingers)."""
    env.reset(seed=seed)
    env.place_tool(lineup_point(env.privileged_state()) + offset)
    hold = np.zeros(env.embodiment.action_dim, dtype=np.float32)
    hold[-1] = expert.act_on_state(env.privileged_state())[-1]
    obs, *_ = env.step(hold)
    return obs


def wrist_views(env: Any, expert: Any, seed: int) -> np.ndarray:
    """The wrist camera at the line-up point and 2 cm either side in x, side by side (uint8 (S, 3S, 3))."""
    views = [
        offset_observation(env, expert, seed, np.array([dx, 0.0, 0.0]))["images"]["wrist"] for dx in (-0.02, 0, 0.02)
    ]
    return np.concatenate(views, axis=1)


def servo_gain(env: Any, expert: Any, policy: Any, seeds: range, axes: tuple[int, ...]) -> dict[str, Any]:
    """Per axis: the policy's and the expert's mean action at each offset, their slopes and the ratio."""
    out: dict[str, Any] = {}
    for axis in axes:
        mine, theirs = np.zeros((len(seeds), len(OFFSETS))), np.zeros((len(seeds), len(OFFSETS)))
        for i, seed in enumerate(seeds):
            for j, size in enumerate(OFFSETS):
                offset = np.zeros(3)
                offset[axis] = size
                obs = offset_observation(env, expert, seed, offset)
                policy.reset()
                mine[i, j] = float(np.asarray(policy.infer(obs))[:2, axis].mean())
                theirs[i, j] = float(expert.act_on_state(env.privileged_state())[axis])
        x = np.array(OFFSETS) * 100  # cm
        slope, expert_slope = float(np.polyfit(x, mine.mean(0), 1)[0]), float(np.polyfit(x, theirs.mean(0), 1)[0])
        out["xy"[axis]] = {
            "policy": [round(v, 3) for v in mine.mean(0)],
            "expert": [round(v, 3) for v in theirs.mean(0)],
            "policy_slope_per_cm": round(slope, 3),
            "expert_slope_per_cm": round(expert_slope, 3),
            "gain": round(slope / expert_slope, 3),
        }
    return out


def encoder_probe(env: Any, expert: Any, policy: Any, seeds: range, rng: np.random.Generator) -> dict[str, Any]:
    """Held-out R² and mean error (cm) of ridge regressions from the keypoint token / mean trunk token to the offset."""
    import torch

    model = policy.model
    features: dict[str, list[np.ndarray]] = {"keypoints": [], "trunk": []}
    targets = []
    for seed in seeds:
        for _ in range(4):
            offset = np.array([*rng.uniform(-PROBE_RANGE, PROBE_RANGE, 2), 0.0])
            batch = policy.make_batch(offset_observation(env, expert, seed, offset))
            with torch.inference_mode():
                _, image_tokens = model.tokens(batch)
                memory = model.encode(batch)
            features["keypoints"].append(image_tokens[0, :, -1].flatten().numpy())
            features["trunk"].append(memory[0].mean(0).numpy())
            targets.append(offset[:2] * 100)
    y = np.array(targets)
    half = len(y) // 2
    out = {}
    for name, rows in features.items():
        raw = np.array(rows)
        scale = raw[:half].std(0) + 1e-6  # standardized on the fitting half, so one penalty suits every feature
        f = np.c_[(raw - raw[:half].mean(0)) / scale, np.ones(len(raw))]
        w = np.linalg.solve(f[:half].T @ f[:half] + RIDGE * np.eye(f.shape[1]), f[:half].T @ y[:half])
        pred, truth = f[half:] @ w, y[half:]
        r2 = 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
        out[name] = {
            "r2": [round(float(v), 3) for v in r2],
            "mean_error_cm": [round(float(v), 2) for v in np.abs(pred - truth).mean(0)],
        }
    return out


def main() -> None:
    from learning_probe import WIDE_SEEDS, studied_arguments, studied_policy  # WIDE_SEEDS: the wide eval's seeds

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="held-out episodes per pair for the gain")
    parser.add_argument("--probe-seeds", type=int, default=60, help="held-out episodes per pair for the probe")
    parser.add_argument("--out", type=Path, default=ROOT / "research" / "servo" / "servo.json")
    studied_arguments(parser)
    args = parser.parse_args()

    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from fleet.sim import make_env
    from fleet.sim.experts import make_expert

    started = time.monotonic()
    checkpoint, policy, pair_list = studied_policy(args.checkpoint, args.cache, args.threads)
    model = policy.model

    pairs: dict[str, Any] = {}
    views = []
    for task, embodiment in track(pair_list, description="line-up points"):
        env = make_env(task, embodiment, seed=WIDE_SEEDS, image_size=model.config.image_size)
        expert = make_expert(env)
        try:
            axes = (0,) if task == "push" else (0, 1)
            gain = servo_gain(env, expert, policy, range(WIDE_SEEDS, WIDE_SEEDS + args.seeds), axes)
            probe_seeds = range(WIDE_SEEDS, WIDE_SEEDS + args.probe_seeds)
            probe = encoder_probe(env, expert, policy, probe_seeds, np.random.default_rng(0))
            if "wrist" in env.cameras:
                views.append(wrist_views(env, expert, WIDE_SEEDS))
        finally:
            env.close()
        pairs[f"{task}/{embodiment}"] = {"gain": gain, "probe": probe}
    gains = [axis["gain"] for pair in pairs.values() for axis in pair["gain"].values()]
    result = {
        "benchmark": "servo",
        "command": " ".join(["research/servo.py", *sys.argv[1:]]),
        "config": {"checkpoint": str(checkpoint), "seeds": args.seeds, "probe_seeds": args.probe_seeds,
                   "offsets_cm": [o * 100 for o in OFFSETS], "probe_range_cm": PROBE_RANGE * 100,
                   "seed_offset": WIDE_SEEDS},
        "mean_gain": round(float(np.mean(gains)), 3),
        "pairs": pairs,
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if views:  # one row per pair (in the table's order), upscaled 3x
        import imageio.v3 as iio

        grid = np.concatenate(views, axis=0).repeat(3, axis=0).repeat(3, axis=1)
        iio.imwrite(args.out.with_name(args.out.stem + "_wrist.png"), grid)

    table = Table(title=f"servo gain at the line-up point (policy slope ÷ expert slope), {args.seeds} seeds per pair")
    for column in ("pair", "gain x", "gain y", "keypoints R² x, y", "trunk R² x, y"):
        table.add_column(column)
    for name, pair in pairs.items():
        gain, probe = pair["gain"], pair["probe"]
        r2 = {k: ", ".join(f"{v:.2f}" for v in probe[k]["r2"]) for k in ("keypoints", "trunk")}
        gain_y = f"{gain['y']['gain']:.2f}" if "y" in gain else "-"
        table.add_row(name, f"{gain['x']['gain']:.2f}", gain_y, r2["keypoints"], r2["trunk"])
    Console().print(table)
    print(json.dumps({"mean_gain": result["mean_gain"], "seconds": result["seconds"]}))


if __name__ == "__main__":
    main()
