"""The paper's Figures 1 and 3 from a grid's results: score against model size, one line
per method / prompt length / init / objective / adaptation steps, error bars = std over
seeds. Needs matplotlib (`pip install -e .[plots]`)."""

import io
from typing import Sequence

import numpy as np

from ptjax import files
from ptjax.analysis import tables


def plot_grid(grid: str, results: Sequence[dict], path: str) -> str:
  """Writes the figure of a Figure-1/3 grid to `path` (PNG); returns `path`."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    raise ImportError("Figures need matplotlib: pip install -e '.[plots]'.") from None
  axis = tables.FIGURE_AXES[grid]
  points = tables.figure_points(results, axis)
  sizes = tables.ordered(s for s, _ in points)
  values = tables.ordered(v for _, v in points)
  fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
  for j, value in enumerate(values):
    xs = [i for i, s in enumerate(sizes) if (s, value) in points]
    means = [np.mean(points[(sizes[i], value)]) for i in xs]
    stds = [np.std(points[(sizes[i], value)]) for i in xs]
    dodge = 0.05 * (j - (len(values) - 1) / 2)  # Points of one size side by side.
    ax.errorbar([x + dodge for x in xs], means, yerr=stds, marker="o", capsize=3,
                label=f"{value}")
  ax.set_xticks(range(len(sizes)), sizes)
  ax.set_ylim(0, 100)  # The score's whole range: a point's difference is not magnified.
  ax.set_xlabel("model size")
  ax.set_ylabel("score (mean over tasks)")
  ax.set_title(grid)
  ax.legend(title=axis, fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png")
  files.write_bytes(path, png.getvalue())  # Local or gs://, written whole.
  plt.close(fig)
  return path
