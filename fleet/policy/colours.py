"""Colour words grounded by hue: a shipped lexicon of colour names, and the camera pixels that have the named hue.

A frozen sentence encoder knows little about colour: in all-MiniLM-L6-v2 "pick up the crimson cube" is as near the
purple sentence as the red one, and no projection of the pooled vector recovers a hue that is not in it
(research/colour_words_minilm.py). A model trained with `VLAConfig.colour_lexicon` therefore reads an instruction
in two parts (`ColourLexiconEmbedder`):

- what to do: the sentence embedding of the instruction with its first colour name taken out ("pick up the cube"),
- which object: that name's RGB from `colour_lexicon.json` (902 names of the XKCD colour survey), which the image
  encoder turns into one more input channel, `colour_map`: how strongly each pixel has the named hue.

A colour name it never trained on then means the hue people call by that name, and an object painted a colour no
demonstration had lights up in the map as the named one; the map is the same kind of picture either way.

A trained model's inputs depend on the lexicon file and on this module's constants: change either and give the
encoder a new name (`fleet.policy.config.COLOUR_LEXICON_SUFFIX`), so that older checkpoints are refused rather
than shown another picture than the one they learned on.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from fleet.policy.config import COLOUR_FEATURES

if TYPE_CHECKING:  # the lexicon is read without torch (the scene check of fleet.sim.grounding)
    from torch import Tensor

LEXICON = "colour_lexicon.json"
# How sharply the map prefers the named hue: a pixel whose chroma points 25 degrees away (cos 0.9, e.g. red pixels
# for "orange") weighs exp(-0.1 / 0.05) ~ 14% of a pixel of the hue itself, one 60 degrees away (the palette's
# nearest neighbours) 0.005%; a name 30 degrees off its colour ("azure" for the palette's blue) still finds it.
HUE_SHARPNESS = 0.05
# Chroma (distance of a pixel's RGB from its grey level) below which a pixel has no hue: the greyish table (0.035,
# +-0.04 a channel from episode to episode), the robot, shadows and sensor noise. The palette's cubes have 0.2-0.5.
MIN_CHROMA = 0.1
# The weight (chroma past MIN_CHROMA x hue factor) below which an image is taken to show nothing of the named hue: a
# saturated cube of the hue weighs ~0.2-0.4, one 30 degrees off ~0.01. Dividing by at least this keeps a camera that
# does not see the object from lighting up its best poor match.
MATCH_FLOOR = 0.003
_MAX_WORDS = 3


@functools.cache
def lexicon() -> Mapping[str, tuple[float, float, float]]:
    """Colour name -> RGB in [0, 1] (the shipped `colour_lexicon.json`), read once."""
    data = json.loads(resources.files(__package__).joinpath(LEXICON).read_text())
    return MappingProxyType({name: (float(r), float(g), float(b)) for name, (r, g, b) in data["colours"].items()})


def find_colour(text: str) -> tuple[str, int, int] | None:
    """The first colour name of `text` (longest name where several start at the same word) and its character span
    in `text`; None when it names no colour of the lexicon."""
    names = lexicon()
    words = list(re.finditer(r"[a-z]+", text.lower()))
    for i in range(len(words)):
        for n in range(min(_MAX_WORDS, len(words) - i), 0, -1):
            span = words[i : i + n]
            name = " ".join(w.group() for w in span)
            if name in names:
                return name, span[0].start(), span[-1].end()
    return None


def chroma(rgb: tuple[float, ...]) -> np.ndarray:
    """An RGB colour minus its grey level: its direction is the hue, its length how colourful it is (0: grey)."""
    value = np.asarray(rgb, dtype=np.float64)
    return value - value.mean()


def hue_distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """1 - the cosine between two RGB colours' chroma directions (0: the same hue, 1: 90 degrees apart, 2: opposite);
    2 when either is grey."""
    ca, cb = chroma(a), chroma(b)
    size = float(np.linalg.norm(ca) * np.linalg.norm(cb))
    return 1.0 - float(ca @ cb) / size if size > 1e-9 else 2.0


def split_colour(text: str) -> tuple[str, np.ndarray]:
    """(the instruction without its first colour name, float32 (COLOUR_FEATURES,): that colour's RGB and 1, or
    zeros when it names none)."""
    found = find_colour(text)
    if found is None:
        return text, np.zeros(COLOUR_FEATURES, dtype=np.float32)
    name, start, end = found
    rest = " ".join((text[:start] + text[end:]).split())
    return rest, np.array([*lexicon()[name], 1.0], dtype=np.float32)


def colour_map(images: Tensor, colour: Tensor) -> Tensor:
    """(N, 1, H, W) in [0, 1]: how strongly each pixel of `images` (N, 3, H, W, RGB in [0, 1]) has the hue of
    `colour` (N, COLOUR_FEATURES), scaled so the image's best match is 1; zeros for rows that name no colour.

    A pixel's chroma (its RGB minus its grey level) is projected on the named colour's chroma direction: the
    projection grows with the pixel's saturation and brightness (past MIN_CHROMA: grey table, robot and shadows are
    0), and the
    factor exp((cos - 1) / HUE_SHARPNESS) keeps only hues near the named one. Dividing by the image's maximum makes
    "the pixels nearest the named hue" the same picture whether the name is exact ("red" on a red cube) or near
    ("crimson", "navy" on the palette's red and blue), unless nothing in view has the hue (`MATCH_FLOOR`).
    """
    import torch

    rgb, named = colour[:, :3].float(), colour[:, 3:4].float()
    chroma = images - images.mean(dim=1, keepdim=True)
    target = rgb - rgb.mean(dim=1, keepdim=True)
    target = target / target.norm(dim=1, keepdim=True).clamp_min(1e-3)
    along = (chroma * target[:, :, None, None]).sum(dim=1, keepdim=True)
    cos = along / chroma.norm(dim=1, keepdim=True).clamp_min(1e-3)
    weight = (along - MIN_CHROMA).clamp_min(0.0) * torch.exp((cos - 1.0) / HUE_SHARPNESS)
    weight = weight / weight.amax(dim=(2, 3), keepdim=True).clamp_min(MATCH_FLOOR)
    return weight * (named > 0.5).to(weight.dtype)[:, :, None, None]
