"""The dashboard's LR-finder chart draws each suggestion and curve in the colour lr_finder.png gives it:
the page's PNG_COLORS (service/static/js/lr_view.js) against the lines plot_lr_finder actually draws."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from ml import plots
from ml.lr_finder import suggest

LR_VIEW = Path(__file__).resolve().parents[2] / "service" / "static" / "js" / "lr_view.js"


def page_colors() -> dict[str, str]:
    block = re.search(r"export const PNG_COLORS = \{(.*?)\};", LR_VIEW.read_text(), re.DOTALL)
    assert block, "lr_view.js declares PNG_COLORS"
    pairs = re.findall(r'(\w+):\s*"(#[0-9a-fA-F]{6})"', block.group(1))
    return {name: colour.lower() for name, colour in pairs}


def png_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Label -> hex colour of every line of a real plot_lr_finder figure with all three suggestions."""
    figures: list[Figure] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or Path(path))
    lrs = [10 ** (-4 + i / 10) for i in range(40)]
    trend = [2.3 - 0.02 * i for i in range(30)] + [1.72 + 0.3 * i for i in range(10)]  # falls, then rises
    smoothed = [t + 0.01 for t in trend]  # its own trend: the trend line is drawn as well
    suggestions = suggest(lrs, trend, num_iter=len(lrs))
    assert all(suggestions.values()), suggestions
    plots.plot_lr_finder(lrs, smoothed, smoothed, suggestions, tmp_path / "p.png", trend_losses=trend)
    (ax,) = figures[0].axes
    return {str(line.get_label()).split(":")[0]: to_hex(line.get_color()) for line in ax.get_lines()}


def test_the_page_draws_in_the_colours_of_the_png(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    page, png = page_colors(), png_lines(monkeypatch, tmp_path)
    for name in ("steepest", "valley", "minimum_div10"):
        assert page[name] == png[name], f"{name}: page {page[name]}, PNG {png[name]}"
    assert page["loss"] == png["smoothed loss"] == png["loss"]
    assert page["trend"] == png["trend (suggestions)"]
    assert len(set(page[n] for n in ("steepest", "valley", "minimum_div10"))) == 3, json.dumps(page)
