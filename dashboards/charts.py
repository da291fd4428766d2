"""Small inline SVG charts (no JS library, no CDN): action traces and the learning curve.

Each chart is built here from numbers and `escape`d names only, and returned as `Markup`, so templates insert it
as it is without a `| safe` that would also pass any other string."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np
from markupsafe import Markup

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


def _polyline(xs: Sequence[float], ys: Sequence[float], color: str, *, dashed: bool = False) -> str:
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{points}"/>'


def actions_svg(
    actions: np.ndarray, intervention: np.ndarray, *, step_offset: int, width: int = 560, height: int = 160
) -> str:
    """Each action dimension over the shown steps; the human-driven steps are shaded.

    Lines are solid where the policy acted and dashed where the human did, so the plot reads as
    "policy vs human" along the takeover boundary.
    """
    steps, dims = actions.shape if actions.ndim == 2 else (0, 0)
    pad = 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} {height}" role="img">']
    parts.append("<title>actions: policy (solid) vs human (dashed, shaded steps)</title>")
    if steps == 0:
        parts.append(f'<text x="{pad}" y="{height / 2}">no actions recorded</text></svg>')
        return Markup("".join(parts))
    lo, hi = float(np.min(actions)), float(np.max(actions))
    hi = hi if hi > lo else lo + 1.0

    def x(i: float) -> float:
        return pad + (width - 2 * pad) * (i / max(steps - 1, 1))

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * ((v - lo) / (hi - lo))

    step_w = (width - 2 * pad) / max(steps - 1, 1)
    for i in map(int, np.flatnonzero(intervention)):
        parts.append(
            f'<rect class="human" x="{x(i) - step_w / 2:.1f}" y="{pad}" width="{step_w:.1f}" '
            f'height="{height - 2 * pad}" fill="#fde68a" opacity="0.6"/>'
        )
    parts.append(f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#9ca3af"/>')
    for d in range(dims):
        color = PALETTE[d % len(PALETTE)]
        for human in (False, True):
            mask = intervention.astype(bool) == human
            idx = np.flatnonzero(mask)
            if len(idx) == 0:
                continue
            # split into contiguous runs so a line never bridges a gap
            for run in np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1):
                if len(run) == 1:
                    parts.append(
                        f'<circle cx="{x(run[0]):.1f}" cy="{y(actions[run[0], d]):.1f}" r="1.5" fill="{color}"/>'
                    )
                else:
                    parts.append(_polyline([x(i) for i in run], [y(actions[i, d]) for i in run], color, dashed=human))
    parts.append(f'<text x="{pad}" y="{height - 6}" font-size="10">step {step_offset}</text>')
    parts.append(
        f'<text x="{width - pad}" y="{height - 6}" font-size="10" text-anchor="end">'
        f"step {step_offset + steps - 1}</text>"
    )
    parts.append(f'<text x="2" y="{pad - 6}" font-size="10">{hi:.2f}</text>')
    parts.append(f'<text x="2" y="{height - pad + 12}" font-size="10">{lo:.2f}</text></svg>')
    return Markup("".join(parts))


def learning_curve_svg(
    versions: Sequence[str], series: dict[str, Sequence[float | None]], *, width: int = 720, height: int = 240
) -> str:
    """Eval metrics (one line each) across versions in registration order."""
    pad_l, pad_r, pad_t, pad_b = 40, 160, 16, 28
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" role="img">']
    parts.append("<title>learning curve: eval metrics per version</title>")
    values = [v for vals in series.values() for v in vals if v is not None]
    if not versions or not values:
        parts.append(f'<text x="{pad_l}" y="{height / 2}">no eval metrics yet</text></svg>')
        return Markup("".join(parts))
    lo, hi = min(min(values), 0.0), max(max(values), 1.0)
    n = len(versions)

    def x(i: int) -> float:
        return pad_l + (width - pad_l - pad_r) * (i / max(n - 1, 1))

    def y(v: float) -> float:
        return height - pad_b - (height - pad_t - pad_b) * ((v - lo) / (hi - lo))

    for frac in (0.0, 0.5, 1.0):
        v = lo + frac * (hi - lo)
        parts.append(f'<line x1="{pad_l}" y1="{y(v):.1f}" x2="{width - pad_r}" y2="{y(v):.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{pad_l - 4}" y="{y(v) + 3:.1f}" font-size="10" text-anchor="end">{v:.2f}</text>')
    for i, version in enumerate(versions):
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 8}" font-size="10" text-anchor="middle">v{escape(version)}</text>'
        )
    for k, (name, vals) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        pts = [(x(i), y(v)) for i, v in enumerate(vals) if v is not None]
        if len(pts) > 1:
            parts.append(_polyline([p[0] for p in pts], [p[1] for p in pts], color))
        parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}"/>' for px, py in pts)
        ly = pad_t + 14 * k
        parts.append(f'<rect x="{width - pad_r + 10}" y="{ly}" width="10" height="3" fill="{color}"/>')
        parts.append(f'<text x="{width - pad_r + 24}" y="{ly + 5}" font-size="10">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def series_svg(
    series: dict[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str = "update",
    width: int = 560,
    height: int = 180,
) -> str:
    """(x, y) series (one line each) on a shared numeric x axis: loss and throughput curves over updates."""
    pad_l, pad_r, pad_t, pad_b = 48, 180, 16, 28
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'data-title="{escape(title)}">'
    ]
    parts.append(f"<title>{escape(title)}</title>")
    points = [p for pts in series.values() for p in pts]
    if not points:
        parts.append(f'<text x="{pad_l}" y="{height / 2}">{escape(title)}: no data yet</text></svg>')
        return Markup("".join(parts))
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(min(p[1] for p in points), 0.0), max(p[1] for p in points)
    x_hi = x_hi if x_hi > x_lo else x_lo + 1.0
    y_hi = y_hi if y_hi > y_lo else y_lo + 1.0

    def x(v: float) -> float:
        return pad_l + (width - pad_l - pad_r) * ((v - x_lo) / (x_hi - x_lo))

    def y(v: float) -> float:
        return height - pad_b - (height - pad_t - pad_b) * ((v - y_lo) / (y_hi - y_lo))

    for frac in (0.0, 0.5, 1.0):
        v = y_lo + frac * (y_hi - y_lo)
        parts.append(f'<line x1="{pad_l}" y1="{y(v):.1f}" x2="{width - pad_r}" y2="{y(v):.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{pad_l - 4}" y="{y(v) + 3:.1f}" font-size="10" text-anchor="end">{v:.3g}</text>')
    parts.append(f'<text x="{pad_l}" y="{height - 8}" font-size="10">{x_label} {x_lo:.0f}</text>')
    parts.append(
        f'<text x="{width - pad_r}" y="{height - 8}" font-size="10" text-anchor="end">{x_label} {x_hi:.0f}</text>'
    )
    for k, (name, pts) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        if len(pts) > 1:
            parts.append(_polyline([x(p[0]) for p in pts], [y(p[1]) for p in pts], color))
        elif pts:
            parts.append(f'<circle cx="{x(pts[0][0]):.1f}" cy="{y(pts[0][1]):.1f}" r="2.5" fill="{color}"/>')
        ly = pad_t + 14 * k
        last = f" ({pts[-1][1]:.3g})" if pts else ""
        parts.append(f'<rect x="{width - pad_r + 10}" y="{ly}" width="10" height="3" fill="{color}"/>')
        parts.append(f'<text x="{width - pad_r + 24}" y="{ly + 5}" font-size="10">{escape(name)}{last}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
