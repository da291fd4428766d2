"""Instruction sets for evaluating language the policy was not trained on, and paraphrases for training on more.

An `InstructionSet` says every episode's instruction another way: per task, phrasings (templates with the task's
slots, e.g. "could you pick the {color} cube up") and, optionally, other words for slot values ({"red": ["crimson",
"scarlet"]}). Episode k of a task uses phrasing k mod n and, for each slot value with other words, word k mod m; the
scene is the one the episode's seed gives, so an instruction set changes what is said and nothing else.

`held_out.json` (shipped here) holds the phrasings and colour words no training list may contain; two sets come
from it by name: "held-out" (its phrasings, the palette's own colour names) and "held-out-colours" (the task's own
training phrasings, its colour words). A file of one's own: `{"phrasings": {"pick": [...]}, "color_words": {...}}`.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet.episodes import Episode

HELD_OUT = "held_out.json"
TRAINING = "training.json"  # more phrasings for training only (instruction augmentation)
NAMED = ("held-out", "held-out-colours", "held-out-object")


@dataclass(frozen=True)
class InstructionSet:
    """Other ways of saying each task's instruction; see the module docstring."""

    name: str
    phrasings: dict[str, tuple[str, ...]] = field(default_factory=dict)  # task -> templates (absent: the task's own)
    words: dict[str, tuple[str, ...]] = field(default_factory=dict)  # slot value -> other words for it
    new_object: dict[str, Any] | None = None  # {"name", "rgb"}: the target in a colour no demonstration had

    def options(self, task: str, episode: int, own: tuple[str, ...]) -> dict[str, Any]:
        """`Env.reset` options for episode `episode` of `task` (`own`: the task's training phrasings, used when the
        set has none for it)."""
        templates = self.phrasings.get(task) or own
        options: dict[str, Any] = {
            "phrasing": templates[episode % len(templates)],
            "words": {value: others[episode % len(others)] for value, others in self.words.items()},
        }
        if self.new_object is not None:
            options["new_object"] = self.new_object
        return options


def held_out_data() -> dict[str, Any]:
    """The shipped held-out phrasings and colour words."""
    return json.loads(resources.files(__package__).joinpath(HELD_OUT).read_text())


def load_instruction_set(source: str | Path) -> InstructionSet:
    """A named set ("held-out", "held-out-colours") or a JSON file; ValueError with the reason for a bad one."""
    if str(source) in NAMED:
        held, name = held_out_data(), str(source)
        part = {"held-out": "phrasings", "held-out-colours": "color_words", "held-out-object": "new_object"}[name]
        data = {part: held[part]}
    else:
        path = Path(source)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"instruction set {path}: cannot read it as JSON ({e})") from None
        name = path.stem
    phrasings, words, new = data.get("phrasings", {}), data.get("color_words", {}), data.get("new_object")
    if not isinstance(phrasings, dict) or not all(
        isinstance(v, list) and v and all(isinstance(t, str) for t in v) for v in phrasings.values()
    ):
        raise ValueError(f"instruction set {name}: 'phrasings' must map each task to a non-empty list of templates")
    if not isinstance(words, dict) or not all(
        isinstance(v, list) and v and all(isinstance(w, str) for w in v) for v in words.values()
    ):
        raise ValueError(f"instruction set {name}: 'color_words' must map each colour to a non-empty list of words")
    if new is not None and not (isinstance(new, dict) and isinstance(new.get("name"), str) and new["name"].isalpha()
                                and isinstance(new.get("rgb"), list) and len(new["rgb"]) == 3):  # fmt: skip
        raise ValueError(f'instruction set {name}: \'new_object\' must be {{"name": word, "rgb": [r, g, b]}}')
    if not phrasings and not words and new is None:
        raise ValueError(f"instruction set {name}: give 'phrasings', 'color_words', 'new_object' or some of them")
    return InstructionSet(name, {t: tuple(v) for t, v in phrasings.items()}, {c: tuple(v) for c, v in words.items()},
                          new)  # fmt: skip


@functools.cache
def training_phrasings() -> Mapping[str, tuple[str, ...]]:
    """Per task, the shipped training-only phrasings (`training.json`), read once (augmentation asks per episode)."""
    data = json.loads(resources.files(__package__).joinpath(TRAINING).read_text())
    return MappingProxyType({task: tuple(templates) for task, templates in data["phrasings"].items()})


@functools.cache
def _pattern(template: str) -> re.Pattern[str]:
    """A regex matching `template` filled in, one named group per slot."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[a-z]+)" for i, p in enumerate(parts))
    return re.compile(regex + "$")


def slots_of(task: str, instruction: str, own: tuple[str, ...]) -> dict[str, str] | None:
    """The slot values of an instruction said with one of the task's templates (`own` or the training bank);
    None when no template says it (an operator's free text: it is left as it is)."""
    for template in (*own, *training_phrasings().get(task, ())):
        match = _pattern(template).match(instruction.strip().lower())
        if match is not None:
            return match.groupdict()
    return None


@functools.cache
def training_colour_names() -> Mapping[str, tuple[str, ...]]:
    """Per palette colour, other names for it to train on: the colour lexicon's names (`fleet.policy.colours`) whose
    hue is within ~18 degrees of the palette colour's (cosine of their chroma directions >= 0.95) and saturated
    (chroma >= 0.15). No held-out colour word, nor the new object's colour, may be trained on: names with one of
    them as a word, or a word spelt nearly so ("liliac" for "lilac"), are left out."""
    import difflib

    import numpy as np

    from fleet.policy.colours import chroma, hue_distance, lexicon
    from fleet.sim.tasks import COLORS

    data = held_out_data()
    held = {w for words in data["color_words"].values() for w in words} | {data["new_object"]["name"]}

    def near_held(word: str) -> bool:
        return any(difflib.SequenceMatcher(None, word, h).ratio() >= 0.8 for h in held)

    def usable(name: str, rgb: tuple[float, ...], colour: tuple[float, ...]) -> bool:
        saturated = float(np.linalg.norm(chroma(rgb))) >= 0.15
        return saturated and hue_distance(rgb, colour) <= 0.05 and not any(near_held(w) for w in name.split())

    out = {colour: tuple(n for n, v in lexicon().items() if usable(n, v, rgb)) for colour, rgb in COLORS.items()}
    return MappingProxyType(out)


def paraphrases(
    task: str,
    instruction: str,
    own: tuple[str, ...],
    count: int,
    seed: int,
    *,
    colour_names: Mapping[str, tuple[str, ...]] | None = None,
) -> list[str]:
    """`instruction` and up to `count` other ways of saying it (same slot values, other templates of the task's own
    and the training bank, drawn with `seed`); only the instruction itself when its slots cannot be read.
    `colour_names` (palette colour -> other names, `training_colour_names`): half the other ways also name the
    target's colour another way."""
    import numpy as np

    values = slots_of(task, instruction, own)
    if values is None or count <= 0:
        return [instruction]
    said = instruction.strip().lower()
    templates = sorted({*own, *training_phrasings().get(task, ())})
    others = sorted({t.format(**values) for t in templates} - {said})
    rng = np.random.default_rng(seed)
    picked = [others[int(i)] for i in rng.permutation(len(others))[:count]]
    names = (colour_names or {}).get(values.get("color", ""), ())
    if names:  # the same templates, some with another name for the colour
        for i in range(len(picked)):
            if rng.random() < 0.5:
                template = templates[int(rng.integers(len(templates)))]
                picked[i] = template.format(**{**values, "color": names[int(rng.integers(len(names)))]})
    return [instruction, *picked]


def paraphrased(count: int, seed: int, *, colour_names: bool = False) -> Callable[[Episode], list[str]]:
    """Each episode's instruction and `count` other ways of saying it (`paraphrases`, with its task's own phrasings),
    drawn per episode from `seed` and its id: a resumed run, or another process, says them the same way.
    `colour_names`: some name the target's colour another way (`training_colour_names`), for a model that grounds
    colour names by hue."""
    from fleet.sim.tasks import TASKS

    names = training_colour_names() if colour_names else None

    def texts(episode: Episode) -> list[str]:
        meta = episode.meta
        own = TASKS[meta.task].phrasings if meta.task in TASKS else ()
        seed_ = zlib.crc32(meta.episode_id.encode()) ^ seed
        return paraphrases(meta.task, meta.instruction, own, count, seed=seed_, colour_names=names)

    return texts
