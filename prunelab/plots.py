"""Plot helpers: each takes ``ax=None`` (or makes its own figure), returns the figure, and never calls
``plt.show()`` or changes matplotlib's global style."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["image_grid"]


def image_grid(images: Tensor, labels: Tensor, classes: tuple[str, ...], *, n_cols: int = 10,
               predictions: Tensor | None = None, size: float = 1.2) -> Figure:
    """A grid of images titled by class; with ``predictions``, wrong ones are titled in red.

    images: uint8 or float [N, H, W]; labels, predictions: int [N].
    """
    n = len(images)
    n_rows = -(-n // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * 1.25 * n_rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].float().cpu().numpy(), cmap="gray_r")
        title, color = classes[int(labels[i])], "black"
        if predictions is not None and int(predictions[i]) != int(labels[i]):
            title, color = f"{classes[int(predictions[i])]}?", "tab:red"
        ax.set_title(title, fontsize=7, color=color)
    fig.tight_layout()
    return fig
