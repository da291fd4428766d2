"""What the benches' plots share: headless pyplot, and one way to write a figure next to its JSON. Usage::

    from bench.figures import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots()
    ...
    save_figure(fig, Path("bench/results/x.png"))

Every bench figure is written at 110 dpi.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display on the bench machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Lay the figure out, write it to `path` (parents created) at the benches' 110 dpi, and free it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
