#!/usr/bin/env python3
"""Draws the paper's Figure 3 (and Fig. 5 left for 2-D latents) from the engine's output.

  --metrics  train_mnist's metrics.csv: the learning curves (ELBO, reconstruction, KL per
             epoch; Fig. 3 right)
  --embed    tools/embed's --out directory: r_pooled.npy / v.npy / labels.npy, drawn as 2-D
             scatter plots coloured by class (Fig. 3 left and middle), reduced to 2-D with
             UMAP when a latent has more than 2 dimensions; with 2-D latents also r.npy
             (f_inv(x), Fig. 5 left) without any reduction

Writes PNG files into --out: fig3_latents_and_curves.png (all three panels when both inputs
are given) or the panels that the given inputs allow, and fig5_invariant_space.png.
"""
import argparse
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_metrics(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{path}: no epochs in the file")
    for key in ("epoch", "elbo", "recon", "kl"):
        if key not in rows[0]:
            sys.exit(f"{path}: no '{key}' column (is it train_mnist's metrics.csv?)")
    return {k: np.array([float(r[k]) for r in rows]) for k in ("epoch", "elbo", "recon", "kl")}


def to_2d(points, seed):
    """The points themselves when 2-D, else their UMAP embedding (McInnes & Healy, 2018)."""
    if points.shape[1] <= 2:
        return points, False
    import umap  # imported here: 2-D latents need no reduction

    return umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(points), True


def scatter(ax, points, labels, title):
    cmap = plt.get_cmap("tab10")
    for y in np.unique(labels):
        sel = labels == y
        ax.scatter(points[sel, 0], points[sel, 1], s=3, color=cmap(int(y) % 10), label=str(y),
                   rasterized=True)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def curves(ax, m):
    ax.plot(m["epoch"], m["elbo"], label="ELBO", color="black")
    ax.plot(m["epoch"], m["recon"], label="reconstruction  E[log p(x|r,v)]", color="tab:blue")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    kl_ax = ax.twinx()
    kl_ax.plot(m["epoch"], -m["kl"], label="−KL(q(v|r,x) ‖ p(v))", color="tab:red")
    kl_ax.set_ylabel("−KL (nats)", color="tab:red")
    lines = ax.get_lines() + kl_ax.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], loc="center right", fontsize=8)
    ax.set_title("learning curves")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--metrics", help="train_mnist's metrics.csv")
    p.add_argument("--embed", help="tools/embed's output directory")
    p.add_argument("--out", required=True, help="directory for the PNG files")
    p.add_argument("--seed", type=int, default=1, help="UMAP's random state")
    args = p.parse_args()
    if not args.metrics and not args.embed:
        p.error("give --metrics, --embed or both")
    os.makedirs(args.out, exist_ok=True)

    panels = []
    if args.embed:
        load = lambda name: np.load(os.path.join(args.embed, name + ".npy"))  # noqa: E731
        labels = load("labels")
        r_pooled, v = load("r_pooled"), load("v")
        if not (len(labels) == len(r_pooled) == len(v)):
            sys.exit(f"{args.embed}: the .npy files hold different numbers of rows")
        r2, r_reduced = to_2d(r_pooled, args.seed)
        v2, v_reduced = to_2d(v, args.seed)
        how = lambda reduced, d: f"UMAP of {d}-D" if reduced else f"{d}-D"  # noqa: E731
        panels.append(lambda ax: scatter(ax, r2, labels,
                                         f"invariant r_y ({how(r_reduced, r_pooled.shape[1])})"))
        panels.append(lambda ax: scatter(ax, v2, labels,
                                         f"equivariant v ({how(v_reduced, v.shape[1])})"))
    if args.metrics:
        metrics = read_metrics(args.metrics)
        panels.append(lambda ax: curves(ax, metrics))

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, draw in zip(axes[0], panels):
        draw(ax)
    bottom = 0.0
    if args.embed:  # one row of class colours under the panels, clear of the points
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=len(names), markerscale=4,
                   fontsize=8, title="class", title_fontsize=8)
        bottom = 0.11
    fig.tight_layout(rect=(0, bottom, 1, 1))
    path = os.path.join(args.out, "fig3_latents_and_curves.png")
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")

    if args.embed:
        r = load("r")
        if r.shape[1] == 2:  # Fig. 5 left: f_inv(x) itself, no reduction
            fig, ax = plt.subplots(figsize=(5.2, 4.5))
            scatter(ax, r, labels, "invariant f_inv(x), 2-D latent")
            ax.legend(markerscale=4, fontsize=7, title="class", loc="center left",
                      bbox_to_anchor=(1.0, 0.5))
            fig.tight_layout()
            path = os.path.join(args.out, "fig5_invariant_space.png")
            fig.savefig(path, dpi=100)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
