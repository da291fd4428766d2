"""Does the frozen MiniLM know which palette colour a held-out colour word names? (#29)

Two checks, printed: (1) the cosine similarity of "pick up the <word> cube" to the same sentence with each palette
colour, for each held-out colour word (fleet/sim/language/held_out.json); (2) a ridge map from MiniLM's embedding of
a colour name to its RGB, fitted on matplotlib's XKCD and CSS colour names (one or two words, held-out words left
out), and the palette colour nearest to each held-out word's predicted RGB:

    PYTHONPATH=. .venv/bin/python -m research.colour_words_minilm
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HELD_OUT = Path(__file__).resolve().parents[1] / "fleet" / "sim" / "language" / "held_out.json"


def main() -> None:
    import matplotlib.colors as mc

    from fleet.policy.language import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    held: dict[str, list[str]] = json.loads(HELD_OUT.read_text())["color_words"]
    held_words = {w for ws in held.values() for w in ws}
    palette = sorted(held)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    sentence = unit(np.asarray(embedder.embed_many([f"pick up the {c} cube" for c in palette])))
    names: dict[str, tuple[float, float, float]] = {}
    for table in (mc.XKCD_COLORS, mc.CSS4_COLORS):
        for key, value in table.items():
            name = key.split(":")[-1]
            if len(name.split()) <= 2 and not held_words & set(name.split()) and name not in held_words:
                names.setdefault(name, mc.to_rgb(value))
    words = sorted(names)
    x, y = np.asarray(embedder.embed_many(words)), np.array([names[w] for w in words])
    ridge = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ y)
    rgb = {c: np.array(mc.to_rgb(c)) for c in palette}
    right = {"sentence": 0, "ridge": 0}
    print(f"palette {palette}; ridge fitted on {len(words)} colour names")
    for colour, synonyms in held.items():
        for word in synonyms:
            sims = sentence @ unit(np.asarray(embedder.embed(f"pick up the {word} cube")))
            guess = embedder.embed(word) @ ridge
            by_sentence = palette[int(np.argmax(sims))]
            by_ridge = min(palette, key=lambda c: float(np.sum((rgb[c] - guess) ** 2)))
            right["sentence"] += by_sentence == colour
            right["ridge"] += by_ridge == colour
            print(f"{colour:>6} {word:>8}: sentence cosines {np.round(sims, 2)} -> {by_sentence}; "
                  f"ridge RGB {np.round(guess, 2)} -> {by_ridge}")  # fmt: skip
    print(f"nearest palette colour right: sentence {right['sentence']}/10, ridge {right['ridge']}/10")


if __name__ == "__main__":
    main()
