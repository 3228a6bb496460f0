"""The figures of `trainers.studies.reproduce`: decision and loss surfaces, accuracy vs time."""

import itertools
import os

import numpy as np

import keras_lfr

from .. import evaluating
from .budgets import VARIANTS
from .report import NAMES


def pyplot():
    """`matplotlib.pyplot` drawing to files (the Agg backend), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_point(models, candidates, dataset="mnist"):
    """The test image the figures are drawn around, and its index.

    Random sign planes rarely reach the decision boundary, so the figures use,
    of the first `candidates` test images that the Standard model classifies
    correctly, the one where its decision value on the plane gets lowest
    (closest to, or across, the boundary); the first test image when there is
    no Standard model or it classifies none of them correctly.
    """
    x, y = evaluating.test_batch(dataset, candidates)
    index, lowest = 0, np.inf
    for i in range(candidates if "standard" in models else 0):
        values = keras_lfr.surfaces.surface(models["standard"], x[i], int(y[i]), resolution=9)[2]
        if values[9 // 2, 9 // 2] > 0 and values.min() < lowest:  # the centre is x itself
            index, lowest = i, values.min()
    return x[index], int(y[index]), index


def write_figures(models, directory, resolution, candidates, dataset="mnist", prefix=""):
    """Figures 1 and 2: decision surfaces (Standard vs LFR) and LFR's loss surface.

    Drawn on a `resolution`² grid around the test image `figure_point` picks
    among the first `candidates`.
    """
    plt = pyplot()
    os.makedirs(directory, exist_ok=True)
    x, y, index = figure_point(models, candidates, dataset)
    paths = {}
    panels = [m for m in ("standard", "lfr") if m in models]
    if panels:
        fig = plt.figure(figsize=(5 * len(panels), 8))
        for column, method in enumerate(panels):
            a, b, values = keras_lfr.surfaces.surface(
                models[method], x, y, kind="decision", resolution=resolution
            )
            grid_a, grid_b = np.meshgrid(a, b, indexing="ij")
            top = fig.add_subplot(2, len(panels), column + 1, projection="3d")
            top.plot_surface(grid_a, grid_b, values, cmap="coolwarm", vmin=-1, vmax=1)
            top.set_title(f"{NAMES[method]}: p_y − max p_other")
            top.set_zlim(-1, 1)
            bottom = fig.add_subplot(2, len(panels), len(panels) + column + 1)
            image = bottom.contourf(
                grid_a, grid_b, values, levels=20, cmap="coolwarm", vmin=-1, vmax=1
            )
            bottom.contour(grid_a, grid_b, values, levels=[0.0], colors="black")
            bottom.set_xlabel("d1")
            bottom.set_ylabel("d2")
            fig.colorbar(image, ax=bottom)
        fig.suptitle(
            f"Fig. 1: decision surface around test image #{index} (label {y}), "
            "±0.3 along two random sign directions"
        )
        paths["decision"] = os.path.join(directory, f"{prefix}fig1_decision_surfaces.png")
        fig.savefig(paths["decision"], dpi=80)
        plt.close(fig)
    if "lfr" in models:
        a, b, values = keras_lfr.surfaces.surface(
            models["lfr"], x, y, kind="loss", resolution=resolution
        )
        grid_a, grid_b = np.meshgrid(a, b, indexing="ij")
        fig = plt.figure(figsize=(10, 4))
        left = fig.add_subplot(1, 2, 1, projection="3d")
        left.plot_surface(grid_a, grid_b, values, cmap="viridis")
        left.set_title("LFR: cross-entropy")
        right = fig.add_subplot(1, 2, 2)
        fig.colorbar(right.contourf(grid_a, grid_b, values, levels=20, cmap="viridis"), ax=right)
        fig.suptitle(f"Fig. 2: loss surface of the LFR model around test image #{index}")
        paths["loss"] = os.path.join(directory, f"{prefix}fig2_loss_surface_lfr.png")
        fig.savefig(paths["loss"], dpi=80)
        plt.close(fig)
    return paths


def curve_figure(histories, path):
    """Robust accuracy (PGD-40 on held-out images) against training wall time.

    Args:
        histories: Dict method -> `History.history` with `wall_time` and
            `val_adv_pgd40_accuracy` per epoch.
        path: The PNG to write.

    Returns:
        `path`, or `None` when no history has the curve.
    """
    plt = pyplot()
    curves = {m: h for m, h in histories.items() if "val_adv_pgd40_accuracy" in h}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    # A variant is drawn in its base method's colour, with one line style per
    # set of settings it changes (so every AWP row shares one, every ε ramp
    # row another); the methods themselves are solid.
    rows = {
        m: (VARIANTS[m].method, VARIANTS[m].changes) if m in VARIANTS else (m, {}) for m in curves
    }
    bases = dict.fromkeys(base for base, _ in rows.values())
    colours = dict(zip(bases, itertools.cycle(plt.get_cmap("tab10").colors)))
    changes = dict.fromkeys([(), *(tuple(sorted(changed)) for _, changed in rows.values())])
    styles = dict(zip(changes, itertools.cycle(("-", "--", ":", "-."))))
    for method, history in curves.items():
        base, changed = rows[method]
        minutes = np.asarray(history["wall_time"]) / 60
        accuracy = 100 * np.asarray(history["val_adv_pgd40_accuracy"])
        ax.plot(
            minutes,
            accuracy,
            marker="o",
            markersize=3,
            color=colours[base],
            linestyle=styles[tuple(sorted(changed))],
            label=NAMES.get(method, method),
        )
    ax.axvline(60, color="grey", linestyle=":", label="60 min budget")
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("PGD-40 accuracy on 500 held-out test images (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
