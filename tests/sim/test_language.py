"""Instructions the policy was not trained on: the held-out set stays out of training, and evaluation says each
episode's instruction its way while the scene stays the one the seed gives."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fleet.recipe.evaluate import evaluate
from fleet.sim.language import held_out_data, load_instruction_set, paraphrases, slots_of, training_phrasings
from fleet.sim.registry import make_env
from fleet.sim.tasks import COLORS, TASKS


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z{}]+", text.lower()))


def test_no_held_out_phrasing_or_colour_word_is_in_any_training_list() -> None:
    held = held_out_data()
    training = {_words(p) for spec in TASKS.values() for p in spec.phrasings}
    for task, phrasings in held["phrasings"].items():
        assert task in TASKS and phrasings
        assert not {_words(p) for p in phrasings} & training, task
    names = {w for words in held["color_words"].values() for w in words}
    assert set(held["color_words"]) == set(COLORS)  # another name for every colour the scenes paint
    assert not names & set(COLORS)
    assert not any(
        name in _words(p).split() for name in names for p in (p for s in TASKS.values() for p in s.phrasings)
    )


POLITE = {"the", "a", "please", "could", "you", "can", "it", "to", "of", "and", "that", "bit", "{color}", "{side}",
          "{base}"}  # fmt: skip


def test_the_training_bank_says_nothing_the_held_out_set_says() -> None:
    """Instruction augmentation trains on training.json: none of its phrasings is a held-out one, says a held-out
    one's content words with only politeness or order changed, or uses a held-out colour word."""
    held, bank = held_out_data(), training_phrasings()
    content = {task: {frozenset(_words(p).split()) - POLITE for p in ps} for task, ps in held["phrasings"].items()}
    names = {w for words in held["color_words"].values() for w in words}
    for task, phrasings in bank.items():
        assert task in TASKS and len(phrasings) >= 10, task
        for phrasing in phrasings:
            assert set(re.findall(r"{(\w+)}", phrasing)) == set(TASKS[task].slots), phrasing  # same slots
            assert frozenset(_words(phrasing).split()) - POLITE not in content.get(task, set()), phrasing
            assert not names & set(_words(phrasing).split()), phrasing


def test_paraphrases_keep_the_slot_values_and_leave_free_text_alone() -> None:
    own = TASKS["push"].phrasings
    said = own[1].format(color="red", side="left")
    out = paraphrases("push", said, own, 5, seed=3)
    assert out[0] == said and len(set(out)) == 6
    assert all(slots_of("push", p, own) == {"color": "red", "side": "left"} for p in out)
    assert paraphrases("push", said, own, 5, seed=3) == out  # the seed fixes the draw
    assert paraphrases("pick", "wave at the camera", TASKS["pick"].phrasings, 5, seed=0) == ["wave at the camera"]


@pytest.mark.parametrize("task", ["pick", "push", "place"])
def test_a_held_out_instruction_changes_what_is_said_and_not_the_scene(task: str) -> None:
    env = make_env(task, "panda", seed=0)
    try:
        own, _ = env.reset(seed=11)
        slots = dict(env._slots)  # type: ignore[attr-defined]
        held = load_instruction_set("held-out")
        colours = load_instruction_set("held-out-colours")
        for k in range(len(held.phrasings[task])):
            options = held.options(task, k, TASKS[task].phrasings)
            obs, _ = env.reset(seed=11, options=options)
            assert obs["instruction"] == options["phrasing"].format(**slots)
            np.testing.assert_array_equal(obs["images"]["front"], own["images"]["front"])
            np.testing.assert_array_equal(obs["proprio"], own["proprio"])
        obs, _ = env.reset(seed=11, options=colours.options(task, 1, TASKS[task].phrasings))
        other = held_out_data()["color_words"][slots["color"]][1]
        assert other in obs["instruction"] and slots["color"] not in obs["instruction"]
        with pytest.raises(ValueError, match="must use the slots"):
            env.reset(seed=11, options={"phrasing": "pick up the cube"})
        with pytest.raises(ValueError, match="at most 200 characters"):
            env.reset(seed=11, options={"phrasing": "<script>{color}</script>" if task != "push" else "{color}{side}!"})
    finally:
        env.close()


class Listener:
    """Hears the instructions and does not move."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    def infer(self, obs: dict[str, Any]) -> np.ndarray:
        self.heard.append(obs["instruction"])
        return np.zeros((4, 4), dtype=np.float32)

    def reset(self) -> None:
        pass


def test_eval_says_episode_k_with_phrasing_k_on_the_same_seeds() -> None:
    listener = Listener()
    held = load_instruction_set("held-out")
    evaluate(listener, ["pick"], ["panda"], episodes=2, seed=5, instructions=held)  # type: ignore[arg-type]
    said = list(dict.fromkeys(listener.heard))
    assert [re.sub(r"\b(red|green|blue|yellow|purple)\b", "{color}", s) for s in said] == list(
        held.phrasings["pick"][:2]
    )


def test_an_instruction_file_of_ones_own_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"phrasings": {"pick": ["raise the {color} cube"]}, "color_words": {"red": ["ruby"]}}))
    mine = load_instruction_set(path)
    assert mine.name == "mine" and mine.options("pick", 3, ()) == {"phrasing": "raise the {color} cube",
                                                                 "words": {"red": "ruby"}}  # fmt: skip
    assert mine.options("push", 0, TASKS["push"].phrasings)["phrasing"] == TASKS["push"].phrasings[0]
    for bad, reason in (("{", "cannot read it as JSON"), ('{"phrasings": {"pick": []}}', "non-empty list"),
                        ("{}", "give 'phrasings'")):  # fmt: skip
        path.write_text(bad)
        with pytest.raises(ValueError, match=reason):
            load_instruction_set(path)


def test_the_scene_check_refuses_what_it_can_show_to_be_wrong_and_nothing_else() -> None:
    from fleet.sim.grounding import refusal

    env = make_env("place", "kuka", seed=0)
    try:
        env.reset(seed=3)
        state = env.privileged_state()
    finally:
        env.close()
    colours = sorted({o.color for o in state.objects.values()})
    absent = sorted(set(COLORS) - set(colours))[0]
    synonym = held_out_data()["color_words"][colours[0]][0]
    assert refusal(f"put the {colours[0]} cube in the tray", state) is None
    assert refusal(f"put the {synonym} cube in the tray", state) is None  # another name for a colour it has
    assert refusal("put it in the tray", state) is None
    assert f"nothing {absent} on the table" in (refusal(f"put the {absent} cube in the tray", state) or "")
    assert "nothing pink" in (refusal("put the pink cube in the tray", state) or "")
    hues = {"red": "cherry", "green": "fern", "blue": "cobalt", "yellow": "canary", "purple": "amethyst"}
    assert refusal(f"put the {hues[colours[0]]} cube in the tray", state) is None  # a lexicon name near its hue
    assert f"nothing {hues[absent]} on the table" in (refusal(f"put the {hues[absent]} cube in the tray", state) or "")
    assert "nothing teal" in (refusal("put the teal cube in the tray", state) or "")  # no scene paints teal
    assert "no apples on the table" in (refusal("put the apples in the tray", state) or "")


@pytest.mark.parametrize("task", ["pick", "place"])
def test_a_new_object_is_painted_and_named_in_the_scene_the_seed_gives(task: str) -> None:
    """held-out-object: the target in a colour no demonstration had, named so; everything else as the seed gives."""
    new = load_instruction_set("held-out-object")
    assert new.new_object is not None and new.new_object["name"] not in COLORS
    env = make_env(task, "panda", seed=0)
    obs, _ = env.reset(seed=11)
    state = env.privileged_state()
    obs_new, _ = env.reset(seed=11, options=new.options(task, 0, TASKS[task].phrasings))
    state_new = env.privileged_state()
    name = new.new_object["name"]
    assert name in obs_new["instruction"].split() and state_new.objects["cube_0"].color == name
    assert [o.color for k, o in state_new.objects.items() if k != "cube_0"] == [
        o.color for k, o in state.objects.items() if k != "cube_0"
    ]  # the other cubes keep their colours ...
    for key, obj in state.objects.items():  # ... and every object its place
        np.testing.assert_allclose(state_new.objects[key].position, obj.position)
    assert env.check_instruction(obs_new["instruction"]) is None  # the runtime's scene check accepts it
    assert not np.array_equal(obs["images"]["front"], obs_new["images"]["front"])  # it looks different
    with pytest.raises(ValueError, match="new object"):
        env.reset(seed=11, options={"new_object": {"name": "red", "rgb": [1, 0, 0]}})
