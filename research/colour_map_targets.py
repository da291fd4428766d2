"""Does the colour map light the named cube? Held-out colour words on the demonstrations' first front-camera frames.

For every 7th demonstration (150), each palette colour word of its instruction and the held-out words for that
colour (fleet/sim/language/held_out.json) go through `fleet.policy.colours.colour_map`; the pixels it lights above
0.5 should have the target's hue. Prints, per word, on how many frames they do:

    PYTHONPATH=. .venv/bin/python -m research.colour_map_targets [--demos DIR]
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np

DEMOS = Path.home() / ".cache" / "fleet" / "bench-online" / "cameras-2" / "demos"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", type=Path, default=DEMOS)
    args = parser.parse_args()

    import torch

    from fleet.episodes import EpisodeStore
    from fleet.policy.colours import colour_map, hue_distance, split_colour
    from fleet.sim.language import held_out_data
    from fleet.sim.tasks import COLORS

    words = held_out_data()["color_words"]
    store = EpisodeStore(args.demos)
    right: collections.Counter[str] = collections.Counter()
    frames: collections.Counter[str] = collections.Counter()
    for robot_id, episode_id in store.list()[::7][:150]:
        episode = store.read(robot_id, episode_id)
        named = [c for c in COLORS if f" {c} " in f" {episode.meta.instruction} "]
        if not named:
            continue
        image = torch.from_numpy(episode.frames["front"][0]).permute(2, 0, 1)[None].float() / 255
        for word in [named[0], *words[named[0]]]:
            lit = colour_map(image, torch.from_numpy(split_colour(f"the {word} cube")[1])[None])[0, 0].numpy() > 0.5
            mean = image[0].permute(1, 2, 0).numpy()[lit].mean(0) if lit.any() else None
            nearest = min(COLORS, key=lambda c: hue_distance(tuple(mean), COLORS[c])) if mean is not None else None
            frames[word] += 1
            right[word] += nearest == named[0]
    print({word: f"{right[word]}/{frames[word]}" for word in frames})
    print("mean share:", round(float(np.mean([right[w] / frames[w] for w in frames])), 3))


if __name__ == "__main__":
    main()
