#!/usr/bin/env python3
"""Reads tools/embed's .npy files with numpy and checks them against the data.

Usage: check_embed_npy.py DIR LABELS_IDX FIRST DIM [TRAIN_DIR ERROR_PERCENT]
  DIR            tools/embed --out directory (r.npy, r_pooled.npy, v.npy, labels.npy)
  LABELS_IDX     the IDX label file (plain or gzip) the embedded images came from
  FIRST          index of the first embedded image in that file
  DIM            expected size of both latents
  TRAIN_DIR      embed's files of the training split: the distance classifier (paper §3.1:
                 p(y|x) ∝ exp(−‖f_inv(x) − r̄_y‖²), r̄_y the mean f_inv of training class y)
                 is recomputed here in float64 from both splits' r.npy, and its test error
                 must be ERROR_PERCENT (what train_mnist printed) within one image.
Exit status 0 when everything holds, 1 with a message otherwise.
"""
import gzip
import struct
import sys

import numpy as np


def idx_labels(path):
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    magic, n = struct.unpack(">II", blob[:8])
    assert magic == 0x801, f"{path}: not an IDX label file"
    return np.frombuffer(blob[8 : 8 + n], dtype=np.uint8).astype(np.int32)


def main():
    directory, labels_path, first, dim = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    arrays = {name: np.load(f"{directory}/{name}.npy") for name in ("r", "r_pooled", "v", "labels")}
    labels = arrays["labels"]
    n = labels.shape[0]
    expected = idx_labels(labels_path)[first : first + n]
    checks = [
        (labels.dtype == np.int32 and labels.ndim == 1, f"labels: {labels.dtype} {labels.shape}"),
        (np.array_equal(labels, expected), "labels differ from the IDX file"),
    ]
    for name in ("r", "r_pooled", "v"):
        a = arrays[name]
        checks.append((a.dtype == np.float32 and a.shape == (n, dim), f"{name}: {a.dtype} {a.shape}"))
        checks.append((bool(np.isfinite(a).all()), f"{name}: non-finite values"))
        checks.append((float(a.std(axis=0).min()) > 0, f"{name}: a constant column"))
    if len(sys.argv) > 6:
        train = {name: np.load(f"{sys.argv[5]}/{name}.npy") for name in ("r", "labels")}
        r_train, y_train = train["r"].astype(np.float64), train["labels"]
        classes = np.unique(y_train)
        centroids = np.stack([r_train[y_train == c].mean(axis=0) for c in classes])
        r_test = arrays["r"].astype(np.float64)
        distances = ((r_test[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
        error = 100.0 * float((classes[distances.argmin(axis=1)] != labels).mean())
        printed = float(sys.argv[6])
        checks.append((abs(error - printed) <= 100.0 / n + 0.005,
                       f"distance classifier: numpy finds {error:.2f}%, the engine printed {printed}%"))
        print(f"distance classifier recomputed in numpy: {error:.2f}% (the engine printed {printed}%)")
    failed = [what for ok, what in checks if not ok]
    if failed:
        print("\n".join(failed))
        return 1
    print(f"numpy {np.__version__} read {n} rows: r, r_pooled, v float32 [{n}, {dim}], labels int32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
