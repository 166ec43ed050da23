"""Charts of evaluation results (PNG, matplotlib's headless Agg backend), for the README and the web app."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import EvaluationError
from .evaluate import ALL_KINDS, EvalReport

logger = logging.getLogger(__name__)

_LABELS = {"adapter": "adapter", "base": "base", "in_context": "in-context"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers/CI; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "score (%)",
) -> Path:
    """A grouped bar chart of shares (0–1, shown as %); ``None`` bars are left empty.

    Args:
        groups: the x-axis groups (e.g. kinds, or k values).
        series: one bar per group for each named series (e.g. adapter, base, in-context).
        path: where to write the PNG (parent directories are created).
        title: chart title.
        ylabel: y-axis label.
    """
    if not groups or not series:
        raise EvaluationError("Nothing to plot: no groups or no series.")
    for name, values in series.items():
        if len(values) != len(groups):
            raise EvaluationError(f"Series '{name}' has {len(values)} values for {len(groups)} groups.")
    plt = _pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) * max(1, len(series)) / 2 + 2), 4.0))
    try:
        for s, (name, values) in enumerate(series.items()):
            xs = [g + (s - (len(series) - 1) / 2) * width for g in range(len(groups))]
            heights = [0.0 if v is None else 100 * v for v in values]
            bars = ax.bar(xs, heights, width, label=name)
            for bar, v in zip(bars, values, strict=True):
                if v is not None:
                    ax.annotate(
                        f"{100 * v:.0f}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups)
        ax.set_ylim(0, 110)
        _finish(fig, ax, out, ylabel=ylabel, title=title, legend="upper right")
    finally:
        plt.close(fig)
    logger.info("Wrote chart %s", out)
    return out


def _finish(fig: Any, ax: Any, out: Path, *, ylabel: str, title: str | None, legend: str) -> None:
    """Labels, title and legend, then the PNG: what every chart here ends with."""
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc=legend)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "score (%)",
    log_x: bool = False,
) -> Path:
    """One line per named series of (x, share 0–1) points, shown as %; e.g. recall against facts, one line per rank.

    Args:
        series: name -> points; a series' points are drawn in x order.
        path: where to write the PNG (parent directories are created).
        title: chart title.
        xlabel: x-axis label.
        ylabel: y-axis label.
        log_x: a logarithmic x axis (sizes that double).
    """
    if not series or not any(series.values()):
        raise EvaluationError("Nothing to plot: no points.")
    plt = _pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    try:
        for name, points in series.items():
            if not points:
                continue
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, [100 * y for y in ys], marker="o", label=name)
            for x, y in zip(xs, ys, strict=True):
                ax.annotate(f"{100 * y:.0f}", (x, 100 * y), textcoords="offset points", xytext=(0, 6), fontsize=7)
        if log_x:
            ax.set_xscale("log")
        xs_all = sorted({x for points in series.values() for x, _ in points})
        ax.set_xticks(xs_all)
        ax.set_xticklabels([f"{x:g}" for x in xs_all])
        ax.set_ylim(0, 105)
        ax.set_xlabel(xlabel)
        _finish(fig, ax, out, ylabel=ylabel, title=title, legend="lower left")
    finally:
        plt.close(fig)
    logger.info("Wrote chart %s", out)
    return out


def recall_by_kind_chart(report: EvalReport, path: str | Path, *, title: str | None = None) -> Path:
    """Bar chart of the score per kind for the adapter and each baseline in ``report``; returns the PNG path."""
    kinds = [k for k in ALL_KINDS if k in report.by_kind]
    systems = ["adapter", *report.baselines]
    series = {_LABELS.get(s, s): [report.metrics(s).by_kind[k].score for k in kinds] for s in systems}
    return bar_chart(kinds, series, path, title=title or f"Score by kind — {report.base_model}")
