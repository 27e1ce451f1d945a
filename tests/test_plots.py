"""Plot helpers: what the explorers draw is what the data says."""

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from prunelab.plots import FigureImage, LevelLines, MaskImage


def test_mask_image_draws_the_same_pixels_as_colouring_every_entry_first():
    """MaskImage resamples the 0/1 data before colouring (fast); the pixels must equal matplotlib's default
    of colouring all out × in entries first, for a mask much larger than its axes."""
    mask = torch.rand(300, 784, generator=torch.Generator().manual_seed(0)) > 0.7
    pixels = []
    for fast in (True, False):
        fig = Figure(figsize=(9, 3), dpi=80)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot(121)
        drawn = MaskImage(ax, mask)
        if not fast:
            drawn.image.set_interpolation_stage("rgba")
        canvas.draw()
        pixels.append(np.asarray(canvas.buffer_rgba()).copy())
    assert np.array_equal(*pixels)


def test_figure_image_png_shows_the_current_state_of_the_animated_artists():
    import io

    import PIL.Image

    fig = Figure(figsize=(2, 2), dpi=50)
    ax = fig.add_subplot()
    mask = MaskImage(ax, torch.ones(4, 4, dtype=torch.bool), animated=True)
    renderer = FigureImage(fig, [mask.image])
    all_kept = np.asarray(PIL.Image.open(io.BytesIO(renderer.png())))
    mask.update(torch.zeros(4, 4, dtype=torch.bool))
    none_kept = np.asarray(PIL.Image.open(io.BytesIO(renderer.png())))
    assert all_kept.shape == none_kept.shape == (100, 100, 3)      # opaque figure: RGB
    assert all_kept.mean() < none_kept.mean()                        # kept = dark, pruned = white


def test_level_lines_span_the_axes_up_to_16_levels_and_become_ticks_beyond():
    """At 8 bits 256 full-height lines would paint over the histogram: beyond 16 levels they are short ticks."""
    fig = Figure(figsize=(3, 2))
    lines = LevelLines(fig.add_subplot())
    for n, top in ((2, 1.0), (16, 1.0), (17, 0.08), (256, 0.08)):
        x = lines.update(torch.linspace(-1, 1, n))
        segments = lines.lines.get_segments()
        assert len(segments) == n and np.allclose(x, np.linspace(-1, 1, n), atol=1e-6)
        assert all(seg[0, 1] == 0 and seg[1, 1] == top and seg[0, 0] == seg[1, 0] for seg in segments)
    assert len(lines.update(None)) == 0 and len(lines.lines.get_segments()) == 0
