"""Whether an instruction can be carried out in the scene in front of the robot.

A robot told "pick up the orange cube" with no orange cube on the table, or "hand me the bottle" at a table of
cubes, must say so rather than act on the nearest match: the policy maps any sentence to some action. The check is
deliberately small and literal: colour words (the palette's names, other names for them, and common colours the
palette does not paint) must name a colour some object on the table has, and an object word the scenes never hold
is refused. Any other colour name of the colour lexicon (fleet.policy.colours: "teal", "navy blue") must name a
hue within ~37 degrees of some object's colour. Anything it does not recognise passes: it refuses what it can show to
be wrong, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from fleet.policy.colours import find_colour, hue_distance, lexicon
from fleet.sim.language import held_out_data
from fleet.sim.tasks import COLORS


class Scene(Protocol):
    """What the check reads of a scene (`fleet.sim.base.SimState` has it): its task and its objects' colours."""

    task: str
    objects: Mapping[str, Any]  # name -> an object with `.color`


# Colours no scene paints: naming one names nothing on the table.
OTHER_COLOURS = ("orange", "pink", "black", "white", "brown", "grey", "gray", "cyan", "magenta")
# Things the tabletop scenes never hold (their objects are cubes, blocks, pucks, a tray, a drawer and a button).
FOREIGN_OBJECTS = (
    "ball", "sphere", "bottle", "cup", "mug", "bowl", "banana", "apple", "pen", "phone", "cylinder", "book", "toy",
    "sponge", "spoon", "fork", "knife",
)  # fmt: skip


def _colour_words() -> dict[str, str]:
    """word -> the colour it names (palette names, their other names, colours no scene paints)."""
    words = {name: name for name in COLORS}
    words |= {w: name for name, others in held_out_data()["color_words"].items() for w in others}
    return words | {w: w for w in OTHER_COLOURS}


COLOUR_WORDS = _colour_words()


# A colour name of the lexicon names an object whose colour is within this hue distance (1 - cos of the chroma
# directions: 0.2 is ~37 degrees; the palette's colours are >= 60 degrees apart).
NEAR_HUE = 0.2


def refusal(instruction: str, state: Scene) -> str | None:
    """Why `instruction` cannot be carried out in `state`'s scene, or None when nothing in it says so."""
    words = re.findall(r"[a-z]+", instruction.lower())
    present = {o.color for o in state.objects.values() if o.color}
    for word in words:
        colour = COLOUR_WORDS.get(word)
        if colour is not None and present and colour not in present:
            return _nothing(word, present)
        if word in FOREIGN_OBJECTS or (word.endswith("s") and word[:-1] in FOREIGN_OBJECTS):
            return f"no {word} on the table: a {state.task} scene holds {_holds(state)}"
    found = find_colour(instruction)
    if found is not None and not any(w in COLOUR_WORDS for w in found[0].split()) and present:
        rgbs = [COLORS.get(c) or lexicon().get(c) for c in present]
        named = lexicon()[found[0]]
        if all(rgb is not None and hue_distance(named, rgb) > NEAR_HUE for rgb in rgbs):
            return _nothing(found[0], present)
    return None


def _nothing(name: str, present: set[str]) -> str:
    return f"nothing {name} on the table (its objects are {', '.join(sorted(present))})"


def _holds(state: Scene) -> str:
    names = sorted(state.objects)
    return ", ".join(names) if names else "no movable objects"


class Grounded:
    """For a simulated env (it has `privileged_state()`): `check_instruction`, the runtime's scene check."""

    def check_instruction(self, instruction: str) -> str | None:
        """Why `instruction` cannot be carried out in the current scene, or None."""
        return refusal(instruction, self.privileged_state())  # type: ignore[attr-defined]
