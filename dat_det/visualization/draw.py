"""Matplotlib pictures of sampling points over an image (no pyplot: safe in a training loop)."""
from typing import List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .geometry import inside

PANEL_INCHES = 3.2
MAX_COLUMNS = 5
BOX_COLOR = '#00ff66'


def _panels(count: int, image_shape: Tuple[int, int], title: str,
            extra_width: float = 0.0) -> Tuple[Figure, list]:
    cols = min(count, MAX_COLUMNS)
    rows = -(-count // cols)
    height, width = image_shape
    aspect = height / max(width, 1)
    fig = Figure(figsize=(PANEL_INCHES * cols + extra_width, PANEL_INCHES * aspect * rows + 0.7),
                 dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.axis('off')
    fig.suptitle(title, fontsize=11)
    return fig, list(axes[:count])


def _show(ax, image: np.ndarray, title: str) -> None:
    ax.imshow(image)
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def dat_figure(image: np.ndarray, refs: np.ndarray, positions: np.ndarray,
               title: str) -> Figure:
    """One panel per offset group: reference grid (white) and deformed keys (coloured), each
    key joined to its reference.

    Args:
        image: ``(H, W, 3)`` RGB uint8.
        refs, positions: ``(groups, Hk, Wk, 2)`` pixel (x, y).
    """
    groups = positions.shape[0]
    fig, axes = _panels(groups, image.shape[:2], title)
    for g, ax in enumerate(axes):
        _show(ax, image, f'group {g}')
        ref = refs[g].reshape(-1, 2)
        pos = positions[g].reshape(-1, 2)
        keep = inside(pos, image.shape[:2])
        ax.plot(np.stack([ref[keep, 0], pos[keep, 0]]), np.stack([ref[keep, 1], pos[keep, 1]]),
                color='yellow', linewidth=0.6, alpha=0.7)
        ax.scatter(ref[:, 0], ref[:, 1], s=6, c='white', edgecolors='black', linewidths=0.3,
                   label='reference')
        ax.scatter(pos[keep, 0], pos[keep, 1], s=10, c='red', label='deformed key')
    axes[0].legend(loc='lower right', fontsize=7, framealpha=0.6)
    return fig


def msda_figure(image: np.ndarray, points: np.ndarray, weights: np.ndarray,
                level_names: Sequence[str], title: str,
                boxes: Optional[np.ndarray] = None, box_texts: Optional[List[str]] = None,
                anchors: Optional[np.ndarray] = None) -> Figure:
    """One panel per level plus one of all levels: sampling points coloured by weight.

    Args:
        image: ``(H, W, 3)`` RGB uint8.
        points: ``(queries, heads, levels, points, 2)`` pixel (x, y).
        weights: ``(queries, heads, levels, points)`` attention weights.
        level_names: titles of the level panels.
        boxes: ``(queries, 4)`` pixel (x1, y1, x2, y2) drawn on every panel.
        box_texts: a label per box.
        anchors: ``(queries, 2)`` pixel (x, y) of the queries' reference points.
    """
    levels = points.shape[2]
    fig, axes = _panels(levels + 1, image.shape[:2], title, extra_width=1.0)
    vmax = float(weights.max()) if weights.size else 1.0
    scatter = None
    for index, ax in enumerate(axes):
        sel = slice(None) if index == levels else slice(index, index + 1)
        _show(ax, image, 'all levels' if index == levels else level_names[index])
        pts = points[:, :, sel].reshape(-1, 2)
        wts = weights[:, :, sel].reshape(-1)
        keep = inside(pts, image.shape[:2])
        order = np.argsort(wts[keep])  # heaviest on top
        scatter = ax.scatter(pts[keep][order, 0], pts[keep][order, 1], c=wts[keep][order],
                             s=4 + 30 * wts[keep][order] / max(vmax, 1e-12), cmap='jet',
                             vmin=0.0, vmax=vmax, edgecolors='none', alpha=0.9)
        for q, box in enumerate([] if boxes is None else boxes):
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False,
                                   edgecolor=BOX_COLOR, linewidth=1.2))
            if box_texts is not None and index == levels:
                ax.text(box[0], box[1], box_texts[q], color='black', fontsize=7,
                        bbox=dict(facecolor=BOX_COLOR, alpha=0.7, pad=1, edgecolor='none'))
        if anchors is not None:
            ax.scatter(anchors[:, 0], anchors[:, 1], marker='+', s=60, c='white',
                       linewidths=1.2)
    if scatter is not None:
        fig.colorbar(scatter, ax=axes, shrink=0.8, label='attention weight')
    return fig


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """``(H, W, 3)`` uint8 rendering of ``fig``."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
