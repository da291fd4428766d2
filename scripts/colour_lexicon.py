"""Write fleet/policy/colour_lexicon.json: colour names -> RGB, from the XKCD colour survey (via matplotlib).

Run once from the repository root when the lexicon should change (a model trained with it records the lexicon's
name, so a changed table is a new lexicon):

    .venv/bin/python scripts/colour_lexicon.py

The XKCD survey (Randall Munroe, 2010: 222,500 people naming 5 million colour samples) gives the 949 names people
use most for the colours they see, each with the sample most people named so. Kept: names of one to three words of
letters with a hue (chroma, the RGB's distance from grey, at least 0.1): achromatic names (white, grey, black)
point at no hue, and a policy grounds a colour word by hue.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from matplotlib import colors

OUT = Path(__file__).resolve().parents[1] / "fleet" / "policy" / "colour_lexicon.json"
MIN_CHROMA = 0.1


def main() -> None:
    lexicon: dict[str, list[float]] = {}
    for key, hex_value in sorted(colors.XKCD_COLORS.items()):
        name = key.removeprefix("xkcd:")
        rgb = np.array(colors.to_rgb(hex_value))
        if re.fullmatch(r"[a-z]+( [a-z]+){0,2}", name) and np.linalg.norm(rgb - rgb.mean()) >= MIN_CHROMA:
            lexicon[name] = [round(float(v), 4) for v in rgb]
    about = (
        "Colour names -> RGB in [0, 1] from the XKCD colour survey (matplotlib.colors.XKCD_COLORS), names of one to"
        f" three words with chroma >= {MIN_CHROMA}; written by scripts/colour_lexicon.py. fleet.policy.colours"
        " reads it to ground an instruction's colour word in the camera images."
    )
    rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps(rgb)}" for name, rgb in lexicon.items())
    OUT.write_text(f'{{\n"about": {json.dumps(about)},\n"colours": {{\n{rows}\n}}\n}}\n')
    print(f"{len(lexicon)} colour names -> {OUT}")


if __name__ == "__main__":
    main()
