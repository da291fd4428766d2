"""Colour names grounded by hue: the lexicon, the instruction split into words and colour, the image channel, and a
colour-lexicon model end to end (config, embedder, training step, policy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fleet.policy.colours import colour_map, find_colour, lexicon, split_colour
from fleet.policy.config import COLOUR_FEATURES, VLAConfig, debug_model_config
from fleet.policy.data import ChunkDataset
from fleet.policy.language import ColourLexiconEmbedder, embedder_for
from fleet.policy.model import VLAModel
from fleet.policy.policy import VLAPolicy
from fleet.sim.language import held_out_data, training_colour_names, training_phrasings
from fleet.sim.tasks import COLORS, TASKS
from tests.policy.fakes import HashEmbedder, make_episode, observation


def test_the_lexicon_names_hues() -> None:
    names = lexicon()
    assert len(names) > 800
    for name, rgb in names.items():
        assert name == name.lower() and 1 <= len(name.split()) <= 3, name
        assert all(0.0 <= v <= 1.0 for v in rgb), name
        assert np.linalg.norm(np.array(rgb) - np.mean(rgb)) >= 0.1, name  # no greys: they point at no hue
    assert set(COLORS) <= set(names)


def test_the_first_colour_name_is_found_longest_first() -> None:
    assert find_colour("pick up the crimson cube") == ("crimson", 12, 19)
    assert find_colour("put the light blue cube on the red one")[0] == "light blue"  # type: ignore[index]
    assert find_colour("Push The NAVY block left")[0] == "navy"  # type: ignore[index]
    assert find_colour("wave at the camera") is None
    rest, colour = split_colour("put the light blue cube on the red one")
    assert rest == "put the cube on the red one"
    assert colour.shape == (COLOUR_FEATURES,) and colour[3] == 1.0
    np.testing.assert_allclose(colour[:3], lexicon()["light blue"])
    assert split_colour("wave at the camera")[0] == "wave at the camera"
    assert not split_colour("wave at the camera")[1].any()


@pytest.mark.parametrize("task", sorted(t for t, spec in TASKS.items() if "color" in spec.slots))
def test_every_phrasing_names_only_its_slot_colour(task: str) -> None:
    """The templates' own words (tray, table, block, side...) must not read as colours: the slot's name is found
    and taken out, whatever name fills it (palette, training or held-out)."""
    held = held_out_data()
    phrasings = (*TASKS[task].phrasings, *training_phrasings().get(task, ()), *held["phrasings"].get(task, ()))
    names = ["red", "navy", "light blue", "orange", *held["color_words"]["green"]]
    for phrasing in phrasings:
        for name in names:
            text = phrasing.format(color=name, side="left", base="purple")
            found = find_colour(text)
            assert found is not None and found[0] == name, (text, found)
            assert name not in split_colour(text)[0].split(), text


def _patches() -> torch.Tensor:
    """(1, 3, 8, 8) RGB in [0, 1]: a grey table with a red patch (top left) and a blue one (bottom right)."""
    image = torch.full((1, 3, 8, 8), 0.45)
    image[0, :, :3, :3] = torch.tensor([0.66, 0.10, 0.06])[:, None, None]
    image[0, :, 5:, 5:] = torch.tensor([0.12, 0.22, 0.62])[:, None, None]
    return image


def _colour(name: str) -> torch.Tensor:
    return torch.from_numpy(split_colour(f"the {name} cube")[1])[None]


@pytest.mark.parametrize(("name", "lit", "dark"), [("red", 0, 1), ("crimson", 0, 1), ("navy", 1, 0), ("azure", 1, 0)])
def test_the_map_lights_the_pixels_of_the_named_hue(name: str, lit: int, dark: int) -> None:
    cmap = colour_map(_patches(), _colour(name))[0, 0]
    regions = [cmap[:3, :3], cmap[5:, 5:]]
    assert float(regions[lit].min()) > 0.5
    assert float(regions[dark].max()) < 0.01
    assert float(cmap[3:5, 3:5].max()) < 0.01  # the grey table


def test_the_map_is_dark_without_a_colour_or_without_its_hue_in_view() -> None:
    assert not colour_map(_patches(), torch.zeros(1, COLOUR_FEATURES)).any()
    grey = torch.full((1, 3, 8, 8), 0.45) + 0.01 * torch.rand(1, 3, 8, 8)
    assert float(colour_map(grey, _colour("red")).max()) < 0.5  # nothing of the hue: no best poor match at 1


def test_config_embedder_and_checkpoint_json_agree() -> None:
    config = debug_model_config().with_colour_lexicon()
    assert config.colour_lexicon and config.text_dim == 384 + COLOUR_FEATURES
    assert config.text_encoder == "all-MiniLM-L6-v2+colour-lexicon"
    assert VLAConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="colour lexicon model reads"):
        debug_model_config(colour_lexicon=True)  # the encoder name must say so
    assert not VLAConfig.from_dict(
        {k: v for k, v in VLAConfig().to_dict().items() if k != "colour_lexicon"}
    ).colour_lexicon

    base = HashEmbedder()
    lexicon_config = debug_model_config(text_encoder=base.name).with_colour_lexicon()
    wrapped = embedder_for(lexicon_config, base)
    assert isinstance(wrapped, ColourLexiconEmbedder) and wrapped.dim == lexicon_config.text_dim
    assert embedder_for(debug_model_config(text_encoder=base.name), base) is base
    with pytest.raises(ValueError, match="does not match the model"):
        embedder_for(debug_model_config(), base)
    red, crimson = wrapped.embed("pick up the red cube"), wrapped.embed("pick up the crimson cube")
    np.testing.assert_array_equal(red[:384], crimson[:384])  # the sentence is read without its colour name
    np.testing.assert_array_equal(red[:384], base.embed("pick up the cube"))
    assert not np.allclose(red[384:], crimson[384:])


def test_a_colour_lexicon_model_trains_and_acts_on_its_channel() -> None:
    base = HashEmbedder()
    config = debug_model_config(text_encoder=base.name).with_colour_lexicon()
    torch.manual_seed(0)
    model = VLAModel(config)
    assert model.image_encoder.net[0].in_channels == 3 + 2 + 1  # RGB, coordinates, the colour map
    episodes = [make_episode(seed=i, instruction=f"pick up the {c} cube") for i, c in enumerate(("red", "blue"))]
    dataset = ChunkDataset(episodes, config, embedder=base)
    batch = dataset.sample_batch(np.random.default_rng(0), 4)
    loss = model.loss(batch)["loss/total"]
    loss.backward()
    assert torch.isfinite(loss) and model.image_encoder.net[0].weight.grad is not None

    image = (_patches()[0].permute(1, 2, 0) * 255).to(torch.uint8)[None].repeat(1, 8, 8, 1)  # (1, 64, 64, 3)
    embed = ColourLexiconEmbedder(base)
    text_red = torch.from_numpy(embed.embed("pick up the red cube"))[None]
    text_navy = text_red.clone()
    text_navy[:, -COLOUR_FEATURES:] = torch.from_numpy(embed.embed("pick up the navy cube"))[-COLOUR_FEATURES:]
    with torch.no_grad():
        first = model.image_encoder.net[0]
        first.weight.zero_()
        first.weight[:, -1] = 1.0  # only the colour channel reaches the first stage
        tokens_red = model.image_encoder(image, text_red)
        tokens_navy = model.image_encoder(image, text_navy)
    assert not torch.allclose(tokens_red, tokens_navy)  # the same sentence, another hue: other features

    policy = VLAPolicy(model.eval(), embedder=base)
    obs = {**observation(episodes[0], 0), "instruction": "lift the navy cube"}
    actions = policy.infer(obs)  # type: ignore[arg-type]
    assert actions.shape[0] == config.chunk_size


def test_training_colour_names_leave_the_held_out_ones_out() -> None:
    held = held_out_data()
    banned = {w for words in held["color_words"].values() for w in words} | {held["new_object"]["name"]}
    names = training_colour_names()
    assert set(names) == set(COLORS)
    for colour, others in names.items():
        assert len(others) >= 20 and colour in others, colour
        for name in others:
            assert not banned & set(name.split()), name
    assert "liliac" not in names["purple"]  # spelt nearly as a held-out word


def test_paraphrases_name_the_colour_other_ways_and_never_a_held_out_one() -> None:
    from fleet.sim.language import paraphrases

    names = training_colour_names()
    own = TASKS["pick"].phrasings
    said = own[0].format(color="red")
    out = paraphrases("pick", said, own, 8, seed=5, colour_names=names)
    assert out[0] == said and len(out) == 9
    colours = [found[0] for text in out[1:] if (found := find_colour(text)) is not None]
    assert len(colours) == 8 and set(colours) <= set(names["red"])
    assert any(c != "red" for c in colours)  # some say it another way
    held = {w for words in held_out_data()["color_words"].values() for w in words}
    assert not any(held & set(text.split()) for text in out)
    assert paraphrases("pick", said, own, 8, seed=5, colour_names=names) == out  # the seed fixes the draw
