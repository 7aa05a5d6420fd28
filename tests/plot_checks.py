"""Checks for plot tests: the PNG decodes to a non-blank image of the figure's size, and the figure that
was drawn is captured so its axes (plotted data, labels) can be compared with the input."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def captured_figures(monkeypatch: Any) -> Iterator[list[Any]]:
    """Every matplotlib figure saved inside the block, in order (plots close their figure after saving)."""
    from matplotlib.figure import Figure

    figures: list[Any] = []
    savefig = Figure.savefig

    def recording_savefig(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = savefig(self, *args, **kwargs)
        # the size the image must have: the figure at the saved dpi, or its tight box plus the padding
        dpi = kwargs.get("dpi") or self.dpi
        if kwargs.get("bbox_inches") == "tight":
            box = self.get_tightbbox(self.canvas.get_renderer()).padded(kwargs.get("pad_inches", 0.1))
            size = (box.width * dpi, box.height * dpi)
        else:
            size = tuple(self.get_size_inches() * dpi)
        self.expected_png_size = size
        figures.append(self)
        return out

    with monkeypatch.context() as m:
        m.setattr(Figure, "savefig", recording_savefig)
        yield figures


def check_png(path: Path, figure: Any) -> np.ndarray:
    """Decode ``path``; it must be a non-blank RGB(A) image of the size the captured ``figure`` was saved
    at (see :func:`captured_figures`). Returns the pixels."""
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4), pixels.shape
    width, height = figure.expected_png_size
    assert abs(pixels.shape[1] - width) <= 2 and abs(pixels.shape[0] - height) <= 2, (
        pixels.shape,
        width,
        height,
    )
    assert pixels[..., :3].std() > 0.05  # something is drawn, not a blank canvas
    return pixels


def line_data(axes: Any) -> dict[str, tuple[list[float], list[float]]]:
    """label → (x, y) of every labelled line of the axes."""
    return {
        line.get_label(): (list(map(float, line.get_xdata())), list(map(float, line.get_ydata())))
        for line in axes.get_lines()
    }
