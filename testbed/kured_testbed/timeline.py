"""A roll as a picture: one row per node, bars for its drain, reboot and ready phases.

Drawn with matplotlib's object API (a bare Figure renders through Agg, no pyplot state and
no display), imported here only, so nothing else in the sandbox pays for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from kured_testbed.benchmath import NodePhases

COLORS = {"waiting": "#e0e0e0", "drain": "#f28e2b", "reboot": "#e15759", "ready": "#59a14f"}
ROW_INCHES = 0.22
MAX_LABELED_ROWS = 40  # above this, node names would overlap: the axis shows row numbers
DPI = 100


def _bars(p: NodePhases) -> list[tuple[str, float, float]]:
    """(phase, start, length) of one node's row."""
    return [
        ("waiting", 0.0, p.cordon),
        ("drain", p.cordon, p.drain),
        ("reboot", p.down, p.reboot),
        ("ready", p.up, p.ready),
    ]


def draw(path: Path, title: str, phases: Sequence[NodePhases], limit: float) -> None:
    """Write the Gantt chart of one roll to path (PNG); a dashed line marks the limit."""
    rows = len(phases)
    height = min(2.0 + rows * ROW_INCHES, 2.0 + MAX_LABELED_ROWS * ROW_INCHES)
    figure = Figure(figsize=(10, height), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    for row, p in enumerate(phases):
        for phase, start, length in _bars(p):
            axes.broken_barh([(start, length)], (row - 0.4, 0.8), color=COLORS[phase])
    axes.axvline(limit, color="black", linestyle="--", linewidth=1)
    axes.invert_yaxis()
    if rows <= MAX_LABELED_ROWS:
        axes.set_yticks(range(rows), [p.node for p in phases], fontsize=8)
    else:
        axes.set_ylabel("nodes, in the order they were cordoned")
    axes.set_xlabel("seconds since every node's sentinel was created (dashed: physical limit)")
    axes.set_title(title, fontsize=10)
    handles = [Patch(color=color, label=phase) for phase, color in COLORS.items()]
    axes.legend(handles=handles, loc="upper right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def draw_per_handoff(path: Path, title: str, series: dict[str, dict[int, float]]) -> None:
    """Requests per lock hand-off against the fleet size, one line per model (log-log: the
    polling model grows with N, a watch that hands over should not)."""
    figure = Figure(figsize=(7, 4.5), dpi=DPI)
    axes = figure.add_subplot()
    for label, points in series.items():
        sizes = sorted(points)
        axes.plot(sizes, [points[n] for n in sizes], marker="o", label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("nodes (agents)")
    axes.set_ylabel("API requests per lock hand-off")
    axes.set_title(title, fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.savefig(path)
