"""Loads a dataset with the `lerobot` package itself and prints every value it returns, as JSON (run with the
interpreter of an environment holding only lerobot: tests/data/test_lerobot_export.py).

    python lerobot_driver.py DATASET_DIR
"""

from __future__ import annotations

import json
import sys

import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def main(root: str) -> None:
    # PyAV decodes with the FFmpeg its wheel bundles; torchcodec (lerobot's first choice) needs FFmpeg's shared
    # libraries on the system, which a robot-learning team installs and this test machine may not have.
    dataset = LeRobotDataset("local/fleet-export", root=root, video_backend="pyav")
    frames = []
    for i in range(len(dataset)):
        item = dataset[i]
        row = {}
        for key, value in item.items():
            if key.startswith("observation.images."):  # CHW float in [0, 1] -> HWC uint8, as it was recorded
                value = (value * 255).round().to(torch.uint8).permute(1, 2, 0)
            row[key] = value.tolist() if hasattr(value, "tolist") else value
        frames.append(row)
    print(json.dumps({"len": len(dataset), "episodes": dataset.num_episodes, "fps": dataset.fps, "frames": frames}))


if __name__ == "__main__":
    main(sys.argv[1])
